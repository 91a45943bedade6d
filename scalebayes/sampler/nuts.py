"""Multinomial NUTS advanced one leapfrog step at a time, over a :class:`Tree` with named parts.

The generalised U-turn criterion (Betancourt 2017) is checked on every sub-tree with NumPyro's and Stan's iterative
scheme: momentum checkpoints at even leaves of the current sub-tree, checked at odd ones. Coordinates are whitened
by the metric (:mod:`.metric`), so the integrator's mass matrix is the identity. Taking one leapfrog step per call
(instead of a whole trajectory) is what lets vectorised chains run unsynchronised: a chain whose trajectory ended
records its draw and starts the next trajectory in the same loop step, so chains cost about the mean trajectory
length rather than the longest one's at every iteration.

Every function here acts on one chain; the programs vmap them. ``uni`` is the step's vector of uniforms
(:func:`.rng.uniforms`): ``uni[0]`` picks a leaf within the sub-tree, ``uni[1]`` the sub-tree at a merge,
``uni[2]`` the direction of the next sub-tree and ``uni[3:]`` a fresh momentum.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax import lax

from . import metric
from .rng import normals

#: An energy error above this (nats) marks a trajectory as divergent (Stan's and NumPyro's threshold).
MAX_DELTA_ENERGY = 1000.0


class Point(NamedTuple):
    """A point of the trajectory in whitened coordinates: position, momentum, gradient of U (each (D,))."""

    u: jnp.ndarray
    p: jnp.ndarray
    g: jnp.ndarray


class Proposal(NamedTuple):
    """A candidate draw: position and gradient (D,), potential and total energy (nats)."""

    u: jnp.ndarray
    g: jnp.ndarray
    potential: jnp.ndarray
    energy: jnp.ndarray


class Tree(NamedTuple):
    """A trajectory under construction: the merged tree and the sub-tree being grown at one of its ends."""

    left: Point
    right: Point
    proposal: Proposal  # of the merged tree; after the trajectory ends, the draw
    sub_proposal: Proposal  # of the sub-tree
    rho: jnp.ndarray  # (D,) momentum sum of the merged tree
    rho_sub: jnp.ndarray  # (D,) momentum sum of the sub-tree
    ck_p: jnp.ndarray  # (max_depth, D) momentum checkpoints for the sub-tree's U-turn checks
    ck_rho: jnp.ndarray  # (max_depth, D) momentum sums at the checkpoints
    log_weight: jnp.ndarray  # log multinomial weight of the merged tree
    log_weight_sub: jnp.ndarray  # of the sub-tree
    h0: jnp.ndarray  # energy at the trajectory's start
    sum_accept: jnp.ndarray  # summed acceptance statistic of the leaves so far
    depth: jnp.ndarray  # int32: doublings so far
    go_right: jnp.ndarray  # bool: direction of the sub-tree
    n_sub: jnp.ndarray  # int32: leaves in the sub-tree
    n_leaves: jnp.ndarray  # int32: leaves in the trajectory


def uturn(p_a, p_b, rho):
    """Generalised no-U-turn criterion (NumPyro's form) for a (sub)trajectory with end momenta ``p_a``, ``p_b``
    and momentum sum ``rho`` (identity metric); broadcasts over leading axes."""
    r = rho - 0.5 * (p_a + p_b)
    return (jnp.sum(p_a * r, -1) <= 0) | (jnp.sum(p_b * r, -1) <= 0)


def leapfrog(vg, point: Point, h):
    """One leapfrog step of size ``h`` (negative: backwards) with ``vg(u) -> (U, dU/du)``; returns (point, U)."""
    ph = point.p - 0.5 * h * point.g
    u1 = point.u + h * ph
    pe1, g1 = vg(u1)
    return Point(u1, ph - 0.5 * h * g1, g1), pe1


def init(u, g, pe, max_depth: int) -> Tree:
    """A tree whose proposal is (``u``, ``g``, potential ``pe``) and nothing else; :func:`restart` starts from it."""
    z, dt = jnp.zeros_like(u), u.dtype
    zero = jnp.zeros((), dt)
    i0 = jnp.zeros((), jnp.int32)
    ck = jnp.zeros((max_depth, u.shape[0]), dt)
    return Tree(
        left=Point(z, z, z),
        right=Point(z, z, z),
        proposal=Proposal(u, g, pe, zero),
        sub_proposal=Proposal(z, z, zero, zero),
        rho=z,
        rho_sub=z,
        ck_p=ck,
        ck_rho=ck,
        log_weight=zero,
        log_weight_sub=zero,
        h0=zero,
        sum_accept=zero,
        depth=i0,
        go_right=jnp.zeros((), bool),
        n_sub=i0,
        n_leaves=i0,
    )


def restart(tree: Tree, uni) -> Tree:
    """A fresh trajectory from the tree's proposal, with momentum and direction from ``uni``."""
    D = tree.rho.shape[0]
    prop = tree.proposal
    p = normals(uni[3:], D).astype(prop.u.dtype)
    h0 = prop.potential + 0.5 * jnp.dot(p, p)
    end = Point(prop.u, p, prop.g)
    return tree._replace(
        left=end,
        right=end,
        proposal=prop._replace(energy=h0),
        sub_proposal=Proposal(prop.u, prop.g, prop.potential, h0),
        rho=p,
        rho_sub=jnp.zeros_like(p),
        log_weight=jnp.zeros_like(h0),
        log_weight_sub=jnp.full_like(h0, -jnp.inf),
        h0=h0,
        sum_accept=jnp.zeros_like(h0),
        depth=jnp.zeros_like(tree.depth),
        go_right=uni[2] < 0.5,
        n_sub=jnp.zeros_like(tree.n_sub),
        n_leaves=jnp.zeros_like(tree.n_leaves),
    )


def _subtree_turned(tree: Tree, p1, rho_sub):
    """Store a checkpoint (even leaves) or check every completed sub-sub-tree ending at this leaf for a U-turn
    (odd leaves; checkpoints idx_min..idx_max). Returns (checkpoints p, checkpoints rho, turned)."""
    n = tree.n_sub
    idx_max = lax.population_count(n >> 1)
    idx_min = idx_max - (lax.population_count(n ^ (n + 1)) - 1) + 1
    even = (n & 1) == 0
    ck_p = jnp.where(even, tree.ck_p.at[idx_max].set(p1), tree.ck_p)
    ck_rho = jnp.where(even, tree.ck_rho.at[idx_max].set(rho_sub), tree.ck_rho)
    i = jnp.arange(ck_p.shape[0])
    turn_i = uturn(ck_p, p1[None, :], rho_sub[None, :] - ck_rho + ck_p)
    return ck_p, ck_rho, ~even & jnp.any(turn_i & (i >= idx_min) & (i <= idx_max))


def extend(tree: Tree, uni, log_eps, vg, max_depth: int):
    """Add one leaf to the sub-tree (a leapfrog step from its end, step size exp(``log_eps``)) and merge the
    sub-tree into the tree when it is complete. Returns (tree, trajectory done, diverging)."""
    eps = jnp.exp(log_eps)
    right = tree.go_right
    end = jax.tree.map(lambda r, l: jnp.where(right, r, l), tree.right, tree.left)
    leaf, pe1 = leapfrog(vg, end, jnp.where(right, eps, -eps))
    e1 = pe1 + 0.5 * jnp.dot(leaf.p, leaf.p)
    dlt = e1 - tree.h0
    dlt = jnp.where(jnp.isnan(dlt), jnp.inf, dlt)
    diverging = dlt > MAX_DELTA_ENERGY
    left = jax.tree.map(lambda a, b: jnp.where(right, a, b), tree.left, leaf)
    right_end = jax.tree.map(lambda a, b: jnp.where(right, a, b), leaf, tree.right)
    # multinomial sampling inside the sub-tree
    logw_sub = jnp.logaddexp(tree.log_weight_sub, -dlt)
    take = jnp.log(uni[0]) < -dlt - logw_sub
    rho_sub = tree.rho_sub + leaf.p
    ck_p, ck_rho, turning_sub = _subtree_turned(tree, leaf.p, rho_sub)
    n_sub = tree.n_sub + 1
    stop = turning_sub | diverging
    merge = (n_sub >= (1 << tree.depth)) & ~stop
    # merge a finished sub-tree into the trajectory (biased progressive sampling)
    take_sub = merge & (jnp.log(uni[1]) < logw_sub - tree.log_weight)
    # The flags are materialised once: otherwise XLA recomputes them (energy, weights) inside every leaf's select
    dlt, logw_sub, take, stop, merge, take_sub = lax.optimization_barrier((dlt, logw_sub, take, stop, merge, take_sub))
    sub_prop = jax.tree.map(lambda a, b: jnp.where(take, a, b), Proposal(leaf.u, leaf.g, pe1, e1), tree.sub_proposal)
    proposal = jax.tree.map(lambda a, b: jnp.where(take_sub, a, b), sub_prop, tree.proposal)
    rho = jnp.where(merge, tree.rho + rho_sub, tree.rho)
    depth = tree.depth + merge.astype(jnp.int32)
    done = stop | (merge & (uturn(left.p, right_end.p, rho) | (depth >= max_depth)))
    new = Tree(
        left=left,
        right=right_end,
        proposal=proposal,
        sub_proposal=sub_prop,
        rho=rho,
        rho_sub=jnp.where(merge, 0.0, rho_sub),
        ck_p=ck_p,
        ck_rho=ck_rho,
        log_weight=jnp.where(merge, jnp.logaddexp(tree.log_weight, logw_sub), tree.log_weight),
        log_weight_sub=jnp.where(merge, -jnp.inf, logw_sub),
        h0=tree.h0,
        sum_accept=tree.sum_accept + jnp.exp(jnp.minimum(0.0, -dlt)),
        depth=depth,
        go_right=jnp.where(merge, uni[2] < 0.5, right),
        n_sub=jnp.where(merge, 0, n_sub),
        n_leaves=tree.n_leaves + 1,
    )
    return new, done, diverging


def whitened(potential, L, args):
    """``vg(u) -> (U, dU/du)`` for metric factor ``L`` and the potential's data ``args``."""
    return lambda u: metric.value_and_grad(potential, u, L, args)


def n_uniforms(D: int) -> int:
    """Uniforms per step: leaf, merge, direction, and a momentum of ``D`` normals (+1 to make the count even)."""
    return 2 * ((D + 1) // 2) + 4
