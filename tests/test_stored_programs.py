"""The single fit's host loop and its programs kept on disk: a second process (here: a fresh runner) loads the
programs instead of tracing them, with the same numbers, and nothing stale or foreign is ever loaded."""

from __future__ import annotations

import dataclasses

import jax
import numpy as np
import pytest
from conftest import LAW_ONLY

import scalebayes as sb
from scalebayes import sampler as S
from scalebayes.fitting import prepare
from scalebayes.sampler import compiled, driver, stored
from scalebayes.sampler.adaptation import window_table

CONFIG = S.SamplerConfig(chains=2, warmup=60, draws=40)


def test_checkpoints_report_every_tenth_and_close_each_window_once():
    table = window_table(150, 100)
    calls = driver.checkpoints(table.n_iter, 250, 25)
    assert [done for *_, done in calls if done is not None] == list(range(25, 251, 25))
    closes = [r for r, _, close, _ in calls if close]
    assert closes == list(range(len(table.n_iter)))  # every row (the empty first one included) ends once, in order
    for r, upto, close, _ in calls:  # a row is advanced in increasing steps up to its own length, closed there
        assert 0 <= upto <= table.n_iter[r] and (upto == table.n_iter[r]) == close


@pytest.fixture
def store(tmp_path, monkeypatch):
    """Programs stored under ``tmp_path`` (as if the compilation cache were on there)."""
    monkeypatch.setattr(stored, "folder", lambda: tmp_path)
    return tmp_path


def _run(spec, prep, seed=3):
    """A fresh runner (no compiled pieces in memory, as in a new process), its draws and the number of sampler
    traces it cost."""
    n0 = S.COMPILE_COUNT["n"]
    run = compiled.Stepped(spec, CONFIG)
    draws, stats = S.to_numpy(run(jax.random.key(seed), *prep.args, warmup=CONFIG.warmup))
    return draws, stats, S.COMPILE_COUNT["n"] - n0


def test_programs_are_stored_loaded_and_give_the_same_draws(chinchilla_data, store):
    prep = prepare(chinchilla_data)
    first, stats, traces = _run(prep.spec, prep)
    assert traces == 1 and sorted(p.name.split("-")[0] for p in store.iterdir()) == ["advance", "finish", "init"]
    again, stats2, traces2 = _run(prep.spec, prep)
    assert traces2 == 0  # loaded: nothing traced
    for k in first:
        np.testing.assert_array_equal(again[k], first[k])
    np.testing.assert_array_equal(stats2["energy"], stats["energy"])
    # a truncated file is not trusted: traced anew, same numbers, file rewritten
    victim = next(store.glob("advance-*"))
    victim.write_bytes(victim.read_bytes()[:100])
    third, _, traces3 = _run(prep.spec, prep)
    assert traces3 == 1 and victim.stat().st_size > 100
    for k in first:
        np.testing.assert_array_equal(third[k], first[k])


def test_the_fit_path_uses_the_host_loop_and_matches_one_compiled_program(chinchilla_data):
    """The stepped loop (pieces called from Python) gives the draws of the whole schedule compiled as one
    program (:func:`S.build`, which ``fit_many`` and sharded fits compose)."""
    prep = prepare(chinchilla_data)
    draws, stats, _ = _run(prep.spec, prep)
    args = jax.tree.map(lambda a: a[None], prep.args)
    whole, whole_stats = S.to_numpy(S.jit(S.build(prep.spec, CONFIG))(jax.random.key(3)[None], *args))
    for k in draws:
        np.testing.assert_array_equal(whole[k][0], draws[k])
    np.testing.assert_array_equal(whole_stats["num_steps"][0], stats["num_steps"])


def test_keys_name_everything_the_programs_depend_on(chinchilla_data):
    prep = prepare(chinchilla_data)
    sig = stored.shapes((np.zeros((1, 2), np.uint32), prep.args))
    key = stored.program_key(prep.spec, CONFIG, sig)
    assert key is not None and key == stored.program_key(prep.spec, CONFIG, sig)
    other_config = S.SamplerConfig(chains=2, warmup=60, draws=41)
    assert stored.program_key(prep.spec, other_config, sig) != key
    # warm-up's length is not in the programs (its schedule is an argument): the key takes program_settings
    assert S.program_settings(CONFIG) == S.program_settings(dataclasses.replace(CONFIG, warmup=500, progress=True))
    assert S.program_settings(CONFIG) != S.program_settings(dataclasses.replace(CONFIG, chains=3))
    shorter = stored.shapes(
        (np.zeros((1, 2), np.uint32), jax.tree.map(lambda a: a[:-1] if np.ndim(a) else a, prep.args))
    )
    assert stored.program_key(prep.spec, CONFIG, shorter) != key
    normal = prepare(chinchilla_data, likelihood="normal")
    assert stored.program_key(normal.spec, CONFIG, sig) != key


def test_a_users_own_law_is_never_stored(chinchilla_data, store):
    """A law whose functions live outside the package has no key (its code is not in the package digest), so
    its programs are traced in every process and nothing is written."""
    prep = prepare(chinchilla_data)
    own = lambda p, x: prep.spec.law.log_mean(p, x)  # noqa: E731  (a function defined here, not in scalebayes)
    spec = dataclasses.replace(prep.spec, law=dataclasses.replace(prep.spec.law, log_mean=own))
    assert stored.program_key(spec, CONFIG, ()) is None
    with pytest.raises(stored._NoKey):
        stored.stable_text(own)
    _, _, traces = _run(spec, prep)
    assert traces == 1 and not list(store.iterdir())


#: Fits of this module run CONFIG's sampler settings, so that they share one set of programs.
FIT = dict(chains=CONFIG.chains, draws=CONFIG.draws, warn=False, pointwise=False, **LAW_ONLY)


def test_progress_on_and_off_share_programs(chinchilla_data):
    kw = dict(seed=4, warmup=CONFIG.warmup, **FIT)
    off = sb.fit(chinchilla_data, progress=False, **kw)
    n0 = S.COMPILE_COUNT["n"]
    on = sb.fit(chinchilla_data, progress=True, **kw)
    assert S.COMPILE_COUNT["n"] == n0
    np.testing.assert_array_equal(on.draws("E"), off.draws("E"))


def test_fits_differing_only_in_warmup_share_programs(chinchilla_data, store):
    """The pieces take the schedule's table as an argument, so a fit with another warm-up length compiles nothing
    and gives the draws it would give alone (here: with the pieces forgotten, none stored, traced for it anew)."""
    kw = dict(seed=4, **FIT)
    sb.fit(chinchilla_data, warmup=CONFIG.warmup, **kw)
    n0 = S.COMPILE_COUNT["n"]
    shared = sb.fit(chinchilla_data, warmup=CONFIG.warmup + 20, **kw)
    assert S.COMPILE_COUNT["n"] == n0
    compiled._stepped.cache_clear()  # the runners and their pieces forgotten in memory
    for p in store.iterdir():  # and on disk
        p.unlink()
    alone = sb.fit(chinchilla_data, warmup=CONFIG.warmup + 20, **kw)
    assert S.COMPILE_COUNT["n"] > n0  # traced anew
    np.testing.assert_array_equal(shared.draws("E"), alone.draws("E"))


def test_every_built_in_law_has_a_key():
    """Built-in laws hold only the package's own functions (and builtins such as ``dict``), so their programs are
    stored; a regression here would silently make every fit of that law trace again."""
    for law in sb.laws.BUILT_IN:  # not laws.available(): other tests register laws of their own
        assert stored.stable_text(law), law.name


def test_the_store_stays_bounded_and_keeps_what_was_used_last(tmp_path):
    """Past ``max_bytes`` the least recently used files go until three quarters remain; loading a program renews
    it (its modification time), so a program in use outlives stale ones (e.g. an edited package's)."""
    import os

    for i in range(8):  # 8 files of 100 bytes, file i last used at time 1000 + i
        p = tmp_path / f"init-{i}"
        p.write_bytes(b"x" * 100)
        os.utime(p, (1000 + i, 1000 + i))
    os.utime(tmp_path / "init-0", (5000, 5000))  # the oldest file was just used
    (tmp_path / ".tmp-half-written").write_bytes(b"x" * 100)  # another process's write in progress: never removed
    assert stored.evict(tmp_path, max_bytes=900) == []  # 800 bytes of programs: under the bound
    removed = stored.evict(tmp_path, max_bytes=700)  # over it: down to 525 bytes, least recently used first
    assert removed == ["init-1", "init-2", "init-3"]
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        ".tmp-half-written",
        "init-0",
        *(f"init-{i}" for i in range(4, 8)),
    ]


def test_loading_renews_a_program(chinchilla_data, store):
    import os

    prep = prepare(chinchilla_data)
    _run(prep.spec, prep)
    for p in store.iterdir():
        os.utime(p, (1000, 1000))
    _run(prep.spec, prep)  # loads all three
    assert all(p.stat().st_mtime > 1000 for p in store.iterdir())
