"""Shared fixtures. Fits are expensive (a compile of ~15-30 s on a 2-core CPU, then seconds per fit), so tests share
session-scoped posteriors and a few standard sampler settings: a fit with the same law, pooling, family count,
padded size and settings as an earlier one reuses its compiled sampler. ``bash run.sh test`` runs whole modules in
parallel processes (pytest-xdist): a session fixture is made once per process that needs it, and a program one
process compiled reaches the others through the persistent compilation cache and the stored programs."""

from __future__ import annotations

import gc
import os

import jax
import numpy as np
import pandas as pd
import pytest

# Persist XLA compilations between test runs on one machine (a fresh CI clone starts empty; harmless there).
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", os.path.join(os.path.dirname(__file__), "..", ".jax_cache"))
# Every compilation is kept, as scalebayes.enable_compilation_cache does for users: the suite's many small programs
# (eager operations of predict, plan, plots) are otherwise compiled again in each test process.
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
# The suite runs in several processes (run.sh: pytest-xdist); on a GPU each would otherwise reserve 75% of its memory.
os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")

import scalebayes as sb  # noqa: E402

# Importing scalebayes leaves JAX's precision alone; fits turn float64 on when called, but tests of the laws and
# planners call pure functions on arrays they build, so the whole session runs in float64 as the package does.
sb.use_float64()

#: Standard settings for tests that need a converged posterior (ESS ≥ 400 on chinchilla_epoch).
FULL = dict(chains=4, warmup=500, draws=500)
#: Settings for tests that only need draws of the right shape, not convergence.
QUICK = dict(chains=2, warmup=150, draws=100)
#: For fits in tests of anything but the run noise: the law alone. The default for laws of N and D (the cut noise
#: trend, :mod:`scalebayes.noise_refit`) adds a second fit after the law's, with programs of its own to compile for
#: every sampler setting and family count; the tests of that refit (test_noise_trend, test_checkpoints, test_fit's
#: extension test) and of the default path (the shared ``chinchilla_post``, the case study, the CLI, the two-family
#: report, backtests) keep it.
LAW_ONLY = dict(noise_trend="none")


@pytest.fixture(autouse=True, scope="module")
def _release_compiled_programs():
    """Free the compiled programs of each test module when it ends. Every CPU executable keeps ~1,000 memory maps
    alive (measured: two chinchilla fits of new shapes take the process from 1,017 to 4,200 maps;
    ``jax.clear_caches()`` brings it back to 1,259), so the whole suite in one process can pass Linux's default
    limit of 65,530 (``vm.max_map_count``): the likely cause of XLA's compiler crashing (signal 11 or 6) at the
    same test in two fresh clones. A later module that needs a program again reloads it from the persistent
    compilation cache."""
    yield
    jax.clear_caches()
    gc.collect()


@pytest.fixture(scope="session")
def chinchilla_data():
    return sb.datasets.load("chinchilla_epoch")


@pytest.fixture(scope="session")
def chinchilla_post(chinchilla_data):
    return sb.fit(chinchilla_data, seed=0, **FULL)


def simulate_chinchilla(params: dict, n: int = 60, *, sigma: float = 0.01, seed: int = 0, family: str | None = None):
    """Synthetic runs from the Chinchilla law on a log-uniform design (N 1e7–1e10, 5–200 tokens/param),
    with Gaussian noise of scale ``sigma`` on log loss. Returns a DataFrame with N, D, loss (and family)."""
    rng = np.random.default_rng(seed)
    N = 10 ** rng.uniform(7, 10, n)
    D = N * 10 ** rng.uniform(np.log10(5), np.log10(200), n)
    L = params["E"] + params["A"] * N ** -params["alpha"] + params["B"] * D ** -params["beta"]
    loss = L * np.exp(sigma * rng.standard_normal(n))
    df = pd.DataFrame({"N": N, "D": D, "loss": loss})
    if family is not None:
        df["family"] = family
    return df
