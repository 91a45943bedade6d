"""Figures (scalebayes.plots) on the shared Chinchilla posterior: each returns a Figure with labelled, unit-bearing
axes on the right scales, and renders to PNG with the Agg canvas (no display)."""

from __future__ import annotations

import io

import numpy as np
import pytest
from matplotlib.figure import Figure

from scalebayes import plots
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
