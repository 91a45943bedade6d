"""Scaling laws as small declarative objects.

A :class:`Law` names its published parameters, the inputs it needs, a mean function in JAX over *log* inputs, and
the unconstrained coordinates ("latents") NUTS samples in, with the map from latents to published parameters and
weakly-informative default priors on the latents. Hierarchical pooling (see :mod:`scalebayes.model`) acts on the
latents, so any law gets complete, partial or no pooling for free.

Writing your own law::

    import jax.numpy as jnp
    from scalebayes.laws import Law, register

    def log_mean(p, x):                       # p: published params, x: log inputs (natural log)
        return jnp.logaddexp(jnp.log(p["E"]), jnp.log(p["A"]) - p["alpha"] * x["C"])

    my_law = Law(
        name="my_compute_law",
        params=("E", "A", "alpha"),
        inputs=("C",),
        log_mean=log_mean,
        priors={"E": (0.0, 1.0), "A": (5.0, 3.0), "alpha": (-1.5, 0.6)},  # Normal(loc, scale) on log(param)
        reference="...",
    )
    register(my_law)                          # now fit(data, law="my_compute_law") works

With the defaults each latent is ``log_<param>``, i.e. every parameter is positive with a log-normal prior. Laws
that need centring (to decorrelate an amplitude from its exponent) supply ``latents``/``to_params``/``from_params``
as the built-in Chinchilla law does.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import jax.numpy as jnp
import numpy as np

from .errors import ModelError, UnknownNameError

Array = jnp.ndarray
PriorSpec = tuple[float, float]  # Normal(loc, scale) on a latent coordinate
Centre = Mapping[str, float]  # mean log input, e.g. {"N": mean(log N), "D": mean(log D)}


def _default_to_params(params: tuple[str, ...]):
    def to_params(z: Mapping[str, Array], centre: Centre) -> dict[str, Array]:
        return {p: jnp.exp(z[f"log_{p}"]) for p in params}

    return to_params


def _default_from_params(params: tuple[str, ...]):
    def from_params(p: Mapping[str, Array], centre: Centre) -> dict[str, Array]:
        return {f"log_{q}": jnp.log(p[q]) for q in params}

    return from_params


@dataclass(frozen=True, eq=False)  # hashed by identity: a Law is a registry singleton
class Law:
    """A scaling law L(inputs; params) with everything the sampler needs.

    Attributes:
        name: registry name, e.g. ``"chinchilla"``.
        params: published parameter names, in reporting order.
        inputs: data columns the law needs, a subset of ``("N", "D", "C", "U")``.
        log_mean: ``(params, log_inputs) -> log L``; every value broadcasts (shapes ``(...,)``), losses in nats.
        latents: unconstrained coordinates sampled by NUTS (default ``log_<param>`` for each param).
        to_params: ``(latents, centre) -> params``; ``centre`` maps an input to the mean of its log over the data.
        from_params: the inverse of ``to_params``.
        priors: default Normal(loc, scale) per latent, or a callable ``(centre, loss_scale) -> dict`` for priors
            that adapt to the data's units (``loss_scale`` = median observed loss, nats).
        derived: extra reported quantities, ``name -> (params -> value)``.
        reference: citation of the law.
    """

    name: str
    params: tuple[str, ...]
    inputs: tuple[str, ...]
    log_mean: Callable[[Mapping[str, Array], Mapping[str, Array]], Array]
    priors: Mapping[str, PriorSpec] | Callable[[Centre, float], Mapping[str, PriorSpec]]
    latents: tuple[str, ...] | None = None
    to_params: Callable[[Mapping[str, Array], Centre], dict[str, Array]] | None = None
    from_params: Callable[[Mapping[str, Array], Centre], dict[str, Array]] | None = None
    derived: Mapping[str, Callable[[Mapping[str, Array]], Array]] = field(default_factory=dict)
    reference: str = ""

    def __post_init__(self):
        if self.latents is None:
            object.__setattr__(self, "latents", tuple(f"log_{p}" for p in self.params))
        if self.to_params is None:
            object.__setattr__(self, "to_params", _default_to_params(self.params))
        if self.from_params is None:
            object.__setattr__(self, "from_params", _default_from_params(self.params))
        bad = [i for i in self.inputs if i not in ("N", "D", "C", "U")]
        if bad:
            raise ModelError(f"law {self.name!r}: unknown inputs {bad}; use N, D, C or U")

    @property
    def n_params(self) -> int:
        return len(self.params)

    def default_priors(self, centre: Centre, loss_scale: float) -> dict[str, PriorSpec]:
        """Normal(loc, scale) per latent for data with this centre and typical loss (nats)."""
        pri = self.priors(centre, loss_scale) if callable(self.priors) else dict(self.priors)
        missing = [z for z in self.latents if z not in pri]
        if missing:
            raise ModelError(f"law {self.name!r} has no prior for latents {missing}")
        return {z: (float(pri[z][0]), float(pri[z][1])) for z in self.latents}

    def centre(self, log_inputs: Mapping[str, np.ndarray]) -> dict[str, float]:
        """Mean log input per input the law uses (the data's geometric-mean point)."""
        return {k: float(np.mean(log_inputs[k])) for k in self.inputs}

    def loss(self, params: Mapping[str, Array], **inputs: Array) -> Array:
        """L in nats at raw (not log) inputs, e.g. ``law.loss(p, N=7e10, D=1.4e12)``."""
        return jnp.exp(self.log_mean(params, {k: jnp.log(jnp.asarray(v, dtype=float)) for k, v in inputs.items()}))


# ---------------------------------------------------------------------------------------------------- chinchilla
def _chinchilla_log_mean(p, x):
    return jnp.logaddexp(
        jnp.log(p["E"]),
        jnp.logaddexp(jnp.log(p["A"]) - p["alpha"] * x["N"], jnp.log(p["B"]) - p["beta"] * x["D"]),
    )


def _chinchilla_to_params(z, centre):
    # log_A_c is log of the N-term at the data's geometric-mean N: A·N̄^-α. Sampling it instead of log A removes
    # the near-linear ridge between log A and α (log A = log A_c + α·log N̄, with log N̄ ≈ 20).
    alpha, beta = jnp.exp(z["log_alpha"]), jnp.exp(z["log_beta"])
    return {
        "E": jnp.exp(z["log_E"]),
        "A": jnp.exp(z["log_A_c"] + alpha * centre["N"]),
        "B": jnp.exp(z["log_B_c"] + beta * centre["D"]),
        "alpha": alpha,
        "beta": beta,
    }


def _chinchilla_from_params(p, centre):
    return {
        "log_E": jnp.log(p["E"]),
        "log_A_c": jnp.log(p["A"]) - p["alpha"] * centre["N"],
        "log_B_c": jnp.log(p["B"]) - p["beta"] * centre["D"],
        "log_alpha": jnp.log(p["alpha"]),
        "log_beta": jnp.log(p["beta"]),
    }


def _chinchilla_priors(centre, loss_scale):
    # Scale-free and weakly informative. E: irreducible loss, half the typical loss give or take a factor e
    # (95%: 0.07-3.6x the typical loss). A_c, B_c: each reducible term at the data's centre, a quarter of the
    # typical loss within a factor e^1.5 either way. Exponents: log-normal around 0.35 with 95% mass on
    # ~0.11-1.1, which covers every published Chinchilla-form fit (0.07 Kaplan-style to ~0.8) without letting the
    # sampler wander to α→0 where A and E become interchangeable.
    ls = float(np.log(loss_scale))
    return {
        "log_E": (ls + np.log(0.5), 1.0),
        "log_A_c": (ls + np.log(0.25), 1.5),
        "log_B_c": (ls + np.log(0.25), 1.5),
        "log_alpha": (float(np.log(0.35)), 0.6),
        "log_beta": (float(np.log(0.35)), 0.6),
    }


def _exponent_shares(p):
    s = p["alpha"] + p["beta"]
    return {"a": p["beta"] / s, "b": p["alpha"] / s}


chinchilla = Law(
    name="chinchilla",
    params=("E", "A", "B", "alpha", "beta"),
    inputs=("N", "D"),
    log_mean=_chinchilla_log_mean,
    latents=("log_E", "log_A_c", "log_B_c", "log_alpha", "log_beta"),
    to_params=_chinchilla_to_params,
    from_params=_chinchilla_from_params,
    priors=_chinchilla_priors,
    derived={"a": lambda p: _exponent_shares(p)["a"], "b": lambda p: _exponent_shares(p)["b"]},
    reference="Hoffmann et al. (2022), Training Compute-Optimal Large Language Models, eq. (2) / Approach 3.",
)

_REGISTRY: dict[str, Law] = {}


def register(law: Law, *, overwrite: bool = False) -> Law:
    """Make ``law`` available by name to :func:`scalebayes.fit` and to saved-posterior loading."""
    if law.name in _REGISTRY and not overwrite and _REGISTRY[law.name] is not law:
        raise ModelError(f"a law named {law.name!r} is already registered (pass overwrite=True)")
    _REGISTRY[law.name] = law
    return law


def get(law: str | Law) -> Law:
    """The :class:`Law` for a name (or the law itself)."""
    if isinstance(law, Law):
        return law
    if law not in _REGISTRY:
        raise UnknownNameError(f"unknown law {law!r}; known laws: {sorted(_REGISTRY)}")
    return _REGISTRY[law]


def available() -> tuple[str, ...]:
    """Names of the registered laws."""
    return tuple(sorted(_REGISTRY))


register(chinchilla)
