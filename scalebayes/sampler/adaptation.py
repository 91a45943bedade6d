"""Warm-up adaptation as small ``(init, update)`` pairs, and Stan's window schedule.

Stan's windowed adaptation: dual-averaging step size toward ``target_accept``; a fast initial window (75
iterations), slow windows of 25, 50, 100, ... iterations whose draws estimate the covariance, and a terminal fast
window (50). After each metric update the step size is re-initialised by Hoffman & Gelman's doubling heuristic.

The covariance estimate is shrunk toward 1e-3 x its own diagonal, not toward Stan's/NumPyro's absolute 1e-3·I:
the law's amplitudes are pinned along one direction (their sum at the data centre, variance ~1e-6 on
chinchilla_epoch) that an absolute ridge swamps, forcing a several times smaller step.

With ``cross_chain`` the chains of a dataset pool their covariance statistics at window ends (:func:`pool_welford`,
4x the draws per slow window), and take the geometric mean of their adapted step sizes when warm-up ends
(:func:`pool_step_size`): they share the metric and target, so the differences are adaptation noise, and
vectorised chains would otherwise all wait through sampling for the one with the smallest step.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import jax.numpy as jnp
import numpy as np
from jax import lax

from . import nuts
from .rng import normals, uniforms


# ------------------------------------------------------------------------------------------- dual averaging
class DualAveraging(NamedTuple):
    """Nesterov dual averaging of the log step size (Hoffman & Gelman 2014, alg. 5)."""

    log_step: jnp.ndarray  # the step size in use
    mu: jnp.ndarray  # shrinkage target (log 10ε₀)
    hbar: jnp.ndarray  # running mean of (target - acceptance)
    log_step_avg: jnp.ndarray  # iterate average: the step size after warm-up
    count: jnp.ndarray  # iterations adapted


def dual_averaging(target: float, gamma: float = 0.05, t0: float = 10.0, kappa: float = 0.75):
    """``(init(log_step), update(state, accept))`` for acceptance target ``target``."""

    def init(log_step) -> DualAveraging:
        zero = jnp.zeros_like(log_step)
        return DualAveraging(log_step, log_step + math.log(10.0), zero, zero, zero)

    def update(state: DualAveraging, accept) -> DualAveraging:
        t = state.count + 1.0
        eta = 1.0 / (t + t0)
        hbar = (1.0 - eta) * state.hbar + eta * (target - accept)
        log_eps = state.mu - jnp.sqrt(t) / gamma * hbar
        w = t ** (-kappa)
        xbar = w * log_eps + (1.0 - w) * state.log_step_avg
        return DualAveraging(log_eps, state.mu, hbar, xbar, t)

    return init, update


def pool_step_size(da: DualAveraging) -> DualAveraging:
    """Every chain of a dataset (axis 1 of (B, C) fields) gets the geometric mean of their averaged step sizes."""
    xbar = da.log_step_avg
    return da._replace(log_step_avg=jnp.broadcast_to(jnp.mean(xbar, axis=1, keepdims=True), xbar.shape))


# ------------------------------------------------------------------------------------- windowed covariance
class Welford(NamedTuple):
    """Running mean (D,), co-moment ((D, D) dense or (D,) diagonal) and count of the draws of a window."""

    mean: jnp.ndarray
    m2: jnp.ndarray
    n: jnp.ndarray


def welford_covariance(dense: bool):
    """``(init(D, dtype), update(state, q), metric_factor(state))``; the factor is the Cholesky factor (dense) or
    the scales (diagonal) of the shrunk covariance estimate, with a flag saying whether it is finite."""

    def init(D: int, dtype) -> Welford:
        return Welford(jnp.zeros(D, dtype), jnp.zeros((D, D) if dense else D, dtype), jnp.zeros((), dtype))

    def update(state: Welford, q) -> Welford:
        wn1 = state.n + 1.0
        dq = q - state.mean
        mean1 = state.mean + dq / wn1
        m2 = state.m2 + (jnp.outer(dq, q - mean1) if dense else dq * (q - mean1))
        return Welford(mean1, m2, wn1)

    def metric_factor(state: Welford):
        n = state.n
        cov = state.m2 / jnp.maximum(n - 1.0, 1.0)
        shrink = 5.0 / (n + 5.0)
        var = jnp.diagonal(cov) if dense else cov
        ridge = 1e-3 * shrink * var + 1e-12  # scale-relative: see the module docstring
        if dense:
            L = jnp.linalg.cholesky((1.0 - shrink) * cov + jnp.diag(ridge))
        else:
            L = jnp.sqrt((1.0 - shrink) * cov + ridge)
        return L, jnp.all(jnp.isfinite(L))

    return init, update, metric_factor


def pool_welford(w: Welford) -> Welford:
    """Combine the statistics of the chains of each dataset (axis 1 of (B, C, ...) fields) and give every chain
    the pooled count, mean and co-moment (Chan et al.'s parallel update)."""
    n, mean_c = w.n, w.mean  # (B, C), (B, C, D)
    dense = w.m2.ndim == mean_c.ndim + 1
    n_tot = jnp.sum(n, axis=1, keepdims=True)
    mean = jnp.sum(n[..., None] * mean_c, axis=1, keepdims=True) / jnp.maximum(n_tot, 1.0)[..., None]
    dm = mean_c - mean
    if dense:
        m2 = jnp.sum(w.m2 + n[..., None, None] * dm[..., :, None] * dm[..., None, :], axis=1, keepdims=True)
    else:
        m2 = jnp.sum(w.m2 + n[..., None] * dm * dm, axis=1, keepdims=True)
    C = n.shape[1]
    return Welford(
        mean=jnp.broadcast_to(mean, mean_c.shape),
        m2=jnp.broadcast_to(m2, (m2.shape[0], C, *m2.shape[2:])),
        n=jnp.broadcast_to(n_tot, n.shape),
    )


# -------------------------------------------------------------------------------------- step-size heuristic
def find_step_size(vg, point: nuts.Proposal, log_eps, kw, ctr, skip=False):
    """Hoffman & Gelman (2014, alg. 4): double or halve ε from exp(``log_eps``) until the acceptance of one leapfrog
    step from ``point`` crosses 0.8. Momenta come from the chain's stream (key words ``kw``, counter ``ctr``
    onwards). ``skip`` runs no step (the caller discards the result). Returns (log ε, next counter)."""
    D = point.u.shape[0]
    dt = point.u.dtype
    n_uni = nuts.n_uniforms(D)
    log_target = math.log(0.8)

    def body(c):
        i, le, direction, _, ctr = c
        le_try = jnp.where(i == 0, le, le + direction * math.log(2.0))
        p = normals(uniforms(kw, ctr, n_uni, dt)[3:], D).astype(dt)
        leaf, pe1 = nuts.leapfrog(vg, nuts.Point(point.u, p, point.g), jnp.exp(le_try))
        d = (pe1 + 0.5 * jnp.dot(leaf.p, leaf.p)) - (point.potential + 0.5 * jnp.dot(p, p))
        ok = -jnp.where(jnp.isnan(d), jnp.inf, d) > log_target
        direction = jnp.where(i == 0, jnp.where(ok, 1.0, -1.0).astype(dt), direction)
        crossed = (i > 0) & jnp.where(direction > 0, ~ok, ok)
        return i + 1, le_try, direction, crossed, ctr + 1

    def cond(c):
        return (c[0] < 40) & ~c[3]

    c0 = (0, log_eps, jnp.ones((), dt), jnp.asarray(skip), ctr)
    _, le, _, _, ctr = lax.while_loop(cond, body, c0)
    return le, ctr


# ------------------------------------------------------------------------------------------- the schedule
def adaptation_windows(warmup: int) -> list[tuple[int, bool]]:
    """Stan's warm-up schedule: ``[(iterations, slow), ...]``; the metric is re-estimated at the end of each slow
    window. 75 + (25, 50, 100, ...) + 50 for warmup ≥ 150; 15% / 75% / 10% below; step size only below 20."""
    if warmup <= 0:
        return []
    if warmup < 20:
        return [(warmup, False)]
    init, term, base = 75, 50, 25
    if init + base + term > warmup:
        init, term = int(0.15 * warmup), int(0.1 * warmup)
        base = warmup - init - term
    out = [(init, False)] if init else []
    start, size, end = init, base, warmup - term
    while start < end:
        nxt = start + size
        if nxt + 2 * size > end:
            nxt = end
        out.append((nxt - start, True))
        start, size = nxt, 2 * size
    if term:
        out.append((term, False))
    return out


class Window(NamedTuple):
    """One row of the program's schedule (each field an array over rows, or one row's scalar)."""

    n_iter: np.ndarray  # iterations in the window
    adapt: np.ndarray  # dual-average the step size
    accumulate: np.ndarray  # accumulate the covariance
    update: np.ndarray  # new metric at the end
    record: np.ndarray  # write the draws to the output
    final: np.ndarray  # last warm-up window: take the averaged step size at its end
    reset: np.ndarray  # re-initialise the step size at the end
    row0: np.ndarray  # first output row


def window_table(warmup: int, draws: int, keep_warmup: bool = False) -> Window:
    """The schedule as a :class:`Window` of arrays over rows. Row 0 is an empty window whose end finds the first
    step size; the last row is sampling. ``keep_warmup`` records warm-up iterations too (rows 0..warmup-1 of the
    output, draws after them)."""
    rows = [(0, False, False, False, keep_warmup, False, True, 0)]
    start = 0
    for n, slow in adaptation_windows(warmup):
        rows.append((n, True, slow, slow, keep_warmup, False, slow, start))
        start += n
    if len(rows) > 1:
        rows[-1] = (*rows[-1][:5], True, *rows[-1][6:])
    rows.append((draws, False, False, False, True, False, False, start if keep_warmup else 0))
    return Window(*(np.asarray([r[i] for r in rows], dtype=np.int32 if i in (0, 7) else bool) for i in range(8)))
