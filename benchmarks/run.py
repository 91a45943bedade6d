"""scalebayes benchmarks (issue #7): one command, a JSON and a Markdown table.

    .venv/bin/python benchmarks/run.py            # everything (~20-40 min on a 2-core CPU)
    .venv/bin/python benchmarks/run.py --only fit_default,huber --many 200

Every case runs in its own fresh Python process (so "first call" includes JAX's compilation and nothing is shared
between cases) on the same machine, one after another, and prints one JSON record; this driver collects them into
``benchmarks/output/results.json`` and ``results.md`` and copies the table to ``benchmarks/RESULTS.md``.

Wall times are seconds of ``time.perf_counter``; "cpu" is the process's CPU seconds (``time.process_time``, all
threads), reported because other jobs may share the machine: a wall time far above the cpu time means the process
waited for a core. ESS is ArviZ's rank-normalised bulk ESS, the minimum over the published parameters, σ and ν;
"ESS/s" divides it by the warm wall time of the whole call (adaptation, sampling, post-processing).

Cases (``--only`` takes their names):
  numpyro_naive   NumPyro, the obvious model: E, A, B, α, β sampled directly with wide priors, NUTS defaults
                  (diagonal mass, target 0.8), MCMC defaults (4 chains, run one after another on one device).
  fit_default     scalebayes.fit(data) with its defaults (4 chains, 1000 warm-up, 1000 draws, dense metric).
  fit_short       scalebayes.fit(data, warmup=500, draws=500): the documented setting for quick fits.
  fit_float32     scalebayes.fit(data, dtype="float32").
  fit_parallel    defaults, chains on 2 CPU devices (XLA_FLAGS=--xla_force_host_platform_device_count=2).
  fit_lse_law     defaults with the Chinchilla mean registered as a user law (one jax.nn.logsumexp, the form the
                  built-in law uses since it replaced nested jnp.logaddexp): a user's law runs as fast as a built-in.
  blackjax        BlackJAX 1.x window adaptation (dense) + NUTS on scalebayes's own potential (same model,
                  same parameterisation, 4 vmapped chains, 1000 + 1000).
  huber           scalebayes.baselines.fit_huber(data, objective="huber_likelihood", init="hoffmann",
                  bootstrap=4000): time to point estimate and percentile intervals.
  fit_many        --many (default 1000) simulated 40-run datasets (Chinchilla law, known parameters) in one
                  fit_many call, against a Python loop over scalebayes.fit on --loop of them (extrapolated).
  memory_100k     peak resident memory (ru_maxrss) of a fit of 100,000 simulated runs (pointwise="auto").
  sampler_vs_numpyro  fit(data, warmup=500, draws=500) with scalebayes's NUTS and with fit(..., sampler="numpyro")
                  (NumPyro's NUTS on the same model and parameterisation, scalebayes.sampler.reference), alternated
                  in one process: ESS/s ratio.
  calibration_cost    warm fit(data) vs warm calibrate(post), alternated, on chinchilla_epoch and porian_isoflop.
  progress_overhead   fit(data) (warmup=draws=500, and the defaults) with progress=False and progress=True
                  (stderr not a terminal: plain lines), alternated in one process pinned to one core: median
                  per-round difference of cpu and wall time.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
OUT = HERE / "output"
TRUE = dict(E=1.69, A=406.4, B=410.7, alpha=0.34, beta=0.28)
CASES = [
    "numpyro_naive",
    "fit_default",
    "fit_short",
    "fit_float32",
    "fit_parallel",
    "fit_lse_law",
    "blackjax",
    "huber",
    "fit_many",
    "memory_100k",
    "sampler_vs_numpyro",
    "progress_overhead",
    "calibration_cost",
]


# ------------------------------------------------------------------------------------------------------- helpers
def _clock():
    return time.perf_counter(), time.process_time()


def _since(t0):
    w, c = _clock()
    return round(w - t0[0], 3), round(c - t0[1], 3)


def _simulate(n: int, seed: int, sigma: float = 0.02):
    """Runs from the Chinchilla law with TRUE parameters on a log-uniform design (tests/conftest.py's design)."""
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(seed)
    N = 10 ** rng.uniform(7, 10, n)
    D = N * 10 ** rng.uniform(np.log10(5), np.log10(200), n)
    L = TRUE["E"] + TRUE["A"] * N ** -TRUE["alpha"] + TRUE["B"] * D ** -TRUE["beta"]
    return pd.DataFrame({"N": N, "D": D, "loss": L * np.exp(sigma * rng.standard_normal(n))})


def _min_bulk_ess(draws: dict) -> float:
    """Minimum ArviZ bulk ESS over arrays (chain, draw)."""
    import arviz_stats as azs
    import numpy as np
    import xarray as xr

    ds = xr.Dataset({k: (("chain", "draw"), np.asarray(v, float)) for k, v in draws.items()})
    return float(min(float(v) for v in azs.ess(ds, method="bulk").data_vars.values()))


def _fit_record(post, wall, cpu) -> dict:
    d = post.diagnostics
    return {
        "wall": wall,
        "cpu": cpu,
        "steps_per_iteration": round(d.steps_per_iteration, 2),
        "min_bulk_ess": round(d.ess_bulk_min, 1),
        "min_tail_ess": round(d.ess_tail_min, 1),
        "r_hat_max": round(d.r_hat_max, 4),
        "divergences": d.divergences,
        "diagnostics_ok": d.ok,
    }


def _repeat_fit(data, reps: int, **kw) -> dict:
    """First call (compiles) then ``reps`` warm calls with new seeds; the median warm call is reported."""
    import numpy as np

    import scalebayes as sb
    from scalebayes import sampler as S

    t0 = _clock()
    post = sb.fit(data, seed=0, warn=False, **kw)
    first = _since(t0)
    n_compiles = S.COMPILE_COUNT["n"]
    warm = []
    for r in range(reps):
        t0 = _clock()
        post = sb.fit(data, seed=r + 1, warn=False, **kw)
        w, c = _since(t0)
        warm.append(_fit_record(post, w, c))
    order = np.argsort([w["wall"] for w in warm])
    med = warm[order[len(order) // 2]]
    return {
        "first_wall": first[0],
        "first_cpu": first[1],
        **med,
        "warm_walls": [w["wall"] for w in warm],
        "all_ok": all(w["diagnostics_ok"] for w in warm),
        "recompiled_on_warm_calls": S.COMPILE_COUNT["n"] != n_compiles,
        "ess_per_s": round(med["min_bulk_ess"] / med["wall"], 1),
    }


# --------------------------------------------------------------------------------------------------------- cases
def case_numpyro_naive(args) -> dict:
    import jax
    import jax.numpy as jnp
    import numpy as np
    import numpyro
    import numpyro.distributions as dist
    from numpyro.infer import MCMC, NUTS

    import scalebayes as sb

    data = sb.datasets.load("chinchilla_epoch")
    logN, logD, logy = (jnp.asarray(np.log(v)) for v in (data.N, data.D, data.loss))

    def model(logN, logD, logy):
        E = numpyro.sample("E", dist.HalfNormal(10.0))
        A = numpyro.sample("A", dist.HalfNormal(5000.0))
        B = numpyro.sample("B", dist.HalfNormal(5000.0))
        alpha = numpyro.sample("alpha", dist.Uniform(0.0, 2.0))
        beta = numpyro.sample("beta", dist.Uniform(0.0, 2.0))
        sigma = numpyro.sample("sigma", dist.HalfNormal(0.1))
        nu = numpyro.sample("nu", dist.Gamma(2.0, 0.1))
        mu = jnp.log(E + A * jnp.exp(-alpha * logN) + B * jnp.exp(-beta * logD))
        numpyro.sample("obs", dist.StudentT(nu, mu, sigma), obs=logy)

    mcmc = MCMC(NUTS(model), num_warmup=1000, num_samples=1000, num_chains=4, progress_bar=False)
    t0 = _clock()
    mcmc.run(jax.random.key(0), logN, logD, logy, extra_fields=("num_steps",))
    jax.block_until_ready(mcmc.get_samples())
    first = _since(t0)
    t0 = _clock()
    mcmc.run(jax.random.key(1), logN, logD, logy, extra_fields=("num_steps",))
    samples = mcmc.get_samples(group_by_chain=True)
    jax.block_until_ready(samples)
    warm = _since(t0)
    steps = float(np.mean(mcmc.get_extra_fields()["num_steps"]))
    ess = _min_bulk_ess({k: v for k, v in samples.items()})
    return {
        "first_wall": first[0],
        "first_cpu": first[1],
        "wall": warm[0],
        "cpu": warm[1],
        "steps_per_iteration": round(steps, 2),
        "min_bulk_ess": round(ess, 1),
        "ess_per_s": round(ess / warm[0], 1),
        "settings": "NUTS() defaults, MCMC(num_warmup=1000, num_samples=1000, num_chains=4)",
    }


def case_fit_default(args) -> dict:
    import scalebayes as sb

    rec = _repeat_fit(sb.datasets.load("chinchilla_epoch"), args.reps)
    return {**rec, "settings": "fit(data) defaults: 4 chains, 1000 warm-up, 1000 draws, dense metric, student_t"}


def case_fit_short(args) -> dict:
    import scalebayes as sb

    rec = _repeat_fit(sb.datasets.load("chinchilla_epoch"), args.reps, warmup=500, draws=500)
    return {**rec, "settings": "fit(data, warmup=500, draws=500)"}


def case_fit_float32(args) -> dict:
    import scalebayes as sb

    rec = _repeat_fit(sb.datasets.load("chinchilla_epoch"), max(2, args.reps - 1), dtype="float32")
    return {**rec, "settings": 'fit(data, dtype="float32")'}


def case_fit_parallel(args) -> dict:
    import jax

    import scalebayes as sb
    from scalebayes.sampler import chain_method_for

    rec = _repeat_fit(sb.datasets.load("chinchilla_epoch"), max(2, args.reps - 1))
    return {
        **rec,
        "devices": jax.local_device_count(),
        "chain_method": chain_method_for(4),
        "settings": "defaults; XLA_FLAGS=--xla_force_host_platform_device_count=2: 2 chains per CPU device",
    }


def case_fit_lse_law(args) -> dict:
    import dataclasses

    import jax
    import jax.numpy as jnp

    import scalebayes as sb
    from scalebayes import laws

    def log_mean(p, x):
        terms = jnp.broadcast_arrays(
            jnp.log(p["E"]), jnp.log(p["A"]) - p["alpha"] * x["N"], jnp.log(p["B"]) - p["beta"] * x["D"]
        )
        return jax.nn.logsumexp(jnp.stack(terms), axis=0)

    law = laws.register(dataclasses.replace(laws.get("chinchilla"), name="chinchilla_lse", log_mean=log_mean))
    rec = _repeat_fit(sb.datasets.load("chinchilla_epoch"), max(2, args.reps - 1), law=law)
    return {**rec, "settings": "defaults; Chinchilla mean as jax.nn.logsumexp of the three terms"}


def case_blackjax(args) -> dict:
    import blackjax
    import jax
    import jax.numpy as jnp
    import numpy as np

    import scalebayes as sb
    from scalebayes import sampler as S
    from scalebayes.fitting import constrained_summaries, prepare

    data = sb.datasets.load("chinchilla_epoch")
    prep = prepare(data)
    pot = S.make_potential(prep.spec)
    D = S.n_dim(prep.spec)

    def logdensity(q):
        return -pot(q, *prep.args)

    def one_chain(key):
        k_init, k_adapt, k_run = jax.random.split(key, 3)
        q0 = S.init_position(prep.spec, prep.args[-1], jax.random.normal(k_init, (D,)), 0.3, jnp.float64)
        adapt = blackjax.window_adaptation(
            blackjax.nuts, logdensity, is_mass_matrix_diagonal=False, target_acceptance_rate=0.9
        )
        (state, params), _ = adapt.run(k_adapt, q0, num_steps=1000)
        kernel = blackjax.nuts(logdensity, **params).step

        def step(s, k):
            s, info = kernel(k, s)
            return s, (s.position, info.num_integration_steps)

        _, (qs, steps) = jax.lax.scan(step, state, jax.random.split(k_run, 1000))
        return qs, steps

    run = jax.jit(jax.vmap(one_chain))
    t0 = _clock()
    jax.block_until_ready(run(jax.random.split(jax.random.key(0), 4)))
    first = _since(t0)
    t0 = _clock()
    qs, steps = jax.block_until_ready(run(jax.random.split(jax.random.key(1), 4)))
    warm = _since(t0)
    site = {k: np.asarray(v) for k, v in S.unflatten(prep.spec, qs, constrain=True).items()}
    out = constrained_summaries(prep.spec, prep.centre, site)
    draws = {k: v[..., 0] for k, v in out["params"].items()}
    draws["sigma"], draws["nu"] = out["noise"]["sigma"][..., 0], out["noise"]["nu"]
    ess = _min_bulk_ess(draws)
    return {
        "first_wall": first[0],
        "first_cpu": first[1],
        "wall": warm[0],
        "cpu": warm[1],
        "steps_per_iteration": round(float(np.mean(steps)), 2),
        "min_bulk_ess": round(ess, 1),
        "ess_per_s": round(ess / warm[0], 1),
        "version": blackjax.__version__,
        "settings": "window_adaptation(dense, target 0.9, 1000) + nuts 1000 draws, 4 chains vmapped; sampling only",
    }


def case_huber(args) -> dict:
    import scalebayes as sb
    from scalebayes.baselines import fit_huber

    data = sb.datasets.load("chinchilla_epoch")
    kw = dict(objective="huber_likelihood", init="hoffmann", bootstrap=4000)
    t0 = _clock()
    fit_huber(data, **kw).summary()
    first = _since(t0)
    t0 = _clock()
    res = fit_huber(data, seed=1, **kw)
    summ = res.summary()
    warm = _since(t0)
    return {
        "first_wall": first[0],
        "first_cpu": first[1],
        "wall": warm[0],
        "cpu": warm[1],
        "alpha_interval": [round(float(summ.loc["alpha", "lower"]), 4), round(float(summ.loc["alpha", "upper"]), 4)],
        "settings": 'fit_huber(data, objective="huber_likelihood", init="hoffmann", bootstrap=4000) + summary()',
    }


def case_fit_many(args) -> dict:
    import numpy as np

    import scalebayes as sb
    from scalebayes.fitting import posterior_group

    data = [
        sb.ScalingData.from_frame(_simulate(40, seed=i), N="N", D="D", loss="loss", name=f"sim{i}")
        for i in range(args.many)
    ]
    # Python loop over fit (defaults), after one compiling call; the loop's fits are datasets 1..loop of the batch
    sb.fit(data[0], warn=False)
    loop_diag = []

    def loop():
        t0 = _clock()
        loop_diag[:] = [sb.fit(d, warn=False).diagnostics for d in data[1 : 1 + args.loop]]
        return _since(t0)

    loop_before = loop()
    # fit_many on the whole list twice: the first call compiles for this batch shape (a smaller list has another
    # shape, so it cannot warm this one up); the second, warm call is the one compared with the warm loop
    t0 = _clock()
    sb.fit_many(data, warn=False)
    first = _since(t0)
    t0 = _clock()
    batch = sb.fit_many(data, warn=False)
    many_wall, many_cpu = _since(t0)
    # the loop again: this machine's speed drifts by tens of percent between minutes (a shared VM), so the loop is
    # timed before and after fit_many and the faster of the two is the baseline (the ratio errs against fit_many)
    loop_after = loop()
    loop_wall, loop_cpu = min(loop_before, loop_after)
    per_fit = loop_wall / args.loop
    summ = batch.summary()
    post_build = _clock()
    _ = (batch[0], batch[len(batch) - 1])
    build = _since(post_build)
    # calibration against the known parameters: 90% central intervals from the lazily built posteriors' draws would
    # build every DataTree; use the batch draws directly
    cover = {}
    for name in ("alpha", "beta", "E"):
        lo, hi = [], []
        for g in batch._groups:
            v = np.asarray(posterior_group(g.preps[0].spec, g.centres(), g.draws)[0][name]).reshape(len(g.index), -1)
            lo.append(np.quantile(v, 0.05, axis=1))
            hi.append(np.quantile(v, 0.95, axis=1))
        lo, hi = np.concatenate(lo), np.concatenate(hi)
        cover[name] = round(float(np.mean((lo <= TRUE[name]) & (TRUE[name] <= hi))), 3)
    fits_per_s = args.many / many_wall
    same = slice(1, 1 + args.loop)  # the loop's datasets
    floor = _gradient_floor(data[same], workers=sb.batch._cores())
    return {
        "n_datasets": args.many,
        "runs_each": 40,
        "settings": "fit_many(datasets) and fit(d) with defaults (4 chains, 1000 + 1000)",
        "slots": sb.batch.DEFAULT_SLOTS,
        "workers": sb.batch._cores(),  # fit_many's default on a one-device CPU: one thread per usable core
        "fit_many_wall": many_wall,
        "fit_many_cpu": many_cpu,
        "fit_many_fits_per_s": round(fits_per_s, 2),
        "fit_many_first_call_wall": first[0],
        "loop_fits": args.loop,
        "loop_wall": loop_wall,
        "loop_walls_before_after": [loop_before[0], loop_after[0]],
        "loop_cpu": loop_cpu,
        "loop_fits_per_s": round(1.0 / per_fit, 3),
        "throughput_ratio": round(fits_per_s * per_fit, 2),
        "diagnostics_ok_fraction": round(float(np.mean(batch.ok)), 3),
        "loop_diagnostics_ok_fraction": round(float(np.mean([d.ok for d in loop_diag])), 3),
        "fit_many_ok_fraction_on_loop_datasets": round(float(np.mean(batch.ok[same])), 3),
        "divergent_fraction_of_fits": round(float(np.mean(summ["divergences"] > 0)), 3),
        "loop_divergent_fraction_of_fits": round(float(np.mean([d.divergences > 0 for d in loop_diag])), 3),
        "median_steps_per_iteration": round(float(summ["steps_per_iteration"].median()), 2),
        "loop_median_steps_per_iteration": round(float(np.median([d.steps_per_iteration for d in loop_diag])), 2),
        "coverage_90": cover,
        "build_two_posteriors_wall": build[0],
        **floor,
        "loop_us_per_chain_step": round(1e6 * per_fit / floor["leapfrog_steps_per_fit"], 3),
        "fit_many_us_per_chain_step_per_core": round(
            1e6 * many_wall * floor["cores"] / (args.many * floor["leapfrog_steps_per_fit"]), 3
        ),
        "ceiling_ratio_gradient_only": round(
            per_fit / (floor["leapfrog_steps_per_fit"] * floor["gradient_us_per_chain"] * 1e-6 / floor["cores"]), 1
        ),
        "compiler_options": sb.sampler.compiler_options(),
    }


def _alternate(data, reps: int, variants: dict) -> dict:
    """One compiling call per variant, then ``reps`` rounds calling every variant once (same seed within a round,
    so the variants do the same work); the median warm record per variant."""
    import numpy as np

    import scalebayes as sb

    out = {}
    for name, kw in variants.items():
        t0 = _clock()
        sb.fit(data, seed=0, warn=False, **kw)
        out[name] = {"first_wall": _since(t0)[0], "warm": []}
    for r in range(reps):
        for name, kw in variants.items():
            t0 = _clock()
            post = sb.fit(data, seed=r + 1, warn=False, **kw)
            w, c = _since(t0)
            out[name]["warm"].append(_fit_record(post, w, c))
    for rec in out.values():
        warm = rec.pop("warm")
        med = warm[int(np.argsort([w["wall"] for w in warm])[len(warm) // 2])]
        rec.update(
            med,
            warm_walls=[w["wall"] for w in warm],
            warm_cpus=[w["cpu"] for w in warm],
            ess_per_s=round(med["min_bulk_ess"] / med["wall"], 1),
        )
    return out


def case_sampler_vs_numpyro(args) -> dict:
    import scalebayes as sb

    kw = dict(warmup=500, draws=500, pointwise=False)
    out = _alternate(
        sb.datasets.load("chinchilla_epoch"), args.reps, {"nuts": kw, "numpyro": {**kw, "sampler": "numpyro"}}
    )
    ours, ref = out["nuts"], out["numpyro"]
    return {
        **out,
        "ess_per_s_ratio": round(ours["ess_per_s"] / ref["ess_per_s"], 1),
        "ess_per_cpu_s_ratio": round((ours["min_bulk_ess"] / ours["cpu"]) / (ref["min_bulk_ess"] / ref["cpu"]), 1),
        "settings": "chinchilla_epoch, complete pooling, student_t, 4 chains, 500 warm-up, 500 draws, dense metric",
    }


def case_progress_overhead(args) -> dict:
    """Pinned to one core before JAX starts (so the CPU time is the fit's work, not XLA's threads waiting for each
    other on a shared machine); the overhead is the median of the per-round differences (same seed in a round)."""
    import statistics

    os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
    import scalebayes as sb

    out = {}
    for label, kw in (("short", dict(warmup=500, draws=500)), ("default", {})):
        kw = dict(kw, pointwise=False)
        variants = {"off": {**kw, "progress": False}, "on": {**kw, "progress": True}}
        res = _alternate(sb.datasets.load("chinchilla_epoch"), args.reps, variants)
        off, on = res["off"], res["on"]
        rel = {}
        for key in ("walls", "cpus"):
            diff = [b - a for a, b in zip(off[f"warm_{key}"], on[f"warm_{key}"], strict=True)]
            rel[key] = round(statistics.median(diff) / statistics.median(off[f"warm_{key}"]), 4)
        out[label] = {**res, "overhead": rel["walls"], "overhead_cpu": rel["cpus"]}
    return {
        **out,
        "settings": "fit(chinchilla_epoch), warmup=draws=500 ('short') and the defaults 1000 + 1000, stderr not a "
        "terminal, one process pinned to one core",
    }


def case_calibration_cost(args) -> dict:
    """Warm ``fit`` (defaults) against warm ``calibrate`` of its posterior, alternated, on chinchilla_epoch
    (complete pooling) and porian_isoflop (8 families, partial pooling): issue 13 asks for at most 3x one fit."""
    import time

    import numpy as np

    import scalebayes as sb

    out = {}
    for name in ("chinchilla_epoch", "porian_isoflop"):
        data = sb.datasets.load(name)
        post = sb.fit(data, seed=0, progress=False, warn=False)  # compiles
        t0, c0 = time.perf_counter(), time.process_time()
        sb.calibrate(post, progress=False)  # compiles the inner refits' optimiser
        first = (time.perf_counter() - t0, time.process_time() - c0)
        fits, cals = [], []
        for r in range(args.reps):
            t0, c0 = time.perf_counter(), time.process_time()
            sb.fit(data, seed=r + 1, progress=False, warn=False)
            fits.append((time.perf_counter() - t0, time.process_time() - c0))
            t0, c0 = time.perf_counter(), time.process_time()
            cal = sb.calibrate(post, progress=False)
            cals.append((time.perf_counter() - t0, time.process_time() - c0))
        fit_w, fit_c = np.median(fits, axis=0)
        cal_w, cal_c = np.median(cals, axis=0)
        out[name] = {
            "fit_wall": round(float(fit_w), 3),
            "fit_cpu": round(float(fit_c), 3),
            "calibrate_wall": round(float(cal_w), 3),
            "calibrate_cpu": round(float(cal_c), 3),
            "calibrate_first_wall": round(first[0], 2),
            "ratio_wall": round(float(cal_w / fit_w), 3),
            "ratio_cpu": round(float(cal_c / fit_c), 3),
            "lanes": cal.discrepancy.info.get("lanes"),
        }
    return {**out, "settings": "fit(data) defaults vs calibrate(post) defaults, alternated, median of warm calls"}


def _gradient_floor(data, workers: int) -> dict:
    """What no vectorised NUTS can beat on this machine: the leapfrog steps one fit takes (warm-up included, counted
    on ``data`` with the sampler's own program) times the cost of the potential's gradient alone, vectorised over
    512 chains on the runs padded as fit_many pads them, and run on every core. fit_many's ratio over the loop
    cannot exceed loop time per fit / that floor, whatever the NUTS bookkeeping costs."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    from scalebayes import sampler as S
    from scalebayes.fitting import prepare
    from scalebayes.padding import pad_size

    preps = [prepare(d, n_pad=pad_size(max(len(d) for d in data))) for d in data]
    spec = preps[0].spec
    run = S.jit(S.build(spec, S.SamplerConfig(), keep_warmup=True))
    steps = []
    for i, p in enumerate(preps):
        args = jax.tree.map(lambda a: a[None], p.args)
        _, st = S.to_numpy(run(jax.random.key(i)[None], *args))
        steps.append(float(st["num_steps"].sum()))  # every chain, every warm-up and sampling iteration
    W, reps = 512, 2000
    pot = S.make_potential(spec)
    vg = jax.vmap(jax.value_and_grad(pot), in_axes=(0,) + (None,) * 5)
    args = preps[0].args

    def loop(q):
        def body(_, c):
            v, g = vg(c[0], *args)
            return c[0] - 1e-9 * g, c[1] + v

        return jax.lax.fori_loop(0, reps, body, (q, jnp.zeros(W)))

    loop = S.jit(loop)
    q0 = jnp.broadcast_to(
        S.init_position(spec, args[-1], jnp.zeros(S.n_dim(spec)), 0.0, jnp.float64), (W, S.n_dim(spec))
    )
    jax.block_until_ready(loop(q0))
    t0 = time.perf_counter()
    jax.block_until_ready(loop(q0))
    grad_us = (time.perf_counter() - t0) / (reps * W) * 1e6
    return {
        "leapfrog_steps_per_fit": round(float(np.mean(steps))),
        "gradient_us_per_chain": round(grad_us, 3),
        "cores": int(workers),
    }


def case_memory_100k(args) -> dict:
    import resource

    import scalebayes as sb

    data = sb.ScalingData.from_frame(_simulate(100_000, seed=0), N="N", D="D", loss="loss", name="sim100k")
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    t0 = _clock()
    post = sb.fit(data, warmup=args.mem_warmup, draws=args.mem_draws, warn=False)
    wall, cpu = _since(t0)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    S = post.n_samples
    return {
        "runs": len(data),
        "settings": f"fit(data, warmup={args.mem_warmup}, draws={args.mem_draws}) (4 chains), pointwise='auto'",
        "wall": wall,
        "cpu": cpu,
        "peak_rss_mb": round(rss, 1),
        "rss_before_fit_mb": round(rss0, 1),
        "groups": sorted(post.idata.children),
        "one_draws_x_runs_array_mb": round(S * len(data) * 8 / 2**20, 1),
        "diagnostics": str(post.diagnostics),
    }


# ---------------------------------------------------------------------------------------------------------- driver
def _run_case(name: str, args) -> dict:
    env = dict(os.environ)
    env.pop("JAX_COMPILATION_CACHE_DIR", None)  # first calls must compile
    if name == "fit_parallel":
        env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=2").strip()
    cmd = [sys.executable, str(Path(__file__).resolve()), "--case", name, *args.passthrough]
    t0 = time.perf_counter()
    load0 = os.getloadavg()[0]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT)
    rec = None
    for line in proc.stdout.splitlines():
        if line.startswith("RESULT "):
            rec = json.loads(line[len("RESULT ") :])
    if rec is None:
        rec = {"error": (proc.stderr or proc.stdout)[-2000:]}
    rec["case_wall"] = round(time.perf_counter() - t0, 1)
    rec["load_avg_1min"] = [round(load0, 2), round(os.getloadavg()[0], 2)]  # before and after: other jobs' load
    return rec


def _when(results: dict) -> str:
    """A sentence naming the start time of each case, when they were not all run in one go (``--only``)."""
    times = {name: r.get("ran_at") for name, r in results["cases"].items() if r.get("ran_at")}
    if len(set(times.values())) <= 1:
        return ""
    groups: dict = {}
    for name, t in times.items():
        groups.setdefault(t, []).append(name)
    parts = [f"{', '.join(names)} at {t}" for t, names in sorted(groups.items())]
    return " Not all cases ran in one go: " + "; ".join(parts) + " (each case's ratios are within its own run)."


def _fmt(v, nd=2):
    if v is None:
        return "—"
    if isinstance(v, bool):
        return "yes" if v else "NO"
    if isinstance(v, float):
        return f"{v:.{nd}f}" if abs(v) < 1e5 else f"{v:.3g}"
    return str(v)


def markdown(results: dict) -> str:
    m = results["machine"]
    lines = [
        "# scalebayes benchmarks",
        "",
        f"Generated by `benchmarks/run.py` on {results['date']}: {m['cpu_count']} CPU cores, {m['platform']}, "
        f"Python {m['python']}, jax {m['jax']}, numpyro {m['numpyro']}; no GPU. All cases ran one after another on "
        "this machine, each in a fresh process. Wall = seconds (median of the warm calls); cpu = process CPU seconds "
        "(other jobs shared the machine when wall ≫ cpu). ESS = min bulk ESS over E, A, B, α, β, σ, ν."
        + _when(results),
        "",
        "## chinchilla_epoch (240 runs)",
        "",
        "| case | first call (s) | warm wall (s) | warm cpu (s) | leapfrog steps/iter | min bulk ESS | ESS/s | "
        "diagnostics |",
        "|---|---|---|---|---|---|---|---|",
    ]
    c = results["cases"]
    for name in ("numpyro_naive", "fit_default", "fit_short", "fit_float32", "fit_parallel", "fit_lse_law", "blackjax"):
        r = c.get(name)
        if r is None:
            continue
        if "error" in r:
            lines.append(f"| {name} | error: see results.json | | | | | | |")
            continue
        diag = _fmt(r.get("all_ok")) if "all_ok" in r else "—"
        if "r_hat_max" in r:
            diag += f" (R-hat {r['r_hat_max']}, tail ESS {r['min_tail_ess']:.0f})"
        lines.append(
            f"| {name} | {_fmt(r.get('first_wall'), 1)} | {_fmt(r.get('wall'))} | {_fmt(r.get('cpu'))} | "
            f"{_fmt(r.get('steps_per_iteration'), 1)} | {_fmt(r.get('min_bulk_ess'), 0)} | "
            f"{_fmt(r.get('ess_per_s'), 0)} | {diag} |"
        )
    ref, fd = c.get("numpyro_naive", {}), c.get("fit_default", {})
    if ref.get("ess_per_s") and fd.get("ess_per_s"):
        lines += [
            "",
            f"ESS/s of `fit` defaults vs the naive NumPyro reference: **{fd['ess_per_s'] / ref['ess_per_s']:.0f}x**.",
        ]
    h = c.get("huber")
    if h and "error" not in h:
        lines += [
            "",
            f"Huber likelihood + 4000-resample bootstrap (`fit_huber`, intervals via `summary()`): first call "
            f"{h['first_wall']:.1f} s, warm {h['wall']:.2f} s wall ({h['cpu']:.2f} s cpu); α 95% interval "
            f"{h['alpha_interval']}.",
        ]
    elif h:
        lines += ["", "Huber baseline: error (see results.json)."]
    fm = c.get("fit_many")
    if fm and "error" not in fm:
        lines += [
            "",
            f"## fit_many: {fm['n_datasets']} simulated datasets of {fm['runs_each']} runs",
            "",
            "| | wall (s) | cpu (s) | fits/s |",
            "|---|---|---|---|",
            f"| `fit_many` (one call) | {fm['fit_many_wall']:.1f} | {fm['fit_many_cpu']:.1f} | "
            f"{fm['fit_many_fits_per_s']:.2f} |",
            f"| loop over `fit` ({fm['loop_fits']} fits, extrapolated; faster of the timings before and after "
            f"fit_many: {fm.get('loop_walls_before_after', '—')} s) | {fm['loop_wall']:.1f} | "
            f"{fm['loop_cpu']:.1f} | {fm['loop_fits_per_s']:.3f} |",
            "",
            f"Throughput ratio **{fm['throughput_ratio']:.1f}x**; diagnostics ok for "
            f"{100 * fm['diagnostics_ok_fraction']:.1f}% of the fits (median "
            f"{fm['median_steps_per_iteration']} leapfrog steps/iteration); 90% intervals cover the true α, β, E in "
            f"{fm['coverage_90']} of the datasets. The first call (compiling for this batch shape) took "
            f"{fm['fit_many_first_call_wall']:.1f} s; the table shows the second.",
        ]
        if "loop_diagnostics_ok_fraction" in fm:
            lines += [
                "",
                f"Same settings, one at a time: the loop's {fm['loop_fits']} `fit`s passed diagnostics in "
                f"{100 * fm['loop_diagnostics_ok_fraction']:.0f}% (fit_many on those datasets: "
                f"{100 * fm['fit_many_ok_fraction_on_loop_datasets']:.0f}%), median "
                f"{fm['loop_median_steps_per_iteration']} leapfrog steps/iteration; divergent transitions in "
                f"{100 * fm['loop_divergent_fraction_of_fits']:.0f}% of the loop's fits and "
                f"{100 * fm['divergent_fraction_of_fits']:.0f}% of the batch's. fit_many streams the datasets "
                f"through {fm['slots']} slots on each of {fm.get('workers', 1)} threads (one core each; cpu/wall shows "
                "how many cores each side used, hence also the per-cpu-second ratio below; see `scalebayes/batch.py`).",
            ]
        if "ceiling_ratio_gradient_only" in fm:
            lines += [
                "",
                f"The ceiling on this machine: a fit takes {fm['leapfrog_steps_per_fit']:.0f} leapfrog steps "
                "(all chains, warm-up included; mean over the loop's datasets), and the potential's gradient "
                f"alone, vectorised over 512 chains, costs {fm['gradient_us_per_chain']:.2f} µs per chain on one "
                f"core. So with NUTS's bookkeeping free and no chain ever idle, fit_many on {fm['cores']} cores "
                f"could reach at most **{fm['ceiling_ratio_gradient_only']:.1f}x** the loop (whose fits cost "
                f"{fm['loop_us_per_chain_step']:.2f} µs of wall time per chain-step, everything included); "
                f"fit_many spends {fm['fit_many_us_per_chain_step_per_core']:.2f} µs per chain-step per core. "
                f"Compiler options: `{fm.get('compiler_options')}`.",
            ]
    mem = c.get("memory_100k")
    if mem and "error" not in mem:
        lines += [
            "",
            f"## 100,000 runs: peak memory {mem['peak_rss_mb']:.0f} MB",
            "",
            f"{mem['settings']}: wall {mem['wall']:.0f} s, cpu {mem['cpu']:.0f} s; peak RSS "
            f"{mem['peak_rss_mb']:.0f} MB ({mem['rss_before_fit_mb']:.0f} MB before the fit), while one draws × runs "
            f"array would be {mem['one_draws_x_runs_array_mb']:.0f} MB; groups stored: {', '.join(mem['groups'])}. "
            f"{mem['diagnostics']}.",
        ]
    sv = c.get("sampler_vs_numpyro")
    if sv and "error" not in sv:
        o, r = sv["nuts"], sv["numpyro"]
        lines += [
            "",
            '## scalebayes NUTS vs NumPyro NUTS on the same model (`fit(..., sampler="numpyro")`)',
            "",
            f"{sv['settings']}; median of {len(o['warm_walls'])} warm calls each, alternated in one process.",
            "",
            "| sampler | first call (s) | warm wall (s) | warm cpu (s) | leapfrog steps/iter | min bulk ESS | ESS/s |",
            "|---|---|---|---|---|---|---|",
        ]
        for name, rec in (("scalebayes", o), ("numpyro", r)):
            lines.append(
                f"| {name} | {rec['first_wall']:.1f} | {rec['wall']:.2f} | {rec['cpu']:.2f} | "
                f"{rec['steps_per_iteration']:.1f} | {rec['min_bulk_ess']:.0f} | {rec['ess_per_s']:.0f} |"
            )
        lines += [
            "",
            f"ESS/s ratio **{sv['ess_per_s_ratio']:.1f}x** on wall, {sv['ess_per_cpu_s_ratio']:.1f}x per cpu second.",
        ]
    po = c.get("progress_overhead")
    if po and "error" not in po:
        lines += ["", "## Progress reporting overhead", "", *_progress_lines(po)]
    cc = c.get("calibration_cost")
    if cc and "error" not in cc:
        lines += ["", "## Calibration cost (issue 13: at most 3x one fit)", "", f"{cc['settings']}:", ""]
        head = "| data | fit wall (s) | fit cpu (s) | calibrate wall (s) | calibrate cpu (s) | ratio wall | ratio cpu |"
        lines += [head, "|---|---|---|---|---|---|---|"]
        for name in ("chinchilla_epoch", "porian_isoflop"):
            r = cc[name]
            lines.append(
                f"| {name} | {r['fit_wall']:.2f} | {r['fit_cpu']:.2f} | {r['calibrate_wall']:.2f} | "
                f"{r['calibrate_cpu']:.2f} | **{r['ratio_wall']:.2f}x** | {r['ratio_cpu']:.2f}x |"
            )
    lines += ["", "## Targets (issue #7)", ""] + _targets(c)
    return "\n".join(lines) + "\n"


def _progress_lines(po: dict) -> list[str]:
    """The progress_overhead case in words (records from before the paired measure had one fit setting)."""
    if "on" in po:  # the earlier record: one setting, ratio of medians
        return [
            f"`fit(..., progress=True)` vs `progress=False`, {po['settings']}, alternated in one process (median of "
            f"{len(po['on']['warm_walls'])} warm calls): wall {po['on']['wall']:.2f} s vs {po['off']['wall']:.2f} s, "
            f"overhead **{100 * po['overhead']:+.1f}%** ({100 * po['overhead_cpu']:+.1f}% cpu); target < 2%."
        ]
    out = [
        f"`fit(..., progress=True)` vs `progress=False`, {po['settings']}, alternated (median of the per-round "
        "differences over the median without progress; target < 2%):",
        "",
        "| fit | warm calls | cpu off (s) | cpu on (s) | overhead cpu | overhead wall |",
        "|---|---|---|---|---|---|",
    ]
    for label in ("short", "default"):
        r = po[label]
        out.append(
            f"| {label} | {len(r['on']['warm_cpus'])} | {r['off']['cpu']:.3f} | {r['on']['cpu']:.3f} | "
            f"**{100 * r['overhead_cpu']:+.1f}%** | {100 * r['overhead']:+.1f}% |"
        )
    return out


def _targets(c: dict) -> list[str]:
    """One line per target of issue #7, met or not, from the recorded numbers."""
    out = []
    for name, label in (("fit_default", "defaults"), ("fit_short", "warmup=500, draws=500")):
        r = c.get(name)
        if r and "error" not in r:
            best = min(r.get("warm_walls", [r["wall"]]))
            out.append(
                f"- warm `fit` ({label}) with min bulk ESS ≥ 400 in under 2 s: ESS {r['min_bulk_ess']:.0f}; "
                f"cpu {r['cpu']:.2f} s ({'met' if r['cpu'] < 2 else 'not met'}); wall: best warm call {best:.2f} s "
                f"({'met' if r['min_bulk_ess'] >= 400 and best < 2 else 'not met'}), median {r['wall']:.2f} s "
                f"({'met' if r['wall'] < 2 else 'not met'}; wall ≫ cpu means the process waited for a core)."
            )
    ref, fd = c.get("numpyro_naive", {}), c.get("fit_default", {})
    if ref.get("ess_per_s") and fd.get("ess_per_s"):
        ratio = fd["ess_per_s"] / ref["ess_per_s"]
        cpu_ratio = (fd["min_bulk_ess"] / fd["cpu"]) / (ref["min_bulk_ess"] / ref["cpu"])
        out.append(
            f"- ≥ 10x the ESS/s of the naive NumPyro model: {ratio:.0f}x on wall, {cpu_ratio:.0f}x per cpu second "
            f"({'met' if min(ratio, cpu_ratio) >= 10 else 'not met'})."
        )
    if fd:
        out.append(
            f"- no recompilation for same-shaped data: {'met' if not fd.get('recompiled_on_warm_calls') else 'NOT met'}"
            " (COMPILE_COUNT over the warm calls; tests/test_speed.py also checks JAX's compilation log)."
        )
    fm = c.get("fit_many")
    if fm and "error" not in fm:
        cpu_ratio = (fm["loop_cpu"] / fm["loop_fits"]) / (fm["fit_many_cpu"] / fm["n_datasets"])
        out.append(
            f"- fit_many ≥ 20x the fits/s of a loop over fit: {fm['throughput_ratio']:.1f}x on wall, {cpu_ratio:.1f}x "
            f"per cpu second ({'met' if fm['throughput_ratio'] >= 20 else 'not met'})."
        )
    return out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--only", default=",".join(CASES), help="comma-separated case names")
    p.add_argument("--reps", type=int, default=3, help="warm calls per fit case (median reported)")
    p.add_argument("--many", type=int, default=1000, help="datasets for fit_many")
    p.add_argument("--loop", type=int, default=20, help="fits in the Python loop that fit_many is compared with")
    p.add_argument("--mem-warmup", type=int, default=200)
    p.add_argument("--mem-draws", type=int, default=200)
    p.add_argument("--case", help=argparse.SUPPRESS)
    p.add_argument("--render", action="store_true", help="only rewrite the tables from output/results.json")
    args = p.parse_args(argv)
    if args.render:
        md = markdown(json.loads((OUT / "results.json").read_text()))
        _write_results(md)
        print(md)
        return
    args.passthrough = [
        f"--reps={args.reps}",
        f"--many={args.many}",
        f"--loop={args.loop}",
        f"--mem-warmup={args.mem_warmup}",
        f"--mem-draws={args.mem_draws}",
    ]
    if args.case:  # child process: run one case, print one record
        rec = globals()[f"case_{args.case}"](args)
        print("RESULT " + json.dumps(rec), flush=True)
        return
    import jax
    import numpyro

    names = [n for n in args.only.split(",") if n]
    OUT.mkdir(exist_ok=True)
    path = OUT / "results.json"
    results = json.loads(path.read_text()) if path.exists() and args.only != ",".join(CASES) else {"cases": {}}
    for rec in results["cases"].values():  # cases kept from an earlier run keep that run's date
        rec.setdefault("ran_at", results.get("date"))
    results.update(
        {
            "date": time.strftime("%Y-%m-%d %H:%M"),
            "machine": {
                "cpu_count": os.cpu_count(),
                "platform": platform.platform(),
                "python": platform.python_version(),
                "jax": jax.__version__,
                "numpyro": numpyro.__version__,
                "gpu": False,
            },
        }
    )
    for name in names:
        print(f"[bench] {name} ...", flush=True)
        results["cases"][name] = {**_run_case(name, args), "ran_at": time.strftime("%Y-%m-%d %H:%M")}
        print(f"[bench] {name}: {json.dumps(results['cases'][name])[:400]}", flush=True)
        path.write_text(json.dumps(results, indent=2))
    md = markdown(results)
    _write_results(md)
    print(md)


#: Text below this line of ``benchmarks/RESULTS.md`` (analyses, A/B tables run outside this driver) is kept.
MARKER = "<!-- generated tables end; text below is kept by run.py -->"


def _write_results(md: str) -> None:
    """``output/results.md`` and ``RESULTS.md``: the generated tables, then whatever ``RESULTS.md`` held below
    :data:`MARKER`."""
    (OUT / "results.md").write_text(md)
    path = HERE / "RESULTS.md"
    old = path.read_text() if path.exists() else ""
    kept = old.split(MARKER, 1)[1] if MARKER in old else "\n"
    path.write_text(md.rstrip("\n") + "\n\n" + MARKER + kept)


if __name__ == "__main__":
    main()
