"""Command-line arguments say what is wrong and reach the sampler: negative numbers, mismatched predict inputs and
``--grid``, the NUTS options, ``--quiet`` turning progress off, ``--strict``, and the compilation cache.

Everything runs in-process through ``cli.main``. Only the ``--grid`` and ``--strict`` tests need a posterior: one
tiny fit (module fixture; 1 chain, a few draws, so its diagnostics fail, which ``--strict`` needs).
"""

from __future__ import annotations

import io
import sys

import numpy as np
import pytest
from conftest import LAW_ONLY, simulate_chinchilla

import scalebayes as sb
from scalebayes import cli

PARAMS = dict(E=1.7, A=400.0, alpha=0.34, B=410.0, beta=0.28)
FIT_COLUMNS = ["--N", "N", "--D", "D", "--loss", "loss"]


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    data = sb.ScalingData.from_frame(simulate_chinchilla(PARAMS, n=30, seed=3), N="N", D="D", loss="loss")
    post = sb.fit(data, chains=1, warmup=60, draws=30, seed=0, pointwise=False, warn=False, **LAW_ONLY)
    return post, post.save(tmp_path_factory.mktemp("post") / "posterior.nc")


@pytest.fixture
def runs_csv(tmp_path):
    path = tmp_path / "runs.csv"
    simulate_chinchilla(PARAMS, n=30, seed=3).to_csv(path, index=False)
    return path


def _usage_error(capsys, argv) -> str:
    with pytest.raises(SystemExit) as e:
        cli.main(argv)
    assert e.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    return err[0]


def _capture_fit(monkeypatch, post) -> dict:
    """Replace the sampler by a function that records its keyword arguments and returns ``post``, and the report
    writer by one that records its own and writes a placeholder page: these tests are about the arguments, and the
    real report (ten figures) is test_cli's and test_report's."""
    seen: dict = {}

    def fake_report(post, folder, **kwargs):
        seen["report"] = kwargs
        (folder / cli.REPORT_NAME).write_text("report")

    def fake_fit(data, **kwargs):
        seen.update(kwargs)
        return post

    def fake_calibrate(post, **kwargs):
        seen["calibrated"] = kwargs
        return post

    monkeypatch.setattr(sys.modules["scalebayes.fitting"], "fit", fake_fit)
    monkeypatch.setattr(cli, "fit", fake_fit, raising=False)
    monkeypatch.setattr(cli, "calibrate", fake_calibrate)
    monkeypatch.setattr(cli, "write_report", fake_report)
    return seen


# ---------------------------------------------------------------------------------------------------- numbers
@pytest.mark.parametrize(
    ("argv", "option"),
    [
        (["predict", "p.nc", "--N", "-1e9", "--D", "1e12"], "--N"),
        (["predict", "p.nc", "--N", "1e9", "--D", "-5"], "--D"),
        (["plan", "p.nc", "--compute", "1e23", "-1e24"], "--compute"),
        (["fit", "r.csv", "--loss", "l", "--target-accept", "-0.5"], "--target-accept"),
        (["fit", "r.csv", "--loss", "l", "--extend", "-1"], "--extend"),
        (["predict", "p.nc", "--N", "-inf", "--D", "1e12"], "--N"),
    ],
)
def test_a_negative_number_is_named_as_the_problem(capsys, argv, option):
    line = _usage_error(capsys, argv)
    assert option in line and "expected" not in line
    assert any(w in line for w in ("must be positive", "strictly between 0 and 1", "not a finite number", ">= 0"))


# ---------------------------------------------------------------------------------------------------- predict shapes
def test_predict_inputs_of_different_lengths_are_a_clear_error(capsys, tmp_path):
    rc = cli.main(["predict", str(tmp_path / "p.nc"), "--N", "1e9", "2e9", "3e9", "--D", "1e10", "2e10"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 1 and len(err) == 1
    assert "--N has 3 values and --D has 2" in err[0] and "--grid" in err[0] and "broadcast" not in err[0]


def test_predict_grid_is_every_combination(capsys, saved):
    post, path = saved
    rc = cli.main(["predict", str(path), "--N", "1e9", "2e9", "3e9", "--D", "1e10", "2e10", "--grid", "--csv"])
    out = capsys.readouterr().out
    assert rc == 0
    got = np.loadtxt(io.StringIO(out), delimiter=",", skiprows=1, usecols=(0, 1))
    want = [(n, d) for n in (1e9, 2e9, 3e9) for d in (1e10, 2e10)]
    np.testing.assert_allclose(got, want)
    direct = post.predict(N=[n for n, _ in want], D=[d for _, d in want])
    np.testing.assert_allclose(np.loadtxt(io.StringIO(out), delimiter=",", skiprows=1)[:, 3], direct["mean"])


# ---------------------------------------------------------------------------------------------------- fit options
def test_fit_passes_the_nuts_options_and_quiet_turns_progress_off(monkeypatch, capsys, saved, runs_csv, tmp_path):
    post, _ = saved

    class TTY(io.StringIO):
        def isatty(self) -> bool:
            return True

    monkeypatch.setattr(sys, "stderr", TTY())  # a terminal, where progress would show
    seen = _capture_fit(monkeypatch, post)
    argv = ["fit", str(runs_csv), *FIT_COLUMNS, "--target-accept", "0.97", "--max-tree-depth", "12"]
    assert cli.main([*argv, "--out", str(tmp_path / "a"), "--quiet"]) == 0
    assert seen["target_accept"] == 0.97 and seen["max_tree_depth"] == 12 and seen["progress"] is False
    assert seen["extend"] == 1  # the Python default
    assert (tmp_path / "a" / cli.REPORT_NAME).exists() and seen["report"]["extrapolate"] == (10.0, 100.0)
    assert cli.main([*argv, "--out", str(tmp_path / "b"), "--extend", "0"]) == 0
    assert seen["progress"] is True and seen["extend"] == 0


def test_fit_says_when_the_law_misfits_or_the_prior_decides(monkeypatch, capsys, saved, runs_csv, tmp_path):
    """A flagged residual trend (scalebayes.misfit) and a parameter the runs leave to the prior
    (scalebayes.identification) are warning lines of ``scalebayes fit``, as in Python."""
    import dataclasses

    post, _ = saved
    table = post.misfit.table.copy()
    table.loc[table.index[0], "flagged"] = True
    flagged = dataclasses.replace(post.misfit, table=table)
    monkeypatch.setattr(type(post), "misfit", property(lambda self: flagged))
    prior = post.contraction.assign(prior_dominated=post.contraction["parameter"] == "alpha")
    monkeypatch.setattr(type(post), "contraction", property(lambda self: prior))
    _capture_fit(monkeypatch, post)
    assert cli.main(["fit", str(runs_csv), *FIT_COLUMNS, "--out", str(tmp_path / "a")]) == 0
    err = capsys.readouterr().err
    assert f"warning: misfit: residuals trend with {table.iloc[0]['against']}" in err
    assert "warning: the runs barely pin alpha" in err  # scalebayes.identification, as in Python


def test_fit_says_before_sampling_when_the_design_cannot_separate_N_and_D(monkeypatch, capsys, saved, tmp_path):
    """Runs whose token counts follow their model sizes (D = 20·N) get their warning line before the sampler starts
    (scalebayes.identification.design), as fit(warn=True) warns in Python."""
    post, _ = saved
    runs = simulate_chinchilla(PARAMS, n=30, seed=3)
    runs["D"] = 20 * runs["N"]
    path = tmp_path / "ratio.csv"
    runs.to_csv(path, index=False)
    seen = _capture_fit(monkeypatch, post)
    assert cli.main(["fit", str(path), *FIT_COLUMNS, "--out", str(tmp_path / "a"), "--no-calibrate"]) == 0
    err = capsys.readouterr().err
    line = next(x for x in err.splitlines() if "N varies only together with D" in x)
    assert "warning: " in line and err.index(line) < err.index("fitting the 'chinchilla' law")
    assert seen  # and the fit still ran: a warning, not a refusal


def test_strict_exits_non_zero_when_diagnostics_fail(monkeypatch, capsys, saved, runs_csv, tmp_path):
    post, _ = saved
    assert not post.diagnostics.ok  # 1 chain of 30 draws cannot reach the ESS threshold
    _capture_fit(monkeypatch, post)
    argv = ["fit", str(runs_csv), *FIT_COLUMNS, "--quiet"]
    assert cli.main([*argv, "--out", str(tmp_path / "a")]) == 0
    assert cli.main([*argv, "--out", str(tmp_path / "b"), "--strict"]) == cli.EXIT_DIAGNOSTICS == 3


def test_fit_no_report_writes_the_rest_and_drops_an_old_report(monkeypatch, capsys, saved, runs_csv, tmp_path):
    # --no-report: posterior and summary.csv, no report drawn; an old report.html would describe another fit beside
    # the new posterior, so it goes with the old set
    post, _ = saved
    seen = _capture_fit(monkeypatch, post)
    out = tmp_path / "a"
    argv = ["fit", str(runs_csv), *FIT_COLUMNS, "--out", str(out), "--no-calibrate"]
    assert cli.main(argv) == 0 and (out / cli.REPORT_NAME).exists()
    old = (out / "posterior.nc").stat().st_mtime_ns
    seen.clear()
    capsys.readouterr()
    assert cli.main([*argv, "--no-report"]) == 0
    assert "report" not in seen and not (out / cli.REPORT_NAME).exists()
    assert (out / "summary.csv").exists() and (out / "posterior.nc").stat().st_mtime_ns >= old
    assert cli.REPORT_NAME not in capsys.readouterr().out  # the files it says it wrote are the ones it wrote
    assert sorted(p.name for p in out.iterdir() if not p.name.startswith(".")) == ["posterior.nc", "summary.csv"]


def test_fit_calibrates_unless_no_calibrate(monkeypatch, saved, runs_csv, tmp_path):
    post, _ = saved
    seen = _capture_fit(monkeypatch, post)
    argv = ["fit", str(runs_csv), *FIT_COLUMNS, "--quiet"]
    assert cli.main([*argv, "--out", str(tmp_path / "a")]) == 0
    assert seen.pop("calibrated") == {"progress": False}  # --quiet: no progress lines for the refits either
    assert cli.main([*argv, "--out", str(tmp_path / "b"), "--no-calibrate"]) == 0
    assert "calibrated" not in seen
