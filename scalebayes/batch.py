"""``fit_many``: many independent fits as one compiled, vectorised program.

Each dataset is prepared exactly as :func:`scalebayes.fit` would prepare it (its own centring and data-scaled
priors), padded with masked rows to a common number of runs, and stacked along a leading dataset axis; the sampler
(:func:`scalebayes.sampler.batch_sampler`) runs every chain of every dataset in one loop, each chain at its own pace
(see :mod:`scalebayes.sampler`). On CPU the batch is split over parallel threads (one core each), and in each the
datasets stream through a few dozen slots: each dataset passes its
warm-up window boundaries on its own and a slot whose dataset finished takes the next one, so the batch costs about
the mean fit's leapfrog steps per dataset rather than a multiple of the slowest chain's (``benchmarks/RESULTS.md``).
Diagnostics — rank-normalised split R-hat, bulk and tail ESS (Vehtari et al. 2021, the same numbers ArviZ gives)
and divergences — are computed for every dataset at once in NumPy, and every failing dataset is flagged. Full
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

import os
import warnings
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
from scipy import special, stats

from . import laws as _laws
from .data import ScalingData
from .diagnostics import ESS_MIN, RHAT_MAX, Diagnostics
from .errors import DataError, ModelError, SamplingWarning
from .fit import Prepared, build_datatree, constrained_summaries, prepare
from .model import population_sites
from .sampler import SamplerConfig, batch_sampler, to_numpy

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
    run, idx: list[int], preps, seed: int, workers: int, n_dev: int = 1, slots: int = 1 << 30, plan: int = 0
) -> tuple[dict, dict]:
    """``run`` over the datasets ``idx`` (indices into ``preps``), split into ``workers`` parallel threads (one
    device) or ``n_dev`` device shards of one call; each part is padded to one bucketed size (:func:`_bucket` of
    ``plan`` or ``len(idx)`` datasets over the parts) with fully masked datasets, so calls of nearby sizes reuse
    one compiled program and padding is never sampled. Dataset i's random stream is ``fold_in(key(seed), i)``
    whichever part it lands in. Returns numpy (draws, stats) for ``idx``, in order."""
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
            keys += [jax.random.fold_in(jax.random.key(seed), i) for i in b] + [jax.random.key(0)] * (size - len(b))
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


def _pad_runs(n: int) -> int:
    """Common padded number of runs for a batch: the next multiple of 8."""
    return int(-(-n // 8) * 8)


# ------------------------------------------------------------------------------------------- batched diagnostics
def _split(x: np.ndarray) -> np.ndarray:
    """(..., C, S) → (..., 2C, S//2): first and last halves of each chain (the middle draw dropped for odd S)."""
    half = x.shape[-1] // 2
    return np.concatenate([x[..., :half], x[..., x.shape[-1] - half :]], axis=-2)


def _z_scale(x: np.ndarray) -> np.ndarray:
    """Rank-normalise over the last two axes (chains × draws) together (Blom's offset 3/8)."""
    shape = x.shape
    flat = x.reshape(*shape[:-2], -1)
    rank = stats.rankdata(flat, method="average", axis=-1)
    z = special.ndtri((rank - 0.375) / (flat.shape[-1] + 0.25))
    return z.reshape(shape)


def _rhat(x: np.ndarray) -> np.ndarray:
    """Gelman-Rubin R-hat of (..., C, S) chains."""
    n = x.shape[-1]
    between = n * np.var(np.mean(x, axis=-1), axis=-1, ddof=1)
    within = np.mean(np.var(x, axis=-1, ddof=1), axis=-1)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.sqrt((between / within + n - 1) / n)


def _ess(x: np.ndarray) -> np.ndarray:
    """Effective sample size of (..., C, S) chains: FFT autocovariance, Geyer's initial positive and initial
    monotone sequences — ArviZ's ``_ess`` step for step, with its scalar loops run over all leading axes at once
    (masked), stopping as soon as every sequence has ended."""
    x = np.asarray(x, dtype=float)
    C, n = x.shape[-2:]
    lead = x.shape[:-2]
    const = (np.max(x, axis=(-2, -1)) - np.min(x, axis=(-2, -1))) < np.finfo(float).resolution
    m = 1 << int(np.ceil(np.log2(2 * n)))
    xc = x - x.mean(axis=-1, keepdims=True)
    f = np.fft.rfft(xc, n=m, axis=-1)
    acov = np.fft.irfft(f * np.conjugate(f), n=m, axis=-1)[..., :n] / n
    mean_var = np.mean(acov[..., 0], axis=-1) * n / (n - 1.0)
    var_plus = mean_var * (n - 1.0) / n
    if C > 1:
        var_plus = var_plus + np.var(x.mean(axis=-1), axis=-1, ddof=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        rho = 1.0 - (mean_var[..., None] - np.mean(acov, axis=-2)) / var_plus[..., None]  # (..., n)
    rho_t = np.zeros((*lead, n))
    rho_t[..., 0] = 1.0
    rho_t[..., 1] = rho[..., 1]
    r_even, r_odd = np.ones(lead), rho[..., 1].copy()
    t_end = np.ones(lead, dtype=int)
    active = np.ones(lead, dtype=bool)
    t = 1
    while t < n - 3:  # Geyer's initial positive sequence
        active = active & ((r_even + r_odd) > 0)
        if not active.any():
            break
        re, ro = rho[..., t + 1], rho[..., t + 2]
        r_even, r_odd = np.where(active, re, r_even), np.where(active, ro, r_odd)
        store = active & (re + ro >= 0)
        rho_t[..., t + 1] = np.where(store, re, rho_t[..., t + 1])
        rho_t[..., t + 2] = np.where(store, ro, rho_t[..., t + 2])
        t_end = np.where(active, t + 2, t_end)
        t += 2
    max_t = t_end - 2
    at = np.clip(max_t + 1, 0, n - 1)[..., None]
    rho_t_at = np.take_along_axis(rho_t, at, -1)[..., 0]
    np.put_along_axis(rho_t, at, np.where(r_even > 0, r_even, rho_t_at)[..., None], -1)
    t = 1
    top = int(max_t.max()) if max_t.size else -1
    while t <= top - 2:  # Geyer's initial monotone sequence
        on = t <= max_t - 2
        prev = rho_t[..., t - 1] + rho_t[..., t]
        bad = on & ((rho_t[..., t + 1] + rho_t[..., t + 2]) > prev)
        rho_t[..., t + 1] = np.where(bad, prev / 2.0, rho_t[..., t + 1])
        rho_t[..., t + 2] = np.where(bad, prev / 2.0, rho_t[..., t + 2])
        t += 2
    idx = np.arange(n)
    head = np.sum(np.where(idx <= max_t[..., None], rho_t, 0.0), axis=-1)
    extra = np.take_along_axis(rho_t, np.clip(max_t + 1, 0, n - 1)[..., None], -1)[..., 0]
    ess = C * n
    tau = np.maximum(-1.0 + 2.0 * head + extra, 1.0 / np.log10(ess))
    out = np.where(np.isnan(rho).any(axis=-1), np.nan, ess / tau)
    return np.where(const, float(C * n), out)


def _tail_prob() -> float:
    """ArviZ's default probability for tail ESS (``rcParams["stats.ci_prob"]``, 0.89 in ArviZ 1.x: quantiles 11% and
    89%), so that batch and single-fit diagnostics agree."""
    try:
        from arviz_base import rcParams

        return float(rcParams["stats.ci_prob"])
    except Exception:  # pragma: no cover - arviz_base always has it
        return 0.89


def batch_diagnostics(x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Rank-normalised split R-hat, bulk ESS and tail ESS of draws ``x`` (..., C, S), each (...,), matching
    ``arviz_stats.rhat`` / ``ess(method="bulk")`` / ``ess(method="tail")`` (tail quantiles from ArviZ's
    ``stats.ci_prob``)."""
    x = np.asarray(x, dtype=float)
    sx = _split(x)
    z = _z_scale(sx)  # ranks are most of the cost: once for bulk R-hat and bulk ESS
    r_bulk = _rhat(z)
    med = np.median(sx.reshape(*sx.shape[:-2], -1), axis=-1)[..., None, None]
    r_tail = _rhat(_z_scale(np.abs(sx - med)))
    rhat = np.maximum(r_bulk, r_tail)
    if x.shape[-2] < 2:  # ArviZ needs two chains for R-hat
        rhat = np.full(rhat.shape, np.nan)
    bulk = _ess(z)
    flat = x.reshape(*x.shape[:-2], -1)
    p = _tail_prob()
    q = np.quantile(flat, sorted((p, 1.0 - p)), axis=-1)  # (2, ...)
    tail = np.minimum(
        _ess(_split((x <= q[0][..., None, None]).astype(float))),
        _ess(_split((x <= q[1][..., None, None]).astype(float))),
    )
    return rhat, bulk, tail


def _posterior_vars(spec, centre: Mapping[str, np.ndarray], site: Mapping[str, np.ndarray], families) -> dict:
    """The posterior group's variables (as :func:`scalebayes.fit.build_datatree` names them), each (..., C, S),
    labelled like the diagnostics table (``name`` or ``name[family]``)."""
    out = constrained_summaries(spec, centre, site)
    multi = spec.n_families > 1
    res = {}

    def add(name, v, per_family):
        if per_family and multi:
            for j, f in enumerate(families):
                res[f"{name}[{f}]"] = v[..., j]
        else:
            res[name] = v[..., 0] if per_family else v

    for name in spec.law.params:
        add(name, out["params"][name], True)
    for name, v in out["derived"].items():
        add(name, v, True)
    if spec.noise == "family":
        add("sigma", out["noise"]["sigma"], True)
    else:
        res["sigma"] = out["noise"]["sigma"][..., 0]
    if spec.likelihood == "student_t":
        res["nu"] = out["noise"]["nu"]
    res.update({name: site[name] for name in population_sites(spec)})
    return res


def _make_diagnostics(labels, rhat, bulk, tail, divergences: int, steps: float, n: int) -> Diagnostics:
    """A :class:`~scalebayes.diagnostics.Diagnostics` from per-variable numbers, with the same checks and wording as
    :func:`scalebayes.diagnostics.compute`."""
    table = pd.DataFrame({"r_hat": rhat, "ess_bulk": bulk, "ess_tail": tail}, index=pd.Index(labels, name="name"))
    finite = table.replace([np.inf, -np.inf], np.nan)
    r_hat_max = float(np.nanmax(finite["r_hat"])) if finite["r_hat"].notna().any() else float("nan")
    b = float(np.nanmin(finite["ess_bulk"])) if finite["ess_bulk"].notna().any() else float("nan")
    t = float(np.nanmin(finite["ess_tail"])) if finite["ess_tail"].notna().any() else float("nan")
    failures = []
    if not np.isfinite(r_hat_max) or r_hat_max > RHAT_MAX:
        worst = finite["r_hat"].idxmax() if np.isfinite(r_hat_max) else "some parameter"
        failures.append(f"R-hat {r_hat_max:.3f} > {RHAT_MAX} ({worst})")
    if not np.isfinite(b) or b < ESS_MIN:
        failures.append(f"bulk ESS {b:.0f} < {ESS_MIN} ({finite['ess_bulk'].idxmin() if np.isfinite(b) else '?'})")
    if not np.isfinite(t) or t < ESS_MIN:
        failures.append(f"tail ESS {t:.0f} < {ESS_MIN} ({finite['ess_tail'].idxmin() if np.isfinite(t) else '?'})")
    if divergences:
        failures.append(f"{divergences} divergent transition{'s' if divergences > 1 else ''}")
    return Diagnostics(r_hat_max, b, t, int(divergences), float(steps), int(n), tuple(failures), table)


# ------------------------------------------------------------------------------------------------------ results
@dataclass
class _Group:
    """Datasets of one model structure, fitted together."""

    index: list[int]
    preps: list[Prepared]
    draws: dict[str, np.ndarray]  # site -> (b, C, S, ...)
    stats: dict[str, np.ndarray]  # (b, C, S) and step_size (b, C)


class FitBatch(Sequence):
    """Results of :func:`fit_many`: a sequence of :class:`~scalebayes.posterior.Posterior` built on demand.

    ``batch[i]`` builds (and caches) the i-th posterior with its DataTree; ``batch.diagnostics[i]`` and ``batch.ok``
    are available at once, computed for every dataset when the batch finished. ``batch.summary()`` is a
    one-row-per-dataset table of posterior means, standard deviations and diagnostics without building any
    DataTree.
    """

    def __init__(self, datasets, groups: list[_Group], diagnostics: list[Diagnostics], summaries, options: dict):
        self.datasets = list(datasets)
        self._groups = groups
        self._where = {i: (g, j) for g in groups for j, i in enumerate(g.index)}
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
        from .posterior import Posterior

        g, j = self._where[i]
        site = {k: v[j] for k, v in g.draws.items()}
        stats_ = {k: v[j] for k, v in g.stats.items()}
        o = self._options
        idata = build_datatree(
            self.datasets[i], g.preps[j], site, stats_, pointwise=o["pointwise"], seed=o["seed"] + i, config=o["config"]
        )
        post = Posterior(idata, data=self.datasets[i])
        post.__dict__["diagnostics"] = self.diagnostics[i]  # computed for the whole batch already
        return post

    def __repr__(self) -> str:
        return f"FitBatch({len(self)} fits, {int(self.ok.sum())} with diagnostics ok)"


def fit_many(
    datasets: Sequence[ScalingData],
    law: str | _laws.Law = "chinchilla",
    *,
    likelihood: str = "student_t",
    chains: int = 4,
    draws: int = 1000,
    warmup: int = 1000,
    seed: int = 0,
    priors: Mapping | None = None,
    pooling: str | None = None,
    shared: tuple[str, ...] = (),
    free: tuple[str, ...] = (),
    noise: str = "shared",
    dense_mass: bool = True,
    target_accept: float = 0.9,
    max_tree_depth: int = 10,
    dtype: str = "float64",
    pointwise: bool | str = "auto",
    warn: bool = True,
    batch_size: int | None = None,
    devices: int | None = None,
    slots: int | None = None,
    workers: int | None = None,
    progress: bool = False,
) -> FitBatch:
    """Fit the same law to many independent datasets in one compiled, vectorised program.

    Takes :func:`scalebayes.fit`'s options (applied to every dataset) and returns a :class:`FitBatch`: ``batch[i]``
    is the :class:`~scalebayes.posterior.Posterior` of ``datasets[i]``, the same model (priors scaled to each
    dataset, same sampler settings) a separate ``fit`` would give, built lazily; diagnostics are computed for every
    dataset up front and failures are flagged (``batch.ok``, ``batch.failed``, and one
    :class:`~scalebayes.errors.SamplingWarning` naming them when ``warn``).

    Datasets are padded (masked rows) to a common number of runs, a multiple of 8, and a queue longer than the
    slots is padded with fully masked datasets (never sampled) to one of four sizes per doubling, so a later call
    with a few more or fewer datasets reuses the compiled program. Datasets whose model structure differs (number
    of families, pooling) run as separate programs. Dataset ``i`` uses the random stream
    ``fold_in(key(seed), i)``, and its draws do not depend on which other datasets share its batch, on
    ``slots`` or on ``workers`` (tested), so a batch is reproducible across machines; they differ from
    ``fit(..., seed=...)``'s draws, which use another stream.

    Args:
        datasets: the runs tables (:class:`~scalebayes.data.ScalingData`).
        law, likelihood, chains, draws, warmup, seed, priors, pooling, shared, free, noise, dense_mass,
            target_accept, max_tree_depth, dtype, pointwise, warn: as for :func:`scalebayes.fit`.
        batch_size: datasets per compiled program (default: all of them, up to 1024); larger lists run in chunks
            of that size (the last one padded), one compilation for all chunks.
        devices: number of JAX devices to shard the dataset axis over (default: all of ``jax.devices()``).
        slots: datasets sampled side by side on each device (default :data:`DEFAULT_SLOTS` on CPU, the whole
            batch on an accelerator); the
            others wait in a queue and take a slot when a dataset finishes. Each dataset's draws are the same
            whatever the number of slots (up to floating-point rounding); only the run time changes.
        workers: on a CPU with one JAX device, split each batch into this many equal parts and run them in
            parallel threads, one core each (default: the CPU cores this process may use; XLA runs one compiled
            loop on one core, and the datasets are independent). 1 with several devices, where the batch is sharded
            instead.
        progress: accepted for symmetry with ``fit``; nothing is printed.
    """
    datasets = list(datasets)
    if not datasets:
        raise DataError("fit_many needs at least one dataset")
    for name, v in (("chains", chains), ("draws", draws)):
        if int(v) < 1:
            raise ModelError(f"{name} must be >= 1, got {v}")
    if int(warmup) < 0:
        raise ModelError(f"warmup must be >= 0, got {warmup}")
    del progress
    opts = dict(likelihood=likelihood, priors=priors, pooling=pooling, shared=shared, free=free, noise=noise)
    first = [prepare(d, law, dtype=dtype, **opts) for d in datasets]  # validates every dataset
    n_pad = _pad_runs(max(p.n_obs for p in first))
    preps = [prepare(d, law, dtype=dtype, n_pad=n_pad, **opts) for d in datasets]
    config = SamplerConfig(
        chains=int(chains),
        warmup=int(warmup),
        draws=int(draws),
        dense_mass=bool(dense_mass),
        target_accept=float(target_accept),
        max_tree_depth=int(max_tree_depth),
    )
    n_dev = len(jax.devices()) if devices is None else max(1, min(int(devices), len(jax.devices())))
    size = min(len(datasets), DEFAULT_BATCH) if batch_size is None else max(1, int(batch_size))
    size = -(-size // n_dev) * n_dev  # a multiple of the device count
    if slots is None:
        n_slots = DEFAULT_SLOTS if jax.default_backend() == "cpu" else size  # accelerators: all side by side
    else:
        n_slots = max(1, int(slots))
    if workers is None:
        workers = _cores() if (jax.default_backend() == "cpu" and n_dev == 1) else 1
    workers = max(1, int(workers)) if n_dev == 1 else 1
    by_spec: dict = {}
    for i, p in enumerate(preps):
        by_spec.setdefault(p.spec, []).append(i)
    groups = []
    for spec, idx in by_spec.items():
        run = batch_sampler(spec, n_pad, config, dtype, n_dev, n_slots)
        draws_parts, stats_parts = [], []
        for start in range(0, len(idx), size):
            chunk = idx[start : start + size]
            # every chunk planned as a full one: the last, shorter chunk reuses the same compiled program
            d, s = _run_parts(run, chunk, preps, seed, workers, n_dev, n_slots, plan=min(size, len(idx)))
            draws_parts.append(d)
            stats_parts.append(s)
        cat = lambda parts: {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}  # noqa: E731
        groups.append(_Group(idx, [preps[i] for i in idx], cat(draws_parts), cat(stats_parts)))
    diags: list[Diagnostics | None] = [None] * len(datasets)
    summaries: list[dict | None] = [None] * len(datasets)
    for g in groups:
        spec = g.preps[0].spec
        centre = {k: np.asarray([p.centre[k] for p in g.preps])[:, None, None, None] for k in spec.law.inputs}
        vars_ = _posterior_vars(spec, centre, g.draws, datasets[g.index[0]].families)
        labels = list(vars_)
        arr = np.stack([np.asarray(vars_[k], dtype=float) for k in labels], axis=1)  # (b, V, C, S)
        # ~32 MB of draws per chunk, and at least one chunk per worker: NumPy's sorts and FFTs release the GIL
        cores = _cores()
        step = max(1, min((1 << 22) // max(1, arr[0].size), -(-len(arr) // cores)))
        chunks = [arr[k : k + step] for k in range(0, len(arr), step)]
        with ThreadPoolExecutor(max_workers=min(cores, len(chunks))) as pool:
            parts = list(pool.map(batch_diagnostics, chunks))
        rhat, bulk, tail = (np.concatenate([p[m] for p in parts]) for m in range(3))
        div = g.stats["diverging"].sum(axis=(1, 2))
        steps = g.stats["num_steps"].mean(axis=(1, 2))
        mean, sd = arr.mean(axis=(2, 3)), arr.std(axis=(2, 3), ddof=1)
        n = int(config.chains * config.draws)
        for j, i in enumerate(g.index):
            diags[i] = _make_diagnostics(labels, rhat[j], bulk[j], tail[j], int(div[j]), float(steps[j]), n)
            summaries[i] = {
                **{f"{k}_mean": mean[j, v] for v, k in enumerate(labels)},
                **{f"{k}_sd": sd[j, v] for v, k in enumerate(labels)},
            }
    options = {"pointwise": pointwise, "seed": int(seed), "config": config}
    batch = FitBatch(datasets, groups, diags, summaries, options)
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
