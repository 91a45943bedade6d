"""The numerical core: NUTS over a :class:`~scalebayes.model.Spec`, as one pure, compiled JAX program.

``sampler(spec, n, config, dtype)`` returns ``run(key, x, log_y, fam, mask, hyper)`` that does warm-up and
sampling for every chain (a host loop over three compiled pieces, stored on disk across processes when the
compilation cache is on) and returns constrained draws of shape (chains, draws, ...) plus sampler statistics;
``batch_sampler(spec, n, config, dtype, n_devices, slots)`` is the same program over a leading axis of B
independent datasets (used by :func:`scalebayes.fit_many`). Measurements behind the choices are in
``benchmarks/RESULTS.md``. The parts, each usable alone:

- :mod:`.potential`: the model's negative log joint on a flat unconstrained vector, and its layout;
- :mod:`.rng`: counter-based threefry uniforms and a fused polynomial sin/cos (no key splitting in the loop);
- :mod:`.metric`: whitened coordinates ``q = L u``;
- :mod:`.nuts`: multinomial NUTS, one leapfrog step per call, over a named :class:`~.nuts.Tree`;
- :mod:`.adaptation`: dual averaging, windowed covariance with scale-relative shrinkage, the step-size heuristic,
  Stan's window schedule, cross-chain pooling;
- :mod:`.start`: the damped Newton descent that seeds each chain's start and metric;
- :mod:`.kernel`: one chain (trajectory + adaptation) per loop step;
- :mod:`.program`: the vectorised loops (datasets side by side, or streamed through slots), and the side-by-side
  loop cut into ``init``/``advance``/``finish`` pieces;
- :mod:`.driver`: a single fit's host loop over those pieces (progress between calls);
- :mod:`.stored`: the pieces kept on disk (``jax.export``) under a key naming everything they depend on;
- :mod:`.compiled`: caching, sharding, XLA options;
- :mod:`.reference`: NumPyro's NUTS on the same model, with the same ``run`` interface (for checks).
"""

from .adaptation import adaptation_windows, window_table
from .compiled import (
    SAMPLERS,
    batch_core,
    batch_sampler,
    chain_method_for,
    compiler_options,
    factory_for,
    jit,
    sampler,
    to_numpy,
)
from .config import COMPILE_COUNT, SamplerConfig, example_args, program_settings
from .nuts import MAX_DELTA_ENERGY
from .potential import Site, init_position, make_potential, n_dim, site_layout, unflatten
from .program import build
from .reference import numpyro_sampler
from .rng import normals, sincos_2pi, threefry2x32, uniforms

__all__ = [
    "COMPILE_COUNT",
    "MAX_DELTA_ENERGY",
    "SAMPLERS",
    "SamplerConfig",
    "Site",
    "adaptation_windows",
    "batch_core",
    "batch_sampler",
    "build",
    "chain_method_for",
    "compiler_options",
    "example_args",
    "factory_for",
    "init_position",
    "jit",
    "make_potential",
    "n_dim",
    "normals",
    "numpyro_sampler",
    "program_settings",
    "sampler",
    "site_layout",
    "sincos_2pi",
    "threefry2x32",
    "to_numpy",
    "uniforms",
    "unflatten",
    "window_table",
]
