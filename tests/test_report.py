"""The HTML report: every section and figure present, self-contained, honest about diagnostics, per family.

One in-process fit of two synthetic families (partial pooling, the quick test settings) backs the full-page test,
which renders it through ``scalebayes report``; the other tests exercise the report's pieces without sampling.
``check_report_html`` is shared with test_cli.py, which checks the report the command line writes for a one-family CSV.
"""

from __future__ import annotations

import base64
import dataclasses
import html.parser
import json
import re
import types
import warnings
from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest
import xarray as xr
from conftest import LAW_ONLY, QUICK, simulate_chinchilla

import scalebayes as sb
from scalebayes import cli, fitting, laws, plots, posterior, report
from scalebayes.diagnostics import Diagnostics
from scalebayes.misfit import SCATTER, Misfit
from scalebayes.report import numbers, page, sections

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
    for fam in families:  # the parsed (unescaped) text of each section names every family
        for name in ("fit", "parameters", "plan"):
            assert fam in secs[name]["text"], (fam, name)
    return secs


# ---------------------------------------------------------------------------------------------------- full page
#: A family label that breaks matplotlib's mathtext unless escaped (each figure naming it was silently lost) and that
#: would run as a script unless HTML-escaped; the data name tries the same.
BIG = "big $x^$ <script>alert(1)</script>"
HOSTILE_NAME = "runs<script>alert(2)</script>"


@pytest.fixture(scope="module")
def two_family_post():
    params = {"E": 1.7, "A": 400.0, "B": 1500.0, "alpha": 0.34, "beta": 0.30}
    frames = [
        simulate_chinchilla({**params, "E": e}, n=24, sigma=0.01, seed=s, family=f)
        for s, f, e in ((1, "small-lr", 1.7), (2, BIG, 1.8))
    ]
    data = sb.ScalingData.from_frame(
        pd.concat(frames, ignore_index=True), N="N", D="D", loss="loss", family="family", name=HOSTILE_NAME
    )
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
    secs = check_report_html(path, diagnostics_ok=post.diagnostics.ok, families=("small-lr", BIG))
    page_text = path.read_text(encoding="utf-8")
    assert "Two families" in page_text
    # user text is shown, never run: no script tag survives, and the labels appear escaped
    assert "<script" not in page_text.lower() and "&lt;script&gt;alert(1)" in page_text
    # per-family parameters with their own diagnostics
    assert "E[small-lr]" in secs["parameters"]["text"] and f"E[{BIG}]" in secs["parameters"]["text"]
    # Hoffmann et al.'s point belongs to chinchilla_epoch's runs, not to these
    assert "Hoffmann" not in secs["parameters"]["text"]
    # under failed diagnostics the headline is the failure and what to do, not numbers far beyond the data
    summary = secs["summary"]["text"]
    if post.diagnostics.ok:
        assert "Headline." in summary and "No headline numbers" not in summary
    else:
        assert "No headline numbers" in summary and "compute-optimal model has" not in summary
        failing = numbers.failing_parameters(post.diagnostics)
        assert len(failing) and all(name in summary for name in failing.index[:12])  # which parameters failed
    assert "hit the maximum tree depth" in summary and "iterations diverged" in summary
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
def _banner(diag: Diagnostics, health=None) -> str:
    return page.render_block(sections.diagnostics_box(diag, health))


def test_diagnostics_banner_states_failures_plainly():
    base = Diagnostics(1.002, 800.0, 700.0, 0, 20.0, 4000)
    ok = _banner(base)
    assert "Sampler diagnostics passed" in ok and "FAILED" not in ok
    failures = ("R-hat 1.200 > 1.01 (E)", "3 divergent transitions")
    table = pd.DataFrame(
        {"r_hat": [1.2, 1.001, 1.004], "ess_bulk": [50.0, 900.0, 120.0], "ess_tail": [60.0, 800.0, 900.0]},
        index=pd.Index(["E", "alpha", "tau_log_<b>"], name="name"),
    )
    bad = dataclasses.replace(base, r_hat_max=1.2, divergences=3, failures=failures, table=table)
    health = {"divergent": 0.003, "saturated": 0.4, "max_tree_depth": 10, "steps": 700.0}
    text = _banner(bad, health)
    assert "Sampler diagnostics FAILED" in text and "do not trust" in text
    assert "R-hat 1.200 &gt; 1.01 (E)" in text and "3 divergent transitions" in text
    assert "--target-accept" in text  # what to do about divergences, in command-line terms
    # which parameters failed (and only those), each with the test it failed; names are escaped
    assert "Parameters that failed (2 of 3)" in text and "tau_log_&lt;b&gt;" in text and ">alpha<" not in text
    failing = numbers.failing_parameters(bad)
    assert list(failing.index) == ["E", "tau_log_<b>"] and list(failing["fails"]) == [
        "R-hat, bulk ESS, tail ESS",
        "bulk ESS",
    ]
    # divergence and tree-depth saturation as fractions, with what to do about saturation
    assert "0.3% of iterations diverged" in text and "40% hit the maximum tree depth (10)" in text
    assert "--max-tree-depth" in text


def test_sampler_health_counts_divergences_and_saturated_trees():
    ss = xr.Dataset(
        {
            "diverging": (("chain", "draw"), np.array([[True, False, False, False]])),
            "n_steps": (("chain", "draw"), np.array([[7, 7, 1, 3]])),
            "tree_depth": (("chain", "draw"), np.array([[3, 3, 1, 2]])),
        }
    )
    post = types.SimpleNamespace(idata={"sample_stats": ss}, meta={"sampler": {"max_tree_depth": 3}})
    assert numbers.sampler_health(post) == {"divergent": 0.25, "saturated": 0.5, "max_tree_depth": 3, "steps": 4.5}


def test_outlier_table_names_runs_by_the_users_columns():
    outside = pd.DataFrame(
        {
            "N": [1e8],
            "D": [2e9],
            "C": [1.2e18],
            "loss": [3.1],
            "family": ["<b>fam</b>"],
            "run_name": ["sweep-7/<i>lr3e-4</i>"],
            "pred_median": [3.0],
            "pred_5%": [2.9],
            "pred_95%": [3.05],
            "rel": [0.033],
        },
        index=pd.Index(["row-17"], name="row"),
    )
    assert numbers.id_columns(outside) == ["run_name"]
    ctx = types.SimpleNamespace(multi=True)
    blocks = sections.outlier_table(ctx, outside)
    html_text = "".join(page.render_block(b) for b in blocks)
    for shown in ("row-17", "sweep-7/&lt;i&gt;lr3e-4&lt;/i&gt;", "&lt;b&gt;fam&lt;/b&gt;", "1.00e8", "2.00e9", "3.1"):
        assert shown in html_text, shown
    assert blocks[1].header[:3] == ["input row", "run_name", "family"]


def test_page_escapes_text_and_keeps_markup():
    h = page.h("<b>{}</b> of {}", "<script>", 3)
    assert h == "<b>&lt;script&gt;</b> of 3"
    assert page.Html("<i>a</i>") + "<b>" == "<i>a</i>&lt;b&gt;" and "<b>" + page.Html("<i>") == "&lt;b&gt;<i>"
    table = page.render_block(page.Table(["<th>"], [["<td>", page.Html("<code>x</code>")]]))
    assert "&lt;th&gt;" in table and "&lt;td&gt;" in table and "<code>x</code>" in table
    fig = page.render_block(page.Figure("alt '<x>'", "caption <y>", error="boom <z>"))
    assert "boom &lt;z&gt;" in fig and "<z>" not in fig
    html_page = page.render_page("<t>", "sub", [page.Section("s1", "<h>", "nav<", [page.Para("p")])])
    assert "<title>&lt;t&gt;</title>" in html_page and "<section id='s1'>" in html_page and "nav&lt;" in html_page


def test_number_formatting():
    assert page.fmt(7.0e10) == "7.00e10"
    assert page.fmt(2.1234) == "2.12" and page.fmt(2.1234, 4) == "2.123"
    assert page.fmt(float("nan")) == "–" and page.fmt(float("inf")) == "∞" and page.fmt("<x>") == "&lt;x&gt;"
    assert plots.times(1000) == "1000×" and plots.times(2.5) == "2.5×"


def test_write_report_rejects_bad_factors_before_writing(tmp_path):
    post = types.SimpleNamespace(data=types.SimpleNamespace(frame=pd.DataFrame({"C": [1e18]})))
    with pytest.raises(sb.errors.DataError, match="extrapolate"):
        report.write_report(post, tmp_path / "out", extrapolate=(10, float("nan")))
    with pytest.raises(sb.errors.DataError, match="plan_compute"):
        report.write_report(post, tmp_path / "out", plan_compute=(-1.0,))
    assert not (tmp_path / "out").exists()


def test_a_registered_law_without_report_words_gets_a_full_report(tmp_path):
    # a user's law of one input (compute) that declares no formula, meanings or reference points: the report still
    # has every section, with generic words from the law, and its one-input figures draw
    def log_mean(p, x):
        return jnp.logaddexp(jnp.log(p["E"]), jnp.log(p["K"]) - p["rate"] * (x["C"] - 40.0))

    law = laws.Law(
        name="user_compute_law",
        params=("E", "K", "rate"),
        inputs=("C",),
        log_mean=log_mean,
        priors={"log_E": (0.5, 0.5), "log_K": (0.0, 1.0), "log_rate": (-2.0, 0.5)},
    )
    runs = simulate_chinchilla({"E": 1.7, "A": 400.0, "B": 1500.0, "alpha": 0.34, "beta": 0.30}, n=40, seed=3)
    data = sb.ScalingData.from_frame(runs, N="N", D="D", loss="loss")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", sb.errors.SamplingWarning)
        post = sb.fit(data, law=law, seed=0, **QUICK, **LAW_ONLY)
    path = report.write_report(post, tmp_path)  # the law object is on the posterior: no registry needed
    page_text = path.read_text(encoding="utf-8")
    parser = _ReportParser()
    parser.feed(page_text)
    assert list(parser.sections) == list(report.SECTIONS)
    assert "could not be drawn" not in page_text and "Problems while writing" not in page_text
    assert "L(C) with parameters E, K, rate" in page_text  # the generic formula
    params_text = "".join(parser.sections["parameters"]["text"])
    assert "parameter of the user_compute_law law" in params_text and "irreducible loss" in params_text
    assert parser.sections["fit"]["images"] and parser.sections["extrapolation"]["images"]


def test_excluded_rows_keep_text_family_labels_after_a_reload(tmp_path):
    """Family labels such as ``01`` and ``007`` are text: the excluded-rows table shows them as written, both for a
    fresh fit and after the metadata's round trip through a saved file (where every cell is stored as text)."""
    csv = tmp_path / "runs.csv"
    csv.write_text("N,D,loss,fam\n1e8,2e9,3.1,01\n2e8,4e9,,007\n4e8,8e9,2.9,1\n8e8,1.6e10,,01\n")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        data = sb.ScalingData.from_csv(csv, N="N", D="D", loss="loss", family="fam", dropna=True)
    stored = json.loads(json.dumps(fitting.excluded_meta(data.excluded)))
    reloaded = posterior.excluded_from_meta(stored)
    assert list(reloaded["fam"]) == ["007", "01"] and list(reloaded["N"]) == [2e8, 8e8]
    for excluded in (data.excluded, reloaded):
        ctx = types.SimpleNamespace(post=types.SimpleNamespace(data=dataclasses.replace(data, excluded=excluded)))
        html_text = "".join(page.render_block(b) for b in sections._excluded_blocks(ctx))
        assert "<td>007</td>" in html_text and "<td>01</td>" in html_text, html_text
        assert "2.000e8" in html_text or "2e8" in html_text or "2.00e8" in html_text, html_text


def test_report_says_which_predictive_it_shows():
    plain = types.SimpleNamespace(calibrated=False)
    cal = types.SimpleNamespace(calibrated=True, discrepancy=types.SimpleNamespace(kappa=0.0123, gamma=1.5, info={}))
    assert numbers.predictive_words(plain).startswith("parameters only")
    words = numbers.predictive_words(cal)
    assert words.startswith("calibrated predictive") and "0.0123" in words and "γ ≈ 1.5" in words
    assert "9 in 10 analyses like this one, not 9 in 10 of its queries" in words  # one δ draw shared by all queries
    # several families: each family's own κ is named, and a new family's
    fams = {"a": {"kappa_median": 0.004, "gamma_mode": 1.0}, "b": {"kappa_median": 0.09, "gamma_mode": 0.5}}
    many = types.SimpleNamespace(
        calibrated=True, discrepancy=types.SimpleNamespace(kappa=0.02, gamma=1.0, info={"families": fams})
    )
    words = numbers.predictive_words(many)
    assert "a: κ ≈ 0.004" in words and "b: κ ≈ 0.09, γ ≈ 0.5" in words and "a new family κ ≈ 0.02" in words


def test_misfit_box_names_the_trends():
    # A flagged check makes a red box naming the input and its binned medians; none flagged, a green one.
    table = pd.DataFrame(
        {
            "against": ["log N", "log C"],
            "p_value": [0.4, 1e-6],
            "effect": [0.001, 0.02],
            "medians": [[0.0, 0.001, -0.001], [-0.02, 0.0, 0.02]],
            "flagged": [False, True],
        }
    )
    bad = page.render_block(sections.misfit_box(Misfit(table, np.zeros(3))))
    assert "Misfit: residual trends" in bad and "log C" in bad and "+2.00%" in bad and "flagged" in bad
    good = page.render_block(sections.misfit_box(Misfit(table.assign(flagged=False), np.zeros(3))))
    assert "No residual trend flagged" in good and "Misfit:" not in good
    # the scatter check shows scales, not signed medians, and says what a single noise scale does to intervals
    scatter = pd.DataFrame(
        {"against": [SCATTER], "p_value": [1e-9], "effect": [5.0], "medians": [[0.05, 0.02, 0.01]], "flagged": [True]}
    )
    box = page.render_block(sections.misfit_box(Misfit(scatter, np.zeros(3))))
    assert "s.d. 5.00%, 2.00%, 1.00%" in box and "too narrow" in box and "trend with the inputs" not in box
