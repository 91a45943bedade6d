"""Holdout splits and refits on subsets: the data side of backtests and calibration.

:func:`holdout_mask` picks the largest runs (by compute C or parameters N) to hold out; :func:`fit_padded` refits a
subset with the sampler's padded size fixed, so every split of one dataset reuses one compiled sampler;
:func:`refit_settings` reads back the settings a posterior was fitted with, so a refit is the same model.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from .data import ScalingData
from .errors import DataError, ModelError, UnknownNameError
from .fitting import fit
from .posterior import Posterior

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


#: ``fit`` keywords that are sampler settings (the rest are model options, see :class:`~scalebayes.spec.FitSpec`).
SAMPLER_KEYS = ("chains", "warmup", "draws", "dense_mass", "target_accept", "max_tree_depth", "progress")


def fit_padded(data: ScalingData, law=None, *, n_pad: int | None = None, seed: int = 0, **fit_kwargs) -> Posterior:
    """:func:`scalebayes.fit` with the sampler's padded size fixed to ``n_pad`` (so fits of subsets of one dataset
    share one compiled program), without the pointwise groups or a progress bar unless asked; diagnostics are
    computed but not warned about (backtests report them). ``fit_kwargs``: sampler settings, ``dtype``, and the
    model as ``spec=`` or FitSpec keywords. Returns a :class:`~scalebayes.posterior.Posterior`."""
    kw = dict(fit_kwargs)
    for k in ("pointwise", "warn"):
        kw.pop(k, None)
    law = kw.pop("law", law)  # refit_settings gives the law as a keyword
    progress = kw.pop("progress", False)
    return fit(data, law, n_pad=n_pad, seed=seed, progress=progress, pointwise=False, warn=False, **kw)


def refit_settings(post: Posterior) -> dict:
    """``fit`` keyword arguments that reproduce ``post``'s model (its stored :class:`~scalebayes.spec.FitSpec`, as
    keywords so callers can override single options) and sampler settings; used to refit on subsets.

    The one place that reads a posterior's fit settings back for refits (calibration, ``compare(method="backtest")``).
    """
    model = {f.name: getattr(post.fit_spec, f.name) for f in dataclasses.fields(post.fit_spec)}
    s = post.sampler_config
    sampler_settings = {k: getattr(s, k) for k in SAMPLER_KEYS if k != "progress"}
    return {**model, **sampler_settings}
