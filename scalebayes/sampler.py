"""The numerical core: NUTS over a :class:`~scalebayes.model.Spec`, as one pure, compiled JAX program.

``sampler(spec, n_obs, config)`` returns a jitted function ``run(key, x, log_y, fam, mask, hyper)`` that does
warm-up and sampling for every chain and returns constrained draws of shape (chains, draws, ...) plus sampler
statistics. It is cached on its static arguments, so a second fit of the same structure and (padded) size does not
recompile, and it is a pure function of arrays, so :func:`scalebayes.fit_many` can ``vmap`` it over datasets.

Choices (see the fit docstring for the measurements behind them): NumPyro's NUTS kernel with a *dense* mass matrix
adapted in warm-up (the law's latents stay linearly correlated even after centring, which a diagonal mass matrix
pays for in leapfrog steps), target acceptance 0.9, initial values jittered around the prior location so R-hat can
detect chains that disagree.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from numpyro.infer.hmc import hmc
from numpyro.infer.util import initialize_model

from .model import Spec, model

#: Number of times the sampler has been traced and compiled in this process (read by tests and benchmarks).
COMPILE_COUNT = {"n": 0}


@dataclass(frozen=True)
class SamplerConfig:
    chains: int = 4
    warmup: int = 1000
    draws: int = 1000
    dense_mass: bool = True
    target_accept: float = 0.9
    max_tree_depth: int = 10
    chain_method: str = "vectorized"  # "vectorized" (vmap) or "parallel" (pmap over devices)
    init_jitter: float = 0.3
    progress: bool = False


def pad_size(n: int) -> int:
    """Padded number of runs: the next multiple of 32 (≥ n). Adding a run or two then reuses the compiled sampler."""
    return int(-(-n // 32) * 32)


def example_args(spec: Spec, n: int, dtype=jnp.float64):
    """Dummy arguments with the shapes a ``run`` for ``spec`` and ``n`` padded runs takes."""
    K = len(spec.latents)
    x = {k: jnp.zeros(n, dtype) for k in spec.law.inputs}
    hyper = {
        "loc": jnp.zeros(K, dtype),
        "scale": jnp.ones(K, dtype),
        "tau": jnp.ones(K, dtype),
        "sigma": jnp.asarray(0.1, dtype),
        "nu": jnp.asarray([2.0, 0.1], dtype),
        "centre": {k: jnp.asarray(0.0, dtype) for k in spec.law.inputs},
    }
    return x, jnp.zeros(n, dtype), jnp.zeros(n, jnp.int32), jnp.ones(n, dtype), hyper


def _init_z(spec: Spec, template: dict, hyper: dict, key, jitter: float) -> dict:
    """Unconstrained initial values near the prior's centre, jittered per chain (``template`` gives shapes)."""
    keys = jax.random.split(key, len(template))
    out = {}
    idx = {z: i for i, z in enumerate(spec.latents)}
    for (name, proto), k in zip(sorted(template.items()), keys, strict=True):
        eps = jitter * jax.random.normal(k, jnp.shape(proto), dtype=proto.dtype)
        if name in idx:
            i = idx[name]
            out[name] = hyper["loc"][i] + hyper["scale"][i] * eps
        elif name.startswith("mu_"):
            i = idx[name[3:]]
            out[name] = hyper["loc"][i] + hyper["scale"][i] * eps
        elif name.startswith("tau_"):
            out[name] = jnp.log(0.3 * hyper["tau"][idx[name[4:]]]) + eps
        elif name.startswith("z_"):
            out[name] = eps
        elif name == "sigma":
            out[name] = jnp.log(0.3 * hyper["sigma"]) + eps
        elif name == "nu":
            out[name] = jnp.log(10.0) + eps
        else:  # pragma: no cover - every site of model() is named above
            out[name] = eps
    return out


@functools.lru_cache(maxsize=128)
def sampler(spec: Spec, n: int, config: SamplerConfig, dtype_name: str = "float64"):
    """Compiled ``run(key, x, log_y, fam, mask, hyper) -> (draws, stats)`` for ``n`` (padded) runs.

    ``draws`` maps every sampled site to an array (chains, draws, *site_shape) in constrained space; ``stats``
    holds ``diverging``, ``num_steps``, ``accept_prob``, ``energy``, ``potential_energy`` (chains, draws) and
    ``step_size`` (chains,).
    """
    dtype = jnp.dtype(dtype_name)
    args = example_args(spec, n, dtype)
    m = functools.partial(model, spec)
    info, pe_gen, post_gen, _ = initialize_model(jax.random.key(0), m, model_args=args, dynamic_args=True)
    template = info.z

    def one_chain(key, args):
        k_init, k_run = jax.random.split(key)
        z0 = _init_z(spec, template, args[-1], k_init, config.init_jitter)
        z0 = jax.tree.map(lambda v, t: v.astype(t.dtype), z0, template)
        init_kernel, sample_kernel = hmc(potential_fn_gen=pe_gen, algo="NUTS")
        state = init_kernel(
            z0,
            config.warmup,
            dense_mass=config.dense_mass,
            target_accept_prob=config.target_accept,
            max_tree_depth=config.max_tree_depth,
            model_args=args,
            rng_key=k_run,
        )
        # One scan over warm-up and sampling (rather than a warm-up loop plus a sampling scan) compiles the NUTS
        # kernel once instead of twice; keeping the warm-up states costs only (warmup × n_latent) floats.
        def step(s, _):
            s = sample_kernel(s, model_args=args)
            return s, (s.z, s.diverging, s.num_steps, s.accept_prob, s.energy, s.potential_energy)

        last, trace = lax.scan(step, state, None, length=config.warmup + config.draws)
        z, div, steps, acc, energy, pot = jax.tree.map(lambda v: v[config.warmup :], trace)
        draws = jax.vmap(post_gen(*args))(z)
        stats = {
            "diverging": div,
            "num_steps": steps,
            "accept_prob": acc,
            "energy": energy,
            "potential_energy": pot,
            "step_size": last.adapt_state.step_size,
        }
        return draws, stats

    def run(key, x, log_y, fam, mask, hyper):
        COMPILE_COUNT["n"] += 1  # runs only while tracing, i.e. once per compilation
        args = (x, log_y, fam, mask, hyper)
        keys = jax.random.split(key, config.chains)
        if config.chain_method == "parallel":
            return jax.pmap(one_chain, in_axes=(0, None))(keys, args)
        return jax.vmap(one_chain, in_axes=(0, None))(keys, args)

    return jax.jit(run)


def chain_method_for(chains: int) -> str:
    """``"parallel"`` when there is a device per chain (several CPU devices or GPUs), else ``"vectorized"``."""
    return "parallel" if jax.local_device_count() >= chains > 1 else "vectorized"


def to_numpy(tree):
    """One host transfer of a whole result tree (after sampling, never inside it)."""
    return jax.tree.map(np.asarray, jax.device_get(tree))
