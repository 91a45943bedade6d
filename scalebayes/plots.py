"""Figures of a fit and of its compute plans. Every function returns a :class:`matplotlib.figure.Figure`.

Figures are built with ``matplotlib.figure.Figure`` directly (the Agg canvas; no pyplot state, no display needed):
save one with ``fig.savefig("x.png", dpi=150)``; in a notebook a returned figure displays itself.

Conventions: N in parameters, D in tokens, C in FLOP (C = 6·N·D), loss in nats/token; log axes for N, D, C and
tokens-per-parameter. Bands are posterior quantiles over draws: the darker band is the central 50%, the lighter the
central 90%, the line the median. Unless a function says otherwise, bands are of the law's mean loss (no
run-to-run noise).

Data plots: :func:`data_scatter`, :func:`fit_curves`, :func:`residuals`, :func:`ppc`, :func:`pair`,
:func:`extrapolation`, :func:`one_input` (laws of one input). Planning plots: :func:`isoflop`, :func:`frontier`,
:func:`ratio`, :func:`band_width`. Text a user chose (family labels, data names) goes through :func:`text`, so that a
``$`` in a label is drawn as a dollar sign rather than parsed as mathtext (which fails the whole figure).
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from types import SimpleNamespace
from typing import TYPE_CHECKING

import numpy as np

from . import laws as _laws
from . import plan as _plan
from .data import ScalingData
from .errors import DataError, UnknownNameError
from .misfit import fitted_trend

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from .posterior import Posterior

LABELS = {
    "N": "N (parameters)",
    "D": "D (training tokens)",
    "C": "C (training FLOP, 6ND)",
    "U": "U (unique tokens)",
    "loss": "loss (nats/token)",
    "ratio": "D/N (tokens per parameter)",
}
#: Central intervals drawn as bands (outermost first).
BANDS = (0.9, 0.5)
_CYCLE = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf", "#7f7f7f"]
_MARKERS = ["o", "s", "^", "D", "v", "P", "X", "<", ">"]
#: Hoffmann et al. (2022) Approach-3 estimates, a common reference for :func:`pair` (defined on the law).
HOFFMANN = {_laws.HOFFMANN_2022.label: dict(_laws.HOFFMANN_2022.values)}
#: Axis labels of the scale axis of :func:`band_width` and :func:`one_input`.
SCALE_LABELS = {"C": "training compute C (FLOP)", "N": "model size N (parameters)", "D": "training tokens D"}
#: Query points of the curves along a scale axis.
GRID = 64


# ---------------------------------------------------------------------------------------------------- helpers
@functools.cache
def _mpl() -> SimpleNamespace:
    """The matplotlib classes the figures use, imported at the first figure: the command line imports this module
    (through the report) for every command, and ``predict`` or ``plan`` draw nothing."""
    from matplotlib import colormaps, colors, figure, lines, patches, ticker

    return SimpleNamespace(
        colormaps=colormaps,
        ListedColormap=colors.ListedColormap,
        LogNorm=colors.LogNorm,
        Normalize=colors.Normalize,
        Figure=figure.Figure,
        Line2D=lines.Line2D,
        Patch=patches.Patch,
        FormatStrFormatter=ticker.FormatStrFormatter,
        FuncFormatter=ticker.FuncFormatter,
        LogLocator=ticker.LogLocator,
        NullFormatter=ticker.NullFormatter,
        ScalarFormatter=ticker.ScalarFormatter,
    )


def text(label) -> str:
    """``label`` as matplotlib text drawn literally: ``$`` escaped (a pair of them would start mathtext, which can
    fail to parse and lose the figure) and a leading ``_`` guarded (legends skip labels that start with it)."""
    s = str(label).replace("$", r"\$")
    return " " + s if s.startswith("_") else s


def times(f: float) -> str:
    """A multiple as text: ``10×``, ``1000×``, ``2.5×``, ``1e+05×``."""
    f = float(f)
    if f >= 1e5:
        return f"{f:.1e}×".replace("e+0", "e").replace("e+", "e")
    return f"{round(f)}×" if f >= 1 and abs(f - round(f)) < 1e-9 else f"{f:.3g}×"


def _figure(ncols: int = 1, nrows: int = 1, *, size: tuple[float, float] = (6.0, 4.2), **kw):
    fig = _mpl().Figure(figsize=(size[0] * ncols, size[1] * nrows), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False, **kw)
    return fig, axes


def _band(ax, x, draws: np.ndarray, color, label: str | None = None, *, bands=BANDS, lw: float = 1.6, ls="-"):
    """Median line and central-interval bands of ``draws`` (S, P) along ``x`` (P,)."""
    for i, b in enumerate(bands):
        lo, hi = np.quantile(draws, [(1 - b) / 2, (1 + b) / 2], axis=0)
        ax.fill_between(x, lo, hi, color=color, alpha=0.15 + 0.15 * i, lw=0)
    ax.plot(x, np.median(draws, axis=0), color=color, lw=lw, ls=ls, label=label)


def _band_legend(ax, extra: Sequence = (), loc="best", bands=BANDS, color="0.5"):
    """Legend entries for the existing labelled artists plus a note of what the bands are."""
    handles, labels = ax.get_legend_handles_labels()
    handles += [_mpl().Patch(color=color, alpha=0.15 + 0.15 * i, lw=0) for i in range(len(bands))]
    labels += [f"{int(100 * b)}% credible band" for b in bands]
    for h, lab in extra:
        handles.append(h)
        labels.append(lab)
    ax.legend(handles, labels, loc=loc, fontsize=8, framealpha=0.85)


def _count(v: float) -> str:
    """3.2e10 -> '32B', 1.4e12 -> '1.4T' (parameters, tokens)."""
    for scale, suffix in ((1e12, "T"), (1e9, "B"), (1e6, "M"), (1e3, "k")):
        if abs(v) >= scale:
            return f"{v / scale:.3g}{suffix}"
    return f"{v:.3g}"


def _plain_log_axis(ax) -> None:
    """Plain numbers (2, 3, 4 rather than 2×10⁰) on a log axis that spans little more than a decade, such as loss;
    call after plotting (it reads the axis limits). Wider axes keep matplotlib's powers of ten."""
    lo, hi = ax.get_ylim()  # (y axis; get_ylim applies any pending autoscale)
    if lo > 0 and hi / lo < 20:
        ax.yaxis.set_major_formatter(_mpl().ScalarFormatter())
        ax.yaxis.set_minor_formatter(_mpl().FormatStrFormatter("%g"))


def _truncated(name: str, lo: float, hi: float):
    """A colormap without its palest end (yellow on white is unreadable)."""
    mpl = _mpl()
    return mpl.ListedColormap(mpl.colormaps[name](np.linspace(lo, hi, 256)))


def _grid(ax) -> None:
    ax.grid(True, which="major", alpha=0.3)


def _data_of(obj) -> ScalingData:
    if isinstance(obj, ScalingData):
        return obj
    data = getattr(obj, "data", None)
    if isinstance(data, ScalingData):
        return data
    raise DataError(f"expected ScalingData or a Posterior, got {type(obj).__name__}")


def _families(post: Posterior, family: str | Sequence[str] | None) -> list[str]:
    if family is None:
        return list(post.families)
    names = [family] if isinstance(family, str) else list(family)
    unknown = [f for f in names if f not in post.families]
    if unknown:
        raise UnknownNameError(f"unknown famil{'y' if len(unknown) == 1 else 'ies'} {unknown}; fitted: {post.families}")
    return names


def _fam_label(post: Posterior, family: str | None, fmt: str = " ({})") -> str:
    """'' for a single-family fit, else the family (or 'new family') formatted with ``fmt``."""
    if len(post.families) == 1 and family in (None, post.families[0]):
        return ""
    if family is None or family not in post.families:
        return fmt.format("new family from the population")
    return fmt.format(text(family))


def _panel_grid(n: int, size=(6.0, 4.2), *, max_cols: int = 2, **kw):
    """``n`` panels, at most ``max_cols`` a row (wider rows shrink every panel below readability in a page)."""
    ncols = min(n, max_cols)
    nrows = -(-n // ncols)
    fig, axes = _figure(ncols, nrows, size=size, **kw)
    flat = axes.ravel()
    for ax in flat[n:]:
        ax.set_visible(False)
    return fig, flat[:n]


def _default_budgets(post: Posterior, n: int, *, extend: float = 1.0) -> np.ndarray:
    C = post.data.C
    return np.logspace(np.log10(C.min()), np.log10(C.max() * extend), n)


# ---------------------------------------------------------------------------------------------------- data plots
def data_levels(values, *, max_levels: int = 5, half_width: float = 0.1, min_gap: float = 0.3):
    """Levels of an input where runs cluster: a list of (level, member mask), ascending (values > 0, e.g. C in
    FLOP or N in parameters).

    Clusters are found greedily: the window of ±``half_width`` decades holding the most runs gives the first (at
    the median of its members), then the densest window at least ``min_gap`` decades from every cluster so far, and
    so on; a window needs 3 runs (2 with under 30 runs, 1 with 1-2 runs). Of all clusters, up to ``max_levels``
    evenly spread over the range are kept (always the lowest and the highest). For an isoFLOP design the compute
    levels are the design's budgets exactly.
    """
    logv = np.log10(np.asarray(values, float))
    near = np.abs(logv[:, None] - logv[None, :]) <= half_width + 1e-9
    counts = near.sum(axis=1)
    min_members = 3 if len(logv) >= 30 else 2 if len(logv) > 2 else 1
    centres: list[float] = []
    for i in np.lexsort((logv, -counts)):
        if counts[i] < min_members:
            break
        if any(abs(logv[i] - c) < min_gap for c in centres):
            continue
        centres.append(float(np.median(logv[near[i]])))
    centres.sort()
    if len(centres) > max_levels:
        keep = np.unique(np.round(np.linspace(0, len(centres) - 1, max_levels)).astype(int))
        centres = [centres[k] for k in keep]
    return [(10.0**c, np.abs(logv - c) <= half_width + 1e-9) for c in centres]


def _near(values: np.ndarray, level: float, half_width: float = 0.1) -> np.ndarray:
    return np.abs(np.log10(values / level)) <= half_width + 1e-9


def _curve_levels(values, n: int, given=None) -> list[tuple[float, np.ndarray]]:
    """Values to draw curves at, each with the mask of runs within ±0.1 decade: ``given`` ones, else where runs
    cluster (:func:`data_levels`), else ``n`` of the runs' own values; never a value with no run near it."""
    v = np.asarray(values, float)
    if given is not None:
        return [(float(g), _near(v, g)) for g in np.atleast_1d(np.asarray(given, float))]
    levels = data_levels(v, max_levels=n)
    if levels:
        return levels
    picks = np.unique(np.quantile(v, np.linspace(0, 1, n), method="nearest"))
    return [(float(g), _near(v, g)) for g in picks]


def _span(values, min_ratio: float = 2.0) -> tuple[float, float]:
    """(low, high) of positive values, widened geometrically to at least ``min_ratio`` so a curve is visible."""
    lo, hi = float(np.min(values)), float(np.max(values))
    if hi / lo < min_ratio:
        mid, half = np.sqrt(lo * hi), np.sqrt(min_ratio)
        lo, hi = mid / half, mid * half
    return lo, hi


def _draw_excluded(ax, excluded, family: str | None) -> None:
    """Excluded rows as red crosses (only ``family``'s when the excluded rows carry a family column)."""
    ex = excluded
    if family is not None and "family" in ex.columns:
        ex = ex[ex["family"].astype(str) == str(family)]
    if not len(ex):
        return
    if "C" not in ex and {"N", "D"} <= set(ex.columns):
        ex = ex.assign(C=6.0 * ex["N"] * ex["D"])
    if {"N", "C"} <= set(ex.columns):
        ax.scatter(ex["C"], ex["N"], marker="x", color="red", s=30, label=f"excluded ({len(ex)}; see data.excluded)")


def data_scatter(data: ScalingData | Posterior, *, ax=None) -> Figure:
    """The runs: N (parameters) against C (FLOP), coloured by final loss (nats/token) on one shared scale, one panel
    per family (shared axes, two a row) so that each family is readable on its own; rows excluded by a loading
    option are red crosses (listed with their reason in ``data.excluded``). Given ``ax``, every family is drawn
    there, told apart by marker shape."""
    data = _data_of(data)
    f = data.frame
    fams = list(data.families)
    if ax is not None:
        fig, panels = ax.figure, [(ax, fams)]
    else:
        fig, axes = _panel_grid(len(fams), size=(5.6, 4.2), sharex=True, sharey=True)
        panels = [(a, [fam]) for a, fam in zip(axes, fams, strict=True)]
    norm = _mpl().Normalize(vmin=float(f["loss"].min()), vmax=float(f["loss"].max()))
    for a, group in panels:
        for i, fam in enumerate(group):
            sub = f[f["family"] == fam]
            sc = a.scatter(
                sub["C"],
                sub["N"],
                c=sub["loss"],
                cmap="viridis",
                norm=norm,
                s=18,
                marker=_MARKERS[i % len(_MARKERS)],
                edgecolors="none",
                label=text(fam) if len(group) > 1 else f"runs used ({len(sub)})",
            )
        _draw_excluded(a, data.excluded, group[0] if len(group) == 1 and len(fams) > 1 else None)
        a.set(xscale="log", yscale="log", xlabel=LABELS["C"], ylabel=LABELS["N"])
        a.tick_params(labelbottom=True, labelleft=True)  # shared axes, but every panel readable on its own
        a.set_title(text(group[0]) if len(group) == 1 and len(fams) > 1 else _data_title(data), fontsize=10)
        a.legend(fontsize=8, loc="lower right")
        _grid(a)
    fig.colorbar(sc, ax=[a for a, _ in panels], label="final " + LABELS["loss"], shrink=0.9 if len(panels) > 2 else 1)
    if len(panels) > 1:
        fig.suptitle(_data_title(data))
    return fig


def _data_title(data: ScalingData) -> str:
    n_ex = len(data.excluded)
    return f"{text(data.name)}: {len(data)} runs" + (f", {n_ex} excluded" if n_ex else "")


def fit_curves(
    post: Posterior,
    *,
    x: str = "C",
    values: Sequence[float] | None = None,
    family: str | Sequence[str] | None = None,
    n_curves: int = 5,
    frontier: bool = True,
) -> Figure:
    """Loss against C (or N) with posterior bands and the data, one panel per fitted family (two a row).

    ``x="C"``: curves of fixed model size N at the sizes where the family's runs are (``values`` to choose them;
    default up to ``n_curves`` sizes where runs cluster, see :func:`data_levels`), each over the compute range the
    runs of that size were trained on, plus (``frontier``) the compute-optimal loss L*(C) in black; points are the
    runs coloured by N on the same scale. ``x="N"``: curves of fixed training tokens D against N, points coloured
    by D. Bands: the law's mean loss (no run-to-run noise).
    """
    if x not in ("C", "N"):
        raise DataError(f"x must be 'C' or 'N', got {x!r}")
    fams = _families(post, family)
    fig, axes = _panel_grid(len(fams), size=(6.4, 4.6))
    for ax, fam in zip(axes, fams, strict=True):
        _fit_panel(ax, post, fam, x, values, n_curves, frontier)
    return fig


def _fit_panel(ax, post: Posterior, fam: str, x: str, values, n_curves: int, frontier: bool) -> None:
    """One family's panel of :func:`fit_curves`."""
    held, other = ("N", "D") if x == "C" else ("D", "N")
    sub = post.data.frame[post.data.frame["family"] == fam]
    levels = _curve_levels(sub[held].to_numpy(), n_curves, values)
    vals = np.array([v for v, _ in levels])
    norm = _mpl().LogNorm(vmin=min(sub[held].min(), vals.min()), vmax=max(sub[held].max(), vals.max()))
    cmap = _truncated("plasma", 0.0, 0.85)
    sc = ax.scatter(sub[x], sub["loss"], c=sub[held], cmap=cmap, norm=norm, s=12, alpha=0.8, edgecolors="none")
    for v, near in levels:
        o_lo, o_hi = _span(sub[other].to_numpy()[near] if near.any() else sub[other].to_numpy())
        o = np.logspace(np.log10(o_lo), np.log10(o_hi), GRID)
        q = {held: np.full_like(o, v), other: o}
        if "U" in post.law.inputs:
            q["U"] = q["D"]  # curves for unique data (no repetition)
        draws = post.predictive_draws(q["N"], q["D"], U=q.get("U"), family=fam, include_noise=False)
        xs = 6.0 * q["N"] * q["D"] if x == "C" else q["N"]
        _band(ax, xs, draws, cmap(norm(v)), label=f"{held} = {_count(v)}")
    if frontier and x == "C":
        Cs = np.logspace(np.log10(sub["C"].min()), np.log10(sub["C"].max()), GRID)
        d = _plan.plan_draws(post, Cs, family=fam)
        _band(ax, Cs, d["L"], "black", label="compute-optimal L*(C)", lw=1.2, ls="--")
    ax.set(xscale="log", yscale="log", xlabel=LABELS[x], ylabel=LABELS["loss"])
    _plain_log_axis(ax)
    ax.set_title(f"{text(post.law.name)} fit" + (f": {text(fam)}" if len(post.families) > 1 else ""), fontsize=10)
    ax.figure.colorbar(sc, ax=ax, label=LABELS[held])
    _band_legend(ax, extra=[(_mpl().Line2D([], [], ls="", marker="o", color="0.4", ms=4), "runs")], loc="upper right")
    _grid(ax)


def residuals(post: Posterior, *, x: str = "C") -> Figure:
    """Residuals in log loss, observed − posterior median of the law, against C (or N, D), per family; dashed lines
    at ±2σ (posterior median of the noise scale σ). Structure (trends, curvature) means misfit."""
    if x not in ("C", "N", "D"):
        raise DataError(f"x must be 'C', 'N' or 'D', got {x!r}")
    f = post.data.frame
    res = post.misfit.residuals  # against the pointwise posterior median of the law (scalebayes.misfit)
    fig, axes = _figure(size=(6.4, 4.2))
    ax = axes[0, 0]
    for i, fam in enumerate(post.families):
        m = (f["family"] == fam).to_numpy()
        colour = _CYCLE[i % len(_CYCLE)]
        label = text(fam) if len(post.families) > 1 else "runs"
        ax.scatter(f[x][m], res[m], s=12, color=colour, label=label, alpha=0.8, edgecolors="none")
    ax.axhline(0.0, color="black", lw=1)
    sigma = float(np.median(post.run_noise(post.families[0]).sigma))  # a new run's (refitted, if so)
    if post.noise_trend:  # the fitted scale at each run's tokens per parameter
        s = 2 * sigma * fitted_trend(post, np.log(f["D"].to_numpy(float) / f["N"].to_numpy(float)))
        ax.scatter(f[x], s, marker="_", color="0.4", lw=1, label=f"±2σ at each run's D/N (σ = {sigma:.3g} at mean)")
        ax.scatter(f[x], -s, marker="_", color="0.4", lw=1)
    else:
        ax.axhline(2 * sigma, color="0.4", ls="--", lw=1, label=f"±2σ (σ = {sigma:.3g})")
        ax.axhline(-2 * sigma, color="0.4", ls="--", lw=1)
    ax.set(xscale="log", xlabel=LABELS[x], ylabel="residual log loss (observed − posterior median)")
    ax.set_title(f"residuals of the {text(post.law.name)} fit ({len(f)} runs)")
    ax.legend(fontsize=8)
    _grid(ax)
    return fig


def ppc(post: Posterior, *, n_rep: int = 40, seed: int = 0) -> Figure:
    """Posterior predictive check of log loss, from the ``posterior_predictive`` group (dims chain, draw, obs).

    Left: observed vs replicated log loss per run (median and 90% interval of the replicates) against y = x.
    Middle: PIT, the fraction of replicates below each observation; a calibrated model gives a flat histogram
    (the grey band is the 90% range of a uniform histogram's bar heights). Right: the observed distribution of log
    loss over runs against ``n_rep`` replicated data sets.
    """
    if "posterior_predictive" not in post.idata.children:
        post.pointwise()
    rep = post.idata["posterior_predictive"]["log_loss"].transpose("chain", "draw", "obs").values
    rep = rep.reshape(-1, rep.shape[-1])
    obs = np.asarray(post.idata["observed_data"]["log_loss"].values)
    fig, axes = _figure(3, 1, size=(4.6, 4.2))
    a0, a1, a2 = axes[0]
    med = np.median(rep, axis=0)
    lo, hi = np.quantile(rep, [0.05, 0.95], axis=0)
    a0.errorbar(obs, med, yerr=[med - lo, hi - med], fmt="o", ms=2.5, lw=0.6, alpha=0.7, label="replicated (90%)")
    lim = [min(obs.min(), lo.min()), max(obs.max(), hi.max())]
    a0.plot(lim, lim, color="black", lw=1, label="y = x")
    a0.set(
        xlabel="observed log loss (ln nats/token)",
        ylabel="replicated log loss (ln nats/token)",
        title="observed vs replicated",
    )
    a0.legend(fontsize=8)
    pit = (rep < obs[None, :]).mean(axis=0)
    nb = 10
    n = len(obs)
    a1.hist(pit, bins=nb, range=(0, 1), color=_CYCLE[0], alpha=0.8, label="PIT of runs")
    # lazily: scipy.stats (also under arviz_stats) is a heavy import, not needed to start
    from scipy.stats import binom

    lo_c, hi_c = binom.ppf([0.05, 0.95], n, 1 / nb)
    a1.axhspan(lo_c, hi_c, color="0.5", alpha=0.3, zorder=3, label="90% range if calibrated")
    a1.axhline(n / nb, color="black", lw=1)
    a1.set(xlabel="PIT: P(replicate < observed)", ylabel="runs", title="calibration (PIT)", xlim=(0, 1))
    a1.legend(fontsize=8)
    rng = np.random.default_rng(seed)
    bins = np.linspace(min(obs.min(), lo.min()), max(obs.max(), hi.max()), 30)
    for j in rng.choice(rep.shape[0], size=min(n_rep, rep.shape[0]), replace=False):
        a2.hist(rep[j], bins=bins, histtype="step", color=_CYCLE[0], alpha=0.15, lw=0.8)
    a2.hist(obs, bins=bins, histtype="step", color="black", lw=1.8)
    a2.legend(
        [_mpl().Line2D([], [], color=_CYCLE[0], alpha=0.5), _mpl().Line2D([], [], color="black", lw=1.8)],
        [f"replicated data sets ({min(n_rep, rep.shape[0])})", "observed"],
        fontsize=8,
    )
    a2.set(xlabel="log loss (ln nats/token)", ylabel="runs", title="distribution over runs")
    return fig


def _param_draws(post: Posterior, name: str, family: str | None) -> np.ndarray:
    if name in post.law.params:
        return np.asarray(post.param_draws(family)[name])
    if name in post.law.derived:
        return np.asarray(post.law.derived[name](post.param_draws(family)))
    return post.draws(name, family)


def pair(
    post: Posterior,
    x: str = "alpha",
    y: str = "beta",
    *,
    family: str | None = None,
    reference: Mapping[str, Mapping[str, float]] | None = None,
    max_points: int = 4000,
) -> Figure:
    """Joint posterior of two quantities (published parameters, derived ones like ``a``/``b``, or any posterior
    variable) as a scatter of draws with marginal histograms.

    ``reference`` marks published estimates, ``{label: {param: value}}``: a star where both coordinates are given,
    a line where one is, e.g. ``plots.HOFFMANN`` (Hoffmann et al. 2022: α = 0.34, β = 0.28). ``family`` as in
    :meth:`~scalebayes.posterior.Posterior.param_draws` (None with several families: a new family).
    """
    xs, ys = _param_draws(post, x, family), _param_draws(post, y, family)
    fig = _mpl().Figure(figsize=(5.6, 5.6), layout="constrained")
    gs = fig.add_gridspec(2, 2, width_ratios=(4, 1), height_ratios=(1, 4))
    ax = fig.add_subplot(gs[1, 0])
    axx = fig.add_subplot(gs[0, 0], sharex=ax)
    axy = fig.add_subplot(gs[1, 1], sharey=ax)
    idx = np.arange(len(xs))
    if len(xs) > max_points:
        idx = np.random.default_rng(0).choice(len(xs), max_points, replace=False)
    ax.scatter(xs[idx], ys[idx], s=4, alpha=0.25, color=_CYCLE[0], edgecolors="none", label="posterior draws")
    axx.hist(xs, bins=40, color=_CYCLE[0], alpha=0.7)
    axy.hist(ys, bins=40, color=_CYCLE[0], alpha=0.7, orientation="horizontal")
    for i, (lab, ref) in enumerate((reference or {}).items()):
        c = _CYCLE[(i + 1) % len(_CYCLE)]
        if x in ref and y in ref:
            ax.scatter([ref[x]], [ref[y]], marker="*", s=180, color=c, edgecolors="black", zorder=5, label=text(lab))
        elif x in ref:
            ax.axvline(ref[x], color=c, ls="--", label=f"{text(lab)} ({x})")
        elif y in ref:
            ax.axhline(ref[y], color=c, ls="--", label=f"{text(lab)} ({y})")
    ax.set(xlabel=x, ylabel=y)
    axx.tick_params(labelbottom=False)
    axy.tick_params(labelleft=False)
    axx.set_ylabel("draws")
    axy.set_xlabel("draws")
    ax.legend(fontsize=8, loc="best")
    _grid(ax)
    fig.suptitle(f"{text(post.law.name)}: {x} vs {y}{_fam_label(post, family, ', {}')}, {len(xs)} draws", fontsize=10)
    return fig


def extrapolation(
    post: Posterior,
    *,
    k: float = 100.0,
    family: str | None = None,
    include_noise: bool = True,
    seed: int = 0,
    mark: Mapping[str, tuple[float, float]] | None = None,
) -> Figure:
    """The compute-optimal loss L*(C) from the smallest fitted budget to ``k``× the largest, with bands.

    Blue bands: the law's optimal loss per draw (credible). With ``include_noise`` a dotted 90% band adds
    run-to-run noise (one new run at each draw's optimum, Student-t as fitted). Points: the runs (of ``family``
    only, when it names one of several fitted families); the shaded region
    is beyond the data. ``mark``: ``{label: (N, D)}`` allocations to place at C = 6ND with their posterior loss
    interval (e.g. Chinchilla 70B, ``{"Chinchilla (70B, 1.4T)": (70e9, 1.4e12)}``).
    """
    Cmax = post.data.C.max()
    Cs = np.logspace(np.log10(post.data.C.min()), np.log10(Cmax * k), 64)
    d = _plan.plan_draws(post, Cs, family=family, seed=seed)
    fig, axes = _figure(size=(7.0, 4.6))
    ax = axes[0, 0]
    runs = post.data.frame
    if family in post.families and len(post.families) > 1:
        runs = runs[runs["family"] == family]
    ax.scatter(runs["C"], runs["loss"], s=8, color="0.55", alpha=0.7, edgecolors="none", label="runs")
    _band(ax, Cs, d["L"], _CYCLE[0], label="L*(C), compute-optimal loss (law)")
    if include_noise:
        tpp = np.log(np.asarray(d["D"]) / np.asarray(d["N"]))  # each draw's optimum's tokens per parameter
        noisy = d["L"] * np.exp(_plan.noise_draws(post, d["L"].shape, family=family, seed=seed, log_tpp=tpp))
        lo, hi = np.quantile(noisy, [0.05, 0.95], axis=0)
        ax.plot(Cs, lo, color=_CYCLE[0], ls=":", lw=1.2, label="90% for one new run (law + noise)")
        ax.plot(Cs, hi, color=_CYCLE[0], ls=":", lw=1.2)
    ax.axvspan(Cmax, Cs[-1], color="0.9", zorder=0, label=f"extrapolation (up to {k:g}× largest C)")
    for i, (lab, (n, dd)) in enumerate((mark or {}).items()):
        draws = post.predictive_draws(n, dd, family=family, include_noise=False, seed=seed)[:, 0]
        q = np.quantile(draws, [0.05, 0.5, 0.95])
        c = _CYCLE[(i + 1) % len(_CYCLE)]
        ax.errorbar([6 * n * dd], [q[1]], yerr=[[q[1] - q[0]], [q[2] - q[1]]], fmt="D", color=c, ms=5, capsize=3)
        ax.plot([], [], "D", color=c, label=f"{text(lab)}: {q[1]:.3f} [{q[0]:.3f}, {q[2]:.3f}]")
    ax.set(xscale="log", yscale="log", xlabel=LABELS["C"], ylabel=LABELS["loss"])
    ax.set_title(f"extrapolation of the {text(post.law.name)} fit{_fam_label(post, family)}")
    _plain_log_axis(ax)
    _band_legend(ax, loc="upper right", color=_CYCLE[0])
    _grid(ax)
    return fig


# ---------------------------------------------------------------------------------------------------- planning plots
def _isoflop_sizes(runs_N: np.ndarray, qN: np.ndarray, n_points: int) -> np.ndarray:
    """Model sizes (parameters) for one isoFLOP curve: over the sizes of the runs at that compute and the 90%
    interval of N*, a third of a decade beyond either end; with no runs there, 1.3 decades either side of N*."""
    if not len(runs_N):
        return qN[1] * np.logspace(-1.3, 1.3, n_points)
    lo, hi = min(runs_N.min(), qN[0]), max(runs_N.max(), qN[2])
    return np.geomspace(lo / 10**0.33, hi * 10**0.33, n_points)


def isoflop(
    post: Posterior,
    C: Sequence[float] | None = None,
    *,
    family: str | None = None,
    n_points: int = 64,
    data_window: float = 1.25,
) -> Figure:
    """IsoFLOP curves: loss against N along 6·N·D = C for a few budgets (default five spanning the data), with
    bands, the runs whose C is within a factor ``data_window`` of a budget (same colour), and each budget's
    optimal N* (median, with its 90% interval as a horizontal bar). A curve spans the sizes of its runs and N*'s
    interval (a budget without runs: 1.3 decades either side of N*), not sizes far from anything measured."""
    Cs = np.asarray(C, dtype=float) if C is not None else _default_budgets(post, 5)
    fig, axes = _figure(size=(7.0, 4.6))
    ax = axes[0, 0]
    mpl, within = _mpl(), f"runs within ×{data_window:g} of C"
    norm = mpl.LogNorm(vmin=Cs.min(), vmax=Cs.max() * 1.0001)
    cmap = mpl.colormaps["viridis"]
    d = _plan.plan_draws(post, Cs, family=family)
    f = post.data.frame
    if family is not None and family in post.families:
        f = f[f["family"] == family]
    for j, c in enumerate(Cs):
        col = cmap(0.85 * norm(c))
        qN = np.quantile(d["N"][:, j], [0.05, 0.5, 0.95])
        near = (f["C"] > c / data_window) & (f["C"] < c * data_window)
        Ns = _isoflop_sizes(f["N"][near].to_numpy(), qN, n_points)
        extra = {"U": c / (6 * Ns)} if "U" in post.law.inputs else {}
        draws = post.predictive_draws(Ns, C=np.full_like(Ns, c), **extra, family=family, include_noise=False)
        _band(ax, Ns, draws, col, label=f"C = {c:.2g} FLOP")
        if near.any():
            ax.scatter(f["N"][near], f["loss"][near], color=col, s=14, edgecolors="black", linewidths=0.3, zorder=4)
        qL = np.median(d["L"][:, j])
        ax.errorbar([qN[1]], [qL], xerr=[[qN[1] - qN[0]], [qN[2] - qN[1]]], fmt="*", ms=10, color=col, mec="black")
    ax.set(xscale="log", yscale="log", xlabel=LABELS["N"], ylabel=LABELS["loss"])
    ax.set_title(f"isoFLOP curves of the {text(post.law.name)} fit{_fam_label(post, family)}")
    _plain_log_axis(ax)
    _band_legend(
        ax,
        extra=[
            (mpl.Line2D([], [], ls="", marker="o", color="0.6", mec="black", ms=4), within),
            (mpl.Line2D([], [], ls="", marker="*", color="0.6", mec="black", ms=9), "N* (median, 90% bar)"),
        ],
        loc="upper right",
    )
    _grid(ax)
    return fig


def _plan_curves(post, C, family, k):
    Cs = np.asarray(C, dtype=float) if C is not None else _default_budgets(post, 64, extend=k)
    return Cs, _plan.plan_draws(post, Cs, family=family)


def frontier(
    post: Posterior,
    C: Sequence[float] | None = None,
    *,
    family: str | None = None,
    k: float = 1e4,
    reference: Mapping[str, tuple[float, float]] | None = None,
) -> Figure:
    """Compute-optimal N*(C) and D*(C) with bands (two panels, log-log), from the smallest fitted budget to ``k``×
    the largest (or at budgets ``C``). ``reference``: ``{label: (N, D)}`` allocations marked at C = 6ND, e.g.
    ``{"Chinchilla (70B, 1.4T)": (70e9, 1.4e12)}``. The data's range is shaded."""
    Cs, d = _plan_curves(post, C, family, k)
    fig, axes = _figure(2, 1, size=(5.6, 4.4))
    for ax, key, col in ((axes[0, 0], "N", _CYCLE[0]), (axes[0, 1], "D", _CYCLE[1])):
        _band(ax, Cs, d[key], col, label=f"{key}*(C){_fam_label(post, family)}")
        ax.axvspan(post.data.C.min(), post.data.C.max(), color="0.92", zorder=0, label="fitted compute range")
        for i, (lab, (n, dd)) in enumerate((reference or {}).items()):
            v = n if key == "N" else dd
            ax.scatter([6 * n * dd], [v], marker="*", s=150, color=_CYCLE[(i + 2) % len(_CYCLE)], ec="black", zorder=5)
            ax.plot([], [], "*", color=_CYCLE[(i + 2) % len(_CYCLE)], mec="black", ms=10, label=text(lab))
        ax.set(xscale="log", yscale="log", xlabel=LABELS["C"], ylabel=f"optimal {LABELS[key]}")
        ax.set_title(f"compute-optimal {key}")
        _band_legend(ax, loc="upper left", color=col)
        _grid(ax)
    return fig


def ratio(
    post: Posterior,
    C: Sequence[float] | None = None,
    *,
    family: str | None = None,
    k: float = 1e4,
    rule_of_thumb: float | None = 20.0,
    reference: Mapping[str, tuple[float, float]] | None = None,
) -> Figure:
    """Compute-optimal tokens per parameter D*/N* against C with bands (log-log), the ``rule_of_thumb`` ratio
    (20 tokens/parameter, Hoffmann et al. 2022) as a dashed line, and ``reference`` allocations ``{label: (N, D)}``
    at C = 6ND. Budgets as in :func:`frontier`."""
    Cs, d = _plan_curves(post, C, family, k)
    fig, axes = _figure(size=(6.6, 4.4))
    ax = axes[0, 0]
    _band(ax, Cs, d["D_per_N"], _CYCLE[2], label=f"D*/N*{_fam_label(post, family)}")
    ax.axvspan(post.data.C.min(), post.data.C.max(), color="0.92", zorder=0, label="fitted compute range")
    if rule_of_thumb is not None:
        ax.axhline(rule_of_thumb, color="black", ls="--", lw=1, label=f"{rule_of_thumb:g} tokens/parameter")
    for i, (lab, (n, dd)) in enumerate((reference or {}).items()):
        c = _CYCLE[(i + 3) % len(_CYCLE)]
        ax.scatter([6 * n * dd], [dd / n], marker="*", s=150, color=c, ec="black", zorder=5, label=text(lab))
    ax.set(xscale="log", yscale="log", xlabel=LABELS["C"], ylabel="optimal " + LABELS["ratio"])
    ax.set_title("compute-optimal tokens per parameter")
    _plain_log_axis(ax)
    _band_legend(ax, loc="best", color=_CYCLE[2])
    _grid(ax)
    return fig


# ---------------------------------------------------------------------------------------------------- scale axis
def scale_kind(law) -> str | None:
    """How to extrapolate a law: ``"optimal"`` (choose N and D per budget C), ``"C"``/``"N"``/``"D"`` (its one
    input), or None (no single scale axis)."""
    inputs = set(law.inputs)
    if {"N", "D"} <= inputs:
        return "optimal"
    return next(iter(inputs)) if len(inputs) == 1 else None


def scale_max(post: Posterior) -> tuple[str, float]:
    """The scale axis (``C`` for laws in N and D, else the law's one input) and its largest value in the data."""
    kind = scale_kind(post.law)
    col = "C" if kind in ("optimal", None) else kind
    return col, float(post.data.frame[col].max())


def scale_draws(post: Posterior, grid, family: str | None) -> np.ndarray:
    """Loss draws (S, B) in nats along the scale axis at ``grid`` (B,): the compute-optimal loss L* at budgets
    ``grid`` (FLOP) for laws in N and D, else the law's loss at ``grid`` values of its one input (no noise)."""
    kind = scale_kind(post.law)
    grid = np.asarray(grid, float)
    if kind == "optimal":
        return np.asarray(_plan.plan_draws(post, grid, family=family)["L"])
    return post.predictive_draws(**{kind: grid}, family=family, include_noise=False)


def band_width(post: Posterior, factors: Sequence[float], families: Sequence[str]) -> Figure:
    """Width of the 90% credible band of the extrapolated loss, as a percentage of its median, along the scale
    axis (see :func:`scale_draws`) from the smallest value in the data to 1.5× the largest of ``factors`` × the
    largest value in the data (one line per family)."""
    col, x_max = scale_max(post)
    x_min = float(post.data.frame[col].min())
    grid = np.geomspace(x_min, x_max * max([1.0, *factors]) * 1.5, GRID)
    fig, axes = _figure(size=(6.4, 3.6))
    ax = axes[0, 0]
    for i, f in enumerate(families):
        q = np.quantile(scale_draws(post, grid, f), [0.05, 0.5, 0.95], axis=0)
        label = text(f) if len(post.families) > 1 else "all runs"
        ax.plot(grid, 100 * (q[2] - q[0]) / q[1], color=_CYCLE[i % len(_CYCLE)], lw=1.8, label=label)
    ax.axvspan(x_min, x_max, color="0.9", lw=0, label="range of the data")
    ax.set_xscale("log")
    mark_targets(fig, x_max, factors)
    ax.set_ylim(bottom=0)
    _grid(ax)
    ax.set_xlabel(SCALE_LABELS[col])
    ax.set_ylabel("width of 90% band, % of median")
    what = "compute-optimal loss L*" if scale_kind(post.law) == "optimal" else "the law's loss"
    ax.set_title(f"Uncertainty of {what} grows away from the data", fontsize=10)
    ax.legend(fontsize=8, loc="upper left")
    return fig


def one_input(post: Posterior, factors: Sequence[float] = (), families: Sequence[str] | None = None) -> Figure:
    """For laws of one input X (C, N or D): the runs and the law's loss against X with 50% and 90% credible bands,
    one panel per family (two a row), out to the largest of ``factors`` × the largest X in the data (none: the
    data's range), the region beyond the data shaded and each target dashed."""
    col, x_max = scale_max(post)
    fr = post.data.frame
    fams = list(families) if families is not None else list(post.families)
    top = x_max * max([1.0, *factors]) * (1.5 if factors else 1.2)
    fig, axes = _panel_grid(len(fams), size=(6.0, 4.2))
    for i, (ax, f) in enumerate(zip(axes, fams, strict=True)):
        s = fr[fr["family"] == f]
        xs = np.geomspace(float(s[col].min()) / 1.2, top, GRID)
        draws = post.predictive_draws(**{col: xs}, family=f, include_noise=False)
        _band(ax, xs, draws, _CYCLE[i % len(_CYCLE)], label="posterior median")
        ax.scatter(s[col], s["loss"], color="k", s=10, zorder=3, label="runs")
        if factors:
            ax.axvspan(x_max, top, color="0.92", zorder=0, lw=0)
            for fac in factors:
                ax.axvline(x_max * fac, color="0.3", lw=0.8, ls="--")
        ax.set(xscale="log", xlabel=SCALE_LABELS[col], ylabel=LABELS["loss"])
        loss_axis(ax)
        _grid(ax)
        ax.set_title(f"{text(post.law.name)} fit" + (f": {text(f)}" if len(post.families) > 1 else ""), fontsize=10)
        _band_legend(ax, color=_CYCLE[i % len(_CYCLE)])
    return fig


def mark_targets(fig: Figure, x_max: float, factors: Sequence[float]) -> Figure:
    """Vertical lines at the largest value in the data and at each multiple ``factors`` of it, on every log-x axes
    of ``fig`` (e.g. an :func:`extrapolation` figure); returns the figure."""
    for ax in fig.axes:
        if ax.get_xscale() != "log":
            continue
        ax.axvline(x_max, color="0.25", lw=0.9)
        ax.text(x_max, 0.02, " largest run", transform=ax.get_xaxis_transform(), fontsize=7, rotation=90, va="bottom")
        for fac in factors:
            ax.axvline(x_max * fac, color="0.25", lw=0.9, ls="--")
            ax.text(x_max * fac, 0.02, f" {times(fac)}", transform=ax.get_xaxis_transform(), fontsize=8, rotation=90)
    return fig


def loss_axis(ax) -> None:
    """Log y axis for losses with plain decimal tick labels (losses span less than a decade); call after plotting."""
    ax.set_yscale("log")
    lo, hi = ax.get_ylim()
    fine = hi / lo < 2.5 if lo > 0 else False
    subs = (
        (1.0, 1.2, 1.4, 1.6, 1.8, 2.0, 2.2, 2.5, 3.0, 3.5, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0)
        if fine
        else (1.0, 1.5, 2.0, 3.0, 4.0, 5.0, 6.0, 8.0)
    )
    ax.yaxis.set_major_locator(_mpl().LogLocator(base=10, subs=subs))
    ax.yaxis.set_major_formatter(_mpl().FuncFormatter(lambda v, _: f"{v:g}"))
    ax.yaxis.set_minor_formatter(_mpl().NullFormatter())


def readable(fig: Figure) -> Figure:
    """Plain decimal tick labels (2, 2.5, 3) on every log y axis of ``fig`` spanning less than a decade (loss,
    tokens per parameter), which would otherwise carry one or two labels; returns the figure."""
    for ax in fig.axes:
        lo, hi = ax.get_ylim()
        if ax.get_yscale() == "log" and 0 < lo < hi < 10 * lo:
            loss_axis(ax)
    return fig
