"""The datablations loader (Muennighoff et al. 2023 runs) and a data-constrained fit on them."""

import importlib.util
from pathlib import Path

import numpy as np
import pytest
from conftest import LAW_ONLY

import scalebayes as sb
from scalebayes import datasets
from scalebayes.errors import UnknownNameError

ROOT = Path(__file__).resolve().parents[1]


def _case_module(name: str):
    spec = importlib.util.spec_from_file_location(f"datablations_{name}", ROOT / "case_studies/datablations" / name)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def paper():
    return datasets.load("datablations")


@pytest.fixture(scope="module")
def every():
    return datasets.load("datablations", subset="all")


def test_all_runs_are_the_file_plus_the_missing_fit_run(every):
    raw = datasets.raw("datablations")
    assert len(raw) == 229 and len(every) == 230 and every.excluded.empty
    assert "8b7178b13b" in every.frame.index and "8b7178b13b" not in set(raw["model_args"].str[10:-2])
    assert every.frame.loc["8b7178b13b", "loss"] == pytest.approx(2.451606)


def test_row_seven_is_corrected(every):
    raw = datasets.raw("datablations")
    assert raw.loc[7, "model_args"] == "{'name': '2b855b1b25'}" and raw.loc[7, "epochs"] == pytest.approx(2.204)
    run = every.frame.loc["2b855b1b25"]
    assert run["D"] == pytest.approx(5.5e10) and run["U"] == pytest.approx(1.25e9)
    assert run["D"] / run["U"] == pytest.approx(44.0)
    assert run["C"] == pytest.approx(6 * 2.81e9 * 5.5e10)


def test_unique_tokens_match_the_run_names(every):
    # The name's middle and last parts are D and U ("146m14b400m": 14B tokens, 400M unique); spot-check a few.
    f = every.frame
    assert f.loc["146m14b400m", ["D", "U"]].tolist() == pytest.approx([14e9, 400e6])
    assert f.loc["2b855b11b", ["D", "U"]].tolist() == pytest.approx([55e9, 11e9])
    assert (f["U"] <= f["D"] * (1 + 1e-12)).all()


def test_paper_subset_is_182_runs_and_records_the_48_left_out(paper, every):
    assert len(paper) == 182 and len(paper.excluded) == 48
    assert set(paper.excluded.index) == set(datasets.DATABLATIONS_PAPER_EXCLUDED)
    assert paper.excluded["reason"].str.contains("Muennighoff").all()
    # nothing dropped silently: kept + excluded is every run
    assert sorted([*paper.frame.index, *paper.excluded.index]) == sorted(every.frame.index)
    # the two runs that diverged most (11.02 and 10.70 nats, SOURCE.md caveat 3) are among the excluded
    assert {"1b566b100m", "2b836b100m"} <= set(paper.excluded.index) and paper.frame["loss"].max() < 10.0


def test_unknown_subset_names_the_choices():
    with pytest.raises(UnknownNameError, match="paper"):
        datasets.load("datablations", subset="nope")


def test_source_names_licence_and_citation():
    text = datasets.source("datablations")
    assert "MIT" in text and "International Business Machines" in text and "muennighoff2023scaling" in text


def test_case_study_law_reproduces_the_readme_unit_tests():
    # Upstream README: the paper's fit gives these two losses; the case study's law must match to rounding.
    lp = _case_module("laws_paper.py")
    got = [
        float(lp.paper_fixed.loss(lp.PAPER_RSTAR, N=N, D=D, U=U))
        for N, D, U in [(6.34e9, 242e9, 25e9), (8.67e9, 178e9, 25e9)]
    ]
    assert got == pytest.approx([2.2256440889984477, 2.2269634075087867], rel=1e-12, abs=0)


def test_data_constrained_fit_pins_r_star(paper):
    """The package's data-constrained law on the 182 runs: the data, not the prior, set R*_D.

    Prior: log R* ~ Normal(log 15, 1). A 4 x 1000 fit gives R*_D ≈ 31 with a 90% interval of about 25-38 (sd of
    log R* ≈ 0.12). Asserted with wide margins for 2 short chains: median in [10, 100] (the paper's ridge spans
    8-100 epochs, SOURCE.md) and posterior sd of log R* below half the prior's; were U ignored (D' = D) the
    posterior would be the prior (median 15, sd 1), which fails the second check."""
    post = sb.fit(paper, law="data_constrained", chains=2, draws=300, warmup=300, seed=1, warn=False, **LAW_ONLY)
    log_r = np.log(post.draws("R_star"))
    assert 10.0 < np.exp(np.median(log_r)) < 100.0
    assert np.std(log_r) < 0.5


@pytest.mark.slow
def test_case_study_builds_its_report(tmp_path):
    """run.py --quick end to end on two of its four fits: report sections, figures and the unit-test rows."""
    mod = _case_module("run.py")
    res = mod.main(["--quick", "--fits", "fixed_heavy", "package", "--out", str(tmp_path)])
    md = (tmp_path / "report.md").read_text()
    for heading in ("## 1. Data", "## 2. Fits", "## 3. R*_D and R*_N", "## 4. The README", "## 5. What repetition"):
        assert heading in md, heading
    for name in res["figures"].values():
        assert (tmp_path / name).stat().st_size > 10_000, name
    assert len(res["unit_tests"]) == 4 and res["rstar"]["huber_at_paper_point"] == pytest.approx(0.0158259, abs=1e-7)
