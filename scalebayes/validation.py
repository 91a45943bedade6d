"""Simulation-based calibration (SBC) of the whole inference pipeline.

Talts et al. (2018), "Validating Bayesian Inference Algorithms with Simulation-Based Calibration": if parameters
θ* are drawn from the prior, data y from the model given θ*, and the posterior p(θ | y) is computed correctly, the
rank of θ* among L posterior draws is uniform on {0, ..., L} for every scalar quantity. A sampler that is biased,
too narrow or too wide, a potential that disagrees with the generative model, or a prior the fit does not use shows
up as a non-uniform rank distribution.

:func:`sbc` runs that loop for any registered law on a user-given design (the N, D, C, U and family layout of the
runs): prior draws come from the NumPyro model of :mod:`scalebayes.model` (the reference generative model) and
losses from them through the package's one noise model (:mod:`scalebayes.likelihood`); every simulated dataset is
fitted by the compiled NUTS program of :mod:`scalebayes.sampler` (which evaluates its own potential, so SBC also
checks that it agrees with the model), batched over datasets with ``batch_sampler`` (one compiled program,
simulations vectorised), and the ranks are tested for uniformity. The sampler is called directly rather than
through :func:`scalebayes.fit_many` (the same engine) because ``fit_many`` resolves each dataset's priors from its
own losses, while SBC needs the one prior the simulations were drawn from.

Test quantities: every sampled scalar (latents, population μ/τ under partial pooling, each family's latent,
σ and ν) plus the log-likelihood of the simulated data (Modrák et al. 2023, "Simulation-based calibration checking
for Bayesian computation: the choice of test quantities shapes sensitivity"), which is sensitive to joint
miscalibration that one-dimensional margins miss.

Uniformity test: each quantity's ranks are turned into randomised PIT values u = (r + V)/(L + 1), V ~ U(0, 1),
which are exactly U(0, 1) under the null, and tested with the PIT-ECDF test ``pot_c`` of ArviZ
(``arviz_stats``: order-statistic Beta tests combined by the Cauchy combination, good power against local and
global departures); a χ² test on equiprobable bins is reported alongside. The SBC *passes* at level α when the
Bonferroni-adjusted smallest ``pot_c`` p-value over quantities is ≥ α.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
import xarray as xr
from numpyro.infer import Predictive

from . import laws as _laws
from . import likelihood as _lik
from .data import ScalingData
from .diagnostics import split_rhat
from .errors import DataError, ModelError
from .fitting import Prepared, prepare
from .model import POOLED, family_latents, model, tpp_offset
from .precision import ensure_float64
from .progress import Steps
from .sampler import SamplerConfig, batch_sampler, to_numpy
from .spec import FitSpec, check_seed, resolve, sampler_config, whole_number

#: Default SBC sampler settings: 2 chains, 300 warm-up and 250 kept iterations each, thinned to 99 draws (ranks
#: 0..99). NUTS draws of these models have ESS ≥ 0.3 per draw, so thinning by 5 leaves nearly independent draws
#: (autocorrelated draws make ranks non-uniform even for a correct sampler).
SBC_SETTINGS = dict(chains=2, warmup=300, draws=250)
N_RANK = 99

CORRUPTIONS = ("noise", "prior", "tempered")


@dataclass
class SBCResult:
    """Ranks and uniformity tests of one SBC run.

    Attributes:
        law, pooling: what was checked.
        ranks: DataFrame (n_sims, quantities) of integer ranks in 0..``n_rank`` (the number of posterior draws
            below the true value, among ``n_rank`` thinned draws).
        truths: DataFrame (n_sims, quantities) of the prior draws (unconstrained latents; σ, ν, τ as values).
        sims: DataFrame per simulation: divergences, mean leapfrog steps, max R-hat over quantities.
        n_rank: L, so ranks take L + 1 values.
        config: settings of the run (design size, families, sampler, seed, corruption).
        seconds: wall time of sampling.
    """

    law: str
    pooling: str
    ranks: pd.DataFrame
    truths: pd.DataFrame
    sims: pd.DataFrame
    n_rank: int
    config: dict = field(default_factory=dict)
    seconds: float = float("nan")

    @property
    def n_sims(self) -> int:
        return len(self.ranks)

    def pit(self, seed: int = 0) -> pd.DataFrame:
        """Randomised PIT values (r + V)/(L + 1), V ~ U(0,1) (fixed ``seed``): exactly U(0, 1) under the null."""
        rng = np.random.default_rng(seed)
        v = rng.uniform(size=self.ranks.shape)
        return (self.ranks + v) / (self.n_rank + 1)

    def tests(self, bins: int | None = None) -> pd.DataFrame:
        """Per quantity: ``p_pot_c`` (ArviZ PIT-ECDF uniformity test), ``p_chi2`` (χ² on ``bins`` equiprobable bins
        of the PIT; default n_sims/10 clipped to 4..20) and the mean PIT (0.5 expected; < 0.5 means the posterior
        sits above the truth)."""
        # lazily: scipy.stats (also under arviz_stats) is a heavy import, not needed to start
        import arviz_stats  # noqa: F401  (registers the .azstats accessor)
        from scipy import stats as sstats

        pit = self.pit()
        bins = bins or int(np.clip(self.n_sims // 10, 4, 20))
        rows = []
        for name in pit.columns:
            u = pit[name].to_numpy()
            da = xr.DataArray(u, dims=["sim"])
            p_pot = float(np.asarray(da.azstats.uniformity_test(dim="sim", method="pot_c")[0]))
            counts = np.histogram(u, bins=bins, range=(0.0, 1.0))[0]
            p_chi2 = float(sstats.chisquare(counts).pvalue)
            rows.append({"quantity": name, "p_pot_c": p_pot, "p_chi2": p_chi2, "mean_pit": float(u.mean())})
        return pd.DataFrame(rows).set_index("quantity")

    def p_value(self) -> float:
        """Bonferroni-adjusted smallest ``pot_c`` p-value over quantities (min(1, K · min p))."""
        p = self.tests()["p_pot_c"]
        return float(min(1.0, len(p) * p.min()))

    def passed(self, alpha: float = 0.01) -> bool:
        """True when the adjusted p-value is at least ``alpha``."""
        return self.p_value() >= alpha

    def summary(self) -> dict:
        """JSON-ready summary: law, pooling, n_sims, test, adjusted p, per-quantity p-values, sampler health."""
        t = self.tests()
        return {
            "law": self.law,
            "pooling": self.pooling,
            "n_sims": self.n_sims,
            "n_rank": self.n_rank,
            "test": "pot_c (arviz_stats PIT-ECDF uniformity test), Bonferroni over quantities",
            "p_value_adjusted": self.p_value(),
            "passed_at_0.01": self.passed(0.01),
            "p_pot_c": t["p_pot_c"].round(4).to_dict(),
            "p_chi2": t["p_chi2"].round(4).to_dict(),
            "divergent_sims": int((self.sims["divergences"] > 0).sum()),
            "max_r_hat": float(self.sims["max_r_hat"].max()),
            "sims_r_hat_over_1.05": int((self.sims["max_r_hat"] > 1.05).sum()),
            "seconds": self.seconds,
            "config": self.config,
        }

    def plot(self, path: str | Path | None = None, *, quantities: list[str] | None = None, ci: float = 0.99):
        """ECDF-difference plot (Säilynoja et al. 2022): ECDF(PIT) − u per quantity with the simultaneous
        ``ci`` band for n_sims independent uniforms. Returns the matplotlib Figure (saved when ``path`` is given)."""
        import matplotlib

        matplotlib.use("Agg", force=False)
        import matplotlib.pyplot as plt
        from arviz_stats import ecdf_utils  # lazily, as in tests()

        pit = self.pit()
        names = list(quantities or pit.columns)
        tests = self.tests()
        ncol = min(4, len(names))
        nrow = -(-len(names) // ncol)
        fig, axes = plt.subplots(nrow, ncol, figsize=(3.2 * ncol, 2.4 * nrow), squeeze=False, sharey=True)
        for ax, name in zip(axes.ravel(), names, strict=False):
            x, ecdf, lo, hi = ecdf_utils.ecdf_pit(pit[name].to_numpy(), ci, 2000, rng=np.random.default_rng(0))
            ax.fill_between(x, lo - x, hi - x, color="0.85", step="post", label=f"{ci:.0%} band")
            ax.step(x, ecdf - x, where="post", color="C0")
            ax.axhline(0, color="0.4", lw=0.6)
            ax.set_title(f"{name}\np={tests.loc[name, 'p_pot_c']:.2f}", fontsize=8)
            ax.tick_params(labelsize=7)
        for ax in axes.ravel()[len(names) :]:
            ax.axis("off")
        fig.suptitle(
            f"SBC {self.law} ({self.pooling} pooling), {self.n_sims} sims, L={self.n_rank}: ECDF(PIT) − PIT "
            f"(grey: {ci:.0%} simultaneous band under uniformity); adjusted pot_c p={self.p_value():.3g}",
            fontsize=9,
        )
        fig.supxlabel("PIT", fontsize=8)
        fig.supylabel("ECDF difference", fontsize=8)
        fig.tight_layout(rect=(0, 0, 1, 1 - 0.45 / fig.get_figheight()))  # leave room for the suptitle
        if path is not None:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            fig.savefig(path, dpi=110)
        return fig


def _design_data(design, loss_scale: float | None) -> ScalingData:
    if isinstance(design, ScalingData):
        return design
    if not isinstance(design, pd.DataFrame):
        raise DataError(f"design must be ScalingData or a DataFrame, got {type(design).__name__}")
    df = design.copy()
    if "loss" not in df.columns:
        df["loss"] = float(loss_scale if loss_scale is not None else 3.0)
        # identical placeholder losses would be flagged as duplicates only if the inputs repeat too
    kw = {k: k for k in ("N", "D", "C", "U") if k in df.columns}
    if "family" in df.columns:
        kw["family"] = "family"
    return ScalingData.from_frame(df, loss="loss", name="sbc_design", **kw)


def _run_sigma(spec, site: Mapping[str, jnp.ndarray], x, fam, centre) -> jnp.ndarray:
    """σ of every run (..., n) (or (..., 1) when shared and without a trend) from sampled σ (...,) or (..., F) and,
    with a noise trend, ζ (...,) at each run's tokens per parameter."""
    sigma = site["sigma"]
    out = jnp.take(sigma, fam, axis=-1) if spec.noise == "family" else sigma[..., None]
    if spec.noise_trend:
        out = out * jnp.exp(site["sigma_trend"][..., None] * tpp_offset(x, centre))
    return out


def _run_nu(spec, site: Mapping[str, jnp.ndarray]):
    """ν of every run (..., 1), inf for the Normal likelihood (:func:`scalebayes.likelihood.nu_for`)."""
    nu = site["nu"][..., None] if spec.likelihood == "student_t" else None
    return _lik.nu_for(spec.likelihood, nu)


def _loglik(spec, site: Mapping[str, jnp.ndarray], x, log_y, fam, mask, centre) -> jnp.ndarray:
    """Log-likelihood of the data for a batch of site values (leading axes ...) → (...)."""
    mu = _mean_from_site(spec, site, x, fam, centre)
    ll = _lik.logpdf(log_y, mu, _run_sigma(spec, site, x, fam, centre), _run_nu(spec, site))
    return jnp.sum(jnp.where(mask > 0, ll, 0.0), axis=-1)


def _quantities(spec, site: Mapping[str, np.ndarray], families: tuple[str, ...]) -> dict[str, np.ndarray]:
    """Scalar test quantities from site values with leading axes (...): name -> (...)."""
    out = {}
    F = len(families)
    lat = {k: np.asarray(v) for k, v in family_latents(spec, {k: jnp.asarray(v) for k, v in site.items()}).items()}
    for z, mode in zip(spec.latents, spec.modes, strict=True):
        if mode == "shared":
            out[z] = np.asarray(site[z])
        else:
            if mode in POOLED and f"mu_{z}" in site:  # "marginal" latents: μ, τ are not sampled (family values are)
                out[f"mu_{z}"] = np.asarray(site[f"mu_{z}"])
                out[f"tau_{z}"] = np.log(np.asarray(site[f"tau_{z}"]))
            for j in range(F):
                out[f"{z}[{families[j]}]"] = lat[z][..., j]
    sig = np.log(np.asarray(site["sigma"]))
    if spec.noise == "family":
        for j in range(F):
            out[f"log_sigma[{families[j]}]"] = sig[..., j]
    else:
        out["log_sigma"] = sig
    if spec.likelihood == "student_t":
        out["log_nu"] = np.log(np.asarray(site["nu"]))
    if spec.noise_trend:
        out["sigma_trend"] = np.asarray(site["sigma_trend"])
    return out


def sbc(
    law: str | _laws.Law | FitSpec | None,
    design,
    n_sims: int = 200,
    seed: int = 0,
    *,
    spec: FitSpec | None = None,
    loss_scale: float | None = None,
    chains: int = SBC_SETTINGS["chains"],
    warmup: int = SBC_SETTINGS["warmup"],
    draws: int = SBC_SETTINGS["draws"],
    n_rank: int = N_RANK,
    max_tree_depth: int = 8,
    batch_size: int = 50,
    corrupt: str | None = None,
    progress: bool | None = None,
    **options,
) -> SBCResult:
    """Simulation-based calibration of a model (``law`` and FitSpec keyword ``options``, or ``spec=``) on ``design``.

    Args:
        law: a registered law name, a :class:`~scalebayes.laws.Law` or a :class:`~scalebayes.spec.FitSpec` (None
            with ``spec=``).
        design: the runs to simulate at: a :class:`~scalebayes.data.ScalingData` or a DataFrame with two of
            ``N`` (parameters), ``D`` (tokens), ``C`` (FLOP), optionally ``U`` (unique tokens), ``family`` and
            ``loss`` (nats; only its median is used, to set the priors' scale, as a real fit would).
        n_sims: number of simulated datasets (θ* ~ prior, y ~ model | θ*).
        seed: every random number derives from it.
        spec, **options: the model, as in :func:`scalebayes.fit` (``pooling``, ``likelihood``, ``noise``,
            ``shared``, ``free``, ``centred``, ``priors``). Priors are resolved once from ``design`` and used both
            to simulate and to fit (SBC needs the same prior in both).
        loss_scale: typical loss in nats for the priors when ``design`` has no loss column (default 3.0).
        chains, warmup, draws, max_tree_depth: NUTS settings per simulated dataset.
        n_rank: L; the chains × draws kept draws are thinned evenly to L draws, ranks are in 0..L.
        batch_size: datasets per vectorised sampler call (one compiled program for all batches; the last batch is
            padded with repeats that are discarded).
        corrupt: a deliberately wrong pipeline, to show that the check has power: ``"noise"`` simulates losses
            with 1.5× the noise σ that the fitted model assumes (the sampler's noise scale is wrong);
            ``"prior"`` fits with the prior of the last exponent latent shifted by one prior s.d. (prior
            mismatch); ``"tempered"`` fits the likelihood raised to the power 1/2 (a tempered posterior, too wide).
        progress: a line per finished batch (simulated datasets fitted / n_sims, elapsed, ETA) and each batch's
            sampler bar on stderr; ``None`` (default) when stderr is a terminal or in a notebook, ``False`` off.

    Returns:
        :class:`SBCResult` with ranks, the uniformity tests (``.tests()``, ``.passed()``) and ``.plot()``.
    """
    fit_spec = resolve(spec, law, options)
    steps = Steps("sbc", 0, progress, unit="datasets")
    config = sampler_config(chains=chains, warmup=warmup, draws=draws, max_tree_depth=max_tree_depth, progress=steps.on)
    seed = check_seed(seed)
    n_sims, n_rank, batch_size = _check_sbc_options(n_sims, n_rank, batch_size, corrupt, config)
    steps.total = n_sims
    ensure_float64("sbc")
    data = _design_data(design, loss_scale)
    prep = prepare(data, spec=fit_spec)
    k_sim, k_fit = jax.random.split(jax.random.key(seed))
    truth, log_y = _simulate(prep, n_sims, k_sim, corrupt)
    run = batch_sampler(prep.spec, prep.n_pad, config, "float64")
    B = int(min(batch_size, n_sims))
    keys = jax.random.split(k_fit, n_sims)
    idx = np.linspace(0, config.chains * config.draws - 1, n_rank).round().astype(int)  # thinned draws
    families = tuple(data.families)
    rows = []
    t0 = time.perf_counter()
    for start in range(0, n_sims, B):
        sl = np.arange(start, min(start + B, n_sims))
        draws_, stats = _fit_batch(run, prep, keys, log_y, sl, B, corrupt)
        rows += _rank_rows(prep, families, draws_, stats, truth, log_y, sl, idx, config)
        steps.advance("fitted and ranked", n=len(sl))
    seconds = time.perf_counter() - t0
    ranks, truths, sims = (pd.DataFrame([r[k] for r in rows]) for k in range(3))
    pooling = fit_spec.pooling or ("partial" if len(families) > 1 else "complete")
    cfg = _run_config(prep, fit_spec, config, B, seed, corrupt)
    return SBCResult(prep.spec.law.name, pooling, ranks, truths, sims, n_rank, config=cfg, seconds=seconds)


def _check_sbc_options(n_sims, n_rank, batch_size, corrupt, config: SamplerConfig) -> tuple[int, int, int]:
    if corrupt is not None and corrupt not in CORRUPTIONS:
        raise ModelError(f"unknown corruption {corrupt!r}; choose one of {CORRUPTIONS} or None")
    n_sims = whole_number(n_sims, "n_sims", 2)
    n_rank = whole_number(n_rank, "n_rank", 1)
    if n_rank > config.chains * config.draws:
        raise ModelError(f"n_rank={n_rank} exceeds the {config.chains * config.draws} kept draws (chains × draws)")
    return n_sims, n_rank, whole_number(batch_size, "batch_size", 1)


def _simulate(prep: Prepared, n_sims: int, key, corrupt: str | None) -> tuple[dict, jnp.ndarray]:
    """θ* from the prior of the NumPyro model (the reference generative model) and log losses y | θ* from the noise
    model (:mod:`scalebayes.likelihood`), 1.5 × σ with ``corrupt="noise"``. Returns (truth sites, (n_sims, n)
    log losses, 0 at padding)."""
    spec = prep.spec
    x, _, fam, mask, hyper = prep.args
    k_prior, k_noise = jax.random.split(key)
    sims = Predictive(model, num_samples=int(n_sims))(k_prior, spec, x, None, fam, mask, hyper)
    truth = {k: v for k, v in sims.items() if k != "obs"}
    mu = _mean_from_site(spec, truth, x, fam, hyper["centre"])
    sigma = _run_sigma(spec, truth, x, fam, hyper["centre"]) * (1.5 if corrupt == "noise" else 1.0)
    log_y = _lik.sample(k_noise, mu, sigma, _run_nu(spec, truth))
    return truth, jnp.where(mask[None, :] > 0, log_y, 0.0)


def _fit_batch(run, prep: Prepared, keys, log_y, sl: np.ndarray, B: int, corrupt: str | None) -> tuple[dict, dict]:
    """Fit the simulations ``sl`` (padded to ``B`` with repeats of the last, discarded): numpy draws
    (len(sl), chains, draws, ...) and stats."""
    spec = prep.spec
    x, _, fam, mask, hyper = prep.args
    if corrupt == "prior":
        k = len(spec.latents) - 1
        hyper = {**hyper, "loc": hyper["loc"].at[k].add(hyper["scale"][k])}
    # "tempered": the sampler's potential is Σ mask·loglik, so halving the mask fits p(θ)·p(y|θ)^(1/2), a posterior
    # tempered at 1/2 (too wide) — a sampler that dropped the likelihood's weight.
    mask = mask * (0.5 if corrupt == "tempered" else 1.0)
    pad_idx = np.concatenate([sl, np.full(B - len(sl), sl[-1])])
    bcast = lambda a: jnp.broadcast_to(a, (B, *jnp.shape(a)))  # noqa: E731
    args = (jax.tree.map(bcast, x), log_y[pad_idx], bcast(fam), bcast(mask), jax.tree.map(bcast, hyper))
    draws_, stats = to_numpy(run(keys[pad_idx], *args))
    return {k: v[: len(sl)] for k, v in draws_.items()}, {k: v[: len(sl)] for k, v in stats.items()}


def _rank_rows(prep: Prepared, families, draws_, stats, truth, log_y, sl, idx, config: SamplerConfig) -> list:
    """(ranks, truths, sampler health) rows of the simulations ``sl`` from their posterior draws."""
    spec = prep.spec
    x, _, fam, mask, hyper = prep.args
    total = config.chains * config.draws
    flat = {k: v.reshape(v.shape[0], total, *v.shape[3:]) for k, v in draws_.items()}  # (b, chains·draws, ...)
    q_post = _quantities(spec, flat, families)
    truth_b = {k: jnp.asarray(np.asarray(v)[sl]) for k, v in truth.items()}
    q_true = _quantities(spec, truth_b, families)
    loglik = lambda s, y: _loglik(spec, s, x, y, fam, mask, hyper["centre"])  # noqa: E731
    q_post["loglik"] = np.asarray(jax.vmap(loglik)({k: jnp.asarray(v) for k, v in flat.items()}, log_y[sl]))
    q_true["loglik"] = np.asarray(loglik(truth_b, log_y[sl]))
    names = [k for k in q_post if k != "loglik"]
    chains_q = np.stack([q_post[k].reshape(len(sl), config.chains, config.draws) for k in names], axis=1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a constant quantity has no R-hat (NaN)
        max_rhat = np.nanmax(split_rhat(chains_q), axis=1) if names else np.full(len(sl), np.nan)
    rows = []
    for b in range(len(sl)):
        ranks = {k: int((v[b, idx] < q_true[k][b]).sum()) for k, v in q_post.items()}
        health = {
            "divergences": int(stats["diverging"][b].sum()),
            "mean_steps": float(stats["num_steps"][b].mean()),
            "max_r_hat": float(max_rhat[b]),
        }
        rows.append((ranks, {k: float(q_true[k][b]) for k in q_post}, health))
    return rows


def _run_config(prep: Prepared, fit_spec: FitSpec, config: SamplerConfig, B: int, seed: int, corrupt) -> dict:
    """The settings of an SBC run, as stored in :attr:`SBCResult.config`."""
    return {
        "n_runs": prep.n_obs,
        "n_pad": prep.n_pad,
        "families": prep.spec.n_families,
        "likelihood": prep.spec.likelihood,
        "noise": prep.spec.noise,
        "modes": list(prep.spec.modes),
        "fit_spec": fit_spec.to_dict(),
        "chains": config.chains,
        "warmup": config.warmup,
        "draws": config.draws,
        "max_tree_depth": config.max_tree_depth,
        "batch_size": B,
        "seed": seed,
        "corrupt": corrupt,
    }


def _mean_from_site(spec, site, x, fam, centre) -> jnp.ndarray:
    """log L of the law at every run for a batch of site values (n_sims, ...) → (n_sims, n)."""
    lat = family_latents(spec, site)
    params = spec.law.to_params(lat, centre)
    p = {k: jnp.take(v, fam, axis=-1) for k, v in params.items()}
    return spec.law.log_mean(p, x)
