"""Sampler diagnostics, one computation and one verdict for :func:`scalebayes.fit` and :func:`scalebayes.fit_many`.

Numbers: rank-normalised split R-hat (the larger of the bulk and the folded, tail, version), bulk and tail ESS
(Vehtari et al. 2021, "Rank-normalization, folding, and localization: an improved R-hat"), computed by
:func:`batch_diagnostics` for any number of quantities (and datasets) at once in NumPy. They equal ArviZ's
``arviz_stats.rhat`` / ``ess(method="bulk")`` / ``ess(method="tail")`` to rounding (tested), and cost one sort per
quantity instead of ArviZ's per-variable loop, which matters for a batch of a thousand fits.

Sampling on (:func:`worth_extending`): when a fit fails *only* because R-hat or an ESS falls short (no divergent
transition, R-hat ≤ :data:`EXTEND_RHAT_MAX`), :func:`scalebayes.fit` continues the same chains for another block of
draws (``extend=1`` by default) and judges all of them, as a user told "run longer" would; a fit so extended says so
in its notes. Divergences are never sampled away: they mark a region the sampler cannot enter, which more draws
of the same chains do not fix.

Verdict (:func:`summarise`, the only place it is decided): a fit passes when every quantity has R-hat ≤ 1.01 and
bulk and tail ESS ≥ 400 and no transition diverged. Iterations whose trajectory hit ``max_tree_depth`` (tree-depth
saturation) do not bias the draws, so they do not fail a fit, but they are reported with their fraction, because
they mean NUTS was stopped early (slow mixing, low ESS per second) and the advice names what to change.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

import numpy as np
import pandas as pd
import xarray as xr
from arviz_base import rcParams
from scipy import special

from .errors import SamplingWarning

RHAT_MAX = 1.01
ESS_MIN = 400
#: Largest R-hat that sampling on is tried for. Chains that agree to within this and need only more effective
#: draws gain from more of them (R-hat - 1 shrinks about as 1/ESS); beyond it the chains disagree (a chain stuck in
#: another mode, an unidentified parameter), which doubling the draws seldom fixes: the fit fails at once, with
#: advice, instead of costing twice.
EXTEND_RHAT_MAX = 1.05


@dataclass(frozen=True)
class Diagnostics:
    """Worst-case convergence numbers over every posterior quantity, and whether they pass.

    ``ok`` requires R-hat ≤ 1.01, bulk and tail ESS ≥ 400 (Vehtari et al. 2021) and zero divergent transitions.
    ``failures`` says in words what failed; ``notes`` what did not fail but costs efficiency (tree-depth
    saturation; sampling that went on past the requested draws, ``extensions`` times); ``table`` has R-hat and
    ESS per variable element. ``divergence_fraction`` is divergences per post-warm-up iteration;
    ``tree_depth_saturation`` the fraction of iterations whose trajectory reached ``max_tree_depth`` (NaN when
    the depth limit is unknown).
    """

    r_hat_max: float
    ess_bulk_min: float
    ess_tail_min: float
    divergences: int
    steps_per_iteration: float
    n_samples: int
    failures: tuple[str, ...] = ()
    table: pd.DataFrame = field(default_factory=pd.DataFrame, repr=False, compare=False)
    divergence_fraction: float = 0.0
    tree_depth_saturation: float = float("nan")
    max_tree_depth: int | None = None
    notes: tuple[str, ...] = ()
    extensions: int = 0

    @property
    def ok(self) -> bool:
        return not self.failures

    def failing_parameters(self) -> pd.DataFrame:
        """The rows of ``table`` (one per parameter element) that fail the thresholds of the verdict (R-hat >
        RHAT_MAX or bulk/tail ESS < ESS_MIN, or not finite), worst R-hat first, with a ``fails`` column saying
        which test failed."""
        t = self.table
        if t is None or not len(t):
            return pd.DataFrame(columns=["r_hat", "ess_bulk", "ess_tail", "fails"])
        bad = {
            "R-hat": ~np.isfinite(t["r_hat"]) | (t["r_hat"] > RHAT_MAX),
            "bulk ESS": ~np.isfinite(t["ess_bulk"]) | (t["ess_bulk"] < ESS_MIN),
            "tail ESS": ~np.isfinite(t["ess_tail"]) | (t["ess_tail"] < ESS_MIN),
        }
        out = t[bad["R-hat"] | bad["bulk ESS"] | bad["tail ESS"]].copy()
        out["fails"] = [", ".join(w for w, b in bad.items() if b[i]) for i in out.index]
        return out.sort_values("r_hat", ascending=False)

    def to_dict(self) -> dict:
        return {
            "r_hat_max": self.r_hat_max,
            "ess_bulk_min": self.ess_bulk_min,
            "ess_tail_min": self.ess_tail_min,
            "divergences": self.divergences,
            "divergence_fraction": self.divergence_fraction,
            "tree_depth_saturation": self.tree_depth_saturation,
            "steps_per_iteration": self.steps_per_iteration,
            "n_samples": self.n_samples,
            "ok": self.ok,
            "failures": list(self.failures),
            "notes": list(self.notes),
            "extensions": self.extensions,
        }

    def __str__(self) -> str:
        head = "diagnostics ok" if self.ok else "DIAGNOSTICS FAILED: " + "; ".join(self.failures)
        notes = "".join(f"; {n}" for n in self.notes)
        return (
            f"{head}{notes} (R-hat max {self.r_hat_max:.4f}, bulk ESS min {self.ess_bulk_min:.0f}, tail ESS min "
            f"{self.ess_tail_min:.0f}, divergences {self.divergences}, {self.steps_per_iteration:.1f} leapfrog "
            f"steps/iteration)"
        )


# ------------------------------------------------------------------------------------- batched R-hat and ESS
def _split(x: np.ndarray) -> np.ndarray:
    """(..., C, S) → (..., 2C, S//2): first and last halves of each chain (the middle draw dropped for odd S)."""
    half = x.shape[-1] // 2
    return np.concatenate([x[..., :half], x[..., x.shape[-1] - half :]], axis=-2)


def _z_scale(x: np.ndarray) -> np.ndarray:
    """Rank-normalise over the last two axes (chains × draws) together (Blom's offset 3/8)."""
    # lazily: scipy.stats (also under arviz_stats) is a heavy import, not needed to start
    from scipy.stats import rankdata

    shape = x.shape
    flat = x.reshape(*shape[:-2], -1)
    rank = rankdata(flat, method="average", axis=-1)
    z = special.ndtri((rank - 0.375) / (flat.shape[-1] + 0.25))
    return z.reshape(shape)


def _rhat(x: np.ndarray) -> np.ndarray:
    """Gelman-Rubin R-hat of (..., C, S) chains."""
    n = x.shape[-1]
    between = n * np.var(np.mean(x, axis=-1), axis=-1, ddof=1)
    within = np.mean(np.var(x, axis=-1, ddof=1), axis=-1)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.sqrt((between / within + n - 1) / n)


def _autocorrelation(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """ArviZ's combined-chain autocorrelation ρ_t (..., S) of (..., C, S) chains (FFT autocovariance), and
    whether the chains are constant (...,)."""
    C, n = x.shape[-2:]
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
        rho = 1.0 - (mean_var[..., None] - np.mean(acov, axis=-2)) / var_plus[..., None]
    return rho, const


def _ess(x: np.ndarray) -> np.ndarray:
    """Effective sample size of (..., C, S) chains: FFT autocovariance, Geyer's initial positive and initial
    monotone sequences — ArviZ's ``_ess`` step for step, with its scalar loops run over all leading axes at once
    (masked), stopping as soon as every sequence has ended."""
    x = np.asarray(x, dtype=float)
    C, n = x.shape[-2:]
    lead = x.shape[:-2]
    rho, const = _autocorrelation(x)
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
    89%), so that these numbers and ArviZ's agree."""
    return float(rcParams["stats.ci_prob"])


def split_rhat(x: np.ndarray) -> np.ndarray:
    """Rank-normalised split R-hat (the larger of bulk and folded) of draws ``x`` (..., C, S), each (...,); NaN
    with one chain. The R-hat of :func:`batch_diagnostics`, without the ESS."""
    return batch_diagnostics(x, ess=False)[0]


def batch_diagnostics(x: np.ndarray, ess: bool = True) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Rank-normalised split R-hat, bulk ESS and tail ESS of draws ``x`` (..., C, S), each (...,), matching
    ``arviz_stats.rhat`` / ``ess(method="bulk")`` / ``ess(method="tail")`` (tail quantiles from ArviZ's
    ``stats.ci_prob``). R-hat is NaN with one chain, as in ArviZ. ``ess=False`` skips the ESS (None)."""
    x = np.asarray(x, dtype=float)
    sx = _split(x)
    z = _z_scale(sx)  # ranks are most of the cost: once for bulk R-hat and bulk ESS
    r_bulk = _rhat(z)
    med = np.median(sx.reshape(*sx.shape[:-2], -1), axis=-1)[..., None, None]
    r_tail = _rhat(_z_scale(np.abs(sx - med)))
    rhat = np.maximum(r_bulk, r_tail)
    if x.shape[-2] < 2:
        rhat = np.full(rhat.shape, np.nan)
    if not ess:
        return rhat, None, None
    bulk = _ess(z)
    flat = x.reshape(*x.shape[:-2], -1)
    p = _tail_prob()
    q = np.quantile(flat, sorted((p, 1.0 - p)), axis=-1)  # (2, ...)
    tail = np.minimum(
        _ess(_split((x <= q[0][..., None, None]).astype(float))),
        _ess(_split((x <= q[1][..., None, None]).astype(float))),
    )
    return rhat, bulk, tail


# ------------------------------------------------------------------------------------------------ the verdict
def _worst(series: pd.Series, largest: bool) -> tuple[float, str]:
    """The worst finite value of a column and the quantity it belongs to (NaN, "some parameter" when none)."""
    finite = series.replace([np.inf, -np.inf], np.nan)
    if not finite.notna().any():
        return float("nan"), "some parameter"
    name = finite.idxmax() if largest else finite.idxmin()
    return float(finite[name]), str(name)


def _failures(table: pd.DataFrame, divergences: int, n_iter: int) -> list[str]:
    failures = []
    r, r_at = _worst(table["r_hat"], largest=True)
    if not np.isfinite(r) or r > RHAT_MAX:
        failures.append(f"R-hat {r:.3f} > {RHAT_MAX} ({r_at})")
    for col, what in (("ess_bulk", "bulk"), ("ess_tail", "tail")):
        e, e_at = _worst(table[col], largest=False)
        if not np.isfinite(e) or e < ESS_MIN:
            failures.append(f"{what} ESS {e:.0f} < {ESS_MIN} ({e_at if np.isfinite(e) else '?'})")
    if divergences:
        s = "s" if divergences > 1 else ""
        failures.append(f"{divergences} divergent transition{s} ({divergences / max(n_iter, 1):.1%} of iterations)")
    return failures


def summarise(
    labels: Sequence[str],
    rhat,
    bulk,
    tail,
    *,
    diverging: np.ndarray,
    n_steps: np.ndarray,
    max_tree_depth: int | None = None,
) -> Diagnostics:
    """The :class:`Diagnostics` of one fit from per-quantity R-hat, bulk and tail ESS (one per label) and its
    sample stats ``diverging`` and ``n_steps`` (leapfrog steps per iteration), each (chains, draws). The one
    pass/fail verdict of the package."""
    table = pd.DataFrame(
        {"r_hat": np.asarray(rhat), "ess_bulk": np.asarray(bulk), "ess_tail": np.asarray(tail)},
        index=pd.Index(list(labels), name="name"),
    )
    n_steps = np.asarray(n_steps)
    n_iter = int(n_steps.size)
    div = int(np.asarray(diverging).sum())
    saturation = float("nan")
    notes = []
    if max_tree_depth is not None:
        saturation = float(np.mean(n_steps >= (1 << int(max_tree_depth)) - 1)) if n_iter else 0.0
        if saturation > 0:
            notes.append(f"{saturation:.1%} of iterations hit max_tree_depth={int(max_tree_depth)}")
    return Diagnostics(
        r_hat_max=_worst(table["r_hat"], largest=True)[0],
        ess_bulk_min=_worst(table["ess_bulk"], largest=False)[0],
        ess_tail_min=_worst(table["ess_tail"], largest=False)[0],
        divergences=div,
        steps_per_iteration=float(n_steps.mean()) if n_iter else float("nan"),
        n_samples=n_iter,
        failures=tuple(_failures(table, div, n_iter)),
        table=table,
        divergence_fraction=div / n_iter if n_iter else 0.0,
        tree_depth_saturation=saturation,
        max_tree_depth=None if max_tree_depth is None else int(max_tree_depth),
        notes=tuple(notes),
    )


def merged(main: Diagnostics, part: Diagnostics, label: str) -> Diagnostics:
    """``main`` joined with the diagnostics ``part`` of a second sampling step of the same result (named
    ``label`` in its failures, notes and table rows): worst R-hat and ESS of both, divergences of both, and a
    failure of either fails. Leapfrog steps per iteration and the sample count stay ``main``'s."""
    table = pd.concat([main.table, part.table.rename(index=lambda k: f"{label}: {k}")])
    return replace(
        main,
        r_hat_max=max(main.r_hat_max, part.r_hat_max),
        ess_bulk_min=min(main.ess_bulk_min, part.ess_bulk_min),
        ess_tail_min=min(main.ess_tail_min, part.ess_tail_min),
        divergences=main.divergences + part.divergences,
        failures=(*main.failures, *(f"{label}: {f}" for f in part.failures)),
        notes=(*main.notes, *(f"{label}: {n}" for n in part.notes)),
        table=table,
    )


def worth_extending(diag: Diagnostics) -> bool:
    """True when ``diag`` failed only on R-hat (≤ :data:`EXTEND_RHAT_MAX`) or ESS: no divergences, every number
    finite. See the module docstring."""
    return (
        not diag.ok
        and diag.divergences == 0
        and np.isfinite([diag.r_hat_max, diag.ess_bulk_min, diag.ess_tail_min]).all()
        and diag.r_hat_max <= EXTEND_RHAT_MAX
    )


def _labels(da: xr.DataArray, name: str) -> list[str]:
    dims = [d for d in da.dims if d not in ("chain", "draw")]
    if not dims:
        return [name]
    idx = pd.MultiIndex.from_product([da[d].values for d in dims]) if len(dims) > 1 else da[dims[0]].values
    return [f"{name}[{','.join(map(str, i)) if isinstance(i, tuple) else i}]" for i in idx]


def quantities(posterior: xr.Dataset) -> tuple[list[str], np.ndarray]:
    """Every element of every variable of a (chain, draw, ...) Dataset: labels (``name`` or ``name[family]``) and
    draws (quantities, chains, draws)."""
    labels, rows = [], []
    for name in posterior.data_vars:
        da = posterior[name]
        v = np.asarray(da.transpose("chain", "draw", ...).values, dtype=float)
        rows.append(np.moveaxis(v.reshape(*v.shape[:2], -1), -1, 0))
        labels += _labels(da, name)
    arr = np.concatenate(rows) if rows else np.zeros((0, posterior.sizes["chain"], posterior.sizes["draw"]))
    return labels, arr


def compute(posterior: xr.Dataset, sample_stats: xr.Dataset) -> Diagnostics:
    """Diagnostics for a posterior Dataset (dims chain, draw, ...) and its sample_stats (``diverging``,
    ``n_steps``; the attribute ``max_tree_depth``, which :func:`scalebayes.fit` stores, enables the saturation
    check)."""
    labels, arr = quantities(posterior)
    depth = sample_stats.attrs.get("max_tree_depth")
    diag = _verdict(
        labels, arr, sample_stats["diverging"], sample_stats["n_steps"], None if depth is None else int(depth)
    )
    k = int(sample_stats.attrs.get("extensions", 0))
    if not k:
        return diag
    n = int(sample_stats.sizes["draw"])
    note = f"sampling went on {k}x ({n // (k + 1)} → {n} draws per chain): R-hat or ESS fell short at first"
    return replace(diag, notes=(*diag.notes, note), extensions=k)


def _verdict(labels, arr: np.ndarray, diverging, n_steps, max_tree_depth: int | None) -> Diagnostics:
    """:func:`summarise` of draws ``arr`` (k, chains, draws) named by ``labels``, with the run's divergence and
    leapfrog-step records (chains, draws)."""
    rhat, bulk, tail = batch_diagnostics(arr)
    return summarise(
        labels,
        rhat,
        bulk,
        tail,
        diverging=np.asarray(diverging),
        n_steps=np.asarray(n_steps),
        max_tree_depth=max_tree_depth,
    )


def advice(diag: Diagnostics) -> str:
    """What to try when diagnostics fail or NUTS hit its tree-depth limit."""
    tips = []
    if diag.divergences:
        tips.append(
            f"divergences ({diag.divergence_fraction:.1%} of iterations): raise target_accept (e.g. 0.95-0.99); if "
            "they persist, reparameterise (with several families: the default marginal form, or centred=... for "
            "parameters every family pins well), tighten priors, or check the data for runs the law cannot fit"
        )
    if diag.tree_depth_saturation > 0:
        tips.append(
            f"{diag.tree_depth_saturation:.1%} of trajectories stopped at max_tree_depth={diag.max_tree_depth}: "
            "raise max_tree_depth, or reparameterise (centred=..., pooling=) so the posterior is less correlated"
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


def summarise_chains(labels: list[str], rows: list[np.ndarray], extra: dict, max_tree_depth: int) -> Diagnostics:
    """The verdict on draws of a NumPyro NUTS run: ``rows`` a list of (k, chains, draws) arrays whose k quantities
    are named by ``labels`` (in order); ``extra`` NumPyro's ``diverging`` and ``num_steps`` fields."""
    return _verdict(labels, np.concatenate(rows), extra["diverging"], extra["num_steps"], max_tree_depth)
