"""Accuracy as a function of loss: the second step of a two-step forecast (compute → loss → accuracy).

For one benchmark with chance accuracy ``floor`` and a model whose loss is L nats (on the validation set the loss law
was fitted to), with ℓ = L − L0 (L0 the fitted data's median loss), in the published convention

    acc = floor + (1 − floor) · u · sigmoid(slope · (mid − ℓ))

- ``floor``: the benchmark's chance accuracy, fixed (from the number of choices), so the law never goes below it;
  the ceiling is floor + (1 − floor)·u (some questions are wrong or ambiguous, so not always 1).
- ``slope`` per nat of loss (accuracy rises as loss falls); ``mid`` nats from L0: the loss at which the model is
  half-way from chance to its ceiling.

Sampled anchored at L0, where the data pin the law nearly linearly (``mid``, ``slope`` and ``u`` trade along a
curved ridge when the data cover part of the sigmoid: fitted that way, OLMo's PIQA and ARC-Easy fits failed the
diagnostics with R-hat up to 1.015 and divergences):

- ``q0`` ~ Beta(1, 1): the above-chance fraction q = (acc − floor)/(1 − floor) at L0;
- ``h`` ~ LogNormal(log 2, 1): the logit slope at L0 per nat, −dq/dL = h·q0·(1 − q0) (``slope`` when u = 1);
- ``v`` ~ Beta(2, 1): the ceiling's share of the headroom above q0, u = q0 + (1 − q0)·v (what only the data's
  curvature tells);

and (mid, slope, u) follow (:func:`published`); the draws hold both.

Likelihood on the above-chance scale q, mean μ = u·sigmoid(...): beta-binomial over ``questions`` (k = round(q·n));
the over-dispersion od = 1/φ ~ HalfNormal(0.02) carries the protocol noise beyond binomial sampling. Sampled as od,
not φ: checkpoints of one run, scored on the same questions, are often no noisier than binomial (φ → ∞, od → 0, where
the prior is smooth and NUTS does not stall), while scores across model families have φ ~ 100 (od 0.01). Without a
question count (a score that is a probability mass or an average over tasks), q is read as k of
:data:`PSEUDO_QUESTIONS` = 1000 pseudo-questions: binomial noise of s.d. ≤ 0.016, and od adds any more the data show.
A Beta likelihood on q was tried and failed SBC (the slope's ranks piled at the top: scores at chance, q = 0, must be
clipped for a Beta density, and the clip pulls the slope down); a count of 0 is an exact outcome of the
beta-binomial. Scores below chance are set to chance and counted (``below_chance``): nothing is dropped.

This is the form used by the OLMo model ladder's second step (Bhagia et al. 2024) with priors and a bounded
likelihood. :mod:`scalebayes.twostep` pushes a loss posterior's predictive draws through it.

Sampling: NumPyro's NUTS on this NumPyro model (as :mod:`scalebayes.downstream`); the verdict on R-hat, ESS and
divergences is the package's (:func:`scalebayes.diagnostics.summarise`). :func:`sbc` checks the law's calibration by
simulation from its priors.
"""

from __future__ import annotations

import contextlib
import functools
from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import pandas as pd
from numpyro.infer import MCMC, NUTS, Predictive

from .diagnostics import Diagnostics, summarise_chains, warn_if_failed
from .errors import DataError, ModelError
from .precision import ensure_float64
from .predict import qcol

#: Sampled parameters (anchored at the median loss L0, see the module docstring) and the published convention.
SAMPLED = ("q0", "h", "v", "od")
PUBLISHED = ("mid", "slope", "u")
PARAMS = (*PUBLISHED, "od", "q0", "h", "v")
#: Scale of the half-normal prior of the over-dispersion od = 1/φ.
OD_SCALE = 0.02
QUANTILES = (0.05, 0.5, 0.95)
#: Question count used when a benchmark's is unknown (see the module docstring).
PSEUDO_QUESTIONS = 1000


def mean_fraction(loss_c, slope, mid, u):
    """Above-chance fraction u·sigmoid(slope·(mid − ℓ)) at centred loss ``loss_c`` = L − L0 (nats)."""
    return u * jax.nn.sigmoid(slope * (mid - loss_c))


def published(q0, h, v):
    """(mid, slope, u) of the published convention from the anchored parameters (module docstring): u = q0 + (1 −
    q0)·v; the sigmoid at L0 is s = q0/u, so 1 − s = (1 − q0)·v/u; slope = h·u/v makes −dq/dL at L0 equal to
    h·q0·(1 − q0); mid = logit(s)/slope."""
    u = q0 + (1.0 - q0) * v
    slope = h * u / v
    return (jnp.log(q0) - jnp.log1p(-q0) - jnp.log(v)) / slope, slope, u


def model(loss_c, n, k=None, *, n_sims: int | None = None):
    """NumPyro model: ``loss_c`` (P,) centred losses (nats), ``n`` (P,) question counts, ``k`` (P,) the observed
    above-chance counts.

    ``n_sims``: ``k`` is (n_sims, P), independent datasets at the same losses, each with its own parameters (shape
    (n_sims, 1)); their joint posterior is the product of the single ones, so one NUTS run fits them all (the fast
    SBC of :func:`sbc`)."""
    with numpyro.plate("sim", n_sims, dim=-2) if n_sims else contextlib.nullcontext():
        q0 = numpyro.sample("q0", dist.Beta(1.0, 1.0))
        h = numpyro.sample("h", dist.LogNormal(jnp.log(2.0), 1.0))
        v = numpyro.sample("v", dist.Beta(2.0, 1.0))
        od = numpyro.sample("od", dist.HalfNormal(OD_SCALE))
        mid, slope, u = published(q0, h, v)
        numpyro.deterministic("mid", mid)
        numpyro.deterministic("slope", slope)
        numpyro.deterministic("u", u)
        phi = numpyro.deterministic("phi", 1.0 / (od + 1e-6))  # precision; od → 0 is the binomial limit
        mu = jnp.clip(mean_fraction(loss_c, slope, mid, u), 1e-6, 1.0 - 1e-6)
        with numpyro.plate("obs", loss_c.shape[0]):
            numpyro.sample("k", dist.BetaBinomial(mu * phi, (1.0 - mu) * phi, n), obs=k)


def sampler(
    n_sims: int | None = None,
    *,
    chains: int = 4,
    warmup: int = 1000,
    draws: int = 1000,
    target_accept: float = 0.9,
    max_tree_depth: int = 10,
) -> MCMC:
    """A NumPyro MCMC over :func:`model`; ``jit_model_args`` so refits on new data of the same size reuse its
    compiled program (the SBC loop)."""
    kernel = NUTS(
        functools.partial(model, n_sims=n_sims),
        target_accept_prob=target_accept,
        max_tree_depth=max_tree_depth,
        dense_mass=n_sims is None,  # q0, h and v stay correlated (the ceiling v against the slope h)
    )
    return MCMC(
        kernel,
        num_warmup=warmup,
        num_samples=draws,
        num_chains=chains,
        chain_method="sequential",
        progress_bar=False,
        jit_model_args=True,
    )


@dataclass(frozen=True)
class Observations:
    """The arrays of one fit: centred losses, question counts, the observed counts/fractions, and the centre."""

    loss_c: np.ndarray
    n: np.ndarray
    q: np.ndarray
    loss0: float
    below_chance: int


def observations(loss, accuracy, *, floor: float, questions: int | None) -> Observations:
    """Validate (loss nats > 0, accuracy in [0, 1], same length, finite) and build the arrays of :func:`model`."""
    L, a = np.asarray(loss, dtype=float).ravel(), np.asarray(accuracy, dtype=float).ravel()
    if L.shape != a.shape or L.size < 3:
        raise DataError(f"loss and accuracy need equal lengths ≥ 3, got {L.size} and {a.size}", column="loss")
    for name, v, ok in (("loss", L, L > 0), ("accuracy", a, (a >= 0) & (a <= 1))):
        bad = np.flatnonzero(~(np.isfinite(v) & ok))
        if bad.size:
            raise DataError(
                f"{name} must be finite and {'> 0' if name == 'loss' else 'in [0, 1]'}; bad rows {bad[:10].tolist()}",
                column=name,
                rows=bad.tolist(),
            )
    if not 0.0 <= floor < 1.0:
        raise ModelError(f"floor (chance accuracy) must be in [0, 1), got {floor!r}")
    if questions is not None and questions < 1:
        raise ModelError(f"questions must be a positive count or None, got {questions!r}")
    q = np.clip((a - floor) / (1.0 - floor), 0.0, 1.0)
    loss0 = float(np.median(L))
    n = float(questions or PSEUDO_QUESTIONS)
    obs = np.round(q * n)
    n = np.full_like(q, n)
    return Observations(L - loss0, n, obs, loss0, int((a < floor).sum()))


def _diagnose(samples: dict, extra: dict, max_tree_depth: int) -> Diagnostics:
    labels, rows = [], []
    for p in PARAMS:
        v = np.asarray(samples[p], dtype=float)
        v = v.reshape(*v.shape[:2], -1)  # (chains, draws, k): k = 1, or one per simulation of a joint SBC fit
        labels += [p] if v.shape[-1] == 1 else [f"{p}[{i}]" for i in range(v.shape[-1])]
        rows.append(np.moveaxis(v, -1, 0))
    return summarise_chains(labels, rows, extra, max_tree_depth)


def run(mcmc: MCMC, obs: Observations, seed: int, max_tree_depth: int = 10) -> tuple[dict, Diagnostics]:
    """Run ``mcmc`` (from :func:`sampler`, with ``max_tree_depth``) on ``obs``: draws by chain
    {name: (chains, draws)} and diagnostics."""
    mcmc.run(
        jax.random.PRNGKey(seed),
        jnp.asarray(obs.loss_c),
        jnp.asarray(obs.n),
        jnp.asarray(obs.q),
        extra_fields=("diverging", "num_steps"),
    )
    samples = {k: np.asarray(v) for k, v in mcmc.get_samples(group_by_chain=True).items()}
    return samples, _diagnose(samples, mcmc.get_extra_fields(group_by_chain=True), max_tree_depth)


def fit(
    loss,
    accuracy,
    *,
    floor: float,
    questions: int | None = None,
    seed: int,
    chains: int = 4,
    warmup: int = 1000,
    draws: int = 1000,
    target_accept: float = 0.9,
    max_tree_depth: int = 10,
) -> AccuracyLaw:
    """Fit accuracy against loss on one benchmark with NumPyro's NUTS.

    Args:
        loss: (P,) losses in nats, on the validation set whose loss law the forecast will use.
        accuracy: (P,) scores in [0, 1] of the same models (or checkpoints).
        floor: the benchmark's chance accuracy (0.25 for 4-way multiple choice, 0.5 for binary).
        questions: the benchmark's question count, or None (the score read as a count of
            :data:`PSEUDO_QUESTIONS`).
        seed: seed of the sampler.

    Returns an :class:`AccuracyLaw`; warns (:class:`~scalebayes.errors.SamplingWarning`) when R-hat > 1.01, ESS <
    400 or any transition diverged.
    """
    ensure_float64("scalebayes.loss_to_accuracy.fit")
    obs = observations(loss, accuracy, floor=floor, questions=questions)
    mcmc = sampler(
        chains=chains,
        warmup=warmup,
        draws=draws,
        target_accept=target_accept,
        max_tree_depth=max_tree_depth,
    )
    samples, diag = run(mcmc, obs, seed, max_tree_depth)
    warn_if_failed(diag, "accuracy-vs-loss fit")
    flat = {k: v.reshape(-1) for k, v in samples.items()}
    L = obs.loss_c + obs.loss0
    return AccuracyLaw(floor, questions, obs.loss0, (float(L.min()), float(L.max())), flat, diag, obs.below_chance)


@dataclass(frozen=True)
class AccuracyLaw:
    """Posterior of the accuracy-vs-loss law on one benchmark: S draws of the published ``mid``, ``slope``, ``u``,
    of ``od`` and the precision ``phi`` = 1/od, and of the sampled (anchored) ``q0``, ``h``, ``v``.

    ``loss0``: the centre (nats); ``loss_range``: the fitted losses' (min, max), nats; ``below_chance``: scores
    that were below ``floor`` and were set to it."""

    floor: float
    questions: int | None
    loss0: float
    loss_range: tuple[float, float]
    draws: dict
    diagnostics: Diagnostics
    below_chance: int = 0

    @property
    def n_samples(self) -> int:
        return int(self.draws["mid"].shape[0])

    def accuracy_draws(self, loss, *, seed: int, noise: bool = True) -> np.ndarray:
        """Accuracy draws at losses ``loss`` (nats), always in [floor, 1].

        ``loss`` (P,): fixed losses, every law draw used: (S, P). ``loss`` (S_L, P): loss draws (e.g. a loss
        posterior's predictive); row s is paired with a law draw picked at random (``seed``), so the loss
        uncertainty and the law's are both carried: (S_L, P). ``noise=True``: the score a model would report
        (beta-binomial over the questions, or the pseudo-questions without a count); ``False``: the law's mean.
        """
        L = np.asarray(loss, dtype=float)
        rng = np.random.default_rng(seed)
        if L.ndim == 1:
            idx, L = np.arange(self.n_samples), np.broadcast_to(L, (self.n_samples, L.size))
        elif L.ndim == 2:
            idx = rng.integers(0, self.n_samples, L.shape[0])
        else:
            raise DataError(f"loss must be (P,) or (S, P), got shape {L.shape}", column="loss")
        if not np.all(np.isfinite(L)):
            raise DataError("loss draws must be finite", column="loss")
        s = {k: v[idx][:, None] for k, v in self.draws.items()}
        mu = np.asarray(mean_fraction(L - self.loss0, s["slope"], s["mid"], s["u"]))
        if noise:
            mu = np.clip(mu, 1e-9, 1 - 1e-9)
            p = rng.beta(mu * s["phi"], (1 - mu) * s["phi"])
            n = int(self.questions or PSEUDO_QUESTIONS)
            mu = rng.binomial(n, p) / n
        return self.floor + (1.0 - self.floor) * mu

    def predict(self, loss, *, quantiles=QUANTILES, seed: int = 0, noise: bool = True) -> pd.DataFrame:
        """Quantiles and mean of the accuracy at each fixed loss in ``loss`` (nats); one row per loss."""
        L = np.atleast_1d(np.asarray(loss, dtype=float))
        a = self.accuracy_draws(L, seed=seed, noise=noise)
        out = pd.DataFrame({"loss": L, "mean": a.mean(axis=0)})
        for q in quantiles:
            out[qcol(q)] = np.quantile(a, q, axis=0)
        return out


# ----------------------------------------------------------------------------------------------- SBC
def simulate(n_sims: int, loss_c, *, questions: int | None, seed: int) -> dict:
    """Draws from the prior predictive of :func:`model` at centred losses ``loss_c`` (P,): parameters (n_sims,)
    and observations ``obs`` (n_sims, P), counts of ``questions`` (None: :data:`PSEUDO_QUESTIONS`)."""
    loss_c = jnp.asarray(loss_c, dtype=float)
    n = jnp.full(
        loss_c.shape, questions or PSEUDO_QUESTIONS, dtype=int
    )  # integer: NumPyro samples binomials of int counts
    prior = Predictive(model, num_samples=n_sims)
    out = {k: np.asarray(v) for k, v in prior(jax.random.PRNGKey(seed), loss_c, n).items()}
    out["obs"] = out.pop("k")
    return out


def sbc(
    n_sims: int = 100,
    *,
    n_obs: int = 30,
    questions: int | None = 1000,
    joint: bool = False,
    thin: int = 10,
    seed: int = 0,
    chains: int = 1,
    warmup: int = 300,
    draws: int = 990,
) -> dict:
    """Simulation-based calibration (Talts et al. 2018) of the accuracy-vs-loss law.

    ``n_sims`` datasets of ``n_obs`` models at centred losses evenly spread over [−1.5, 1.5] nats are drawn from the
    prior predictive and fitted; the rank of each true parameter among every ``thin``-th draw (L = chains·draws/thin
    draws, ranks 0…L) is recorded. A calibrated model and sampler give uniform ranks.

    ``joint=False``: one NUTS fit per dataset, as :func:`fit` does (NumPyro compiles its sampling loop at every run,
    a fixed cost per fit). ``joint=True``: every dataset in one NUTS run over their product posterior
    (``model(..., n_sims=...)``): the same marginal posteriors, one compilation, but one step size and tree depth for
    all, so it checks the model and NUTS on it less like a user's fit does; the fast version for tests.

    Returns {"ranks": (n_sims, 7) int, one column per :data:`PARAMS` (the published (mid, slope, u), od and the
    sampled q0, h, v), "L": int, "p_values": {param: χ² p-value of the ranks in min(10, L+1) equal bins,
    Bonferroni-adjusted over the 7 columns}, "divergent": fits with any divergence, "params": PARAMS}.
    """
    ensure_float64("scalebayes.loss_to_accuracy.sbc")
    loss_c = np.linspace(-1.5, 1.5, n_obs)
    sims = simulate(n_sims, loss_c, questions=questions, seed=seed)
    n = np.full(n_obs, float(questions or PSEUDO_QUESTIONS))
    kw = dict(chains=chains, warmup=warmup, draws=draws)
    if joint:
        obs = Observations(loss_c, n, sims["obs"], 0.0, 0)
        samples, diag = run(sampler(n_sims, **kw), obs, seed + 1)
        per_sim, diags = [{p: samples[p][..., i, 0] for p in PARAMS} for i in range(n_sims)], [diag]
    else:
        mcmc = sampler(**kw)
        fits = [run(mcmc, Observations(loss_c, n, sims["obs"][i], 0.0, 0), seed + 1 + i) for i in range(n_sims)]
        per_sim, diags = [f[0] for f in fits], [f[1] for f in fits]
    ranks = np.array(
        [
            [int((np.asarray(d[p]).reshape(-1)[::thin] < sims[p][i]).sum()) for p in PARAMS]
            for i, d in enumerate(per_sim)
        ]
    )
    L = len(range(0, chains * draws, thin))
    divergent = sum(int(d.divergences > 0) for d in diags)
    return {"ranks": ranks, "L": L, "p_values": rank_uniformity(ranks, L), "divergent": divergent, "params": PARAMS}


def rank_uniformity(ranks: np.ndarray, L: int, bins: int = 10) -> dict:
    """χ² p-value per column of ``ranks`` (values 0…L) against the uniform, in ``bins`` = min(bins, L+1) bins of
    equal width in rank (L+1 divisible by bins), Bonferroni-adjusted over the columns."""
    bins = min(bins, L + 1)
    if (L + 1) % bins:
        raise ModelError(f"L + 1 = {L + 1} rank values do not split into {bins} equal bins")
    # lazily: scipy.stats (also under arviz_stats) is a heavy import, not needed to start
    from scipy import stats

    out = {}
    for j, p in enumerate(PARAMS[: ranks.shape[1]]):
        counts = np.bincount(ranks[:, j] * bins // (L + 1), minlength=bins)
        out[p] = min(1.0, float(stats.chisquare(counts).pvalue) * ranks.shape[1])
    return out
