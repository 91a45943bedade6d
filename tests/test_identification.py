"""Which parameters the runs pin and which the prior sets (scalebayes.identification): a design with two model sizes
cannot separate the N exponent, and the fit says so in Python, on the command line and in the report; a design that
pins everything says nothing."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest

import scalebayes as sb
from scalebayes import identification
from scalebayes.errors import PriorDominatedWarning
from scalebayes.report import page, sections, write_report

#: Converged settings for the two-size design (its E-A-α ridge takes ~190 leapfrog steps per iteration): a
#: contraction read off unconverged chains would mean nothing.
SETTINGS = dict(chains=4, warmup=500, draws=500, seed=1, pointwise=False)


@pytest.fixture(scope="module")
def two_sizes():
    """20 runs of the Chinchilla law (Hoffmann-like parameters, 1% noise) at only two model sizes, 10 token counts
    each: the D-term is pinned, but E + A/N^α is seen at two N only, so α (and with it A) rests on the prior."""
    rng = np.random.default_rng(0)
    N = np.repeat([1e8, 1e9], 10)
    D = np.tile(np.geomspace(2e9, 2e11, 10), 2)
    loss = (1.7 + 400 / N**0.34 + 1500 / D**0.3) * np.exp(0.01 * rng.standard_normal(20))
    return sb.ScalingData.from_frame(pd.DataFrame({"N": N, "D": D, "loss": loss}), N="N", D="D", loss="loss")


def test_two_model_sizes_leave_alpha_to_the_prior(two_sizes, tmp_path):
    with pytest.warns(PriorDominatedWarning, match="barely pin alpha"):
        post = sb.fit(two_sizes, **SETTINGS)
    assert post.diagnostics.ok, post.diagnostics
    t = post.contraction.set_index("parameter")
    # The threshold 0.5 separates by a wide margin here: α's posterior s.d. is ~0.9 of the prior's (contraction
    # ~0.2), while β, pinned by ten token counts per size, keeps under an eighth of it (contraction > 0.98).
    assert t.loc["alpha", "prior_dominated"] and t.loc["alpha", "contraction"] < 0.5
    assert not t.loc["beta", "prior_dominated"] and t.loc["beta", "contraction"] > 0.9
    assert set(t.columns) >= {"latent", "family", "prior_sd", "posterior_sd", "contraction"}
    html = page.render_block(sections.prior_box(post.contraction))
    assert "Parameters set by the prior" in html and "alpha" in html
    report = write_report(post, tmp_path).read_text()  # the headline, read first, carries the caution too
    assert "Caution: the runs barely pin alpha" in report


def test_a_design_that_pins_everything_says_nothing(chinchilla_post):
    t = chinchilla_post.contraction
    assert not t["prior_dominated"].any() and t["contraction"].min() > 0.9  # 240 runs over 2.5 decades of N and D
    assert identification.message(t) == ""
    with warnings.catch_warnings():
        warnings.simplefilter("error", PriorDominatedWarning)
        identification.warn_if_prior_dominated(t, "fit")
    html = page.render_block(sections.prior_box(t))
    assert "The runs pin every parameter" in html


def test_per_family_rows_name_their_family():
    table = pd.DataFrame(
        {
            "latent": ["log_E", "log_E"],
            "parameter": ["E", "E"],
            "family": ["a", "b"],
            "prior_sd": [1.0, 1.0],
            "posterior_sd": [0.9, 0.1],
            "contraction": [0.19, 0.99],
            "prior_dominated": [True, False],
        }
    )
    text = identification.message(table)
    assert "barely pin E in families a:" in text and "families a, b" not in text
