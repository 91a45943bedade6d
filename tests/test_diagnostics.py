"""One diagnostics module for fit, fit_many and SBC: the batched R-hat and ESS equal ArviZ's (arviz_stats 1.x
``rhat`` and ``ess(method="bulk"/"tail")``), one verdict, and divergences / tree-depth saturation named with their
fractions and what to do about them."""

from __future__ import annotations

import arviz_stats as azs
import numpy as np
import pytest
import xarray as xr

from scalebayes.diagnostics import Diagnostics, advice, batch_diagnostics, compute, split_rhat


def _ar1(rng, C, S, phi, shift=0.0):
    x = np.zeros((C, S))
    e = rng.standard_normal((C, S))
    for t in range(1, S):
        x[:, t] = phi * x[:, t - 1] + e[:, t]
    return x + shift * np.arange(C)[:, None]


def _arviz(ds: xr.Dataset, name: str) -> list[float]:
    return [
        float(azs.rhat(ds)[name]),
        float(azs.ess(ds, method="bulk")[name]),
        float(azs.ess(ds, method="tail")[name]),
    ]


def test_batch_diagnostics_equal_arviz():
    """R-hat, bulk and tail ESS of the vectorised implementation equal ArviZ's for chains of every kind, all at
    once (the batch axis) — including odd lengths, strong autocorrelation, disagreeing chains and discrete values.
    Both compute the same formulas in float64; 1e-10 relative allows only summation-order rounding."""
    rng = np.random.default_rng(0)
    cases = [
        _ar1(rng, 4, 1000, 0.5),
        _ar1(rng, 4, 1000, 0.95),
        _ar1(rng, 4, 251, 0.1),
        _ar1(rng, 4, 100, -0.3),
        _ar1(rng, 4, 50, 0.99, 2.0),
        np.exp(_ar1(rng, 4, 400, 0.7)),
        np.round(_ar1(rng, 4, 200, 0.6)),
    ]
    for x in cases:
        ref = _arviz(xr.Dataset({"v": (("chain", "draw"), x)}), "v")
        # the same chains twice in a batch of shape (2, 1, C, S): every element gets the same numbers
        got = batch_diagnostics(np.stack([x, x])[:, None])
        for g, r in zip(got, ref, strict=True):
            np.testing.assert_allclose(g, r, rtol=1e-10)
        np.testing.assert_allclose(split_rhat(x), ref[0], rtol=1e-10)
    one = batch_diagnostics(_ar1(rng, 1, 200, 0.3)[None])
    assert np.isnan(one[0]).all() and np.isfinite(one[1]).all()  # R-hat needs two chains, as in ArviZ


def _posterior(rng, C=4, S=500):
    fam = ["a", "b", "c"]
    ds = xr.Dataset(
        {
            "E": (("chain", "draw"), _ar1(rng, C, S, 0.3)),
            "alpha": (("chain", "draw", "family"), np.stack([_ar1(rng, C, S, p) for p in (0.1, 0.5, 0.9)], -1)),
        },
        coords={"chain": np.arange(C), "draw": np.arange(S), "family": fam},
    )
    return ds


def _stats(C, S, *, diverging=0, saturated=0, depth=10):
    div = np.zeros((C, S), bool)
    div.flat[:diverging] = True
    steps = np.full((C, S), 7)
    steps.flat[:saturated] = (1 << depth) - 1
    return xr.Dataset({"diverging": (("chain", "draw"), div), "n_steps": (("chain", "draw"), steps)}).assign_attrs(
        max_tree_depth=depth
    )


def test_compute_table_equals_arviz_per_element():
    post = _posterior(np.random.default_rng(1))
    d = compute(post, _stats(4, 500))
    assert list(d.table.index) == ["E", "alpha[a]", "alpha[b]", "alpha[c]"]
    for label, name, sel in [("E", "E", {}), ("alpha[c]", "alpha", {"family": "c"})]:
        ref = _arviz(post[[name]].sel(sel), name)
        got = d.table.loc[label, ["r_hat", "ess_bulk", "ess_tail"]].to_numpy(dtype=float)
        np.testing.assert_allclose(got, ref, rtol=1e-10)
    assert d.ess_bulk_min == pytest.approx(d.table["ess_bulk"].min())
    assert d.r_hat_max == pytest.approx(d.table["r_hat"].max())


def test_divergences_and_saturation_are_named_with_fractions_and_advice():
    post = _posterior(np.random.default_rng(2), S=1000)
    clean = compute(post, _stats(4, 1000))
    assert clean.divergences == 0 and clean.tree_depth_saturation == 0.0 and not clean.notes
    d = compute(post, _stats(4, 1000, diverging=40, saturated=200, depth=8))
    assert not d.ok
    assert d.divergences == 40 and d.divergence_fraction == pytest.approx(0.01)
    assert d.tree_depth_saturation == pytest.approx(0.05) and d.max_tree_depth == 8
    assert any("40 divergent transitions (1.0% of iterations)" in f for f in d.failures)
    assert "5.0% of iterations hit max_tree_depth=8" in str(d)
    tips = advice(d)
    assert "target_accept" in tips and "max_tree_depth" in tips and "reparameterise" in tips
    # saturation alone costs efficiency, not validity: it is reported, it does not fail the fit
    only_sat = compute(post, _stats(4, 1000, saturated=100))
    assert only_sat.ok == clean.ok and only_sat.notes and "max_tree_depth" in advice(only_sat)
    assert set(d.to_dict()) >= {"divergence_fraction", "tree_depth_saturation", "notes"}


def test_unknown_depth_limit_reports_no_saturation():
    post = _posterior(np.random.default_rng(3))
    stats = _stats(4, 500)
    stats.attrs.clear()
    d = compute(post, stats)
    assert np.isnan(d.tree_depth_saturation) and d.max_tree_depth is None
    assert isinstance(Diagnostics(1.0, 500.0, 500.0, 0, 7.0, 4000), Diagnostics)  # positional form unchanged
