"""Simulation-based calibration (SBC) of the whole inference pipeline.

Talts et al. (2018), "Validating Bayesian Inference Algorithms with Simulation-Based Calibration": if parameters
θ* are drawn from the prior, data y from the model given θ*, and the posterior p(θ | y) is computed correctly, the
rank of θ* among L posterior draws is uniform on {0, ..., L} for every scalar quantity. A sampler that is biased,
too narrow or too wide, a potential that disagrees with the generative model, or a prior the fit does not use shows
up as a non-uniform rank distribution.

:func:`sbc` runs that loop for any registered law on a user-given design (the N, D, C, U and family layout of the
runs): prior draws and prior-predictive losses come from the NumPyro model of :mod:`scalebayes.model` (the reference
generative model), every simulated dataset is fitted by the compiled NUTS program of :mod:`scalebayes.sampler`
(which evaluates its own hand-written potential, so SBC also checks that the two agree), batched over datasets with
``batch_sampler`` (one compiled program, simulations vectorised), and the ranks are tested for uniformity. The
sampler is called directly rather than through :func:`scalebayes.fit_many` (the same engine) because ``fit_many``
resolves each dataset's priors from its own losses, while SBC needs the one prior the simulations were drawn from.

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
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
from jax.scipy import stats as jstats
from scipy import stats as sstats

from . import laws as _laws
from .data import ScalingData
from .errors import DataError, ModelError
from .fit import prepare
from .model import POOLED, family_latents, model
from .sampler import SamplerConfig, batch_sampler, to_numpy

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
        import arviz_stats  # noqa: F401  (registers the .azstats accessor)
        import xarray as xr

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
        from arviz_stats.ecdf_utils import ecdf_pit

        pit = self.pit()
        names = list(quantities or pit.columns)
        tests = self.tests()
        ncol = min(4, len(names))
        nrow = -(-len(names) // ncol)
        fig, axes = plt.subplots(nrow, ncol, figsize=(3.2 * ncol, 2.4 * nrow), squeeze=False, sharey=True)
        for ax, name in zip(axes.ravel(), names, strict=False):
            x, ecdf, lo, hi = ecdf_pit(pit[name].to_numpy(), ci, 2000, rng=np.random.default_rng(0))
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


def _loglik(spec, site: Mapping[str, jnp.ndarray], x, log_y, fam, mask, centre) -> jnp.ndarray:
    """Log-likelihood of the data for a batch of site values (leading axes ...) → (...)."""
    lat = family_latents(spec, site)
    params = spec.law.to_params(lat, centre)  # (..., F)
    p = {k: jnp.take(v, fam, axis=-1) for k, v in params.items()}  # (..., n)
    mu = spec.law.log_mean(p, {k: v for k, v in x.items()})
    sigma = site["sigma"]
    s = jnp.take(sigma, fam, axis=-1) if spec.noise == "family" else sigma[..., None]
    if spec.likelihood == "student_t":
        ll = jstats.t.logpdf(log_y, site["nu"][..., None], mu, s)
    else:
        ll = jstats.norm.logpdf(log_y, mu, s)
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
            if mode in POOLED:
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
    return out


def sbc(
    law: str | _laws.Law,
    design,
    n_sims: int = 200,
    seed: int = 0,
    *,
    pooling: str | None = None,
    likelihood: str = "student_t",
    noise: str = "shared",
    shared: tuple[str, ...] = (),
    free: tuple[str, ...] = (),
    priors: Mapping | None = None,
    loss_scale: float | None = None,
    chains: int = SBC_SETTINGS["chains"],
    warmup: int = SBC_SETTINGS["warmup"],
    draws: int = SBC_SETTINGS["draws"],
    n_rank: int = N_RANK,
    max_tree_depth: int = 8,
    batch_size: int = 50,
    corrupt: str | None = None,
) -> SBCResult:
    """Simulation-based calibration of ``law`` on ``design``.

    Args:
        law: a registered law name or :class:`~scalebayes.laws.Law`.
        design: the runs to simulate at: a :class:`~scalebayes.data.ScalingData` or a DataFrame with two of
            ``N`` (parameters), ``D`` (tokens), ``C`` (FLOP), optionally ``U`` (unique tokens), ``family`` and
            ``loss`` (nats; only its median is used, to set the priors' scale, as a real fit would).
        n_sims: number of simulated datasets (θ* ~ prior, y ~ model | θ*).
        seed: every random number derives from it.
        pooling, likelihood, noise, shared, free, priors: the model, as in :func:`scalebayes.fit`. Priors are
            resolved once from ``design`` and used both to simulate and to fit (SBC needs the same prior in both).
        loss_scale: typical loss in nats for the priors when ``design`` has no loss column (default 3.0).
        chains, warmup, draws, max_tree_depth: NUTS settings per simulated dataset.
        n_rank: L; the chains × draws kept draws are thinned evenly to L draws, ranks are in 0..L.
        batch_size: datasets per vectorised sampler call (one compiled program for all batches; the last batch is
            padded with repeats that are discarded).
        corrupt: a deliberately wrong pipeline, to show that the check has power: ``"noise"`` simulates losses
            with 1.5× the noise σ that the fitted model assumes (the sampler's noise scale is wrong);
            ``"prior"`` fits with the prior of the last exponent latent shifted by one prior s.d. (prior
            mismatch); ``"tempered"`` fits the likelihood raised to the power 1/2 (a tempered posterior, too wide).

    Returns:
        :class:`SBCResult` with ranks, the uniformity tests (``.tests()``, ``.passed()``) and ``.plot()``.
    """
    if corrupt is not None and corrupt not in CORRUPTIONS:
        raise ModelError(f"unknown corruption {corrupt!r}; choose one of {CORRUPTIONS} or None")
    if n_sims < 2:
        raise ModelError(f"n_sims must be >= 2, got {n_sims}")
    if n_rank > chains * draws:
        raise ModelError(f"n_rank={n_rank} exceeds the {chains * draws} kept draws (chains × draws)")
    law = _laws.get(law)
    data = _design_data(design, loss_scale)
    prep = prepare(
        data, law, likelihood=likelihood, priors=priors, pooling=pooling, shared=shared, free=free, noise=noise
    )
    spec, n = prep.spec, prep.n_pad
    x, _, fam, mask, hyper = prep.args
    families = tuple(data.families)
    pooling_name = pooling or ("partial" if len(families) > 1 else "complete")

    # --- simulate: θ* from the prior and y | θ* from the NumPyro model (the reference generative model)
    from numpyro.infer import Predictive

    key = jax.random.key(seed)
    k_sim, k_fit = jax.random.split(key)
    pred = Predictive(model, num_samples=int(n_sims))
    sims = pred(k_sim, spec, x, None, fam, mask, hyper)
    truth_site = {k: v for k, v in sims.items() if k != "obs"}
    log_y = sims["obs"]  # (n_sims, n)
    if corrupt == "noise":
        mu = _mean_from_site(spec, truth_site, x, fam, hyper["centre"])
        log_y = mu + 1.5 * (log_y - mu)
    log_y = jnp.where(mask[None, :] > 0, log_y, 0.0)

    fit_hyper = hyper
    fit_log_y, fit_x = log_y, x
    if corrupt == "prior":
        k = len(spec.latents) - 1
        fit_hyper = {**hyper, "loc": hyper["loc"].at[k].add(hyper["scale"][k])}
    config = SamplerConfig(chains=int(chains), warmup=int(warmup), draws=int(draws), max_tree_depth=int(max_tree_depth))
    run = batch_sampler(spec, n, config, "float64")
    # "tempered": the sampler's potential is Σ mask·loglik, so halving the mask fits p(θ)·p(y|θ)^(1/2), a posterior
    # tempered at 1/2 (too wide) — a sampler that dropped the likelihood's weight.
    fit_mask = mask * (0.5 if corrupt == "tempered" else 1.0)
    B = int(min(batch_size, n_sims))
    keys = jax.random.split(k_fit, n_sims)
    # thin: evenly spaced indices over the chains·draws pooled draws
    total = chains * draws
    idx = np.linspace(0, total - 1, n_rank).round().astype(int)

    rank_rows, truth_rows, sim_rows = [], [], []
    t0 = time.perf_counter()
    for start in range(0, n_sims, B):
        sl = np.arange(start, min(start + B, n_sims))
        pad_idx = np.concatenate([sl, np.full(B - len(sl), sl[-1])])
        bcast = lambda a: jnp.broadcast_to(a, (B, *jnp.shape(a)))  # noqa: E731
        args = (
            jax.tree.map(bcast, fit_x),
            fit_log_y[pad_idx],
            bcast(fam),
            bcast(fit_mask),
            jax.tree.map(bcast, fit_hyper),
        )
        draws_, stats = to_numpy(run(keys[pad_idx], *args))
        draws_ = {k: v[: len(sl)] for k, v in draws_.items()}
        stats = {k: v[: len(sl)] for k, v in stats.items()}
        # posterior draws (b, chains, draws, ...) -> (b, chains·draws, ...)
        flat = {k: v.reshape(v.shape[0], total, *v.shape[3:]) for k, v in draws_.items()}
        q_post = _quantities(spec, flat, families)
        q_true = _quantities(spec, {k: np.asarray(v)[sl] for k, v in truth_site.items()}, families)
        ll_post = np.asarray(
            jax.vmap(lambda s, y: _loglik(spec, s, x, y, fam, mask, hyper["centre"]))(
                {k: jnp.asarray(v) for k, v in flat.items()}, log_y[sl]
            )
        )
        truth_b = {k: jnp.asarray(np.asarray(v)[sl]) for k, v in truth_site.items()}
        ll_true = np.asarray(_loglik(spec, truth_b, x, log_y[sl], fam, mask, hyper["centre"]))
        q_post["loglik"], q_true["loglik"] = ll_post, ll_true
        for b in range(len(sl)):
            rank_rows.append({k: int((v[b, idx] < q_true[k][b]).sum()) for k, v in q_post.items()})
            truth_rows.append({k: float(q_true[k][b]) for k in q_post})
            chains_q = {k: v[b].reshape(chains, draws) for k, v in q_post.items() if k != "loglik"}
            sim_rows.append(
                {
                    "divergences": int(stats["diverging"][b].sum()),
                    "mean_steps": float(stats["num_steps"][b].mean()),
                    "max_r_hat": _max_rhat(chains_q),
                }
            )
    seconds = time.perf_counter() - t0
    cfg = {
        "n_runs": len(data),
        "n_pad": n,
        "families": len(families),
        "likelihood": likelihood,
        "noise": spec.noise,
        "modes": list(spec.modes),
        "chains": chains,
        "warmup": warmup,
        "draws": draws,
        "max_tree_depth": max_tree_depth,
        "batch_size": B,
        "seed": seed,
        "corrupt": corrupt,
    }
    return SBCResult(
        law=law.name,
        pooling=pooling_name,
        ranks=pd.DataFrame(rank_rows),
        truths=pd.DataFrame(truth_rows),
        sims=pd.DataFrame(sim_rows),
        n_rank=n_rank,
        config=cfg,
        seconds=seconds,
    )


def _mean_from_site(spec, site, x, fam, centre) -> jnp.ndarray:
    """log L of the law at every run for a batch of site values (n_sims, ...) → (n_sims, n)."""
    lat = family_latents(spec, site)
    params = spec.law.to_params(lat, centre)
    p = {k: jnp.take(v, fam, axis=-1) for k, v in params.items()}
    return spec.law.log_mean(p, x)


def _max_rhat(chains_q: Mapping[str, np.ndarray]) -> float:
    """Largest split-R-hat (Gelman et al. 2013, not rank-normalised: cheap) over quantities, each (chains, draws)."""
    worst = 1.0
    for v in chains_q.values():
        c, d = v.shape
        h = d // 2
        if h < 2:
            return float("nan")
        s = np.concatenate([v[:, :h], v[:, h : 2 * h]], axis=0)  # (2c, h)
        w = s.var(axis=1, ddof=1).mean()
        b = h * s.mean(axis=1).var(ddof=1)
        if w <= 0:
            continue
        r = np.sqrt(((h - 1) / h * w + b / h) / w)
        worst = max(worst, float(r))
    return worst
