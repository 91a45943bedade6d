"""``Posterior``: the result of a fit, with summaries, diagnostics, prediction and save/load.

Everything numeric lives in ``.idata`` (an ArviZ DataTree); this class reads from it, so a loaded posterior
behaves exactly like a fresh one.
"""

from __future__ import annotations

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
from .data import ScalingData
from .diagnostics import Diagnostics
from .diagnostics import compute as compute_diagnostics
from .errors import DataError, ModelError, UnknownNameError
from .model import Spec
from .pointwise import pointwise_groups
from .predict import add_noise, log_mean_draws, new_family_latents, quantile_frame
from .priors import Priors

DEFAULT_QUANTILES = (0.05, 0.5, 0.95)


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
    def diagnostics(self) -> Diagnostics:
        """R-hat, bulk/tail ESS over every posterior quantity, and divergences (see :mod:`scalebayes.diagnostics`)."""
        return compute_diagnostics(self.posterior, self.idata["sample_stats"].to_dataset())

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

    def _latent_draws(self, family: str | None, *, seed: int = 0):
        """Latents (S,) per latent name and the noise draws (sigma (S,), nu (S,)) for one family or a new one."""
        lp = self.idata["latent_posterior"]
        latents = {z: _stack(lp[z]) for z in self.law.latents}  # (S, F)
        post = self.idata["posterior"]
        sigma = _stack(post["sigma"])
        nu = _stack(post["nu"]) if "nu" in post.data_vars else np.full(self.n_samples, np.inf)
        known = family is not None and family in self.families
        if len(self.families) == 1 and family is None:
            known, family = True, self.families[0]
        if known:
            j = self.families.index(family)
            lat = {z: jnp.asarray(v[:, j]) for z, v in latents.items()}
            sig = sigma[:, j] if sigma.ndim == 2 else sigma
        else:
            hyper = {n: _stack(post[n]) for n in post.data_vars if n.startswith(("mu_", "tau_"))}
            key = jax.random.fold_in(jax.random.key(seed), 7)
            lat = new_family_latents(
                self.spec, latents, hyper, self.priors.loc(self.law.latents), self.priors.scale(self.law.latents), key
            )
            if sigma.ndim == 2:  # a new family's noise: that of a fitted family picked at random per draw
                pick = np.asarray(jax.random.randint(jax.random.fold_in(key, 1), (sigma.shape[0],), 0, sigma.shape[1]))
                sig = sigma[np.arange(sigma.shape[0]), pick]
            else:
                sig = sigma
        return lat, (jnp.asarray(sig), jnp.asarray(nu))

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
    ) -> pd.DataFrame:
        """Posterior (predictive) loss at query points, one row per point.

        Give two of N (parameters), D (tokens), C (FLOP; C = 6·N·D), scalars or arrays that broadcast, plus U
        (unique tokens) for laws that need it. ``include_noise=False`` gives the credible band of the law itself;
        ``True`` the posterior predictive for a new run (law + run-to-run noise). ``family`` picks a fitted family;
        None (with several families) or an unseen name predicts for a new family drawn from the population.
        Returns a DataFrame with the inputs, ``mean`` and one ``q<p>`` column per quantile, in nats.
        """
        q = self._query(N, D, C, U)
        lat, (sigma, nu) = self._latent_draws(family, seed=seed)
        params = self.law.to_params(lat, {k: jnp.asarray(v) for k, v in self.centre.items()})
        x = {k: jnp.log(jnp.asarray(q[k].to_numpy(), dtype=jnp.float64)) for k in self.law.inputs}
        log_mu = log_mean_draws(self.law, params, x)
        if include_noise:
            log_mu = add_noise(jax.random.key(seed), log_mu, sigma, nu)
        values = np.exp(np.asarray(log_mu))
        out = q.copy()
        for k, v in quantile_frame(values, quantiles).items():
            out[k] = v
        return out

    def predictive_draws(self, N=None, D=None, *, C=None, U=None, family=None, include_noise=True, seed=0):
        """Loss draws (S, P) in nats at the query points (see :meth:`predict`)."""
        q = self._query(N, D, C, U)
        lat, (sigma, nu) = self._latent_draws(family, seed=seed)
        params = self.law.to_params(lat, {k: jnp.asarray(v) for k, v in self.centre.items()})
        x = {k: jnp.log(jnp.asarray(q[k].to_numpy(), dtype=jnp.float64)) for k in self.law.inputs}
        log_mu = log_mean_draws(self.law, params, x)
        if include_noise:
            log_mu = add_noise(jax.random.key(seed), log_mu, sigma, nu)
        return np.exp(np.asarray(log_mu))

    def _query(self, N, D, C, U) -> pd.DataFrame:
        given = {k: v for k, v in {"N": N, "D": D, "C": C}.items() if v is not None}
        arrs = {k: np.atleast_1d(np.asarray(v, dtype=float)) for k, v in given.items()}
        if U is not None:
            arrs["U"] = np.atleast_1d(np.asarray(U, dtype=float))
        try:
            arrs = dict(zip(arrs, np.broadcast_arrays(*arrs.values()), strict=True))
        except ValueError as e:
            raise DataError(f"query inputs do not broadcast: {e}") from e
        for k, v in arrs.items():
            bad = np.flatnonzero(~np.isfinite(v) | (v <= 0))
            if len(bad):
                raise DataError(f"query {k} must be finite and > 0", column=k, rows=bad.tolist())
        if "N" in arrs and "D" in arrs:
            arrs.setdefault("C", 6.0 * arrs["N"] * arrs["D"])
        elif "N" in arrs and "C" in arrs:
            arrs["D"] = arrs["C"] / (6.0 * arrs["N"])
        elif "D" in arrs and "C" in arrs:
            arrs["N"] = arrs["C"] / (6.0 * arrs["D"])
        elif not set(self.law.inputs) <= set(arrs):
            raise DataError(f"the {self.law.name!r} law needs {self.law.inputs}; give two of N, D, C")
        missing = [k for k in self.law.inputs if k not in arrs]
        if missing:
            raise DataError(f"the {self.law.name!r} law needs {missing} for prediction", column=missing[0])
        cols = [k for k in ("N", "D", "C", "U") if k in arrs]
        return pd.DataFrame({k: arrs[k].ravel() for k in cols})

    # ------------------------------------------------------------------ pointwise groups
    def pointwise(self) -> Posterior:
        """Add log_likelihood and posterior_predictive groups if the fit skipped them; returns self."""
        for name, ds in pointwise_groups(self.idata, seed=int(self.meta.get("seed", 0))).items():
            self.idata[name] = ds
        return self

    # ------------------------------------------------------------------ persistence
    def save(self, path: str | Path) -> Path:
        """Write the whole posterior (every group and the fit's metadata) to netCDF (``.nc``) or zarr (``.zarr``)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.suffix == ".zarr":
            _need_zarr()
            self.idata.to_zarr(path, mode="w")
        else:
            self.idata.to_netcdf(path, engine="h5netcdf")
        return path

    def to_frame(self, family: str | None = None) -> pd.DataFrame:
        """Draws of the published parameters (and derived a, b) for one family as a DataFrame (S rows)."""
        names = [*self.law.params, *self.law.derived]
        return pd.DataFrame({n: self.draws(n, family) for n in names})


def load(path: str | Path) -> Posterior:
    """Read a posterior written by :meth:`Posterior.save`."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"file not found: {path}")
    if path.suffix == ".zarr":
        _need_zarr()
        dt = xr.open_datatree(path, engine="zarr")
    else:
        dt = xr.open_datatree(path, engine="h5netcdf")
    dt = dt.load()
    if "scalebayes" not in dt.attrs:
        raise DataError(f"{path} is not a scalebayes posterior (no 'scalebayes' metadata)")
    return Posterior(dt)


def _need_zarr() -> None:
    try:
        import zarr  # noqa: F401
    except ImportError as e:
        raise ModelError("zarr output needs the zarr package: pip install 'scalebayes[zarr]' (or save as .nc)") from e


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
    excl = pd.DataFrame(meta.get("excluded") or {"reason": []})
    return ScalingData(frame=frame, excluded=excl, name=meta.get("data_name", "data"))
