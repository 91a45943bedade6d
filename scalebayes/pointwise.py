"""Pointwise log-likelihood and posterior predictive of the fitted runs (draws × runs arrays), computed in chunks.

Both groups are S × n (S posterior draws, n runs) floats each — 3.2 GB apiece for 4000 draws of 100,000 runs — so
:func:`scalebayes.fit` stores them only when asked (``pointwise=True``) or, by default (``"auto"``), when
S·n ≤ :data:`AUTO_MAX_ELEMENTS`; :meth:`Posterior.pointwise` adds them later. The computation itself runs over
chunks of draws (:data:`CHUNK_ELEMENTS` floats per chunk per group), so its working memory is bounded whatever S·n;
only the two results, which the caller asked for, are S × n.
"""

from __future__ import annotations

import functools
import json

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
import xarray as xr

from . import laws as _laws
from . import likelihood as _lik
from .errors import ModelError
from .model import tpp_offset

#: ``pointwise="auto"`` stores the groups when draws × runs is at most this (2e6: 16 MB per group in float64).
AUTO_MAX_ELEMENTS = 2_000_000
#: Working-set size of one chunk (draws × runs elements per group).
CHUNK_ELEMENTS = 1 << 20


def _stack(da: xr.DataArray) -> np.ndarray:
    v = np.asarray(da.transpose("chain", "draw", ...).values)
    return v.reshape(-1, *v.shape[2:])


def want_pointwise(pointwise: bool | str, n_samples: int, n_obs: int) -> bool:
    """Resolve ``fit(pointwise=...)``: True/False as given; ``"auto"`` is True when draws × runs ≤
    :data:`AUTO_MAX_ELEMENTS`."""
    if pointwise == "auto":
        return n_samples * n_obs <= AUTO_MAX_ELEMENTS
    if isinstance(pointwise, bool | np.bool_):
        return bool(pointwise)
    raise ModelError(f"pointwise must be True, False or 'auto', got {pointwise!r}")


@functools.partial(jax.jit, static_argnums=(0, 1))
def _chunk(law, student: bool, params, x, fam, log_y, sigma, nu, zeta, tpp, key):
    """Log-likelihood and a replicate of log loss, both (s, n), for a chunk of s draws (params (s, F), sigma (s,) or
    (s, F), nu (s,), noise trend zeta (s,) at each run's log(D/N) − c ``tpp`` (n,))."""
    p = {k: v[:, fam] for k, v in params.items()}
    mu = law.log_mean(p, {k: v[None, :] for k, v in x.items()})
    s = (sigma[:, fam] if sigma.ndim == 2 else sigma[:, None]) * jnp.exp(zeta[:, None] * tpp[None, :])
    v = nu[:, None] if student else jnp.inf
    ll = _lik.logpdf(log_y[None, :], mu, s, v)
    rep = _lik.sample(key, mu, s, v)
    return ll, rep


def pointwise_arrays(dt, *, seed: int = 0, chunk_elements: int = CHUNK_ELEMENTS) -> tuple[np.ndarray, np.ndarray]:
    """Pointwise log-likelihood and posterior-predictive log loss of every fitted run, each (chain·draw, obs),
    computed over chunks of at most ``chunk_elements`` draws × runs (every chunk of one fit has the same shape, so
    one compilation serves them all)."""
    meta = json.loads(dt.attrs["scalebayes"])
    law = _laws.get(meta["law"])
    post, lp = dt["posterior"], dt["latent_posterior"]
    latents = {z: _stack(lp[z]) for z in law.latents}
    centre = {k: jnp.asarray(v) for k, v in meta["centre"].items()}
    cd = dt["constant_data"]
    x = {k: jnp.log(jnp.asarray(cd[k].values, dtype=float)) for k in law.inputs}
    fams = list(meta["families"])
    fam = jnp.asarray(pd.Index(fams).get_indexer(np.asarray(cd["family"].values).astype(str)), jnp.int32)
    log_y = jnp.asarray(dt["observed_data"]["log_loss"].values, float)
    sigma = _stack(post["sigma"])
    student = "nu" in post.data_vars
    S = sigma.shape[0]
    nu = _stack(post["nu"]) if student else np.full(S, np.inf)
    trend = "sigma_trend" in post.data_vars
    zeta = _stack(post["sigma_trend"]) if trend else np.zeros(S)
    tpp = tpp_offset(x, centre) if trend else jnp.zeros_like(log_y)
    n = int(log_y.shape[0])
    size = int(max(1, min(S, chunk_elements // max(n, 1))))
    ll = np.empty((S, n))
    rep = np.empty((S, n))
    key = jax.random.fold_in(jax.random.key(seed), 11)
    for i, start in enumerate(range(0, S, size)):
        stop = min(start + size, S)
        idx = np.minimum(np.arange(start, start + size), S - 1)  # the last chunk is padded to the common shape
        lat = {z: jnp.asarray(v[idx]) for z, v in latents.items()}
        params = law.to_params(lat, centre)
        sig, nus, zetas = jnp.asarray(sigma[idx]), jnp.asarray(nu[idx]), jnp.asarray(zeta[idx])
        a, b = _chunk(law, student, params, x, fam, log_y, sig, nus, zetas, tpp, jax.random.fold_in(key, i))
        ll[start:stop] = np.asarray(a)[: stop - start]
        rep[start:stop] = np.asarray(b)[: stop - start]
    return ll, rep


def pointwise_groups(dt, *, seed: int = 0, chunk_elements: int = CHUNK_ELEMENTS) -> dict[str, xr.DataTree]:
    """log_likelihood and posterior_predictive groups (dims chain, draw, obs) of log loss for a fit's DataTree."""
    post = dt["posterior"]
    chains, ndraw = post.sizes["chain"], post.sizes["draw"]
    ll, rep = pointwise_arrays(dt, seed=seed, chunk_elements=chunk_elements)
    obs = dt["constant_data"]["obs"].values
    coords = {"chain": post["chain"].values, "draw": post["draw"].values, "obs": obs}

    def ds(v):
        arr = v.reshape(chains, ndraw, -1)
        return xr.DataTree(xr.Dataset({"log_loss": (("chain", "draw", "obs"), arr)}, coords=coords))

    return {"log_likelihood": ds(ll), "posterior_predictive": ds(rep)}
