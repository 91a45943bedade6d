"""Methods scored by the extrapolation suite: each turns a task's fit set into log-loss draws at its held-out runs.

A method is one function ``method(ctx, other_datasets) -> log_draws`` registered in :data:`METHODS`:

- ``ctx`` (:class:`Context`) holds the task, the sampler settings, the seed and a per-task cache (the plain
  posterior of the fit set is fitted once and shared by every method that needs it);
- ``other_datasets`` are the tasks of every *other* dataset loaded in the run (leave-one-dataset-out): anything a
  method learns across datasets must come from these, never from the task's own dataset. No method uses them yet;
- the return value is an array (S, P) of draws of the log loss (log of nats/token) of a new run at each of the P
  held-out runs (``ctx.task.heldout``), scored by :mod:`score` the same way for every method.

Adding a method: write one such function and add it to :data:`METHODS`.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
from tasks import Task

import scalebayes as sb
from scalebayes.backtest import huber_predictive
from scalebayes.discrepancy import stored as stored_discrepancy


@dataclass(frozen=True)
class Settings:
    """Sampler and bootstrap settings: NUTS ``chains`` × (``warmup`` + ``draws``); Huber ``bootstrap`` resamples,
    each with ``noise_reps`` draws of run noise (so the Huber predictive has bootstrap·noise_reps draws)."""

    chains: int = 4
    warmup: int = 1000
    draws: int = 1000
    bootstrap: int = 1000
    noise_reps: int = 2


FULL = Settings()
QUICK = Settings(chains=4, warmup=300, draws=300, bootstrap=300, noise_reps=4)


@dataclass
class Context:
    """One task's inputs for every method, and a cache shared between methods (``info`` is saved with the results)."""

    task: Task
    settings: Settings
    seed: int = 0
    info: dict = field(default_factory=dict)
    _post: object = None

    def posterior(self) -> sb.Posterior:
        """The plain posterior of the task's fit set (fitted on first use, then shared)."""
        if self._post is None:
            s = self.settings
            self._post = sb.fit(
                self.task.train,
                self.task.law,
                chains=s.chains,
                warmup=s.warmup,
                draws=s.draws,
                seed=self.seed,
                pointwise=False,
                warn=False,
            )
            d = self._post.diagnostics
            self.info["posterior_ok"] = bool(d.ok)
            self.info["posterior_diagnostics"] = str(d)
        return self._post

    def query(self) -> dict[str, np.ndarray]:
        """Inputs of the held-out runs for ``Posterior.predictive_draws``: N, D (and U for laws that need it)."""
        fr = self.task.heldout.frame
        q = {"N": fr["N"].to_numpy(), "D": fr["D"].to_numpy()}
        if "U" in sb.laws.get(self.task.law).inputs:
            q["U"] = fr["U"].to_numpy()
        return q


Method = Callable[[Context, Sequence[Task]], np.ndarray]


def huber_bootstrap(ctx: Context, other_datasets: Sequence[Task]) -> np.ndarray:
    """Huber point fit + nonparametric bootstrap (the package's backtest baseline): each resample's law plus
    Gaussian run noise of scale 1.4826·MAD of the point fit's log residuals."""
    s = ctx.settings
    t = ctx.task
    pred, _, info = huber_predictive(t.train, t.heldout.frame, t.law, bootstrap=s.bootstrap, seed=ctx.seed)
    ctx.info["huber"] = info
    return pred.sample(seed=ctx.seed, reps=s.noise_reps)


def posterior(ctx: Context, other_datasets: Sequence[Task]) -> np.ndarray:
    """The plain posterior predictive of a new run (law + Student-t run noise), no discrepancy."""
    return np.log(ctx.posterior().predictive_draws(**ctx.query(), seed=ctx.seed))


def discrepancy(ctx: Context, other_datasets: Sequence[Task]) -> np.ndarray:
    """Today's discrepancy method: κ learned from four leave-largest-out refits of the fit set, δ ~ N(0, (κ·d)²).

    INTEGRATOR: this is the one place to switch to the new API once ``sb.calibrate`` lands, e.g.
    ``cal = sb.calibrate(ctx.posterior()); draws = cal.predictive_draws(**ctx.query(), seed=ctx.seed)``.
    Today the calibration runs implicitly inside the first ``predictive_draws(..., extrapolation="discrepancy")``.
    """
    post = ctx.posterior()
    with warnings.catch_warnings():  # the implicit calibration warns that it refits; here that is the point
        warnings.simplefilter("ignore")
        draws = post.predictive_draws(**ctx.query(), seed=ctx.seed, extrapolation="discrepancy")
    disc = stored_discrepancy(post)
    if disc is not None:
        ctx.info["kappa"] = float(disc.kappa)
        ctx.info["calibration"] = {k: v for k, v in disc.info.items() if k != "splits"}
        ctx.info["inner_ok"] = [bool(d["inner_ok"]) for d in disc.info.get("splits", [])]
    return np.log(draws)


METHODS: dict[str, Method] = {
    "huber_bootstrap": huber_bootstrap,
    "posterior": posterior,
    "discrepancy": discrepancy,
}
