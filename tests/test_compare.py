"""Model comparison: PSIS-LOO through ArviZ (with Pareto-k warnings) and leave-largest-out scoring.

One extra fit (the chinchilla_epoch data under a deliberately wrong, tight prior on α: same compiled sampler as the
``chinchilla_post`` fixture, since priors enter as arrays); the rest manipulates existing posteriors and tables.
"""

from __future__ import annotations

import copy
import warnings

import numpy as np
import pandas as pd
import pytest
from conftest import FULL, LAW_ONLY

import scalebayes as sb
from scalebayes.backtesting import BacktestResult
from scalebayes.comparison import ParetoKWarning, compare_backtests


@pytest.fixture(scope="module")
def bad_post(chinchilla_data):
    # α pinned near 0.1 (the data say ~0.33): a worse model of the same runs
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return sb.fit(chinchilla_data, seed=0, priors={"alpha": (np.log(0.1), 0.02)}, **FULL, **LAW_ONLY)


def test_loo_table_ranks_the_better_model_first(chinchilla_post, bad_post):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ParetoKWarning)
        t = sb.compare({"default": chinchilla_post, "wrong alpha": bad_post})
    assert list(t.index) == ["default", "wrong alpha"]
    for col in ("elpd", "se", "p", "elpd_diff", "dse", "weight", "n_high_k", "max_k"):
        assert col in t.columns
    assert t.loc["default", "elpd_diff"] == 0.0
    # a clear difference: many standard errors of the difference
    assert -t.loc["wrong alpha", "elpd_diff"] > 4 * t.loc["wrong alpha", "dse"]
    assert t["weight"].sum() == pytest.approx(1.0)
    assert t.loc["default", "weight"] > 0.9


def test_high_pareto_k_is_reported(chinchilla_post):
    # Give one run importance ratios 1/p(y|θ) with a Pareto tail of index 1 (log-likelihood = log U, U uniform),
    # as an outlier the fit cannot explain would: k̂ ≈ 1 > 0.7, and the warning names it.
    post = copy.copy(chinchilla_post)
    post.idata = chinchilla_post.idata.copy(deep=True)
    ll = post.idata["log_likelihood"]["log_loss"]
    vals = ll.values.copy()
    rng = np.random.default_rng(0)
    vals[..., 3] = np.log(rng.uniform(size=vals.shape[:2]))
    post.idata["log_likelihood"]["log_loss"] = ll.copy(data=vals)
    with pytest.warns(ParetoKWarning, match="Pareto k"):
        t = sb.compare({"a": chinchilla_post, "b": post})
    assert t.loc["b", "n_high_k"] >= 1


def test_loo_refuses_different_runs(chinchilla_post):
    other = copy.copy(chinchilla_post)
    other.idata = chinchilla_post.idata.copy(deep=True)
    obs = other.idata["observed_data"]["log_loss"]
    other.idata["observed_data"]["log_loss"] = obs.copy(data=obs.values + 0.01)
    with pytest.raises(sb.errors.ModelError, match="different runs"):
        sb.compare({"a": chinchilla_post, "b": other})
    with pytest.raises(sb.errors.ModelError):
        sb.compare({"a": chinchilla_post})


def _fake_result(lpd: np.ndarray, covered: np.ndarray) -> BacktestResult:
    n = len(lpd)
    runs = pd.DataFrame(
        {
            "family": "all",
            "lpd": lpd,
            "covered": covered,
            "width": 0.1,
            "rel_width": 0.05,
            "are": 0.01,
            "size_ratio": 2.0,
        },
        index=pd.Index(np.arange(n), name="row"),
    )
    return BacktestResult(runs=runs, config={"quantiles": [0.05, 0.95]}, train_mask=np.ones(n, bool))


def test_leave_largest_out_table():
    # Paired comparison on the same held-out runs: model b is 0.5 nats worse on every run.
    rng = np.random.default_rng(0)
    a = rng.normal(3.0, 0.2, 40)
    t = compare_backtests(
        {
            "a": _fake_result(a, np.ones(40, bool)),
            "b": _fake_result(a - 0.5 + rng.normal(0, 0.1, 40), np.zeros(40, bool)),
        }
    )
    assert list(t.index) == ["a", "b"]
    assert t.loc["b", "elpd_diff"] == pytest.approx(-20.0, abs=2.0)
    assert 0 < t.loc["b", "dse"] < 2.0  # paired: the s.e. of the difference is small
    assert t.loc["a", "coverage"] == 1.0 and t.loc["b", "coverage"] == 0.0
    with pytest.raises(sb.errors.ModelError):
        compare_backtests({"a": _fake_result(a, np.ones(40, bool))})


@pytest.mark.slow
def test_compare_by_backtest_refits_each_model(chinchilla_post, bad_post):
    # Leave-largest-out: both models refitted on the smaller 80% of runs with their own settings (two fits).
    t = sb.compare({"default": chinchilla_post, "wrong alpha": bad_post}, method="backtest")
    assert list(t.index) == ["default", "wrong alpha"]
    assert t.loc["wrong alpha", "elpd_diff"] < 0 and t.loc["default", "n"] == 48
