"""Simulation-based calibration: the statistics, and a small SBC that a correct sampler passes and a broken one fails.

The full SBC (200 simulations per law and pooling) is ``case_studies/validation/run.py``; here 40 simulations of a
30-run design with short chains keep the check to ~1 CPU-minute (one compiled batch program, reused by both runs).
"""

from __future__ import annotations

import contextlib
import io

import numpy as np
import pandas as pd
import pytest

import scalebayes as sb
from scalebayes.validation import SBCResult, sbc

#: Small-SBC sampler settings: short chains (2 × 100 kept draws thinned to L = 49) are enough for ranks, because
#: SBC only needs the posterior draws to be (nearly) independent draws of the right distribution, not many of them.
#: progress=True in every SBC here, so that they share one compiled program (progress is compiled in or not).
SMALL = dict(chains=2, warmup=150, draws=100, n_rank=49, batch_size=20, progress=True)


@pytest.fixture(scope="module")
def design(chinchilla_data):
    # every 8th Chinchilla run: 30 runs spanning the real (N, D) design, padded to 32
    return chinchilla_data.subset(np.arange(len(chinchilla_data)) % 8 == 0)


@pytest.fixture(scope="module")
def sbc_ok(design):
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        out = sbc("chinchilla", design, n_sims=40, seed=0, **SMALL)
    PROGRESS_TEXT["sbc_ok"] = err.getvalue()  # for test_sbc_reports_progress
    return out


PROGRESS_TEXT: dict[str, str] = {}


def test_sbc_reports_progress(sbc_ok):
    text = PROGRESS_TEXT["sbc_ok"]
    assert "sbc: " in text and "20/40 datasets" in text and "40/40 datasets" in text, text
    assert "250/250 sampling" in text, text  # each batch's sampler bar (150 warm-up + 100 draws)


def test_correct_sampler_passes_small_sbc(sbc_ok):
    # Tolerance: the SBC fails when the Bonferroni-adjusted smallest pot_c p-value over the 8 test quantities is
    # below 0.01, i.e. a correct sampler fails for at most 1% of seeds (the seed is fixed, so the outcome is too).
    assert sbc_ok.n_sims == 40
    assert sbc_ok.ranks.shape == (40, 8)  # 5 latents, log σ, log ν, log-likelihood
    assert sbc_ok.ranks.to_numpy().min() >= 0 and sbc_ok.ranks.to_numpy().max() <= 49
    assert sbc_ok.passed(alpha=0.01), sbc_ok.tests()
    # Prior draws include awkward corners (an exponent near 0.1, E far below the reducible loss) where short chains
    # see a divergence or two: 25% of the 200 full-run simulations had at least one. Most must be clean.
    assert (sbc_ok.sims["divergences"] > 0).mean() < 0.5


def test_broken_sampler_fails_small_sbc(design):
    # Simulating with 1.5x the noise the fitted model assumes (a sampler with the wrong noise scale) puts σ's
    # truth above nearly every posterior draw. With 20 simulations the adjusted p-value is ~4e-16 (measured), so the
    # threshold 1e-3 (ten times stricter than the pass level above) leaves a margin of ten orders of magnitude.
    broken = sbc("chinchilla", design, n_sims=20, seed=0, corrupt="noise", **SMALL)
    assert not broken.passed(alpha=0.01)
    assert broken.p_value() < 1e-3
    t = broken.tests()
    assert t.loc["log_sigma", "mean_pit"] < 0.2  # the truth sits above the posterior of σ


def test_uniformity_statistics_have_power_and_size():
    # Pure statistics, no sampling: 200 uniform ranks pass, ranks piled in the middle (a too-wide posterior) fail.
    rng = np.random.default_rng(3)
    L = 99
    good = pd.DataFrame({"a": rng.integers(0, L + 1, 200), "b": rng.integers(0, L + 1, 200)})
    wide = pd.DataFrame({"a": np.clip(rng.normal(50, 12, 200).round(), 0, L).astype(int), "b": good["b"]})
    empty = pd.DataFrame({"divergences": np.zeros(200), "max_r_hat": np.ones(200)})
    ok = SBCResult("x", "complete", good, good * 0.0, empty, n_rank=L)
    bad = SBCResult("x", "complete", wide, wide * 0.0, empty, n_rank=L)
    assert ok.passed(0.01)
    assert bad.p_value() < 1e-6
    assert set(ok.tests().columns) == {"p_pot_c", "p_chi2", "mean_pit"}


def test_sbc_plot_and_summary(sbc_ok, tmp_path):
    path = tmp_path / "sbc.png"
    fig = sbc_ok.plot(path)
    assert path.exists() and path.stat().st_size > 10_000
    s = sbc_ok.summary()
    assert s["n_sims"] == 40 and "p_value_adjusted" in s and set(s["p_pot_c"]) == set(sbc_ok.ranks.columns)
    import matplotlib.pyplot as plt

    plt.close(fig)


def test_sbc_rejects_bad_options(design):
    with pytest.raises(sb.errors.ModelError):
        sbc("chinchilla", design, n_sims=4, corrupt="nonsense")
    with pytest.raises(sb.errors.ModelError):
        sbc("chinchilla", design, n_sims=4, chains=1, draws=10, n_rank=49)


@pytest.mark.slow
@pytest.mark.parametrize("law", ["kaplan", "compute"])
def test_sbc_other_laws(design, law):
    # The full 200-simulation runs are case_studies/validation/run.py; this is a 60-simulation check per law.
    r = sbc(law, design, n_sims=60, seed=1, **SMALL)
    assert r.passed(alpha=0.01), r.tests()


def test_the_noise_trend_passes_small_sbc(design):
    # The noise trend's model (ζ ~ Normal(0, 0.5) on the log scale's slope in log D/N) simulated and refitted at
    # Chinchilla's design, whose log D/N spans ~4 nats: ζ is one of the ranked quantities, and the same Bonferroni
    # 1% rule as above applies (a correct sampler fails it for at most 1% of seeds).
    with contextlib.redirect_stderr(io.StringIO()):
        out = sbc("chinchilla", design, n_sims=40, seed=0, noise_trend="tokens_per_parameter", **SMALL)
    assert "sigma_trend" in out.ranks.columns and out.ranks.shape == (40, 9)
    assert out.passed(alpha=0.01), out.tests()
