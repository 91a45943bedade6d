"""Sampler diagnostics: R-hat, bulk/tail ESS (ArviZ, rank-normalised split versions) and divergences."""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field

import arviz_stats as azs
import numpy as np
import pandas as pd
import xarray as xr

from .errors import SamplingWarning

RHAT_MAX = 1.01
ESS_MIN = 400


@dataclass(frozen=True)
class Diagnostics:
    """Worst-case convergence numbers over every posterior quantity, and whether they pass.

    ``ok`` requires R-hat ≤ 1.01, bulk and tail ESS ≥ 400 (Vehtari et al. 2021) and zero divergent transitions.
    ``failures`` says in words what failed; ``table`` has R-hat and ESS per variable element.
    """

    r_hat_max: float
    ess_bulk_min: float
    ess_tail_min: float
    divergences: int
    steps_per_iteration: float
    n_samples: int
    failures: tuple[str, ...] = ()
    table: pd.DataFrame = field(default_factory=pd.DataFrame, repr=False, compare=False)

    @property
    def ok(self) -> bool:
        return not self.failures

    def to_dict(self) -> dict:
        return {
            "r_hat_max": self.r_hat_max,
            "ess_bulk_min": self.ess_bulk_min,
            "ess_tail_min": self.ess_tail_min,
            "divergences": self.divergences,
            "steps_per_iteration": self.steps_per_iteration,
            "n_samples": self.n_samples,
            "ok": self.ok,
            "failures": list(self.failures),
        }

    def __str__(self) -> str:
        head = "diagnostics ok" if self.ok else "DIAGNOSTICS FAILED: " + "; ".join(self.failures)
        return (
            f"{head} (R-hat max {self.r_hat_max:.4f}, bulk ESS min {self.ess_bulk_min:.0f}, tail ESS min "
            f"{self.ess_tail_min:.0f}, divergences {self.divergences}, {self.steps_per_iteration:.1f} leapfrog "
            f"steps/iteration)"
        )


def per_variable(posterior: xr.Dataset) -> pd.DataFrame:
    """R-hat, bulk ESS and tail ESS for every element of every variable of a (chain, draw, ...) Dataset."""
    rhat = azs.rhat(posterior)
    bulk = azs.ess(posterior, method="bulk")
    tail = azs.ess(posterior, method="tail")
    rows = []
    for name in posterior.data_vars:
        r, b, t = (np.atleast_1d(np.asarray(ds[name])).ravel() for ds in (rhat, bulk, tail))
        labels = _labels(posterior[name], name)
        for lab, ri, bi, ti in zip(labels, r, b, t, strict=True):
            rows.append((lab, ri, bi, ti))
    return pd.DataFrame(rows, columns=["name", "r_hat", "ess_bulk", "ess_tail"]).set_index("name")


def _labels(da: xr.DataArray, name: str) -> list[str]:
    dims = [d for d in da.dims if d not in ("chain", "draw")]
    if not dims:
        return [name]
    idx = pd.MultiIndex.from_product([da[d].values for d in dims]) if len(dims) > 1 else da[dims[0]].values
    return [f"{name}[{','.join(map(str, i)) if isinstance(i, tuple) else i}]" for i in idx]


def compute(posterior: xr.Dataset, sample_stats: xr.Dataset) -> Diagnostics:
    """Diagnostics for a posterior Dataset (dims chain, draw, ...) and its sample_stats (diverging, n_steps)."""
    table = per_variable(posterior)
    finite = table.replace([np.inf, -np.inf], np.nan)
    r_hat_max = float(np.nanmax(finite["r_hat"])) if len(finite) else float("nan")
    bulk = float(np.nanmin(finite["ess_bulk"])) if len(finite) else float("nan")
    tail = float(np.nanmin(finite["ess_tail"])) if len(finite) else float("nan")
    div = int(np.asarray(sample_stats["diverging"]).sum())
    steps = float(np.asarray(sample_stats["n_steps"]).mean())
    n = int(posterior.sizes["chain"] * posterior.sizes["draw"])
    failures = []
    if not np.isfinite(r_hat_max) or r_hat_max > RHAT_MAX:
        worst = finite["r_hat"].idxmax() if np.isfinite(r_hat_max) else "some parameter"
        failures.append(f"R-hat {r_hat_max:.3f} > {RHAT_MAX} ({worst})")
    if not np.isfinite(bulk) or bulk < ESS_MIN:
        failures.append(
            f"bulk ESS {bulk:.0f} < {ESS_MIN} ({finite['ess_bulk'].idxmin() if np.isfinite(bulk) else '?'})"
        )
    if not np.isfinite(tail) or tail < ESS_MIN:
        failures.append(
            f"tail ESS {tail:.0f} < {ESS_MIN} ({finite['ess_tail'].idxmin() if np.isfinite(tail) else '?'})"
        )
    if div:
        failures.append(f"{div} divergent transition{'s' if div > 1 else ''}")
    return Diagnostics(r_hat_max, bulk, tail, div, steps, n, tuple(failures), table)


def advice(diag: Diagnostics) -> str:
    """What to try when diagnostics fail."""
    tips = []
    if diag.divergences:
        tips.append(
            "raise target_accept (e.g. 0.95-0.99), tighten priors, or check the data for runs the law cannot fit"
        )
    if any(f.startswith("R-hat") for f in diag.failures):
        tips.append("run longer (warmup/draws) or check for a multimodal posterior (e.g. an unidentified exponent)")
    if any("ESS" in f for f in diag.failures):
        tips.append("increase draws (ESS grows linearly with draws) or chains")
    return "; ".join(tips)


def warn_if_failed(diag: Diagnostics, what: str = "fit") -> None:
    """Emit a :class:`SamplingWarning` naming what failed and what to try."""
    if not diag.ok:
        warnings.warn(
            f"{what}: sampler diagnostics failed — {'; '.join(diag.failures)}. Do not trust this posterior as is. "
            f"Try: {advice(diag)}.",
            SamplingWarning,
            stacklevel=3,
        )
