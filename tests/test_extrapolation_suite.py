"""The extrapolation suite (benchmarks/extrapolation): valid fit/predict splits and a scorer that scores correctly.

Datasets are read from ../shared/data relative to the repository root (or $SCALEBAYES_SHARED_DATA); absent ones are
skipped.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy.stats import norm

SUITE = Path(__file__).resolve().parents[1] / "benchmarks" / "extrapolation"
sys.path.insert(0, str(SUITE))

from delta_sizing import direction_weight  # noqa: E402
from noise_tails import contaminated_normal, student_t_mle  # noqa: E402
from score import kde_log_density, score_draws, summarise  # noqa: E402
from tasks import DATASETS, SPLIT_COLUMN, data_root  # noqa: E402

#: Datasets whose held-out set is a selection (final checkpoints) of the larger runs rather than all of them.
CHECKPOINT_DATASETS = {"hitchhiker"}


@pytest.mark.parametrize("name", list(DATASETS))
def test_task_splits_are_valid(name):
    root = data_root()
    if not (root / name).is_dir():
        pytest.skip(f"{root / name} is absent")
    loader, builder = DATASETS[name]
    data = loader(root)
    tasks = builder(data)
    assert tasks, f"{name} produced no tasks"
    # every excluded row says why
    if len(data.excluded):
        assert data.excluded["reason"].astype(str).str.len().gt(0).all()
    for t in tasks:
        assert t.split in SPLIT_COLUMN
        col = t.column
        assert len(t.train) > 0 and len(t.heldout) > 0, t.name
        assert t.train.frame[col].max() < t.heldout.frame[col].min(), f"{t.name}: held-out runs not all larger"
        assert t.train.frame.index.intersection(t.heldout.frame.index).empty, f"{t.name}: a row is in both sets"
        assert t.factor > 1.0, t.name
        assert t.threshold == pytest.approx(t.train.frame[col].max())
        fams = set(t.train.families) | set(t.heldout.families)
        group = data.subset(np.asarray(data.frame["family"].isin(list(fams))))
        if name not in CHECKPOINT_DATASETS:  # no run of the group is silently left out of a task
            assert len(t.train) + len(t.heldout) == len(group), t.name


def _normal_case(P=2000, S=1000, sd_ratio=1.0, seed=0):
    """Observed log losses y_p ~ N(m_p, σ_p²) and S predictive draws per run from N(m_p, (sd_ratio·σ_p)²)."""
    rng = np.random.default_rng(seed)
    m = np.log(rng.uniform(2.0, 3.5, P))
    s = rng.uniform(0.005, 0.05, P)
    y = m + s * rng.standard_normal(P)
    draws = m + sd_ratio * s * rng.standard_normal((S, P))
    return m, s, y, draws


def test_scorer_coverage_of_the_true_predictive():
    _, _, y, draws = _normal_case()
    s = summarise(score_draws(draws, np.exp(y)))
    # 2000 independent runs: binomial s.d. of the share covered is sqrt(0.9·0.1/2000) = 0.0067 at 90% and
    # sqrt(0.25/2000) = 0.011 at 50%; empirical quantiles of 1000 draws add a little more. 4.5 s.d. tolerances.
    assert s["coverage90"] == pytest.approx(0.9, abs=0.03)
    assert s["coverage50"] == pytest.approx(0.5, abs=0.05)
    # The true 90% interval of N(m, σ) is 2·1.645·σ wide in log space; relative width ≈ that for small σ.
    assert s["n"] == 2000


def test_scorer_flags_an_overconfident_predictive():
    _, _, y, draws = _normal_case(sd_ratio=0.5)
    s = summarise(score_draws(draws, np.exp(y)))
    # intervals half as wide cover P(|z| < 0.82) = 59% (90% nominal) and P(|z| < 0.34) = 26% (50%)
    assert s["coverage90"] < 0.7
    assert s["coverage50"] < 0.35


def test_scorer_are_and_width():
    m, sd, _, draws = _normal_case(S=4000)
    runs = score_draws(draws, np.exp(m))  # observed = the predictive median exactly
    # the median of 4000 Normal draws is off by s.d. 1.25σ/sqrt(4000) ≈ 0.02σ; with σ ≤ 0.05 the median over runs
    # of |error| is ≈ 0.67·0.02·0.0275 ≈ 4e-4 (a wrong median, e.g. the mean of exp draws, would still pass a loose
    # bound, so also check the sign-free error is far below the predictive spread σ ≥ 0.005)
    assert summarise(runs)["are"] < 1e-3
    assert (runs["are"] < 0.2 * sd).mean() > 0.99
    expected = np.exp(m + 1.645 * sd) - np.exp(m - 1.645 * sd)
    np.testing.assert_allclose(runs["rel_width90"], expected / np.exp(m), rtol=0.1)


def test_kde_lpd_is_close_to_the_exact_density():
    m, s, y, draws = _normal_case()
    exact = norm.logpdf(y, m, s)
    kde = kde_log_density(draws, y)
    # Silverman's bandwidth h ≈ 0.23σ at S = 1000 widens the density by ~2.5%, costing ≈ 0.025 nats on average;
    # the paired difference over 2000 runs has a small spread, so 0.06 nats bounds bias plus noise.
    assert np.mean(kde - exact) == pytest.approx(0.0, abs=0.06)
    # a proper score: the true predictive beats one that is too narrow
    _, _, _, narrow = _normal_case(sd_ratio=0.5)
    assert kde.mean() > kde_log_density(narrow, y).mean() + 0.3


def test_scorer_rejects_bad_shapes():
    with pytest.raises(ValueError, match="shape"):
        score_draws(np.zeros((10, 3)), np.ones(4))


def test_scorer_keeps_overflowed_draws_and_rejects_nan():
    _, _, y, draws = _normal_case(P=50)
    draws = draws.copy()
    draws[:10] = np.inf  # 1% of draws overflowed exp: still draws above every interval end
    runs = score_draws(draws, np.exp(y))
    assert np.isfinite(runs["lpd"]).all() and np.isfinite(runs["hi90"]).all()
    assert (runs["capped_draws"] == 10 / draws.shape[0]).all()
    draws[0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        score_draws(draws, np.exp(y))


def test_noise_tail_fits_recover_known_noise():
    """The what-if noise models of noise_tails.py, fitted to simulated residuals, recover the simulated parameters.

    2000 draws at a fixed seed (reproducible): ε's and the scales' standard errors are ~0.005 and ~3%, so the
    tolerances (0.02 on ε, 10% on scales, ν within 4-9 for ν = 6) fail only on a wrong estimator."""
    rng = np.random.default_rng(7)
    n = 2000
    out = rng.random(n) < 0.1
    r = np.where(out, 0.2, 0.02) * rng.standard_normal(n)
    eps, s, s_out = contaminated_normal(r)
    assert eps == pytest.approx(0.1, abs=0.02)
    assert s == pytest.approx(0.02, rel=0.1) and s_out == pytest.approx(0.2, rel=0.1)
    t = 0.01 * rng.standard_t(6.0, n)
    nu, sigma = student_t_mle(t, 0.5)
    assert 4.0 < nu < 9.0 and sigma == pytest.approx(0.01, rel=0.1)
    nu3, _ = student_t_mle(0.01 * rng.standard_t(1.0, n), 3.0)  # Cauchy data: the floor binds
    assert 3.0 <= nu3 < 3.1


def test_delta_sizing_direction_weight():
    """delta_sizing.direction_weight: the share of a held-out run's extrapolation that is in N, from its excess of
    log N and log C over its own family's fitted runs (exact arithmetic, so exact expectations)."""
    train = pd.DataFrame({"N": [1e8, 1e9], "C": [1e18, 1e19], "family": ["a", "a"]})
    held = pd.DataFrame(
        {
            "N": [1e10, 1e9, 5e8, np.e * 1e9],  # beyond in N only, in C only, in neither, in both by 1 nat
            "C": [1e19, 1e21, 1e19, np.e * 1e19],
            "family": ["a"] * 4,
        }
    )
    w = direction_weight({"train_frame": train}, held)
    assert w == pytest.approx([1.0, 0.0, 0.5, 0.5])


def test_reference_coverage_of_a_shared_error_is_all_or_nothing():
    """A predictive whose P runs share one error (z_s·1 for every run) covers a task's runs all together or not at
    all when it is right; one with independent errors covers close to the nominal share of each task's runs."""
    from score import reference_coverage

    rng = np.random.default_rng(0)
    S, P = 4000, 40
    shared = np.repeat(rng.standard_normal((S, 1)), P, axis=1) + 1e-6 * rng.standard_normal((S, P))
    ref = reference_coverage(shared, reps=400, seed=1)
    assert ref.shape == (400, 2)
    assert np.isin(ref, [0.0, 1.0]).all()
    # 400 replicates of a Bernoulli(0.9) (0.5): binomial s.e. 1.5 (2.5) points; 4 s.e. tolerance
    assert abs(ref[:, 1].mean() - 0.9) < 0.06 and abs(ref[:, 0].mean() - 0.5) < 0.10
    indep = reference_coverage(rng.standard_normal((S, P)), reps=400, seed=1)
    # each replicate is a binomial share of 40 runs: s.d. 4.7 points at 90%, 7.9 at 50%; the mean of 400 is
    # within 0.5 point of nominal (1.5 with the tolerance of 3 s.e.)
    assert abs(indep[:, 1].mean() - 0.9) < 0.015 and abs(indep[:, 0].mean() - 0.5) < 0.02
    assert 0.03 < indep[:, 1].std() < 0.07
    assert (reference_coverage(shared, reps=400, seed=1) == ref).all()  # a fixed seed: reruns agree


def test_reference_table_reads_replicates_and_the_bar():
    """run.reference_table: the observed coverage's mid-p among its replicates, and the share of replicates that
    meet issue 13's bar, on a hand-made payload of two tasks."""
    from run import reference_table, task_table

    def method(cov50, cov90, ref):
        runs = {"n": 10, "coverage50": cov50, "coverage90": cov90, "are": 0.01, "width": 0.05, "lpd": 1.0}
        return {"summary": runs, "seconds": 1.0, "reference": ref}

    inside, outside = [[0.5, 0.9]] * 3 + [[0.2, 1.0]], [[0.2, 1.0]] * 4
    tasks = [
        {"task": f"d/t{i}", "factor": 2.0, "n_train": 20, "info": {}, "methods": {"m": method(0.5, 0.9, ref)}}
        for i, ref in enumerate((inside, outside))
    ]
    payload = {"datasets": {"d": {"status": "run", "tasks": tasks}}}
    rt = reference_table(payload, task_table(payload))
    row = rt.loc[("d", "m")]
    # replicate means over the two tasks: (0.35, 0.95) three times and (0.2, 1.0) once: none inside 40-60%
    assert row["p_bar"] == 0.0 and row["tasks"] == 2
    assert row["coverage90"] == 0.9 and row["p90"] == 0.0  # 0.9 lies below every replicate (0.95, 1.0)
    assert rt.loc[("all tasks", "m"), "p_bar"] == 0.0


def test_rerunning_some_tasks_replaces_only_their_records():
    from run import merge_tasks

    old = {"datasets": {"a": {"settings": "s", "tasks": [{"task": "a/1", "v": 1}, {"task": "a/2", "v": 2}]}}}
    new = {"datasets": {"a": {"settings": "t", "tasks": [{"task": "a/2", "v": 20}, {"task": "a/3", "v": 3}]}}}
    out = merge_tasks(old, new)
    assert [t["v"] for t in out["datasets"]["a"]["tasks"]] == [1, 20, 3]
    assert out["datasets"]["a"]["settings"] == "s" and old["datasets"]["a"]["tasks"][1]["v"] == 2  # old untouched
