"""The runs table: validated training runs (N, D, C, loss, family) ready for fitting.

Units everywhere: ``N`` parameters, ``D`` training tokens, ``C`` training FLOP, ``loss`` nats per token,
``U`` unique training tokens (for repeated-data laws).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from .errors import DataError, UnknownNameError

#: Default relative tolerance between a given C and 6·N·D when all three columns are given. Reconstructed or
#: rounded tables are rarely exact; 5% accepts rounding to two significant figures and still catches a C that
#: counts something else (e.g. attention FLOPs add ~10-30% at small N).
C_RTOL = 0.05
DEFAULT_FAMILY = "all"


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
        dropna: bool = False,
        c_rtol: float | None = C_RTOL,
        name: str = "data",
    ) -> ScalingData:
        """Validate a DataFrame of runs; the keyword arguments name its columns.

        Exactly two of ``N``/``D``/``C`` are needed; the third follows from C = 6·N·D. When all three are given,
        C must agree with 6·N·D within ``c_rtol`` (relative; ``None`` skips the check for data whose C counts
        more than 6ND). ``family`` names a column of group labels; ``U`` a column of unique tokens.
        ``dropna=True`` drops rows with a missing value in a used column and records them in ``excluded``
        (a warning lists them); otherwise any missing value raises :class:`~scalebayes.errors.DataError`.
        """
        if not isinstance(df, pd.DataFrame):
            raise DataError(f"expected a pandas DataFrame, got {type(df).__name__}")
        given = {k: v for k, v in {"N": N, "D": D, "C": C}.items() if v is not None}
        if len(given) < 2:
            raise DataError(
                "two of N, D, C are needed (C = 6·N·D gives the third); got only "
                + (", ".join(f"{k}={v!r}" for k, v in given.items()) or "none")
            )
        roles = {**given, "loss": loss}
        if U is not None:
            roles["U"] = U
        for role, col in roles.items():
            if col not in df.columns:
                raise DataError(
                    f"column {col!r} (for {role}) is not in the table; columns are {list(df.columns)}",
                    column=col,
                )
        if family is not None and family not in df.columns:
            raise DataError(
                f"column {family!r} (for family) is not in the table; columns are {list(df.columns)}",
                column=family,
            )
        if len(df) == 0:
            raise DataError("the table has no rows")

        values: dict[str, pd.Series] = {}
        for role, col in roles.items():
            s = df[col]
            num = pd.to_numeric(s, errors="coerce")
            bad = s.index[num.isna() & s.notna()]
            if len(bad):
                raise DataError(f"column {col!r} ({role}) has non-numeric values", column=col, rows=list(bad))
            values[role] = num.astype(float)
        fam = None
        if family is not None:
            fam = df[family]

        excluded_parts = []
        missing = pd.Series(False, index=df.index)
        for role in roles:
            missing |= values[role].isna()
        if fam is not None:
            missing |= fam.isna()
        if missing.any():
            if not dropna:
                col = (
                    next(c for r, c in roles.items() if values[r].isna().any())
                    if any(values[r].isna().any() for r in roles)
                    else family
                )
                raise DataError(
                    f"column {col!r} has missing values (pass dropna=True to drop such rows, which are then reported)",
                    column=col,
                    rows=list(df.index[missing]),
                )
            drop_idx = df.index[missing]
            excluded_parts.append((drop_idx, "missing value (dropna=True)"))
            import warnings

            warnings.warn(
                f"dropna=True dropped {len(drop_idx)} row(s) with missing values: {list(drop_idx)}",
                stacklevel=2,
            )
            keep = ~missing
            values = {k: v[keep] for k, v in values.items()}
            if fam is not None:
                fam = fam[keep]

        for role, col in roles.items():
            v = values[role]
            bad = v.index[~np.isfinite(v.to_numpy())]
            if len(bad):
                raise DataError(f"column {col!r} ({role}) has non-finite values (inf)", column=col, rows=list(bad))
            bad = v.index[v.to_numpy() <= 0]
            if len(bad):
                raise DataError(f"column {col!r} ({role}) must be > 0", column=col, rows=list(bad))

        if fam is not None:
            fam = fam.astype(str)
            bad = fam.index[fam.str.strip() == ""]
            if len(bad):
                raise DataError(f"column {family!r} (family) has empty labels", column=family, rows=list(bad))
        else:
            fam = pd.Series(DEFAULT_FAMILY, index=values["loss"].index)

        if "C" not in values:
            values["C"] = 6.0 * values["N"] * values["D"]
        elif "D" not in values:
            values["D"] = values["C"] / (6.0 * values["N"])
        elif "N" not in values:
            values["N"] = values["C"] / (6.0 * values["D"])
        elif c_rtol is not None:
            ratio = values["C"] / (6.0 * values["N"] * values["D"])
            bad = ratio.index[np.abs(ratio.to_numpy() - 1.0) > c_rtol]
            if len(bad):
                raise DataError(
                    f"column {C!r} (C) disagrees with 6·N·D by more than {c_rtol:.0%} "
                    f"(worst ratio {ratio.loc[bad].iloc[np.argmax(np.abs(ratio.loc[bad] - 1))]:.3g}); pass "
                    "c_rtol=None if C counts more than 6ND, or give only two of N/D/C",
                    column=C,
                    rows=list(bad),
                )

        frame = pd.DataFrame({k: values[k] for k in ("N", "D", "C", "loss")})
        if "U" in values:
            frame["U"] = values["U"]
        frame["family"] = fam.to_numpy()
        frame.index.name = "row"

        dup = frame.duplicated(keep="first")
        if dup.any():
            first = frame.duplicated(keep=False)
            raise DataError(
                "duplicate rows (same N, D, C, loss and family): a run counted twice would overstate the evidence",
                column=None,
                rows=list(frame.index[first]),
            )
        excluded = _excluded_frame(df, excluded_parts, roles, family)
        return cls(frame=frame, excluded=excluded, name=name)

    @classmethod
    def from_csv(cls, path: str | Path, **kwargs) -> ScalingData:
        """Read a CSV of runs and validate it as :meth:`from_frame` does (same keyword arguments)."""
        path = Path(path)
        if not path.exists():
            raise DataError(f"file not found: {path}")
        try:
            df = pd.read_csv(path)
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
