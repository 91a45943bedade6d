"""Bundled real datasets of training runs, each shipped with its SOURCE.md (origin, licence, citations).

``load(name, **options)`` returns a :class:`~scalebayes.data.ScalingData`. Rows removed by an option are listed in
the result's ``excluded`` frame with the reason.
"""

from __future__ import annotations

import ast
import warnings
from importlib import resources

import numpy as np
import pandas as pd

from .data import ScalingData
from .errors import DataError, UnknownNameError
from .scores import BenchmarkScores, load_obsscaling, load_sloth_leaderboard


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


def load(name: str, **options) -> ScalingData | BenchmarkScores:
    """Load a bundled dataset by name; see the ``load_<name>`` functions for each one's options. Training-run
    tables give a :class:`ScalingData`; benchmark-score tables (``obsscaling``, ``sloth_leaderboard``) a
    :class:`~scalebayes.scores.BenchmarkScores`."""
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


#: Row 7 of the datablations file, ``2b855b1b25``, is mis-parsed upstream (ColPret) as D = 5.51e10 tokens over
#: 2.204 epochs (U = 25e9); the run name, the upstream parser and the 44-epoch loss curve give D = 5.5e10 tokens
#: from U = 1.25e9 unique tokens (44 epochs). Caveat 1 of its SOURCE.md. name -> (file's D, file's epochs, D, U).
DATABLATIONS_CORRECTIONS = {"2b855b1b25": (5.51e10, 2.204, 5.5e10, 1.25e9)}

#: ``8b7178b13b`` (N 8.67e9, D 178e9 tokens, U 13e9, loss 2.451606 nats): one of the paper's 182 fit points that the
#: file lacks (caveat 2 of SOURCE.md; the loss is from the upstream ``NAMES_TO_VAL_LOSSES`` dict). Added by the
#: loader so that ``subset="paper"`` is exactly the paper's fit set.
DATABLATIONS_SUPPLEMENT = {"8b7178b13b": {"N": 8.67e9, "D": 178e9, "U": 13e9, "loss": 2.451606}}

#: The 48 runs of the file that Muennighoff et al. (2023) left out of their fit (the "outliers removed" dict of
#: upstream ``utils/parametric_fit.ipynb``; caveat 4 of SOURCE.md): short or tiny-U runs that overfit or diverge.
DATABLATIONS_PAPER_EXCLUDED = tuple(
    """2b84b4b 2b88b4b 2b812b4b 2b816b4b 2b824b4b 2b855b1b25 4b212b12b 4b224b12b 4b284b1b9 4b284b6b 2b8100m100m
    14m7b5100m 14m300b100m 1b12b7100m 1b13b9100m 1b15b9100m 1b17b5100m 619m3b9100m 619m5b9100m 619m7b5100m
    2b84b8100m 1b58b8100m 1b112b100m 619m22b100m 421m300b1b5 221m91b400m 221m174b400m 221m600b400m 8b712b12b
    8b712b1b5 8b712b400m 8b712b100m 3b926b1b5 2b836b1b5 2b836b400m 2b836b100m 2b246b400m 2b246b100m 1b566b1b5
    1b566b100m 1b191b400m 1b191b1b5 1b1250b1b5 1b5174b1b5 2b291b1b5 2b2174b1b5 8b720b1b5 2b877b1b5""".split()
)
DATABLATIONS_SUBSETS = ("paper", "all")


def load_datablations(*, subset: str = "paper") -> ScalingData:
    """Final validation losses of the runs of Muennighoff et al. (2023), "Scaling Data-Constrained Language
    Models": decoder-only models of 7M-8.7B parameters trained on C4 for up to 9,000 epochs of 100M-178B unique
    tokens, as collected by ColPret (MIT; Choshen et al. 2024).

    N is parameters, D total training tokens, U = D / epochs unique tokens, loss the final C4 validation loss in
    nats/token; the row label is the upstream run name (``146m14b400m``: 146M params, 14B tokens, 400M unique).
    Two fixes to the file, both documented in SOURCE.md: run ``2b855b1b25``'s D and U are corrected
    (:data:`DATABLATIONS_CORRECTIONS`), and the fit run ``8b7178b13b`` that the file lacks is added
    (:data:`DATABLATIONS_SUPPLEMENT`), giving 230 runs.

    Args:
        subset: ``"paper"`` (default): the paper's 182 fit runs; the 48 it left out
            (:data:`DATABLATIONS_PAPER_EXCLUDED`: runs that overfit, diverge or are very short) are listed in
            ``data.excluded`` with the reason. ``"all"``: every run, including losses up to 11 nats from runs that
            diverged, which no scaling law describes.
    """
    if subset not in DATABLATIONS_SUBSETS:
        raise UnknownNameError(f"unknown subset {subset!r}; choose one of {list(DATABLATIONS_SUBSETS)}")
    df = _datablations_frame()
    data = ScalingData.from_frame(df, N="N", D="D", U="U", loss="loss", name=f"datablations[{subset}]")
    if subset == "paper":
        keep = ~data.frame.index.isin(DATABLATIONS_PAPER_EXCLUDED)
        data = data.subset(keep, reason="left out of the fit by Muennighoff et al. 2023 (outliers-removed list)")
    return data


def _datablations_frame() -> pd.DataFrame:
    """The file's runs (named, D and U corrected) plus the supplement: columns N, D, U, loss; index run name."""
    df = raw("datablations")
    names = df["model_args"].map(lambda s: ast.literal_eval(s)["name"])
    out = pd.DataFrame(
        {
            "N": df["num_params"].to_numpy(float),
            "D": df["token_num"].to_numpy(float),
            "U": (df["token_num"] / df["epochs"]).to_numpy(float),
            "loss": df["openLM_loss"].to_numpy(float),
        },
        index=pd.Index(names, name="run"),
    )
    for name, (d_file, epochs_file, d, u) in DATABLATIONS_CORRECTIONS.items():
        row = df.loc[names == name]
        # Check the file still holds the mistake before overwriting it: a fixed upstream file must not be re-broken.
        if len(row) != 1 or not np.allclose(row[["token_num", "epochs"]].to_numpy(float), [[d_file, epochs_file]]):
            raise DataError(f"datablations run {name!r} no longer reads D={d_file:g}, epochs={epochs_file:g}")
        out.loc[name, ["D", "U"]] = d, u
    extra = pd.DataFrame.from_dict(DATABLATIONS_SUPPLEMENT, orient="index")
    return pd.concat([out, extra.rename_axis("run")[out.columns]])


_FILES = {
    "chinchilla_epoch": "svg_extracted_data.csv",
    "porian_isoflop": "isoflop_runs.csv",
    "datablations": "datablations_contour_losses.csv",
    "obsscaling": "base_llm_benchmark_eval.csv",
    "sloth_leaderboard": "data_v2.csv",
}
_LOADERS = {
    "chinchilla_epoch": load_chinchilla_epoch,
    "porian_isoflop": load_porian_isoflop,
    "datablations": load_datablations,
    "obsscaling": load_obsscaling,
    "sloth_leaderboard": load_sloth_leaderboard,
}


def _check(name: str) -> None:
    if name not in _LOADERS:
        raise UnknownNameError(f"unknown dataset {name!r}; bundled datasets: {sorted(_LOADERS)}")
