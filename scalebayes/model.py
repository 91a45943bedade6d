"""The NumPyro model: a scaling law, its hierarchy over families, and a robust likelihood on log loss.

Structure (``Spec``) is static and decides what is compiled; everything numeric (data, priors, centring) enters as
arrays, so fits of the same shape reuse one compiled program.

Per latent coordinate θ (see :mod:`scalebayes.laws`) the pooling *mode* is one of:

- ``"shared"``: one θ for every family (``pooling="complete"`` makes every latent shared);
- ``"free"``: an independent θ_f per family with the law's prior (``pooling="none"``);
- ``"marginal"`` (the default for partial pooling): θ_f ~ Normal(μ_θ, τ_θ) with μ_θ ~ the law's prior and
  τ_θ ~ LogNormal (:mod:`scalebayes.priors`), sampled as the family values θ_f *alone*: μ_θ is integrated out
  exactly (a Gaussian) and τ_θ by quadrature on a fine grid in log τ (:func:`population_logpdf`), so NUTS sees
  neither the (μ, τ) funnel nor the (μ, τ, z) ridge. μ_θ and τ_θ are drawn afterwards, exactly, from their
  conditional given each draw's θ (:func:`population_draws`);
- ``"partial"``: the same hierarchy sampled non-centred, θ_f = μ_θ + τ_θ·z_f with z_f ~ Normal(0, 1)
  (``fit(..., marginal=False)``);
- ``"centred"``: the same hierarchy sampled as θ_f ~ Normal(μ_θ, τ_θ) directly (``fit(..., centred=True)`` or
  ``centred=("alpha", ...)``). When every family pins its own θ_f, the non-centred form turns the tight θ_f into a
  curved ridge in (μ, τ, z) (θ_f = μ + τ·z_f for every f at once) that NUTS crosses with long trajectories; the
  centred form leaves θ_f nearly Gaussian but keeps the (μ, τ) funnel, which with few families and a small τ
  gives divergent transitions. With 2-3 families τ is barely identified and both forms fail (hundreds of leapfrog
  steps per iteration, or divergences: benchmarks/HIERARCHY.md); the marginal form removes μ and τ from what
  NUTS samples, which is why it is the default.

Likelihood: log L_obs ~ StudentT(ν, log L_law, σ_i) (or Normal), σ shared or one per family. With a noise trend
(``noise_trend="tokens_per_parameter"``, laws of N and D) the scale grows or shrinks with tokens per parameter,
σ_i = σ·exp(ζ·(log(D_i/N_i) − c)), c the data's mean log(D/N), ζ ~ Normal(0, ``sigma_trend`` prior scale): under-trained
runs (few tokens per parameter) scatter more around the law than long ones (benchmarks/extrapolation/DELTA_SIZING.md
"Run noise that grows as tokens per parameter fall"), and a constant σ makes intervals too narrow there and too
wide elsewhere. σ is the scale at the data's mean tokens per parameter. The trend also weighs the runs in the
law's fit (noisier runs count less), so it moves the law itself, not only its intervals; on the extrapolation suite
that helps some directions and hurts others (benchmarks/extrapolation/noise_trend/). The default for laws of N and D
is therefore the *cut* form, the same trend refitted to the residuals of a one-scale fit for new runs only
(:mod:`scalebayes.noise_refit`), which this model sees as no trend.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpyro
import numpyro.distributions as dist
from jax.scipy.special import logsumexp
from numpyro.distributions import constraints

from .errors import ModelError, UnknownNameError
from .laws import Law
from .likelihood import NAMES as LIKELIHOODS

MODES = ("shared", "marginal", "partial", "centred", "free")
#: Modes with a population (μ, τ) over families.
POOLED = ("marginal", "partial", "centred")
#: Modes that sample μ and τ as coordinates of NUTS (``"marginal"`` draws them after sampling).
SAMPLED_POPULATION = ("partial", "centred")
#: SD of log τ under its LogNormal prior (the prior's median is the ``tau`` hyper-parameter): see scalebayes.priors.
TAU_LOG_SD = 1.0
#: Quadrature over τ (``"marginal"``): nodes at g = log(τ/median)/TAU_LOG_SD in [-TAU_GRID_HALF_WIDTH, +...];
#: beyond ±7 prior SDs the LogNormal prior holds < 1e-11 of its mass.
TAU_GRID_HALF_WIDTH = 7.0
NOISE = ("shared", "family")
#: Inputs a noise trend in tokens per parameter reads (log D − log N).
TREND_INPUTS = ("N", "D")


@dataclass(frozen=True)
class Spec:
    """Static structure of a model; two fits with equal Specs and data shapes share one compiled sampler."""

    law: Law
    modes: tuple[str, ...]
    n_families: int
    likelihood: str = "student_t"
    noise: str = "shared"
    noise_trend: bool = False

    def __post_init__(self):
        if self.likelihood not in LIKELIHOODS:
            raise UnknownNameError(f"unknown likelihood {self.likelihood!r}; choose one of {LIKELIHOODS}")
        if self.noise not in NOISE:
            raise UnknownNameError(f"unknown noise {self.noise!r}; choose one of {NOISE}")
        if self.noise_trend and not has_trend_inputs(self.law):
            raise ModelError(
                f"a noise trend in tokens per parameter needs N and D; the {self.law.name!r} law reads "
                f"{list(self.law.inputs)}"
            )
        if len(self.modes) != len(self.law.latents) or any(m not in MODES for m in self.modes):
            raise ModelError(f"modes {self.modes} must give one of {MODES} per latent {self.law.latents}")

    @property
    def latents(self) -> tuple[str, ...]:
        return self.law.latents

    def mode(self, latent: str) -> str:
        return self.modes[self.latents.index(latent)]


def has_trend_inputs(law: Law) -> bool:
    """Whether ``law`` reads N and D, so that its runs have a tokens per parameter for the noise trend."""
    return all(k in law.inputs for k in TREND_INPUTS)


def tpp_centre(centre: dict) -> float:
    """c, the noise trend's centre: the fitted runs' mean log tokens per parameter, from ``centre`` the means of
    their log inputs (log N, log D): c = centre[D] − centre[N]."""
    return centre["D"] - centre["N"]


def tpp_offset(x: dict, centre: dict) -> jnp.ndarray:
    """log(D/N) − c per run, (..., n): ``x`` log inputs (log N, log D), ``centre`` their means (:func:`tpp_centre`)."""
    return (x["D"] - x["N"]) - tpp_centre(centre)


def trend_factor(zeta, t, span: tuple[float, float]) -> jnp.ndarray:
    """The noise trend's factor on σ at log(D/N) − c = ``t``: exp(ζ·t) inside ``span`` = (lo, hi), the fitted runs'
    range of t, and beyond it never below its value at the nearer edge (broadcasting ``zeta`` against ``t``).

    Why a floor: a fitted trend says how the scatter changes across the fitted runs' tokens per parameter; beyond
    them, a trend that keeps *shrinking* the noise (e.g. ζ < 0 towards heavily over-trained runs) would narrow a new
    run's interval on no evidence at all, while one that keeps growing it only errs on the wide side (and is what
    makes the largest models of small budgets, below every fitted D/N, honest: DELTA_SIZING.md, ``tpp_noise``).
    ``jax.numpy``, so the jitted planners use it; NumPy arrays are accepted."""
    edge = jnp.clip(t, span[0], span[1])
    return jnp.exp(jnp.maximum(zeta * t, zeta * edge))


class RunNoise(NamedTuple):
    """Run-to-run noise of log loss per posterior draw: Student-t(ν_s) of scale σ_s·exp(ζ_s·(log(D/N) − c)), floored
    beyond the fitted runs' tokens per parameter at its value at the nearer edge (:func:`trend_factor`).

    ``sigma`` (S,): scale at the fitted data's mean log tokens per parameter c = ``centre`` (nats); ``nu`` (S,)
    (inf: Normal); ``trend`` (S,): ζ_s, the change of log σ per nat of log(D/N) (0 without a trend); ``span``: the
    fitted runs' (min, max) of log(D/N) − c."""

    sigma: jnp.ndarray
    nu: jnp.ndarray
    trend: jnp.ndarray
    centre: float
    span: tuple[float, float] = (-math.inf, math.inf)

    def scale(self, log_N, log_D) -> jnp.ndarray:
        """Noise scale (S, P) at runs of log N, log D (P,) (natural logs of parameters and tokens)."""
        t = jnp.asarray(log_D) - jnp.asarray(log_N) - self.centre
        return jnp.asarray(self.sigma)[:, None] * trend_factor(jnp.asarray(self.trend)[:, None], t[None, :], self.span)


def pooling_modes(
    law: Law,
    pooling: str,
    n_families: int,
    shared: tuple[str, ...] = (),
    free: tuple[str, ...] = (),
    centred: bool | tuple[str, ...] = False,
    marginal: bool = True,
) -> tuple[str, ...]:
    """Per-latent pooling modes from the user's options. ``shared``/``free`` accept latent or parameter names;
    ``centred`` (True, or latent/parameter names) samples those partially pooled latents in centred form (mode
    ``"centred"``); the others are ``"marginal"`` (``marginal=True``, the default) or non-centred ``"partial"``."""
    if pooling not in ("complete", "partial", "none"):
        raise UnknownNameError(f"unknown pooling {pooling!r}; choose 'complete', 'partial' or 'none'")
    pooled = "marginal" if marginal else "partial"
    base = {"complete": "shared", "partial": pooled, "none": "free"}[pooling]
    if n_families == 1:
        base = "shared"
    modes = dict.fromkeys(law.latents, base)
    for names, mode in ((shared, "shared"), (free, "free")):
        for name in names:
            z = latent_for(law, name)
            modes[z] = mode if n_families > 1 else "shared"
    if isinstance(centred, str):
        centred = (centred,)
    chosen = set(law.latents) if centred is True else {latent_for(law, n) for n in (centred or ())}
    return tuple("centred" if modes[z] == pooled and z in chosen else modes[z] for z in law.latents)


def latent_for(law: Law, name: str) -> str:
    """The latent coordinate of ``law`` that a user's parameter name means (``"alpha"``, ``"A"``, ``"log_E"``, ...);
    raises UnknownNameError naming the law's parameters and latents."""
    if name in law.latents:
        return name
    if name in law.latent_of:  # published params whose latent is named otherwise (e.g. Kaplan's N_c -> logL_N_c)
        return law.latent_of[name]
    for z in law.latents:
        if z.startswith("log_") and z[4:] == name:
            return z
    # published params whose latent has another name (e.g. A -> log_A_c)
    for z in law.latents:
        if z.startswith(f"log_{name}_"):
            return z
    raise UnknownNameError(
        f"law {law.name!r} has no parameter {name!r}; parameters {law.params}, latents {law.latents}"
    )


def population_sites(spec: Spec) -> tuple[str, ...]:
    """Names of the population quantities (``mu_<latent>``, ``tau_<latent>``) of the partially pooled latents
    (sampled by NUTS, or drawn afterwards by :func:`population_draws` for ``"marginal"`` latents)."""
    return tuple(
        f"{h}_{z}" for z, m in zip(spec.latents, spec.modes, strict=True) if m in POOLED for h in ("mu", "tau")
    )


def family_latents(spec: Spec, site: dict, n_families: int | None = None) -> dict[str, jnp.ndarray]:
    """Latent values per family, ``{latent: (..., F)}``, from sampled sites (with any leading sample dims)."""
    F = spec.n_families if n_families is None else n_families
    out = {}
    for z, mode in zip(spec.latents, spec.modes, strict=True):
        if mode == "shared":
            v = site[z]
            out[z] = jnp.broadcast_to(v[..., None], (*jnp.shape(v), F))
        elif mode in ("free", "centred", "marginal"):
            out[z] = site[z]
        else:
            out[z] = site[f"mu_{z}"][..., None] + site[f"tau_{z}"][..., None] * site[f"z_{z}"]
    return out


def model(spec: Spec, x, log_y, fam, mask, hyper):
    """NumPyro model.

    Args:
        x: dict of log inputs (natural log of N, D, C or U), each shape (n,).
        log_y: log observed loss, shape (n,); ``None`` samples from the prior predictive.
        fam: family index per run, int shape (n,).
        mask: each real run's likelihood weight (1, or less for checkpoints of one run: :mod:`scalebayes.checkpoints`),
            0.0 for padding, shape (n,).
        hyper: dict with ``loc``, ``scale``, ``tau`` (each (K,), one per latent; ``tau`` is the median of τ's
            LogNormal prior), ``sigma`` and ``nu`` (2,) prior parameters, ``sigma_trend`` (the noise trend's
            prior scale) and ``centre`` (dict of mean log inputs).
    """
    F = spec.n_families
    site = {}
    for k, (z, mode) in enumerate(zip(spec.latents, spec.modes, strict=True)):
        loc, scale = hyper["loc"][k], hyper["scale"][k]
        if mode == "shared":
            site[z] = numpyro.sample(z, dist.Normal(loc, scale))
        elif mode == "free":
            site[z] = numpyro.sample(z, dist.Normal(loc, scale).expand([F]).to_event(1))
        elif mode == "marginal":
            site[z] = numpyro.sample(z, PopulationMarginal(loc, scale, hyper["tau"][k], F))
        else:
            site[f"mu_{z}"] = numpyro.sample(f"mu_{z}", dist.Normal(loc, scale))
            tau_prior = dist.LogNormal(jnp.log(hyper["tau"][k]), TAU_LOG_SD)
            site[f"tau_{z}"] = numpyro.sample(f"tau_{z}", tau_prior)
            if mode == "centred":
                prior = dist.Normal(site[f"mu_{z}"], site[f"tau_{z}"]).expand([F]).to_event(1)
                site[z] = numpyro.sample(z, prior)
            else:
                site[f"z_{z}"] = numpyro.sample(f"z_{z}", dist.Normal(0.0, 1.0).expand([F]).to_event(1))
    lat = family_latents(spec, site)
    params = spec.law.to_params({z: v[fam] for z, v in lat.items()}, hyper["centre"])
    mu = spec.law.log_mean(params, x)
    if spec.noise == "family":
        sigma = numpyro.sample("sigma", dist.HalfNormal(hyper["sigma"]).expand([F]).to_event(1))[fam]
    else:
        sigma = numpyro.sample("sigma", dist.HalfNormal(hyper["sigma"]))
    if spec.noise_trend:
        zeta = numpyro.sample("sigma_trend", dist.Normal(0.0, hyper["sigma_trend"]))
        sigma = sigma * jnp.exp(zeta * tpp_offset(x, hyper["centre"]))
    if spec.likelihood == "student_t":
        nu = numpyro.sample("nu", dist.Gamma(hyper["nu"][0], hyper["nu"][1]))
        lik = dist.StudentT(nu, mu, sigma)
    else:
        lik = dist.Normal(mu, sigma)
    with numpyro.handlers.mask(mask=mask > 0), numpyro.handlers.scale(scale=jnp.where(mask > 0, mask, 1.0)):
        numpyro.sample("obs", lik, obs=log_y)


def noise_params(spec: Spec, site: dict) -> dict[str, jnp.ndarray]:
    """``sigma`` (..., F) per family, ``nu`` (...,) (inf for the Gaussian likelihood) and ``sigma_trend`` (...,)
    (0 without a noise trend) from sampled sites."""
    sigma = site["sigma"]
    if spec.noise == "shared":
        sigma = jnp.broadcast_to(sigma[..., None], (*jnp.shape(sigma), spec.n_families))
    lead = jnp.shape(sigma)[:-1]
    nu = site["nu"] if spec.likelihood == "student_t" else jnp.full(lead, jnp.inf)
    zeta = site["sigma_trend"] if spec.noise_trend else jnp.zeros(lead)
    return {"sigma": sigma, "nu": nu, "sigma_trend": zeta}


# ---------------------------------------------------------------------------------------------------- marginal form
def tau_grid(n_families: int) -> tuple[jnp.ndarray, float]:
    """Quadrature nodes g (n,) in prior SDs of log τ, and their spacing, for ``n_families`` families.

    Given the family values, log τ has a conditional SD of about 1/√(2(F−1)) (from the (F−1)·log τ + SS/(2τ²)
    term), so the spacing is a third of that, and at most 0.15 prior SDs for the prior's own width. The integrand
    is analytic in a strip of half-width π/4 around real log τ (the exp(−SS/(2τ²)) factor), so the trapezoid
    rule's error falls like exp(−π²/(2h)): ~1e-12 relative at h = 0.15 (at h = 0.29 the test against brute-force
    integration measured 5e-6), i.e. the quadrature is the model to rounding, not an approximation that shows.
    Nodes: 95 for 2-3 families, 159 for 8, 417 for 50.
    """
    width = 1.0 / (TAU_LOG_SD * math.sqrt(2.0 * max(n_families - 1, 1)))
    h = min(0.15, width / 3.0)
    n = 2 * math.ceil(TAU_GRID_HALF_WIDTH / h) + 1
    return jnp.linspace(-TAU_GRID_HALF_WIDTH, TAU_GRID_HALF_WIDTH, n), 2.0 * TAU_GRID_HALF_WIDTH / (n - 1)


def _grid_terms(theta, loc, scale, tau_median):
    """Per quadrature node: log prior weight + log N(θ; loc·1, τ²I + scale²·11ᵀ) (…, n), and log τ (…, n).

    θ (…, F); ``loc``, ``scale``, ``tau_median`` broadcast against θ's leading axes (…), so several latents go
    through in one batched computation. μ ~ Normal(loc, scale) is integrated out exactly: with a = τ², b = scale²,
    d = θ − loc, log N = −F/2·log 2π − (F−1)/2·log a − ½·log(a + F·b) − ½·SS/a − ½·F·d̄²/(a + F·b),
    SS = Σ(d_f − d̄)², written with SS (not Σd² − (Σd)²/F) so a τ much smaller than the prior scale loses no
    digits."""
    F = theta.shape[-1]
    g, h = tau_grid(F)
    loc, scale = jnp.asarray(loc)[..., None], jnp.asarray(scale)[..., None]
    log_tau = jnp.log(jnp.asarray(tau_median))[..., None] + TAU_LOG_SD * g
    # Per node, what does not depend on θ (computed once per gradient, not once per chain, as the sampler's
    # chains share the hyper-parameters), so that θ enters through two multiply-adds and the logsumexp's exp.
    a = jnp.exp(2.0 * log_tau)
    ab = a + F * scale * scale
    log_w = -0.5 * g * g - 0.5 * math.log(2.0 * math.pi) + math.log(h)  # Normal(0, 1) density of g, times h
    base = log_w - 0.5 * F * math.log(2.0 * math.pi) - (F - 1) * log_tau - 0.5 * jnp.log(ab)
    # The barrier keeps XLA from fusing these into the per-chain loop (it would redo the exp and log per chain).
    base, c_ss, c_bar = jax.lax.optimization_barrier((base, 0.5 / a, 0.5 * F / ab))
    d = theta - loc
    dbar = jnp.mean(d, axis=-1, keepdims=True)
    ss = jnp.sum((d - dbar) ** 2, axis=-1, keepdims=True)
    return base - ss * c_ss - (dbar * dbar) * c_bar, log_tau


def population_logpdf(theta, loc, scale, tau_median):
    """log p(θ) (…,) of family values θ (…, F) under θ_f ~ Normal(μ, τ), μ ~ Normal(loc, scale),
    τ ~ LogNormal(log tau_median, TAU_LOG_SD), with μ and τ integrated out (:func:`tau_grid`); ``loc``, ``scale``
    and ``tau_median`` broadcast against (…)."""
    terms, _ = _grid_terms(theta, loc, scale, tau_median)
    return logsumexp(terms, axis=-1)


class PopulationMarginal(dist.Distribution):
    """The family values (F,) of one partially pooled latent with μ and τ integrated out (mode ``"marginal"``).

    ``log_prob`` is :func:`population_logpdf`; ``sample`` draws τ, μ and then θ, so prior predictive simulation
    (SBC) sees the same hierarchy as the other modes."""

    support = constraints.real_vector

    def __init__(self, loc, scale, tau_median, n_families: int, *, validate_args=None):
        self.loc, self.scale, self.tau_median = loc, scale, tau_median
        super().__init__(batch_shape=(), event_shape=(int(n_families),), validate_args=validate_args)

    def sample(self, key, sample_shape=()):
        k_tau, k_mu, k_theta = jax.random.split(key, 3)
        shape = tuple(sample_shape)
        tau = self.tau_median * jnp.exp(TAU_LOG_SD * jax.random.normal(k_tau, shape))
        mu = self.loc + self.scale * jax.random.normal(k_mu, shape)
        return mu[..., None] + tau[..., None] * jax.random.normal(k_theta, shape + self.event_shape)

    def log_prob(self, value):
        return population_logpdf(value, self.loc, self.scale, self.tau_median)


def population_draws(spec: Spec, site: dict, hyper: dict, key) -> dict[str, jnp.ndarray]:
    """``mu_<latent>`` and ``tau_<latent>`` (…) of the ``"marginal"`` latents, one draw from their
    conditional given each draw's family values ``site[latent]`` (…, F): log τ from the quadrature's posterior
    weights, spread uniformly over the chosen node's cell (at most a third of log τ's conditional SD wide), then
    μ | τ, θ ~ Normal (conjugate)."""
    out = {}
    keys = jax.random.split(key, len(spec.latents))
    for k, (z, mode) in enumerate(zip(spec.latents, spec.modes, strict=True)):
        if mode != "marginal":
            continue
        theta = jnp.asarray(site[z])
        loc, scale = hyper["loc"][k], hyper["scale"][k]
        terms, log_tau = _grid_terms(theta, loc, scale, hyper["tau"][k])
        k_node, k_cell, k_mu = jax.random.split(keys[k], 3)
        node = jax.random.categorical(k_node, terms, axis=-1)
        h = TAU_LOG_SD * tau_grid(theta.shape[-1])[1]
        tau = jnp.exp(log_tau[node] + h * jax.random.uniform(k_cell, node.shape, minval=-0.5, maxval=0.5))
        prec = theta.shape[-1] / tau**2 + 1.0 / scale**2
        mean = (jnp.sum(theta, axis=-1) / tau**2 + loc / scale**2) / prec
        out[f"mu_{z}"] = mean + jax.random.normal(k_mu, mean.shape) / jnp.sqrt(prec)
        out[f"tau_{z}"] = tau
    return out
