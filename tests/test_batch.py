"""``fit_many``: many fits in one program, per-dataset diagnostics identical to ``fit``'s, failures flagged, and the
dataset axis sharded over several (CPU) devices. Throughput is measured by ``benchmarks/run.py``, not here."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import warnings

import numpy as np
import pytest
from conftest import QUICK, simulate_chinchilla

import scalebayes as sb
from scalebayes import noise_refit
from scalebayes.batch import FitBatch
from scalebayes.diagnostics import compute

TRUE = dict(E=1.69, A=406.4, B=410.7, alpha=0.34, beta=0.28)


def _datasets(sizes=(40, 45, 33)):
    out = []
    for i, n in enumerate(sizes):
        df = simulate_chinchilla(TRUE, n=n, sigma=0.02, seed=10 + i)
        out.append(sb.ScalingData.from_frame(df, N="N", D="D", loss="loss", name=f"sim{i}"))
    return out


@pytest.fixture(scope="module")
def quick_batch():
    data = _datasets()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        batch = sb.fit_many(data, **QUICK)
    return data, batch, caught


def test_fit_many_returns_lazy_posteriors_with_diagnostics(quick_batch):
    data, batch, _ = quick_batch
    assert isinstance(batch, FitBatch) and len(batch) == 3
    assert not batch._cache  # nothing built yet
    post = batch[1]
    assert isinstance(post, sb.Posterior) and batch[1] is post
    assert post.data is data[1] and len(post.data) == 45
    assert post.posterior.sizes["chain"] == QUICK["chains"] and post.posterior.sizes["draw"] == QUICK["draws"]
    assert len(post.idata["observed_data"]["log_loss"]) == 45  # padding rows never reach the posterior
    assert batch[-1].data is data[2] and [p.data for p in batch[0:2]] == data[:2]
    with pytest.raises(IndexError):
        batch[3]
    frame = batch.summary()
    assert list(frame["dataset"]) == ["sim0", "sim1", "sim2"]
    assert {"E_mean", "alpha_sd", "r_hat_max", "ess_bulk_min", "ok"} <= set(frame.columns)


def test_fit_many_diagnostics_are_arviz_diagnostics(quick_batch):
    """The batch's diagnostics for each dataset equal ArviZ's on that dataset's posterior: the law's fit joined with
    its noise refit's (the default cut trend), as ``fit``'s are."""
    _, batch, _ = quick_batch
    for i in range(len(batch)):
        post = batch[i]
        law = compute(post.posterior, post.idata["sample_stats"].to_dataset())
        ref = noise_refit.with_diagnostics(law, post.idata[noise_refit.GROUP].to_dataset())
        got = batch.diagnostics[i]
        assert got.r_hat_max == pytest.approx(ref.r_hat_max, rel=1e-9)
        assert got.ess_bulk_min == pytest.approx(ref.ess_bulk_min, rel=1e-9)
        assert got.ess_tail_min == pytest.approx(ref.ess_tail_min, rel=1e-9)
        assert got.divergences == ref.divergences
        # same failures (the refit's variables may come in another order); the variable named for a tie (a and
        # b = 1 - a have identical ESS) may differ in the last bit
        assert sorted(f.split(" (")[0] for f in got.failures) == sorted(f.split(" (")[0] for f in ref.failures)
        assert sorted(got.table.index) == sorted(ref.table.index)


def test_fit_many_flags_failures(quick_batch):
    """QUICK settings (2 chains x 100 draws) cannot reach ESS 400: every dataset is flagged, with one warning."""
    _, batch, caught = quick_batch
    assert not batch.ok.any() and batch.failed == [0, 1, 2]
    assert all(any("ESS" in f for f in d.failures) for d in batch.diagnostics)
    msgs = [str(w.message) for w in caught if issubclass(w.category, sb.errors.SamplingWarning)]
    assert len(msgs) == 1 and "3 of 3" in msgs[0]


# One slot (every dataset but one waits in the queue) and three threads of one dataset each (as many parts as
# datasets) are the extremes of each kind; each setting compiles a program of its own, so the suite keeps two.
@pytest.mark.parametrize("opts", [dict(slots=1), dict(workers=3)])
def test_fit_many_scheduling_does_not_change_draws(quick_batch, opts):
    """Streaming the datasets through fewer slots than datasets (a queue; each dataset passes its warm-up windows on
    its own) or splitting the batch over parallel threads (parts padded to one shape) changes when each dataset runs,
    not its numbers: its draws come from its own random stream and its start is computed on its own."""
    data, batch, _ = quick_batch
    other = sb.fit_many(data, warn=False, **opts, **QUICK)
    for i in range(len(data)):
        for name in ("alpha", "beta", "E"):
            np.testing.assert_array_equal(other[i].draws(name), batch[i].draws(name))
        np.testing.assert_array_equal(other[i].run_noise().sigma, batch[i].run_noise().sigma)  # the refits' too
        assert other.diagnostics[i].divergences == batch.diagnostics[i].divergences


def test_fit_many_reuses_its_program_for_nearby_batch_sizes():
    """A queue longer than the slots is padded with fully masked datasets to a bucketed length (9 and 10 datasets
    both run as 10), so the second call does not recompile, and the padding changes no dataset's numbers."""
    from scalebayes import sampler as S
    from scalebayes.batch import _bucket

    assert [_bucket(n, 32) for n in (3, 32, 33, 100, 500, 1000)] == [3, 32, 40, 112, 512, 1024]
    assert all(n <= _bucket(n, 2) <= 1.25 * n for n in range(1, 3000))
    data = _datasets((20,) * 10)
    kw = dict(QUICK, slots=2, workers=1, warn=False, chains=2)
    ten = sb.fit_many(data, **kw)
    n0 = S.COMPILE_COUNT["n"]
    nine = sb.fit_many(data[:9], **kw)
    assert S.COMPILE_COUNT["n"] == n0
    for i in range(9):
        np.testing.assert_array_equal(nine[i].draws("alpha"), ten[i].draws("alpha"))


def test_fit_many_validates_every_dataset():
    bad = _datasets((40,))[0]
    with pytest.raises(sb.errors.DataError):
        sb.fit_many([])
    with pytest.raises(sb.errors.DataError):
        sb.fit_many([bad, "not data"], **QUICK)


SHARDED = textwrap.dedent(
    """
    import sys
    sys.path.insert(0, "tests")
    import jax, jax.numpy as jnp, numpy as np
    import scalebayes as sb
    from scalebayes import sampler as S
    from scalebayes.padding import pad_size
    from scalebayes.fitting import prepare
    from conftest import simulate_chinchilla
    TRUE = dict(E=1.69, A=406.4, B=410.7, alpha=0.34, beta=0.28)
    data = [sb.ScalingData.from_frame(simulate_chinchilla(TRUE, n=40, sigma=0.02, seed=i), N="N", D="D",
                                      loss="loss") for i in range(6)]
    kw = dict(chains=2, warmup=150, draws=200, likelihood="normal", warn=False)
    n0 = S.COMPILE_COUNT["n"]
    sharded = sb.fit_many(data, **kw)  # 6 datasets padded to 8, two per device
    again = sb.fit_many(data, **kw)
    a, b = (np.stack([r[i].draws("alpha") for i in range(6)]) for r in (sharded, again))
    # the same compiled program, called directly: its output lives on 4 devices
    preps = [prepare(d, likelihood="normal", n_pad=pad_size(40)) for d in data + data[-1:] * 2]
    args = jax.tree.map(lambda *x: jnp.stack(x), *[p.args for p in preps])
    keys = jnp.stack([jax.random.key(i) for i in range(8)])
    cfg = S.SamplerConfig(chains=2, warmup=150, draws=200)
    out = S.batch_sampler(preps[0].spec, pad_size(40), cfg, "float64", 4, sb.batch.DEFAULT_SLOTS)(keys, *args)
    print("devices", jax.device_count(), len(out[1]["energy"].sharding.device_set))
    print("compiles", S.COMPILE_COUNT["n"] - n0)
    print("repeat_diff", float(np.max(np.abs(a - b))))
    s0, s1 = (np.stack([np.asarray(r[i].run_noise().sigma) for i in range(6)]) for r in (sharded, again))
    print("refit_repeat_diff", float(np.max(np.abs(s0 - s1))))
    z = (a.mean(1) - TRUE["alpha"]) / a.std(1)
    print("max_abs_z", float(np.abs(z).max()))
    """
)


def test_fit_many_shards_over_devices():
    """With 4 CPU devices (XLA_FLAGS, set before JAX starts: hence a subprocess) the dataset axis is sharded: one
    compiled program whose output lives on 4 devices, reproducible, and recovering the simulated exponent. (Draws
    are not bit-identical to the one-device program's: a different program shape rounds differently, and NUTS's
    discrete choices then diverge; ``benchmarks/`` compares the two statistically.)"""
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=4")
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    out = subprocess.run(
        [sys.executable, "-c", SHARDED], capture_output=True, text=True, env=env, cwd=root, timeout=900
    )
    assert out.returncode == 0, out.stderr[-3000:]
    lines = dict(line.split(" ", 1) for line in out.stdout.strip().splitlines())
    assert lines["devices"] == "4 4"
    assert lines["compiles"] == "2"  # the laws' program and the noise refits' (the default cut trend), once each
    assert float(lines["repeat_diff"]) == 0.0 and float(lines["refit_repeat_diff"]) == 0.0
    assert float(lines["max_abs_z"]) < 4.0
