"""Backtest: forecast each family's largest model's benchmark accuracy from its smaller ones.

    PYTHONPATH=. .venv/bin/python case_studies/downstream/run.py                 # obsscaling, 4 chains x 1000
    PYTHONPATH=. .venv/bin/python case_studies/downstream/run.py --quick         # short chains, a smoke test
    PYTHONPATH=. .venv/bin/python case_studies/downstream/run.py --dataset sloth_leaderboard
    ... --no-extrapolation                                                       # skip the extrapolation term's fit

Split C of obsscaling's SOURCE.md ("per-family largest"): in every family with at least 3 models with training
compute, the model with the largest C is held out; everything else (smaller models and the families with fewer
models) is the training set. The downstream law (:mod:`scalebayes.downstream`) is fitted once with NUTS and scored
on the held-out (model, benchmark) pairs against two least-squares sigmoid fits on the same split (pooled, and
with per-family compute-efficiency offsets): 90% coverage, absolute error and width in accuracy points.

By default the forecast for a fitted family adds the extrapolation term of :mod:`scalebayes.downstream_discrepancy`
(a capability shift shared by the model's benchmarks, growing with its compute beyond the family's largest training
model). Its scale κ is learned from the training set alone, which costs one extra NUTS fit: the same split applied
inside the training set (each training family's largest model held out). The table shows the forecast with and
without it. Fitted posteriors are stored in ``output/`` (git-ignored) and reused by a rerun with the same settings.

Writes ``results/<dataset>_predictions.csv`` (one row per held-out pair and method), ``results/<dataset>.md``
(the tables, diagnostics, settings) and ``results/<dataset>.png`` (the figure).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

import scalebayes as sb  # noqa: E402
from scalebayes import downstream  # noqa: E402
from scalebayes import downstream_discrepancy as dd  # noqa: E402
from scalebayes.diagnostics import Diagnostics  # noqa: E402

HERE = Path(__file__).resolve().parent
OUT = HERE / "results"
CACHE = HERE / "output"  # fitted posteriors (git-ignored), so a rerun of the tables does not refit
BENCHMARKS = ("mmlu", "arc_c", "hellaswag", "winogrande", "gsm8k")
MAIN, NO_EXTRA = "Bayes (fitted family)", "Bayes, no extrapolation term"
FULL = dict(chains=4, warmup=1000, draws=1000)
QUICK = dict(chains=2, warmup=300, draws=300)
SEED = 0


def fitted(tr, settings: dict, tag: str) -> tuple[downstream.DownstreamPosterior, float]:
    """The downstream posterior on training scores ``tr`` and its fit's seconds, from ``output/<tag>.npz`` when a
    run with the same tag (dataset, split, settings, seed) has stored it, else fitted and stored. The file holds
    the draws and the verdict's numbers (no pickle: ``np.load(allow_pickle=False)``); the design is rebuilt from
    the scores."""
    path = CACHE / f"{tag}_c{settings['chains']}w{settings['warmup']}d{settings['draws']}_s{SEED}.npz"
    if path.exists():
        with np.load(path, allow_pickle=False) as z:
            meta = json.loads(str(z["meta"]))
            draws = {k[len("draw_") :]: z[k] for k in z.files if k.startswith("draw_")}
        diag = Diagnostics(**{k: tuple(v) if isinstance(v, list) else v for k, v in meta["diagnostics"].items()})
        return downstream.DownstreamPosterior(downstream.design_of(tr, BENCHMARKS), draws, diag), meta["seconds"]
    t0 = time.time()
    post = downstream.fit(tr, BENCHMARKS, seed=SEED, **settings)
    seconds = time.time() - t0
    d = post.diagnostics
    verdict = {f.name: getattr(d, f.name) for f in dataclasses.fields(d) if f.name != "table"}
    meta = json.dumps({"seconds": seconds, "diagnostics": verdict}, default=lambda v: v.item())
    CACHE.mkdir(exist_ok=True)
    np.savez(path, meta=np.asarray(meta), **{f"draw_{k}": np.asarray(v) for k, v in post.draws.items()})
    return post, seconds


def score_rows(posts: dict, points, held, train_frame) -> pd.DataFrame:
    """One row per (held-out model, benchmark, method): prediction, 5%, 95%, truth, compute factor. ``posts``:
    label → downstream posterior for the model's own family (with and without the extrapolation term); the
    new-family forecast uses the one without (a new family has no distance)."""
    rows = []
    for model, r in held.iterrows():
        factor = r["C"] / train_frame.loc[train_frame["family"] == r["family"], "C"].max()
        for b in BENCHMARKS:
            if np.isnan(r[b]):
                continue
            base = dict(model=model, family=r["family"], benchmark=b, truth=r[b], C=r["C"], factor=factor)
            bayes = [(label, p, r["family"]) for label, p in posts.items()]
            for label, p, fam in [*bayes, ("Bayes (as a new family)", posts[NO_EXTRA], None)]:
                a = p.accuracy_draws(r["C"], b, fam, seed=SEED)
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
    """One panel per benchmark: training models (grey), each held-out model's truth (black) and the 90% intervals of
    the Bayes fit (blue; with the extrapolation term when fitted) and the pooled least-squares sigmoid (orange),
    against training compute."""
    fig, axes = plt.subplots(1, len(BENCHMARKS), figsize=(4 * len(BENCHMARKS), 4), sharey=False)
    f = scores.frame
    bayes = MAIN if (df["method"] == MAIN).any() else NO_EXTRA
    for ax, b in zip(axes, BENCHMARKS, strict=True):
        ax.scatter(f.loc[train, "C"], f.loc[train, b], s=8, c="0.75", label="training models")
        for label, color, dx in ((bayes, "C0", 0.97), ("sigmoid LS (pooled)", "C1", 1.03)):
            s = df[(df["benchmark"] == b) & (df["method"] == label)]
            ax.errorbar(s["C"] * dx, s["pred"], yerr=[s["pred"] - s["lo"], s["hi"] - s["pred"]], fmt="o", ms=3,
                        color=color, alpha=0.8, lw=1, label=f"{label}: 90% interval")  # fmt: skip
        s = df[(df["benchmark"] == b) & (df["method"] == bayes)]
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


def _diag_line(label: str, d) -> str:
    return (
        f"{label}: {'pass' if d.ok else 'FAIL: ' + '; '.join(d.failures)} (R-hat max {d.r_hat_max:.3f}, bulk "
        f"ESS min {d.ess_bulk_min:.0f}, tail ESS min {d.ess_tail_min:.0f}, divergences {d.divergences})."
    )


def _inner_lines(inner) -> list[str]:
    """The extrapolation term's inner split, its fit's verdict and the κ posterior."""
    if inner is None:
        return ["No extrapolation term (`--no-extrapolation`).", ""]
    kappa, post, seconds, note = inner
    verdict = [_diag_line("Inner fit diagnostics", post.diagnostics) + (f" ({note})" if note else ""), ""]
    if kappa is None:
        return ["Extrapolation term: not used.", "", *verdict]
    q = [kappa.quantile(v) for v in (0.05, 0.5, 0.95)]
    fac = 10**kappa.distances
    return [
        f"Extrapolation term (`scalebayes.downstream_discrepancy`): inner split of the training set, each training "
        f"family's largest model held out ({len(kappa.models)} models, {fac.min():.1f}x to {fac.max():.1f}x their "
        f"family's largest inner-training compute, median {np.median(fac):.1f}x); inner fit {seconds:.0f} s.",
        "",
        *verdict,
        f"κ (decades of capability shift per decade of compute beyond the family's data): median {q[1]:.3f}, "
        f"90% interval [{q[0]:.3f}, {q[2]:.3f}] (grid posterior, HalfNormal({dd.PRIOR_SCALE}) prior).",
        "",
    ]


def markdown(name, df, post, settings, n_train, n_test, seconds, inner) -> str:
    overall = summary(df, "method")
    per_b = summary(df, ["benchmark", "method"])
    d = df.sort_values("factor", kind="stable")  # groups in order of first appearance: smallest factors first
    bins = pd.cut(d["factor"], [0, 2, 5, np.inf], labels=["< 2x", "2-5x", "> 5x"]).astype(str)
    per_f = summary(d.assign(factor_bin=bins), ["factor_bin", "method"])
    lines = [
        f"# Downstream backtest on {name}: each family's largest model held out",
        "",
        f"{n_test} held-out models ({len(df) // df['method'].nunique()} model-benchmark pairs), {n_train} training "
        f"models; NUTS {settings}, seed {SEED}; fit {seconds:.0f} s.",
        "",
        _diag_line("Diagnostics", post.diagnostics),
        "",
        *_inner_lines(inner),
        "Accuracy points = percentage points of accuracy. Nominal 90% intervals.",
        "",
        md_table(overall),
        "",
        "By the held-out model's compute over its family's largest training model:",
        "",
        md_table(per_f),
        "",
        "Per benchmark:",
        "",
        md_table(per_b),
        "",
    ]
    return "\n".join(lines)


def extrapolation(tr, settings: dict, tag: str):
    """The κ posterior of :mod:`scalebayes.downstream_discrepancy` from the inner split of the training set ``tr``
    (each training family's largest model held out; one extra fit), that fit and its seconds. As for the loss
    package's inner refits, a fit that fails diagnostics is not learned from: it is refitted once at
    ``target_accept=0.95`` (smaller steps), and if that fails too the κ posterior is None (no extrapolation term)."""
    keep = dd.largest_held_out(tr)
    inner = tr.subset(keep, reason="inner hold-out: the family's largest training model")
    post, seconds = fitted(inner, settings, f"{tag}_inner")
    note = ""
    if not post.diagnostics.ok:
        note = (
            f"the default fit failed ({'; '.join(post.diagnostics.failures)}), so it was refitted at target_accept 0.95"
        )
        post, seconds = fitted(inner, {**settings, "target_accept": 0.95}, f"{tag}_inner_ta95")
    if not post.diagnostics.ok:
        return None, post, seconds, note + "; that fit failed too, so no extrapolation term is used"
    return dd.learn(post, tr.subset(~keep, reason="inner training set")), post, seconds, note


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--dataset", default="obsscaling", choices=["obsscaling", "sloth_leaderboard"])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--no-extrapolation", action="store_true", help="skip the extrapolation term (its extra fit)")
    args = ap.parse_args()
    settings = QUICK if args.quick else FULL
    tag = args.dataset + ("_quick" if args.quick else "")
    scores = sb.datasets.load(args.dataset)
    train = dd.largest_held_out(scores)
    tr = scores.subset(train, reason="held out: the family's largest model")
    base, seconds = fitted(tr, settings, f"{tag}_outer")
    posts, inner = {NO_EXTRA: base}, None
    if not args.no_extrapolation:
        inner = extrapolation(tr, settings, tag)
        if inner[0] is not None:
            posts = {MAIN: dd.with_extrapolation(base, inner[0], seed=SEED), **posts}
    points = {
        "sigmoid LS (pooled)": downstream.point_fit(tr, BENCHMARKS, family_offsets=False),
        "sigmoid LS + family offsets": downstream.point_fit(tr, BENCHMARKS, family_offsets=True),
    }
    held = scores.frame.loc[~train]
    df = score_rows(posts, points, held, tr.frame)
    OUT.mkdir(exist_ok=True)
    df.to_csv(OUT / f"{tag}_predictions.csv", index=False)
    text = markdown(args.dataset, df, base, settings, len(tr), len(held), seconds, inner)
    (OUT / f"{tag}.md").write_text(text)
    figure(df, scores, train, OUT / f"{tag}.png")
    print(text)


if __name__ == "__main__":
    main()
