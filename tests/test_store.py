"""scalebayes.store: atomic replacement of files and folders, held Ctrl-C, output-folder lock and staging."""

from __future__ import annotations

import os
import signal

import pytest

from scalebayes import store
from scalebayes.errors import OutputError


def test_atomic_write_replaces_a_file_and_leaves_no_temporary(tmp_path):
    path = tmp_path / "report.html"
    path.write_text("old")
    store.atomic_write_text(path, "new")
    assert path.read_text() == "new" and os.listdir(tmp_path) == ["report.html"]


def test_atomic_folder_keeps_the_old_store_on_failure_and_replaces_it_on_success(tmp_path):
    path = tmp_path / "posterior.zarr"
    (path / "a").mkdir(parents=True)
    with pytest.raises(RuntimeError), store.atomic_path(path) as tmp:
        (tmp / "b").mkdir(parents=True)
        raise RuntimeError("writer failed")
    assert os.listdir(path) == ["a"] and os.listdir(tmp_path) == ["posterior.zarr"]
    with store.atomic_path(path) as tmp:
        (tmp / "b").mkdir(parents=True)
    assert os.listdir(path) == ["b"] and os.listdir(tmp_path) == ["posterior.zarr"]


@pytest.fixture
def default_sigint():
    """Python's own Ctrl-C handler for the test: a process started in the background by a non-interactive shell
    (nohup, some CI runners) inherits SIGINT ignored, and then there is no Ctrl-C to hold."""
    old = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, old)


def test_ctrl_c_during_a_write_is_held_until_the_writer_returns_then_raised(tmp_path, default_sigint):
    path = tmp_path / "posterior.nc"
    path.write_text("old")
    finished = []
    with pytest.raises(KeyboardInterrupt), store.atomic_path(path) as tmp:
        os.kill(os.getpid(), signal.SIGINT)  # as if Ctrl-C were pressed inside a C library's callback
        tmp.write_text("new")
        finished.append(True)
    assert finished and path.read_text() == "old" and os.listdir(tmp_path) == ["posterior.nc"]
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_lock_refuses_a_second_holder_and_is_removed_on_release(tmp_path):
    with store.output_folder(tmp_path / "out") as out:
        with pytest.raises(OutputError, match=r"in use by another scalebayes run \(process \d+\)"):
            with store.output_folder(out):
                pass
        assert (out / store.LOCK_NAME).exists()
    assert os.listdir(tmp_path / "out") == []
    with store.output_folder(tmp_path / "out"):  # free again
        pass


def test_staged_outputs_move_together_or_not_at_all(tmp_path):
    (tmp_path / "a.txt").write_text("old a")
    with pytest.raises(RuntimeError), store.staged_outputs(tmp_path) as stage:
        (stage / "a.txt").write_text("new a")
        raise RuntimeError("the second file failed")
    assert os.listdir(tmp_path) == ["a.txt"] and (tmp_path / "a.txt").read_text() == "old a"
    with store.staged_outputs(tmp_path) as stage:
        (stage / "a.txt").write_text("new a")
        (stage / "b.txt").write_text("new b")
    assert sorted(os.listdir(tmp_path)) == ["a.txt", "b.txt"] and (tmp_path / "a.txt").read_text() == "new a"


def test_output_folder_that_is_a_file_is_an_output_error(tmp_path):
    (tmp_path / "f").write_text("")
    with pytest.raises(OutputError, match="not a folder"), store.output_folder(tmp_path / "f"):
        pass


def test_a_staging_folder_left_by_a_killed_run_is_removed_by_the_next(tmp_path):
    (tmp_path / f"{store.STAGING_PREFIX}dead" / "posterior.nc").parent.mkdir()
    (tmp_path / "posterior.nc").write_text("kept")
    with store.output_folder(tmp_path):
        pass
    assert os.listdir(tmp_path) == ["posterior.nc"]
