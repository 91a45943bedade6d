"""The HTML report: every section and figure present, self-contained, honest about diagnostics, per family.

One in-process fit of two synthetic families (partial pooling, the quick test settings) backs the full-page test,
which renders it through ``scalebayes report``; the other tests exercise the report's pieces without sampling.
``check_report_html`` is shared with test_cli.py, which checks the report the command line writes for a one-family CSV.
"""

from __future__ import annotations

import base64
import dataclasses
import html.parser
import re
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import QUICK, simulate_chinchilla

import scalebayes as sb
from scalebayes import cli, report

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
#: Sections that must hold at least one figure (summary, parameters and about are text and tables).
FIGURE_SECTIONS = ("data", "fit", "ppc", "extrapolation", "plan")


class _ReportParser(html.parser.HTMLParser):
    """Collects, per ``<section id=...>``, its images (decoded PNG bytes), table count and text."""

    def __init__(self):
        super().__init__()
        self.sections: dict[str, dict] = {}
        self.current: str | None = None
        self.external: list[str] = []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "section":
            self.current = a.get("id")
            self.sections[self.current] = {"images": [], "tables": 0, "text": []}
        elif tag in ("img", "script", "link", "iframe"):
            src = a.get("src") or a.get("href") or ""
            if tag == "img" and src.startswith("data:image/png;base64,"):
                if self.current is not None:
                    self.sections[self.current]["images"].append(base64.b64decode(src.split(",", 1)[1]))
                    self.sections[self.current].setdefault("alts", []).append(a.get("alt", ""))
            elif src:
                self.external.append(src)
        elif tag == "table" and self.current is not None:
            self.sections[self.current]["tables"] += 1

    def handle_endtag(self, tag):
        if tag == "section":
            self.current = None

    def handle_data(self, data):
        if self.current is not None:
            self.sections[self.current]["text"].append(data)


def check_report_html(path: Path, *, diagnostics_ok: bool, families: tuple[str, ...] = ()) -> dict:
    """Assert the structure every report must have; returns the parsed sections (text joined) for more checks."""
    page = Path(path).read_text(encoding="utf-8")
    parser = _ReportParser()
    parser.feed(page)
    secs = parser.sections
    assert list(secs) == list(report.SECTIONS), list(secs)
    assert not parser.external, f"report is not self-contained: {parser.external}"
    for name in FIGURE_SECTIONS:
        imgs = secs[name]["images"]
        assert imgs, f"section {name!r} has no figure"
        for png in imgs:
            assert png.startswith(PNG_MAGIC) and len(png) > 5_000, f"section {name!r}: not a real PNG"
    for s in secs.values():
        s["text"] = re.sub(r"\s+", " ", "".join(s["text"]))
    assert secs["parameters"]["tables"] >= 1 and secs["plan"]["tables"] >= 1 and secs["data"]["tables"] >= 1
    for col in ("R-hat", "bulk ESS", "tail ESS"):
        assert col in secs["parameters"]["text"]
    summary = secs["summary"]["text"]
    if diagnostics_ok:
        assert "Sampler diagnostics passed" in summary and "FAILED" not in summary
    else:
        assert "Sampler diagnostics FAILED" in summary and "do not trust" in summary
    assert "could not be drawn" not in page and "Problems while writing" not in page
    for fam in families:
        for name in ("fit", "parameters", "plan"):
            assert fam in page, (fam, name)
    return secs


# ---------------------------------------------------------------------------------------------------- full page
@pytest.fixture(scope="module")
def two_family_post():
    params = {"E": 1.7, "A": 400.0, "B": 1500.0, "alpha": 0.34, "beta": 0.30}
    frames = [
        simulate_chinchilla({**params, "E": e}, n=24, sigma=0.01, seed=s, family=f)
        for s, f, e in ((1, "small-lr", 1.7), (2, "big", 1.8))
    ]
    data = sb.ScalingData.from_frame(pd.concat(frames, ignore_index=True), N="N", D="D", loss="loss", family="family")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", sb.errors.SamplingWarning)
        return sb.fit(data, seed=0, **QUICK)


def test_two_family_report_has_every_section_figure_and_family(two_family_post, tmp_path, capsys):
    # through `scalebayes report` on a saved posterior (test_cli covers the report of a fresh fit)
    saved = two_family_post.save(tmp_path / "posterior.nc")
    (tmp_path / "summary.csv").write_text("name\n")
    rc = cli.main(["report", str(saved), "--title", "Two families", "--plan-compute", "1e21", "1e22"])
    path = tmp_path / "report.html"
    assert rc == 0 and capsys.readouterr().out.strip() == f"wrote {path}"
    post = sb.load(saved)
    secs = check_report_html(path, diagnostics_ok=post.diagnostics.ok, families=("small-lr", "big"))
    assert "Two families" in path.read_text(encoding="utf-8")
    # per-family parameters with their own diagnostics
    assert "E[small-lr]" in secs["parameters"]["text"] and "E[big]" in secs["parameters"]["text"]
    # plan table: both budgets for both families; extrapolation table: 1x, 10x, 100x per family
    plan_text = secs["plan"]["text"]
    assert plan_text.count("1.00e21") == 2 and plan_text.count("1.00e22") == 2
    extrap = secs["extrapolation"]["text"]
    for fac in ("1×", "10×", "100×"):
        assert extrap.count(fac) >= 2, fac
    # the files next to the report
    about = secs["about"]["text"]
    assert "posterior.nc" in about and "summary.csv" in about


# ---------------------------------------------------------------------------------------------------- pieces
def test_diagnostics_banner_states_failures_plainly():
    base = report.Diagnostics(1.002, 800.0, 700.0, 0, 20.0, 4000)
    ok = report.diagnostics_html(base)
    assert "Sampler diagnostics passed" in ok and "FAILED" not in ok
    failures = ("R-hat 1.200 > 1.01 (E)", "3 divergent transitions")
    bad = dataclasses.replace(base, r_hat_max=1.2, divergences=3, failures=failures)
    text = report.diagnostics_html(bad)
    assert "Sampler diagnostics FAILED" in text and "do not trust" in text
    assert "R-hat 1.200 &gt; 1.01 (E)" in text and "3 divergent transitions" in text
    assert "--target-accept" in text  # what to do about divergences, in command-line terms


def test_compute_levels_recover_an_isoflop_design():
    budgets = np.array([1e17, 3e17, 1e18, 3e18, 1e19])
    C = np.repeat(budgets, 6) * np.random.default_rng(0).uniform(0.97, 1.03, 30)
    levels = report.compute_levels(C, max_levels=5)
    assert len(levels) == 5
    for (level, members), b in zip(levels, budgets, strict=True):
        assert abs(np.log10(level / b)) < 0.02 and members.sum() == 6
    few = report.compute_levels(C, max_levels=3)  # spread over the range: lowest and highest kept
    assert [round(np.log10(c)) for c, _ in few] == [17, 18, 19]


def test_parameter_meanings_follow_the_law():
    assert "model-size" in report.param_meaning("chinchilla", "A[big]")
    assert "compute" in report.param_meaning("compute", "A") and "exponent of training compute" in report.param_meaning(
        "compute", "alpha"
    )
    assert "critical model size" in report.param_meaning("kaplan", "N_c")
    assert "across families" in report.param_meaning("chinchilla", "tau_log_E")
    assert report.param_meaning("no_such_law", "zeta") == ""


def test_number_formatting():
    assert report.fmt(7.0e10) == "7.00e10"
    assert report.fmt(2.1234) == "2.12" and report.fmt(2.1234, 4) == "2.123"
    assert report.fmt(float("nan")) == "–" and report.fmt(float("inf")) == "∞"
    assert report._times(1000) == "1000×" and report._times(2.5) == "2.5×"
