"""The ``scalebayes`` command line: fit a CSV of runs, plan compute and predict loss from a saved posterior.

Usage (also ``python -m scalebayes ...``)::

    scalebayes fit runs.csv --N params --D tokens --loss loss [--family config] [--law chinchilla]
                            [--pooling partial] --out report/
    scalebayes plan report/posterior.nc --compute 1e23 1e24 1e25 [--family F] [--inference-tokens T]
    scalebayes predict report/posterior.nc --N 7e10 --D 1.4e12
    scalebayes report report/posterior.nc --out report/          # re-render report.html from a saved posterior

``fit`` writes ``posterior.nc`` (or ``posterior.zarr``), ``summary.csv`` and ``report.html`` (see
:func:`scalebayes.report.write_report`; ``--no-report`` leaves it out) into ``--out``, as one set: the folder is
checked writable and locked before sampling, and the files replace any old ones together or not at all
(:mod:`scalebayes.store`); Ctrl-C exits with 130 leaving the old files. Compiled programs are kept in a user cache
folder (:mod:`scalebayes.cache`), so a second run of the same shape skips XLA's compilation (not the Python tracing).
After sampling, ``fit`` calibrates the posterior (:func:`scalebayes.calibrate`: leave-largest-out refits learn how far
predictions must widen beyond the data; stored in the posterior file) unless ``--no-calibrate``; a calibration that
cannot be learned is a warning and the uncalibrated posterior is kept. ``plan``, ``predict`` and the report say which
predictive they show. Results go to stdout; progress and status lines go to stderr (``--quiet`` silences them); on a
terminal the sampler's progress bar (:mod:`scalebayes.progress`) shows iterations done, the phase and an ETA. Any
error exits with status 1 and one line on stderr naming the problem (``--debug`` shows the traceback instead);
command-line usage errors exit with 2. ``fit --strict`` exits with 3 when the sampler's diagnostics fail (the files
are written anyway), 130 means interrupted.
"""

from __future__ import annotations

import argparse
import difflib
import itertools
import math
import numbers
import os
import re
import shlex
import sys
import time
import warnings
from collections.abc import Sequence
from importlib.metadata import version
from pathlib import Path

import numpy as np
import pandas as pd

from .cache import enable_compilation_cache
from .calibration import calibrate
from .data import ScalingData
from .diagnostics import advice
from .errors import DataError, ModelError, SamplingWarning, ScaleBayesError, UnknownNameError
from .fitting import fit, model_spec
from .identification import design_for
from .identification import message as prior_message
from .laws import get as get_law
from .posterior import load
from .precision import ensure_float64
from .predict import qcol
from .progress import enabled as progress_enabled
from .report import REPORT_NAME, write_report
from .spec import NOISE_TRENDS, resolve
from .store import output_folder, require_zarr, staged_outputs

PROG = "scalebayes"
EXIT_ERROR, EXIT_USAGE, EXIT_DIAGNOSTICS, EXIT_INTERRUPTED = 1, 2, 3, 130

#: Python-API hints inside library error messages, and what to type on the command line instead.
_CLI_HINTS = (
    ("pass dropna=True to drop such rows, which are then reported", "pass --dropna to drop such rows"),
    ("dropna=True dropped", "--dropna dropped"),
    ("pass c_rtol=None if C counts more than 6ND", "pass --c-rtol none if C counts more than 6ND"),
    ("pass U=<column> to ScalingData.from_frame", "pass --U <column>"),
    ("use pooling='partial'", "use --pooling partial"),
    ("raise target_accept", "raise --target-accept"),
    ("run longer (warmup/draws)", "run longer (--warmup/--draws, --extend)"),
    ("increase draws (ESS grows linearly with draws) or chains", "increase --draws (ESS grows with draws) or --chains"),
)


class CLIError(Exception):
    """A problem with what was asked on the command line, reported as one line (never a traceback)."""


# ---------------------------------------------------------------------------------------------------- parsing
#: What argparse should take for a (negative) number rather than an option: its own pattern knows ``-5`` and ``-.5``
#: but not ``-1e9`` or ``-inf``, which it then reads as an unknown option ("expected at least one argument").
_NEGATIVE_NUMBER = re.compile(r"^-(\d[\d_]*\.?[\d_]*|\.\d[\d_]*)([eE][-+]?\d+)?$|^-(inf|infinity|nan)$", re.IGNORECASE)


class _Parser(argparse.ArgumentParser):
    """ArgumentParser whose usage errors are one line (``prog: error: ... (see prog --help)``), exit status 2, and
    that reads any negative number (``-1e9``) as a value, so its option's type check can say what is wrong."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._negative_number_matcher = _NEGATIVE_NUMBER  # argparse's (private) hook; no public one exists

    def error(self, message: str):  # noqa: D102 - argparse API
        sys.stderr.write(f"{self.prog}: error: {message} (see '{self.prog} --help')\n")
        sys.exit(EXIT_USAGE)


def _number(text: str) -> float:
    """A finite float from the command line (``1e23``, ``7e10``, ``1_000``)."""
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not math.isfinite(v):
        raise argparse.ArgumentTypeError(f"{text!r} is not a finite number")
    return v


def _checked(parse, ok, words: str, doc: str):
    """An argparse ``type``: ``parse`` the text, then require ``ok(value)``, else "'<text>' must be <words>"."""

    def convert(text: str):
        v = parse(text)
        if not ok(v):
            raise argparse.ArgumentTypeError(f"{text!r} must be {words}")
        return v

    convert.__doc__ = doc
    return convert


def _integer(text: str) -> int:
    """A whole number, also written as ``1e3`` or ``1_000``."""
    try:
        return int(text)
    except ValueError:
        pass
    try:
        v = float(text)
    except ValueError:
        v = math.nan
    if not (math.isfinite(v) and v.is_integer()):
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number")
    return int(v)


_positive = _checked(_number, lambda v: v > 0, "positive (> 0)", "A finite float > 0.")
_nonnegative = _checked(_number, lambda v: v >= 0, ">= 0", "A finite float ≥ 0.")
_count = _checked(_integer, lambda v: v >= 1, ">= 1", "An integer ≥ 1.")
_whole = _checked(_integer, lambda v: v >= 0, ">= 0", "An integer ≥ 0.")
_quantile = _checked(
    _number, lambda v: 0.0 < v < 1.0, "a quantile strictly between 0 and 1", "A probability in (0, 1)."
)


def _rtol(text: str) -> float | None:
    """A relative tolerance ≥ 0, or ``none`` to skip the check."""
    if text.strip().lower() in ("none", "off"):
        return None
    return _nonnegative(text)


_target_accept = _checked(_number, lambda v: 0.0 < v < 1.0, "strictly between 0 and 1", "NUTS target acceptance.")


def _add_quantiles(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--quantiles",
        type=_quantile,
        nargs="+",
        default=[0.05, 0.5, 0.95],
        metavar="Q",
        help="posterior quantiles to report (default 0.05 0.5 0.95)",
    )


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``scalebayes`` command (sub-commands fit, plan, predict, report)."""
    common = _common_options()
    p = _Parser(
        prog=PROG,
        description="Bayesian scaling-law inference from a CSV of training runs: fit a law with NUTS, write a "
        "self-contained HTML report, plan compute and predict loss with posterior uncertainty.",
        epilog="Run 'scalebayes COMMAND --help' for a command's options. Units: N parameters, D training tokens, "
        "C training FLOP (C = 6·N·D), loss in nats/token.",
        parents=[common],
    )
    p.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True
    _add_fit(sub, common)
    _add_plan(sub, common)
    _add_predict(sub, common)
    _add_report(sub, common)
    return p


def _common_options() -> argparse.ArgumentParser:
    """Options every command takes (a parent parser): --quiet, --debug."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--quiet",
        "-q",
        action="store_true",
        default=argparse.SUPPRESS,
        help="no progress display or status lines on stderr (results and warnings still print)",
    )
    common.add_argument(
        "--debug", action="store_true", default=argparse.SUPPRESS, help="on error, show the full Python traceback"
    )
    return common


def _add_fit(sub, common: argparse.ArgumentParser) -> None:
    f = sub.add_parser(
        "fit",
        parents=[common],
        help="fit a scaling law to a CSV of runs and write posterior, summary.csv and report.html",
        description="Fit a scaling law to the runs in a CSV file and write OUT/posterior.nc (or .zarr), "
        "OUT/summary.csv and OUT/report.html. Name the columns: two of --N/--D/--C (the third follows from "
        "C = 6·N·D) and --loss.",
    )
    f.add_argument("csv", type=Path, help="CSV file, one row per training run")
    _add_fit_columns(f.add_argument_group("columns of the CSV"))
    _add_fit_model(f.add_argument_group("model"))
    _add_fit_sampler(f.add_argument_group("sampler (NUTS)"))
    out = f.add_argument_group("output")
    out.add_argument("--out", type=Path, default=Path("report"), help="output folder (default ./report)")
    out.add_argument(
        "--format",
        choices=("nc", "zarr"),
        default="nc",
        help="posterior file format: netCDF posterior.nc (default) or posterior.zarr",
    )
    out.add_argument(
        "--no-report",
        action="store_true",
        help="write the posterior and summary.csv only, not report.html (for scripted sweeps: drawing the report's "
        "figures takes seconds); an old report.html in --out goes with the old set, since it would describe "
        "another fit. `scalebayes report` writes it later from the posterior",
    )
    _add_report_options(out)
    out.add_argument(
        "--strict",
        action="store_true",
        help="exit with status 3 when sampler diagnostics fail (files are written anyway)",
    )
    f.set_defaults(func=cmd_fit)


def _add_fit_columns(cols) -> None:
    cols.add_argument("--N", metavar="COLUMN", help="column of model sizes (parameters)")
    cols.add_argument("--D", metavar="COLUMN", help="column of training tokens")
    cols.add_argument("--C", metavar="COLUMN", help="column of training compute (FLOP)")
    cols.add_argument("--loss", metavar="COLUMN", required=True, help="column of final losses (nats/token)")
    cols.add_argument(
        "--family",
        metavar="COLUMN",
        help="column of family labels (model families / training configurations), read as text; omitted: one family",
    )
    cols.add_argument("--U", metavar="COLUMN", help="column of unique training tokens (repeated-data laws)")
    cols.add_argument(
        "--run",
        metavar="COLUMN",
        help="column of training-run labels when rows are checkpoints: checkpoints of one run are weighted so that "
        "they do not count as independent runs",
    )
    cols.add_argument(
        "--dropna",
        action="store_true",
        help="drop rows with a missing value in a used column (they are listed in the report)",
    )
    cols.add_argument(
        "--c-rtol",
        type=_rtol,
        default=0.05,
        metavar="TOL",
        help="when N, D and C are all given, the relative tolerance of C against 6·N·D "
        "(default 0.05; 'none' skips the check)",
    )


def _add_fit_model(model) -> None:
    model.add_argument("--law", default="chinchilla", help="scaling law to fit (default chinchilla)")
    model.add_argument(
        "--pooling",
        choices=("complete", "partial", "none"),
        help="how families share parameters (default: partial with several families)",
    )
    model.add_argument(
        "--likelihood",
        choices=("student_t", "normal"),
        default="student_t",
        help="noise model on log loss (default student_t, robust to outlying runs)",
    )
    model.add_argument(
        "--noise-trend",
        choices=NOISE_TRENDS,
        default="auto",
        help="how a run's noise scale follows its tokens per parameter (log scale linear in log(D/N)): "
        "tokens_per_parameter_cut, refitted to the residuals after the fit for new runs, the law left as fitted; "
        "tokens_per_parameter, fitted with the law; none, one scale for every run (default auto: the cut form "
        "for laws of N and D, else none)",
    )


def _add_fit_sampler(samp) -> None:
    samp.add_argument("--chains", type=_count, default=4, help="chains (default 4)")
    samp.add_argument("--draws", type=_count, default=1000, help="kept draws per chain (default 1000)")
    samp.add_argument("--warmup", type=_whole, default=1000, help="warm-up iterations per chain (default 1000)")
    samp.add_argument("--seed", type=_integer, default=0, help="random seed (default 0)")
    samp.add_argument(
        "--target-accept",
        type=_target_accept,
        default=0.9,
        help="NUTS target acceptance probability (default 0.9; raise it when there are divergences)",
    )
    samp.add_argument(
        "--max-tree-depth",
        type=_count,
        default=10,
        metavar="DEPTH",
        help="NUTS maximum tree depth, at most 2^DEPTH leapfrog steps per iteration (default 10; raise it when "
        "the diagnostics report saturation)",
    )
    samp.add_argument(
        "--extend",
        type=_whole,
        default=1,
        metavar="K",
        help="when the diagnostics fail only on R-hat (<= 1.05) or ESS, sample on with the same chains, another "
        "--draws per chain, at most K times (default 1; 0: never); divergences are never sampled on",
    )
    samp.add_argument(
        "--no-calibrate",
        action="store_true",
        help="skip the calibration step (by default the fit is followed by leave-largest-out refits that learn how "
        "far to widen predictions beyond the data, scalebayes.calibrate; predict, plan and the report then show "
        "the calibrated predictive); without it they show the parameters' uncertainty only",
    )


def _add_report_options(group) -> None:
    """--title, --plan-compute, --extrapolate: what the HTML report shows (fit and report)."""
    group.add_argument("--title", help="title of the HTML report")
    group.add_argument(
        "--plan-compute",
        type=_positive,
        nargs="+",
        metavar="FLOP",
        help="budgets of the report's compute-plan table (default: the largest compute in the data "
        "times 1, 10, 100, 1000)",
    )
    group.add_argument(
        "--extrapolate",
        type=_positive,
        nargs="+",
        default=[10.0, 100.0],
        metavar="FACTOR",
        help="extrapolate to these multiples of the largest compute in the data (default 10 100)",
    )


_POSTERIOR_HELP = "posterior written by 'scalebayes fit' (posterior.nc or .zarr)"
_FAMILY_HELP = (
    "fitted family (default: the only family, or a new family drawn from the population when several were fitted)"
)


def _add_plan(sub, common: argparse.ArgumentParser) -> None:
    pl = sub.add_parser(
        "plan",
        parents=[common],
        help="compute-optimal model size and tokens per budget, from a saved posterior",
        description="Print compute-optimal plans: for each training budget C (FLOP), the model size N*, "
        "training tokens D*, tokens per parameter D*/N* and loss L* that minimise the fitted law's loss subject to "
        "6·N·D = C, as posterior quantiles. With --inference-tokens T the plan minimises lifetime compute "
        "6·N·D + 2·N·T for the loss the training-only plan reaches at C (Sardana et al. 2024).",
    )
    pl.add_argument("posterior", type=Path, help=_POSTERIOR_HELP)
    pl.add_argument(
        "--compute",
        type=_positive,
        nargs="+",
        required=True,
        metavar="FLOP",
        help="training budgets in FLOP, e.g. 1e23 1e24 1e25",
    )
    pl.add_argument("--family", help=_FAMILY_HELP)
    pl.add_argument(
        "--inference-tokens",
        type=_nonnegative,
        default=0.0,
        metavar="T",
        help="lifetime inference tokens to serve (default 0: training compute only)",
    )
    _add_quantiles(pl)
    pl.add_argument("--csv", action="store_true", help="print the full table as CSV instead of a text table")
    pl.set_defaults(func=cmd_plan)


def _add_predict(sub, common: argparse.ArgumentParser) -> None:
    pr = sub.add_parser(
        "predict",
        parents=[common],
        help="predictive loss quantiles at given model sizes and tokens, from a saved posterior",
        description="Print the posterior predictive loss (nats/token) of a new training run at each query point. "
        "Give two of --N/--D/--C. Several values pair up in order (equally many each, or one value used for "
        "every point: --N 1e9 7e10 --D 1.4e12); with --grid every combination is a point.",
    )
    pr.add_argument("posterior", type=Path, help=_POSTERIOR_HELP)
    pr.add_argument("--N", type=_positive, nargs="+", metavar="PARAMS", help="model size(s) in parameters")
    pr.add_argument("--D", type=_positive, nargs="+", metavar="TOKENS", help="training tokens")
    pr.add_argument("--C", type=_positive, nargs="+", metavar="FLOP", help="training compute (FLOP)")
    pr.add_argument("--U", type=_positive, nargs="+", metavar="TOKENS", help="unique tokens (repeated-data laws)")
    pr.add_argument(
        "--grid",
        action="store_true",
        help="predict at every combination of the given values (e.g. 3 values of --N and 2 of --D: 6 points)",
    )
    pr.add_argument("--family", help=_FAMILY_HELP)
    _add_quantiles(pr)
    pr.add_argument(
        "--no-noise",
        action="store_true",
        help="credible band of the law's mean loss instead of a new run's loss (no run-to-run noise)",
    )
    pr.add_argument("--csv", action="store_true", help="print the table as CSV instead of a text table")
    pr.set_defaults(func=cmd_predict)


def _add_report(sub, common: argparse.ArgumentParser) -> None:
    rp = sub.add_parser(
        "report",
        parents=[common],
        help="(re)write report.html from a saved posterior",
        description="Write the HTML report of a saved posterior into --out.",
    )
    rp.add_argument("posterior", type=Path, help=_POSTERIOR_HELP)
    rp.add_argument("--out", type=Path, help="output folder (default: the posterior's folder)")
    _add_report_options(rp)
    rp.set_defaults(func=cmd_report)


def _version() -> str:
    try:
        return version("scalebayes")
    except Exception:  # pragma: no cover - not installed
        return "unknown"


# ---------------------------------------------------------------------------------------------------- output
class _Console:
    """Status lines on stderr (silenced by --quiet) and warnings as one line each."""

    def __init__(self, quiet: bool):
        self.quiet = quiet

    def status(self, msg: str) -> None:
        if not self.quiet:
            print(f"{PROG}: {msg}", file=sys.stderr, flush=True)

    @staticmethod
    def warn(msg: str) -> None:
        print(f"{PROG}: warning: {_cli_text(msg)}", file=sys.stderr, flush=True)


def _cli_text(msg: str) -> str:
    """One line, with Python-API hints rewritten as command-line options."""
    for api, cli in _CLI_HINTS:
        msg = msg.replace(api, cli)
    return " ".join(str(msg).split())


def _show_warning(debug: bool):
    """A ``warnings.showwarning`` replacement: scalebayes's own warnings as one line; other libraries' warnings
    (deprecations, numerical chatter) only with --debug."""
    pkg = str(Path(__file__).resolve().parent)

    def show(message, category, filename, lineno, file=None, line=None):

        ours = issubclass(category, SamplingWarning) or str(Path(filename).resolve()).startswith(pkg)
        if ours or debug:
            _Console.warn(str(message) if ours else f"{category.__name__}: {message} ({filename}:{lineno})")

    return show


def _fmt(v: float, digits: int = 3) -> str:
    """A number to ``digits`` significant figures, compact (``7.1e+10`` -> ``7.1e10``)."""
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "nan"
    if math.isinf(v):
        return "inf" if v > 0 else "-inf"
    s = f"{v:.{digits}g}"
    if "e" in s:
        m, e = s.split("e")
        s = f"{m}e{int(e)}"
    return s


def _text_table(rows: list[list[str]], header: list[str]) -> str:
    """A plain left-aligned text table."""
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(header)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)).rstrip()]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------------- helpers
def _check_input_file(path: Path, what: str) -> None:
    if not path.exists():
        raise CLIError(f"{what} not found: {path}")
    if path.is_dir() and path.suffix != ".zarr":
        raise CLIError(f"{what} is a folder, not a file: {path}")


def _load_posterior(path: Path):
    """Read a saved posterior; a file that is not one is a one-line error."""
    _check_input_file(path, "posterior file")
    try:
        return load(path)
    except ScaleBayesError:
        raise
    except Exception as e:  # unreadable netCDF/zarr, not a DataTree, ...
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CLIError(
            f"could not read {path} as a scalebayes posterior (write one with 'scalebayes fit'): {first}"
        ) from e


def _read_runs(args, con: _Console):
    """Validated runs from the CSV named on the command line, with file line numbers in data errors."""
    path: Path = args.csv
    _check_input_file(path, "CSV file")
    given = [k for k in ("N", "D", "C") if getattr(args, k) is not None]
    if len(given) < 2:
        raise CLIError(
            "name two of the columns --N (parameters), --D (tokens), --C (FLOP); C = 6·N·D gives the third"
            + (f" (got only --{given[0]})" if given else "")
        )
    try:
        return ScalingData.from_csv(
            path,
            N=args.N,
            D=args.D,
            C=args.C,
            loss=args.loss,
            family=args.family,
            U=args.U,
            run=args.run,
            dropna=args.dropna,
            c_rtol=args.c_rtol,
        )
    except DataError as e:
        msg = str(e)
        columns: list[str] = []
        try:
            columns = list(pd.read_csv(path, nrows=0).columns)
        except Exception:
            pass
        if e.column is not None and columns and e.column not in columns:
            close = difflib.get_close_matches(e.column, columns, n=1, cutoff=0.5)
            seps = [sep for sep in (";", "\t", "|") if len(columns) == 1 and sep in columns[0]]
            if seps:
                msg += f"; the header has a single column: is the file separated by {seps[0]!r} instead of commas?"
            elif close:
                msg += f"; did you mean {close[0]!r}?"
        rows = [r for r in e.rows if isinstance(r, numbers.Integral)]
        if rows and len(rows) == len(e.rows):  # row labels of a fresh CSV read: label r is file line r + 2
            lines = ", ".join(str(int(r) + 2) for r in rows[:10]) + (" ..." if len(rows) > 10 else "")
            msg += f" (line{'s' if len(rows) > 1 else ''} {lines} of {path.name}, counting the header as line 1)"
        raise DataError(msg) from e


def _query_points(args) -> dict[str, list[float]]:
    """``predict``'s points as equally long lists per input (N, D, C, U that were given): paired in order, one
    value repeated for every point, or with ``--grid`` every combination (first input varying slowest)."""
    given = {k: list(getattr(args, k)) for k in ("N", "D", "C", "U") if getattr(args, k) is not None}
    ndc = [k for k in given if k != "U"]
    if len(ndc) < 2:
        raise CLIError(
            "give two of --N (parameters), --D (tokens), --C (FLOP)" + (f" (got only --{ndc[0]})" if ndc else "")
        )
    if args.grid:
        combos = list(itertools.product(*given.values()))
        return {k: [c[i] for c in combos] for i, k in enumerate(given)}
    sizes = {k: len(v) for k, v in given.items()}
    n = max(sizes.values())
    uneven = [k for k, m in sizes.items() if m not in (1, n)]
    if uneven:
        counts = " and ".join(f"--{k} has {m} value{'s' if m > 1 else ''}" for k, m in sizes.items() if m > 1)
        raise CLIError(
            f"{counts}: give equally many (they pair up in order) or one (used for every point), "
            "or add --grid to predict at every combination"
        )
    return {k: v * n if len(v) == 1 else v for k, v in given.items()}


# ---------------------------------------------------------------------------------------------------- commands
def cmd_fit(args, con: _Console) -> int:
    """``scalebayes fit``: read, fit, then write posterior, summary.csv and report.html as one set.

    Everything that can fail cheaply fails before sampling: the law name, the CSV, the output format's package,
    and the output folder (created, checked writable and locked against a second run; see
    :func:`scalebayes.store.output_folder`). The files are written to a staging folder and moved into ``--out``
    together (:func:`scalebayes.store.staged_outputs`), so a failure or Ctrl-C leaves the previous files as they were.
    """
    get_law(args.law)  # an unknown law name fails before the data are read or anything is sampled
    data = _read_runs(args, con)
    _status_runs(con, data, args.csv)
    if args.format == "zarr":
        require_zarr()
    with output_folder(args.out) as out:
        post = _sample(args, con, data)
        if not args.no_calibrate:
            post = _calibrate(con, post)
        summary = post.summary()
        names = [f"posterior.{args.format}", "summary.csv"] + ([] if args.no_report else [REPORT_NAME])
        con.status(f"writing {', '.join(names)} to {out}")
        # without a report, an old report.html goes with the old set: beside the new posterior it would describe
        # another fit
        with staged_outputs(out, drop=[REPORT_NAME] if args.no_report else []) as stage:
            _write_outputs(args, post, summary, stage)
    _print_fit(post, summary, args.csv, [out / n for n in names])
    return EXIT_DIAGNOSTICS if args.strict and not post.diagnostics.ok else 0


def _status_runs(con: _Console, data: ScalingData, csv: Path) -> None:
    fams = data.families
    con.status(
        f"read {len(data)} runs in {len(fams)} famil{'y' if len(fams) == 1 else 'ies'} from {csv} "
        f"(N {_fmt(data.N.min(), 2)}–{_fmt(data.N.max(), 2)} params, D {_fmt(data.D.min(), 2)}–"
        f"{_fmt(data.D.max(), 2)} tokens, C {_fmt(data.C.min(), 2)}–{_fmt(data.C.max(), 2)} FLOP)"
        + (f"; {len(data.excluded)} row(s) excluded" if len(data.excluded) else "")
    )


def _sample(args, con: _Console, data: ScalingData):
    """The posterior of ``scalebayes fit``'s options; a diagnostics failure is a warning with advice."""
    progress = progress_enabled(False if con.quiet else None)
    # fit(warn=False) below: a design that cannot separate the law's N and D terms is said before sampling
    options = {"pooling": args.pooling, "likelihood": args.likelihood, "noise_trend": args.noise_trend}
    spec = model_spec(resolve(None, args.law, options), data)
    for line in design_for(data, spec).splitlines():
        con.warn(line)
    con.status(
        f"fitting the {args.law!r} law with NUTS: {args.chains} chain{'s' if args.chains > 1 else ''} × "
        f"({args.warmup} warm-up + {args.draws} draws); compiling the sampler takes a while the first time"
    )
    t0 = time.perf_counter()
    # the sampler draws its own progress bar (scalebayes.progress) when ``progress``
    post = fit(
        data,
        law=args.law,
        pooling=args.pooling,
        likelihood=args.likelihood,
        noise_trend=args.noise_trend,
        chains=args.chains,
        draws=args.draws,
        warmup=args.warmup,
        seed=args.seed,
        target_accept=args.target_accept,
        max_tree_depth=args.max_tree_depth,
        extend=args.extend,
        progress=progress,
        warn=False,
    )
    con.status(f"sampled in {time.perf_counter() - t0:.1f} s")
    diag = post.diagnostics
    if not diag.ok:
        con.warn(
            f"sampler diagnostics failed: {'; '.join(diag.failures)}. Do not trust this posterior as is "
            f"(the report says so). Try: {advice(diag)}."
        )
    # fit(warn=False) above: the command line says these here, once each
    for line in post.misfit.message().splitlines():
        con.warn(f"misfit: {line}")
    for line in prior_message(post.contraction).splitlines():
        con.warn(line)
    return post


def _calibrate(con: _Console, post):
    """``post`` calibrated (:func:`scalebayes.calibrate`), or ``post`` itself with a warning when it cannot be."""
    con.status("calibrating: leave-largest-out refits learn how far predictions beyond the data must widen")
    t0 = time.perf_counter()
    try:
        cal = calibrate(post, progress=progress_enabled(False if con.quiet else None))
    except ModelError as e:  # too few usable inner refits, or data too small to split
        con.warn(
            f"not calibrated ({_error_line(e)}); predict, plan and the report show the parameters' uncertainty only"
        )
        return post
    con.status(f"calibrated in {time.perf_counter() - t0:.1f} s{_kappa_words(cal.discrepancy)}")
    return cal


def _kappa_words(d) -> str:
    """ " (κ ≈ …, γ ≈ …)" of a calibration; with several families the range of their own κ; "" without one."""
    if d is None:
        return ""
    fams = [v["kappa_median"] for v in (d.info.get("families") or {}).values()]
    if fams:
        return f" (κ per family {_fmt(min(fams), 3)} to {_fmt(max(fams), 3)}; a new family's {_fmt(d.kappa, 3)})"
    return f" (κ ≈ {_fmt(d.kappa, 3)}, γ ≈ {_fmt(d.gamma, 2)})"


def _predictive_words(df: pd.DataFrame) -> str:
    """Which predictive a table shows, from its ``attrs["predictive"]``."""
    if df.attrs.get("predictive") == "calibrated":
        return "calibrated predictive: parameters, run noise and the learned model discrepancy beyond the data"
    return "parameters only: no model discrepancy beyond the data (the posterior is not calibrated)"


def _write_outputs(args, post, summary: pd.DataFrame, folder: Path) -> None:
    """posterior.nc/.zarr, summary.csv and (unless ``--no-report``) report.html into ``folder``."""
    post.save(folder / f"posterior.{args.format}")
    summary.to_csv(folder / "summary.csv")
    if args.no_report:
        return
    command = " ".join(shlex.quote(str(a)) for a in [PROG, *getattr(args, "argv", [])])
    write_report(
        post,
        folder,
        title=args.title,
        extrapolate=tuple(args.extrapolate),
        plan_compute=args.plan_compute,
        command=command,
    )


def _print_fit(post, summary: pd.DataFrame, csv: Path, paths: list[Path]) -> None:
    """The posterior summary, the diagnostics line and the files written, on stdout."""
    cols = [c for c in ("mean", "5%", "50%", "95%", "r_hat", "ess_bulk", "ess_tail") if c in summary.columns]
    print(f"{post.law.name} law fitted to {len(post.data)} runs of {csv.name}: posterior summary")
    print(summary[cols].to_string(float_format=lambda v: _fmt(v, 4) if np.isfinite(v) else str(v)))
    print(str(post.diagnostics))
    print(f"wrote {', '.join(str(p) for p in paths)}")


def _plan_frame(post, compute, family, quantiles, inference_tokens):
    """The plan table of :meth:`~scalebayes.posterior.Posterior.plan` (its warnings print as one line each)."""
    return post.plan(compute, family=family, quantiles=quantiles, inference_tokens=inference_tokens)


def _check_family(post, family: str | None) -> None:

    if family is not None and family not in post.families:
        raise UnknownNameError(f"unknown family {family!r}; this posterior's families are {list(post.families)}")


def _family_words(post, family: str | None) -> str:
    """`` for family 'x'``, `` for a new family ...`` or nothing for a one-family fit."""
    if family is not None:
        return f" for family {family!r}"
    if len(post.families) == 1:
        return "" if post.families[0] == "all" else f" for family {post.families[0]!r}"
    return f" for a new family drawn from the population of {len(post.families)} fitted families"


def cmd_plan(args, con: _Console) -> int:
    """``scalebayes plan``: the compute-plan table of a saved posterior."""
    post = _load_posterior(args.posterior)
    _check_family(post, args.family)
    qs = sorted(set(args.quantiles))
    df = _plan_frame(post, args.compute, args.family, qs, args.inference_tokens)
    if args.csv:
        print(df.to_csv(index=False), end="")
        return 0
    lo, mid, hi = qs[0], min(qs, key=lambda q: abs(q - 0.5)), qs[-1]
    names = [("N", "N* (params)"), ("D", "D* (tokens)"), ("D_per_N", "D*/N*"), ("L", "L* (nats)")]
    if args.inference_tokens > 0:
        names += [("C_train", "training FLOP"), ("C_total", "lifetime FLOP")]
    header = ["C (FLOP)"] + [h for _, h in names]
    rows = []
    for _, r in df.iterrows():
        row = [_fmt(r["C"], 3)]
        for k, _h in names:
            d = 4 if k == "L" else 3
            row.append(
                f"{_fmt(r[f'{k}_{qcol(mid)}'], d)} [{_fmt(r[f'{k}_{qcol(lo)}'], d)}, {_fmt(r[f'{k}_{qcol(hi)}'], d)}]"
            )
        rows.append(row)
    what = "lifetime-compute-optimal" if args.inference_tokens > 0 else "compute-optimal"
    print(
        f"{what} plans{_family_words(post, args.family)} ({post.law.name} law; "
        f"{'median' if mid == 0.5 else f'{mid:g} quantile'} [{lo:g}, {hi:g} quantiles] over {post.n_samples} "
        f"posterior draws; {_predictive_words(df)})"
    )
    if args.inference_tokens > 0:
        print(
            f"inference tokens T = {_fmt(args.inference_tokens)}: each row reaches the loss of the training-only "
            f"plan at budget C with the least lifetime compute 6·N·D + 2·N·T (Sardana et al. 2024)"
        )
    print(_text_table(rows, header))
    return 0


def cmd_predict(args, con: _Console) -> int:
    """``scalebayes predict``: predictive loss quantiles at query points of a saved posterior."""
    query = _query_points(args)
    post = _load_posterior(args.posterior)
    _check_family(post, args.family)
    qs = sorted(set(args.quantiles))
    df = post.predict(**query, family=args.family, quantiles=qs, include_noise=not args.no_noise)
    if args.csv:
        print(df.to_csv(index=False), end="")
        return 0
    inputs = [c for c in ("N", "D", "C", "U") if c in df.columns]
    header = [{"N": "N (params)", "D": "D (tokens)", "C": "C (FLOP)", "U": "U (tokens)"}[c] for c in inputs]
    header += ["mean"] + [f"{100 * q:g}%" for q in qs]
    rows = [
        [_fmt(r[c]) for c in inputs] + [_fmt(r["mean"], 4)] + [_fmt(r[qcol(q)], 4) for q in qs]
        for _, r in df.iterrows()
    ]
    what = "law's mean loss (credible band, no run-to-run noise)" if args.no_noise else "loss of a new run"
    print(
        f"posterior predictive {what} in nats/token{_family_words(post, args.family)} "
        f"({post.law.name} law, {post.n_samples} draws; {_predictive_words(df)})"
    )
    print(_text_table(rows, header))
    return 0


def cmd_report(args, con: _Console) -> int:
    """``scalebayes report``: write report.html for a saved posterior (into a checked, locked folder; the page
    itself is written atomically by :func:`scalebayes.report.write_report`)."""
    post = _load_posterior(args.posterior)
    out = args.out if args.out is not None else args.posterior.resolve().parent
    with output_folder(out) as folder:
        path = write_report(
            post, folder, title=args.title, extrapolate=tuple(args.extrapolate), plan_compute=args.plan_compute
        )
    print(f"wrote {path}")
    return 0


# ---------------------------------------------------------------------------------------------------- entry point
def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status (0 ok, 1 error, 2 usage error, 3 failed diagnostics with
    ``--strict``, 130 interrupted)."""
    os.environ.setdefault("MPLBACKEND", "Agg")  # figures go to files; never open a window
    parser = build_parser()
    argv = list(argv) if argv is not None else sys.argv[1:]
    args = parser.parse_args(argv)
    args.argv = argv
    ensure_float64("scalebayes", required=False)  # the command's numbers are float64 (scalebayes.precision)
    debug = bool(getattr(args, "debug", False))
    con = _Console(quiet=bool(getattr(args, "quiet", False)))
    with warnings.catch_warnings():
        warnings.simplefilter("default")
        warnings.showwarning = _show_warning(debug)
        enable_compilation_cache()  # a second run of the same shape skips compiling (see scalebayes.cache)
        try:
            return int(args.func(args, con))
        except KeyboardInterrupt:
            if debug:
                raise
            print(f"{PROG}: interrupted", file=sys.stderr)
            return EXIT_INTERRUPTED
        except BrokenPipeError:  # e.g. 'scalebayes plan ... | head'
            try:
                sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - silence the flush at exit
            except OSError:
                pass
            return 0
        except Exception as e:
            if debug:
                raise
            print(f"{PROG}: error: {_error_line(e)}", file=sys.stderr)
            return EXIT_ERROR


def _error_line(e: BaseException) -> str:
    """One line for an exception: our own errors as they are, anything unexpected with its type and a hint."""
    text = _cli_text(str(e)) or type(e).__name__
    if isinstance(e, ScaleBayesError | CLIError):
        return text
    if isinstance(e, OSError) and e.filename:
        return f"{e.strerror or text}: {e.filename}"
    return f"{type(e).__name__}: {text} (unexpected; run again with --debug for the traceback)"


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
