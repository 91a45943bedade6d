"""Compiled, cached entry points: ``sampler`` (one dataset: :class:`Stepped`, the host loop over stored or exported
pieces), ``batch_sampler`` (B datasets, one program), devices, XLA options.

Both are cached on their static arguments, so a second fit of the same structure and (padded) size does not
recompile (``COMPILE_COUNT`` counts traces; ``tests/test_speed.py`` checks it with JAX's compilation log).

With one CPU device (JAX's default) chains run as one vectorised batch; that is also the layout for a GPU.
``chain_method="parallel"`` (chosen by :func:`chain_method_for` when several local devices divide the chains)
shards chains over devices; scalebayes never sets ``XLA_FLAGS=--xla_force_host_platform_device_count`` itself.
"""

from __future__ import annotations

import dataclasses
import functools
import warnings

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, PartitionSpec

from .. import progress
from ..errors import UnknownNameError
from ..model import Spec
from . import stored
from .adaptation import window_table
from .config import SamplerConfig, program_settings
from .driver import Chains, drive, flat_pieces
from .program import Pieces, build, make_parts, pieces
from .reference import numpyro_sampler

# XLA:CPU hands small reductions and multiply-adds to YNNPACK library calls ("ynn fusions"); in the sampler's loop
# body they are tiny (a chain's D-vector sums) and the calls cost more than XLA's own fused loops (measured in
# benchmarks/RESULTS.md). Passed per compilation, never through the user's XLA_FLAGS; skipped where this jaxlib
# lacks the option or the backend is not the CPU.
_CPU_OPTIONS = {"xla_cpu_experimental_ynn_fusion_type": ""}


@functools.lru_cache(maxsize=1)
def compiler_options() -> dict[str, str]:
    """XLA options for the sampler's programs on this backend (checked once per process by compiling a tiny
    function with them)."""
    if jax.default_backend() != "cpu":
        return {}
    try:
        jax.jit(lambda a: jnp.sum(a * a), compiler_options=_CPU_OPTIONS).lower(jnp.ones(3)).compile()
    except Exception:  # an older or newer jaxlib without the option: its defaults are fine
        return {}
    return dict(_CPU_OPTIONS)


def jit(fn):
    """``jax.jit(fn)`` with :func:`compiler_options` where they are allowed: JAX takes compiler options only on a
    top-level jit, so a call from inside another transformation (``jit``, ``vmap``, ``make_jaxpr``, ...) runs
    the plain jitted function instead."""
    opts = compiler_options()
    plain = jax.jit(fn)
    if not opts:
        return plain
    fast = jax.jit(fn, compiler_options=opts)

    @functools.wraps(fn)
    def run(*args):
        nested = any(isinstance(a, jax.core.Tracer) for a in jax.tree.leaves(args))
        return (plain if nested else fast)(*args)

    run.lower = fast.lower
    return run


@functools.lru_cache(maxsize=128)
def batch_core(spec: Spec, config: SamplerConfig, dtype_name: str = "float64", slots: int = 0):
    """The pure (un-jitted) batched program, for callers that compose it (``shard_map``, ``vmap``); ``slots``: see
    :func:`batch_sampler`. ``dtype_name`` is part of the cache key only (the data's dtype sets the program's)."""
    return build(spec, config, slots=int(slots))


def batch_sampler(
    spec: Spec, n: int, config: SamplerConfig, dtype_name: str = "float64", n_devices: int = 1, slots: int = 0
):
    """Compiled ``run(keys (B,), x, log_y, fam, mask, hyper)`` over B datasets of ``n`` (padded) runs each (every
    data array with a leading B axis). Returns draws per site (B, chains, draws, *shape) and stats (B, chains,
    draws), ``step_size`` (B, chains). Recompiles only for a new B (or a new structure); datasets whose mask is all
    zero are padding, placed last, and with ``slots`` they are never sampled, which lets callers round B up to a few
    sizes (:func:`scalebayes.fit_many` does).

    ``slots=0``: all B datasets run side by side and pass every warm-up window boundary together. ``slots=P > 0``
    streams the datasets through P slots (:mod:`.program`). Each dataset's numbers come from its own random stream
    either way.

    With ``n_devices > 1`` the dataset axis is sharded over the first ``n_devices`` devices with ``shard_map``
    (B must be a multiple of ``n_devices``): each device runs its own loop over its datasets, with no communication.
    """
    config = dataclasses.replace(config, progress=progress.enabled(config.progress))  # None: auto, before the cache
    return _batch_sampler(spec, n, config, dtype_name, n_devices, slots)


@functools.lru_cache(maxsize=128)
def _batch_sampler(spec: Spec, n: int, config: SamplerConfig, dtype_name: str, n_devices: int, slots: int):
    del n  # part of the cache key only: shapes come from the arguments
    core = batch_core(spec, config, dtype_name, slots)
    if n_devices <= 1:
        return jit(core)
    mesh = Mesh(np.asarray(jax.devices()[:n_devices]), ("data",))
    spec_ = PartitionSpec("data")
    # check_vma=False: the loops start from constants that become per-device values (nothing is communicated)
    return jit(jax.shard_map(core, mesh=mesh, in_specs=(spec_,) * 6, out_specs=spec_, check_vma=False))


def sampler(spec: Spec, n: int, config: SamplerConfig, dtype_name: str = "float64"):
    """``run(key, x, log_y, fam, mask, hyper) -> (draws, stats)`` for ``n`` (padded) runs.

    ``draws`` maps every sampled site to an array (chains, draws, *site_shape) in constrained space; ``stats``
    holds ``diverging``, ``num_steps`` (leapfrog steps), ``accept_prob``, ``energy``, ``potential_energy``
    (chains, draws) and ``step_size`` (chains,). ``config.progress`` (None: on for a terminal or notebook) shows a
    progress bar (:mod:`scalebayes.progress`); the programs and the draws are the same either way.
    """
    on = progress.enabled(config.progress)
    if config.chain_method == "parallel" and jax.local_device_count() > 1:
        return _parallel_chains(spec, dataclasses.replace(config, progress=on))
    # one runner per model, program settings and size, whatever the warm-up length and progress setting
    return Run(_stepped(spec, n, program_settings(config), dtype_name), int(config.warmup), on)


@functools.lru_cache(maxsize=128)
def _stepped(spec: Spec, n: int, settings: SamplerConfig, dtype_name: str) -> Stepped:
    del n, dtype_name  # part of the cache key only
    return Stepped(spec, settings)


@dataclasses.dataclass(frozen=True)
class Run:
    """A :class:`Stepped` with one call's warm-up length and progress setting: ``run(key, x, log_y, fam, mask,
    hyper)`` gives (draws, stats); ``run.start(...)`` the :class:`~.driver.Chains`, which can sample on."""

    stepped: Stepped
    warmup: int
    show_progress: bool

    def __call__(self, *args):
        return self.start(*args).result()

    def start(self, *args) -> Chains:
        return self.stepped.start(*args, warmup=self.warmup, show_progress=self.show_progress)


class Stepped:
    """One dataset's fit as a host loop (:func:`.driver.drive`) over three compiled pieces (:class:`.Pieces`),
    each exported once per argument shape and kept on disk when the compilation cache is on (:mod:`.stored`), so
    a second process skips tracing as well as compiling. Call as ``run(key, x, log_y, fam, mask, hyper, warmup=W,
    show_progress=False)``.

    The pieces depend on ``config`` only through :func:`.config.program_settings` (``warmup`` reaches them as the
    schedule's table, a runtime argument: one row per call), so one runner serves fits of every warm-up length:
    rerunning a fit with more warm-up after a diagnostics failure compiles nothing."""

    def __init__(self, spec: Spec, config: SamplerConfig):
        self.spec = spec
        self.settings = program_settings(config)  # what the pieces depend on: their key in memory and on disk
        self.parts = make_parts(spec, self.settings)
        self._pieces: dict = {}  # argument shapes -> Pieces (bounded by the runners' own cache, _stepped)

    def __call__(self, key, x, log_y, fam, mask, hyper, *, warmup: int, show_progress: bool = False):
        return self.start(key, x, log_y, fam, mask, hyper, warmup=warmup, show_progress=show_progress).result()

    def start(self, key, x, log_y, fam, mask, hyper, *, warmup: int, show_progress: bool = False) -> Chains:
        """``warmup`` iterations per chain, then sampling; the returned :class:`~.driver.Chains` gives the draws and
        can sample on."""
        # NumPy in, so that adding the dataset axis runs no eager JAX operation (each would be compiled)
        args = jax.tree.map(lambda a: np.asarray(a)[None], (x, log_y, fam, mask, hyper))
        key_data = np.asarray(jax.random.key_data(key))[None]
        report = progress.update if show_progress else None
        pieces = self.programs(key_data, args)
        table = window_table(int(warmup), int(self.settings.draws))
        carry = drive(pieces, table, key_data, args, int(warmup), report)
        return Chains(pieces, table, carry, args, report)

    def programs(self, key_data, args) -> Pieces:
        """The compiled pieces for these argument shapes: stored ones when present, else exported (and stored)."""
        sig = stored.shapes((key_data, args))
        if sig not in self._pieces:
            self._pieces[sig] = self._load_or_export(key_data, args, sig)
        return self._pieces[sig]

    def _load_or_export(self, key_data, args, sig) -> Pieces:
        key = stored.program_key(self.spec, self.settings, sig, compiler_options())
        keys = [None if key is None else f"{name}-{key}" for name in Pieces._fields]
        found = [stored.load(k) for k in keys]
        if any(e is None for e in found):
            try:
                found = self.export(key_data, args)
            except Exception as e:  # export cannot hold some operation (a backend's library call): trace per process
                warnings.warn(f"sampler programs are traced anew in every process ({e})", RuntimeWarning, stacklevel=4)
                return Pieces(*(jax.jit(f, compiler_options=compiler_options()) for f in self.flat()))
            for k, e in zip(keys, found, strict=True):
                stored.save(k, e)
        return Pieces(*(jax.jit(e.call, compiler_options=compiler_options()) for e in found))

    def flat(self) -> Pieces:
        """The pure pieces over flat carries (:func:`.driver.flat_pieces`), ``finish`` without the dataset axis."""
        flat = flat_pieces(pieces(self.parts))
        return flat._replace(finish=lambda leaves: jax.tree.map(lambda a: a[0], flat.finish(leaves)))

    def export(self, key_data, args) -> list:
        """The three pieces traced for these arguments (``jax.export.Exported``, in :class:`.Pieces` order)."""
        init, advance, finish = self.flat()
        e_init = jax.export.export(jax.jit(init))(key_data, *args)
        carry = [jax.ShapeDtypeStruct(a.shape, a.dtype) for a in e_init.out_avals]
        row = tuple(jax.ShapeDtypeStruct((), np.asarray(f).dtype) for f in self.parts.table)
        e_adv = jax.export.export(jax.jit(advance))(carry, row, np.int32(0), np.bool_(False), *args)
        return [e_init, e_adv, jax.export.export(jax.jit(finish))(carry)]


def _parallel_chains(spec: Spec, config: SamplerConfig):
    """Chains sharded over the local devices (each device runs chains/n_dev chains in its own loop)."""
    n_dev = jax.local_device_count()
    per = config.chains // n_dev
    sub = build(spec, SamplerConfig(**{**config.__dict__, "chains": per}))
    mesh = Mesh(np.asarray(jax.local_devices()), ("d",))

    def local(keys, *args):  # keys (1,) per device
        return sub(keys, *jax.tree.map(lambda a: a[None], args))  # (1, per, ...)

    sharded = jax.shard_map(
        local,
        mesh=mesh,
        in_specs=(PartitionSpec("d"),) + (PartitionSpec(),) * 5,
        out_specs=PartitionSpec("d"),
        check_vma=False,
    )

    def run(key, x, log_y, fam, mask, hyper):
        keys = jax.random.split(key, n_dev)
        draws, stats = sharded(keys, x, log_y, fam, mask, hyper)
        merge = lambda a: a.reshape(n_dev * per, *a.shape[2:])  # noqa: E731
        return jax.tree.map(merge, draws), jax.tree.map(merge, stats)

    return jit(run)


def chain_method_for(chains: int) -> str:
    """``"parallel"`` when the local devices divide the chains (several CPU devices or GPUs), else ``"vectorized"``.

    With one CPU device (JAX's default) chains run as one vectorised batch. To run chains on separate CPU cores, set
    ``XLA_FLAGS=--xla_force_host_platform_device_count=<cores>`` *before* importing JAX (scalebayes never sets it).
    """
    n = jax.local_device_count()
    return "parallel" if n > 1 and chains > 1 and chains % n == 0 else "vectorized"


def to_numpy(tree):
    """One host transfer of a whole result tree (after sampling, never inside it)."""
    return jax.tree.map(np.asarray, jax.device_get(tree))


#: ``fit(..., sampler=...)`` names: ours, and NumPyro's NUTS on the same model (:mod:`.reference`).
SAMPLERS = ("nuts", "numpyro")


def factory_for(name: str):
    """The program factory ``(spec, n, config, dtype) -> run`` for ``fit(..., sampler=name)``."""
    if name not in SAMPLERS:
        raise UnknownNameError(f"unknown sampler {name!r}; choose one of {SAMPLERS}")
    return sampler if name == "nuts" else numpyro_sampler
