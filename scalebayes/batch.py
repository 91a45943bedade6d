"""``fit_many``: many independent fits as one compiled, vectorised program.

Each dataset is prepared exactly as :func:`scalebayes.fit` would prepare it (its own centring and data-scaled
priors), padded with masked rows to a common number of runs, and stacked along a leading dataset axis; the sampler
(:func:`scalebayes.sampler.batch_sampler`) runs every chain of every dataset in one loop, each chain at its own pace
(see :mod:`scalebayes.sampler`). On CPU the batch is split over parallel threads (one core each), and in each the
datasets stream through a few dozen slots: each dataset passes its
warm-up window boundaries on its own and a slot whose dataset finished takes the next one, so the batch costs about
the mean fit's leapfrog steps per dataset rather than a multiple of the slowest chain's (``benchmarks/RESULTS.md``).
Diagnostics — rank-normalised split R-hat, bulk and tail ESS (Vehtari et al. 2021, the same numbers ArviZ gives)
and divergences — are computed for every dataset at once in NumPy by :mod:`scalebayes.diagnostics` (the code and
verdict ``fit`` uses too), and every failing dataset is flagged. Full
:class:`~scalebayes.posterior.Posterior` objects (with their ArviZ DataTree) are built only when asked for:
``batch[i]``.

Several devices: with more than one JAX device (GPUs, or CPU devices from
``XLA_FLAGS=--xla_force_host_platform_device_count=N`` set before JAX is imported) the dataset axis is sharded over
them with ``shard_map``; datasets are independent, so devices never communicate. Several hosts: start every process
with ``jax.distributed.initialize()`` and let each fit its own slice, e.g.
``fit_many(datasets[jax.process_index()::jax.process_count()], ...)``, then gather the results (e.g. the
per-dataset ``summary()`` frames) with your usual tools; nothing in a fit needs another host's data.
"""

from __future__ import annotations

import functools
import os
import warnings
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
import xarray as xr

from . import laws as _laws
from . import noise_refit
from .data import ScalingData
from .diagnostics import Diagnostics, batch_diagnostics, merged, summarise
from .errors import DataError, ModelError, SamplingWarning
from .fitting import Prepared, build_datatree, posterior_group, prepare, warn_if_large
from .misfit import median_log_mean
from .padding import pad_size
from .pointwise import want_pointwise
from .posterior import Posterior
from .precision import ensure_float64
from .sampler import SamplerConfig, batch_sampler, to_numpy
from .spec import FitSpec, check_dtype, check_seed, resolve, sampler_config

#: Datasets per compiled batch by default (all of them up to this; larger lists run in chunks of this size, each
#: chunk padded to the same shape so one compilation serves every chunk).
DEFAULT_BATCH = 1024

#: Datasets sampled side by side (per device) by default; the rest of a batch queues and streams through these
#: slots (:func:`scalebayes.sampler.batch_sampler`). On CPU a chain's leapfrog step costs about the same
#: (1.6-1.8 µs for 40 runs, one core) from 8 to 128 datasets at once, so more slots buy nothing and only lengthen
#: the tail (the slots that idle while the last datasets finish); 32 keeps the per-step overhead amortised. A GPU
#: wants many more.
DEFAULT_SLOTS = 32


def _cores() -> int:
    """CPU cores this process may run on (its affinity mask where the OS has one, e.g. a CI container's share)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def _bucket(n: int, slots: int) -> int:
    """Datasets per compiled program for ``n`` streaming through ``slots``: ``n`` itself when they all fit in the
    slots (padding there would be sampled side by side, costing lanes), else rounded up to 8, 10, 12, 14, 16, 20,
    24, 28, 32, 40, ... (four sizes per doubling, at most 25% over), so queues of nearby lengths share one
    compilation. The extra rows are fully masked padding datasets, which the sampler never loads into a slot
    (:func:`scalebayes.sampler.batch_sampler`); only their start is computed."""
    n = int(n)
    if n <= max(int(slots), 8):
        return n
    step = 1 << (n.bit_length() - 3)
    return -(-n // step) * step


def _run_parts(
    run,
    idx: list[int],
    preps,
    seed: int,
    workers: int,
    n_dev: int = 1,
    slots: int = 1 << 30,
    plan: int = 0,
    salt: int = 0,
) -> tuple[dict, dict]:
    """``run`` over the datasets ``idx`` (indices into ``preps``), split into ``workers`` parallel threads (one
    device) or ``n_dev`` device shards of one call; each part is padded to one bucketed size (:func:`_bucket` of
    ``plan`` or ``len(idx)`` datasets over the parts) with fully masked datasets, so calls of nearby sizes reuse
    one compiled program and padding is never sampled. Dataset i's random stream is ``fold_in(key(seed), i)``
    (then ``fold_in(·, salt)`` for a second pass over the same datasets, e.g. the noise refits) whichever part it
    lands in. Returns numpy (draws, stats) for ``idx``, in order."""
    n_parts = max(1, n_dev if n_dev > 1 else min(workers, len(idx)))
    per = -(-len(idx) // n_parts)
    blocks = [idx[k * per : (k + 1) * per] for k in range(n_parts)]
    size = _bucket(-(-max(len(idx), plan) // n_parts), slots)
    template = preps[idx[0]].args
    pad_args = (*template[:3], jnp.zeros_like(template[3]), template[4])  # no run unmasked: padding

    def call(parts):
        rows, keys, where = [], [], []
        for b in parts:
            where += [len(rows) + j for j in range(len(b))]
            rows += [preps[i].args for i in b] + [pad_args] * (size - len(b))
            keys += [_stream(seed, i, salt) for i in b] + [jax.random.key(0)] * (size - len(b))
        args = jax.tree.map(lambda *a: jnp.stack(a), *rows)
        draws, stats = to_numpy(run(jnp.stack(keys), *args))
        pick = np.asarray(where)
        return {k: v[pick] for k, v in draws.items()}, {k: v[pick] for k, v in stats.items()}

    if n_dev > 1 or n_parts == 1:
        return call(blocks)
    blocks = [b for b in blocks if b]  # e.g. 5 datasets on 4 threads: 2 + 2 + 1
    # jitted calls release the GIL while XLA runs, so threads run the parts on separate cores
    with ThreadPoolExecutor(max_workers=n_parts) as pool:
        outs = list(pool.map(lambda b: call([b]), blocks))
    cat = lambda j: {k: np.concatenate([o[j][k] for o in outs]) for k in outs[0][j]}  # noqa: E731
    return cat(0), cat(1)


def _stream(seed: int, i: int, salt: int):
    """Dataset ``i``'s key: ``fold_in(key(seed), i)``, folded with ``salt`` unless it is 0."""
    key = jax.random.fold_in(jax.random.key(seed), i)
    return jax.random.fold_in(key, salt) if salt else key


def _posterior_quantities(spec, centre: Mapping[str, np.ndarray], draws: Mapping[str, np.ndarray], families):
    """The posterior group's scalar quantities for a group of datasets, labelled like the diagnostics table
    (``name`` or ``name[family]``, in the DataTree's order): labels and draws (b, quantities, chains, draws)."""
    post, dims, _ = posterior_group(spec, centre, draws)
    labels, cols = [], []
    for name, v in post.items():
        if name in dims:  # (b, C, S, F): one quantity per family
            labels += [f"{name}[{f}]" for f in families]
            cols += [v[..., j] for j in range(len(families))]
        else:
            labels.append(name)
            cols.append(v)
    return labels, np.stack([np.asarray(c, dtype=float) for c in cols], axis=1)


# ------------------------------------------------------------------------------------------------------ results
@dataclass
class _Group:
    """Datasets of one model structure, fitted together."""

    index: list[int]
    preps: list[Prepared]
    draws: dict[str, np.ndarray]  # site -> (b, C, S, ...)
    stats: dict[str, np.ndarray]  # (b, C, S) and step_size (b, C)

    def centres(self) -> dict[str, np.ndarray]:
        """Each dataset's centre of the law's log inputs, (b, 1, 1, 1) per input: broadcasts against draws."""
        inputs = self.preps[0].spec.law.inputs
        return {k: np.asarray([p.centre[k] for p in self.preps])[:, None, None, None] for k in inputs}

    def datatree(self, j: int, data: ScalingData, *, pointwise, seed: int, options: dict):
        """The DataTree of the group's ``j``-th dataset ``data``, as ``fit`` builds it."""
        site = {k: v[j] for k, v in self.draws.items()}
        stats_ = {k: v[j] for k, v in self.stats.items()}
        return build_datatree(
            data,
            self.preps[j],
            site,
            stats_,
            pointwise=pointwise,
            seed=seed,
            config=options["config"],
            dtype=options["dtype"],
        )


def _located(groups: list[_Group]) -> dict[int, tuple[_Group, int]]:
    """Dataset index -> (its group, its position in the group)."""
    return {i: (g, j) for g in groups for j, i in enumerate(g.index)}


@dataclass
class _Refits:
    """Every dataset's noise refit (:mod:`scalebayes.noise_refit`): its residual runs, the sampled groups and
    each dataset's diagnostics (in dataset order)."""

    data: list[ScalingData]
    groups: list[_Group]
    diagnostics: list[Diagnostics]

    def group(self, i: int, options: dict) -> xr.Dataset:
        """Dataset ``i``'s DataTree group ``run_noise``, built as ``fit`` builds it."""
        g, j = _located(self.groups)[i]
        seed = options["seed"] + i
        idata = g.datatree(j, self.data[i], pointwise=False, seed=seed, options=options)
        return noise_refit.group(Posterior(idata, data=self.data[i]), seed)


def _refit_noise(datasets, groups: list[_Group], n_pad: int, config, dtype: str, seed: int, lay) -> _Refits:
    """The cut noise refit of every dataset, batched like the laws' fits: each dataset's residuals about its
    posterior-median law (:func:`fitted_log_loss` of its draws, without building its DataTree), then
    :data:`scalebayes.noise_refit.SHIFT` fitted to them with the noise trend, the law fit's checkpoint weights,
    noise priors and sampler settings. Dataset i's stream is ``fold_in(fold_in(key(seed), i), noise_refit.STREAM)``."""
    data: list = [None] * len(datasets)
    preps: list = [None] * len(datasets)
    for g in groups:
        for j, (i, fitted) in enumerate(zip(g.index, _fitted_log_losses(g, datasets), strict=True)):
            p = g.preps[j]
            data[i] = noise_refit.residual_data(datasets[i], fitted)
            w = noise_refit.weights(datasets[i], p.checkpoints)
            opts = noise_refit.options(p.spec, p.priors)
            preps[i] = prepare(data[i], noise_refit.SHIFT, dtype=dtype, weights=w, n_pad=n_pad, **opts)
    refit_groups = _sample_groups(preps, n_pad, config, dtype, seed, lay, salt=noise_refit.STREAM)
    diags: list = [None] * len(datasets)
    for g in refit_groups:
        for i, d, _ in _group_diagnostics(g, datasets[g.index[0]].families, config.max_tree_depth):
            diags[i] = d
    return _Refits(data, refit_groups, diags)


def _fitted_log_losses(g: _Group, datasets) -> list[np.ndarray]:
    """:func:`scalebayes.misfit.fitted_log_loss` of every dataset of a group, (n_i,) each, from the group's draws."""
    spec = g.preps[0].spec
    published = posterior_group(spec, g.centres(), g.draws)[0]
    params = {k: np.asarray(published[k]) for k in spec.law.params}
    out = []
    for j, i in enumerate(g.index):
        fams = list(datasets[i].families)
        draws = functools.partial(_family_draws, params, j, fams)
        out.append(median_log_mean(spec.law, datasets[i].frame, fams, draws))
    return out


def _family_draws(params: dict, j: int, families: list[str], family: str) -> dict:
    """Dataset ``j``'s published parameters for ``family``, each (C·S,), chains in order, as
    :meth:`scalebayes.posterior.Posterior.param_draws` gives them; ``params`` (b, C, S[, F]) from the group."""
    pick = (lambda v: v[..., families.index(family)]) if len(families) > 1 else (lambda v: v)
    return {k: jnp.asarray(pick(v[j]).reshape(-1)) for k, v in params.items()}


class FitBatch(Sequence):
    """Results of :func:`fit_many`: a sequence of :class:`~scalebayes.posterior.Posterior` built on demand.

    ``batch[i]`` builds (and caches) the i-th posterior with its DataTree; ``batch.diagnostics[i]`` and ``batch.ok``
    are available at once, computed for every dataset when the batch finished. ``batch.summary()`` is a
    one-row-per-dataset table of posterior means, standard deviations and diagnostics without building any
    DataTree.
    """

    def __init__(
        self,
        datasets,
        groups: list[_Group],
        diagnostics: list[Diagnostics],
        summaries,
        options: dict,
        refits: _Refits | None = None,
    ):
        self.datasets = list(datasets)
        self._refits = refits
        self._groups = groups
        self._where = _located(groups)
        self.diagnostics: list[Diagnostics] = diagnostics
        self._summaries = summaries
        self._options = options
        self._cache: dict[int, object] = {}

    def __len__(self) -> int:
        return len(self.datasets)

    def __getitem__(self, i):
        if isinstance(i, slice):
            return [self[k] for k in range(*i.indices(len(self)))]
        i = int(i)
        if i < 0:
            i += len(self)
        if not 0 <= i < len(self):
            raise IndexError(f"batch index {i} out of range for {len(self)} fits")
        if i not in self._cache:
            self._cache[i] = self._posterior(i)
        return self._cache[i]

    @property
    def ok(self) -> np.ndarray:
        """(B,) bool: whether each fit's diagnostics passed."""
        return np.array([d.ok for d in self.diagnostics], dtype=bool)

    @property
    def failed(self) -> list[int]:
        """Indices of the fits whose diagnostics failed."""
        return [i for i, d in enumerate(self.diagnostics) if not d.ok]

    def summary(self) -> pd.DataFrame:
        """One row per dataset: posterior mean and sd of every posterior variable (``E_mean``, ``E_sd``, ...), the
        worst R-hat, the smallest bulk/tail ESS, divergences and ``ok``."""
        rows = []
        for i, d in enumerate(self.diagnostics):
            row = {"dataset": self.datasets[i].name, **self._summaries[i]}
            row.update({k: v for k, v in d.to_dict().items() if k not in ("failures", "n_samples")})
            rows.append(row)
        return pd.DataFrame(rows)

    def _posterior(self, i: int):
        g, j = self._where[i]
        o = self._options
        idata = g.datatree(j, self.datasets[i], pointwise=o["pointwise"], seed=o["seed"] + i, options=o)
        if self._refits is not None:
            idata = noise_refit.attached(idata, self._refits.group(i, o))
        post = Posterior(idata, data=self.datasets[i])
        post.__dict__["diagnostics"] = self.diagnostics[i]  # computed for the whole batch already
        return post

    def __repr__(self) -> str:
        return f"FitBatch({len(self)} fits, {int(self.ok.sum())} with diagnostics ok)"


def fit_many(
    datasets: Sequence[ScalingData],
    law: str | _laws.Law | FitSpec | None = None,
    *,
    spec: FitSpec | None = None,
    chains: int = 4,
    draws: int = 1000,
    warmup: int = 1000,
    seed: int = 0,
    dense_mass: bool = True,
    target_accept: float = 0.9,
    max_tree_depth: int = 10,
    progress: bool | None = None,
    dtype: str = "float64",
    pointwise: bool | str = "auto",
    warn: bool = True,
    batch_size: int | None = None,
    devices: int | None = None,
    slots: int | None = None,
    workers: int | None = None,
    **options,
) -> FitBatch:
    """Fit the same law to many independent datasets in one compiled, vectorised program.

    Takes :func:`scalebayes.fit`'s options (applied to every dataset; the model as ``spec=`` a
    :class:`~scalebayes.spec.FitSpec` or as its fields as keywords) and returns a :class:`FitBatch`: ``batch[i]``
    is the :class:`~scalebayes.posterior.Posterior` of ``datasets[i]``, the same model (priors scaled to each
    dataset, same sampler settings) a separate ``fit`` would give, built lazily; diagnostics are computed for every
    dataset up front with the same code and verdict as ``fit``'s (:mod:`scalebayes.diagnostics`) and failures are
    flagged (``batch.ok``, ``batch.failed``, and one :class:`~scalebayes.errors.SamplingWarning` naming them when
    ``warn``).

    Datasets are padded (masked rows) to a common number of runs (:func:`scalebayes.padding.pad_size` of the
    largest), and a queue longer than the slots is padded with fully masked datasets (never sampled) to one of four
    sizes per doubling, so a later call with a few more or fewer datasets reuses the compiled program. Datasets
    whose model structure differs (number of families, pooling) run as separate programs. Dataset ``i`` uses the
    random stream ``fold_in(key(seed), i)``, and its draws do not depend on which other datasets share its batch,
    on ``slots`` or on ``workers`` (tested), so a batch is reproducible across machines; they differ from
    ``fit(..., seed=...)``'s draws, which use another stream. With the cut noise trend (``noise_trend="auto"``,
    the default for laws of N and D) every dataset's noise is then refitted to its law's residuals, as ``fit``
    does (:mod:`scalebayes.noise_refit`), in a second batched pass (:func:`_refit_noise`); a dataset's
    diagnostics are those of both fits.

    Args:
        datasets: the runs tables (:class:`~scalebayes.data.ScalingData`).
        law, spec, chains, draws, warmup, seed, dense_mass, target_accept, max_tree_depth, progress, dtype,
            pointwise, warn, **options: as for :func:`scalebayes.fit` (the progress bar counts datasets finished).
        batch_size: datasets per compiled program (default: all of them, up to 1024); larger lists run in chunks
            of that size (the last one padded), one compilation for all chunks.
        devices: number of JAX devices to shard the dataset axis over (default: all of ``jax.devices()``).
        slots: datasets sampled side by side on each device (default :data:`DEFAULT_SLOTS` on CPU, the whole
            batch on an accelerator); the others wait in a queue and take a slot when a dataset finishes. Each
            dataset's draws are the same whatever the number of slots (up to floating-point rounding); only the
            run time changes.
        workers: on a CPU with one JAX device, split each batch into this many equal parts and run them in
            parallel threads, one core each (default: the CPU cores this process may use; XLA runs one compiled
            loop on one core, and the datasets are independent). 1 with several devices, where the batch is sharded
            instead.
    """
    fit_spec = resolve(spec, law, options)
    config = sampler_config(
        chains=chains,
        warmup=warmup,
        draws=draws,
        dense_mass=dense_mass,
        target_accept=target_accept,
        max_tree_depth=max_tree_depth,
        progress=progress,
    )
    seed, dtype = check_seed(seed), check_dtype(dtype)
    want_pointwise(pointwise, 0, 0)  # validates the value before any work
    ensure_float64("fit_many(dtype='float64')", required=dtype == "float64")
    datasets = list(datasets)
    preps, n_pad = _prepare_all(datasets, fit_spec, dtype)
    if warn:
        biggest = max(preps, key=lambda p: (p.spec.n_families, p.n_obs))
        warn_if_large(biggest, config, f"fit_many: each of the {len(datasets)} fits")
    layout = _layout(len(datasets), batch_size, devices, slots, workers)
    groups = _sample_groups(preps, n_pad, config, dtype, seed, layout)
    diags: list[Diagnostics | None] = [None] * len(datasets)
    summaries: list[dict | None] = [None] * len(datasets)
    for g in groups:
        for i, d, summary in _group_diagnostics(g, datasets[g.index[0]].families, config.max_tree_depth):
            diags[i], summaries[i] = d, summary
    refits = _refit_noise(datasets, groups, n_pad, config, dtype, seed, layout) if fit_spec.cut_trend else None
    if refits is not None:  # a failure of either fit fails, as fit()'s diagnostics do
        diags = [merged(d, r, noise_refit.LABEL) for d, r in zip(diags, refits.diagnostics, strict=True)]
    options_ = {"pointwise": pointwise, "seed": seed, "config": config, "dtype": dtype}
    batch = FitBatch(datasets, groups, diags, summaries, options_, refits)
    if warn and batch.failed:
        bad = batch.failed
        shown = ", ".join(map(str, bad[:20])) + (", ..." if len(bad) > 20 else "")
        warnings.warn(
            f"fit_many: sampler diagnostics failed for {len(bad)} of {len(batch)} datasets (indices {shown}); "
            "see batch.diagnostics[i] and do not trust those posteriors as they are.",
            SamplingWarning,
            stacklevel=2,
        )
    return batch


def _prepare_all(datasets: list, fit_spec: FitSpec, dtype: str) -> tuple[list[Prepared], int]:
    """Every dataset prepared as ``fit`` would, padded to one number of runs (the padding rule applied to the
    largest dataset); every dataset is validated before any is sampled."""
    if not datasets:
        raise DataError("fit_many needs at least one dataset")
    first = [prepare(d, spec=fit_spec, dtype=dtype) for d in datasets]
    n_pad = pad_size(max(p.n_obs for p in first))
    return [prepare(d, spec=fit_spec, dtype=dtype, n_pad=n_pad) for d in datasets], n_pad


@dataclass(frozen=True)
class _Layout:
    """How a batch is spread: devices, datasets per compiled call, slots per device, CPU threads."""

    n_dev: int
    size: int
    slots: int
    workers: int


def _layout(n: int, batch_size, devices, slots, workers) -> _Layout:
    """Resolve fit_many's scheduling options (see its docstring) for ``n`` datasets."""
    for name, v in (("batch_size", batch_size), ("devices", devices), ("slots", slots), ("workers", workers)):
        if v is not None and (isinstance(v, bool) or not isinstance(v, int | np.integer) or v < 1):
            raise ModelError(f"{name} must be a whole number >= 1 or None, got {v!r}")
    n_dev = len(jax.devices()) if devices is None else min(int(devices), len(jax.devices()))
    size = min(n, DEFAULT_BATCH) if batch_size is None else int(batch_size)
    size = -(-size // n_dev) * n_dev  # a multiple of the device count
    cpu = jax.default_backend() == "cpu"
    n_slots = (DEFAULT_SLOTS if cpu else size) if slots is None else int(slots)  # accelerators: all side by side
    if n_dev > 1:
        workers = 1
    elif workers is None:
        workers = _cores() if cpu else 1
    return _Layout(n_dev, size, n_slots, int(workers))


def _sample_groups(
    preps, n_pad: int, config: SamplerConfig, dtype: str, seed: int, lay: _Layout, salt: int = 0
) -> list[_Group]:
    """Sample every dataset: one compiled program per model structure, run over chunks of ``lay.size`` (random
    streams as :func:`_run_parts` says)."""
    by_spec: dict = {}
    for i, p in enumerate(preps):
        by_spec.setdefault(p.spec, []).append(i)
    groups = []
    for spec, idx in by_spec.items():
        run = batch_sampler(spec, n_pad, config, dtype, lay.n_dev, lay.slots)
        parts = []
        for start in range(0, len(idx), lay.size):
            chunk = idx[start : start + lay.size]
            # every chunk planned as a full one: the last, shorter chunk reuses the same compiled program
            plan = min(lay.size, len(idx))
            parts.append(_run_parts(run, chunk, preps, seed, lay.workers, lay.n_dev, lay.slots, plan=plan, salt=salt))
        draws_, stats_ = ({k: np.concatenate([p[j][k] for p in parts]) for k in parts[0][j]} for j in (0, 1))
        groups.append(_Group(idx, [preps[i] for i in idx], draws_, stats_))
    return groups


def _group_diagnostics(g: _Group, families, max_tree_depth: int):
    """(dataset index, Diagnostics, summary row) for every dataset of a group: R-hat and ESS of every posterior
    quantity of every dataset at once (:func:`scalebayes.diagnostics.batch_diagnostics`, in threads), and the
    verdict of :func:`scalebayes.diagnostics.summarise`."""
    spec = g.preps[0].spec
    labels, arr = _posterior_quantities(spec, g.centres(), g.draws, families)  # (b, V, C, S)
    # ~32 MB of draws per chunk, and at least one chunk per worker: NumPy's sorts and FFTs release the GIL
    cores = _cores()
    step = max(1, min((1 << 22) // max(1, arr[0].size), -(-len(arr) // cores)))
    chunks = [arr[k : k + step] for k in range(0, len(arr), step)]
    with ThreadPoolExecutor(max_workers=min(cores, len(chunks))) as pool:
        parts = list(pool.map(batch_diagnostics, chunks))
    rhat, bulk, tail = (np.concatenate([p[m] for p in parts]) for m in range(3))
    mean, sd = arr.mean(axis=(2, 3)), arr.std(axis=(2, 3), ddof=1)
    for j, i in enumerate(g.index):
        d = summarise(
            labels,
            rhat[j],
            bulk[j],
            tail[j],
            diverging=g.stats["diverging"][j],
            n_steps=g.stats["num_steps"][j],
            max_tree_depth=max_tree_depth,
        )
        summary = {f"{k}_mean": mean[j, v] for v, k in enumerate(labels)}
        summary.update({f"{k}_sd": sd[j, v] for v, k in enumerate(labels)})
        yield i, d, summary
