"""Static settings of the sampler's programs and the shapes they take."""

from __future__ import annotations

from dataclasses import dataclass, replace

import jax.numpy as jnp

from ..model import Spec

#: Number of times the sampler has been traced and compiled in this process (read by tests and benchmarks).
COMPILE_COUNT = {"n": 0}


@dataclass(frozen=True)
class SamplerConfig:
    """Static sampler settings (part of the compile-cache key).

    Attributes:
        chains: independent chains per dataset.
        warmup: adaptation iterations per chain (discarded).
        draws: kept iterations per chain.
        dense_mass: adapt a dense (True) or diagonal metric.
        target_accept: dual-averaging target for the mean acceptance statistic.
        max_tree_depth: at most 2**max_tree_depth - 1 leapfrog steps per iteration.
        chain_method: ``"vectorized"`` (chains as one batch on one device) or ``"parallel"`` (the chain axis
            sharded over the local devices; needs ``chains`` divisible by the device count).
        init_jitter: scale of the per-chain random start around the prior centre (in prior standard deviations).
        progress: show progress (:mod:`scalebayes.progress`): between the pieces of a single fit's host loop, or
            through a callback compiled into the batch and sharded programs (off compiles none).
        cross_chain: estimate the warm-up covariance from the draws of all chains of a dataset together (4x the
            draws per slow window, so a usable metric after the first one), and give the chains of a dataset one
            step size (the geometric mean of theirs) for sampling. Only warm-up uses it; each chain's kernel is
            fixed during sampling.
    """

    chains: int = 4
    warmup: int = 1000
    draws: int = 1000
    dense_mass: bool = True
    target_accept: float = 0.9
    max_tree_depth: int = 10
    chain_method: str = "vectorized"
    init_jitter: float = 0.3
    progress: bool = False
    cross_chain: bool = True


def program_settings(config: SamplerConfig) -> SamplerConfig:
    """The settings a single fit's compiled pieces (:mod:`.compiled`, :mod:`.stored`) depend on: ``config``
    without ``warmup``, which reaches them only through the schedule's table (a runtime argument: one row per call),
    and without ``progress``, which is the host loop's. Fits differing only in those share their programs."""
    return replace(config, warmup=0, progress=False)


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
        "sigma_trend": jnp.asarray(0.5, dtype),
        "centre": {k: jnp.asarray(0.0, dtype) for k in spec.law.inputs},
    }
    return x, jnp.zeros(n, dtype), jnp.zeros(n, jnp.int32), jnp.ones(n, dtype), hyper
