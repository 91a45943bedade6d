"""Model comparison: PSIS-LOO through ArviZ for interpolation, leave-largest-out backtests for extrapolation.

``compare({name: posterior, ...})`` ranks fits of the *same runs* (different laws, likelihoods, poolings) by their
expected log pointwise predictive density (ELPD) of log loss, estimated by Pareto-smoothed importance-sampling
leave-one-out cross-validation (:func:`arviz_stats.loo`, :func:`arviz_stats.compare`: elpd, se, elpd_diff, dse,
stacking weights). PSIS-LOO is only reliable where the Pareto k̂ of a run is below ArviZ's ``good_k`` (0.7 for
large draw counts); runs above it are counted in the table (``n_high_k``, ``max_k``) and raise a
:class:`ParetoKWarning` naming them, since a high k̂ means that run alone moves the posterior a lot and the
estimate for it is biased (refit without it, or use ``method="backtest"``).

LOO asks how well a law predicts a run *like the fitted ones*: interpolation. ``method="backtest"`` asks the
question analysts care about, which law extrapolates better: each model is refitted, with its own settings, on
all but the largest runs (:func:`scalebayes.backtest`) and scored on the held-out larger runs: ``elpd`` is the
summed log predictive density of those runs (nats of log loss), ``elpd_diff``/``dse`` are paired differences to
the best model over the same held-out runs, and coverage, width and ARE of the nominal interval are reported.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping

import numpy as np
import pandas as pd

from .backtesting import BacktestResult, backtest
from .errors import ModelError
from .holdout import refit_settings


class ParetoKWarning(UserWarning):
    """Some runs have Pareto k̂ above ArviZ's threshold: their PSIS-LOO estimates are unreliable."""


def _loo(name: str, post, *, warn: bool):
    # lazily: scipy.stats (also under arviz_stats) is a heavy import, not needed to start
    import arviz_stats as azs

    if "log_likelihood" not in post.idata.children:
        post.pointwise()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # ArviZ's own k̂ warning is re-issued below with the run labels
        res = azs.loo(post.idata, pointwise=True, var_name="log_loss")
    k = np.asarray(res.pareto_k.values).ravel()
    high = np.flatnonzero(~(k <= res.good_k))  # NaN k̂ (the fit of the tail failed) counts as unreliable too
    if warn and len(high):
        labels = [str(v) for v in np.asarray(post.idata["log_likelihood"]["obs"].values)[high]]
        shown = ", ".join(labels[:10]) + (f" (and {len(labels) - 10} more)" if len(labels) > 10 else "")
        warnings.warn(
            f"model {name!r}: {len(high)} run(s) with Pareto k > {res.good_k:.2f} (max {np.nanmax(k):.2f}); their "
            f"PSIS-LOO estimates are unreliable: runs {shown}. Refit without them or compare by "
            "method='backtest'.",
            ParetoKWarning,
            stacklevel=3,
        )
    return res, int(len(high)), float(np.nanmax(k)) if np.isfinite(k).any() else float("nan")


def _check_same_runs(posteriors: Mapping) -> None:
    ref_name, ref = next(iter(posteriors.items()))
    y0 = np.asarray(ref.idata["observed_data"]["log_loss"].values)
    for name, p in posteriors.items():
        y = np.asarray(p.idata["observed_data"]["log_loss"].values)
        if y.shape != y0.shape or not np.allclose(y, y0):
            raise ModelError(
                f"models {ref_name!r} and {name!r} were fitted to different runs: LOO compares fits of the same data"
            )


def compare(
    posteriors: Mapping[str, object],
    *,
    method: str = "loo",
    weights: str = "stacking",
    warn: bool = True,
    **backtest_kwargs,
) -> pd.DataFrame:
    """Rank fitted models by predictive accuracy.

    Args:
        posteriors: ``{name: Posterior}``, at least two. For ``"loo"`` they must be fits of the same runs.
            Finished backtests (``{name: BacktestResult}``) are compared as they are (see
            :func:`compare_backtests`).
        method: ``"loo"`` (PSIS-LOO, interpolation) or ``"backtest"`` (leave-largest-out, extrapolation).
        weights: ArviZ weighting for ``"loo"``: ``"stacking"``, ``"BB-pseudo-BMA"`` or ``"pseudo-BMA"``.
        warn: emit :class:`ParetoKWarning` for runs with high Pareto k̂ (``"loo"``).
        **backtest_kwargs: for ``"backtest"``: :func:`scalebayes.backtest` options applied to every model
            (``split``, ``holdout_fraction``, ``extrapolation``, ``quantiles``, ``seed``, sampler settings); each
            model otherwise keeps its own law, pooling, likelihood, noise, priors and sampler settings.

    Returns:
        ``"loo"``: ArviZ's comparison table (rank, elpd, p, elpd_diff, weight, se, dse, ...; elpd in nats of log
        loss) plus ``n_high_k`` and ``max_k``, best model first. ``"backtest"``: one row per model with ``elpd``
        (summed held-out log predictive density), ``elpd_diff``, ``dse``, ``lpd`` (mean per run), ``coverage``,
        ``width``, ``are`` and ``n`` held-out runs, best first.
    """
    if len(posteriors) < 2:
        raise ModelError("compare needs at least two models")
    if all(isinstance(p, BacktestResult) for p in posteriors.values()):
        return compare_backtests(posteriors)
    if method == "loo":
        if backtest_kwargs:
            raise ModelError(f"options {sorted(backtest_kwargs)} apply to method='backtest' only")
        # lazily: scipy.stats (also under arviz_stats) is a heavy import, not needed to start
        from arviz_stats import compare as arviz_compare

        _check_same_runs(posteriors)
        elpds, extra = {}, {}
        for name, post in posteriors.items():
            res, n_high, kmax = _loo(name, post, warn=warn)
            elpds[name] = res
            extra[name] = {"n_high_k": n_high, "max_k": kmax}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            table = arviz_compare(elpds, method=weights, round_to="none")
        return table.join(pd.DataFrame(extra).T)
    if method == "backtest":
        return _compare_backtest(posteriors, **backtest_kwargs)
    raise ModelError(f"unknown method {method!r}; choose 'loo' or 'backtest'")


def _compare_backtest(posteriors: Mapping[str, object], **kwargs) -> pd.DataFrame:
    results = {}
    for name, post in posteriors.items():
        settings = refit_settings(post)
        law = settings.pop("law")
        settings.update(kwargs)
        results[name] = backtest(post.data, law, **settings)
    return compare_backtests(results)


def compare_backtests(results: Mapping[str, object]) -> pd.DataFrame:
    """Leave-largest-out comparison table of :class:`~scalebayes.backtesting.BacktestResult` objects of the same
    data and split (see :func:`compare`, ``method="backtest"``): scores on the held-out runs they share, best first.
    """
    if len(results) < 2:
        raise ModelError("compare needs at least two models")
    runs = {name: r.runs for name, r in results.items()}
    common = set.intersection(*(set(r.index) for r in runs.values()))
    if not common:
        raise ModelError("the backtests share no held-out runs (were they run on different data or splits?)")
    idx = sorted(common, key=str)
    lpd = pd.DataFrame({n: r.loc[idx, "lpd"].to_numpy() for n, r in runs.items()})
    tot = lpd.sum()
    best = tot.idxmax()
    rows = []
    for name, r in runs.items():
        rr = r.loc[idx]
        diff = lpd[name] - lpd[best]
        rows.append(
            {
                "model": name,
                "elpd": float(tot[name]),
                "elpd_diff": float(diff.sum()),
                "dse": float(np.sqrt(len(diff)) * diff.std(ddof=1)) if name != best else 0.0,
                "lpd": float(rr["lpd"].mean()),
                "coverage": float(rr["covered"].mean()),
                "width": float(rr["width"].mean()),
                "are": float(rr["are"].mean()),
                "n": len(rr),
            }
        )
    out = pd.DataFrame(rows).set_index("model").sort_values("elpd", ascending=False)
    out.insert(0, "rank", np.arange(len(out)))
    return out
