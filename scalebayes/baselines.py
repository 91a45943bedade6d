"""Point-estimate baselines: the Huber fit of Hoffmann et al. (2022), Approach 3, and its replication.

:func:`fit_huber` fits a law's parameters by minimising a Huber loss of log-loss residuals, as Hoffmann et al.
(2022, "Training Compute-Optimal Large Language Models", Approach 3) did, or by maximising the Huber *likelihood*
with a fitted scale, as Besiroglu et al. (2024, "Chinchilla Scaling: A replication attempt") did for their headline
refit. Both give one point estimate; ``bootstrap=B`` adds nonparametric-bootstrap standard errors and percentile
intervals. These are the baselines the Bayesian fits of :mod:`scalebayes` are compared against.

Units: N parameters, D training tokens, C training FLOP (C = 6·N·D), loss in nats/token. The fitted residual of
run i is ``r_i = log_mean(params, x_i) − log(loss_i)`` (predicted minus observed log loss, Hoffmann's sign).

Objectives (n runs, δ = ``delta``, Huber_δ(r) = r²/2 for |r| ≤ δ, else δ·(|r| − δ/2)):

``"huber"``
    Σ_i Huber_δ(r_i), δ = 1e-3: Hoffmann's objective, minimised over (log A, log B, log E, α, β) for the
    Chinchilla law (log of every positive parameter, the parameter itself for a real one, for other laws).
``"huber_likelihood"``
    −Σ_i log p(r_i) with p(r) = exp(−Huber_δ(r/σ)) / (σ·Z_δ) and Z_δ = √(2π)·erf(δ/√2) + 2·exp(−δ²/2)/δ, the
    density's exact normaliser, so the scale σ is identifiable and fitted with the law (in log σ). This is the
    replication's ``huber_logpdf`` objective. With δ = 1e-3 the fitted σ is ≈ δ·mean|r| ≈ 5e-6, so the effective
    Huber threshold δ·σ ≈ 5e-9 is far below every residual: the estimate is, to all digits that matter, the
    least-absolute-deviation fit.

Optimiser. A small BFGS written here in JAX and ``jax.vmap``-ed over all starts (or bootstrap resamples) at once.
Why not the alternatives:

* ``jax.scipy.optimize.minimize(method="BFGS")``: its strong-Wolfe line search is a ``while_loop`` holding two
  more ``while_loop`` zoom phases. Under ``vmap`` every lane runs every phase for as long as the slowest lane needs,
  and on this nearly non-smooth objective (δ ≪ typical |r| ≈ 0.02) the zoom often fails outright: 4500 starts had
  not finished after 10 minutes on a 2-core CPU, and from Hoffmann's estimates it stopped at a line-search failure
  well short of the replication's optimum.
* optax L-BFGS / optimistix: not dependencies of this package, and the problem needs only ~80 lines.
* BFGS rather than L-BFGS: there are 5 (6 with σ) coordinates, so the full inverse Hessian costs less than an
  L-BFGS history, and L-BFGS with ≥ 5 pairs of memory is BFGS. Hoffmann's grid + L-BFGS optimum on the Epoch
  data is reproduced to 6 significant digits.

The line search is folded into the iteration: every iteration evaluates the objective and its gradient once per
lane, at x + t·p. If that point satisfies Armijo's condition the step is taken and the inverse Hessian updated (with
the Nocedal-Wright rescaling after the first step); otherwise t shrinks by safeguarded quadratic interpolation and
the lane tries again next iteration. One iteration is therefore one batched value-and-gradient whatever each lane
is doing; ``maxiter`` counts these evaluations. A lane stops when the gradient is below ``gtol`` (rare at the kinks
of this objective), when an accepted step lowers the objective by less than ``ftol`` relative (as L-BFGS-B's
``factr`` test), or when no step longer than ~1e-13 relative to x lowers it (the optimum to machine precision: the
analogue of scipy's "precision loss" stop). On a 2-core CPU the 4500-start grid takes ~15 s of CPU time.

``"huber_likelihood"`` is minimised by continuation, because BFGS crawls on the joint objective when started far
from its optimum with σ already small (the objective is then L1 to 9 digits, all kinks). The fit first minimises
Hoffmann's Huber objective (threshold δ; from the grid or from ``init``), then the Huber objective with threshold
δ/10, δ/100, … down to about δ² · mean|r| (each stage started at the previous optimum, so each is a smooth warm
start), and finally the joint likelihood in (θ, log σ), with log σ started at its closed-form value δ·mean|r| when
every residual is in Huber's linear part. From Hoffmann's estimates this reaches the replication's optimum
(A = 482.01, B = 2085.43, E = 1.8169, α = 0.34781, β = 0.36585) to all printed digits.

Bootstrap. ``bootstrap=B`` draws B resamples of the runs with replacement (index arrays from ``jax.random`` seeded
by ``seed``; a resample enters the objective as per-run multiplicities) and refits each with the *same* objective
and procedure, started from the full-data optimum, all resamples in one vmapped run. Note that the replication's
published standard errors (E 0.026, α 0.0154, β 0.0206) came from refitting Hoffmann's plain Huber objective on
each resample (started from Hoffmann's estimates), not the likelihood. The same-objective likelihood bootstrap
gives nearly the same: with 4000 resamples (seed 0) E 0.0262, α 0.0162, β 0.0207. Cost on chinchilla_epoch, in
CPU time on a 2-core machine: ~8 s for 4000 ``"huber"`` refits, ~55 s for 4000 ``"huber_likelihood"`` refits
(seven continuation stages each).
"""

from __future__ import annotations

import itertools
import math
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd

from . import laws as _laws
from .data import ScalingData
from .errors import DataError, ModelError, UnknownNameError
from .padding import pad_size
from .precision import ensure_float64

__all__ = [
    "HOFFMANN_ESTIMATES",
    "HOFFMANN_GRID",
    "OBJECTIVES",
    "Convergence",
    "HuberFit",
    "fit_huber",
    "huber",
    "huber_log_normaliser",
    "refit_subsets",
]

OBJECTIVES = ("huber", "huber_likelihood")

#: Hoffmann et al. (2022) Approach 3 published estimates (their eq. 10), the replication's starting point.
HOFFMANN_ESTIMATES: dict[str, float] = {"E": 1.69, "A": 406.4, "B": 410.7, "alpha": 0.34, "beta": 0.28}

#: Hoffmann et al.'s initialisation grid in optimisation coordinates (a = log A, b = log B, e = log E): 4500 starts.
HOFFMANN_GRID: dict[str, np.ndarray] = {
    "alpha": np.arange(0.0, 2.5, 0.5),
    "beta": np.arange(0.0, 2.5, 0.5),
    "E": np.arange(-1.0, 1.5, 0.5),
    "A": np.arange(0.0, 30.0, 5.0),
    "B": np.arange(0.0, 30.0, 5.0),
}

# Hoffmann fits the Chinchilla exponents themselves, not their logs (so a start at α = 0 is allowed).
_LINEAR_PARAMS = {"chinchilla": ("alpha", "beta")}

# Iteration budgets, in objective-and-gradient evaluations per lane. Measured on chinchilla_epoch's Hoffmann grid:
# the ~1300 starts that reach the best optimum do so after 60-300 evaluations (median ~170); of the ~700 still
# running at 300, most sit on plateaus where a reducible term has vanished (α or β ≈ 2 with A, B ≈ e^10, objective
# ~20x the best). The best candidate is polished afterwards with a fresh Hessian, so a larger budget buys nothing.
_MAXITER_MULTISTART = 300
_MAXITER_POLISH = 3000
_MAXITER_STAGE = 150
_MAXITER_BOOTSTRAP = 1000
_GTOL = 1e-9
_FTOL = 1e-12
_XTOL = 1e-13
_STATUS = {0: "running", 1: "gtol", 2: "ftol", 3: "xtol", 4: "maxiter", 5: "nonfinite"}
_OK_STATUS = (1, 2, 3)


# ---------------------------------------------------------------------------------------------------- Huber
def huber(r: jnp.ndarray | np.ndarray | float, delta: float) -> jnp.ndarray:
    """Huber_δ(r) = r²/2 for |r| ≤ δ, else δ·(|r| − δ/2), elementwise (same shape as ``r``, same units²)."""
    r = jnp.asarray(r)
    a = jnp.abs(r)
    return jnp.where(a <= delta, 0.5 * r * r, delta * (a - 0.5 * delta))


def huber_log_normaliser(delta: float) -> float:
    """log Z_δ with Z_δ = ∫ exp(−Huber_δ(u)) du = √(2π)·erf(δ/√2) + 2·exp(−δ²/2)/δ (the quadratic core plus the
    two exponential tails), so exp(−Huber_δ(r/σ))/(σ·Z_δ) is a proper density in r."""
    return float(
        np.log(math.sqrt(2.0 * math.pi) * math.erf(delta / math.sqrt(2.0)) + 2.0 * math.exp(-0.5 * delta**2) / delta)
    )


# ---------------------------------------------------------------------------------------------------- coordinates
class _Spec:
    """The optimisation coordinates of one law. Hashed by identity, so it can be a static ``jax.jit`` argument and
    repeated fits of the same law reuse compiled code."""

    def __init__(self, law: _laws.Law):
        self.law = law
        constraints = getattr(law, "constraints", None) or dict.fromkeys(law.params, "positive")
        linear = set(_LINEAR_PARAMS.get(law.name, ())) & set(law.params)
        self.log = tuple(constraints.get(p, "positive") == "positive" and p not in linear for p in law.params)
        self.coords = tuple(f"log_{p}" if lg else p for p, lg in zip(law.params, self.log, strict=True))

    def to_params(self, th: jnp.ndarray) -> dict[str, jnp.ndarray]:
        """Published parameters from coordinates ``th`` of shape (..., k)."""
        return {
            p: jnp.exp(th[..., i]) if lg else th[..., i]
            for i, (p, lg) in enumerate(zip(self.law.params, self.log, strict=True))
        }

    def from_params(self, p: Mapping[str, float]) -> np.ndarray:
        """Coordinates, shape (k,), from published parameters."""
        return np.array(
            [np.log(float(p[q])) if lg else float(p[q]) for q, lg in zip(self.law.params, self.log, strict=True)]
        )


_SPECS: dict[int, tuple[_laws.Law, _Spec]] = {}


def _spec_for(law: _laws.Law) -> _Spec:
    # Keyed by id with the law kept alive alongside, so an id is never reused for another law while cached.
    hit = _SPECS.get(id(law))
    if hit is None or hit[0] is not law:
        hit = (law, _Spec(law))
        _SPECS[id(law)] = hit
    return hit[1]


# ---------------------------------------------------------------------------------------------------- optimiser
class _State(NamedTuple):
    x: jnp.ndarray  # (k,) current iterate
    f: jnp.ndarray  # objective at x
    g: jnp.ndarray  # gradient at x
    H: jnp.ndarray  # (k, k) inverse-Hessian approximation
    p: jnp.ndarray  # current search direction
    t: jnp.ndarray  # step length to try next
    k: jnp.ndarray  # objective-and-gradient evaluations so far
    n_acc: jnp.ndarray  # accepted steps so far
    status: jnp.ndarray  # see _STATUS


def _bfgs(fun: Callable[[jnp.ndarray], jnp.ndarray], x0: jnp.ndarray, maxiter, gtol, ftol, xtol) -> _State:
    """Minimise ``fun`` from ``x0`` (shape (k,)) by BFGS with a one-evaluation-per-iteration backtracking line
    search (see the module docstring). ``maxiter`` etc. may be traced, so one compilation serves every budget."""
    c1 = 1e-4
    vg = jax.value_and_grad(fun)
    f0, g0 = vg(x0)
    eye = jnp.eye(x0.shape[0], dtype=x0.dtype)
    finite0 = jnp.isfinite(f0) & jnp.all(jnp.isfinite(g0))
    gmax0 = jnp.max(jnp.abs(g0))
    # The first direction is the raw gradient, whose length carries the objective's units; cap the first step at
    # unit length in the largest coordinate so a start with huge residuals does not jump to overflow.
    t0 = jnp.where(gmax0 > 1.0, 1.0 / gmax0, 1.0)
    s0 = _State(
        x0, f0, g0, eye, -g0, t0, jnp.asarray(1), jnp.asarray(0), jnp.where(finite0, jnp.where(gmax0 <= gtol, 1, 0), 5)
    )

    def cond(s: _State):
        return (s.status == 0) & (s.k < maxiter)

    def body(s: _State) -> _State:
        slope = s.p @ s.g
        xt = s.x + s.t * s.p
        ft, gt = vg(xt)
        finite = jnp.isfinite(ft) & jnp.all(jnp.isfinite(gt))
        accept = finite & (ft <= s.f + c1 * s.t * slope)

        sv = xt - s.x
        y = gt - s.g
        sy = sv @ y
        H = jnp.where(s.n_acc == 0, eye * jnp.where(sy > 0, sy / (y @ y), 1.0), s.H)
        rho = 1.0 / jnp.where(sy > 0, sy, 1.0)
        V = eye - rho * jnp.outer(sv, y)
        H_new = V @ H @ V.T + rho * jnp.outer(sv, sv)
        # Skip the update when the curvature condition fails (Armijo alone does not guarantee s·y > 0): the
        # update would lose positive definiteness.
        H_new = jnp.where(sy > 1e-10 * jnp.sqrt((sv @ sv) * (y @ y)), H_new, H)
        p_new = -H_new @ gt
        p_new = jnp.where(p_new @ gt < 0, p_new, -gt)
        scale = jnp.maximum(jnp.maximum(jnp.abs(s.f), jnp.abs(ft)), 1.0)
        status_acc = jnp.where(jnp.max(jnp.abs(gt)) <= gtol, 1, jnp.where(s.f - ft <= ftol * scale, 2, 0))

        t_quad = -slope * s.t**2 / (2.0 * (ft - s.f - slope * s.t))
        t_back = jnp.where(finite, jnp.clip(t_quad, 0.1 * s.t, 0.5 * s.t), 0.1 * s.t)
        stalled = t_back * jnp.max(jnp.abs(s.p)) <= xtol * jnp.maximum(1.0, jnp.max(jnp.abs(s.x)))
        status_rej = jnp.where(stalled, 3, 0)

        def pick(a, b):
            return jnp.where(accept, a, b)

        return _State(
            pick(xt, s.x),
            pick(ft, s.f),
            pick(gt, s.g),
            pick(H_new, s.H),
            pick(p_new, s.p),
            pick(jnp.ones_like(s.t), t_back),
            s.k + 1,
            s.n_acc + accept.astype(s.n_acc.dtype),
            pick(status_acc, status_rej),
        )

    s = jax.lax.while_loop(cond, body, s0)
    return s._replace(status=jnp.where(s.status == 0, 4, s.status))


def _residuals(spec: _Spec, th: jnp.ndarray, log_x: Mapping[str, jnp.ndarray], log_y: jnp.ndarray) -> jnp.ndarray:
    return spec.law.log_mean(spec.to_params(th), log_x) - log_y


def _objective(kind: str, spec: _Spec, th, w, log_x, log_y, tau, delta, log_z):
    if kind == "huber":
        # Σ Huber_τ(r)/τ: the same minimiser as Σ Huber_τ(r), in units of Σ|r| whatever τ is, so one set of
        # tolerances serves every continuation stage.
        return jnp.sum(w * huber(_residuals(spec, th, log_x, log_y), tau)) / tau
    log_s = th[-1]
    r = _residuals(spec, th[:-1], log_x, log_y)
    return jnp.sum(w * huber(r * jnp.exp(-log_s), delta)) + jnp.sum(w) * (log_s + log_z)


def _solve_impl(x0, w, log_x, log_y, tau, delta, log_z, maxiter, *, spec: _Spec, kind: str) -> _State:
    """BFGS from every row of ``x0`` (B, k) on weights ``w`` ((B, n) per-lane or (n,) shared), one vmapped run.
    Runs ``log_x`` (each (n,)) and ``log_y`` (n,) are shared by every lane, or per lane when ``log_y`` is (B, n)."""

    def one(x, wi, lx, ly):
        def objective(th):
            return _objective(kind, spec, th, wi, lx, ly, tau, delta, log_z)

        return _bfgs(objective, x, maxiter, _GTOL, _FTOL, _XTOL)

    per_lane = 0 if log_y.ndim == 2 else None
    return jax.vmap(one, in_axes=(0, 0 if w.ndim == 2 else None, per_lane, per_lane))(x0, w, log_x, log_y)


_solve = jax.jit(_solve_impl, static_argnames=("spec", "kind"))


# ---------------------------------------------------------------------------------------------------- results
@dataclass(frozen=True)
class Convergence:
    """How the optimisation behind a :class:`HuberFit` ended. True in a boolean context when the reported fit
    stopped on a tolerance (gradient, relative objective change, or no decrease possible at machine precision)
    rather than on the iteration budget.

    Attributes:
        converged: the reported fit's final optimisation stopped on a tolerance.
        status: ``"gtol"``, ``"ftol"``, ``"xtol"`` (no decrease at machine precision: the usual end at a kink of
            this objective), ``"maxiter"`` or ``"nonfinite"``.
        n_evals: objective-and-gradient evaluations spent on the reported fit, all stages.
        grad_norm: largest absolute gradient component at the optimum, in the optimised objective's units (Σ|r|
            for ``"huber"``, nats for ``"huber_likelihood"``).
        n_starts: starting points tried; ``n_starts_converged`` of them stopped on a tolerance.
        n_starts_at_best: starts whose optimum is within 1e-6 (relative) of the best objective value. For the
            likelihood these two count the first (Huber, threshold δ) stage, where the starts are used.
        bootstrap_converged / bootstrap_total: resample fits that stopped on a tolerance, out of how many.
    """

    converged: bool
    status: str
    n_evals: int
    grad_norm: float
    n_starts: int
    n_starts_converged: int
    n_starts_at_best: int
    bootstrap_converged: int | None = None
    bootstrap_total: int | None = None

    def __bool__(self) -> bool:
        return self.converged


@dataclass(frozen=True)
class HuberFit:
    """A Huber point fit of a scaling law (see :func:`fit_huber`).

    Attributes:
        law: the fitted :class:`~scalebayes.laws.Law`.
        params: published parameter name -> estimate (floats; A, B in the law's units, loss in nats).
        objective: ``"huber"`` or ``"huber_likelihood"``; ``delta`` its Huber threshold.
        objective_value: at the estimate, on the full data: Σ Huber_δ(r_i) for ``"huber"``; the negative log
            likelihood (nats) for ``"huber_likelihood"``.
        scale: the fitted σ of the Huber likelihood (log-loss units), None for ``"huber"``.
        converged: a :class:`Convergence` (truthy when the optimisation stopped on a tolerance).
        start: the starting point (published params) that led to the estimate.
        bootstrap_draws: one row per resample, one column per parameter plus the law's derived quantities (and
            ``sigma`` for the likelihood), or None without a bootstrap.
        ci: level of the percentile intervals in :meth:`summary`.
        n_runs: runs in the fitted data.
    """

    law: _laws.Law
    params: dict[str, float]
    objective: str
    delta: float
    objective_value: float
    scale: float | None
    converged: Convergence
    start: dict[str, float]
    bootstrap_draws: pd.DataFrame | None
    ci: float
    n_runs: int

    def _estimates(self) -> dict[str, float]:
        est = dict(self.params)
        for name, fn in self.law.derived.items():
            est[name] = float(fn({k: jnp.asarray(v) for k, v in self.params.items()}))
        if self.scale is not None:
            est["sigma"] = self.scale
        return est

    def summary(self) -> pd.DataFrame:
        """One row per parameter (then derived quantities, then ``sigma`` for the likelihood) with columns
        ``estimate`` (the point fit), ``se`` (bootstrap standard deviation, ddof=1) and ``lower``/``upper``
        (bootstrap percentile interval at level ``ci``); se/lower/upper are NaN without a bootstrap."""
        est = self._estimates()
        rows = []
        q = (1.0 - self.ci) / 2.0
        for name, value in est.items():
            se = lo = hi = np.nan
            if self.bootstrap_draws is not None and name in self.bootstrap_draws:
                d = self.bootstrap_draws[name].to_numpy()
                d = d[np.isfinite(d)]
                if d.size > 1:
                    se = float(np.std(d, ddof=1))
                    lo, hi = (float(v) for v in np.quantile(d, [q, 1.0 - q]))
            rows.append({"param": name, "estimate": value, "se": se, "lower": lo, "upper": hi})
        return pd.DataFrame(rows).set_index("param")

    def predict(self, N=None, D=None, *, C=None, U=None) -> np.ndarray:
        """Point prediction of the loss (nats/token) at the given inputs: N parameters, D tokens, C FLOP, U unique
        tokens, each a scalar or array (broadcast together). Of N, D, C any two give the third via C = 6·N·D;
        give what the law needs. Returns a float array of the broadcast shape."""
        given = {k: v for k, v in {"N": N, "D": D, "C": C, "U": U}.items() if v is not None}
        vals = {k: np.asarray(v, dtype=float) for k, v in given.items()}
        if "N" in vals and "D" in vals and "C" not in vals:
            vals["C"] = 6.0 * vals["N"] * vals["D"]
        elif "N" in vals and "C" in vals and "D" not in vals:
            vals["D"] = vals["C"] / (6.0 * vals["N"])
        elif "D" in vals and "C" in vals and "N" not in vals:
            vals["N"] = vals["C"] / (6.0 * vals["D"])
        missing = [k for k in self.law.inputs if k not in vals]
        if missing:
            raise DataError(f"law {self.law.name!r} needs inputs {list(self.law.inputs)}; missing {missing}")
        for k in self.law.inputs:
            if np.any(~np.isfinite(vals[k])) or np.any(vals[k] <= 0):
                raise DataError(f"input {k} must be finite and > 0")
        log_x = {k: jnp.log(jnp.asarray(vals[k])) for k in self.law.inputs}
        p = {k: jnp.asarray(v) for k, v in self.params.items()}
        return np.asarray(jnp.exp(self.law.log_mean(p, log_x)))

    def residuals(self, data: ScalingData) -> np.ndarray:
        """Log-loss residuals r_i = log_mean(params, x_i) − log(loss_i) (predicted minus observed, the sign of
        the fitted objective) for each run of ``data``, shape (n,)."""
        log_x, log_y = _arrays(data, self.law)
        p = {k: jnp.asarray(v) for k, v in self.params.items()}
        return np.asarray(self.law.log_mean(p, log_x) - log_y)

    def __repr__(self) -> str:
        ps = ", ".join(f"{k}={v:.5g}" for k, v in self.params.items())
        boot = f", bootstrap={len(self.bootstrap_draws)}" if self.bootstrap_draws is not None else ""
        return f"HuberFit({self.law.name!r}, {self.objective}: {ps}; converged={bool(self.converged)}{boot})"


# ---------------------------------------------------------------------------------------------------- fitting
def _arrays(data: ScalingData, law: _laws.Law) -> tuple[dict[str, jnp.ndarray], jnp.ndarray]:
    if not isinstance(data, ScalingData):
        raise DataError(f"expected ScalingData, got {type(data).__name__}")
    logs = data.log_inputs()
    missing = [k for k in law.inputs if k not in logs]
    if missing:
        raise DataError(f"law {law.name!r} needs inputs {list(law.inputs)}; the data lack {missing}")
    return {k: jnp.asarray(logs[k]) for k in law.inputs}, jnp.log(jnp.asarray(data.loss))


def _grid_starts(
    law: _laws.Law, spec: _Spec, grid: Mapping[str, Sequence[float]] | None, data: ScalingData
) -> np.ndarray:
    """Starting points (S, k) in optimisation coordinates: the product of per-coordinate value lists."""
    values = _default_grid(law, spec, data)
    if grid is not None:
        alias = {c: p for p, c in zip(law.params, spec.coords, strict=True)}
        for key, v in grid.items():
            name = alias.get(key, key)
            if name not in law.params:
                raise UnknownNameError(
                    f"grid key {key!r} is not a parameter of law {law.name!r}; use one of {list(law.params)} "
                    f"(or coordinate names {list(spec.coords)}); values are in optimisation coordinates"
                )
            arr = np.atleast_1d(np.asarray(v, dtype=float))
            if arr.ndim != 1 or arr.size == 0 or not np.all(np.isfinite(arr)):
                raise ModelError(f"grid values for {key!r} must be a non-empty 1-d list of finite numbers")
            values[name] = arr
    missing = [p for p in law.params if p not in values]
    if missing:
        raise ModelError(f"grid for law {law.name!r} lacks values for {missing}")
    return np.array(list(itertools.product(*(values[p] for p in law.params))), dtype=float)


def _default_grid(law: _laws.Law, spec: _Spec, data: ScalingData) -> dict[str, np.ndarray]:
    """A grid for laws without a published one: each latent at its default prior's loc and loc ± 1 scale, mapped to
    published parameters and then to optimisation coordinates. Returns per-parameter value sets (the union over the
    mapped grid), so the product stays a grid in optimisation coordinates."""
    if law.name == "chinchilla":
        return dict(HOFFMANN_GRID)
    log_x = data.log_inputs()
    centre = law.centre(log_x)
    pri = law.default_priors(centre, float(np.median(data.loss)))
    levels = (-1.0, 0.0, 1.0) if len(law.latents) <= 7 else (-1.0, 1.0)
    if len(levels) ** len(law.latents) > 20000:
        raise ModelError(f"law {law.name!r} has too many parameters for a default grid; pass grid=")
    z = {name: np.array([pri[name][0] + s * pri[name][1] for s in levels]) for name in law.latents}
    # The latents may be centred combinations (e.g. log A_c), so map every combination and collect what each
    # published parameter takes; three values per parameter (min, median, max of the mapped values) keep the grid
    # the same size as the latent grid's per-coordinate count.
    combos = np.array(list(itertools.product(*(z[n] for n in law.latents))))
    zd = {n: jnp.asarray(combos[:, i]) for i, n in enumerate(law.latents)}
    p = law.to_params(zd, centre)
    out = {}
    for i, q in enumerate(law.params):
        v = np.asarray(p[q], dtype=float)
        v = np.log(v) if spec.log[i] else v
        v = v[np.isfinite(v)]
        out[q] = np.unique(np.quantile(v, np.linspace(0.0, 1.0, len(levels)))) if v.size else np.array([0.0])
    return out


def _check_init(law: _laws.Law, init: Mapping[str, float]) -> dict[str, float]:
    unknown = [k for k in init if k not in law.params]
    if unknown:
        raise UnknownNameError(f"init has unknown parameters {unknown}; law {law.name!r} has {list(law.params)}")
    if hasattr(law, "check_params"):
        law.check_params(init)
    missing = [p for p in law.params if p not in init]
    if missing:
        raise ModelError(f"init lacks parameters {missing} of law {law.name!r}")
    return {p: float(init[p]) for p in law.params}


def _likelihood_stages(delta: float, mean_abs_r: float) -> list[float]:
    """Huber thresholds for the continuation: δ/10, δ/100, … down to about δ·σ̂ = δ²·mean|r|."""
    target = delta * delta * max(mean_abs_r, 1e-300)
    n = int(np.clip(np.ceil(np.log10(delta / target)), 0, 10))
    return [delta * 10.0 ** -(j + 1) for j in range(n)]


def fit_huber(
    data: ScalingData,
    law: str | _laws.Law = "chinchilla",
    *,
    delta: float = 1e-3,
    objective: str = "huber",
    init: str | Mapping[str, float] = "grid",
    grid: Mapping[str, Sequence[float]] | None = None,
    bootstrap: int = 0,
    seed: int = 0,
    ci: float = 0.95,
) -> HuberFit:
    """Fit ``law`` to ``data`` by Huber minimisation (Hoffmann et al. 2022, Approach 3) or Huber likelihood
    (Besiroglu et al. 2024); see the module docstring for the objectives and the optimiser.

    Args:
        data: the runs (N params, D tokens, C FLOP, loss nats/token).
        law: a registered law name or a :class:`~scalebayes.laws.Law`.
        delta: Huber threshold δ on log-loss residuals (on r/σ for the likelihood); Hoffmann's 1e-3.
        objective: ``"huber"`` (Σ Huber_δ(r)) or ``"huber_likelihood"`` (negative log of the normalised Huber
            density with fitted scale σ).
        init: ``"grid"``: BFGS from every point of ``grid`` (Hoffmann's 4500-point grid for the Chinchilla law),
            keeping the best; ``"hoffmann"``: Hoffmann's published estimates (Chinchilla law only); or a dict of
            published parameters. For the likelihood the start (or the grid's best Huber fit) seeds the
            continuation described in the module docstring.
        grid: parameter -> start values in optimisation coordinates (log of a positive parameter, e.g. ``"A":
            [0, 5, 10]`` means A ∈ {1, e⁵, e¹⁰}; Chinchilla's α, β as themselves). Keys may also be coordinate
            names (``"log_A"``). Parameters not given keep the default values: Hoffmann's grid for Chinchilla, for
            other laws three values per parameter spanning the law's default priors (loc, loc ± 1 scale).
        bootstrap: number of nonparametric bootstrap resamples of the runs (0: none). Each is refitted with the
            same objective, started from the full-data optimum.
        seed: seed of the ``jax.random`` key that draws the resamples.
        ci: level of the percentile intervals in :meth:`HuberFit.summary`.

    Returns:
        a :class:`HuberFit`.

    Raises:
        UnknownNameError: unknown law, or unknown parameter names in ``init``/``grid``.
        ModelError: unknown objective or init, or a bad delta/bootstrap/ci/init value.
        DataError: the data lack an input the law needs, or have too few runs.
    """
    law_obj = _laws.get(law)
    # Huber with δ = 1e-3 (and the likelihood's effective threshold ~5e-9) needs float64 residuals: float32 log
    # losses are only good to ~1e-7
    ensure_float64("fit_huber")
    _check_options(objective, delta, bootstrap, ci, seed)
    spec = _spec_for(law_obj)
    log_x, log_y = _arrays(data, law_obj)
    k = law_obj.n_params
    data.check_enough_rows(k + (objective == "huber_likelihood"), law_obj.name)
    delta = float(delta)
    log_z = huber_log_normaliser(delta)
    starts = _starts(law_obj, spec, init, grid, data)
    ones = jnp.ones(log_y.shape[0])
    theta, best_start, info = _fit_full(spec, objective, jnp.asarray(starts), ones, log_x, log_y, delta, log_z)
    params = {p: float(v) for p, v in spec.to_params(jnp.asarray(theta[:k])).items()}
    scale = float(np.exp(theta[k])) if objective == "huber_likelihood" else None
    r = np.asarray(_residuals(spec, jnp.asarray(theta[:k]), log_x, log_y))
    if objective == "huber":
        obj_value = float(np.sum(huber(r, delta)))
    else:
        obj_value = float(np.sum(huber(r / scale, delta)) + r.size * (np.log(scale) + log_z))
    draws, boot_ok = None, None
    if bootstrap:
        draws, boot_ok = _bootstrap(spec, objective, theta, log_x, log_y, delta, log_z, int(bootstrap), int(seed), info)
    conv = Convergence(
        converged=info["status"] in (_STATUS[s] for s in _OK_STATUS),
        status=info["status"],
        n_evals=info["n_evals"],
        grad_norm=info["grad_norm"],
        n_starts=len(starts),
        n_starts_converged=info["n_starts_converged"],
        n_starts_at_best=info["n_starts_at_best"],
        bootstrap_converged=boot_ok,
        bootstrap_total=bootstrap or None,
    )
    if not conv:
        warnings.warn(f"fit_huber: the optimisation stopped on its iteration budget ({conv.status})", stacklevel=2)
    return HuberFit(
        law=law_obj,
        params=params,
        objective=objective,
        delta=delta,
        objective_value=obj_value,
        scale=scale,
        converged=conv,
        start={p: float(v) for p, v in spec.to_params(jnp.asarray(best_start)).items()},
        bootstrap_draws=draws,
        ci=float(ci),
        n_runs=int(log_y.shape[0]),
    )


def refit_subsets(
    data: ScalingData,
    law: str | _laws.Law,
    weights: np.ndarray,
    starts: Sequence[Mapping[str, float]],
    *,
    delta: float = 1e-3,
    rows: np.ndarray | None = None,
) -> tuple[list[dict[str, float]], np.ndarray]:
    """Hoffmann's Huber objective minimised on K weightings of ``data``'s runs at once: one vmapped BFGS, lane k with
    run weights ``weights[k]`` (0 leaves a run out; bootstrap multiplicities), started at ``starts[k]`` (published
    parameters). ``weights`` is (K, n) over all n runs; or, with ``rows`` (K, m), the indices of the runs each lane
    sees (e.g. one family's, padded with any index at weight 0), it is (K, m) over those, and a lane costs m runs
    rather than n. Lanes are padded to :func:`~scalebayes.padding.pad_size` (K) so that calls with nearby K share one
    compiled program.

    Returns the published parameters of each lane's optimum and whether it stopped on a tolerance, (K,) bool.
    """
    law_obj = _laws.get(law)
    ensure_float64("refit_subsets")
    spec = _spec_for(law_obj)
    log_x, log_y = _arrays(data, law_obj)
    weights = np.asarray(weights, float)
    K = weights.shape[0]
    lanes = np.r_[np.arange(K), np.zeros(pad_size(K) - K, int)]  # padding lanes repeat lane 0
    if rows is not None:
        idx = jnp.asarray(np.asarray(rows)[lanes])
        log_x, log_y = {k: v[idx] for k, v in log_x.items()}, log_y[idx]
    x0 = jnp.asarray(np.stack([spec.from_params(starts[i]) for i in lanes]))
    w = jnp.asarray(weights[lanes], log_y.dtype)
    tau = jnp.asarray(float(delta))
    res = _solve(x0, w, log_x, log_y, tau, float(delta), 0.0, _MAXITER_BOOTSTRAP, spec=spec, kind="huber")
    x = np.asarray(res.x)[:K]
    ok = np.isin(np.asarray(res.status)[:K], _OK_STATUS) & np.isfinite(np.asarray(res.f)[:K])
    params = [{p: float(v) for p, v in spec.to_params(jnp.asarray(xi)).items()} for xi in x]
    return params, ok


def _check_options(objective, delta, bootstrap, ci, seed) -> None:
    """fit_huber's scalar options; ModelError naming the bad one."""
    if objective not in OBJECTIVES:
        raise ModelError(f"unknown objective {objective!r}; choose one of {list(OBJECTIVES)}")
    if not (isinstance(delta, int | float) and np.isfinite(delta) and delta > 0):
        raise ModelError(f"delta must be a finite number > 0, got {delta!r}")
    if isinstance(bootstrap, bool) or not isinstance(bootstrap, int | np.integer) or bootstrap < 0:
        raise ModelError(f"bootstrap must be an integer >= 0, got {bootstrap!r}")
    if bootstrap == 1:
        raise ModelError("bootstrap needs at least 2 resamples to estimate a spread")
    if not (isinstance(ci, int | float) and 0.0 < ci < 1.0):
        raise ModelError(f"ci must be in (0, 1), got {ci!r}")
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer):
        raise ModelError(f"seed must be an integer, got {seed!r}")


def _starts(law_obj: _laws.Law, spec: _Spec, init, grid, data: ScalingData) -> np.ndarray:
    """Starting points (n_starts, k) in optimisation coordinates from fit_huber's ``init`` and ``grid``."""
    if grid is not None and not (isinstance(init, str) and init == "grid"):
        raise ModelError("grid= is only used with init='grid'")
    if isinstance(init, Mapping):
        return spec.from_params(_check_init(law_obj, init))[None, :]
    if not isinstance(init, str):
        raise ModelError(f"init must be 'grid', 'hoffmann' or a dict of parameters, got {type(init).__name__}")
    if init == "grid":
        return _grid_starts(law_obj, spec, grid, data)
    if init == "hoffmann":
        if law_obj.name != "chinchilla":
            raise ModelError(f"init='hoffmann' gives Chinchilla-law estimates; law is {law_obj.name!r}")
        return spec.from_params(HOFFMANN_ESTIMATES)[None, :]
    raise ModelError(f"unknown init {init!r}; use 'grid', 'hoffmann' or a dict of parameters")


def _fit_full(spec, objective, starts, w, log_x, log_y, delta, log_z):
    """Multi-start Huber fit, polish of the best, then (likelihood) continuation. Returns the optimum in
    optimisation coordinates (k,) or (k+1,) with log σ last, the start it came from, and convergence info."""
    tau = jnp.asarray(delta)
    res = _solve(starts, w, log_x, log_y, tau, delta, log_z, _MAXITER_MULTISTART, spec=spec, kind="huber")
    f = np.asarray(res.f)
    f = np.where(np.isfinite(f), f, np.inf)
    if not np.isfinite(f).any():
        raise ModelError("every start gave a non-finite objective; pass init= or grid= closer to the data")
    i = int(np.argmin(f))
    status = np.asarray(res.status)
    n_evals = int(res.k[i])
    # Restart BFGS (fresh Hessian) from the best lane: it may have stopped on the budget or on a premature small
    # step, and a restart costs one lane.
    pol = _solve(res.x[i : i + 1], w, log_x, log_y, tau, delta, log_z, _MAXITER_POLISH, spec=spec, kind="huber")
    theta = pol.x[0]
    f_best = min(float(pol.f[0]), f[i])
    last = pol
    n_evals += int(pol.k[0])
    info = {
        "n_starts_converged": int(np.isin(status, _OK_STATUS).sum()),
        "n_starts_at_best": int(np.sum(f <= f_best + 1e-6 * max(abs(f_best), 1e-300))),
    }
    if objective == "huber_likelihood":
        r = np.asarray(_residuals(spec, theta, log_x, log_y))
        stages = _likelihood_stages(delta, float(np.mean(np.abs(r))))
        theta, last, n_more = _continuation(
            spec, theta[None, :], w, log_x, log_y, delta, log_z, stages, _MAXITER_POLISH
        )
        theta = theta[0]
        n_evals += n_more
        info["stages"] = stages
    info.update(
        status=_STATUS[int(last.status[0])],
        n_evals=n_evals,
        grad_norm=float(np.max(np.abs(np.asarray(last.g[0])))),
    )
    return np.asarray(theta), np.asarray(starts[i]), info


def _continuation(spec, theta, w, log_x, log_y, delta, log_z, stages, maxiter_final):
    """From Huber optima ``theta`` (B, k): Huber fits at the thresholds ``stages`` in turn, then the joint
    (θ, log σ) likelihood with log σ started at log(δ·mean|r|). Returns ((B, k+1) optimum, final state, evals of
    the slowest lane)."""
    n_evals = 0
    for tau in stages:
        res = _solve(theta, w, log_x, log_y, jnp.asarray(tau), delta, log_z, _MAXITER_STAGE, spec=spec, kind="huber")
        theta = res.x
        n_evals += int(jnp.max(res.k))
    ww = jnp.broadcast_to(w, (theta.shape[0], w.shape[-1]))
    r = jax.vmap(lambda th: _residuals(spec, th, log_x, log_y))(theta)
    log_s = jnp.log(delta * jnp.sum(ww * jnp.abs(r), axis=1) / jnp.sum(ww, axis=1))
    x0 = jnp.concatenate([theta, log_s[:, None]], axis=1)
    res = _solve(x0, w, log_x, log_y, jnp.asarray(delta), delta, log_z, maxiter_final, spec=spec, kind="likelihood")
    return res.x, res, n_evals + int(jnp.max(res.k))


def _bootstrap(spec, objective, theta, log_x, log_y, delta, log_z, n_boot, seed, info):
    """Refit ``n_boot`` resamples (rows drawn with replacement) from the full-data optimum ``theta``; returns the
    draws DataFrame (published params, derived, sigma) and the number of resample fits that converged."""
    n = log_y.shape[0]
    k = spec.law.n_params
    idx = jax.random.randint(jax.random.key(seed), (n_boot, n), 0, n)
    # A resample enters the objective as per-run multiplicities: Σ_j ρ(r_idx_j) = Σ_i count_i·ρ(r_i).
    w = jax.vmap(lambda i: jnp.zeros(n, dtype=log_y.dtype).at[i].add(1.0))(idx)
    th0 = jnp.broadcast_to(jnp.asarray(theta[:k]), (n_boot, k))
    tau = jnp.asarray(delta)
    if objective == "huber":
        res = _solve(th0, w, log_x, log_y, tau, delta, log_z, _MAXITER_BOOTSTRAP, spec=spec, kind="huber")
        x = np.asarray(res.x)
    else:
        res = _solve(th0, w, log_x, log_y, tau, delta, log_z, _MAXITER_STAGE, spec=spec, kind="huber")
        xs, res, _ = _continuation(spec, res.x, w, log_x, log_y, delta, log_z, info["stages"], _MAXITER_BOOTSTRAP)
        x = np.asarray(xs)
    ok = np.isin(np.asarray(res.status), _OK_STATUS)
    p = spec.to_params(jnp.asarray(x[:, :k]))
    cols = {q: np.asarray(p[q], dtype=float) for q in spec.law.params}
    for name, fn in spec.law.derived.items():
        cols[name] = np.asarray(fn({q: jnp.asarray(v) for q, v in cols.items()}), dtype=float)
    if objective == "huber_likelihood":
        cols["sigma"] = np.exp(x[:, k])
    draws = pd.DataFrame(cols)
    draws.index.name = "resample"
    n_bad = int((~ok).sum())
    if n_bad:
        warnings.warn(
            f"fit_huber: {n_bad} of {n_boot} bootstrap refits stopped on the iteration budget; they are kept in "
            "bootstrap_draws (see converged.bootstrap_converged)",
            stacklevel=3,
        )
    return draws, int(ok.sum())
