"""Querying a posterior never fits; calibration is a separate, explicit step; the predictive's draws, mean, names
and inputs.

Uses the shared ``chinchilla_post`` fixture; calibrated posteriors are built from it without sampling (a
discrepancy attached by hand, or inner "refits" replaced by the fixture's own draws), so nothing here compiles a
sampler beyond the fixture's.
"""

from __future__ import annotations

import copy
import importlib
import warnings

import numpy as np
import pandas as pd
import pytest

import scalebayes as sb
from scalebayes import formerror, holdout
from scalebayes.discrepancy import ATTR, Discrepancy, attached, distances, fitted_regions, region
from scalebayes.errors import CalibrationWarning, DataError, NotCalibratedError, UnknownNameError
from scalebayes.posterior import Posterior
from scalebayes.predictive import LogPredictive, for_frame

fit_module = importlib.import_module("scalebayes.fitting")  # the module behind ``scalebayes.fit``

FAR = dict(N=[1e12, 1.2e12], D=[2e13, 2e13])  # ~100x the largest fitted compute
KAPPA = 0.05


def _calibrated(post, kappa=KAPPA):
    return Posterior(attached(post.idata, Discrepancy(kappa, fitted_regions(post.data, post.law))), data=post.data)


def _no_fitting(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("a query fitted")

    for mod, name in ((holdout, "fit_padded"), (fit_module, "fit"), (sb, "fit")):
        monkeypatch.setattr(mod, name, refuse)
    monkeypatch.setattr(holdout, "fit", refuse)
    monkeypatch.setattr(fit_module, "factory_for", refuse)


# ----------------------------------------------------------------------------------------------- predict never fits
def test_predict_never_fits(chinchilla_post, monkeypatch):
    _no_fitting(monkeypatch)
    post = chinchilla_post
    with pytest.raises(NotCalibratedError, match="calibrate"):
        post.predict(1e12, 2e13, extrapolation="discrepancy")
    plain = post.predict(1e12, 2e13)  # "auto": parameters only, nothing learned on the way
    assert plain.attrs["predictive"] == "parameters only" and ATTR not in post.idata.attrs
    cal = _calibrated(post)
    out = cal.predict(1e12, 2e13, extrapolation="discrepancy")
    assert out.attrs["predictive"] == "calibrated"
    assert cal.predict(1e12, 2e13).equals(out)  # "auto" on a calibrated posterior uses the calibration
    assert cal.predictive_draws(**FAR).shape == (post.n_samples, 2)
    assert cal.plan(1e24).attrs["predictive"] == "calibrated"
    assert 0.0 <= cal.prob_loss_below(2.0, 7e10, 1.4e12) <= 1.0
    assert _calibrated(post, 0.005).compute_for_loss(2.0).attrs["predictive"] == "calibrated"
    assert ATTR not in post.idata.attrs  # the input posterior never changed


def test_calibrate_leaves_out_failed_inner_refits(chinchilla_post, monkeypatch):
    # The inner point refits run for real; the first split's main refit is then marked as not converged.
    real = formerror.refit_subsets
    seen = {}

    def first_fails(data, law, weights, starts, **kw):
        params, ok = real(data, law, weights, starts, **kw)
        seen["lanes"] = len(ok)
        ok = ok.copy()
        ok[0] = False
        return params, ok

    monkeypatch.setattr(formerror, "refit_subsets", first_fails)
    with pytest.warns(CalibrationWarning, match="1 of 2 inner refits did not converge"):
        cal = sb.calibrate(chinchilla_post, fractions=(0.25, 0.35), split="compute", bootstrap=4)
    info = cal.discrepancy.info
    assert seen["lanes"] == 2 * (1 + 4)  # two splits, each a refit and 4 bootstrap resamples
    assert [e["fraction"] for e in info["left_out"]] == [0.25]
    assert [s["fraction"] for s in info["splits"]] == [0.35] and info["n_heldout"] == 84  # 35% of 240 runs
    assert not chinchilla_post.calibrated and cal.calibrated
    # no usable refit at all: the prior alone, said loudly, never errors learned from failed fits
    monkeypatch.setattr(
        formerror, "refit_subsets", lambda d, lw, w, s, **kw: (real(d, lw, w, s, **kw)[0], np.zeros(len(w), bool))
    )
    with pytest.warns(CalibrationWarning) as record:
        cal = sb.calibrate(chinchilla_post, fractions=(0.25,), split="compute", bootstrap=4)
    said = " ".join(str(w.message) for w in record)
    assert "1 of 1 inner refits did not converge" in said and "prior's alone" in said
    assert cal.discrepancy.info["prior_only"] and cal.discrepancy.info["splits"] == []


# ----------------------------------------------------------------------------------------------- the discrepancy
def test_discrepancy_draws_are_joint(chinchilla_post):
    # Two far queries 10% apart in N: independent δ per query would add 2κ²d² (≈ 0.05 at κ = 0.05, d ≈ 3.3) to the
    # variance of their log-loss difference; jointly drawn δ adds only κ²(d1 - d2)² (< 1e-4). The bound allows 5%
    # of the independent case (4000 draws estimate a variance to ~2%).
    cal = _calibrated(chinchilla_post)
    plain = np.log(chinchilla_post.predictive_draws(**FAR, include_noise=False, seed=3))
    joint = np.log(cal.predictive_draws(**FAR, include_noise=False, seed=3))
    sd = cal.discrepancy.sd({k: np.log(v) for k, v in {"N": FAR["N"], "D": FAR["D"]}.items()}, 1, "all")[0]
    assert sd.min() > 0.1  # far outside the fitted runs
    spurious = sd[0] ** 2 + sd[1] ** 2
    extra = np.var(joint[:, 0] - joint[:, 1]) - np.var(plain[:, 0] - plain[:, 1])
    assert extra < 0.05 * spurious
    # while each query's own spread does grow by about κ²d²
    grown = np.var(joint, axis=0) - np.var(plain, axis=0)
    np.testing.assert_allclose(grown, sd**2, rtol=0.15)


def test_new_family_is_never_closer_than_a_fitted_family():
    # Two families in (log N, log D): a small square and a large one around it. A new family is measured against
    # every family's runs together, so it is at least as far as each fitted family at every point.
    rng = np.random.default_rng(0)
    small = {"N": rng.uniform(0, 1, 30), "D": rng.uniform(0, 1, 30)}
    large = {"N": rng.uniform(-2, 3, 30), "D": rng.uniform(-2, 3, 30)}
    disc = Discrepancy(0.1, {"a": region(small, ("N", "D")), "b": region(large, ("N", "D"))})
    pts = {"N": rng.uniform(-4, 5, 200), "D": rng.uniform(-4, 5, 200)}
    new = disc.sd(pts, 1, None)
    assert (new >= disc.sd(pts, 1, "a") - 1e-12).all() and (new >= disc.sd(pts, 1, "b") - 1e-12).all()
    inside_union = {"N": [2.0], "D": [2.0]}  # inside b's hull, outside a's
    assert disc.sd(inside_union, 1, None)[0, 0] >= disc.sd(inside_union, 1, "a")[0, 0] > 0
    # the held-out runs κ is learned from are measured the same way (an unfitted family: the largest distance)
    frame = pd.DataFrame({"N": np.exp([2.0, 2.0]), "D": np.exp([2.0, 2.0]), "family": ["a", "zz"]})
    law = sb.laws.get("chinchilla")
    d = distances(disc.regions, frame, law)
    assert d[1] >= d[0] and d[1] * 0.1 == pytest.approx(disc.sd(inside_union, 1, None)[0, 0])


# ----------------------------------------------------------------------------------------------- mean and noise
def test_mean_is_finite_under_heavy_tails():
    # ν = 1.05 (near Cauchy) noise of scale 0.05 on log loss around 2.5: E[exp] of the noisy draws does not exist
    # (their sample mean is dominated by a few huge draws), the reported mean is the law's mean loss (no noise).
    rng = np.random.default_rng(0)
    S = 4000
    log_mu = np.log(2.5) + rng.normal(0, 0.01, (S, 1))
    pred = LogPredictive(log_mu, np.full((S, 1), 0.05), np.full(S, 1.05), np.zeros(1))
    assert np.exp(pred.draws(0)).mean() > 3.0  # the naive mean of a new run's loss is meaningless
    assert pred.mean(0)[0] == pytest.approx(np.exp(log_mu).mean(), rel=1e-12)
    assert pred.mean(0)[0] == pytest.approx(2.5, rel=0.01)


def test_predict_mean_is_the_law_mean_with_or_without_noise(chinchilla_post):
    a = chinchilla_post.predict(7e10, 1.4e12, quantiles=(0.05, 0.95))
    b = chinchilla_post.predict(7e10, 1.4e12, quantiles=(0.05, 0.95), include_noise=False)
    assert np.isfinite(a["mean"]).all() and a["mean"].iloc[0] == pytest.approx(b["mean"].iloc[0])
    assert b["q0.05"].iloc[0] < b["mean"].iloc[0] < b["q0.95"].iloc[0]


def test_prob_loss_below_includes_run_noise_by_default(chinchilla_post):
    post = chinchilla_post
    law = post.predict(7e10, 1.4e12, include_noise=False, quantiles=(0.02,))
    t = float(law["q0.02"].iloc[0])  # 2% of the law's draws are below t; a noisy run gets there more often
    default = post.prob_loss_below(t, 7e10, 1.4e12)
    assert default == post.prob_loss_below(t, 7e10, 1.4e12, include_noise=True)
    assert default > post.prob_loss_below(t, 7e10, 1.4e12, include_noise=False) + 0.03
    # the same draws as predict's: the probability is the fraction of predictive draws below the target
    draws = post.predictive_draws(7e10, 1.4e12)[:, 0]
    assert default == pytest.approx((draws <= t).mean(), abs=1.0 / post.n_samples)


def test_calibrated_decisions_use_the_calibrated_predictive(chinchilla_post):
    # κ = 0.005 (the size learned on this data, ~0.004-0.01): with κ = 0.05 the 90% bound would grow faster than
    # the loss falls, and no compute would reach the target
    post, cal = chinchilla_post, _calibrated(chinchilla_post, kappa=0.005)
    plain_plan, cal_plan = post.plan(1e26), cal.plan(1e26)
    assert plain_plan.attrs["predictive"] == "parameters only"
    w = {k: p["L_q0.95"].iloc[0] - p["L_q0.05"].iloc[0] for k, p in (("plain", plain_plan), ("cal", cal_plan))}
    assert w["cal"] > 2 * w["plain"]  # the loss band carries the discrepancy 100x beyond the data
    np.testing.assert_allclose(cal_plan["N_q0.5"], plain_plan["N_q0.5"])  # the allocation itself is the law's
    # compute for a far target: more compute is needed to be 90% sure, and the answer inverts prob_loss_below
    plain_c, cal_c = post.compute_for_loss(1.95, prob=0.9), cal.compute_for_loss(1.95, prob=0.9)
    assert cal_c["C"].iloc[0] > plain_c["C"].iloc[0]
    assert cal_c["loss_q0.05"].iloc[0] < cal_c["loss_q0.5"].iloc[0] < cal_c["loss_q0.95"].iloc[0]
    pr = cal.prob_loss_below(1.95, cal_c["N"].to_numpy(), cal_c["D"].to_numpy())
    assert 0.9 <= pr[0] <= 0.9 + 2.0 / post.n_samples


# ----------------------------------------------------------------------------------------------- names and inputs
def test_unknown_family_names_raise(chinchilla_post):
    post = chinchilla_post
    for ask in (
        lambda: post.predict(7e10, 1.4e12, family="al"),
        lambda: post.predictive_draws(7e10, 1.4e12, family="al"),
        lambda: post.plan(1e22, family="al"),
        lambda: post.prob_loss_below(2.0, 7e10, 1.4e12, family="al"),
        lambda: post.compute_for_loss(2.0, family="al"),
    ):
        with pytest.raises(UnknownNameError, match=r"unknown family 'al'.*\['all'\]"):
            ask()


def test_a_new_family_is_asked_for_with_none(chinchilla_post):
    # The rule itself, on a posterior relabelled as a two-family fit (its draws are not used).
    two = copy.copy(chinchilla_post)
    two.families = ("a", "b")
    assert two.resolve_family(None) is None  # a new family drawn from the population
    assert two.resolve_family("b") == "b"
    with pytest.raises(UnknownNameError, match=r"\['a', 'b'\]"):
        two.resolve_family("c")
    assert chinchilla_post.resolve_family(None) == "all"  # one family: None is that family


def test_rows_of_unfitted_families_are_predicted_as_new_families(chinchilla_post):
    # backtests and calibration predict held-out rows of families the inner fit never saw as new families (here the
    # only family of a one-family fit), never by an error or a silent label match
    frame = pd.DataFrame({"N": [7e10, 7e10], "D": [1.4e12, 1.4e12], "family": ["all", "unseen"]})
    pred = for_frame(chinchilla_post, frame, seed=0)
    np.testing.assert_array_equal(pred.log_mu[:, 0], pred.log_mu[:, 1])


def test_query_inputs_are_checked(chinchilla_post):
    post = chinchilla_post
    N, D = 7e10, 1.4e12
    ok = post.predict(N, D, C=6 * N * D * 1.01)  # within data.C_RTOL
    assert ok["C"].iloc[0] == pytest.approx(6 * N * D * 1.01)
    with pytest.raises(DataError, match="6·N·D") as e:
        post.predict(N, D, C=1e22)
    assert e.value.column == "C"
    with pytest.raises(DataError, match="empty"):
        post.predict([], [])
    with pytest.raises(DataError, match="numbers"):
        post.predict("seventy billion", D)
    with pytest.raises(DataError, match="numbers"):
        post.predictive_draws(N, ["1e12", "x"])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert len(post.predict(np.array([1e9, 1e10]), D)) == 2
