"""The reference path: NumPyro's own NUTS on the same model gives the same posterior as scalebayes's sampler."""

from __future__ import annotations

import arviz_stats as azs
import numpy as np
import pytest
from conftest import LAW_ONLY

import scalebayes as sb
from scalebayes.errors import UnknownNameError

NAMES = ("E", "alpha", "beta", "a", "sigma", "nu")


def _mean_and_mcse(post, name):
    da = post.posterior[name]
    return float(da.mean()), float(azs.mcse(da.to_dataset(), method="mean")[name])


def test_numpyro_reference_agrees_with_our_sampler(chinchilla_data):
    """Posterior means of both samplers (fixed seeds) agree within Monte Carlo error: each mean is normal around the
    true posterior mean with s.d. ≈ its MCSE, so the difference has s.d. sqrt(mcse1² + mcse2²), and 4 s.d. bounds
    it for all six parameters with probability ≈ 1 - 6·6e-5. The reference's MCSE estimate is itself noisy with
    its 400 draws, a reason not to go tighter. Ours takes 4 × 500 draws, the shared fixture's chains and draws, so
    that it runs that fit's programs (warm-up length is not part of them) rather than compiling its own."""
    kw = dict(seed=3, chains=4, warmup=300, warn=False, pointwise=False, **LAW_ONLY)
    ours = sb.fit(chinchilla_data, draws=500, **kw)
    ref = sb.fit(chinchilla_data, sampler="numpyro", draws=100, **kw)
    assert ref.diagnostics.divergences == 0 and ref.diagnostics.r_hat_max < 1.05
    assert set(ref.posterior.data_vars) == set(ours.posterior.data_vars)
    for name in NAMES:
        (m1, e1), (m2, e2) = _mean_and_mcse(ours, name), _mean_and_mcse(ref, name)
        assert abs(m1 - m2) < 4.0 * np.hypot(e1, e2), (name, m1, m2, e1, e2)


def test_unknown_sampler_name_is_refused(chinchilla_data):
    with pytest.raises(UnknownNameError):
        sb.fit(chinchilla_data, sampler="hmc", draws=10, warmup=10)
