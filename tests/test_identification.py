"""Which parameters the runs pin and which the prior sets (scalebayes.identification): a design with two model sizes
cannot separate the N exponent, and the fit says so in Python, on the command line and in the report; a design that
pins everything says nothing."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
from conftest import LAW_ONLY

import scalebayes as sb
from scalebayes import identification
from scalebayes.errors import PriorDominatedWarning
from scalebayes.report import page, sections, write_report

#: Converged settings for the two-size design (its E-A-α ridge takes ~190 leapfrog steps per iteration): a
#: contraction read off unconverged chains would mean nothing.
SETTINGS = dict(chains=4, warmup=500, draws=500, seed=1, pointwise=False, **LAW_ONLY)


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
    with pytest.warns(PriorDominatedWarning) as said:
        post = sb.fit(two_sizes, **SETTINGS)
    texts = [str(w.message) for w in said]
    # said twice: before sampling from the design alone, after it from the posterior's contraction
    assert any("only 2 distinct values of N in 20 runs" in t for t in texts), texts
    assert any("barely pin alpha" in t for t in texts), texts
    # Converged enough for a posterior s.d. (the premise): the package's own bar is ESS 400 in bulk and tail, which
    # this ridge's E reaches only just, on some CPUs after sampling on once and on others not (tail ESS 390 of
    # 4000 draws). A standard deviation needs the chains to agree and a few hundred effective draws, not the tail.
    d = post.diagnostics
    assert d.r_hat_max < 1.01 and d.ess_bulk_min > 300 and d.divergences == 0, d
    t = post.contraction.set_index("parameter")
    # The threshold 0.5 separates by a wide margin here: α's posterior s.d. is ~0.9 of the prior's (contraction
    # ~0.2), while β, pinned by ten token counts per size, keeps under an eighth of it (contraction > 0.98).
    assert t.loc["alpha", "prior_dominated"] and t.loc["alpha", "contraction"] < 0.5
    assert not t.loc["beta", "prior_dominated"] and t.loc["beta", "contraction"] > 0.9
    assert set(t.columns) >= {"latent", "family", "prior_sd", "posterior_sd", "contraction"}
    html = page.render_block(sections.prior_box(post.contraction))
    assert "Parameters set by the prior" in html and "alpha" in html
    # The headline, read first, carries the caution too. A report shows that headline only for a fit that passed
    # its diagnostics (else the failure is the headline); this ridge's tail ESS passes on some CPUs, not others, so
    # the headline is also rendered on its own.
    headline = page.render_block(sections._headline(sections.Context(post, tmp_path, [10.0], [1e22])))
    assert "Caution: the runs barely pin alpha" in headline
    report = write_report(post, tmp_path).read_text()
    assert ("Caution: the runs barely pin alpha" in report) == post.diagnostics.ok


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


def _families(designs: dict) -> sb.ScalingData:
    """Runs of the Chinchilla law (no noise: the design check reads N and D only) for each family's (N, D)."""
    rows = [
        pd.DataFrame({"family": f, "N": N, "D": D, "loss": 1.7 + 400 / N**0.34 + 1500 / D**0.3})
        for f, (N, D) in designs.items()
    ]
    return sb.ScalingData.from_frame(pd.concat(rows), N="N", D="D", loss="loss", family="family")


def test_design_names_families_whose_runs_cannot_separate_N_and_D():
    """Before sampling: D = 20·N (Chinchilla-optimal runs only), one token count (final checkpoints of one
    schedule) and two token counts each leave the D term's split from the N term to the prior; an isoFLOP grid
    (3 budgets × 4 sizes) and a 3 × 3 grid do not."""
    N = np.geomspace(1e8, 1e10, 6)
    Ng = np.repeat([1e8, 1e9, 1e10], 3)
    iso_N = np.tile(np.geomspace(1e8, 2e9, 4), 3)
    iso_D = np.repeat([1e19, 1e20, 1e21], 4) / (6 * iso_N)
    designs = {
        "ratio20": (N, 20 * N),
        "one_D": (N, np.full(6, 3e11)),
        "two_D": (np.repeat([1e8, 1e9, 1e10], 2), np.tile([2e9, 2e11], 3)),
        "grid": (Ng, np.tile([2e9, 2e10, 2e11], 3)),
        "isoflop": (iso_N, iso_D),
    }
    data = _families(designs)
    t = identification.design(data, sb.laws.get("chinchilla")).set_index(["family", "input"])
    # a pair that moves together is said once, on N
    assert t.loc[("ratio20", "N"), "reason"].startswith("N varies only together with D (s.d. of log N beyond")
    assert t.loc[("ratio20", "D"), "reason"] == "" and t.loc[("ratio20", "D"), "alone_sd"] < 1e-9
    assert t.loc[("one_D", "D"), "reason"] == "only 1 distinct value of D"
    assert t.loc[("two_D", "D"), "reason"] == "only 2 distinct values of D"
    assert (t.loc[["grid", "isoflop"], "reason"] == "").all()
    assert t.loc[("one_D", "N"), "reason"] == t.loc[("two_D", "N"), "reason"] == ""
    spec = sb.fitting.model_spec(sb.FitSpec(law="chinchilla"), data)  # partial pooling: 5 families
    text = identification.design_for(data, spec)
    assert [line.split(":")[0] for line in text.splitlines()] == [
        "family 'ratio20'",
        "family 'one_D'",
        "family 'two_D'",
    ]
    assert "the other families and the prior will set that split" in text
    with pytest.warns(PriorDominatedWarning, match="family 'one_D': only 1 distinct value of D"):
        identification.warn_if_poor_design(data, spec, "fit")


def test_design_under_complete_pooling_reads_all_runs_together():
    """Families that share every parameter are one design: two one-token-count families at different token counts
    and sizes separate the terms together."""
    N = np.geomspace(1e8, 1e10, 6)
    data = _families({"a": (N, np.full(6, 2e10)), "b": (N, np.full(6, 2e11)), "c": (N, np.full(6, 2e12))})
    pooled = sb.fitting.model_spec(sb.FitSpec(law="chinchilla"), data)
    assert identification.design_for(data, pooled).count("only 1 distinct value of D") == 3
    complete = sb.fitting.model_spec(sb.FitSpec(law="chinchilla", pooling="complete"), data)
    assert identification.design_for(data, complete) == ""
    t = identification.design(data, sb.laws.get("chinchilla"), per_family=False)
    assert set(t["family"]) == {"all"} and (t["distinct"] == [6, 3]).all()
    assert identification.design(data, sb.laws.get("compute")).empty  # a law of C alone has no N/D split
