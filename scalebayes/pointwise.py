"""Pointwise log-likelihood and posterior predictive of the fitted runs (draws × runs arrays)."""

from __future__ import annotations

import functools
import json

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
import xarray as xr
from jax.scipy import stats as jstats

from . import laws as _laws


def _stack(da: xr.DataArray) -> np.ndarray:
    v = np.asarray(da.transpose("chain", "draw", ...).values)
    return v.reshape(-1, *v.shape[2:])


@functools.partial(jax.jit, static_argnums=(0,))
def _pointwise(law, params, x, fam, log_y, sigma, nu, key):
    # params (S, F) -> per-obs (S, n) by gathering the family column.
    p = {k: v[:, fam] for k, v in params.items()}
    mu = law.log_mean(p, {k: v[None, :] for k, v in x.items()})
    s = sigma[:, fam] if sigma.ndim == 2 else sigma[:, None]
    finite = jnp.isfinite(nu)[:, None]
    nu_safe = jnp.where(finite, nu[:, None], 1.0)
    ll = jnp.where(finite, jstats.t.logpdf(log_y[None, :], nu_safe, mu, s), jstats.norm.logpdf(log_y[None, :], mu, s))
    eps = jax.random.normal(key, mu.shape)
    g = jax.random.gamma(jax.random.fold_in(key, 1), nu_safe / 2.0, mu.shape) / (nu_safe / 2.0)
    rep = mu + s * jnp.where(finite, eps / jnp.sqrt(g), eps)
    return ll, rep


def pointwise_groups(dt, *, seed: int = 0) -> dict[str, xr.DataTree]:
    """log_likelihood and posterior_predictive groups (dims chain, draw, obs) of log loss for a fit's DataTree."""
    meta = json.loads(dt.attrs["scalebayes"])
    law = _laws.get(meta["law"])
    post, lp = dt["posterior"], dt["latent_posterior"]
    chains, ndraw = post.sizes["chain"], post.sizes["draw"]
    latents = {z: jnp.asarray(_stack(lp[z])) for z in law.latents}
    params = law.to_params(latents, {k: jnp.asarray(v) for k, v in meta["centre"].items()})
    cd = dt["constant_data"]
    x = {k: jnp.log(jnp.asarray(cd[k].values, dtype=jnp.float64)) for k in law.inputs}
    fams = list(meta["families"])
    fam = jnp.asarray(pd.Index(fams).get_indexer(np.asarray(cd["family"].values).astype(str)), jnp.int32)
    log_y = jnp.asarray(dt["observed_data"]["log_loss"].values)
    sigma = jnp.asarray(_stack(post["sigma"]))
    nu = jnp.asarray(_stack(post["nu"])) if "nu" in post.data_vars else jnp.full(chains * ndraw, jnp.inf)
    ll, rep = _pointwise(law, params, x, fam, log_y, sigma, nu, jax.random.fold_in(jax.random.key(seed), 11))
    obs = cd["obs"].values
    shape = (chains, ndraw, -1)
    coords = {"chain": post["chain"].values, "draw": post["draw"].values, "obs": obs}

    def ds(v):
        arr = np.asarray(v).reshape(shape)
        return xr.DataTree(xr.Dataset({"log_loss": (("chain", "draw", "obs"), arr)}, coords=coords))

    return {"log_likelihood": ds(ll), "posterior_predictive": ds(rep)}
