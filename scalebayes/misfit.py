"""Does the law fit the runs it was fitted to? Residual trends against N, D, C and family.

A heavy-tailed likelihood keeps a few bad runs from dragging the law, but it can also explain a *systematic* misfit
away as noise; and a misfit inside the fitted range is the first sign that extrapolation will go wrong. So after a
fit the residuals r_i = log y_i − median_θ log L(x_i; θ), against the posterior median of the law at each run (θ of
the run's family), are checked for structure:

* against each input the data have (log N, log D, log C): the runs are cut into :data:`BINS` quantile bins of the
  input and the bins' residual medians compared by a Kruskal-Wallis test (rank-based, so a few outliers neither
  make nor hide a trend; it sees curvature as well as a slope);
* against the family, with several families: the families' residual medians, compared the same way;
* the *scatter* against tokens per parameter (log D/N): the runs' absolute deviations from their bin's median
  residual compared across :data:`BINS` quantile bins of log D/N (the Brown-Forsythe form of Levene's test, by ranks).
  Under-trained runs (few tokens per parameter) often scatter several times more than well-trained ones; one noise
  scale then averages over them and its Student-t tails widen to cover the noisiest runs, so predictive intervals are
  too narrow at few tokens per parameter and too wide at many (benchmarks/extrapolation/DELTA_SIZING.md,
  ``tpp_noise``). With several families each family's residuals are first divided by their own robust scale, so a
  noisier family is not read as a trend. When the fit models that trend (``noise_trend="tokens_per_parameter"``,
  :mod:`scalebayes.model`, or ``"tokens_per_parameter_cut"``, :mod:`scalebayes.noise_refit`), the residuals are
  first divided by the fitted trend exp(ζ̂·(log(D/N) − c)) (ζ̂ the posterior median), so the check asks whether the
  scatter changes *more than the fit says*.

A check is flagged when its p-value is below :data:`P_FLAG` (with at most five checks per fit, a well-specified
law raises a false alarm in about 1 fit in 200) *and* its largest bin median is at least half the runs' own scatter
(1.4826·MAD of the residuals) and at least :data:`MIN_EFFECT` in log loss: a trend smaller than that moves an
extrapolation less than run-to-run noise does, however many runs make it significant. (chinchilla_epoch's residuals
trend with log D at p = 5e-4, but by at most 0.22% against a scatter of ~0.6%: not flagged.) The scatter check is
flagged at the same p-value when its noisiest bin's robust scale is at least :data:`SCATTER_RATIO` times its
calmest bin's.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import jax.numpy as jnp
import numpy as np
import pandas as pd

from .errors import MisfitWarning
from .likelihood import robust_sd
from .model import trend_factor
from .predict import log_mean_draws

#: Quantile bins per input.
BINS = 5
#: Flag a check whose p-value is below this...
P_FLAG = 1e-3
#: ...and whose largest bin (or family) median residual is at least this (nats of log loss: 0.1% of the loss) and
#: half the residuals' robust scatter.
MIN_EFFECT = 1e-3
#: Flag the scatter check when the noisiest bin's robust scale is at least this many times the calmest bin's: with
#: one scale between them, a Normal 90% interval covers ~59% of the noisy bin's runs and ~99.9% of the calm bin's.
SCATTER_RATIO = 2.0


@dataclass
class Misfit:
    """The residual checks of one fit: ``table`` (one row per check: ``against``, ``p_value``, ``effect`` (largest
    |bin median|, nats of log loss), ``medians`` (bin or family medians, low to high), ``flagged``) and the
    residuals (n,) themselves (observed − fitted log loss)."""

    table: pd.DataFrame
    residuals: np.ndarray
    trend: bool = False  # the fit models a noise trend in tokens per parameter (the scatter check is relative to it)

    @property
    def flagged(self) -> bool:
        return bool(self.table["flagged"].any())

    def message(self) -> str:
        """One line per flagged check, saying which way the residuals run (empty when nothing is flagged)."""
        lines = []
        for _, row in self.table[self.table["flagged"]].iterrows():
            if row["against"] == SCATTER and self.trend:
                lines.append(
                    f"run-to-run scatter changes with tokens per parameter more than the fitted noise trend says "
                    f"(p = {row['p_value']:.1g}; robust s.d. per bin of log D/N, low to high, after the fitted trend: "
                    f"{per_bin(row)}): predictive intervals are too narrow where the scatter is largest"
                )
                continue
            if row["against"] == SCATTER:
                lines.append(
                    f"run-to-run scatter changes with tokens per parameter (p = {row['p_value']:.1g}; robust s.d. "
                    f"per bin of log D/N, low to high: {per_bin(row)}): the fit's one noise scale averages over them, "
                    "so predictive intervals are too narrow for under-trained runs and too wide for well-trained ones "
                    "(noise_trend='tokens_per_parameter_cut' models it for new runs and leaves the law as fitted; "
                    "'tokens_per_parameter' fits it with the law, which also reweights the runs)"
                )
                continue
            lines.append(
                f"residuals trend with {row['against']} (p = {row['p_value']:.1g}; binned medians {per_bin(row)}): "
                "the law misses structure inside the fitted runs, so extrapolations along it are suspect"
            )
        return "\n".join(lines)


def per_bin(row) -> str:
    """A check's per-bin (or per-family) values, low to high, in %: signed median residuals, or for the scatter check
    the bins' robust scales."""
    if row["against"] == SCATTER:
        return ", ".join(f"{100 * v:.2f}%" for v in row["medians"])
    return ", ".join(f"{100 * v:+.2f}%" for v in row["medians"])


#: Posterior draws (evenly thinned) behind each run's fitted value: the median of a smooth function of the
#: parameters over 400 draws is within ~0.06 posterior s.d. of the full posterior's.
FIT_DRAWS = 400
#: Runs per block of draws × runs evaluated at once (bounds the memory to ~32 MB whatever the number of runs).
_BLOCK = 2**22 // FIT_DRAWS


def fitted_log_loss(post) -> np.ndarray:
    """The fitted log loss (nats) at every run, (n,): the posterior median of log L(x_i; θ) over θ of the run's
    family. Not log L at the parameters' own medians: on a curved ridge (E, A, α trading off, as on checkpoints of
    one model) those medians are a point off the ridge, whose curve can sit ~1.5% below every run."""
    return median_log_mean(post.law, post.data.frame, post.families, post.param_draws)


def median_log_mean(law, frame: pd.DataFrame, families: Sequence[str], param_draws: Callable) -> np.ndarray:
    """:func:`fitted_log_loss` from its pieces: the runs ``frame`` (n rows), their ``families`` and
    ``param_draws(family)``, the family's published parameters (each (S,), draws of all chains in order); (n,)."""
    fam = np.asarray(frame["family"], dtype=str)
    logs = {k: np.log(frame[k].to_numpy(dtype=float)) for k in law.inputs}
    out = np.empty(len(frame))
    for f in families:
        draws = param_draws(f)
        S = len(next(iter(draws.values())))
        keep = np.linspace(0, S - 1, min(S, FIT_DRAWS)).astype(int)
        draws = {k: jnp.asarray(v)[keep] for k, v in draws.items()}
        rows = np.flatnonzero(fam == f)
        for i in range(0, len(rows), _BLOCK):
            block = rows[i : i + _BLOCK]
            x = {k: jnp.asarray(v[block]) for k, v in logs.items()}
            out[block] = np.median(np.asarray(log_mean_draws(law, draws, x)), axis=0)
    return out


def _check(against: str, r: np.ndarray, groups: np.ndarray, labels, floor: float) -> dict:
    """Kruskal-Wallis across the groups ``labels`` (in that order) of the residuals ``r``; flagged when significant
    and the largest group median reaches ``floor`` (nats of log loss)."""
    parts = [r[groups == g] for g in labels]
    parts = [p for p in parts if len(p) >= 2]
    if len(parts) < 2:
        return {"against": against, "p_value": np.nan, "effect": np.nan, "medians": [], "flagged": False}
    # lazily: scipy.stats (also under arviz_stats) is a heavy import, not needed to start
    from scipy.stats import kruskal

    p = float(kruskal(*parts).pvalue)
    meds = [float(np.median(q)) for q in parts]
    effect = float(np.max(np.abs(meds)))
    flagged = p < P_FLAG and effect >= floor
    return {"against": against, "p_value": p, "effect": effect, "medians": meds, "flagged": flagged}


#: The scatter check's name in :attr:`Misfit.table` (its ``medians`` are the bins' robust scales, its ``effect`` the
#: largest over the smallest).
SCATTER = "scatter vs log D/N"


def _scatter(r: np.ndarray, fam: np.ndarray, log_tpp: np.ndarray) -> dict:
    """The scatter check (module docstring) of residuals ``r`` (n,) of families ``fam`` against ``log_tpp``."""
    z, families = r.copy(), np.unique(fam)
    if len(families) > 1:  # each family in units of its own scatter, then back to nats at the pooled scale
        pooled = robust_sd(r)
        for f in families:
            m = fam == f
            own = robust_sd(r[m]) if m.sum() >= 3 else 0.0
            z[m] = (r[m] - np.median(r[m])) * (pooled / own if own > 0 else 1.0)  # too few runs: left in nats
    edges = np.quantile(log_tpp, np.linspace(0, 1, BINS + 1)[1:-1])
    bins = np.searchsorted(edges, log_tpp, side="right")
    dev, scales = np.empty_like(z), []
    for b in np.unique(bins):
        m = bins == b
        dev[m] = np.abs(z[m] - np.median(z[m]))
        if m.sum() >= 2:
            scales.append(robust_sd(z[m]))
    row = _check(SCATTER, dev, bins, range(BINS), np.inf)
    if len(scales) < 2:
        return row
    effect = max(scales) / max(min(scales), 1e-12)
    return {**row, "effect": effect, "medians": scales, "flagged": row["p_value"] < P_FLAG and effect >= SCATTER_RATIO}


def check(post) -> Misfit:
    """The residual checks (module docstring) of a :class:`~scalebayes.posterior.Posterior`."""
    frame = post.data.frame
    r = np.log(post.data.loss) - fitted_log_loss(post)
    floor = max(MIN_EFFECT, 0.5 * robust_sd(r))
    rows = []
    for col in ("N", "D", "C"):
        if col in frame and frame[col].nunique() >= BINS:
            v = np.log(frame[col].to_numpy(dtype=float))
            edges = np.quantile(v, np.linspace(0, 1, BINS + 1)[1:-1])
            rows.append(_check(f"log {col}", r, np.searchsorted(edges, v, side="right"), range(BINS), floor))
    fam = np.asarray(frame["family"], dtype=str)
    if len(post.families) > 1:
        rows.append(_check("family", r, fam, post.families, floor))
    log_tpp = np.log(frame["D"].to_numpy(dtype=float) / frame["N"].to_numpy(dtype=float))
    if np.all(np.isfinite(log_tpp)) and len(np.unique(log_tpp)) >= BINS:
        rows.append(_scatter(r / fitted_trend(post, log_tpp), fam, log_tpp))
    table = pd.DataFrame(rows, columns=["against", "p_value", "effect", "medians", "flagged"])
    return Misfit(table, r, trend=post.noise_trend)


def fitted_trend(post, log_tpp: np.ndarray) -> np.ndarray:
    """The fitted noise trend exp(ζ̂·(log(D/N) − c)) at ``log_tpp`` (n,) (:func:`~scalebayes.model.trend_factor`),
    ζ̂ the posterior median of a new run's noise (fitted with the law or refitted after it; 1 without a trend)."""
    if not post.noise_trend:
        return np.ones_like(log_tpp)
    noise = post.run_noise(post.families[0])
    return np.asarray(trend_factor(float(np.median(noise.trend)), log_tpp - noise.centre, noise.span))


def warn_if_misfit(misfit: Misfit, what: str, stacklevel: int = 3) -> None:
    """A :class:`~scalebayes.errors.MisfitWarning` naming the flagged checks of ``what`` (a fit's description)."""
    if misfit.flagged:
        warnings.warn(f"{what}: {misfit.message()}", MisfitWarning, stacklevel=stacklevel)
