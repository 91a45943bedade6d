"""Counter-based random numbers for the compiled loop: an unrolled threefry hash and a polynomial sin/cos.

JAX's CPU lowering of threefry is a while loop whose per-iteration overhead exceeded a whole leapfrog step, and
XLA:CPU evaluates float64 ``sin``/``cos`` one element at a time; the sampler draws a momentum at every leapfrog
step of every chain (a vectorised chain's select needs it), so both are written out here as fused elementwise
code. A counter-based generator also means the loop never splits keys: the uniforms of a step are a hash of the
chain's key words, its counter and a stream number.
"""

from __future__ import annotations

import math

import jax.numpy as jnp

#: Random streams (second threefry word): leapfrog steps and step-size searches, start jitter, Laplace draw.
STREAM_STEP, STREAM_JITTER, STREAM_LAPLACE = 0, 1, 2


def threefry2x32(k0, k1, x0, x1):
    """Threefry-2x32 (20 rounds; Salmon et al. 2011), the hash behind ``jax.random``, unrolled. Bit-identical to
    ``jax.extend.random.threefry_2x32`` (checked in the tests)."""
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


def uniforms(kw, ctr, n: int, dt, stream: int = STREAM_STEP):
    """``n`` (even) uniforms in (0, 1) from one threefry hash of (key words ``kw`` (2,) uint32; counter, stream)."""
    h = n // 2
    idx = jnp.asarray(ctr).astype(jnp.uint32) * jnp.uint32(h) + jnp.arange(h, dtype=jnp.uint32)
    a, b = threefry2x32(kw[0], kw[1], idx, jnp.full(h, stream, jnp.uint32))
    bits = jnp.concatenate([a, b])
    return (bits.astype(dt) + 0.5) * (2.0**-32)


# Taylor coefficients of sin x and cos x to degree 17 and 16: on |x| <= pi/4 the first omitted terms are < 3e-17.
_SIN_C = tuple((-1.0) ** k / math.factorial(2 * k + 1) for k in range(9))
_COS_C = tuple((-1.0) ** k / math.factorial(2 * k) for k in range(9))


def sincos_2pi(u):
    """(sin 2πu, cos 2πu) for u in [0, 1], accurate to ~1e-16 in float64: quadrant reduction and two polynomials."""
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


def normals(uni, D: int):
    """``D`` standard normals from ``2·ceil(D/2)`` uniforms (Box-Muller)."""
    h = (D + 1) // 2
    r = jnp.sqrt(-2.0 * jnp.log(uni[:h]))
    sin, cos = sincos_2pi(uni[h : 2 * h])
    return jnp.concatenate([r * cos, r * sin])[:D]
