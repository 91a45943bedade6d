"""The NumPyro model: a scaling law, its hierarchy over families, and a robust likelihood on log loss.

Structure (``Spec``) is static and decides what is compiled; everything numeric (data, priors, centring) enters as
arrays, so fits of the same shape reuse one compiled program.

Per latent coordinate θ (see :mod:`scalebayes.laws`) the pooling *mode* is one of:

- ``"shared"``: one θ for every family (``pooling="complete"`` makes every latent shared);
- ``"free"``: an independent θ_f per family with the law's prior (``pooling="none"``);
- ``"partial"``: θ_f = μ_θ + τ_θ·z_f with z_f ~ Normal(0, 1) (non-centred, so few-run families do not create
  a funnel), μ_θ with the law's prior and τ_θ ~ HalfNormal;
- ``"centred"``: the same hierarchy sampled as θ_f ~ Normal(μ_θ, τ_θ) directly (``fit(..., centred=True)`` or
  ``centred=("alpha", ...)``). When every family pins its own θ_f, the non-centred form turns the tight θ_f into a
  curved ridge in (μ, τ, z) (θ_f = μ + τ·z_f for every f at once) that NUTS crosses with long trajectories; the
  centred form leaves θ_f nearly Gaussian but keeps the (μ, τ) funnel, which with few families and a small τ
  gives divergent transitions (measurements in :func:`scalebayes.fit`'s docstring).

Likelihood: log L_obs ~ StudentT(ν, log L_law, σ) (or Normal), σ shared or one per family.
"""

from __future__ import annotations

from dataclasses import dataclass

import jax.numpy as jnp
import numpyro
import numpyro.distributions as dist

from .errors import ModelError, UnknownNameError
from .laws import Law
from .likelihood import NAMES as LIKELIHOODS

MODES = ("shared", "partial", "centred", "free")
#: Modes with a population (μ, τ) over families.
POOLED = ("partial", "centred")
NOISE = ("shared", "family")


@dataclass(frozen=True)
class Spec:
    """Static structure of a model; two fits with equal Specs and data shapes share one compiled sampler."""

    law: Law
    modes: tuple[str, ...]
    n_families: int
    likelihood: str = "student_t"
    noise: str = "shared"

    def __post_init__(self):
        if self.likelihood not in LIKELIHOODS:
            raise UnknownNameError(f"unknown likelihood {self.likelihood!r}; choose one of {LIKELIHOODS}")
        if self.noise not in NOISE:
            raise UnknownNameError(f"unknown noise {self.noise!r}; choose one of {NOISE}")
        if len(self.modes) != len(self.law.latents) or any(m not in MODES for m in self.modes):
            raise ModelError(f"modes {self.modes} must give one of {MODES} per latent {self.law.latents}")

    @property
    def latents(self) -> tuple[str, ...]:
        return self.law.latents

    def mode(self, latent: str) -> str:
        return self.modes[self.latents.index(latent)]


def pooling_modes(
    law: Law,
    pooling: str,
    n_families: int,
    shared: tuple[str, ...] = (),
    free: tuple[str, ...] = (),
    centred: bool | tuple[str, ...] = False,
) -> tuple[str, ...]:
    """Per-latent pooling modes from the user's options. ``shared``/``free`` accept latent or parameter names;
    ``centred`` (True, or latent/parameter names) samples those partially pooled latents in centred form (mode
    ``"centred"``)."""
    if pooling not in ("complete", "partial", "none"):
        raise UnknownNameError(f"unknown pooling {pooling!r}; choose 'complete', 'partial' or 'none'")
    base = {"complete": "shared", "partial": "partial", "none": "free"}[pooling]
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
    return tuple("centred" if modes[z] == "partial" and z in chosen else modes[z] for z in law.latents)


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
    """Names of the population sites (``mu_<latent>``, ``tau_<latent>``) of the partially pooled latents."""
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
        elif mode in ("free", "centred"):
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
        mask: 1.0 for real runs, 0.0 for padding, shape (n,).
        hyper: dict with ``loc``, ``scale``, ``tau`` (each (K,), one per latent), ``sigma`` and ``nu`` (2,)
            prior parameters, and ``centre`` (dict of mean log inputs).
    """
    F = spec.n_families
    site = {}
    for k, (z, mode) in enumerate(zip(spec.latents, spec.modes, strict=True)):
        loc, scale = hyper["loc"][k], hyper["scale"][k]
        if mode == "shared":
            site[z] = numpyro.sample(z, dist.Normal(loc, scale))
        elif mode == "free":
            site[z] = numpyro.sample(z, dist.Normal(loc, scale).expand([F]).to_event(1))
        else:
            site[f"mu_{z}"] = numpyro.sample(f"mu_{z}", dist.Normal(loc, scale))
            site[f"tau_{z}"] = numpyro.sample(f"tau_{z}", dist.HalfNormal(hyper["tau"][k]))
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
    if spec.likelihood == "student_t":
        nu = numpyro.sample("nu", dist.Gamma(hyper["nu"][0], hyper["nu"][1]))
        lik = dist.StudentT(nu, mu, sigma)
    else:
        lik = dist.Normal(mu, sigma)
    with numpyro.handlers.mask(mask=mask > 0):
        numpyro.sample("obs", lik, obs=log_y)


def noise_params(spec: Spec, site: dict) -> dict[str, jnp.ndarray]:
    """``sigma`` (..., F) per family and ``nu`` (...,) (inf for the Gaussian likelihood) from sampled sites."""
    sigma = site["sigma"]
    if spec.noise == "shared":
        sigma = jnp.broadcast_to(sigma[..., None], (*jnp.shape(sigma), spec.n_families))
    nu = site["nu"] if spec.likelihood == "student_t" else jnp.full(jnp.shape(site["sigma"])[: sigma.ndim - 1], jnp.inf)
    return {"sigma": sigma, "nu": nu}
