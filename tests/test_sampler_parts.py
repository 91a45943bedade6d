"""The sampler's parts, each alone: the fused likelihood, the adaptation pairs, the NUTS tree and the schedule."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from scalebayes import likelihood
from scalebayes.sampler import adaptation, metric, nuts
from scalebayes.sampler.rng import uniforms


@pytest.mark.parametrize("nu", [1.5, 4.0, 60.0, math.inf])
def test_logpdf_one_log_equals_logpdf(nu):
    """The potential's one-log form is the package's noise model to rounding (shared and per-run scales)."""
    rng = np.random.default_rng(0)
    y, loc = rng.normal(1.0, 0.1, 200), rng.normal(1.0, 0.1, 200)
    for scale in (0.03, rng.uniform(0.01, 0.1, 200)):
        s = jnp.asarray(scale)
        nu_arg = nu if math.isinf(nu) else jnp.asarray(nu)
        a = likelihood.logpdf_one_log(y, loc, s, nu_arg, log_scale=jnp.log(s))
        np.testing.assert_allclose(a, likelihood.logpdf(y, loc, scale, nu), rtol=1e-12, atol=1e-12)


def test_welford_covariance_is_the_sample_covariance_and_pools_exactly():
    """The running estimate equals np.cov, and pooling per-chain statistics equals one estimate over all draws
    (Chan et al.'s update is exact up to rounding)."""
    init, update, factor = adaptation.welford_covariance(dense=True)
    x = np.random.default_rng(1).standard_normal((2, 50, 3)) @ np.diag([1.0, 0.1, 0.01])
    states = []
    for c in range(2):
        w = init(3, jnp.float64)
        for q in x[c]:
            w = update(w, jnp.asarray(q))
        states.append(w)
        np.testing.assert_allclose(w.m2 / (w.n - 1), np.cov(x[c].T), rtol=1e-10)
    pooled = adaptation.pool_welford(jax.tree.map(lambda *a: jnp.stack(a)[None], *states))
    np.testing.assert_allclose(pooled.m2[0, 1] / (pooled.n[0, 1] - 1), np.cov(x.reshape(100, 3).T), rtol=1e-10)
    L, ok = factor(jax.tree.map(lambda a: a[0, 0], pooled))
    assert ok
    # shrinkage toward 1e-3 x the diagonal keeps the smallest scale (0.01), unlike an absolute 1e-3 ridge
    np.testing.assert_allclose(np.sqrt(np.diag(L @ L.T)), np.sqrt(np.diag(np.cov(x.reshape(100, 3).T))), rtol=0.05)


def test_dual_averaging_reaches_the_target():
    """On a toy acceptance curve accept(ε) = exp(-ε), dual averaging settles where accept = target."""
    init, update = adaptation.dual_averaging(0.8)
    st = init(jnp.asarray(0.0))
    for _ in range(2000):
        st = update(st, jnp.exp(-jnp.exp(st.log_step)))
    assert math.exp(-math.exp(float(st.log_step_avg))) == pytest.approx(0.8, abs=0.01)


def test_a_nuts_trajectory_on_a_gaussian_conserves_energy_and_stops():
    """Leaf by leaf on a standard normal: no divergence, the trajectory ends by a U-turn within a few doublings,
    and its acceptance statistic is near 1 for a small step."""
    D = 4
    L = metric.identity(D, True, jnp.float64)
    vg = nuts.whitened(lambda q, *a: 0.5 * jnp.sum(q * q), L, ())
    u = jnp.ones(D)
    pe, g = vg(u)
    tree = nuts.restart(nuts.init(u, g, pe, 10), uniforms(jnp.asarray([1, 2], jnp.uint32), 0, 8, jnp.float64))
    for i in range(1, 200):
        uni = uniforms(jnp.asarray([1, 2], jnp.uint32), i, nuts.n_uniforms(D), jnp.float64)
        tree, done, diverging = nuts.extend(tree, uni, jnp.log(0.2), vg, 10)
        assert not diverging
        if done:
            break
    assert done and 4 <= int(tree.n_leaves) < 64
    assert float(tree.sum_accept / tree.n_leaves) > 0.95


def test_window_table_rows():
    t = adaptation.window_table(1000, 200)
    assert list(t.n_iter) == [0, 75, 25, 50, 100, 200, 500, 50, 200]
    assert t.final.tolist() == [False] * 7 + [True, False]
    assert t.update.tolist() == [False, False] + [True] * 5 + [False, False]
