"""Progress reporting from inside the compiled loop: it reports, and it changes no draw."""

from __future__ import annotations

import re

import jax
import jax.numpy as jnp
import numpy as np
from conftest import LAW_ONLY, simulate_chinchilla

import scalebayes as sb
from scalebayes import progress
from scalebayes import sampler as S
from scalebayes.fitting import prepare

TRUE = dict(E=1.69, A=406.4, B=410.7, alpha=0.34, beta=0.28)


def test_progress_reports_and_changes_no_draw(chinchilla_data, capsys):
    """Same seed, same numbers with and without the progress callback compiled in; with it, stderr gets plain lines
    (not a terminal under pytest) up to the last iteration."""
    kw = dict(seed=5, chains=2, warmup=150, draws=100, warn=False, pointwise=False, **LAW_ONLY)
    off = sb.fit(chinchilla_data, progress=False, **kw)
    capsys.readouterr()
    on = sb.fit(chinchilla_data, progress=True, **kw)
    err = capsys.readouterr().err
    # one line per 10% of the 250 iterations, each naming its own count and phase (warm-up up to 150)
    reports = re.findall(r"(\d+)/250 (warm-up|sampling)", err)
    assert reports == [(str(k), "warm-up" if k <= 150 else "sampling") for k in range(25, 251, 25)], err
    for name in ("E", "alpha", "beta", "sigma", "nu"):
        np.testing.assert_array_equal(on.draws(name), off.draws(name))
    np.testing.assert_array_equal(on.idata["sample_stats"]["energy"], off.idata["sample_stats"]["energy"])


def test_progress_line_and_auto_mode():
    line = progress.format_line(50, 200, "warm-up", 10.0)
    assert "25%" in line and "50/200 warm-up" in line and "ETA 30s" in line
    assert "datasets 3/8" in progress.format_line(3, 8, "sampling", 1.0, (3, 8))
    assert progress.enabled(False) is False and progress.enabled(True) is True
    assert progress.enabled(None) is False  # pytest captures stderr: not a terminal, not a notebook


def test_streaming_program_reports_datasets_and_changes_no_draw(capsys):
    """The batch program (three datasets through two slots) reports datasets finished; same draws without it."""
    data = [
        sb.ScalingData.from_frame(simulate_chinchilla(TRUE, n=30, sigma=0.02, seed=i), N="N", D="D", loss="loss")
        for i in range(3)
    ]
    preps = [prepare(d, likelihood="normal", n_pad=32) for d in data]
    args = jax.tree.map(lambda *x: jnp.stack(x), *[p.args for p in preps])
    keys = jnp.stack([jax.random.key(i) for i in range(3)])
    out = {}
    for on in (False, True):
        cfg = S.SamplerConfig(chains=2, warmup=100, draws=50, progress=on)
        capsys.readouterr()
        out[on] = S.to_numpy(S.batch_sampler(preps[0].spec, 32, cfg, "float64", 1, 2)(keys, *args))
        err = capsys.readouterr().err
        assert ("datasets 3/3" in err) == on, err
    for k in out[False][0]:
        np.testing.assert_array_equal(out[True][0][k], out[False][0][k])
