"""The misfit check: residual trends against N, D, C and family (scalebayes.misfit)."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
from conftest import simulate_chinchilla

import scalebayes as sb
from scalebayes import misfit
from scalebayes.errors import MisfitWarning

TRUTH = {"E": 1.8, "A": 480.0, "B": 2000.0, "alpha": 0.35, "beta": 0.37}


def _stub(df: pd.DataFrame, params: dict[str, dict[str, float]]):
    """A stand-in posterior whose parameters are ``params[family]``: the check needs only data, law, families and
    parameter medians, so no sampling is needed to test it."""
    fam = "family" if "family" in df else None
    data = sb.ScalingData.from_frame(df, N="N", D="D", loss="loss", family=fam, name="synthetic")
    return SimpleNamespace(
        data=data, law=sb.laws.get("chinchilla"), families=data.families, param_medians=params.__getitem__
    )


def test_a_well_specified_fit_is_not_flagged():
    # 200 runs from the law itself with 1% noise: no check may be flagged (the p-value threshold makes a false
    # alarm a 1-in-250 event, and the effect floor needs a median of half the scatter)
    df = simulate_chinchilla(TRUTH, n=200, sigma=0.01, seed=4)
    m = misfit.check(_stub(df, {"all": TRUTH}))
    assert list(m.table["against"]) == ["log N", "log D", "log C"]
    assert not m.flagged and m.message() == ""


def test_curvature_the_law_lacks_is_flagged():
    # The true loss bends away from the law as compute grows (5e-4·(log C − log C_min)², up to ~16%); the law at the
    # true parameters leaves residuals that rise with log C: flagged, with the trend's direction in the message.
    df = simulate_chinchilla(TRUTH, n=200, sigma=0.01, seed=4)
    log_c = np.log(6 * df["N"] * df["D"])
    df["loss"] *= np.exp(5e-4 * (log_c - log_c.min()) ** 2)
    m = misfit.check(_stub(df, {"all": TRUTH}))
    row = m.table.set_index("against").loc["log C"]
    assert row["flagged"] and row["medians"][-1] > row["medians"][0]
    with pytest.warns(MisfitWarning, match="log C"):
        misfit.warn_if_misfit(m, "fit of 'chinchilla'")


def test_a_family_offset_is_flagged_by_family():
    # Two families fitted with one set of parameters while one runs 3% above it (3x the noise): the family check
    # catches what a heavy-tailed likelihood could call noise.
    a = simulate_chinchilla(TRUTH, n=80, sigma=0.01, seed=5, family="a")
    b = simulate_chinchilla(TRUTH, n=80, sigma=0.01, seed=6, family="b")
    b["loss"] *= 1.03
    m = misfit.check(_stub(pd.concat([a, b], ignore_index=True), {"a": TRUTH, "b": TRUTH}))
    row = m.table.set_index("against").loc["family"]
    assert row["flagged"] and row["medians"][1] == pytest.approx(0.03, abs=0.01)
