"""The pure programs: every chain of B datasets through warm-up and sampling in one loop, no host round trips.

``build(...)`` returns ``run(keys (B,), x, log_y, fam, mask, hyper) -> (draws, stats)`` with a leading dataset
axis B on every data array. Two loops:

*Side by side* (``slots=0``): all B datasets pass every warm-up window boundary together (a ``lax.scan`` over
windows of ``lax.while_loop``s over leapfrog steps), so the loop costs, per window, the slowest chain's steps.

*Streaming* (``slots=P``, used by :func:`scalebayes.fit_many`): passing window boundaries together made the loop
cost the slowest of all B x chains chains per window (2.5x the mean chain's steps at B = 64 on 40-run simulated
datasets), so a batch was no faster per fit than a loop over ``fit``. Instead the datasets stream through P slots:
a dataset moves to its next window as soon as its own chains finished the current one (window ends are handled
for all waiting datasets together every ``sync_every`` steps, since each costs a few leapfrog steps of every
chain), and a slot whose dataset finished sampling loads the next one from the queue (its start was computed up
front). A dataset's numbers depend only on its own random stream, not on the slot or the timing; the loop costs
about B/P times the mean dataset's steps plus one dataset's tail.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property, partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from .. import progress
from ..model import Spec
from . import adaptation
from .config import COMPILE_COUNT, SamplerConfig
from .kernel import Chain, ChainState
from .potential import make_potential, n_dim, unflatten
from .start import newton_start

#: Progress reports per fit (with ``SamplerConfig.progress``): each is a host callback, so ten (every 10% of the
#: iterations), not one per iteration.
PROGRESS_REPORTS = 10


def report_branches(warmup: int, total: int, every: int) -> list:
    """``lax.switch`` branches for the side-by-side loop's progress reports: branch 0 reports nothing, branch k
    reports ``min(k * every, total)`` of ``total`` iterations per chain done (sampling once past ``warmup``).

    Each report is its own host callback taking no argument: a callback's arguments cost far more than its work
    (JAX turns each into a device array on the host, and the garbage triggers collections in a process holding
    a fit), while which report fires is known from the branch."""

    def branch(done: int):
        update = partial(progress.update, done, total, done > warmup)
        return lambda: jax.debug.callback(update)

    return [lambda: None] + [branch(min(k * every, total)) for k in range(1, -(-total // every) + 1)]


@dataclass(frozen=True)
class Parts:
    """The pieces both loops share, for one model structure and configuration."""

    spec: Spec
    config: SamplerConfig
    chain: Chain
    table: adaptation.Window  # of NumPy arrays over rows

    @property
    def C(self) -> int:
        return int(self.config.chains)

    @property
    def pool(self) -> bool:
        return bool(self.config.cross_chain) and self.C > 1

    @cached_property
    def v_newton(self):
        start = lambda kw, args: newton_start(  # noqa: E731
            self.spec, self.chain.potential, kw, args, self.config.init_jitter, self.chain.dense
        )
        return jax.vmap(jax.vmap(start, in_axes=(0, None)), in_axes=(0, 0))

    def init_states(self, keys, args) -> ChainState:
        """Every chain's starting state (B, C): Newton descent; with ``cross_chain`` every chain gets the metric of
        the chain whose descent got furthest (lowest U), and a chain that stopped in a region far less probable
        than that (U more than 20 + D nats higher: negligible posterior mass, not a competing mode) starts from the
        best end point instead, as Pathfinder's resampling would."""
        B, C, D = keys.shape[0], self.C, self.chain.D
        words = jax.vmap(lambda k: jax.random.bits(k, (C, 2), jnp.uint32))(keys)  # per-chain generator keys
        mode, L, f_mode = self.v_newton(words, args)
        if self.pool:
            best = jnp.argmin(f_mode, axis=1)[:, None]
            pick = lambda a: jnp.take_along_axis(a, best.reshape(B, 1, *([1] * (a.ndim - 2))), axis=1)  # noqa: E731
            far = ~(f_mode <= pick(f_mode) + 20.0 + D)
            mode = jnp.where(far[..., None], pick(mode), mode)
            L = jnp.broadcast_to(pick(L), L.shape)
        v_start = jax.vmap(jax.vmap(self.chain.start, in_axes=(0, 0, 0, None)), in_axes=(0, 0, 0, 0))
        return v_start(words, mode, L, args)

    def pool_chains(self, st: ChainState, end_warmup) -> ChainState:
        """Pool the covariance statistics of each dataset's chains (B, C); at the end of warm-up also their step
        sizes (``end_warmup`` a flag, scalar or per dataset)."""
        st = st._replace(cov=adaptation.pool_welford(st.cov))
        pooled = adaptation.pool_step_size(st.step_size)
        flag = jnp.reshape(end_warmup, jnp.shape(end_warmup) + (1,))
        return st._replace(step_size=jax.tree.map(lambda a, b: jnp.where(flag, a, b), pooled, st.step_size))

    def outputs(self, buf, log_eps):
        """(draws, stats) from the packed output rows (B, C, S, D + 5) and the final log step sizes (B, C)."""
        D = self.chain.D
        draws = unflatten(self.spec, buf[..., :D], constrain=True)
        stats = {
            "diverging": buf[..., D] > 0.5,
            "num_steps": buf[..., D + 1].astype(jnp.int32),
            "accept_prob": buf[..., D + 2],
            "energy": buf[..., D + 3],
            "potential_energy": buf[..., D + 4],
            "step_size": jnp.exp(log_eps),
        }
        return draws, stats


def make_parts(spec: Spec, config: SamplerConfig, keep_warmup: bool = False, potential=None) -> Parts:
    """:class:`Parts` for ``spec``; ``keep_warmup`` also records the warm-up iterations (the first ``warmup``
    rows); ``potential`` replaces the model's (same signature and dimension; tests sample known distributions)."""
    S = int(config.draws) + (int(config.warmup) if keep_warmup else 0)
    chain = Chain(
        potential=make_potential(spec) if potential is None else potential,
        D=n_dim(spec),
        max_depth=int(config.max_tree_depth),
        target=float(config.target_accept),
        dense=bool(config.dense_mass),
        n_rows=S,
    )
    return Parts(spec, config, chain, adaptation.window_table(int(config.warmup), int(config.draws), keep_warmup))


class Pieces(NamedTuple):
    """The side-by-side program cut where a host loop may look in (:mod:`.driver`): each a pure function over a
    leading dataset axis B, with ``args = (x, log_y, fam, mask, hyper)``.

    - ``init(key_data (B, 2) uint32, *args) -> (state, buf)``: every chain's start and an empty output buffer;
    - ``advance(state, buf, win, upto, close, *args) -> (state, buf)``: leapfrog steps until every chain has done
      ``upto`` iterations of window ``win`` (one row of the schedule, scalars), then, if ``close``, the window's end
      (pooling, new metric, step size);
    - ``finish(state, buf) -> (draws, stats)``.

    Advancing a window in several calls gives the same numbers as in one: a chain's steps depend only on its own
    state, and a chain that is ahead keeps stepping (up to the window's end) while the others catch up.
    """

    init: Callable
    advance: Callable
    finish: Callable


def pieces(parts: Parts) -> Pieces:
    """The :class:`Pieces` of the side-by-side program for ``parts``."""
    chain, C, S, D = parts.chain, parts.C, parts.chain.n_rows, parts.chain.D

    def step(st, buf, win, args):
        new, row, vals = chain.step(st, win, args)
        return new, buf.at[row].set(vals)

    v_step = jax.vmap(jax.vmap(step, in_axes=(0, 0, None, None)), in_axes=(0, 0, None, 0))
    v_end = jax.vmap(jax.vmap(chain.end_window, in_axes=(0, None, None)), in_axes=(0, None, 0))

    def init(key_data, *args):
        COMPILE_COUNT["n"] += 1  # runs only while tracing, i.e. once per compilation
        state = parts.init_states(jax.random.wrap_key_data(key_data), args)
        return state, jnp.zeros((key_data.shape[0], C, S + 1, D + 5), args[1].dtype)

    def close_window(state, win, args):
        if parts.pool:
            state = parts.pool_chains(state, win.final)
        return v_end(state, win, args)

    def advance(state, buf, win, upto, close, *args):
        upto = jnp.minimum(upto, win.n_iter)
        more = lambda c: jnp.any(c[0].it < upto)  # noqa: E731
        state, buf = lax.while_loop(more, lambda c: v_step(c[0], c[1], win, args), (state, buf))
        if isinstance(close, bool):  # known while tracing: no branch in the program
            return (close_window(state, win, args) if close else state), buf
        return lax.cond(close, lambda s: close_window(s, win, args), lambda s: s, state), buf

    def finish(state, buf):
        return parts.outputs(buf[:, :, :S], state.step_size.log_step)

    return Pieces(init, advance, finish)


def side_by_side(parts: Parts):
    """The program with all B datasets passing window boundaries together, as one pure function (for callers
    that compose it: ``shard_map``, ``vmap``): :func:`pieces` in a ``lax.scan`` over the schedule's windows, with
    progress reports (``config.progress``) from inside the loop."""
    on = bool(parts.config.progress)
    warmup, total = int(parts.config.warmup), int(parts.config.warmup) + int(parts.config.draws)
    every = max(1, total // PROGRESS_REPORTS)
    reports = report_branches(warmup, total, every) if on else []
    starts = np.cumsum(parts.table.n_iter) - parts.table.n_iter  # iterations before each window
    piece = pieces(parts)

    def steps_reporting(carry, win, start, args):
        """Leapfrog steps to the window's end with a progress report each time the slowest chain passes a
        multiple of ``every`` iterations (and at the last iteration). The inner loop stops there, but no chain is
        held back (see :class:`Pieces`), so the numbers are the same with and without progress."""

        def until_next_report(c):
            lim = ((start + jnp.min(c[0].it)) // every + 1) * every - start
            c = piece.advance(*c, win, lim, False, *args)
            done = start + jnp.min(c[0].it)  # a multiple of `every` here, or `total`
            report = (done >= start + lim) | (done >= total)  # not at every window's end
            lax.switch(jnp.where(report, jnp.minimum(-(-done // every), len(reports) - 1), 0), reports)
            return c

        return lax.while_loop(lambda c: jnp.any(c[0].it < win.n_iter), until_next_report, carry)

    def run_batch(keys, x, log_y, fam, mask, hyper):
        args = (x, log_y, fam, mask, hyper)
        carry = piece.init(jax.random.key_data(keys), *args)

        def window(carry, xs):
            win, start = xs
            if on:
                carry = steps_reporting(carry, win, start, args)
            return piece.advance(*carry, win, win.n_iter, True, *args), None

        table = adaptation.Window(*(jnp.asarray(t) for t in parts.table))
        carry, _ = lax.scan(window, carry, (table, jnp.asarray(starts, jnp.int32)))
        return piece.finish(*carry)

    return run_batch


class Slots(NamedTuple):
    """The streaming loop's carry: P slots, each running one dataset's C chains."""

    state: ChainState  # the slots' chains (P, C)
    args: tuple  # the slots' data (P, ...)
    ds: jnp.ndarray  # (P,) dataset in each slot (B: idle)
    wi: jnp.ndarray  # (P,) its window row
    nxt: jnp.ndarray  # next dataset to load
    buf: jnp.ndarray  # (B + 1, C, S + 1, D + 5) output rows per dataset (B: scratch for idle slots)
    leps: jnp.ndarray  # (B + 1, C) final log step size per dataset
    t: jnp.ndarray  # loop counter


def _take(tree, i):
    return jax.tree.map(lambda a: a[i], tree)


def _select(m, a, b):
    """``a`` where the leading-axis mask ``m`` is set, else ``b`` (trees of equal structure)."""
    return jax.tree.map(lambda u, v: jnp.where(m.reshape(m.shape + (1,) * (u.ndim - m.ndim)), u, v), a, b)


def streaming(parts: Parts, slots: int, sync_every: int = 32):
    """The program streaming the datasets through ``slots`` slots (see the module docstring)."""
    chain, C, S, D = parts.chain, parts.C, parts.chain.n_rows, parts.chain.D
    v_step = jax.vmap(jax.vmap(chain.step, in_axes=(0, None, None)), in_axes=(0, 0, 0))
    v_end = jax.vmap(jax.vmap(chain.end_window, in_axes=(0, None, None, None)), in_axes=(0, 0, 0, 0))
    R = len(parts.table.n_iter)  # rows: the empty first window, the warm-up windows, sampling

    def boundary(c: Slots, wdone, init, all_args, n_live, tab) -> Slots:
        """Windows that ended: adapt (pooled over each dataset's chains), step to the next window; slots whose
        dataset finished sampling record it and load the next dataset."""
        B = c.buf.shape[0] - 1
        win = _take(tab, c.wi)
        last = wdone & (c.wi == R - 1)
        mid = wdone & ~last
        state = c.state
        if parts.pool:
            state = _select(mid, parts.pool_chains(state, mid & win.final), state)
        state = _select(mid, v_end(state, win, c.args, ~mid), state)
        wi = jnp.where(mid, c.wi + 1, c.wi)
        leps = c.leps.at[jnp.where(last, c.ds, B)].set(jnp.where(last[:, None], state.step_size.log_step, 0.0))
        cand = c.nxt + jnp.cumsum(last) - 1
        new_ds = jnp.where(last, jnp.where(cand < n_live, cand, B), c.ds)
        load = last & (new_ds < B)
        j = jnp.minimum(new_ds, B - 1)
        if parts.config.progress:
            finished = jnp.minimum(c.nxt, n_live) - jnp.sum(c.ds < B) + jnp.sum(last)
            report = lambda f, n: progress.update(f, n, True, f, n)  # noqa: E731  (two arguments: see report_branches)
            lax.cond(jnp.any(last), lambda: jax.debug.callback(report, finished, n_live), lambda: None)
        return c._replace(
            state=_select(load, _take(init, j), state),
            args=_select(load, _take(all_args, j), c.args),
            ds=new_ds,
            wi=jnp.where(last, 0, wi),
            nxt=c.nxt + jnp.sum(last).astype(jnp.int32),
            leps=leps,
        )

    def body(c: Slots, init, all_args, n_live, tab) -> Slots:
        B = c.buf.shape[0] - 1
        win = _take(tab, c.wi)
        state, row, vals = v_step(c.state, win, c.args)
        buf = c.buf.at[c.ds[:, None], jnp.arange(C)[None, :], row].set(vals)
        live = c.ds < B
        wdone = live & jnp.all(state.it >= win.n_iter[:, None], axis=1)
        # Window ends are handled together every `sync_every` steps (or at once when every live slot waits):
        # each costs a few leapfrog steps for every chain (the step-size search), so not at every step.
        go = jnp.any(wdone) & ((c.t % sync_every == 0) | jnp.all(wdone | ~live))
        c = c._replace(state=state, buf=buf, t=c.t + 1)
        return lax.cond(go, lambda c: boundary(c, wdone, init, all_args, n_live, tab), lambda c: c, c)

    def run_stream(keys, x, log_y, fam, mask, hyper):
        COMPILE_COUNT["n"] += 1
        args = (x, log_y, fam, mask, hyper)
        B = keys.shape[0]
        P = min(int(slots), B)
        # Each dataset's start (Newton descent, metric) is computed on its own (lax.map, width 1, as in a single
        # fit) rather than vmapped over all B: batched linear algebra rounds differently at different widths, and
        # NUTS turns a last-bit difference into different draws, so a dataset's numbers would depend on which
        # other datasets shared its batch (and, with fit_many's worker threads, on the machine's core count).
        init = lax.map(lambda ka: _take(parts.init_states(ka[0][None], _take(ka[1], None)), 0), (keys, args))
        # Datasets with no unmasked run are padding (fit_many rounds B up so that batches of nearby sizes share one
        # compiled program). They come last and are never loaded into a slot: only their start is computed.
        n_live = jnp.sum(jnp.any(mask > 0, axis=-1)).astype(jnp.int32)
        ds0 = jnp.where(jnp.arange(P) < n_live, jnp.arange(P), B)
        carry = Slots(
            state=_take(init, jnp.minimum(ds0, B - 1)),
            args=_take(args, jnp.minimum(ds0, B - 1)),
            ds=ds0,
            wi=jnp.zeros(P, jnp.int32),
            nxt=jnp.asarray(P, jnp.int32),
            buf=jnp.zeros((B + 1, C, S + 1, D + 5), log_y.dtype),
            leps=jnp.zeros((B + 1, C), log_y.dtype),
            t=jnp.asarray(0, jnp.int32),
        )
        tab = adaptation.Window(*(jnp.asarray(t) for t in parts.table))
        out = lax.while_loop(lambda c: jnp.any(c.ds < B), lambda c: body(c, init, args, n_live, tab), carry)
        return parts.outputs(out.buf[:B, :, :S], out.leps[:B])

    return run_stream


def build(spec: Spec, config: SamplerConfig, keep_warmup: bool = False, potential=None, slots: int = 0):
    """Pure ``run(keys (B,), x, log_y, fam, mask, hyper) -> (draws, stats)``: draws per site (B, chains, draws,
    *shape), stats (B, chains, draws) and step_size (B, chains). ``slots=0``: side by side; ``slots=P``: streaming
    through P slots. ``keep_warmup``, ``potential``: see :func:`make_parts`."""
    parts = make_parts(spec, config, keep_warmup, potential)
    run = streaming(parts, slots) if slots else side_by_side(parts)
    run.parts = parts  # for profiling
    return run
