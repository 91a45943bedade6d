"""Figures (scalebayes.plots) on the shared Chinchilla posterior: each returns a Figure with labelled, unit-bearing
axes on the right scales, and renders to PNG with the Agg canvas (no display)."""

from __future__ import annotations

import io

import numpy as np
import pandas as pd
import pytest
from matplotlib.figure import Figure

from scalebayes import plots
from scalebayes.data import ScalingData
from scalebayes.errors import DataError, UnknownNameError

CHINCHILLA = {"Chinchilla (70B, 1.4T)": (70e9, 1.4e12)}


def _render(fig: Figure) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=40)  # low dpi: rendering is what is tested, not resolution
    data = buf.getvalue()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 1000
    return data


def _axes(fig: Figure):
    return [ax for ax in fig.axes if ax.get_visible() and ax.get_label() != "<colorbar>"]


def _check(fig, xlabel: str, ylabel: str, *, xscale="log", yscale="log", ax_index: int = 0):
    assert isinstance(fig, Figure)
    ax = _axes(fig)[ax_index]
    assert xlabel in ax.get_xlabel() and ylabel in ax.get_ylabel()
    assert ax.get_xscale() == xscale and ax.get_yscale() == yscale
    assert ax.get_legend() is not None
    _render(fig)
    return ax


def test_data_scatter(chinchilla_post, chinchilla_data):
    fig = plots.data_scatter(chinchilla_data)
    ax = _check(fig, "FLOP", "parameters")
    texts = [t.get_text() for t in ax.get_legend().get_texts()]
    assert any("excluded (5" in t for t in texts)  # the five outliers are shown, not hidden
    assert any("nats" in a.get_ylabel() for a in fig.axes)  # the loss colour bar has its unit
    _render(plots.data_scatter(chinchilla_post))  # a posterior works too (its data)


def test_fit_curves(chinchilla_post):
    fig = plots.fit_curves(chinchilla_post)
    ax = _check(fig, "FLOP", "nats")
    assert len(ax.collections) >= 5  # bands and the runs
    _check(plots.fit_curves(chinchilla_post, x="N", n_curves=3), "parameters", "nats")
    with pytest.raises(DataError):
        plots.fit_curves(chinchilla_post, x="loss")
    with pytest.raises(UnknownNameError):
        plots.fit_curves(chinchilla_post, family="nope")


def test_residuals(chinchilla_post):
    fig = plots.residuals(chinchilla_post)
    ax = _check(fig, "FLOP", "residual log loss", yscale="linear")
    y = np.asarray(ax.collections[0].get_offsets())[:, 1]
    assert len(y) == len(chinchilla_post.data) and abs(np.median(y)) < 0.005  # centred on the fit


def test_ppc(chinchilla_post):
    fig = plots.ppc(chinchilla_post, n_rep=5)
    assert len(_axes(fig)) == 3
    _check(fig, "observed log loss", "replicated log loss", xscale="linear", yscale="linear")
    _render(fig)


def test_pair(chinchilla_post):
    fig = plots.pair(chinchilla_post, "alpha", "beta", reference=plots.HOFFMANN)
    ax = _check(fig, "alpha", "beta", xscale="linear", yscale="linear")
    assert any("Hoffmann" in t.get_text() for t in ax.get_legend().get_texts())
    ylim = ax.get_ylim()
    assert ylim[0] < 0.28 < ylim[1]  # the reference point is in view even far from the posterior
    _render(plots.pair(chinchilla_post, "a", "sigma", reference={"line": {"a": 0.5}}))


def test_extrapolation(chinchilla_post):
    fig = plots.extrapolation(chinchilla_post, k=100, mark=CHINCHILLA)
    ax = _check(fig, "FLOP", "nats")
    assert ax.get_xlim()[1] >= 100 * chinchilla_post.data.C.max()


def test_planning_plots(chinchilla_post):
    _check(plots.isoflop(chinchilla_post), "parameters", "nats")
    fig = plots.frontier(chinchilla_post, reference=CHINCHILLA)
    _check(fig, "FLOP", "parameters", ax_index=0)
    _check(fig, "FLOP", "tokens", ax_index=1)
    ax = _check(plots.ratio(chinchilla_post, C=np.logspace(19, 25, 20), reference=CHINCHILLA), "FLOP", "tokens per")
    assert ax.get_xlim()[0] <= 1e19 and ax.get_xlim()[1] >= 1e25


# ---------------------------------------------------------------------------------------------------- report fixes
def test_fit_curves_are_drawn_at_sizes_where_runs_are():
    # runs at two model sizes only: curves at made-up sizes in between (1e8) would have no run near them
    N = np.repeat([1e7, 1e9], 12)
    levels = plots._curve_levels(N, 5)
    assert [round(np.log10(v)) for v, _ in levels] == [7, 9]
    assert all(mask.sum() == 12 for _, mask in levels)
    # sizes spread with no clusters: the runs' own sizes, never an interpolated one
    spread = np.geomspace(1e7, 1e9, 5)
    for v, mask in plots._curve_levels(spread, 3):
        assert np.isclose(spread, v).any() and mask.any()


def test_fit_curves_follow_the_runs(chinchilla_post):
    ax = _axes(plots.fit_curves(chinchilla_post))[0]
    fr = chinchilla_post.data.frame
    curves = [ln for ln in ax.get_lines() if ln.get_label().startswith("N = ")]
    assert curves
    for ln in curves:
        C = np.asarray(ln.get_xdata())
        # every curve has runs within ±0.1 decade of its size, and stays within the compute those runs span
        # (widened to at least a factor 2, see plots._span)
        near = fr[(fr["C"] >= C.min() / 1.5) & (fr["C"] <= C.max() * 1.5)]
        assert len(near) and C.max() / C.min() < 2.01 * fr["C"].max() / fr["C"].min()


def test_data_levels_recover_an_isoflop_design():
    budgets = np.array([1e17, 3e17, 1e18, 3e18, 1e19])
    C = np.repeat(budgets, 6) * np.random.default_rng(0).uniform(0.97, 1.03, 30)
    levels = plots.data_levels(C, max_levels=5)
    assert len(levels) == 5
    for (level, members), b in zip(levels, budgets, strict=True):
        assert abs(np.log10(level / b)) < 0.02 and members.sum() == 6
    few = plots.data_levels(C, max_levels=3)  # spread over the range: lowest and highest kept
    assert [round(np.log10(c)) for c, _ in few] == [17, 18, 19]


def test_data_scatter_gives_each_family_a_readable_panel():
    rng = np.random.default_rng(0)
    fams = ["a", "b $x^$", "c"]
    frame = pd.DataFrame(
        {
            "N": 10 ** rng.uniform(7, 9, 30),
            "D": 10 ** rng.uniform(9, 11, 30),
            "loss": rng.uniform(2, 4, 30),
            "family": np.repeat(fams, 10),
        }
    )
    data = ScalingData.from_frame(frame, N="N", D="D", loss="loss", family="family")
    fig = plots.data_scatter(data)
    panels = _axes(fig)
    assert [ax.get_title() for ax in panels] == [plots.text(f) for f in fams]
    assert all(len(ax.collections[0].get_offsets()) == 10 for ax in panels)  # one family per panel
    bar = [a for a in fig.axes if a.get_label() == "<colorbar>"]
    assert len(bar) == 1 and "nats" in bar[0].get_ylabel()  # one shared loss scale, with its unit
    png = _render(fig)  # the family label with '$' draws (mathtext would fail on it)
    assert len(png) > 1000


def test_user_labels_are_drawn_literally():
    fig = Figure()
    fig.text(0.5, 0.5, "b $x^$")  # the raw label: mathtext fails to parse it and the figure is lost
    with pytest.raises(ValueError):
        _render(fig)
    fig = Figure()
    ax = fig.subplots()
    ax.plot([1, 2], label=plots.text("_hidden $x^$"))
    ax.set_title(plots.text("cost $5 and $10"))
    legend = ax.legend()
    assert [t.get_text() for t in legend.get_texts()] == [plots.text("_hidden $x^$")]  # not dropped from the legend
    _render(fig)
    assert plots.times(10) == "10×" and plots.times(2.5) == "2.5×" and plots.times(1e6) == "1.0e6×"


def test_isoflop_curves_span_the_runs_not_made_up_sizes():
    # runs at 1e8-1e9 parameters and N* inside them: the curve covers them and a third of a decade more, not the
    # 2.6 decades around N* it used to (sizes no run was near)
    Ns = plots._isoflop_sizes(np.array([1e8, 3e8, 1e9]), np.array([2e8, 3e8, 5e8]), 64)
    assert np.log10(Ns[0]) == pytest.approx(8 - 0.33) and np.log10(Ns[-1]) == pytest.approx(9 + 0.33)
    # N*'s interval beyond the runs widens the curve to show it
    Ns = plots._isoflop_sizes(np.array([1e8, 3e8]), np.array([2e8, 6e8, 2e9]), 64)
    assert Ns[-1] == pytest.approx(2e9 * 10**0.33)
    # no runs at this budget: around N*
    Ns = plots._isoflop_sizes(np.array([]), np.array([2e8, 3e8, 5e8]), 64)
    assert Ns[0] == pytest.approx(3e8 / 10**1.3) and Ns[-1] == pytest.approx(3e8 * 10**1.3)
