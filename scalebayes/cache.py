"""A persistent JAX compilation cache in the user's cache folder, so that a second fit of the same shape (same law,
pooling, number of families, padded number of runs and sampler settings) skips XLA compilation.

The command line turns it on at start; from Python call :func:`enable_compilation_cache` once, before the first
fit::

    import scalebayes as sb
    sb.enable_compilation_cache()          # ~/.cache/scalebayes/jax, or $XDG_CACHE_HOME/scalebayes/jax

It is off when ``SCALEBAYES_COMPILATION_CACHE=0``, and a cache folder already chosen (``JAX_COMPILATION_CACHE_DIR``
or ``jax.config.update("jax_compilation_cache_dir", ...)``) is kept. A folder that cannot be created or written
leaves compilation uncached, with a warning; it never stops a fit. The folder is bounded: past
:data:`COMPILED_MAX_BYTES` JAX removes the least recently used compiled programs.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import jax

from .errors import OutputError
from .store import check_writable

#: Environment variable that turns the cache off when set to ``0``.
ENV_SWITCH = "SCALEBAYES_COMPILATION_CACHE"
#: Most bytes of compiled programs kept (unless ``JAX_COMPILATION_CACHE_MAX_SIZE`` says otherwise); the traced
#: sampler programs beside them have their own bound (:data:`scalebayes.sampler.stored.MAX_BYTES`).
COMPILED_MAX_BYTES = 2 * 2**30


def default_folder() -> Path:
    """``$XDG_CACHE_HOME/scalebayes/jax``, or ``~/.cache/scalebayes/jax`` when XDG_CACHE_HOME is unset."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "scalebayes" / "jax"


def enable_compilation_cache(folder: str | Path | None = None) -> Path | None:
    """Keep compiled XLA programs in ``folder`` (default :func:`default_folder`) across Python processes.

    Every compilation is kept, not only those over JAX's default 1 s: ``predict`` and ``plan`` compile several
    small programs whose total is what a user waits for. Returns the folder in use, or ``None`` when caching is
    off (``SCALEBAYES_COMPILATION_CACHE=0``) or the folder is not writable (a warning says so).
    """
    if os.environ.get(ENV_SWITCH, "1") == "0":
        return None
    chosen = jax.config.jax_compilation_cache_dir
    if chosen:  # the user (or JAX_COMPILATION_CACHE_DIR) already picked one
        _bound_size()
        return Path(chosen)
    folder = Path(folder) if folder is not None else default_folder()
    try:
        folder.mkdir(parents=True, exist_ok=True)
        check_writable(folder)
    except (OSError, OutputError) as e:
        warnings.warn(
            f"compilation cache disabled: cannot write {folder} ({getattr(e, 'strerror', None) or e}); every run "
            f"compiles anew (set XDG_CACHE_HOME to a writable folder, or {ENV_SWITCH}=0 to silence this)",
            RuntimeWarning,
            stacklevel=2,
        )
        return None
    jax.config.update("jax_compilation_cache_dir", str(folder))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    _bound_size()
    return folder


def _bound_size() -> None:
    """Cap the compiled programs at :data:`COMPILED_MAX_BYTES` unless a size was chosen (JAX keeps every program
    forever by default; with a cap it removes the least recently used ones)."""
    if "JAX_COMPILATION_CACHE_MAX_SIZE" not in os.environ and jax.config.jax_compilation_cache_max_size == -1:
        jax.config.update("jax_compilation_cache_max_size", COMPILED_MAX_BYTES)
