"""Hierarchy benchmark (issue 14, item 4): how partial pooling samples from 2 to 50 families.

    PYTHONPATH=. .venv/bin/python benchmarks/hierarchy.py                     # every case, 5 seeds, 1000 + 1000
    PYTHONPATH=. .venv/bin/python benchmarks/hierarchy.py --quick --cases sim2,sim3,porian2 --seeds 2

Every fit is ``scalebayes.fit(data, seed=s)`` at the package's defaults (partial pooling for more than one family,
4 chains, dense metric, target_accept 0.9, max tree depth 10) except ``warmup``/``draws`` (1000/1000, or 500/500
with ``--quick``, the documented setting for quick fits). Only the public API is used; nothing is asserted about
time. Per fit we record, from ``post.idata.sample_stats`` and ``post.diagnostics``:

* leapfrog steps per iteration (median and mean of ``n_steps``) and the fraction of iterations that hit the
  maximum tree depth (``n_steps == 2**10 - 1``): saturation means NUTS was cut off before its U-turn;
* wall seconds (``time.perf_counter``) and process CPU seconds (``time.process_time``, all threads) of the call,
  including JAX compilation when a padded shape is seen for the first time in this process;
* min bulk ESS and max R-hat with the parameter that attains them (which τ, μ or family parameter is worst),
  divergences and whether the diagnostics passed (R-hat ≤ 1.01, bulk/tail ESS ≥ 400, no divergence).

Cases (``--cases`` takes a comma-separated list of these names):

``sim2 sim3 sim5 sim20 sim50``
    Simulated Chinchilla-law families (see :func:`simulate`); a new design and new family parameters per seed.
``porian8``
    ``sb.datasets.load("porian_isoflop", param_count="standard", split="val")``: 8 training setups, all 940 runs
    (the walls of the isoFLOP valleys included; case_studies/porian_isoflop fits the 565 valley runs).
``porian8v``
    The same 8 setups, the 565 valley runs only (N within 3x of the best run of its budget), as fitted by
    case_studies/porian_isoflop and as in issue 14's table.
``porian2 porian3``
    Every 2-family (28) and 3-family (56) subset of porian's 8 setups; ``--quick`` (or ``--subsets K``) takes K
    of them, drawn once with a fixed generator so reruns pick the same subsets.
``porian2v porian3v``
    The same subsets of the valley runs (``porian8v``).

Results go to ``benchmarks/output/hierarchy.jsonl`` (one record per fit, appended as each fit ends; ``--resume`` keeps
the records there, skips those fits and reports old and new together; without it the file starts empty) and the table to
``benchmarks/HIERARCHY.md``, rewritten after every fit so an interrupted run still leaves its table (text written
below the file's marker line, e.g. an analysis, is kept).
"""

from __future__ import annotations

import argparse
import datetime as _dt
import itertools
import json
import os
import platform
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

import scalebayes as sb

HERE = Path(__file__).resolve().parent
OUT = HERE / "output"
MAX_STEPS = 2**10 - 1  # fit's default max_tree_depth 10

# Centre of the simulated families: Besiroglu et al. (2024)'s refit of Chinchilla (E nats, A, B, exponents).
BASE = dict(E=1.82, A=482.0, B=2085.0, alpha=0.348, beta=0.366)
# Between-family SDs used to draw each family's parameters, in the coordinates the spreads are quoted in:
# log E; the log of each reducible term at a reference point (N_REF parameters, D_REF tokens), so that changing an
# exponent does not silently move the term by α·log N ≈ 20α; and the exponents themselves. They sit at or below the
# within-study spreads measured on real families (benchmarks/TAU_EVIDENCE.md: porian's setups differ by τ ≈ 0.1-0.15
# in log E, 0.2-0.5 in the centred log amplitudes, ~0.04 in α and ~0.04-0.12 in β), so these simulated families are
# somewhat *more alike* than porian's: the easier case for the population scales.
SPREAD = dict(log_E=0.05, log_A_ref=0.15, log_B_ref=0.15, alpha=0.03, beta=0.03)
N_REF, D_REF = 1e8, 2e9
SIGMA = 0.01  # Normal noise on log loss: isoFLOP runs scatter ~1% around a smooth law
RUNS = (5, 60)  # runs per family, drawn uniformly
SIM_FAMILIES = {"sim2": 2, "sim3": 3, "sim5": 5, "sim20": 20, "sim50": 50}
PORIAN = dict(param_count="standard", split="val")
MARKER = "<!-- generated table ends; text below is kept by hierarchy.py -->"


# ------------------------------------------------------------------------------------------------------ designs
def family_params(rng: np.random.Generator) -> dict[str, float]:
    """One family's (E, A, B, alpha, beta) drawn around :data:`BASE` with the :data:`SPREAD` SDs."""
    alpha = BASE["alpha"] + SPREAD["alpha"] * rng.standard_normal()
    beta = BASE["beta"] + SPREAD["beta"] * rng.standard_normal()
    log_a_ref = np.log(BASE["A"]) - BASE["alpha"] * np.log(N_REF) + SPREAD["log_A_ref"] * rng.standard_normal()
    log_b_ref = np.log(BASE["B"]) - BASE["beta"] * np.log(D_REF) + SPREAD["log_B_ref"] * rng.standard_normal()
    return dict(
        E=float(np.exp(np.log(BASE["E"]) + SPREAD["log_E"] * rng.standard_normal())),
        A=float(np.exp(log_a_ref + alpha * np.log(N_REF))),
        B=float(np.exp(log_b_ref + beta * np.log(D_REF))),
        alpha=float(alpha),
        beta=float(beta),
    )


def isoflop_design(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """N (parameters) and D (tokens) of ``n`` runs on an isoFLOP grid: 2 to 6 budgets log-spaced over 2-3 decades
    of C (FLOP, starting between 1e16 and 1e17), each swept over model sizes within ±0.8 decade of a 20 tokens
    per parameter optimum. Shapes (n,)."""
    n_budgets = int(np.clip(n // 6, 2, 6))
    c_lo = rng.uniform(16.0, 17.0)
    logc = np.linspace(c_lo, c_lo + rng.uniform(2.0, 3.0), n_budgets)
    which = np.arange(n) % n_budgets
    C = 10.0 ** logc[which]
    n_opt = np.sqrt(C / (6 * 20.0))
    per = np.bincount(which, minlength=n_budgets)
    offsets = np.concatenate([np.linspace(-0.8, 0.8, k) if k > 1 else [0.0] for k in per])
    order = np.argsort(which, kind="stable")
    off = np.empty(n)
    off[order] = offsets
    N = n_opt * 10.0**off
    return N, C / (6 * N)


def simulate(n_families: int, seed: int) -> tuple[sb.ScalingData, pd.DataFrame]:
    """Runs of ``n_families`` Chinchilla-law families (5-60 runs each, isoFLOP grids, Normal noise :data:`SIGMA` on
    log loss) and the true parameters per family."""
    rng = np.random.default_rng([n_families, seed])
    rows, truth = [], []
    for f in range(n_families):
        p = family_params(rng)
        n = int(rng.integers(RUNS[0], RUNS[1] + 1))
        N, D = isoflop_design(n, rng)
        mean = p["E"] + p["A"] * N ** -p["alpha"] + p["B"] * D ** -p["beta"]
        loss = mean * np.exp(SIGMA * rng.standard_normal(n))
        rows.append(pd.DataFrame({"N": N, "D": D, "loss": loss, "family": f"f{f:02d}"}))
        truth.append({"family": f"f{f:02d}", "runs": n, **p})
    df = pd.concat(rows, ignore_index=True)
    data = sb.ScalingData.from_frame(df, N="N", D="D", loss="loss", family="family", name=f"sim{n_families}")
    return data, pd.DataFrame(truth)


def porian_subsets(k: int, n_pick: int | None) -> list[tuple[str, ...]]:
    """All k-family subsets of porian's setups, or ``n_pick`` of them drawn with a fixed generator."""
    fams = sb.datasets.load("porian_isoflop", **PORIAN).families
    subsets = list(itertools.combinations(fams, k))
    if n_pick is not None and n_pick < len(subsets):
        idx = np.random.default_rng(14 + k).choice(len(subsets), size=n_pick, replace=False)
        subsets = [subsets[i] for i in sorted(idx)]
    return subsets


def porian(families: tuple[str, ...] | None = None) -> sb.ScalingData:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the three rows with missing values, listed in data.excluded
        data = sb.datasets.load("porian_isoflop", **PORIAN)
    if families is None:
        return data
    return data.subset(np.isin(data.frame["family"], families), reason="other porian setup")


def porian_valley(families: tuple[str, ...] | None = None, window: float = 3.0) -> sb.ScalingData:
    """porian's 8 setups, the valley runs only: N within a factor ``window`` of the lowest-loss run of its family and
    budget (565 of 940 runs; the selection of case_studies/porian_isoflop and of issue 14's porian row)."""
    data = porian()
    f = data.frame
    best_n = f.loc[f.groupby(["family", "C"])["loss"].idxmin(), ["family", "C", "N"]]
    best = f[["family", "C"]].merge(best_n, on=["family", "C"], how="left")["N"].to_numpy()
    keep = np.abs(np.log(f["N"].to_numpy() / best)) <= np.log(window) + 1e-9
    if families is not None:
        keep &= np.isin(f["family"], families)
    return data.subset(keep, reason=f"N more than {window:g}x from its isoFLOP budget's best run, or another setup")


# ------------------------------------------------------------------------------------------------------ one fit
def measure(data: sb.ScalingData, seed: int, warmup: int, draws: int) -> dict:
    """Fit at the defaults and return the record of one fit (see the module docstring)."""
    t0, c0 = time.perf_counter(), time.process_time()
    post = sb.fit(data, seed=seed, warmup=warmup, draws=draws, pointwise=False, warn=False)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    steps = np.asarray(post.idata["sample_stats"]["n_steps"])
    diag = post.diagnostics
    table = diag.table.replace([np.inf, -np.inf], np.nan)
    return {
        "runs": len(data),
        "families": len(data.families),
        "steps_median": float(np.median(steps)),
        "steps_mean": float(np.mean(steps)),
        "max_depth_frac": float(np.mean(steps >= MAX_STEPS)),
        "wall_s": round(wall, 2),
        "cpu_s": round(cpu, 2),
        "ess_bulk_min": float(diag.ess_bulk_min),
        "ess_bulk_worst": str(table["ess_bulk"].idxmin()),
        "r_hat_max": float(diag.r_hat_max),
        "r_hat_worst": str(table["r_hat"].idxmax()),
        "divergences": int(diag.divergences),
        "ok": bool(diag.ok),
        "failures": list(diag.failures),
        "warmup": warmup,
        "draws": draws,
        "extensions": int(diag.extensions),  # times fit() sampled on (R-hat/ESS short at first)
    }


def jobs(cases: list[str], seeds: int, n_subsets: int | None):
    """(case, label, seed, data factory) for every fit to run, in order."""
    for case in cases:
        if case in SIM_FAMILIES:
            for s in range(seeds):
                yield case, case, s, (lambda F=SIM_FAMILIES[case], s=s: simulate(F, s)[0])
        elif case == "porian8":
            for s in range(seeds):
                yield case, case, s, porian
        elif case == "porian8v":
            for s in range(seeds):
                yield case, case, s, porian_valley
        elif case in ("porian2", "porian3", "porian2v", "porian3v"):
            make = porian_valley if case.endswith("v") else porian
            for fams in porian_subsets(int(case[6]), n_subsets):
                for s in range(seeds):
                    yield case, " + ".join(fams), s, (lambda fams=fams, make=make: make(fams))
        else:
            cases = [*SIM_FAMILIES, "porian8", "porian8v", "porian2", "porian3", "porian2v", "porian3v"]
            raise SystemExit(f"unknown case {case!r}; cases: {cases}")


# ------------------------------------------------------------------------------------------------------ report
def _short(failure: str) -> str:
    """'R-hat 1.031 > 1.01 (tau_log_A_c)' -> 'R-hat tau_log_A_c'; '4 divergent transitions' -> 'divergences'."""
    if "divergent" in failure:  # "1 divergent transition (0.0% of iterations)"
        return "divergences"
    if "(" in failure:
        return failure.split()[0] + " " + failure[failure.index("(") + 1 : failure.rindex(")")]
    return failure


def _row(name: str, g: pd.DataFrame) -> str:
    worst = g.sort_values("ess_bulk_min").iloc[0]
    fails = sorted({_short(f) for r in g.failures for f in r})
    r_worst = g.sort_values("r_hat_max").iloc[-1]
    cells = [
        name,
        int(g.families.iloc[0]),
        int(g.runs.median()),
        len(g),
        f"{np.median(g.steps_median):.0f}",
        f"{g.steps_mean.mean():.0f}",
        f"{g.max_depth_frac.mean():.0%}",
        f"{g.wall_s.median():.0f}",
        f"{g.cpu_s.median():.0f}",
        f"{g.ess_bulk_min.min():.0f} ({worst.ess_bulk_worst})",
        f"{g.r_hat_max.max():.3f} ({r_worst.r_hat_worst})",
        int(g.divergences.sum()),
        int((g.get("extensions", pd.Series(0, index=g.index)).fillna(0) > 0).sum()),
        f"{int(g.ok.sum())}/{len(g)}",
        "; ".join(fails[:4]) or "-",
    ]
    return "| " + " | ".join(map(str, cells)) + " |"


def write_report(records: list[dict], settings: dict, path: Path) -> None:
    """The markdown table: one row per case (simulated, porian8) or per subset, plus one summary row per subset
    group. Medians are over the fits of the row; ESS is the row's minimum, R-hat its maximum."""
    df = pd.DataFrame(records)
    head = (
        "| case | families | runs | fits | steps/iter (median) | steps/iter (mean) | at max depth | wall s "
        "| CPU s | min bulk ESS (param) | max R-hat (param) | divergences | sampled on | pass | failures seen |\n"
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"
    )
    lines = [head]
    for case in dict.fromkeys(df.case):
        sub = df[df.case == case]
        if case in ("porian2", "porian3", "porian2v", "porian3v"):
            total = len(list(itertools.combinations(range(8), int(case[6]))))
            every = int(sub.groupby("label").ok.all().sum())
            name = f"**{case} ({sub.label.nunique()} of {total} subsets; {every} pass on every seed)**"
            lines.append(_row(name, sub))
            lines += [_row(f"{case}: {lab}", g) for lab, g in sub.groupby("label", sort=False)]
        else:
            lines.append(_row(case, sub))
    text = [
        "# Hierarchy benchmark (issue 14, item 4)",
        "",
        settings.pop("preamble", ""),
        "",
        *lines,
        "",
        "Settings: " + ", ".join(f"{k}={v}" for k, v in settings.items()),
        "",
        "Columns: steps/iter from `sample_stats.n_steps` (median over the row's fits of each fit's median; mean over "
        f"all iterations); 'at max depth' is the share of iterations with {MAX_STEPS} leapfrog steps (tree depth 10 "
        "saturated); wall and CPU seconds per fit (median), including JAX compilation for the first fit of each "
        "padded shape; 'sampled on': fits whose chains `fit` continued for another block of draws because only "
        "R-hat or ESS fell short (`extend=1`, scalebayes.diagnostics.worth_extending); pass = `post.diagnostics.ok` "
        "(R-hat ≤ 1.01, bulk and tail ESS ≥ 400, no divergences), judged on all the draws. "
        f"Generated by `benchmarks/hierarchy.py`; raw records in `benchmarks/output/{settings.pop('log')}`.",
        "",
        MARKER,
    ]
    kept = path.read_text().split(MARKER, 1)[1] if path.exists() and MARKER in path.read_text() else "\n"
    path.write_text("\n".join(text) + kept)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--cases", default="sim2,sim3,sim5,sim20,sim50,porian8,porian2,porian3")
    ap.add_argument("--seeds", type=int, default=5, help="seeds per case (K); default 5")
    ap.add_argument("--quick", action="store_true", help="500 warm-up + 500 draws and --subsets 4")
    ap.add_argument("--warmup", type=int, default=None, help="override warm-up iterations per chain")
    ap.add_argument("--draws", type=int, default=None, help="override draws per chain")
    ap.add_argument("--subsets", type=int, default=None, help="porian subsets per group (default all; 4 with --quick)")
    ap.add_argument("--max-minutes", type=float, default=None, help="start no new fit after this many minutes")
    ap.add_argument("--resume", action="store_true", help="keep hierarchy.jsonl's records, skip fits already there")
    ap.add_argument("--note", default="", help="a line written above the table (e.g. what the run is a baseline of)")
    ap.add_argument("--out", default=str(HERE / "HIERARCHY.md"))
    ap.add_argument("--log", default="hierarchy.jsonl", help="records file under benchmarks/output/")
    a = ap.parse_args(argv)
    warmup = a.warmup or (500 if a.quick else 1000)
    draws = a.draws or (500 if a.quick else 1000)
    n_subsets = a.subsets if a.subsets is not None else (4 if a.quick else None)
    cases = [c.strip() for c in a.cases.split(",") if c.strip()]
    OUT.mkdir(exist_ok=True)
    log = OUT / a.log
    started = time.perf_counter()
    settings = {
        "date": _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "warmup": warmup,
        "draws": draws,
        "chains": 4,
        "seeds per case": a.seeds,
        "porian subsets per group": n_subsets or "all",
        "cases": " ".join(cases),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, load average at start {os.getloadavg()[0]:.1f}",
        "scalebayes": sb.__version__,
        "log": a.log,
    }
    records = [json.loads(line) for line in log.read_text().splitlines()] if a.resume and log.exists() else []
    if not a.resume:
        log.unlink(missing_ok=True)
    done = {(r["case"], r["label"], r["seed"]) for r in records}
    for case, label, seed, make in jobs(cases, a.seeds, n_subsets):
        if (case, label, seed) in done:
            continue
        if a.max_minutes is not None and time.perf_counter() - started > 60 * a.max_minutes:
            print(f"--max-minutes reached: not starting {label} seed {seed}", flush=True)
            break
        rec = {"case": case, "label": label, "seed": seed, **measure(make(), seed, warmup, draws)}
        records.append(rec)
        with log.open("a") as fh:
            fh.write(json.dumps(rec) + "\n")
        print(json.dumps(rec), flush=True)
        write_report(records, {"preamble": a.note, **settings}, Path(a.out))


if __name__ == "__main__":
    main()
