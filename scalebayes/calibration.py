"""Learning the model discrepancy κ from leave-largest-out refits: the named step ``scalebayes.calibrate(post)``.

For each split direction (default both: the largest runs by compute C and by parameter count N) and each inner
hold-out fraction f (default 0.2 and 0.35), the fit is repeated on all but the largest fraction f of the *fitted*
runs (same model and sampler settings, :func:`scalebayes.holdout.refit_settings`) and the held-out larger runs are
predicted; κ̂ maximises the summed log predictive density (LPD) of all those held-out runs together,

    κ̂ = argmax_κ Σ_i log[(1/S) Σ_s p(y_i | μ_si, σ_s, ν_s, κ·d_i)],

a type-II maximum-likelihood (empirical-Bayes) estimate of one scalar, on a log grid of κ including 0 refined by a
bounded 1-D search (d_i: distance of run i outside its family's fitted runs, :mod:`scalebayes.discrepancy`). κ̂ = 0
(no widening) wins whenever the inner extrapolations are already calibrated. Cost: one refit per inner split (four
by default), each reusing the posterior's compiled sampler.

Why both directions: a user's query (a bigger N at fixed D, a longer run, a larger budget) need not follow the
direction of one kind of split, and the held-out runs of one split share one fitted curve, so one direction gives few
independent extrapolation experiments (measurements in ``case_studies/backtests/README.md``). Pass
``split="compute"`` when only compute extrapolation matters.

Inner refits whose diagnostics fail are never used silently: they are left out of κ̂, listed in the calibration's
``info["excluded"]`` and reported by a :class:`~scalebayes.errors.CalibrationWarning`; with fewer usable splits than
``min_splits`` a :class:`~scalebayes.errors.CalibrationError` is raised.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy.optimize import minimize_scalar

from .discrepancy import Discrepancy, attached, distances, fitted_regions
from .errors import CalibrationError, CalibrationWarning, ModelError
from .holdout import SPLIT_COLUMN, fit_padded, holdout_mask, refit_settings
from .padding import pad_size
from .posterior import Posterior
from .predictive import LogPredictive, for_frame, gamma_nodes
from .progress import Steps, enabled

#: Least NUTS target acceptance of the inner refits (see :func:`inner_splits`).
INNER_TARGET_ACCEPT = 0.95
#: Inner leave-largest-out fractions used to learn κ (each costs one fit per split direction).
DEFAULT_FRACTIONS = (0.2, 0.35)
#: Directions of the inner leave-largest-out splits: the largest runs by compute C and by parameters N.
DEFAULT_SPLITS = ("compute", "params")
#: κ grid: 0 and 10^-4 ... 10^0.5 nats of log loss per nat of log distance.
KAPPA_GRID = np.concatenate([[0.0], np.logspace(-4, 0.5, 19)])


@dataclass
class InnerSplit:
    """One inner leave-largest-out refit: the predictive of its held-out runs without discrepancy, their distances
    outside the refit's runs (P,), their observed log loss (P,) and a description (``info``: split, fraction,
    n_train, n_test, max_distance, inner_ok, rows)."""

    pred: LogPredictive
    distance: np.ndarray
    log_loss: np.ndarray
    info: dict

    @property
    def ok(self) -> bool:
        return bool(self.info["inner_ok"])


def estimate_kappa(records: Sequence[InnerSplit], grid=KAPPA_GRID, *, max_draws: int = 500):
    """κ̂ maximising the summed log predictive density of the held-out runs of ``records``.

    The grid maximum is refined by a bounded 1-D search in log κ between its neighbours; the LPD uses at most
    ``max_draws`` evenly thinned posterior draws per record (κ is one scalar: 500 draws pin it far more tightly
    than the held-out runs do). Returns (κ̂, DataFrame with columns kappa and lpd on the grid plus κ̂).
    """
    if not records:
        raise ModelError("no held-out runs to learn the discrepancy from")
    thin = []
    for r in records:
        S = r.pred.log_mu.shape[0]
        idx = np.linspace(0, S - 1, min(S, max_draws)).round().astype(int)
        p = LogPredictive(r.pred.log_mu[idx], r.pred.sigma[idx], r.pred.nu[idx], r.pred.extra_sd)
        thin.append((p, r.distance, r.log_loss, gamma_nodes(p.nu)))  # the nodes do not depend on κ: once per record

    def lpd(k: float) -> float:
        return float(sum(p.with_extra_sd(k * d).log_density(y, g).sum() for p, d, y, g in thin))

    grid = np.asarray(grid, float)
    values = np.array([lpd(k) for k in grid])
    i = int(np.argmax(values))
    best, best_v = float(grid[i]), float(values[i])
    if 0 < i < len(grid) - 1 and grid[i - 1] > 0:
        r = minimize_scalar(
            lambda lk: -lpd(float(np.exp(lk))),
            bounds=(np.log(grid[i - 1]), np.log(grid[i + 1])),
            method="bounded",
            options={"xatol": 0.01},
        )
        if -r.fun > best_v:
            best, best_v = float(np.exp(r.x)), float(-r.fun)
    table = pd.DataFrame({"kappa": np.append(grid, best), "lpd": np.append(values, best_v)})
    table = table.drop_duplicates("kappa").sort_values("kappa").reset_index(drop=True)
    return best, table


def coverage(records: Sequence[InnerSplit], kappa: float, level: float = 0.9, seed: int = 0) -> float:
    """Fraction of the records' held-out runs inside the central ``level`` predictive interval at this κ."""
    hit = n = 0
    for r in records:
        draws = r.pred.with_extra_sd(kappa * r.distance).draws(seed)
        lo, hi = np.quantile(draws, [(1 - level) / 2, (1 + level) / 2], axis=0)
        hit += int(((r.log_loss >= lo) & (r.log_loss <= hi)).sum())
        n += len(r.log_loss)
    return hit / max(n, 1)


def _as_splits(split) -> tuple[str, ...]:
    return (split,) if isinstance(split, str) else tuple(split)


def inner_splits(
    post: Posterior,
    *,
    fractions: Sequence[float] = DEFAULT_FRACTIONS,
    split: str | Sequence[str] = DEFAULT_SPLITS,
    seed: int | None = None,
    n_pad: int | None = None,
    fit_kwargs: Mapping | None = None,
    progress: bool | None | Steps = None,
) -> list[InnerSplit]:
    """Leave-largest-out refits of ``post``'s own runs: for each split direction (``"compute"``: largest C,
    ``"params"``: largest N) and each fraction f, refit on all but the largest f of the runs and predict those.
    A direction whose column the data lack (N for loss-vs-compute data) is skipped. ``progress``: as for
    :func:`calibrate`, or a :class:`~scalebayes.progress.Steps` of a larger job that counts these refits."""
    data = post.data
    directions = split_directions(data, split)
    steps = progress if isinstance(progress, Steps) else Steps("calibrate", len(directions) * len(fractions), progress)
    kw = refit_settings(post)
    # Same model and settings, but a step size tuned for the harder geometry: a refit on the smaller runs spans a
    # narrower range of N and D, so the E-A-alpha ridge is more curved and divergences more frequent (a refit that
    # fails its diagnostics is left out).
    kw["target_accept"] = max(float(kw["target_accept"]), INNER_TARGET_ACCEPT)
    # Each refit's sampler bar only where the fit itself had one: the refits then run the fit's own compiled program
    # (progress is compiled in or not), so asking for progress here never costs a compilation.
    kw["progress"] = steps.on and enabled(post.sampler_config.progress)
    kw.update(fit_kwargs or {})
    seed = int(post.meta.get("seed", 0)) if seed is None else int(seed)
    n_pad = pad_size(len(data)) if n_pad is None else int(n_pad)
    out = []
    for direction in directions:
        for f in fractions:
            test = holdout_mask(data, direction, f)
            train_data = data.subset(~test)
            test_frame = data.frame.loc[test]
            inner = fit_padded(train_data, n_pad=n_pad, seed=seed, **kw)
            d = distances(fitted_regions(train_data, post.law), test_frame, post.law)
            info = {
                "split": direction,
                "fraction": float(f),
                "n_train": int((~test).sum()),
                "n_test": int(test.sum()),
                "max_distance": float(d.max()),
                "inner_ok": bool(inner.ok),
                "diagnostics": str(inner.diagnostics),  # says why an excluded refit failed
                "rows": test_frame.index.tolist(),
            }
            pred = for_frame(inner, test_frame, seed=seed)
            out.append(InnerSplit(pred, d, np.log(test_frame["loss"].to_numpy()), info))
            steps.advance(f"inner refit without the largest {f:.0%} by {direction}")
    return out


def split_directions(data, split: str | Sequence[str] = DEFAULT_SPLITS) -> list[str]:
    """The inner split directions that apply to ``data`` (a direction whose column the data lack is skipped;
    ``"compute"`` when none applies)."""
    return [s for s in _as_splits(split) if SPLIT_COLUMN.get(s, s) in data.frame.columns] or ["compute"]


def learn(post: Posterior, splits: Sequence[InnerSplit], *, min_splits: int | None = None) -> Discrepancy:
    """The :class:`Discrepancy` of ``post`` with κ estimated from the inner ``splits`` whose refits passed their
    diagnostics (splits of several posteriors may be pooled to share one κ). ``min_splits`` (default: half of the
    splits) usable splits are required, and at least one."""
    used = [s for s in splits if s.ok]
    failed = [s for s in splits if not s.ok]
    need = max(1, math.ceil(len(splits) / 2) if min_splits is None else int(min_splits))
    excluded = [{k: v for k, v in s.info.items() if k != "rows"} for s in failed]
    if len(used) < need:
        raise CalibrationError(
            f"only {len(used)} of {len(splits)} inner refits passed their diagnostics ({need} needed): the "
            "discrepancy cannot be learned; refit with more warm-up/draws, or pass fit_kwargs=... to calibrate"
        )
    if failed:
        warnings.warn(
            f"{len(failed)} of {len(splits)} inner refits failed their diagnostics and were left out of the "
            f"calibration: {[(e['split'], e['fraction']) for e in excluded]}",
            CalibrationWarning,
            stacklevel=3,
        )
    kappa, table = estimate_kappa(used)
    at = table.set_index("kappa")
    info = {
        "split": sorted({s.info["split"] for s in splits}),
        "splits": [{k: v for k, v in s.info.items() if k != "rows"} for s in used],
        "excluded": excluded,
        "n_heldout": int(sum(len(s.log_loss) for s in used)),
        "lpd_kappa0": float(at.loc[0.0, "lpd"]),
        "lpd_kappa": float(at.loc[kappa, "lpd"]),
        "coverage90_kappa0": coverage(used, 0.0),
        "coverage90_kappa": coverage(used, kappa),
    }
    return Discrepancy(kappa=kappa, regions=fitted_regions(post.data, post.law), info=info)


def calibrate(
    post: Posterior,
    *,
    fractions: Sequence[float] = DEFAULT_FRACTIONS,
    split: str | Sequence[str] = DEFAULT_SPLITS,
    seed: int | None = None,
    n_pad: int | None = None,
    min_splits: int | None = None,
    fit_kwargs: Mapping | None = None,
    progress: bool | None = None,
) -> Posterior:
    """A calibrated copy of ``post``: κ learned from leave-largest-out refits of its own runs (module docstring),
    stored in the copy's DataTree (saved and loaded with it). ``post`` itself is left unchanged.

    Args:
        post: a :class:`~scalebayes.posterior.Posterior` (its ``data`` are the fitted runs).
        fractions: inner hold-out fractions; one refit each per split direction.
        split: direction(s) of the inner splits: ``"compute"`` (largest C held out), ``"params"`` (largest N), or
            several (default both, pooled into one κ̂).
        seed: refit seed (default: the posterior's own seed).
        n_pad: padded size for the refits (default: that of the posterior's data, so the refits reuse its compiled
            sampler).
        min_splits: usable inner refits required (see :func:`learn`).
        fit_kwargs: overrides of the refit settings (default :func:`scalebayes.holdout.refit_settings`).
        progress: a line per finished refit (refits done / total, which refit, elapsed, ETA) on stderr, and each
            refit's sampler bar where ``post``'s own fit had one; ``None`` (default) when stderr is a terminal or in
            a notebook, ``False`` off.

    Returns:
        The calibrated :class:`~scalebayes.posterior.Posterior`; ``.discrepancy`` holds κ and how it was learned.
        Its ``predict``, ``plan``, ``prob_loss_below`` and ``compute_for_loss`` then use the calibrated predictive.
    """
    splits = inner_splits(
        post, fractions=fractions, split=split, seed=seed, n_pad=n_pad, fit_kwargs=fit_kwargs, progress=progress
    )
    disc = learn(post, splits, min_splits=min_splits)
    return Posterior(attached(post.idata, disc), data=post.data)
