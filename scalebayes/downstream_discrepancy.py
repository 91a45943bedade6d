"""The downstream law's extrapolation discrepancy, learned from the training families' own largest models.

A model trained far beyond its family's largest fitted model is forecast by extending the family's trend; how far
off that trend the new model lands is not something the fitted data show. Backtests show such a model's benchmarks
err together (BLOOM-176B at 27× its family's compute misses on every benchmark), so the discrepancy is a capability
shift shared by the model's benchmarks, in decades of effective compute, growing with the distance d (decades of
log10 C beyond the family's largest fitted model, :meth:`scalebayes.downstream.Design.distance`):

    x_eff ← x_eff + δ,   δ ~ Normal(0, (κ·d)²),

κ in decades of shift per decade of distance; d = 0 (inside the family's range, or a new family) leaves the
forecast as it was. As the loss package's discrepancy (:mod:`scalebayes.formerror`), κ is learned from inner splits
of the training data only: every training family with at least ``min_models`` models has its largest one held out
(:func:`largest_held_out`), the law is refitted on the rest (one extra NUTS fit), and the held-out models' scores give
a grid posterior of κ:

    p(κ | inner) ∝ HalfNormal(κ; PRIOR_SCALE) · Π_i ∫ Π_b BetaBinomial(k_ib | x_i + e_f + v_fb + m_i + δ_i) dθ,

the integral over the inner posterior's draws θ (thinned to ``max_draws``) and, by Gauss-Hermite quadrature over
``nodes`` points, over the model's own residual m_i and δ_i together (independent normals: one of s.d.
sqrt(σ_m² + κ²·d_i²)). A model's benchmarks enter jointly, so their shared error is what κ measures. Forecasts draw
κ from this posterior, one per posterior draw (:func:`with_extrapolation`), so κ's uncertainty is integrated.

Units: κ decades of effective log10 compute per decade of log10 C; d decades; accuracy fractions.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
from numpy.polynomial.hermite_e import hermegauss
from scipy.special import betaln, expit, gammaln, logsumexp

from .downstream import DownstreamPosterior
from .errors import DataError, ModelError
from .scores import BenchmarkScores

#: Grid of κ (decades of shift per decade of distance): steps of 0.025 up to 2, far beyond any backtest's mode.
KAPPA_GRID = np.linspace(0.0, 2.0, 81)
#: Half-normal prior scale of κ: a shift of s.d. 0.5 decades at one decade of distance is plausible, 2 is not.
PRIOR_SCALE = 0.5
#: Gauss-Hermite nodes for the held-out model's shift (smooth integrand: 16 nodes are exact to ~1e-6 here).
NODES = 16
#: Posterior draws used in the held-out likelihood (every k-th): enough that the κ posterior does not move.
MAX_DRAWS = 1000


def largest_held_out(scores: BenchmarkScores, min_models: int = 3) -> np.ndarray:
    """Boolean mask over ``scores`` rows, True = kept: the largest-C model of every family with at least
    ``min_models`` models is held out (False)."""
    f = scores.frame
    keep = np.ones(len(f), dtype=bool)
    for _, g in f.groupby("family"):
        if len(g) >= min_models:
            keep[f.index.get_loc(g["C"].idxmax())] = False
    return keep


def _counts(post: DownstreamPosterior, held: BenchmarkScores, model: str):
    """Benchmark indices, above-chance counts k and question counts n of one held-out model's scores."""
    d, row = post.design, held.frame.loc[model]
    j = np.array([i for i, b in enumerate(d.benchmarks) if b in row.index and np.isfinite(row[b])], dtype=int)
    return j, d.above_chance_counts(j, row[[d.benchmarks[i] for i in j]].to_numpy(float)), d.questions[j]


def model_loglik(post: DownstreamPosterior, held: BenchmarkScores, model: str, kappas, *, nodes: int = NODES,
                 max_draws: int = MAX_DRAWS) -> np.ndarray:  # fmt: skip
    """log p(model's scores | κ) (K,) at each κ in ``kappas`` (K,), under ``post`` (fitted without this model; its
    family must be fitted), integrating the posterior draws, the model's residual and the shift δ ~ N(0, (κ·d)²)."""
    d, row = post.design, held.frame.loc[model]
    fam = row["family"]
    if fam not in d.families:
        raise DataError(f"held-out model {model!r}: its family {fam!r} was not fitted", column="family")
    j, k, n = _counts(post, held, model)
    far = d.distance(float(row["C"]), fam)
    step = max(1, -(-len(post.draws["sigma_m"]) // max_draws))
    s = {key: np.asarray(v)[::step] for key, v in post.draws.items()}
    fi = d.families.index(fam)
    x = np.log10(row["C"]) - d.x0 + s["tau_e"][:, None] * s["z"][:, fi, None] + s["tau_b"][:, j] * s["y"][:, j, fi]
    scale = np.sqrt(s["sigma_m"][:, None] ** 2 + (np.asarray(kappas, float)[None, :] * far) ** 2)  # (S, K)
    z, w = hermegauss(nodes)
    xs = x[:, None, None, :] + (scale[:, None, :] * z[None, :, None])[..., None]  # (S, T, K, B)
    u, slope, mid, phi = (s[name][:, j][:, None, None, :] for name in ("u", "slope", "mid", "phi"))
    mu = np.clip(u * expit(slope * (xs - mid)), 1e-9, 1.0 - 1e-9)  # the above-chance mean, as in downstream.model
    ll = betaln(k + mu * phi, n - k + (1.0 - mu) * phi) - betaln(mu * phi, (1.0 - mu) * phi)
    ll = ll.sum(-1) + np.log(w / w.sum())[None, :, None]  # (S, T, K)
    const = float(np.sum(gammaln(n + 1) - gammaln(k + 1) - gammaln(n - k + 1)))
    return logsumexp(ll, axis=(0, 1)) - np.log(ll.shape[0]) + const


@dataclass(frozen=True)
class KappaPosterior:
    """Grid posterior of κ: ``grid`` (K,), probabilities ``prob`` (K,), the held-out models and their distances
    (decades) and log likelihoods (models, K) it was learned from."""

    grid: np.ndarray
    prob: np.ndarray
    models: tuple[str, ...]
    distances: np.ndarray
    loglik: np.ndarray

    def quantile(self, q: float) -> float:
        """κ at cumulative probability ``q`` of the grid posterior (linear between grid points)."""
        cdf = np.cumsum(self.prob)
        return float(np.interp(q, cdf, self.grid))

    def draws(self, n: int, *, seed: int) -> np.ndarray:
        """``n`` draws of κ: a grid point by its probability, then uniform within its cell (folded at 0)."""
        rng = np.random.default_rng(seed)
        h = float(self.grid[1] - self.grid[0])
        return np.abs(rng.choice(self.grid, size=n, p=self.prob) + h * (rng.random(n) - 0.5))


def learn(inner: DownstreamPosterior, held: BenchmarkScores, *, prior_scale: float = PRIOR_SCALE,
          grid: np.ndarray = KAPPA_GRID, **kw) -> KappaPosterior:  # fmt: skip
    """Grid posterior of κ from ``inner`` (the law fitted without ``held``'s models) and ``held``'s scores (every
    model's family fitted in ``inner``); ``kw`` goes to :func:`model_loglik`."""
    grid = np.asarray(grid, dtype=float)
    if grid.ndim != 1 or grid.size < 2 or grid[0] != 0.0 or np.any(np.diff(grid) <= 0):
        raise ModelError("the κ grid must be increasing, evenly spaced from 0")
    if len(held) == 0:
        raise DataError("no held-out models to learn κ from", column="family")
    models = tuple(held.frame.index)
    ll = np.array([model_loglik(inner, held, m, grid, **kw) for m in models])
    lp = ll.sum(0) - 0.5 * (grid / prior_scale) ** 2
    prob = np.exp(lp - logsumexp(lp))
    far = np.array([inner.design.distance(float(held.frame.loc[m, "C"]), held.frame.loc[m, "family"]) for m in models])
    return KappaPosterior(grid, prob, models, far, ll)


def with_extrapolation(post: DownstreamPosterior, kappa: KappaPosterior, *, seed: int) -> DownstreamPosterior:
    """A copy of ``post`` whose forecasts add the extrapolation shift, κ drawn from ``kappa`` (one per posterior
    draw, ``seed``)."""
    return dataclasses.replace(post, kappa=kappa.draws(len(post.draws["sigma_m"]), seed=seed))
