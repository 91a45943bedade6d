"""The ``scalebayes`` command line, driven as a subprocess (console script and ``python -m scalebayes``).

One fit for the whole file (a session fixture, ~60 runs of the bundled Chinchilla CSV, 4 chains × 1000 draws,
calibrated by default) writes the report folder that the output, report, ``plan`` and ``predict`` tests read. Error
paths never fit: they run as concurrent subprocesses (each pays only the import) or in-process through ``cli.main``.
"""

from __future__ import annotations

import io
import os
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from test_report import check_report_html

import scalebayes as sb
from scalebayes import cli, misfit, progress
from scalebayes.errors import MisfitWarning
from scalebayes.predict import qcol

#: 4 × 1000 kept draws (the CLI's default): the inner refits of the default calibration on 39-48 of these runs are
#: harder than the fit (at 4 × 500 their bulk ESS was 236-331 < 400 and none was usable);
#: this is the one CLI fit that calibrates (the others pass --no-calibrate or stand in for the fit).
FIT_ARGS = ["--chains", "4", "--warmup", "500", "--draws", "1000", "--seed", "0"]
PLAN_BUDGETS = ["1e22", "1e23", "1e24"]
BUNDLED = Path(sb.__file__).parent / "bundled" / "chinchilla_epoch" / "svg_extracted_data.csv"
ENV = {**os.environ, "MPLBACKEND": "Agg", "PYTHONWARNINGS": "ignore::DeprecationWarning"}


def _cmd(*args, script: bool = False) -> list[str]:
    exe = Path(sys.executable).with_name("scalebayes")
    if script:
        if not exe.exists():
            pytest.skip("the scalebayes console script is not installed in this environment")
        return [str(exe), *map(str, args)]
    return [sys.executable, "-m", "scalebayes", *map(str, args)]


def run(*args, script: bool = False, timeout: float = 600) -> subprocess.CompletedProcess:
    """Run the CLI to completion; stdout/stderr as text (not a TTY, so no progress output)."""
    return subprocess.run(_cmd(*args, script=script), capture_output=True, text=True, timeout=timeout, env=ENV)


def run_many(cases: dict[str, list], timeout: float = 300) -> dict[str, subprocess.CompletedProcess]:
    """Start every command at once and wait for all: the import cost overlaps instead of adding up."""
    procs = {
        k: subprocess.Popen(_cmd(*v), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV)
        for k, v in cases.items()
    }
    out = {}
    for k, p in procs.items():
        so, se = p.communicate(timeout=timeout)
        out[k] = subprocess.CompletedProcess(p.args, p.returncode, so, se)
    return out


def _subset_csv(path: Path) -> Path:
    """~60 runs of the bundled Chinchilla CSV (every 4th, the 5 highest-loss runs left out as the loader does),
    with its original columns: N is "Model Size", C is "Training FLOP", D is derived."""
    df = pd.read_csv(BUNDLED)
    df = df.drop(df["loss"].nlargest(5).index).iloc[::4]
    df.to_csv(path, index=False)
    return path


# ---------------------------------------------------------------------------------------------------- the one fit
@pytest.fixture(scope="session")
def fitted(tmp_path_factory):
    """Run ``scalebayes fit`` once (console script) and return (out dir, CompletedProcess, runs CSV)."""
    root = tmp_path_factory.mktemp("cli")
    csv = _subset_csv(root / "runs.csv")
    out = root / "report"
    proc = run(
        "fit",
        csv,
        "--N",
        "Model Size",
        "--C",
        "Training FLOP",
        "--loss",
        "loss",
        *FIT_ARGS,
        "--plan-compute",
        *PLAN_BUDGETS,
        "--title",
        "CLI test report",
        "--out",
        out,
        script=True,
    )
    assert proc.returncode == 0, proc.stderr
    return out, proc, csv


def test_fit_writes_posterior_summary_and_report(fitted):
    out, proc, csv = fitted
    assert {p.name for p in out.iterdir()} >= {"posterior.nc", "summary.csv", "report.html"}
    post = sb.load(out / "posterior.nc")
    assert len(post.data) == len(pd.read_csv(csv)) and post.n_samples == 4000
    summary = pd.read_csv(out / "summary.csv", index_col=0)
    assert {"E", "A", "B", "alpha", "beta"} <= set(summary.index)
    assert {"mean", "5%", "95%", "r_hat", "ess_bulk", "ess_tail"} <= set(summary.columns)
    # stdout: the summary table and the diagnostics verdict; stderr: status lines only, never a traceback
    assert "alpha" in proc.stdout and ("diagnostics ok" in proc.stdout or "DIAGNOSTICS FAILED" in proc.stdout)
    assert str(out / "report.html") in proc.stdout
    assert "Traceback" not in proc.stderr
    assert f"read {len(pd.read_csv(csv))} runs" in proc.stderr
    assert "elapsed" not in proc.stderr  # stderr is a pipe, not a terminal: no progress display
    # calibrated by default (no --no-calibrate), stored in the saved posterior
    assert "calibrating" in proc.stderr and "calibrated in" in proc.stderr, proc.stderr
    assert post.calibrated and post.discrepancy.kappa >= 0.0


def test_fit_report_has_every_section_and_image(fitted):
    out, _, _ = fitted
    post = sb.load(out / "posterior.nc")
    secs = check_report_html(out / "report.html", diagnostics_ok=post.diagnostics.ok)
    assert "CLI test report" in (out / "report.html").read_text(encoding="utf-8")
    # the plan table holds the requested budgets; the extrapolation reaches 10x and 100x the largest compute
    for c in ("1.00e22", "1.00e23", "1.00e24"):
        assert c in secs["plan"]["text"]
    assert "10×" in secs["extrapolation"]["text"] and "100×" in secs["extrapolation"]["text"]
    # which predictive the numbers show: the fit was calibrated (the default)
    assert "L* in the table: calibrated predictive" in secs["plan"]["text"]
    assert "Bands and table: calibrated predictive" in secs["extrapolation"]["text"]
    # the command that produced it, for reproduction
    assert "scalebayes fit" in secs["about"]["text"] and "--draws 1000" in secs["about"]["text"]


@pytest.fixture(scope="module")
def queries(fitted):
    """``plan`` and ``predict`` on the fitted posterior, as concurrent subprocesses."""
    out, _, _ = fitted
    nc = out / "posterior.nc"
    return run_many(
        {
            "plan": ["plan", nc, "--compute", *PLAN_BUDGETS],
            "predict": ["predict", nc, "--N", "7e10", "--D", "1.4e12"],
        }
    )


def test_plan_prints_the_plan_table(queries):
    text = queries["plan"]
    assert text.returncode == 0, text.stderr
    lines = text.stdout.strip().splitlines()
    assert "compute-optimal plans" in lines[0] and "calibrated predictive" in lines[0]
    assert lines[1].split()[:3] == ["C", "(FLOP)", "N*"]
    assert [ln.split()[0] for ln in lines[3:]] == ["1e22", "1e23", "1e24"]


def test_predict_prints_predictive_quantiles(queries):
    text = queries["predict"]
    assert text.returncode == 0, text.stderr
    lines = text.stdout.strip().splitlines()
    assert "loss of a new run" in lines[0] and "calibrated predictive" in lines[0]
    assert lines[1].split() == ["N", "(params)", "D", "(tokens)", "C", "(FLOP)", "mean", "5%", "50%", "95%"]
    row = lines[3].split()
    assert row[:3] == ["7e10", "1.4e12", "5.88e23"]
    q05, q50, q95 = (float(v) for v in row[4:7])
    assert 1.0 < q05 < q50 < q95 < 4.0


def test_plan_and_predict_csv_match_the_python_api(capsys, fitted):
    out, _, _ = fitted
    nc = out / "posterior.nc"
    rc, so, _ = _main(capsys, "plan", nc, "--compute", *PLAN_BUDGETS, "--csv")
    assert rc == 0
    got = pd.read_csv(io.StringIO(so))
    from scalebayes.plan import plan

    post = sb.load(nc)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        want = plan(post, [float(c) for c in PLAN_BUDGETS])
    for col in ("N_q0.5", "D_q0.05", "D_per_N_q0.95", "L_q0.5"):
        np.testing.assert_allclose(got[col], want[col], rtol=1e-6)
    # bigger budgets: bigger models, more tokens, lower loss
    assert np.all(np.diff(got["N_q0.5"]) > 0) and np.all(np.diff(got["D_q0.5"]) > 0)
    assert np.all(np.diff(got["L_q0.5"]) < 0)
    # serving 1e13 inference tokens favours a smaller model trained on more tokens per parameter
    rc, so, _ = _main(capsys, "plan", nc, "--compute", "1e23", "--inference-tokens", "1e13", "--csv")
    inf = pd.read_csv(io.StringIO(so))
    assert inf["N_q0.5"].iloc[0] < got["N_q0.5"].iloc[1] and inf["D_per_N_q0.5"].iloc[0] > got["D_per_N_q0.5"].iloc[1]
    rc, so, _ = _main(
        capsys, "predict", nc, "--N", "1e9", "7e10", "--D", "1.4e12", "--csv", "--quantiles", "0.1", "0.9"
    )
    got = pd.read_csv(io.StringIO(so))
    want = post.predict(N=[1e9, 7e10], D=1.4e12, quantiles=(0.1, 0.9))
    np.testing.assert_allclose(got[[qcol(0.1), qcol(0.9)]], want[[qcol(0.1), qcol(0.9)]], rtol=1e-9)


# ---------------------------------------------------------------------------------------------------- bad input
@pytest.fixture(scope="module")
def bad_runs(tmp_path_factory):
    """Malformed input, each as its own subprocess (all started at once); none of them fits anything."""
    d = tmp_path_factory.mktemp("bad")
    good = _subset_csv(d / "runs.csv")
    df = pd.read_csv(good)
    df["loss"] = df["loss"].astype(object)
    df.loc[df.index[3], "loss"] = "2.9x"  # data row 3 is line 5 of the file (the header is line 1)
    df.to_csv(d / "malformed.csv", index=False)
    base = ["--N", "Model Size", "--C", "Training FLOP", "--loss", "loss"]
    return run_many(
        {
            "missing_file": ["fit", d / "no_such_file.csv", *base],
            "wrong_column": ["fit", good, "--N", "Model size", "--C", "Training FLOP", "--loss", "loss"],
            "malformed_number_in_csv": ["fit", d / "malformed.csv", *base],
            "malformed_number_argument": ["plan", d / "posterior.nc", "--compute", "1e2x"],
        }
    )


def _one_error_line(proc: subprocess.CompletedProcess) -> str:
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("scalebayes")
    return lines[0]


def test_missing_file_is_one_line(bad_runs):
    line = _one_error_line(bad_runs["missing_file"])
    assert bad_runs["missing_file"].returncode == 1 and "not found" in line and "no_such_file.csv" in line


def test_wrong_column_names_it_and_suggests_the_right_one(bad_runs):
    line = _one_error_line(bad_runs["wrong_column"])
    assert "'Model size'" in line and "did you mean 'Model Size'" in line


def test_debug_raises_instead_of_one_line(capsys, tmp_path):
    csv = _subset_csv(tmp_path / "runs.csv")
    with pytest.raises(sb.errors.DataError, match="Model size"):  # uncaught: Python prints the traceback
        cli.main(["fit", str(csv), "--N", "Model size", "--C", "Training FLOP", "--loss", "loss", "--debug"])


def test_malformed_number_in_csv_names_column_and_line(bad_runs):
    line = _one_error_line(bad_runs["malformed_number_in_csv"])
    assert "'loss'" in line and "non-numeric" in line and "line 5 of malformed.csv" in line


def test_malformed_number_argument_is_a_usage_error(bad_runs):
    proc = bad_runs["malformed_number_argument"]
    line = _one_error_line(proc)
    assert proc.returncode == 2 and "--compute" in line and "'1e2x' is not a number" in line


# ---------------------------------------------------------------------------------------------------- in-process
def _main(capsys, *args) -> tuple[int, str, str]:
    rc = cli.main([str(a) for a in args])
    cap = capsys.readouterr()
    return rc, cap.out, cap.err


def test_two_of_N_D_C_are_needed(capsys, tmp_path):
    csv = _subset_csv(tmp_path / "runs.csv")
    rc, _, err = _main(capsys, "fit", csv, "--N", "Model Size", "--loss", "loss")
    assert rc == 1 and "two of the columns --N" in err and "Traceback" not in err


def test_missing_values_point_to_dropna_and_the_line(capsys, tmp_path):
    pd.DataFrame({"N": [1e8, 2e8, 4e8], "D": [2e9, None, 8e9], "loss": [3.1, 2.9, 2.7]}).to_csv(
        tmp_path / "r.csv", index=False
    )
    rc, _, err = _main(capsys, "fit", tmp_path / "r.csv", "--N", "N", "--D", "D", "--loss", "loss")
    assert rc == 1 and "--dropna" in err and "dropna=True" not in err and "line 3 of r.csv" in err


def test_semicolon_separated_file_gets_a_hint(capsys, tmp_path):
    (tmp_path / "r.csv").write_text("params;tokens;loss\n1e8;2e9;3.1\n")
    rc, _, err = _main(capsys, "fit", tmp_path / "r.csv", "--N", "params", "--D", "tokens", "--loss", "loss")
    assert rc == 1 and "separated by ';'" in err


def test_unknown_law_fails_before_reading_or_sampling(capsys, tmp_path):
    rc, _, err = _main(capsys, "fit", tmp_path / "absent.csv", "--N", "N", "--D", "D", "--loss", "l", "--law", "nope")
    assert rc == 1 and "unknown law 'nope'" in err and "chinchilla" in err


def test_a_csv_is_not_a_posterior(capsys, tmp_path):
    csv = _subset_csv(tmp_path / "runs.csv")
    rc, _, err = _main(capsys, "predict", csv, "--N", "7e10", "--D", "1.4e12")
    assert rc == 1 and "could not read" in err and "runs.csv" in err and "Traceback" not in err


def test_help_lists_every_command(capsys):
    with pytest.raises(SystemExit) as e:
        cli.main(["--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    for command in ("fit", "plan", "predict", "report"):
        assert command in out


def test_unknown_family_for_plan(capsys, fitted):
    out, _, _ = fitted
    rc, _, err = _main(capsys, "plan", out / "posterior.nc", "--compute", "1e23", "--family", "nope")
    assert rc == 1 and "unknown family 'nope'" in err


def test_usage_errors_are_one_line_with_status_2(capsys):
    with pytest.raises(SystemExit) as e:
        cli.main(["fit", "x.csv", "--loss", "l", "--draws", "-3"])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--draws" in err[0] and "must be >= 1" in err[0]


def test_number_arguments_accept_scientific_notation():
    assert cli._count("1e3") == 1000 and cli._whole("0") == 0 and cli._positive("7e10") == 7e10
    for bad, fn in (("1.5", cli._count), ("nan", cli._positive), ("0", cli._positive), ("1", cli._quantile)):
        with pytest.raises(Exception, match="not|must"):
            fn(bad)
    assert cli._rtol("none") is None and cli._rtol("0.1") == 0.1


class _FakeTTY(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_only_on_a_terminal_and_not_quiet():
    """The command line and the Python API share one rule (progress.enabled): auto is on for a terminal only;
    --quiet passes False."""
    assert progress.enabled(None, _FakeTTY()) is True
    assert progress.enabled(False, _FakeTTY()) is False  # --quiet
    assert progress.enabled(None, io.StringIO()) is False  # a pipe or file
    assert not hasattr(cli, "show_progress")


def test_quiet_silences_status_lines(capsys):
    cli._Console(quiet=True).status("hello")
    cli._Console(quiet=False).status("world")
    err = capsys.readouterr().err
    assert "hello" not in err and "world" in err


def test_misfit_warning_reaches_the_command_line(capsys):
    # the package's warnings (a flagged misfit check among them) are shown as one line each, without --debug
    show = cli._show_warning(debug=False)
    show(MisfitWarning("residuals trend with log C"), MisfitWarning, misfit.__file__, 1)
    assert "residuals trend with log C" in capsys.readouterr().err
