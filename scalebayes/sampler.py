"""The numerical core: NUTS over a :class:`~scalebayes.model.Spec`, as one pure, compiled JAX program.

``sampler(spec, n, config, dtype)`` returns a jitted ``run(key, x, log_y, fam, mask, hyper)`` that does warm-up and
sampling for every chain and returns constrained draws of shape (chains, draws, ...) plus sampler statistics;
``batch_sampler(spec, n, config, dtype, n_devices)`` is the same program over a leading axis of B independent
datasets (used by :func:`scalebayes.fit_many`), optionally sharded over devices. Both are cached on their static
arguments, so a second fit of the same structure and (padded) size does not recompile (``COMPILE_COUNT`` counts
traces; ``tests/test_speed.py`` checks it together with JAX's compilation log). Measurements behind every choice
below are in ``benchmarks/RESULTS.md`` (2-core CPU).

*Potential.* :func:`make_potential` writes the negative log joint of :func:`scalebayes.model.model` directly in JAX
(priors, hierarchy, log-Jacobians of the exp transforms, Student-t/Normal likelihood) on one flat vector of
unconstrained coordinates. It equals NumPyro's potential for the same model to rounding (tested for every pooling,
likelihood and noise option) and its gradient costs about a third less: the law's parameters are computed once per
family instead of once per run, and the Student-t term takes one ``log`` per run. On CPU the float64 ``log``/``exp``
per run are most of a leapfrog step.

*NUTS.* Multinomial NUTS with the generalised U-turn criterion checked on every sub-tree (NumPyro's and Stan's
iterative scheme), in coordinates whitened by the adapted metric (``q = L u``; ``L`` the Cholesky factor of the
warm-up covariance with ``dense_mass=True``, a diagonal scale otherwise), so the integrator's mass matrix is the
identity. Chains are not synchronised per iteration: the loop body is one leapfrog step for every chain, and a chain
whose trajectory ended records its draw and starts the next trajectory in the same step, so vectorised chains cost
about the mean trajectory length rather than the longest of the chains at each iteration. The chain state is packed
into a few arrays and random numbers come from an unrolled counter-based threefry (JAX's CPU lowering of threefry is
a while loop whose overhead exceeded a whole leapfrog step); there is no host round trip inside sampling.

*Warm-up.* Each chain starts near the prior's centre and takes a short damped (saddle-free) Newton descent toward
the mode; the inverse Hessian there seeds the metric (the chain with the lowest end point lends its metric to all
chains of the dataset; a chain that stopped > 20 + D nats above it restarts from the best end point), so the first
trajectories are not hundreds of steps long. Then Stan's windowed adaptation: dual-averaging step size toward
``target_accept``; a fast initial window (75 iterations), slow windows of 25, 50, 100, ... iterations whose draws —
pooled over the chains of a dataset (``cross_chain``) — estimate the covariance, and a terminal fast window (50).
The covariance estimate is shrunk toward 1e-3 x its own diagonal, not toward Stan's/NumPyro's absolute 1e-3·I: the
law's amplitudes are pinned along one direction (their sum at the data centre, variance ~1e-6 on chinchilla_epoch)
that an absolute ridge swamps, which cost ~27 instead of ~7 leapfrog steps per iteration. After each metric update
the step size is re-initialised by Hoffman & Gelman's doubling heuristic. Chains meet only at window boundaries.
When warm-up ends, the chains of a dataset take the geometric mean of their adapted step sizes (with
``cross_chain``): they share the metric and target, so the differences are adaptation noise, and vectorised chains
would otherwise all wait through sampling for the one with the smallest step (the longest trajectories).

*Many datasets* (``batch_sampler(..., slots=P)``, used by :func:`scalebayes.fit_many`). Running B datasets side by
side and passing window boundaries together makes the loop cost, per window, the slowest of all B x chains chains:
on 40-run simulated datasets (~17 leapfrog steps per iteration, but 30-60 for a few chains in some windows) that was
2.5x the mean chain's steps at B = 64 and more for larger B, so the batch was no faster per fit than a loop over
``fit``. Instead the datasets stream through P slots: a dataset moves to its next window as soon as its own chains
finished the current one (window ends are handled for all waiting datasets together every ``sync_every`` steps,
since each costs a few leapfrog steps of every chain), and a slot whose dataset has finished sampling loads the next
one from the queue (its start state was computed up front with everyone else's). A dataset's numbers depend only
on its own random stream, not on the slot or the timing. The loop then costs about B/P times the mean dataset's
steps (the slowest of its own chains per window) plus one dataset's tail.

*Devices.* With one CPU device (JAX's default) chains run as one vectorised batch; that is also the layout for a
GPU. ``chain_method="parallel"`` (chosen automatically by :func:`chain_method_for` when there are several local
devices that divide the chains) shards chains over devices; scalebayes never sets
``XLA_FLAGS=--xla_force_host_platform_device_count`` itself.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.scipy.special import gammaln

from .model import Spec

#: Number of times the sampler has been traced and compiled in this process (read by tests and benchmarks).
COMPILE_COUNT = {"n": 0}

#: An energy error above this (nats) marks a trajectory as divergent (Stan's and NumPyro's threshold).
MAX_DELTA_ENERGY = 1000.0
_LOG_2PI = math.log(2.0 * math.pi)


@dataclass(frozen=True)
class SamplerConfig:
    """Static sampler settings (part of the compile-cache key).

    Attributes:
        chains: independent chains per dataset.
        warmup: adaptation iterations per chain (discarded).
        draws: kept iterations per chain.
        dense_mass: adapt a dense (True) or diagonal metric.
        target_accept: dual-averaging target for the mean acceptance statistic.
        max_tree_depth: at most 2**max_tree_depth - 1 leapfrog steps per iteration.
        chain_method: ``"vectorized"`` (chains as one batch on one device) or ``"parallel"`` (the chain axis
            sharded over the local devices; needs ``chains`` divisible by the device count).
        init_jitter: scale of the per-chain random start around the prior centre (in prior standard deviations).
        progress: accepted for API compatibility; the compiled loop prints nothing.
        cross_chain: estimate the warm-up covariance from the draws of all chains of a dataset together (4x the
            draws per slow window, so a usable metric after the first one), and give the chains of a dataset one
            step size (the geometric mean of theirs) for sampling. Only warm-up uses it; each chain's kernel is
            fixed during sampling.
    """

    chains: int = 4
    warmup: int = 1000
    draws: int = 1000
    dense_mass: bool = True
    target_accept: float = 0.9
    max_tree_depth: int = 10
    chain_method: str = "vectorized"
    init_jitter: float = 0.3
    progress: bool = False
    cross_chain: bool = True


def pad_size(n: int) -> int:
    """Padded number of runs: the next multiple of 32 (≥ n). Adding a run or two then reuses the compiled sampler."""
    return int(-(-n // 32) * 32)


def example_args(spec: Spec, n: int, dtype=jnp.float64):
    """Dummy arguments with the shapes a ``run`` for ``spec`` and ``n`` padded runs takes."""
    K = len(spec.latents)
    x = {k: jnp.zeros(n, dtype) for k in spec.law.inputs}
    hyper = {
        "loc": jnp.zeros(K, dtype),
        "scale": jnp.ones(K, dtype),
        "tau": jnp.ones(K, dtype),
        "sigma": jnp.asarray(0.1, dtype),
        "nu": jnp.asarray([2.0, 0.1], dtype),
        "centre": {k: jnp.asarray(0.0, dtype) for k in spec.law.inputs},
    }
    return x, jnp.zeros(n, dtype), jnp.zeros(n, jnp.int32), jnp.ones(n, dtype), hyper


# --------------------------------------------------------------------------------------------------- the potential
class Site(NamedTuple):
    """One sampled site of :func:`scalebayes.model.model` in the flat unconstrained vector."""

    name: str
    shape: tuple[int, ...]
    offset: int
    positive: bool  # sampled as log(value) (HalfNormal/Gamma sites), else as the value itself

    @property
    def size(self) -> int:
        return int(np.prod(self.shape, dtype=int))


def site_layout(spec: Spec) -> tuple[Site, ...]:
    """The sites of the model for ``spec``, in the order of the flat vector NUTS samples."""
    F = spec.n_families
    named: list[tuple[str, tuple[int, ...], bool]] = []
    for z, mode in zip(spec.latents, spec.modes, strict=True):
        if mode == "shared":
            named.append((z, (), False))
        elif mode == "free":
            named.append((z, (F,), False))
        elif mode == "centred":
            named += [(f"mu_{z}", (), False), (f"tau_{z}", (), True), (z, (F,), False)]
        else:
            named += [(f"mu_{z}", (), False), (f"tau_{z}", (), True), (f"z_{z}", (F,), False)]
    named.append(("sigma", (F,) if spec.noise == "family" else (), True))
    if spec.likelihood == "student_t":
        named.append(("nu", (), True))
    out, off = [], 0
    for name, shape, pos in named:
        s = Site(name, shape, off, pos)
        out.append(s)
        off += s.size
    return tuple(out)


def n_dim(spec: Spec) -> int:
    """Length of the flat unconstrained vector for ``spec``."""
    return sum(s.size for s in site_layout(spec))


def unflatten(spec: Spec, q: jnp.ndarray, constrain: bool = False) -> dict[str, jnp.ndarray]:
    """Flat unconstrained vectors (..., D) → ``{site: (..., *shape)}``; ``constrain`` applies exp to positive sites."""
    out = {}
    for s in site_layout(spec):
        v = q[..., s.offset : s.offset + s.size].reshape(*q.shape[:-1], *s.shape)
        out[s.name] = jnp.exp(v) if (constrain and s.positive) else v
    return out


def _normal_lpdf(x, loc, scale):
    r = (x - loc) / scale
    return -0.5 * r * r - jnp.log(scale) - 0.5 * _LOG_2PI


def _halfnormal_lpdf(x, scale):
    return _normal_lpdf(x, 0.0, scale) + math.log(2.0)


def make_potential(spec: Spec):
    """``U(q, x, log_y, fam, mask, hyper)``: the negative log joint density of :func:`scalebayes.model.model` at flat
    unconstrained coordinates ``q`` (D,) (positive sites as logs, with their log-Jacobian), data as in ``model``.

    Equal to NumPyro's ``potential_energy`` of ``model`` (checked in the tests) and about 3x cheaper to
    differentiate on CPU.
    """
    layout = site_layout(spec)
    law = spec.law
    F = spec.n_families
    all_shared = all(m == "shared" for m in spec.modes)

    def potential(q, x, log_y, fam, mask, hyper):
        u = {s.name: q[s.offset : s.offset + s.size].reshape(s.shape) for s in layout}
        lp = 0.0
        site = {}
        for k, (z, mode) in enumerate(zip(spec.latents, spec.modes, strict=True)):
            loc, scale = hyper["loc"][k], hyper["scale"][k]
            if mode in ("shared", "free"):
                site[z] = u[z]
                lp = lp + jnp.sum(_normal_lpdf(u[z], loc, scale))
            else:
                lt = u[f"tau_{z}"]
                tau = jnp.exp(lt)
                site[f"mu_{z}"], site[f"tau_{z}"] = u[f"mu_{z}"], tau
                lp = lp + _normal_lpdf(u[f"mu_{z}"], loc, scale) + _halfnormal_lpdf(tau, hyper["tau"][k]) + lt
                if mode == "centred":
                    site[z] = u[z]
                    lp = lp + jnp.sum(_normal_lpdf(u[z], u[f"mu_{z}"], tau))
                else:
                    site[f"z_{z}"] = u[f"z_{z}"]
                    lp = lp + jnp.sum(_normal_lpdf(u[f"z_{z}"], 0.0, 1.0))
        ls = u["sigma"]
        sigma = jnp.exp(ls)
        lp = lp + jnp.sum(_halfnormal_lpdf(sigma, hyper["sigma"]) + ls)
        if all_shared:  # parameters are scalars: nothing per run but the law itself
            params = law.to_params({z: site[z] for z in spec.latents}, hyper["centre"])
        else:  # parameters per family (F,), then gathered to runs
            from .model import family_latents

            lat = family_latents(spec, site, F)
            params = {k: v[fam] for k, v in law.to_params(lat, hyper["centre"]).items()}
        mu = law.log_mean(params, x)
        d = log_y - mu
        if spec.noise == "family":
            log_s = ls[fam]
            s2 = jnp.exp(2.0 * ls)[fam]
        else:
            log_s = ls
            s2 = sigma * sigma
        if spec.likelihood == "student_t":
            ln = u["nu"]
            nu = jnp.exp(ln)
            a, b = hyper["nu"][0], hyper["nu"][1]
            lp = lp + a * jnp.log(b) - gammaln(a) + (a - 1.0) * ln - b * nu + ln
            c = nu * s2
            # log1p(d²/(νσ²)) = log(νσ² + d²) - log(νσ²): one log per run.
            const = gammaln(0.5 * (nu + 1.0)) - gammaln(0.5 * nu) - 0.5 * (ln + math.log(math.pi))
            ll = -0.5 * (nu + 1.0) * (jnp.log(c + d * d) - jnp.log(c)) + const - log_s
        else:
            ll = -0.5 * d * d / s2 - log_s - 0.5 * _LOG_2PI
        return -(lp + jnp.sum(mask * ll))

    return potential


def init_position(spec: Spec, hyper: dict, normals: jnp.ndarray, jitter: float, dtype) -> jnp.ndarray:
    """Flat unconstrained start (D,) near the prior's centre, jittered by ``jitter`` prior s.d. per coordinate
    (``normals``: D standard normal draws)."""
    parts = []
    idx = {z: i for i, z in enumerate(spec.latents)}
    for s in site_layout(spec):
        eps = jitter * normals[s.offset : s.offset + s.size].reshape(s.shape).astype(dtype)
        n = s.name
        if n in idx or n.startswith("mu_"):
            i = idx[n if n in idx else n[3:]]
            v = hyper["loc"][i] + hyper["scale"][i] * eps
        elif n.startswith("tau_"):
            v = jnp.log(0.3 * hyper["tau"][idx[n[4:]]]) + eps
        elif n == "sigma":
            v = jnp.log(0.3 * hyper["sigma"]) + eps
        elif n == "nu":
            v = math.log(10.0) + eps
        else:  # z_ (non-centred offsets)
            v = eps
        parts.append(jnp.reshape(v, (-1,)).astype(dtype))
    return jnp.concatenate(parts)


# --------------------------------------------------------------------------------------------------- adaptation
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


def _window_table(warmup: int, draws: int, keep_warmup: bool = False) -> tuple[np.ndarray, ...]:
    """Per-window rows (iterations, adapt step size, accumulate covariance, new metric at end, record draws,
    final warm-up window, re-initialise step size at end, first output row). Row 0 is an empty window whose end
    finds the first step size; the last row is sampling. ``keep_warmup`` records warm-up iterations too (rows
    0..warmup-1 of the output, draws after them)."""
    rows = [(0, False, False, False, keep_warmup, False, True, 0)]
    start = 0
    for n, slow in adaptation_windows(warmup):
        rows.append((n, True, slow, slow, keep_warmup, False, slow, start))
        start += n
    if len(rows) > 1:
        rows[-1] = (*rows[-1][:5], True, *rows[-1][6:])
    rows.append((draws, False, False, False, True, False, False, start if keep_warmup else 0))
    return tuple(np.asarray([r[i] for r in rows], dtype=np.int32 if i in (0, 7) else bool) for i in range(8))


# Packed per-chain state (few large arrays keep the compiled loop body small and cheap on CPU):
# X (13, D): trajectory vectors in whitened coordinates u (q = L u), momenta p and gradients g of U w.r.t. u: the
# left and right ends (u, p, g), the proposal (u, g), the momentum sums of the tree and sub-tree, the sub-tree's
# proposal (u, g) and the Welford mean (in q). Grouped rows are contiguous so that they are read as static slices.
_UL, _PL, _GL, _UR, _PR, _GR, _UP, _GP, _RHO, _RHOS, _US, _GS, _WMEAN = range(13)
# s (14,): floats. PEP/EP potential and total energy of the proposal; LOGW/LOGWS log weight of the tree/sub-tree;
# PES/ES those of the sub-tree's proposal; H0 energy at the start; SACC summed acceptance; LEPS log step size;
# MU, HBAR, XBAR, T dual averaging; WN Welford count.
_PEP, _EP, _LOGW, _LOGWS, _PES, _ES, _H0, _SACC, _LEPS, _MU, _HBAR, _XBAR, _T, _WN = range(14)
# iv (6,): ints. DEPTH doublings; RIGHT direction of the sub-tree; NSUB leaves in the sub-tree; NLEAF leaves in the
# trajectory; IT iterations done in the window; CTR random-number counter.
_DEPTH, _RIGHT, _NSUB, _NLEAF, _IT, _CTR = range(6)


class _State(NamedTuple):
    X: jnp.ndarray  # (13, D)
    CK: jnp.ndarray  # (2, max_depth, D) momentum checkpoints and running momentum sums for sub-tree U-turn checks
    s: jnp.ndarray  # (14,)
    iv: jnp.ndarray  # (6,) int32
    L: jnp.ndarray  # (D, D) Cholesky factor of the metric's covariance (dense) or (D,) scales (diagonal)
    M2: jnp.ndarray  # Welford co-moment, (D, D) or (D,)
    kw: jnp.ndarray  # (2,) uint32 key words of this chain


def _uturn(p_a, p_b, rho):
    """Generalised no-U-turn criterion (Betancourt 2017, NumPyro's form) for a (sub)trajectory with end momenta
    ``p_a``, ``p_b`` and momentum sum ``rho`` (identity metric); broadcasts over leading axes."""
    r = rho - 0.5 * (p_a + p_b)
    return (jnp.sum(p_a * r, -1) <= 0) | (jnp.sum(p_b * r, -1) <= 0)


def _pool_welford(st: _State, dense: bool) -> _State:
    """Combine the Welford statistics of the chains of each dataset (axis 1 of a (B, C, ...) state) and give every
    chain the pooled count, mean and co-moment (Chan et al.'s parallel update)."""
    n = st.s[..., _WN]  # (B, C)
    mean_c = st.X[..., _WMEAN, :]  # (B, C, D)
    n_tot = jnp.sum(n, axis=1, keepdims=True)
    mean = jnp.sum(n[..., None] * mean_c, axis=1, keepdims=True) / jnp.maximum(n_tot, 1.0)[..., None]
    dm = mean_c - mean
    if dense:
        m2 = jnp.sum(st.M2 + n[..., None, None] * dm[..., :, None] * dm[..., None, :], axis=1, keepdims=True)
    else:
        m2 = jnp.sum(st.M2 + n[..., None] * dm * dm, axis=1, keepdims=True)
    C = n.shape[1]
    return st._replace(
        X=st.X.at[..., _WMEAN, :].set(jnp.broadcast_to(mean, mean_c.shape)),
        s=st.s.at[..., _WN].set(jnp.broadcast_to(n_tot, n.shape)),
        M2=jnp.broadcast_to(m2, (m2.shape[0], C, *m2.shape[2:])),
    )


def _pool_step_size(st: _State) -> _State:
    """Give every chain of a dataset (axis 1 of a (B, C, ...) state) the geometric mean of their dual-averaged step
    sizes (``XBAR`` is a log step size). Used at the end of warm-up: the chains share one metric and target, so
    their step sizes differ only by adaptation noise (s.d. ~0.14 in log on 40-run datasets), and a chain with a
    smaller step takes proportionally longer trajectories; the vectorised loop then waits for it through all of
    sampling (9% of all leapfrog steps idle on those datasets before pooling)."""
    xbar = st.s[..., _XBAR]
    return st._replace(s=st.s.at[..., _XBAR].set(jnp.broadcast_to(jnp.mean(xbar, axis=1, keepdims=True), xbar.shape)))


def _threefry2x32(k0, k1, x0, x1):
    """Threefry-2x32 (20 rounds; Salmon et al. 2011), the hash behind ``jax.random``, written out unrolled: JAX's
    CPU lowering rolls it into a while loop, whose per-iteration overhead cost more than a whole leapfrog step here.
    Bit-identical to ``jax.extend.random.threefry_2x32`` (checked in the tests)."""
    rot = ((13, 15, 26, 6), (17, 29, 16, 24))
    ks = (k0, k1, k0 ^ k1 ^ jnp.uint32(0x1BD11BDA))
    x0, x1 = x0 + ks[0], x1 + ks[1]
    for i in range(5):
        for r in rot[i % 2]:
            x0 = x0 + x1
            x1 = (x1 << jnp.uint32(r)) | (x1 >> jnp.uint32(32 - r))
            x1 = x0 ^ x1
        x0 = x0 + ks[(i + 1) % 3]
        x1 = x1 + ks[(i + 2) % 3] + jnp.uint32(i + 1)
    return x0, x1


#: Random streams (second threefry word): leapfrog steps and step-size searches, start jitter, Laplace draw.
_STREAM_STEP, _STREAM_JITTER, _STREAM_LAPLACE = 0, 1, 2


def _uniforms(kw, ctr, n: int, dt, stream: int = _STREAM_STEP):
    """``n`` (even) uniforms in (0, 1) from one threefry hash of (key words; counter, stream): a counter-based
    generator, so the loop never splits keys."""
    h = n // 2
    idx = jnp.asarray(ctr).astype(jnp.uint32) * jnp.uint32(h) + jnp.arange(h, dtype=jnp.uint32)
    a, b = _threefry2x32(kw[0], kw[1], idx, jnp.full(h, stream, jnp.uint32))
    bits = jnp.concatenate([a, b])
    return (bits.astype(dt) + 0.5) * (2.0**-32)


# Taylor coefficients of sin x and cos x to degree 17 and 16: on |x| <= pi/4 the first omitted terms are < 3e-17.
_SIN_C = tuple((-1.0) ** k / math.factorial(2 * k + 1) for k in range(9))
_COS_C = tuple((-1.0) ** k / math.factorial(2 * k) for k in range(9))


def _sincos_2pi(u):
    """(sin 2πu, cos 2πu) for u in [0, 1], accurate to ~1e-16 in float64: quadrant reduction and two polynomials.
    XLA:CPU evaluates float64 ``sin``/``cos`` one element at a time (~18 ns each); these fuse and vectorise, and
    the sampler draws a momentum at every leapfrog step of every chain (a vectorised chain's select needs it)."""
    k = jnp.round(4.0 * u)
    x = (2.0 * math.pi) * (u - 0.25 * k)  # in [-pi/4, pi/4]
    x2 = x * x
    sn, cs = _SIN_C[-1], _COS_C[-1]
    for a, b in zip(_SIN_C[-2::-1], _COS_C[-2::-1], strict=True):
        sn, cs = sn * x2 + a, cs * x2 + b
    sn = sn * x
    q = k.astype(jnp.int32) % 4
    sin = jnp.where(q == 0, sn, jnp.where(q == 1, cs, jnp.where(q == 2, -sn, -cs)))
    cos = jnp.where(q == 0, cs, jnp.where(q == 1, -sn, jnp.where(q == 2, -cs, sn)))
    return sin, cos


def _normals(uni, D: int):
    """``D`` standard normals from ``2·ceil(D/2)`` uniforms (Box-Muller)."""
    h = (D + 1) // 2
    r = jnp.sqrt(-2.0 * jnp.log(uni[:h]))
    sin, cos = _sincos_2pi(uni[h : 2 * h])
    return jnp.concatenate([r * cos, r * sin])[:D]


# --------------------------------------------------------------------------------------------------- the program
def _build(
    spec: Spec,
    config: SamplerConfig,
    dtype,
    keep_warmup: bool = False,
    potential=None,
    slots: int = 0,
    sync_every: int = 32,
):
    """Pure ``run_batch(keys (B,), x, log_y, fam, mask, hyper) -> (draws, stats)`` with every data array carrying a
    leading dataset axis B; draws per site (B, chains, draws, *shape), stats (B, chains, draws) and step_size
    (B, chains). ``keep_warmup`` also returns the warm-up iterations (first ``warmup`` rows); ``potential``
    replaces the model's (same signature and dimension; the tests use it to sample known distributions)."""
    dense = bool(config.dense_mass)
    max_depth = int(config.max_tree_depth)
    C = int(config.chains)
    S = int(config.draws) + (int(config.warmup) if keep_warmup else 0)  # output rows per chain
    target = float(config.target_accept)
    D = n_dim(spec)
    NU = 2 * ((D + 1) // 2) + 4  # uniforms per step: leaf, merge, direction, momentum (+1 to make it even)
    potential = make_potential(spec) if potential is None else potential
    table = _window_table(int(config.warmup), int(config.draws), keep_warmup)
    pool = bool(config.cross_chain) and C > 1

    # Small matrix-vector products as multiply-and-sum: XLA:CPU sends batched `dot`s of tiny matrices to a library
    # call per step that cost more than the whole gradient of a 40-run dataset; elementwise code fuses.
    def to_q(L, u):
        return jnp.sum(L * u[None, :], axis=-1) if dense else L * u

    def from_q(L, q):
        return jax.scipy.linalg.solve_triangular(L, q, lower=True) if dense else q / L

    def grad_to_u(L, gq):
        return jnp.sum(L * gq[:, None], axis=0) if dense else L * gq

    def grad_to_q(L, gu):
        return jax.scipy.linalg.solve_triangular(L.T, gu, lower=False) if dense else gu / L

    def vg(u, L, args):
        """Potential and its gradient in whitened coordinates."""
        pe, gq = jax.value_and_grad(potential)(to_q(L, u), *args)
        return pe, grad_to_u(L, gq)

    def leapfrog(u, p, g, h, L, args):
        ph = p - 0.5 * h * g
        u1 = u + h * ph
        pe1, g1 = vg(u1, L, args)
        return u1, ph - 0.5 * h * g1, pe1, g1

    def restart(st: _State, uni) -> _State:
        """A fresh trajectory from the current proposal (rows UP, GP; PEP) with momentum from ``uni``."""
        X, s, iv = st.X, st.s, st.iv
        p = _normals(uni[3:], D).astype(X.dtype)
        u, g = X[_UP], X[_GP]
        h0 = s[_PEP] + 0.5 * jnp.dot(p, p)
        end = jnp.stack([u, p, g])
        X = X.at[_UL : _UL + 3].set(end).at[_UR : _UR + 3].set(end).at[_US : _US + 2].set(jnp.stack([u, g]))
        X = X.at[_RHO].set(p).at[_RHOS].set(0.0)
        s = s.at[_EP].set(h0).at[_ES].set(h0).at[_H0].set(h0).at[_PES].set(s[_PEP])
        s = s.at[_LOGW].set(0.0).at[_SACC].set(0.0).at[_LOGWS].set(-jnp.inf)
        iv = iv.at[_DEPTH].set(0).at[_NSUB].set(0).at[_NLEAF].set(0).at[_RIGHT].set((uni[2] < 0.5).astype(jnp.int32))
        return st._replace(X=X, s=s, iv=iv)

    def find_mode(q, args):
        """A short saddle-free Newton descent on U from ``q`` (Levenberg-Marquardt damped, at most 20 iterations):
        (end point, Hessian there). It need not reach the mode (a Student-t likelihood has long non-convex ridges);
        its job is to reach the bulk and find the scales of the posterior, in particular the tight direction along
        which the law's amplitudes are pinned, so that the first trajectories are not thousands of steps long."""
        eye = jnp.eye(D, dtype=q.dtype)

        def vgh(q):
            # Value, gradient and a central-difference Hessian from one vmapped gradient at 2D+1 points: a
            # forward-over-reverse Hessian would compile second derivatives of everything (trigamma series for
            # the Student-t constant), several seconds of XLA time for a matrix that only seeds the metric.
            h = 1e-4 * (1.0 + jnp.abs(q))
            pts = jnp.concatenate([q[None], q + eye * h, q - eye * h])
            val, grad = jax.vmap(lambda z: jax.value_and_grad(potential)(z, *args))(pts)
            hess = (grad[1 : D + 1] - grad[D + 1 :]) / (2.0 * h[:, None])
            return val[0], grad[0], 0.5 * (hess + hess.T)

        def cond(c):
            return (c[0] < 20) & ~c[-1]

        def body(c):
            i, q, f, g, H, lam, _ = c
            w, V = jnp.linalg.eigh(H)
            aw = jnp.abs(w)
            step = -V @ ((V.T @ g) / (aw + lam * jnp.max(aw) + 1e-12))
            ok_step = jnp.all(jnp.isfinite(step))
            q1 = q + jnp.where(ok_step, step, 0.0)
            f1, g1, H1 = vgh(q1)
            better = ok_step & jnp.isfinite(f1) & (f1 < f) & jnp.all(jnp.isfinite(g1)) & jnp.all(jnp.isfinite(H1))
            conv = (better & (jnp.abs(f1 - f) < 1e-10 * (1.0 + jnp.abs(f)))) | (lam > 1e6)
            q, f, g, H = (jnp.where(better, a, b) for a, b in ((q1, q), (f1, f), (g1, g), (H1, H)))
            lam = jnp.where(better, jnp.maximum(lam / 10.0, 1e-12), lam * 10.0)
            return i + 1, q, f, g, H, lam, conv

        f0, g0, H0 = vgh(q)
        c = (0, q, f0, g0, H0, jnp.asarray(1e-3, q.dtype), jnp.asarray(False))
        _, q, f, _, H, _, _ = lax.while_loop(cond, body, c)
        return q, H, jnp.isfinite(f) & jnp.all(jnp.isfinite(H)), f

    def newton_chain(kw, args):
        """Start near the prior's centre and descend toward the posterior mode (:func:`find_mode`); the inverse of
        the Hessian there (eigenvalues made positive, scales at most 1) is the first metric. Returns (end point,
        metric factor, U at the end point; inf when the descent or its Hessian failed: jittered start, identity)."""
        dt = args[1].dtype
        z0 = _normals(_uniforms(kw, 0, NU, dt, _STREAM_JITTER)[4:], D)
        q0 = init_position(spec, args[-1], z0, config.init_jitter, dt)
        mode, H, ok, f_mode = find_mode(q0, args)
        w, V = jnp.linalg.eigh(jnp.where(ok, H, jnp.eye(D, dtype=dt)))
        w = jnp.maximum(jnp.abs(w), 1.0)
        if dense:
            L = jnp.linalg.cholesky((V / w) @ V.T)
        else:
            L = 1.0 / jnp.sqrt(jnp.maximum(jnp.diagonal(H), 1.0))
        ok = ok & jnp.all(jnp.isfinite(L)) & jnp.all(jnp.isfinite(mode))
        L = jnp.where(ok, L, jnp.eye(D, dtype=dt) if dense else jnp.ones(D, dt))
        return jnp.where(ok, mode, q0), L, jnp.where(ok, f_mode, jnp.inf)

    def start_chain(kw, mode, L, args):
        """The chain's state at a draw from N(mode, L Lᵀ) (the mode itself if the law cannot be evaluated there)."""
        dt = args[1].dtype
        q = mode + to_q(L, _normals(_uniforms(kw, 0, NU, dt, _STREAM_LAPLACE)[4:], D))
        q = jnp.where(jnp.isfinite(potential(q, *args)), q, mode)
        u = from_q(L, q)
        pe, g = vg(u, L, args)
        X = jnp.zeros((13, D), dt).at[_UP].set(u).at[_GP].set(g)
        s = jnp.zeros(14, dt).at[_PEP].set(pe).at[_LEPS].set(math.log(0.5))
        return _State(
            X=X,
            CK=jnp.zeros((2, max_depth, D), dt),
            s=s,
            iv=jnp.zeros(6, jnp.int32),
            L=L,
            M2=jnp.zeros((D, D) if dense else D, dt),
            kw=kw,
        )

    def set_metric(st: _State, L) -> _State:
        """Change the metric to ``L``, keeping the chain's position (u, g re-expressed in the new coordinates)."""
        X = st.X
        u = from_q(L, to_q(st.L, X[_UP]))
        g = grad_to_u(L, grad_to_q(st.L, X[_GP]))
        return st._replace(X=X.at[_UP].set(u).at[_GP].set(g), L=L)

    def step_core(st: _State, win, args):
        """One leapfrog step of one chain; finishes the iteration (draw, adaptation, new trajectory) if it ended.
        Returns the new state, the output row this step writes (``S``: the scratch row) and its values."""
        n_iter, adapt, accumulate, _, record, _, _, row0 = win
        X, CK, s, iv, L = st.X, st.CK, st.s, st.iv, st.L
        dt = X.dtype
        active = iv[_IT] < n_iter
        uni = _uniforms(st.kw, iv[_CTR], NU, dt)
        eps = jnp.exp(s[_LEPS])
        right = iv[_RIGHT] == 1
        ends = jnp.where(right, X[_UR : _UR + 3], X[_UL : _UL + 3])
        u1, p1, pe1, g1 = leapfrog(ends[0], ends[1], ends[2], jnp.where(right, eps, -eps), L, args)
        e1 = pe1 + 0.5 * jnp.dot(p1, p1)
        dlt = e1 - s[_H0]
        dlt = jnp.where(jnp.isnan(dlt), jnp.inf, dlt)
        diverging = dlt > MAX_DELTA_ENERGY
        logw_leaf = -dlt
        new_end = jnp.stack([u1, p1, g1])
        X = jnp.where(right, X.at[_UR : _UR + 3].set(new_end), X.at[_UL : _UL + 3].set(new_end))
        # multinomial sampling inside the sub-tree
        logw_sub = jnp.logaddexp(s[_LOGWS], logw_leaf)
        take = jnp.log(uni[0]) < logw_leaf - logw_sub
        X = X.at[_US : _US + 2].set(jnp.where(take, jnp.stack([u1, g1]), X[_US : _US + 2]))
        s = s.at[_PES : _PES + 2].set(jnp.where(take, jnp.stack([pe1, e1]), s[_PES : _PES + 2]))
        rho_sub = X[_RHOS] + p1
        # U-turn checks of every completed sub-sub-tree ending at leaf n (checkpoints idx_min..idx_max)
        n = iv[_NSUB]
        idx_max = lax.population_count(n >> 1)
        idx_min = idx_max - (lax.population_count(n ^ (n + 1)) - 1) + 1
        even = (n & 1) == 0
        CK = jnp.where(even, CK.at[:, idx_max].set(jnp.stack([p1, rho_sub])), CK)
        i = jnp.arange(max_depth)
        turn_i = _uturn(CK[0], p1[None, :], rho_sub[None, :] - CK[1] + CK[0])
        turning_sub = ~even & jnp.any(turn_i & (i >= idx_min) & (i <= idx_max))
        n_sub = n + 1
        stop = turning_sub | diverging
        merge = (n_sub >= (1 << iv[_DEPTH])) & ~stop
        # merge a finished sub-tree into the trajectory (biased progressive sampling)
        take_sub = merge & (jnp.log(uni[1]) < logw_sub - s[_LOGW])
        X = X.at[_UP : _UP + 2].set(jnp.where(take_sub, X[_US : _US + 2], X[_UP : _UP + 2]))
        s = s.at[_PEP : _PEP + 2].set(jnp.where(take_sub, s[_PES : _PES + 2], s[_PEP : _PEP + 2]))
        rho = jnp.where(merge, X[_RHO] + rho_sub, X[_RHO])
        depth = iv[_DEPTH] + merge.astype(jnp.int32)
        done = stop | (merge & (_uturn(X[_PL], X[_PR], rho) | (depth >= max_depth)))
        X = X.at[_RHO].set(rho).at[_RHOS].set(jnp.where(merge, 0.0, rho_sub))
        n_leaves = iv[_NLEAF] + 1
        sacc = s[_SACC] + jnp.exp(jnp.minimum(0.0, -dlt))
        s = s.at[_LOGW].set(jnp.where(merge, jnp.logaddexp(s[_LOGW], logw_sub), s[_LOGW]))
        s = s.at[_LOGWS].set(jnp.where(merge, -jnp.inf, logw_sub)).at[_SACC].set(sacc)
        iv = iv.at[_DEPTH].set(depth).at[_NSUB].set(jnp.where(merge, 0, n_sub)).at[_NLEAF].set(n_leaves)
        iv = iv.at[_RIGHT].set(jnp.where(merge, (uni[2] < 0.5).astype(jnp.int32), iv[_RIGHT]))
        cont = st._replace(X=X, CK=CK, s=s, iv=iv)
        # --- the trajectory ended: adapt, record, start the next one from the proposal
        accept = sacc / n_leaves
        t = s[_T] + 1.0
        eta = 1.0 / (t + 10.0)
        hbar = (1.0 - eta) * s[_HBAR] + eta * (target - accept)
        log_eps = s[_MU] - jnp.sqrt(t) / 0.05 * hbar
        w = t ** (-0.75)
        xbar = w * log_eps + (1.0 - w) * s[_XBAR]
        fs = jnp.where(adapt, s.at[_T].set(t).at[_HBAR].set(hbar).at[_LEPS].set(log_eps).at[_XBAR].set(xbar), s)
        q = to_q(L, X[_UP])
        wn1 = s[_WN] + 1.0
        dq = q - X[_WMEAN]
        mean1 = X[_WMEAN] + dq / wn1
        m2 = st.M2 + (jnp.outer(dq, q - mean1) if dense else dq * (q - mean1))
        fX = jnp.where(accumulate, X.at[_WMEAN].set(mean1), X)
        fs = jnp.where(accumulate, fs.at[_WN].set(wn1), fs)
        fin = restart(st._replace(X=fX, CK=CK, s=fs, iv=iv.at[_IT].add(1), M2=jnp.where(accumulate, m2, st.M2)), uni)
        fin_now = done & active
        new = jax.tree.map(lambda a, b, c: jnp.where(fin_now, a, jnp.where(active, b, c)), fin, cont, st)
        new = new._replace(iv=new.iv.at[_CTR].add(active.astype(jnp.int32)))
        # One packed row per iteration (q, diverging, leapfrog steps, acceptance, energy, potential), written at every
        # step of the iteration (the last write, when it ends, stays); rows of warm-up or idle chains go to the
        # scratch row S. A single row scatter, never a select over the buffer.
        row = jnp.where(record & active, jnp.minimum(row0 + st.iv[_IT], S - 1), S)
        vals = jnp.concatenate([q, jnp.stack([diverging.astype(dt), n_leaves.astype(dt), accept, s[_EP], s[_PEP]])])
        return new, row, vals

    def step(st: _State, buf, win, args):
        """:func:`step_core` writing its row into this chain's output buffer (S + 1, D + 5)."""
        new, row, vals = step_core(st, win, args)
        return new, buf.at[row].set(vals)

    def find_step_size(st: _State, args, skip=False) -> _State:
        """Hoffman & Gelman (2014, alg. 4): double or halve ε from the current one until the acceptance of one
        leapfrog step from the current state crosses 0.8; resets dual averaging around the result. ``skip`` (the
        streaming batch program's chains that are not at a window boundary) runs no step; the caller discards
        the result."""
        X, s, L = st.X, st.s, st.L
        dt = X.dtype
        u, g, pe = X[_UP], X[_GP], s[_PEP]
        log_target = math.log(0.8)

        def body(c):
            i, le, direction, _, ctr = c
            le_try = jnp.where(i == 0, le, le + direction * math.log(2.0))
            p = _normals(_uniforms(st.kw, ctr, NU, dt)[3:], D).astype(dt)
            _, p1, pe1, _ = leapfrog(u, p, g, jnp.exp(le_try), L, args)
            d = (pe1 + 0.5 * jnp.dot(p1, p1)) - (pe + 0.5 * jnp.dot(p, p))
            ok = -jnp.where(jnp.isnan(d), jnp.inf, d) > log_target
            direction = jnp.where(i == 0, jnp.where(ok, 1.0, -1.0).astype(dt), direction)
            crossed = (i > 0) & jnp.where(direction > 0, ~ok, ok)
            return i + 1, le_try, direction, crossed, ctr + 1

        def cond(c):
            return (c[0] < 40) & ~c[3]

        c0 = (0, s[_LEPS], jnp.ones((), dt), jnp.asarray(skip), st.iv[_CTR])
        _, le, _, _, ctr = lax.while_loop(cond, body, c0)
        s = s.at[_LEPS].set(le).at[_MU].set(le + math.log(10.0)).at[_HBAR].set(0.0).at[_XBAR].set(0.0).at[_T].set(0.0)
        return st._replace(s=s, iv=st.iv.at[_CTR].set(ctr))

    def end_window(st: _State, win, args, skip=False) -> _State:
        """At a window boundary: new metric (after slow windows), fresh step size; final step size after warm-up.
        (``skip``: see :func:`find_step_size`.)"""
        _, _, _, update, _, final, reset, _ = win
        dt = st.X.dtype

        def new_metric(st):
            n = st.s[_WN]
            cov = st.M2 / jnp.maximum(n - 1.0, 1.0)
            shrink = 5.0 / (n + 5.0)
            # Shrink toward 1e-3 x the diagonal (scale-relative), not Stan's absolute 1e-3·I: the law's amplitudes
            # are pinned along one direction (their sum at the data centre) with variance ~1e-6, which an absolute
            # 1e-5 ridge swamps, forcing a 5x smaller step (27 instead of ~7 leapfrog steps per iteration).
            var = jnp.diagonal(cov) if dense else cov
            ridge = 1e-3 * shrink * var + 1e-12
            if dense:
                L = jnp.linalg.cholesky((1.0 - shrink) * cov + jnp.diag(ridge))
            else:
                L = jnp.sqrt((1.0 - shrink) * cov + ridge)
            ok = jnp.all(jnp.isfinite(L))
            st = set_metric(st, jnp.where(ok, L, st.L))
            return st._replace(X=st.X.at[_WMEAN].set(0.0), M2=jnp.zeros_like(st.M2), s=st.s.at[_WN].set(0.0))

        st = lax.cond(update, new_metric, lambda st: st, st)
        st = lax.cond(reset, lambda st: find_step_size(st, args, skip), lambda st: st, st)
        st = st._replace(s=st.s.at[_LEPS].set(jnp.where(final, st.s[_XBAR], st.s[_LEPS]).astype(dt)))
        st = st._replace(iv=st.iv.at[_IT].set(0).at[_CTR].add(1))
        st = restart(st, _uniforms(st.kw, st.iv[_CTR], NU, dt))
        return st._replace(iv=st.iv.at[_CTR].add(1))  # the restart's uniforms are used up

    # batched over (dataset B, chain C): args carry B only
    v_step = jax.vmap(jax.vmap(step, in_axes=(0, 0, None, None)), in_axes=(0, 0, None, 0))
    v_end = jax.vmap(jax.vmap(end_window, in_axes=(0, None, None)), in_axes=(0, None, 0))
    v_newton = jax.vmap(jax.vmap(newton_chain, in_axes=(0, None)), in_axes=(0, 0))
    v_start = jax.vmap(jax.vmap(start_chain, in_axes=(0, 0, 0, None)), in_axes=(0, 0, 0, 0))

    def init_states(keys, args):
        """Every chain's starting state (B, C): Newton descent, metric and start point shared as described below."""
        B = keys.shape[0]
        words = jax.vmap(lambda k: jax.random.bits(k, (C, 2), jnp.uint32))(keys)  # per-chain generator keys
        mode, L, f_mode = v_newton(words, args)
        if pool:
            # Every chain gets the metric of the chain whose descent got furthest (lowest U). A chain that stopped
            # in a region far less probable than that (U more than 20 + D nats higher: negligible posterior mass,
            # not a competing mode) starts from the best end point instead, as Pathfinder's resampling would.
            best = jnp.argmin(f_mode, axis=1)[:, None]
            pick = lambda a: jnp.take_along_axis(a, best.reshape(B, 1, *([1] * (a.ndim - 2))), axis=1)  # noqa: E731
            f_best = pick(f_mode)
            far = ~(f_mode <= f_best + 20.0 + D)
            mode = jnp.where(far[..., None], pick(mode), mode)
            L = jnp.broadcast_to(pick(L), L.shape)
        return v_start(words, mode, L, args)

    def outputs(buf, log_eps):
        """(draws, stats) from the packed output rows (B, C, S, D + 5) and the final log step sizes (B, C)."""
        draws = unflatten(spec, buf[..., :D], constrain=True)
        stats = {
            "diverging": buf[..., D] > 0.5,
            "num_steps": buf[..., D + 1].astype(jnp.int32),
            "accept_prob": buf[..., D + 2],
            "energy": buf[..., D + 3],
            "potential_energy": buf[..., D + 4],
            "step_size": jnp.exp(log_eps),
        }
        return draws, stats

    def run_batch(keys, x, log_y, fam, mask, hyper):
        COMPILE_COUNT["n"] += 1  # runs only while tracing, i.e. once per compilation
        args = (x, log_y, fam, mask, hyper)
        dt = log_y.dtype
        B = keys.shape[0]
        state = init_states(keys, args)
        buf = jnp.zeros((B, C, S + 1, D + 5), dt)

        def window(carry, win):
            state, buf = carry
            n_iter = win[0]

            def cond(sb):
                return jnp.any(sb[0].iv[..., _IT] < n_iter)

            def body(sb):
                return v_step(sb[0], sb[1], win, args)

            state, buf = lax.while_loop(cond, body, (state, buf))
            if pool:
                state = _pool_welford(state, dense)
                state = lax.cond(win[5], _pool_step_size, lambda st: st, state)  # end of warm-up
            state = v_end(state, win, args)
            return (state, buf), None

        (state, buf), _ = lax.scan(window, (state, buf), tuple(jnp.asarray(t) for t in table))
        return outputs(buf[:, :, :S], state.s[..., _LEPS])

    run_batch.parts = {"step": step, "newton": newton_chain, "start": start_chain, "table": table}  # for profiling
    if not slots:
        return run_batch

    # ------------------------------------------------------------------ streaming: datasets flow through P slots
    v_step_core = jax.vmap(jax.vmap(step_core, in_axes=(0, None, None)), in_axes=(0, 0, 0))
    v_end_slots = jax.vmap(jax.vmap(end_window, in_axes=(0, None, None, None)), in_axes=(0, 0, 0, 0))
    tab = tuple(jnp.asarray(t) for t in table)
    R = len(table[0])  # rows: the empty first window, the warm-up windows, sampling

    def run_stream(keys, x, log_y, fam, mask, hyper):
        COMPILE_COUNT["n"] += 1
        args = (x, log_y, fam, mask, hyper)
        dt = log_y.dtype
        B = keys.shape[0]
        P = min(int(slots), B)
        # Each dataset's start (Newton descent, metric) is computed on its own (lax.map, width 1, as in a single
        # fit) rather than vmapped over all B: batched linear algebra rounds differently at different widths, and
        # NUTS turns a last-bit difference into different draws, so a dataset's numbers would depend on which
        # other datasets shared its batch (and, with fit_many's worker threads, on the machine's core count).
        init = lax.map(
            lambda ka: jax.tree.map(lambda a: a[0], init_states(ka[0][None], jax.tree.map(lambda a: a[None], ka[1]))),
            (keys, args),
        )
        take = lambda tree, i: jax.tree.map(lambda a: a[i], tree)  # noqa: E731
        sel = lambda m, a, b: jax.tree.map(  # noqa: E731
            lambda u, v: jnp.where(m.reshape(m.shape + (1,) * (u.ndim - m.ndim)), u, v), a, b
        )
        # Datasets with no unmasked run are padding (fit_many rounds B up so that batches of nearby sizes share one
        # compiled program). They come last and are never loaded into a slot: only their start is computed.
        n_live = jnp.sum(jnp.any(mask > 0, axis=-1)).astype(jnp.int32)
        ds0 = jnp.where(jnp.arange(P) < n_live, jnp.arange(P), B)
        carry = (
            take(init, jnp.minimum(ds0, B - 1)),  # the slots' chains (P, C)
            take(args, jnp.minimum(ds0, B - 1)),  # the slots' data
            ds0,  # dataset in each slot (B: idle)
            jnp.zeros(P, jnp.int32),  # its window row
            jnp.asarray(P, jnp.int32),  # next dataset to load
            jnp.zeros((B + 1, C, S + 1, D + 5), dt),  # output rows per dataset (B: scratch for idle slots)
            jnp.zeros((B + 1, C), dt),  # final log step size per dataset
            jnp.asarray(0, jnp.int32),  # loop counter
        )

        def boundary(c, wdone):
            """Windows that ended: adapt (pooled over each dataset's chains), step to the next window; slots whose
            dataset finished sampling record it and load the next dataset."""
            state, sargs, ds, wi, nxt, buf, leps, t = c
            win = tuple(a[wi] for a in tab)
            last = wdone & (wi == R - 1)
            mid = wdone & ~last
            if pool:
                state = sel(mid, _pool_welford(state, dense), state)
                state = sel(mid & win[5], _pool_step_size(state), state)  # slots whose warm-up ended
            ended = v_end_slots(state, win, sargs, ~mid)
            state = sel(mid, ended, state)
            wi = jnp.where(mid, wi + 1, wi)
            leps = leps.at[jnp.where(last, ds, B)].set(jnp.where(last[:, None], state.s[..., _LEPS], 0.0))
            cand = nxt + jnp.cumsum(last) - 1
            new_ds = jnp.where(last, jnp.where(cand < n_live, cand, B), ds)
            load = last & (new_ds < B)
            j = jnp.minimum(new_ds, B - 1)
            state = sel(load, take(init, j), state)
            sargs = sel(load, take(args, j), sargs)
            wi = jnp.where(last, 0, wi)
            nxt = nxt + jnp.sum(last).astype(jnp.int32)
            return state, sargs, new_ds, wi, nxt, buf, leps, t

        def cond(c):
            return jnp.any(c[2] < B)

        def body(c):
            state, sargs, ds, wi, nxt, buf, leps, t = c
            win = tuple(a[wi] for a in tab)
            state, row, vals = v_step_core(state, win, sargs)
            buf = buf.at[ds[:, None], jnp.arange(C)[None, :], row].set(vals)
            live = ds < B
            wdone = live & jnp.all(state.iv[..., _IT] >= win[0][:, None], axis=1)
            # Window ends are handled together every `sync_every` steps (or at once when every live slot waits):
            # each costs a few leapfrog steps for every chain (the step-size search), so not at every step.
            go = jnp.any(wdone) & ((t % sync_every == 0) | jnp.all(wdone | ~live))
            c = (state, sargs, ds, wi, nxt, buf, leps, t + 1)
            return lax.cond(go, lambda c: boundary(c, wdone), lambda c: c, c)

        _, _, _, _, _, buf, leps, _ = lax.while_loop(cond, body, carry)
        return outputs(buf[:B, :, :S], leps[:B])

    return run_stream


# XLA:CPU hands small reductions and multiply-adds to YNNPACK library calls ("ynn fusions"); in the sampler's loop
# body they are tiny (a chain's D-vector sums), and the calls cost more than XLA's own fused loops: turning them off
# makes a leapfrog step of 4x128 chains on 40 runs ~18% faster (2.36 -> 1.93 µs per chain-step, benchmarks/
# RESULTS.md). Passed per compilation, never through the user's XLA_FLAGS; skipped where this jaxlib lacks the
# option or the backend is not the CPU.
_CPU_OPTIONS = {"xla_cpu_experimental_ynn_fusion_type": ""}


@functools.lru_cache(maxsize=1)
def compiler_options() -> dict[str, str]:
    """XLA options for the sampler's programs on this backend (checked once per process by compiling a tiny
    function with them)."""
    if jax.default_backend() != "cpu":
        return {}
    try:
        jax.jit(lambda a: jnp.sum(a * a), compiler_options=_CPU_OPTIONS).lower(jnp.ones(3)).compile()
    except Exception:  # an older or newer jaxlib without the option: its defaults are fine
        return {}
    return dict(_CPU_OPTIONS)


def _jit(fn):
    """``jax.jit(fn)`` with :func:`compiler_options` where they are allowed: JAX takes compiler options only on a
    top-level jit, so a call from inside another transformation (``jit``, ``vmap``, ``make_jaxpr``, ...) runs
    the plain jitted function instead."""
    opts = compiler_options()
    plain = jax.jit(fn)
    if not opts:
        return plain
    fast = jax.jit(fn, compiler_options=opts)

    @functools.wraps(fn)
    def run(*args):
        nested = any(isinstance(a, jax.core.Tracer) for a in jax.tree.leaves(args))
        return (plain if nested else fast)(*args)

    run.lower = fast.lower
    return run


@functools.lru_cache(maxsize=128)
def batch_core(spec: Spec, config: SamplerConfig, dtype_name: str = "float64", slots: int = 0):
    """The pure (un-jitted) batched program, for callers that compose it (``shard_map``, ``vmap``); ``slots``: see
    :func:`batch_sampler`."""
    return _build(spec, config, jnp.dtype(dtype_name), slots=int(slots))


@functools.lru_cache(maxsize=128)
def batch_sampler(
    spec: Spec, n: int, config: SamplerConfig, dtype_name: str = "float64", n_devices: int = 1, slots: int = 0
):
    """Compiled ``run(keys (B,), x, log_y, fam, mask, hyper)`` over B datasets of ``n`` (padded) runs each (every
    data array with a leading B axis). Returns draws per site (B, chains, draws, *shape) and stats (B, chains,
    draws), ``step_size`` (B, chains). Recompiles only for a new B (or a new structure); datasets whose mask is all
    zero are padding, placed last, and with ``slots`` they are never sampled, which lets callers round B up to a few
    sizes (:func:`scalebayes.fit_many` does).

    ``slots=0``: all B datasets run side by side and pass every warm-up window boundary together, so the loop costs
    the sum over windows of the slowest chain's steps in that window. ``slots=P > 0`` streams the datasets through
    P slots instead: each dataset moves to its next window as soon as its own chains are done (boundaries are
    handled every few dozen steps), and a slot whose dataset finished sampling takes the next one. The loop then
    costs about B/P times the mean dataset's steps plus one dataset's tail, instead of a multiple of the slowest
    chain's. Each dataset's numbers come from its own random stream either way.

    With ``n_devices > 1`` the dataset axis is sharded over the first ``n_devices`` devices with ``shard_map``
    (B must be a multiple of ``n_devices``): each device runs its own loop over its datasets, with no communication.
    """
    del n  # part of the cache key only: shapes come from the arguments
    core = batch_core(spec, config, dtype_name, slots)
    if n_devices <= 1:
        return _jit(core)
    from jax.sharding import Mesh, PartitionSpec

    mesh = Mesh(np.asarray(jax.devices()[:n_devices]), ("data",))
    spec_ = PartitionSpec("data")
    # check_vma=False: the loops start from constants that become per-device values (nothing is communicated)
    return _jit(jax.shard_map(core, mesh=mesh, in_specs=(spec_,) * 6, out_specs=spec_, check_vma=False))


@functools.lru_cache(maxsize=128)
def sampler(spec: Spec, n: int, config: SamplerConfig, dtype_name: str = "float64"):
    """Compiled ``run(key, x, log_y, fam, mask, hyper) -> (draws, stats)`` for ``n`` (padded) runs.

    ``draws`` maps every sampled site to an array (chains, draws, *site_shape) in constrained space; ``stats``
    holds ``diverging``, ``num_steps`` (leapfrog steps), ``accept_prob``, ``energy``, ``potential_energy``
    (chains, draws) and ``step_size`` (chains,).
    """
    del n
    if config.chain_method == "parallel" and jax.local_device_count() > 1:
        return _parallel_chains(spec, config, dtype_name)
    core = _build(spec, config, jnp.dtype(dtype_name))

    def run(key, x, log_y, fam, mask, hyper):
        args = jax.tree.map(lambda a: a[None], (x, log_y, fam, mask, hyper))
        out = core(key[None], *args)
        return jax.tree.map(lambda a: a[0], out)

    return _jit(run)


def _parallel_chains(spec: Spec, config: SamplerConfig, dtype_name: str):
    """Chains sharded over the local devices (each device runs chains/n_dev chains in its own loop)."""
    from jax.sharding import Mesh, PartitionSpec

    n_dev = jax.local_device_count()
    per = config.chains // n_dev
    sub = _build(spec, SamplerConfig(**{**config.__dict__, "chains": per}), jnp.dtype(dtype_name))
    mesh = Mesh(np.asarray(jax.local_devices()), ("d",))

    def local(keys, *args):  # keys (1,) per device
        args = jax.tree.map(lambda a: a[None], args)
        draws, stats = sub(keys, *args)
        return draws, stats  # (1, per, ...)

    sharded = jax.shard_map(
        local,
        mesh=mesh,
        in_specs=(PartitionSpec("d"),) + (PartitionSpec(),) * 5,
        out_specs=PartitionSpec("d"),
        check_vma=False,
    )

    def run(key, x, log_y, fam, mask, hyper):
        keys = jax.random.split(key, n_dev)
        draws, stats = sharded(keys, x, log_y, fam, mask, hyper)
        merge = lambda a: a.reshape(n_dev * per, *a.shape[2:])  # noqa: E731
        return jax.tree.map(merge, draws), jax.tree.map(merge, stats)

    return _jit(run)


def chain_method_for(chains: int) -> str:
    """``"parallel"`` when the local devices divide the chains (several CPU devices or GPUs), else ``"vectorized"``.

    With one CPU device (JAX's default) chains run as one vectorised batch. To run chains on separate CPU cores, set
    ``XLA_FLAGS=--xla_force_host_platform_device_count=<cores>`` *before* importing JAX (scalebayes never sets it).
    """
    n = jax.local_device_count()
    return "parallel" if n > 1 and chains > 1 and chains % n == 0 else "vectorized"


def to_numpy(tree):
    """One host transfer of a whole result tree (after sampling, never inside it)."""
    return jax.tree.map(np.asarray, jax.device_get(tree))
