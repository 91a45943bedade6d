"""A self-contained HTML report of a fit: one page, figures embedded as base64 PNG, readable without the code.

:func:`write_report` writes ``report.html`` into a folder. Sections (:mod:`.sections`, each a function returning
data): summary (what was fitted, whether the sampler's diagnostics passed and, only if they did, the headline
answer), data, fitted law per family, parameter table with diagnostics (and which parameters failed), posterior
predictive check, extrapolation bands to multiples of the largest compute in the data, compute-optimal plan table,
and how to reproduce. One template (:mod:`.page`) renders them; figures come from :mod:`scalebayes.plots`.

Conventions used throughout the page: N parameters, D training tokens, C = 6·N·D training FLOP, loss in nats per
token; an interval is the central 90% posterior interval (5% and 95% quantiles) unless the text says otherwise.
"""

from __future__ import annotations

import datetime as _dt
import math
from collections.abc import Sequence
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from ..errors import DataError
from ..store import atomic_write_text
from .page import render_page
from .sections import BUILDERS, MAX_FAMILY_FIGURES, Context, diagnostics_box

REPORT_NAME = "report.html"
#: Section ids, in page order (tests check that each is present).
SECTIONS = ("summary", "data", "fit", "parameters", "ppc", "extrapolation", "plan", "about")

__all__ = ["MAX_FAMILY_FIGURES", "REPORT_NAME", "SECTIONS", "diagnostics_box", "write_report"]


def _version() -> str:
    try:
        return version("scalebayes")
    except PackageNotFoundError:  # running from a source tree that was never installed
        return "unknown"


def write_report(
    posterior,
    out_dir: str | Path,
    *,
    title: str | None = None,
    extrapolate: Sequence[float] = (10, 100),
    plan_compute: Sequence[float] | None = None,
    command: str | None = None,
) -> Path:
    """Write ``report.html`` for a fitted :class:`~scalebayes.posterior.Posterior` into ``out_dir``.

    Args:
        posterior: the fit (fresh or loaded with :func:`scalebayes.load`).
        out_dir: folder to write into (created if needed). Files already there named ``posterior.nc``,
            ``posterior.zarr`` or ``summary.csv`` are listed in the report's last section.
        title: page title (default: "Scaling-law fit: <data name>").
        extrapolate: multiples of the largest compute (or, for one-input laws in N or D, of the largest input) in
            the data to extrapolate to; each gets a marker in the extrapolation figure and a row in its table.
        plan_compute: training budgets (FLOP) for the compute-plan table; default the largest compute in the data
            times 1, 10, 100 and 1000.
        command: the command line that produced the fit, shown under "Files and how to reproduce".

    Returns:
        The path of ``report.html``. A figure or table that fails is replaced by a visible error note (and a
        warning) rather than losing the page.

    Raises:
        DataError: an ``extrapolate`` factor or ``plan_compute`` budget that is not finite and > 0.
    """
    factors = [float(f) for f in extrapolate]
    for f in factors:
        if not (math.isfinite(f) and f > 0):
            raise DataError(f"extrapolate factors must be finite and > 0, got {f}")
    c_max = float(posterior.data.frame["C"].max())
    compute = [float(c) for c in plan_compute] if plan_compute is not None else [c_max * f for f in (1, 10, 100, 1000)]
    for c in compute:
        if not (math.isfinite(c) and c > 0):
            raise DataError(f"plan_compute budgets must be finite and > 0 FLOP, got {c}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    ctx = Context(posterior, out, factors, compute, command)
    sections = [build(ctx) for build in BUILDERS]
    title = title or f"Scaling-law fit: {ctx.data_name}"
    subtitle = f"Generated {_dt.datetime.now().strftime('%Y-%m-%d %H:%M')} by scalebayes {_version()}"
    path = out / REPORT_NAME
    atomic_write_text(path, render_page(title, subtitle, sections))  # a crash mid-write keeps the old page
    return path
