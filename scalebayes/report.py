"""A self-contained HTML report of a fit: one page, figures embedded as base64 PNG, readable without the code.

:func:`write_report` writes ``report.html`` into a folder. Sections: summary (what was fitted, the headline answer,
and a plain statement when the sampler's diagnostics failed), data, fitted law with credible bands per family,
parameter table with diagnostics, posterior predictive check, extrapolation bands to multiples of the largest
compute in the data, compute-optimal plan table, and how to reproduce.

Conventions used throughout the page: N parameters, D training tokens, C = 6·N·D training FLOP, loss in nats per
token; an interval is the central 90% posterior interval (5% and 95% quantiles) unless the text says otherwise.
"""

from __future__ import annotations

import base64
import datetime as _dt
import html
import io
import math
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from . import plots
from .diagnostics import ESS_MIN, RHAT_MAX, Diagnostics, advice

REPORT_NAME = "report.html"
#: Central interval used for every band and table in the report.
LO, MID, HI = 0.05, 0.5, 0.95
#: Section ids, in page order (tests check that each is present).
SECTIONS = ("summary", "data", "fit", "parameters", "ppc", "extrapolation", "plan", "about")

#: One-line formulas of the built-in laws (the law's ``reference`` adds the citation).
LAW_FORMULAS = {
    "chinchilla": "L(N, D) = E + A / N<sup>α</sup> + B / D<sup>β</sup>",
    "kaplan": "L(N, D) = [(N<sub>c</sub>/N)<sup>α<sub>N</sub>/α<sub>D</sub></sup> + D<sub>c</sub>/D]"
    "<sup>α<sub>D</sub></sup>",
    "compute": "L(C) = E + A / C<sup>α</sup>",
    "data_constrained": "L(N, D, U) = E + A / N<sup>α</sup> + B / D′<sup>β</sup>, with D′ the effective data of D "
    "tokens drawn from U unique ones",
    "overtrained": "L(N, D) = E + (a·M<sup>η</sup> + b·M<sup>−η</sup>)·C<sup>−η</sup>, M = D/N, C = 6ND",
    "broken_power": "L(C) = E + A·C<sup>−α₁</sup>·(1 + (C/C<sub>b</sub>)<sup>1/s</sup>)<sup>−(α₂−α₁)s</sup>",
    "broken_power_N": "L(N) = E + A·N<sup>−α₁</sup>·(1 + (N/N<sub>b</sub>)<sup>1/s</sup>)<sup>−(α₂−α₁)s</sup>",
}

#: What a parameter means, per law (family-indexed names use their base name); ``"*"`` applies to every law.
PARAM_MEANINGS = {
    "*": {
        "E": "irreducible loss (nats): the floor no amount of scale removes",
        "sigma": "run-to-run noise: scale of the log-loss scatter around the law",
        "nu": "Student-t degrees of freedom of that noise (small = heavy tails, robust to outlying runs)",
    },
    "chinchilla": {
        "A": "amplitude of the model-size term A/N^α",
        "B": "amplitude of the data term B/D^β",
        "alpha": "exponent of model size N",
        "beta": "exponent of training tokens D",
        "a": "compute-optimal N* ∝ C^a (a = β/(α+β))",
        "b": "compute-optimal D* ∝ C^b (b = α/(α+β))",
    },
    "kaplan": {
        "N_c": "critical model size (parameters)",
        "D_c": "critical dataset size (tokens)",
        "alpha_N": "exponent of model size N",
        "alpha_D": "exponent of dataset size D",
    },
    "compute": {
        "A": "amplitude of the compute term A/C^α",
        "alpha": "exponent of training compute C",
    },
    "overtrained": {
        "a": "amplitude of the over-training term a·M^η (M = D/N)",
        "b": "amplitude of the under-training term b·M^−η",
        "eta": "exponent of compute (and of the tokens-per-parameter shape)",
        "M_opt": "compute-optimal tokens per parameter D*/N*",
    },
    "broken_power": {
        "A": "amplitude of the power law below the break",
        "alpha_1": "exponent below the break",
        "alpha_2": "exponent above the break",
        "C_b": "location of the break (FLOP)",
        "s": "sharpness of the break (e-folds of C; small = sharp)",
    },
    "broken_power_N": {
        "A": "amplitude of the power law below the break",
        "alpha_1": "exponent below the break",
        "alpha_2": "exponent above the break",
        "N_b": "location of the break (parameters)",
        "s": "sharpness of the break (e-folds of N; small = sharp)",
    },
}
PARAM_MEANINGS["data_constrained"] = {
    **PARAM_MEANINGS["chinchilla"],
    "B": "amplitude of the effective-data term B/D′^β",
    "beta": "exponent of effective training tokens D′",
    "R_star": "epochs after which repeated data has lost ~63% of its value",
}


def param_meaning(law_name: str, name: str) -> str:
    """What a posterior variable means, in words (``""`` when unknown); ``name`` may carry ``[family]``."""
    base = str(name).split("[")[0]
    if base.startswith("mu_"):
        return f"population mean of {base[3:]} across families (sampler coordinate)"
    if base.startswith("tau_"):
        return f"spread of {base[4:]} across families (sampler coordinate)"
    return PARAM_MEANINGS.get(law_name, {}).get(base) or PARAM_MEANINGS["*"].get(base, "")


_FAMILY_COLOURS = (
    "#1f77b4",
    "#d62728",
    "#2ca02c",
    "#9467bd",
    "#ff7f0e",
    "#17becf",
    "#8c564b",
    "#e377c2",
    "#7f7f7f",
    "#bcbd22",
)


# ---------------------------------------------------------------------------------------------------- formatting
def fmt(v, digits: int = 3) -> str:
    """A number to ``digits`` significant figures, exponent without padding (``7.1e10``)."""
    try:
        v = float(v)
    except (TypeError, ValueError):
        return html.escape(str(v))
    if math.isnan(v):
        return "–"
    if math.isinf(v):
        return "∞" if v > 0 else "−∞"
    if v != 0 and (abs(v) >= 1e5 or abs(v) < 1e-3):
        m, e = f"{v:.{digits - 1}e}".split("e")
        return f"{m}e{int(e)}"
    s = f"{v:.{digits}g}"
    if "e" in s:
        m, e = s.split("e")
        s = f"{m}e{int(e)}"
    return s


def fmt_interval(med: float, lo: float, hi: float, digits: int = 3) -> str:
    """``median [lo, hi]``."""
    return f"{fmt(med, digits)} <span class='ci'>[{fmt(lo, digits)}, {fmt(hi, digits)}]</span>"


def _times(f: float) -> str:
    """A multiple: ``10×``, ``1000×``, ``2.5×``."""
    f = float(f)
    if f >= 1e5:
        return f"{fmt(f, 2)}×"
    return f"{round(f)}×" if f >= 1 and abs(f - round(f)) < 1e-9 else f"{f:.3g}×"


def _esc(s) -> str:
    return html.escape(str(s))


def _family_colour(i: int) -> str:
    return _FAMILY_COLOURS[i % len(_FAMILY_COLOURS)]


def _family_label(post, fam: str) -> str:
    return "all runs" if (len(post.families) == 1 and fam == "all") else fam


# ---------------------------------------------------------------------------------------------------- figures
# The figures come from :mod:`scalebayes.plots` wherever it has one (data, fit curves, isoFLOP curves, residuals,
# posterior predictive check, pair plot, extrapolation, frontier, tokens per parameter). Drawn here are only what it
# lacks: the growth of the extrapolation band's width, and fit/extrapolation curves for laws of one input (C, N or D),
# which the plots module's functions (built around N and D) do not draw.
#: At most this many families get their own figures (the tables always cover every family).
MAX_FAMILY_FIGURES = 3


def figure_to_html(fig, alt: str, *, dpi: int = 100) -> str:
    """An ``<img>`` tag holding the figure as a base64 PNG; a pyplot figure is closed afterwards."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight", facecolor="white")
    try:
        import matplotlib.pyplot as plt

        if plt.fignum_exists(getattr(fig, "number", -1)):
            plt.close(fig)
    except Exception:  # pragma: no cover - closing is housekeeping only
        pass
    data = base64.b64encode(buf.getvalue()).decode("ascii")
    return f'<img class="figure" alt="{_esc(alt)}" src="data:image/png;base64,{data}">'


def _new_figure(w: float, h: float, ncols: int = 1, nrows: int = 1, **kw):
    """A Figure with the Agg canvas (no pyplot state) and its axes, flattened."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(w, h), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False, **kw)
    return fig, axes.ravel()


def _loss_axis(ax):
    """Log y axis for losses with plain decimal tick labels (losses span less than a decade)."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    ax.set_yscale("log")
    lo, hi = ax.get_ylim()
    fine = hi / lo < 2.5 if lo > 0 else False
    subs = (
        (1.0, 1.2, 1.4, 1.6, 1.8, 2.0, 2.2, 2.5, 3.0, 3.5, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0)
        if fine
        else (1.0, 1.5, 2.0, 3.0, 4.0, 5.0, 6.0, 8.0)
    )
    ax.yaxis.set_major_locator(LogLocator(base=10, subs=subs))
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ax.yaxis.set_minor_formatter(NullFormatter())


def compute_levels(C: np.ndarray, *, max_levels: int = 5, half_width: float = 0.1, min_gap: float = 0.3):
    """Compute levels to draw the law at, where runs cluster: a list of (level in FLOP, member mask), ascending.

    Clusters are found greedily: the window of ±``half_width`` decades of compute holding the most runs gives the
    first (at the median compute of its members), then the densest window at least ``min_gap`` decades from every
    cluster so far, and so on. Of all clusters, up to ``max_levels`` evenly spread over the compute range are kept
    (always the lowest and the highest). For an isoFLOP design the levels are the design's budgets exactly.
    """
    logc = np.log10(np.asarray(C, float))
    near = np.abs(logc[:, None] - logc[None, :]) <= half_width + 1e-9
    counts = near.sum(axis=1)
    min_members = 3 if len(logc) >= 30 else 2 if len(logc) > 2 else 1
    centres: list[float] = []
    for i in np.lexsort((logc, -counts)):
        if counts[i] < min_members:
            break
        if any(abs(logc[i] - c) < min_gap for c in centres):
            continue
        centres.append(float(np.median(logc[near[i]])))
    centres.sort()
    if len(centres) > max_levels:
        keep = np.unique(np.round(np.linspace(0, len(centres) - 1, max_levels)).astype(int))
        centres = [centres[k] for k in keep]
    return [(10.0**c, np.abs(logc - c) <= half_width + 1e-9) for c in centres]


def _scale_kind(law) -> str | None:
    """How to extrapolate a law: ``"optimal"`` (choose N and D per budget), ``"C"``/``"N"``/``"D"`` (one input)."""
    inputs = set(law.inputs)
    if {"N", "D"} <= inputs:
        return "optimal"
    if len(inputs) == 1:
        return next(iter(inputs))
    return None


#: Query points are padded to a multiple of this many so that every call has the same shape: JAX compiles each
#: operation once per shape, and the report's tables would otherwise compile a variant per table.
GRID = 64


def _padded(fn: Callable[[np.ndarray], object], x) -> object:
    """``fn`` on ``x`` (1-D) padded to a multiple of :data:`GRID` points, results cut back to ``len(x)`` columns."""
    x = np.atleast_1d(np.asarray(x, float))
    n = len(x)
    m = -(-n // GRID) * GRID
    out = fn(np.concatenate([x, np.full(m - n, x[-1])]))
    if isinstance(out, dict):
        return {k: np.asarray(v)[..., :n] for k, v in out.items()}
    return np.asarray(out)[..., :n]


def _optimal_draws(post, C, family: str | None) -> dict[str, np.ndarray]:
    """Per-draw compute-optimal ``N``, ``D``, ``D_per_N``, ``L``, ``at_edge`` (S, B) at budgets C, from
    :func:`scalebayes.plan.plan_draws`."""
    from .plan import plan_draws

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return _padded(lambda c: plan_draws(post, c, family=family), C)


def _law_draws(post, family: str | None, **inputs) -> np.ndarray:
    """The law's loss draws (S, P) without noise at query points (1-D arrays of equal length)."""
    keys = list(inputs)
    stacked = np.stack([np.asarray(inputs[k], float) for k in keys])

    def run(ix):
        sel = ix.astype(int)
        q = {k: stacked[i, sel] for i, k in enumerate(keys)}
        return post.predictive_draws(**q, family=family, include_noise=False)

    return _padded(run, np.arange(stacked.shape[1], dtype=float))


def extrapolation_draws(post, grid: np.ndarray, family: str | None) -> np.ndarray:
    """Loss draws (S, B) along the report's scale axis: the compute-optimal loss at budgets ``grid`` for laws in N
    and D, else the law's loss at ``grid`` values of its one input."""
    kind = _scale_kind(post.law)
    if kind == "optimal":
        return _optimal_draws(post, grid, family)["L"]
    return _law_draws(post, family, **{kind: grid})


def _scale_max(post) -> tuple[str, float]:
    """The scale axis (``C`` for laws in N and D, else the law's one input) and its largest value in the data."""
    kind = _scale_kind(post.law)
    col = "C" if kind in ("optimal", None) else kind
    return col, float(post.data.frame[col].max())


_AXIS_LABEL = {"C": "training compute C (FLOP)", "N": "model size N (parameters)", "D": "training tokens D"}


def fig_band_width(post, factors: Sequence[float], families: Sequence[str]):
    """Width of the 90% credible band of the extrapolated loss, as a percentage of its median, along the scale
    axis from the smallest value in the data to the largest extrapolation target (one line per family)."""
    col, x_max = _scale_max(post)
    x_min = float(post.data.frame[col].min())
    grid = np.geomspace(x_min, x_max * max([1.0, *factors]) * 1.5, GRID)
    fig, (ax,) = _new_figure(6.4, 3.6)
    for i, f in enumerate(families):
        q = np.quantile(extrapolation_draws(post, grid, f), [LO, MID, HI], axis=0)
        ax.plot(grid, 100 * (q[2] - q[0]) / q[1], color=_family_colour(i), lw=1.8, label=_family_label(post, f))
    ax.axvspan(x_min, x_max, color="0.9", lw=0, label="range of the data")
    ax.axvline(x_max, color="0.3", lw=0.8)
    for fac in factors:
        ax.axvline(x_max * fac, color="0.3", lw=0.8, ls="--")
        ax.text(x_max * fac, 1.0, f" {_times(fac)}", transform=ax.get_xaxis_transform(), fontsize=8, va="top")
    ax.set_xscale("log")
    ax.set_ylim(bottom=0)
    ax.grid(True, alpha=0.3)
    ax.set_xlabel(_AXIS_LABEL[col])
    ax.set_ylabel("width of 90% band, % of median")
    what = "compute-optimal loss L*" if _scale_kind(post.law) == "optimal" else "the law's loss"
    ax.set_title(f"Uncertainty of {what} grows away from the data", fontsize=10)
    ax.legend(fontsize=8, loc="upper left")
    return fig


def fig_one_input(post, factors: Sequence[float] = ()):
    """For laws of one input X (C, N or D): the runs and the law's loss against X with 50% and 90% credible bands,
    one panel per family, out to the largest of ``factors`` × the largest X in the data (none: the data's range)."""
    col, x_max = _scale_max(post)
    fr = post.data.frame
    fams = list(post.families)[:MAX_FAMILY_FIGURES]
    top = x_max * max([1.0, *factors]) * (1.5 if factors else 1.2)
    fig, axes = _new_figure(6.0 * min(len(fams), 3), 4.2, ncols=min(len(fams), 3))
    for i, (ax, f) in enumerate(zip(axes, fams, strict=False)):
        s = fr[fr["family"] == f]
        xs = np.geomspace(float(s[col].min()) / 1.2, top, GRID)
        q = np.quantile(_law_draws(post, f, **{col: xs}), [0.05, 0.25, 0.5, 0.75, 0.95], axis=0)
        colour = _family_colour(i)
        ax.fill_between(xs, q[0], q[4], color=colour, alpha=0.15, lw=0, label="90% credible band")
        ax.fill_between(xs, q[1], q[3], color=colour, alpha=0.3, lw=0, label="50% credible band")
        ax.plot(xs, q[2], color=colour, lw=1.6, label="posterior median")
        ax.scatter(s[col], s["loss"], color="k", s=10, zorder=3, label="runs")
        if factors:
            ax.axvspan(x_max, top, color="0.92", zorder=0, lw=0)
            for fac in factors:
                ax.axvline(x_max * fac, color="0.3", lw=0.8, ls="--")
        ax.set_xscale("log")
        _loss_axis(ax)
        ax.grid(True, alpha=0.3)
        ax.set_xlabel(_AXIS_LABEL[col])
        ax.set_ylabel("loss (nats/token)")
        ax.set_title(f"{post.law.name} fit" + (f": {f}" if len(post.families) > 1 else ""), fontsize=10)
        ax.legend(fontsize=8)
    return fig


def _mark_targets(fig, x_max: float, factors: Sequence[float]) -> None:
    """Vertical lines at the largest compute in the data and at each extrapolation target, on every axes of a
    :func:`scalebayes.plots.extrapolation` figure."""
    for ax in fig.axes:
        if ax.get_xscale() != "log":
            continue
        ax.axvline(x_max, color="0.25", lw=0.9)
        ax.text(x_max, 0.02, " largest run", transform=ax.get_xaxis_transform(), fontsize=7, rotation=90, va="bottom")
        for fac in factors:
            ax.axvline(x_max * fac, color="0.25", lw=0.9, ls="--")
            ax.text(
                x_max * fac,
                0.02,
                f" {_times(fac)}",
                transform=ax.get_xaxis_transform(),
                fontsize=8,
                rotation=90,
                va="bottom",
            )


def _readable(fig):
    """Plain decimal tick labels (2, 2.5, 3) on every log y axis spanning less than a decade (loss, tokens per
    parameter), which would otherwise carry one or two labels; returns the figure."""
    for ax in fig.axes:
        lo, hi = ax.get_ylim()
        if ax.get_yscale() == "log" and 0 < lo < hi < 10 * lo:
            _loss_axis(ax)
    return fig


def _marked(fig, x_max: float, factors: Sequence[float]):
    """:func:`_mark_targets` on ``fig``, returning it."""
    _mark_targets(fig, x_max, factors)
    return fig


def _data_for_plots(post):
    """The fitted runs for :func:`scalebayes.plots.data_scatter`, with the excluded rows' numbers as numbers (a
    loaded posterior stores them as text)."""
    from .data import ScalingData

    data = post.data
    ex = data.excluded
    if ex is None or not len(ex):
        return data
    ex = ex.copy()
    for c in ex.columns:
        if c in ("reason", "family", "row"):
            continue
        num = pd.to_numeric(ex[c], errors="coerce")
        if num.notna().all():
            ex[c] = num
    return ScalingData(frame=data.frame, excluded=ex, name=data.name)


def _pair_names(law) -> tuple[str, str]:
    """The two parameters of the pair plot: the two exponents of a Chinchilla-form law, else the first two."""
    for a, b in (("alpha", "beta"), ("alpha_N", "alpha_D"), ("alpha_1", "alpha_2"), ("E", "alpha"), ("E", "eta")):
        if a in law.params and b in law.params:
            return a, b
    return law.params[0], law.params[1]


def _ppc_arrays(post):
    """Observed log loss (n,) and posterior predictive log loss (S, n), in the data's order."""
    if "posterior_predictive" not in post.idata.children:
        post.pointwise()
    pp = post.idata["posterior_predictive"]["log_loss"]
    rep = np.asarray(pp.transpose("chain", "draw", "obs").values)
    rep = rep.reshape(-1, rep.shape[-1])
    obs = np.asarray(post.idata["observed_data"]["log_loss"].values)
    return obs, rep


def ppc_stats(post) -> dict:
    """Posterior predictive check numbers: share of runs inside their 50% and 90% predictive intervals, and the
    runs outside the 90% interval (a frame, furthest first, with the predictive median and interval)."""
    obs, rep = _ppc_arrays(post)
    lo90, lo50, med, hi50, hi90 = np.quantile(rep, [0.05, 0.25, 0.5, 0.75, 0.95], axis=0)
    inside90 = (obs >= lo90) & (obs <= hi90)
    inside50 = (obs >= lo50) & (obs <= hi50)
    frame = post.data.frame.copy()
    frame["pred_median"] = np.exp(med)
    frame["pred_5%"] = np.exp(lo90)
    frame["pred_95%"] = np.exp(hi90)
    outside = frame[~inside90].copy()
    outside["rel"] = outside["loss"] / outside["pred_median"] - 1
    outside = outside.reindex(outside["rel"].abs().sort_values(ascending=False).index)
    return {
        "coverage90": float(inside90.mean()),
        "coverage50": float(inside50.mean()),
        "n": len(obs),
        "frame": frame,
        "outside": outside,
    }


# ---------------------------------------------------------------------------------------------------- tables
def _html_table(header: Sequence[str], rows: Sequence[Sequence[str]], cls: str = "") -> str:
    """An HTML table; cells are already-escaped HTML."""
    th = "".join(f"<th>{h}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in r) + "</tr>" for r in rows)
    return f'<table class="{cls}"><thead><tr>{th}</tr></thead><tbody>{body}</tbody></table>'


def _data_table(post) -> str:
    fr = post.data.frame
    rows = []
    for f in post.families:
        s = fr[fr["family"] == f]
        rows.append(
            [
                _esc(_family_label(post, f)),
                str(len(s)),
                f"{fmt(s['N'].min(), 2)} – {fmt(s['N'].max(), 2)}",
                f"{fmt(s['D'].min(), 2)} – {fmt(s['D'].max(), 2)}",
                f"{fmt((s['D'] / s['N']).min(), 2)} – {fmt((s['D'] / s['N']).max(), 2)}",
                f"{fmt(s['C'].min(), 2)} – {fmt(s['C'].max(), 2)}",
                f"{fmt(s['loss'].min(), 3)} – {fmt(s['loss'].max(), 3)}",
            ]
        )
    header = ["family", "runs", "N (params)", "D (tokens)", "D/N", "C (FLOP)", "loss (nats)"]
    return _html_table(header, rows, "data")


def _excluded_html(post) -> str:
    ex = post.data.excluded
    if ex is None or not len(ex):
        return "<p>No rows were excluded.</p>"
    shown = ex.head(50)
    cols = [c for c in shown.columns if c not in ("index", "row")]

    def cell(v):
        try:
            return fmt(float(v), 4)
        except (TypeError, ValueError):
            return _esc(v)

    rows = [
        [_esc(r["row"]) if "row" in shown.columns else _esc(i)] + [cell(r[c]) for c in cols]
        for i, r in shown.iterrows()
    ]
    header = ["row"] + [_esc(c) for c in cols]
    more = f"<p>… and {len(ex) - 50} more.</p>" if len(ex) > 50 else ""
    return (
        f"<p><b>{len(ex)} row(s) of the input were excluded</b> before fitting (never silently):</p>"
        + _html_table(header, rows, "small")
        + more
    )


def _param_rows(post) -> tuple[list[str], list[list[str]]]:
    summ = post.summary(quantiles=(LO, MID, HI))
    lo_c, mid_c, hi_c = f"{100 * LO:g}%", f"{100 * MID:g}%", f"{100 * HI:g}%"
    rows = []
    for name, r in summ.iterrows():
        meaning = param_meaning(post.law.name, name)
        rh, eb, et = r.get("r_hat", np.nan), r.get("ess_bulk", np.nan), r.get("ess_tail", np.nan)

        def flag(v, bad):
            cls = " class='bad'" if (np.isfinite(v) and bad(v)) or not np.isfinite(v) else ""
            return (
                f"<span{cls}>{fmt(v, 4) if v < 100 else f'{v:.0f}'}</span>"
                if np.isfinite(v)
                else f"<span class='bad'>{fmt(v)}</span>"
            )

        rows.append(
            [
                f"<code>{_esc(name)}</code>",
                _esc(meaning),
                fmt_interval(r[mid_c], r[lo_c], r[hi_c], 4),
                fmt(r["mean"], 4),
                fmt(r["sd"], 3),
                flag(rh, lambda v: v > RHAT_MAX),
                flag(eb, lambda v: v < ESS_MIN),
                flag(et, lambda v: v < ESS_MIN),
            ]
        )
    header = ["parameter", "meaning", "median [5%, 95%]", "mean", "sd", "R-hat", "bulk ESS", "tail ESS"]
    return header, rows


def plan_frame(post, compute: Sequence[float]) -> pd.DataFrame:
    """The compute-plan table behind the report, every family: columns ``family``, ``C``, then ``<k>_q0.05``,
    ``<k>_q0.5``, ``<k>_q0.95`` for k in N, D, D_per_N, L, and ``at_edge`` (share of draws whose optimum hit the
    search range's edge). The same quantiles as ``Posterior.plan``, computed from the same per-draw plans."""
    from .predict import qcol

    frames = []
    for f in post.families:
        d = _optimal_draws(post, compute, f)
        df = pd.DataFrame({"family": f, "C": np.asarray(compute, float)})
        for k in ("N", "D", "D_per_N", "L"):
            qs = np.quantile(d[k], (LO, MID, HI), axis=0)
            for q, row in zip((LO, MID, HI), qs, strict=True):
                df[f"{k}_{qcol(q)}"] = row
        df["at_edge"] = np.asarray(d["at_edge"], float).mean(axis=0)
        frames.append(df)
    return pd.concat(frames, ignore_index=True)


def _plan_table(post, compute: Sequence[float]) -> tuple[str, pd.DataFrame]:
    """The compute-plan table (HTML) and the frame behind it (every family)."""
    from .predict import qcol

    all_ = plan_frame(post, compute)
    multi = len(post.families) > 1
    c_max = float(post.data.frame["C"].max())
    rows = []
    for _, r in all_.iterrows():
        cells = [_esc(r["family"])] if multi else []
        cells.append(f"{fmt(r['C'], 3)} <span class='ci'>({_times(r['C'] / c_max)} data max)</span>")
        for k in ("N", "D", "D_per_N", "L"):
            cells.append(
                fmt_interval(r[f"{k}_{qcol(MID)}"], r[f"{k}_{qcol(LO)}"], r[f"{k}_{qcol(HI)}"], 4 if k == "L" else 3)
            )
        if r["at_edge"] > 0:
            cells[-1] += f" <span class='bad'>({100 * r['at_edge']:.0f}% of draws at the search edge)</span>"
        rows.append(cells)
    header = (["family"] if multi else []) + [
        "budget C (FLOP)",
        "N* (parameters)",
        "D* (tokens)",
        "D*/N* (tokens per parameter)",
        "L* (nats/token)",
    ]
    return _html_table(header, rows, "plan"), all_


# ---------------------------------------------------------------------------------------------------- page
_CSS = """
body{font-family:-apple-system,'Segoe UI',Roboto,Helvetica,Arial,sans-serif;max-width:1120px;margin:24px auto;
 padding:0 20px;color:#222;line-height:1.5}
h1{font-size:1.7em;margin-bottom:.2em}h2{border-bottom:2px solid #ddd;padding-bottom:.2em;margin-top:1.8em}
.sub{color:#555;margin-top:0}
nav{background:#f6f6f6;padding:8px 12px;border-radius:6px;font-size:.92em}nav a{margin-right:14px}
.banner{padding:12px 16px;border-radius:6px;margin:14px 0;font-size:1.02em}
.ok{background:#e8f5e9;border:1px solid #81c784}.fail{background:#ffebee;border:2px solid #e53935}
.fail b.head{color:#b71c1c;font-size:1.1em}
.key{background:#f3f6fb;border:1px solid #c5d3ea;padding:10px 16px;border-radius:6px}
table{border-collapse:collapse;margin:10px 0;font-size:.9em}
th,td{border:1px solid #ddd;padding:4px 8px;text-align:left;vertical-align:top}th{background:#f2f2f2}
td .ci{color:#666;font-size:.92em}span.bad{color:#c62828;font-weight:bold}
img.figure{max-width:100%;border:1px solid #eee;margin:8px 0}
.caption{color:#444;font-size:.93em;margin-top:0}
code{background:#f4f4f4;padding:1px 4px;border-radius:3px}
pre{background:#f4f4f4;padding:8px;white-space:pre-wrap;word-break:break-all}
.note{color:#555;font-size:.92em}.err{color:#b71c1c}
"""


def _figure_block(make: Callable[[], object], alt: str, caption: str, problems: list[str]) -> str:
    """A figure with its caption; a figure that fails to draw becomes a visible note (the page is still written)."""
    try:
        img = figure_to_html(make(), alt)
    except Exception as e:  # a figure failing must not lose the rest of the report
        msg = f"figure '{alt}' could not be drawn: {type(e).__name__}: {e}"
        problems.append(msg)
        warnings.warn(msg, stacklevel=3)
        return f"<p class='err'>{_esc(msg)}</p>"
    return f"<figure>{img}<figcaption class='caption'>{caption}</figcaption></figure>"


def _priors_html(pri) -> str:
    """The priors of the fit: Normal(loc, scale) on each sampler coordinate, and the noise priors."""
    if not isinstance(pri, dict) or not isinstance(pri.get("latent"), dict):
        return f"<p class='note'>Priors: <code>{_esc(pri)}</code></p>"
    rows = []
    tau = pri.get("tau") or {}
    for z, v in pri["latent"].items():
        loc, scale = (list(v) + [np.nan, np.nan])[:2]
        rows.append(
            [
                f"<code>{_esc(z)}</code>",
                f"Normal({fmt(loc, 3)}, {fmt(scale, 3)})",
                f"half-Normal({fmt(tau[z], 3)})" if z in tau else "–",
            ]
        )
    extra = []
    if "sigma" in pri:
        extra.append(f"σ ~ half-Normal({fmt(pri['sigma'], 3)})")
    if isinstance(pri.get("nu"), list | tuple) and len(pri["nu"]) == 2:
        extra.append(f"ν ~ Gamma(shape {fmt(pri['nu'][0], 3)}, rate {fmt(pri['nu'][1], 3)}) (Student-t only)")
    note = (
        "Sampler coordinates are logs of positive parameters, with amplitudes measured at the data's geometric-"
        "mean inputs (for the Chinchilla law <code>log_A_c</code> = log A − α·mean(log N)), which decorrelates "
        "them from the exponents. The spread across families is only used under partial pooling."
    )
    more = f" Noise priors: {_esc('; '.join(extra))}." if extra else ""
    return (
        "<p class='note'>Priors. "
        + note
        + more
        + "</p>"
        + _html_table(["sampler coordinate", "prior", "prior on spread across families"], rows, "small")
    )


def diagnostics_html(diag: Diagnostics) -> str:
    """The banner that states plainly whether the sampler's diagnostics passed, and if not what failed and what to
    try (in Python and command-line terms)."""
    if diag.ok:
        return (
            f"<div class='banner ok'><b>Sampler diagnostics passed.</b> Every parameter has R-hat ≤ {RHAT_MAX} "
            f"(worst {diag.r_hat_max:.4f}), bulk and tail effective sample size ≥ {ESS_MIN} (worst "
            f"{diag.ess_bulk_min:.0f} / {diag.ess_tail_min:.0f}) and there were no divergent transitions: the "
            f"draws can be trusted to represent the posterior.</div>"
        )
    tips = advice(diag)
    return (
        "<div class='banner fail'><b class='head'>⚠ Sampler diagnostics FAILED — do not trust these results as "
        "they are.</b><ul>" + "".join(f"<li>{_esc(f)}</li>" for f in diag.failures) + "</ul>"
        f"Thresholds: R-hat ≤ {RHAT_MAX}, bulk and tail ESS ≥ {ESS_MIN}, no divergences. The chains may not have "
        "converged or mixed, so intervals can be too narrow or off-centre. "
        + (f"Try: {_esc(tips)}. " if tips else "")
        + "On the command line: raise <code>--warmup</code>/<code>--draws</code> (or <code>--chains</code>), or "
        "<code>--target-accept</code> when there are divergences.</div>"
    )


def _headline(post, c_max: float, factors: Sequence[float], families: Sequence[str]) -> str:
    """The answer most readers came for: the compute-optimal plan at the furthest extrapolation target, per family."""
    fac = max(factors) if factors else 1.0
    target = c_max * fac
    lines = []
    for f in families:
        d = _optimal_draws(post, np.array([c_max, target]), f)
        q = {k: np.quantile(d[k], [LO, MID, HI], axis=0) for k in ("N", "D", "L", "D_per_N")}
        who = f"<b>{_esc(f)}</b>: " if len(post.families) > 1 else ""
        lines.append(
            f"{who}the compute-optimal model has <b>N* = {fmt_interval(q['N'][1, 1], q['N'][0, 1], q['N'][2, 1])}"
            f"</b> parameters trained on <b>D* = {fmt_interval(q['D'][1, 1], q['D'][0, 1], q['D'][2, 1])}</b> "
            f"tokens ({fmt(q['D_per_N'][1, 1], 3)} tokens per parameter) and is predicted to reach "
            f"<b>L* = {fmt_interval(q['L'][1, 1], q['L'][0, 1], q['L'][2, 1], 4)}</b> nats/token (at the data's "
            f"largest compute: L* = {fmt_interval(q['L'][1, 0], q['L'][0, 0], q['L'][2, 0], 4)})."
        )
    head = (
        f"<b>Headline.</b> At {_times(fac)} the largest compute in the data (C = {fmt(target, 3)} FLOP; the data "
        f"reach {fmt(c_max, 3)} FLOP)"
    )
    if len(lines) == 1:
        return f"<div class='key'>{head}, {lines[0]}</div>"
    more = (
        f" (the first {len(lines)} of {len(post.families)} families; section 6 has all)"
        if len(post.families) > len(lines)
        else ""
    )
    return f"<div class='key'>{head}{more}:<ul>" + "".join(f"<li>{ln}</li>" for ln in lines) + "</ul></div>"


def _settings(post) -> dict:
    s = post.meta.get("sampler", {}) or {}
    return {
        "chains": s.get("chains"),
        "draws": s.get("draws"),
        "warmup": s.get("warmup"),
        "target_accept": s.get("target_accept"),
        "seed": post.meta.get("seed"),
    }


def _pooling_words(post) -> str:
    modes = list(post.spec.modes)
    lat = list(post.law.latents)
    if len(post.families) == 1:
        return "one family (no pooling needed)"
    kinds = sorted(set(modes))
    if kinds in (["partial"], ["centred"]):
        return (
            "partial pooling: every parameter varies by family around a population value, shrunk towards it "
            "as far as the data allow"
        )
    parts = [f"{z}: {m}" for z, m in zip(lat, modes, strict=True)]
    return (
        "per-parameter pooling (" + ", ".join(parts) + "; shared = one value for all families, partial = varies "
        "around a population value, free = independent per family)"
    )


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
        command: the command line that produced the fit, shown under "Reproduce".

    Returns:
        The path of ``report.html``. A figure that fails to draw is replaced by a visible error note (and a
        warning) rather than losing the page.
    """
    post = posterior
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    factors = [float(f) for f in extrapolate]
    for f in factors:
        if not (math.isfinite(f) and f > 0):
            raise ValueError(f"extrapolate factors must be finite and > 0, got {f}")
    fr = post.data.frame
    c_max = float(fr["C"].max())
    compute = [float(c) for c in plan_compute] if plan_compute is not None else [c_max * f for f in (1, 10, 100, 1000)]
    law = post.law
    kind = _scale_kind(law)
    can_plan = kind == "optimal"
    problems: list[str] = []
    diag = post.diagnostics
    st = _settings(post)
    fams = list(post.families)
    name = post.meta.get("data_name", "data")
    title = title or f"Scaling-law fit: {name}"
    formula = LAW_FORMULAS.get(law.name, f"the {law.name!r} law")
    parts: list[str] = []

    # ---------------------------------------------------------------- header and summary
    parts.append(f"<h1>{_esc(title)}</h1>")
    parts.append(
        f"<p class='sub'>Generated {_dt.datetime.now().strftime('%Y-%m-%d %H:%M')} by scalebayes {_esc(_version())}</p>"
    )
    nav = "".join(
        f"<a href='#{s}'>{t}</a>"
        for s, t in (
            ("summary", "Summary"),
            ("data", "Data"),
            ("fit", "Fitted law"),
            ("parameters", "Parameters & diagnostics"),
            ("ppc", "Predictive check"),
            ("extrapolation", "Extrapolation"),
            ("plan", "Compute plan"),
            ("about", "Files & reproduce"),
        )
    )
    parts.append(f"<nav>{nav}</nav>")
    parts.append("<section id='summary'><h2>Summary</h2>")
    fam_words = (
        f"{len(fams)} families ({', '.join(_esc(f) for f in fams)}), {_esc(_pooling_words(post))}"
        if len(fams) > 1
        else "one family"
    )
    lik = "Student-t (robust to a few outlying runs)" if post.spec.likelihood == "student_t" else "Gaussian"
    parts.append(
        f"<p>This page fits the <b>{_esc(law.name)}</b> scaling law, <b>{formula}</b>, to <b>{len(fr)} training "
        f"runs</b> from <code>{_esc(name)}</code> in {fam_words}. The fit is Bayesian: the No-U-Turn sampler "
        f"(NUTS) drew {st['chains']} chains × {st['draws']} draws after {st['warmup']} warm-up iterations "
        f"(seed {st['seed']}), {post.n_samples} posterior draws in all. The noise model is {lik} on log loss. "
        f"Every number below is a posterior quantity: a median with its 90% credible interval [5%, 95%] in "
        f"brackets unless stated otherwise.</p>"
        f"<p class='note'>Units: N = parameters, D = training tokens, C = 6·N·D = training FLOP, loss and L in "
        f"nats per token. Law reference: {_esc(law.reference)}</p>"
    )
    parts.append(diagnostics_html(diag))
    key_html = ""
    if can_plan:
        try:
            key_html = _headline(post, c_max, factors, fams[:MAX_FAMILY_FIGURES])
        except Exception as e:  # the headline is a convenience; its failure is reported, not fatal
            problems.append(f"headline could not be computed: {type(e).__name__}: {e}")
    parts.append(key_html)
    parts.append("</section>")

    # ---------------------------------------------------------------- data
    parts.append("<section id='data'><h2>1. Data</h2>")
    parts.append(
        "<p>The training runs that were fitted, one row per family. D/N is tokens per parameter "
        "(Chinchilla-optimal training is about 20).</p>"
    )
    parts.append(_data_table(post))
    parts.append(_excluded_html(post))
    parts.append(
        _figure_block(
            lambda: plots.data_scatter(_data_for_plots(post)),
            "the runs: model size against compute, coloured by loss",
            "Every training run as a point: its model size N against its training compute C = 6·N·D, coloured by "
            "its final loss"
            + ("; marker shape = family" if len(fams) > 1 else "")
            + ". At one compute, a higher point is a bigger model trained on fewer tokens."
            + (" Red crosses are rows excluded before fitting (listed above)." if len(post.data.excluded) else "")
            + " Predictions outside this cloud of points are extrapolations.",
            problems,
        )
    )
    parts.append("</section>")

    # ---------------------------------------------------------------- fit
    parts.append("<section id='fit'><h2>2. Fitted law</h2>")
    if kind == "optimal":
        parts.append(
            "<p>The fitted law against the runs, in two views. Everywhere, a line is the posterior median of the "
            "law's loss, the darker band its 50% and the lighter band its 90% credible interval: uncertainty about "
            "the law's parameters, without run-to-run noise (section 4 adds that noise).</p>"
        )
        parts.append(
            _figure_block(
                lambda: _readable(plots.fit_curves(post)),
                "fitted law: loss against compute for fixed model sizes, per family",
                "<b>Loss against compute.</b> Each coloured curve follows one model size N as its training tokens "
                "grow (compute C = 6·N·D grows with D), over the token range of the data; the runs are coloured by "
                "their own N on the same scale. The dashed black curve is the compute-optimal loss L*(C): the lowest "
                "loss the law predicts at each compute when N and D are chosen optimally, which the runs approach "
                "from above." + (" One panel per family." if len(fams) > 1 else ""),
                problems,
            )
        )
        for f in fams[:MAX_FAMILY_FIGURES]:
            s_ = fr[fr["family"] == f]
            levels = [c for c, _ in compute_levels(s_["C"].to_numpy())] or None
            parts.append(
                _figure_block(
                    lambda f=f, levels=levels: _readable(plots.isoflop(post, C=levels, family=f)),
                    f"isoFLOP curves{'' if len(fams) == 1 else ' for ' + f}",
                    "<b>IsoFLOP view" + ("" if len(fams) == 1 else f", family {_esc(f)}") + ".</b> Each curve is "
                    "the law's loss against model size N at one fixed training compute C (the rest of the budget "
                    "goes to tokens, D = C/(6N)), at compute levels where runs cluster; the runs within ×1.25 of "
                    "that compute share its colour. The star marks the compute-optimal size N* at that compute "
                    "(median, with its 90% interval as a horizontal bar): the bottom of the valley.",
                    problems,
                )
            )
        if len(fams) > MAX_FAMILY_FIGURES:
            parts.append(f"<p class='note'>IsoFLOP views are drawn for the first {MAX_FAMILY_FIGURES} families.</p>")
    elif kind is not None:
        parts.append(
            _figure_block(
                lambda: fig_one_input(post),
                "fitted law with credible bands per family",
                f"The runs (black) and the fitted law's loss against {kind}: posterior median (line), 50% and "
                "90% credible bands of the law itself (parameter uncertainty, without run-to-run noise)."
                + (" One panel per family." if len(fams) > 1 else ""),
                problems,
            )
        )
    else:
        parts.append(
            f"<p>The {_esc(law.name)} law has inputs {_esc(', '.join(law.inputs))}; see the residuals and the "
            "predictive check in section 4 for how it fits each run.</p>"
        )
    parts.append("</section>")

    # ---------------------------------------------------------------- parameters & diagnostics
    parts.append("<section id='parameters'><h2>3. Parameters and sampler diagnostics</h2>")
    header, rows = _param_rows(post)
    parts.append(
        "<p>Posterior of every parameter. R-hat compares the chains with each other (1 means they agree; the report "
        f"requires ≤ {RHAT_MAX}); ESS is the effective number of independent draws behind the bulk and the tails of "
        f"each posterior (≥ {ESS_MIN} required). Values that fail are in <span class='bad'>red</span>. "
        + ("Per-family parameters are written <code>name[family]</code>. " if len(fams) > 1 else "")
        + "</p>"
    )
    parts.append(_html_table(header, rows, "params"))
    parts.append(
        f"<p class='note'>{_esc(str(diag))}. Divergent transitions signal regions the sampler could not explore "
        f"reliably; leapfrog steps per iteration measure how hard the posterior was to traverse.</p>"
    )
    px, py = _pair_names(law)
    ref = plots.HOFFMANN if law.name == "chinchilla" else None
    parts.append(
        _figure_block(
            lambda: plots.pair(post, px, py, reference=ref),
            f"joint posterior of {px} and {py}",
            f"Joint posterior of <code>{_esc(px)}</code> and <code>{_esc(py)}</code>"
            + (" for a new family drawn from the fitted population" if len(fams) > 1 else "")
            + ": each dot is one posterior draw, the histograms its marginals. A tilted cloud means the data "
            "constrain a combination of the two better than either alone."
            + (" The star is the estimate published by Hoffmann et al. (2022)." if ref else ""),
            problems,
        )
    )
    parts.append("</section>")

    # ---------------------------------------------------------------- posterior predictive check
    parts.append("<section id='ppc'><h2>4. Posterior predictive check</h2>")
    try:
        stats = ppc_stats(post)
        parts.append(
            f"<p>Would the fitted model have produced data like these? For every run the model predicts a "
            f"distribution of losses (law plus run-to-run noise). <b>{100 * stats['coverage90']:.0f}%</b> of the "
            f"{stats['n']} runs fall inside their 90% predictive interval (about 90% expected) and "
            f"<b>{100 * stats['coverage50']:.0f}%</b> inside their 50% interval (about 50% expected). This check uses "
            f"the same runs that were fitted, so it detects misfit (a law of the wrong shape, a wrong noise model), "
            f"not extrapolation error.</p>"
        )
        parts.append(
            _figure_block(
                lambda: plots.ppc(post),
                "posterior predictive check",
                "<b>Left:</b> each run's observed log loss against the losses the fitted model replicates for it "
                "(median and 90% interval); points should straddle the line y = x. <b>Middle:</b> for each run, the "
                "share of replicated losses below the observed one (the probability integral transform, PIT). If the "
                "model is calibrated the bars stay within the grey band; a U shape means the intervals are too "
                "narrow, a hump that they are too wide, a slope that predictions are biased. <b>Right:</b> the "
                "distribution of the observed losses over runs (black) against replicated data sets (blue).",
                problems,
            )
        )
        parts.append(
            _figure_block(
                lambda: plots.residuals(post),
                "residuals against compute",
                "Residuals: each run's observed log loss minus the law's posterior median for it (≈ relative error, "
                "0.01 = 1%), against compute. Dashed lines are ±2σ, twice the fitted run-to-run noise. A trend or "
                "curvature with compute means the law's shape misses something systematic; isolated points far "
                "outside are outlying runs (a Student-t likelihood discounts them).",
                problems,
            )
        )
        out_tab = stats["outside"].head(8)
        if len(out_tab):
            rows = [
                [
                    _esc(i),
                    _esc(r["family"]) if len(fams) > 1 else "",
                    fmt(r["N"], 3),
                    fmt(r["D"], 3),
                    fmt(r["C"], 3),
                    fmt(r["loss"], 4),
                    fmt_interval(r["pred_median"], r["pred_5%"], r["pred_95%"], 4),
                    f"{100 * r['rel']:+.1f}%",
                ]
                for i, r in out_tab.iterrows()
            ]
            hdr = [
                "row",
                "family" if len(fams) > 1 else "",
                "N",
                "D",
                "C",
                "observed loss",
                "predicted [90% interval]",
                "observed vs median",
            ]
            if len(fams) == 1:
                rows = [r[:1] + r[2:] for r in rows]
                hdr = hdr[:1] + hdr[2:]
            parts.append(
                f"<p>Runs furthest outside their 90% predictive interval ({len(stats['outside'])} in all; "
                f"row = 0-based data row of the input):</p>" + _html_table(hdr, rows, "small")
            )
    except Exception as e:
        msg = f"posterior predictive check could not be computed: {type(e).__name__}: {e}"
        problems.append(msg)
        warnings.warn(msg, stacklevel=2)
        parts.append(f"<p class='err'>{_esc(msg)}</p>")
    parts.append("</section>")

    # ---------------------------------------------------------------- extrapolation
    parts.append("<section id='extrapolation'><h2>5. Extrapolation</h2>")
    if kind is None:
        parts.append(
            f"<p>The {_esc(law.name)} law has inputs {_esc(', '.join(law.inputs))}; there is no single "
            f"scale axis to extrapolate along, so this section is omitted.</p>"
        )
    else:
        col, x_max = _scale_max(post)
        if kind == "optimal":
            parts.append(
                f"<p>How low can the loss go with more compute? For each budget C the blue curve is the lowest loss "
                f"the fitted law predicts when N and D are chosen optimally (D = C/(6N)); the bands are its 50% and "
                f"90% credible intervals over posterior draws, and the dotted lines the 90% range of a single new "
                f"run there (adding run-to-run noise). Lines mark the largest compute in the data "
                f"({fmt(x_max, 3)} FLOP) and {', '.join(_times(f) for f in factors)} that; the table gives the "
                f"numbers.</p>"
            )
            for f in fams[:MAX_FAMILY_FIGURES]:
                parts.append(
                    _figure_block(
                        lambda f=f: _marked(
                            _readable(plots.extrapolation(post, k=max(factors), family=f)), x_max, factors
                        ),
                        f"extrapolation{'' if len(fams) == 1 else ' for ' + f}",
                        ("" if len(fams) == 1 else f"<b>Family {_esc(f)}.</b> ")
                        + ("Grey points are the runs" if len(fams) == 1 else "Grey points are the runs of every family")
                        + ": most were not trained compute-optimally, so they lie above the "
                        "curve. The shaded region is beyond the data. The bands assume the law's form keeps holding "
                        "there, which the data cannot check.",
                        problems,
                    )
                )
        else:
            parts.append(
                f"<p>The fitted law's loss beyond the data, along its input {col}: posterior median with 50% and "
                f"90% credible bands (the law itself, without run-to-run noise), out to "
                f"{', '.join(_times(f) for f in factors)} the largest {col} in the data ({fmt(x_max, 3)}).</p>"
            )
            parts.append(
                _figure_block(
                    lambda: fig_one_input(post, factors),
                    "extrapolation bands",
                    "Black points are the runs; the shaded region is beyond the data and dashed lines mark the "
                    "extrapolation targets. The bands assume the law's form keeps holding there.",
                    problems,
                )
            )
        parts.append(
            _figure_block(
                lambda: fig_band_width(post, factors, fams[:MAX_FAMILY_FIGURES]),
                "width of the extrapolation band",
                "How fast the uncertainty grows: the width of the 90% credible band as a percentage of its median, "
                "from the smallest run in the data to the furthest target (grey: the data's range; dashed: targets).",
                problems,
            )
        )
        rows = []
        for f in fams:
            xs = np.array([x_max, *[x_max * fac for fac in factors]])
            try:
                dr = extrapolation_draws(post, xs, f)
            except Exception as e:
                problems.append(f"extrapolation table: {type(e).__name__}: {e}")
                continue
            lo, med, hi = np.quantile(dr, [LO, MID, HI], axis=0)
            for j, x in enumerate(xs):
                fac = 1.0 if j == 0 else factors[j - 1]
                cells = [_esc(_family_label(post, f))] if len(fams) > 1 else []
                cells += [
                    _times(fac),
                    fmt(x, 3),
                    fmt_interval(med[j], lo[j], hi[j], 4),
                    f"±{100 * (hi[j] - lo[j]) / (2 * med[j]):.2g}%",
                ]
                rows.append(cells)
        what = "L* (compute-optimal loss)" if kind == "optimal" else "loss of the law"
        hdr = (["family"] if len(fams) > 1 else []) + [
            "multiple of data max",
            f"{col}",
            f"{what}, nats",
            "half-width of 90% interval",
        ]
        parts.append(_html_table(hdr, rows, "extrap"))
    parts.append("</section>")

    # ---------------------------------------------------------------- compute plan
    parts.append("<section id='plan'><h2>6. Compute plan</h2>")
    if not can_plan:
        parts.append(
            f"<p>Compute planning chooses the model size N and the tokens D for a budget; the "
            f"{_esc(law.name)} law has inputs {_esc(', '.join(law.inputs))} (not both N and D), so there is "
            f"no allocation to plan.</p>"
        )
    else:
        parts.append(
            "<p>For each training budget C, the model size N* and tokens D* that minimise the fitted law's loss "
            "subject to 6·N·D = C, and the loss L* they reach. Each cell is the posterior median with the 90% "
            "credible interval in brackets: the uncertainty of the <i>recommendation</i>, not of a single run. "
            + ("One block per fitted family. " if len(fams) > 1 else "")
            + "The same table is available on the command line: <code>scalebayes plan posterior.nc --compute "
            + " ".join(fmt(c, 2) for c in compute)
            + "</code>.</p>"
        )
        try:
            table, _ = _plan_table(post, compute)
            parts.append(table)
        except Exception as e:
            msg = f"plan table could not be computed: {type(e).__name__}: {e}"
            problems.append(msg)
            warnings.warn(msg, stacklevel=2)
            parts.append(f"<p class='err'>{_esc(msg)}</p>")
        k = max(10.0, max(compute) / c_max * 1.5, max(factors, default=1.0) * 1.5)
        for f in fams[:MAX_FAMILY_FIGURES]:
            who = "" if len(fams) == 1 else f"<b>Family {_esc(f)}.</b> "
            parts.append(
                _figure_block(
                    lambda f=f: plots.frontier(post, family=f, k=k),
                    f"compute-optimal frontier{'' if len(fams) == 1 else ' for ' + f}",
                    who + "The compute-optimal model size N* (left) and training tokens D* (right) against budget, "
                    "from the smallest compute in the data to the largest budget planned, with 50% and 90% credible "
                    "bands; grey shading is the data's compute range.",
                    problems,
                )
            )
            parts.append(
                _figure_block(
                    lambda f=f: _readable(plots.ratio(post, family=f, k=k)),
                    f"tokens per parameter{'' if len(fams) == 1 else ' for ' + f}",
                    who + "The compute-optimal number of training tokens per parameter D*/N* against budget, with "
                    "50% and 90% credible bands; the dashed line is the 20 tokens per parameter rule of thumb "
                    "(Hoffmann et al. 2022). A band that widens beyond the data is the recommendation becoming "
                    "uncertain, not the loss.",
                    problems,
                )
            )
    parts.append("</section>")

    # ---------------------------------------------------------------- files & reproduce
    parts.append("<section id='about'><h2>7. Files and how to reproduce</h2>")
    files = [p for p in ("posterior.nc", "posterior.zarr", "summary.csv") if (out / p).exists()]
    if files:
        desc = {
            "posterior.nc": "every posterior draw, sampler statistics and the data (netCDF; "
            "<code>scalebayes.load()</code>)",
            "posterior.zarr": "the same as zarr",
            "summary.csv": "the parameter table above",
        }
        parts.append(
            "<ul>" + "".join(f"<li><a href='{p}'><code>{p}</code></a>: {desc[p]}</li>" for p in files) + "</ul>"
        )
    if command:
        parts.append(f"<p>Produced by:</p><pre>{_esc(command)}</pre>")
    parts.append(
        f"<p class='note'>Law <code>{_esc(law.name)}</code> ({_esc(law.reference)}); "
        + (
            f"pooling of the sampler coordinates "
            f"{_esc(', '.join(f'{z}: {m}' for z, m in zip(law.latents, post.spec.modes, strict=True)))}; "
            if len(fams) > 1
            else ""
        )
        + f"likelihood {_esc(post.spec.likelihood)}; noise {_esc(post.spec.noise)}; target acceptance "
        f"{st['target_accept']}; seed {st['seed']}.</p>"
    )
    parts.append(_priors_html(post.meta.get("priors")))
    if problems:
        parts.append(
            "<p class='err'><b>Problems while writing this report:</b></p><ul class='err'>"
            + "".join(f"<li>{_esc(p)}</li>" for p in problems)
            + "</ul>"
        )
    parts.append("</section>")

    page = (
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
        "<meta name='viewport' content='width=device-width, initial-scale=1'>"
        f"<title>{_esc(title)}</title><style>{_CSS}</style></head><body>" + "\n".join(parts) + "</body></html>"
    )
    path = out / REPORT_NAME
    path.write_text(page, encoding="utf-8")
    return path


def _version() -> str:
    try:
        from importlib.metadata import version

        return version("scalebayes")
    except Exception:  # pragma: no cover
        return "unknown"
