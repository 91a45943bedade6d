"""The fast sampler's correctness: its hand-written potential equals NumPyro's for every model structure, its NUTS
samples known distributions, its random numbers are JAX's threefry, a second fit of same-shaped data does not
recompile, float32 really is float32, and pointwise groups are chunked and skipped when large. Speed itself is
measured by ``benchmarks/run.py``, never asserted here."""

from __future__ import annotations

import functools
import logging
import math

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest
from conftest import LAW_ONLY, QUICK, simulate_chinchilla
from numpyro.infer.util import initialize_model
from scipy import stats

import scalebayes as sb
from scalebayes import sampler as S
from scalebayes.fitting import prepare
from scalebayes.likelihood import standard_from_uniforms as student_t_noise
from scalebayes.model import model
from scalebayes.pointwise import AUTO_MAX_ELEMENTS, pointwise_arrays, want_pointwise

TRUE = dict(E=1.69, A=406.4, B=410.7, alpha=0.34, beta=0.28)


def _single(n=50, seed=0):
    return sb.ScalingData.from_frame(simulate_chinchilla(TRUE, n=n, seed=seed), N="N", D="D", loss="loss")


def _families(n_fam=3, n=30, seed=0):
    frames = [simulate_chinchilla(TRUE, n=n, seed=seed + i, family=f"f{i}") for i in range(n_fam)]
    return sb.ScalingData.from_frame(pd.concat(frames, ignore_index=True), N="N", D="D", loss="loss", family="family")


STRUCTURES = {
    "student_t": dict(),
    "normal": dict(likelihood="normal"),
    "partial": dict(multi=True),  # the default "marginal" form: μ, τ integrated out
    "noncentred": dict(multi=True, marginal=False),
    "marginal_mixed": dict(multi=True, shared=("alpha",), centred=("beta",), noise="family"),
    "partial_noise_family": dict(multi=True, noise="family"),
    "none": dict(multi=True, pooling="none"),
    "mixed": dict(multi=True, shared=("alpha",), free=("E",), likelihood="normal"),
    "centred": dict(multi=True, centred=True),
    "centred_mixed": dict(multi=True, centred=True, shared=("alpha",), noise="family"),
    "trend": dict(noise_trend="tokens_per_parameter"),
    "trend_normal": dict(noise_trend="tokens_per_parameter", likelihood="normal"),
    "trend_family_partial": dict(multi=True, noise="family", noise_trend="tokens_per_parameter"),
    "trend_centred_mixed": dict(multi=True, centred=True, shared=("alpha",), noise_trend="tokens_per_parameter"),
}


@pytest.mark.parametrize("name", list(STRUCTURES))
def test_potential_equals_numpyro(name):
    """make_potential is the model's negative log joint (with exp-transform Jacobians), to rounding."""
    opts = dict(STRUCTURES[name])
    multi = opts.pop("multi", False)
    data = (
        _families() if multi else sb.ScalingData.from_frame(simulate_chinchilla(TRUE, n=50), N="N", D="D", loss="loss")
    )
    prep = prepare(data, **opts)
    info, pe_gen, _, _ = initialize_model(
        jax.random.key(0), functools.partial(model, prep.spec), model_args=prep.args, dynamic_args=True
    )
    pe_numpyro = jax.jit(pe_gen(*prep.args))
    pot = jax.jit(lambda q: S.make_potential(prep.spec)(q, *prep.args))
    D = S.n_dim(prep.spec)
    assert D == sum(int(np.prod(np.shape(v))) for v in info.z.values())
    rng = np.random.default_rng(1)
    centre = S.init_position(prep.spec, prep.args[-1], jnp.zeros(D), 0.0, jnp.float64)
    for _ in range(4):
        q = centre + 0.3 * rng.standard_normal(D)
        z = S.unflatten(prep.spec, jnp.asarray(q))
        assert set(z) == set(info.z)
        a, b = float(pot(jnp.asarray(q))), float(pe_numpyro(z))
        assert np.isfinite(a) and a == pytest.approx(b, rel=1e-10, abs=1e-8)


def test_threefry_is_jax_threefry():
    from jax.extend.random import threefry_2x32

    kw = jax.random.bits(jax.random.key(3), (2,), jnp.uint32)
    c = jnp.arange(100, 164, dtype=jnp.uint32)
    a, b = S.threefry2x32(kw[0], kw[1], c[:32], c[32:])
    np.testing.assert_array_equal(np.concatenate([a, b]), threefry_2x32(kw, c))


def test_adaptation_windows_follow_stan():
    assert S.adaptation_windows(1000) == [
        (75, False),
        (25, True),
        (50, True),
        (100, True),
        (200, True),
        (500, True),
        (50, False),
    ]
    assert sum(n for n, _ in S.adaptation_windows(400)) == 400
    assert S.adaptation_windows(100) == [(15, False), (75, True), (10, False)]
    assert S.adaptation_windows(10) == [(10, False)]
    assert S.adaptation_windows(0) == []


def _run_custom(potential, spec, config, seed=0):
    prep_args = S.example_args(spec, 8)
    run = jax.jit(S.build(spec, config, potential=potential))
    args = jax.tree.map(lambda a: a[None], prep_args)
    draws, st = S.to_numpy(run(jax.random.key(seed)[None], *args))
    parts = [np.log(draws[s.name]) if s.positive else draws[s.name] for s in S.site_layout(spec)]
    q = np.concatenate([v.reshape(*v.shape[:3], -1) for v in parts], axis=-1)  # flat unconstrained, (1, C, S, D)
    return q[0], jax.tree.map(lambda a: a[0], st)


def test_nuts_samples_a_badly_scaled_correlated_gaussian():
    """Means and covariance of a 6-d Gaussian whose scales span 1e-3..1 with correlations up to 0.97 (the shape of the
    Chinchilla posterior), and few leapfrog steps: the adapted dense metric must capture the tight direction (an
    absolute ridge in the covariance estimate, as in Stan/NumPyro, costs ~4x the steps here)."""
    spec = prepare(
        sb.ScalingData.from_frame(simulate_chinchilla(TRUE, n=20), N="N", D="D", loss="loss"), likelihood="normal"
    ).spec
    D = S.n_dim(spec)
    rng = np.random.default_rng(0)
    A = rng.standard_normal((D, D))
    corr = np.corrcoef(A @ A.T + 0.05 * np.eye(D))
    sd = np.array([1e-3, 0.03, 0.3, 1.0, 0.01, 0.1])
    cov = corr * np.outer(sd, sd)
    cov[0, 1] = cov[1, 0] = 0.97 * sd[0] * sd[1]
    w, V = np.linalg.eigh(cov)
    cov = (V * np.maximum(w, 1e-3 * w.max() * 1e-3)) @ V.T
    sd = np.sqrt(np.diag(cov))
    mean = rng.standard_normal(D)
    prec = jnp.asarray(np.linalg.inv(cov))

    def potential(q, x, log_y, fam, mask, hyper):
        d = q - jnp.asarray(mean)
        return 0.5 * d @ prec @ d

    config = S.SamplerConfig(chains=4, warmup=500, draws=1000)
    q, st = _run_custom(potential, spec, config)
    flat = q.reshape(-1, D)
    n_eff = 1000.0  # conservative: 4000 draws, ESS per draw of NUTS on a Gaussian is near 1
    assert np.all(np.abs(flat.mean(0) - mean) < 5 * sd / np.sqrt(n_eff))
    np.testing.assert_allclose(np.sqrt(np.diag(np.cov(flat.T))), sd, rtol=0.1)
    np.testing.assert_allclose(
        np.corrcoef(flat.T), np.corrcoef(np.random.default_rng(1).multivariate_normal(mean, cov, 20000).T), atol=0.06
    )
    assert not st["diverging"].any()
    assert st["num_steps"].mean() < 12  # a well-adapted metric: about 3-7 steps; a bad one 20+


def test_nuts_samples_a_heavy_tailed_target():
    """Student-t(5) marginals (kurtosis where NUTS's multinomial sampling and U-turn checks matter): quantiles."""
    spec = prepare(
        sb.ScalingData.from_frame(simulate_chinchilla(TRUE, n=20), N="N", D="D", loss="loss"),
        likelihood="normal",
        noise_trend="none",
    ).spec

    def potential(q, x, log_y, fam, mask, hyper):
        return jnp.sum(3.0 * jnp.log1p(q * q / 5.0))

    q, st = _run_custom(potential, spec, S.SamplerConfig(chains=4, warmup=500, draws=1000), seed=2)
    flat = q.reshape(-1)
    for p in (0.1, 0.25, 0.5, 0.75, 0.9):
        assert np.quantile(flat, p) == pytest.approx(stats.t(5).ppf(p), abs=0.08)
    assert st["diverging"].mean() < 0.01


def test_sincos_matches_libm():
    """The sampler's polynomial sin/cos of 2πu (Box-Muller's angle) against NumPy's, across all four quadrants and
    their boundaries: within a few float64 ulps (the reduction 2π(u - k/4) costs about one), and float32 stays
    float32."""
    u = np.concatenate([np.linspace(0.0, 1.0, 400_001), np.random.default_rng(0).uniform(size=100_000)])
    sin, cos = S.sincos_2pi(jnp.asarray(u))
    np.testing.assert_allclose(np.asarray(sin), np.sin(2 * np.pi * u), rtol=0, atol=2e-15)
    np.testing.assert_allclose(np.asarray(cos), np.cos(2 * np.pi * u), rtol=0, atol=2e-15)
    s32, c32 = S.sincos_2pi(jnp.asarray(u, jnp.float32))
    assert s32.dtype == jnp.float32 and c32.dtype == jnp.float32
    np.testing.assert_allclose(np.asarray(c32), np.cos(2 * np.pi * u.astype(np.float32)), rtol=0, atol=1e-6)


@pytest.mark.parametrize("cross_chain", [True, False])
def test_chains_of_a_dataset_share_the_step_size_after_warmup(cross_chain):
    """With cross-chain warm-up the chains sample with one step size (the geometric mean of their adapted ones),
    so vectorised chains do not all wait for the one with the smallest step; without it each keeps its own."""
    spec = prepare(
        sb.ScalingData.from_frame(simulate_chinchilla(TRUE, n=20), N="N", D="D", loss="loss"),
        likelihood="normal",
        noise_trend="none",
    ).spec
    scales = jnp.asarray(np.geomspace(0.01, 1.0, S.n_dim(spec)))

    def potential(q, x, log_y, fam, mask, hyper):
        return 0.5 * jnp.sum((q / scales) ** 2)

    config = S.SamplerConfig(chains=4, warmup=200, draws=200, cross_chain=cross_chain)
    q, st = _run_custom(potential, spec, config, seed=3)
    eps = st["step_size"]
    assert np.all(np.isfinite(eps)) and np.all(eps > 0)
    if cross_chain:
        np.testing.assert_allclose(eps, eps[0], rtol=1e-12)
    else:  # four independent dual averagings never land on the same float
        assert len(np.unique(eps)) == 4
    flat = q.reshape(-1, q.shape[-1])
    np.testing.assert_allclose(flat.std(0), np.asarray(scales), rtol=0.15)  # 800 draws: s.d. of an s.d. ~3-5%


def test_student_t_noise_is_student_t():
    key1, key2 = jax.random.split(jax.random.key(0))
    u1 = jax.random.uniform(key1, (20000,), minval=1e-300)
    u2 = jax.random.uniform(key2, (20000,))
    for nu in (1.5, 3.0, 30.0):
        t = np.asarray(student_t_noise(u1, u2, jnp.asarray(nu)))
        assert stats.kstest(t, stats.t(nu).cdf).pvalue > 1e-3
    z = np.asarray(student_t_noise(u1, u2, jnp.asarray(jnp.inf)))
    assert stats.kstest(z, stats.norm.cdf).pvalue > 1e-3


def test_pointwise_auto_threshold():
    assert want_pointwise("auto", 4000, AUTO_MAX_ELEMENTS // 4000)
    assert not want_pointwise("auto", 4000, 100_000)
    assert want_pointwise(True, 4000, 100_000) and not want_pointwise(False, 1, 1)
    with pytest.raises(sb.errors.ModelError):
        want_pointwise("sometimes", 1, 1)


@pytest.fixture(scope="module")
def quick_pair(chinchilla_data):
    """Two fits of same-shaped data (Chinchilla, and the same runs with perturbed losses)."""
    jax.config.update("jax_log_compiles", True)
    try:
        first = sb.fit(chinchilla_data, warn=False, **QUICK, **LAW_ONLY)
        n0 = S.COMPILE_COUNT["n"]
        frame = chinchilla_data.frame.copy()
        frame["loss"] = frame["loss"] * np.exp(0.01 * np.random.default_rng(0).standard_normal(len(frame)))
        other = sb.ScalingData.from_frame(frame, N="N", D="D", loss="loss", name="perturbed")
        handler = _Capture()
        logging.getLogger("jax").addHandler(handler)
        try:
            second = sb.fit(other, warn=False, seed=1, **QUICK, **LAW_ONLY)
        finally:
            logging.getLogger("jax").removeHandler(handler)
        return first, second, n0, S.COMPILE_COUNT["n"], handler.messages
    finally:
        jax.config.update("jax_log_compiles", False)


class _Capture(logging.Handler):
    def __init__(self):
        super().__init__(level=logging.DEBUG)
        self.messages: list[str] = []

    def emit(self, record):
        self.messages.append(record.getMessage())


def test_second_fit_of_same_shape_does_not_recompile(quick_pair):
    """Proof by the sampler's trace counter and by JAX's own compilation log: the second fit compiles nothing."""
    first, second, n_before, n_after, logged = quick_pair
    assert n_after == n_before
    compiled = [m for m in logged if "Compiling" in m or "compiling" in m]
    assert not [m for m in compiled if "run" in m], compiled
    assert not compiled, compiled  # not even the small helpers (pointwise chunks, summaries)
    assert first.n_samples == second.n_samples


def test_pointwise_is_chunked_and_skippable(quick_pair):
    post = quick_pair[0]
    ll, rep = pointwise_arrays(post.idata, chunk_elements=10**9)
    ll_small, rep_small = pointwise_arrays(post.idata, chunk_elements=3 * len(post.data))  # 3 draws per chunk
    # Same numbers up to rounding: chunk shapes change how XLA vectorises the law's logsumexp, which moves
    # log-densities of O(1) nats by ~1e-14 absolute (hence atol; rtol alone fails where a density is near 0).
    np.testing.assert_allclose(ll_small, ll, rtol=1e-12, atol=1e-12)
    stored = post.idata["log_likelihood"]["log_loss"].values.reshape(ll.shape)
    np.testing.assert_allclose(stored, ll, rtol=1e-12, atol=1e-12)
    assert rep_small.shape == rep.shape and np.all(np.isfinite(rep_small))
    # replicates scatter around the observed log loss on the scale of the fitted noise
    resid = rep - np.log(post.data.loss)[None, :]
    assert abs(np.median(resid)) < 0.01
    skipped = sb.fit(post.data, warn=False, pointwise=False, **QUICK, **LAW_ONLY)
    assert "log_likelihood" not in skipped.idata.children
    skipped.pointwise()
    assert "log_likelihood" in skipped.idata.children


def _float_types(jaxpr, found):
    """Float dtypes of every value computed in a jaxpr and its sub-jaxprs (loops, conds), Python-scalar-like
    (weakly typed) constants excepted."""
    for eqn in jaxpr.eqns:
        for v in eqn.outvars:
            aval = v.aval
            if hasattr(aval, "dtype") and jnp.issubdtype(aval.dtype, jnp.floating) and not aval.weak_type:
                found.add(str(aval.dtype))
        for p in eqn.params.values():
            for sub in p if isinstance(p, tuple | list) else (p,):
                if hasattr(sub, "jaxpr") and hasattr(sub.jaxpr, "eqns"):
                    _float_types(sub.jaxpr, found)
                elif hasattr(sub, "eqns"):
                    _float_types(sub, found)
    return found


def test_float32_samples_in_float32(chinchilla_data):
    """dtype="float32": every float the sampler's three programs compute — potential, gradients, trajectories,
    adaptation — is float32 (checked on the traced pieces, so no compilation), and the draws come back as
    float32."""
    prep = prepare(chinchilla_data, dtype="float32")
    run = S.sampler(prep.spec, prep.n_pad, S.SamplerConfig(**QUICK), "float32").stepped
    init, advance, finish = run.flat()
    args = jax.tree.map(lambda a: np.asarray(a)[None], prep.args)
    carry = jax.eval_shape(init, np.asarray(jax.random.key_data(jax.random.key(0)))[None], *args)
    row = tuple(np.asarray(f[1]) for f in run.parts.table)
    found = set()
    for fn, a in ((init, (np.zeros((1, 2), np.uint32), *args)), (advance, (carry, row, 5, True, *args))):
        found = _float_types(jax.make_jaxpr(fn)(*a).jaxpr, found)
    assert found == {"float32"}
    draws, stats_ = jax.eval_shape(finish, carry)
    assert {v.dtype for v in jax.tree.leaves(draws)} == {jnp.dtype("float32")}
    assert stats_["energy"].dtype == jnp.float32


@pytest.mark.slow
def test_float32_fit_agrees_with_float64(chinchilla_data, chinchilla_post):
    post32 = sb.fit(chinchilla_data, dtype="float32", seed=0, chains=4, warmup=500, draws=500)
    assert post32.posterior["alpha"].dtype == np.float32
    assert post32.ok
    for name in ("E", "alpha", "beta"):
        a, b = post32.draws(name), chinchilla_post.draws(name)
        assert abs(a.mean() - b.mean()) < 0.2 * b.std()


@pytest.mark.slow
def test_100k_runs_hold_no_draws_by_runs_array(tmp_path):
    """Peak memory of a 100,000-run fit stays far below one draws × runs array (3.2 GB in float64)."""
    import subprocess
    import sys

    code = (
        "import resource, sys; sys.path.insert(0, 'tests');"
        "import numpy as np, scalebayes as sb; from conftest import simulate_chinchilla;"
        "df = simulate_chinchilla(dict(E=1.69, A=406.4, B=410.7, alpha=0.34, beta=0.28), n=100_000);"
        "d = sb.ScalingData.from_frame(df, N='N', D='D', loss='loss');"
        "p = sb.fit(d, chains=4, warmup=100, draws=1000, warn=False);"
        "print('groups', sorted(p.idata.children));"
        "print('maxrss_mb', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=1800)
    lines = dict(line.split(" ", 1) for line in out.stdout.strip().splitlines())
    assert "log_likelihood" not in lines["groups"]
    assert float(lines["maxrss_mb"]) < 2500


def test_parameters_per_family_gathered_equal_parameters_per_run():
    """The fast potential computes the law.s parameters once per family and gathers them to runs; the NumPyro model
    (parameters per family, gathered to runs) give the same values as parameters per run."""
    spec = prepare(_families()).spec
    lat = {z: jnp.asarray(np.random.default_rng(0).normal(-1, 0.1, 3)) for z in spec.latents}
    centre = {"N": jnp.asarray(20.0), "D": jnp.asarray(23.0)}
    fam = jnp.asarray([0, 2, 1, 1, 0])
    x = {"N": jnp.linspace(18, 22, 5), "D": jnp.linspace(21, 25, 5)}
    per_family = {k: v[fam] for k, v in spec.law.to_params(lat, centre).items()}
    per_run = spec.law.to_params({z: v[fam] for z, v in lat.items()}, centre)
    np.testing.assert_allclose(spec.law.log_mean(per_family, x), spec.law.log_mean(per_run, x), rtol=1e-14)
    assert math.isfinite(float(spec.law.log_mean(per_run, x)[0]))
