"""Nothing is lost: output files are replaced whole or not at all, output folders are checked and locked before
sampling, saved posteriors round-trip over themselves, and untrusted posterior files are read safely.

One small fit (a module fixture) gives a real posterior; CLI tests stand it in for the sampler (``fit`` is
replaced by a function returning it) so they exercise the file handling without sampling again.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import xarray as xr
from conftest import LAW_ONLY, simulate_chinchilla

import scalebayes as sb
from scalebayes import cli

PARAMS = dict(E=1.7, A=400.0, alpha=0.34, B=410.0, beta=0.28)
FIT_COLUMNS = ["--N", "N", "--D", "D", "--loss", "loss"]


@pytest.fixture(scope="module")
def post():
    data = sb.ScalingData.from_frame(simulate_chinchilla(PARAMS, n=30, seed=3), N="N", D="D", loss="loss")
    return sb.fit(data, chains=1, warmup=60, draws=30, seed=0, pointwise=False, warn=False, **LAW_ONLY)


@pytest.fixture
def runs_csv(tmp_path) -> Path:
    path = tmp_path / "runs.csv"
    simulate_chinchilla(PARAMS, n=30, seed=3).to_csv(path, index=False)
    return path


def _stand_in_for_fit(monkeypatch, result):
    """Make ``scalebayes fit`` return ``result`` (or raise it) instead of sampling."""

    def fake_fit(*args, **kwargs):
        if isinstance(result, BaseException):
            raise result
        return result

    monkeypatch.setattr(sys.modules["scalebayes.fitting"], "fit", fake_fit)
    monkeypatch.setattr(cli, "fit", fake_fit, raising=False)
    monkeypatch.setattr(cli, "calibrate", lambda post, **kw: post)  # no refits of the stand-in


def _interrupt_netcdf_writes(monkeypatch):
    """Every netCDF write writes half its bytes to the path it was given, then Ctrl-C arrives."""
    original = xr.DataTree.to_netcdf

    def half_then_interrupt(self, filepath, *args, **kwargs):
        original(self, filepath, *args, **kwargs)
        data = Path(filepath).read_bytes()
        Path(filepath).write_bytes(data[: len(data) // 2])
        raise KeyboardInterrupt

    monkeypatch.setattr(xr.DataTree, "to_netcdf", half_then_interrupt)


@contextlib.contextmanager
def _read_only(folder: Path):
    """``folder`` made unwritable, also for root (which ignores permission bits): chmod, else ``chattr +i``."""
    folder.chmod(0o555)
    immutable = False
    probe = folder / "probe"
    try:
        probe.touch()
        probe.unlink()
        immutable = subprocess.run(["chattr", "+i", str(folder)], capture_output=True).returncode == 0
        if not immutable:
            pytest.skip("cannot make a read-only folder here (root, and no chattr)")
    except OSError:
        pass
    try:
        yield folder
    finally:
        if immutable:
            subprocess.run(["chattr", "-i", str(folder)], check=True)
        folder.chmod(0o755)


# ---------------------------------------------------------------------------------------------------- the API
def test_interrupted_save_keeps_the_old_file(post, tmp_path, monkeypatch):
    path = post.save(tmp_path / "posterior.nc")
    before = path.read_bytes()
    _interrupt_netcdf_writes(monkeypatch)
    with pytest.raises(KeyboardInterrupt):
        post.save(path)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["posterior.nc"]  # no temporary file left behind


def test_load_then_save_over_the_same_file(post, tmp_path):
    path = post.save(tmp_path / "posterior.nc")
    again = sb.load(path)
    again.save(path)  # load kept no handle open on the file
    np.testing.assert_array_equal(sb.load(path).draws("E"), post.draws("E"))


def test_truncated_posterior_is_one_clean_error(post, tmp_path):
    path = post.save(tmp_path / "posterior.nc")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 3])
    code = (
        f"import scalebayes as sb\ntry:\n    sb.load({str(path)!r})\nexcept sb.errors.DataError as e:\n    print(e)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert "could not read" in proc.stdout and "posterior.nc" in proc.stdout
    assert "Exception ignored" not in proc.stderr and "Traceback" not in proc.stderr


def test_zarr_posteriors_need_zarr_3(post, tmp_path, monkeypatch):
    real = importlib.metadata.version
    monkeypatch.setattr(importlib.metadata, "version", lambda name: "2.18.3" if name == "zarr" else real(name))
    with pytest.raises(ImportError, match=r"zarr >= 3 \(installed: 2.18.3"):
        post.save(tmp_path / "p.zarr")
    assert not (tmp_path / "p.zarr").exists()
    (tmp_path / "p.zarr").mkdir()
    with pytest.raises(ImportError, match=r"zarr >= 3 \(installed: 2.18.3"):
        sb.load(tmp_path / "p.zarr")


# ---------------------------------------------------------------------------------------------------- the CLI
def test_unwritable_out_fails_before_sampling(runs_csv, tmp_path, monkeypatch, capsys):
    _stand_in_for_fit(monkeypatch, AssertionError("sampled although the output folder is read-only"))
    out = tmp_path / "out"
    out.mkdir()
    with _read_only(out):
        rc = cli.main(["fit", str(runs_csv), *FIT_COLUMNS, "--out", str(out), "--quiet"])
    err = capsys.readouterr().err
    assert rc == 1 and "cannot write" in err and str(out) in err and "sampled" not in err


def test_second_run_into_a_busy_folder_is_refused(post, runs_csv, tmp_path, monkeypatch, capsys):
    _stand_in_for_fit(monkeypatch, post)
    out = tmp_path / "out"
    holder = subprocess.Popen(  # another scalebayes run holding the folder
        [sys.executable, "-c", f"from scalebayes import store\nwith store.output_folder({str(out)!r}):\n input()"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        for _ in range(600):  # until the holder has the lock (its import takes seconds)
            if (out / ".scalebayes.lock").exists():
                break
            holder.poll()
            assert holder.returncode is None
            subprocess.run(["sleep", "0.1"])
        rc = cli.main(["fit", str(runs_csv), *FIT_COLUMNS, "--out", str(out), "--quiet"])
    finally:
        holder.communicate("\n", timeout=60)
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 1 and len(err) == 1 and "in use by another scalebayes run" in err[0]
    assert not (out / "posterior.nc").exists()


def test_ctrl_c_while_writing_exits_130_and_keeps_the_old_files(post, runs_csv, tmp_path, monkeypatch, capsys):
    _stand_in_for_fit(monkeypatch, post)
    out = tmp_path / "out"
    post.save(out / "posterior.nc")
    (out / "summary.csv").write_text("old summary\n")
    (out / "report.html").write_text("<p>old report</p>")
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    _interrupt_netcdf_writes(monkeypatch)
    rc = cli.main(["fit", str(runs_csv), *FIT_COLUMNS, "--out", str(out), "--quiet"])
    assert rc == 130 and "interrupted" in capsys.readouterr().err
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before  # same files, same bytes, nothing else


@pytest.mark.parametrize("failure", [KeyboardInterrupt(), RuntimeError("sampler failed")])
def test_failed_fit_leaves_no_folder_it_created(failure, runs_csv, tmp_path, monkeypatch, capsys):
    _stand_in_for_fit(monkeypatch, failure)
    out = tmp_path / "new" / "out"
    rc = cli.main(["fit", str(runs_csv), *FIT_COLUMNS, "--out", str(out), "--quiet"])
    assert rc in (1, 130)
    assert not (tmp_path / "new").exists()


def test_fit_replaces_the_whole_set_of_files(post, runs_csv, tmp_path, monkeypatch, capsys):
    _stand_in_for_fit(monkeypatch, post)
    out = tmp_path / "out"
    out.mkdir()
    (out / "summary.csv").write_text("old summary\n")
    rc = cli.main(["fit", str(runs_csv), *FIT_COLUMNS, "--out", str(out), "--quiet"])
    assert rc == 0, capsys.readouterr().err
    assert sorted(p.name for p in out.iterdir()) == ["posterior.nc", "report.html", "summary.csv"]
    assert pd.read_csv(out / "summary.csv").shape[0] > 1
    shutil.rmtree(out)
