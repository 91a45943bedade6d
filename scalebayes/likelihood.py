"""The noise model on log loss, in one place: Student-t(ν, μ, σ), with ν = inf meaning Normal(μ, σ).

Every part of the package that scores or simulates a run's log loss uses these two functions: the sampler's
potential, the pointwise log-likelihood and posterior predictive groups, the predictive of new runs, SBC and the
planning helpers. Pure ``jax.numpy`` over arrays that broadcast; NumPy arrays are accepted.

Shapes: ``y``, ``loc`` (log loss, log nats), ``scale`` (> 0) and ``nu`` (> 0, or inf) broadcast together; the result has
the broadcast shape.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.special import gammaln

NAMES = ("student_t", "normal")
_LOG_PI = math.log(math.pi)
_LOG_2PI = math.log(2.0 * math.pi)


def nu_for(likelihood: str, nu):
    """ν to use for ``likelihood``: ``nu`` itself for ``"student_t"``, inf (a Normal) for ``"normal"``."""
    return nu if likelihood == "student_t" else jnp.inf


def logpdf(y, loc, scale, nu):
    """log p(y) under Student-t(ν, loc, scale); Normal(loc, scale) where ν is inf. Broadcasts."""
    z = (jnp.asarray(y) - loc) / scale
    nu = jnp.asarray(nu, dtype=z.dtype)
    finite = jnp.isfinite(nu)
    nu_s = jnp.where(finite, nu, 1.0)
    log_scale = jnp.log(scale)
    lt = (
        gammaln(0.5 * (nu_s + 1.0))
        - gammaln(0.5 * nu_s)
        - 0.5 * (jnp.log(nu_s) + _LOG_PI)
        - log_scale
        - 0.5 * (nu_s + 1.0) * jnp.log1p(z * z / nu_s)
    )
    ln = -0.5 * z * z - log_scale - 0.5 * _LOG_2PI
    return jnp.where(finite, lt, ln)


def standard_from_uniforms(u1, u2, nu):
    """Standard Student-t(ν) variates from two independent uniforms on (0, 1], without rejection.

    Bailey's (1994) polar method with the point in the unit disc drawn as (√u1 cos 2πu2, √u1 sin 2πu2), i.e.
    t = cos(2πu2)·sqrt(ν(u1^(-2/ν) − 1)); ν = inf gives Box-Muller's normal. Broadcasts. The sampler, which draws
    its own counter-based uniforms, and :func:`sample` share this transform, so a simulated run is the same
    function of its uniforms everywhere.
    """
    lu = jnp.log(u1)
    nu = jnp.asarray(nu, dtype=lu.dtype)
    finite = jnp.isfinite(nu)
    nu_s = jnp.where(finite, nu, 1.0)
    r2 = jnp.where(finite, nu_s * jnp.expm1(-2.0 * lu / nu_s), -2.0 * lu)
    return jnp.cos(2.0 * math.pi * u2) * jnp.sqrt(r2)


def sample(key, loc, scale, nu, shape=None):
    """Draws of Student-t(ν, loc, scale) (Normal where ν is inf), of the broadcast shape (or ``shape``)."""
    loc = jnp.asarray(loc)
    shape = jnp.broadcast_shapes(loc.shape, jnp.shape(scale), jnp.shape(nu)) if shape is None else tuple(shape)
    dtype = loc.dtype if jnp.issubdtype(loc.dtype, jnp.floating) else jnp.result_type(float)
    k1, k2 = jax.random.split(key)
    u1 = jax.random.uniform(k1, shape, dtype, minval=jnp.finfo(dtype).tiny)
    u2 = jax.random.uniform(k2, shape, dtype)
    return loc + scale * standard_from_uniforms(u1, u2, nu)


def logpdf_one_log(y, loc, scale, nu, log_scale=None):
    """:func:`logpdf` with one ``log`` per element, for shared ``scale`` and ``nu``: the Student-t term is written
    log1p(d²/(νσ²)) = log(νσ² + d²) − log(νσ²), so the second log, the gamma functions and log σ are computed at
    the (smaller) shape of ``scale`` and ``nu``, and no division runs per element. The sampler's potential uses it
    (on CPU the float64 transcendental per run is most of a leapfrog step). Unlike :func:`logpdf`, the branch is
    chosen statically: ``nu`` a Python float inf gives the Normal, anything else (an array) is taken as finite.
    ``log_scale``: log of ``scale`` when the caller has it. Equal to :func:`logpdf` to rounding; broadcasts."""
    d = jnp.asarray(y) - loc
    log_scale = jnp.log(scale) if log_scale is None else log_scale
    s2 = scale * scale
    if isinstance(nu, float) and math.isinf(nu):
        return -0.5 * d * d / s2 - log_scale - 0.5 * _LOG_2PI
    nu = jnp.asarray(nu, dtype=d.dtype)
    c = nu * s2
    const = gammaln(0.5 * (nu + 1.0)) - gammaln(0.5 * nu) - 0.5 * (jnp.log(nu) + _LOG_PI)
    return -0.5 * (nu + 1.0) * (jnp.log(c + d * d) - jnp.log(c)) + const - log_scale


def robust_sd(r) -> float:
    """1.4826·MAD of residuals ``r`` (nats of log loss): their s.d. under Normal noise, unmoved by a few outliers."""
    r = np.asarray(r, float)
    return float(1.4826 * np.median(np.abs(r - np.median(r))))
