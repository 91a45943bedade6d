"""Calibrated extrapolation: a model-discrepancy term that grows with distance beyond the fitted runs.

Why. A posterior of one functional form is honest about parameter uncertainty *given the form*, but the form
itself is only an approximation: curvature the law lacks (a slowly bending exponent, a changing data mix,
tuning that drifts with scale) is invisible inside the fitted range and grows with every e-fold beyond it. Point
fits, bootstraps and plain posteriors therefore under-cover runs several times larger than any fitted one
(``case_studies/backtests``: 38-52% coverage of nominal 90% intervals on chinchilla_epoch's largest runs).

Model. Let R be the convex hull of the fitted runs of a family in the space of the law's log inputs (log N, log D
for the Chinchilla law; log C for the compute law; log N, log D, log U for the data-constrained law). The
*extrapolation distance* of a query x is its Euclidean distance outside R, in nats of log input (0 inside; computed
as the largest violated facet, max_f(n_f·x + b_f), exact off a facet and a slight underestimate off a vertex):
predicting a 4x larger run along one input is d = log 4 ≈ 1.4. A new run's log loss is then

    log L = log L_law(x; θ) + ε + δ(x),   ε ~ StudentT(ν, 0, σ) (the fit's noise),   δ(x) ~ Normal(0, (κ·d(x))²),

so κ is in nats of log loss (≈ relative loss error) per nat of extrapolation distance. Inside the fitted runs
d = 0 and the predictive is exactly the fit's: interpolation intervals do not widen. δ is drawn independently per
query draw (marginal intervals are what is reported).

Learning κ from the data itself, never from the runs being predicted: leave-largest-out splits of the *fitted*
runs. For each split direction (default both: the largest runs by compute C and by parameter count N) and each
inner hold-out fraction f (default 0.2 and 0.35), the fit is repeated on all but the largest fraction f of the
fitted runs (same model and sampler settings) and the held-out larger runs are predicted; κ̂ maximises the summed
log predictive density (LPD) of all those held-out runs together,

    κ̂ = argmax_κ Σ_i log[(1/S) Σ_s p(y_i | μ_si, σ_s, ν_s, κ·d_i)],

a type-II maximum-likelihood (empirical-Bayes) estimate of one scalar, on a log grid of κ including 0 refined by a
bounded 1-D search. The t ⊕ Normal density is a scale mixture of Normals, integrated by quadrature. κ̂ = 0 (no
widening) wins whenever the inner extrapolations are already calibrated. With several families (``backtest`` with
``per_family=True``), the inner splits of all families are pooled into one κ. Cost: one refit per inner split
(four by default).

Why both directions: the law's error beyond the data depends on which way one extrapolates, and a user's query
(a bigger N at fixed D, a longer run, a larger budget) need not follow the direction of the inner splits. Splits
along one direction also give few independent "extrapolation experiments" (the held-out runs of one split share
one fitted curve, so their errors are correlated). On chinchilla_epoch, κ̂ learned from compute splits alone
(0.0053) covered 69% of the largest 20% of runs by compute with nominal 90% intervals; from both directions
(0.0095) 90% (and 96% of the largest 20% by N, where N-splits alone gave κ̂ 0.020 and intervals twice as wide).
The cost: where the largest-N runs are the worst-fitted ones (porian_isoflop's isoFLOP walls), κ̂ roughly doubles
and intervals widen (hierarchical backtest: 100% coverage, LPD 1.30 vs 1.43 with compute splits only); pass
``split="compute"`` when only compute extrapolation matters (``case_studies/backtests/README.md``).

Why the LPD and a Normal δ (choices measured in ``case_studies/backtests``, see its README): the LPD is a proper
scoring rule, so κ̂ trades sharpness for calibration on the inner splits; a Normal δ added to the Student-t noise
beat inflating the Student-t scale (whose tails, with the small ν of some porian families, made intervals tens
of percent wide) in held-out LPD on both bundled datasets; two inner fractions gave steadier κ̂ than one.
Limits: κ is learned from extrapolations *within* the data, so a regime change right above the largest fitted
runs (as at the top of chinchilla_epoch) is only partly anticipated.

Use: ``post.predict(N, D, extrapolation="discrepancy")`` (calibrates on first use and caches the result in
``post.idata.attrs``, so it is saved with the posterior), or ``calibrate(post)`` explicitly, or
``scalebayes.backtest(..., extrapolation="discrepancy")``, which calibrates on the training runs only.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
from scipy.special import gammaln, logsumexp

from .errors import ModelError, UnknownNameError

ATTR = "scalebayes_discrepancy"
#: Inner leave-largest-out fractions used to learn κ (each costs one fit per split direction).
DEFAULT_FRACTIONS = (0.2, 0.35)
#: Directions of the inner leave-largest-out splits: the largest runs by compute C and by parameters N.
DEFAULT_SPLITS = ("compute", "params")
#: κ grid: 0 and 10^-4 ... 10^0.5 nats of log loss per nat of log distance.
KAPPA_GRID = np.concatenate([[0.0], np.logspace(-4, 0.5, 19)])


# ----------------------------------------------------------------------------------------------- predictive numerics
@dataclass
class LogPredictive:
    """Predictive distribution of log loss (nats) at P query runs, as a mixture over S parameter draws:
    log L = log_mu_sp + ε + δ, ε ~ StudentT(ν_s, 0, σ_sp), δ ~ Normal(0, extra_sd_p²).

    ``log_mu`` (S, P): the law's log mean per draw; ``sigma`` (S, P): noise scale; ``nu`` (S,): Student-t degrees
    of freedom (inf = Normal); ``extra_sd`` (P,): s.d. of the discrepancy δ (0 = none).
    """

    log_mu: np.ndarray
    sigma: np.ndarray
    nu: np.ndarray
    extra_sd: np.ndarray

    @property
    def n_points(self) -> int:
        return self.log_mu.shape[1]

    def with_extra_sd(self, extra_sd) -> LogPredictive:
        return LogPredictive(
            self.log_mu, self.sigma, self.nu, np.broadcast_to(np.asarray(extra_sd, float), (self.n_points,)).copy()
        )

    def sample(self, seed: int = 0, reps: int = 2) -> np.ndarray:
        """Log-loss draws (reps·S, P): law + Student-t(ν) noise of scale σ + Normal discrepancy of s.d. extra_sd."""
        rng = np.random.default_rng(seed)
        out = []
        S, P = self.log_mu.shape
        nu = np.broadcast_to(self.nu[:, None], (S, P))
        finite = np.isfinite(nu)
        nu_s = np.where(finite, nu, 1.0)
        for _ in range(reps):
            eps = rng.standard_normal((S, P))
            g = rng.gamma(nu_s / 2.0) / (nu_s / 2.0)
            t = np.where(finite, eps / np.sqrt(g), eps)
            z = rng.standard_normal((S, P))
            out.append(self.log_mu + self.sigma * t + self.extra_sd[None, :] * z)
        return np.concatenate(out, axis=0)

    def log_density(self, log_y: np.ndarray) -> np.ndarray:
        """log p(log y_i) per query (P,), in nats (density of *log* loss; subtract log y for the density of loss).

        Exact Student-t mixture where ``extra_sd`` is 0; elsewhere the convolution with the Normal discrepancy is
        written as a scale mixture of Normals, N(y; μ, e² + σ²/g) with g ~ Gamma(ν/2, ν/2), and integrated over g
        by the trapezoid rule on 113 normal-score nodes of g's quantiles (relative error < 1e-4 out to 40 σ)."""
        y = np.asarray(log_y, float)
        S = self.log_mu.shape[0]
        lp = _logpdf(y[None, :], self.log_mu, self.sigma, self.nu[:, None])
        out = logsumexp(lp, axis=0) - np.log(S)
        wide = self.extra_sd > 0
        if wide.any():
            g = _gamma_nodes(self.nu)  # (S, J)
            out[wide] = np.asarray(
                _conv_logpdf(
                    jnp.asarray(y[wide]),
                    jnp.asarray(self.log_mu[:, wide]),
                    jnp.asarray(self.sigma[:, wide]),
                    jnp.asarray(g),
                    jnp.asarray(self.extra_sd[wide]),
                )
            )
        return out

    def median(self) -> np.ndarray:
        """Posterior median of the law's mean loss (nats) per query (P,) — the point prediction."""
        return np.exp(np.median(self.log_mu, axis=0))


_NODES = np.linspace(-14.0, 7.5, 113)
_NODE_LOGW = np.log(np.exp(-0.5 * _NODES**2) / np.exp(-0.5 * _NODES**2).sum())


def _gamma_nodes(nu: np.ndarray) -> np.ndarray:
    """Quantiles (S, J) of g ~ Gamma(ν/2, rate ν/2) at the normal-score nodes; g = 1 where ν is inf."""
    from scipy.special import gammaincinv, ndtr

    finite = np.isfinite(nu)
    a = np.where(finite, nu, 2.0)[:, None] / 2.0
    g = gammaincinv(a, ndtr(_NODES)[None, :]) / a
    g = np.clip(g, 1e-300, 1e12)
    return np.where(finite[:, None], g, 1.0)


@jax.jit
def _conv_logpdf(y, log_mu, sigma, g, extra):
    """log (1/S) Σ_s Σ_j w_j N(y_p; μ_sp, e_p² + σ_sp²/g_sj): the t ⊕ Normal convolution by quadrature, (P,)."""
    var = extra[None, :, None] ** 2 + sigma[:, :, None] ** 2 / g[:, None, :]
    r2 = (y[None, :, None] - log_mu[:, :, None]) ** 2
    lq = -0.5 * (jnp.log(2 * jnp.pi * var) + r2 / var) + jnp.asarray(_NODE_LOGW)[None, None, :]
    lq = jax.scipy.special.logsumexp(lq, axis=2)
    return jax.scipy.special.logsumexp(lq, axis=0) - jnp.log(lq.shape[0])


def _logpdf(y, mu, sigma, nu):
    """Student-t(ν, μ, σ) log density, Normal where ν is inf; broadcasting numpy arrays."""
    z = (y - mu) / sigma
    finite = np.isfinite(nu)
    nu_s = np.where(finite, nu, 1.0)
    lt = (
        gammaln((nu_s + 1) / 2)
        - gammaln(nu_s / 2)
        - 0.5 * np.log(nu_s * np.pi)
        - np.log(sigma)
        - (nu_s + 1) / 2 * np.log1p(z * z / nu_s)
    )
    ln = -0.5 * z * z - np.log(sigma) - 0.5 * np.log(2 * np.pi)
    return np.where(finite, lt, ln)


# ----------------------------------------------------------------------------------------------- distance
def region(log_x: Mapping[str, np.ndarray], inputs: Sequence[str]) -> dict:
    """The convex hull of fitted runs in log-input space, as half-spaces ``normals @ x + offsets <= 0`` (unit normals).

    ``log_x`` maps each law input to the natural logs of the fitted runs' values (n,). Inputs that are constant over
    the runs get a two-sided bound; one varying input is an interval; two or more use Qhull (falling back to the
    bounding box, plus the bound on the sum of the logs, if the runs are degenerate, e.g. collinear).
    """
    inputs = list(inputs)
    X = np.column_stack([np.asarray(log_x[k], float) for k in inputs])
    k = X.shape[1]
    var = np.ptp(X, axis=0) > 1e-9
    rows, offs = [], []
    for j in np.flatnonzero(~var):  # constant input: x_j = c
        e = np.zeros(k)
        e[j] = 1.0
        rows += [e, -e]
        offs += [-X[0, j], X[0, j]]
    idx = np.flatnonzero(var)
    hull_ok = False
    if len(idx) >= 2 and len(X) > len(idx):
        try:
            from scipy.spatial import ConvexHull

            h = ConvexHull(X[:, idx])
            for eq in h.equations:  # unit normal (len(idx)), offset
                e = np.zeros(k)
                e[idx] = eq[:-1]
                rows.append(e)
                offs.append(eq[-1])
            hull_ok = True
        except Exception:  # noqa: BLE001 - Qhull raises its own error types for degenerate inputs
            hull_ok = False
    if not hull_ok:
        for j in idx:
            e = np.zeros(k)
            e[j] = 1.0
            rows += [e, -e]
            offs += [-X[:, j].max(), X[:, j].min()]
        if len(idx) >= 2:
            e = np.zeros(k)
            e[idx] = 1.0 / np.sqrt(len(idx))
            rows.append(e)
            offs.append(-(X[:, idx] @ e[idx]).max())
    return {"inputs": inputs, "normals": np.asarray(rows).tolist(), "offsets": np.asarray(offs).tolist()}


def distance(reg: Mapping, log_x: Mapping[str, np.ndarray]) -> np.ndarray:
    """Distance (nats of log input) of query points outside a fitted :func:`region`: the largest violated
    half-space, max(0, max_f n_f·x + b_f) — exact on a facet's face, a slight underestimate off a vertex; 0 inside.
    ``log_x`` maps each input to (P,) query log values."""
    X = np.column_stack([np.atleast_1d(np.asarray(log_x[k], float)) for k in reg["inputs"]])
    A = np.asarray(reg["normals"], float)
    b = np.asarray(reg["offsets"], float)
    return np.maximum(0.0, (X @ A.T + b).max(axis=1))


def fitted_regions(data, law) -> dict[str, dict]:
    """:func:`region` of every family's runs, and ``"*"`` for all runs (used for new families)."""
    li = data.log_inputs()
    fam = np.asarray(data.frame["family"], dtype=str)
    out = {"*": region(li, law.inputs)}
    for f in data.families:
        m = fam == str(f)
        if m.any():
            out[str(f)] = region({k: li[k][m] for k in law.inputs}, law.inputs)
    return out


# ----------------------------------------------------------------------------------------------- the calibration
@dataclass
class Discrepancy:
    """A calibrated discrepancy: s.d. of δ at a query is ``kappa`` × its distance outside the fitted runs.

    Attributes:
        kappa: nats of log loss per nat of log-input distance.
        regions: per family (``"*"`` = all fitted runs, used for new families): the :func:`region` of its runs.
        info: how κ was learned (inner fractions, held-out runs, LPD at κ = 0 and κ̂, coverage before/after).
    """

    kappa: float
    regions: dict[str, dict]
    info: dict = field(default_factory=dict)

    def sd(self, log_x: Mapping[str, np.ndarray], family: str | None = None) -> np.ndarray:
        """s.d. of δ (nats of log loss) at query points with log inputs ``log_x`` (each (P,))."""
        reg = self.regions.get(str(family), self.regions["*"]) if family is not None else self.regions["*"]
        return self.kappa * distance(reg, log_x)

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, s: str) -> Discrepancy:
        d = json.loads(s)
        return cls(kappa=float(d["kappa"]), regions=d["regions"], info=d.get("info", {}))


def estimate_kappa(
    records: Sequence[tuple[LogPredictive, np.ndarray, np.ndarray]], grid=KAPPA_GRID, *, max_draws: int = 500
):
    """κ̂ maximising the summed log predictive density of held-out runs.

    The grid maximum is refined by a bounded 1-D search in log κ between its neighbours; the LPD uses at most
    ``max_draws`` evenly thinned posterior draws per record (κ is one scalar: 500 draws pin it far more tightly
    than the held-out runs do).

    Args:
        records: (predictive without discrepancy, distances d (P,), observed log loss (P,)) per inner split.
        grid: candidate κ values (must include 0 to allow "no widening").
        max_draws: draws per record used for the LPD.

    Returns:
        (κ̂, DataFrame with columns kappa and lpd (summed over records) on the grid plus κ̂).
    """
    if not records:
        raise ModelError("no held-out runs to learn the discrepancy from")
    thin = []
    for pred, d, log_y in records:
        S = pred.log_mu.shape[0]
        idx = np.linspace(0, S - 1, min(S, max_draws)).round().astype(int)
        thin.append((LogPredictive(pred.log_mu[idx], pred.sigma[idx], pred.nu[idx], pred.extra_sd), d, log_y))

    def lpd(k: float) -> float:
        return float(sum(p.with_extra_sd(k * d).log_density(y).sum() for p, d, y in thin))

    grid = np.asarray(grid, float)
    values = np.array([lpd(k) for k in grid])
    i = int(np.argmax(values))
    best, best_v = float(grid[i]), float(values[i])
    if 0 < i < len(grid) - 1 and grid[i - 1] > 0:
        from scipy.optimize import minimize_scalar

        r = minimize_scalar(
            lambda lk: -lpd(float(np.exp(lk))),
            bounds=(np.log(grid[i - 1]), np.log(grid[i + 1])),
            method="bounded",
            options={"xatol": 0.01},
        )
        if -r.fun > best_v:
            best, best_v = float(np.exp(r.x)), float(-r.fun)
    table = pd.DataFrame({"kappa": np.append(grid, best), "lpd": np.append(values, best_v)})
    table = table.drop_duplicates("kappa").sort_values("kappa").reset_index(drop=True)
    return best, table


def coverage(records, kappa: float, level: float = 0.9, seed: int = 0) -> float:
    """Fraction of the records' held-out runs inside the central ``level`` predictive interval at this κ."""
    hit = n = 0
    for pred, d, log_y in records:
        lo, hi = np.quantile(
            pred.with_extra_sd(kappa * d).sample(seed=seed, reps=1), [(1 - level) / 2, (1 + level) / 2], axis=0
        )
        hit += int(((log_y >= lo) & (log_y <= hi)).sum())
        n += len(log_y)
    return hit / max(n, 1)


def refit_settings(post) -> dict:
    """``fit`` keyword arguments that reproduce ``post``'s model and sampler settings (law, pooling, likelihood,
    noise, prior overrides, chains/warmup/draws and NUTS settings); used to refit on subsets."""
    from . import priors as _priors

    meta = post.meta
    law = post.law
    modes = list(meta["modes"])
    shared = tuple(z for z, m in zip(law.latents, modes, strict=True) if m == "shared")
    free = tuple(z for z, m in zip(law.latents, modes, strict=True) if m == "free")
    if len(post.families) == 1 or all(m == "shared" for m in modes):
        kw = dict(pooling="complete")
    elif "partial" in modes or "centred" in modes:
        centred = tuple(z for z, m in zip(law.latents, modes, strict=True) if m == "centred")
        kw = dict(pooling="partial", shared=shared, free=free, centred=centred)
    else:
        kw = dict(pooling="none", shared=shared)
    # prior overrides: whatever differs from the defaults resolved on the same data
    data = post.data
    li = data.log_inputs()
    default = _priors.resolve(law, law.centre(li), float(np.median(data.loss)), None)
    stored = post.priors
    over = {}
    for z, v in stored.latent.items():
        if not np.allclose(v, default.latent[z]):
            over[z] = tuple(v)
    for z, v in stored.tau.items():
        if not np.isclose(v, default.tau[z]):
            over[f"tau_{z}"] = v
    if not np.isclose(stored.sigma, default.sigma):
        over["sigma"] = stored.sigma
    if not np.allclose(stored.nu, default.nu):
        over["nu"] = tuple(stored.nu)
    s = meta.get("sampler", {})
    kw.update(
        law=law,
        likelihood=meta["likelihood"],
        noise=meta["noise"],
        priors=over or None,
        chains=int(s.get("chains", 4)),
        warmup=int(s.get("warmup", 1000)),
        draws=int(s.get("draws", 1000)),
        dense_mass=bool(s.get("dense_mass", True)),
        target_accept=float(s.get("target_accept", 0.9)),
        max_tree_depth=int(s.get("max_tree_depth", 10)),
    )
    return kw


def _as_splits(split) -> tuple[str, ...]:
    return (split,) if isinstance(split, str) else tuple(split)


def inner_records(
    post,
    *,
    fractions: Sequence[float] = DEFAULT_FRACTIONS,
    split: str | Sequence[str] = DEFAULT_SPLITS,
    seed: int | None = None,
    n_pad: int | None = None,
    fit_kwargs: Mapping | None = None,
) -> tuple[list, list[dict]]:
    """Leave-largest-out refits of ``post``'s own runs: for each split direction (``"compute"``: largest C,
    ``"params"``: largest N) and each fraction f, refit on all but the largest f of the runs and predict those.
    Returns ([(predictive, distance (P,), observed log loss (P,)), ...], details per split) for
    :func:`estimate_kappa`. A direction whose column the data lack (N for loss-vs-compute data) is skipped."""
    from .backtest import _SPLIT_COLUMN, fit_padded, holdout_mask, predictive_for
    from .sampler import pad_size

    data = post.data
    kw = {**refit_settings(post), **dict(fit_kwargs or {})}
    seed = int(post.meta.get("seed", 0)) if seed is None else int(seed)
    n_pad = pad_size(len(data)) if n_pad is None else int(n_pad)
    records, details = [], []
    directions = [s for s in _as_splits(split) if _SPLIT_COLUMN.get(s, s) in data.frame.columns] or ["compute"]
    for direction in directions:
        for f in fractions:
            test = holdout_mask(data, direction, f)
            train_data = data.subset(~test)
            test_frame = data.frame.loc[test]
            inner = fit_padded(train_data, n_pad=n_pad, seed=seed, **kw)
            pred = predictive_for(inner, test_frame, seed=seed)
            d = distances(fitted_regions(train_data, post.law), test_frame, post.law)
            records.append((pred, d, np.log(test_frame["loss"].to_numpy())))
            details.append(
                {
                    "split": direction,
                    "fraction": float(f),
                    "n_train": int((~test).sum()),
                    "n_test": int(test.sum()),
                    "max_distance": float(d.max()),
                    "inner_ok": bool(inner.ok),
                    "rows": test_frame.index.tolist(),
                }
            )
    return records, details


def from_records(
    post, records, details, *, split: str | Sequence[str] = DEFAULT_SPLITS, attach: bool = True
) -> Discrepancy:
    """The :class:`Discrepancy` of ``post`` with κ estimated from ``records`` (see :func:`inner_records`; records of
    several posteriors may be pooled to share one κ)."""
    kappa, table = estimate_kappa(records)
    at = table.set_index("kappa")
    info = {
        "split": list(_as_splits(split)),
        "splits": [{k: v for k, v in d.items() if k != "rows"} for d in details],
        "n_heldout": int(sum(len(r[2]) for r in records)),
        "lpd_kappa0": float(at.loc[0.0, "lpd"]),
        "lpd_kappa": float(at.loc[kappa, "lpd"]),
        "coverage90_kappa0": coverage(records, 0.0),
        "coverage90_kappa": coverage(records, kappa),
    }
    disc = Discrepancy(kappa=kappa, regions=fitted_regions(post.data, post.law), info=info)
    if attach:
        post.idata.attrs[ATTR] = disc.to_json()
    return disc


def calibrate(
    post,
    *,
    fractions: Sequence[float] = DEFAULT_FRACTIONS,
    split: str | Sequence[str] = DEFAULT_SPLITS,
    seed: int | None = None,
    n_pad: int | None = None,
    attach: bool = True,
    fit_kwargs: Mapping | None = None,
) -> Discrepancy:
    """Learn κ for ``post`` from leave-largest-out refits of its own runs (see the module docstring).

    Args:
        post: a :class:`~scalebayes.posterior.Posterior` (its ``data`` are the fitted runs).
        fractions: inner hold-out fractions; one refit each per split direction.
        split: direction(s) of the inner splits: ``"compute"`` (largest C held out), ``"params"`` (largest N), or
            several (default both, pooled into one κ̂; see the module docstring).
        seed: refit seed (default: the posterior's own seed).
        n_pad: padded size for the refits (default: that of the posterior's data, so the refits reuse its compiled
            sampler).
        attach: store the result in ``post.idata.attrs`` (saved with the posterior) for later predictions.
        fit_kwargs: overrides of the refit settings (default :func:`refit_settings`).
    """
    records, details = inner_records(
        post, fractions=fractions, split=split, seed=seed, n_pad=n_pad, fit_kwargs=fit_kwargs
    )
    return from_records(post, records, details, split=split, attach=attach)


def distances(regions: Mapping[str, dict], frame: pd.DataFrame, law) -> np.ndarray:
    """Distance of each run of ``frame`` (columns of the law's inputs and ``family``) outside its family's fitted
    region (``"*"`` for a family with no fitted runs), shape (P,)."""
    fam = frame["family"].astype(str).to_numpy()
    out = np.zeros(len(frame))
    for f in np.unique(fam):
        m = fam == f
        out[m] = distance(regions.get(f, regions["*"]), {k: np.log(frame.loc[m, k].to_numpy()) for k in law.inputs})
    return out


def stored(post) -> Discrepancy | None:
    """The calibration attached to ``post`` (by :func:`calibrate`), or None."""
    s = post.idata.attrs.get(ATTR)
    return Discrepancy.from_json(s) if s else None


def resolve(post, how) -> Discrepancy | None:
    """The :class:`Discrepancy` for ``extrapolation=how``: None for ``"none"``, the attached or a fresh calibration for
    ``"discrepancy"``, or ``how`` itself when it is a Discrepancy."""
    if isinstance(how, Discrepancy):
        return how
    if how is None or how == "none":
        return None
    if how != "discrepancy":
        raise UnknownNameError(f"unknown extrapolation {how!r}; choose 'none', 'discrepancy' or pass a Discrepancy")
    disc = stored(post)
    if disc is None:
        warnings.warn(
            "extrapolation='discrepancy': no calibration attached to this posterior; learning it now from "
            f"{len(DEFAULT_FRACTIONS) * len(DEFAULT_SPLITS)} leave-largest-out refits (call "
            "scalebayes.discrepancy.calibrate(post) to "
            "control this)",
            stacklevel=3,
        )
        disc = calibrate(post)
    return disc


def widen(post, query: pd.DataFrame, log_mu, sigma, nu, *, family: str | None, how, noise: bool, seed: int = 0):
    """Log-loss draws (S, P) with the discrepancy, from the law's log mean ``log_mu`` (S, P) at the ``query`` runs
    (columns N, D, C[, U]) and the noise draws ``sigma`` (S,), ``nu`` (S,) (inf = Normal):

        log L = log_mu + [ε ~ StudentT(ν, 0, σ) when ``noise``] + δ,   δ ~ Normal(0, (κ·d)²),

    d being each query's distance outside the fitted runs of ``family`` (all runs for a new family). Called by
    :meth:`Posterior.predict` and :meth:`Posterior.predictive_draws` for their ``extrapolation`` option.
    """
    from .predict import add_noise

    disc = resolve(post, how)
    log_mu = jnp.asarray(log_mu)
    key = jax.random.key(seed)
    if noise:
        # The same noise draws as Posterior.predict without the discrepancy (same key, and the same padding of the
        # query axis to a power of two ≥ 8), so that only δ differs between the two.
        P = log_mu.shape[1]
        size = max(8, 1 << (P - 1).bit_length())
        padded = jnp.concatenate([log_mu, jnp.repeat(log_mu[:, :1], size - P, axis=1)], axis=1)
        log_mu = add_noise(key, padded, jnp.asarray(sigma), jnp.asarray(nu))[:, :P]
    if disc is None:
        return log_mu
    if family is not None and family in post.families:
        fam = family
    elif family is None and len(post.families) == 1:
        fam = post.families[0]
    else:
        fam = None
    sd = disc.sd({k: np.log(query[k].to_numpy()) for k in post.law.inputs}, fam)
    z = jax.random.normal(jax.random.fold_in(key, 13), log_mu.shape, log_mu.dtype)
    return log_mu + jnp.asarray(sd)[None, :] * z
