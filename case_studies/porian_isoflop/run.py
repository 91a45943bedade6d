"""Case study: hierarchical Chinchilla fits to the isoFLOP runs of Porian et al. (2024), eight training setups.

Porian, Wortsman, Jitsev, Schmidt & Carmon (2024), "Resolving Discrepancies in Compute-Optimal Scaling of Language
Models", trained the same model sizes under eight training configurations (two datasets × four setups, from
Kaplan et al.'s to a corrected one). Their headline: the compute-optimal model-size exponent a (N* ∝ C^a) is
≈ 0.73-0.88 under Kaplan et al.'s setup and ≈ 0.5 (Chinchilla's) once the setup is corrected.

This script fits L = E + A·N^-α + B·D^-β to every configuration at once with partial pooling across the eight
families, reads off a = β/(α+β) per family, compares partial pooling with independent fits ("none"), also for one
family cut down to 6 runs, and writes ``report.md``, ``results.json`` and PNG figures.

Run (from the repository root)::

    .venv/bin/python case_studies/porian_isoflop/run.py            # full settings, ~5 min on 2 shared CPU cores
    .venv/bin/python case_studies/porian_isoflop/run.py --quick    # short chains, to check the pipeline
    .venv/bin/python case_studies/porian_isoflop/run.py --out /tmp/porian
    .venv/bin/python case_studies/porian_isoflop/run.py --reuse      # redo report and figures from saved fits

Units: N parameters, D tokens, C FLOP (C = 6ND, "standard" parameter counting), loss in nats/token (validation).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from collections.abc import Iterable
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

import scalebayes as sb  # noqa: E402
from scalebayes.errors import MisfitWarning, SamplingWarning  # noqa: E402
from scalebayes.likelihood import robust_sd  # noqa: E402
from scalebayes.misfit import SCATTER  # noqa: E402
from scalebayes.model import TAU_LOG_SD, tau_grid  # noqa: E402
from scalebayes.priors import TAU_FRACTION  # noqa: E402
from scalebayes.sampler.start import MAX_NEWTON  # noqa: E402

HERE = Path(__file__).resolve().parent
SEED = 2024

#: Keep runs whose N is within this factor of the best run of their (family, FLOP budget). IsoFLOP sweeps go far up
#: the walls of the valley (1 token per parameter, loss 6-9 nats at the smallest budgets) where runs are dominated
#: by optimisation failure rather than by the N and D terms of the law; the compute-optimal exponent is a property
#: of the valley floor, which is also all that Porian et al.'s own estimator (an interpolated minimum per budget)
#: uses. A factor 3 keeps 5-7 runs per budget.
WINDOW = 3.0

#: What the report compares the sampler's cost with: the full run committed in 96c6eb2 (2026-11-26), before issue
#: 14, with the non-centred hierarchy (HalfNormal τ priors) at target acceptance 0.98 (at the default 0.9 it gave 4
#: divergent transitions in 6000 draws) and the same data, seed, chains, warm-up and draws.
BEFORE = {
    "commit": "96c6eb2",
    "steps_per_iteration": {"partial": 302.4, "none": 57.4, "partial, 6-run family": 320.9, "none, 6-run family": 75.4},
    "fit_seconds": {"partial": 743.0, "none": 113.0, "partial, 6-run family": 724.0, "none, 6-run family": 159.0},
}
BEFORE_TOTAL_MIN = sum(BEFORE["fit_seconds"].values()) / 60

#: The family cut down to a few runs to show what partial pooling does for a family with little data: the paper's
#: fully corrected setup on RefinedWeb, whose exponent the paper puts at ≈ 0.5.
SUBSAMPLE_FAMILY = "rw/tuned/short/const"
SUBSAMPLE_RUNS = 6

#: The paper's headline, as recorded in the dataset's SOURCE.md.
HEADLINE = {
    "corrected": {"a": 0.5, "text": "≈ 0.5 after correcting last-layer FLOPs, warmup and optimiser tuning"},
    "kaplan": {"a": [0.73, 0.88], "text": "≈ 0.73-0.88 under Kaplan et al.'s setup"},
}

#: The training setups in the order the paper corrects them (hparams/warmup/decay part of a family name).
STEPS = {
    "base/long/kaplan": "1. Kaplan et al.'s setup: long warmup, cosine decay to a fixed long horizon",
    "base/short/kaplan": "2. + warmup scaled to the model (short)",
    "base/short/chinchilla": "3. + cosine decay matched to each run's length (Chinchilla)",
    "tuned/short/const": "4. tuned AdamW hyper-parameters, constant learning rate",
}


#: What the headline says for each setup: Kaplan et al.'s setup and the corrected ones; the intermediate step (Kaplan
#: decay with the warmup corrected) is not part of it.
PAPER_COLUMN = {
    "base/long/kaplan": "0.73-0.88",
    "base/short/kaplan": "— (intermediate)",
    "base/short/chinchilla": "≈ 0.5",
    "tuned/short/const": "≈ 0.5",
}


def setup_kind(family: str) -> str:
    """Which side of the paper's headline a family's setup belongs to: Kaplan's cosine decay to a fixed horizon
    (``kaplan``) or a corrected one (Chinchilla decay, or tuned hyper-parameters with a constant learning rate)."""
    return "kaplan" if family.endswith("/kaplan") else "corrected"


def step_of(family: str) -> str:
    """The setup of a family (without its dataset), e.g. ``"base/long/kaplan"``."""
    return family.split("/", 1)[1]


def family_order(families: Iterable[str]) -> list[str]:
    """Families sorted by setup step, then dataset."""
    steps = list(STEPS)
    return sorted(families, key=lambda f: (steps.index(step_of(f)) if step_of(f) in steps else len(steps), f))


# ---------------------------------------------------------------------------------------------------- data
def select_valley(data: sb.ScalingData, window: float = WINDOW) -> sb.ScalingData:
    """Runs with N within a factor ``window`` of the lowest-loss run of their family and FLOP budget (the others
    go to ``excluded`` with the reason)."""
    f = data.frame
    best_n = f.loc[f.groupby(["family", "C"])["loss"].idxmin(), ["family", "C", "N"]]
    best = f[["family", "C"]].merge(best_n, on=["family", "C"], how="left")["N"].to_numpy()
    keep = np.abs(np.log(f["N"].to_numpy() / best)) <= np.log(window) + 1e-9
    return data.subset(keep, reason=f"N more than {window:g}x from its isoFLOP budget's best run")


def subsample_family(data: sb.ScalingData, family: str, n: int, seed: int) -> sb.ScalingData:
    """All runs of the other families and ``n`` runs of ``family`` drawn at random (fixed seed)."""
    f = data.frame
    idx = np.flatnonzero(f["family"].to_numpy() == family)
    keep_fam = np.random.default_rng(seed).choice(idx, size=n, replace=False)
    mask = f["family"].to_numpy() != family
    mask[keep_fam] = True
    return data.subset(mask, reason=f"subsampled {family} to {n} runs")


def isoflop_minimum_exponents(data: sb.ScalingData) -> pd.DataFrame:
    """Per family, the slope a of log N* against log C, with N* per budget from a parabola in log N through the
    lowest-loss run and its neighbours (the valley runs), by ordinary least squares, and its standard error.

    A point estimate in the spirit of the paper's method (which interpolates each isoFLOP curve, takes its
    minimum, bootstraps over seed noise and fits a power law); no uncertainty from the parabola is carried."""
    rows = []
    for fam, g in data.frame.groupby("family", sort=False):
        pts = []
        for C, h in g.groupby("C"):
            h = h.sort_values("N")
            i = int(np.argmin(h["loss"].to_numpy()))
            if i == 0 or i == len(h) - 1 or len(h) < 3:
                continue  # minimum at the edge of the sweep: no interior optimum to locate
            x, y = np.log(h["N"].to_numpy()), np.log(h["loss"].to_numpy())
            c2, c1, _ = np.polyfit(x, y, 2)
            if c2 <= 0:
                continue
            pts.append((np.log(C), np.clip(-c1 / (2 * c2), x.min(), x.max())))
        pts = np.array(pts)
        X = np.column_stack([np.ones(len(pts)), pts[:, 0]])
        coef, res, *_ = np.linalg.lstsq(X, pts[:, 1], rcond=None)
        resid = pts[:, 1] - X @ coef
        se = np.sqrt(resid @ resid / (len(pts) - 2) / np.sum((pts[:, 0] - pts[:, 0].mean()) ** 2))
        rows.append(
            {
                "family": fam,
                "a_iso": coef[1],
                "a_iso_se": se,
                "n_budgets": len(pts),
                "logC": pts[:, 0],
                "logN": pts[:, 1],
            }
        )
    return pd.DataFrame(rows).set_index("family")


# ---------------------------------------------------------------------------------------------------- fits
def fit(data: sb.ScalingData, pooling: str, cfg: dict, label: str, cache: Path | None = None) -> sb.Posterior:
    """Partial- or no-pooling Chinchilla fit at the package's default model and NUTS settings (``cfg`` sets only
    chains, warm-up and draws); with ``cache`` the posterior is saved there (netCDF) and reloaded on a later
    ``--reuse`` run instead of sampling again. Records the fit's wall and CPU seconds in the posterior's attrs."""
    if cache is not None and cache.exists():
        post = sb.load(cache)
        print(f"  {label}: reloaded {cache}, {post.diagnostics}", flush=True)
        return post
    t, cpu = time.time(), time.process_time()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SamplingWarning)  # diagnostics are reported below, not just warned
        warnings.simplefilter("ignore", MisfitWarning)  # so are the residual trends (misfit_summary)
        post = sb.fit(data, law="chinchilla", pooling=pooling, seed=SEED, pointwise=False, **cfg)
    post.idata.attrs["case_study_fit_seconds"] = round(time.time() - t, 1)
    post.idata.attrs["case_study_fit_cpu_seconds"] = round(time.process_time() - cpu, 1)
    print(f"  {label}: {time.time() - t:.0f} s, {post.diagnostics}", flush=True)
    if cache is not None:
        post.save(cache)
    return post


def exponent_table(post: sb.Posterior, families: Iterable[str]) -> pd.DataFrame:
    """Posterior of a = β/(α+β), α, β, E per family: median and 5%/95% quantiles."""
    rows = []
    for fam in families:
        row = {"family": fam}
        for k in ("a", "alpha", "beta", "E"):
            v = post.draws(k, fam)
            q = np.quantile(v, [0.05, 0.5, 0.95])
            row.update(
                {f"{k}_q05": q[0], f"{k}_med": q[1], f"{k}_q95": q[2], f"{k}_mean": v.mean(), f"{k}_sd": v.std()}
            )
        rows.append(row)
    return pd.DataFrame(rows).set_index("family")


def optimal_n(p: dict, C: np.ndarray) -> np.ndarray:
    """Compute-optimal N (parameters) at FLOP C for each draw: N* = G·(C/6)^a, G = (αA/(βB))^(1/(α+β));
    p holds (S,) arrays, C (P,); returns (S, P)."""
    al, be, A, B = (np.asarray(p[k])[:, None] for k in ("alpha", "beta", "A", "B"))
    G = (al * A / (be * B)) ** (1 / (al + be))
    return G * (C[None, :] / 6.0) ** (be / (al + be))


def diag_dict(post: sb.Posterior) -> dict:
    """The fit's diagnostics as JSON-ready numbers."""
    d = post.diagnostics.to_dict()
    num = (int, float, np.floating, np.integer)
    out = {k: (float(v) if isinstance(v, num) and not isinstance(v, bool) else v) for k, v in d.items()}
    t = post.diagnostics.table
    out["ess_bulk_min_param"] = str(t["ess_bulk"].idxmin()) if len(t) else "-"
    return out


def misfit_summary(posts: dict[str, sb.Posterior]) -> dict:
    """The package's residual-trend checks (``post.misfit``) of every fit, and for the partial-pooling fit the
    median residual (observed − fitted log loss at the posterior medians, in %) per FLOP budget and, at the largest
    budget, per family, and the share of the residual variance in the (family, budget) means."""
    out = {}
    for k, post in posts.items():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", MisfitWarning)
            m = post.misfit
        out[k] = {
            "flagged": [
                {
                    "against": r["against"],
                    "p_value": float(r["p_value"]),
                    "medians_pct": [100 * float(v) for v in r["medians"]],
                }
                for _, r in m.table[m.table["flagged"]].iterrows()
            ],
            "scatter_pct": 100 * float(robust_sd(m.residuals)),
        }
        if k == "partial":
            f = post.data.frame.assign(r=100 * m.residuals)
            out[k]["by_budget_pct"] = {f"{C:.3g}": float(v) for C, v in f.groupby("C")["r"].median().items()}
            top = f[f["C"] == f["C"].max()]
            out[k]["top_budget"] = float(f["C"].max())
            cell = f.groupby(["family", "C"])["r"].transform("mean")  # each (family, budget)'s mean residual
            out[k]["family_budget_variance_share"] = float(cell.var() / f["r"].var())
            # what independent noise would give: (cells - 1) / (runs - 1) of the variance
            n_cells = f.groupby(["family", "C"]).ngroups
            out[k]["family_budget_share_if_independent"] = (n_cells - 1) / (len(f) - 1)
            out[k]["top_budget_by_family_pct"] = {
                str(fam): float(v) for fam, v in top.groupby("family")["r"].median().items()
            }
    return out


def misfit_caveat(mis: dict) -> str:
    """The report's caveat on the residual checks, from :func:`misfit_summary`'s numbers."""
    flagged = [k for k, v in mis.items() if v["flagged"]]
    p = mis["partial"]
    if not p["flagged"]:
        return (
            "- The package's residual check (`post.misfit`) flags no trend in the partial-pooling fit "
            f"({len(flagged)} of the four fits flagged)."
        )
    checks = "; ".join(
        f"scatter against log D/N: p = {c['p_value']:.0e}, robust s.d. per bin "
        + ", ".join(f"{v:.2f}%" for v in c["medians_pct"])
        if c["against"] == SCATTER
        else f"against {c['against']}: p = {c['p_value']:.0e}, bin medians "
        + ", ".join(f"{v:+.2f}%" for v in c["medians_pct"])
        for c in p["flagged"]
    )
    budgets = ", ".join(f"{C} {v:+.2f}%" for C, v in p["by_budget_pct"].items())
    fam = p["top_budget_by_family_pct"].values()
    signs = np.sign(list(p["by_budget_pct"].values()))
    turns = int(np.sum(signs[1:] != signs[:-1]))
    shape = (
        f"they change sign {turns} times along C rather than drift one way"
        if turns > 1
        else "they drift one way along C"
    )
    below = max(fam) < 0
    top = (
        f"at the largest budget ({p['top_budget']:.2g} FLOP) "
        + ("every family's runs sit below the fitted law" if below else "the families' median residuals are")
        + f" ({min(fam):+.1f}% to {max(fam):+.1f}%)"
    )
    n_fits = "all four" if len(flagged) == 4 else f"{len(flagged)} of the four"
    return (
        f"- The package's residual check (`post.misfit`) flags structure the law misses in {n_fits} fits (partial "
        f"pooling, {checks}; run-to-run scatter {p['scatter_pct']:.2f}%). By FLOP budget the median "
        f"residuals are {budgets}: {shape}; {top}. Runs of one budget share part of their deviation from the law "
        f"(the (family, budget) means carry {p['family_budget_variance_share']:.0%} of the residual variance, "
        f"independent noise would give {p['family_budget_share_if_independent']:.0%}), so "
        "they are less independent than the likelihood assumes and the intervals here are somewhat too narrow"
        + ("; and the law's loss beyond the largest budget is more likely too high than too low." if below else ".")
    )


# ---------------------------------------------------------------------------------------------------- figures
def _plain_y(ax: plt.Axes) -> None:
    """Loss ticks as plain numbers (3, 3.5, 4, ...) on a log axis."""
    ticks = [2.6, 2.8, 3, 3.5, 4, 4.5, 5, 6, 7]
    lo, hi = ax.get_ylim()
    ax.set_yticks([t for t in ticks if lo <= t <= hi], [f"{t:g}" for t in ticks if lo <= t <= hi])
    ax.yaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())


def _grid(families: Iterable[str]) -> tuple[plt.Figure, dict[str, plt.Axes]]:
    """A 2 × 4 figure: rows RefinedWeb / OpenWebText2, columns the paper's setup steps; axes by family."""
    fig, axes = plt.subplots(2, 4, figsize=(17, 8), sharex=True, sharey=True, constrained_layout=True)
    # rows: dataset (RefinedWeb, OpenWebText2); columns: the paper's setup steps
    order = sorted(families, key=lambda f: (["rw", "owt2"].index(f.split("/")[0]), list(STEPS).index(step_of(f))))
    return fig, dict(zip(order, axes.ravel(), strict=True))


def fig_loss_vs_compute(post: sb.Posterior, data: sb.ScalingData, full: sb.ScalingData, path: Path) -> None:
    """Loss against C per family: every run (open grey: outside the fitted valley), coloured by N; the fitted
    law along a few model sizes (median and 90% band) and the compute-optimal frontier."""
    fams = data.families
    fig, ax_of = _grid(fams)
    norm = matplotlib.colors.LogNorm(vmin=data.N.min(), vmax=data.N.max())
    cmap = plt.get_cmap("viridis")
    Cg = np.geomspace(1e16, 3e19, 60)
    sizes = np.array([1.6e7, 5.7e7, 2.2e8, 9.0e8])
    for fam in fams:
        ax = ax_of[fam]
        g_all = full.frame[full.frame["family"] == fam]
        g = data.frame[data.frame["family"] == fam]
        out = g_all.drop(index=g.index, errors="ignore")
        ax.scatter(out["C"], out["loss"], s=10, facecolors="none", edgecolors="0.7", lw=0.6, label="not fitted")
        ax.scatter(g["C"], g["loss"], c=g["N"], cmap=cmap, norm=norm, s=14, lw=0, label="fitted runs")
        for N in sizes:
            Cn = Cg[(Cg / (6 * N) > 0.5 * N) & (Cg / (6 * N) < 300 * N)]  # 0.5-300 tokens per parameter
            if len(Cn) < 2:
                continue
            dr = post.predictive_draws(N=N, C=Cn, family=fam, include_noise=False)
            q = np.quantile(dr, [0.05, 0.5, 0.95], axis=0)
            col = cmap(norm(N))
            ax.fill_between(Cn, q[0], q[2], color=col, alpha=0.3, lw=0)
            ax.plot(Cn, q[1], color=col, lw=1.2)
        p = {k: np.asarray(v) for k, v in post.param_draws(fam).items()}
        n_opt = optimal_n(p, Cg)
        L = (
            p["E"][:, None]
            + p["A"][:, None] * n_opt ** -p["alpha"][:, None]
            + p["B"][:, None] * (Cg / (6 * n_opt)) ** -p["beta"][:, None]
        )
        q = np.quantile(L, [0.05, 0.5, 0.95], axis=0)
        ax.fill_between(Cg, q[0], q[2], color="k", alpha=0.15, lw=0)
        ax.plot(Cg, q[1], "k--", lw=1.2, label="compute-optimal frontier")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_ylim(0.97 * data.loss.min(), 7.0)
        _plain_y(ax)
        ax.set_title(f"{fam}  ({len(g)} of {len(g_all)} runs fitted)", fontsize=10)
        ax.grid(alpha=0.3, which="both", lw=0.4)
    for ax in list(ax_of.values())[4:]:
        ax.set_xlabel("training compute C (FLOP)")
    for ax in (list(ax_of.values())[0], list(ax_of.values())[4]):
        ax.set_ylabel("validation loss (nats/token)")
    list(ax_of.values())[0].legend(fontsize=8, loc="upper right")
    fig.colorbar(matplotlib.cm.ScalarMappable(norm=norm, cmap=cmap), ax=list(ax_of.values()), label="N (parameters)")
    fig.suptitle(
        "Porian et al. isoFLOP runs: Chinchilla law, partial pooling across families. Lines: fitted loss at fixed N "
        "(median, 90% band); dashed: compute-optimal frontier"
    )
    fig.savefig(path, dpi=110)
    plt.close(fig)


def fig_isoflop(post: sb.Posterior, data: sb.ScalingData, full: sb.ScalingData, path: Path) -> None:
    """Loss against N per FLOP budget (isoFLOP curves): runs and the fitted law (median, 90% band) per family."""
    fams = data.families
    fig, ax_of = _grid(fams)
    budgets = np.array(sorted(full.frame["C"].unique()))
    norm = matplotlib.colors.LogNorm(vmin=budgets.min(), vmax=budgets.max())
    cmap = plt.get_cmap("plasma")
    for fam in fams:
        ax = ax_of[fam]
        g_all = full.frame[full.frame["family"] == fam]
        g = data.frame[data.frame["family"] == fam]
        for C in budgets[::1]:
            col = cmap(norm(C) * 0.9)
            h = g_all[g_all["C"] == C]
            hin = g[g["C"] == C]
            ax.scatter(h["N"], h["loss"], s=8, facecolors="none", edgecolors=col, lw=0.5, alpha=0.5)
            ax.scatter(hin["N"], hin["loss"], s=12, color=col, lw=0)
            if len(hin) == 0:
                continue
            Ng = np.geomspace(hin["N"].min() / 1.5, hin["N"].max() * 1.5, 40)
            dr = post.predictive_draws(N=Ng, C=C, family=fam, include_noise=False)
            q = np.quantile(dr, [0.05, 0.5, 0.95], axis=0)
            ax.fill_between(Ng, q[0], q[2], color=col, alpha=0.3, lw=0)
            ax.plot(Ng, q[1], color=col, lw=1)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_ylim(0.97 * data.loss.min(), 1.03 * data.loss.max())  # every fitted run, smallest budget included
        _plain_y(ax)
        ax.set_title(fam, fontsize=10)
        ax.grid(alpha=0.3, which="both", lw=0.4)
    for ax in list(ax_of.values())[4:]:
        ax.set_xlabel("model size N (parameters)")
    for ax in (list(ax_of.values())[0], list(ax_of.values())[4]):
        ax.set_ylabel("validation loss (nats/token)")
    fig.colorbar(matplotlib.cm.ScalarMappable(norm=norm, cmap=cmap), ax=list(ax_of.values()), label="FLOP budget C")
    fig.suptitle(
        "IsoFLOP curves: filled = fitted runs, open = outside the valley window; lines = fit (median, 90% band)"
    )
    fig.savefig(path, dpi=110)
    plt.close(fig)


def fig_optimal_n(post: sb.Posterior, data: sb.ScalingData, iso: pd.DataFrame, path: Path) -> None:
    """Compute-optimal N*(C) per family from the posterior (median and 90% band) and the per-budget isoFLOP
    minima of the parabola estimator."""
    fams = data.families
    fig, ax_of = _grid(fams)
    Cg = np.geomspace(1e16, 3e19, 50)
    for fam in fams:
        ax = ax_of[fam]
        p = {k: np.asarray(v) for k, v in post.param_draws(fam).items()}
        q = np.quantile(optimal_n(p, Cg), [0.05, 0.5, 0.95], axis=0)
        ax.fill_between(Cg, q[0], q[2], color="C0", alpha=0.3, lw=0, label="posterior 90% band")
        ax.plot(Cg, q[1], color="C0", label="posterior median")
        if fam in iso.index:
            r = iso.loc[fam]
            ax.plot(np.exp(r["logC"]), np.exp(r["logN"]), "o", color="C3", ms=4, label="isoFLOP-parabola minima")
        a = post.draws("a", fam)
        ax.set_title(
            f"{fam}: a = {np.median(a):.2f} [{np.quantile(a, 0.05):.2f}, {np.quantile(a, 0.95):.2f}]", fontsize=10
        )
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.grid(alpha=0.3, which="both", lw=0.4)
    for ax in list(ax_of.values())[4:]:
        ax.set_xlabel("training compute C (FLOP)")
    for ax in (list(ax_of.values())[0], list(ax_of.values())[4]):
        ax.set_ylabel("compute-optimal N* (parameters)")
    list(ax_of.values())[0].legend(fontsize=8)
    fig.suptitle("Compute-optimal model size N*(C) ∝ C^a per family (partial pooling)")
    fig.savefig(path, dpi=110)
    plt.close(fig)


def fig_exponents(tables: dict, iso: pd.DataFrame, counts: pd.Series, path: Path, sub: dict) -> None:
    """Posterior of a per family (median, 50% and 90% intervals) for each fit, with the paper's headline."""
    fams = family_order(counts.index)
    fig, (ax, ax2) = plt.subplots(
        1, 2, figsize=(15, 6), gridspec_kw={"width_ratios": [3, 1.2]}, constrained_layout=True
    )
    ax.axhspan(0.73, 0.88, color="C3", alpha=0.12, label="paper: Kaplan et al.'s setup (0.73-0.88)")
    ax.axhline(0.5, color="C2", lw=1.5, alpha=0.7, label="paper: corrected setups (≈0.5)")
    styles = {"partial": ("C0", -0.15), "none": ("C1", 0.15)}
    x = np.arange(len(fams))
    for name, (col, dx) in styles.items():
        t = tables[name]
        for i, fam in enumerate(fams):
            r = t.loc[fam]
            ax.plot([i + dx] * 2, [r["a_q05"], r["a_q95"]], color=col, lw=1.5)
            ax.plot(
                i + dx, r["a_med"], "o", color=col, ms=6, label=f"pooling='{name}' (median, 90%)" if i == 0 else None
            )
    ax.errorbar(
        x,
        iso.loc[fams, "a_iso"],
        yerr=1.645 * iso.loc[fams, "a_iso_se"],
        fmt="kx",
        ms=7,
        capsize=3,
        lw=0.8,
        label="isoFLOP-parabola minima, OLS ±1.645 se",
    )
    ax.set_xticks(x, [f"{f}\n({counts[f]} runs)" for f in fams], rotation=30, ha="right", fontsize=8)
    ax.set_ylabel("compute-optimal exponent a = β/(α+β)  (N* ∝ C^a)")
    ax.set_ylim(0.2, 1.0)
    ax.grid(alpha=0.3, axis="y")
    ax.legend(fontsize=8, loc="upper left")
    ax.set_title("Per-family exponent: partial pooling vs independent fits")
    # Right: the subsampled family
    labels = list(sub)
    for j, lab in enumerate(labels):
        q = sub[lab]
        col = "C0" if "partial" in lab else ("C1" if "none" in lab else "0.3")
        ax2.plot([j, j], [q["q05"], q["q95"]], color=col, lw=2)
        ax2.plot(j, q["med"], "o", color=col, ms=7)
    ax2.axhline(0.5, color="C2", lw=1.5, alpha=0.7)
    ax2.axhspan(0.73, 0.88, color="C3", alpha=0.12)
    ax2.set_xticks(range(len(labels)), labels, rotation=30, ha="right", fontsize=8)
    ax2.set_ylim(0.2, 1.0)
    ax2.set_xlim(-0.5, len(labels) - 0.5)
    ax2.grid(alpha=0.3, axis="y")
    ax2.set_ylabel("a (median, 90% interval)")
    ax2.set_title(f"{SUBSAMPLE_FAMILY}\ncut to {SUBSAMPLE_RUNS} runs", fontsize=10)
    fig.savefig(path, dpi=110)
    plt.close(fig)


# ---------------------------------------------------------------------------------------------------- report
def fmt_q(r: pd.Series, k: str, nd: int = 3) -> str:
    """``median [5%, 95%]`` of quantity ``k`` from an :func:`exponent_table` row."""
    return f"{r[f'{k}_med']:.{nd}f} [{r[f'{k}_q05']:.{nd}f}, {r[f'{k}_q95']:.{nd}f}]"


def qd(v) -> dict[str, float]:
    """Median and 5%/95% quantiles of draws."""
    q = np.quantile(np.asarray(v), [0.05, 0.5, 0.95])
    return {"q05": float(q[0]), "med": float(q[1]), "q95": float(q[2])}


def counting_context() -> pd.DataFrame:
    """The isoFLOP-parabola exponent of every family under each parameter-counting convention the dataset has
    (``kaplan`` and ``attention`` exist only with training loss): how much of the paper's spread is counting."""
    rows = []
    for pc, split in (("standard", "val"), ("kaplan", "train"), ("attention", "train")):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            d = select_valley(sb.datasets.load("porian_isoflop", param_count=pc, split=split))
        for fam, r in isoflop_minimum_exponents(d).iterrows():
            rows.append({"family": fam, "counting": f"{pc} ({split} loss)", "a_iso": r["a_iso"], "se": r["a_iso_se"]})
    return pd.DataFrame(rows)


def model_summary(post: sb.Posterior) -> dict:
    """The model and NUTS settings a fit was run with, read back from its posterior (what the report describes)."""
    cfg, pri = post.sampler_config, post.priors
    keys = ("chains", "warmup", "draws", "dense_mass", "target_accept", "max_tree_depth")
    return {
        "fit_spec": post.fit_spec.to_dict(),
        "sampler": {k: getattr(cfg, k) for k in keys},
        "latent_prior": {z: [float(v) for v in lp] for z, lp in pri.latent.items()},
        "tau_median": {z: float(t) for z, t in pri.tau.items()},
        "sigma_scale": float(pri.sigma),
        "nu": [float(v) for v in pri.nu],
    }


LATENT_NAMES = {"log_E": "log E", "log_A_c": "log A_c", "log_B_c": "log B_c", "log_alpha": "log α", "log_beta": "log β"}


def method_lines(res: dict) -> list[str]:
    """The report's "What was fitted": runs, law and priors, hierarchy and sampler, from the stored settings."""
    m, d = res["model"], res["data"]
    spec, sc = m["fit_spec"], m["sampler"]
    if not spec["marginal"] or spec["centred"]:
        raise ValueError("the report's hierarchy text describes the marginal form (fit(..., marginal=True))")
    name = LATENT_NAMES.get
    priors = ", ".join(f"{name(z, z)} ~ Normal({lo:.2f}, {sd:g})" for z, (lo, sd) in m["latent_prior"].items())
    taus = ", ".join(f"{name(z, z)} {t:.2f}" for z, t in m["tau_median"].items())
    return [
        f"- **Runs:** the valley of each isoFLOP curve — runs whose N is within a factor {d['window']:g} of the best "
        f"run of their (family, budget): {d['n_runs_fitted']} of {d['n_runs_total']}. The sweeps climb far up the "
        "walls of the valley (down to ~1 token per parameter, losses of 6-9 nats at the smallest budgets), where the "
        "runs reflect optimisation failure more than the N and D terms of a scaling law; the compute-optimal "
        "exponent is a property of the valley floor, which is all the paper's own estimator (the interpolated "
        "minimum of each isoFLOP curve) uses. The excluded runs are drawn as open markers in the figures.",
        '- **Law:** L = E + A·N^-α + B·D^-β (`law="chinchilla"`) on five latents per family: log E, log A_c and '
        "log B_c (the log of each reducible term at the data's geometric-mean N and D) and log α, log β. The "
        f"package's default data-relative priors, as resolved for these runs: {priors}. Student-t likelihood on "
        f"log loss, σ ~ HalfNormal({m['sigma_scale']:g}) and ν ~ Gamma({m['nu'][0]:g}, {m['nu'][1]:g}), both "
        "shared by all families.",
        '- **Hierarchy:** `pooling="partial"` in the package\'s default (marginal) form on all five latents: '
        "θ_f ~ Normal(μ_θ, τ_θ) over the eight families, μ_θ ~ the latent's prior above, "
        f"τ_θ ~ LogNormal(log m_θ, {TAU_LOG_SD:g}) with median m_θ = {TAU_FRACTION:g} × the latent's prior scale "
        f"({taus}; the evidence for that scale is the spread of real families within one study, "
        "`benchmarks/TAU_EVIDENCE.md`). NUTS samples the family values θ_f alone: μ_θ is integrated out exactly "
        f"(it is Gaussian) and τ_θ by quadrature on a grid of {len(tau_grid(len(d['runs_per_family']))[0])} nodes "
        "in log τ, so neither the (μ, τ) funnel nor the non-centred (μ, τ, z) ridge is in what NUTS explores; "
        "μ_θ and τ_θ are then drawn from their exact conditional given each draw. Compared with "
        '`pooling="none"` (each family on its own with the law\'s prior, in one joint fit sharing only σ and ν).',
        "- **Sampler:** the package's NUTS at its defaults for all four fits: "
        f"{'dense' if sc['dense_mass'] else 'diagonal'} mass matrix, target acceptance {sc['target_accept']:g}, "
        f"maximum tree depth {sc['max_tree_depth']}, each chain started by a damped Newton descent toward the mode "
        f"(at most {MAX_NEWTON} iterations) whose inverse Hessian seeds the metric. {sc['chains']} chains × "
        f"{sc['draws']} draws after {sc['warmup']} warm-up (draws raised from the default 1000, as in the report "
        f"before issue 14, so the cost comparison below is like for like), seed {SEED}.\n",
    ]


def diagnostics_lines(res: dict) -> list[str]:
    """The report's diagnostics table (one row per fit) and the verdict, failures named."""
    L = [
        "| fit | R-hat max | bulk ESS min (parameter) | tail ESS min | divergences | at max tree depth "
        "| leapfrog steps/iter | ok |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for k, d in res["diagnostics"].items():
        L.append(
            f"| {k} | {d['r_hat_max']:.4f} | {d['ess_bulk_min']:.0f} ({d['ess_bulk_min_param']}) | "
            f"{d['ess_tail_min']:.0f} | {d['divergences']:.0f} | {d['tree_depth_saturation']:.1%} | "
            f"{d['steps_per_iteration']:.1f} | {'yes' if d['ok'] else 'NO'} |"
        )
    L.append("")
    fails = [f"- **{k} FAILED:** {'; '.join(d['failures'])}" for k, d in res["diagnostics"].items() if d["failures"]]
    L.extend(fails or ["All four fits pass (R-hat ≤ 1.01, bulk and tail ESS ≥ 400, no divergent transitions)."])
    L.append("")
    return L


def cost_lines(res: dict) -> list[str]:
    """Leapfrog steps per iteration and wall time per fit, now against the committed run before issue 14."""
    L = [
        f"Before: the full run committed in {BEFORE['commit']}, with the same runs, seed, chains, warm-up and draws, "
        "when partial pooling was the non-centred hierarchy θ_f = μ_θ + τ_θ·z_f with τ_θ ~ HalfNormal(half the "
        "latent's prior scale), sampled at target acceptance 0.98 (at the default 0.9 it gave 4 divergent "
        "transitions in 6000 draws). Now: the package's defaults (above). Wall and CPU seconds are per fit, "
        "include JAX compilation, and come from a 2-core CPU shared with other jobs, so they are upper bounds; "
        "steps per iteration do not depend on the load.\n",
        "| fit | leapfrog steps/iter, before | now | wall s, before | now | CPU s, now |",
        "|---|---|---|---|---|---|",
    ]
    for k, d in res["diagnostics"].items():
        L.append(
            f"| {k} | {BEFORE['steps_per_iteration'][k]:.1f} | {d['steps_per_iteration']:.1f} | "
            f"{BEFORE['fit_seconds'][k]:.0f} | {res['fit_seconds'][k]:.0f} | {res['fit_cpu_seconds'][k]:.0f} |"
        )
    now = sum(res["fit_seconds"].values()) / 60
    L.append(
        f"| all four | | | {BEFORE_TOTAL_MIN * 60:.0f} ({BEFORE_TOTAL_MIN:.0f} min) | {now * 60:.0f} "
        f"({now:.1f} min) | {sum(res['fit_cpu_seconds'].values()):.0f} |"
    )
    L.append("")
    steps = {k: (BEFORE["steps_per_iteration"][k], d["steps_per_iteration"]) for k, d in res["diagnostics"].items()}
    part = [k for k in steps if k.startswith("partial")]
    ratios = [steps[k][0] / steps[k][1] for k in part]
    cheaper = max(steps[k][1] for k in part) < min(v[1] for k, v in steps.items() if k not in part)
    L.append(
        "- Partial pooling: "
        + ", ".join(f"{steps[k][0]:.0f} → {steps[k][1]:.0f}" for k in part)
        + f" leapfrog steps per iteration ({min(ratios):.0f}-{max(ratios):.0f}x fewer) at the default target "
        "acceptance, with the marginal form, the LogNormal τ prior, the cheaper gradient and the longer Newton start "
        "of issue 14" + ("; it now takes fewer steps per iteration than the no-pooling fits." if cheaper else ".")
    )
    worse = [k for k in steps if not k.startswith("partial") and steps[k][1] > steps[k][0]]
    if worse:
        L.append(
            "- No pooling (a model issue 14 did not change) takes more steps per iteration than before: "
            + "; ".join(f"'{k}' {steps[k][0]:.0f} → {steps[k][1]:.0f}" for k in worse)
            + ". With a family's five parameters pinned by its own runs alone (six, in the cut fit) the "
            "E-amplitude-exponent ridge is curved and long; why the current sampler takes longer trajectories on it "
            "than the old one was not investigated here."
        )
    L.append("")
    return L


def write_report(
    out: Path, res: dict, tables: dict, iso: pd.DataFrame, counts: pd.Series, sub: dict, ctx: pd.DataFrame, quick: bool
) -> None:
    """Write ``report.md`` into ``out`` from the numbers gathered by :func:`main`."""
    fams = family_order(counts.index)
    L = ["# Porian et al. (2024) isoFLOP runs: hierarchical Chinchilla fits across eight training setups\n"]
    if quick:
        L.append("> **Quick run** (`--quick`): short chains; numbers are indicative only and diagnostics may fail.\n")
    fit_min = sum(res["fit_seconds"].values()) / 60
    L.append(
        "Generated by `case_studies/porian_isoflop/run.py` "
        f"({'--quick' if quick else 'full settings'}; the four fits took {fit_min:.1f} min on a shared 2-core CPU, "
        f"{BEFORE_TOTAL_MIN:.0f} min before issue 14: see *Sampling cost*). Data: "
        '`scalebayes.datasets.load("porian_isoflop", param_count="standard", split="val")` — '
        f'{res["data"]["n_runs_total"]} runs of Porian, Wortsman, Jitsev, Schmidt & Carmon (2024), "Resolving '
        'Discrepancies in Compute-Optimal Scaling of Language Models"; a family is one training configuration '
        "dataset/hparams/warmup/decay (RefinedWeb `rw` or OpenWebText2 `owt2`). N is counted the standard way "
        "(with the embedding/last layer), C = 6ND in FLOP, validation loss in nats/token.\n"
    )
    L.append("## What was fitted\n")
    L.extend(method_lines(res))
    L.append("## Diagnostics\n")
    L.extend(diagnostics_lines(res))
    L.append("## Sampling cost, before and after issue 14\n")
    L.extend(cost_lines(res))
    L.append("## Compute-optimal exponent per family against the paper\n")
    L.append(
        "a = β/(α+β) is the exponent of the compute-optimal model size, N* ∝ C^a. The paper's headline (as recorded "
        f"in the dataset's SOURCE.md): {HEADLINE['kaplan']['text']}; {HEADLINE['corrected']['text']}. The setups "
        "are listed in the order the paper corrects them. The last column is a point estimate by the paper's route "
        "(a parabola in log N through each budget's valley runs, then least squares of log N* on log C; ± one "
        "standard error), computed here from the same runs: what the data say without the parametric law.\n"
    )
    L.append("| setup | family | runs | a, partial pooling: median [90%] | a, no pooling | paper | isoFLOP minima |")
    L.append("|---|---|---|---|---|---|---|")
    for fam in fams:
        rp, rn = tables["partial"].loc[fam], tables["none"].loc[fam]
        paper = PAPER_COLUMN[step_of(fam)]
        L.append(
            f"| {STEPS[step_of(fam)]} | {fam} | {counts[fam]} | {fmt_q(rp, 'a')} | {fmt_q(rn, 'a')} | {paper} | "
            f"{iso.loc[fam, 'a_iso']:.3f} ± {iso.loc[fam, 'a_iso_se']:.3f} |"
        )
    L.append("")
    L.append("### Reading\n")
    L.extend(res["reading"])
    L.append("")
    L.append("### How much is parameter counting?\n")
    L.append(
        "The same isoFLOP-parabola estimator on the dataset's other counting conventions (which it has only with "
        "training loss). The paper's 0.88 is Kaplan et al.'s setup with Kaplan's non-embedding count:\n"
    )
    piv = ctx.pivot(index="family", columns="counting", values="a_iso")
    cols = list(piv.columns)
    L.append("| family | " + " | ".join(cols) + " |")
    L.append("|---|" + "---|" * len(cols))
    for fam in family_order(piv.index):
        L.append(
            f"| {fam} | "
            + " | ".join("—" if np.isnan(piv.loc[fam, c]) else f"{piv.loc[fam, c]:.3f}" for c in cols)
            + " |"
        )
    L.append("")
    L.append("## Other parameters (partial pooling; median [90%])\n")
    L.append("| family | E (nats) | α | β |")
    L.append("|---|---|---|---|")
    for fam in fams:
        r = tables["partial"].loc[fam]
        L.append(f"| {fam} | {fmt_q(r, 'E')} | {fmt_q(r, 'alpha')} | {fmt_q(r, 'beta')} |")
    L.append("")
    L.append("Population (partial pooling): " + ", ".join(f"{k} = {v}" for k, v in res["population"].items()) + ".\n")
    L.append(f"## Partial pooling for a family with few runs: {SUBSAMPLE_FAMILY} cut to {SUBSAMPLE_RUNS} runs\n")
    L.append(
        f"The {SUBSAMPLE_FAMILY} family keeps {SUBSAMPLE_RUNS} of its {counts[SUBSAMPLE_FAMILY]} valley runs, drawn "
        "at random; the other seven families keep all theirs. With no pooling the six runs must pin five "
        "parameters by themselves; with partial pooling the family borrows strength from the population.\n"
    )
    L.append("| fit | a: median [90%] | 90% width |")
    L.append("|---|---|---|")
    for lab, q in sub.items():
        L.append(f"| {lab} | {q['med']:.3f} [{q['q05']:.3f}, {q['q95']:.3f}] | {q['q95'] - q['q05']:.3f} |")
    L.append("")
    L.extend(res["sub_reading"])
    L.append("")
    L.append("## Figures\n")
    for fname, cap in (
        (
            "loss_vs_compute.png",
            "Loss against compute per family: runs coloured by N, the fitted law along four model sizes and the "
            "compute-optimal frontier (medians, 90% bands).",
        ),
        ("isoflop_curves.png", "IsoFLOP curves (loss against N per budget) with the fitted law (median, 90% band)."),
        ("optimal_n.png", "Compute-optimal N*(C) per family: posterior against the isoFLOP-parabola minima."),
        ("exponents.png", "a per family: partial vs no pooling, the paper's headline, and the 6-run family."),
    ):
        L.append(f"![{cap}]({fname})\n\n*{cap}*\n")
    L.append("## Caveats\n")
    L.extend(res["caveats"])
    (out / "report.md").write_text("\n".join(L) + "\n", encoding="utf-8")


def reading_lines(tables: dict, iso: pd.DataFrame, ctx: pd.DataFrame) -> list[str]:
    """Plain-language comparison of the fitted exponents with the paper's headline (computed from the numbers)."""
    tp, tn = tables["partial"], tables["none"]
    lines = []
    step_means = []
    for step, label in STEPS.items():
        fams = family_order([f for f in tp.index if step_of(f) == step])
        meds = ", ".join(f"{f.split('/')[0]} {tp.loc[f, 'a_med']:.2f}" for f in fams)
        isos = ", ".join(f"{iso.loc[f, 'a_iso']:.2f}" for f in fams)
        lines.append(f"- {label}: a = {meds} (isoFLOP minima {isos}).")
        step_means.append(float(tp.loc[fams, "a_med"].mean()))
    kap = tp.loc[[f for f in tp.index if step_of(f) == "base/long/kaplan"], "a_med"]
    cor = tp.loc[[f for f in tp.index if setup_kind(f) == "corrected"], "a_med"]
    tuned = tp.loc[[f for f in tp.index if step_of(f) == "tuned/short/const"], "a_med"]
    kc = ctx[(ctx["counting"].str.startswith("kaplan")) & (ctx["family"].str.endswith("base/long/kaplan"))]["a_iso"]
    gap = (iso.loc[kap.index, "a_iso"] - kap).mean()
    mono = all(a > b for a, b in zip(step_means, step_means[1:], strict=False))
    lines.append(
        f"- Corrected setups: {cor.min():.2f}-{cor.max():.2f} against the paper's ≈ 0.5. The fully corrected, tuned "
        f"setup lands on it ({tuned.min():.2f}-{tuned.max():.2f}); Chinchilla decay without tuning stays a little "
        "above, as the parabola estimator also finds."
    )
    lines.append(
        f"- Kaplan et al.'s setup: {kap.min():.2f}-{kap.max():.2f} with standard parameter counting, below the "
        f"paper's 0.73-0.88. The paper's 0.88 uses Kaplan's non-embedding count; the parabola estimator on those runs "
        f"gives {kc.min():.2f}-{kc.max():.2f} against {iso.loc[kap.index, 'a_iso'].min():.2f}-"
        f"{iso.loc[kap.index, 'a_iso'].max():.2f} with standard counting (table below), so most of the gap is the "
        f"counting convention. The fitted law sits a further {gap:.2f} below the parabola estimate for this setup, "
        "the largest difference of the four: with the learning rate decayed to a fixed long horizon the loss surface "
        "is least Chinchilla-shaped."
    )
    lines.append(
        "- "
        + (
            "Each step of the paper's correction lowers a "
            if mono
            else "The steps of the paper's correction do NOT lower a monotonically "
        )
        + "(means over the two datasets: "
        + " → ".join(f"{m:.2f}" for m in step_means)
        + ")."
    )
    shift = {f: tn.loc[f, "a_med"] - tp.loc[f, "a_med"] for f in tp.index}
    big = max(shift, key=lambda f: abs(shift[f]))
    ratio = (tp.loc[big, "a_q95"] - tp.loc[big, "a_q05"]) / (tn.loc[big, "a_q95"] - tn.loc[big, "a_q05"])
    lines.append(
        f"- Pooling changes little where a family's own runs pin its parameters (|Δa| ≤ "
        f"{sorted(abs(v) for v in shift.values())[len(shift) // 2]:.3f} for half the families) and most for the "
        f"tuned constant-learning-rate families ({big}: {tn.loc[big, 'a_med']:.2f} alone, {tp.loc[big, 'a_med']:.2f} "
        f"pooled, 90% interval {ratio:.0%} as wide), whose own runs leave E and the exponents on a ridge; the "
        "population's information on E and the amplitudes moves them onto the parabola estimate."
    )
    return lines


# ---------------------------------------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> int:
    """Fit, plot and report; returns 0 when all four fits pass their diagnostics, else 1."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="short chains (pipeline check; numbers indicative only)")
    ap.add_argument("--out", type=Path, default=HERE / "output", help="output folder (default: %(default)s)")
    ap.add_argument(
        "--reuse", action="store_true", help="reload the posteriors saved in OUT/posteriors by an earlier run"
    )
    args = ap.parse_args(argv)
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    # Full settings: 1500 draws per chain, as in the report before issue 14 (when the population spreads τ mixed
    # slowest, bulk ESS ~0.1 per draw), so the cost comparison in the report is like for like.
    cfg = dict(chains=2, warmup=300, draws=300) if args.quick else dict(chains=4, warmup=1000, draws=1500)
    t0 = time.time()

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        full = sb.datasets.load("porian_isoflop", param_count="standard", split="val")
    data = select_valley(full)
    counts = data.family_counts()
    print(f"{full}\nfitting {len(data)} valley runs:\n{counts.to_string()}", flush=True)

    print("fits:", flush=True)
    store = out / "posteriors"
    store.mkdir(exist_ok=True)
    if not args.reuse:
        for f in store.glob("*.nc"):
            f.unlink()
    small = subsample_family(data, SUBSAMPLE_FAMILY, SUBSAMPLE_RUNS, SEED)
    posts = {}
    for key, d, pooling in (
        ("partial", data, "partial"),
        ("none", data, "none"),
        (f"partial, {SUBSAMPLE_RUNS}-run family", small, "partial"),
        (f"none, {SUBSAMPLE_RUNS}-run family", small, "none"),
    ):
        posts[key] = fit(d, pooling, cfg, key, store / f"{key.replace(', ', '_').replace(' ', '_')}.nc")
    tables = {k: exponent_table(posts[k], data.families) for k in ("partial", "none")}
    iso = isoflop_minimum_exponents(data)
    ctx = counting_context()

    new_p = posts["partial"].param_draws(None)  # a family not seen in fitting, drawn from the population
    n_sub = counts[SUBSAMPLE_FAMILY]
    sub = {
        f"all {n_sub} runs, partial": qd(posts["partial"].draws("a", SUBSAMPLE_FAMILY)),
        f"all {n_sub} runs, none": qd(posts["none"].draws("a", SUBSAMPLE_FAMILY)),
        f"{SUBSAMPLE_RUNS} runs, partial": qd(
            posts[f"partial, {SUBSAMPLE_RUNS}-run family"].draws("a", SUBSAMPLE_FAMILY)
        ),
        f"{SUBSAMPLE_RUNS} runs, none": qd(posts[f"none, {SUBSAMPLE_RUNS}-run family"].draws("a", SUBSAMPLE_FAMILY)),
        "new family (population), partial": qd(new_p["beta"] / (new_p["alpha"] + new_p["beta"])),
    }

    print("figures:", flush=True)
    fig_loss_vs_compute(posts["partial"], data, full, out / "loss_vs_compute.png")
    fig_isoflop(posts["partial"], data, full, out / "isoflop_curves.png")
    fig_optimal_n(posts["partial"], data, iso, out / "optimal_n.png")
    fig_exponents(tables, iso, counts, out / "exponents.png", sub)

    # ------------------------------------------------------------------ numbers for the report
    pop_post = posts["partial"].posterior
    population = {}
    for z in ("log_alpha", "log_beta", "log_E"):
        mu, tau = np.exp(np.asarray(pop_post[f"mu_{z}"]).ravel()), np.asarray(pop_post[f"tau_{z}"]).ravel()
        for lab, v in ((f"exp(μ_{z[4:]})", mu), (f"τ_{z[4:]}", tau)):
            q = qd(v)
            population[lab] = f"{q['med']:.3f} [{q['q05']:.3f}, {q['q95']:.3f}]"
    w = {k: v["q95"] - v["q05"] for k, v in sub.items()}
    keys = list(sub)
    sub_reading = [
        f"- Cut to {SUBSAMPLE_RUNS} runs, the family's 90% interval for a is {w[keys[2]]:.3f} wide with partial "
        f"pooling and {w[keys[3]]:.3f} without (all {n_sub} runs: {w[keys[0]]:.3f} and {w[keys[1]]:.3f}). Fewer "
        f"runs give a wider interval either way; partial pooling keeps it "
        f"{'narrower' if w[keys[2]] < w[keys[3]] else 'NOT narrower'} than the independent fit by borrowing the "
        "population's information, and pulls the median toward the population's.",
        f"- A new, unseen family drawn from the population has a = {sub[keys[4]]['med']:.3f} "
        f"[{sub[keys[4]]['q05']:.3f}, {sub[keys[4]]['q95']:.3f}], wider than any fitted family, as it should be: "
        "eight setups chosen to differ make a broad population.",
    ]
    mis = misfit_summary(posts)
    caveats = [
        f"- The fit uses the valley window (factor {WINDOW:g} in N around each budget's best run). The exponent "
        "depends on that choice somewhat, because the Chinchilla form is only approximately right across a whole "
        "isoFLOP sweep; the window keeps the runs the paper's own estimator relies on.",
        "- E (irreducible loss) is only moderately identified at these scales (C ≤ 2.6e19 FLOP, losses ≥ 2.9 nats) "
        "and trades off against the amplitudes and exponents; a depends on the ratio of the exponents and is "
        "better determined than α or β alone. The posteriors of α and β individually should not be read as "
        "extrapolation-ready.",
        f"- The likelihood's Student-t ν comes out small ({qd(posts['partial'].draws('nu'))['med']:.1f}, heavy "
        "tails): a few runs per family sit off the law (see the isoFLOP figure, notably the constant-learning-rate "
        "families); the robust likelihood keeps single runs from dragging the fit.",
        "- The paper's headline numbers come from its own estimator (interpolated isoFLOP minima with a seed-noise "
        "bootstrap), not from a parametric loss surface; the comparison is of the same quantity estimated two ways.",
        misfit_caveat(mis),
    ]
    res = {
        "runtime_s": time.time() - t0,
        "quick": bool(args.quick),
        "reused_saved_fits": bool(args.reuse),
        "data": {
            "name": full.name,
            "n_runs_total": len(full),
            "n_runs_fitted": len(data),
            "window": WINDOW,
            "runs_per_family": {k: int(v) for k, v in counts.items()},
        },
        "sampler": cfg,
        "seed": SEED,
        "diagnostics": {k: diag_dict(p) for k, p in posts.items()},
        "fit_seconds": {k: float(p.idata.attrs.get("case_study_fit_seconds", float("nan"))) for k, p in posts.items()},
        "fit_cpu_seconds": {
            k: float(p.idata.attrs.get("case_study_fit_cpu_seconds", float("nan"))) for k, p in posts.items()
        },
        "model": model_summary(posts["partial"]),
        "misfit": mis,
        "headline": HEADLINE,
        "families": {
            fam: {
                "setup": STEPS[step_of(fam)],
                "headline_group": setup_kind(fam),
                "n_runs": int(counts[fam]),
                "partial": {k: float(v) for k, v in tables["partial"].loc[fam].items()},
                "none": {k: float(v) for k, v in tables["none"].loc[fam].items()},
                "isoflop_minima": {"a": float(iso.loc[fam, "a_iso"]), "se": float(iso.loc[fam, "a_iso_se"])},
            }
            for fam in family_order(data.families)
        },
        "counting_context": ctx.to_dict(orient="records"),
        "population": population,
        "subsample": {"family": SUBSAMPLE_FAMILY, "runs": SUBSAMPLE_RUNS, "a": sub},
        "reading": reading_lines(tables, iso, ctx),
        "sub_reading": sub_reading,
        "caveats": caveats,
    }
    write_report(out, res, tables, iso, counts, sub, ctx, args.quick)
    (out / "results.json").write_text(json.dumps(res, indent=2, default=float) + "\n", encoding="utf-8")
    print(f"wrote {out}/report.md, results.json and 4 figures in {time.time() - t0:.0f} s", flush=True)
    return 0 if all(p.diagnostics.ok for p in posts.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
