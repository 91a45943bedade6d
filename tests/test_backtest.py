"""Backtests and the calibrated-extrapolation (discrepancy) option.

One backtest fit on chinchilla_epoch with the FULL settings and 240 padded runs (the compiled sampler of the shared
``chinchilla_post`` fixture: every training subset is padded to the full data's size), plus one inner calibration
refit; everything else is numerics without sampling.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from conftest import FULL, QUICK

import scalebayes as sb
from scalebayes import backtesting, progress
from scalebayes.backtesting import results_table, score, to_markdown
from scalebayes.discrepancy import ATTR, Discrepancy, distance, fitted_regions, region
from scalebayes.formerror import KappaPosterior, SplitErrors
from scalebayes.holdout import holdout_mask
from scalebayes.predictive import LogPredictive


# ----------------------------------------------------------------------------------------------- splits (no fits)
def _data(C, family=None, N=None):
    C = np.asarray(C, float)
    N = np.asarray(N if N is not None else np.sqrt(C / 6.0) / 3.0, float)
    df = pd.DataFrame({"N": N, "C": C, "loss": 2.0 + np.arange(len(C)) * 1e-3})
    if family is not None:
        df["family"] = family
    return sb.ScalingData.from_frame(df, N="N", C="C", loss="loss", family="family" if family is not None else None)


def test_holdout_by_compute_keeps_ties_together():
    d = _data([1, 1, 2, 2, 4, 4, 8, 8, 8, 16])
    m = holdout_mask(d, "compute", 0.2)
    assert m.sum() == 1 and m[-1]  # 1 run (10%) is closer to 20% than 4 runs (40%)
    m = holdout_mask(d, "compute", 0.35)
    assert m.sum() == 4 and m[6:].all()  # the three runs at C=8 stay together
    assert holdout_mask(d, "params", 0.35).sum() == 4  # N grows with C here


def test_holdout_per_family_and_explicit_mask():
    d = _data([1, 2, 4, 8, 1, 2, 4, 8], family=["a"] * 4 + ["b"] * 4)
    m = holdout_mask(d, "compute", 0.25, per_family=True)
    assert m.tolist() == [False, False, False, True] * 2
    mask = np.array([False] * 7 + [True])
    assert (holdout_mask(d, mask) == mask).all()
    with pytest.raises(sb.errors.DataError):
        holdout_mask(d, np.ones(8, bool))
    with pytest.raises(sb.errors.UnknownNameError):
        holdout_mask(d, "tokens")


# ----------------------------------------------------------------------------------------------- discrepancy numerics
def test_region_distance_is_zero_inside_and_grows_outside():
    rng = np.random.default_rng(0)
    pts = {"N": rng.uniform(0, 1, 50), "D": rng.uniform(0, 1, 50)}
    reg = region(pts, ("N", "D"))
    inside = distance(reg, {"N": [0.5, 0.3], "D": [0.5, 0.6]})
    assert np.allclose(inside, 0.0)
    out = distance(reg, {"N": [1.5, 3.0, 0.5], "D": [0.5, 0.5, -1.0]})
    # hull of 50 uniform points is nearly the unit square: distances ≈ 0.5, 2.0, 1.0 (within the hull's shrinkage)
    assert np.allclose(out, [0.5, 2.0, 1.0], atol=0.05)
    one = region({"C": np.array([1.0, 2.0, 3.0])}, ("C",))
    assert np.allclose(distance(one, {"C": [0.0, 2.0, 5.0]}), [1.0, 0.0, 2.0])
    # degenerate (collinear) runs fall back to the box plus the sum bound
    line = region({"N": np.array([0.0, 1.0, 2.0]), "D": np.array([0.0, 1.0, 2.0])}, ("N", "D"))
    assert distance(line, {"N": [1.0], "D": [1.0]})[0] == pytest.approx(0.0)
    assert distance(line, {"N": [3.0], "D": [3.0]})[0] > 0.9


def test_predictive_density_and_draws_agree():
    # The predictive is a mixture over draws of Student-t(ν_s, μ_s, σ) noise plus Normal(0, extra²) discrepancy.
    # Its log density: the exact t mixture where extra = 0, and against brute-force numerical convolution
    # (scipy.integrate.quad) elsewhere, out to 40σ in the tails (quadrature error < 1e-3 in log density).
    from scipy import integrate, stats

    rng = np.random.default_rng(1)
    S = 400
    pred = LogPredictive(
        log_mu=rng.normal(0.0, 0.01, (S, 2)),
        sigma=np.full((S, 2), 0.01),
        nu=rng.uniform(3, 30, S),
        extra_sd=np.zeros(2),
    )
    y = np.array([0.005, -0.05])
    ref = np.log(stats.t.pdf(y, pred.nu[:, None], pred.log_mu, 0.01).mean(axis=0))
    assert np.allclose(pred.log_density(y), ref)
    for nu in (0.9, 3.0, 30.0):
        for e in (0.002, 0.05):
            one = LogPredictive(np.zeros((1, 3)), np.full((1, 3), 0.01), np.array([nu]), np.full(3, e))
            ys = np.array([0.0, 0.03, 0.4])
            for yi, got in zip(ys, one.log_density(ys), strict=True):
                f = lambda u, yi=yi, nu=nu, e=e: stats.t.pdf(yi - u, nu, 0, 0.01) * stats.norm.pdf(u, 0, e)  # noqa: E731
                exact = integrate.quad(f, -1, 1, points=[0.0, yi], limit=500, epsabs=0)[0]
                assert got == pytest.approx(np.log(exact), abs=1e-3)
    # draws: variance of t(ν=5) noise plus the discrepancy, σ²ν/(ν-2) + e² (200k draws: 1% s.e. of a variance)
    big = LogPredictive(np.zeros((20_000, 1)), np.full((20_000, 1), 0.01), np.full(20_000, 5.0), np.array([0.02]))
    draws = np.concatenate([big.sample(seed=i, reps=1) for i in range(10)])
    assert draws.var() == pytest.approx(0.01**2 * 5 / 3 + 0.02**2, rel=0.05)


def test_kappa_posterior_recovers_the_simulated_discrepancy():
    # Held-out runs at distances 0-2 whose errors have s.d. κ·d (κ = 0.02, γ = 1) on top of noise 0.005, in 6
    # independent splits of 50 runs (ρ = 0): the posterior mode lands within the grid's resolution (log κ steps of
    # 0.13) and the sampling error of 300 runs. With no discrepancy in the data κ stays negligible next to the noise.
    rng = np.random.default_rng(2)

    def splits(kappa):
        out = []
        for i in range(6):
            d = rng.uniform(0, 2, 50)
            r = rng.normal(0, np.sqrt(0.005**2 + (kappa * d) ** 2))
            out.append(SplitErrors(r, d, np.zeros(50), 0.005, np.arange(50) + 50 * i, {}))
        return out

    k, g = KappaPosterior.learn(splits(0.02), prior=(0.0, 1e3)).mode()
    assert 0.016 < k < 0.025 and g == 1.0
    k0, _ = KappaPosterior.learn(splits(0.0), prior=(0.0, 1e3)).mode()
    assert k0 < 0.002


def test_score_columns_and_coverage():
    rng = np.random.default_rng(3)
    S, P = 1000, 50
    pred = LogPredictive(np.zeros((S, P)), np.full((S, P), 0.01), np.full(S, np.inf), np.zeros(P))
    frame = pd.DataFrame({"loss": np.exp(rng.normal(0, 0.01, P)), "family": "all", "size_ratio": 2.0})
    runs = score(pred, frame, quantiles=(0.05, 0.95))
    assert {"pred", "lo", "hi", "covered", "width", "rel_width", "are", "lpd"} <= set(runs.columns)
    assert 0.75 <= runs["covered"].mean() <= 1.0  # 50 draws from the predictive itself: 90% ± 3 s.e.
    assert np.allclose(runs["pred"], 1.0)


# ----------------------------------------------------------------------------------------------- one real backtest
@pytest.fixture(scope="module")
def bt(chinchilla_data):
    # Bayes backtest with the discrepancy: one outer fit on the FULL settings + inner calibration point refits
    # (fraction 0.25 by compute and by params, each with its bootstrap resamples) of the outer fit's runs.
    inner = {"fractions": (0.25,)}
    return sb.backtest(chinchilla_data, "chinchilla", extrapolation="discrepancy", calibration=inner, **FULL)


def test_backtest_scores_the_largest_runs(bt, chinchilla_data):
    r = bt
    assert r.config["n_test"] == 48 and r.config["n_train"] == 192  # 20% of 240 runs
    assert r.train_mask.sum() == 192
    # every held-out run is at least as large as the largest fitted one (split by compute)
    assert chinchilla_data.C[~r.train_mask].min() >= chinchilla_data.C[r.train_mask].max()
    assert (r.runs["size_ratio"] >= 1.0).all()
    s = r.summary()
    assert list(s.index) == ["all"]
    for col in ("coverage", "width", "are", "lpd"):
        assert np.isfinite(s.loc["all", col])
    assert 0.0 <= s.loc["all", "coverage"] <= 1.0
    # the point predictions are good to a few percent (the Chinchilla law on its own data)
    assert s.loc["all", "are"] < 0.05


def test_discrepancy_only_widens_beyond_the_fitted_runs(bt):
    before, after = bt.uncalibrated, bt
    assert before is not None and before.config["extrapolation"] == "none"
    assert bt.details["kappa"]["all"] > 0.0
    # δ's s.d. (median over draws of κ_s·d^γ_s) is 0 inside the fitted runs and grows with the distance
    order = np.argsort(after.runs["distance"].to_numpy())
    d, sd = after.runs["distance"].to_numpy()[order], after.runs["extra_sd"].to_numpy()[order]
    assert (sd[d == 0] == 0).all() and (sd[d > 0] > 0).all() and (np.diff(sd) >= -1e-12).all()
    # same point predictions; intervals at least as wide (up to Monte Carlo noise of the quantiles)
    assert np.allclose(after.runs["pred"], before.runs["pred"])
    assert (after.runs["width"] >= before.runs["width"] * 0.97).all()
    table = results_table({"Bayes": before, "Bayes + discrepancy": after})
    assert list(table.index) == ["Bayes", "Bayes + discrepancy"]
    md = to_markdown(table)
    assert md.count("\n") == 3 and "coverage" in md and "%" in md


def test_predict_extrapolation_option(chinchilla_post):
    # A known discrepancy attached by hand: no change inside the fitted runs, wider far beyond them.
    post = chinchilla_post
    disc = Discrepancy(kappa=0.05, regions=fitted_regions(post.data, post.law))
    i = int(np.argmin(np.abs(np.log(post.data.C) - np.log(post.data.C).mean())))
    N_in, D_in = post.data.N[i], post.data.D[i]
    kw = dict(quantiles=(0.05, 0.95), seed=1)
    a = post.predict([N_in, 1e12], [D_in, 2e13], **kw)
    b = post.predict([N_in, 1e12], [D_in, 2e13], extrapolation=disc, **kw)
    assert b.loc[0, "q0.05"] == pytest.approx(a.loc[0, "q0.05"]) and b.loc[0, "q0.95"] == pytest.approx(
        a.loc[0, "q0.95"]
    )
    assert (b.loc[1, "q0.95"] - b.loc[1, "q0.05"]) > 1.5 * (a.loc[1, "q0.95"] - a.loc[1, "q0.05"])
    draws = post.predictive_draws(1e12, 2e13, extrapolation=disc, seed=1)
    assert draws.shape == (post.n_samples, 1)
    with pytest.raises(sb.errors.UnknownNameError):
        post.predict(N_in, D_in, extrapolation="bogus")


def test_backtest_rejects_bad_options(chinchilla_data):
    with pytest.raises(sb.errors.UnknownNameError):
        sb.backtest(chinchilla_data, method="ols")
    with pytest.raises(sb.errors.ModelError):
        sb.backtest(chinchilla_data, method="huber_bootstrap", extrapolation="discrepancy")
    with pytest.raises(sb.errors.ModelError):
        sb.backtest(chinchilla_data, holdout_fraction=1.5)


def test_calibrate_returns_a_calibrated_copy_that_survives_save_load(chinchilla_post, tmp_path, capsys):
    # Two inner point refits (fraction 0.25 along each default direction, compute and params), with their bootstrap
    # resamples; nothing is sampled. progress=True: a line per stage.
    post = chinchilla_post
    capsys.readouterr()
    cal = sb.calibrate(post, fractions=(0.25,), progress=True)
    err = capsys.readouterr().err
    assert "calibrate: " in err and "1/2 stages, 2 inner refits x 17" in err and "2/2 stages" in err, err
    assert ATTR not in post.idata.attrs and not post.calibrated  # the input posterior is left alone
    disc = cal.discrepancy
    assert cal.calibrated and disc.kappa >= 0.0
    assert [sp["split"] for sp in disc.info["splits"]] + [e["split"] for e in disc.info["left_out"]] == [
        "compute",
        "params",
    ]
    n_params = int(holdout_mask(post.data, "params", 0.25).sum())
    n_used = {"compute": 60, "params": n_params}  # 25% of 240 by compute, the largest-N quarter (ties kept)
    assert disc.info["n_heldout"] == sum(n_used[sp["split"]] for sp in disc.info["splits"])
    far = cal.predict(1e12, 2e13, quantiles=(0.05, 0.95))
    assert far.attrs["predictive"] == "calibrated"
    loaded = sb.load(cal.save(tmp_path / "post.nc"))
    assert loaded.discrepancy.kappa == pytest.approx(disc.kappa)
    assert loaded.discrepancy.kappa_draws == disc.kappa_draws and loaded.discrepancy.gamma == disc.gamma
    again = loaded.predict(1e12, 2e13, extrapolation="discrepancy", quantiles=(0.05, 0.95))
    assert again.loc[0, "q0.95"] == pytest.approx(far.loc[0, "q0.95"])


def test_backtest_takes_a_fitspec(chinchilla_data):
    # the model as one FitSpec (or its fields as keywords, the same model): every Bayes fit of the backtest uses it
    spec = sb.FitSpec(likelihood="normal")
    r = sb.backtest(chinchilla_data, spec=spec, **QUICK)
    assert r.config["fit"]["spec"] == spec.to_dict()
    kw = sb.backtest(chinchilla_data, "chinchilla", likelihood="normal", **QUICK)
    assert kw.config["fit"]["spec"] == spec.to_dict()
    assert np.allclose(kw.runs["lpd"], r.runs["lpd"])  # same model, same seed: same numbers
    with pytest.raises(sb.errors.ModelError, match="not both"):
        sb.backtest(chinchilla_data, "kaplan", spec=spec, **QUICK)


def test_backtest_progress_counts_outer_fits_and_inner_refits(chinchilla_data):
    """The backtest's progress total: one outer fit (or one per family with held-out runs), plus, with the
    discrepancy, one step per outer fit for its inner refits (one vmapped optimisation); off with progress=False."""
    frame = chinchilla_data.frame.tail(5)
    assert backtesting._steps(chinchilla_data, frame, False, "none", False).total == 1
    steps = backtesting._steps(chinchilla_data, frame, False, "discrepancy", False)
    assert steps.total == 2 and not steps.on
    two = sb.ScalingData.from_frame(
        pd.DataFrame(
            {
                "N": [1e8, 2e8, 3e8, 4e8],
                "D": [2e9, 4e9, 6e9, 8e9],
                "loss": [3.0, 2.9, 2.8, 2.7],
                "f": ["a", "a", "b", "b"],
            }
        ),
        N="N",
        D="D",
        loss="loss",
        family="f",
    )
    held = two.frame.loc[two.frame["family"] == "b"]
    assert backtesting._steps(two, held, True, "none", False).total == 1  # family "a" has nothing held out


def test_steps_lines_and_off(capsys):
    steps = progress.Steps("sbc", 40, True, unit="datasets")
    line = steps.advance("fitted and ranked", n=20)
    assert line.startswith("sbc: [") and "50% 20/40 datasets, fitted and ranked" in line
    assert capsys.readouterr().err == line + "\n"
    progress.Steps("calibrate", 2, False).advance("x")
    assert capsys.readouterr().err == ""
