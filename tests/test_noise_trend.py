"""The noise trend in tokens per parameter: σ_i = σ·exp(ζ·(log(D_i/N_i) − c)) (scalebayes.model)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

import scalebayes as sb
from scalebayes import misfit
from scalebayes import priors as _priors
from scalebayes.errors import ModelError, UnknownNameError
from scalebayes.spec import FitSpec

TRUTH = {"E": 1.8, "A": 480.0, "B": 2000.0, "alpha": 0.35, "beta": 0.37}
ZETA = -0.5
QUICK = dict(chains=2, warmup=400, draws=500, seed=3, warn=False)


def _runs(n: int, seed: int) -> pd.DataFrame:
    """Runs of the Chinchilla law, N 1e7-1e10 and D/N 2-200 log-uniform, with Gaussian noise on log loss of scale
    1%·exp(ZETA·(log D/N − log 20)): under-trained runs scatter more (×2.5 at D/N = 2.7 against D/N = 20)."""
    rng = np.random.default_rng(seed)
    N = 10 ** rng.uniform(7, 10, n)
    D = N * np.exp(rng.uniform(np.log(2), np.log(200), n))
    L = TRUTH["E"] + TRUTH["A"] * N ** -TRUTH["alpha"] + TRUTH["B"] * D ** -TRUTH["beta"]
    sd = 0.01 * np.exp(ZETA * (np.log(D / N) - np.log(20)))
    return pd.DataFrame({"N": N, "D": D, "loss": L * np.exp(sd * rng.standard_normal(n))})


@pytest.fixture(scope="module")
def trend_posts():
    data = sb.ScalingData.from_frame(_runs(200, seed=1), N="N", D="D", loss="loss", name="trend")
    return sb.fit(data, noise_trend="tokens_per_parameter", **QUICK), sb.fit(data, noise_trend="none", **QUICK)


def _coverage(post, runs: pd.DataFrame) -> float:
    out = post.predict(runs["N"].to_numpy(), runs["D"].to_numpy(), quantiles=(0.05, 0.95))
    y = runs["loss"].to_numpy()
    return float(np.mean((y >= out["q0.05"].to_numpy()) & (y <= out["q0.95"].to_numpy())))


def test_the_trend_is_recovered_and_gives_honest_intervals_for_under_trained_runs(trend_posts):
    trend, flat = trend_posts
    assert trend.diagnostics.ok and flat.diagnostics.ok
    # 200 runs over 4.6 nats of log D/N pin ζ to ~±0.1 (posterior s.d. ~0.06 here): its 90% interval holds the truth
    # and excludes 0
    lo, hi = np.quantile(trend.draws("sigma_trend"), [0.05, 0.95])
    assert lo < ZETA < hi and hi < 0
    assert "sigma_trend" not in flat.posterior.data_vars and not flat.spec.noise_trend
    # New runs at few tokens per parameter (D/N 2-6, where the noise is 1.6-2.5x its scale at D/N = 20): 600 of them,
    # so a coverage's binomial s.d. is ~1.2 points. With the trend the 90% interval covers ~90% (≥ 85% allows four
    # s.d. and the parameters' own error); one noise scale for every run averages over the D/N range and covers
    # measurably less (measured ~80%); the gap of ≥ 5 points is ~3 s.d. of the difference.
    few = _runs(3000, seed=2)
    few = few[few["D"] / few["N"] < 6].iloc[:600]
    c_trend, c_flat = _coverage(trend, few), _coverage(flat, few)
    assert c_trend >= 0.85 and c_trend - c_flat >= 0.05
    # and at many tokens per parameter the constant-noise interval is the too-wide one
    many = _runs(3000, seed=4)
    many = many[many["D"] / many["N"] > 80].iloc[:600]
    assert _coverage(flat, many) > _coverage(trend, many) >= 0.85


def test_planning_and_prediction_see_the_same_noise_at_a_point(trend_posts):
    post = trend_posts[0]
    # prob_loss_below at a point counts the draws predict makes there (the same seed, so the same random numbers)
    for n, d in ((1e9, 3e9), (1e8, 2e10)):
        draws = post.predictive_draws(n, d, seed=5)[:, 0]
        target = float(np.median(draws))
        assert post.prob_loss_below(target, n, d, seed=5) == pytest.approx(np.mean(draws <= target), abs=1e-12)
    # the noise's scale at a point follows (D/N)^ζ inside the fitted D/N (2-200): at D/N = 3 it is (3/150)^ζ ≈ 7x
    # what it is at D/N = 150
    noise = post.run_noise()
    s = np.asarray(noise.scale(np.log([1e9, 1e9]), np.log([3e9, 1.5e11])))
    assert np.allclose(s[:, 0] / s[:, 1], (3 / 150) ** np.asarray(noise.trend))


def test_the_noise_trend_never_shrinks_a_new_runs_noise_beyond_the_fitted_runs(trend_posts):
    # ζ < 0 here: beyond the fitted runs' largest D/N the trend would keep shrinking the noise on no evidence, so the
    # scale stays at its value at the edge; below their smallest D/N it keeps growing (the conservative side)
    post = trend_posts[0]
    noise = post.run_noise()
    assert np.all(np.asarray(noise.trend) < 0)
    f = post.data.frame
    tpp = f["D"].to_numpy() / f["N"].to_numpy()
    lo, hi = tpp.min(), tpp.max()
    s = np.asarray(noise.scale(np.log([1e9] * 4), np.log(1e9 * np.array([hi, 10 * hi, lo, lo / 10]))))
    assert np.allclose(s[:, 1], s[:, 0], rtol=1e-12)
    assert np.allclose(s[:, 3] / s[:, 2], 0.1 ** np.asarray(noise.trend))
    # planning reads the same floor: at a point far beyond the fitted D/N, prob_loss_below counts the draws predict
    # makes there (the same random numbers), which it would not if either scaled the noise on its own
    draws = post.predictive_draws(1e9, 10 * hi * 1e9, seed=5)[:, 0]
    target = float(np.quantile(draws, 0.1))
    assert post.prob_loss_below(target, 1e9, 10 * hi * 1e9, seed=5) == pytest.approx(
        np.mean(draws <= target), abs=1e-12
    )


def test_a_target_needs_more_compute_when_the_noise_is_larger_there(trend_posts):
    # compute_for_loss with run noise searches allocations whose noise follows the trend; it reaches the target with
    # the asked probability at the allocation it names (prob_loss_below there, the same draws)
    post = trend_posts[0]
    targets = np.array([1.95, 2.0])
    out = post.compute_for_loss(targets, prob=0.8, seed=2)
    pr = post.prob_loss_below(targets, out["N"].to_numpy(), out["D"].to_numpy(), seed=2)
    assert np.all(pr >= 0.8) and np.all(pr <= 0.8 + 1.0 / post.n_samples)  # the same noise numbers, column by column
    # the search sees each ray's own noise scale: noise that grows at few tokens per parameter (ζ < 0) pushes the
    # cheapest sure allocation to more tokens per parameter than the law's mean alone asks for
    quiet = post.compute_for_loss(targets, prob=0.8, seed=2, include_noise=False)
    assert np.all(out["D_per_N"].to_numpy() > 1.1 * quiet["D_per_N"].to_numpy())


def test_options_are_checked():
    assert FitSpec(noise_trend="tokens_per_parameter").trend and not FitSpec().trend  # the joint form is an option
    # the default ("auto") is the cut form for laws of N and D, and no trend for a law of C alone
    assert FitSpec().noise_trend == "tokens_per_parameter_cut" and FitSpec(law="compute").noise_trend == "none"
    for trend in ("tokens_per_parameter", "tokens_per_parameter_cut"):
        with pytest.raises(ModelError, match="needs a law of N and D"):
            FitSpec(law="compute", noise_trend=trend)
    cut = FitSpec(noise_trend="tokens_per_parameter_cut")
    assert cut.cut_trend and not cut.trend
    with pytest.raises(UnknownNameError, match="noise_trend"):
        FitSpec(noise_trend="tpp")
    # a spec stored before the trend existed describes a fit without one
    assert not FitSpec.from_dict({"law": "chinchilla"}).trend
    with pytest.raises(UnknownNameError, match="sigma_trend"):
        _priors.resolve(sb.laws.get("chinchilla"), {"N": 20.0, "D": 23.0}, 2.5, {"etta": 1.0})
    assert (
        _priors.resolve(sb.laws.get("chinchilla"), {"N": 20.0, "D": 23.0}, 2.5, {"sigma_trend": 0.2}).sigma_trend == 0.2
    )


def test_a_file_written_before_the_trend_loads_as_a_fit_without_one(trend_posts, tmp_path):
    flat = trend_posts[1]
    path = flat.save(tmp_path / "flat.nc")
    meta = json.loads(flat.idata.attrs["scalebayes"])
    for key in ("noise_trend",):
        meta.pop(key)
    meta["priors"].pop("sigma_trend")
    meta["fit_spec"].pop("noise_trend")
    old = sb.load(path)
    old.idata.attrs["scalebayes"] = json.dumps(meta)
    old = type(old)(old.idata, data=old.data)
    assert not old.spec.noise_trend and old.fit_spec.noise_trend == "none"
    a = old.predict(1e9, 2e10, seed=1)
    b = flat.predict(1e9, 2e10, seed=1)
    assert np.allclose(a.filter(like="q").to_numpy(), b.filter(like="q").to_numpy())


def test_fit_many_fits_the_trend_too():
    # fit_many shares fit's model: each dataset's posterior holds its own ζ, near the truth with 120 runs (90%
    # interval; short chains, so only the sign and rough size are asserted)
    data = [sb.ScalingData.from_frame(_runs(120, seed=s), N="N", D="D", loss="loss") for s in (5, 6)]
    batch = sb.fit_many(data, noise_trend="tokens_per_parameter", **QUICK)
    for post in (batch[0], batch[1]):
        assert post.spec.noise_trend and post.diagnostics.ok
        lo, hi = np.quantile(post.draws("sigma_trend"), [0.05, 0.95])
        assert lo < ZETA < hi < 0


# ------------------------------------------------------------------------------------------------ the cut form
@pytest.fixture(scope="module")
def cut_post(trend_posts):
    return sb.fit(trend_posts[1].data, noise_trend="tokens_per_parameter_cut", **QUICK)


def test_the_cut_form_keeps_the_law_and_refits_only_a_new_runs_noise(trend_posts, cut_post):
    trend, flat = trend_posts
    cut = cut_post
    assert cut.diagnostics.ok and cut.noise_trend and not cut.spec.noise_trend
    # the law's fit is the one-scale fit's, draw for draw (same seed): the refit never feeds back into it, and
    # LOO (the pointwise log-likelihood) stays the law's own
    for name in (*flat.law.params, "sigma", "nu"):
        assert np.array_equal(cut.draws(name), flat.draws(name))
    ll = [p.idata["log_likelihood"]["log_loss"].values for p in (cut, flat)]
    assert np.array_equal(*ll)
    # the refitted trend holds the truth (its 90% interval; the residuals pin it about as well as the joint fit does)
    # a new run's noise is the refitted one, not the law's fit's own sigma
    noise = cut.run_noise()
    assert np.array_equal(
        np.asarray(noise.sigma), cut.idata["run_noise"]["sigma"].transpose("chain", "draw").values.ravel()
    )
    assert not np.array_equal(np.asarray(noise.sigma), cut.draws("sigma"))
    zeta = np.asarray(noise.trend)
    lo, hi = np.quantile(zeta, [0.05, 0.95])
    assert lo < ZETA < hi < 0
    # and new runs get intervals as honest as the joint fit's, with the same bounds and reasons as the joint test
    few = _runs(3000, seed=2)
    few = few[few["D"] / few["N"] < 6].iloc[:600]
    assert _coverage(cut, few) >= 0.85 and _coverage(cut, few) - _coverage(flat, few) >= 0.05
    many = _runs(3000, seed=4)
    many = many[many["D"] / many["N"] > 80].iloc[:600]
    assert _coverage(flat, many) > _coverage(cut, many) >= 0.85
    # the law's own band (no run noise) is the one-scale fit's exactly
    a = cut.predict(1e11, 2e12, include_noise=False).filter(like="q").to_numpy()
    assert np.array_equal(a, flat.predict(1e11, 2e12, include_noise=False).filter(like="q").to_numpy())


def test_the_cut_noise_is_saved_and_checked_with_the_fit(cut_post, tmp_path):
    path = cut_post.save(tmp_path / "cut.nc")
    back = sb.load(path)
    assert back.noise_trend and back.fit_spec.noise_trend == "tokens_per_parameter_cut"
    a = back.predict([1e9, 1e10], [3e9, 2e12], seed=2).filter(like="q").to_numpy()
    assert np.array_equal(a, cut_post.predict([1e9, 1e10], [3e9, 2e12], seed=2).filter(like="q").to_numpy())
    # the refit's R-hat and ESS are part of the fit's diagnostics, named as the refit's
    rows = [k for k in back.diagnostics.table.index if k.startswith("run-noise refit: ")]
    assert {"run-noise refit: sigma_trend", "run-noise refit: sigma"} <= set(rows)


def test_a_failed_refit_fails_the_fit():
    from scalebayes.diagnostics import merged, summarise

    ok = summarise(["E"], [1.001], [2000.0], [1500.0], diverging=np.zeros((2, 50), bool), n_steps=np.full((2, 50), 7))
    bad = summarise(["sigma"], [1.2], [30.0], [20.0], diverging=np.zeros((2, 50), bool), n_steps=np.full((2, 50), 7))
    both = merged(ok, bad, "run-noise refit")
    assert ok.ok and not both.ok and both.r_hat_max == 1.2 and both.ess_bulk_min == 30.0
    assert all(f.startswith("run-noise refit: ") for f in both.failures)


def test_fit_many_refits_the_noise_as_fit_does():
    # the default cut trend: each dataset's law fitted with one scale, then its noise refitted to its own residuals
    # in a second batched pass; the residuals are fit's (fitted_log_loss of the dataset's posterior), the refitted
    # trend holds the truth as fit's does (cut_post above), and its diagnostics are part of the dataset's
    data = [sb.ScalingData.from_frame(_runs(120, seed=s), N="N", D="D", loss="loss") for s in (5, 6)]
    batch = sb.fit_many(data, **QUICK)
    for i, post in enumerate(batch):
        assert post.noise_trend and not post.spec.noise_trend
        # the refit's rows of the dataset's diagnostics: converged (the law's own 2 x 500 draws may fall just short
        # of R-hat 1.01 on a ridge; the refit's 3-4 coordinates do not)
        refit = post.diagnostics.table.loc[[k for k in post.diagnostics.table.index if k.startswith("run-noise")]]
        assert len(refit) >= 3 and (refit["r_hat"] < 1.01).all() and (refit["ess_bulk"] > 400).all()
        resid = np.log(post.data.loss) - misfit.fitted_log_loss(post)
        np.testing.assert_allclose(np.log(batch._refits.data[i].loss), resid, rtol=0, atol=1e-12)
        noise = post.run_noise()
        lo, hi = np.quantile(noise.trend, [0.05, 0.95])
        assert lo < ZETA < hi < 0
        assert not np.array_equal(noise.sigma, post.draws("sigma").reshape(-1))
    # asked for by name, or as the FitSpec default, it is the same model and the same draws
    named = sb.fit_many(data, spec=FitSpec(noise_trend="tokens_per_parameter_cut"), **QUICK)
    np.testing.assert_array_equal(named[1].run_noise().sigma, batch[1].run_noise().sigma)
