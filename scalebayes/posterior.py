"""``Posterior``: the result of a fit, with summaries, diagnostics, prediction and save/load.

Everything numeric lives in ``.idata`` (an ArviZ DataTree); this class reads from it, so a loaded posterior
behaves exactly like a fresh one.
"""

from __future__ import annotations

import dataclasses
import functools
import json
from collections.abc import Sequence
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
import xarray as xr

from . import laws as _laws
from . import plan as _plan
from . import predictive as _predictive
from .data import ScalingData
from .diagnostics import Diagnostics
from .diagnostics import compute as compute_diagnostics
from .discrepancy import Discrepancy, stored
from .errors import DataError, ModelError, UnknownNameError
from .identification import contraction as contraction_table
from .misfit import Misfit
from .misfit import check as misfit_check
from .model import RunNoise, Spec, tpp_centre, tpp_offset
from .noise_refit import GROUP as NOISE_GROUP
from .noise_refit import with_diagnostics
from .pointwise import pointwise_groups
from .precision import ensure_float64
from .predict import new_family_latents
from .priors import Priors
from .sampler import SamplerConfig
from .spec import FitSpec
from .store import atomic_path, require_zarr

DEFAULT_QUANTILES = (0.05, 0.5, 0.95)


def _new_family_key(seed: int):
    """The random stream of a new family's draws (its latents; its noise scale's pick from ``fold_in(.., 1)``)."""
    return jax.random.fold_in(jax.random.key(seed), 7)


def _stack(da: xr.DataArray) -> np.ndarray:
    """(chain, draw, ...) → (chain·draw, ...) as numpy."""
    v = np.asarray(da.transpose("chain", "draw", ...).values)
    return v.reshape(-1, *v.shape[2:])


class Posterior:
    """Posterior of a scaling-law fit.

    Attributes:
        idata: ArviZ DataTree with groups posterior (published parameters; dims chain, draw[, family]),
            latent_posterior (sampler coordinates per family), sample_stats, observed_data (log_loss, dims obs),
            constant_data (N, D, C, family per obs) and, unless skipped, log_likelihood and posterior_predictive.
        data: the :class:`~scalebayes.data.ScalingData` that was fitted.
    """

    def __init__(self, idata, data: ScalingData | None = None):
        self.idata = idata
        self.meta = json.loads(idata.attrs["scalebayes"])
        self.law = _laws.get(self.meta["law"])
        self.spec = Spec(
            law=self.law,
            modes=tuple(self.meta["modes"]),
            n_families=int(self.meta["n_families"]),
            likelihood=self.meta["likelihood"],
            noise=self.meta["noise"],
            noise_trend=bool(self.meta.get("noise_trend", False)),  # files written before the trend have none
        )
        self.families: tuple[str, ...] = tuple(self.meta["families"])
        self.centre: dict[str, float] = {k: float(v) for k, v in self.meta["centre"].items()}
        self.priors = Priors.from_dict(self.meta["priors"])
        self.data = data if data is not None else _data_from_tree(idata, self.meta)

    # ------------------------------------------------------------------ basics
    def __repr__(self) -> str:
        return (
            f"Posterior({self.law.name!r} on {self.meta['data_name']!r}: {self.n_samples} draws, "
            f"{len(self.families)} famil{'y' if len(self.families) == 1 else 'ies'}; {self.diagnostics})"
        )

    @property
    def posterior(self) -> xr.Dataset:
        return self.idata["posterior"].to_dataset()

    @property
    def n_samples(self) -> int:
        p = self.idata["posterior"]
        return int(p.sizes["chain"] * p.sizes["draw"])

    @functools.cached_property
    def misfit(self) -> Misfit:
        """Residual trends against N, D, C and family, residuals against the law's pointwise posterior median
        (:mod:`scalebayes.misfit`)."""
        return misfit_check(self)

    @functools.cached_property
    def contraction(self) -> pd.DataFrame:
        """Per latent and family, how much the runs narrowed the prior (1 − posterior/prior variance) and whether
        the prior still sets it (:mod:`scalebayes.identification`)."""
        return contraction_table(self)

    @functools.cached_property
    def diagnostics(self) -> Diagnostics:
        """R-hat, bulk/tail ESS over every posterior quantity, and divergences (see :mod:`scalebayes.diagnostics`)."""
        main = compute_diagnostics(self.posterior, self.idata["sample_stats"].to_dataset())
        return with_diagnostics(main, self._refitted_noise)

    @functools.cached_property
    def _refitted_noise(self) -> xr.Dataset | None:
        """The run noise refitted after the fit (:mod:`scalebayes.noise_refit`), or None."""
        return self.idata[NOISE_GROUP].to_dataset() if NOISE_GROUP in self.idata.children else None

    @property
    def noise_trend(self) -> bool:
        """Whether a new run's noise scale changes with its tokens per parameter: fitted with the law
        (``noise_trend="tokens_per_parameter"``) or refitted to its residuals (``"tokens_per_parameter_cut"``)."""
        return self.spec.noise_trend or self._refitted_noise is not None

    @property
    def ok(self) -> bool:
        """True when the sampler diagnostics passed."""
        return self.diagnostics.ok

    def _family_pos(self, family: str) -> int:
        if family not in self.families:
            raise UnknownNameError(f"unknown family {family!r}; fitted families: {self.families}")
        return self.families.index(family)

    def draws(self, name: str, family: str | None = None) -> np.ndarray:
        """Flattened draws (chain·draw,) of a posterior variable (for one family when it varies by family)."""
        post = self.idata["posterior"]
        if name not in post.data_vars:
            raise UnknownNameError(f"no posterior variable {name!r}; have {list(post.data_vars)}")
        da = post[name]
        if "family" in da.dims:
            if family is None:
                if len(self.families) == 1:
                    family = self.families[0]
                else:
                    raise ModelError(f"{name!r} varies by family: pass family= one of {self.families}")
            da = da.sel(family=family)
        return _stack(da)

    # ------------------------------------------------------------------ summary
    def summary(self, var_names: Sequence[str] | None = None, quantiles=DEFAULT_QUANTILES) -> pd.DataFrame:
        """Posterior summary: mean, sd, quantile columns (``5%``, ``50%``, ``95%``), R-hat, bulk and tail ESS.

        Rows are the published parameters (E, A, B, alpha, beta for Chinchilla), derived quantities (a, b),
        noise (sigma, nu) and, under partial pooling, population hyper-parameters; ``name[family]`` per family.
        """
        post = self.posterior
        if var_names is None:  # a fixed order, whatever order a storage backend returns variables in
            first = [n for n in (*self.law.params, *self.law.derived, "sigma", "nu") if n in post.data_vars]
            names = first + sorted(n for n in post.data_vars if n not in first)
        else:
            names = list(var_names)
        diag = self.diagnostics.table
        rows = []
        for name in names:
            if name not in post.data_vars:
                raise UnknownNameError(f"no posterior variable {name!r}; have {list(post.data_vars)}")
            da = post[name]
            extra = [d for d in da.dims if d not in ("chain", "draw")]
            if extra:
                stacked = da.stack(_e=extra).transpose("chain", "draw", "_e")
                vals = stacked.values.reshape(-1, stacked.sizes["_e"])
                labels = [
                    f"{name}[{v if not isinstance(v, tuple) else ','.join(map(str, v))}]" for v in stacked["_e"].values
                ]
            else:
                vals = da.transpose("chain", "draw").values.reshape(-1, 1)
                labels = [name]
            for j, lab in enumerate(labels):
                v = vals[:, j]
                row = {"name": lab, "mean": v.mean(), "sd": v.std(ddof=1)}
                for q, qv in zip(quantiles, np.quantile(v, quantiles), strict=True):
                    row[f"{100 * q:g}%"] = qv
                if lab in diag.index:
                    row.update(diag.loc[lab].to_dict())
                rows.append(row)
        return pd.DataFrame(rows).set_index("name")

    # ------------------------------------------------------------------ prediction
    def param_draws(self, family: str | None = None, *, seed: int = 0) -> dict[str, jnp.ndarray]:
        """Published parameters, each (S,), for a fitted family, or for a *new* family drawn from the population
        when ``family`` is None (with several families) or a name not seen in fitting."""
        lat, _ = self._latent_draws(family, seed=seed)
        return self.law.to_params(lat, {k: jnp.asarray(v) for k, v in self.centre.items()})

    def param_medians(self, family: str | None = None) -> dict[str, float]:
        """Posterior medians of the published parameters of ``family`` (as :meth:`param_draws`)."""
        return {k: float(np.median(v)) for k, v in self.param_draws(family).items()}

    def resolve_family(self, family: str | None) -> str | None:
        """The fitted family a question is about: ``family`` itself when fitted; for None, the only family of a
        one-family fit, else None (a *new* family drawn from the population). Any other name raises
        :class:`~scalebayes.errors.UnknownNameError` listing the fitted families: a misspelling must not silently
        predict a new family."""
        if family is None:
            return self.families[0] if len(self.families) == 1 else None
        if str(family) not in self.families:
            raise UnknownNameError(
                f"unknown family {family!r}; fitted families: {list(self.families)} (family=None asks for a new "
                "family drawn from the population)"
            )
        return str(family)

    def run_noise(self, family: str | None = None, *, seed: int = 0) -> RunNoise:
        """The run-to-run noise of log loss a *new* run of ``family`` (as in :meth:`resolve_family`; None with
        several families: a new family) would have, per posterior draw, as predictions add it: Student-t(ν) of
        scale σ·exp(ζ·(log(D/N) − c)) (:class:`~scalebayes.model.RunNoise`; ``sigma``, ``nu``, ``trend`` each (S,),
        σ in nats of log loss at the fitted runs' mean log tokens per parameter c = ``centre``). With the default
        cut noise trend this is the noise refitted to the law's residuals (:mod:`scalebayes.noise_refit`), not the
        fit's own σ in :attr:`posterior`. ``RunNoise.scale(log N, log D)`` gives its scale at any runs."""
        return self._noise_draws(self.resolve_family(family), seed)

    def _noise_draws(self, family: str | None, seed: int) -> RunNoise:
        """:meth:`run_noise` for a resolved ``family`` (None: a new family, its σ that of a fitted family picked at
        random per draw, from the new family's stream, :func:`_new_family_key`)."""
        post = self.idata["posterior"]
        noise = self._refitted_noise if self._refitted_noise is not None else post  # a refitted noise is for new runs
        sigma = _stack(noise["sigma"])
        nu = _stack(noise["nu"]) if "nu" in noise.data_vars else np.full(self.n_samples, np.inf)
        zeta = _stack(noise["sigma_trend"]) if "sigma_trend" in noise.data_vars else np.zeros(self.n_samples)
        c, span = (tpp_centre(self.centre), self._tpp_span()) if self.noise_trend else (0.0, (-np.inf, np.inf))
        if sigma.ndim == 2 and family is not None:
            sigma = sigma[:, self.families.index(family)]
        elif sigma.ndim == 2:  # a new family's noise: that of a fitted family picked at random per draw
            key = jax.random.fold_in(_new_family_key(seed), 1)
            pick = np.asarray(jax.random.randint(key, (sigma.shape[0],), 0, sigma.shape[1]))
            sigma = sigma[np.arange(sigma.shape[0]), pick]
        return RunNoise(jnp.asarray(sigma), jnp.asarray(nu), jnp.asarray(zeta), c, span)

    def _tpp_span(self) -> tuple[float, float]:
        """The fitted runs' (min, max) of log(D/N) − c, c = :func:`~scalebayes.model.tpp_centre`: where the noise
        trend was seen."""
        t = np.asarray(tpp_offset(self.data.log_inputs(), self.centre))
        return float(t.min()), float(t.max())

    def _latent_draws(self, family: str | None, *, seed: int = 0) -> tuple[dict, RunNoise]:
        """Latents (S,) per latent name and :meth:`run_noise` for one family or a new one (``family`` as in
        :meth:`resolve_family`)."""
        lp = self.idata["latent_posterior"]
        latents = {z: _stack(lp[z]) for z in self.law.latents}  # (S, F)
        family = self.resolve_family(family)
        if family is not None:
            j = self.families.index(family)
            lat = {z: jnp.asarray(v[:, j]) for z, v in latents.items()}
        else:
            post = self.idata["posterior"]
            hyper = {n: _stack(post[n]) for n in post.data_vars if n.startswith(("mu_", "tau_"))}
            lat = new_family_latents(
                self.spec,
                latents,
                hyper,
                self.priors.loc(self.law.latents),
                self.priors.scale(self.law.latents),
                _new_family_key(seed),
            )
        return lat, self._noise_draws(family, seed)

    # ------------------------------------------------------------------ calibration
    @property
    def discrepancy(self) -> Discrepancy | None:
        """The model discrepancy learned by :func:`scalebayes.calibrate` and stored with this posterior, or None."""
        return stored(self.idata)

    @property
    def calibrated(self) -> bool:
        """True when a discrepancy is stored: predictions and plans then use the calibrated predictive."""
        return self.discrepancy is not None

    def predict(
        self,
        N=None,
        D=None,
        *,
        C=None,
        U=None,
        family: str | None = None,
        quantiles: Sequence[float] = DEFAULT_QUANTILES,
        include_noise: bool = True,
        seed: int = 0,
        extrapolation: str | Discrepancy = "auto",
    ) -> pd.DataFrame:
        """Posterior (predictive) loss at query points, one row per point.

        Give two of N (parameters), D (tokens), C (FLOP; C = 6·N·D; all three only if they agree), scalars or arrays
        that broadcast, plus U (unique tokens) for laws that need it. ``include_noise=False`` gives the credible band
        of the law itself; ``True`` the posterior predictive for a new run (law + run-to-run noise). ``family``
        picks a fitted family; None predicts for a new family drawn from the population (or the only family of a
        one-family fit); an unknown name raises :class:`~scalebayes.errors.UnknownNameError`.

        ``extrapolation``: ``"auto"`` (default) adds the learned model discrepancy (:mod:`scalebayes.discrepancy`),
        whose scale grows with distance beyond the fitted runs, when the posterior is calibrated
        (:func:`scalebayes.calibrate`), and nothing otherwise; ``"discrepancy"`` requires it
        (:class:`~scalebayes.errors.NotCalibratedError` otherwise: predicting never fits); ``"none"`` leaves it out;
        a :class:`~scalebayes.discrepancy.Discrepancy` is used as given.

        Returns:
            DataFrame with the inputs, ``mean`` and one ``q<p>`` column per quantile, in nats. ``mean`` is the mean
            over draws of the law's loss with the discrepancy and *without* run noise (a new run's mean loss is
            infinite under Student-t noise on log loss; see :meth:`scalebayes.predictive.LogPredictive.mean`).
            ``attrs["predictive"]`` says which predictive is shown: ``"calibrated"`` or ``"parameters only"``.
        """
        return self._forecast(N, D, C, U, family, quantiles, include_noise, seed, extrapolation)[0]

    def _forecast(self, N, D, C, U, family, quantiles, include_noise, seed, extrapolation):
        """The one body of :meth:`predict` and of forecasts built on its loss draws (``TwoStep.predict``): the frame
        :meth:`predict` returns, and the loss draws (S, P) in nats behind it."""
        pred, q, disc = self._predictive(N, D, C, U, family, seed, extrapolation)
        out, values = _predictive.summary(pred, q, quantiles=quantiles, include_noise=include_noise, seed=seed)
        out.attrs.update(predictive=_predictive.label(disc), include_noise=bool(include_noise), family=family)
        return out, values

    def predictive_draws(
        self,
        N=None,
        D=None,
        *,
        C=None,
        U=None,
        family: str | None = None,
        include_noise: bool = True,
        seed: int = 0,
        extrapolation: str | Discrepancy = "auto",
    ) -> np.ndarray:
        """Loss draws (S, P) in nats at the query points (see :meth:`predict`); jointly meaningful across queries
        (one discrepancy draw per posterior draw)."""
        pred, _, _ = self._predictive(N, D, C, U, family, seed, extrapolation)
        return np.exp(pred.draws(seed, include_noise=include_noise))

    def _predictive(self, N, D, C, U, family, seed, extrapolation):
        """The one body of :meth:`predict` and :meth:`predictive_draws`: (LogPredictive, query frame, discrepancy)."""
        q = _predictive.query_frame(self.law, N, D, C, U)
        disc = _predictive.resolve(self.discrepancy, extrapolation)
        return _predictive.for_query(self, q, family=family, seed=seed, disc=disc), q, disc

    # ------------------------------------------------------------------ pointwise groups
    def pointwise(self) -> Posterior:
        """Add log_likelihood and posterior_predictive groups if the fit skipped them; returns self."""
        for name, ds in pointwise_groups(self.idata, seed=int(self.meta.get("seed", 0))).items():
            self.idata[name] = ds
        return self

    # ------------------------------------------------------------------ the fit's settings (FitSpec, SamplerConfig)
    @property
    def fit_spec(self) -> FitSpec:
        """The :class:`~scalebayes.spec.FitSpec` this posterior was fitted with, rebuilt exactly from the stored
        JSON, so ``fit(data, spec=post.fit_spec)`` refits the same model (same seed: same draws)."""
        if "fit_spec" not in self.meta:
            raise ModelError("this posterior was saved before scalebayes stored its FitSpec; refit it to get one")
        return FitSpec.from_dict(self.meta["fit_spec"])

    @property
    def sampler_config(self) -> SamplerConfig:
        """The NUTS settings of the fit (:class:`~scalebayes.sampler.SamplerConfig`)."""
        known = {f.name for f in dataclasses.fields(SamplerConfig)}
        return SamplerConfig(**{k: v for k, v in self.meta["sampler"].items() if k in known})

    # ------------------------------------------------------------------ persistence
    def save(self, path: str | Path) -> Path:
        """Write the whole posterior (every group and the fit's metadata) to netCDF (``.nc``) or zarr (``.zarr``).

        The file is written under a temporary name beside ``path`` and renamed into place when complete
        (:func:`scalebayes.store.atomic_path`): a crash or Ctrl-C part-way leaves an existing file at ``path`` as
        it was. Saving over the file this posterior was loaded from works (:func:`load` keeps no file open).
        """
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        zarr = path.suffix == ".zarr"
        if zarr:
            require_zarr()
        with atomic_path(path) as tmp:
            if zarr:
                self.idata.to_zarr(tmp, mode="w")
            else:
                self.idata.to_netcdf(tmp, engine="h5netcdf")
        return path

    def to_frame(self, family: str | None = None) -> pd.DataFrame:
        """Draws of the published parameters (and derived a, b) for one family as a DataFrame (S rows)."""
        names = [*self.law.params, *self.law.derived]
        return pd.DataFrame({n: self.draws(n, family) for n in names})

    # ---- planning (scalebayes.plan)
    def plan(
        self,
        C,
        *,
        family: str | None = None,
        quantiles: Sequence[float] = DEFAULT_QUANTILES,
        objective: str = "loss",
        inference_tokens: float = 0.0,
        unique_tokens: float | None = None,
        method: str = "auto",
        seed: int = 0,
        extrapolation: str | Discrepancy = "auto",
    ) -> pd.DataFrame:
        """Compute-optimal allocation with posterior uncertainty, one row per budget.

        For every posterior draw the law's mean loss is minimised along the iso-compute line 6·N·D = C (closed form
        for the Chinchilla law, N* = G·(C/6)^a and D* = G^-1·(C/6)^b with G = (αA/(βB))^(1/(α+β)); a vectorised
        1-D numerical minimisation for any other law with inputs N and D), and the quantiles are taken over draws.
        Run-to-run noise is not included: it does not move the optimum, and L* is the law's own mean loss; on a
        calibrated posterior (``extrapolation``, as in :meth:`predict`) L* also carries the model discrepancy at
        each draw's plan, the law's error beyond the fitted runs.

        Args:
            C: budget(s) in FLOP, scalar or (B,).
            family: a fitted family's name, or None (with several families) for a *new* family drawn from the
                population, whose plan is wider; an unknown name raises :class:`~scalebayes.errors.UnknownNameError`.
            quantiles: quantile levels of the output columns.
            objective: how ``C`` is read when ``inference_tokens`` > 0 (identical plans when it is 0).
                ``"loss"``: C is a *training* budget that sets a target: for each draw, the loss ℓ its training-only
                optimum reaches at C; the plan is the (N, D) reaching ℓ with the least lifetime compute
                6·N·D + 2·N·T (Sardana et al. 2024, "Beyond Chinchilla-optimal"), so C_train > C and
                C_total = C_train + 2·N·T are reported. ``"budget"``: C is the *total* lifetime budget
                (training + inference); the plan minimises the loss within it.
            inference_tokens: T, tokens to be processed at inference over the model's lifetime (2·N FLOP each).
            unique_tokens: U, the unique training data available. Laws with a unique-token input (the
                data-constrained law) are evaluated at U and may repeat data (D > U, ``epochs`` = D/U reported); for
                every other law D ≤ U is imposed as a constraint.
            method: ``"auto"`` (closed form where it exists), ``"closed_form"`` or ``"numerical"``.
            seed: seed of the new-family draws.

        Returns:
            DataFrame with column ``C`` and, per quantile q, ``N_q<q>`` (parameters), ``D_q<q>`` (tokens),
            ``D_per_N_q<q>`` (tokens per parameter), ``L_q<q>`` (loss reached, nats), ``C_train_q<q>`` (6ND, FLOP),
            ``C_total_q<q>`` (6ND + 2NT, FLOP) and, with ``unique_tokens``, ``epochs_q<q>``. Each column's
            quantiles are marginal (the 5% N and the 5% D come from different draws). Per-draw arrays:
            :func:`scalebayes.plan.plan_draws`. ``attrs["predictive"]``: ``"calibrated"`` or ``"parameters only"``.
        """
        return _plan.plan(
            self,
            C,
            family=family,
            quantiles=quantiles,
            objective=objective,
            inference_tokens=inference_tokens,
            unique_tokens=unique_tokens,
            method=method,
            seed=seed,
            extrapolation=extrapolation,
        )

    def compute_for_loss(
        self,
        target,
        prob: float = 0.9,
        *,
        family: str | None = None,
        include_noise: bool = True,
        unique_tokens: float | None = None,
        quantiles: Sequence[float] = DEFAULT_QUANTILES,
        seed: int = 0,
        extrapolation: str | Discrepancy = "auto",
    ) -> pd.DataFrame:
        """The least training compute, and one (N, D) spending it, with P(loss ≤ target) ≥ ``prob``.

        A decision, not a per-draw optimum: one allocation is chosen, and its probability is taken over the
        predictive. For each tokens-per-parameter ratio D/N the smallest C whose (N, D) puts a fraction ``prob`` of
        the draws at or below ``target`` is found (each draw's crossing solved along the ray), and the ratio
        minimising it is kept. :meth:`prob_loss_below` at the returned (N, D) gives back ``prob`` (up to one draw).

        The probability is that of one new run's loss, as in :meth:`prob_loss_below`: law + run-to-run noise
        (``include_noise=False`` asks about the law's mean loss only) + the model discrepancy on a calibrated
        posterior (``extrapolation`` as in :meth:`predict`).

        Args:
            target: loss(es) in nats, scalar or (P,).
            prob: required probability, in (0, 1).
            family, seed: as in :meth:`plan`.
            unique_tokens: as in :meth:`plan` (a constraint D ≤ U for laws without a unique-token input).
            quantiles: levels of the loss interval reported at the chosen allocation.

        Returns:
            DataFrame, one row per target: ``target``, ``prob``, ``C`` (FLOP; inf when unreachable, e.g. below the
            irreducible loss), ``N`` (parameters), ``D`` (tokens), ``D_per_N`` and ``loss_q<p>`` (the predictive's
            loss quantiles at that (N, D), nats). ``attrs["predictive"]``: ``"calibrated"`` or ``"parameters only"``.
        """
        return _plan.compute_for_loss(
            self,
            target,
            prob,
            family=family,
            include_noise=include_noise,
            unique_tokens=unique_tokens,
            quantiles=quantiles,
            seed=seed,
            extrapolation=extrapolation,
        )

    def prob_loss_below(
        self,
        target,
        N,
        D,
        *,
        family: str | None = None,
        include_noise: bool = True,
        unique_tokens: float | None = None,
        seed: int = 0,
        extrapolation: str | Discrepancy = "auto",
    ):
        """Posterior predictive probability that training N parameters on D tokens reaches a loss ≤ ``target`` nats.

        The fraction of draws of one new run's loss at (N, D) at or below target: the law + run-to-run noise by
        default (a real run has noise: it is what the user will observe), the law's mean loss alone with
        ``include_noise=False``; on a calibrated posterior the model discrepancy is included too (``extrapolation``
        as in :meth:`predict`). The draws are those of :meth:`predict` with the same ``seed``. ``target``, ``N``,
        ``D`` broadcast; returns a float for scalars, else an array (P,). ``unique_tokens`` is the U input of laws
        that take one (ignored by other laws).
        """
        return _plan.prob_loss_below(
            self,
            target,
            N,
            D,
            family=family,
            include_noise=include_noise,
            unique_tokens=unique_tokens,
            seed=seed,
            extrapolation=extrapolation,
        )

    def allocation_regret(
        self,
        C=None,
        N=None,
        D=None,
        *,
        family: str | None = None,
        unique_tokens: float | None = None,
        method: str = "auto",
        seed: int = 0,
    ) -> np.ndarray:
        """Compute-equivalent regret of an allocation, per posterior draw.

        Give two of C (FLOP), N (parameters), D (tokens) (C = 6·N·D), scalars or arrays that broadcast. For each
        draw s, the allocation reaches the law's mean loss ℓ_s = L_s(N, D); the compute-optimal plan reaches ℓ_s
        with C_opt,s(ℓ_s) ≤ 6·N·D. The regret is ``6·N·D / C_opt,s(ℓ_s) - 1`` ≥ 0: the fraction of extra compute
        the allocation spends over the optimum for the same loss (0.01 = 1% wasted). E.g.
        ``(post.allocation_regret(N=70e9, D=1.4e12) <= 0.01).mean()`` is the posterior probability that Hoffmann et
        al.'s Chinchilla is within 1% of compute-optimal. Noise-free by construction (it compares the law's mean
        losses). Returns (S,) for scalar inputs, else (S, P).
        """
        return _plan.allocation_regret(
            self, C, N, D, family=family, unique_tokens=unique_tokens, method=method, seed=seed
        )


def load(path: str | Path) -> Posterior:
    """Read a posterior written by :meth:`Posterior.save` (``.nc`` or ``.zarr``) wholly into memory.

    The file is closed before this returns, so the posterior can be saved back over it. A file that is not a
    complete scalebayes posterior (truncated, another format, no scalebayes metadata) raises
    :class:`~scalebayes.errors.DataError` naming it. ``.zarr`` needs zarr >= 3 (:func:`scalebayes.store.require_zarr`).
    """
    path = Path(path)
    if not path.exists():
        raise DataError(f"file not found: {path}")
    engine = "h5netcdf"
    if path.suffix == ".zarr":
        require_zarr()
        engine = "zarr"
    try:
        dt = xr.load_datatree(path, engine=engine)  # reads every array, then closes the file
    except (OSError, ValueError, KeyError) as e:
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise DataError(f"could not read {path} as a scalebayes posterior: {first}") from e
    if "scalebayes" not in dt.attrs:
        raise DataError(f"{path} is not a scalebayes posterior (no 'scalebayes' metadata)")
    ensure_float64("load", required=False)  # predictions from a loaded posterior run in float64, as after a fit
    return Posterior(dt)


def _data_from_tree(dt, meta) -> ScalingData:
    cd = dt["constant_data"]
    frame = pd.DataFrame(
        {
            "N": np.asarray(cd["N"].values, float),
            "D": np.asarray(cd["D"].values, float),
            "C": np.asarray(cd["C"].values, float),
            "loss": np.asarray(cd["loss"].values, float),
        },
        index=pd.Index(np.asarray(cd["obs"].values), name="row"),
    )
    if "U" in cd.data_vars:
        frame["U"] = np.asarray(cd["U"].values, float)
    frame["family"] = np.asarray(cd["family"].values).astype(str)
    if "run" in cd.data_vars:
        frame["run"] = np.asarray(cd["run"].values).astype(str)
    return ScalingData(frame=frame, excluded=excluded_from_meta(meta), name=meta.get("data_name", "data"))


def excluded_from_meta(meta: dict) -> pd.DataFrame:
    """The excluded rows stored by :func:`scalebayes.fitting.excluded_meta` (all text): the columns that were
    numbers come back as numbers (in files written before ``excluded_numeric`` was recorded, every column whose
    values all read as numbers), text columns such as family labels stay text."""
    excl = pd.DataFrame(meta.get("excluded") or {"reason": []})
    numeric = meta.get("excluded_numeric")
    for col in excl.columns:
        if col != "reason" and (numeric is None or col in numeric or col == "row"):
            conv = pd.to_numeric(excl[col], errors="coerce")
            if conv.notna().all():
                excl[col] = conv
    return excl.set_index("row") if "row" in excl.columns else excl
