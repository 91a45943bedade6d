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
from collections.abc import Mapping
from dataclasses import dataclass

from . import laws as _laws
from .errors import ModelError, UnknownNameError
from .likelihood import NAMES as LIKELIHOODS

POOLINGS = (None, "complete", "partial", "none")
NOISES = ("shared", "family")


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
        noise: ``"shared"`` σ or ``"family"`` (one σ per family).
        priors: prior overrides (see :mod:`scalebayes.priors`) as sorted ``(key, value)`` pairs; pass a mapping.
    """

    law: str = "chinchilla"
    likelihood: str = "student_t"
    pooling: str | None = None
    shared: tuple[str, ...] = ()
    free: tuple[str, ...] = ()
    centred: bool | tuple[str, ...] = False
    noise: str = "shared"
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
        centred = self.centred if isinstance(self.centred, bool) else _names(self.centred, "centred")
        priors = self.priors.items() if isinstance(self.priors, Mapping) else (self.priors or ())
        object.__setattr__(self, "law", law)
        object.__setattr__(self, "shared", _names(self.shared, "shared"))
        object.__setattr__(self, "free", _names(self.free, "free"))
        object.__setattr__(self, "centred", centred)
        object.__setattr__(self, "priors", tuple(sorted((str(k), _prior_value(k, v)) for k, v in priors)))

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
        return cls(**dict(d))

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_json(cls, s: str) -> FitSpec:
        return cls.from_dict(json.loads(s))
