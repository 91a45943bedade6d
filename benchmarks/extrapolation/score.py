"""Scores of a predictive given as draws of log loss, identical for every method.

A method hands over ``log_draws`` (S, P): S draws of the log loss (nats of log(nats/token)) of a *new run* at each
of the P held-out runs (law + run-to-run noise + whatever else the method adds). From them, per held-out run:

``covered50``, ``covered90``
    the observed loss lies inside the central 50% / 90% interval of the draws (empirical quantiles).
``are``
    |predictive median − observed| / observed (the median of the draws, back on the loss scale).
``rel_width90``
    (upper − lower) / observed of the central 90% interval.
``lpd``
    log predictive density of the observed *log* loss (nats), from a Gaussian kernel density estimate of the draws
    in log space with Silverman's rule-of-thumb bandwidth h = 0.9·min(sd, IQR/1.349)·S^(-1/5) per run. The same
    estimate for every method keeps them comparable: methods whose predictive has a closed form are still scored
    from their draws, so no method gains from an exact density the others lack. The KDE adds h² to the
    predictive variance, negligible next to the spread at S ≥ 1000 (h ≈ 0.2 s.d.: a 2% wider density).

Summaries (:func:`summarise`): coverage = share of runs covered, ``are`` and ``width`` the medians over runs (robust to
one wild run), ``lpd`` the mean over runs (a proper scoring rule must be averaged, not medianed).

Reference coverage (:func:`reference_coverage`): the coverage the *same* predictive would score if it were right,
i.e. if the held-out losses were one more joint draw from it. A task's held-out runs share the law's draw and the
discrepancy's (one δ per draw and family), so even a perfectly calibrated predictive covers a task's runs nearly
all-or-nothing; these replicates say how far from nominal a dataset's coverage can land by chance, given how many
tasks it has and how strongly its predictive ties their runs together.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy.special import logsumexp

LEVELS = (0.5, 0.9)
#: Log of the largest float64 (≈ 709.8): infinite log-loss draws are clipped to ±this.
LOG_CAP = float(np.log(np.finfo(float).max))


def kde_log_density(log_draws: np.ndarray, log_y: np.ndarray) -> np.ndarray:
    """Log density (P,) at ``log_y`` (P,) of a Gaussian KDE of each column of ``log_draws`` (S, P)."""
    x = np.asarray(log_draws, float)
    y = np.asarray(log_y, float)
    S = x.shape[0]
    sd = x.std(axis=0, ddof=1)
    q75, q25 = np.percentile(x, [75, 25], axis=0)
    spread = np.minimum(sd, (q75 - q25) / 1.349)
    spread = np.where(spread > 0, spread, sd)
    h = np.maximum(0.9 * spread * S ** (-0.2), 1e-9)  # floor: draws that are all equal
    z = (y[None, :] - x) / h[None, :]
    return logsumexp(-0.5 * z * z, axis=0) - np.log(S) - np.log(h) - 0.5 * np.log(2 * np.pi)


def score_draws(log_draws: np.ndarray, loss: np.ndarray) -> pd.DataFrame:
    """Per-run scores (P rows) of log-loss draws (S, P) against observed losses (P,) in nats/token."""
    x = np.asarray(log_draws, float)
    obs = np.asarray(loss, float)
    if x.ndim != 2 or x.shape[1] != obs.shape[0]:
        raise ValueError(f"log_draws has shape {x.shape}; expected (S, {obs.shape[0]})")
    if np.isnan(x).any():
        raise ValueError("log_draws has NaN values")
    # A draw whose loss overflowed (a Student-t tail with small ν, exp(log loss) = inf) is kept as the largest finite
    # log loss: it still lies beyond every interval end, and the KDE's robust bandwidth ignores its size.
    x = np.clip(x, -LOG_CAP, LOG_CAP)
    out = {"loss": obs}
    for level in LEVELS:
        lo, hi = np.exp(np.quantile(x, [(1 - level) / 2, (1 + level) / 2], axis=0))
        tag = f"{round(100 * level)}"
        out[f"lo{tag}"], out[f"hi{tag}"] = lo, hi
        out[f"covered{tag}"] = (obs >= lo) & (obs <= hi)
    out["pred"] = np.exp(np.median(x, axis=0))
    out["are"] = np.abs(out["pred"] - obs) / obs
    out["rel_width90"] = (out["hi90"] - out["lo90"]) / obs
    out["lpd"] = kde_log_density(x, np.log(obs))
    out["capped_draws"] = (np.abs(x) >= LOG_CAP).mean(axis=0)  # share of draws that were infinite
    return pd.DataFrame(out)


def reference_coverage(log_draws: np.ndarray, reps: int = 400, seed: int = 0) -> np.ndarray:
    """Coverage (reps, len(LEVELS)) of the central intervals of ``log_draws`` (S, P) when the "observed" log losses
    are one of its own rows: ``reps`` rows chosen without replacement (a fixed ``seed``, so reruns agree).

    Each row is a joint draw of the P held-out runs (law, δ and run noise of one posterior draw), so the replicates
    carry exactly the correlation the predictive claims between runs. The intervals are those of all S rows; leaving
    the one row out would move an interval end by about one row in S (S ≥ 1200 here), which changes no coverage
    beyond ±1/P of one run."""
    x = np.clip(np.asarray(log_draws, float), -LOG_CAP, LOG_CAP)
    rows = np.random.default_rng(seed).choice(x.shape[0], size=min(reps, x.shape[0]), replace=False)
    out = []
    for level in LEVELS:
        lo, hi = np.quantile(x, [(1 - level) / 2, (1 + level) / 2], axis=0)
        out.append(((x[rows] >= lo) & (x[rows] <= hi)).mean(axis=1))
    return np.stack(out, axis=1)


def summarise(runs: pd.DataFrame) -> dict:
    """n, coverage50, coverage90 (shares), are (median), width (median relative 90% width), lpd (mean, nats)."""
    return {
        "n": int(len(runs)),
        "coverage50": float(runs["covered50"].mean()),
        "coverage90": float(runs["covered90"].mean()),
        "are": float(runs["are"].median()),
        "width": float(runs["rel_width90"].median()),
        "lpd": float(runs["lpd"].mean()),
    }
