"""Scaling laws as small declarative objects, and the library of published laws.

A :class:`Law` names its published parameters, the inputs it needs, a mean function in JAX over *log* inputs, and
the unconstrained coordinates ("latents") NUTS samples in, with the map from latents to published parameters and
weakly-informative default priors on the latents. Hierarchical pooling (see :mod:`scalebayes.model`) acts on the
latents, so any law gets complete, partial or no pooling for free.

Units: N parameters, D training tokens, C training FLOP (C = 6·N·D), U unique training tokens, loss in nats/token.
Inputs reach ``log_mean`` as natural logs, ``x["N"] = log N``; ``log_mean`` returns log L.

Shipped laws (``scalebayes.laws.available()``):

======================  ==============================================================  ===============
name                    mean loss                                                        inputs
======================  ==============================================================  ===============
``chinchilla``          E + A·N^-α + B·D^-β                                               N, D
``kaplan``              [(N_c/N)^(α_N/α_D) + D_c/D]^α_D                                   N, D
``compute``             E + A·C^-α                                                        C
``data_constrained``    E + A·N^-α + B·D'^-β, D' = U_D + U_D·R*·(1 − e^(−R/R*))           N, D, U
``overtrained``         E + (a·M^η + b·M^-η)·C^-η, M = D/N, C = 6ND                       N, D
``broken_power``        E + A·C^-α₁·(1 + (C/C_b)^(1/s))^(−(α₂−α₁)·s)                      C
``broken_power_N``      the same in N                                                     N
======================  ==============================================================  ===============

Writing your own law (the same surface the built-in laws use)::

    import jax.numpy as jnp
    from scalebayes.laws import Law, register

    def log_mean(p, x):                       # p: published params, x: log inputs (natural log)
        return jnp.logaddexp(jnp.log(p["E"]), jnp.log(p["A"]) - p["alpha"] * x["C"])

    my_law = Law(
        name="my_compute_law",
        params=("E", "A", "alpha"),
        inputs=("C",),
        log_mean=log_mean,
        priors={"log_E": (0.0, 1.0), "log_A": (5.0, 3.0), "log_alpha": (-1.5, 0.6)},  # Normal(loc, scale)
        reference="...",
        formula="L(C) = E + A / C<sup>α</sup>",               # optional, for the report (HTML)
        meanings={"A": "amplitude of the compute term"},   # optional, for the report's parameter table
    )
    register(my_law)                          # now fit(data, law="my_compute_law") works

With the defaults each latent is ``log_<param>``, i.e. every parameter is positive with a log-normal prior (keys of
``priors`` are latent names). Laws whose amplitude and exponent are strongly correlated should sample the amplitude
*centred* at the data's geometric-mean inputs instead, by supplying ``latents``/``to_params``/``from_params`` (and,
for priors that adapt to the data, a callable ``priors``) as the built-in laws do; ``latent_of`` tells pooling
options such as ``shared=("N_c",)`` which latent carries a parameter when the latent is not named
``log_<param>`` or ``log_<param>_<suffix>``.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import jax
import jax.numpy as jnp
import numpy as np

from .errors import ModelError, UnknownNameError

Array = jnp.ndarray
PriorSpec = tuple[float, float]  # Normal(loc, scale) on a latent coordinate
Centre = Mapping[str, float]  # mean log input, e.g. {"N": mean(log N), "D": mean(log D)}
CONSTRAINTS = ("positive", "real")

#: What the quantities every fit reports mean, whatever the law (a law's own ``meanings`` take precedence).
GENERIC_MEANINGS = {
    "E": "irreducible loss (nats): the floor no amount of scale removes",
    "sigma": "run-to-run noise: scale of the log-loss scatter around the law",
    "nu": "Student-t degrees of freedom of that noise (small = heavy tails, robust to outlying runs)",
    "sigma_trend": "change of the noise's log scale per nat of log tokens per parameter (negative: under-trained "
    "runs scatter more); sigma is the scale at the data's mean D/N",
}


@dataclass(frozen=True)
class ReferencePoint:
    """A published estimate of a law's parameters, to mark beside a posterior.

    Attributes:
        label: who published it, e.g. ``"Hoffmann et al. 2022"``.
        values: published parameter -> value (a subset of the law's params and derived quantities).
        data: names of the data sets (``ScalingData.name``) it was estimated on; it is shown only beside fits of
            those data, since a published point says nothing about other runs. Empty: shown beside every fit.
    """

    label: str
    values: Mapping[str, float]
    data: tuple[str, ...] = ()

    def applies_to(self, data_name: str) -> bool:
        """True when this point belongs beside a fit of the data set named ``data_name``."""
        return not self.data or str(data_name) in self.data


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
        latent_of: published parameter -> the latent that carries it, for latents not named ``log_<param>`` or
            ``log_<param>_<suffix>`` (used by ``shared=``/``free=`` pooling options).
        constraints: published parameter -> ``"positive"`` or ``"real"`` (default: every parameter positive); the
            latent transform enforces it, :meth:`check_params` checks values given by hand (e.g. for simulation).
        formula: the mean loss as one line of HTML (``<sup>``/``<sub>`` allowed), for reports; empty: reports
            describe the law by its inputs and parameters.
        meanings: parameter or derived quantity -> what it means in words, for reports (:meth:`meaning`).
        reference_points: published estimates to mark beside a posterior (see :class:`ReferencePoint`).
        per_run: optional faster form of ``log_mean`` for many runs that share a few parameter sets (the
            sampler's families), ``(prepare, evaluate)``: ``prepare(params)`` computes, once per family, whatever
            ``log_mean`` would recompute per run (logs of amplitudes, ...), ``evaluate(prepared, log_inputs)``
            gives log L from those values gathered per run; ``evaluate(prepare(p), x)`` equals
            ``log_mean(p, x)`` to rounding. Default: ``prepare`` the identity and ``evaluate`` = ``log_mean``.
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
    latent_of: Mapping[str, str] = field(default_factory=dict)
    constraints: Mapping[str, str] | None = None
    formula: str = ""
    meanings: Mapping[str, str] = field(default_factory=dict)
    reference_points: tuple[ReferencePoint, ...] = ()
    per_run: tuple[Callable[[Mapping[str, Array]], dict[str, Array]], Callable] | None = None

    def __post_init__(self):
        if self.constraints is None:
            object.__setattr__(self, "constraints", dict.fromkeys(self.params, "positive"))
        bad_c = {k: v for k, v in self.constraints.items() if k not in self.params or v not in CONSTRAINTS}
        if bad_c:
            raise ModelError(
                f"law {self.name!r}: bad constraints {bad_c}; keys are params, values one of {CONSTRAINTS}"
            )
        if self.latents is None:
            object.__setattr__(self, "latents", tuple(f"log_{p}" for p in self.params))
        if self.to_params is None:
            object.__setattr__(self, "to_params", _default_to_params(self.params))
        if self.from_params is None:
            object.__setattr__(self, "from_params", _default_from_params(self.params))
        if self.per_run is None:
            object.__setattr__(self, "per_run", (dict, self.log_mean))
        bad = [i for i in self.inputs if i not in ("N", "D", "C", "U")]
        if bad:
            raise ModelError(f"law {self.name!r}: unknown inputs {bad}; use N, D, C or U")
        bad_l = {p: z for p, z in self.latent_of.items() if p not in self.params or z not in self.latents}
        if bad_l:
            raise ModelError(f"law {self.name!r}: latent_of {bad_l} must map params {self.params} to latents")

    @property
    def formula_html(self) -> str:
        """:attr:`formula`, or a generic description, e.g. ``L(N, D) with parameters E, A``, when it is empty."""
        return self.formula or f"L({', '.join(self.inputs)}) with parameters {', '.join(self.params)}"

    def meaning(self, name: str) -> str:
        """What a posterior quantity means in words (``""`` when unknown). ``name`` may carry ``[family]``; the
        population coordinates of partial pooling (``mu_<latent>``, ``tau_<latent>``) are described generically."""
        base = str(name).split("[")[0]
        if base.startswith("mu_"):
            return f"population mean of {base[3:]} across families (sampler coordinate)"
        if base.startswith("tau_"):
            return f"spread of {base[4:]} across families (sampler coordinate)"
        if base in self.meanings:
            return self.meanings[base]
        if base in GENERIC_MEANINGS:
            return GENERIC_MEANINGS[base]
        if base in self.params:
            return f"parameter of the {self.name} law"
        if base in self.derived:
            return f"quantity derived from the {self.name} law's parameters"
        return ""

    def references_for(self, data_name: str) -> dict[str, dict[str, float]]:
        """``{label: {param: value}}`` of the :attr:`reference_points` that belong beside a fit of ``data_name``."""
        return {r.label: dict(r.values) for r in self.reference_points if r.applies_to(data_name)}

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

    def check_params(self, params: Mapping[str, float]) -> None:
        """Raise :class:`ModelError` unless ``params`` gives every published parameter within its constraint."""
        missing = [p for p in self.params if p not in params]
        if missing:
            raise ModelError(f"law {self.name!r}: missing parameters {missing}")
        for p, c in self.constraints.items():
            v = np.asarray(params[p], dtype=float)
            if not np.all(np.isfinite(v)) or (c == "positive" and np.any(v <= 0)):
                raise ModelError(f"law {self.name!r}: parameter {p!r} must be finite{' and > 0' * (c == 'positive')}")

    def loss(self, params: Mapping[str, Array], **inputs: Array) -> Array:
        """L in nats at raw (not log) inputs, e.g. ``law.loss(p, N=7e10, D=1.4e12)``."""
        return jnp.exp(self.log_mean(params, {k: jnp.log(jnp.asarray(v, dtype=float)) for k, v in inputs.items()}))


def logsumexp(*terms: Array) -> Array:
    """log Σ_k exp(t_k) of broadcast terms, stably (max-shifted): the saturating sums of the laws.

    Why not nested ``jnp.logaddexp``: its derivative rules cost ~3x more per run in the sampler's gradient (51 vs
    15 µs for the Chinchilla potential of 4 chains × 256 runs on the 2-core CPU; the gradient is most of a
    leapfrog step): this takes one exp per term and a single log.
    """
    terms = jnp.broadcast_arrays(*terms)
    # The shift m cancels exactly (its derivative through both places is -1 + 1), so it carries no gradient; terms
    # are not stacked, which kept ~200 MB of (terms × runs) intermediates out of a 100,000-run fit.
    m = jax.lax.stop_gradient(functools.reduce(jnp.maximum, terms))
    m = jnp.where(jnp.isfinite(m), m, 0.0)  # every term -inf: log 0 = -inf, not nan
    return m + jnp.log(sum(jnp.exp(t - m) for t in terms))


# ---------------------------------------------------------------------------------------------------- chinchilla
def _chinchilla_log_mean(p, x):
    # log L = logsumexp(log E, log A − α·log N, log B − β·log D)
    return logsumexp(jnp.log(p["E"]), jnp.log(p["A"]) - p["alpha"] * x["N"], jnp.log(p["B"]) - p["beta"] * x["D"])


def _chinchilla_prepare(p):
    return {
        "log_E": jnp.log(p["E"]),
        "log_A": jnp.log(p["A"]),
        "alpha": p["alpha"],
        "log_B": jnp.log(p["B"]),
        "beta": p["beta"],
    }


def _chinchilla_evaluate(k, x):
    # _chinchilla_log_mean from log E, log A, log B gathered per run: no log of E, A, B per run (the float64 exp/log
    # per run are most of the sampler's gradient).
    return logsumexp(k["log_E"], k["log_A"] - k["alpha"] * x["N"], k["log_B"] - k["beta"] * x["D"])


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
    return {
        **_floor_and_terms(loss_scale, ("log_A_c", "log_B_c")),
        "log_alpha": (float(np.log(0.35)), 0.6),
        "log_beta": (float(np.log(0.35)), 0.6),
    }


def _floor_and_terms(loss_scale: float, terms: tuple[str, ...], share: float = 0.25) -> dict:
    """Priors of a floor E about half the typical loss (give or take a factor e) and of each reducible term at the
    data's centre about ``share`` of it (within a factor e^1.5): shared by the laws with a floor."""
    ls = float(np.log(loss_scale))
    return {"log_E": (ls + np.log(0.5), 1.0), **{t: (ls + np.log(share), 1.5) for t in terms}}


def _exponent_shares(p):
    s = p["alpha"] + p["beta"]
    return {"a": p["beta"] / s, "b": p["alpha"] / s}


_CHINCHILLA_MEANINGS = {
    "A": "amplitude of the model-size term A/N^α",
    "B": "amplitude of the data term B/D^β",
    "alpha": "exponent of model size N",
    "beta": "exponent of training tokens D",
    "a": "compute-optimal N* ∝ C^a (a = β/(α+β))",
    "b": "compute-optimal D* ∝ C^b (b = α/(α+β))",
}
#: Hoffmann et al. (2022), Approach 3, fitted on their own runs: the data set ``chinchilla_epoch`` holds those runs
#: (as extracted by Besiroglu et al. 2024), so the point is shown beside fits of it only.
HOFFMANN_2022 = ReferencePoint(
    "Hoffmann et al. 2022",
    {"E": 1.69, "A": 406.4, "B": 410.7, "alpha": 0.34, "beta": 0.28},
    data=("chinchilla_epoch",),
)


chinchilla = Law(
    name="chinchilla",
    params=("E", "A", "B", "alpha", "beta"),
    inputs=("N", "D"),
    log_mean=_chinchilla_log_mean,
    per_run=(_chinchilla_prepare, _chinchilla_evaluate),
    latents=("log_E", "log_A_c", "log_B_c", "log_alpha", "log_beta"),
    to_params=_chinchilla_to_params,
    from_params=_chinchilla_from_params,
    priors=_chinchilla_priors,
    derived={"a": lambda p: _exponent_shares(p)["a"], "b": lambda p: _exponent_shares(p)["b"]},
    reference="Hoffmann et al. (2022), Training Compute-Optimal Large Language Models, eq. (2) / Approach 3.",
    formula="L(N, D) = E + A / N<sup>α</sup> + B / D<sup>β</sup>",
    meanings=_CHINCHILLA_MEANINGS,
    reference_points=(HOFFMANN_2022,),
)


# ---------------------------------------------------------------------------------------------------- shared bits
# Exponent priors. Every exponent is sampled as log(exponent), so it stays positive; its Normal prior is written as
# (median, scale of the log). Scales of 0.6-0.8 leave 95% of the mass within a factor 3-5 of the median: wide enough
# for every published fit of the law, narrow enough to keep the sampler away from exponent → 0, where an amplitude
# and the irreducible loss become interchangeable and the posterior grows a flat ridge.
def _log_normal(median: float, scale: float) -> PriorSpec:
    return float(np.log(median)), float(scale)


def _sat(log_e: Array, log_reducible: Array) -> Array:
    """log(E + reducible) from log E and log reducible: the saturating sum every law with a floor uses."""
    return logsumexp(log_e, log_reducible)


# ---------------------------------------------------------------------------------------------------- kaplan
def _kaplan_log_mean(p, x):
    # log L = α_D · log[(N_c/N)^(α_N/α_D) + D_c/D]
    a_n, a_d = p["alpha_N"], p["alpha_D"]
    return a_d * logsumexp((a_n / a_d) * (jnp.log(p["N_c"]) - x["N"]), jnp.log(p["D_c"]) - x["D"])


def _kaplan_to_params(z, centre):
    # N_c and D_c sit far outside any data (Kaplan et al.: 8.8e13 parameters, 5.4e13 tokens), so log N_c is nearly a
    # free translation of α_N: only the product α_N·log(N_c/N̄) — the log of the model-size-limited loss at the
    # data's geometric-mean N̄ — is pinned by the data. Sampling that product (``logL_N_c``) and α_N removes the
    # hyperbolic ridge between log N_c and α_N; likewise ``logL_D_c`` = α_D·log(D_c/D̄).
    a_n, a_d = jnp.exp(z["log_alpha_N"]), jnp.exp(z["log_alpha_D"])
    return {
        "N_c": jnp.exp(centre["N"] + z["logL_N_c"] / a_n),
        "D_c": jnp.exp(centre["D"] + z["logL_D_c"] / a_d),
        "alpha_N": a_n,
        "alpha_D": a_d,
    }


def _kaplan_from_params(p, centre):
    return {
        "logL_N_c": p["alpha_N"] * (jnp.log(p["N_c"]) - centre["N"]),
        "logL_D_c": p["alpha_D"] * (jnp.log(p["D_c"]) - centre["D"]),
        "log_alpha_N": jnp.log(p["alpha_N"]),
        "log_alpha_D": jnp.log(p["alpha_D"]),
    }


def _kaplan_priors(centre, loss_scale):
    # No irreducible term: at the data's centre the loss is at least each limited loss, L ≥ (N_c/N̄)^α_N, so the log
    # of each limited loss sits at or a little below log(typical loss); Normal(log typical loss - 0.25, 0.75) gives
    # 95% on 0.2-2.4x the typical loss. Exponents: Kaplan et al. found α_N ≈ 0.076, α_D ≈ 0.095 (no floor E, so
    # smaller than Chinchilla-form exponents); log-normal around 0.1 covers 0.025-0.4 at 95%.
    ls = float(np.log(loss_scale))
    return {
        "logL_N_c": (ls - 0.25, 0.75),
        "logL_D_c": (ls - 0.25, 0.75),
        "log_alpha_N": _log_normal(0.1, 0.7),
        "log_alpha_D": _log_normal(0.1, 0.7),
    }


kaplan = Law(
    name="kaplan",
    params=("N_c", "D_c", "alpha_N", "alpha_D"),
    inputs=("N", "D"),
    log_mean=_kaplan_log_mean,
    latents=("logL_N_c", "logL_D_c", "log_alpha_N", "log_alpha_D"),
    to_params=_kaplan_to_params,
    from_params=_kaplan_from_params,
    priors=_kaplan_priors,
    latent_of={"N_c": "logL_N_c", "D_c": "logL_D_c"},
    reference="Kaplan et al. (2020), Scaling Laws for Neural Language Models, eq. (1.5): "
    "L(N, D) = [(N_c/N)^(α_N/α_D) + D_c/D]^α_D, with α_N ≈ 0.076, α_D ≈ 0.095, N_c ≈ 8.8e13, D_c ≈ 5.4e13.",
    formula="L(N, D) = [(N<sub>c</sub>/N)<sup>α<sub>N</sub>/α<sub>D</sub></sup> + D<sub>c</sub>/D]"
    "<sup>α<sub>D</sub></sup>",
    meanings={
        "N_c": "critical model size (parameters)",
        "D_c": "critical dataset size (tokens)",
        "alpha_N": "exponent of model size N",
        "alpha_D": "exponent of dataset size D",
    },
)


# ---------------------------------------------------------------------------------------------------- compute
def _compute_log_mean(p, x):
    return _sat(jnp.log(p["E"]), jnp.log(p["A"]) - p["alpha"] * x["C"])


def _compute_to_params(z, centre):
    # log_A_c = log(A·C̄^-α), the reducible loss at the data's geometric-mean compute: log A = log A_c + α·log C̄
    # with log C̄ ≈ 40-50, so sampling log A directly would put a steep linear ridge against α.
    alpha = jnp.exp(z["log_alpha"])
    return {"E": jnp.exp(z["log_E"]), "A": jnp.exp(z["log_A_c"] + alpha * centre["C"]), "alpha": alpha}


def _compute_from_params(p, centre):
    return {
        "log_E": jnp.log(p["E"]),
        "log_A_c": jnp.log(p["A"]) - p["alpha"] * centre["C"],
        "log_alpha": jnp.log(p["alpha"]),
    }


def _compute_priors(centre, loss_scale):
    # E and the reducible term at the centre split the typical loss, each about half of it within a factor e (1σ).
    # The exponent of loss against compute is shallower than against N or D (Chinchilla's compute-optimal frontier
    # has αβ/(α+β) ≈ 0.15; Kaplan's no-floor α_C ≈ 0.05): log-normal around 0.15 covers 0.04-0.6 at 95%.
    return {**_floor_and_terms(loss_scale, ("log_A_c",), share=0.5), "log_alpha": _log_normal(0.15, 0.7)}


compute = Law(
    name="compute",
    params=("E", "A", "alpha"),
    inputs=("C",),
    log_mean=_compute_log_mean,
    latents=("log_E", "log_A_c", "log_alpha"),
    to_params=_compute_to_params,
    from_params=_compute_from_params,
    priors=_compute_priors,
    reference="Loss against training compute with an irreducible floor, L(C) = E + A·C^-α: the compute frontier "
    "of Hoffmann et al. (2022) (their Approach 3 implies α = αβ/(α+β)); without E, Kaplan et al. (2020) eq. (1.4).",
    formula="L(C) = E + A / C<sup>α</sup>",
    meanings={"A": "amplitude of the compute term A/C^α", "alpha": "exponent of training compute C"},
)


# ---------------------------------------------------------------------------------------------------- data-constrained
def _effective_log_data(p, x):
    """log D' (Muennighoff et al. 2023, eq. 5): D tokens drawn from U unique ones are worth
    D' = U_D + U_D·R*·(1 − exp(−R/R*)) fresh tokens, with U_D = min(U, D) the unique tokens seen and R = D/U_D − 1
    the repetitions beyond the first epoch. Computed in log space: log D' = log U_D + log1p(R*·(1 − e^(−R/R*)))."""
    log_ud = jnp.minimum(x["U"], x["D"])
    reps = jnp.expm1(x["D"] - log_ud)  # R ≥ 0; exactly 0 for single-epoch runs, where D' = D
    r_star = p["R_star"]
    return log_ud + jnp.log1p(-r_star * jnp.expm1(-reps / r_star))


def _data_constrained_log_mean(p, x):
    log_dp = _effective_log_data(p, x)
    return logsumexp(jnp.log(p["E"]), jnp.log(p["A"]) - p["alpha"] * x["N"], jnp.log(p["B"]) - p["beta"] * log_dp)


def _data_constrained_to_params(z, centre):
    # As Chinchilla: amplitudes centred at the geometric-mean N and D of the data (D' ≤ D, so the centred B-term is
    # the data term of a run at D̄ seen once).
    out = _chinchilla_to_params(z, centre)
    out["R_star"] = jnp.exp(z["log_R_star"])
    return out


def _data_constrained_from_params(p, centre):
    out = _chinchilla_from_params(p, centre)
    out["log_R_star"] = jnp.log(p["R_star"])
    return out


def _data_constrained_priors(centre, loss_scale):
    # Chinchilla's priors for the shared part. R* (epochs after which repeated data has lost 1 − 1/e ≈ 63% of its
    # value) is dimensionless: Muennighoff et al. fit R*_D ≈ 15.4. Log-normal around 15 with scale 1 puts 95% on
    # 2-100 epochs. Data with few repetitions cannot pin R* (then D' ≈ D and the posterior of R* is the prior).
    out = _chinchilla_priors(centre, loss_scale)
    out["log_R_star"] = _log_normal(15.0, 1.0)
    return out


data_constrained = Law(
    name="data_constrained",
    params=("E", "A", "B", "alpha", "beta", "R_star"),
    inputs=("N", "D", "U"),
    log_mean=_data_constrained_log_mean,
    latents=("log_E", "log_A_c", "log_B_c", "log_alpha", "log_beta", "log_R_star"),
    to_params=_data_constrained_to_params,
    from_params=_data_constrained_from_params,
    priors=_data_constrained_priors,
    derived={"a": lambda p: _exponent_shares(p)["a"], "b": lambda p: _exponent_shares(p)["b"]},
    reference="Muennighoff et al. (2023), Scaling Data-Constrained Language Models, eq. (5)-(6) with effective data "
    "only: L = E + A/N^α + B/D'^β, D' = U_D + U_D·R*·(1 − exp(−R_D/R*)), R_D = D/U_D − 1; they fit R*_D ≈ 15.4.",
    formula="L(N, D, U) = E + A / N<sup>α</sup> + B / D′<sup>β</sup>, with D′ the effective data of D tokens drawn "
    "from U unique ones",
    meanings={
        **_CHINCHILLA_MEANINGS,
        "B": "amplitude of the effective-data term B/D′^β",
        "beta": "exponent of effective training tokens D′",
        "R_star": "epochs after which repeated data has lost ~63% of its value",
    },
)


# ---------------------------------------------------------------------------------------------------- overtrained
def _overtrained_log_c_m(x):
    """log C and log M for C = 6·N·D FLOP and M = D/N tokens per parameter."""
    return np.log(6.0) + x["N"] + x["D"], x["D"] - x["N"]


def _overtrained_log_mean(p, x):
    log_c, log_m = _overtrained_log_c_m(x)
    eta = p["eta"]
    shape = logsumexp(jnp.log(p["a"]) + eta * log_m, jnp.log(p["b"]) - eta * log_m)
    return _sat(jnp.log(p["E"]), shape - eta * log_c)


def _overtrained_to_params(z, centre):
    # log C ≈ 40-50 multiplies η, so a and b are sampled as the two reducible terms at the data's centre (C̄, M̄):
    # log_a_c = log(a·M̄^η·C̄^-η), log_b_c = log(b·M̄^-η·C̄^-η).
    log_c, log_m = _overtrained_log_c_m(centre)
    eta = jnp.exp(z["log_eta"])
    return {
        "E": jnp.exp(z["log_E"]),
        "a": jnp.exp(z["log_a_c"] - eta * (log_m - log_c)),
        "b": jnp.exp(z["log_b_c"] + eta * (log_m + log_c)),
        "eta": eta,
    }


def _overtrained_from_params(p, centre):
    log_c, log_m = _overtrained_log_c_m(centre)
    return {
        "log_E": jnp.log(p["E"]),
        "log_a_c": jnp.log(p["a"]) + p["eta"] * (log_m - log_c),
        "log_b_c": jnp.log(p["b"]) - p["eta"] * (log_m + log_c),
        "log_eta": jnp.log(p["eta"]),
    }


def _overtrained_priors(centre, loss_scale):
    # As Chinchilla: floor E about half the typical loss, each reducible term at the centre about a quarter. η is
    # half a Chinchilla exponent (the law is Chinchilla's with α = β = 2η rewritten in C and M): log-normal around
    # 0.15 covers 0.05-0.5 at 95%.
    return {**_floor_and_terms(loss_scale, ("log_a_c", "log_b_c")), "log_eta": _log_normal(0.15, 0.6)}


def _overtrained_m_opt(p):
    # argmin over M of a·M^η + b·M^-η at fixed C: the compute-optimal tokens per parameter.
    return (p["b"] / p["a"]) ** (1.0 / (2.0 * p["eta"]))


overtrained = Law(
    name="overtrained",
    params=("E", "a", "b", "eta"),
    inputs=("N", "D"),
    log_mean=_overtrained_log_mean,
    latents=("log_E", "log_a_c", "log_b_c", "log_eta"),
    to_params=_overtrained_to_params,
    from_params=_overtrained_from_params,
    priors=_overtrained_priors,
    derived={"M_opt": _overtrained_m_opt},
    reference="Gadre et al. (2024), Language models scale reliably with over-training and on downstream tasks, "
    "eq. (4): L(C, M) = E + (a·M^η + b·M^-η)·C^-η with token multiplier M = D/N and C = 6ND.",
    formula="L(N, D) = E + (a·M<sup>η</sup> + b·M<sup>−η</sup>)·C<sup>−η</sup>, M = D/N, C = 6ND",
    meanings={
        "a": "amplitude of the over-training term a·M^η (M = D/N)",
        "b": "amplitude of the under-training term b·M^−η",
        "eta": "exponent of compute (and of the tokens-per-parameter shape)",
        "M_opt": "compute-optimal tokens per parameter D*/N*",
    },
)


# ---------------------------------------------------------------------------------------------------- broken power
_UNITS = {"C": "FLOP", "N": "parameters", "D": "tokens"}


def broken_power_law(input: str = "C", name: str | None = None) -> Law:
    """A smoothly broken power law with a floor in one input X (``"C"``, ``"N"`` or ``"D"``):

        L(X) = E + A·X^-α₁·(1 + (X/X_b)^(1/s))^(−(α₂−α₁)·s)

    The slope of the reducible term on log-log axes is α₁ well below the break X_b and α₂ well above it; s (in
    e-folds of X) sets how gradually it turns. Parameters E, A, alpha_1, alpha_2, ``<X>_b``, s. Registered as
    ``broken_power`` (X = C) and ``broken_power_N``; call this to build it for D.
    """
    if input not in ("C", "N", "D"):
        raise ModelError(f"broken_power_law: input must be 'C', 'N' or 'D', got {input!r}")
    xb_name = f"{input}_b"

    def log_reducible(log_a, a1, a2, log_xb, s, x):
        # log[A·X^-α₁·(1 + (X/X_b)^(1/s))^(−(α₂−α₁)s)] = log A − α₁x − (α₂−α₁)·s·softplus((x − log X_b)/s)
        return log_a - a1 * x - (a2 - a1) * s * jax.nn.softplus((x - log_xb) / s)

    def log_mean(p, x):
        lr = log_reducible(jnp.log(p["A"]), p["alpha_1"], p["alpha_2"], jnp.log(p[xb_name]), p["s"], x[input])
        return _sat(jnp.log(p["E"]), lr)

    def to_params(z, centre):
        # A is the amplitude of the pre-break power law extrapolated to X = 1, ~e^(α₁·log X̄) away from the data:
        # sample instead the reducible term at the data's centre X̄ (log_A_c) and the break relative to the centre,
        # log(X_b/X̄) (log_<X>_b_rel).
        a1, a2, s = jnp.exp(z["log_alpha_1"]), jnp.exp(z["log_alpha_2"]), jnp.exp(z["log_s"])
        xbar = centre[input]
        log_xb = xbar + z[f"log_{xb_name}_rel"]
        log_a = z["log_A_c"] - log_reducible(0.0, a1, a2, log_xb, s, xbar)
        return {
            "E": jnp.exp(z["log_E"]),
            "A": jnp.exp(log_a),
            "alpha_1": a1,
            "alpha_2": a2,
            xb_name: jnp.exp(log_xb),
            "s": s,
        }

    def from_params(p, centre):
        xbar = centre[input]
        log_xb = jnp.log(p[xb_name])
        return {
            "log_E": jnp.log(p["E"]),
            "log_A_c": log_reducible(jnp.log(p["A"]), p["alpha_1"], p["alpha_2"], log_xb, p["s"], xbar),
            "log_alpha_1": jnp.log(p["alpha_1"]),
            "log_alpha_2": jnp.log(p["alpha_2"]),
            f"log_{xb_name}_rel": log_xb - xbar,
            "log_s": jnp.log(p["s"]),
        }

    def priors(centre, loss_scale):
        # Floor and centred reducible term as for the compute law. Slopes: log-normal around 0.2 (0.05-0.8 at 95%)
        # for both sides, so the prior has no preferred direction of bending. The break: Normal(0, 2) in log(X_b/X̄)
        # puts it within a factor e^4 ≈ 55 of the data's geometric mean at 95%, i.e. over the span of typical
        # sweeps (2-4 decades) and a little beyond; a break far outside the data is the unbroken law and is left to
        # the simpler laws. s: a turn over about one e-fold (log-normal around 0.5, 0.2-1.3 at 95%); much softer
        # breaks are indistinguishable from curvature of the floor, much sharper ones are a kink the data cannot
        # resolve between two sweep points.
        return {
            **_floor_and_terms(loss_scale, ("log_A_c",), share=0.5),
            "log_alpha_1": _log_normal(0.2, 0.7),
            "log_alpha_2": _log_normal(0.2, 0.7),
            f"log_{xb_name}_rel": (0.0, 2.0),
            "log_s": _log_normal(0.5, 0.5),
        }

    return Law(
        name=name or ("broken_power" if input == "C" else f"broken_power_{input}"),
        params=("E", "A", "alpha_1", "alpha_2", xb_name, "s"),
        inputs=(input,),
        log_mean=log_mean,
        latents=("log_E", "log_A_c", "log_alpha_1", "log_alpha_2", f"log_{xb_name}_rel", "log_s"),
        to_params=to_params,
        from_params=from_params,
        priors=priors,
        reference="Caballero et al. (2023), Broken Neural Scaling Laws (ICLR), eq. (1) with one break and a floor: "
        "y = a + b·x^-c0·(1 + (x/d1)^(1/f1))^(-c1·f1), here E = a, A = b, α₁ = c0, α₂ = c0 + c1, X_b = d1, s = f1.",
        formula=f"L({input}) = E + A·{input}<sup>−α₁</sup>·(1 + ({input}/{input}<sub>b</sub>)<sup>1/s</sup>)"
        "<sup>−(α₂−α₁)s</sup>",
        meanings={
            "A": "amplitude of the power law below the break",
            "alpha_1": "exponent below the break",
            "alpha_2": "exponent above the break",
            xb_name: f"location of the break ({_UNITS[input]})",
            "s": f"sharpness of the break (e-folds of {input}; small = sharp)",
        },
    )


broken_power = broken_power_law("C")
broken_power_N = broken_power_law("N")

_REGISTRY: dict[str, Law] = {}


def register(law: Law, *, overwrite: bool = False) -> Law:
    """Make ``law`` available by name to :func:`scalebayes.fit` and to saved-posterior loading."""
    if law.name in _REGISTRY and not overwrite and _REGISTRY[law.name] is not law:
        raise ModelError(
            f"a law named {law.name!r} is already registered: give your law its own name (or register it with "
            "overwrite=True)"
        )
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


#: The laws the package ships (registered at import; users may register more).
BUILT_IN = (chinchilla, kaplan, compute, data_constrained, overtrained, broken_power, broken_power_N)
for _law in BUILT_IN:
    register(_law)
