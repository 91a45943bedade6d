"""Methods scored by the extrapolation suite: each turns a task's fit set into log-loss draws at its held-out runs.

A method is one function ``method(ctx, other_datasets) -> log_draws`` registered in :data:`METHODS`:

- ``ctx`` (:class:`Context`) holds the task, the sampler settings, the seed and a per-task cache (the plain
  posterior of the fit set is fitted once and shared by every method that needs it);
- ``other_datasets`` are the tasks of every *other* dataset loaded in the run (leave-one-dataset-out): anything a
  method learns across datasets must come from these, never from the task's own dataset (``discrepancy``'s prior
  of log κ does);
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
from scalebayes import formerror, predictive
from scalebayes.backtesting import huber_predictive
from scalebayes.errors import CalibrationWarning


@dataclass(frozen=True)
class Settings:
    """Sampler and bootstrap settings: NUTS ``chains`` × (``warmup`` + ``draws``); Huber ``bootstrap`` resamples,
    each with ``noise_reps`` draws of run noise (so the Huber predictive has bootstrap·noise_reps draws)."""

    chains: int = 4
    warmup: int = 1000
    draws: int = 1000
    bootstrap: int = 1000
    noise_reps: int = 2
    noise_trend: str = "auto"  # the Bayesian fits' FitSpec.noise_trend (auto: the package's default)


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
                noise_trend=s.noise_trend,
                seed=self.seed,
                pointwise=False,
                warn=False,
            )
            d = self._post.diagnostics
            self.info["posterior_ok"] = bool(d.ok)
            self.info["posterior_diagnostics"] = str(d)
        return self._post

    def log_draws(self, post: sb.Posterior) -> np.ndarray:
        """Draws (S, P) of a new run's log loss at each held-out run, for its own family (the posterior's
        calibrated predictive when it has one), as ``Posterior.predictive_draws`` gives for one family at a time."""
        pred = predictive.for_frame(post, self.task.heldout.frame, seed=self.seed, disc=post.discrepancy)
        return pred.draws(self.seed)


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
    return ctx.log_draws(ctx.posterior())


_LOG_KAPPA_MODE: dict[str, tuple[float, float]] = {}


def _pooled_start(t: Task) -> dict[str, float]:
    """A Huber point fit of the whole fit set (every family pooled), used to start each family's inner refits."""
    init = "hoffmann" if t.law == "chinchilla" else "grid"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return sb.baselines.fit_huber(t.train, t.law, init=init).params


def dataset_mode(t: Task) -> tuple[float, float]:
    """Posterior mode of (log κ, γ) under a flat prior from the inner splits of one task's fit set (cached by
    dataset): one dataset's evidence for the leave-one-dataset-out prior (and for the shipped one,
    ``kappa_prior.py``)."""
    if t.dataset not in _LOG_KAPPA_MODE:
        start = _pooled_start(t)
        splits, _ = formerror.split_errors(t.train, sb.laws.get(t.law), dict.fromkeys(t.train.families, start))
        k, g = formerror.KappaPosterior.learn(splits, prior=(0.0, 1e3)).mode()
        _LOG_KAPPA_MODE[t.dataset] = (float(np.log(k)), float(g))
    return _LOG_KAPPA_MODE[t.dataset]


def first_task_per_dataset(tasks: Sequence[Task]) -> dict[str, Task]:
    """Each dataset's first task (its evidence for the priors learned across datasets)."""
    return {t.dataset: t for t in reversed(tasks)}


def prior_from(modes: Sequence[float]) -> tuple[float, float]:
    """The prior of log κ from datasets' modes of log κ: their mean and s.d., the s.d. at least 1 (so that a few
    datasets that happen to agree cannot pin a new dataset's κ)."""
    m = np.asarray(modes, float)
    return float(m.mean()), float(max(m.std(ddof=1) if len(m) > 1 else 1.0, 1.0))


def lodo_prior(other_datasets: Sequence[Task]) -> tuple[float, float]:
    """The prior of log κ from the other datasets (one task each): :func:`prior_from` their modes."""
    return prior_from([dataset_mode(t)[0] for t in first_task_per_dataset(other_datasets).values()])


def discrepancy(ctx: Context, other_datasets: Sequence[Task]) -> np.ndarray:
    """The package's calibrated predictive: ``sb.calibrate`` learns the discrepancy's scale κ and growth γ from inner
    Huber point refits of the fit set (:mod:`scalebayes.formerror`), under a log-κ prior learned from the *other*
    datasets (:func:`lodo_prior`, leave-one-dataset-out), and δ_s = κ_s·d^γ_s·z_s joins the posterior's draws."""
    post = ctx.posterior()
    prior = lodo_prior(other_datasets)
    with warnings.catch_warnings(record=True) as said:
        warnings.simplefilter("always", CalibrationWarning)
        cal = sb.calibrate(post, prior=prior)
    disc = cal.discrepancy
    ctx.info["calibration"] = {
        "prior": prior,
        "kappa_median": disc.kappa,
        "gamma_mode": disc.gamma,
        "lanes": disc.info.get("lanes"),
        "left_out": disc.info.get("left_out"),
        "warnings": [str(w.message) for w in said],
    }
    return ctx.log_draws(cal)


METHODS: dict[str, Method] = {
    "huber_bootstrap": huber_bootstrap,
    "posterior": posterior,
    "discrepancy": discrepancy,
}
