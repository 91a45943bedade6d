"""Checkpoints of one run are not independent runs (scalebayes.checkpoints, ScalingData.from_frame(run=...))."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest
from numpyro.infer.util import initialize_model

import scalebayes as sb
from scalebayes import sampler as S
from scalebayes.checkpoints import intra_run_correlation, weights
from scalebayes.errors import DataError
from scalebayes.fitting import prepare
from scalebayes.model import model

TRUTH = {"E": 1.8, "A": 480.0, "B": 2000.0, "alpha": 0.35, "beta": 0.37}


def _checkpoints(runs: int = 12, per_run: int = 20, run_sd: float = 0.02, noise: float = 0.003, seed: int = 0):
    """``runs`` training runs of the Chinchilla law, each seen at ``per_run`` checkpoints (D from 2 to 100 tokens
    per parameter), each run's losses shifted by its own offset (s.d. ``run_sd`` on log loss) plus noise."""
    rng = np.random.default_rng(seed)
    rows = []
    for r in range(runs):
        N = 10 ** rng.uniform(7, 9.5)
        D = N * np.geomspace(2, 100, per_run)
        L = TRUTH["E"] + TRUTH["A"] * N ** -TRUTH["alpha"] + TRUTH["B"] * D ** -TRUTH["beta"]
        loss = L * np.exp(rng.normal(0, run_sd) + rng.normal(0, noise, per_run))
        rows.append(pd.DataFrame({"N": N, "D": D, "loss": loss, "run_id": f"r{r}"}))
    return pd.concat(rows, ignore_index=True)


def test_intra_run_correlation_recovers_a_known_correlation():
    # 60 groups of 10, between-group s.d. 2, within 1: ρ = 4/5. The ANOVA estimator's s.e. here is ~0.04.
    rng = np.random.default_rng(1)
    g = np.repeat(np.arange(60), 10)
    r = rng.normal(0, 2, 60)[g] + rng.normal(0, 1, 600)
    assert intra_run_correlation(r, g) == pytest.approx(0.8, abs=0.1)
    assert intra_run_correlation(rng.normal(0, 1, 600), g) < 0.1  # independent rows


def test_run_labels_are_checked():
    df = _checkpoints(runs=3, per_run=5)
    with pytest.raises(DataError, match="run column 'nope' not found"):
        sb.ScalingData.from_frame(df, N="N", D="D", loss="loss", run="nope")
    df.loc[4, "run_id"] = None
    with pytest.raises(DataError, match="missing labels"):
        sb.ScalingData.from_frame(df, N="N", D="D", loss="loss", run="run_id")


def test_checkpoints_of_one_run_weigh_about_one_run():
    # Strong run offsets (0.02) against little noise (0.003): ρ̂ is high, and 12 runs × 20 checkpoints count as
    # between 12 and 24 effective runs, not 240. Without run labels every row weighs 1.
    data = sb.ScalingData.from_frame(_checkpoints(), N="N", D="D", loss="loss", run="run_id")
    w, info = weights(data, sb.laws.get("chinchilla"))
    assert info["intra_run_correlation"] > 0.8 and 12 <= info["effective_runs"] <= 24
    assert np.allclose(w, w[0])  # equal run sizes: equal weights
    w_plain, info_plain = weights(sb.ScalingData.from_frame(_checkpoints(), N="N", D="D", loss="loss"), None)
    assert info_plain is None and np.array_equal(w_plain, np.ones(240))


def test_weighted_potential_equals_numpyro():
    # the weights enter the potential as they enter NumPyro's model (numpyro.handlers.scale): equal to rounding
    data = sb.ScalingData.from_frame(_checkpoints(runs=4, per_run=6), N="N", D="D", loss="loss", run="run_id")
    prep = prepare(data)
    assert not np.allclose(np.asarray(prep.args[3])[: len(data)], 1.0)
    _, pe_gen, _, _ = initialize_model(
        jax.random.key(0), functools.partial(model, prep.spec), model_args=prep.args, dynamic_args=True
    )
    pe = jax.jit(pe_gen(*prep.args))
    pot = jax.jit(lambda q: S.make_potential(prep.spec)(q, *prep.args))
    D = S.n_dim(prep.spec)
    q = S.init_position(prep.spec, prep.args[-1], jnp.zeros(D), 0.0, jnp.float64) + 0.2
    assert float(pot(q)) == pytest.approx(float(pe(S.unflatten(prep.spec, q))), rel=1e-10, abs=1e-8)


def test_a_fit_with_run_labels_is_less_sure():
    # The same 240 rows fitted as independent runs and as checkpoints of 12 runs: with the run labels the posterior
    # of E (the loss floor) is wider, since the runs' shared offsets no longer count 20 times (measured: 9x for E,
    # 5x for α and β, with ρ̂ = 0.98 and 12.2 effective runs). Expected ratio
    # ~sqrt(240 / ~15) ≈ 4 for a quantity the offsets confound; 1.5 leaves room for Monte Carlo error of short chains.
    # 4 x 500 draws: the chains and draws of the shared chinchilla fixture, whose programs (law and noise refit,
    # 240 runs as here) these fits then run instead of compiling their own; warm-up is not part of them.
    df = _checkpoints()
    kw = dict(chains=4, warmup=300, draws=500, seed=0, progress=False, warn=False)
    plain = sb.fit(sb.ScalingData.from_frame(df, N="N", D="D", loss="loss"), **kw)
    runs = sb.fit(sb.ScalingData.from_frame(df, N="N", D="D", loss="loss", run="run_id"), **kw)
    sd = lambda p: float(np.std(np.asarray(p.idata["posterior"]["E"])))  # noqa: E731
    assert sd(runs) > 1.5 * sd(plain)
    assert runs.meta["checkpoints"]["runs"] == 12
    # so does the default's noise refit after the fit (scalebayes.noise_refit, the fit's own weights): its trend ζ
    # is less sure with the labels, by the same reasoning and margin
    zeta_sd = lambda p: float(np.std(np.asarray(p.run_noise().trend)))  # noqa: E731
    assert runs.noise_trend and zeta_sd(runs) > 1.5 * zeta_sd(plain)
