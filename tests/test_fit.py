"""The foundation fit: recovery, the real Chinchilla posterior, diagnostics honesty, reproducibility, save/load."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
import xarray as xr
from conftest import FULL, LAW_ONLY, QUICK, simulate_chinchilla

import scalebayes as sb
from scalebayes.errors import ModelError, SamplingWarning, UnknownNameError

TRUE = {"E": 1.7, "A": 400.0, "B": 1500.0, "alpha": 0.34, "beta": 0.30}


@pytest.fixture(scope="module")
def sim_post():
    df = simulate_chinchilla(TRUE, n=60, sigma=0.01, seed=1)
    data = sb.ScalingData.from_frame(df, N="N", D="D", loss="loss")
    return sb.fit(data, likelihood="normal", seed=3, **FULL, **LAW_ONLY)


@pytest.fixture(scope="module")
def small_data():
    return sb.ScalingData.from_frame(simulate_chinchilla(TRUE, n=40, sigma=0.02, seed=5), N="N", D="D", loss="loss")


def test_recovers_known_parameters(sim_post):
    assert sim_post.diagnostics.ok, sim_post.diagnostics
    s = sim_post.summary()
    for name, true in TRUE.items():
        lo, hi = sb_interval(sim_post, name, 0.99)
        # The 99% interval must contain the truth: a correct posterior fails this for a given parameter with
        # probability 1%, and the seed is fixed, so a failure here means bias, not bad luck.
        assert lo < true < hi, (name, lo, true, hi)
    # Medians within 3 posterior sd of the truth (a z-score: the design identifies E and β to ~2%, α to ~6% and
    # A to ~35%, so a fixed percentage would be too loose for some and too tight for others). Beyond 3 sd a correct
    # posterior lands with probability < 0.3% per parameter.
    for name, true in TRUE.items():
        assert abs(s.loc[name, "50%"] - true) < 3 * s.loc[name, "sd"], (name, s.loc[name, "50%"], s.loc[name, "sd"])


def sb_interval(post, name, prob):
    v = post.draws(name)
    return np.quantile(v, [(1 - prob) / 2, (1 + prob) / 2])


def test_chinchilla_posterior_matches_published_refit(chinchilla_post):
    post = chinchilla_post
    assert post.diagnostics.ok, post.diagnostics
    s = post.summary()
    # Besiroglu et al. (2024) refit (Huber-likelihood point estimates, SOURCE.md). Our posterior uses a Student-t
    # likelihood, not Huber, so medians differ from their optimum by a fraction of a posterior sd: E and the
    # exponents within 2% (their bootstrap SEs are 1.4%, 4.4%, 5.6%), A and B within 25% (SEs 26% and 62%).
    ref = {"E": 1.8169, "alpha": 0.34781, "beta": 0.36585, "A": 482.01, "B": 2085.43}
    for name, tol in {"E": 0.02, "alpha": 0.02, "beta": 0.02, "A": 0.25, "B": 0.25}.items():
        assert abs(s.loc[name, "50%"] / ref[name] - 1) < tol, (name, s.loc[name, "50%"])
    lo, hi = sb_interval(post, "beta", 0.95)
    assert lo > 0.28, "95% interval for beta must exclude Hoffmann's 0.28"
    # a + b = 1 by construction: a check that derived quantities are computed per draw, not from medians.
    np.testing.assert_allclose(post.draws("a") + post.draws("b"), 1.0, rtol=1e-12)


def test_summary_columns(chinchilla_post):
    s = chinchilla_post.summary()
    for col in ("mean", "sd", "5%", "50%", "95%", "r_hat", "ess_bulk", "ess_tail"):
        assert col in s.columns
    for row in ("E", "A", "B", "alpha", "beta", "sigma", "a", "b"):
        assert row in s.index


def test_datatree_groups_and_dims(chinchilla_post):
    dt = chinchilla_post.idata
    for g in ("posterior", "sample_stats", "observed_data", "log_likelihood", "posterior_predictive"):
        assert g in dt.children, g
    assert dt["log_likelihood"]["log_loss"].dims == ("chain", "draw", "obs")
    assert dt["posterior"]["E"].dims == ("chain", "draw")
    assert dt["observed_data"]["log_loss"].sizes["obs"] == 240


def test_predict_shapes_and_monotone(chinchilla_post):
    N = np.geomspace(1e8, 1e12, 9)
    out = chinchilla_post.predict(N, 1e11, include_noise=False)
    assert list(out.columns) == ["N", "D", "C", "mean", "q0.05", "q0.5", "q0.95"]
    assert len(out) == 9
    assert np.all(np.diff(out["q0.5"]) < 0), "loss must fall with N at fixed D"
    D = np.geomspace(1e9, 1e13, 7)
    out = chinchilla_post.predict(7e10, D, include_noise=False)
    assert len(out) == 7 and np.all(np.diff(out["q0.5"]) < 0), "loss must fall with D at fixed N"
    assert np.all(out["q0.05"] < out["q0.5"]) and np.all(out["q0.5"] < out["q0.95"])
    # Given C instead of D: same answer.
    a = chinchilla_post.predict(7e10, 1.4e12, include_noise=False)
    b = chinchilla_post.predict(7e10, C=6 * 7e10 * 1.4e12, include_noise=False)
    np.testing.assert_allclose(a["q0.5"], b["q0.5"], rtol=1e-9)


def test_predictive_wider_than_credible_band(chinchilla_post):
    law = chinchilla_post.predict(7e10, 1.4e12, include_noise=False, quantiles=(0.05, 0.95))
    pred = chinchilla_post.predict(7e10, 1.4e12, include_noise=True, quantiles=(0.05, 0.95))
    assert (pred["q0.95"] - pred["q0.05"]).item() > (law["q0.95"] - law["q0.05"]).item()


def test_predict_rejects_bad_queries(chinchilla_post):
    with pytest.raises(sb.errors.DataError, match="> 0"):
        chinchilla_post.predict([1e9, -1], 1e10)
    with pytest.raises(sb.errors.DataError):
        chinchilla_post.predict(1e9)


def test_same_seed_same_draws_and_failed_diagnostics_flagged(small_data):
    # QUICK settings cannot reach ESS 400 (and extend=0 does not sample on): the fit must say so loudly and flag
    # the result.
    with pytest.warns(SamplingWarning, match="ESS"):
        a = sb.fit(small_data, seed=11, extend=0, **QUICK, **LAW_ONLY)
    assert not a.diagnostics.ok and not a.ok
    assert any("ESS" in f for f in a.diagnostics.failures)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SamplingWarning)
        b = sb.fit(small_data, seed=11, extend=0, **QUICK, **LAW_ONLY)
        c = sb.fit(small_data, seed=12, extend=0, **QUICK, **LAW_ONLY)
    xr.testing.assert_equal(
        a.idata["posterior"].to_dataset(), b.idata["posterior"].to_dataset()
    )  # values, not timestamps
    assert not np.array_equal(a.draws("E"), c.draws("E"))
    # Prediction noise is seeded too.
    p1 = a.predict(1e10, 2e11, seed=4)
    p2 = a.predict(1e10, 2e11, seed=4)
    assert p1.equals(p2)


def test_a_fit_short_of_ess_samples_on_with_the_same_chains(small_data, tmp_path, capsys):
    """QUICK's 2 x 100 draws fail only on ESS, so the default ``extend=1`` continues the same chains for 100 more:
    the first 100 draws per chain are exactly those of the fit that stopped (``extend=0``), nothing is compiled
    again, the kernel (step size) is the one warm-up chose, and the diagnostics judge all 200 and say why there
    are 200. Extending changes nothing for a fit that passes (``worth_extending`` is False for it)."""
    from scalebayes.diagnostics import worth_extending
    from scalebayes.sampler import COMPILE_COUNT

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SamplingWarning)
        # one noise scale: the default's noise refit after the fit (scalebayes.noise_refit) pairs a draw with each
        # of the law's, so 200 draws per chain would compile a refit program of its own
        # The premise: a seed whose chains agree (R-hat <= 1.05) but fall short on ESS. Which seed that is depends
        # on the CPU's floating-point rounding (NUTS turns a last-bit difference into other draws): seed 14 on one
        # machine (R-hat 1.028, ESS 83), not on another. So the first of a few seeds that gives it is used; 2 x 100
        # draws never reach ESS 400, and most seeds' R-hat is under 1.05, so ten seeds without one would be a
        # sampler far worse than today's.
        for seed in range(14, 24):
            stop = sb.fit(small_data, seed=seed, extend=0, **QUICK, **LAW_ONLY)
            if worth_extending(stop.diagnostics):
                break
        assert worth_extending(stop.diagnostics), stop.diagnostics
        compiled = COMPILE_COUNT["n"]
        more = sb.fit(small_data, seed=seed, progress=True, **QUICK, **LAW_ONLY)
    assert "100/100 sampling on" in capsys.readouterr().err  # the progress bar names the extra block
    assert COMPILE_COUNT["n"] == compiled
    assert stop.diagnostics.extensions == 0 and more.diagnostics.extensions == 1
    # with the default noise refit, the refit pairs one draw with each of the law's 200 per chain
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SamplingWarning)
        cut = sb.fit(small_data, seed=seed, **QUICK)
    assert cut.idata["posterior"].sizes["draw"] == cut.idata["run_noise"].sizes["draw"] == 200
    assert more.posterior.sizes["draw"] == 2 * QUICK["draws"] == 2 * stop.posterior.sizes["draw"]
    n = QUICK["draws"]
    for name in ("E", "alpha", "sigma"):
        np.testing.assert_array_equal(more.draws(name).reshape(2, 2 * n)[:, :n], stop.draws(name).reshape(2, n))
        assert not np.array_equal(more.draws(name).reshape(2, 2 * n)[:, n:], stop.draws(name).reshape(2, n))
    st_more, st_stop = more.idata["sample_stats"], stop.idata["sample_stats"]
    np.testing.assert_array_equal(st_more["step_size"].values[:, n:], st_stop["step_size"].values)
    assert any("sampling went on 1x (100 → 200 draws per chain)" in note for note in more.diagnostics.notes)
    assert more.diagnostics.n_samples == 2 * stop.diagnostics.n_samples
    back = sb.load(more.save(tmp_path / "more.nc"))  # the saved posterior still says it was sampled on
    assert back.diagnostics.extensions == 1 and back.diagnostics.notes == more.diagnostics.notes


def test_worth_extending_only_for_chains_that_agree_without_divergences():
    from scalebayes.diagnostics import summarise, worth_extending

    def verdict(rhat, ess, div=0):
        d = np.zeros((2, 100), bool)
        d[0, : int(div)] = True
        return summarise(["x"], [rhat], [ess], [ess], diverging=d, n_steps=np.full((2, 100), 7))

    assert worth_extending(verdict(1.02, 1000))  # R-hat short, chains close
    assert worth_extending(verdict(1.001, 150))  # ESS short
    assert not worth_extending(verdict(1.001, 1000))  # passed: nothing to do
    assert not worth_extending(verdict(1.2, 1000))  # chains disagree: a stuck chain or another mode
    assert not worth_extending(verdict(1.001, 150, div=1))  # divergences are never sampled away
    assert not worth_extending(verdict(float("nan"), 150))


@pytest.mark.parametrize("suffix", [".nc", ".zarr"])
def test_save_load_round_trip(chinchilla_post, tmp_path, suffix):
    path = chinchilla_post.save(tmp_path / f"post{suffix}")
    back = sb.load(path)
    for g in ("posterior", "sample_stats", "observed_data", "log_likelihood", "posterior_predictive", "constant_data"):
        xr.testing.assert_equal(back.idata[g].to_dataset(), chinchilla_post.idata[g].to_dataset())
    assert back.summary().equals(chinchilla_post.summary())
    assert back.predict(7e10, 1.4e12, seed=1).equals(chinchilla_post.predict(7e10, 1.4e12, seed=1))
    assert back.data.frame.equals(chinchilla_post.data.frame)
    pd.testing.assert_frame_equal(back.data.excluded, chinchilla_post.data.excluded, check_dtype=False)


def test_bad_options(small_data):
    with pytest.raises(UnknownNameError, match="likelihood"):
        sb.fit(small_data, likelihood="cauchy")
    with pytest.raises(UnknownNameError, match="prior"):
        sb.fit(small_data, priors={"gamma": (0, 1)})
    with pytest.raises(ModelError, match="positive"):
        sb.fit(small_data, priors={"sigma": -1})
    with pytest.raises(ModelError, match="draws"):
        sb.fit(small_data, draws=0)
    for bad in (-1, 1.5, True):
        with pytest.raises(ModelError, match="extend"):
            sb.fit(small_data, extend=bad)
