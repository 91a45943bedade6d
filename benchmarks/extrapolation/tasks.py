"""Extrapolation tasks: one loader per public dataset and the fit-small / predict-large splits scored on it.

Units: ``N`` parameters, ``D`` training tokens, ``C`` training FLOP (6·N·D unless a source says otherwise),
``U`` unique tokens, ``loss`` nats/token (or the source's own metric where SOURCE.md says so).

The datasets live in ``../shared/data/<name>/`` relative to the repository root (override with the environment
variable ``SCALEBAYES_SHARED_DATA`` or ``run.py --data-root``); a dataset whose folder is absent is skipped with a
printed reason. Every loader returns a :class:`scalebayes.ScalingData` whose ``excluded`` frame lists each row it
leaves out and why (source-flagged outliers, thinned checkpoints, duplicates); nothing is dropped silently.

A :class:`Task` is one split: the fit set (``train``) and the held-out set (``heldout``), separated by a threshold on
the split variable (C for ``"compute"``, N for ``"N"``): every held-out run is strictly larger than every fitted
one. Its extrapolation ``factor`` is the largest held-out value over the largest fitted value of that variable.
Checkpoint data (hitchhiker) are fitted on checkpoints of the smaller runs, as the source recommends, and scored on
the final loss of the larger runs only; every other dataset uses one row per training run (final loss).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd

from scalebayes import ScalingData

REPO_ROOT = Path(__file__).resolve().parents[2]
SPLIT_COLUMN = {"compute": "C", "N": "N"}


def data_root(override: str | Path | None = None) -> Path:
    """Folder of the shared datasets: ``override``, else $SCALEBAYES_SHARED_DATA, else <repo>/../shared/data."""
    if override is not None:
        return Path(override)
    env = os.environ.get("SCALEBAYES_SHARED_DATA")
    return Path(env) if env else REPO_ROOT.parent / "shared" / "data"


@dataclass(frozen=True)
class Task:
    """One extrapolation split.

    Attributes:
        dataset: dataset folder name; group: family (or group of families) fitted; split: ``"compute"`` or ``"N"``.
        law: law name fitted to ``train``.
        train: fitted runs; heldout: larger runs to predict (their ``loss`` is the truth).
        threshold: largest fitted value of the split variable (C FLOP or N parameters).
        note: how the split was chosen (from the dataset's SOURCE.md where it suggests one).
    """

    dataset: str
    group: str
    split: str
    law: str
    train: ScalingData
    heldout: ScalingData
    threshold: float
    note: str = ""

    @property
    def name(self) -> str:
        return f"{self.dataset}/{self.group}/{self.split}"

    @property
    def column(self) -> str:
        return SPLIT_COLUMN[self.split]

    @property
    def factor(self) -> float:
        """Largest held-out C (or N) over the largest fitted C (or N)."""
        col = self.column
        return float(self.heldout.frame[col].max() / self.train.frame[col].max())

    def describe(self) -> dict:
        return {
            "task": self.name,
            "dataset": self.dataset,
            "group": self.group,
            "split": self.split,
            "law": self.law,
            "n_train": len(self.train),
            "n_heldout": len(self.heldout),
            "threshold": self.threshold,
            "factor": self.factor,
            "note": self.note,
        }


# ------------------------------------------------------------------------------------------------ helpers
def with_excluded(data: ScalingData, rows: pd.DataFrame, reason: str) -> ScalingData:
    """``data`` with ``rows`` (left out before validation) recorded in ``excluded`` under ``reason``."""
    if len(rows) == 0:
        return data
    rows = rows.copy()
    rows["reason"] = reason
    parts = [p for p in (data.excluded, rows) if len(p)]
    return replace(data, excluded=pd.concat(parts))


def split_at(data: ScalingData, dataset: str, group: str, split: str, law: str, fit_max: float, note: str = "") -> Task:
    """Fit the runs with split variable ≤ ``fit_max`` and hold out the larger ones (one family's data)."""
    v = data.frame[SPLIT_COLUMN[split]].to_numpy()
    train = data.subset(v <= fit_max)
    heldout = data.subset(v > fit_max)
    return Task(dataset, group, split, law, train, heldout, float(v[v <= fit_max].max()), note)


def one_family(data: ScalingData, family: str) -> ScalingData:
    return data.subset(np.asarray(data.frame["family"] == family))


# ------------------------------------------------------------------------------------------------ chinchilla_epoch
def load_chinchilla_epoch(root: Path) -> ScalingData:
    """245 Chinchilla runs read off Hoffmann et al.'s Figure 4 (Epoch AI); the five highest-loss runs, which the
    replication excludes, are excluded here too."""
    df = pd.read_csv(root / "chinchilla_epoch" / "svg_extracted_data.csv")
    data = ScalingData.from_frame(df, N="Model Size", C="Training FLOP", loss="loss", name="chinchilla_epoch")
    keep = np.ones(len(data), bool)
    keep[np.argsort(data.loss)[-5:]] = False
    return data.subset(keep, reason="one of the five highest-loss runs (outliers excluded by Besiroglu et al. 2024)")


def tasks_chinchilla_epoch(data: ScalingData) -> list[Task]:
    return [
        split_at(data, "chinchilla_epoch", "all", "compute", "chinchilla", 1.1e21, "fit C <= 1e21, predict the 2-12x"),
        split_at(data, "chinchilla_epoch", "all", "N", "chinchilla", 3.5e9, "fit N <= 3.5e9, predict the 16 larger"),
    ]


# ------------------------------------------------------------------------------------------------ porian_isoflop
PORIAN_FAMILY = ["dataset", "hparams", "warmup", "decay"]


def load_porian_isoflop(root: Path) -> ScalingData:
    """Porian et al. (2024) isoFLOP runs with standard parameter counting and validation loss (8 families
    dataset/hparams/warmup/decay); the other counting conventions and the train loss are the same runs again."""
    df = pd.read_csv(root / "porian_isoflop" / "isoflop_runs.csv")
    sel = df[(df["param_count"] == "standard") & (df["loss_split"] == "val")].copy()
    sel["family"] = sel[PORIAN_FAMILY].astype(str).agg("/".join, axis=1)
    missing = sel[["params", "tokens", "loss"]].isna().any(axis=1)
    data = ScalingData.from_frame(
        sel[~missing], N="params", D="tokens", C="flops", loss="loss", family="family", name="porian_isoflop"
    )
    return with_excluded(data, sel[missing], "missing params, tokens or loss in the source")


def tasks_porian_isoflop(data: ScalingData) -> list[Task]:
    # 12 budgets 1.25e16 ... 2.56e19 FLOP: fit up to 3.2e18 (9 budgets), predict the 3 largest (8x), per family.
    # 16 model sizes 5.2e6 ... 9.0e8 parameters: fit up to 3.5e8 (13 sizes), predict the 3 largest (~24% of the runs,
    # at every budget: the larger models of the small budgets are the most under-trained runs of the data).
    out = []
    for f in data.families:
        d = one_family(data, f)
        out.append(split_at(d, "porian_isoflop", f, "compute", "chinchilla", 3.3e18, "fit budgets <= 3.2e18"))
        out.append(split_at(d, "porian_isoflop", f, "N", "chinchilla", 3.5e8, "fit N <= 3.5e8, predict the 3 larger"))
    # The 8 families in one fit (partial pooling, one calibration): how a user would fit a table of several setups.
    out.append(split_at(data, "porian_isoflop", "all8", "compute", "chinchilla", 3.3e18, "joint fit of 8 families"))
    out.append(split_at(data, "porian_isoflop", "all8", "N", "chinchilla", 3.5e8, "joint fit of 8 families"))
    return out


# ------------------------------------------------------------------------------------------------ datablations
#: Runs the paper's fit left out (its "outliers removed" dict, SOURCE.md caveat 4).
DATABLATIONS_UNUSED = set(
    "2b84b4b 2b88b4b 2b812b4b 2b816b4b 2b824b4b 2b855b1b25 4b212b12b 4b224b12b 4b284b1b9 4b284b6b 2b8100m100m "
    "14m7b5100m 14m300b100m 1b12b7100m 1b13b9100m 1b15b9100m 1b17b5100m 619m3b9100m 619m5b9100m 619m7b5100m "
    "2b84b8100m 1b58b8100m 1b112b100m 619m22b100m 421m300b1b5 221m91b400m 221m174b400m 221m600b400m 8b712b12b "
    "8b712b1b5 8b712b400m 8b712b100m 3b926b1b5 2b836b1b5 2b836b400m 2b836b100m 2b246b400m 2b246b100m 1b566b1b5 "
    "1b566b100m 1b191b400m 1b191b1b5 1b1250b1b5 1b5174b1b5 2b291b1b5 2b2174b1b5 8b720b1b5 2b877b1b5".split()
)


def load_datablations(root: Path) -> ScalingData:
    """Muennighoff et al. (2023) data-constrained runs (one final loss per run, C4): U = D/epochs, row 7 corrected
    as SOURCE.md caveat 1 says; the 48 runs the paper's fit did not use (divergences, overfitting, short runs) are
    excluded with that reason."""
    df = pd.read_csv(root / "datablations" / "datablations_contour_losses.csv")
    df["run"] = df["model_args"].str.extract(r"'name': '([^']+)'", expand=False)
    df["U"] = df["token_num"] / df["epochs"]
    fix = df["run"] == "2b855b1b25"  # mis-parsed upstream: D = 5.5e10, U = 1.25e9 (44 epochs)
    df.loc[fix, ["token_num", "U"]] = [5.5e10, 1.25e9]
    df = df.set_index("run")
    data = ScalingData.from_frame(df, N="num_params", D="token_num", U="U", loss="openLM_loss", name="datablations")
    return data.subset(~df.index.isin(DATABLATIONS_UNUSED), reason="not used by the paper's fit (SOURCE caveat 4)")


def tasks_datablations(data: ScalingData) -> list[Task]:
    law = "data_constrained"
    return [
        split_at(data, "datablations", "c4", "compute", law, 1.1e21, "fit C <= 1.1e21, predict the 17 larger runs"),
        split_at(data, "datablations", "c4", "N", law, 1.6e9, "fit N <= 1.5e9, predict 2.0e9-8.7e9"),
    ]


# ------------------------------------------------------------------------------------------------ misfitting
def load_misfitting(root: Path) -> ScalingData:
    """Li et al. (2025) open_lm runs: the LR-optimal final loss per (model, D) (``misfitting_lr_opt.csv``, the
    source's recommended table: 81 finished runs, one per row). N counts the embeddings (the source's ``N``)."""
    df = pd.read_csv(root / "misfitting" / "misfitting_lr_opt.csv")
    return ScalingData.from_frame(df, N="N", D="D", C="C_6ND", loss="loss", name="misfitting")


def tasks_misfitting(data: ScalingData) -> list[Task]:
    return [
        split_at(
            data, "misfitting", "open_lm", "N", "chinchilla", 2.0e8, "SOURCE size split: fit <= 100m, predict 200m-1b"
        ),
        split_at(data, "misfitting", "open_lm", "compute", "chinchilla", 1.2e19, "fit C <= 1.2e19, predict the larger"),
    ]


# ------------------------------------------------------------------------------------------------ openathena_isoflops
OPENATHENA_USED = "llama_3__raw_loss"


def load_openathena_isoflops(root: Path) -> ScalingData:
    """Open-Athena's harmonised isoFLOP points, Llama 3 ``raw_loss`` only: the two Chinchilla experiments are
    re-processings of chinchilla_epoch, ``exp_loss`` is exp of ``raw_loss``, and the misfitting rows are derived
    from misfitting/ (SOURCE caveat 1), so scoring them again would count the same runs twice. Open-Athena's QC
    flags (``outlier``) were designed for parabola fits and are kept in the data (SOURCE.md)."""
    df = pd.read_csv(root / "openathena_isoflops" / "isoflops.csv")
    used = df["experiment"] == OPENATHENA_USED
    data = ScalingData.from_frame(
        df[used], N="params", D="tokens", C="budget", loss="loss", family="experiment", name="openathena_isoflops"
    )
    return with_excluded(data, df[~used], "same runs as another dataset or a transform of the kept loss (caveat 1)")


def tasks_openathena_isoflops(data: ScalingData) -> list[Task]:
    g = "llama_3"
    return [
        split_at(data, "openathena_isoflops", g, "compute", "chinchilla", 3.1e20, "SOURCE split: fit <= 3e20 (33x)"),
        split_at(data, "openathena_isoflops", g, "N", "chinchilla", 2.0e9, "fit N <= 2e9, predict the larger"),
    ]


# ------------------------------------------------------------------------------------------------ hitchhiker
#: Families with at least three sizes and a loss that is a per-token cross-entropy (or a monotone one, Pile-T5),
#: with the largest fitted N; held-out sizes as in SOURCE.md's table (gpt3: its "harder" split, four held-out sizes
#: rather than one). Not scored: olmo (one fitting size), llm360-k2 (one model), redpajama-incite (two digitised
#: sizes) and revisiting-lm (capped loss of unclear scale, at most 2.2x).
HITCHHIKER_SPLITS = {"gpt3": 1.3e9, "opt": 6.7e9, "pile-t5": 3.0e9}
#: Checkpoints per fitted model kept (log-spaced in D), and the share of training skipped at the start.
CHECKPOINTS_PER_RUN = 30
SKIP_FRACTION = 0.1


def load_hitchhiker(root: Path) -> ScalingData:
    """ColPret checkpoint curves (``hitchhiker_long.csv``) of the families in :data:`HITCHHIKER_SPLITS`.

    Rows flagged ``spike_or_artifact`` by the source, exact duplicates, and checkpoints in the first
    :data:`SKIP_FRACTION` of each run's tokens (warm-up transients) are excluded; the rest are thinned to
    :data:`CHECKPOINTS_PER_RUN` log-spaced checkpoints per run, always keeping the final one (to keep the fits
    small). The rows are labelled with their run (``run=``), so a fit weights checkpoints of one run by the design
    effect (:mod:`scalebayes.checkpoints`) instead of counting them as independent runs. Excluded rows carry the
    reason.
    """
    df = pd.read_csv(root / "hitchhiker" / "hitchhiker_long.csv")
    df = df[df["family"].isin(list(HITCHHIKER_SPLITS))]
    reasons = pd.Series("", index=df.index)
    reasons[df["spike_or_artifact"]] = "spike_or_artifact flagged by the source"
    dup = df.duplicated(["family", "model_name", "tokens_seen", "loss"]) & (reasons == "")
    reasons[dup] = "exact duplicate checkpoint"
    ok = reasons == ""
    final_d = df[ok].groupby("model_name")["tokens_seen"].transform("max").reindex(df.index)
    early = ok & (df["tokens_seen"] < SKIP_FRACTION * final_d)
    reasons[early] = f"first {SKIP_FRACTION:.0%} of the run's tokens"
    ok = reasons == ""
    for _, g in df[ok].groupby("model_name"):
        keep = _thin(g["tokens_seen"].to_numpy(), CHECKPOINTS_PER_RUN)
        reasons[g.index[~keep]] = f"thinned to {CHECKPOINTS_PER_RUN} log-spaced checkpoints per run"
    ok = reasons == ""
    df = df.assign(run=df["model_name"].str.strip())
    data = ScalingData.from_frame(
        df[ok], N="num_params", D="tokens_seen", loss="loss", family="family", run="run", name="hitchhiker"
    )
    for why in pd.unique(reasons[~ok]):
        data = with_excluded(data, df[reasons == why], why)
    return data


def _thin(d: np.ndarray, k: int) -> np.ndarray:
    """Mask keeping at most ``k`` checkpoints nearest to log-spaced token counts, always the last one."""
    keep = np.zeros(len(d), bool)
    keep[np.argmax(d)] = True
    if len(d) <= k:
        return np.ones(len(d), bool)
    targets = np.geomspace(d.min(), d.max(), k)
    keep[[int(np.argmin(np.abs(np.log(d / t)))) for t in targets]] = True
    return keep


def tasks_hitchhiker(data: ScalingData) -> list[Task]:
    """Per family: fit every kept checkpoint of the models with N ≤ the family's threshold, predict the final loss
    (last kept checkpoint) of each larger model; and fit every checkpoint up to a tenth of the family's largest
    compute, predict the later ones."""
    out = []
    for fam, fit_max in HITCHHIKER_SPLITS.items():
        if fam not in data.families:
            continue
        d = one_family(data, fam)
        fr = d.frame
        last = fr.groupby("run")["D"].transform("max").to_numpy() == fr["D"].to_numpy()
        big = fr["N"].to_numpy() > fit_max
        train = d.subset(~big)
        heldout = d.subset(big & last)
        note = f"fit checkpoints of N <= {fit_max:.3g}, predict the final loss of larger models"
        out.append(Task("hitchhiker", fam, "N", "chinchilla", train, heldout, float(train.frame["N"].max()), note))
        # By compute: every checkpoint up to a tenth of the family's largest training compute, predict the later
        # checkpoints (of the larger models: how far along a run its loss goes), a 10x extrapolation in C.
        c_max = float(fr["C"].max()) / 10
        out.append(split_at(d, "hitchhiker", fam, "compute", "chinchilla", c_max, "fit C <= max/10, predict later"))
    return out


# ------------------------------------------------------------------------------------------------ registry
DATASETS: dict[str, tuple[Callable[[Path], ScalingData], Callable[[ScalingData], list[Task]]]] = {
    "chinchilla_epoch": (load_chinchilla_epoch, tasks_chinchilla_epoch),
    "porian_isoflop": (load_porian_isoflop, tasks_porian_isoflop),
    "datablations": (load_datablations, tasks_datablations),
    "misfitting": (load_misfitting, tasks_misfitting),
    "openathena_isoflops": (load_openathena_isoflops, tasks_openathena_isoflops),
    "hitchhiker": (load_hitchhiker, tasks_hitchhiker),
}


def load_tasks(
    only: list[str] | None = None, root: str | Path | None = None, *, log: Callable[[str], None] = print
) -> tuple[list[Task], dict[str, str], dict[str, ScalingData]]:
    """Tasks of every dataset present (or of ``only``). Returns (tasks, {dataset: reason it was skipped},
    {dataset: loaded data}); an absent folder is skipped with a printed reason."""
    base = data_root(root)
    tasks, skipped, loaded = [], {}, {}
    for name in only or list(DATASETS):
        if name not in DATASETS:
            raise KeyError(f"unknown dataset {name!r}; known: {list(DATASETS)}")
        if not (base / name).is_dir():
            skipped[name] = f"folder {base / name} is absent"
            log(f"skip {name}: {skipped[name]}")
            continue
        loader, builder = DATASETS[name]
        data = loader(base)
        loaded[name] = data
        tasks.extend(builder(data))
    return tasks, skipped, loaded
