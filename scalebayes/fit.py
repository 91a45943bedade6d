"""``fit``: from a runs table to a :class:`~scalebayes.posterior.Posterior`.

This module is the glue between the friendly edge (pandas in, DataTree out) and the compiled core
(:mod:`scalebayes.sampler`): it validates options, builds padded arrays, runs the sampler once, and assembles the
ArviZ DataTree with named dims.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass

import arviz_base as azb
import jax
import jax.numpy as jnp
import numpy as np

from . import laws as _laws
from . import priors as _priors
from .data import ScalingData
from .diagnostics import warn_if_failed
from .errors import DataError, ModelError
from .model import Spec, family_latents, noise_params, pooling_modes, population_sites
from .sampler import SamplerConfig, chain_method_for, factory_for, pad_size, to_numpy


@dataclass(frozen=True)
class Prepared:
    """Arrays for one dataset, padded to the sampler's size, and what is needed to undo the padding."""

    spec: Spec
    priors: _priors.Priors
    centre: dict[str, float]
    n_obs: int
    n_pad: int
    args: tuple  # (x, log_y, fam, mask, hyper) as JAX arrays


def prepare(
    data: ScalingData,
    law: str | _laws.Law = "chinchilla",
    *,
    likelihood: str = "student_t",
    priors: Mapping | None = None,
    pooling: str | None = None,
    shared: tuple[str, ...] = (),
    free: tuple[str, ...] = (),
    noise: str = "shared",
    centred: bool | tuple[str, ...] = False,
    n_pad: int | None = None,
    dtype: str = "float64",
) -> Prepared:
    """Validate options against ``data`` and build the sampler's padded input arrays."""
    if not isinstance(data, ScalingData):
        raise DataError(f"expected ScalingData (see ScalingData.from_frame), got {type(data).__name__}")
    if isinstance(law, _laws.Law):
        # a user's own law passed as an object: register it so the Posterior (and a saved file, loaded in this
        # session) finds it by name; a *different* law under a taken name raises rather than being mixed up
        _laws.register(law)
    law = _laws.get(law)
    if "U" in law.inputs and data.U is None:
        raise DataError(
            f"the {law.name!r} law needs unique tokens: pass U=<column> to ScalingData.from_frame", column="U"
        )
    F = len(data.families)
    if pooling is None:
        pooling = "partial" if F > 1 else "complete"
    if isinstance(shared, str):
        shared = (shared,)
    if isinstance(free, str):
        free = (free,)
    modes = pooling_modes(law, pooling, F, tuple(shared), tuple(free), centred=centred)
    noise_eff = noise if F > 1 else "shared"
    spec = Spec(law=law, modes=modes, n_families=F, likelihood=likelihood, noise=noise_eff)
    n_free = sum(F if m != "shared" else 1 for m in modes)
    data.check_enough_rows(n_free, law.name)
    if F > 1 and pooling != "complete":
        small = data.family_counts()
        tiny = small[small < 2]
        if len(tiny) and any(m == "free" for m in modes):
            raise DataError(
                f"families {list(tiny.index)} have fewer than 2 runs: cannot fit free per-family parameters; "
                "use pooling='partial'",
                column="family",
            )

    li = data.log_inputs()
    centre = law.centre(li)
    pri = _priors.resolve(law, centre, float(np.median(data.loss)), priors)
    m = len(data)
    n = pad_size(m) if n_pad is None else int(n_pad)
    if n < m:
        raise ModelError(f"n_pad={n} is smaller than the number of runs {m}")
    dt = jnp.dtype(dtype)

    def pad(a, fill):
        a = np.asarray(a, dtype=float)
        return jnp.asarray(np.concatenate([a, np.full(n - m, fill)]), dtype=dt)

    x = {k: pad(li[k], centre[k]) for k in law.inputs}
    hyper = {
        "loc": jnp.asarray(pri.loc(law.latents), dt),
        "scale": jnp.asarray(pri.scale(law.latents), dt),
        "tau": jnp.asarray(pri.tau_scale(law.latents), dt),
        "sigma": jnp.asarray(pri.sigma, dt),
        "nu": jnp.asarray(pri.nu, dt),
        "centre": {k: jnp.asarray(v, dt) for k, v in centre.items()},
    }
    fam = jnp.asarray(np.concatenate([data.family_index, np.zeros(n - m, np.int32)]), jnp.int32)
    args = (x, pad(np.log(data.loss), 0.0), fam, pad(np.ones(m), 0.0), hyper)
    return Prepared(spec, pri, centre, m, n, args)


def fit(
    data: ScalingData,
    law: str | _laws.Law = "chinchilla",
    *,
    likelihood: str = "student_t",
    chains: int = 4,
    draws: int = 1000,
    warmup: int = 1000,
    seed: int = 0,
    progress: bool | None = None,
    priors: Mapping | None = None,
    pooling: str | None = None,
    shared: tuple[str, ...] = (),
    free: tuple[str, ...] = (),
    noise: str = "shared",
    centred: bool | tuple[str, ...] = False,
    dense_mass: bool = True,
    target_accept: float = 0.9,
    max_tree_depth: int = 10,
    dtype: str = "float64",
    pointwise: bool | str = "auto",
    warn: bool = True,
    sampler: str = "nuts",
):
    """Fit a scaling law to training runs with NUTS and return the :class:`~scalebayes.posterior.Posterior`.

    The likelihood is on log loss: log L_obs ~ StudentT(ν, log L_law(N, D, ...), σ) by default (robust to a few
    outlying runs; ``likelihood="normal"`` for Gaussian), with σ (and ν) inferred. Losses are in nats, N in
    parameters, D in tokens, C in FLOP.

    Parameterisation and sampler: every parameter is sampled as an unconstrained latent (logs of positive
    parameters); amplitudes are *centred* at the data's geometric-mean inputs — the Chinchilla law samples
    log(A·N̄^-α) instead of log A, which removes the near-linear ridge between log A and α — and NUTS adapts a
    dense mass matrix for the correlations that remain (E against the reducible terms), seeded by the Hessian at
    the posterior mode (:mod:`scalebayes.sampler`). On ``chinchilla_epoch`` that takes the naive model's ~100
    leapfrog steps per iteration down to ~7 (``benchmarks/RESULTS.md``). For quick looks, ``warmup=500,
    draws=500`` usually passes the diagnostics at half the cost.

    Args:
        data: validated runs (:class:`~scalebayes.data.ScalingData`).
        law: a registered law name (``scalebayes.laws.available()``) or a :class:`~scalebayes.laws.Law`.
        likelihood: ``"student_t"`` or ``"normal"``.
        chains, draws, warmup: NUTS chains and iterations per chain (post-warm-up draws are kept).
        seed: every random number of the fit derives from it; same seed, same draws.
        progress: show a progress bar on stderr (:mod:`scalebayes.progress`): ``None`` (default) when stderr is a
            terminal or in a notebook, ``True``/``False`` to force. Same draws either way.
        priors: overrides, see :mod:`scalebayes.priors`.
        pooling: ``"complete"``, ``"partial"`` (default with several families) or ``"none"``.
        shared, free: parameter names pooled exactly / left independent per family under partial pooling.
        noise: ``"shared"`` σ, or ``"family"`` for one σ per family.
        centred: sample partially pooled parameters in centred form, θ_f ~ Normal(μ, τ), instead of the default
            non-centred θ_f = μ + τ·z_f: ``True`` for all of them, or parameter names (e.g. ``("alpha", "beta")``).
            Same model, different geometry: centred suits parameters that every family's runs pin well, non-centred
            those that few-run families leave to the population. Measured on porian_isoflop's 565 valley runs
            (8 families of 65-78 runs; 4 chains × 500 + 500, target_accept 0.9): non-centred 228 leapfrog steps
            per iteration and 1 divergent transition; α, β, E centred 84 steps and 23 divergences; all centred 78
            steps and 84 divergences. Shorter trees, more divergences: check the diagnostics either way.
        dense_mass, target_accept, max_tree_depth: NUTS settings.
        dtype: ``"float64"`` (default) or ``"float32"`` for the sampler's arrays.
        pointwise: store the pointwise log-likelihood and posterior predictive groups (draws × runs floats each):
            ``True``, ``False``, or ``"auto"`` (default): only when draws × runs ≤ 2e6
            (:data:`scalebayes.pointwise.AUTO_MAX_ELEMENTS`), so a 100,000-run fit holds no draws × runs array
            the user did not ask for. Skipped groups can be added later with ``Posterior.pointwise()``.
        warn: emit :class:`~scalebayes.errors.SamplingWarning` when diagnostics fail (the flag is set anyway).
        sampler: ``"nuts"`` (scalebayes's compiled NUTS) or ``"numpyro"`` (NumPyro's NUTS on the same model, a
            slower reference: :mod:`scalebayes.sampler.reference`).
    """
    from .posterior import Posterior

    for name, v in (("chains", chains), ("draws", draws)):
        if int(v) < 1:
            raise ModelError(f"{name} must be >= 1, got {v}")
    if int(warmup) < 0:
        raise ModelError(f"warmup must be >= 0, got {warmup}")
    prep = prepare(
        data,
        law,
        likelihood=likelihood,
        priors=priors,
        pooling=pooling,
        shared=shared,
        free=free,
        noise=noise,
        centred=centred,
        dtype=dtype,
    )
    config = SamplerConfig(
        chains=int(chains),
        warmup=int(warmup),
        draws=int(draws),
        dense_mass=dense_mass,
        target_accept=float(target_accept),
        max_tree_depth=int(max_tree_depth),
        chain_method=chain_method_for(int(chains)),
        progress=progress,
    )
    run = factory_for(sampler)(prep.spec, prep.n_pad, config, dtype)
    draws_, stats = to_numpy(run(jax.random.key(seed), *prep.args))
    idata = build_datatree(data, prep, draws_, stats, pointwise=pointwise, seed=seed, config=config)
    post = Posterior(idata, data=data)
    if warn:
        warn_if_failed(post.diagnostics, f"fit of {prep.spec.law.name!r} to {data.name!r}")
    return post


def constrained_summaries(spec: Spec, centre: Mapping[str, float], site: Mapping[str, np.ndarray]) -> dict:
    """Published parameters (…, F), derived quantities, per-family latents and noise from sampled sites."""
    lat = family_latents(spec, {k: jnp.asarray(v) for k, v in site.items()})
    params = spec.law.to_params(lat, {k: jnp.asarray(v) for k, v in centre.items()})
    derived = {k: f(params) for k, f in spec.law.derived.items()}
    noise = noise_params(spec, {k: jnp.asarray(v) for k, v in site.items()})
    return to_numpy({"params": params, "derived": derived, "latents": lat, "noise": noise})


def build_datatree(
    data: ScalingData, prep: Prepared, site: dict, stats: dict, *, pointwise: bool | str, seed: int, config
):
    """The ArviZ DataTree of a fit: posterior (published convention), sample_stats, observed/constant data,
    latent_posterior (sampler coordinates per family) and, when ``pointwise``, log_likelihood and
    posterior_predictive (dims chain, draw, obs)."""
    from .pointwise import pointwise_groups, want_pointwise

    spec = prep.spec
    F = spec.n_families
    fams = list(data.families)
    multi = F > 1
    out = constrained_summaries(spec, prep.centre, site)

    def fam_var(v):  # (chain, draw, F) -> drop the family axis when there is one family
        return v if multi else v[..., 0]

    posterior, dims = {}, {}
    for name in spec.law.params:
        posterior[name] = fam_var(out["params"][name])
    for name, v in out["derived"].items():
        posterior[name] = fam_var(v)
    sig = out["noise"]["sigma"]
    posterior["sigma"] = sig if spec.noise == "family" else sig[..., 0]
    if spec.likelihood == "student_t":
        posterior["nu"] = out["noise"]["nu"]
    posterior.update({name: site[name] for name in population_sites(spec)})
    if multi:
        for name in (*spec.law.params, *out["derived"]):
            dims[name] = ["family"]
        if spec.noise == "family":
            dims["sigma"] = ["family"]
    latent = {z: out["latents"][z] for z in spec.latents}
    sample_stats = {
        "diverging": stats["diverging"],
        "n_steps": stats["num_steps"],
        "tree_depth": np.ceil(np.log2(stats["num_steps"] + 1)).astype(int),
        "acceptance_rate": stats["accept_prob"],
        "energy": stats["energy"],
        "lp": -stats["potential_energy"],
        "step_size": np.broadcast_to(stats["step_size"][:, None], stats["diverging"].shape),
    }
    obs_coord = np.asarray(data.frame.index)
    const = {
        "N": data.N,
        "D": data.D,
        "C": data.C,
        "loss": data.loss,
        "family": np.asarray(data.frame["family"], dtype=str),
    }
    if data.U is not None:
        const["U"] = data.U
    groups = {
        "posterior": posterior,
        "sample_stats": sample_stats,
        "latent_posterior": latent,
        "observed_data": {"log_loss": np.log(data.loss)},
        "constant_data": const,
    }
    all_dims = {
        **dims,
        "log_loss": ["obs"],
        "N": ["obs"],
        "D": ["obs"],
        "C": ["obs"],
        "loss": ["obs"],
        "U": ["obs"],
        "family": ["obs"],
    }
    for z in spec.latents:
        all_dims[z] = ["family"]
    attrs = {
        "/": {
            "scalebayes": json.dumps(
                {
                    "law": spec.law.name,
                    "modes": list(spec.modes),
                    "n_families": F,
                    "families": fams,
                    "likelihood": spec.likelihood,
                    "noise": spec.noise,
                    "priors": prep.priors.to_dict(),
                    "centre": prep.centre,
                    "data_name": data.name,
                    "seed": seed,
                    "sampler": asdict(config),
                    "excluded": data.excluded.reset_index().astype(str).to_dict(orient="list"),
                }
            )
        }
    }
    coords = {"family": fams, "obs": obs_coord}
    dt = azb.from_dict(groups, dims=all_dims, coords=coords, attrs=attrs)
    if want_pointwise(pointwise, int(np.prod(site["sigma"].shape[:2])), prep.n_obs):
        for name, ds in pointwise_groups(dt, seed=seed).items():
            dt[name] = ds
    return dt
