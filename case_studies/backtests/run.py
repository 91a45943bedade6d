"""Backtests on the bundled datasets: do the intervals cover the larger runs they were not fitted to?

    .venv/bin/python case_studies/backtests/run.py                    # both datasets (~1 h on 2 CPU cores)
    .venv/bin/python case_studies/backtests/run.py chinchilla_epoch   # one dataset
    .venv/bin/python case_studies/backtests/run.py --quick            # short chains, a smoke test

For each dataset the largest runs (by training compute C; also by parameters N and a smaller hold-out on
chinchilla_epoch) are held out, the Chinchilla law is fitted on the rest, and three predictions of the held-out runs
are scored side by side: the Bayesian posterior predictive as fitted ("Bayes"), the same fit with the calibrated
extrapolation discrepancy of :mod:`scalebayes.discrepancy` ("Bayes + discrepancy", κ learned from leave-largest-out
splits of the *training* runs only), and the Huber point fit of Hoffmann et al. with a 200-resample bootstrap plus
residual noise ("Huber bootstrap"). porian_isoflop (8 families) is fitted per family and, with ``--hierarchical``,
jointly with partial pooling.

Writes ``results/<dataset>.json`` (summaries, settings, κ, diagnostics) and ``results/<dataset>.md`` (tables).
Other case studies include the tables with :func:`table`::

    from case_studies.backtests.run import table      # or: scalebayes.backtesting.load_table(path)
    df, md = table("chinchilla_epoch")
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from pathlib import Path

import pandas as pd

import scalebayes as sb
from scalebayes.backtesting import load_table, results_table, save_results, to_markdown

HERE = Path(__file__).resolve().parent
OUT = HERE / "results"
FULL = dict(chains=4, warmup=500, draws=500)
QUICK = dict(chains=2, warmup=150, draws=100)

#: (label, dataset, split, holdout_fraction, per_family)
SPLITS = [
    ("compute20", "chinchilla_epoch", "compute", 0.2, False),
    ("compute10", "chinchilla_epoch", "compute", 0.1, False),
    ("params20", "chinchilla_epoch", "params", 0.2, False),
    ("compute20_per_family", "porian_isoflop", "compute", 0.2, True),
    ("compute20_hierarchical", "porian_isoflop", "compute", 0.2, False),
]


def table(dataset: str, *, split: str | None = None, by_family: bool = False) -> tuple[pd.DataFrame, str]:
    """(DataFrame, markdown) of the saved backtests of ``dataset`` (``split``: one label of :data:`SPLITS`, default
    the first for the dataset). Columns: held-out runs, nominal and actual coverage, mean width (nats), relative
    width, ARE (mean and median), LPD (nats of log loss), largest size ratio."""
    path = OUT / f"{dataset}.json"
    payload = json.loads(path.read_text())
    label = split or next(iter(payload))
    tmp = OUT / f".{dataset}.{label}.json"
    tmp.write_text(json.dumps(payload[label]))
    try:
        return load_table(tmp, by_family=by_family)
    finally:
        tmp.unlink()


def run_split(dataset, split, fraction, per_family, settings, seed=0, hierarchical_settings=None):
    data = sb.datasets.load(dataset)
    kw = dict(split=split, holdout_fraction=fraction, per_family=per_family, seed=seed)
    fit_kw = settings if per_family or len(data.families) == 1 else (hierarchical_settings or settings)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        t = time.perf_counter()
        bayes = sb.backtest(data, "chinchilla", extrapolation="discrepancy", **kw, **fit_kw)
        t_bayes = time.perf_counter() - t
        results = {"Bayes": bayes.uncalibrated, "Bayes + discrepancy": bayes}
        if per_family or len(data.families) == 1:
            t = time.perf_counter()
            results["Huber bootstrap"] = sb.backtest(data, "chinchilla", method="huber_bootstrap", bootstrap=200, **kw)
            results["Huber bootstrap"].details["seconds"] = time.perf_counter() - t
    bayes.details["seconds"] = t_bayes
    return results


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("datasets", nargs="*", default=["chinchilla_epoch", "porian_isoflop"])
    ap.add_argument("--quick", action="store_true", help="short chains (smoke test; numbers not meaningful)")
    ap.add_argument("--hierarchical", action="store_true", help="also the joint partial-pooling fit of porian")
    ap.add_argument("--only", nargs="*", default=None, help="split labels to run")
    args = ap.parse_args(argv)
    settings = QUICK if args.quick else FULL
    OUT.mkdir(parents=True, exist_ok=True)
    for dataset in args.datasets:
        path = OUT / f"{dataset}.json"
        payload = json.loads(path.read_text()) if path.exists() else {}
        md = [f"# Backtests on {dataset}\n"]
        for label, ds, split, fraction, per_family in SPLITS:
            if ds != dataset or (args.only and label not in args.only):
                continue
            if label.endswith("hierarchical") and not args.hierarchical:
                continue
            t = time.perf_counter()
            results = run_split(ds, split, fraction, per_family, settings)
            tmp = OUT / f".{dataset}.tmp.json"
            save_results(results, tmp)
            payload[label] = json.loads(tmp.read_text())
            tmp.unlink()
            path.write_text(json.dumps(payload, indent=1, default=float))
            df = results_table(results)
            print(f"\n{dataset} {label} ({time.perf_counter() - t:.0f}s)\n{df.round(4).to_string()}", flush=True)
        for label, res in payload.items():
            tmp = OUT / f".{dataset}.{label}.json"
            tmp.write_text(json.dumps(res))
            df, table_md = load_table(tmp)
            by_fam = load_table(tmp, by_family=True)[1] if len(sb.datasets.load(dataset).families) > 1 else None
            tmp.unlink()
            cfg = next(iter(res.values()))["config"]
            kappa = res.get("Bayes + discrepancy", {}).get("details", {}).get("kappa")
            md.append(
                f"\n## {label}: hold out the largest {cfg['holdout_fraction']:.0%} by {cfg['split']} "
                f"({cfg['n_test']} of {cfg['n_train'] + cfg['n_test']} runs), "
                f"{'per-family fits' if cfg['per_family'] else 'one fit'}\n\n{table_md}\n"
            )
            if kappa:
                vals = sorted(set(kappa.values()))
                shown = f"{vals[0]:.4g}" + (" (pooled over families)" if len(kappa) > 1 else "")
                if len(vals) > 1:
                    shown = ", ".join(f"{k}: {v:.4g}" for k, v in kappa.items())
                md.append(f"\nκ = {shown} nats of log loss per nat of extrapolation distance.\n")
            if by_fam:
                md.append(f"\nPer family:\n\n{by_fam}\n")
        (OUT / f"{dataset}.md").write_text("".join(md))
        print("".join(md))
    return 0


def _markdown(df: pd.DataFrame) -> str:  # re-exported for case studies that build their own tables
    return to_markdown(df)


if __name__ == "__main__":
    sys.exit(main())
