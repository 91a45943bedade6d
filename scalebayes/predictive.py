"""The predictive of new runs: law draws + run noise + model discrepancy, as draws and as a density.

One body serves every question asked of a posterior: :meth:`~scalebayes.posterior.Posterior.predict` and
``predictive_draws`` (through :func:`for_query`), the backtests and the calibration (through :func:`for_frame`), and
the planning helpers (through :func:`noise_draws` and :func:`delta_normals`, the same random numbers). Querying only:
nothing here fits; a discrepancy is used only when one was learned beforehand
(:func:`scalebayes.calibration.calibrate`).

Log loss of a new run at query p under posterior draw s (all in nats of log loss):

    log L_sp = log_mu_sp + σ_sp·t_sp + extra_sd_sp·z_s,   t_sp ~ StudentT(ν_s) (ε, :mod:`scalebayes.likelihood`),
    z_s ~ Normal(0, 1) one per draw (the discrepancy δ, jointly drawn: see :mod:`scalebayes.discrepancy`;
    extra_sd_sp = κ_s·d_p^γ_s).

Random streams: with ``seed``, the noise uses ``fold_in(key(seed), 1)`` and δ ``fold_in(key(seed), 13)``, so two
questions with the same seed and shape see the same numbers (``prob_loss_below`` at a point agrees with the draws of
``predict`` there).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
from scipy.special import gammaincinv, logsumexp, ndtr

from . import likelihood
from .data import C_RTOL
from .discrepancy import Discrepancy
from .errors import DataError, NotCalibratedError, UnknownNameError
from .predict import log_mean_draws, quantile_frame

#: ``extrapolation`` options: "auto" uses the stored calibration when there is one.
EXTRAPOLATIONS = ("auto", "none", "discrepancy")
#: Values of the ``predictive`` attribute of results: whether the model discrepancy is included.
CALIBRATED, PARAMETERS_ONLY = "calibrated", "parameters only"
_NOISE_STREAM, _DELTA_STREAM = 1, 13


# ----------------------------------------------------------------------------------------------- random numbers
def noise_draws(seed: int, sigma, nu, n_points: int) -> np.ndarray:
    """Run-to-run noise ε on log loss, (S, P): Student-t(ν_s) of scale σ_s per draw (Normal where ν = inf).

    ``sigma`` (S,) or (S, P) and ``nu`` (S,); deterministic in ``seed`` and the shape."""
    sigma = jnp.asarray(sigma)
    S = sigma.shape[0]
    scale = sigma if sigma.ndim == 2 else sigma[:, None]
    key = jax.random.fold_in(jax.random.key(int(seed)), _NOISE_STREAM)
    return np.asarray(likelihood.sample(key, 0.0, scale, jnp.asarray(nu)[:, None], shape=(S, n_points)))


def delta_normals(seed: int, n_draws: int) -> np.ndarray:
    """The discrepancy's standard normals z (S,), one per posterior draw (δ_sp = extra_sd_sp·z_s)."""
    key = jax.random.fold_in(jax.random.key(int(seed)), _DELTA_STREAM)
    return np.asarray(jax.random.normal(key, (n_draws,)))


# ----------------------------------------------------------------------------------------------- the predictive
@dataclass
class LogPredictive:
    """Predictive distribution of log loss (nats) at P query runs, as a mixture over S parameter draws.

    ``log_mu`` (S, P): the law's log mean per draw; ``sigma`` (S, P): noise scale; ``nu`` (S,): Student-t degrees
    of freedom (inf = Normal); ``extra_sd`` (S, P) (or anything that broadcasts to it): s.d. of the discrepancy δ
    per draw (0 = none; its scale κ_s and growth γ_s vary by draw).
    """

    log_mu: np.ndarray
    sigma: np.ndarray
    nu: np.ndarray
    extra_sd: np.ndarray

    def __post_init__(self):
        self.extra_sd = np.broadcast_to(np.asarray(self.extra_sd, float), np.shape(self.log_mu)).copy()

    @property
    def n_points(self) -> int:
        return self.log_mu.shape[1]

    def with_extra_sd(self, extra_sd) -> LogPredictive:
        """The same predictive with the discrepancy's s.d. ``extra_sd`` ((S, P), (P,) or a scalar)."""
        return LogPredictive(self.log_mu, self.sigma, self.nu, extra_sd)

    def law_draws(self, seed: int = 0) -> np.ndarray:
        """Log of the law's mean loss with the discrepancy, log_mu + δ, (S, P): the loss a well-run training reaches
        (no run noise)."""
        z = delta_normals(seed, self.log_mu.shape[0])
        return self.log_mu + z[:, None] * self.extra_sd

    def draws(self, seed: int = 0, *, include_noise: bool = True) -> np.ndarray:
        """Log-loss draws (S, P): :meth:`law_draws` plus, with ``include_noise``, the run noise ε."""
        out = self.law_draws(seed)
        if include_noise:
            out = out + noise_draws(seed, self.sigma, self.nu, self.n_points)
        return out

    def sample(self, seed: int = 0, reps: int = 2) -> np.ndarray:
        """New runs' log-loss draws (reps·S, P); rep 0 is :meth:`draws` at ``seed``, rep r at ``seed`` + r."""
        return np.concatenate([self.draws(seed + r) for r in range(reps)], axis=0)

    def mean(self, seed: int = 0) -> np.ndarray:
        """Mean loss (nats) per query (P,): the mean over draws of exp(log_mu + δ), the law's mean loss with the
        discrepancy, *without* run noise. A new run's own mean loss does not exist: the Student-t noise lives on log
        loss, and E[exp(σ·t)] is infinite for every finite ν (with Normal noise it would add the factor
        exp(σ²/2) ≈ 1 + σ²/2, ~1e-4 for σ = 0.01). The noise is symmetric on log loss, so this is also the mean over
        draws of a new run's *median* loss."""
        return np.exp(self.law_draws(seed)).mean(axis=0)

    def log_density(self, log_y: np.ndarray, nodes: np.ndarray | None = None) -> np.ndarray:
        """log p(log y_i) per query (P,), in nats (density of *log* loss; subtract log y for the density of loss).

        Exact Student-t mixture where ``extra_sd`` is 0; elsewhere the convolution with the Normal discrepancy is
        written as a scale mixture of Normals, N(y; μ, e² + σ²/g) with g ~ Gamma(ν/2, ν/2), and integrated over g
        by the trapezoid rule on 113 normal-score nodes of g's quantiles (relative error < 1e-4 out to 40 σ).
        ``nodes``: those quantiles, :func:`gamma_nodes` of ``nu``, when the caller reuses them."""
        y = np.asarray(log_y, float)
        S = self.log_mu.shape[0]
        lp = np.asarray(likelihood.logpdf(y[None, :], self.log_mu, self.sigma, self.nu[:, None]))
        out = logsumexp(lp, axis=0) - np.log(S)
        wide = (self.extra_sd > 0).any(axis=0)
        if wide.any():
            out[wide] = np.asarray(
                _conv_logpdf(
                    jnp.asarray(y[wide]),
                    jnp.asarray(self.log_mu[:, wide]),
                    jnp.asarray(self.sigma[:, wide]),
                    jnp.asarray(gamma_nodes(self.nu) if nodes is None else nodes),
                    jnp.asarray(self.extra_sd[:, wide]),
                )
            )
        return out

    def median(self) -> np.ndarray:
        """Posterior median of the law's mean loss (nats) per query (P,) — the point prediction."""
        return np.exp(np.median(self.log_mu, axis=0))


_NODES = np.linspace(-14.0, 7.5, 113)
_NODE_LOGW = np.log(np.exp(-0.5 * _NODES**2) / np.exp(-0.5 * _NODES**2).sum())


def gamma_nodes(nu: np.ndarray) -> np.ndarray:
    """Quantiles (S, J) of g ~ Gamma(ν/2, rate ν/2) at the normal-score nodes; g = 1 where ν is inf."""
    finite = np.isfinite(nu)
    a = np.where(finite, nu, 2.0)[:, None] / 2.0
    g = gammaincinv(a, ndtr(_NODES)[None, :]) / a
    g = np.clip(g, 1e-300, 1e12)
    return np.where(finite[:, None], g, 1.0)


@jax.jit
def _conv_logpdf(y, log_mu, sigma, g, extra):
    """log (1/S) Σ_s Σ_j w_j N(y_p; μ_sp, e_sp² + σ_sp²/g_sj): the t ⊕ Normal convolution by quadrature, (P,)."""
    var = extra[:, :, None] ** 2 + sigma[:, :, None] ** 2 / g[:, None, :]
    r2 = (y[None, :, None] - log_mu[:, :, None]) ** 2
    lq = -0.5 * (jnp.log(2 * jnp.pi * var) + r2 / var) + jnp.asarray(_NODE_LOGW)[None, None, :]
    lq = jax.scipy.special.logsumexp(lq, axis=2)
    return jax.scipy.special.logsumexp(lq, axis=0) - jnp.log(lq.shape[0])


# ----------------------------------------------------------------------------------------------- queries
def positive_array(name: str, v) -> np.ndarray:
    """``v`` as a float array (at least 1-D) of finite values > 0, else a :class:`DataError` naming ``name``."""
    raw = np.asarray(v)
    if raw.dtype.kind in "USb":  # text (even "1e12") or booleans are a mistake in the caller, not numbers
        raise DataError(f"query {name} must be numbers, got {raw.dtype.name} values {v!r}", column=name)
    try:
        a = np.atleast_1d(np.asarray(raw, dtype=float))
    except (TypeError, ValueError) as e:
        raise DataError(f"query {name} must be numbers, got {v!r}", column=name) from e
    if a.size == 0:
        raise DataError(f"query {name} is empty", column=name)
    bad = np.flatnonzero(~np.isfinite(a.ravel()) | (a.ravel() <= 0))
    if len(bad):
        raise DataError(f"query {name} must be finite and > 0", column=name, rows=bad.tolist())
    return a


def query_frame(law, N=None, D=None, C=None, U=None) -> pd.DataFrame:
    """Query points as a DataFrame with columns N (parameters), D (tokens), C (FLOP)[, U (unique tokens)].

    Give two of N, D, C (scalars or arrays that broadcast; the third follows from C = 6·N·D), or the law's own
    inputs. All three may be given only when they agree within :data:`scalebayes.data.C_RTOL` (or when the law takes
    C itself): a loss computed from N and D must not be shown next to a C it was not computed at."""
    arrs = {k: positive_array(k, v) for k, v in {"N": N, "D": D, "C": C, "U": U}.items() if v is not None}
    try:
        arrs = dict(zip(arrs, np.broadcast_arrays(*arrs.values()), strict=True))
    except ValueError as e:
        raise DataError(f"query inputs do not broadcast: {e}") from e
    if {"N", "D", "C"} <= set(arrs) and "C" not in law.inputs:
        bad = np.flatnonzero(np.abs(arrs["C"] / (6.0 * arrs["N"] * arrs["D"]) - 1.0).ravel() > C_RTOL)
        if len(bad):
            raise DataError(
                f"C disagrees with 6·N·D by more than {C_RTOL:.0%}; give two of N, D, C", column="C", rows=bad.tolist()
            )
    if "N" in arrs and "D" in arrs:
        arrs.setdefault("C", 6.0 * arrs["N"] * arrs["D"])
    elif "N" in arrs and "C" in arrs:
        arrs["D"] = arrs["C"] / (6.0 * arrs["N"])
    elif "D" in arrs and "C" in arrs:
        arrs["N"] = arrs["C"] / (6.0 * arrs["D"])
    missing = [k for k in law.inputs if k not in arrs]
    if missing:
        raise DataError(f"the {law.name!r} law needs {list(law.inputs)}; give two of N, D, C", column=missing[0])
    cols = [k for k in ("N", "D", "C", "U") if k in arrs]
    return pd.DataFrame({k: arrs[k].ravel() for k in cols})


def resolve(stored_disc: Discrepancy | None, how) -> Discrepancy | None:
    """The discrepancy used for ``extrapolation=how``: ``"none"`` → None; ``"discrepancy"`` → the stored calibration
    (a :class:`NotCalibratedError` without one: predicting never fits); ``"auto"`` → the stored calibration or None;
    a :class:`Discrepancy` → itself."""
    if isinstance(how, Discrepancy):
        return how
    if how not in EXTRAPOLATIONS:
        raise UnknownNameError(f"unknown extrapolation {how!r}; choose one of {EXTRAPOLATIONS} or pass a Discrepancy")
    if how == "discrepancy" and stored_disc is None:
        raise NotCalibratedError(
            "extrapolation='discrepancy' needs a calibrated posterior: run post = scalebayes.calibrate(post) first "
            "(it learns the discrepancy from leave-largest-out refits and stores it with the posterior)"
        )
    return None if how == "none" else stored_disc


def label(disc: Discrepancy | None) -> str:
    """The ``predictive`` attribute of a result: ``"calibrated"`` with a discrepancy, else ``"parameters only"``."""
    return CALIBRATED if disc is not None else PARAMETERS_ONLY


def _padded_log_mean(law, params, frame: pd.DataFrame) -> np.ndarray:
    """log L of the law, (S, P), with the query axis padded to a power of two (≥ 8) by repeating the first point so
    the jitted function compiles once per size bucket rather than once per query length."""
    P = len(frame)
    size = max(8, 1 << (P - 1).bit_length())
    x = {}
    for k in law.inputs:
        v = np.log(frame[k].to_numpy(dtype=float))
        x[k] = jnp.asarray(np.concatenate([v, np.full(size - P, v[0])]))
    return np.asarray(log_mean_draws(law, params, x))[:, :P]


def for_frame(post, frame: pd.DataFrame, *, seed: int = 0, disc: Discrepancy | None = None) -> LogPredictive:
    """Predictive of new runs' log loss at the rows of ``frame`` (columns of the law's inputs and ``family``): each
    row's own family when it was fitted, else a new family from the population; with ``disc``, the discrepancy at
    each row's distance outside its family's fitted runs."""
    fam = frame["family"].astype(str).to_numpy()
    return _build(post, frame, [f if f in post.families else None for f in fam], seed, disc)


def for_query(post, query: pd.DataFrame, *, family: str | None, seed: int, disc: Discrepancy | None) -> LogPredictive:
    """Predictive at the ``query`` points (:func:`query_frame`) for one family: a fitted family's name, or None for
    a new family (the only family of a one-family fit)."""
    return _build(post, query, [post.resolve_family(family)] * len(query), seed, disc)


def _build(post, frame: pd.DataFrame, fams: list, seed: int, disc: Discrepancy | None) -> LogPredictive:
    """:class:`LogPredictive` at the rows of ``frame`` for per-row families ``fams`` (fitted names, None = new)."""
    law = post.law
    S, P = post.n_samples, len(frame)
    log_mu, sigma, nu, extra = np.empty((S, P)), np.empty((S, P)), None, np.zeros((S, P))
    centre = {k: jnp.asarray(v) for k, v in post.centre.items()}
    for f in dict.fromkeys(fams):  # each family once, in order of appearance (None: a new family)
        m = np.array([g == f for g in fams])
        lat, noise = post._latent_draws(f, seed=seed)
        log_mu[:, m] = _padded_log_mean(law, law.to_params(lat, centre), frame.loc[m])
        sigma[:, m] = np.asarray(noise.scale(*_log_nd(frame.loc[m], post.noise_trend)))
        nu = np.asarray(noise.nu)
        if disc is not None:
            extra[:, m] = disc.sd({k: np.log(frame.loc[m, k].to_numpy(dtype=float)) for k in law.inputs}, S, f)
    return LogPredictive(log_mu=log_mu, sigma=sigma, nu=nu, extra_sd=extra)


def _log_nd(frame: pd.DataFrame, trend: bool) -> tuple[np.ndarray, np.ndarray]:
    """log N and log D of the rows, as the noise trend reads them; zeros without a trend (a law of C alone has no
    N or D, and its noise does not depend on them)."""
    if not trend:
        return np.zeros(len(frame)), np.zeros(len(frame))
    return tuple(np.log(frame[k].to_numpy(dtype=float)) for k in ("N", "D"))


def summary(
    pred: LogPredictive, query: pd.DataFrame, *, quantiles: Sequence[float], include_noise: bool, seed: int
) -> tuple[pd.DataFrame, np.ndarray]:
    """The query's columns, ``mean`` (:meth:`LogPredictive.mean`) and one ``q<p>`` column per quantile of the loss
    (nats), with the draws of :meth:`LogPredictive.draws`; and those loss draws (S, P), nats."""
    values = np.exp(pred.draws(seed, include_noise=include_noise))
    out = query.copy()
    out["mean"] = pred.mean(seed)
    for k, v in quantile_frame(values, quantiles).items():
        out[k] = v
    return out, values
