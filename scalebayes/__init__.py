"""scalebayes: Bayesian scaling-law inference.

Fit ``L = E + A/N^α + B/D^β`` (and other laws) to training runs with NUTS, share strength across model families
hierarchically, and answer extrapolation and compute-planning questions with the posterior predictive.

JAX runs in float64 by default (log-space sums of nearly equal terms need it); set ``SCALEBAYES_X64=0`` before
import to leave JAX's global precision alone, and use ``fit(..., dtype="float32")`` for float32 sampler arrays.
"""

from __future__ import annotations

import os

import jax

if os.environ.get("SCALEBAYES_X64", "1") != "0":
    jax.config.update("jax_enable_x64", True)

from . import baselines, datasets, errors, laws  # noqa: E402
from .backtest import backtest  # noqa: E402
from .batch import fit_many  # noqa: E402
from .cache import enable_compilation_cache  # noqa: E402
from .compare import compare  # noqa: E402
from .data import ScalingData  # noqa: E402
from .fit import fit  # noqa: E402
from .posterior import Posterior, load  # noqa: E402

__all__ = [
    "ScalingData",
    "Posterior",
    "fit",
    "fit_many",
    "load",
    "datasets",
    "errors",
    "laws",
    "baselines",
    "backtest",
    "compare",
    "enable_compilation_cache",
]
__version__ = "0.1.0"
