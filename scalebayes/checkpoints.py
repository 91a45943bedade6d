"""Checkpoints of one training run are not independent runs: design-effect weights for the likelihood.

When rows are checkpoints (``ScalingData.from_frame(..., run="run_id")``), the m checkpoints of one run share that
run's seed, data order and any quirk of its training, so their residuals from the law are correlated; counted as m
independent runs they would make the posterior m times too sure of whatever that run says. Each row's
log-likelihood is therefore weighted by

    w_i = 1 / (1 + (m_r − 1)·ρ̂),

the inverse of Kish's design effect for m_r equicorrelated observations, so a run's checkpoints together weigh
m_r / (1 + (m_r − 1)·ρ̂) effective runs: m_r when they are independent (ρ̂ = 0), one run when they move together
(ρ̂ = 1). ρ̂ is the intra-run correlation of the residuals of a Huber point fit of the law to all rows (the one-way
random-effects ANOVA estimator, clipped to [0, 1]). The checkpoints still pin the law's shape along D (each keeps its
place in the likelihood); only their total weight changes. This is a composite-likelihood correction, not a per-run
random effect: the predictive of a *new* run carries the fit's noise, not a separate run effect.
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd

from .baselines import fit_huber
from .data import ScalingData


def intra_run_correlation(residuals: np.ndarray, runs: np.ndarray) -> float:
    """One-way random-effects ANOVA estimate of the correlation of ``residuals`` (n,) within groups ``runs`` (n,),
    clipped to [0, 1]: (MSB − MSW) / (MSB + (m₀ − 1)·MSW) with m₀ the ANOVA's effective group size."""
    r = pd.Series(np.asarray(residuals, float))
    g = pd.Series(np.asarray(runs)).astype(str)
    sizes = g.value_counts()
    k, n = len(sizes), len(r)
    if k < 2 or n <= k:
        return 0.0
    means = r.groupby(g).transform("mean")
    msw = float(((r - means) ** 2).sum() / (n - k))
    msb = float((sizes * (r.groupby(g).mean() - r.mean()) ** 2).sum() / (k - 1))
    m0 = (n - float((sizes**2).sum()) / n) / (k - 1)
    if msb + (m0 - 1) * msw <= 0:
        return 0.0
    return float(np.clip((msb - msw) / (msb + (m0 - 1) * msw), 0.0, 1.0))


def weights(data: ScalingData, law) -> tuple[np.ndarray, dict | None]:
    """Likelihood weights (n,) for ``data``'s rows under ``law`` (a :class:`~scalebayes.laws.Law`) and a record of
    how they were set (None without a ``run`` column: every weight 1)."""
    if "run" not in data.frame.columns:
        return np.ones(len(data)), None
    runs = data.frame["run"].astype(str).to_numpy()
    with warnings.catch_warnings():  # an imperfect point fit still gives usable residuals for ρ̂
        warnings.simplefilter("ignore")
        hf = fit_huber(data, law)
    rho = intra_run_correlation(-hf.residuals(data), runs)
    info = {
        "runs": int(len(set(runs))),
        "rows": int(len(runs)),
        "intra_run_correlation": rho,
    }
    w = weights_from(runs, info)
    return w, {**info, "effective_runs": float(w.sum())}


def weights_from(runs: np.ndarray, record: dict) -> np.ndarray:
    """The weights (n,) 1 / (1 + (m_r − 1)·ρ̂) of rows of runs ``runs`` (n,), ρ̂ the ``intra_run_correlation`` of
    :func:`weights`' ``record`` (as a fit stores it), m_r the rows of each row's run."""
    runs = pd.Series(np.asarray(runs).astype(str))
    m = runs.map(runs.value_counts()).to_numpy()
    return 1.0 / (1.0 + (m - 1) * float(record["intra_run_correlation"]))
