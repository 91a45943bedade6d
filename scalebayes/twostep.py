"""Two-step accuracy forecasts with joint uncertainty: (N, D) → loss (a fitted scaling law) → accuracy.

A :class:`TwoStep` holds a loss :class:`~scalebayes.posterior.Posterior` and an accuracy-vs-loss fit
(:class:`~scalebayes.loss_to_accuracy.AccuracyLaw`). A forecast at (N, D) takes the loss posterior's *predictive*
draws there (:meth:`~scalebayes.posterior.Posterior.predictive_draws`: the law's parameter uncertainty, a new run's
noise and, on a calibrated posterior, the model discrepancy that grows with extrapolation distance) and pushes each
loss draw through an accuracy-law draw picked at random (seeded), adding the benchmark's own sampling noise. So the
accuracy interval carries both steps' uncertainty: it widens when the loss interval widens (farther extrapolation,
a new family) and when the accuracy law is uncertain at that loss.

The loss of the two fits must be the same quantity (the same validation set and tokenizer): the accuracy law is
fitted on (loss, accuracy) pairs of models or checkpoints whose loss was measured like the loss law's runs.

Units: N parameters, D tokens, C FLOP (6·N·D), loss nats, accuracy a fraction in [floor, 1].
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from .errors import DataError
from .loss_to_accuracy import AccuracyLaw
from .predict import qcol, quantile_frame

if TYPE_CHECKING:
    from .posterior import Posterior

QUANTILES = (0.05, 0.5, 0.95)
#: Default planning grid: from the fitted runs' smallest compute up this many decades, in steps of STEP decades.
DECADES, STEP = 6.0, 0.05


@dataclass(frozen=True)
class TwoStep:
    """Accuracy forecasts through a loss posterior and an accuracy-vs-loss law (see the module docstring)."""

    loss_posterior: Posterior
    accuracy: AccuracyLaw

    def draws(
        self,
        N=None,
        D=None,
        *,
        C=None,
        U=None,
        family: str | None = None,
        include_noise: bool = True,
        seed: int = 0,
        extrapolation="auto",
    ) -> tuple[np.ndarray, np.ndarray]:
        """(loss, accuracy) draws, each (S, P), at the query points (two of N, D, C, as in
        :meth:`~scalebayes.posterior.Posterior.predict`; ``family`` a fitted family or None for a new one).

        ``include_noise=True``: a new model's loss (law + run noise + discrepancy) and the score it would report
        (benchmark sampling noise); ``False``: the law's mean loss (with the discrepancy) and the law's mean accuracy
        at it. ``extrapolation``: as in :meth:`~scalebayes.posterior.Posterior.predict` (``"auto"``: the stored
        calibration when the posterior is calibrated)."""
        loss = self.loss_posterior.predictive_draws(
            N, D, C=C, U=U, family=family, include_noise=include_noise, seed=seed, extrapolation=extrapolation
        )
        return loss, self.accuracy.accuracy_draws(loss, seed=seed, noise=include_noise)

    def predict(
        self,
        N=None,
        D=None,
        *,
        C=None,
        U=None,
        family: str | None = None,
        quantiles: Sequence[float] = QUANTILES,
        include_noise: bool = True,
        seed: int = 0,
        extrapolation="auto",
    ) -> pd.DataFrame:
        """Accuracy (and loss) forecasts, one row per query point.

        Returns the query's columns (N, D, C), ``loss_q<p>`` (nats) and ``loss_mean`` from the loss posterior,
        accuracy ``mean`` and ``q<p>`` per quantile, and ``loss_outside``: the fraction of loss draws outside the
        losses the accuracy law was fitted on (there the sigmoid extrapolates in loss; near 1, the accuracy
        forecast rests on the law's form and its ceiling prior). ``attrs["predictive"]``: ``"calibrated"`` or
        ``"parameters only"`` (whether the loss draws carry the model discrepancy)."""
        # One loss forecast gives both the loss columns and the draws the accuracy law maps: the same numbers as
        # ``loss_posterior.predict`` and :meth:`draws` with this seed, drawn once.
        post = self.loss_posterior
        out, loss = post._forecast(N, D, C, U, family, quantiles, include_noise, seed, extrapolation)
        out = out.rename(columns={"mean": "loss_mean", **{qcol(q): f"loss_{qcol(q)}" for q in quantiles}})
        acc = self.accuracy.accuracy_draws(loss, seed=seed, noise=include_noise)
        out["mean"] = acc.mean(axis=0)
        for k, v in quantile_frame(acc, quantiles).items():
            out[k] = v
        lo, hi = self.accuracy.loss_range
        out["loss_outside"] = ((loss < lo) | (loss > hi)).mean(axis=0)
        out.attrs.update(floor=self.accuracy.floor)
        return out

    def prob_accuracy_above(
        self,
        threshold,
        N=None,
        D=None,
        *,
        C=None,
        U=None,
        family: str | None = None,
        include_noise: bool = True,
        seed: int = 0,
        extrapolation="auto",
    ):
        """P(accuracy > ``threshold``) of a model trained at the query points (the draws of :meth:`draws`); a float
        for one point, else an array (P,)."""
        _, acc = self.draws(
            N, D, C=C, U=U, family=family, include_noise=include_noise, seed=seed, extrapolation=extrapolation
        )
        p = (acc > np.asarray(threshold, dtype=float)).mean(axis=0)
        return float(p[0]) if p.size == 1 else p

    def compute_for_accuracy(
        self,
        threshold: float,
        prob: float = 0.8,
        *,
        C=None,
        N=None,
        D=None,
        family: str | None = None,
        quantiles: Sequence[float] = QUANTILES,
        include_noise: bool = True,
        seed: int = 0,
        extrapolation="auto",
    ) -> pd.DataFrame:
        """The least training compute at which P(accuracy > ``threshold``) ≥ ``prob``, and the (N, D) spending it.

        Candidates: with ``N`` and ``D`` (arrays that broadcast), those allocations; otherwise the budgets ``C``
        (FLOP; default: the fitted runs' smallest compute up 6 decades in steps of 0.05 decades) on the loss
        posterior's compute-optimal path (the median N* of :meth:`~scalebayes.posterior.Posterior.plan` at each
        budget, D = C/(6N)). Every candidate is scored with the same seed, so the probability is a smooth function
        of compute; it need not be monotone (run noise and benchmark noise are drawn per candidate), and the first
        candidate in increasing compute that reaches ``prob`` is returned.

        Returns one row: ``threshold``, ``prob``, ``C``, ``N``, ``D`` (inf/NaN when no candidate reaches ``prob``),
        ``prob_reached`` (the probability there; the largest over candidates when none reaches it), accuracy
        ``q<p>`` and ``loss_q<p>`` at the chosen allocation. ``attrs["candidates"]``: every candidate's C, N, D and
        probability.
        """
        if not 0.0 < float(prob) < 1.0:
            raise DataError(f"prob must be in (0, 1), got {prob!r}")
        Ns, Ds = self._candidates(C, N, D, family, seed, extrapolation)
        loss, acc = self.draws(
            Ns, Ds, family=family, include_noise=include_noise, seed=seed, extrapolation=extrapolation
        )
        p = (acc > float(threshold)).mean(axis=0)
        cands = pd.DataFrame({"C": 6.0 * Ns * Ds, "N": Ns, "D": Ds, "prob": p})
        hit = np.flatnonzero(p >= float(prob))
        row = {"threshold": float(threshold), "prob": float(prob)}
        if hit.size:
            j = int(hit[0])
            row.update(C=cands["C"][j], N=Ns[j], D=Ds[j], prob_reached=p[j])
            row.update({k: v[j] for k, v in quantile_frame(acc, quantiles).items()})
            row.update({f"loss_{k}": v[j] for k, v in quantile_frame(loss, quantiles).items()})
        else:
            row.update(C=np.inf, N=np.nan, D=np.nan, prob_reached=float(p.max()))
        out = pd.DataFrame([row])
        out.attrs.update(candidates=cands, family=family)
        return out

    def _candidates(self, C, N, D, family, seed, extrapolation) -> tuple[np.ndarray, np.ndarray]:
        """Candidate allocations (N, D), each (P,), in increasing compute."""
        if N is not None or D is not None:
            if N is None or D is None or C is not None:
                raise DataError("give candidate allocations as both N and D (and no C), or budgets C alone")
            Ns, Ds = (np.atleast_1d(np.asarray(v, dtype=float)) for v in np.broadcast_arrays(N, D))
        else:
            if C is None:
                lo = np.log10(self.loss_posterior.data.frame["C"].min())
                C = 10.0 ** np.arange(lo, lo + DECADES + 1e-9, STEP)
            Cs = np.atleast_1d(np.asarray(C, dtype=float))
            plan = self.loss_posterior.plan(Cs, family=family, quantiles=(0.5,), seed=seed, extrapolation=extrapolation)
            Ns = plan[f"N_{qcol(0.5)}"].to_numpy()
            Ds = Cs / (6.0 * Ns)
        if not (np.all(np.isfinite(Ns) & (Ns > 0)) and np.all(np.isfinite(Ds) & (Ds > 0))):
            raise DataError("candidate N and D must be positive and finite", column="N")
        order = np.argsort(Ns * Ds, kind="stable")
        return Ns[order], Ds[order]
