"""The law's own extrapolation errors on the data's larger runs, and the discrepancy they imply.

Inner splits. For each split direction (the largest runs by compute C, or by parameters N) and each hold-out
fraction f, every family's law is refitted on its remaining runs and predicts its held-out ones:
r_i = log y_i − log ŷ_i at distance d_i outside the refit's runs (:mod:`scalebayes.discrepancy`). The refits are
Huber point fits (:func:`scalebayes.baselines.refit_subsets`, every split and family in one vmapped BFGS started at
the posterior's median), not posterior refits: a refit on the smaller runs sits on a more curved ridge, where NUTS
refits often fail their diagnostics and each would cost a whole fit, while a point fit costs a fraction of one and
reports convergence per lane (Huber's loss with its threshold at the noise level, :func:`huber_threshold`). Each
refit is repeated on bootstrap resamples of its runs (in the same vmapped call),
so its own parameter error is measured and not mistaken for form error. A lane whose optimisation did not converge
is left out and reported, never used silently.

Model of one split's residuals (one split per direction, fraction and family: its P held-out runs share one
refitted curve, so their errors are correlated):

    r ~ Normal(0, s²·I + diag(b) + κ²·[ρ·v·vᵀ + (1 − ρ)·diag(v²)]),   v_i = d_i^γ,

b the bootstrap variance of each held-out prediction (the refit's parameter error; its correlation between runs is
left out), s the run noise (root mean square of the refits' own training residuals: not a robust scale, because
the held-out runs have the same heavy-tailed noise as the training runs), κ the discrepancy's scale (nats of log loss at
one nat of distance), γ how it grows with distance (γ = 1: linear; γ = 2: the curvature a power law misses), ρ how
much of it one split's runs share. Each split's log likelihood is closed-form (a rank-one update). Splits share
held-out runs (a run held out at f = 0.2 is also held out at f = 0.35), so the summed log likelihood is tempered by
distinct runs / held-out entries.

Posterior on a grid. log κ ~ Normal(prior), by default :data:`KAPPA_PRIOR`, learned across six public datasets
(the extrapolation suite scores with a prior from the other datasets only, leave-one-dataset-out); γ and ρ
uniform on their grids. The user's own splits update it; few
or uninformative splits leave it near the prior, so κ is never plugged in from four refits. Prediction draws (κ, γ)
pairs from this posterior, one per posterior draw (:meth:`KappaPosterior.draws`), which integrates κ's uncertainty.

Several families. Each fitted family gets its own (κ, γ), partially pooled (:class:`FamilyKappas`): the law may fit
one family's data far worse than another's (porian_isoflop's families with untuned hyperparameters have κ ~10x the
others'), and one κ for all would widen every family's intervals by the worst family's error. A new family takes κ
from the families' population.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import jax.numpy as jnp
import numpy as np
import pandas as pd
from scipy.special import logsumexp

from .baselines import refit_subsets
from .discrepancy import distances, fitted_regions
from .holdout import SPLIT_COLUMN, holdout_mask
from .likelihood import robust_sd
from .padding import pad, pad_size
from .predict import log_mean_draws

#: Inner hold-out fractions: the largest 10-40% of the runs, so the errors are seen at several distances.
DEFAULT_FRACTIONS = (0.1, 0.2, 0.3, 0.4)
#: Directions of the inner splits: the largest runs by compute C and by parameters N.
DEFAULT_SPLITS = ("compute", "params")
#: Prior of log κ (mean, s.d.), κ in nats of log loss at one nat of log-input distance, learned across the six public
#: datasets of the extrapolation suite by ``benchmarks/extrapolation/kappa_prior.py`` (provenance and per-dataset
#: modes in ``benchmarks/extrapolation/KAPPA_PRIOR.md``: modes of log κ from −4.35 (chinchilla_epoch) to −2.30
#: (porian_isoflop); their mean, and their s.d. floored at 1). The suite itself scores the package with a prior
#: learned from the *other* datasets only.
KAPPA_PRIOR = (-3.52, 1.0)
#: Grids: log κ from 1e-4 to 1; growth exponents γ; within-split correlations ρ.
LOG_KAPPA = np.linspace(np.log(1e-4), 0.0, 73)
GAMMAS = (0.5, 1.0, 1.5, 2.0)
RHOS = (0.0, 0.5, 0.9)
#: Bootstrap resamples per inner refit, for its parameter error (a variance per held-out run: 16 pin it to ~35%).
BOOTSTRAP = 16
#: A family's refit needs this many training runs per law parameter.
RUNS_PER_PARAM = 2


@dataclass
class SplitErrors:
    """One inner split: held-out residuals r (P,) (observed − predicted log loss, nats), their distances (P,)
    outside the refit's runs, the variance (P,) of the refit's prediction over bootstrap resamples of its runs (its
    parameter error, nats²), the run noise s (nats), their row labels (P,) and a description ``info``; from
    :func:`split_errors` also the refit's own training residuals (n_train,) and their row labels (for diagnostics of
    the noise near the held-out edge, ``benchmarks/extrapolation/delta_sizing.py``)."""

    residual: np.ndarray
    distance: np.ndarray
    param_var: np.ndarray
    noise: float
    rows: np.ndarray
    info: dict
    train_residual: np.ndarray | None = None
    train_rows: np.ndarray | None = None


@dataclass
class _Lane:
    """One refit: split ``plan`` index, family, training mask (n,)."""

    split: int
    family: str
    train: np.ndarray


def _lanes(data, law, families, directions, fractions):
    """The splits (direction, fraction, held-out mask) and one lane per (split, family) with enough runs."""
    fam = np.asarray(data.frame["family"], dtype=str)
    plan, lanes = [], []
    for direction in directions:
        for f in fractions:
            test = holdout_mask(data, direction, f)
            plan.append((direction, float(f), test))
            for g in families:
                train = ~test & (fam == g)
                if train.sum() >= RUNS_PER_PARAM * law.n_params and (test & (fam == g)).any():
                    lanes.append(_Lane(len(plan) - 1, g, train))
    return plan, lanes


def _weights(lanes: list[_Lane], bootstrap: int, seed: int) -> np.ndarray:
    """Run weights (lanes·(1 + bootstrap), n): each lane's training mask, then its bootstrap multiplicities."""
    rng = np.random.default_rng(seed)
    rows = []
    for lane in lanes:
        idx = np.flatnonzero(lane.train)
        rows.append(lane.train.astype(float))
        for _ in range(bootstrap):
            rows.append(np.bincount(rng.choice(idx, idx.size), minlength=lane.train.size).astype(float))
    return np.stack(rows)


def _family_rows(fam: np.ndarray, lane_families: list[str], weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each refit's runs gathered from its own family: indices (K, m) and their weights (K, m), m the padded size of
    the largest family (padding: index 0 at weight 0). A lane only ever weighs its own family's runs, so it need
    not scan the others' (with 8 families, an eighth of the work)."""
    members = {g: np.flatnonzero(fam == g) for g in dict.fromkeys(lane_families)}
    m = pad_size(max(len(v) for v in members.values()))
    idx = np.stack([pad(members[g], m, 0) for g in lane_families])
    real = np.arange(m)[None, :] < np.array([len(members[g]) for g in lane_families])[:, None]
    return idx, np.take_along_axis(weights, idx, axis=1) * real


def split_errors(
    data,
    law,
    starts: dict[str, dict[str, float]],
    *,
    fractions: Sequence[float] = DEFAULT_FRACTIONS,
    split: str | Sequence[str] = DEFAULT_SPLITS,
    bootstrap: int = BOOTSTRAP,
    seed: int = 0,
) -> tuple[list[SplitErrors], dict]:
    """The inner splits of ``data``'s runs (module docstring) for ``law`` (a :class:`~scalebayes.laws.Law`), each
    family's refits started at ``starts[family]`` (published parameters, e.g. its posterior medians) and repeated on
    ``bootstrap`` resamples of its runs (``seed``) for their parameter error. Returns the splits with held-out runs
    and a report (lanes used, lanes left out and why)."""
    directions = [s for s in ((split,) if isinstance(split, str) else split) if SPLIT_COLUMN[s] in data.frame]
    plan, lanes = _lanes(data, law, list(starts), directions or ["compute"], fractions)
    if not lanes:
        return [], {"lanes": 0, "left_out": [], "reason": "no family has enough runs for an inner refit"}
    B = int(bootstrap)
    fam = np.asarray(data.frame["family"], dtype=str)
    log_y = np.log(data.loss)
    delta = huber_threshold(data, law, starts)
    lane_fams = [ln.family for ln in lanes for _ in range(B + 1)]
    rows, weights = _family_rows(fam, lane_fams, _weights(lanes, B, seed))
    params, ok = refit_subsets(data, law, weights, [starts[g] for g in lane_fams], delta=delta, rows=rows)
    parts: dict[tuple[int, str], tuple] = {}
    train_r, left_out = [], []
    for j, lane in enumerate(lanes):
        direction, f, test = plan[lane.split]
        k = j * (B + 1)
        boots = [params[i] for i in range(k + 1, k + B + 1) if ok[i]]
        if not ok[k] or len(boots) < 2:
            left_out.append({"split": direction, "fraction": f, "family": lane.family, "why": "refit did not converge"})
            continue
        m = fam == lane.family
        pred = _log_predict(law, [params[k], *boots], data.frame.loc[m])  # (1 + B', runs of the family)
        train_r.append(log_y[m & lane.train] - pred[0, lane.train[m]])
        held = test[m]
        sub = data.frame.loc[m & test]
        d = distances(fitted_regions(data.subset(lane.train), law), sub, law)
        # one split per (direction, fraction, family): each family's held-out runs share one refitted curve
        parts[(lane.split, lane.family)] = (
            log_y[m & test] - pred[0, held],
            d,
            pred[1:, held].var(axis=0, ddof=1),
            sub.index.to_numpy(),
            train_r[-1],
            data.frame.index.to_numpy()[m & lane.train],
        )
    s = float(np.sqrt(np.mean(np.concatenate(train_r) ** 2))) if train_r else np.nan
    out = []
    for (p, family), (r, d, v, rows, tr, tr_rows) in parts.items():
        direction, f, test = plan[p]
        n_train = int((~test & (fam == family)).sum())
        info = {"split": direction, "fraction": f, "family": family, "n_train": n_train, "n_test": len(r)}
        out.append(SplitErrors(r, d, v, s, rows, info, tr, tr_rows))
    return out, {"lanes": len(lanes), "left_out": left_out, "noise": s, "huber_delta": delta}


def huber_threshold(data, law, starts: dict[str, dict[str, float]]) -> float:
    """The inner refits' Huber threshold δ (nats of log loss): 1.345 robust s.d. (1.4826·MAD) of the residuals at
    the start parameters, Huber's choice for 95% efficiency under Normal noise. A δ near the noise keeps the
    objective smooth where the runs are, so BFGS converges (Hoffmann's δ = 1e-3 makes it nearly L1: on checkpoint
    data 7 of 8 refits hit their iteration budget), while runs beyond a few δ still count only linearly."""
    fam = np.asarray(data.frame["family"], dtype=str)
    r = np.concatenate(
        [np.log(data.loss[fam == f]) - _log_predict(law, [p], data.frame.loc[fam == f])[0] for f, p in starts.items()]
    )
    return max(1.345 * robust_sd(r), 1e-4)


def _log_predict(law, params: list[dict], frame: pd.DataFrame) -> np.ndarray:
    """The law's log mean loss at the rows of ``frame`` for each of L sets of published parameters, (L, rows)."""
    log_x = {k: jnp.log(jnp.asarray(frame[k].to_numpy(dtype=float))) for k in law.inputs}
    return np.asarray(log_mean_draws(law, {k: jnp.asarray([q[k] for q in params]) for k in params[0]}, log_x))


def _usable(splits: Sequence[SplitErrors]) -> list[SplitErrors]:
    return [e for e in splits if np.isfinite(e.noise) and e.noise > 0]


def tempered_loglik(splits: Sequence[SplitErrors]) -> np.ndarray | float:
    """Σ :func:`split_loglik` over ``splits``, tempered by distinct held-out runs / held-out entries (a run held out
    at f = 0.2 is also held out at f = 0.35); 0.0 without usable splits."""
    splits = _usable(splits)
    if not splits:
        return 0.0
    entries = sum(len(e.residual) for e in splits)
    distinct = len(set().union(*(map(str, e.rows) for e in splits)))
    return (distinct / entries) * sum(split_loglik(e) for e in splits)


def _normalised(lw: np.ndarray) -> np.ndarray:
    return lw - logsumexp(lw)


def split_loglik(e: SplitErrors) -> np.ndarray:
    """log N(r; 0, Σ(κ, γ, ρ)) of one split over the grid, shape (len(LOG_KAPPA), len(GAMMAS), len(RHOS))."""
    r = e.residual
    k2 = np.exp(2 * LOG_KAPPA)[:, None, None, None]
    v = e.distance[None, None, None, :] ** np.asarray(GAMMAS)[None, :, None, None]
    rho = np.asarray(RHOS)[None, None, :, None]
    dg = e.noise**2 + e.param_var + k2 * (1 - rho) * v**2  # diagonal part
    u2 = k2 * rho  # rank-one part: Σ = diag(dg) + u2·v vᵀ
    a = 1 + np.sum(u2 * v**2 / dg, axis=-1)
    b = np.sum(v * r / dg, axis=-1)
    quad = np.sum(r**2 / dg, axis=-1) - u2[..., 0] * b**2 / a
    logdet = np.sum(np.log(dg), axis=-1) + np.log(a)
    return -0.5 * (len(r) * np.log(2 * np.pi) + logdet + quad)


@dataclass
class KappaPosterior:
    """The grid posterior of (log κ, γ, ρ): ``log_weight`` (len(LOG_KAPPA), len(GAMMAS), len(RHOS)), normalised."""

    log_weight: np.ndarray

    @classmethod
    def learn(cls, splits: Sequence[SplitErrors], prior: tuple[float, float] = KAPPA_PRIOR):
        """Prior × tempered likelihood of ``splits`` (module docstring); the prior alone without splits."""
        m, sd = prior
        prior_lw = -0.5 * ((LOG_KAPPA - m) / sd) ** 2
        lw = np.broadcast_to(prior_lw[:, None, None], (len(LOG_KAPPA), len(GAMMAS), len(RHOS))).copy()
        return cls(_normalised(lw + tempered_loglik(splits)))

    def draws(self, n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
        """(κ (n,), γ (n,)) from the posterior, log κ spread uniformly within its grid cell."""
        rng = np.random.default_rng(seed)
        w = np.exp(logsumexp(self.log_weight, axis=2)).ravel()
        idx = rng.choice(w.size, size=n, p=w / w.sum())
        ik, ig = np.unravel_index(idx, (len(LOG_KAPPA), len(GAMMAS)))
        step = LOG_KAPPA[1] - LOG_KAPPA[0]
        log_k = LOG_KAPPA[ik] + step * (rng.random(n) - 0.5)
        return np.exp(log_k), np.asarray(GAMMAS)[ig]

    def mode(self) -> tuple[float, float]:
        """(κ, γ) at the grid maximum of the (κ, γ) marginal."""
        m = logsumexp(self.log_weight, axis=2)
        ik, ig = np.unravel_index(int(np.argmax(m)), m.shape)
        return float(np.exp(LOG_KAPPA[ik])), float(GAMMAS[ig])


#: Spread of log κ between the families of one fit, as fractions of the prior's s.d. (uniform over them).
WITHIN = (0.2, 0.4, 0.6, 0.8, 0.95)


@dataclass
class FamilyKappas:
    """Grid posteriors of (log κ, γ, ρ) per fitted family, partially pooled, and the population's (a new family).

    Families of one fit share a mean m of log κ: log κ_f ~ Normal(m, s_w), m ~ Normal(prior mean,
    √(prior s.d.² − s_w²)), s_w uniform on :data:`WITHIN` × prior s.d. Each family's log κ is then marginally
    Normal(prior), so one family alone gets exactly :meth:`KappaPosterior.learn`'s answer, while with several the data
    learn how much they differ: a family the law fits badly does not widen the others' intervals, and a family with
    few inner splits borrows the others' κ. γ and ρ are per family (uniform priors); a new family takes log κ from
    the population and (γ, ρ) from the fitted families' average.
    """

    families: dict[str, KappaPosterior]
    new: KappaPosterior

    @classmethod
    def learn(
        cls,
        splits: Sequence[SplitErrors],
        prior: tuple[float, float] = KAPPA_PRIOR,
        gamma_prior: Sequence[float] | None = None,
    ) -> FamilyKappas:
        """From inner ``splits`` labelled by ``info["family"]`` (:func:`split_errors`), under ``prior`` of log κ
        and ``gamma_prior`` (probabilities over :data:`GAMMAS`; None: uniform)."""
        by: dict[str, list] = {}
        for e in _usable(splits):
            by.setdefault(str(e.info.get("family")), []).append(e)
        ll = {f: tempered_loglik(es) for f, es in by.items()}
        lk, lpm = _hyper_grid(prior)  # log p(κ_k | s_w, m) (W, M, K); log p(m | s_w) (W, M)
        log_gr = _log_gamma_rho(gamma_prior)  # (G, R)
        joint = {f: lk[..., None, None] + v[None, None] + log_gr for f, v in ll.items()}  # (W, M, K, G, R)
        lml = {f: logsumexp(j, axis=(2, 3, 4)) for f, j in joint.items()}  # family marginal likelihoods (W, M)
        lh = lpm + sum(lml.values(), np.zeros_like(lpm))
        lh = lh - logsumexp(lh)  # p(s_w, m | every family's splits)
        fams = {
            f: KappaPosterior(_normalised(logsumexp((lh - lml[f])[..., None, None, None] + j, axis=(0, 1))))
            for f, j in joint.items()
        }
        new_k = logsumexp(lh[..., None] + lk, axis=(0, 1))  # (K,)
        if fams:
            with np.errstate(divide="ignore"):  # a γ the prior excludes has weight 0
                new_gr = np.log(np.mean([np.exp(logsumexp(k.log_weight, axis=0)) for k in fams.values()], axis=0))
        else:
            new_gr = log_gr
        return cls(fams, KappaPosterior(_normalised(new_k[:, None, None] + new_gr[None])))


def _log_gamma_rho(gamma_prior: Sequence[float] | None) -> np.ndarray:
    """log p(γ, ρ) on the grid (len(GAMMAS), len(RHOS)): ``gamma_prior`` over γ (uniform if None), ρ uniform."""
    g = np.full(len(GAMMAS), 1.0) if gamma_prior is None else np.asarray(gamma_prior, float)
    with np.errstate(divide="ignore"):  # a γ of prior weight 0 gets log weight −inf
        lg = np.log(g / g.sum())
    return np.broadcast_to(lg[:, None] - np.log(len(RHOS)), (len(GAMMAS), len(RHOS)))


def _hyper_grid(prior: tuple[float, float]) -> tuple[np.ndarray, np.ndarray]:
    """(log p(log κ_k | s_w, m) (W, M, K), log p(m | s_w) (W, M)), each normalised on its grid; m on LOG_KAPPA."""
    m0, s0 = prior
    sw = s0 * np.asarray(WITHIN)[:, None, None]
    lk = -0.5 * ((LOG_KAPPA[None, None, :] - LOG_KAPPA[None, :, None]) / sw) ** 2
    lk = lk - logsumexp(lk, axis=2, keepdims=True)
    sm = np.sqrt(s0**2 - sw[:, :, 0] ** 2)
    lpm = -0.5 * ((LOG_KAPPA[None, :] - m0) / sm) ** 2
    return lk, lpm - logsumexp(lpm, axis=1, keepdims=True) - np.log(len(WITHIN))
