"""The cut form of the noise trend: a new run's noise refitted to the law's residuals, the law left as fitted.

With ``noise_trend="tokens_per_parameter_cut"`` the law is fitted with one noise scale, exactly as by default, and
then the run noise that predictions add for *new* runs is refitted to the fit's residuals
r_i = log L_i − (posterior median of log L_law at run i) (:func:`scalebayes.misfit.fitted_log_loss`):

    r_i ~ StudentT(ν, s, σ_f·exp(ζ·(log(D_i/N_i) − c)))  with weight w_i,

c the fitted runs' mean log tokens per parameter (the same centre as the joint trend's), w_i the checkpoint weights
(:mod:`scalebayes.checkpoints`), and the fit's own priors on σ (per family with ``noise="family"``) and ν
(Normal, ν = ∞, with ``likelihood="normal"``) and ζ ~ Normal(0, ``priors.sigma_trend``), and s a free location of
the residuals, s ~ Normal(:data:`SHIFT_PRIOR`). The package's own NUTS samples it, as the fit of a constant "law"
(:data:`SHIFT`) with the joint noise trend, with the law's fit's chains, warm-up and draws: each posterior draw of
the law gets one draw of the noise.

Why a cut (Plummer 2015, "Cuts in Bayesian graphical models"): the noise model learns from the law's residuals but
does not feed back into the law. The joint form (``"tokens_per_parameter"``) also weighs the runs by the trend
(under-trained runs, which scatter more, count less), which moves the law and its extrapolations; on the
extrapolation suite that raised the errors of three of six datasets (benchmarks/extrapolation/noise_trend/). The cut
keeps the one-scale fit's point predictions exactly and changes only how wide a new run's interval is at its own
tokens per parameter. What it leaves out: the residuals are taken about the posterior-median law, so the noise fit
does not see the law's own uncertainty (that stays in the law's draws), and the pointwise log-likelihood (LOO) stays
the law's own, fitted, noise.

:func:`scalebayes.fitting.refit_noise` runs the refit from these pieces for one fit, and
:func:`scalebayes.batch.fit_many` for every dataset of a batch in one batched pass. The draws live in the posterior's
DataTree group ``run_noise`` (``sigma``, ``sigma_trend``, ``nu`` with dims chain, draw[, family], and the refit's
``diverging``/``n_steps``), saved and loaded with it; the refit's diagnostics are part of
:attr:`scalebayes.posterior.Posterior.diagnostics`.
"""

from __future__ import annotations

import dataclasses
import warnings

import numpy as np
import pandas as pd
import xarray as xr

from . import laws as _laws
from .checkpoints import weights_from
from .data import ScalingData
from .diagnostics import Diagnostics, merged
from .diagnostics import compute as compute_diagnostics
from .sampler import SamplerConfig

#: The DataTree group holding the refitted noise's draws.
GROUP = "run_noise"
#: How the refit's rows and failures are named in a fit's diagnostics.
LABEL = "run-noise refit"
#: Folded into a fit's key (``fit``) or a dataset's stream (``fit_many``) for its noise refit's random numbers.
STREAM = 21
#: Prior on the residuals' own location (nats of log loss): they are residuals about the posterior-median law, so
#: their centre is near 0; a free location keeps a slightly off-centre median from inflating σ.
SHIFT_PRIOR = (0.0, 0.05)


def _shift_log_mean(p, x):
    return p["shift"] + 0.0 * x["N"]  # broadcast to the runs


#: The refit's "law": residuals scatter about a constant. It reads N and D only for the noise trend. Not
#: registered: it is no scaling law (its compiled programs are stored like any fit's, :mod:`scalebayes.sampler.stored`).
SHIFT = _laws.Law(
    name="residual_shift",
    params=("shift",),
    inputs=("N", "D"),
    log_mean=_shift_log_mean,
    priors={"z_shift": SHIFT_PRIOR},
    latents=("z_shift",),  # not the parameter's own name: the DataTree's groups share their variables' dims
    latent_of={"shift": "z_shift"},
    to_params=lambda z, centre: {"shift": z["z_shift"]},
    from_params=lambda p, centre: {"z_shift": p["shift"]},
    constraints={"shift": "real"},
)


def residual_data(data: ScalingData, fitted: np.ndarray) -> ScalingData:
    """The fitted runs ``data`` with loss replaced by exp(residual), so that the package's own fit of :data:`SHIFT`
    samples the refit: log of it is r_i = log L_i − ``fitted``_i, ``fitted`` (n,) the posterior median of
    log L_law at each run (:func:`scalebayes.misfit.fitted_log_loss`)."""
    frame = data.frame
    df = pd.DataFrame(
        {
            "N": frame["N"].to_numpy(float),
            "D": frame["D"].to_numpy(float),
            "loss": np.exp(np.log(data.loss) - np.asarray(fitted, float)),
            "family": np.asarray(frame["family"], dtype=str),
        }
    )
    with warnings.catch_warnings():  # the runs were validated when first fitted
        warnings.simplefilter("ignore")
        return ScalingData.from_frame(df, N="N", D="D", loss="loss", family="family", name=f"{data.name}-residuals")


def options(spec, priors) -> dict:
    """The refit's FitSpec options for a law fit of model ``spec`` (:class:`~scalebayes.model.Spec`) and ``priors``:
    the fit's likelihood, noise (shared or per family) and noise priors, one location for all families, and the
    noise trend."""
    return {
        "likelihood": spec.likelihood,
        "pooling": "complete",
        "noise": spec.noise,
        "noise_trend": "tokens_per_parameter",
        "priors": {"sigma": priors.sigma, "nu": priors.nu, "sigma_trend": priors.sigma_trend},
    }


def weights(data: ScalingData, record: dict | None) -> np.ndarray | None:
    """The law's fit's checkpoint weights (n,) from its ``record`` (its own ρ̂, not one re-estimated from the
    residuals), or None without run labels."""
    return weights_from(data.frame["run"].astype(str).to_numpy(), record) if record else None


def config(post) -> SamplerConfig:
    """The law's fit's sampler settings, with as many draws per chain as it kept (more than asked when its
    sampling went on), so that the law's and the noise's draws pair up."""
    return dataclasses.replace(post.sampler_config, draws=int(post.idata["posterior"].sizes["draw"]))


def group(res, seed: int) -> xr.Dataset:
    """The group ``run_noise`` from the refit's Posterior ``res``: ``sigma`` (chain, draw[, family]),
    ``sigma_trend``, ``nu`` and the residuals' ``shift`` (chain, draw), with its ``diverging`` and ``n_steps``."""
    names = [v for v in ("sigma", "sigma_trend", "nu", "shift") if v in res.idata["posterior"].data_vars]
    stats = res.idata["sample_stats"].to_dataset()
    ds = res.idata["posterior"].to_dataset()[names].assign(diverging=stats["diverging"], n_steps=stats["n_steps"])
    depth = int(stats.attrs.get("max_tree_depth", res.sampler_config.max_tree_depth))
    return ds.assign_attrs(seed=int(seed), n_runs=len(res.data), max_tree_depth=depth)


def attached(idata, ds: xr.Dataset):
    """A shallow copy of the DataTree ``idata`` with the refit ``ds`` as its group ``run_noise``."""
    out = idata.copy(deep=False)
    out[GROUP] = ds
    return out


def diagnostics(ds: xr.Dataset) -> Diagnostics:
    """R-hat, ESS and divergences of the refit's draws (the group ``run_noise``)."""
    params = ds[[v for v in ("sigma", "sigma_trend", "nu", "shift") if v in ds]]
    stats = ds[["diverging", "n_steps"]].assign_attrs(max_tree_depth=ds.attrs.get("max_tree_depth"))
    return compute_diagnostics(params, stats)


def with_diagnostics(main: Diagnostics, ds: xr.Dataset | None) -> Diagnostics:
    """The law's diagnostics ``main`` joined with the refit's (when there is one): a failure of either fails."""
    return main if ds is None else merged(main, diagnostics(ds), LABEL)
