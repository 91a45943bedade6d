"""``fit``: from a runs table to a :class:`~scalebayes.posterior.Posterior`.

This module is the glue between the friendly edge (pandas in, DataTree out) and the compiled core
(:mod:`scalebayes.sampler`): it resolves the call's options into a :class:`~scalebayes.spec.FitSpec` (the model)
and a :class:`~scalebayes.sampler.SamplerConfig` (NUTS settings), builds padded arrays, runs the sampler once, and
assembles the ArviZ DataTree with named dims, which stores both so a posterior can be refitted exactly
(``fit(data, spec=post.fit_spec)``).
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Mapping
from dataclasses import asdict, dataclass

import arviz_base as azb
import jax
import jax.numpy as jnp
import numpy as np

from . import laws as _laws
from . import noise_refit
from . import priors as _priors
from .checkpoints import weights as checkpoint_weights
from .data import ScalingData
from .diagnostics import warn_if_failed, worth_extending
from .errors import DataError, LargeFitWarning, ModelError
from .identification import warn_if_poor_design, warn_if_prior_dominated
from .misfit import fitted_log_loss, warn_if_misfit
from .model import Spec, family_latents, noise_params, pooling_modes, population_draws, population_sites
from .padding import pad, pad_size
from .pointwise import pointwise_groups, want_pointwise
from .posterior import Posterior
from .precision import ensure_float64
from .sampler import SamplerConfig, factory_for, n_dim, to_numpy
from .spec import FitSpec, check_dtype, check_seed, resolve, sampler_config, whole_number

#: A fit warns (:class:`~scalebayes.errors.LargeFitWarning`) before sampling when it has more unconstrained
#: coordinates than this (e.g. 40 families × 5 partially pooled latents) ...
LARGE_DIM = 200
#: ... or more padded runs × iterations (chains × (warm-up + draws)) than this: each leapfrog step evaluates the law
#: at every run, and an iteration takes from ~7 steps (one family, chinchilla) to a few hundred (8 families).
LARGE_RUN_ITERATIONS = 5e8


@dataclass(frozen=True)
class Prepared:
    """Arrays for one dataset, padded to the sampler's size, and what is needed to undo the padding."""

    spec: Spec
    priors: _priors.Priors
    centre: dict[str, float]
    n_obs: int
    n_pad: int
    args: tuple  # (x, log_y, fam, mask, hyper) as JAX arrays; mask: each run's likelihood weight, 0 for padding
    fit_spec: FitSpec
    checkpoints: dict | None = None  # how checkpoints of one run were weighted (scalebayes.checkpoints), if any


def model_spec(fit_spec: FitSpec, data: ScalingData) -> Spec:
    """The compiled model's structure (:class:`~scalebayes.model.Spec`) for ``fit_spec`` on ``data``, checked
    against the data (inputs the law needs, enough runs, families with enough runs for free parameters)."""
    law = _laws.get(fit_spec.law)
    if "U" in law.inputs and data.U is None:
        raise DataError(
            f"the {law.name!r} law needs unique tokens: pass U=<column> to ScalingData.from_frame", column="U"
        )
    F = len(data.families)
    pooling = fit_spec.pooling or ("partial" if F > 1 else "complete")
    modes = pooling_modes(
        law, pooling, F, fit_spec.shared, fit_spec.free, centred=fit_spec.centred, marginal=fit_spec.marginal
    )
    noise = fit_spec.noise if F > 1 else "shared"
    spec = Spec(
        law=law, modes=modes, n_families=F, likelihood=fit_spec.likelihood, noise=noise, noise_trend=fit_spec.trend
    )
    # A partially pooled latent counts once: the families' values are shrunk toward their population, which is what
    # lets a family with fewer runs than the law has parameters be fitted at all; a free latent counts per family.
    data.check_enough_rows(sum(F if m == "free" else 1 for m in modes), law.name)
    if F > 1 and pooling != "complete" and any(m == "free" for m in modes):
        small = data.family_counts()
        tiny = small[small < 2]
        if len(tiny):
            raise DataError(
                f"families {list(tiny.index)} have fewer than 2 runs: cannot fit free per-family parameters; "
                "use pooling='partial'",
                column="family",
            )
    return spec


def prepare(
    data: ScalingData,
    law: str | _laws.Law | FitSpec | None = None,
    *,
    spec: FitSpec | None = None,
    n_pad: int | None = None,
    dtype: str = "float64",
    weights: np.ndarray | None = None,
    **options,
) -> Prepared:
    """Validate the model (``spec``, or ``law`` and FitSpec keyword ``options``) against ``data`` and build the
    sampler's input arrays, padded to ``n_pad`` runs (default :func:`scalebayes.padding.pad_size`). ``weights``
    (n,): likelihood weights in place of the checkpoint weights of ``data``'s run labels."""
    if not isinstance(data, ScalingData):
        raise DataError(f"expected ScalingData (see ScalingData.from_frame), got {type(data).__name__}")
    fit_spec = resolve(spec, law, options)
    dtype = check_dtype(dtype)
    ensure_float64(f"prepare(dtype={dtype!r})", required=dtype == "float64")
    model = model_spec(fit_spec, data)
    law_ = model.law
    li = data.log_inputs()
    centre = law_.centre(li)
    pri = _priors.resolve(law_, centre, float(np.median(data.loss)), fit_spec.prior_overrides)
    m = len(data)
    n = pad_size(m) if n_pad is None else int(n_pad)
    if n < m:
        raise ModelError(f"n_pad={n} is smaller than the number of runs {m}")
    dt = jnp.dtype(dtype)
    col = lambda a, fill: jnp.asarray(pad(np.asarray(a, dtype=float), n, fill), dtype=dt)  # noqa: E731
    x = {k: col(li[k], centre[k]) for k in law_.inputs}
    hyper = {
        "loc": jnp.asarray(pri.loc(law_.latents), dt),
        "scale": jnp.asarray(pri.scale(law_.latents), dt),
        "tau": jnp.asarray(pri.tau_scale(law_.latents), dt),
        "sigma": jnp.asarray(pri.sigma, dt),
        "nu": jnp.asarray(pri.nu, dt),
        "sigma_trend": jnp.asarray(pri.sigma_trend, dt),
        "centre": {k: jnp.asarray(v, dt) for k, v in centre.items()},
    }
    fam = jnp.asarray(pad(data.family_index, n, 0, np.int32), jnp.int32)
    w, ck = checkpoint_weights(data, law_) if weights is None else (np.asarray(weights, float), None)
    args = (x, col(np.log(data.loss), 0.0), fam, col(w, 0.0), hyper)
    return Prepared(model, pri, centre, m, n, args, fit_spec, ck)


def warn_if_large(prep: Prepared, config: SamplerConfig, what: str, stacklevel: int = 3) -> None:
    """Warn before sampling when a fit is large (:data:`LARGE_DIM` coordinates or :data:`LARGE_RUN_ITERATIONS`),
    with a rough estimate of the work, so a long fit does not run for minutes without a word."""
    D = n_dim(prep.spec)
    iters = config.chains * (config.warmup + config.draws)
    if D <= LARGE_DIM and prep.n_pad * iters <= LARGE_RUN_ITERATIONS:
        return
    warnings.warn(
        f"{what} is large: {D} sampled coordinates ({prep.spec.n_families} families), {prep.n_obs} runs, "
        f"{iters} NUTS iterations; each iteration takes ~7 to ~{(1 << config.max_tree_depth) - 1} leapfrog steps over "
        f"all {prep.n_pad} (padded) runs, i.e. ~{7 * iters * prep.n_pad:.1e} to "
        f"~{((1 << config.max_tree_depth) - 1) * iters * prep.n_pad:.1e} run evaluations: expect minutes to hours on "
        "a CPU. For a first look try fewer families or warmup=500, draws=500.",
        LargeFitWarning,
        stacklevel=stacklevel,
    )


def fit(
    data: ScalingData,
    law: str | _laws.Law | FitSpec | None = None,
    *,
    spec: FitSpec | None = None,
    chains: int = 4,
    draws: int = 1000,
    warmup: int = 1000,
    seed: int = 0,
    progress: bool | None = None,
    dense_mass: bool = True,
    target_accept: float = 0.9,
    max_tree_depth: int = 10,
    dtype: str = "float64",
    pointwise: bool | str = "auto",
    warn: bool = True,
    sampler: str = "nuts",
    n_pad: int | None = None,
    extend: int = 1,
    **options,
) -> Posterior:
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

    The model is a :class:`~scalebayes.spec.FitSpec`: pass one as ``spec=`` (e.g. ``spec=post.fit_spec`` to refit
    exactly), or its fields as keywords (``law``, ``likelihood``, ``pooling``, ``shared``, ``free``, ``centred``,
    ``noise``, ``noise_trend``, ``priors``), not both. Unknown keywords raise :class:`~scalebayes.errors.ModelError`.

    Args:
        data: validated runs (:class:`~scalebayes.data.ScalingData`).
        law: a registered law name (``scalebayes.laws.available()``), a :class:`~scalebayes.laws.Law`, or a
            FitSpec; default ``"chinchilla"``.
        spec: the model as a :class:`~scalebayes.spec.FitSpec`.
        chains, draws, warmup: NUTS chains and iterations per chain (post-warm-up draws are kept); whole numbers.
        seed: a non-negative integer; every random number of the fit derives from it; same seed, same draws.
        progress: show a progress bar on stderr (:mod:`scalebayes.progress`): ``None`` (default) when stderr is a
            terminal or in a notebook, ``True``/``False`` to force. Same draws either way.
        sampler: ``"nuts"`` (scalebayes' own compiled NUTS, the default) or ``"numpyro"`` (NumPyro's NUTS on the same
            model and parameterisation, :mod:`scalebayes.sampler.reference`: a slower cross-check).
        dense_mass, target_accept, max_tree_depth: NUTS settings (target_accept in (0, 1), max_tree_depth 1..30).
        dtype: ``"float64"`` (default) or ``"float32"`` for the sampler's arrays.
        pointwise: store the pointwise log-likelihood and posterior predictive groups (draws × runs floats each):
            ``True``, ``False``, or ``"auto"`` (default): only when draws × runs ≤ 2e6
            (:data:`scalebayes.pointwise.AUTO_MAX_ELEMENTS`), so a 100,000-run fit holds no draws × runs array
            the user did not ask for. Skipped groups can be added later with ``Posterior.pointwise()``.
        warn: emit :class:`~scalebayes.errors.SamplingWarning` when diagnostics fail (the flag is set anyway) and
            :class:`~scalebayes.errors.LargeFitWarning` before a large fit.
        extend: when the diagnostics fail only because R-hat (≤ 1.05) or an ESS falls short, continue the same
            chains for another ``draws`` iterations, at most ``extend`` times, and judge all the draws
            (:func:`scalebayes.diagnostics.worth_extending`; the diagnostics' notes say so). Divergences are never
            sampled on. 0 turns it off; ``sampler="numpyro"`` and chains sharded over several devices do not extend.
        n_pad: pad the runs to this many rows instead of :func:`scalebayes.padding.pad_size`'s choice, so fits of
            subsets of one dataset share one compiled program (:func:`scalebayes.holdout.fit_padded`).
        **options: FitSpec fields. ``likelihood``: ``"student_t"`` or ``"normal"``. ``priors``: overrides, see
            :mod:`scalebayes.priors`. ``pooling``: ``"complete"``, ``"partial"`` (default with several families)
            or ``"none"``. ``shared``, ``free``: parameter names pooled exactly / left independent per family under
            partial pooling. ``noise``: ``"shared"`` σ, or ``"family"`` for one σ per family. ``noise_trend``:
            ``"auto"`` (default: ``"tokens_per_parameter_cut"`` for laws of N and D, else ``"none"``),
            ``"tokens_per_parameter_cut"`` (a new run's noise scale follows its D/N, refitted to the residuals
            after the fit, the law left as fitted; :mod:`scalebayes.noise_refit`), ``"tokens_per_parameter"``
            (the same trend fitted with the law) or ``"none"``; see FitSpec.
            ``marginal`` (default True): sample each partially pooled parameter as its family values alone, with the
            population mean and spread integrated out (μ exactly, τ by quadrature) and drawn afterwards from their
            conditional: no funnel and no (μ, τ, z) ridge for NUTS (:mod:`scalebayes.model`). On
            benchmarks/hierarchy.py's cases (2-20 families) this takes partial pooling from 127-1023 leapfrog steps
            per iteration to ~15, the same as fitting the families separately. ``marginal=False`` samples θ_f = μ +
            τ·z_f (non-centred); ``centred``: sample θ_f ~ Normal(μ, τ) with μ, τ as coordinates, ``True`` for all of
            them or parameter names (e.g. ``("alpha", "beta")``). Same model, different geometry: with the sampled (μ,
            τ), centred suits parameters that every family's runs pin well, non-centred those that few-run families
            leave to the population. Measured (before the marginal form) on porian_isoflop's 565 valley runs (8
            families of 65-78 runs; 4 chains × 500 + 500, target_accept 0.9): non-centred 228 leapfrog steps per
            iteration and 1 divergent transition; α, β, E centred 84 steps and 23 divergences; all centred 78 steps
            and 84 divergences. Shorter trees, more divergences: check the diagnostics either way.
    """
    fit_spec = resolve(spec, law, options)
    config = sampler_config(
        chains=chains,
        warmup=warmup,
        draws=draws,
        dense_mass=dense_mass,
        target_accept=target_accept,
        max_tree_depth=max_tree_depth,
        progress=progress,
        chain_method="auto",
    )
    seed, dtype = check_seed(seed), check_dtype(dtype)
    want_pointwise(pointwise, 0, 0)  # validates the value before any work
    ensure_float64("fit(dtype='float64')", required=dtype == "float64")
    prep = prepare(data, spec=fit_spec, n_pad=n_pad, dtype=dtype)
    what = f"fit of {prep.spec.law.name!r} to {data.name!r}"
    if warn:
        warn_if_large(prep, config, what)
        warn_if_poor_design(data, prep.spec, what)
    run = factory_for(sampler)(prep.spec, prep.n_pad, config, dtype)
    extend = whole_number(extend, "extend", 0)
    post = sample(run, jax.random.key(seed), data, prep, config, seed=seed, dtype=dtype, extend=extend)
    if fit_spec.cut_trend:
        post = refit_noise(post, seed=seed)
    if want_pointwise(pointwise, post.n_samples, prep.n_obs):
        post.pointwise()
    if warn:
        warn_if_failed(post.diagnostics, what)
        warn_if_misfit(post.misfit, what)
        warn_if_prior_dominated(post.contraction, what)
    return post


def sample(
    run, key, data: ScalingData, prep: Prepared, config: SamplerConfig, *, seed: int, dtype: str, extend: int
) -> Posterior:
    """The fit's Posterior without pointwise groups: ``run``'s draws, continued (``run.start(...).extend()``) up to
    ``extend`` times while :func:`~scalebayes.diagnostics.worth_extending` says more draws would pass (the verdict
    is the Posterior's own, computed once per block). Runners without ``start`` (NumPyro's, sharded chains) sample
    once."""
    start = getattr(run, "start", None) if extend else None
    chains = start(key, *prep.args) if start else None

    def posterior(k):
        draws_, stats = to_numpy(chains.result() if chains else run(key, *prep.args))
        dt = build_datatree(
            data, prep, draws_, stats, pointwise=False, seed=seed, config=config, dtype=dtype, extensions=k
        )
        return Posterior(dt, data=data)

    k, post = 0, posterior(0)
    while chains is not None and k < extend and worth_extending(post.diagnostics):
        chains.extend()
        k, post = k + 1, posterior(k + 1)
    return post


def refit_noise(post: Posterior, *, seed: int) -> Posterior:
    """``post`` with a new run's noise refitted to its residuals (:mod:`scalebayes.noise_refit`, the cut form of the
    noise trend) in its group ``run_noise``; the law's draws are unchanged. Deterministic in ``seed``."""
    data, cfg = noise_refit.residual_data(post.data, fitted_log_loss(post)), noise_refit.config(post)
    dtype = post.meta.get("dtype", "float64")  # the fit's: float32 also where float64 is switched off
    w = noise_refit.weights(post.data, post.meta.get("checkpoints"))
    prep = prepare(data, noise_refit.SHIFT, dtype=dtype, weights=w, **noise_refit.options(post.spec, post.priors))
    run = factory_for("nuts")(prep.spec, prep.n_pad, cfg, dtype)
    key = jax.random.fold_in(jax.random.key(seed), noise_refit.STREAM)
    res = sample(run, key, data, prep, cfg, seed=seed, dtype=dtype, extend=0)
    return Posterior(noise_refit.attached(post.idata, noise_refit.group(res, seed)), data=post.data)


def constrained_summaries(spec: Spec, centre: Mapping[str, float], site: Mapping[str, np.ndarray]) -> dict:
    """Published parameters (…, F), derived quantities, per-family latents and noise from sampled sites."""
    lat = family_latents(spec, {k: jnp.asarray(v) for k, v in site.items()})
    params = spec.law.to_params(lat, {k: jnp.asarray(v) for k, v in centre.items()})
    derived = {k: f(params) for k, f in spec.law.derived.items()}
    noise = noise_params(spec, {k: jnp.asarray(v) for k, v in site.items()})
    return to_numpy({"params": params, "derived": derived, "latents": lat, "noise": noise})


def posterior_group(spec: Spec, centre: Mapping[str, float], site: Mapping[str, np.ndarray]) -> tuple[dict, dict, dict]:
    """The posterior group's variables in the published convention (each (chain, draw[, F])), their extra dims
    (``family`` for per-family ones when there are several families) and the latent_posterior group's variables
    (each (chain, draw, F))."""
    out = constrained_summaries(spec, centre, site)
    multi = spec.n_families > 1
    fam_var = (lambda v: v) if multi else (lambda v: v[..., 0])  # drop the family axis with one family
    posterior = {name: fam_var(out["params"][name]) for name in spec.law.params}
    posterior.update({name: fam_var(v) for name, v in out["derived"].items()})
    sig = out["noise"]["sigma"]
    posterior["sigma"] = sig if spec.noise == "family" else sig[..., 0]
    if spec.likelihood == "student_t":
        posterior["nu"] = out["noise"]["nu"]
    if spec.noise_trend:
        posterior["sigma_trend"] = out["noise"]["sigma_trend"]
    posterior.update({name: site[name] for name in population_sites(spec) if name in site})
    dims = {}
    if multi:
        dims = {name: ["family"] for name in (*spec.law.params, *out["derived"])}
        if spec.noise == "family":
            dims["sigma"] = ["family"]
    return posterior, dims, {z: out["latents"][z] for z in spec.latents}


def _sample_stats(stats: Mapping[str, np.ndarray]) -> dict:
    """ArviZ-named sampler statistics, each (chain, draw)."""
    return {
        "diverging": stats["diverging"],
        "n_steps": stats["num_steps"],
        "tree_depth": np.ceil(np.log2(stats["num_steps"] + 1)).astype(int),
        "acceptance_rate": stats["accept_prob"],
        "energy": stats["energy"],
        "lp": -stats["potential_energy"],
        "step_size": np.broadcast_to(stats["step_size"][:, None], stats["diverging"].shape),
    }


def _constant_data(data: ScalingData) -> dict:
    const = {"N": data.N, "D": data.D, "C": data.C, "loss": data.loss}
    const["family"] = np.asarray(data.frame["family"], dtype=str)
    if data.U is not None:
        const["U"] = data.U
    if "run" in data.frame.columns:
        const["run"] = np.asarray(data.frame["run"], dtype=str)
    return const


def excluded_meta(excluded) -> dict:
    """The excluded rows for the file's metadata: every cell as text (``excluded``), and the columns that were
    numbers (``excluded_numeric``), so that loading turns only those back into numbers and family labels such as
    ``01`` stay text."""
    numeric = [str(c) for c, t in excluded.dtypes.items() if c != "reason" and getattr(t, "kind", "O") in "iuf"]
    return {"excluded": excluded.reset_index().astype(str).to_dict(orient="list"), "excluded_numeric": numeric}


def _meta(data: ScalingData, prep: Prepared, seed: int, config: SamplerConfig, dtype: str) -> str:
    """The root attribute ``scalebayes`` (JSON): the FitSpec, sampler settings and what undoes the padding and
    centring."""
    spec = prep.spec
    return json.dumps(
        {
            "law": spec.law.name,
            "modes": list(spec.modes),
            "n_families": spec.n_families,
            "families": list(data.families),
            "likelihood": spec.likelihood,
            "noise": spec.noise,
            "noise_trend": spec.noise_trend,
            "priors": prep.priors.to_dict(),
            "centre": prep.centre,
            "data_name": data.name,
            "seed": seed,
            "fit_spec": prep.fit_spec.to_dict(),
            "sampler": asdict(config),
            "dtype": dtype,
            "checkpoints": prep.checkpoints,
            **excluded_meta(data.excluded),
        }
    )


def build_datatree(
    data: ScalingData,
    prep: Prepared,
    site: dict,
    stats: dict,
    *,
    pointwise: bool | str,
    seed: int,
    config: SamplerConfig,
    dtype: str = "float64",
    extensions: int = 0,
):
    """The ArviZ DataTree of a fit: posterior (published convention), sample_stats, observed/constant data,
    latent_posterior (sampler coordinates per family) and, when ``pointwise``, log_likelihood and
    posterior_predictive (dims chain, draw, obs). The root attributes store the FitSpec and sampler settings;
    ``sample_stats`` the depth limit and how many times sampling went on (``extensions``, :func:`sample`)."""
    spec = prep.spec
    # μ, τ of "marginal" latents are not sampler coordinates: one conditional draw per posterior draw, from a key
    # of its own (folded from the seed) so the sampler's draws stay what they were
    key = jax.random.fold_in(jax.random.key(seed), 14)
    site = {**site, **to_numpy(population_draws(spec, site, prep.args[4], key))}
    posterior, dims, latent = posterior_group(spec, prep.centre, site)
    groups = {
        "posterior": posterior,
        "sample_stats": _sample_stats(stats),
        "latent_posterior": latent,
        "observed_data": {"log_loss": np.log(data.loss)},
        "constant_data": _constant_data(data),
    }
    obs_vars = ("log_loss", "N", "D", "C", "loss", "U", "family")
    all_dims = {**dims, **{v: ["obs"] for v in obs_vars}, **{z: ["family"] for z in spec.latents}}
    attrs = {
        "/": {"scalebayes": _meta(data, prep, seed, config, dtype)},
        "sample_stats": {"max_tree_depth": int(config.max_tree_depth), "extensions": int(extensions)},
    }
    coords = {"family": list(data.families), "obs": np.asarray(data.frame.index)}
    dt = azb.from_dict(groups, dims=all_dims, coords=coords, attrs=attrs)
    if want_pointwise(pointwise, int(np.prod(site["sigma"].shape[:2])), prep.n_obs):
        for name, ds in pointwise_groups(dt, seed=seed).items():
            dt[name] = ds
    return dt
