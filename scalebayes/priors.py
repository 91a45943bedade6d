"""Priors, in one place, with their reasoning.

Every law parameter is sampled as an unconstrained *latent* (see :mod:`scalebayes.laws`) with a Normal(loc, scale)
prior chosen by the law relative to the data's own scale (the median observed loss, and the geometric-mean N, D).
Around the law sit three more choices, documented here:

``sigma`` (noise of log loss between runs, HalfNormal(0.1))
    Residuals are on *log* loss, i.e. relative errors. 0.1 puts 95% of prior mass below ~20% relative scatter,
    far above what any training curve shows (1-5%), so the data decide.
``nu`` (Student-t degrees of freedom, Gamma(2, 0.1))
    Juárez & Steel (2010)'s weakly informative choice: mean 20 (close to Gaussian), with enough mass below 5 that
    a few outlying runs (extraction error, a diverged run) widen the tails instead of dragging the law. No floor:
    ν − 2 ~ Gamma(2, 0.1) (ν kept above 2, so that heavy tails could not absorb systematic misfit) was tried and
    measured on the extrapolation suite: the held-out error of the predictive median got *worse* where the data
    want ν ≈ 1.2-2 (misfitting 0.36% → 0.68% and 1.00% → 1.33%, datablations 3.64% → 4.01% and 4.04% → 4.47%; no
    dataset improved), i.e. those tails were down-weighting genuinely bad runs. Systematic misfit is caught instead
    by the residual-trend check (:mod:`scalebayes.misfit`), which does not depend on ν.
``sigma_trend`` (trend of the noise's log scale per nat of log tokens per parameter, Normal(0, 0.5))
    The noise scale at D/N is σ·exp(ζ·(log(D/N) − c)) (:mod:`scalebayes.model`). 0.5 lets the scale change a
    factor e ≈ 2.7 either way over two nats of D/N (D/N 2.5 against 20) at one prior SD, which covers the trend
    measured on porian's runs (residual s.d. 2.5-6.2% at D/N < 3 against 0.5-2% at D/N ≥ 30), and leaves a
    dataset with one D/N per run length near ζ = 0. Same prior as the what-if that measured it
    (benchmarks/extrapolation/DELTA_SIZING.md); not tuned on the suite.
``tau_<latent>`` (family spread under partial pooling, LogNormal(log m, 1) with median m = 0.2 × the latent's
    prior scale)
    Grounded in how much real families of one study differ (benchmarks/TAU_EVIDENCE.md: REML between-family SDs
    over porian's 8 setups, each half of them and misfitting's three learning rates). Measured vs the median m:

    ========== ===================== ======== ==============
    latent     τ̂ within a study     median m  95% prior range
    ========== ===================== ======== ==============
    log_E      0.07-0.15             0.20     0.03-1.4
    log_A_c    0.19-0.31             0.30     0.04-2.1
    log_B_c    0.14-0.49             0.30     0.04-2.1
    log_alpha  0-0.14                0.12     0.017-0.85
    log_beta   0.07-0.21             0.12     0.017-0.85
    ========== ===================== ======== ==============

    (Chinchilla's latent prior scales 1.0/1.5/1.5/0.6/0.6; other laws get the same rule.) Every measured spread
    lies within a factor 3 of the median, and the log-SD of 1 lets the data move τ a factor 7 either way at 95%.
    A LogNormal rather than the HalfNormal used before: it has no mass piled at τ = 0, which is what lets the
    default ``"marginal"`` form integrate τ out into a smooth density of the family values (a HalfNormal makes that
    density infinite where all families are equal, with 3 or more families); and the evidence is that families of
    one study *do* differ (no within-study τ̂ of log_E, log_B_c or log_beta is below 0.07). Families from different
    studies (other data, tokenizer or metric) differ far more (TAU_EVIDENCE.md "studies" row: log_E 3.4, log_B_c
    1.7, log_beta 1.0): pass wider medians, e.g. ``priors={"tau_log_E": 2.0}``.

Override any of them with ``fit(..., priors={...})``: keys are latent names (``"log_alpha"``), a published
parameter name (``"alpha"``, meaning its latent), ``"sigma"``, ``"nu"`` (a (shape, rate) pair), ``"sigma_trend"``
or ``"tau_<latent>"``; values are ``(loc, scale)`` pairs for latents, a positive scale for ``sigma`` and
``sigma_trend`` and a positive median for ``tau_*``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from .errors import ModelError, UnknownNameError
from .laws import Law

SIGMA_SCALE = 0.1
NU_SHAPE_RATE = (2.0, 0.1)
SIGMA_TREND_SCALE = 0.5
#: Median of τ's LogNormal prior as a fraction of the latent's prior scale (evidence in the module docstring).
TAU_FRACTION = 0.2


@dataclass(frozen=True)
class Priors:
    """Resolved priors for one fit.

    ``latent``: Normal(loc, scale) per latent; ``tau``: median of the LogNormal prior of the family spread per
    latent (log-SD :data:`scalebayes.model.TAU_LOG_SD`);
    ``sigma``: HalfNormal scale of the log-loss noise; ``nu``: Gamma(shape, rate) of the Student-t dof;
    ``sigma_trend``: Normal scale of the noise trend in log tokens per parameter.
    """

    latent: dict[str, tuple[float, float]]
    tau: dict[str, float]
    sigma: float = SIGMA_SCALE
    nu: tuple[float, float] = NU_SHAPE_RATE
    sigma_trend: float = SIGMA_TREND_SCALE

    def loc(self, latents) -> np.ndarray:
        return np.array([self.latent[z][0] for z in latents])

    def scale(self, latents) -> np.ndarray:
        return np.array([self.latent[z][1] for z in latents])

    def tau_scale(self, latents) -> np.ndarray:
        return np.array([self.tau[z] for z in latents])

    def to_dict(self) -> dict:
        return {
            "latent": self.latent,
            "tau": self.tau,
            "sigma": self.sigma,
            "nu": list(self.nu),
            "sigma_trend": self.sigma_trend,
        }

    @classmethod
    def from_dict(cls, d: Mapping) -> Priors:
        return cls(
            latent={k: tuple(v) for k, v in d["latent"].items()},
            tau=dict(d["tau"]),
            sigma=float(d["sigma"]),
            nu=tuple(d["nu"]),
            sigma_trend=float(d.get("sigma_trend", SIGMA_TREND_SCALE)),  # files from before the noise trend
        )


def resolve(law: Law, centre: Mapping[str, float], loss_scale: float, overrides: Mapping | None) -> Priors:
    """The law's default priors for data with this centre (mean log inputs) and typical loss (nats), with
    ``overrides`` applied. Raises :class:`UnknownNameError` for a key that names nothing in this model."""
    latent = law.default_priors(centre, loss_scale)
    tau = {z: TAU_FRACTION * s for z, (_, s) in latent.items()}
    sigma, nu, zeta = SIGMA_SCALE, NU_SHAPE_RATE, SIGMA_TREND_SCALE
    by_param = {}
    for z in law.latents:
        if z.startswith("log_") and z[4:] in law.params:
            by_param[z[4:]] = z
    for key, value in (overrides or {}).items():
        if key == "sigma":
            sigma = _positive(key, value)
        elif key == "nu":
            nu = _pair(key, value, positive=True)
        elif key == "sigma_trend":
            zeta = _positive(key, value)
        elif key.startswith("tau_") and key[4:] in latent:
            tau[key[4:]] = _positive(key, value)
        elif key in latent:
            latent[key] = _pair(key, value)
        elif key in by_param:
            latent[by_param[key]] = _pair(key, value)
        else:
            names = sorted([*latent, *by_param, "sigma", "nu", "sigma_trend", *(f"tau_{z}" for z in latent)])
            raise UnknownNameError(f"unknown prior {key!r} for law {law.name!r}; known: {names}")
    return Priors(latent=latent, tau=tau, sigma=sigma, nu=nu, sigma_trend=zeta)


def _positive(key, value) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError) as e:
        raise ModelError(f"prior {key!r} must be a positive number, got {value!r}") from e
    if not np.isfinite(v) or v <= 0:
        raise ModelError(f"prior {key!r} must be a positive number, got {value!r}")
    return v


def _pair(key, value, positive=False) -> tuple[float, float]:
    try:
        a, b = (float(v) for v in value)
    except (TypeError, ValueError) as e:
        raise ModelError(f"prior {key!r} must be a (loc, scale) pair, got {value!r}") from e
    if not (np.isfinite(a) and np.isfinite(b)) or b <= 0 or (positive and a <= 0):
        raise ModelError(f"prior {key!r}: need finite values and a positive scale, got {value!r}")
    return a, b
