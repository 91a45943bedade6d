"""A reference path: NumPyro's own NUTS on :func:`scalebayes.model.model`, the same model and parameterisation.

``numpyro_sampler(spec, n, config, dtype)`` has :func:`.compiled.sampler`'s signature and its ``run`` returns the
same ``(draws, stats)``, so :func:`scalebayes.fit` only swaps the factory (``fit(..., sampler="numpyro")``). It is
slower (NumPyro's tree building synchronises vectorised chains, its potential computes the law per run) and exists
to check ours: same posterior within Monte Carlo error (``tests/test_reference.py``), and the speed ratio
(``benchmarks/``). NumPyro's own start (uniform(-2, 2) in unconstrained space) overflows the law's exponentials
under partial pooling, so every chain starts at the prior's centre, jittered by ``config.init_jitter`` prior s.d.,
and NumPyro's warm-up (Stan's windows, absolute-ridge covariance shrinkage) does the rest.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from numpyro.infer import MCMC, NUTS

from ..model import Spec, model
from .config import SamplerConfig
from .potential import init_position, n_dim, site_layout, unflatten

_FIELDS = ("diverging", "num_steps", "accept_prob", "energy", "potential_energy", "adapt_state.step_size")


@functools.lru_cache(maxsize=16)
def numpyro_sampler(spec: Spec, n: int, config: SamplerConfig, dtype_name: str = "float64"):
    """``run(key, x, log_y, fam, mask, hyper) -> (draws, stats)`` with NumPyro's NUTS (vectorised chains); shapes
    as :func:`.compiled.sampler`'s. Cached like it (the data are traced arguments, ``jit_model_args``), so a second
    fit of the same shape reuses NumPyro's compiled program. ``n``, ``dtype_name``: cache key only."""
    del n, dtype_name
    kernel = NUTS(
        functools.partial(model, spec),
        dense_mass=bool(config.dense_mass),
        target_accept_prob=float(config.target_accept),
        max_tree_depth=int(config.max_tree_depth),
    )
    names = [s.name for s in site_layout(spec)]
    mcmc = MCMC(
        kernel,
        num_warmup=int(config.warmup),
        num_samples=int(config.draws),
        num_chains=int(config.chains),
        chain_method="vectorized",
        progress_bar=False,
        jit_model_args=True,
    )

    def run(key, x, log_y, fam, mask, hyper):
        k_init, k_run = jax.random.split(key)
        z = jax.random.normal(k_init, (config.chains, n_dim(spec)), log_y.dtype)
        q0 = jax.vmap(lambda zc: init_position(spec, hyper, zc, config.init_jitter, log_y.dtype))(z)
        mcmc.run(k_run, x, log_y, fam, mask, hyper, init_params=unflatten(spec, q0), extra_fields=_FIELDS)
        samples = mcmc.get_samples(group_by_chain=True)
        extra = mcmc.get_extra_fields(group_by_chain=True)
        draws = {k: samples[k] for k in names}
        stats = {k: extra[k] for k in _FIELDS[:-1]}
        stats["num_steps"] = stats["num_steps"].astype(jnp.int32)
        stats["step_size"] = extra["adapt_state.step_size"][:, -1]
        return draws, stats

    return run
