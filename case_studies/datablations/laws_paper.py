"""The law of Muennighoff et al. (2023) with excess parameters as well as repeated data, as registered laws.

L = E + A/N'^α + B/D'^β with
  D' = U_D + U_D·R*_D·(1 − e^(−R_D/R*_D)),  U_D = min(U, D),  R_D = D/U_D − 1      (effective data, eq. 5)
  N' = U_N + U_N·R*_N·(1 − e^(−R_N/R*_N)),  U_N = min(N, G²·U_D), R_N = N/U_N − 1  (effective parameters, eq. 6)
where G = (αA/(βB))^(1/(α+β)), so G²·U_D is the compute-optimal N for U_D tokens (≈ U_D / 19.6 with the paper's
constants). Units: N parameters, D and U tokens, loss nats/token.

``paper_fixed``: E, A, B, α, β fixed at the paper's values (a Chinchilla-form fit to C4 IsoFLOP points that the paper
did not refit), only R*_D and R*_N inferred: the paper's own setting. ``paper_free``: all seven parameters inferred.
The package's ``data_constrained`` law has the effective-data term only (no R*_N).
"""

from __future__ import annotations

import math

import jax.numpy as jnp

from scalebayes.laws import Law, get, logsumexp, register

#: The paper's fixed constants (upstream README / utils/parametric_fit.ipynb), logs of A, B, E and the exponents.
PAPER_LOG = {"a": 6.255414, "b": 7.3049974, "e": 0.6254804, "alpha": 0.3526596, "beta": 0.3526596}
PAPER_CONST = {
    "A": math.exp(PAPER_LOG["a"]),
    "B": math.exp(PAPER_LOG["b"]),
    "E": math.exp(PAPER_LOG["e"]),
    "alpha": PAPER_LOG["alpha"],
    "beta": PAPER_LOG["beta"],
}
#: The paper's fitted decay constants R*_D and R*_N (epochs; excess-parameter ratio).
PAPER_RSTAR = {"R_D_star": 15.387756, "R_N_star": 5.309743}


def _effective(log_u, reps, r_star):
    """log(U + U·R*·(1 − e^(−R/R*))) for log U, R ≥ 0 repetitions and decay constant R* (all broadcast)."""
    return log_u + jnp.log1p(-r_star * jnp.expm1(-reps / r_star))


def _log_mean(p, x):
    log_ud = jnp.minimum(x["U"], x["D"])
    log_g2 = 2.0 / (p["alpha"] + p["beta"]) * (jnp.log(p["alpha"] * p["A"]) - jnp.log(p["beta"] * p["B"]))
    log_un = jnp.minimum(x["N"], log_g2 + log_ud)
    log_dp = _effective(log_ud, jnp.expm1(x["D"] - log_ud), p["R_D_star"])
    log_np = _effective(log_un, jnp.expm1(x["N"] - log_un), p["R_N_star"])
    return logsumexp(jnp.log(p["E"]), jnp.log(p["A"]) - p["alpha"] * log_np, jnp.log(p["B"]) - p["beta"] * log_dp)


def _fixed_log_mean(p, x):
    return _log_mean({**PAPER_CONST, **p}, x)


#: Prior on each log R*: Normal(log 10, 1.5), 95% on 0.5-190 (epochs for R*_D, excess-parameter ratio for R*_N).
#: Wide and centred on neither paper value, so that agreement with 15.4 and 5.3 comes from the data.
RSTAR_PRIOR = (math.log(10.0), 1.5)

paper_fixed = register(
    Law(
        name="datablations_paper_fixed",
        params=("R_D_star", "R_N_star"),
        inputs=("N", "D", "U"),
        log_mean=_fixed_log_mean,
        priors={"log_R_D_star": RSTAR_PRIOR, "log_R_N_star": RSTAR_PRIOR},
        reference="Muennighoff et al. (2023), eq. 5-6, with E, A, B, α, β fixed at the paper's values.",
    ),
    overwrite=True,
)


# All seven parameters free: the package's data-constrained law supplies the Chinchilla part (amplitudes centred at
# the data's geometric-mean N and D, its data-scaled priors); R*_D and R*_N get the wide prior above.
_DC = get("data_constrained")
_FREE_LATENTS = (*[z for z in _DC.latents if z != "log_R_star"], "log_R_D_star", "log_R_N_star")


def _free_to_params(z, centre):
    out = _DC.to_params({**z, "log_R_star": z["log_R_D_star"]}, centre)
    out["R_D_star"] = out.pop("R_star")
    out["R_N_star"] = jnp.exp(z["log_R_N_star"])
    return out


def _free_from_params(p, centre):
    out = _DC.from_params({**p, "R_star": p["R_D_star"]}, centre)
    out["log_R_D_star"] = out.pop("log_R_star")
    out["log_R_N_star"] = jnp.log(p["R_N_star"])
    return out


def _free_priors(centre, loss_scale):
    out = {z: v for z, v in _DC.default_priors(centre, loss_scale).items() if z != "log_R_star"}
    return {**out, "log_R_D_star": RSTAR_PRIOR, "log_R_N_star": RSTAR_PRIOR}


paper_free = register(
    Law(
        name="datablations_paper_free",
        params=("E", "A", "B", "alpha", "beta", "R_D_star", "R_N_star"),
        inputs=("N", "D", "U"),
        log_mean=_log_mean,
        latents=_FREE_LATENTS,
        to_params=_free_to_params,
        from_params=_free_from_params,
        priors=_free_priors,
        reference="Muennighoff et al. (2023), eq. 5-6, every parameter inferred.",
    ),
    overwrite=True,
)
