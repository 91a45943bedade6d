"""Backtest: forecast each family's largest model's benchmark accuracy from its smaller ones.

    PYTHONPATH=. .venv/bin/python case_studies/downstream/run.py                 # obsscaling, 4 chains x 1000
    PYTHONPATH=. .venv/bin/python case_studies/downstream/run.py --quick         # short chains, a smoke test
    PYTHONPATH=. .venv/bin/python case_studies/downstream/run.py --dataset sloth_leaderboard

Split C of obsscaling's SOURCE.md ("per-family largest"): in every family with at least 3 models with training
compute, the model with the largest C is held out; everything else (smaller models and the families with fewer
models) is the training set. The downstream law (:mod:`scalebayes.downstream`) is fitted once with NUTS and scored
on the held-out (model, benchmark) pairs against two least-squares sigmoid fits on the same split (pooled, and
with per-family compute-efficiency offsets): 90% coverage, absolute error and width in accuracy points.

Writes ``results/<dataset>_predictions.csv`` (one row per held-out pair and method), ``results/<dataset>.md``
(the tables, diagnostics, settings) and ``results/<dataset>.png`` (the figure).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

import scalebayes as sb  # noqa: E402
from scalebayes import downstream  # noqa: E402

HERE = Path(__file__).resolve().parent
OUT = HERE / "results"
BENCHMARKS = ("mmlu", "arc_c", "hellaswag", "winogrande", "gsm8k")
FULL = dict(chains=4, warmup=1000, draws=1000)
QUICK = dict(chains=2, warmup=300, draws=300)
SEED = 0


def split(scores, min_models: int = 3):
    """Boolean mask over rows: True = train. Holds out the largest-C model of each family with ≥ min_models."""
    f = scores.frame
    test = np.zeros(len(f), dtype=bool)
    for _, g in f.groupby("family"):
        if len(g) >= min_models:
            test[f.index.get_loc(g["C"].idxmax())] = True
    return ~test


def score_rows(post, points, held, train_frame) -> pd.DataFrame:
    """One row per (held-out model, benchmark, method): prediction, 5%, 95%, truth, compute factor."""
    rows = []
    for model, r in held.iterrows():
        factor = r["C"] / train_frame.loc[train_frame["family"] == r["family"], "C"].max()
        for b in BENCHMARKS:
            if np.isnan(r[b]):
                continue
            base = dict(model=model, family=r["family"], benchmark=b, truth=r[b], C=r["C"], factor=factor)
            for label, fam in (("Bayes (fitted family)", r["family"]), ("Bayes (as a new family)", None)):
                a = post.accuracy_draws(r["C"], b, fam, seed=SEED)
                rows.append({**base, "method": label, "pred": np.median(a), "lo": np.quantile(a, 0.05),
                             "hi": np.quantile(a, 0.95)})  # fmt: skip
            for label, pf in points.items():
                pred, lo, hi = pf.predict(r["C"], b, r["family"])
                rows.append({**base, "method": label, "pred": pred, "lo": lo, "hi": hi})
    return pd.DataFrame(rows)


def summary(df: pd.DataFrame, by) -> pd.DataFrame:
    """Coverage (%), mean and median absolute error and mean width, in accuracy points (× 100)."""
    d = df.assign(
        covered=(df["truth"] >= df["lo"]) & (df["truth"] <= df["hi"]),
        err=100 * (df["pred"] - df["truth"]).abs(),
        width=100 * (df["hi"] - df["lo"]),
    )
    g = d.groupby(by, sort=False)
    return pd.DataFrame(
        {
            "n": g.size(),
            "coverage_90": 100 * g["covered"].mean(),
            "abs_err_mean": g["err"].mean(),
            "abs_err_median": g["err"].median(),
            "width_mean": g["width"].mean(),
        }
    ).round(1)


def figure(df: pd.DataFrame, scores, train, path: Path) -> None:
    """One panel per benchmark: training models (grey), each held-out model's truth (black) and the 90% intervals
    of the Bayes fit (blue) and the pooled least-squares sigmoid (orange), against training compute."""
    fig, axes = plt.subplots(1, len(BENCHMARKS), figsize=(4 * len(BENCHMARKS), 4), sharey=False)
    f = scores.frame
    for ax, b in zip(axes, BENCHMARKS, strict=True):
        ax.scatter(f.loc[train, "C"], f.loc[train, b], s=8, c="0.75", label="training models")
        for label, color, dx in (("Bayes (fitted family)", "C0", 0.97), ("sigmoid LS (pooled)", "C1", 1.03)):
            s = df[(df["benchmark"] == b) & (df["method"] == label)]
            ax.errorbar(s["C"] * dx, s["pred"], yerr=[s["pred"] - s["lo"], s["hi"] - s["pred"]], fmt="o", ms=3,
                        color=color, alpha=0.8, lw=1, label=f"{label}: 90% interval")  # fmt: skip
        s = df[(df["benchmark"] == b) & (df["method"] == "Bayes (fitted family)")]
        ax.scatter(s["C"], s["truth"], marker="x", c="k", s=25, zorder=5, label="held-out truth")
        ax.axhline(sb.scores.CHANCE[b], color="0.5", ls=":", lw=1)
        ax.set_xscale("log")
        ax.set_title(b)
        ax.set_xlabel("training compute C (FLOP)")
    axes[0].set_ylabel("accuracy")
    axes[0].legend(fontsize=7, loc="upper left")
    fig.suptitle("Each family's largest model, forecast from its smaller ones (dotted: chance)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def md_table(df: pd.DataFrame) -> str:
    """A GitHub-markdown table of a summary frame (index columns first)."""
    d = df.reset_index()
    head = "| " + " | ".join(map(str, d.columns)) + " |"
    rule = "|" + "---|" * len(d.columns)
    body = ["| " + " | ".join(f"{v:g}" if isinstance(v, float) else str(v) for v in row) + " |" for row in d.values]
    return "\n".join([head, rule, *body])


def markdown(name, df, post, settings, n_train, n_test, seconds) -> str:
    overall = summary(df, "method")
    per_b = summary(df, ["benchmark", "method"])
    d = post.diagnostics
    lines = [
        f"# Downstream backtest on {name}: each family's largest model held out",
        "",
        f"{n_test} held-out models ({len(df) // df['method'].nunique()} model-benchmark pairs), {n_train} training "
        f"models; NUTS {settings}, seed {SEED}; fit {seconds:.0f} s.",
        "",
        f"Diagnostics: {'pass' if d.ok else 'FAIL: ' + '; '.join(d.failures)} (R-hat max {d.r_hat_max:.3f}, bulk "
        f"ESS min {d.ess_bulk_min:.0f}, tail ESS min {d.ess_tail_min:.0f}, divergences {d.divergences}).",
        "",
        "Accuracy points = percentage points of accuracy. Nominal 90% intervals.",
        "",
        md_table(overall),
        "",
        "Per benchmark:",
        "",
        md_table(per_b),
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--dataset", default="obsscaling", choices=["obsscaling", "sloth_leaderboard"])
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    settings = QUICK if args.quick else FULL
    scores = sb.datasets.load(args.dataset)
    train = split(scores)
    tr = scores.subset(train, reason="held out: the family's largest model")
    t0 = time.time()
    post = downstream.fit(tr, BENCHMARKS, seed=SEED, **settings)
    seconds = time.time() - t0
    points = {
        "sigmoid LS (pooled)": downstream.point_fit(tr, BENCHMARKS, family_offsets=False),
        "sigmoid LS + family offsets": downstream.point_fit(tr, BENCHMARKS, family_offsets=True),
    }
    held = scores.frame.loc[~train]
    df = score_rows(post, points, held, tr.frame)
    OUT.mkdir(exist_ok=True)
    tag = args.dataset + ("_quick" if args.quick else "")
    df.to_csv(OUT / f"{tag}_predictions.csv", index=False)
    text = markdown(args.dataset, df, post, settings, len(tr), len(held), seconds)
    (OUT / f"{tag}.md").write_text(text)
    figure(df, scores, train, OUT / f"{tag}.png")
    print(text)


if __name__ == "__main__":
    main()
