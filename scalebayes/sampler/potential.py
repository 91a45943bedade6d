"""The model's negative log joint on one flat vector of unconstrained coordinates, and that vector's layout.

:func:`make_potential` writes :func:`scalebayes.model.model` directly in JAX (priors, hierarchy, log-Jacobians of
the exp transforms, Student-t/Normal likelihood). It equals NumPyro's potential for the same model to rounding
(tested for every pooling, likelihood and noise option) and its gradient is cheaper: the law's parameters are
computed once per family instead of once per run, and the Student-t term takes one ``log`` per run (on CPU the
float64 ``log``/``exp`` per run are most of a leapfrog step).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.scipy.special import gammaln

from .. import likelihood
from ..model import TAU_LOG_SD, Spec, family_latents, population_logpdf, tpp_offset

_LOG_2PI = math.log(2.0 * math.pi)


class Site(NamedTuple):
    """One sampled site of :func:`scalebayes.model.model` in the flat unconstrained vector."""

    name: str
    shape: tuple[int, ...]
    offset: int
    positive: bool  # sampled as log(value) (HalfNormal/Gamma sites), else as the value itself

    @property
    def size(self) -> int:
        return int(np.prod(self.shape, dtype=int))


def site_layout(spec: Spec) -> tuple[Site, ...]:
    """The sites of the model for ``spec``, in the order of the flat vector NUTS samples."""
    F = spec.n_families
    named: list[tuple[str, tuple[int, ...], bool]] = []
    for z, mode in zip(spec.latents, spec.modes, strict=True):
        if mode == "shared":
            named.append((z, (), False))
        elif mode in ("free", "marginal"):
            named.append((z, (F,), False))
        elif mode == "centred":
            named += [(f"mu_{z}", (), False), (f"tau_{z}", (), True), (z, (F,), False)]
        else:
            named += [(f"mu_{z}", (), False), (f"tau_{z}", (), True), (f"z_{z}", (F,), False)]
    named.append(("sigma", (F,) if spec.noise == "family" else (), True))
    if spec.noise_trend:
        named.append(("sigma_trend", (), False))
    if spec.likelihood == "student_t":
        named.append(("nu", (), True))
    out, off = [], 0
    for name, shape, pos in named:
        s = Site(name, shape, off, pos)
        out.append(s)
        off += s.size
    return tuple(out)


def n_dim(spec: Spec) -> int:
    """Length of the flat unconstrained vector for ``spec``."""
    return sum(s.size for s in site_layout(spec))


def unflatten(spec: Spec, q: jnp.ndarray, constrain: bool = False) -> dict[str, jnp.ndarray]:
    """Flat unconstrained vectors (..., D) → ``{site: (..., *shape)}``; ``constrain`` applies exp to positive sites."""
    out = {}
    for s in site_layout(spec):
        v = q[..., s.offset : s.offset + s.size].reshape(*q.shape[:-1], *s.shape)
        out[s.name] = jnp.exp(v) if (constrain and s.positive) else v
    return out


def _normal_lpdf(x, loc, scale):
    r = (x - loc) / scale
    return -0.5 * r * r - jnp.log(scale) - 0.5 * _LOG_2PI


def _halfnormal_lpdf(x, scale):
    return _normal_lpdf(x, 0.0, scale) + math.log(2.0)


def _prior(spec: Spec, u: dict, hyper: dict):
    """Log prior density of the law's latents (τ's LogNormal density as the Normal density of log τ, which includes
    the log-Jacobian of exp) and the sites the law reads."""
    lp = 0.0
    site = {}
    for k, (z, mode) in enumerate(zip(spec.latents, spec.modes, strict=True)):
        loc, scale = hyper["loc"][k], hyper["scale"][k]
        if mode in ("shared", "free"):
            site[z] = u[z]
            lp = lp + jnp.sum(_normal_lpdf(u[z], loc, scale))
            continue
        if mode == "marginal":  # its density is added below, all such latents in one batched computation
            site[z] = u[z]
            continue
        lt = u[f"tau_{z}"]
        tau = jnp.exp(lt)
        site[f"mu_{z}"], site[f"tau_{z}"] = u[f"mu_{z}"], tau
        lp = lp + _normal_lpdf(u[f"mu_{z}"], loc, scale) + _normal_lpdf(lt, jnp.log(hyper["tau"][k]), TAU_LOG_SD)
        if mode == "centred":
            site[z] = u[z]
            lp = lp + jnp.sum(_normal_lpdf(u[z], u[f"mu_{z}"], tau))
        else:
            site[f"z_{z}"] = u[f"z_{z}"]
            lp = lp + jnp.sum(_normal_lpdf(u[f"z_{z}"], 0.0, 1.0))
    ks = [k for k, m in enumerate(spec.modes) if m == "marginal"]
    if ks:  # one (K_marginal, nodes) computation instead of one small one per latent: a cheaper gradient on CPU
        theta = jnp.stack([u[spec.latents[k]] for k in ks])
        idx = jnp.asarray(ks)
        lp = lp + jnp.sum(population_logpdf(theta, hyper["loc"][idx], hyper["scale"][idx], hyper["tau"][idx]))
    return lp, site


def _log_mean(spec: Spec, site: dict, x, fam, centre):
    """The law's log loss per run: parameters (and the law's ``per_run`` preparation of them, e.g. their logs)
    computed once (all shared) or once per family and gathered."""
    law = spec.law
    prepare, evaluate = law.per_run
    if all(m == "shared" for m in spec.modes):
        return evaluate(lax.optimization_barrier(prepare(law.to_params({z: site[z] for z in spec.latents}, centre))), x)
    lat = family_latents(spec, site, spec.n_families)
    k = lax.optimization_barrier(prepare(law.to_params(lat, centre)))
    return evaluate({n: v[fam] for n, v in k.items()}, x)


def make_potential(spec: Spec):
    """``U(q, x, log_y, fam, mask, hyper)``: the negative log joint density of :func:`scalebayes.model.model` at flat
    unconstrained coordinates ``q`` (D,) (positive sites as logs, with their log-Jacobian), data as in ``model``.
    Equal to NumPyro's ``potential_energy`` of ``model`` to rounding (checked in the tests)."""
    layout = site_layout(spec)

    def potential(q, x, log_y, fam, mask, hyper):
        u = {s.name: q[s.offset : s.offset + s.size].reshape(s.shape) for s in layout}
        lp, site = _prior(spec, u, hyper)
        ls = u["sigma"]
        sigma = jnp.exp(ls)
        lp = lp + jnp.sum(_halfnormal_lpdf(sigma, hyper["sigma"]) + ls)
        nu = jnp.inf
        if spec.likelihood == "student_t":  # Gamma(a, b) prior on ν, sampled as log ν
            ln = u["nu"]
            nu = jnp.exp(ln)
            a, b = hyper["nu"][0], hyper["nu"][1]
            lp = lp + a * jnp.log(b) - gammaln(a) + (a - 1.0) * ln - b * nu + ln
        if spec.noise == "family":
            sigma, ls = sigma[fam], ls[fam]
        if spec.noise_trend:  # log σ_i = log σ + ζ·(log(D/N)_i − c)
            lp = lp + _normal_lpdf(u["sigma_trend"], 0.0, hyper["sigma_trend"])
            ls = ls + u["sigma_trend"] * tpp_offset(x, hyper["centre"])
            sigma = jnp.exp(ls)
        mu = _log_mean(spec, site, x, fam, hyper["centre"])
        ll = likelihood.logpdf_one_log(log_y, mu, sigma, nu, log_scale=ls)
        return -(lp + jnp.sum(mask * ll))

    return potential


def init_position(spec: Spec, hyper: dict, normals: jnp.ndarray, jitter: float, dtype) -> jnp.ndarray:
    """Flat unconstrained start (D,) near the prior's centre, jittered by ``jitter`` prior s.d. per coordinate
    (``normals``: D standard normal draws)."""
    parts = []
    idx = {z: i for i, z in enumerate(spec.latents)}
    for s in site_layout(spec):
        eps = jitter * normals[s.offset : s.offset + s.size].reshape(s.shape).astype(dtype)
        n = s.name
        if n in idx or n.startswith("mu_"):
            i = idx[n if n in idx else n[3:]]
            v = hyper["loc"][i] + hyper["scale"][i] * eps
        elif n.startswith("tau_"):
            v = jnp.log(hyper["tau"][idx[n[4:]]]) + eps
        elif n == "sigma":
            v = jnp.log(0.3 * hyper["sigma"]) + eps
        elif n == "nu":
            v = math.log(10.0) + eps
        elif n == "sigma_trend":
            v = hyper["sigma_trend"] * eps
        else:  # z_ (non-centred offsets)
            v = eps
        parts.append(jnp.reshape(v, (-1,)).astype(dtype))
    return jnp.concatenate(parts)
