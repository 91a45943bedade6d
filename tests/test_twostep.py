"""The accuracy-vs-loss law (scalebayes.loss_to_accuracy) and two-step forecasts (scalebayes.twostep)."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from conftest import LAW_ONLY, QUICK, simulate_chinchilla

import scalebayes as sb
from scalebayes import loss_to_accuracy as la
from scalebayes.discrepancy import Discrepancy, fitted_regions
from scalebayes.errors import DataError, NotCalibratedError, SamplingWarning

CHINCHILLA = dict(E=1.69, A=406.4, B=410.7, alpha=0.34, beta=0.28)
#: The accuracy law the (loss, accuracy) pairs are drawn from: mid is in nats from the data's median loss.
TRUE = dict(mid=2.6, slope=3.0, u=0.8, phi=300.0)
FLOOR, QUESTIONS = 0.25, 1000


def _pairs(loss: np.ndarray, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    mu = TRUE["u"] / (1 + np.exp(-TRUE["slope"] * (TRUE["mid"] - loss)))
    p = rng.beta(mu * TRUE["phi"], (1 - mu) * TRUE["phi"])
    return FLOOR + (1 - FLOOR) * rng.binomial(QUESTIONS, p) / QUESTIONS


@pytest.fixture(scope="module")
def runs():
    return sb.ScalingData.from_frame(simulate_chinchilla(CHINCHILLA, n=40, seed=0), N="N", D="D", loss="loss")


@pytest.fixture(scope="module")
def acc_law(runs):
    loss = runs.frame["loss"].to_numpy()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SamplingWarning)  # short chains; recovery is checked below
        return la.fit(loss, _pairs(loss, 1), floor=FLOOR, questions=QUESTIONS, seed=0, chains=2, warmup=300, draws=300)


@pytest.fixture(scope="module")
def two(runs, acc_law):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SamplingWarning)
        return sb.TwoStep(sb.fit(runs, seed=0, **QUICK, **LAW_ONLY), acc_law)


def test_published_convention_from_anchored_parameters():
    # the anchored parameters reproduce the law they name: q0 at L0, slope h·q0·(1 − q0) there, ceiling u
    q0, h, v = 0.3, 1.7, 0.6
    mid, slope, u = (float(t) for t in la.published(q0, h, v))
    assert u == pytest.approx(q0 + (1 - q0) * v)
    assert float(la.mean_fraction(0.0, slope, mid, u)) == pytest.approx(q0)
    eps = 1e-6
    grad = (la.mean_fraction(-eps, slope, mid, u) - la.mean_fraction(eps, slope, mid, u)) / (2 * eps)
    assert float(grad) == pytest.approx(h * q0 * (1 - q0), rel=1e-6)


def test_accuracy_law_recovers_parameters(acc_law):
    # one simulated dataset, fixed seeds: each true value in its central 98% interval (3 checks: a correct model
    # fails by chance with probability ≤ 0.06, and the fixed seeds make the outcome deterministic)
    truth = {"mid": TRUE["mid"] - acc_law.loss0, "slope": TRUE["slope"], "u": TRUE["u"]}
    for name, v in truth.items():
        lo, hi = np.quantile(acc_law.draws[name], [0.01, 0.99])
        assert lo <= v <= hi, (name, lo, hi, v)


def test_accuracy_bounded_and_at_chance_for_high_loss(acc_law):
    a = acc_law.accuracy_draws(np.array([0.5, 2.5, 8.0]), seed=0)
    assert a.min() >= FLOOR and a.max() <= 1.0
    assert np.median(a[:, 2]) < FLOOR + 0.01  # far above the fitted losses the law sits on the chance floor
    mean = acc_law.accuracy_draws(np.array([8.0]), seed=0, noise=False)
    assert mean.min() >= FLOOR
    # without a question count the noise is over 1000 pseudo-questions: still in [floor, 1], on a 1/1000 grid
    none = la.AccuracyLaw(0.5, None, 3.0, (2.0, 4.0), {k: v[:50] for k, v in acc_law.draws.items()}, None)
    b = none.accuracy_draws(np.array([1.0, 3.0, 9.0]), seed=0)
    assert b.min() >= 0.5 and b.max() <= 1.0
    k = (b - 0.5) / 0.5 * la.PSEUDO_QUESTIONS
    np.testing.assert_allclose(k, np.round(k), atol=1e-6)


def test_accuracy_law_validates_its_inputs():
    with pytest.raises(DataError, match="accuracy") as err:
        la.observations([3.0, 2.9, 2.8], [0.3, 1.2, 0.5], floor=0.25, questions=100)
    assert err.value.rows == [1]
    with pytest.raises(DataError, match="equal lengths"):
        la.observations([3.0, 2.9, 2.8], [0.3, 0.5], floor=0.25, questions=100)
    obs = la.observations([3.0, 2.9, 2.8], [0.2, 0.5, 0.625], floor=0.25, questions=100)
    assert obs.below_chance == 1 and obs.q.tolist() == [0.0, 33.0, 50.0]  # below chance: set to chance, counted
    no_count = la.observations([3.0, 2.9, 2.8], [0.2, 0.5, 0.625], floor=0.25, questions=None)
    assert no_count.q.tolist() == [0.0, 333.0, 500.0] and no_count.n.tolist() == [1000.0] * 3


def test_sbc_ranks_uniform():
    # Reduced SBC: 20 prior datasets fitted jointly (one compiled NUTS run, sbc(joint=True)), 19 thinned draws each.
    # The chi-square test has little power at 20 ranks: it catches gross errors (a prior in simulate that differs
    # from the model's, a sign error in the law, a sampler that does not move), not subtle ones; the fuller
    # per-fit SBC is benchmarks/downstream_sbc.py. Bonferroni-adjusted p > 0.01 per parameter; fixed seed.
    r = la.sbc(20, n_obs=12, joint=True, warmup=200, draws=190, thin=10, seed=0)
    assert r["L"] == 19 and r["ranks"].shape == (20, len(la.PARAMS))
    assert min(r["p_values"].values()) > 0.01, r["p_values"]
    assert r["divergent"] == 0
    # the test can fail: ranks piled at one end are rejected
    assert la.rank_uniformity(np.zeros((20, len(la.PARAMS)), dtype=int), 19)["mid"] < 1e-6


def test_two_step_bounded_and_reproducible(two):
    q = dict(N=[1e9, 1e10, 1e11], D=[2e10, 2e11, 2e12])
    a = two.predict(**q, seed=3)
    b = two.predict(**q, seed=3)
    assert a.equals(b)  # same seed, same numbers
    assert not np.allclose(a["q0.5"], two.predict(**q, seed=4)["q0.5"])
    assert (a["q0.05"] >= FLOOR).all() and (a["q0.95"] <= 1.0).all()
    assert (a["loss_q0.05"] < a["loss_q0.95"]).all() and a.attrs["predictive"] == "parameters only"
    loss, acc = two.draws(**q, seed=3)
    assert loss.shape == acc.shape == (two.loss_posterior.n_samples, 3)
    # predict builds its loss predictive once: its loss columns are the loss posterior's own forecast and its
    # accuracy columns summarise the draws of `draws` with the same seed
    lp = two.loss_posterior.predict(**q, seed=3)
    np.testing.assert_array_equal(a["loss_q0.5"], lp["q0.5"])
    np.testing.assert_array_equal(a["loss_mean"], lp["mean"])
    np.testing.assert_allclose(a["q0.5"], np.quantile(acc, 0.5, axis=0))
    assert np.diff(np.median(acc, axis=0)).min() > 0  # more compute, lower loss, higher accuracy


def test_accuracy_interval_widens_with_the_loss_interval(two, runs):
    post = two.loss_posterior
    disc = Discrepancy(kappa=0.05, regions=fitted_regions(runs, post.law), gamma=1.0)
    near, far = dict(N=3e9, D=6e10), dict(N=1e12, D=2e13)  # inside the fitted runs; ~3 decades of N beyond them
    width = {}
    for name, q in (("near", near), ("far", far)):
        for ex in ("none", disc):
            r = two.predict(**q, extrapolation=ex, seed=0)
            width[name, ex is disc] = ((r["loss_q0.95"] - r["loss_q0.05"]).item(), (r["q0.95"] - r["q0.05"]).item())
    # the discrepancy is zero inside the fitted runs and large far out: loss and accuracy widths move together
    assert width["near", True] == pytest.approx(width["near", False])
    assert width["far", True][0] > 3 * width["far", False][0]
    assert width["far", True][1] > 2 * width["far", False][1]
    assert width["far", True][1] > width["near", True][1]
    with pytest.raises(NotCalibratedError):
        two.predict(**far, extrapolation="discrepancy")


def test_probability_and_compute_for_accuracy(two):
    kw = dict(include_noise=False, seed=0)  # the law's mean: no per-point noise, so the same draws at every point
    r = two.compute_for_accuracy(0.7, 0.8, **kw)
    C, N, D = r[["C", "N", "D"]].iloc[0]
    assert np.isfinite(C) and C == pytest.approx(6 * N * D)
    assert r["prob_reached"].item() >= 0.8
    assert two.prob_accuracy_above(0.7, N=N, D=D, **kw) == pytest.approx(r["prob_reached"].item())
    cands = r.attrs["candidates"]
    assert (cands.loc[cands["C"] < C, "prob"] < 0.8).all()
    p = two.prob_accuracy_above(0.7, N=cands["N"].to_numpy(), D=cands["D"].to_numpy(), **kw)
    np.testing.assert_allclose(p, cands["prob"])
    given = two.compute_for_accuracy(0.7, 0.8, N=[1e9, 1e10, 1e11], D=[2e10, 2e11, 2e12], **kw)
    assert given["N"].item() in (1e9, 1e10, 1e11)
    never = two.compute_for_accuracy(0.999, 0.8, **kw)  # above the ceiling (u ≈ 0.8)
    assert never["C"].item() == np.inf and never["prob_reached"].item() < 0.8
