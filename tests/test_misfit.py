"""The misfit check: residual trends against N, D, C and family (scalebayes.misfit)."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
from conftest import simulate_chinchilla

import scalebayes as sb
from scalebayes import misfit
from scalebayes.errors import MisfitWarning
from scalebayes.model import RunNoise
from scalebayes.predict import log_mean_draws

TRUTH = {"E": 1.8, "A": 480.0, "B": 2000.0, "alpha": 0.35, "beta": 0.37}


def _stub(df: pd.DataFrame, params: dict[str, dict[str, float | np.ndarray]], zeta: float | None = None):
    """A stand-in posterior whose parameter draws are ``params[family]`` (a number: one draw): the check needs only
    data, law, families, parameter draws and (with a noise trend ``zeta``) the trend, so no sampling is needed."""
    fam = "family" if "family" in df else None
    data = sb.ScalingData.from_frame(df, N="N", D="D", loss="loss", family=fam, name="synthetic")
    draws = lambda f: {k: np.atleast_1d(np.asarray(v, float)) for k, v in params[f].items()}  # noqa: E731
    centre = {k: float(np.mean(np.log(df[k]))) for k in ("N", "D")}
    t = np.log(df["D"] / df["N"]).to_numpy() - (centre["D"] - centre["N"])  # the fitted runs' log(D/N) − c
    noise = RunNoise(
        np.ones(1), np.full(1, np.inf), np.atleast_1d(zeta or 0.0), centre["D"] - centre["N"], (t.min(), t.max())
    )
    return SimpleNamespace(
        data=data,
        law=sb.laws.get("chinchilla"),
        families=data.families,
        param_draws=draws,
        noise_trend=zeta is not None,
        centre=centre,
        run_noise=lambda family: noise,  # a new run's noise, as Posterior gives it
    )


def test_a_well_specified_fit_is_not_flagged():
    # 200 runs from the law itself with 1% noise: no check may be flagged (the p-value threshold makes a false
    # alarm a 1-in-250 event, and the effect floor needs a median of half the scatter)
    df = simulate_chinchilla(TRUTH, n=200, sigma=0.01, seed=4)
    m = misfit.check(_stub(df, {"all": TRUTH}))
    assert list(m.table["against"]) == ["log N", "log D", "log C", misfit.SCATTER]
    assert not m.flagged and m.message() == ""


def _tpp_noise(df: pd.DataFrame, slope: float, seed: int) -> pd.DataFrame:
    """``df``'s losses with their 1% noise replaced by noise whose scale is 1%·exp(slope·(log D/N − its mean))."""
    x = np.log(df["D"] / df["N"])
    clean = TRUTH["E"] + TRUTH["A"] * df["N"] ** -TRUTH["alpha"] + TRUTH["B"] * df["D"] ** -TRUTH["beta"]
    sd = 0.01 * np.exp(slope * (x - x.mean()))
    return df.assign(loss=clean * np.exp(sd * np.random.default_rng(seed).standard_normal(len(df))))


def test_scatter_that_grows_as_tokens_per_parameter_fall_is_flagged():
    # Noise 1%·exp(-0.6·(log D/N - mean)) over D/N = 5-200 (log range 3.7): the lowest fifth of D/N scatters ~6x
    # more than the highest, far beyond SCATTER_RATIO = 2 and, with 300 runs, at p far below 1e-3. With slope 0 the
    # same design is not flagged (the test above and this one's control).
    df = simulate_chinchilla(TRUTH, n=300, sigma=0.0, seed=7)
    m = misfit.check(_stub(_tpp_noise(df, -0.6, seed=8), {"all": TRUTH}))
    row = m.table.set_index("against").loc[misfit.SCATTER]
    assert row["flagged"] and row["effect"] > 3 and row["medians"][0] > row["medians"][-1]
    assert "tokens per parameter" in m.message() and "too narrow for under-trained runs" in m.message()
    control = misfit.check(_stub(_tpp_noise(df, 0.0, seed=8), {"all": TRUTH}))
    assert not control.table.set_index("against").loc[misfit.SCATTER, "flagged"]


def test_a_fitted_noise_trend_is_taken_out_before_the_scatter_check():
    # The data of the test above (slope -0.6). A fit that models the trend at the true slope leaves a constant
    # scale: not flagged. One whose fitted trend is flat (ζ = 0) is flagged, and says it is beyond the fitted trend.
    df = _tpp_noise(simulate_chinchilla(TRUTH, n=300, sigma=0.0, seed=7), -0.6, seed=8)
    fitted = misfit.check(_stub(df, {"all": TRUTH}, zeta=-0.6))
    assert fitted.trend and not fitted.table.set_index("against").loc[misfit.SCATTER, "flagged"]
    flat = misfit.check(_stub(df, {"all": TRUTH}, zeta=0.0))
    assert flat.table.set_index("against").loc[misfit.SCATTER, "flagged"]
    assert "more than the fitted noise trend says" in flat.message()


def test_a_noisier_family_is_not_read_as_scatter_that_follows_tokens_per_parameter():
    # Family a: well-trained runs (D/N 60-200) with 0.4% noise; family b: under-trained (D/N 5-15) with 2.4% noise.
    # Pooled, the low D/N bins scatter 6x more; within each family the scale is constant, so nothing is flagged.
    rng = np.random.default_rng(9)
    frames = []
    for name, lo, hi, sd in (("a", 60, 200, 0.004), ("b", 5, 15, 0.024)):
        N = 10 ** rng.uniform(7, 10, 150)
        D = N * np.exp(rng.uniform(np.log(lo), np.log(hi), 150))
        clean = TRUTH["E"] + TRUTH["A"] * N ** -TRUTH["alpha"] + TRUTH["B"] * D ** -TRUTH["beta"]
        loss = clean * np.exp(sd * rng.standard_normal(150))
        frames.append(pd.DataFrame({"N": N, "D": D, "loss": loss, "family": name}))
    # a family of two runs has no scale of its own: its residuals stay in nats rather than dividing by zero
    frames.append(frames[0].iloc[:2].assign(family="c"))
    m = misfit.check(_stub(pd.concat(frames, ignore_index=True), {"a": TRUTH, "b": TRUTH, "c": TRUTH}))
    row = m.table.set_index("against").loc[misfit.SCATTER]
    assert not row["flagged"] and np.isfinite(row["effect"]) and np.all(np.isfinite(row["medians"]))


def test_curvature_the_law_lacks_is_flagged():
    # The true loss bends away from the law as compute grows (5e-4·(log C − log C_min)², up to ~16%); the law at the
    # true parameters leaves residuals that rise with log C: flagged, with the trend's direction in the message.
    df = simulate_chinchilla(TRUTH, n=200, sigma=0.01, seed=4)
    log_c = np.log(6 * df["N"] * df["D"])
    df["loss"] *= np.exp(5e-4 * (log_c - log_c.min()) ** 2)
    m = misfit.check(_stub(df, {"all": TRUTH}))
    row = m.table.set_index("against").loc["log C"]
    assert row["flagged"] and row["medians"][-1] > row["medians"][0]
    with pytest.warns(MisfitWarning, match="log C"):
        misfit.warn_if_misfit(m, "fit of 'chinchilla'")


def test_a_family_offset_is_flagged_by_family():
    # Two families fitted with one set of parameters while one runs 3% above it (3x the noise): the family check
    # catches what a heavy-tailed likelihood could call noise.
    a = simulate_chinchilla(TRUTH, n=80, sigma=0.01, seed=5, family="a")
    b = simulate_chinchilla(TRUTH, n=80, sigma=0.01, seed=6, family="b")
    b["loss"] *= 1.03
    m = misfit.check(_stub(pd.concat([a, b], ignore_index=True), {"a": TRUTH, "b": TRUTH}))
    row = m.table.set_index("against").loc["family"]
    assert row["flagged"] and row["medians"][1] == pytest.approx(0.03, abs=0.01)


def test_the_fitted_curve_is_the_posterior_median_of_the_law_not_the_law_at_median_parameters():
    # A two-dimensional ridge, as on checkpoints of one model: E and alpha vary independently over the draws and A
    # follows them (least squares against the true curve), so every draw nearly fits the runs. The runs lie exactly
    # on the law's pointwise posterior median: the residuals are zero to rounding. The component-wise medians of
    # (E, A, alpha) are a point off the ridge (A is a non-linear function of both), whose curve is offset from the
    # runs: by 0.25% at this seed, 0.25-1.2% either way over seeds 0-5: the offset the check reported as misfit.
    df = simulate_chinchilla(TRUTH, n=120, sigma=1e-4, seed=7)
    law = sb.laws.get("chinchilla")
    N, D = df["N"].to_numpy(float), df["D"].to_numpy(float)
    x = {"N": np.log(N), "D": np.log(D)}
    truth = np.exp(np.asarray(log_mean_draws(law, {k: np.array([v]) for k, v in TRUTH.items()}, x))[0])
    t, s = np.random.default_rng(0).standard_normal((2, 400))
    E, alpha = TRUTH["E"] + 0.2 * t, TRUTH["alpha"] * np.exp(0.2 * s)
    y, z = truth - E[:, None] - TRUTH["B"] * D ** -TRUTH["beta"], N ** -alpha[:, None]
    ridge = {"E": E, "A": (y * z).sum(1) / (z * z).sum(1), "alpha": alpha}
    ridge.update(B=np.full(400, TRUTH["B"]), beta=np.full(400, TRUTH["beta"]))
    df["loss"] = np.exp(np.median(np.asarray(log_mean_draws(law, ridge, x)), axis=0))
    r = misfit.check(_stub(df, {"all": ridge})).residuals
    medians = {k: float(np.median(v)) for k, v in ridge.items()}
    at_medians = np.log(df["loss"]) - misfit.fitted_log_loss(_stub(df, {"all": medians}))
    assert np.max(np.abs(r)) < 1e-9
    assert abs(np.median(at_medians)) > 2e-3
