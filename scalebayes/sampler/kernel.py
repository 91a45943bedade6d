"""One chain of the program: a NUTS trajectory plus its adaptation state, advanced one leapfrog step at a time.

:meth:`Chain.step` takes one leapfrog step (:func:`.nuts.extend`) and, when the trajectory ended, finishes the
iteration in the same call: adapts the step size and accumulates the covariance (as the current window says),
records the draw and starts the next trajectory. :meth:`Chain.end_window` runs at a window boundary: new metric,
fresh step size. Chains meet only there (the programs pool their statistics, :mod:`.adaptation`).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax import lax

from . import adaptation, metric, nuts
from .adaptation import DualAveraging, Welford, Window
from .rng import STREAM_LAPLACE, normals, uniforms


class ChainState(NamedTuple):
    """Everything one chain carries through the loop."""

    tree: nuts.Tree
    step_size: DualAveraging
    cov: Welford
    L: jnp.ndarray  # (D, D) Cholesky factor of the metric's covariance (dense) or (D,) scales (diagonal)
    it: jnp.ndarray  # int32: iterations done in the current window
    counter: jnp.ndarray  # int32: random-number counter
    key: jnp.ndarray  # (2,) uint32 key words of this chain


@dataclass(frozen=True)
class Chain:
    """The per-chain functions of the program, for ``potential(q, *args)`` on D coordinates."""

    potential: Callable
    D: int
    max_depth: int
    target: float
    dense: bool
    n_rows: int  # output rows per chain; row n_rows is the scratch row

    @property
    def n_uniforms(self) -> int:
        return nuts.n_uniforms(self.D)

    def start(self, kw, mode, L, args) -> ChainState:
        """The chain's state at a draw from N(mode, L Lᵀ) (the mode itself if the law cannot be evaluated there)."""
        dt = args[1].dtype
        D = self.D
        q = mode + metric.to_q(L, normals(uniforms(kw, 0, self.n_uniforms, dt, STREAM_LAPLACE)[4:], D))
        q = jnp.where(jnp.isfinite(self.potential(q, *args)), q, mode)
        u = metric.from_q(L, q)
        pe, g = metric.value_and_grad(self.potential, u, L, args)
        zero = jnp.zeros((), dt)
        return ChainState(
            tree=nuts.init(u, g, pe, self.max_depth),
            step_size=DualAveraging(jnp.asarray(math.log(0.5), dt), zero, zero, zero, zero),
            cov=adaptation.welford_covariance(self.dense)[0](D, dt),
            L=L,
            it=jnp.zeros((), jnp.int32),
            counter=jnp.zeros((), jnp.int32),
            key=kw,
        )

    def step(self, st: ChainState, win: Window, args):
        """One leapfrog step; finishes the iteration if the trajectory ended. Returns the new state, the output
        row this step writes (``n_rows``: the scratch row) and its values (q, diverging, leapfrog steps,
        acceptance, energy, potential). Written at every step of an iteration, the last write (when it ends)
        stays: one row scatter, never a select over the buffer."""
        dt = st.tree.h0.dtype
        active = st.it < win.n_iter
        uni = uniforms(st.key, st.counter, self.n_uniforms, dt)
        vg = nuts.whitened(self.potential, st.L, args)
        tree, done, diverging = nuts.extend(st.tree, uni, st.step_size.log_step, vg, self.max_depth)
        accept = tree.sum_accept / tree.n_leaves
        q = metric.to_q(st.L, tree.proposal.u)
        cont = st._replace(tree=tree)
        fin = self._finish(cont, win, uni, accept, q)
        # Materialised once: otherwise XLA copies the trajectory's termination test into every leaf's select
        fin_now, active = lax.optimization_barrier((done & active, active))
        new = jax.tree.map(lambda a, b, c: jnp.where(fin_now, a, jnp.where(active, b, c)), fin, cont, st)
        new = new._replace(counter=new.counter + active.astype(jnp.int32))
        row = jnp.where(win.record & active, jnp.minimum(win.row0 + st.it, self.n_rows - 1), self.n_rows)
        prop = tree.proposal
        vals = jnp.concatenate(
            [q, jnp.stack([diverging.astype(dt), tree.n_leaves.astype(dt), accept, prop.energy, prop.potential])]
        )
        return new, row, vals

    def _finish(self, st: ChainState, win: Window, uni, accept, q) -> ChainState:
        """The trajectory ended: adapt, count the iteration, start the next trajectory from the proposal."""
        _, da_update = adaptation.dual_averaging(self.target)
        _, cov_update, _ = adaptation.welford_covariance(self.dense)
        pick = lambda flag, a, b: jax.tree.map(lambda x, y: jnp.where(flag, x, y), a, b)  # noqa: E731
        return st._replace(
            tree=nuts.restart(st.tree, uni),
            step_size=pick(win.adapt, da_update(st.step_size, accept), st.step_size),
            cov=pick(win.accumulate, cov_update(st.cov, q), st.cov),
            it=st.it + 1,
        )

    def set_metric(self, st: ChainState, L) -> ChainState:
        """Change the metric to ``L``, keeping the chain's position (u, g re-expressed in the new coordinates)."""
        prop = st.tree.proposal
        u = metric.from_q(L, metric.to_q(st.L, prop.u))
        g = metric.grad_to_u(L, metric.grad_to_q(st.L, prop.g))
        return st._replace(tree=st.tree._replace(proposal=prop._replace(u=u, g=g)), L=L)

    def _new_metric(self, st: ChainState) -> ChainState:
        """The metric from the window's covariance estimate (kept as is if that is not finite); statistics reset."""
        cov_init, _, factor = adaptation.welford_covariance(self.dense)
        L, ok = factor(st.cov)
        st = self.set_metric(st, jnp.where(ok, L, st.L))
        return st._replace(cov=cov_init(self.D, st.L.dtype))

    def _new_step_size(self, st: ChainState, args, skip) -> ChainState:
        vg = nuts.whitened(self.potential, st.L, args)
        le, ctr = adaptation.find_step_size(vg, st.tree.proposal, st.step_size.log_step, st.key, st.counter, skip)
        da_init, _ = adaptation.dual_averaging(self.target)
        return st._replace(step_size=da_init(le), counter=ctr)

    def end_window(self, st: ChainState, win: Window, args, skip=False) -> ChainState:
        """At a window boundary: new metric (after slow windows), fresh step size; final step size after warm-up.
        ``skip`` (streaming program: chains not at a boundary) runs no step-size search; the caller discards the
        result."""
        dt = st.L.dtype
        st = lax.cond(win.update, self._new_metric, lambda st: st, st)
        st = lax.cond(win.reset, lambda st: self._new_step_size(st, args, skip), lambda st: st, st)
        da = st.step_size
        st = st._replace(step_size=da._replace(log_step=jnp.where(win.final, da.log_step_avg, da.log_step).astype(dt)))
        ctr = st.counter + 1
        tree = nuts.restart(st.tree, uniforms(st.key, ctr, self.n_uniforms, dt))
        return st._replace(tree=tree, it=jnp.zeros_like(st.it), counter=ctr + 1)  # the restart's uniforms used up
