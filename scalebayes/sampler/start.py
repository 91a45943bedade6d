"""The warm-up's start: a short damped Newton descent from near the prior's centre toward the posterior mode.

Each chain starts near the prior's centre and takes a short damped (saddle-free) Newton descent toward the mode;
the inverse Hessian there seeds the metric, so the first trajectories are not hundreds of steps long. The program
(:mod:`.program`) then lets the chain with the lowest end point lend its metric to all chains of the dataset, and
a chain that stopped > 20 + D nats above it restarts from the best end point.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax

from ..model import Spec
from . import metric, nuts
from .potential import init_position, n_dim
from .rng import STREAM_JITTER, normals, uniforms

#: Newton iterations at most (the descent stops earlier once U stops falling). 20 left porian's 8 setups (565
#: runs, partial pooling) 60-440 posterior SDs from the bulk with a metric off by up to 5000x in variance, and the
#: first 100 warm-up iterations then took ~800 leapfrog steps each (two thirds of the fit); 50 reaches the bulk
#: (~2 SDs) on 3 of 4 chains, and the best chain lends its end point and metric to the others.
MAX_NEWTON = 50


def _value_grad_hessian(potential, q, args):
    """Value, gradient and a central-difference Hessian from one vmapped gradient at 2D+1 points: a
    forward-over-reverse Hessian would compile second derivatives of everything (trigamma series for the
    Student-t constant), several seconds of XLA time for a matrix that only seeds the metric."""
    D = q.shape[0]
    eye = jnp.eye(D, dtype=q.dtype)
    h = 1e-4 * (1.0 + jnp.abs(q))
    pts = jnp.concatenate([q[None], q + eye * h, q - eye * h])
    val, grad = jax.vmap(lambda z: jax.value_and_grad(potential)(z, *args))(pts)
    hess = (grad[1 : D + 1] - grad[D + 1 :]) / (2.0 * h[:, None])
    return val[0], grad[0], 0.5 * (hess + hess.T)


def find_mode(potential, q, args, max_iter: int | None = None):
    """A short saddle-free Newton descent on U from ``q`` (D,) (Levenberg-Marquardt damped): (end point, Hessian
    there, whether both are finite, U there). It need not reach the mode (a Student-t likelihood has long
    non-convex ridges); its job is to reach the bulk and find the posterior's scales, in particular the tight
    direction along which the law's amplitudes are pinned."""

    max_iter = MAX_NEWTON if max_iter is None else max_iter

    def cond(c):
        return (c[0] < max_iter) & ~c[-1]

    def body(c):
        i, q, f, g, H, lam, _ = c
        w, V = jnp.linalg.eigh(H)
        aw = jnp.abs(w)
        step = -V @ ((V.T @ g) / (aw + lam * jnp.max(aw) + 1e-12))
        ok_step = jnp.all(jnp.isfinite(step))
        q1 = q + jnp.where(ok_step, step, 0.0)
        f1, g1, H1 = _value_grad_hessian(potential, q1, args)
        better = ok_step & jnp.isfinite(f1) & (f1 < f) & jnp.all(jnp.isfinite(g1)) & jnp.all(jnp.isfinite(H1))
        conv = (better & (jnp.abs(f1 - f) < 1e-10 * (1.0 + jnp.abs(f)))) | (lam > 1e6)
        q, f, g, H = (jnp.where(better, a, b) for a, b in ((q1, q), (f1, f), (g1, g), (H1, H)))
        lam = jnp.where(better, jnp.maximum(lam / 10.0, 1e-12), lam * 10.0)
        return i + 1, q, f, g, H, lam, conv

    f0, g0, H0 = _value_grad_hessian(potential, q, args)
    c = (0, q, f0, g0, H0, jnp.asarray(1e-3, q.dtype), jnp.asarray(False))
    _, q, f, _, H, _, _ = lax.while_loop(cond, body, c)
    return q, H, jnp.isfinite(f) & jnp.all(jnp.isfinite(H)), f


def newton_start(spec: Spec, potential, kw, args, jitter: float, dense: bool):
    """One chain's start: a jittered point near the prior's centre (key words ``kw``), then :func:`find_mode`; the
    inverse of the Hessian there (eigenvalues made positive, scales at most 1) is the first metric. Returns (end
    point (D,), metric factor, U at the end point; inf when the descent or its Hessian failed: then the jittered
    start and the identity)."""
    dt = args[1].dtype
    D = n_dim(spec)
    z0 = normals(uniforms(kw, 0, nuts.n_uniforms(D), dt, STREAM_JITTER)[4:], D)
    q0 = init_position(spec, args[-1], z0, jitter, dt)
    mode, H, ok, f_mode = find_mode(potential, q0, args)
    w, V = jnp.linalg.eigh(jnp.where(ok, H, jnp.eye(D, dtype=dt)))
    w = jnp.maximum(jnp.abs(w), 1.0)
    if dense:
        L = jnp.linalg.cholesky((V / w) @ V.T)
    else:
        L = 1.0 / jnp.sqrt(jnp.maximum(jnp.diagonal(H), 1.0))
    ok = ok & jnp.all(jnp.isfinite(L)) & jnp.all(jnp.isfinite(mode))
    L = jnp.where(ok, L, metric.identity(D, dense, dt))
    return jnp.where(ok, mode, q0), L, jnp.where(ok, f_mode, jnp.inf)
