"""Sampler programs kept on disk (``jax.export``), so that a second process fitting the same shape skips tracing.

JAX's persistent compilation cache (:mod:`scalebayes.cache`) skips XLA's compilation, but finding its key needs the
program, i.e. tracing the sampler in Python first, which costs more than the cached compilation saves on a small
fit. This module keeps the traced programs themselves (StableHLO, serialised by ``jax.export`` with flatbuffers) in
``<compilation cache folder>/scalebayes_programs``, one file per program, and is on exactly when that cache is on.

A stale program would silently run the wrong model, so the key (:func:`program_key`) is a SHA-256 of everything a
program depends on: the source of every ``scalebayes`` module; the Python, NumPy, JAX and jaxlib versions; the backend
and device kind; float64; the XLA options; the model structure (``Spec``: law, pooling, families, noise, ...); the
sampler settings the programs depend on (:func:`.config.program_settings`: not ``warmup``, a runtime argument, nor
``progress``); the shapes and dtypes of the arguments. A ``Spec`` holding a function from outside the package and the
libraries whose versions the key names (a user's own law) has no key: its programs are traced every time, never stored.

A file that cannot be read or parsed is ignored and rewritten; one that cannot be written leaves the fit uncached.
The folder is bounded (:data:`MAX_BYTES`): loading a program marks it used, and a save that takes the folder past
the bound removes the least recently used programs (those of an edited or upgraded package are never used again).
Files are written to a temporary name and moved into place, so a reader never sees half a program. Trust: like the
compilation cache beside it (which holds native code), the folder is trusted input; a stored program can only
compute, it holds no Python.
"""

from __future__ import annotations

import dataclasses
import enum
import functools
import hashlib
import os
import stat
import sys
import tempfile
from pathlib import Path

import jax
import numpy as np

#: Sub-folder of the compilation cache folder holding the stored programs.
SUBFOLDER = "scalebayes_programs"
#: Most bytes of stored programs kept (a fit's three pieces take ~200 KB per argument shape): past it, a save removes
#: the least recently used files until the folder holds three quarters of it.
MAX_BYTES = 256 * 2**20
#: Modules whose functions a ``Spec`` may hold by name: their code is fixed by versions the key names.
_VERSIONED = ("builtins", "math", "operator", "numpy", "jax", "jaxlib")
_PACKAGE = Path(__file__).resolve().parents[1]


class _NoKey(Exception):
    """The object cannot be described by a stable text (e.g. a function from outside the package)."""


def folder() -> Path | None:
    """Where programs are stored: inside JAX's compilation cache folder, or None when that cache is off."""
    chosen = jax.config.jax_compilation_cache_dir
    return Path(chosen) / SUBFOLDER if chosen else None


@functools.lru_cache(maxsize=1)
def package_digest() -> str:
    """SHA-256 over the source of every module of the package (path and bytes, in path order)."""
    h = hashlib.sha256()
    for path in sorted(_PACKAGE.rglob("*.py")):
        h.update(str(path.relative_to(_PACKAGE)).encode() + b"\0" + path.read_bytes() + b"\0")
    return h.hexdigest()


def stable_text(obj) -> str:
    """A text that names ``obj`` the same way in every process: dataclasses and containers by their contents,
    the package's own functions by module, name and (for closures) captured values. Raises :class:`_NoKey` for
    anything else (a function defined outside the package, an arbitrary object)."""
    if obj is None or isinstance(obj, (bool, int, float, str, bytes, enum.Enum)):
        return repr(obj)
    if isinstance(obj, (np.ndarray, np.generic)):
        a = np.asarray(obj)
        return f"array({a.dtype},{a.shape},{hashlib.sha256(a.tobytes()).hexdigest()})"
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        inner = ",".join(f"{f.name}={stable_text(getattr(obj, f.name))}" for f in dataclasses.fields(obj))
        return f"{type(obj).__qualname__}({inner})"
    if isinstance(obj, (tuple, list)):
        return f"{type(obj).__name__}[{','.join(stable_text(v) for v in obj)}]"
    if isinstance(obj, dict):
        return "{" + ",".join(f"{stable_text(k)}:{stable_text(obj[k])}" for k in sorted(obj, key=repr)) + "}"
    if isinstance(obj, functools.partial):
        return f"partial({stable_text(obj.func)},{stable_text(obj.args)},{stable_text(obj.keywords)})"
    home = (getattr(obj, "__module__", None) or "").split(".")[0]
    if callable(obj) and home in _VERSIONED:  # fixed by the Python, NumPy and JAX versions in the key
        return f"fn({obj.__module__}.{obj.__qualname__})"
    if callable(obj) and home == "scalebayes":
        cells = [c.cell_contents for c in (getattr(obj, "__closure__", None) or ())]
        code = getattr(obj, "__code__", None)
        line = code.co_firstlineno if code is not None else -1  # tells apart two lambdas of one function
        defaults = getattr(obj, "__defaults__", None)
        return f"fn({obj.__module__}.{obj.__qualname__}@{line},{stable_text(cells)},{stable_text(defaults)})"
    raise _NoKey(f"{type(obj).__qualname__} from {home or 'nowhere'}")


def program_key(*parts) -> str | None:
    """The key of the programs for ``parts`` (model, settings, argument shapes): a hex digest that names their
    files (``<piece>-<key>``), or None when a part has no stable text."""
    try:
        described = [stable_text(p) for p in parts]
    except _NoKey:
        return None
    env = [
        package_digest(),
        sys.version,
        np.__version__,
        jax.__version__,
        getattr(jax.lib, "__version__", ""),
        jax.default_backend(),
        jax.devices()[0].device_kind,
        str(jax.config.jax_enable_x64),
    ]
    return hashlib.sha256("\n".join(env + described).encode()).hexdigest()[:40]


def shapes(tree) -> tuple:
    """The structure, shapes and dtypes of an argument tree, as plain tuples (part of a key)."""
    leaves, treedef = jax.tree.flatten(tree)
    return (str(treedef), *((tuple(np.shape(a)), str(np.result_type(a))) for a in leaves))


def load(key: str | None):
    """The stored ``jax.export.Exported`` under ``key``, or None (no folder, no file, or one that does not parse)."""
    where = folder()
    if key is None or where is None:
        return None
    try:
        found = jax.export.deserialize(bytearray((where / key).read_bytes()))
    except Exception:  # absent, unreadable, truncated or from an incompatible writer: trace anew
        return None
    try:
        os.utime(where / key)  # used now: what eviction goes by
    except OSError:  # a read-only folder: still usable
        pass
    return found


def save(key: str | None, exported) -> bool:
    """Store ``exported`` under ``key`` (atomically); False when there is no folder or it cannot be written."""
    where = folder()
    if key is None or where is None:
        return False
    tmp = None
    try:
        blob = exported.serialize()
        where.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=where, prefix=".tmp-")
        with os.fdopen(fd, "wb") as f:
            f.write(blob)
        os.replace(tmp, where / key)
    except Exception:  # no flatbuffers, a full or read-only disk: the fit runs uncached
        if tmp is not None and os.path.exists(tmp):
            os.unlink(tmp)
        return False
    evict(where)
    return True


def evict(where: Path, max_bytes: int = MAX_BYTES) -> list[str]:
    """When the programs in ``where`` take more than ``max_bytes``, remove the least recently used (oldest
    modification time: :func:`load` renews it) until they take at most three quarters of it. Returns the names
    removed. Another process may be removing the same files: a file already gone is skipped."""
    files = []
    for p in where.iterdir():
        try:
            st = p.stat()
        except OSError:
            continue
        if stat.S_ISREG(st.st_mode) and not p.name.startswith(".tmp-"):
            files.append((st.st_mtime, st.st_size, p))
    total = sum(size for _, size, _ in files)
    removed: list[str] = []
    if total <= max_bytes:
        return removed
    for _, size, p in sorted(files, key=lambda f: f[0]):
        if total <= 0.75 * max_bytes:
            break
        try:
            p.unlink()
        except OSError:
            continue
        total -= size
        removed.append(p.name)
    return removed
