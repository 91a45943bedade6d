"""Bundled real datasets of training runs, each shipped with its SOURCE.md (origin, licence, citations).

``load(name, **options)`` returns a :class:`~scalebayes.data.ScalingData`. Rows removed by an option are listed in
the result's ``excluded`` frame with the reason.
"""

from __future__ import annotations

from importlib import resources

import numpy as np
import pandas as pd

from .data import ScalingData
from .errors import DataError, UnknownNameError


def _path(name: str, file: str):
    return resources.files("scalebayes").joinpath("bundled", name, file)


def source(name: str) -> str:
    """The SOURCE.md text (origin, licence, citations, caveats) of a bundled dataset."""
    _check(name)
    return _path(name, "SOURCE.md").read_text(encoding="utf-8")


def raw(name: str) -> pd.DataFrame:
    """The bundled CSV exactly as shipped, before any validation or option."""
    _check(name)
    with _path(name, _FILES[name]).open("rb") as fh:
        return pd.read_csv(fh)


def available() -> tuple[str, ...]:
    """Names accepted by :func:`load`."""
    return tuple(_LOADERS)


def load(name: str, **options) -> ScalingData:
    """Load a bundled dataset by name; see the ``load_<name>`` functions for each one's options."""
    _check(name)
    return _LOADERS[name](**options)


def load_chinchilla_epoch(*, exclude_outliers: bool = True) -> ScalingData:
    """The 245 Chinchilla training runs reconstructed from Hoffmann et al. (2022), Figure 4, by Besiroglu et al.
    (2024), "Chinchilla Scaling: A replication attempt" (Epoch AI).

    N is ``Model Size`` (parameters), C is ``Training FLOP``, loss is final training loss in nats/token; D is derived
    as C / (6N). With ``exclude_outliers=True`` (the default) the five highest-loss runs are removed, as the
    published replication does for its fits (they sit far above every neighbouring run at ~1e19 FLOP); they are
    listed in ``data.excluded`` with the reason, leaving 240 runs.
    """
    df = raw("chinchilla_epoch")
    data = ScalingData.from_frame(df, N="Model Size", C="Training FLOP", loss="loss", name="chinchilla_epoch")
    if exclude_outliers:
        order = np.argsort(-data.loss, kind="stable")
        mask = np.ones(len(data), dtype=bool)
        mask[order[:5]] = False
        data = data.subset(mask, reason="one of the five highest-loss runs (excluded as in Besiroglu et al. 2024)")
    return data


_PORIAN_FAMILY = ["dataset", "hparams", "warmup", "decay"]


def load_porian_isoflop(*, param_count: str = "standard", split: str = "val") -> ScalingData:
    """IsoFLOP runs of Porian et al. (2024), "Resolving Discrepancies in Compute-Optimal Scaling of Language
    Models" (MIT licence): 15 (configuration × parameter counting × loss split) tables.

    A family is one training configuration ``dataset/hparams/warmup/decay``. ``param_count`` picks one counting
    convention for N (``standard``, ``kaplan`` or ``attention``) and ``split`` the loss (``val`` or ``train``);
    the same runs appear under several conventions, so exactly one is loaded. Rows with missing params, tokens or
    loss (three in the whole file) are dropped and listed in ``data.excluded``.
    """
    df = raw("porian_isoflop")
    counts = sorted(df["param_count"].unique())
    splits = sorted(df["loss_split"].unique())
    if param_count not in counts:
        raise UnknownNameError(f"unknown param_count {param_count!r}; choose one of {counts}")
    if split not in splits:
        raise UnknownNameError(f"unknown split {split!r}; choose one of {splits}")
    sel = df[(df["param_count"] == param_count) & (df["loss_split"] == split)].copy()
    if sel.empty:
        combos = sorted({(a, b) for a, b in zip(df["param_count"], df["loss_split"], strict=True)})
        raise DataError(f"no runs with param_count={param_count!r} and split={split!r}; available: {combos}")
    sel["family"] = sel[_PORIAN_FAMILY].astype(str).agg("/".join, axis=1)
    import warnings

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        data = ScalingData.from_frame(
            sel,
            N="params",
            D="tokens",
            C="flops",
            loss="loss",
            family="family",
            dropna=True,
            name=f"porian_isoflop[{param_count},{split}]",
        )
    for w in caught:  # re-issue so the caller sees which rows went
        warnings.warn(str(w.message), stacklevel=2)
    return data


_FILES = {"chinchilla_epoch": "svg_extracted_data.csv", "porian_isoflop": "isoflop_runs.csv"}
_LOADERS = {"chinchilla_epoch": load_chinchilla_epoch, "porian_isoflop": load_porian_isoflop}


def _check(name: str) -> None:
    if name not in _LOADERS:
        raise UnknownNameError(f"unknown dataset {name!r}; bundled datasets: {sorted(_LOADERS)}")
