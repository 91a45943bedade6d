"""scalebayes: Bayesian scaling-law inference.

Fit ``L = E + A/N^α + B/D^β`` (and other laws) to training runs with NUTS, share strength across model families
hierarchically, and answer extrapolation and compute-planning questions with the posterior predictive.

Precision: importing scalebayes does not change JAX's configuration. The functions that need float64 (``fit``,
``fit_many``, ``validation.sbc``, ``baselines.fit_huber``, the ``scalebayes`` command) turn on ``jax_enable_x64``
when called; call :func:`use_float64` yourself before other computations on arrays you build, and set
``SCALEBAYES_X64=0`` to keep scalebayes from ever changing it (see :mod:`scalebayes.precision`).
"""

from __future__ import annotations

from . import baselines, datasets, downstream, errors, laws, loss_to_accuracy, scores, twostep
from .backtesting import backtest
from .batch import fit_many
from .cache import enable_compilation_cache
from .calibration import calibrate
from .comparison import compare
from .data import ScalingData
from .fitting import fit
from .posterior import Posterior, load
from .precision import use_float64
from .sampler import SamplerConfig
from .spec import FitSpec
from .twostep import TwoStep

__all__ = [
    "ScalingData",
    "FitSpec",
    "SamplerConfig",
    "Posterior",
    "fit",
    "fit_many",
    "load",
    "use_float64",
    "datasets",
    "errors",
    "laws",
    "baselines",
    "downstream",
    "loss_to_accuracy",
    "twostep",
    "TwoStep",
    "scores",
    "backtest",
    "calibrate",
    "compare",
    "enable_compilation_cache",
]
__version__ = "0.1.0"
