"""Compute planning (scalebayes.plan and the Posterior planning methods) on the shared Chinchilla posterior.

Tolerances: the numerical planner polishes with Newton steps to float64 round-off, so closed-form comparisons use
relative tolerances of 1e-8 (observed ~1e-14; 1e-8 leaves room for other BLAS/CPU builds while still catching an
optimum off by one grid step, which is ~1e0 in log ratio). Probability checks are exact up to one posterior draw
(1/S), because every probability here is a fraction of draws.
"""

from __future__ import annotations

import math

import jax.numpy as jnp
import numpy as np
import pytest

from scalebayes import laws as _laws
from scalebayes import plan as P
from scalebayes.errors import DataError, ModelError

RTOL = 1e-8  # see the module docstring
HOFFMANN = (70e9, 1.4e12)  # Chinchilla: 70B parameters on 1.4T tokens, 6ND = 5.88e23 FLOP


@pytest.fixture(scope="module")
def params(chinchilla_post):
    return chinchilla_post.param_draws()


@pytest.fixture(scope="module")
def few(params):
    """200 of the 2000 draws (the first 200; draws are exchangeable), for the costlier nested solvers."""
    return {k: v[:200] for k, v in params.items()}


def _rel(a, b):
    return float(jnp.max(jnp.abs(jnp.asarray(a) / jnp.asarray(b) - 1.0)))


# ---------------------------------------------------------------------------------------------------- optimum
def test_closed_form_and_numerical_optimum_agree_per_draw(chinchilla_post, params):
    C = jnp.asarray(np.logspace(18, 27, 10))
    cf = P.closed_form_optimum(params, C)
    nm = P.numerical_optimum(chinchilla_post.law, params, C)
    assert cf["N"].shape == nm["N"].shape == (chinchilla_post.n_samples, 10)
    for k in ("N", "D", "loss"):
        assert _rel(nm[k], cf[k]) < RTOL, k
    assert not bool(nm["at_edge"].any())
    np.testing.assert_allclose(6 * cf["N"] * cf["D"], np.broadcast_to(C, cf["N"].shape), rtol=1e-12)


def test_closed_form_and_numerical_agree_under_unique_token_cap(chinchilla_post, few):
    C, U = jnp.asarray(np.logspace(20, 26, 4)), 3e11  # the cap binds from ~1e23 FLOP on
    cf = P.closed_form_optimum(few, C, U)
    nm = P.numerical_optimum(chinchilla_post.law, few, C, 0.0, U)
    for k in ("N", "D", "loss"):
        assert _rel(nm[k], cf[k]) < RTOL, k
    assert float(cf["D"].max()) <= U * (1 + 1e-12)
    np.testing.assert_allclose(cf["D"][:, -1], U, rtol=1e-12)  # 1e26 FLOP: every draw wants D* > 3e11
    # round trip through the compute needed for a loss, with the cap binding or not
    c_back = P.compute_for_loss_draws(chinchilla_post.law, few, cf["loss"], C[None, :] * 10, U)
    np.testing.assert_allclose(c_back, np.broadcast_to(C, c_back.shape), rtol=RTOL)


def test_compute_for_loss_draws_matches_closed_form(chinchilla_post, few):
    cf = P.closed_form_optimum(few, jnp.asarray([1e20, 1e23, 1e26]))
    c_num = P.compute_for_loss_draws(chinchilla_post.law, few, cf["loss"], jnp.asarray([1e22, 1e25, 1e28])[None, :])
    np.testing.assert_allclose(c_num, np.broadcast_to([1e20, 1e23, 1e26], c_num.shape), rtol=RTOL)
    c_cf = P.closed_form_compute_for_loss(few, cf["loss"])
    np.testing.assert_allclose(c_cf, c_num, rtol=RTOL)


# ---------------------------------------------------------------------------------------------------- plan
def test_plan_frame_and_monotone_in_C(chinchilla_post):
    C = np.logspace(19, 26, 15)
    df = chinchilla_post.plan(C)
    assert len(df) == 15
    for name in ("N", "D", "D_per_N", "L", "C_train", "C_total"):
        for q in ("q0.05", "q0.5", "q0.95"):
            assert f"{name}_{q}" in df.columns
    for q in ("q0.05", "q0.5", "q0.95"):
        assert np.all(np.diff(df[f"N_{q}"]) > 0)
        assert np.all(np.diff(df[f"D_{q}"]) > 0)
        assert np.all(np.diff(df[f"L_{q}"]) < 0)
        np.testing.assert_allclose(df[f"C_train_{q}"], C, rtol=1e-12)  # the plan spends exactly the budget
    assert np.all(df["N_q0.05"] < df["N_q0.5"]) and np.all(df["N_q0.5"] < df["N_q0.95"])
    # numerical planner gives the same table
    num = chinchilla_post.plan(C, method="numerical")
    np.testing.assert_allclose(num[df.columns].to_numpy(), df.to_numpy(), rtol=RTOL)
    # a single-family fit: family=None is that family
    same = chinchilla_post.plan(C, family=chinchilla_post.families[0])
    np.testing.assert_allclose(same.to_numpy(), df.to_numpy())


def test_plan_input_errors(chinchilla_post):
    with pytest.raises(DataError):
        chinchilla_post.plan([1e21, -1.0])
    with pytest.raises(ModelError):
        chinchilla_post.plan(1e21, objective="cheapest")
    with pytest.raises(ModelError):
        chinchilla_post.plan(1e21, inference_tokens=1e12, method="closed_form")


def test_plan_needs_N_and_D():
    if "compute" not in _laws.available():
        pytest.skip("no compute-only law registered")
    with pytest.raises(ModelError, match="needs N and D"):
        P._check_law(_laws.get("compute"))


def test_unique_token_cap_in_plan(chinchilla_post):
    df = chinchilla_post.plan([1e22, 1e25], unique_tokens=1e12)
    assert df["D_q0.95"].max() <= 1e12 * (1 + 1e-12)
    assert "epochs_q0.5" in df.columns and df["epochs_q0.95"].max() <= 1 + 1e-12
    free = chinchilla_post.plan([1e22, 1e25])
    assert df["L_q0.5"].iloc[1] > free["L_q0.5"].iloc[1]  # at 1e25 FLOP the cap binds and costs loss
    assert df["L_q0.5"].iloc[0] == pytest.approx(free["L_q0.5"].iloc[0])  # at 1e22 it does not bind


# ---------------------------------------------------------------------------------------------------- inference-aware
def test_inference_aware_optimum_shifts_to_smaller_N_more_D(chinchilla_post):
    C = 1e22
    rows = [chinchilla_post.plan(C, inference_tokens=T) for T in (0.0, 1e11, 1e12, 1e13)]
    N = np.array([r["N_q0.5"].iloc[0] for r in rows])
    D = np.array([r["D_q0.5"].iloc[0] for r in rows])
    assert np.all(np.diff(N) < 0) and np.all(np.diff(D) > 0)
    # the target loss is the Chinchilla-optimal loss at C whatever T is; training costs more, lifetime cost less
    # than training the Chinchilla-optimal model and serving it
    for r, T in zip(rows[1:], (1e11, 1e12, 1e13), strict=True):
        assert r["L_q0.5"].iloc[0] == pytest.approx(rows[0]["L_q0.5"].iloc[0], rel=1e-10)
        assert r["C_train_q0.05"].iloc[0] >= C * (1 - 1e-9)
        assert r["C_total_q0.5"].iloc[0] < C + 2 * rows[0]["N_q0.5"].iloc[0] * T


def test_inference_optimum_is_the_minimum_total_cost(chinchilla_post, params):
    """Brute force per draw for the Chinchilla law: at the target loss ℓ, D(N) = (B/(ℓ - E - A/N^α))^(1/β); the
    lifetime cost 6ND + 2NT on a dense N grid is never below the solver's optimum, and its minimum matches it."""
    C, T = 1e22, 1e13
    out = P.inference_optimum(chinchilla_post.law, params, jnp.asarray([C]), T, math.inf)  # as plan() calls it
    p = {k: np.asarray(v)[:, None] for k, v in params.items()}
    ell = np.asarray(out["loss"])  # (S, 1)
    N_opt = np.asarray(out["N"])
    grid = N_opt * np.logspace(-0.5, 0.5, 4001)[None, :]  # ±0.5 dex around it, step 2.9e-4 in log N
    gap = ell - p["E"] - p["A"] * grid ** -p["alpha"]
    D = np.where(gap > 0, (p["B"] / np.where(gap > 0, gap, 1.0)) ** (1 / p["beta"]), np.inf)
    total = 6 * grid * D + 2 * grid * T
    best = total.min(axis=1, keepdims=True)
    solver = np.asarray(out["C_total"])
    assert np.all(best >= solver * (1 - 1e-9))  # nothing on the grid beats the solver
    # a grid step of 2.9e-4 in log N costs at most ~1e-7 relative at a smooth minimum
    np.testing.assert_allclose(best, solver, rtol=1e-6)
    # and the solver's own (N, D) reaches ℓ
    np.testing.assert_allclose(
        np.asarray(chinchilla_post.law.loss({k: v for k, v in p.items()}, N=out["N"], D=out["D"])), ell, rtol=1e-10
    )


def test_budget_objective_spends_the_total_budget(chinchilla_post):
    df = chinchilla_post.plan([1e21, 1e23], inference_tokens=1e12, objective="budget")
    np.testing.assert_allclose(df["C_total_q0.5"], [1e21, 1e23], rtol=1e-9)
    free = chinchilla_post.plan([1e21, 1e23])
    assert np.all(df["L_q0.5"] > free["L_q0.5"])  # inference eats part of the budget
    same = chinchilla_post.plan([1e21, 1e23], objective="budget")  # T = 0: both objectives are the plain plan
    np.testing.assert_allclose(same.to_numpy(), free.to_numpy(), rtol=RTOL)


# ---------------------------------------------------------------------------------------------------- decisions
def test_compute_for_loss_inverts_prob_loss_below(chinchilla_post):
    # the law's mean loss (include_noise=False): the same draws at every allocation, so minimality can be checked
    S = chinchilla_post.n_samples
    targets = np.array([2.0, 1.95])
    out = chinchilla_post.compute_for_loss(targets, prob=0.9, include_noise=False)
    assert out.attrs["predictive"] == "parameters only"
    assert np.all(np.isfinite(out["C"])) and np.all(np.diff(out["C"]) > 0)
    np.testing.assert_allclose(6 * out["N"] * out["D"], out["C"], rtol=1e-9)
    pr = chinchilla_post.prob_loss_below(targets, out["N"].to_numpy(), out["D"].to_numpy(), include_noise=False)
    assert np.all(pr >= 0.9) and np.all(pr <= 0.9 + 1.0 / S)  # a fraction of draws: exact up to one draw
    # minimal: with 0.1% less compute no allocation (N on a fine grid, ±1 dex) reaches the probability
    for j, t in enumerate(targets):
        C = out["C"].iloc[j] * 0.999
        Ns = out["N"].iloc[j] * np.logspace(-1, 1, 401)
        assert chinchilla_post.prob_loss_below(np.full_like(Ns, t), Ns, C / (6 * Ns), include_noise=False).max() < 0.9
    # a scalar query gives a float that rises with the target (Chinchilla's loss: 90% interval ~1.956-1.981)
    p_lo, p_hi = (chinchilla_post.prob_loss_below(t, *HOFFMANN) for t in (1.96, 1.975))
    assert isinstance(p_lo, float) and 0.0 < p_lo < p_hi < 1.0


def test_compute_for_loss_with_noise(chinchilla_post):
    # run-to-run noise is included by default, in compute_for_loss as in prob_loss_below
    targets = np.array([2.0, 1.95])
    quiet = chinchilla_post.compute_for_loss(targets, prob=0.9, include_noise=False)
    noisy = chinchilla_post.compute_for_loss(targets, prob=0.9)
    assert noisy.attrs["include_noise"] is True
    assert np.all(noisy["C"] > quiet["C"])  # a single run must also beat its noise 90% of the time
    assert np.all(noisy["loss_q0.95"] - noisy["loss_q0.05"] > quiet["loss_q0.95"] - quiet["loss_q0.05"])
    pr = chinchilla_post.prob_loss_below(targets, noisy["N"].to_numpy(), noisy["D"].to_numpy())
    S = chinchilla_post.n_samples
    assert np.all(pr >= 0.9) and np.all(pr <= 0.9 + 1.0 / S)  # the same noise numbers column by column
    # below the irreducible loss nothing helps
    with pytest.warns(UserWarning, match="not reached"):
        low = chinchilla_post.compute_for_loss(1.0, prob=0.5)
    assert np.isinf(low["C"].iloc[0])


def test_allocation_regret(chinchilla_post, params):
    reg = chinchilla_post.allocation_regret(N=HOFFMANN[0], D=HOFFMANN[1])
    assert reg.shape == (chinchilla_post.n_samples,)
    assert reg.min() >= -1e-10  # nothing beats the optimum (round-off only)
    # numerical and closed-form C_opt agree (relative 1e-8 on C_opt, i.e. ~1e-8 absolute on regret)
    num = chinchilla_post.allocation_regret(5.88e23, N=HOFFMANN[0], method="numerical")
    np.testing.assert_allclose(num, reg, atol=1e-8)
    # each draw's own optimum has zero regret under that draw: the diagonal of (S draws) × (their 20 optima)
    cf = P.closed_form_optimum({k: v[:20] for k, v in params.items()}, jnp.asarray([1e23]))
    own = chinchilla_post.allocation_regret(N=np.asarray(cf["N"][:, 0]), D=np.asarray(cf["D"][:, 0]))
    assert own.shape == (chinchilla_post.n_samples, 20)
    assert np.abs(np.diag(own[:20])).max() < 1e-9
    # a 10x-too-big model on 10x fewer tokens wastes far more
    bad = chinchilla_post.allocation_regret(N=HOFFMANN[0] * 10, D=HOFFMANN[1] / 10)
    assert np.median(bad) > 10 * np.median(reg) and np.median(bad) > 0.5
    with pytest.raises(DataError):
        chinchilla_post.allocation_regret(N=70e9)
    with pytest.raises(DataError):
        chinchilla_post.allocation_regret(1e23, 70e9, 1.4e12)  # C disagrees with 6ND


def test_chinchilla_headline_numbers(chinchilla_post):
    """The numbers quoted for the issue, with loose bounds: they describe this posterior (seed 0, 4×500 draws),
    and a change far outside them means the fit or the planner changed, not Monte-Carlo noise."""
    df = chinchilla_post.plan(5.88e23)
    lo, med, hi = (df[f"D_per_N_q{q}"].iloc[0] for q in ("0.05", "0.5", "0.95"))
    assert 10 < lo < med < hi < 40
    p1 = float((chinchilla_post.allocation_regret(N=HOFFMANN[0], D=HOFFMANN[1]) <= 0.01).mean())
    assert 0.5 < p1 <= 1.0


# ---------------------------------------------------------------------------------------------------- other laws
def _law_or_skip(name):
    if name not in _laws.available():
        pytest.skip(f"law {name!r} not registered")
    return _laws.get(name)


def test_numerical_optimum_data_constrained_law(few):
    """Muennighoff's law with plenty of unique data is the Chinchilla law; with scarce data it repeats epochs and
    does better than the Chinchilla law capped at D ≤ U (repeated tokens are worth something)."""
    law = _law_or_skip("data_constrained")
    dc = {**few, "R_star": jnp.full_like(few["E"], 15.4)}
    C = jnp.asarray([1e21, 1e24])
    plenty = P.numerical_optimum(law, dc, C, 0.0, 1e20)
    cf = P.closed_form_optimum(few, C)
    for k in ("N", "D", "loss"):
        assert _rel(plenty[k], cf[k]) < RTOL, k
    U = 1e11
    scarce = P.numerical_optimum(law, dc, C, 0.0, U)
    capped = P.closed_form_optimum(few, C, U)
    assert float(scarce["D"][:, 1].min()) > U  # at 1e24 FLOP it trains several epochs on 1e11 tokens
    assert bool((scarce["loss"][:, 1] < capped["loss"][:, 1]).all())
    assert bool((scarce["loss"][:, 1] > cf["loss"][:, 1]).all())  # but not as well as with fresh data


def test_numerical_optimum_overtrained_law():
    """Gadre et al.'s L = E + (a·M^η + b·M^-η)·C^-η is minimised at M* = (b/a)^(1/(2η)) tokens per parameter."""
    law = _law_or_skip("overtrained")
    S = 5
    m_star = jnp.asarray([5.0, 20.0, 80.0, 300.0, 2000.0])  # tokens per parameter
    eta, a = jnp.linspace(0.04, 0.08, S), jnp.linspace(0.5, 2.0, S)
    p = {"E": jnp.full(S, 1.8), "a": a, "b": a * m_star ** (2 * eta), "eta": eta}
    out = P.numerical_optimum(law, p, jnp.asarray([1e20, 1e24]))
    assert not bool(out["at_edge"].any())
    np.testing.assert_allclose(out["D"] / out["N"], np.broadcast_to(m_star[:, None], (S, 2)), rtol=RTOL)


def test_numerical_optimum_kaplan_law():
    """Kaplan et al.'s law has no floor; the planner's optimum is a stationary point no grid neighbour beats."""
    law = _law_or_skip("kaplan")
    p = {k: jnp.asarray([v]) for k, v in {"N_c": 8.8e13, "D_c": 5.4e13, "alpha_N": 0.076, "alpha_D": 0.095}.items()}
    C = jnp.asarray([1e20, 1e24])
    out = P.numerical_optimum(law, p, C)
    assert not bool(out["at_edge"].any())
    for j in range(2):
        n = float(out["N"][0, j]) * np.exp(np.linspace(-0.01, 0.01, 21))
        loss = np.asarray(law.loss(p, N=n, D=float(C[j]) / (6 * n)))
        assert loss.min() >= float(out["loss"][0, j]) * (1 - 1e-12)
