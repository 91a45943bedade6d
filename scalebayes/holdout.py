"""Holdout splits and refits on subsets: the data side of backtests and calibration.

:func:`holdout_mask` picks the largest runs (by compute C or parameters N) to hold out; :func:`fit_padded` refits a
subset with the sampler's padded size fixed, so every split of one dataset reuses one compiled sampler;
:func:`refit_settings` reads back the settings a posterior was fitted with, so a refit is the same model.
"""

from __future__ import annotations

import jax
import numpy as np

from . import priors as _priors
from .data import ScalingData
from .errors import DataError, ModelError, UnknownNameError
from .fit import build_datatree, prepare
from .posterior import Posterior
from .sampler import SamplerConfig, chain_method_for, sampler, to_numpy

#: Split directions and the column each sorts by: the largest runs by compute C (FLOP) or by parameters N.
SPLITS = ("compute", "params")
SPLIT_COLUMN = {"compute": "C", "params": "N"}


def holdout_mask(
    data: ScalingData, split: str | np.ndarray = "compute", holdout_fraction: float = 0.2, per_family: bool = False
) -> np.ndarray:
    """Boolean (n,): True for the held-out (largest) runs.

    ``split="compute"`` holds out the runs with the largest C, ``"params"`` the largest N; an array is taken as
    the mask itself. Runs tied on the split value fall on the same side: the cut is placed between distinct values,
    at the count closest to ``holdout_fraction``·n (at least one run held out, at least one kept). With
    ``per_family`` the cut is made within each family.
    """
    if not isinstance(split, str):
        mask = np.asarray(split, dtype=bool)
        if mask.shape != (len(data),):
            raise DataError(f"split mask has shape {mask.shape}, expected ({len(data)},)")
        if mask.all() or not mask.any():
            raise DataError("split mask must hold out some runs and keep some")
        return mask
    if split not in SPLITS:
        raise UnknownNameError(f"unknown split {split!r}; choose one of {SPLITS} or pass a boolean mask")
    if not 0.0 < float(holdout_fraction) < 1.0:
        raise ModelError(f"holdout_fraction must be in (0, 1), got {holdout_fraction}")
    v = data.frame[SPLIT_COLUMN[split]].to_numpy()
    out = np.zeros(len(data), bool)
    groups = (
        [np.asarray(data.frame["family"] == f) for f in data.families] if per_family else [np.ones(len(data), bool)]
    )
    for g in groups:
        out[g] = _cut(v[g], holdout_fraction)
    return out


def _cut(v: np.ndarray, fraction: float) -> np.ndarray:
    levels = np.unique(v)[::-1]  # descending
    if len(levels) < 2:
        raise DataError("cannot split runs that all have the same size")
    counts = np.array([(v == lv).sum() for lv in levels])
    cum = np.cumsum(counts)[:-1]  # held-out counts when cutting after 1, 2, ... levels (never all)
    k = int(np.argmin(np.abs(cum - fraction * len(v))))
    return v >= levels[k]


def fit_padded(
    data: ScalingData, law="chinchilla", *, n_pad: int | None = None, seed: int = 0, **fit_kwargs
) -> Posterior:
    """:func:`scalebayes.fit` with the sampler's padded size fixed to ``n_pad`` (so fits of subsets of one dataset
    share one compiled program) and without the pointwise groups; diagnostics are computed but not warned about
    (backtests report them). Returns a :class:`~scalebayes.posterior.Posterior`."""
    kw = dict(fit_kwargs)
    chains = int(kw.pop("chains", 4))
    draws = int(kw.pop("draws", 1000))
    warmup = int(kw.pop("warmup", 1000))
    dtype = kw.pop("dtype", "float64")
    config = SamplerConfig(
        chains=chains,
        warmup=warmup,
        draws=draws,
        dense_mass=bool(kw.pop("dense_mass", True)),
        target_accept=float(kw.pop("target_accept", 0.9)),
        max_tree_depth=int(kw.pop("max_tree_depth", 10)),
        chain_method=chain_method_for(chains),
        progress=bool(kw.pop("progress", False)),
    )
    for k in ("pointwise", "warn"):
        kw.pop(k, None)
    prep = prepare(data, law, n_pad=n_pad, dtype=dtype, **kw)
    run = sampler(prep.spec, prep.n_pad, config, dtype)
    site, stats = to_numpy(run(jax.random.key(seed), *prep.args))
    idata = build_datatree(data, prep, site, stats, pointwise=False, seed=seed, config=config)
    return Posterior(idata, data=data)


def refit_settings(post: Posterior) -> dict:
    """``fit`` keyword arguments that reproduce ``post``'s model and sampler settings (law, pooling, likelihood,
    noise, prior overrides, chains/warmup/draws and NUTS settings); used to refit on subsets.

    The one place that reads a posterior's fit settings back for refits (calibration, ``compare(method="backtest")``).
    """
    meta = post.meta
    law = post.law
    modes = list(meta["modes"])
    shared = tuple(z for z, m in zip(law.latents, modes, strict=True) if m == "shared")
    free = tuple(z for z, m in zip(law.latents, modes, strict=True) if m == "free")
    if len(post.families) == 1 or all(m == "shared" for m in modes):
        kw = dict(pooling="complete")
    elif "partial" in modes or "centred" in modes:
        centred = tuple(z for z, m in zip(law.latents, modes, strict=True) if m == "centred")
        kw = dict(pooling="partial", shared=shared, free=free, centred=centred)
    else:
        kw = dict(pooling="none", shared=shared)
    # prior overrides: whatever differs from the defaults resolved on the same data
    data = post.data
    li = data.log_inputs()
    default = _priors.resolve(law, law.centre(li), float(np.median(data.loss)), None)
    stored = post.priors
    over = {}
    for z, v in stored.latent.items():
        if not np.allclose(v, default.latent[z]):
            over[z] = tuple(v)
    for z, v in stored.tau.items():
        if not np.isclose(v, default.tau[z]):
            over[f"tau_{z}"] = v
    if not np.isclose(stored.sigma, default.sigma):
        over["sigma"] = stored.sigma
    if not np.allclose(stored.nu, default.nu):
        over["nu"] = tuple(stored.nu)
    s = meta.get("sampler", {})
    kw.update(
        law=law,
        likelihood=meta["likelihood"],
        noise=meta["noise"],
        priors=over or None,
        chains=int(s.get("chains", 4)),
        warmup=int(s.get("warmup", 1000)),
        draws=int(s.get("draws", 1000)),
        dense_mass=bool(s.get("dense_mass", True)),
        target_accept=float(s.get("target_accept", 0.9)),
        max_tree_depth=int(s.get("max_tree_depth", 10)),
    )
    return kw
