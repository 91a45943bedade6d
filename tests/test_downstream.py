"""The downstream accuracy model (scalebayes.downstream) and the benchmark-score loaders (scalebayes.scores)."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest

import scalebayes as sb
from scalebayes import downstream
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
