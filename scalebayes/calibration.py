"""Learning the model discrepancy from the data's own larger runs: the named step ``scalebayes.calibrate(post)``.

The law's extrapolation errors are measured on inner leave-largest-out splits of the fitted runs (by compute C and
by parameters N, holding out the largest 10-40%), with each family's law refitted by Huber point fits (and their
bootstrap resamples) on the rest; a grid posterior of the discrepancy's scale κ and growth γ follows, from a prior
updated by those errors, per family and partially pooled when there are several (:mod:`scalebayes.formerror`).
The calibrated copy of the posterior stores draws of (κ, γ), and every prediction from it adds δ = κ_s·d^γ_s·z_s
to posterior draw s (:mod:`scalebayes.discrepancy`).

Why both directions: a user's query (a bigger N at fixed D, a longer run, a larger budget) need not follow the
direction of one kind of split. Why several fractions: the errors are then seen at several distances, which is what
tells a growth γ from a scale κ.

Inner refits that do not converge are never used silently: they are left out, listed in the calibration's
``info["left_out"]`` and reported by a :class:`~scalebayes.errors.CalibrationWarning`. With no usable split at all
(too few runs per family for a refit) the discrepancy is the prior's, said by a warning and in ``info``.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np

from .discrepancy import Discrepancy, attached, fitted_regions
from .errors import CalibrationWarning, ModelError
from .formerror import (
    BOOTSTRAP,
    DEFAULT_FRACTIONS,
    DEFAULT_SPLITS,
    KAPPA_PRIOR,
    FamilyKappas,
    SplitErrors,
    split_errors,
)
from .posterior import Posterior
from .progress import Steps

#: (κ, γ) draws stored with a calibrated posterior; posterior draw s uses pair s mod this.
N_SCALE_DRAWS = 4000
#: (κ, γ) draws stored per fitted family when there are several (a 50-family fit stores 100,000 numbers).
N_FAMILY_DRAWS = 1000


def inner_errors(
    post: Posterior,
    *,
    fractions: Sequence[float] = DEFAULT_FRACTIONS,
    split: str | Sequence[str] = DEFAULT_SPLITS,
    bootstrap: int = BOOTSTRAP,
    seed: int | None = None,
) -> tuple[list[SplitErrors], dict]:
    """The inner splits of ``post``'s runs (:func:`scalebayes.formerror.split_errors`), each family's refits
    started at its posterior medians. Returns the splits and a report (lanes, lanes left out and why, noise)."""
    seed = int(post.meta.get("seed", 0)) if seed is None else int(seed)
    starts = {f: post.param_medians(f) for f in post.families}
    return split_errors(post.data, post.law, starts, fractions=fractions, split=split, bootstrap=bootstrap, seed=seed)


def learn(
    post: Posterior, splits: Sequence[SplitErrors], report: dict, *, prior=KAPPA_PRIOR, seed: int = 0
) -> Discrepancy:
    """The :class:`Discrepancy` of ``post`` from inner ``splits`` (those of several posteriors may be pooled to share
    one discrepancy) and their ``report``; warns about refits left out and about a prior-only result."""
    if report.get("left_out"):
        warnings.warn(
            f"{len(report['left_out'])} of {report['lanes']} inner refits did not converge and were left out of the "
            f"calibration: {[(e['split'], e['fraction'], e['family']) for e in report['left_out']]}",
            CalibrationWarning,
            stacklevel=3,
        )
    if not splits:
        warnings.warn(
            "no inner split could be refitted (too few runs per family): the discrepancy is the prior's alone",
            CalibrationWarning,
            stacklevel=3,
        )
    fk = FamilyKappas.learn(splits, prior=prior)
    fams = [str(f) for f in post.families]
    # one family: its own posterior is the default; several: the default is a new family's (the population's)
    kp = fk.families.get(fams[0], fk.new) if len(fams) == 1 else fk.new
    kappa, gamma = kp.draws(N_SCALE_DRAWS, seed=seed)
    own = {} if len(fams) == 1 else {f: fk.families.get(f, fk.new) for f in fams}
    family_draws = {f: _rounded(k.draws(N_FAMILY_DRAWS, seed=seed + 1 + i)) for i, (f, k) in enumerate(own.items())}
    info = {
        "method": "inner Huber point refits with bootstrap (scalebayes.formerror)",
        "prior_log_kappa": list(prior),
        "splits": [e.info for e in splits],
        "n_heldout": int(sum(len(e.residual) for e in splits)),
        "prior_only": not splits,
        "families": {
            f: {
                "kappa_median": float(np.median(d["kappa"])),
                "gamma_mode": _mode(d["gamma"]),
                "own_splits": f in fk.families,
            }
            for f, d in family_draws.items()
        },
        **{k: v for k, v in report.items() if k != "reason"},
    }
    return Discrepancy(
        kappa=float(np.median(kappa)),
        regions=fitted_regions(post.data, post.law),
        info=info,
        gamma=kp.mode()[1],
        kappa_draws=kappa.tolist(),
        gamma_draws=gamma.tolist(),
        family_draws=family_draws,
    )


def _rounded(draws: tuple[np.ndarray, np.ndarray]) -> dict[str, list[float]]:
    """(κ, γ) draws as lists for storage, κ to 6 significant digits (the posterior's own resolution is ~1%)."""
    kappa, gamma = draws
    return {"kappa": [float(f"{v:.6g}") for v in kappa], "gamma": [float(v) for v in gamma]}


def _mode(values) -> float:
    v, n = np.unique(np.asarray(values, float), return_counts=True)
    return float(v[np.argmax(n)])


def calibrate(
    post: Posterior,
    *,
    fractions: Sequence[float] = DEFAULT_FRACTIONS,
    split: str | Sequence[str] = DEFAULT_SPLITS,
    prior: tuple[float, float] = KAPPA_PRIOR,
    bootstrap: int = BOOTSTRAP,
    seed: int | None = None,
    progress: bool | None = None,
) -> Posterior:
    """A calibrated copy of ``post``: the discrepancy learned from its own larger runs (module docstring), stored in
    the copy's DataTree (saved and loaded with it). ``post`` itself is left unchanged; nothing is refitted by NUTS.

    Args:
        post: a :class:`~scalebayes.posterior.Posterior` (its ``data`` are the fitted runs).
        fractions: inner hold-out fractions (largest runs held out), each in (0, 1).
        split: direction(s) of the inner splits: ``"compute"`` (largest C), ``"params"`` (largest N), or both.
        prior: (mean, s.d.) of log κ (default :data:`scalebayes.formerror.KAPPA_PRIOR`).
        bootstrap: resamples per inner refit, for its parameter error (≥ 2).
        seed: of the bootstrap resamples and the (κ, γ) draws (default: the posterior's own seed).
        progress: a line per finished stage (inner refits, the posterior of κ and γ) on stderr; ``None`` (default)
            when stderr is a terminal or in a notebook, ``False`` off.

    Returns:
        The calibrated :class:`~scalebayes.posterior.Posterior`; ``.discrepancy`` holds (κ, γ) and how they were
        learned. Its ``predict``, ``plan``, ``prob_loss_below`` and ``compute_for_loss`` then use the calibrated
        predictive.
    """
    if not fractions or any(not 0.0 < float(f) < 1.0 for f in fractions):
        raise ModelError(f"fractions must be a non-empty sequence of numbers in (0, 1), got {fractions!r}")
    if int(bootstrap) < 2:
        raise ModelError(f"bootstrap must be >= 2, got {bootstrap!r}")
    seed = int(post.meta.get("seed", 0)) if seed is None else int(seed)
    steps = Steps("calibrate", 2, progress, unit="stages")
    splits, report = inner_errors(post, fractions=fractions, split=split, bootstrap=bootstrap, seed=seed)
    steps.advance(f"{report['lanes']} inner refits x {1 + int(bootstrap)}")
    disc = learn(post, splits, report, prior=prior, seed=seed)
    steps.advance(f"kappa ~ {disc.kappa:.3g}, gamma ~ {disc.gamma:g}")
    return Posterior(attached(post.idata, disc), data=post.data)
