"""Benchmark scores of trained models (the data edge of the downstream model, :mod:`scalebayes.downstream`).

:class:`BenchmarkScores` is a validated table, one row per model: ``family``, ``N`` (parameters), ``D`` (training
tokens), ``C`` (training FLOP) and one column per benchmark holding a score in [0, 1] (NaN where the model was not
evaluated). Like :class:`~scalebayes.data.ScalingData` it never drops a row silently: rows removed by validation or
by an option are listed in ``excluded`` with the reason, and metadata fixes in ``corrections``.

Two bundled public tables load through :func:`scalebayes.datasets.load`: ``"obsscaling"`` (Ruan et al. 2024,
Apache-2.0) and ``"sloth_leaderboard"`` (Maia Polo et al. 2024, MIT); their SOURCE.md and LICENSE.md ship with them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from importlib import resources

import numpy as np
import pandas as pd

from .errors import DataError, UnknownNameError

#: Chance accuracy of each benchmark (the floor of its accuracy law): 4-way multiple choice 0.25, binary 0.5,
#: generation 0. TruthfulQA-mc2 has no clean floor; 0.31 is the Sloth repository's empirical one.
CHANCE = {
    "mmlu": 0.25,
    "arc_c": 0.25,
    "hellaswag": 0.25,
    "winogrande": 0.5,
    "truthfulqa": 0.31,
    "gsm8k": 0.0,
    "xwinograd": 0.5,
    "humaneval": 0.0,
}

#: Questions per benchmark in the Open LLM Leaderboard v1 protocol (test or validation split sizes). ``None``: the
#: score is not a fraction of a known number of questions (TruthfulQA-mc2 is a probability mass; XWinograd pools
#: languages). MMLU's leaderboard score is a macro average over 57 subjects, so k = round(score * 14042) is an
#: approximation of its count.
QUESTIONS = {
    "mmlu": 14042,
    "arc_c": 1172,
    "hellaswag": 10042,
    "winogrande": 1267,
    "truthfulqa": None,
    "gsm8k": 1319,
    "xwinograd": None,
    "humaneval": 164,
}

_META = ("family", "N", "D", "C")


@dataclass(frozen=True)
class BenchmarkScores:
    """A validated table of benchmark scores, one row per model (index: model name).

    ``frame`` columns: ``family`` (str), ``N`` parameters, ``D`` training tokens, ``C`` training FLOP (all > 0),
    then ``benchmarks`` (scores in [0, 1], NaN = not evaluated). ``excluded``: removed rows with a ``reason``
    column; ``corrections``: metadata fixed by the loader (model, column, file value, value used, why).
    """

    frame: pd.DataFrame
    benchmarks: tuple[str, ...]
    name: str = "scores"
    excluded: pd.DataFrame = field(default_factory=pd.DataFrame)
    corrections: pd.DataFrame = field(default_factory=pd.DataFrame)

    def __len__(self) -> int:
        return len(self.frame)

    @classmethod
    def from_frame(cls, df: pd.DataFrame, benchmarks, *, name: str = "scores") -> BenchmarkScores:
        """Validate ``df`` (index model names; columns family, N, D, C and ``benchmarks``). Raises
        :class:`DataError` naming the column and rows of any missing column, duplicated model, non-positive or
        non-finite N/D/C, empty family, or score outside [0, 1]. Nothing is dropped here."""
        benchmarks = tuple(benchmarks)
        for col in (*_META, *benchmarks):
            if col not in df.columns:
                raise DataError(f"missing column {col!r}; have {list(df.columns)}", column=col)
        dup = df.index[df.index.duplicated()].tolist()
        if dup:
            raise DataError("duplicated model names", column="model", rows=dup)
        bad_family = df.index[df["family"].isna() | (df["family"].astype(str).str.strip() == "")].tolist()
        if bad_family:
            raise DataError("empty family label", column="family", rows=bad_family)
        for col in ("N", "D", "C"):
            v = pd.to_numeric(df[col], errors="coerce").to_numpy(float)
            bad = df.index[~(np.isfinite(v) & (v > 0))].tolist()
            if bad:
                raise DataError(f"{col} must be a positive finite number", column=col, rows=bad)
        for b in benchmarks:
            v = pd.to_numeric(df[b], errors="coerce").to_numpy(float)
            bad = df.index[(df[b].notna() & ~np.isfinite(v)) | (v < 0) | (v > 1)].tolist()
            if bad:
                raise DataError(f"score of {b!r} must be a fraction in [0, 1]", column=b, rows=bad)
        out = df[list(_META) + list(benchmarks)].copy()
        out["family"] = out["family"].astype(str)
        out[["N", "D", "C", *benchmarks]] = out[["N", "D", "C", *benchmarks]].astype(float)
        return cls(out, benchmarks, name, _empty_excluded(), _empty_corrections())

    def subset(self, keep, reason: str) -> BenchmarkScores:
        """Rows where ``keep`` (bool array over rows) is true; the others join ``excluded`` with ``reason``."""
        keep = np.asarray(keep, dtype=bool)
        gone = self.frame.loc[~keep].assign(reason=reason)
        excluded = pd.concat([self.excluded, gone]) if len(self.excluded) else gone
        return BenchmarkScores(self.frame.loc[keep], self.benchmarks, self.name, excluded, self.corrections)

    def long(self, benchmarks=None) -> pd.DataFrame:
        """One row per (model, benchmark) with a score: columns model, family, benchmark, score, log10_C, N, D.
        Cells without a score (the model was not evaluated on that benchmark) have no row; ``attrs["missing"]``
        counts them per benchmark."""
        benchmarks = list(benchmarks or self.benchmarks)
        for b in benchmarks:
            if b not in self.benchmarks:
                raise UnknownNameError(f"unknown benchmark {b!r}; this table has {list(self.benchmarks)}")
        f = self.frame.rename_axis("model").reset_index()
        out = f.melt(id_vars=["model", *_META], value_vars=benchmarks, var_name="benchmark", value_name="score")
        missing = out[out["score"].isna()].groupby("benchmark").size().to_dict()
        out = out[out["score"].notna()].reset_index(drop=True)
        out["log10_C"] = np.log10(out["C"])
        out.attrs["missing"] = {b: int(missing.get(b, 0)) for b in benchmarks}
        return out[["model", "family", "benchmark", "score", "log10_C", "N", "D"]]


def _empty_excluded() -> pd.DataFrame:
    return pd.DataFrame(columns=[*_META, "reason"])


def _empty_corrections() -> pd.DataFrame:
    return pd.DataFrame(columns=["model", "column", "file", "used", "why"])


def _bundled(name: str, file: str) -> pd.DataFrame:
    with resources.files("scalebayes").joinpath("bundled", name, file).open("rb") as fh:
        return pd.read_csv(fh)


def _correct(df: pd.DataFrame, fixes: dict, name: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Apply ``fixes`` {(model, column): (file value, value, why)} after checking the file still holds the mistake
    (a fixed upstream file must not be re-broken); returns the frame and the corrections table."""
    df = df.copy()
    rows = []
    for (model, col), (was, used, why) in fixes.items():
        if model not in df.index or not np.isclose(float(df.at[model, col]), was):
            raise DataError(f"{name}: {model!r} no longer reads {col}={was:g}; revisit the fix", column=col)
        df.at[model, col] = used
        rows.append({"model": model, "column": col, "file": was, "used": used, "why": why})
    return df, pd.DataFrame(rows, columns=_empty_corrections().columns)


def _finish(df: pd.DataFrame, benchmarks, name: str, corrections: pd.DataFrame, drop: dict) -> BenchmarkScores:
    """Exclude rows without N/D/C and the rows in ``drop`` {model: reason}, recording each; validate the rest.
    C is recomputed as 6·N·D (both tables store exactly that) so corrected N or D carry through."""
    df = df.copy()
    df["C"] = 6.0 * df["N"] * df["D"]
    reasons = pd.Series("", index=df.index, dtype=object)
    no_meta = df[["N", "D"]].isna().any(axis=1)
    reasons[no_meta] = "no parameter count or training tokens in the file, so no training compute"
    for model, why in drop.items():
        if model in df.index and not reasons[model]:
            reasons[model] = why
    keep = (reasons == "").to_numpy()
    clean = df.loc[keep]
    data = BenchmarkScores.from_frame(clean, benchmarks, name=name)
    gone = df.loc[~keep, list(_META)].assign(reason=reasons[~keep])
    return BenchmarkScores(data.frame, data.benchmarks, name, gone, corrections)


#: Each benchmark's column in the obsscaling table and in Sloth's (by our name).
_BENCHMARK_COLUMNS = {
    "mmlu": ("MMLU", "MMLU"),
    "arc_c": ("ARC-C", "ARC"),
    "hellaswag": ("HellaSwag", "HellaSwag"),
    "winogrande": ("Winograd", "Winogrande"),
    "truthfulqa": ("TruthfulQA", "TruthfulQA"),
    "gsm8k": ("GSM8K", "GSM8K"),
    "xwinograd": ("XWinograd", "XWinograd"),
    "humaneval": ("HumanEval", "HumanEval"),
}
#: obsscaling (Ruan et al. 2024) column -> benchmark name here.
OBSSCALING_COLUMNS = {table: name for name, (table, _) in _BENCHMARK_COLUMNS.items()}
#: Metadata errors of the obsscaling main table (its SOURCE.md, caveats): (model, column) -> (file, used, why).
OBSSCALING_FIXES = {
    ("cerebras/btlm-3b-8k-base", "D"): (627.0, 0.627, "627B tokens stored as 627 T (unit error)"),
    ("openlm-research/open_llama_7b_v2", "N"): (13.0, 7.0, "a 7B model stored as 13B"),
}
#: Mixture-of-experts rows: their N mixes total, active and neither (SOURCE.md), so C = 6ND is not comparable.
OBSSCALING_MOE = (
    "mistralai/Mixtral-8x7B-v0.1",
    "mistralai/Mixtral-8x22B-v0.1",
    "deepseek-ai/DeepSeek-V2",
    "deepseek-ai/DeepSeek-Coder-V2-Base",
    "deepseek-ai/deepseek-moe-16b-base",
    "ai21labs/Jamba-v0.1",
    "Qwen/Qwen2-57B-A14B",
)


def load_obsscaling(*, moe: str = "exclude") -> BenchmarkScores:
    """The 148 base models of Ruan et al. (2024), "Observational Scaling Laws" (``base_llm_benchmark_eval.csv``,
    Apache-2.0): family, N, D, C = 6ND and 8 benchmark scores (fractions; chance levels in :data:`CHANCE`).

    Fixes BTLM's token unit and open_llama_7b_v2's size (:data:`OBSSCALING_FIXES`, listed in ``corrections``).
    Excluded, with reasons: the 25 models without N or D (no compute), and with ``moe="exclude"`` (default) the
    mixture-of-experts models whose N convention is inconsistent (``moe="keep"`` keeps those that have compute).
    """
    if moe not in ("exclude", "keep"):
        raise UnknownNameError(f"unknown moe option {moe!r}; choose 'exclude' or 'keep'")
    df = _bundled("obsscaling", "base_llm_benchmark_eval.csv").set_index("Model")
    df = df.rename(
        columns={
            "Model Family": "family",
            "Model Size (B)": "N",
            "Pretraining Data Size (T)": "D",
            **OBSSCALING_COLUMNS,
        }
    )
    df, corrections = _correct(df, OBSSCALING_FIXES, "obsscaling")
    df["N"], df["D"] = df["N"] * 1e9, df["D"] * 1e12
    drop = {m: "mixture-of-experts: N convention mixed (total/active), C not comparable" for m in OBSSCALING_MOE}
    return _finish(df, OBSSCALING_COLUMNS.values(), "obsscaling", corrections, drop if moe == "exclude" else {})


SLOTH_COLUMNS = {table: name for name, (_, table) in _BENCHMARK_COLUMNS.items()}
#: Metadata errors of Sloth's data_v2.csv (its SOURCE.md, caveats).
SLOTH_FIXES = {
    ("stablelm-2-1_6b", "N"): (6.0, 1.6, "name parsed as 6B; the model has 1.6B parameters"),
    ("stablelm-2-1_6b-chat", "N"): (6.0, 1.6, "name parsed as 6B; the model has 1.6B parameters"),
    ("rwkv-4-1b5-pile", "N"): (1.0, 1.5, "a 1.5B model stored as 1B"),
    ("gemma-2-2b", "D"): (8.0, 2.0, "Gemma-2 report: 2T tokens for 2B (8T is 9B's)"),
    ("gemma-2-9b", "D"): (13.0, 8.0, "Gemma-2 report: 8T tokens for 9B (13T is 27B's)"),
}


def load_sloth_leaderboard(*, instruct: bool = False, family: str = "Family2") -> BenchmarkScores:
    """The curated table of Maia Polo et al. (2024), Sloth (``data_v2.csv``, MIT): Open LLM Leaderboard v1
    scores (the same 8 benchmark names as obsscaling) with N, D, C = 6ND and family labels.

    ``family``: ``"Family2"`` (default; base, instruct and each fine-tune line separate) or ``"Family"`` (base
    lineage). ``instruct=False`` (default) excludes instruction-tuned rows (recorded with the reason). Fixes the
    metadata errors in :data:`SLOTH_FIXES`; models without N or D are excluded with the reason.
    The v2 leaderboard columns are not loaded (they are rounded to 0.01 and on a different footing).
    """
    if family not in ("Family", "Family2"):
        raise UnknownNameError(f"unknown family column {family!r}; choose 'Family' or 'Family2'")
    df = _bundled("sloth_leaderboard", "data_v2.csv").set_index("Model")
    df = df.rename(columns={family: "family", "#Params (B)": "N", "Pretraining Data Size (T)": "D", **SLOTH_COLUMNS})
    df, corrections = _correct(df, SLOTH_FIXES, "sloth_leaderboard")
    df["N"], df["D"] = df["N"] * 1e9, df["D"] * 1e12
    drop = {} if instruct else {m: "instruction-tuned (instruct=False)" for m in df.index[df["Instruct"].astype(bool)]}
    return _finish(df, SLOTH_COLUMNS.values(), "sloth_leaderboard", corrections, drop)
