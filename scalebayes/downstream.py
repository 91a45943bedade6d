"""Downstream accuracy of models not yet trained: an observational, hierarchical sigmoid in log-compute.

For benchmark b, model i of family f, trained with C_i FLOP (x_i = log10 C_i − x0, decades from the data's centre):

    acc_ib = floor_b + (ceil_b − floor_b) · sigmoid(slope_b · (x_i + e_f + v_fb + m_i − mid_b))

- ``floor_b``: the benchmark's chance accuracy (:data:`scalebayes.scores.CHANCE`), fixed, so the law never goes
  below chance; ``ceil_b = floor_b + (1 − floor_b)·u_b``, u_b ~ Beta(4, 1) (most of the way to 1, not all).
- ``slope_b`` ~ LogNormal(0, 0.75) per decade of compute; ``mid_b`` ~ Normal(0, 2) decades.
- ``e_f = τ_e·z_f``: the family's compute efficiency in decades of FLOP, shared by all benchmarks and partially
  pooled (non-centred; τ_e ~ HalfNormal(0.5)); it is the observational-scaling idea of Ruan et al. (2024) and
  Sloth (Maia Polo et al. 2024) that families convert compute into capability at different rates.
- ``v_fb = τ_b·y_fb``: the family's own deviation on benchmark b from its shared efficiency (τ_b ~ HalfNormal(0.5)
  per benchmark, non-centred): families differ in what their data teach (code, maths), so a family strong on
  GSM8K need not be as strong on HellaSwag; the shared e_f still carries most of a family's information.
- ``m_i = σ_m·w_i``: the model's own capability residual, also shared by its benchmarks (σ_m ~ HalfNormal(0.3)),
  so one model's scores err together, as held-out models' do.
- Likelihood on the above-chance scale: a score y is q = (y − floor_b)/(1 − floor_b), the fraction of the way
  from chance to perfect, and k = round(q·n_b) of n_b questions (:data:`scalebayes.scores.QUESTIONS`) is
  beta-binomial with mean (acc − floor)/(1 − floor) = u_b·sigmoid(...) and precision φ_b ~ LogNormal(log 100, 1):
  binomial sampling plus the protocol and data-mixture noise between evaluations. Predictions are
  floor + (1 − floor)·k/n, so always in [floor, 1]. Scores below chance (a guesser's sampling noise; a handful of
  cells) are set to chance, and ``Design.below_chance`` counts them per benchmark: nothing is dropped, but a
  near-chance model's interval does not reach below chance.

Extrapolation: a model far beyond its family's largest fitted model lands off the family's trend by more than σ_m
says, and all its benchmarks with it. :mod:`scalebayes.downstream_discrepancy` learns that error's growth with
distance from an inner split and sets ``DownstreamPosterior.kappa``; forecasts then add its shift.

Sampling: NumPyro's own NUTS (``numpyro.infer.NUTS``) on this NumPyro model, not the package's compiled sampler
(whose potential is written for loss laws); the verdict on R-hat, ESS and divergences is the package's
(:func:`scalebayes.diagnostics.summarise`), and failures warn with :class:`~scalebayes.errors.SamplingWarning`.

Units: C training FLOP, accuracy a fraction in [0, 1], efficiency offsets in decades (log10) of FLOP.
"""

from __future__ import annotations

from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import pandas as pd
from numpyro.infer import MCMC, NUTS
from scipy import optimize

from .diagnostics import Diagnostics, summarise_chains, warn_if_failed
from .errors import DataError, ModelError, UnknownNameError
from .precision import ensure_float64
from .predict import qcol
from .scores import CHANCE, QUESTIONS, BenchmarkScores

PARAMS = ("mid", "slope", "u", "phi", "tau_b", "tau_e", "sigma_m")
QUANTILES = (0.05, 0.5, 0.95)
#: Second word of the seed of the extrapolation shift's normals (a stream apart from the other noise).
SHIFT_STREAM = 17


def law(x, floor, ceil, slope, mid):
    """Mean accuracy at effective log10-compute ``x`` (decades from the centre): floor + (ceil − floor)·sigmoid."""
    return floor + (ceil - floor) * jax.nn.sigmoid(slope * (x - mid))


def model(x, fam, model_idx, bench, n, n_bench: int, n_fam: int, n_model: int, k=None):
    """The NumPyro model on the above-chance scale; arrays are per observation (one model on one benchmark), ``k``
    the above-chance count of ``n`` questions."""
    n_b = n_bench
    with numpyro.plate("benchmark", n_b):
        mid = numpyro.sample("mid", dist.Normal(0.0, 2.0))
        slope = numpyro.sample("slope", dist.LogNormal(0.0, 0.75))
        u = numpyro.sample("u", dist.Beta(4.0, 1.0))
        phi = numpyro.sample("phi", dist.LogNormal(jnp.log(100.0), 1.0))
        tau_b = numpyro.sample("tau_b", dist.HalfNormal(0.5))
    tau_e = numpyro.sample("tau_e", dist.HalfNormal(0.5))
    sigma_m = numpyro.sample("sigma_m", dist.HalfNormal(0.3))
    with numpyro.plate("family", n_fam):
        z = numpyro.sample("z", dist.Normal(0.0, 1.0))
        with numpyro.plate("family_benchmark", n_b, dim=-2):
            y = numpyro.sample("y", dist.Normal(0.0, 1.0))  # (n_b, n_fam)
    with numpyro.plate("model", n_model):
        w = numpyro.sample("w", dist.Normal(0.0, 1.0))
    xe = x + tau_e * z[fam] + tau_b[bench] * y[bench, fam] + sigma_m * w[model_idx]
    mu = law(xe, 0.0, u[bench], slope[bench], mid[bench])  # above-chance fraction: (acc - floor) / (1 - floor)
    mu = jnp.clip(mu, 1e-6, 1.0 - 1e-6)  # beta-binomial needs a strictly interior mean
    with numpyro.plate("obs", x.shape[0]):
        numpyro.sample("k", dist.BetaBinomial(mu * phi[bench], (1.0 - mu) * phi[bench], n), obs=k)


@dataclass(frozen=True)
class Design:
    """The arrays of one fit and the names behind its indices."""

    x0: float
    benchmarks: tuple[str, ...]
    families: tuple[str, ...]
    models: tuple[str, ...]
    floor: np.ndarray
    questions: np.ndarray
    below_chance: dict
    #: per family, log10 C of its largest fitted model minus x0 (decades): where its data end
    x_max: np.ndarray | None = None

    def distance(self, C: float, family: str | None) -> float:
        """Decades of log10 compute by which ``C`` (FLOP) lies beyond ``family``'s largest fitted model; 0 inside its
        range and for a new family (``None``), which has no data to extrapolate from."""
        if family is None or self.x_max is None:
            return 0.0
        if family not in self.families:
            raise UnknownNameError(f"unknown family {family!r}; fitted: {list(self.families)}")
        return max(0.0, float(np.log10(C) - self.x0 - self.x_max[self.families.index(family)]))

    def above_chance_counts(self, bench: np.ndarray, score: np.ndarray) -> np.ndarray:
        """Questions answered above chance, the beta-binomial's k: accuracies ``score`` on benchmarks ``bench``
        (indices), as the share of the headroom above the chance floor, clipped to [0, 1], times the questions."""
        q = (np.asarray(score, float) - self.floor[bench]) / (1.0 - self.floor[bench])
        return np.round(np.clip(q, 0.0, 1.0) * self.questions[bench])


def _design(scores: BenchmarkScores, benchmarks, questions) -> tuple[Design, dict]:
    benchmarks = tuple(benchmarks or scores.benchmarks)
    questions = {**QUESTIONS, **(questions or {})}
    for b in benchmarks:
        if b not in CHANCE:
            raise UnknownNameError(f"no chance level known for benchmark {b!r}; known: {sorted(CHANCE)}")
        if not questions.get(b):
            raise ModelError(f"benchmark {b!r} has no known question count; pass questions={{{b!r}: n}}")
    long = scores.long(benchmarks)
    if long.empty:
        raise DataError("no scores to fit", column="score")
    fams = tuple(sorted(scores.frame["family"].unique()))
    models = tuple(scores.frame.index)
    x0 = float(np.median(np.log10(scores.frame["C"])))
    top = np.log10(scores.frame.groupby("family")["C"].max())
    d = Design(
        x0=x0,
        benchmarks=benchmarks,
        families=fams,
        models=models,
        floor=np.array([CHANCE[b] for b in benchmarks]),
        questions=np.array([questions[b] for b in benchmarks], dtype=float),
        below_chance={b: int((long.loc[long["benchmark"] == b, "score"] < CHANCE[b]).sum()) for b in benchmarks},
        x_max=np.array([top[f] - x0 for f in fams]),
    )
    bi = long["benchmark"].map({b: i for i, b in enumerate(benchmarks)}).to_numpy()
    arrays = {
        "x": long["log10_C"].to_numpy() - x0,
        "fam": long["family"].map({f: i for i, f in enumerate(fams)}).to_numpy(),
        "model_idx": long["model"].map({m: i for i, m in enumerate(models)}).to_numpy(),
        "bench": bi,
        "n": d.questions[bi],
        "k": d.above_chance_counts(bi, long["score"].to_numpy()),
    }
    return d, {key: jnp.asarray(v) for key, v in arrays.items()}


def design_of(scores: BenchmarkScores, benchmarks=None, questions: dict | None = None) -> Design:
    """The :class:`Design` that :func:`fit` builds from ``scores`` (names, centre, chance floors, each family's
    largest fitted compute)."""
    return _design(scores, benchmarks, questions)[0]


def _diagnose(samples: dict, extra: dict, max_tree_depth: int) -> Diagnostics:
    labels, rows = [], []
    for name in (*PARAMS, "z", "y"):
        v = np.asarray(samples[name], dtype=float)
        v = v.reshape(*v.shape[:2], -1)
        labels += (
            [name]
            if v.shape[-1] == 1 and name in ("tau_e", "sigma_m")
            else [f"{name}[{j}]" for j in range(v.shape[-1])]
        )
        rows.append(np.moveaxis(v, -1, 0))
    return summarise_chains(labels, rows, extra, max_tree_depth)


def fit(
    scores: BenchmarkScores,
    benchmarks=None,
    *,
    seed: int,
    chains: int = 4,
    warmup: int = 1000,
    draws: int = 1000,
    target_accept: float = 0.9,
    max_tree_depth: int = 10,
    questions: dict | None = None,
) -> DownstreamPosterior:
    """Fit the downstream law to ``scores`` (every row is a trained model) with NumPyro's NUTS.

    ``benchmarks``: which score columns (default all); each needs a chance level and a question count (override
    or add counts with ``questions``). Returns a :class:`DownstreamPosterior`; warns
    (:class:`~scalebayes.errors.SamplingWarning`) when R-hat > 1.01, ESS < 400 or any transition diverged.
    """
    ensure_float64("scalebayes.downstream.fit")
    design, arrays = _design(scores, benchmarks, questions)
    kernel = NUTS(model, target_accept_prob=target_accept, max_tree_depth=max_tree_depth)
    mcmc = MCMC(
        kernel, num_warmup=warmup, num_samples=draws, num_chains=chains, chain_method="sequential", progress_bar=False
    )
    mcmc.run(
        jax.random.PRNGKey(seed),
        n_bench=len(design.benchmarks),
        n_fam=len(design.families),
        n_model=len(design.models),
        extra_fields=("diverging", "num_steps"),
        **arrays,
    )
    samples = {k: np.asarray(v) for k, v in mcmc.get_samples(group_by_chain=True).items()}
    diag = _diagnose(samples, mcmc.get_extra_fields(group_by_chain=True), max_tree_depth)
    warn_if_failed(diag, "downstream fit")
    flat = {k: v.reshape(-1, *v.shape[2:]) for k, v in samples.items() if k != "w"}
    return DownstreamPosterior(design, flat, diag)


@dataclass(frozen=True)
class DownstreamPosterior:
    """Posterior draws of the downstream law (flattened over chains: S draws) and its diagnostics.

    ``kappa``: None, or (S,) draws of the extrapolation scale κ (decades of capability shift per decade of compute
    beyond the family's largest fitted model; :mod:`scalebayes.downstream_discrepancy` learns it): forecasts then
    add a shift κ·d·ε (ε standard normal, shared by the model's benchmarks) to the effective log-compute."""

    design: Design
    draws: dict
    diagnostics: Diagnostics
    kappa: np.ndarray | None = None

    def _bench(self, benchmark: str) -> int:
        if benchmark not in self.design.benchmarks:
            raise UnknownNameError(f"unknown benchmark {benchmark!r}; fitted: {list(self.design.benchmarks)}")
        return self.design.benchmarks.index(benchmark)

    def _offset(self, family: str | None, j: int, rng: np.random.Generator) -> np.ndarray:
        """The family's efficiency on benchmark j, e_f + v_fj, per draw (S,); a new family (``None``) draws both
        from the population: Normal(0, τ_e) + Normal(0, τ_j)."""
        tau, tau_b = self.draws["tau_e"], self.draws["tau_b"][:, j]
        if family is None:
            return tau * rng.standard_normal(tau.shape) + tau_b * rng.standard_normal(tau.shape)
        if family not in self.design.families:
            raise UnknownNameError(
                f"unknown family {family!r}; pass family=None for a new family (fitted: {list(self.design.families)})"
            )
        i = self.design.families.index(family)
        return tau * self.draws["z"][:, i] + tau_b * self.draws["y"][:, j, i]

    def accuracy_draws(self, C: float, benchmark: str, family: str | None, *, seed: int, noise: bool = True):
        """Draws (S,) of a new model's accuracy on ``benchmark`` when trained with ``C`` FLOP in ``family`` (a
        fitted family's name, or ``None`` for a new family). ``noise=True``: the score it would report (its own
        capability residual, beta-binomial over the benchmark's questions, k/n); ``False``: the law's mean for a
        typical model of that family. With ``kappa`` set, both include the extrapolation shift κ·d·ε, its ε drawn
        from ``seed`` alone, so one model's forecasts on every benchmark share it."""
        if not np.isfinite(C) or C <= 0:
            raise DataError(f"C must be a positive number of FLOP, got {C!r}", column="C")
        j, d, rng = self._bench(benchmark), self.design, np.random.default_rng(seed)
        s = self.draws
        x = np.log10(C) - d.x0 + self._offset(family, j, rng)
        far = d.distance(C, family)
        if self.kappa is not None and far > 0:
            x = x + self.kappa * far * np.random.default_rng([seed, SHIFT_STREAM]).standard_normal(x.shape)
        if noise:
            x = x + s["sigma_m"] * rng.standard_normal(x.shape)
        floor = d.floor[j]
        mu = np.asarray(law(x, 0.0, s["u"][:, j], s["slope"][:, j], s["mid"][:, j]))  # above-chance fraction
        if noise:
            mu = np.clip(mu, 1e-9, 1 - 1e-9)
            p = rng.beta(mu * s["phi"][:, j], (1 - mu) * s["phi"][:, j])
            mu = rng.binomial(int(d.questions[j]), p) / d.questions[j]
        return floor + (1.0 - floor) * mu

    def predict(self, C, benchmark: str, family: str | None, *, seed: int = 0, noise: bool = True) -> pd.DataFrame:
        """Quantiles (columns ``q0.05``, ``q0.5``, ``q0.95``, as everywhere in the package) and mean of the accuracy at
        each compute in ``C`` (FLOP); one row per C."""
        rows = []
        for c in np.atleast_1d(np.asarray(C, dtype=float)):
            a = self.accuracy_draws(float(c), benchmark, family, seed=seed, noise=noise)
            rows.append({"C": c, "mean": a.mean(), **{qcol(q): np.quantile(a, q) for q in QUANTILES}})
        out = pd.DataFrame(rows)
        out.attrs.update(benchmark=benchmark, family=family, noise=noise)
        return out

    def prob_accuracy_above(self, threshold: float, C: float, benchmark: str, family: str | None, *, seed: int = 0):
        """P(a new model trained with ``C`` FLOP in ``family`` scores above ``threshold`` on ``benchmark``)."""
        return float(np.mean(self.accuracy_draws(C, benchmark, family, seed=seed) > threshold))

    def compute_for_accuracy(
        self, threshold: float, benchmark: str, family: str | None, *, prob: float = 0.8, seed: int = 0
    ) -> float:
        """Smallest training compute C (FLOP) at which P(accuracy > ``threshold``) ≥ ``prob``, searched on a grid
        of 0.05 decades from the data's centre −4 to +8 decades (the same random numbers at every C, so P rises
        with C); ``inf`` when not reached on the grid."""
        grid = self.design.x0 + np.arange(-4.0, 8.0 + 1e-9, 0.05)
        for lc in grid:
            if self.prob_accuracy_above(threshold, 10.0**lc, benchmark, family, seed=seed) >= prob:
                return float(10.0**lc)
        return float("inf")


@dataclass(frozen=True)
class PointFit:
    """Least-squares sigmoid fit (the point method of the observational-scaling papers), for comparison.

    ``params[b]`` = (mid, slope, u) per benchmark on the same law as :func:`model`; ``offsets`` the per-family
    efficiency (decades; empty when fitted without family offsets, and 0 for a family not fitted). Its 90%
    interval is the prediction plus the 5% and 95% quantiles of the benchmark's training residuals, clipped to
    [0, 1]: the usual way to put a band on a point fit.
    """

    design: Design
    params: np.ndarray
    offsets: dict
    residual_q: np.ndarray

    def predict(self, C: float, benchmark: str, family: str | None) -> tuple[float, float, float]:
        """(prediction, 5%, 95%) accuracy of a model trained with ``C`` FLOP in ``family``."""
        j = self.design.benchmarks.index(benchmark)
        x = np.log10(C) - self.design.x0 + self.offsets.get(family, 0.0)
        pred = float(_point_law(x, self.design.floor[j], *self.params[j]))
        lo, hi = np.clip(pred + self.residual_q[j], 0.0, 1.0)
        return pred, float(lo), float(hi)


def _point_law(x, floor, mid, slope, u):
    return floor + (1.0 - floor) * u * (1.0 / (1.0 + np.exp(-slope * (x - mid))))


def point_fit(scores: BenchmarkScores, benchmarks=None, *, family_offsets: bool, ridge: float = 1e-3) -> PointFit:
    """Least squares of the accuracies on the sigmoid law, all benchmarks at once; with ``family_offsets`` one
    efficiency offset per family shared by the benchmarks (a ``ridge`` on the offsets fixes the trade between them
    and the midpoints). Parameters are fitted as (mid, log slope, logit u)."""
    design, arrays = _design(scores, benchmarks, {b: 1 for b in (benchmarks or scores.benchmarks)})
    long = scores.long(design.benchmarks)
    y, x = long["score"].to_numpy(), np.asarray(arrays["x"])
    bench, fam = np.asarray(arrays["bench"]), np.asarray(arrays["fam"])
    n_b, n_f = len(design.benchmarks), len(design.families) if family_offsets else 0

    def unpack(theta):
        p = theta[: 3 * n_b].reshape(n_b, 3)
        return np.column_stack([p[:, 0], np.exp(p[:, 1]), 1 / (1 + np.exp(-p[:, 2]))]), theta[3 * n_b :]

    def residuals(theta):
        p, e = unpack(theta)
        xe = x + (e[fam] if n_f else 0.0)
        pred = _point_law(xe, design.floor[bench], p[bench, 0], p[bench, 1], p[bench, 2])
        return np.concatenate([pred - y, np.sqrt(ridge) * e])

    theta0 = np.concatenate([np.tile([0.0, 0.0, 1.5], n_b), np.zeros(n_f)])
    sol = optimize.least_squares(residuals, theta0, method="trf")
    p, e = unpack(sol.x)
    res = residuals(sol.x)[: len(y)]
    rq = np.array([np.quantile(-res[bench == j], [0.05, 0.95]) for j in range(n_b)])
    offsets = {f: float(e[i]) for i, f in enumerate(design.families)} if n_f else {}
    return PointFit(design, p, offsets, rq)
