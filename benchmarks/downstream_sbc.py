"""Simulation-based calibration of the accuracy-vs-loss law (:mod:`scalebayes.loss_to_accuracy`), the fuller version
of the reduced check in tests/test_twostep.py.

    PYTHONPATH=. .venv/bin/python benchmarks/downstream_sbc.py [--sims 100] [--seed 0]

Two runs, each ``--sims`` datasets of 30 models at centred losses evenly over [−1.5, 1.5] nats drawn from the prior:

- 1000 questions (also what a benchmark without a question count is read as: ``PSEUDO_QUESTIONS``);
- 100 questions (a small benchmark such as COPA: coarser counts, the over-dispersion less identified).

Each dataset gets its own NUTS fit, exactly as :func:`scalebayes.loss_to_accuracy.fit` runs (1 chain, 300 warm-up,
990 draws; NumPyro recompiles its sampling loop at every run, so a fit costs seconds even on 30 points). Ranks of the
true values among 99 thinned draws (0…99) are binned in 10 bins; the χ² p-values are Bonferroni-adjusted over the 7
parameters (the published mid, slope, u, the over-dispersion od, and the sampled anchored q0, h, v). A third run
checks the observational law of :mod:`scalebayes.downstream` the same way on a small design (:func:`observational`).
Writes benchmarks/DOWNSTREAM_SBC.md (tables and rank histograms as text).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from numpyro.infer import MCMC, NUTS, Predictive
from scipy import stats

import scalebayes as sb
from scalebayes import downstream
from scalebayes import loss_to_accuracy as la

OUT = Path(__file__).resolve().parent / "DOWNSTREAM_SBC.md"


def one(name: str, questions: int | None, sims: int, seed: int) -> list[str]:
    t0 = time.time()
    r = la.sbc(sims, n_obs=30, questions=questions, seed=seed)
    secs = time.time() - t0
    lines = [f"## {name} (questions={questions}), {sims} simulations, seed {seed}", ""]
    lines += [f"{r['divergent']} of {sims} fits had a divergent transition; {secs:.0f} s in all.", ""]
    lines += [
        "| parameter | adjusted p | rank counts in 10 bins (expected " + f"{sims / 10:g} each) |",
        "|---|---|---|",
    ]
    for j, p in enumerate(la.PARAMS):
        counts = np.bincount(r["ranks"][:, j] * 10 // (r["L"] + 1), minlength=10)
        lines.append(f"| {p} | {r['p_values'][p]:.3f} | {' '.join(map(str, counts))} |")
    return [*lines, ""]


#: The observational law's global parameters whose ranks are tested (per-benchmark ones for benchmark 0).
OBS_PARAMS = ("mid", "slope", "u", "phi", "tau_e", "sigma_m")


def observational(sims: int, seed: int, n_fam: int = 8, per_fam: int = 3) -> list[str]:
    """SBC of the observational law (:func:`scalebayes.downstream.model`) on a small design: ``n_fam`` families of
    ``per_fam`` models at log10 C offsets (−1, 0, 1) decades, two benchmarks of 1000 questions; NumPyro's NUTS as
    :func:`scalebayes.downstream.fit` runs it (1 chain, 500 warm-up, 990 draws, target_accept 0.9)."""
    n_b, n_model = 2, n_fam * per_fam
    x = np.tile(np.linspace(-1.0, 1.0, per_fam), n_fam)
    fam, midx = np.repeat(np.arange(n_fam), per_fam), np.arange(n_model)
    arr = dict(x=np.repeat(x, n_b), fam=np.repeat(fam, n_b), model_idx=np.repeat(midx, n_b),
               bench=np.tile(np.arange(n_b), n_model), n=np.full(n_model * n_b, 1000))  # fmt: skip
    arr = {k: jnp.asarray(v) for k, v in arr.items()}
    dims = dict(n_bench=n_b, n_fam=n_fam, n_model=n_model)
    prior = Predictive(downstream.model, num_samples=sims)(jax.random.PRNGKey(seed), **arr, **dims)
    ranks, divergent, t0 = np.zeros((sims, len(OBS_PARAMS)), dtype=int), 0, time.time()
    for i in range(sims):
        mcmc = MCMC(NUTS(downstream.model, target_accept_prob=0.9), num_warmup=500, num_samples=990,
                    num_chains=1, progress_bar=False)  # fmt: skip
        mcmc.run(jax.random.PRNGKey(seed + 1 + i), **arr, **dims, k=prior["k"][i], extra_fields=("diverging",))
        divergent += int(np.asarray(mcmc.get_extra_fields()["diverging"]).any())
        s = mcmc.get_samples()
        for j, p in enumerate(OBS_PARAMS):
            draws, truth = np.asarray(s[p]), np.asarray(prior[p][i])
            draws, truth = (draws[:, 0], truth[0]) if draws.ndim == 2 else (draws, truth)
            ranks[i, j] = int((draws[::10] < truth).sum())
    counts = [np.bincount(ranks[:, j] * 10 // 100, minlength=10) for j in range(len(OBS_PARAMS))]
    pv = {
        p: min(1.0, float(stats.chisquare(c).pvalue) * len(OBS_PARAMS)) for p, c in zip(OBS_PARAMS, counts, strict=True)
    }
    lines = [f"## Observational law (downstream.model), {sims} simulations, seed {seed}", "",
             f"{n_fam} families x {per_fam} models, 2 benchmarks; {divergent} of {sims} fits had a divergent "
             f"transition; {time.time() - t0:.0f} s in all. Per-benchmark parameters: benchmark 0.", "",
             f"| parameter | adjusted p | rank counts in 10 bins (expected {sims / 10:g} each) |",
             "|---|---|---|"]  # fmt: skip
    lines += [f"| {p} | {pv[p]:.3f} | {' '.join(map(str, c))} |" for p, c in zip(OBS_PARAMS, counts, strict=True)]
    return [*lines, ""]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sims", type=int, default=100)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--observational-sims", type=int, default=40, help="0 skips the observational law")
    args = ap.parse_args()
    sb.use_float64()
    text = ["# SBC of the accuracy-vs-loss law", "", "Generated by `benchmarks/downstream_sbc.py`.", ""]
    text += one("beta-binomial, 1000 questions", 1000, args.sims, args.seed)
    jax.clear_caches()  # NumPyro compiles each fit's loop anew; the compiled programs pile up over 200 fits (GBs)
    text += one("beta-binomial, 100 questions", 100, args.sims, args.seed + 1)
    jax.clear_caches()
    if args.observational_sims:
        text += observational(args.observational_sims, args.seed + 2)
    OUT.write_text("\n".join(text))
    print("\n".join(text))


if __name__ == "__main__":
    main()
