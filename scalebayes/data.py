"""The runs table: validated training runs (N, D, C, loss, family) ready for fitting.

Units everywhere: ``N`` parameters, ``D`` training tokens, ``C`` training FLOP, ``loss`` nats per token,
``U`` unique training tokens (for repeated-data laws).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from .errors import DataError, DataWarning, UnknownNameError

#: Default relative tolerance between a given C and 6·N·D when all three columns are given. Reconstructed or
#: rounded tables are rarely exact; 5% accepts rounding to two significant figures and still catches a C that
#: counts something else (e.g. attention FLOPs add ~10-30% at small N).
C_RTOL = 0.05
DEFAULT_FAMILY = "all"
#: Loss in nats per token above which a value is warned about: ln(10^10) ≈ 23, the loss of guessing uniformly over
#: 10^10 tokens, far beyond any real vocabulary (ln 256k ≈ 12.5). Final losses of real runs sit well below it;
#: simulated laws far from their floor may not, so this only warns.
LOSS_WARN = 23.0
#: Loss above which a value cannot be a per-token loss at all and is rejected: final losses are a few nats, so a
#: value in the thousands is a token count, a perplexity or a loss summed over a sequence.
LOSS_MAX = 1e3
#: Smallest plausible *largest* value of N (parameters), D (tokens) and C (FLOP) in a study. The smallest models in
#: published scaling studies have ~1e4-1e5 parameters, trained on millions of tokens (~1e11 FLOP and up), so a
#: column whose largest value is below these is almost surely in scaled units (millions, billions, PF-days).
PLAUSIBLE_MAX = {"N": 1e4, "D": 1e5, "C": 1e9}
_UNIT_HINTS = {
    "N": "is it in millions or billions of parameters? N must count parameters (e.g. 7e9, not 7)",
    "D": "is it in millions or billions of tokens? D must count tokens (e.g. 1.4e12, not 1400)",
    "C": "is it in petaFLOP-days or another unit? C must be in FLOP (e.g. 5.8e23)",
}


@dataclass(frozen=True)
class ScalingData:
    """Validated training runs.

    ``frame`` has one row per run with float columns ``N``, ``D``, ``C``, ``loss`` (and ``U`` when given), a
    string column ``family`` and the original row label of the input in its index. ``excluded`` lists the rows
    an explicit option removed (same columns plus ``reason``); nothing is ever removed silently.
    """

    frame: pd.DataFrame
    excluded: pd.DataFrame = field(default_factory=pd.DataFrame)
    name: str = "data"

    # ----------------------------------------------------------------- construction
    @classmethod
    def from_frame(
        cls,
        df: pd.DataFrame,
        *,
        N: str | None = None,
        loss: str,
        D: str | None = None,
        C: str | None = None,
        family: str | None = None,
        U: str | None = None,
        run: str | None = None,
        dropna: bool = False,
        c_rtol: float | None = C_RTOL,
        name: str = "data",
    ) -> ScalingData:
        """Validate a DataFrame of runs; the keyword arguments name its columns.

        Exactly two of ``N``/``D``/``C`` are needed; the third follows from C = 6·N·D. When all three are given,
        C must agree with 6·N·D within ``c_rtol`` (relative; ``None`` skips the check for data whose C counts
        more than 6ND). ``family`` names a column of group labels, kept as text (whole-number floats such as
        ``1.0`` read as ``"1"``); ``U`` a column of unique tokens (it may be the ``D`` column). ``run`` names a
        column of training-run labels (text) when rows are *checkpoints*: rows sharing a label are checkpoints of one
        run, which a fit does not count as independent runs (:mod:`scalebayes.checkpoints`).
        ``dropna=True`` drops rows with a missing value in a used column and records them in ``excluded``
        (a warning lists them); otherwise any missing value raises :class:`~scalebayes.errors.DataError`.

        Values must be plausible, not only positive: a column of true/false, one column in two roles, a derived
        value that overflows, or a loss above :data:`LOSS_MAX` nats raise :class:`~scalebayes.errors.DataError`;
        losses above :data:`LOSS_WARN` nats and sizes that look like millions/billions of parameters or tokens (or
        not FLOP) are warned about.
        """
        if not isinstance(df, pd.DataFrame):
            raise DataError(f"expected a pandas DataFrame, got {type(df).__name__}")
        roles = _roles(df, N=N, D=D, C=C, loss=loss, U=U, family=family)
        values = {role: _numeric(df[col], role, col) for role, col in roles.items()}
        fam = _family_labels(df[family]) if family is not None else None
        values, fam, dropped = _drop_missing(df.index, values, fam, roles, family, dropna)
        _check_positive(values, roles)
        fam = _check_family(fam, family, values["loss"].index)
        _complete_ndc(values, roles, c_rtol)
        _check_plausible(values, roles)

        frame = pd.DataFrame({k: values[k] for k in ("N", "D", "C", "loss")})
        if "U" in values:
            frame["U"] = values["U"]
        frame["family"] = fam.to_numpy()
        if run is not None:
            frame["run"] = _run_labels(df, run, frame.index)
        frame.index.name = "row"
        _check_duplicates(frame)
        parts = [(dropped, "missing value (dropna=True)")] if len(dropped) else []
        excluded = _excluded_frame(df, parts, roles, family)
        return cls(frame=frame, excluded=excluded, name=name)

    @classmethod
    def from_csv(cls, path: str | Path, **kwargs) -> ScalingData:
        """Read a CSV of runs and validate it as :meth:`from_frame` does (same keyword arguments).

        The ``family`` and ``run`` columns are read as text exactly as written: ``01`` and ``1`` are different
        labels and ``NA`` or ``null`` are names; only an empty cell is a missing label.
        """
        path = Path(path)
        if not path.exists():
            raise DataError(f"file not found: {path}")
        try:
            df = pd.read_csv(path)
            for col in {kwargs.get("family"), kwargs.get("run")} - {None}:
                if col in df.columns:
                    labels = pd.read_csv(path, usecols=[col], dtype=str, keep_default_na=False, na_values=[""])
                    df[col] = labels[col].to_numpy()
        except (pd.errors.ParserError, UnicodeDecodeError, pd.errors.EmptyDataError) as e:
            raise DataError(f"could not read {path} as CSV: {e}") from e
        kwargs.setdefault("name", path.stem)
        return cls.from_frame(df, **kwargs)

    # ----------------------------------------------------------------- views
    def __len__(self) -> int:
        return len(self.frame)

    def __repr__(self) -> str:
        fams = self.families
        return (
            f"ScalingData({self.name!r}: {len(self)} runs, {len(fams)} famil{'y' if len(fams) == 1 else 'ies'}, "
            f"N {self.N.min():.3g}–{self.N.max():.3g}, D {self.D.min():.3g}–{self.D.max():.3g}, "
            f"C {self.C.min():.3g}–{self.C.max():.3g}, excluded {len(self.excluded)})"
        )

    @property
    def N(self) -> np.ndarray:
        """Parameters per run, shape (n,)."""
        return self.frame["N"].to_numpy()

    @property
    def D(self) -> np.ndarray:
        """Training tokens per run, shape (n,)."""
        return self.frame["D"].to_numpy()

    @property
    def C(self) -> np.ndarray:
        """Training FLOP per run, shape (n,)."""
        return self.frame["C"].to_numpy()

    @property
    def loss(self) -> np.ndarray:
        """Final loss per run in nats/token, shape (n,)."""
        return self.frame["loss"].to_numpy()

    @property
    def U(self) -> np.ndarray | None:
        """Unique training tokens per run, shape (n,), or None when not given."""
        return self.frame["U"].to_numpy() if "U" in self.frame else None

    @property
    def families(self) -> tuple[str, ...]:
        """Family labels in order of first appearance."""
        return tuple(pd.unique(self.frame["family"]))

    @property
    def family_index(self) -> np.ndarray:
        """Integer family code per run (index into :attr:`families`), shape (n,)."""
        lookup = {f: i for i, f in enumerate(self.families)}
        return self.frame["family"].map(lookup).to_numpy().astype(np.int32)

    def family_counts(self) -> pd.Series:
        """Number of runs per family."""
        return self.frame["family"].value_counts().reindex(list(self.families))

    def subset(self, mask: np.ndarray | Sequence[bool], *, reason: str | None = None) -> ScalingData:
        """Rows where ``mask`` is true; with ``reason`` the other rows are recorded in ``excluded``."""
        mask = np.asarray(mask, dtype=bool)
        if mask.shape != (len(self),):
            raise DataError(f"mask has shape {mask.shape}, expected ({len(self)},)")
        excluded = self.excluded
        if reason is not None and (~mask).any():
            out = self.frame.loc[~mask].copy()
            out["reason"] = reason
            excluded = pd.concat([self.excluded, out]) if len(self.excluded) else out
        return ScalingData(frame=self.frame.loc[mask].copy(), excluded=excluded, name=self.name)

    def select_families(self, names: Sequence[str]) -> ScalingData:
        """Only the runs of the named families (unknown names raise)."""
        unknown = [n for n in names if n not in self.families]
        if unknown:
            raise UnknownNameError(
                f"unknown famil{'y' if len(unknown) == 1 else 'ies'} {unknown}; known: {self.families}"
            )
        return self.subset(self.frame["family"].isin(list(names)).to_numpy())

    def log_inputs(self) -> dict[str, np.ndarray]:
        """Natural logs of every input column, each shape (n,): keys ``N``, ``D``, ``C`` (and ``U``)."""
        out = {k: np.log(self.frame[k].to_numpy()) for k in ("N", "D", "C")}
        if "U" in self.frame:
            out["U"] = np.log(self.frame["U"].to_numpy())
        return out

    def check_enough_rows(self, n_params: int, law_name: str) -> None:
        """Raise :class:`DataError` when there are not more runs than the law has free parameters."""
        if len(self) <= n_params:
            raise DataError(
                f"{len(self)} runs cannot constrain the {n_params} parameters of the {law_name!r} law "
                f"(need at least {n_params + 1})"
            )


# ---------------------------------------------------------------------------------------------------- validation steps
def _roles(df: pd.DataFrame, *, N, D, C, loss, U, family) -> dict[str, str]:
    """``{role: column}`` for the numeric roles (N, D, C, loss, U) that were given, after checking that two of
    N/D/C are named, that every named column exists and that no column plays two roles (U may be D's column:
    unique tokens equal tokens when nothing is repeated)."""
    given = {k: v for k, v in {"N": N, "D": D, "C": C}.items() if v is not None}
    if len(given) < 2:
        raise DataError(
            "two of N, D, C are needed (C = 6·N·D gives the third); got only "
            + (", ".join(f"{k}={v!r}" for k, v in given.items()) or "none")
        )
    roles = {**given, "loss": loss, **({"U": U} if U is not None else {})}
    for role, col in [*roles.items(), *([("family", family)] if family is not None else [])]:
        if col not in df.columns:
            raise DataError(
                f"column {col!r} (for {role}) is not in the table; columns are {list(df.columns)}", column=col
            )
    seen: dict[str, str] = {}
    for role, col in roles.items():
        other = seen.get(col)
        if other is not None and {other, role} != {"D", "U"}:
            raise DataError(f"{other} and {role} name the same column {col!r}; each needs its own column", column=col)
        seen.setdefault(col, role)
    if len(df) == 0:
        raise DataError("the table has no rows")
    return roles


def _numeric(s: pd.Series, role: str, col: str) -> pd.Series:
    """The column as floats (missing values NaN); text and true/false values raise naming the rows."""
    if pd.api.types.is_bool_dtype(s) or (s.dtype == object and s.dropna().map(_is_bool).all() and s.notna().any()):
        raise DataError(f"column {col!r} ({role}) holds true/false values, not numbers", column=col)
    num = pd.to_numeric(s, errors="coerce")
    bad = s.index[num.isna() & s.notna()]
    if len(bad):
        raise DataError(f"column {col!r} ({role}) has non-numeric values", column=col, rows=list(bad))
    return num.astype(float)


def _is_bool(v) -> bool:
    return isinstance(v, bool | np.bool_)


def _family_labels(s: pd.Series) -> pd.Series:
    """Family labels as text, missing ones NaN. A float column whose values are all whole numbers (numbers with
    a gap read from a CSV) gives ``"1"``, not ``"1.0"``."""
    if pd.api.types.is_float_dtype(s):
        finite = s.dropna()
        if len(finite) and np.all(np.isfinite(finite)) and np.all(finite == np.round(finite)):
            s = s.astype("Int64")
    return s.map(lambda v: v if pd.isna(v) else str(v))


def _drop_missing(index, values: dict, fam, roles: dict, family, dropna: bool):
    """Rows with a missing value in a used column: raise (naming the first such column), or with ``dropna``
    drop them with a warning. Returns (values, family labels, dropped row labels)."""
    missing = pd.Series(False, index=index)
    for v in values.values():
        missing |= v.isna()
    if fam is not None:
        missing |= fam.isna()
    dropped = index[missing.to_numpy()]
    if not len(dropped):
        return values, fam, dropped
    if not dropna:
        col = next((c for r, c in roles.items() if values[r].isna().any()), family)
        raise DataError(
            f"column {col!r} has missing values (pass dropna=True to drop such rows, which are then reported)",
            column=col,
            rows=list(dropped),
        )
    warnings.warn(f"dropna=True dropped {len(dropped)} row(s) with missing values: {list(dropped)}", stacklevel=3)
    keep = ~missing
    values = {k: v[keep] for k, v in values.items()}
    return values, (fam[keep] if fam is not None else None), dropped


def _check_positive(values: dict, roles: dict) -> None:
    for role, col in roles.items():
        v = values[role]
        bad = v.index[~np.isfinite(v.to_numpy())]
        if len(bad):
            raise DataError(f"column {col!r} ({role}) has non-finite values (inf)", column=col, rows=list(bad))
        bad = v.index[v.to_numpy() <= 0]
        if len(bad):
            raise DataError(f"column {col!r} ({role}) must be > 0", column=col, rows=list(bad))


def _run_labels(df: pd.DataFrame, run: str, index) -> np.ndarray:
    """The training-run labels (text) of the kept rows; a missing column or label raises, naming it."""
    if run not in df.columns:
        raise DataError(f"run column {run!r} not found; columns: {list(df.columns)}", column=run)
    labels = _family_labels(df.loc[index, run])
    bad = labels.index[labels.isna() | (labels.astype(str).str.strip() == "")]
    if len(bad):
        raise DataError(f"column {run!r} (run) has missing labels", column=run, rows=list(bad))
    return labels.astype(str).to_numpy()


def _check_family(fam, family: str | None, index) -> pd.Series:
    """The family labels (``"all"`` for every row when no column was named); blank labels raise."""
    if fam is None:
        return pd.Series(DEFAULT_FAMILY, index=index)
    bad = fam.index[fam.str.strip() == ""]
    if len(bad):
        raise DataError(f"column {family!r} (family) has empty labels", column=family, rows=list(bad))
    return fam


def _complete_ndc(values: dict, roles: dict, c_rtol: float | None) -> None:
    """Derive the third of N, D, C from C = 6·N·D (in place), or check a given C against 6·N·D."""
    missing = next((k for k in ("N", "D", "C") if k not in values), None)
    if missing == "C":
        values["C"] = 6.0 * values["N"] * values["D"]
    elif missing == "D":
        values["D"] = values["C"] / (6.0 * values["N"])
    elif missing == "N":
        values["N"] = values["C"] / (6.0 * values["D"])
    if missing is not None:
        v = values[missing].to_numpy()
        bad = values[missing].index[~(np.isfinite(v) & (v > 0))]
        if len(bad):
            used = " and ".join(f"{roles[k]!r} ({k})" for k in ("N", "D", "C") if k != missing)
            raise DataError(
                f"the derived {missing} from {used} overflows or underflows a float (C = 6·N·D): are the "
                "values in the right units?",
                column=None,
                rows=list(bad),
            )
        return
    if c_rtol is None:
        return
    ratio = values["C"] / (6.0 * values["N"] * values["D"])
    bad = ratio.index[~(np.abs(ratio.to_numpy() - 1.0) <= c_rtol)]
    if len(bad):
        raise DataError(
            f"column {roles['C']!r} (C) disagrees with 6·N·D by more than {c_rtol:.0%} "
            f"(worst ratio {ratio.loc[bad].iloc[np.argmax(np.abs(ratio.loc[bad] - 1))]:.3g}); pass "
            "c_rtol=None if C counts more than 6ND, or give only two of N/D/C",
            column=roles["C"],
            rows=list(bad),
        )


def _check_plausible(values: dict, roles: dict) -> None:
    """Losses above :data:`LOSS_MAX` raise, above :data:`LOSS_WARN` warn; sizes whose largest value is below
    :data:`PLAUSIBLE_MAX` warn. Every message names the column (and the rows for losses)."""
    loss, col = values["loss"], roles["loss"]
    what = "is it a count, a perplexity or a summed loss? Give the mean cross-entropy per token in nats"
    bad = loss.index[loss.to_numpy() > LOSS_MAX]
    if len(bad):
        raise DataError(
            f"column {col!r} (loss) has values above {LOSS_MAX:g} nats/token: {what}", column=col, rows=list(bad)
        )
    high = loss.index[loss.to_numpy() > LOSS_WARN]
    if len(high):
        rows = ", ".join(str(r) for r in high[:20]) + (" ..." if len(high) > 20 else "")
        warnings.warn(
            f"column {col!r} (loss) has values above {LOSS_WARN:g} nats/token, worse than guessing uniformly over "
            f"a 10^10-token vocabulary (rows {rows}): {what}",
            DataWarning,
            stacklevel=3,
        )
    for role, floor in PLAUSIBLE_MAX.items():
        top = float(values[role].max())
        if top < floor:
            name = roles.get(role)
            where = f"column {name!r} ({role})" if name is not None else f"{role} derived as C = 6·N·D"
            warnings.warn(f"{where} is at most {top:.3g}: {_UNIT_HINTS[role]}", DataWarning, stacklevel=3)


def _check_duplicates(frame: pd.DataFrame) -> None:
    if frame.duplicated(keep="first").any():
        raise DataError(
            "duplicate rows (same N, D, C, loss and family): a run counted twice would overstate the evidence",
            column=None,
            rows=list(frame.index[frame.duplicated(keep=False)]),
        )


def _excluded_frame(df, parts, roles, family) -> pd.DataFrame:
    if not parts:
        return pd.DataFrame(columns=["reason"])
    chunks = []
    for idx, reason in parts:
        chunk = df.loc[idx, list(dict.fromkeys([*roles.values(), *([family] if family else [])]))].copy()
        chunk["reason"] = reason
        chunks.append(chunk)
    out = pd.concat(chunks)
    out.index.name = "row"
    return out
