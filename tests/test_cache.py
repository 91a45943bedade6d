"""The persistent compilation cache: where it lives, that the command line turns it on, and that an unwritable
folder never stops a run."""

from __future__ import annotations

import jax
import pytest

from scalebayes import cache, cli


@pytest.fixture
def no_cache_chosen(monkeypatch):
    """JAX with no cache folder chosen (the test suite's conftest picks one); restored afterwards."""
    before = (
        jax.config.jax_compilation_cache_dir,
        jax.config.jax_persistent_cache_min_compile_time_secs,
        jax.config.jax_compilation_cache_max_size,
    )
    jax.config.update("jax_compilation_cache_dir", None)
    jax.config.update("jax_compilation_cache_max_size", -1)
    monkeypatch.delenv(cache.ENV_SWITCH, raising=False)
    monkeypatch.delenv("JAX_COMPILATION_CACHE_MAX_SIZE", raising=False)
    yield
    jax.config.update("jax_compilation_cache_dir", before[0])
    jax.config.update("jax_persistent_cache_min_compile_time_secs", before[1])
    jax.config.update("jax_compilation_cache_max_size", before[2])


def test_default_folder_follows_xdg_cache_home(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert cache.default_folder() == tmp_path / "scalebayes" / "jax"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert cache.default_folder() == tmp_path / "home" / ".cache" / "scalebayes" / "jax"


def test_the_command_line_turns_the_cache_on(no_cache_chosen, monkeypatch, tmp_path, capsys):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    cli.main(["predict", str(tmp_path / "absent.nc"), "--N", "1e9", "--D", "1e10"])  # fails; the cache is on
    assert jax.config.jax_compilation_cache_dir == str(tmp_path / "scalebayes" / "jax")
    assert jax.config.jax_persistent_cache_min_compile_time_secs == 0.0
    assert (tmp_path / "scalebayes" / "jax").is_dir()
    assert jax.config.jax_compilation_cache_max_size == cache.COMPILED_MAX_BYTES  # bounded, not JAX's "forever"


def test_a_chosen_cache_size_is_kept(no_cache_chosen, monkeypatch, tmp_path):
    jax.config.update("jax_compilation_cache_max_size", 12345)
    cache.enable_compilation_cache(tmp_path)
    assert jax.config.jax_compilation_cache_max_size == 12345


def test_an_unwritable_cache_folder_warns_and_changes_nothing(no_cache_chosen, monkeypatch, tmp_path, capsys):
    (tmp_path / "file").write_text("")  # a folder cannot be made under a file, even by root
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "file"))
    with pytest.warns(RuntimeWarning, match="compilation cache disabled"):
        assert cache.enable_compilation_cache(tmp_path / "file" / "jax") is None
    assert jax.config.jax_compilation_cache_dir is None
    rc = cli.main(["predict", str(tmp_path / "absent.nc"), "--N", "1e9", "--D", "1e10"])
    err = capsys.readouterr().err
    assert rc == 1 and "not found" in err  # the command itself still runs
    assert "warning: compilation cache disabled" in err and jax.config.jax_compilation_cache_dir is None


def test_switched_off_or_already_chosen_is_left_alone(no_cache_chosen, monkeypatch, tmp_path):
    monkeypatch.setenv(cache.ENV_SWITCH, "0")
    assert cache.enable_compilation_cache(tmp_path) is None and jax.config.jax_compilation_cache_dir is None
    monkeypatch.delenv(cache.ENV_SWITCH)
    jax.config.update("jax_compilation_cache_dir", str(tmp_path / "mine"))
    assert cache.enable_compilation_cache(tmp_path / "other") == tmp_path / "mine"
