"""The host loop of a single fit: warm-up windows and sampling as calls of three compiled pieces.

``drive(pieces, table, key_data, args, ...)`` runs :class:`~.program.Pieces` (``init``, ``advance``, ``finish``) over
the schedule ``table`` (:func:`.adaptation.window_table`). Each window is advanced to its end in one call, or, when
a progress report falls inside it (every 10% of the iterations, :data:`.program.PROGRESS_REPORTS`), in one call per
report. Nothing in the pieces depends on progress, so the same compiled (or stored, :mod:`.stored`) programs run a
fit with and without a bar, with the same numbers. The pieces work on the flat list of the carry's arrays, which
is what a stored program takes and gives (:func:`flat_pieces`).

Every call is dispatched without waiting; with progress on, the host then sleeps until each report's piece has
finished (ten reports per fit), so the device never waits for the host and waiting costs no CPU.

:class:`Chains` keeps the carry after the schedule, so a fit can go on sampling (:meth:`Chains.extend`: the
sampling window once more, every chain continuing from where it stopped, with the same metric and step size) with
the same compiled pieces.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from .adaptation import Window
from .program import PROGRESS_REPORTS, Pieces

#: Statistics of ``finish`` with one value per chain rather than per draw (not joined over extensions).
PER_CHAIN = ("step_size",)


def checkpoints(n_iter, total: int, every: int) -> list[tuple[int, int, bool, int | None]]:
    """The ``advance`` calls for a schedule with ``n_iter[r]`` iterations in window r: ``(row, upto, close,
    report)``, ``report`` the iterations done to announce after the call (a multiple of ``every``, or ``total``),
    or None."""
    calls, start = [], 0
    for r, n in enumerate(int(k) for k in n_iter):
        end = start + n
        calls += [(r, p - start, False, p) for p in range((start // every + 1) * every, end, every)]
        announce = n > 0 and (end % every == 0 or end == total)
        calls.append((r, n, True, end if announce else None))
        start = end
    return calls


def drive(
    pieces: Pieces,
    table: Window,
    key_data,
    args: tuple,
    warmup: int,
    report: Callable[[int, int, bool], None] | None = None,
):
    """Warm-up and sampling of every chain: ``pieces`` (flat, :func:`flat_pieces`) over the rows of ``table``.
    ``key_data``: (B, 2) uint32; ``args``: ``(x, log_y, fam, mask, hyper)`` with a leading B axis. ``report(done,
    total, sampling)`` is called every 10% of the ``warmup + draws`` iterations per chain. Returns the carry after
    the schedule (``pieces.finish`` of it gives the draws)."""
    return _advance(pieces, table, pieces.init(key_data, *args), args, warmup, report)


def _advance(pieces: Pieces, table: Window, carry, args: tuple, warmup: int, report) -> list:
    """``carry`` advanced through every row of ``table``, reporting as :func:`drive` says."""
    total = int(np.sum(table.n_iter))
    every = max(1, total // PROGRESS_REPORTS)
    rows = [tuple(np.asarray(f[r]) for f in table) for r in range(len(table.n_iter))]
    due = []  # (a small array of the carry after the call, iterations done) for each report
    for r, upto, close, done in checkpoints(table.n_iter, total, every):
        carry = pieces.advance(carry, rows[r], np.int32(upto), np.bool_(close), *args)
        if report is not None and done is not None:
            due.append((min(carry, key=np.size), done))
    for i, (leaf, done) in enumerate(due):  # every piece is queued already: the device never waits for the host
        _wait(leaf, last=i == len(due) - 1)
        report(done, total, done > warmup)
    return carry


class Chains:
    """A single fit's chains after their schedule (:func:`drive`), which can sample on.

    ``result()`` is ``finish``'s (draws, stats) with every block of draws joined along the draw axis (axis 1 after
    ``finish``'s leading dataset axis was dropped; per-chain statistics, :data:`PER_CHAIN`, from the last block);
    ``extend()`` runs the schedule's sampling row (its last) once more: its window was closed at the end of the
    schedule, which leaves the metric and the step size as they were and counts iterations from 0 again, so the
    next block is the chains' continuation, written over the buffer after the previous block was taken out."""

    def __init__(self, pieces: Pieces, table: Window, carry, args: tuple, report=None):
        self.pieces, self.args, self.report = pieces, args, report
        self.sampling = Window(*(np.asarray(f)[-1:] for f in table))
        self.carry = carry
        self.blocks = [pieces.finish(carry)]

    def extend(self) -> None:
        report = None if self.report is None else lambda done, total, _: self.report(done, total, "sampling on")
        self.carry = _advance(self.pieces, self.sampling, self.carry, self.args, 0, report)
        self.blocks.append(self.pieces.finish(self.carry))

    def result(self):
        if len(self.blocks) == 1:
            return self.blocks[0]
        draws = jax.tree.map(lambda *a: jnp.concatenate(a, axis=1), *(b[0] for b in self.blocks))
        stats = {
            k: v if k in PER_CHAIN else jnp.concatenate([b[1][k] for b in self.blocks], axis=1)
            for k, v in self.blocks[-1][1].items()
        }
        return draws, stats


def _wait(leaf, *, last: bool, poll: float = 0.005) -> None:
    """Until ``leaf`` is computed: sleeping between checks every ``poll`` seconds (a blocking wait per report cost
    ~0.7 ms of CPU each, ~3% of a 0.25 s fit with ten reports; a sleeping thread costs none), except for the last
    report, where the host has nothing left to do and a blocking wait returns without a poll's delay."""
    if last:
        jax.block_until_ready(leaf)
    while not leaf.is_ready():
        time.sleep(poll)


def flat_pieces(pieces: Pieces) -> Pieces:
    """``pieces`` over the flat list of the carry's arrays (state leaves, then the buffer) and a window row as a
    plain tuple, so that their inputs and outputs are lists, tuples and dicts of arrays (what a stored program
    can hold). The carry's structure is recorded when ``init`` is traced, for the other two."""
    layout: dict = {}

    def init(key_data, *args):
        leaves, layout["tree"] = jax.tree.flatten(pieces.init(key_data, *args))
        return leaves

    def advance(leaves, row, upto, close, *args):
        state, buf = jax.tree.unflatten(layout["tree"], leaves)
        return jax.tree.leaves(pieces.advance(state, buf, Window(*row), upto, close, *args))

    def finish(leaves):
        return pieces.finish(*jax.tree.unflatten(layout["tree"], leaves))

    return Pieces(init, advance, finish)
