"""Predictive numerics: pure JAX functions over draws × query points (no Python loop over draws), and the quantile
columns of a prediction. The predictive itself (noise, discrepancy, density) is :mod:`scalebayes.predictive`."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from .laws import Law
from .model import POOLED, Spec


@functools.partial(jax.jit, static_argnums=0)
def log_mean_draws(law: Law, params: dict, x: dict) -> jnp.ndarray:
    """log L of the law for every draw and query point: params (S,), x log inputs (P,) → (S, P)."""
    return law.log_mean({k: v[:, None] for k, v in params.items()}, {k: v[None, :] for k, v in x.items()})


def new_family_latents(
    spec: Spec,
    latents: dict[str, np.ndarray],
    hyper_draws: dict[str, np.ndarray],
    prior_loc: np.ndarray,
    prior_scale: np.ndarray,
    key,
) -> dict[str, jnp.ndarray]:
    """Latents (S,) for a family not seen in fitting.

    ``shared`` latents keep their common value; ``partial`` ones draw a new offset from the population,
    μ + τ·ε; ``free`` ones have nothing to borrow from and are drawn from their prior.
    """
    out = {}
    keys = jax.random.split(key, len(spec.latents))
    for k, (z, mode) in enumerate(zip(spec.latents, spec.modes, strict=True)):
        if mode == "shared":
            out[z] = jnp.asarray(latents[z][:, 0])
        else:
            S = latents[z].shape[0]
            eps = jax.random.normal(keys[k], (S,))
            if mode in POOLED:
                out[z] = jnp.asarray(hyper_draws[f"mu_{z}"]) + jnp.asarray(hyper_draws[f"tau_{z}"]) * eps
            else:
                out[z] = prior_loc[k] + prior_scale[k] * eps
    return out


def quantile_frame(values: np.ndarray, quantiles) -> dict[str, np.ndarray]:
    """``q<p>`` columns over the first axis of ``values`` (S, P)."""
    out = {}
    qs = np.quantile(values, np.asarray(quantiles), axis=0)
    for q, row in zip(quantiles, qs, strict=True):
        out[qcol(q)] = row
    return out


def qcol(q: float) -> str:
    """Column name for quantile q, e.g. 0.05 → ``q0.05``."""
    return f"q{q:g}"
