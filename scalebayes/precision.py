"""Float64 as an explicit switch.

Scaling-law fits need float64: log-space sums of nearly equal terms (E against small reducible terms) and Huber
thresholds of 1e-3 on log loss lose their digits in float32. JAX computes in float32 unless ``jax_enable_x64`` is
on, a process-wide setting, so scalebayes changes it only where it has to, never on import:

* ``import scalebayes`` leaves JAX's configuration as it was.
* :func:`use_float64` turns ``jax_enable_x64`` on (idempotent). The entry points that build float64 arrays call
  :func:`ensure_float64` first: :func:`scalebayes.fit`, :func:`scalebayes.fit_many`,
  :func:`scalebayes.validation.sbc`, :func:`scalebayes.baselines.fit_huber` and the ``scalebayes`` command; call
  ``sb.use_float64()`` yourself before using other functions (laws, planning) on arrays you build.
* Setting the environment variable ``SCALEBAYES_X64=0`` opts out: the entry points then leave JAX's setting alone,
  and a computation that needs float64 (``fit(..., dtype="float64")``, ``fit_huber``) raises
  :class:`~scalebayes.errors.ModelError` instead of silently running in float32; ``fit(..., dtype="float32")``
  runs, and so do its calibration, predictions and plans, in float32.
* Arrays the package builds for its own computations ask for JAX's widest float (``dtype=float``): float64 when
  ``jax_enable_x64`` is on, float32 when it is off, so an opted-out process gets no dtype-truncation warnings.
"""

from __future__ import annotations

import os

import jax

from .errors import ModelError

ENV = "SCALEBAYES_X64"


def use_float64() -> None:
    """Turn on JAX's float64 mode (``jax_enable_x64``) for this process. Arrays created before keep their dtype."""
    jax.config.update("jax_enable_x64", True)


def float64_enabled() -> bool:
    """Whether JAX currently creates float64 arrays."""
    return bool(jax.config.jax_enable_x64)


def opted_out() -> bool:
    """True when ``SCALEBAYES_X64=0``: scalebayes must not change JAX's precision."""
    return os.environ.get(ENV, "1").strip() == "0"


def ensure_float64(what: str = "this computation", *, required: bool = True) -> bool:
    """Called on entry to the functions that need float64: turn it on unless the user opted out
    (``SCALEBAYES_X64=0``). Returns whether float64 is on; when it is off and ``required``, raises ModelError naming
    ``what``."""
    if not opted_out():
        use_float64()
    if required and not float64_enabled():
        raise ModelError(
            f"{what} needs float64, but SCALEBAYES_X64=0 and jax_enable_x64 is off: call scalebayes.use_float64() "
            "(or unset SCALEBAYES_X64)"
        )
    return float64_enabled()
