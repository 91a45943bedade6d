"""Whitened coordinates: NUTS moves ``u`` with ``q = L u``, so its mass matrix is the identity.

``L`` is the Cholesky factor of the adapted covariance (D, D) with a dense metric, or the scales (D,) with a
diagonal one; the rank of ``L`` says which. Small matrix-vector products are written as multiply-and-sum:
XLA:CPU sends batched ``dot``s of tiny matrices to a library call per step that cost more than the whole
gradient of a 40-run dataset, while elementwise code fuses.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def to_q(L, u):
    """Model coordinates of whitened ``u`` (D,)."""
    return jnp.sum(L * u[None, :], axis=-1) if L.ndim == 2 else L * u


def from_q(L, q):
    """Whitened coordinates of ``q`` (D,)."""
    return jax.scipy.linalg.solve_triangular(L, q, lower=True) if L.ndim == 2 else q / L


def grad_to_u(L, gq):
    """Gradient w.r.t. ``u`` from the gradient w.r.t. ``q``."""
    return jnp.sum(L * gq[:, None], axis=0) if L.ndim == 2 else L * gq


def grad_to_q(L, gu):
    """Gradient w.r.t. ``q`` from the gradient w.r.t. ``u``."""
    return jax.scipy.linalg.solve_triangular(L.T, gu, lower=False) if L.ndim == 2 else gu / L


def value_and_grad(potential, u, L, args):
    """Potential (nats) and its gradient in whitened coordinates at ``u``; ``args`` are the potential's data."""
    pe, gq = jax.value_and_grad(potential)(to_q(L, u), *args)
    return pe, grad_to_u(L, gq)


def identity(D: int, dense: bool, dtype):
    """The unit metric factor: eye (D, D) or ones (D,)."""
    return jnp.eye(D, dtype=dtype) if dense else jnp.ones(D, dtype)
