"""The downstream accuracy model (scalebayes.downstream) and the benchmark-score loaders (scalebayes.scores)."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest

import scalebayes as sb
from scalebayes import downstream
from scalebayes import downstream_discrepancy as dd
from scalebayes.errors import DataError, SamplingWarning, UnknownNameError
from scalebayes.scores import CHANCE, BenchmarkScores

TRUE = {"mid": np.array([0.5, -0.5]), "slope": np.array([1.5, 1.0]), "u": np.array([0.8, 0.9])}
BENCH = ("mmlu", "winogrande")


def _simulate(seed: int, n_fam: int = 10) -> BenchmarkScores:
    """Four models per family at log10 C = 22 + (-2, -1, 0, 1) + jitter, scores drawn from the downstream law with
    family efficiencies (sd 0.4 decades), model residuals (0.1) and beta-binomial noise (phi 300)."""
    rng = np.random.default_rng(seed)
    rows = []
    for f in range(n_fam):
        e = 0.4 * rng.standard_normal()
        for k, dx in enumerate((-2.0, -1.0, 0.0, 1.0)):
            lc = 22.0 + dx + 0.2 * rng.standard_normal()
            x = lc - 22.0 + e + 0.1 * rng.standard_normal()
            row = {"model": f"f{f}-{k}", "family": f"f{f}", "N": 10 ** ((lc - np.log10(6)) / 2), "C": 10**lc}
            row["D"] = row["C"] / (6 * row["N"])
            for j, b in enumerate(BENCH):
                mu = TRUE["u"][j] / (1 + np.exp(-TRUE["slope"][j] * (x - TRUE["mid"][j])))
                q = rng.binomial(1000, rng.beta(mu * 300, (1 - mu) * 300)) / 1000
                row[b] = CHANCE[b] + (1 - CHANCE[b]) * q
            rows.append(row)
    return BenchmarkScores.from_frame(pd.DataFrame(rows).set_index("model"), BENCH, name="sim")


@pytest.fixture(scope="module")
def post():
    data = _simulate(seed=1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SamplingWarning)  # short chains; the verdict is checked separately
        return downstream.fit(data, BENCH, seed=0, chains=2, warmup=400, draws=400, questions={"mmlu": 1000})


def test_loaders_record_exclusions_and_fixes():
    obs = sb.datasets.load("obsscaling")
    assert len(obs) + len(obs.excluded) == 148  # every row of the file is kept or listed
    assert obs.excluded["reason"].str.contains("no parameter count").sum() == 25
    assert obs.frame.loc["cerebras/btlm-3b-8k-base", "D"] == pytest.approx(0.627e12)
    np.testing.assert_allclose(obs.frame["C"], 6 * obs.frame["N"] * obs.frame["D"])
    assert len(obs.corrections) == 2
    sloth = sb.datasets.load("sloth_leaderboard")
    assert (sloth.excluded["reason"] == "instruction-tuned (instruct=False)").sum() == 61
    assert len(sb.datasets.load("sloth_leaderboard", instruct=True)) > len(sloth)


def test_validation_names_column_and_row():
    df = _simulate(seed=0).frame.copy()
    df.loc["f0-0", "mmlu"] = 1.2
    with pytest.raises(DataError, match="mmlu") as err:
        BenchmarkScores.from_frame(df, BENCH)
    assert err.value.column == "mmlu" and err.value.rows == ["f0-0"]
    with pytest.raises(DataError, match="missing column"):
        BenchmarkScores.from_frame(df.drop(columns="family"), BENCH)


def test_predictions_bounded_and_above_chance(post):
    for b in BENCH:
        for fam in ("f0", None):
            a = post.accuracy_draws(1e28, b, fam, seed=0)
            assert a.min() >= CHANCE[b] and a.max() <= 1.0
            low = post.accuracy_draws(1e15, b, fam, seed=0, noise=False)  # far below the data: the law at chance
            assert low.min() >= CHANCE[b] and np.median(low) < CHANCE[b] + 0.02


def test_new_family_interval_wider(post):
    fitted = post.predict(1e23, "mmlu", "f3")
    new = post.predict(1e23, "mmlu", None)
    assert (new["q0.95"] - new["q0.05"]).item() > (fitted["q0.95"] - fitted["q0.05"]).item()


def test_parameter_recovery(post):
    # One simulated dataset, fixed seeds: each true value must lie in its central 98% posterior interval. With 6
    # checks a correct model fails by chance with probability ~0.1 at most, and the seeds are fixed so it cannot flake.
    shift = {"mid": post.design.x0 - 22.0, "slope": 0.0}  # the fit centres log10 C at the data's median, not 22
    for name in ("mid", "slope"):
        lo, hi = np.quantile(post.draws[name] + shift[name], [0.01, 0.99], axis=0)
        assert np.all((lo <= TRUE[name]) & (TRUE[name] <= hi)), (name, lo, hi)
    assert np.quantile(post.draws["tau_e"], 0.01) < 0.4 < np.quantile(post.draws["tau_e"], 0.99)


def test_probability_and_compute_planning(post):
    p = [post.prob_accuracy_above(0.6, c, "mmlu", None, seed=0) for c in (1e21, 1e22, 1e23, 1e24)]
    assert p == sorted(p) and p[0] < 0.2 and p[-1] > 0.8
    c = post.compute_for_accuracy(0.6, "mmlu", None, prob=0.8, seed=0)
    assert 1e21 < c < 1e25
    assert post.prob_accuracy_above(0.6, c, "mmlu", None, seed=0) >= 0.8
    assert post.prob_accuracy_above(0.6, c / 10**0.1, "mmlu", None, seed=0) < 0.8
    with pytest.raises(UnknownNameError):
        post.predict(1e23, "mmlu", "not-a-family")


def test_point_fit_recovers_noise_free_law():
    data = _simulate(seed=2)
    pf = downstream.point_fit(data, BENCH, family_offsets=True)
    pred = np.array([pf.predict(c, "mmlu", f)[0] for c, f in zip(data.frame["C"], data.frame["family"], strict=True)])
    # beta-binomial noise with phi 300 gives sd <= 0.03 on the above-chance scale; residuals this small mean the fit
    # found the law rather than a flat line
    assert np.sqrt(np.mean((pred - data.frame["mmlu"]) ** 2)) < 0.04


def _fixed_kappa(value: float) -> dd.KappaPosterior:
    """A κ posterior with all its mass at ``value`` (a grid point), for forecasts with a known κ."""
    grid = dd.KAPPA_GRID
    prob = (np.abs(grid - value) < 1e-12).astype(float)
    return dd.KappaPosterior(grid, prob, (), np.zeros(0), np.zeros((0, grid.size)))


def test_extrapolation_term_widens_with_distance_only(post):
    ext = dd.with_extrapolation(post, _fixed_kappa(0.5), seed=0)
    top = 10 ** (post.design.x0 + post.design.x_max[post.design.families.index("f3")])
    # inside the family's range and for a new family the distance is 0: the draws are the same numbers
    for c, fam in ((top / 10, "f3"), (top, "f3"), (top * 10, None)):
        np.testing.assert_array_equal(
            ext.accuracy_draws(c, "mmlu", fam, seed=3), post.accuracy_draws(c, "mmlu", fam, seed=3)
        )
    width = []
    for c in (top * 2, top * 10):
        base = post.predict(c, "mmlu", "f3", seed=3)
        wide = ext.predict(c, "mmlu", "f3", seed=3)
        width.append((wide["q0.95"] - wide["q0.05"]).item() - (base["q0.95"] - base["q0.05"]).item())
    assert 0 < width[0] < width[1], width
    np.testing.assert_array_equal(ext.kappa, dd.with_extrapolation(post, _fixed_kappa(0.5), seed=0).kappa)


def _held(post, kappa: float, seed: int) -> BenchmarkScores:
    """One model per family at 10x its largest fitted compute, both benchmarks from one joint predictive draw of
    ``post`` with the extrapolation shift of scale ``kappa``."""
    ext = dd.with_extrapolation(post, _fixed_kappa(kappa), seed=seed)
    rows = []
    for i, f in enumerate(post.design.families):
        c = 10 ** (post.design.x0 + post.design.x_max[i] + 1.0)
        row = {"model": f"{f}-next", "family": f, "C": c, "N": np.sqrt(c / 6 / 20), "D": 20 * np.sqrt(c / 6 / 20)}
        s = (seed * 31 + 7 * i) % len(ext.kappa)  # one draw, the same for both benchmarks: a joint sample
        rows.append(row | {b: ext.accuracy_draws(c, b, f, seed=seed + i)[s] for b in BENCH})
    return BenchmarkScores.from_frame(pd.DataFrame(rows).set_index("model"), BENCH, name="held")


def test_kappa_learned_from_held_out_models(post):
    # Held-out scores simulated from the fit's own predictive at 10x, with no shift and with κ = 1: the grid posterior
    # must put its median lower for the first. 10 models carry little information on κ, so only the ordering and
    # broad bounds are asserted; seeds fixed.
    none, big = (dd.learn(post, _held(post, k, seed=5), max_draws=200) for k in (0.0, 1.0))
    assert none.quantile(0.5) < 0.35 < big.quantile(0.5), (none.quantile(0.5), big.quantile(0.5))
    assert np.isclose(none.prob.sum(), 1.0) and np.all(none.distances == pytest.approx(1.0))
    again = dd.learn(post, _held(post, 0.0, seed=5), max_draws=200)
    np.testing.assert_array_equal(again.prob, none.prob)  # deterministic: quadrature, no random numbers


def test_kappa_loglik_flat_at_zero_distance(post):
    held = _held(post, 0.0, seed=1)
    f = held.frame.copy()
    f["C"] = 10 ** (post.design.x0 + post.design.x_max[[post.design.families.index(x) for x in f["family"]]])
    ll = dd.model_loglik(post, BenchmarkScores.from_frame(f, BENCH, name="at the top"), "f0-next", dd.KAPPA_GRID,
                         max_draws=200)  # fmt: skip
    assert np.ptp(ll) < 1e-9


def test_largest_held_out_is_each_familys_largest():
    frame = _simulate(seed=1).frame
    keep = dd.largest_held_out(_simulate(seed=1))
    assert sorted(frame.index[~keep]) == sorted(frame.groupby("family")["C"].idxmax())
