"""Uncertainty-aware compute planning: compute-optimal allocations per posterior draw.

Units everywhere: ``N`` parameters, ``D`` training tokens, ``C`` FLOP (training compute C = 6·N·D), ``T``
lifetime inference tokens (inference compute 2·N·T), loss in nats/token. Inside the numerical functions every
quantity is a natural log (``logC``, ``logN``, ...) so that budgets of 1e18-1e30 FLOP need no rescaling.

Two layers:

- Pure JAX functions over draws (no Python loop over draws): :func:`closed_form_optimum` (the Chinchilla law),
  :func:`numerical_optimum` (any law with inputs N and D), :func:`compute_for_loss_draws` (the training compute at
  which each draw's optimum reaches a target loss) and :func:`inference_optimum` (Sardana et al. 2024). Parameters
  are dicts of arrays (S,), budgets arrays (B,); results are (S, B).
- Posterior-level helpers behind :class:`~scalebayes.posterior.Posterior`'s ``plan``, ``compute_for_loss``,
  ``prob_loss_below`` and ``allocation_regret`` methods, returning pandas/numpy.

How the numerical optimum is found. On a line of constant total cost K = 6·N·D + 2·N·T the allocation is one
number, the tokens-per-parameter ratio r = log(D/N): solving 6e^r·N² + 2T·N = K gives
``log N = log K - h - asinh(T·e^-h)`` with ``h = (log 6 + r + log K)/2`` (for T = 0 simply N = sqrt(K/(6e^r))), which
is smooth and overflow-free for any T ≥ 0. We minimise the law's log loss over r in [log 1e-5, log 1e9] tokens per
parameter: a dense grid (a running arg-min in a ``fori_loop``, memory O(S·B)) brackets the minimum, then safeguarded
Newton steps on d(log L)/dr (derivatives by ``jax.grad``; a step that leaves the bracket or meets negative curvature
is replaced by bisection) polish it to float64 precision. This assumes the law's loss is unimodal along the
iso-compute line *on the scale of the grid step* (1.0 in log ratio); it is for every law of the form
E + A/N^α + B/D^β and for the usual variants. Plans whose optimum lands on the edge of the search range are flagged
(``at_edge``) and :func:`plan` warns.

Unique-data cap. With ``unique_tokens=U``: laws that take a unique-token input (``"U"`` in ``law.inputs``, e.g. a
data-constrained law) get U as that input and may train on D > U (repeated epochs), the law pricing the
repetition; for every other law D ≤ U is imposed as a constraint (the optimum moves to D = U when the unconstrained
D* exceeds U). Without a cap, laws with a U input are evaluated at U = D (every token unique).
"""

from __future__ import annotations

import functools
import math
import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd

from . import laws as _laws
from .data import C_RTOL
from .discrepancy import Discrepancy, facet_distance, facets, grown
from .errors import DataError, ModelError
from .model import trend_factor
from .predict import qcol
from .predictive import delta_normals, label, resolve
from .predictive import noise_draws as _noise_from

if TYPE_CHECKING:
    from .posterior import Posterior

Array = jnp.ndarray
Params = Mapping[str, Array]

LOG6 = math.log(6.0)
#: Search range of the tokens-per-parameter ratio D/N along an iso-compute line (natural logs).
R_LO, R_HI = math.log(1e-5), math.log(1e9)
#: Grid points over [R_LO, R_HI] (step ≈ 1.0 in log ratio) and Newton polishing steps of the inner minimiser.
#: Newton from a grid bracket converges in ~5 steps; a step that fails falls back to bisection, and 25 halvings of
#: the bracket (width 2) still leave r within 6e-8.
N_GRID, N_NEWTON = 33, 25
#: Inner Newton steps while an outer search is still moving (only the value of the minimum matters there, and it is
#: insensitive to r to first order), and safeguarded Newton steps of the outer root finds (compute for a loss).
N_NEWTON_OUTER, N_OUTER = 10, 14
#: Newton steps for a draw's crossing of a target loss along a ray (convex in log C: ~6 needed from the left end).
N_ROOT = 14
#: Range of log C (FLOP) searched by :func:`compute_for_loss`: 1 FLOP to ~1e52 FLOP, and the grid points that
#: bracket each draw's first crossing of the target in it (step 2 nats of log C).
LOGC_LO, LOGC_HI = 0.0, 120.0
N_BRACKET = 61
OBJECTIVES = ("loss", "budget")


# ---------------------------------------------------------------------------------------------------- geometry
def _check_law(law: _laws.Law) -> None:
    if not {"N", "D"} <= set(law.inputs):
        raise ModelError(
            f"compute planning chooses N and D; the {law.name!r} law has inputs {law.inputs} (needs N and D)"
        )


def _ray(logK: Array, r: Array, T: Array) -> tuple[Array, Array]:
    """log N, log D on the total-cost line 6·N·D + 2·N·T = K at tokens-per-parameter ratio log(D/N) = r."""
    h = 0.5 * (LOG6 + r + logK)
    logN = logK - h - jnp.arcsinh(T * jnp.exp(-h))
    return logN, logN + r


def _law_inputs(law: _laws.Law, logN: Array, logD: Array, logU: Array) -> dict[str, Array]:
    """The law's log inputs at (N, D); C = 6ND, U = the cap when finite, else D."""
    x = {"N": logN, "D": logD}
    if "C" in law.inputs:
        x["C"] = LOG6 + logN + logD
    if "U" in law.inputs:
        x["U"] = jnp.where(jnp.isfinite(logU), logU, logD)
    return {k: x[k] for k in law.inputs}


def _log_loss_on_ray(law: _laws.Law, p: Params, logK: Array, r: Array, T: Array, logU: Array) -> Array:
    logN, logD = _ray(logK, r, T)
    return law.log_mean(p, _law_inputs(law, logN, logD, logU))


def _r_max(law: _laws.Law, logK: Array, T: Array, logU: Array) -> Array:
    """Largest admissible ratio: R_HI, or where D reaches the cap U (laws without a U input only)."""
    if "U" in law.inputs:
        return jnp.full(jnp.shape(logK), R_HI)
    # D = U on the cost line: N = K/(6U + 2T), so r = log U + log(6U + 2T) - log K (inf when there is no cap).
    r_u = logU + jnp.log(6.0 * jnp.exp(jnp.minimum(logU, 700.0)) + 2.0 * T) - logK
    r_u = jnp.where(jnp.isfinite(logU), r_u, jnp.inf)
    return jnp.clip(r_u, R_LO, R_HI)


def _expand(p: Params) -> dict[str, Array]:
    """Params (S,) → (S, 1) so they broadcast against budgets (1, B) or (S, B)."""
    return {k: jnp.asarray(v)[:, None] for k, v in p.items()}


# ---------------------------------------------------------------------------------------------------- minimiser
def _guarded(xn: Array, ok: Array, lo: Array, hi: Array) -> Array:
    """A safeguarded Newton step: ``xn`` (clipped into [lo, hi]) where it is finite, ``ok`` and inside the bracket up
    to 1e-10 (converged steps land on a bracket end up to round-off, which must not trigger bisection), else the
    bracket's midpoint."""
    tol = 1e-10
    inside = ok & jnp.isfinite(xn) & (xn >= lo - tol) & (xn <= hi + tol)
    return jnp.where(inside, jnp.clip(xn, lo, hi), 0.5 * (lo + hi))


def _argmin_ratio(
    law: _laws.Law, p: Params, logK: Array, T: Array, logU: Array, n_grid: int = N_GRID, n_newton: int = N_NEWTON
) -> tuple[Array, Array, Array, Array]:
    """Minimise log L over r on the cost line (see the module docstring). All arrays broadcast to one shape.

    Returns (r*, log L*, at_edge, r_max): at_edge is True where r* is at the search range's ends (not at a
    unique-token cap, which is a genuine constraint).
    """
    shape = jnp.broadcast_shapes(jnp.shape(logK), jnp.shape(T), jnp.shape(logU), *(jnp.shape(v) for v in p.values()))
    logK = jnp.broadcast_to(logK, shape)
    r_lo = jnp.full(shape, R_LO)
    r_hi = jnp.broadcast_to(_r_max(law, logK, T, logU), shape)
    step = (r_hi - r_lo) / (n_grid - 1)

    def f(r):
        return _log_loss_on_ray(law, p, logK, r, T, logU)

    def grid_body(j, carry):
        best_v, best_j = carry
        v = f(r_lo + step * j)
        better = v < best_v  # NaN never wins
        return jnp.where(better, v, best_v), jnp.where(better, j, best_j)

    _, j = jax.lax.fori_loop(0, n_grid, grid_body, (jnp.full(shape, jnp.inf), jnp.zeros(shape, jnp.int32)))
    a = r_lo + step * jnp.maximum(j - 1, 0)
    b = r_lo + step * jnp.minimum(j + 1, n_grid - 1)
    x = r_lo + step * j

    df = jax.grad(lambda r: jnp.sum(f(r)))  # elementwise derivative: each element depends on its own r only
    d2f = jax.grad(lambda r: jnp.sum(df(r)))

    def newton_body(_, carry):
        a, b, x = carry
        g, h = df(x), d2f(x)
        a = jnp.where(g < 0, x, a)  # loss still falling: the minimum is to the right
        b = jnp.where(g > 0, x, b)
        return a, b, _guarded(x - g / h, h > 0, a, b)

    a, b, x = jax.lax.fori_loop(0, n_newton, newton_body, (a, b, x))
    # a minimum on a bound (the unique-token cap, or the search range) is the bound itself, exactly
    x = jnp.where(df(r_hi) <= 0, r_hi, jnp.where(df(r_lo) >= 0, r_lo, x))
    at_edge = (x <= R_LO) | ((x >= R_HI) & (r_hi >= R_HI))
    return x, f(x), at_edge, r_hi


def _min_log_loss_and_slope(
    law: _laws.Law, p: Params, logK: Array, T: Array, logU: Array
) -> tuple[Array, Array, Array, Array]:
    """min over r of log L on the cost line K, and its derivative d/dlog K (envelope theorem; at a unique-token cap
    the cap's own dependence on K is included)."""
    r, v, at_edge, r_hi = _argmin_ratio(law, p, logK, T, logU, n_newton=N_NEWTON_OUTER)
    capped = r >= r_hi

    def m(lk):
        rr = jnp.where(capped, _r_max(law, lk, T, logU), jax.lax.stop_gradient(r))
        return _log_loss_on_ray(law, p, lk, rr, T, logU)

    slope = jax.grad(lambda lk: jnp.sum(m(lk)))(jnp.broadcast_to(logK, jnp.shape(v)))
    return r, v, slope, at_edge


def _solve_log_cost(
    law: _laws.Law, p: Params, target: Array, lo: Array, hi: Array, T: Array, logU: Array, n_outer: int = N_OUTER
) -> Array:
    """log K with min-loss(K) = target (log nats) by safeguarded Newton in [lo, hi]; min-loss falls as K grows."""
    x = hi

    def body(_, carry):
        lo, hi, x = carry
        _, v, slope, _ = _min_log_loss_and_slope(law, p, x, T, logU)
        resid = v - target
        lo = jnp.where(resid > 0, x, lo)  # loss still above target: need more compute
        hi = jnp.where(resid <= 0, x, hi)
        return lo, hi, _guarded(x - resid / slope, slope < 0, lo, hi)

    lo, hi, x = jax.lax.fori_loop(0, n_outer, body, (lo, hi, x))
    return x


# ---------------------------------------------------------------------------------------------------- public JAX
@jax.jit
def closed_form_optimum(params: Params, C: Array, unique_tokens: float = math.inf) -> dict[str, Array]:
    """Chinchilla-law compute-optimal allocation, per draw and budget (Hoffmann et al. 2022, Approach 3).

    Minimising E + A/N^α + B/D^β subject to 6·N·D = C gives N* = G·(C/6)^a, D* = G^-1·(C/6)^b with
    G = (αA/(βB))^(1/(α+β)), a = β/(α+β), b = α/(α+β). With a cap on unique tokens U, D* > U becomes D = U,
    N = C/(6U) (the loss is unimodal along the iso-compute line, so the constrained optimum is on the cap).

    Args:
        params: ``E, A, B, alpha, beta``, each (S,).
        C: training budgets in FLOP, (B,).
        unique_tokens: cap on D in tokens (inf: none).

    Returns:
        ``N`` (parameters), ``D`` (tokens) and ``loss`` (nats) at the optimum, each (S, B).
    """
    p = _expand(params)
    logX = jnp.log(jnp.asarray(C, dtype=float))[None, :] - LOG6
    s = p["alpha"] + p["beta"]
    logG = (jnp.log(p["alpha"] * p["A"]) - jnp.log(p["beta"] * p["B"])) / s
    logD = jnp.minimum(-logG + p["alpha"] / s * logX, jnp.log(unique_tokens))
    logN = logX - logD
    loss = p["E"] + p["A"] * jnp.exp(-p["alpha"] * logN) + p["B"] * jnp.exp(-p["beta"] * logD)
    return {"N": jnp.exp(logN), "D": jnp.exp(logD), "loss": loss}


@jax.jit
def closed_form_compute_for_loss(params: Params, target: Array) -> Array:
    """Chinchilla law: training FLOP at which each draw's optimum reaches ``target`` nats, (S, P), for targets (P,)
    or per-draw targets (S, P).

    L*(C) = E + K·(C/6)^(-αβ/(α+β)) with K = A·G^-α + B·G^β, so C = 6·((L - E)/K)^(-(α+β)/(αβ)); infinite where
    the target is at or below E."""
    p = _expand(params)
    t = jnp.asarray(target, dtype=float)
    t = t[None, :] if t.ndim == 1 else t
    s = p["alpha"] + p["beta"]
    logG = (jnp.log(p["alpha"] * p["A"]) - jnp.log(p["beta"] * p["B"])) / s
    K = p["A"] * jnp.exp(-p["alpha"] * logG) + p["B"] * jnp.exp(p["beta"] * logG)
    gap = t - p["E"]
    return jnp.where(gap > 0, 6.0 * (jnp.maximum(gap, 1e-300) / K) ** (-s / (p["alpha"] * p["beta"])), jnp.inf)


@functools.partial(jax.jit, static_argnums=0)
def numerical_optimum(
    law: _laws.Law, params: Params, C: Array, inference_tokens: Array = 0.0, unique_tokens: float = math.inf
) -> dict[str, Array]:
    """Minimum-loss allocation on the line of total cost 6·N·D + 2·N·T = C, per draw and budget.

    With ``inference_tokens`` T = 0 (the default) this is the classic compute-optimal plan at training budget C.

    Args:
        law: any law with inputs N and D (and optionally C, U).
        params: the law's published parameters, each (S,).
        C: total budgets in FLOP, (B,).
        inference_tokens: lifetime inference tokens T (scalar).
        unique_tokens: cap U on unique training tokens (scalar; inf for none), see the module docstring.

    Returns:
        dict of (S, B) arrays: ``N``, ``D``, ``loss`` (nats, the law's mean), ``at_edge`` (optimum on the search
        range's edge, i.e. not trustworthy).
    """
    p = _expand(params)
    logK = jnp.log(jnp.asarray(C, dtype=float))[None, :]
    T = jnp.asarray(inference_tokens, dtype=float)
    logU = jnp.log(jnp.asarray(unique_tokens, dtype=float))
    r, v, at_edge, _ = _argmin_ratio(law, p, logK, T, logU)
    logN, logD = _ray(jnp.broadcast_to(logK, r.shape), r, T)
    return {"N": jnp.exp(logN), "D": jnp.exp(logD), "loss": jnp.exp(v), "at_edge": at_edge}


@functools.partial(jax.jit, static_argnums=0)
def compute_for_loss_draws(
    law: _laws.Law, params: Params, target: Array, C_upper: Array, unique_tokens: float = math.inf
) -> Array:
    """Training FLOP at which each draw's compute-optimal plan reaches ``target`` nats: C_opt(target), (S, P).

    Args:
        params: each (S,).
        target: target losses in nats, (S, P) or (P,) (per draw targets allowed, e.g. L(N, D) per draw).
        C_upper: a budget known to reach the target, (S, P) or (P,) FLOP (e.g. 6·N·D of an allocation with loss
            ``target``); the search runs over [C_upper·e^-40, C_upper].
        unique_tokens: scalar cap (inf for none).
    """
    p = _expand(params)
    t = jnp.log(jnp.asarray(target, dtype=float))
    hi = jnp.log(jnp.asarray(C_upper, dtype=float))
    S = next(iter(p.values())).shape[0]
    t = jnp.broadcast_to(t, (S, *jnp.shape(t)[-1:]))
    hi = jnp.broadcast_to(hi, t.shape)
    logU = jnp.log(jnp.asarray(unique_tokens, dtype=float))
    return jnp.exp(_solve_log_cost(law, p, t, hi - 40.0, hi, jnp.asarray(0.0), logU))


@functools.partial(jax.jit, static_argnums=0)
def inference_optimum(
    law: _laws.Law, params: Params, C: Array, inference_tokens: Array, unique_tokens: float = math.inf
) -> dict[str, Array]:
    """Inference-aware allocation (Sardana et al. 2024, "Beyond Chinchilla-optimal"), per draw and budget.

    For each draw the target is the loss ℓ its training-only optimum reaches at training budget C; the result is
    the (N, D) that reaches ℓ with the least lifetime compute 6·N·D + 2·N·T. Solved as the dual problem: the
    smallest total cost K whose minimum-loss allocation (:func:`numerical_optimum` with T) reaches ℓ, by a
    safeguarded Newton search in log K on [log C, log(C + 2·N_chin·T)] (the Chinchilla plan itself costs the upper
    end in total, and nothing reaching ℓ trains on less than C).

    Returns:
        dict of (S, B): ``N``, ``D``, ``loss`` (= ℓ, nats), ``C_total`` (FLOP), ``at_edge``.
    """
    p = _expand(params)
    logC = jnp.log(jnp.asarray(C, dtype=float))[None, :]
    T = jnp.asarray(inference_tokens, dtype=float)
    logU = jnp.log(jnp.asarray(unique_tokens, dtype=float))
    zero = jnp.asarray(0.0)
    r0, target, edge0, _ = _argmin_ratio(law, p, logC, zero, logU)
    logN0, _ = _ray(jnp.broadcast_to(logC, r0.shape), r0, zero)
    hi = jnp.logaddexp(logC, jnp.log(2.0 * T) + logN0)
    lo = jnp.broadcast_to(logC, hi.shape)
    logK = _solve_log_cost(law, p, target, lo, hi, T, logU)
    r, _, at_edge, _ = _argmin_ratio(law, p, logK, T, logU)
    logN, logD = _ray(logK, r, T)
    return {
        "N": jnp.exp(logN),
        "D": jnp.exp(logD),
        "loss": jnp.exp(target),
        "C_total": jnp.exp(logK),
        "at_edge": at_edge | edge0,
    }


def _root_decreasing(g: Callable[[Array], Array], lo: Array, hi: Array, n_iter: int) -> Array:
    """Root of an elementwise decreasing function g in [lo, hi] by safeguarded Newton (``jax.grad`` slope, bisection
    when a step leaves the bracket), started at ``lo``. For the convex decreasing functions met here (log loss along
    a ray, against log C) Newton from the left never overshoots and converges in a handful of steps."""
    dg = jax.grad(lambda x: jnp.sum(g(x)))

    def body(_, carry):
        lo, hi, x = carry
        v, s = g(x), dg(x)
        lo = jnp.where(v > 0, x, lo)
        hi = jnp.where(v <= 0, x, hi)
        return lo, hi, _guarded(x - v / s, s < 0, lo, hi)

    _, _, x = jax.lax.fori_loop(0, n_iter, body, (lo, hi, lo))
    return x


@functools.partial(jax.jit, static_argnums=0)
def _required_log_compute(
    law: _laws.Law, p: Params, r: Array, log_target: Array, prob: float, logU: Array, disc: tuple, noise: tuple
) -> Array:
    """Smallest log C (FLOP) per ray r (R,) at which a fraction ≥ prob of the draws has log L ≤ its target, with
    (N, D) on the ray at training cost C. ``log_target`` is (S, 1). ``disc`` = (normals (H, k), offsets (H,),
    κ·z (S, 1), γ (S, 1)): the discrepancy, δ_s = κ_s·z_s·d(x)^γ_s at the ray's point x (zeros for none).
    ``noise`` = (noise (S, 1) at the data's mean log(D/N) c, ζ (S, 1), c): the run noise, scaled to each ray's
    log(D/N) = r by exp(ζ·(r − c)) (constant along a ray, so each draw's loss stays monotone in C).

    Each draw's own crossing c_s(r) (log L_s + δ_s = target_s) is found by Newton along the ray; the fraction below
    target then jumps by 1/S at each crossing, so the requirement is the ⌈prob·S⌉-th smallest c_s, nudged up by 1e-9
    so the allocation it names does reach the probability. Returns (R,), inf where it is not reached by e^LOGC_HI
    FLOP. With the discrepancy a draw's loss can rise again far beyond the fitted runs (δ grows with distance); its
    first crossing (bracketed on a grid of log C) is used.
    """
    zero = jnp.asarray(0.0)
    S = log_target.shape[0]
    shape = (S, r.shape[0])
    normals, offsets, kz, gamma = disc

    def g(lc):
        logN, logD = _ray(lc, r[None, :], zero)
        x = _law_inputs(law, logN, logD, logU)
        X = jnp.stack(jnp.broadcast_arrays(*x.values()), axis=-1)
        shift = kz * grown(facet_distance(normals, offsets, X), gamma) + _noise_at(noise, r[None, :])
        return law.log_mean(p, x) + shift - log_target

    # each draw's first crossing is bracketed on a grid of log C (step 2 nats): with the discrepancy, g need not be
    # monotone (δ grows with distance both below and beyond the fitted runs), so g(LOGC_HI) alone cannot tell
    grid = jnp.linspace(LOGC_LO, LOGC_HI, N_BRACKET)
    below = jax.vmap(lambda c: g(jnp.full(shape, c)) <= 0)(grid)  # (N_BRACKET, S, R)
    first = jnp.argmax(below, axis=0)
    lo, hi = grid[jnp.maximum(first - 1, 0)], grid[first]
    roots = _root_decreasing(g, lo, hi, N_ROOT)
    roots = jnp.where(below.any(axis=0), roots, jnp.inf)  # draws whose loss stays above target (≤ E) never cross
    k = jnp.ceil(prob * S - 1e-9).astype(jnp.int32)
    req = jnp.sort(roots, axis=0)[k - 1] + 1e-9
    return jnp.where(req <= LOGC_HI, req, jnp.inf)


@functools.partial(jax.jit, static_argnums=0)
def _prob_at_points(
    law: _laws.Law, p: Params, logN: Array, logD: Array, log_target: Array, noise: Array, logU: Array
) -> Array:
    """Fraction of draws with log L (+ noise, (S, P)) ≤ log target (P,) at points (P,)."""
    v = law.log_mean(p, _law_inputs(law, logN[None, :], logD[None, :], logU)) + noise
    return jnp.mean((v <= log_target[None, :]).astype(float), axis=0)


def noise_draws(
    post: Posterior, shape: tuple[int, int], *, family: str | None = None, seed: int = 0, log_tpp=None
) -> np.ndarray:
    """Run-to-run noise on log loss, (S, P): σ_s·exp(ζ_s·(log_tpp − c))·t(ν_s) per draw s (normal where ν = inf),
    the fitted likelihood's noise for a new run at tokens per parameter ``log_tpp`` (log(D/N), broadcasting to
    ``shape``; None: the fitted data's mean c, where the trend is 1); the numbers of
    :func:`scalebayes.predictive.noise_draws` (so ``prob_loss_below`` at a point agrees with ``predict``'s draws
    there with the same seed), deterministic in ``seed`` and the shape."""
    noise = _noise(post, family, seed, shape, True)
    return np.asarray(noise[0] if log_tpp is None else _noise_at(noise, jnp.asarray(log_tpp, float)))


def _noise(post: Posterior, family: str | None, seed: int, shape: tuple[int, int], include: bool) -> tuple:
    """(noise at the data's mean tokens per parameter (S, P), ζ (S, 1), c, the fitted span of log(D/N) − c): what
    :func:`_noise_at` scales to a point; zeros without ``include``."""
    if not include:
        return jnp.zeros(shape), jnp.zeros((shape[0], 1)), 0.0, (-math.inf, math.inf)
    noise = post.run_noise(family, seed=seed)
    unit = jnp.asarray(_noise_from(seed, noise.sigma, noise.nu, shape[1]))
    return unit, jnp.asarray(noise.trend)[:, None], float(noise.centre), noise.span


def _noise_at(noise: tuple, log_tpp) -> Array:
    """The noise draws of :func:`_noise` at log tokens per parameter ``log_tpp`` (broadcasting against (S, P)),
    scaled as :meth:`scalebayes.model.RunNoise.scale` scales them."""
    unit, zeta, c, span = noise
    return unit * trend_factor(zeta, log_tpp - c, span)


def _discrepancy(post: Posterior, family: str | None, extrapolation, n_draws: int, seed: int):
    """(Discrepancy or None, (normals (H, k), offsets (H,), κ·z (S, 1), γ (S, 1))) for ``family``'s distance; zeros
    without a discrepancy. z is the predictive's own δ normals (:func:`scalebayes.predictive.delta_normals`), (κ_s,
    γ_s) the discrepancy's draws (:meth:`scalebayes.discrepancy.Discrepancy.scales`)."""
    disc = resolve(post.discrepancy, extrapolation)
    if disc is None:
        k = len(post.law.inputs)
        return None, (jnp.zeros((1, k)), jnp.zeros(1), jnp.zeros((n_draws, 1)), jnp.ones((n_draws, 1)))
    fam = post.resolve_family(family)
    A, b = facets(disc.regions, fam)
    kappa, gamma = disc.scales(n_draws, fam)
    kz = kappa * delta_normals(seed, n_draws)
    return disc, (jnp.asarray(A), jnp.asarray(b), jnp.asarray(kz)[:, None], jnp.asarray(gamma)[:, None])


def _delta(law: _laws.Law, geometry: tuple, logN: Array, logD: Array, logU: Array) -> np.ndarray:
    """δ = κ_s·z_s·d(x)^γ_s at the points (log N, log D) (broadcasting against (S, 1)), as numpy."""
    normals, offsets, kz, gamma = geometry
    x = _law_inputs(law, jnp.asarray(logN), jnp.asarray(logD), logU)
    X = jnp.stack(jnp.broadcast_arrays(*x.values()), axis=-1)
    return np.asarray(kz * grown(facet_distance(normals, offsets, X), gamma))


# ---------------------------------------------------------------------------------------------------- posterior API
def _draws(post: Posterior, family: str | None, seed: int) -> dict[str, Array]:
    """The law's published parameters, each (S,) float64 (float32 under ``SCALEBAYES_X64=0``), for ``family`` (as
    :meth:`Posterior.param_draws`)."""
    return {k: jnp.asarray(v, dtype=float) for k, v in post.param_draws(family, seed=seed).items()}


def _positive(name: str, v, *, allow_zero: bool = False) -> np.ndarray:
    a = np.atleast_1d(np.asarray(v, dtype=float))
    bad = ~np.isfinite(a) | ((a < 0) if allow_zero else (a <= 0))
    if bad.any():
        raise DataError(
            f"{name} must be finite and {'>= 0' if allow_zero else '> 0'}", rows=np.flatnonzero(bad).tolist()
        )
    return a


def _cap(unique_tokens: float | None) -> float:
    if unique_tokens is None:
        return math.inf
    return float(_positive("unique_tokens", unique_tokens)[0])


def plan_draws(
    post: Posterior,
    C,
    *,
    family: str | None = None,
    objective: str = "loss",
    inference_tokens: float = 0.0,
    unique_tokens: float | None = None,
    method: str = "auto",
    seed: int = 0,
    extrapolation: str | Discrepancy = "auto",
) -> dict[str, np.ndarray]:
    """Per-draw plans, the arrays behind :func:`plan`: dict of (S, B) numpy arrays ``N``, ``D``, ``D_per_N``,
    ``L`` (nats), ``C_train`` (6ND, FLOP), ``C_total`` (6ND + 2NT, FLOP), ``at_edge`` (bool), and ``epochs`` (D/U)
    when ``unique_tokens`` is given. With a discrepancy (``extrapolation``, as in
    :meth:`~scalebayes.posterior.Posterior.predict`; "auto": the stored calibration if any), ``L`` is the law's loss
    at each draw's plan times e^δ, δ the discrepancy at that (N, D): the loss the plan is predicted to reach, with the
    model's error beyond the fitted runs (run noise is left out: it does not move the optimum). See :func:`plan` for
    the other arguments."""
    law = post.law
    _check_law(law)
    if objective not in OBJECTIVES:
        raise ModelError(f"unknown objective {objective!r}; choose one of {OBJECTIVES}")
    if method not in ("auto", "closed_form", "numerical"):
        raise ModelError(f"unknown method {method!r}; choose 'auto', 'closed_form' or 'numerical'")
    Cs = _positive("C", C)
    B = len(Cs)
    # pad the budgets to a power of two (repeating the last): plans of 10 or 15 budgets share one compiled program
    Cs = jnp.asarray(np.concatenate([Cs, np.full((1 << max(B - 1, 0).bit_length()) - B, Cs[-1])]))
    T = float(_positive("inference_tokens", inference_tokens, allow_zero=True)[0])
    U = _cap(unique_tokens)
    params = _draws(post, family, seed)
    closed_ok = law is _laws.chinchilla and T == 0.0
    if method == "closed_form" and not closed_ok:
        raise ModelError("the closed form covers the Chinchilla law without inference tokens")
    use_closed = method == "closed_form" or (method == "auto" and closed_ok)
    if use_closed:
        out = closed_form_optimum(params, Cs, U)
        out["at_edge"] = jnp.zeros_like(out["N"], dtype=bool)
    elif T == 0.0 or objective == "budget":
        out = numerical_optimum(law, params, Cs, T, U)
    else:
        out = inference_optimum(law, params, Cs, T, U)
    res = {k: np.asarray(v)[:, :B] for k, v in out.items() if k != "C_total"}
    _, geometry = _discrepancy(post, family, extrapolation, res["N"].shape[0], seed)
    logU = jnp.log(jnp.asarray(U))
    res["L"] = res.pop("loss") * np.exp(_delta(law, geometry, np.log(res["N"]), np.log(res["D"]), logU))
    res["D_per_N"] = res["D"] / res["N"]
    res["C_train"] = 6.0 * res["N"] * res["D"]
    res["C_total"] = res["C_train"] + 2.0 * res["N"] * T
    if math.isfinite(U):
        res["epochs"] = res["D"] / U
    return res


def plan(
    post: Posterior,
    C,
    *,
    family: str | None = None,
    quantiles: Sequence[float] = (0.05, 0.5, 0.95),
    objective: str = "loss",
    inference_tokens: float = 0.0,
    unique_tokens: float | None = None,
    method: str = "auto",
    seed: int = 0,
    extrapolation: str | Discrepancy = "auto",
) -> pd.DataFrame:
    """Compute-optimal plans with posterior uncertainty; see :meth:`scalebayes.posterior.Posterior.plan`."""
    d = plan_draws(
        post,
        C,
        family=family,
        objective=objective,
        inference_tokens=inference_tokens,
        unique_tokens=unique_tokens,
        method=method,
        seed=seed,
        extrapolation=extrapolation,
    )
    n_edge = int(d["at_edge"].sum())
    if n_edge:
        warnings.warn(
            f"{n_edge} draw×budget plan(s) hit the edge of the searched tokens-per-parameter range "
            f"[{math.exp(R_LO):g}, {math.exp(R_HI):g}]; the law may have no interior optimum there",
            stacklevel=3,
        )
    out = pd.DataFrame({"C": np.atleast_1d(np.asarray(C, dtype=float))})
    names = ["N", "D", "D_per_N", "L", "C_train", "C_total"] + (["epochs"] if "epochs" in d else [])
    for name in names:
        qs = np.quantile(d[name], np.asarray(quantiles), axis=0)
        for q, row in zip(quantiles, qs, strict=True):
            out[f"{name}_{qcol(q)}"] = row
    out.attrs.update(
        family=family,
        objective=objective,
        inference_tokens=float(inference_tokens),
        unique_tokens=unique_tokens,
        draws=int(d["N"].shape[0]),
        predictive=label(resolve(post.discrepancy, extrapolation)),
    )
    return out


def prob_loss_below(
    post: Posterior,
    target,
    N,
    D,
    *,
    family: str | None = None,
    include_noise: bool = True,
    unique_tokens: float | None = None,
    seed: int = 0,
    extrapolation: str | Discrepancy = "auto",
):
    """P(loss ≤ target) at (N, D); see :meth:`scalebayes.posterior.Posterior.prob_loss_below`."""
    arrs = np.broadcast_arrays(_positive("target", target), _positive("N", N), _positive("D", D))
    t, n, d = (jnp.asarray(a) for a in arrs)
    params = _draws(post, family, seed)
    S = next(iter(params.values())).shape[0]
    logU = jnp.log(jnp.asarray(_cap(unique_tokens)))
    _, geometry = _discrepancy(post, family, extrapolation, S, seed)
    shift = _noise_at(_noise(post, family, seed, (S, t.shape[0]), include_noise), jnp.log(d / n)[None, :])
    shift = shift + _delta(post.law, geometry, jnp.log(n)[None, :], jnp.log(d)[None, :], logU)
    pr = _prob_at_points(post.law, _expand(params), jnp.log(n), jnp.log(d), jnp.log(t), jnp.asarray(shift), logU)
    pr = np.asarray(pr)
    scalar = all(np.ndim(v) == 0 for v in (target, N, D))
    return float(pr[0]) if scalar else pr


def compute_for_loss(
    post: Posterior,
    target,
    prob: float = 0.9,
    *,
    family: str | None = None,
    include_noise: bool = True,
    unique_tokens: float | None = None,
    quantiles: Sequence[float] = (0.05, 0.5, 0.95),
    seed: int = 0,
    extrapolation: str | Discrepancy = "auto",
) -> pd.DataFrame:
    """Least training compute reaching a target loss with a given probability; see
    :meth:`scalebayes.posterior.Posterior.compute_for_loss`."""
    law = post.law
    _check_law(law)
    if not 0.0 < float(prob) < 1.0:
        raise DataError(f"prob must be in (0, 1), got {prob}")
    targets = _positive("target", target)
    params = _draws(post, family, seed)
    p = _expand(params)
    S = next(iter(params.values())).shape[0]
    # noise column j for target j: the numbers prob_loss_below uses at the j-th of the same targets
    unit, zeta, c, span = _noise(post, family, seed, (S, len(targets)), include_noise)
    disc, geometry = _discrepancy(post, family, extrapolation, S, seed)
    U = _cap(unique_tokens)
    logU = jnp.asarray(math.log(U) if math.isfinite(U) else math.inf)
    rows = []
    for j, tv in enumerate(targets):
        noise = (unit[:, j : j + 1], zeta, c, span)
        logC, r = _least_log_compute(law, p, jnp.full((S, 1), math.log(tv)), noise, float(prob), logU, geometry)
        row = {"target": tv, "prob": float(prob), "C": np.inf, "N": np.nan, "D": np.nan, "D_per_N": np.nan}
        if math.isfinite(logC):
            logN, logD = _ray(jnp.asarray(logC), r, jnp.asarray(0.0))
            Nv, Dv = math.exp(float(logN)), math.exp(float(logD))
            row.update(C=math.exp(logC), N=Nv, D=Dv, D_per_N=Dv / Nv)
            # the loss interval at the chosen allocation, from the same predictive (noise column j, the same δ)
            loss = law.log_mean(p, _law_inputs(law, logN, logD, logU))[:, 0] + _noise_at(noise, logD - logN)[:, 0]
            loss = np.exp(np.asarray(loss) + _delta(law, geometry, logN, logD, logU)[:, 0])
            row.update({f"loss_{qcol(q)}": v for q, v in zip(quantiles, np.quantile(loss, quantiles), strict=True)})
        rows.append(row)
    out = pd.DataFrame(rows)
    out.attrs.update(family=family, include_noise=include_noise, unique_tokens=unique_tokens, predictive=label(disc))
    if not np.isfinite(out["C"]).all():
        warnings.warn(
            "some targets are not reached with the requested probability at any allocation up to 1e52 FLOP "
            "(below the irreducible loss for too many draws); C is inf there",
            stacklevel=3,
        )
    return out


def _least_log_compute(law, p, lt, noise: tuple, prob: float, logU, geometry) -> tuple[float, Array]:
    """(log C, ratio r) of the cheapest ray reaching the probability for log targets ``lt`` (S, 1) and run noise
    ``noise`` (:func:`_noise`, one column): rays
    over the whole ratio range (step 2.0), then twice a finer set between the best ray's neighbours (steps 0.25 and
    0.03 in log ratio; the requirement is flat near its minimum, so C is then exact to ~1e-4)."""
    capped = bool(jnp.isfinite(logU)) and "U" not in law.inputs  # D ≤ U is a constraint on each ray

    def search(r):
        lc = _required_log_compute(law, p, r, lt, prob, logU, geometry, noise)
        if capped:  # a ray whose D exceeds the cap at the required compute is infeasible
            _, logD = _ray(lc, r, jnp.asarray(0.0))
            lc = jnp.where(logD <= logU + 1e-12, lc, jnp.inf)
        return lc

    r = jnp.linspace(R_LO, R_HI, 17)
    lc = search(r)
    for _ in range(2):
        i = int(jnp.argmin(lc))
        r = jnp.linspace(r[max(i - 1, 0)], r[min(i + 1, len(r) - 1)], 17)
        lc = search(r)
    i = int(jnp.argmin(lc))
    return float(lc[i]), r[i]


def allocation_regret(
    post: Posterior,
    C=None,
    N=None,
    D=None,
    *,
    family: str | None = None,
    unique_tokens: float | None = None,
    method: str = "auto",
    seed: int = 0,
) -> np.ndarray:
    """Compute-equivalent regret per draw; see :meth:`scalebayes.posterior.Posterior.allocation_regret`."""
    law = post.law
    _check_law(law)
    given = {k: v for k, v in {"C": C, "N": N, "D": D}.items() if v is not None}
    if len(given) < 2:
        raise DataError("give two of C, N, D (C = 6·N·D)")
    a = dict(zip(given, np.broadcast_arrays(*(_positive(k, v) for k, v in given.items())), strict=True))
    if len(a) == 3:
        ratio = a["C"] / (6.0 * a["N"] * a["D"])
        bad = np.flatnonzero(np.abs(ratio - 1.0) > C_RTOL)
        if len(bad):
            raise DataError(f"C disagrees with 6·N·D by more than {C_RTOL:.0%}; give two of C, N, D", rows=bad.tolist())
    if "N" in a and "D" in a:
        n, d = a["N"], a["D"]
    elif "N" in a:
        n, d = a["N"], a["C"] / (6.0 * a["N"])
    else:
        n, d = a["C"] / (6.0 * a["D"]), a["D"]
    params = _draws(post, family, seed)
    U = _cap(unique_tokens)
    logU = jnp.log(jnp.asarray(U))
    x = _law_inputs(law, jnp.log(jnp.asarray(n))[None, :], jnp.log(jnp.asarray(d))[None, :], logU)
    loss = jnp.exp(law.log_mean(_expand(params), x))  # (S, P)
    c_spent = 6.0 * n * d
    if method not in ("auto", "closed_form", "numerical"):
        raise ModelError(f"unknown method {method!r}; choose 'auto', 'closed_form' or 'numerical'")
    closed_ok = law is _laws.chinchilla and not math.isfinite(U)
    if method == "closed_form" and not closed_ok:
        raise ModelError("the closed form covers the Chinchilla law without a unique-token cap")
    if method == "closed_form" or (method == "auto" and closed_ok):
        c_opt = closed_form_compute_for_loss(params, loss)
    else:
        c_opt = compute_for_loss_draws(law, params, loss, jnp.asarray(c_spent)[None, :], U)
    reg = np.asarray(c_spent[None, :] / c_opt - 1.0)
    scalar = all(np.ndim(v) == 0 for v in given.values())
    return reg[:, 0] if scalar else reg
