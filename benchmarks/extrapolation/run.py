"""Public extrapolation benchmark: fit the smaller runs of each public dataset, score predictions of the larger ones.

    python benchmarks/extrapolation/run.py [--quick] [--only DATASET ...] [--methods METHOD ...] [--seed 0]
                                           [--data-root PATH] [--merge]

Runs every method of :mod:`methods` on every task of :mod:`tasks` (the datasets present under ../shared/data), scores
them with :mod:`score`, and writes ``results.json`` and ``RESULTS.md`` next to this file. ``--quick`` samples
4 chains × (300 warm-up + 300 draws) and 300 bootstrap resamples instead of 4 × (1000 + 1000) and 1000.
``--merge`` keeps the saved results of datasets not run this time (to run the suite in pieces); the table says
which settings each dataset ran with.

Aggregation: a task's scores are over its held-out runs (coverage: share covered; ARE and width: medians; LPD: mean);
a dataset's row is the mean over its tasks where every method ran (tasks weigh equally, whatever their number of
held-out runs, and a run held out by both a compute and an N split counts in both); the overall row is the mean over
datasets. Failed (task, method) pairs are listed with their error in the per-task table.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
import zlib
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))  # run as a script: tasks, score, methods sit next to this file

from methods import FULL, METHODS, QUICK, Context  # noqa: E402
from score import reference_coverage, score_draws, summarise  # noqa: E402
from tasks import DATASETS, Task, data_root, load_tasks  # noqa: E402

from scalebayes.spec import NOISE_TRENDS  # noqa: E402

METRICS = ("coverage50", "coverage90", "are", "width", "lpd")


def run_task(task: Task, methods: list[str], settings, seed: int, others: list[Task]) -> dict:
    """Every method on one task: {method: {summary, runs, seconds, error}} plus shared ``info``."""
    ctx = Context(task=task, settings=settings, seed=seed)
    out = {}
    for name in methods:
        t0 = time.perf_counter()
        try:
            log_draws = METHODS[name](ctx, others)
            runs = score_draws(log_draws, task.heldout.loss)
            runs.insert(0, "row", [str(i) for i in task.heldout.frame.index])
            for k in ("N", "D", "C"):
                runs[k] = task.heldout.frame[k].to_numpy()
            out[name] = {
                "summary": summarise(runs),
                "runs": runs.to_dict(orient="records"),
                # each task its own rows: the same rows in every task would pair draws that share one discrepancy
                # normal z (predictive.delta_normals depends only on the seed and the number of draws) across tasks
                "reference": np.round(
                    reference_coverage(log_draws, seed=seed + zlib.crc32(task.name.encode())), 4
                ).tolist(),
            }
        except Exception as e:  # noqa: BLE001 - one failing method must not stop the suite; the error is reported
            out[name] = {"error": f"{type(e).__name__}: {e}"}
        out[name]["seconds"] = time.perf_counter() - t0
        msg = out[name].get("error") or " ".join(f"{k} {v:.3g}" for k, v in out[name]["summary"].items())
        print(f"  {name:16s} {out[name]['seconds']:6.0f}s  {msg}", flush=True)
    return {"methods": out, "info": _jsonable(ctx.info)}


def _jsonable(x):
    return json.loads(json.dumps(x, default=lambda v: v.item() if hasattr(v, "item") else str(v)))


def run(only, methods, quick: bool, seed: int, root, on_task=None, noise_trend: str = "auto", names=None) -> dict:
    """Results of every method on every task; ``on_task(payload)`` is called after each task (to save progress:
    a dataset whose tasks have not all run is marked ``partial``). ``noise_trend``: the Bayesian fits' option.
    ``names``: run only the tasks of these names (every dataset is still loaded: the leave-one-dataset-out priors
    read them all)."""
    settings = replace(QUICK if quick else FULL, noise_trend=noise_trend)
    tasks, skipped, loaded = load_tasks(only, root)
    payload = {"datasets": {}, "machine": f"{platform.machine()}, {platform.python_version()}"}
    for name, why in skipped.items():
        payload["datasets"][name] = {"status": "skipped", "reason": why}
    for name, data in loaded.items():
        excl = data.excluded["reason"].value_counts().to_dict() if len(data.excluded) else {}
        payload["datasets"][name] = {
            "status": "run",
            "settings": {**settings.__dict__, "quick": quick, "seed": seed, "methods": methods},
            "n_rows": len(data),
            "excluded": {str(k): int(v) for k, v in excl.items()},
            "tasks": [],
            "n_tasks": sum(t.dataset == name for t in tasks),
        }
    t_all = time.perf_counter()
    for task in tasks:
        if names and task.name not in names:
            continue
        others = [t for t in tasks if t.dataset != task.dataset]  # leave-one-dataset-out
        print(f"{task.name}: fit {len(task.train)}, predict {len(task.heldout)}, x{task.factor:.1f}", flush=True)
        rec = {**task.describe(), **run_task(task, methods, settings, seed, others)}
        payload["datasets"][task.dataset]["tasks"].append(rec)
        payload["seconds"] = time.perf_counter() - t_all
        if on_task is not None:
            on_task(payload)
    payload["seconds"] = time.perf_counter() - t_all
    return payload


def merge(old: dict, new: dict) -> dict:
    """``new`` plus the datasets of ``old`` that ``new`` did not run."""
    out = {"datasets": dict(old.get("datasets", {})), "machine": new["machine"]}
    for name, rec in new["datasets"].items():
        if rec["status"] == "run" or name not in out["datasets"]:
            out["datasets"][name] = rec
    out["seconds_by_dataset"] = {**old.get("seconds_by_dataset", {})}
    out["cpu_seconds_by_run"] = {**old.get("cpu_seconds_by_run", {})}
    ran = [name for name, rec in new["datasets"].items() if rec["status"] == "run"]
    for name in ran:
        rec = new["datasets"][name]
        out["seconds_by_dataset"][name] = sum(m["seconds"] for t in rec["tasks"] for m in t["methods"].values())
    if ran:  # CPU seconds of the process that ran these datasets (one process may run several)
        out["cpu_seconds_by_run"][",".join(ran)] = new["cpu_seconds"]
    return out


def merge_tasks(old: dict, new: dict) -> dict:
    """``old`` with the tasks that ``new`` ran put in place of its records of the same tasks (``--tasks``)."""
    out = json.loads(json.dumps(old))
    for name, rec in new["datasets"].items():
        tasks = out["datasets"][name]["tasks"]
        for t in rec.get("tasks", []):
            at = [i for i, u in enumerate(tasks) if u["task"] == t["task"]]
            if at:
                tasks[at[0]] = t
            else:
                tasks.append(t)
    return out


# ------------------------------------------------------------------------------------------------ tables
def task_table(payload: dict) -> pd.DataFrame:
    rows = []
    for ds, rec in payload["datasets"].items():
        for t in rec.get("tasks", []):
            for m, r in t["methods"].items():
                row = {"dataset": ds, "task": t["task"], "factor": t["factor"], "n_train": t["n_train"], "method": m}
                row.update(r.get("summary", {}))
                row["error"] = r.get("error", "")
                row["seconds"] = r["seconds"]
                ok = t["info"].get("posterior_ok")  # the shared posterior's diagnostics (not the Huber fit's)
                row["fit_ok"] = "" if ok is None or m == "huber_bootstrap" else ("yes" if ok else "no")
                cal = t["info"].get("calibration")
                if m == "discrepancy" and isinstance(cal, dict):  # inner point refits that converged and were used
                    lanes = cal.get("lanes") or 0
                    row["fit_ok"] += f", inner {lanes - len(cal.get('left_out') or [])}/{lanes}"
                rows.append(row)
    return pd.DataFrame(rows)


def _scored(tt: pd.DataFrame) -> pd.DataFrame:
    """The task table without tasks where any method failed, so every method is scored on the same tasks."""
    failed = set(tt.loc[tt["error"] != "", "task"])
    return tt[~tt["task"].isin(failed)]


def _task_means(ok: pd.DataFrame, by: list[str]) -> pd.DataFrame:
    """Mean of each metric over the tasks of each ``by`` group of :func:`_scored` rows, with ``tasks`` and the
    coverages' standard errors over tasks (``se50``, ``se90``)."""
    g = ok.groupby(by)
    out = g[list(METRICS)].mean()
    out.insert(0, "tasks", g.size())
    # A task's held-out runs share one extrapolation error, so its coverage is close to all-or-nothing: the
    # standard error over tasks (not over runs) says how far a coverage can sit from nominal by chance.
    for level in ("50", "90"):
        se = g[f"coverage{level}"].std(ddof=1) / np.sqrt(g.size())
        out.insert(out.columns.get_loc(f"coverage{level}") + 1, f"se{level}", se)
    return out


def dataset_table(tt: pd.DataFrame) -> pd.DataFrame:
    """Per (dataset, method): :func:`_task_means` and the held-out runs scored."""
    ok = _scored(tt)
    out = _task_means(ok, ["dataset", "method"])
    out.insert(1, "runs", ok.groupby(["dataset", "method"])["n"].sum())
    return out


def pooled_table(tt: pd.DataFrame) -> pd.DataFrame:
    """Mean over every task of every dataset (tasks weigh equally), with the standard error over tasks."""
    return _task_means(_scored(tt), ["method"])


def overall_table(dt: pd.DataFrame) -> pd.DataFrame:
    g = dt.reset_index().groupby("method")
    out = g[list(METRICS)].mean()  # the per-dataset standard errors do not average: see the pooled table
    out.insert(0, "datasets", g.size())
    out.insert(1, "tasks", g["tasks"].sum())
    return out


#: Issue 13's bar for one dataset: nominal 90% intervals cover 80-95%, nominal 50% intervals 40-60%.
BAR90, BAR50 = (0.80, 0.95), (0.40, 0.60)


def _task_references(payload: dict, ok: pd.DataFrame) -> dict:
    """{(dataset, method): [(reps, 2) replicate coverages of each scored task]} (tasks saved without them are
    left out)."""
    reps: dict = {}
    scored = set(ok["task"])
    for ds, rec in payload["datasets"].items():
        for t in rec.get("tasks", []):
            for m, r in t["methods"].items():
                if t["task"] in scored and "reference" in r:
                    reps.setdefault((ds, m), []).append(np.asarray(r["reference"], float))
    return reps


def _reference(payload: dict, ok: pd.DataFrame) -> dict:
    """{(dataset, method): (reps, 2) replicate coverages of the mean over the dataset's scored tasks}."""
    # Replicate r of every task is an independent draw (each from its own task's predictive), so the mean over
    # tasks of replicate r is one replicate of the dataset's coverage.
    reps = _task_references(payload, ok)
    return {k: np.mean(v, axis=0) for k, v in reps.items() if len({len(a) for a in v}) == 1}


def _mid_p(ref: np.ndarray, obs: float) -> float:
    """Two-sided mid-p of ``obs`` among the replicates ``ref`` (coverages are discrete: ties count half)."""
    lower = (ref < obs - 1e-9).mean() + 0.5 * (np.abs(ref - obs) <= 1e-9).mean()
    return float(min(1.0, 2 * min(lower, 1 - lower)))


def reference_table(payload: dict, tt: pd.DataFrame) -> pd.DataFrame:
    """Per (dataset, method) and pooled over all tasks: the observed coverages beside the range (5-95%) a calibrated
    predictive would score by chance (:func:`score.reference_coverage`), the two-sided mid-p of the observed one
    among those replicates, and the chance ``p_bar`` that a calibrated predictive meets issue 13's bar there."""
    ok = _scored(tt)
    ref = _reference(payload, ok)
    if not ref:
        return pd.DataFrame()
    pooled: dict = {}
    for (ds, m), r in ref.items():  # pooled: task-weighted mean of the datasets' replicates
        n = int((ok["dataset"].eq(ds) & ok["method"].eq(m)).sum())
        pooled.setdefault(m, []).append((n, r))
    ref.update({("all tasks", m): sum(n * r for n, r in v) / sum(n for n, _ in v) for m, v in pooled.items()})
    obs = _task_means(ok, ["dataset", "method"])
    allobs = _task_means(ok, ["method"])
    rows = []
    for (ds, m), r in ref.items():
        o = allobs.loc[m] if ds == "all tasks" else obs.loc[(ds, m)]
        row = {"dataset": ds, "method": m, "tasks": int(o["tasks"])}
        for i, lev in ((0, "50"), (1, "90")):
            lo, hi = np.quantile(r[:, i], [0.05, 0.95])
            row[f"coverage{lev}"] = o[f"coverage{lev}"]
            row[f"calibrated{lev}"] = f"{100 * lo:.0f}-{100 * hi:.0f}%"
            row[f"p{lev}"] = _mid_p(r[:, i], o[f"coverage{lev}"])
        inside = (r[:, 1] >= BAR90[0]) & (r[:, 1] <= BAR90[1]) & (r[:, 0] >= BAR50[0]) & (r[:, 0] <= BAR50[1])
        row["p_bar"] = float(inside.mean())
        rows.append(row)
    return pd.DataFrame(rows).set_index(["dataset", "method"])


def _fmt(df: pd.DataFrame) -> str:
    f = {
        "coverage50": lambda v: f"{100 * v:.0f}%",
        "coverage90": lambda v: f"{100 * v:.0f}%",
        "se50": lambda v: f"±{100 * v:.0f}",
        "se90": lambda v: f"±{100 * v:.0f}",
        "are": lambda v: f"{100 * v:.2f}%",
        "width": lambda v: f"{100 * v:.1f}%",
        "lpd": lambda v: f"{v:.2f}",
        "p50": lambda v: f"{v:.2f}",
        "p90": lambda v: f"{v:.2f}",
        "p_bar": lambda v: f"{100 * v:.0f}%",
        **{f"{k}{lev}": (lambda v: f"{100 * v:.0f}") for k in SPREADS for lev in ("50", "90")},
        "factor": lambda v: f"{v:.1f}x",
        "seconds": lambda v: f"{v:.0f}",
        **{k: (lambda v: f"{int(v)}") for k in ("n", "runs", "n_train", "tasks", "datasets")},
    }
    d = df.reset_index()
    head = [{"are": "ARE (median)", "width": "90% width (median)", "lpd": "LPD (nats)"}.get(c, c) for c in d.columns]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(d.columns)]
    for _, r in d.iterrows():
        cells = [f[c](r[c]) if c in f and pd.notna(r[c]) else ("" if pd.isna(r[c]) else str(r[c])) for c in d.columns]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def markdown(payload: dict) -> str:
    tt = task_table(payload)
    lines = ["# Extrapolation benchmark: fit the smaller runs, predict the larger", "", (__doc__ or "").strip(), ""]
    lines += [
        "Scoring: see `score.py` (coverage of central 50%/90% intervals of the predictive draws, median ARE of the",
        "predictive median, median relative width of the 90% interval, mean log predictive density of the",
        "observed log loss from a Gaussian KDE of the draws, identical for every method).",
        "",
    ]
    lines += [
        "## Datasets",
        "",
        "| dataset | status | settings | rows | excluded rows (reason: count) |",
        "|---|---|---|---|---|",
    ]
    for ds in DATASETS:
        rec = payload["datasets"].get(ds, {"status": "not run", "reason": "not selected"})
        if rec["status"] != "run":
            lines.append(f"| {ds} | **{rec['status']}**: {rec.get('reason', '')} | | | |")
            continue
        done = len(rec["tasks"])
        status = "run" if done == rec.get("n_tasks", done) else f"**partial**: {done} of {rec['n_tasks']} tasks"
        s = rec["settings"]
        kind = "quick" if s["quick"] else "full"
        st = f"{kind}: {s['chains']}×({s['warmup']}+{s['draws']}), B={s['bootstrap']}, seed {s['seed']}"
        st += f", noise_trend={s.get('noise_trend', 'none')}"  # runs saved before the option had none
        ex = "; ".join(f"{k}: {v}" for k, v in rec["excluded"].items()) or "none"
        lines.append(f"| {ds} | {status} | {st} | {rec['n_rows']} | {ex} |")
    if len(tt) == 0:
        return "\n".join(lines) + "\n"
    dt = dataset_table(tt)
    lines += ["", "## Overall (mean over datasets)", "", _fmt(overall_table(dt)), ""]
    lines += [
        "## Pooled (mean over all tasks)",
        "",
        "`se50`, `se90`: standard error of the coverage over tasks, in percentage points (here and per dataset).",
        "",
        _fmt(pooled_table(tt)),
        "",
    ]
    lines += ["## Per dataset (mean over its tasks)", "", _fmt(dt), ""]
    lines += _reference_section(payload, tt)
    cols = ["task", "factor", "n_train", "n", "method", *METRICS, "seconds", "fit_ok", "error"]
    lines += [
        "## Per task",
        "",
        "`fit_ok`: the task's posterior passed the package's sampler diagnostics (for",
        "`discrepancy`, also how many of its inner point refits converged and were used).",
        "",
    ]
    lines += [_fmt(tt[cols].set_index("task")), ""]
    secs = payload.get("seconds_by_dataset", {})
    if secs:
        lines += ["Wall seconds per dataset (all methods): " + ", ".join(f"{k} {v:.0f}" for k, v in secs.items())]
    cpu = payload.get("cpu_seconds_by_run", {})
    if cpu:
        lines += ["", "CPU seconds (all threads) per process: " + ", ".join(f"{k} {v:.0f}" for k, v in cpu.items())]
    lines += [""]
    return "\n".join(lines) + "\n"


SPREADS = ("observed", "own", "independent")


def spread_table(payload: dict, tt: pd.DataFrame) -> pd.DataFrame:
    """Per method: the s.d. over tasks of a task's coverage (50%, 90%) as observed, as its own predictive's
    replicates say it should be (root mean over tasks of each task's replicate variance), and as it would be if a
    task's held-out runs missed independently (binomial at the nominal level, root mean of p(1-p)/n)."""
    ok = _scored(tt)
    by_method: dict = {}
    for (_, m), refs in _task_references(payload, ok).items():
        by_method.setdefault(m, []).extend(refs)
    rows = []
    for m, g in ok.groupby("method"):
        refs = by_method.get(m, [])
        if len(refs) != len(g):
            continue
        row = {"method": m, "tasks": len(g)}
        for i, (lev, p) in enumerate((("50", 0.5), ("90", 0.9))):
            row[f"observed{lev}"] = g[f"coverage{lev}"].std(ddof=1)
            row[f"own{lev}"] = float(np.sqrt(np.mean([r[:, i].var() for r in refs])))
            row[f"independent{lev}"] = float(np.sqrt(np.mean(p * (1 - p) / g["n"].to_numpy())))
        rows.append(row)
    return pd.DataFrame(rows).set_index("method") if rows else pd.DataFrame()


def _reference_section(payload: dict, tt: pd.DataFrame) -> list[str]:
    rt = reference_table(payload, tt)
    if rt.empty:
        return []
    lines = [
        "## What a calibrated predictive would score (reference coverage)",
        "",
        "For each method, `calibrated50`/`calibrated90`: the 5-95% range of the coverage its *own* predictive would",
        "score if it were right (the held-out losses replaced by one of its joint draws, 400 replicates per task;",
        "`score.reference_coverage`). `p50`/`p90`: two-sided mid-p of the observed coverage among those replicates",
        "(small: the observed coverage is not what this predictive's own uncertainty allows). `p_bar`: the share of",
        "replicates inside issue 13's bar (90% intervals 80-95% and 50% intervals 40-60%), i.e. how often a",
        "predictive that is exactly right would meet the bar on that dataset. Tasks are replicated independently,",
        "while a dataset's tasks overlap (a run held out by a compute and an N split; porian's all8 fits repeat its",
        "families): the true chance ranges are somewhat wider, so these p-values are if anything too small.",
        "",
        _fmt(rt),
        "",
    ]
    spread = spread_table(payload, tt)
    if not spread.empty:
        lines += [
            "How much a task's coverage varies from task to task (s.d. over tasks, percentage points): `observed`;",
            "`own`, what the method's own predictive says it should (its replicates); `independent`, what it would",
            "be if a task's held-out runs missed independently of each other (binomial at the nominal level).",
            "",
            _fmt(spread),
            "",
        ]
    for m in rt.index.get_level_values("method").unique():
        per = rt.xs(m, level="method").drop(index="all tasks", errors="ignore")["p_bar"]
        lines.append(
            f"- `{m}`: chance that it meets the bar on all {len(per)} datasets at once if it were exactly right "
            f"(datasets independent): {100 * float(np.prod(per)):.2g}%."
        )
    return [*lines, ""]


#: RESULTS.md's generated part ends here; the reading written below it survives reruns.
MARKER = "<!-- generated tables end; text below is kept by run.py -->"


def write_kept(path: Path, md: str) -> None:
    """Write the generated ``md`` to ``path``, keeping whatever the old file had below :data:`MARKER`."""
    old = path.read_text() if path.exists() else ""
    kept = old.split(MARKER, 1)[1] if MARKER in old else "\n"
    path.write_text(md.rstrip("\n") + "\n\n" + MARKER + kept)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="4 chains × (300 + 300), 300 bootstrap resamples")
    p.add_argument("--only", nargs="+", choices=list(DATASETS), help="datasets to run (default: all present)")
    p.add_argument("--methods", nargs="+", choices=list(METHODS), default=list(METHODS))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--data-root", default=None, help=f"datasets folder (default {data_root()})")
    p.add_argument("--merge", action="store_true", help="keep saved results of datasets not run now")
    p.add_argument("--tasks", nargs="+", help="rerun only these tasks (by name) and put them in the saved results")
    p.add_argument("--out", default=str(HERE), help="folder for results.json and RESULTS.md")
    p.add_argument("--tables", action="store_true", help="only rewrite RESULTS.md from the saved results.json")
    p.add_argument(
        "--noise-trend",
        choices=NOISE_TRENDS,
        default="auto",
        help="the Bayesian fits' noise_trend (FitSpec; default auto, the package's default); write other settings "
        "elsewhere with --out",
    )
    a = p.parse_args(argv)
    out = Path(a.out)
    path = out / "results.json"
    if a.tables:
        write_kept(out / "RESULTS.md", markdown(json.loads(path.read_text())))
        return
    old = json.loads(path.read_text()) if (a.merge or a.tasks) and path.exists() else {}
    if a.tasks and not old:
        p.error(f"--tasks reruns tasks of a saved run: no {path}")

    def save(new: dict) -> None:
        new["cpu_seconds"] = time.process_time()  # all threads of this process, loading and compilation included
        payload = merge_tasks(old, new) if a.tasks else merge(old, new)
        out.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(payload, indent=1, default=float))
        write_kept(out / "RESULTS.md", markdown(payload))

    new = run(a.only, a.methods, a.quick, a.seed, a.data_root, save, a.noise_trend, a.tasks)
    save(new)
    print(f"wrote {path} and {out / 'RESULTS.md'} ({new.get('seconds', 0):.0f} s)")


if __name__ == "__main__":
    np.seterr(all="ignore")
    main()
