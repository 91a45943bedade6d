"""``FitSpec``: every model option of a fit in one frozen value.

A ``FitSpec`` says *which model* is fitted (law, likelihood, pooling and its exceptions, centring, noise, prior
overrides); the sampler's settings (chains, draws, NUTS options) travel beside it as a
:class:`scalebayes.sampler.SamplerConfig`. ``fit``, ``fit_many``, ``sbc``, ``backtest``, ``compare`` and the
calibration take one, the DataTree stores it (``to_dict``, JSON) and a loaded posterior rebuilds it exactly
(``from_dict``), so a refit on a subset of runs is ``fit(subset, spec=post.fit_spec)`` and nothing re-parses
options from metadata.
"""

from __future__ import annotations

import dataclasses
import json
import numbers
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from . import laws as _laws
from .errors import ModelError, UnknownNameError
from .likelihood import NAMES as LIKELIHOODS
from .model import NOISE as NOISES
from .model import has_trend_inputs, latent_for
from .sampler import SamplerConfig, chain_method_for

POOLINGS = (None, "complete", "partial", "none")
#: ``noise_trend`` options (see FitSpec).
NOISE_TRENDS = ("auto", "none", "tokens_per_parameter", "tokens_per_parameter_cut")
#: What ``noise_trend="auto"`` (the default) means for a law of N and D; laws without both get ``"none"``.
#: The cut form, because on the extrapolation suite it brings intervals closer to nominal without moving the
#: law's predictions (benchmarks/extrapolation/noise_trend_cut/).
AUTO_TREND = "tokens_per_parameter_cut"
DTYPES = ("float64", "float32")
#: Largest NUTS tree depth accepted: 2^30 - 1 leapfrog steps per iteration is already far past any useful fit, and
#: deeper trees overflow the sampler's int32 step counters.
MAX_TREE_DEPTH = 30
#: Seeds are non-negative integers that ``jax.random.key`` accepts (int64).
SEED_MAX = 2**63 - 1


def _names(v, what: str) -> tuple[str, ...]:
    if isinstance(v, str):
        return (v,)
    try:
        out = tuple(v)
    except TypeError:
        raise ModelError(f"{what} must be a parameter name or a sequence of names, got {v!r}") from None
    if not all(isinstance(s, str) for s in out):
        raise ModelError(f"{what} must hold parameter names (text), got {v!r}")
    return out


def _prior_value(key: str, v):
    """A prior override as a hashable, JSON-friendly value: a float or a tuple of floats."""
    try:
        return tuple(float(x) for x in v) if isinstance(v, list | tuple) else float(v)
    except (TypeError, ValueError):
        raise ModelError(f"prior override {key!r} must be a number or a pair of numbers, got {v!r}") from None


@dataclass(frozen=True)
class FitSpec:
    """The model options of a fit (hashable; equal specs on equal data give equal posteriors for one seed).

    Attributes:
        law: a registered law name (``scalebayes.laws.available()``); a :class:`~scalebayes.laws.Law` object is
            registered and replaced by its name.
        likelihood: ``"student_t"`` or ``"normal"`` noise on log loss.
        pooling: ``"complete"``, ``"partial"``, ``"none"``, or None (partial with several families, else complete).
        shared, free: parameter names pooled exactly / left independent per family under partial pooling.
        centred: ``True``, ``False`` or parameter names sampled in centred form under partial pooling.
        marginal: sample the other partially pooled parameters as family values with the population mean and
            spread integrated out (``True``, the default; see :mod:`scalebayes.model`), or non-centred (``False``).
        noise: ``"shared"`` σ or ``"family"`` (one σ per family).
        noise_trend: how a run's noise scale depends on its tokens per parameter D/N (laws of N and D).
            ``"tokens_per_parameter_cut"`` (what ``"auto"``, the default, means for laws of N and D): the law
            fitted with one noise scale, then a new run's noise σ·exp(ζ·(log(D/N) − c)) (σ, ζ, ν) refitted to its
            residuals, so the law's draws and point predictions stay the one-scale fit's
            (:mod:`scalebayes.noise_refit`). ``"tokens_per_parameter"``: the same trend fitted with the law
            (:mod:`scalebayes.model`), which also reweights the runs (noisier runs count less) and so moves
            extrapolations (benchmarks/extrapolation/noise_trend/). ``"none"``: one scale for every run (what
            ``"auto"`` means for laws without both N and D).
        priors: prior overrides (see :mod:`scalebayes.priors`) as sorted ``(key, value)`` pairs; pass a mapping.
    """

    law: str = "chinchilla"
    likelihood: str = "student_t"
    pooling: str | None = None
    shared: tuple[str, ...] = ()
    free: tuple[str, ...] = ()
    centred: bool | tuple[str, ...] = False
    marginal: bool = True
    noise: str = "shared"
    noise_trend: str = "auto"
    priors: tuple[tuple[str, float | tuple[float, ...]], ...] = ()

    def __post_init__(self):
        law = self.law
        if isinstance(law, _laws.Law):
            _laws.register(law)
            law = law.name
        if not isinstance(law, str):
            raise ModelError(f"law must be a law name or a Law, got {type(law).__name__}")
        _laws.get(law)  # raises UnknownNameError naming the available laws
        if self.likelihood not in LIKELIHOODS:
            raise UnknownNameError(f"unknown likelihood {self.likelihood!r}; choose one of {LIKELIHOODS}")
        if self.pooling not in POOLINGS:
            raise UnknownNameError(f"unknown pooling {self.pooling!r}; choose one of {POOLINGS[1:]} or None")
        if self.noise not in NOISES:
            raise UnknownNameError(f"unknown noise {self.noise!r}; choose one of {NOISES}")
        if self.noise_trend not in NOISE_TRENDS:
            raise UnknownNameError(f"unknown noise_trend {self.noise_trend!r}; choose one of {NOISE_TRENDS}")
        centred = self.centred if isinstance(self.centred, bool) else _names(self.centred, "centred")
        if not isinstance(self.marginal, bool | np.bool_):
            raise ModelError(f"marginal must be True or False, got {self.marginal!r}")
        object.__setattr__(self, "marginal", bool(self.marginal))
        priors = self.priors.items() if isinstance(self.priors, Mapping) else (self.priors or ())
        if isinstance(priors, str):
            raise ModelError(f"priors must be a mapping of overrides, got {priors!r}")
        object.__setattr__(self, "law", law)
        object.__setattr__(self, "shared", _names(self.shared, "shared"))
        object.__setattr__(self, "free", _names(self.free, "free"))
        object.__setattr__(self, "centred", centred)
        object.__setattr__(self, "priors", tuple(sorted((str(k), _prior_value(k, v)) for k, v in priors)))
        law_obj = _laws.get(law)
        if self.noise_trend == "auto":  # resolved here, so that a stored FitSpec says what was fitted
            object.__setattr__(self, "noise_trend", AUTO_TREND if has_trend_inputs(law_obj) else "none")
        if self.noise_trend != "none" and not has_trend_inputs(law_obj):
            raise ModelError(
                f"noise_trend={self.noise_trend!r} needs a law of N and D; {law!r} reads {list(law_obj.inputs)}"
            )
        for what in ("shared", "free") + (() if isinstance(centred, bool) else ("centred",)):
            for name in getattr(self, what):
                latent_for(law_obj, name)  # raises UnknownNameError naming the law's parameters

    @property
    def trend(self) -> bool:
        """Whether the fitted model has the noise trend in tokens per parameter."""
        return self.noise_trend == "tokens_per_parameter"

    @property
    def cut_trend(self) -> bool:
        """Whether a new run's noise is refitted to the law's residuals after the fit (the cut form)."""
        return self.noise_trend == "tokens_per_parameter_cut"

    @property
    def prior_overrides(self) -> dict | None:
        """The prior overrides as the mapping :func:`scalebayes.priors.resolve` takes (None when there are none)."""
        return dict(self.priors) or None

    def replace(self, **changes) -> FitSpec:
        """A copy with some options changed (validated again)."""
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        """JSON-friendly form; :meth:`from_dict` inverts it exactly."""
        d = dataclasses.asdict(self)
        d["shared"], d["free"] = list(self.shared), list(self.free)
        d["centred"] = self.centred if isinstance(self.centred, bool) else list(self.centred)
        d["priors"] = {k: list(v) if isinstance(v, tuple) else v for k, v in self.priors}
        return d

    @classmethod
    def from_dict(cls, d: Mapping) -> FitSpec:
        unknown = set(d) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise ModelError(f"unknown FitSpec fields {sorted(unknown)}")
        return cls(**{"noise_trend": "none", **dict(d)})  # written before the noise trend: a fit without one

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_json(cls, s: str) -> FitSpec:
        return cls.from_dict(json.loads(s))


FIELDS = tuple(f.name for f in dataclasses.fields(FitSpec))


def resolve(spec: FitSpec | None, law=None, options: Mapping | None = None) -> FitSpec:
    """The one place a call's model options become a :class:`FitSpec`: ``spec`` as given, or one built from ``law``
    (default ``"chinchilla"``) and keyword ``options`` (FitSpec's fields), not both. ``law`` may itself be a
    FitSpec (``fit(data, FitSpec(...))``)."""
    options = dict(options or {})
    if isinstance(law, FitSpec):
        spec, law = (law, None) if spec is None else (spec, law)
    unknown = sorted(set(options) - set(FIELDS))
    if unknown:
        raise ModelError(f"unknown option(s) {unknown}; model options are {list(FIELDS)[1:]} (see FitSpec)")
    if spec is not None:
        if not isinstance(spec, FitSpec):
            raise ModelError(f"spec must be a FitSpec, got {type(spec).__name__}")
        given = ([] if law is None else ["law"]) + sorted(options)
        if given:
            raise ModelError(f"pass the model either as spec= or as keywords, not both (got spec and {given})")
        return spec
    return FitSpec(law="chinchilla" if law is None else law, **options)


# ----------------------------------------------------------------------------------------- sampler settings
def whole_number(v, name: str, least: int) -> int:
    """``v`` as an int >= ``least``: an integer, or a float with no fractional part (1e3), never silently
    truncated (10.5 draws is an error)."""
    if isinstance(v, bool) or not isinstance(v, numbers.Real):
        raise ModelError(f"{name} must be a whole number >= {least}, got {v!r}")
    if isinstance(v, numbers.Integral):
        out = int(v)
    elif float(v).is_integer():
        out = int(float(v))
    else:
        raise ModelError(f"{name} must be a whole number >= {least}, got {v!r}")
    if out < least:
        raise ModelError(f"{name} must be >= {least}, got {v!r}")
    return out


def check_seed(seed) -> int:
    """A seed as an int in [0, 2^63 - 1]; raises ModelError naming ``seed`` otherwise."""
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral):
        raise ModelError(f"seed must be a non-negative integer, got {seed!r}")
    if not 0 <= int(seed) <= SEED_MAX:
        raise ModelError(f"seed must be in [0, 2**63 - 1], got {seed!r}")
    return int(seed)


def check_dtype(dtype) -> str:
    """The sampler's float type as its name, ``"float64"`` or ``"float32"``."""
    name = getattr(dtype, "__name__", None) or str(dtype)  # np.float32, jnp.float32, "float32"
    try:
        name = str(np.dtype(name).name)
    except TypeError:
        pass
    if name not in DTYPES:
        raise ModelError(f"dtype must be one of {DTYPES}, got {dtype!r}")
    return name


def sampler_config(
    *,
    chains=4,
    warmup=1000,
    draws=1000,
    dense_mass=True,
    target_accept=0.9,
    max_tree_depth=10,
    progress=False,
    chain_method: str = "vectorized",
) -> SamplerConfig:
    """The one place a call's NUTS settings become a :class:`~scalebayes.sampler.SamplerConfig`, validated.

    ``chains``, ``draws`` ≥ 1 and ``warmup`` ≥ 0 are whole numbers, ``target_accept`` is in (0, 1),
    ``max_tree_depth`` an integer in 1..30; ``chain_method="auto"`` shards chains over local devices when they
    divide them (:func:`scalebayes.sampler.chain_method_for`). Bad values raise ModelError naming the argument.
    """
    chains = whole_number(chains, "chains", 1)
    draws = whole_number(draws, "draws", 1)
    warmup = whole_number(warmup, "warmup", 0)
    depth = whole_number(max_tree_depth, "max_tree_depth", 1)
    if depth > MAX_TREE_DEPTH:
        raise ModelError(f"max_tree_depth must be <= {MAX_TREE_DEPTH}, got {max_tree_depth!r}")
    ok = isinstance(target_accept, numbers.Real) and not isinstance(target_accept, bool)
    if not (ok and 0.0 < float(target_accept) < 1.0):
        raise ModelError(f"target_accept must be a number in (0, 1), got {target_accept!r}")
    if not isinstance(dense_mass, bool):
        raise ModelError(f"dense_mass must be True or False, got {dense_mass!r}")
    if progress is not None and not isinstance(progress, bool):
        raise ModelError(f"progress must be True, False or None (automatic), got {progress!r}")
    if chain_method == "auto":
        chain_method = chain_method_for(chains)
    return SamplerConfig(
        chains=chains,
        warmup=warmup,
        draws=draws,
        dense_mass=dense_mass,
        target_accept=float(target_accept),
        max_tree_depth=depth,
        chain_method=chain_method,
        progress=progress,
    )
