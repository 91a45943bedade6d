"""Two-step backtest on OLMo checkpoints: forecast later checkpoints' benchmark accuracy from (N, D) alone.

    PYTHONPATH=. .venv/bin/python case_studies/downstream/olmo_twostep.py            # 4 chains x 1000, calibrated
    PYTHONPATH=. .venv/bin/python case_studies/downstream/olmo_twostep.py --quick    # short chains, no calibration
    ... --data /path/to/shared/data                                                  # where hitchhiker/ lives
    ... --d-split 2e11                                                               # train on D <= 2e11 tokens

Data: ``hitchhiker/aggregated_eval/olmo.csv`` of the shared data folder (ColPret, MIT; not bundled), OLMo-1B,
OLMo-7B and OLMo-7B-Twin-2T W&B eval curves. The script exits with a message when the file is absent.

- Loss: C4-en validation cross-entropy (nats): OLMo-1B ``v2-small-c4_en``, OLMo-7B ``c4_en``, Twin-2T ln of the
  ``c4_en`` perplexity. That 1B's v2-small set is the 7B's c4_en set is assumed, not verified (SOURCE.md caveat 4).
- N: the OLMo paper's parameter counts (1.18e9, 6.89e9), not ColPret's nominal 1e9/7e9 (caveat 5).
  D = step × 2048 · 2048 tokens (caveat 4).
- Benchmarks: PIQA (length-normalised, 2 choices, 1838 validation questions) on all three runs; ARC-Easy (4 choices,
  570 questions) where logged (1B and Twin-2T).
- Rows removed, each counted in the results with its reason: checkpoints before step 10,000 (warm-up: the loss is
  still falling by nats); loss spikes (loss > 0.1 nats above the run's running minimum, caveat 2); scores above 1
  (Twin-2T logs a few summed duplicates, e.g. 1.39).

Split: checkpoints with D ≤ 1e12 tokens (``--d-split``) train both steps; later checkpoints (D up to 3.1e12,
1.9–3.1× the last training checkpoint of each run; up to 15× with ``--d-split 2e11``) are held out, sub-sampled to
every 10,000th step.

Step 1: the Chinchilla law fitted by scalebayes to the training checkpoints (``run`` labels: checkpoints of one run
are not independent runs), then ``sb.calibrate`` (the discrepancy that grows with extrapolation distance). Step 2:
the accuracy-vs-loss law (:mod:`scalebayes.loss_to_accuracy`) on the training checkpoints' (loss, accuracy). The
forecast is :class:`scalebayes.TwoStep` at each held-out checkpoint's (N, D) (one family: all three runs are OLMo).
Compared with the point two-step of the OLMo ladder (Huber fit of the Chinchilla law; least-squares sigmoid in loss;
a band from the step-2 training residuals) and with step 2 alone at the *observed* loss.

Writes ``results/olmo_twostep.md``, ``results/olmo_twostep_predictions.csv`` and ``results/olmo_twostep.png``.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from scipy import optimize  # noqa: E402

import scalebayes as sb  # noqa: E402
from scalebayes import loss_to_accuracy as la  # noqa: E402

HERE = Path(__file__).resolve().parent
OUT = HERE / "results"
DATA_CANDIDATES = (HERE.parents[2] / "shared" / "data", Path("/work/shared/data"))
TOKENS_PER_STEP = 2048 * 2048
N_PARAMS = {"OLMo-1B": 1.18e9, "OLMo-7B": 6.89e9, "OLMo-7B-Twin-2T": 6.89e9}
LOSS_COLUMN = {
    "OLMo-1B": "v2-small-c4_en-validation/CrossEntropyLoss",
    "OLMo-7B": "c4_en-validation/CrossEntropyLoss",
}
BENCH = {  # column, chance, questions
    "piqa": ("downstream/piqa_len_norm", 0.5, 1838),
    "arc_easy": ("downstream/arc_easy_acc", 0.25, 570),
}
D_SPLIT, MIN_STEP, SPIKE, TEST_EVERY = 1e12, 10_000, 0.1, 10_000
FULL = dict(chains=4, warmup=1000, draws=1000)
QUICK = dict(chains=2, warmup=300, draws=300)
SEED = 0


def load(data_dir: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """One row per checkpoint (run, step, N, D, loss, one column per benchmark) and the removed rows with reasons."""
    raw = pd.read_csv(data_dir / "hitchhiker" / "aggregated_eval" / "olmo.csv")
    raw["run"] = raw["model_name"].str.strip()
    loss = pd.Series(np.nan, index=raw.index)
    for run, col in LOSS_COLUMN.items():
        loss[raw["run"] == run] = raw.loc[raw["run"] == run, col]
    twin = raw["run"] == "OLMo-7B-Twin-2T"
    loss[twin] = np.log(raw.loc[twin, "c4_en-validation/Perplexity"])
    df = pd.DataFrame({"run": raw["run"], "step": raw["Step"], "N": raw["run"].map(N_PARAMS)})
    df["D"], df["loss"] = df["step"] * float(TOKENS_PER_STEP), loss
    for b, (col, _, _) in BENCH.items():
        df[b] = raw[col]
    df = df.sort_values(["run", "step"]).reset_index(drop=True)
    reasons = pd.Series("", index=df.index)
    reasons[df["step"] < MIN_STEP] = f"warm-up (step < {MIN_STEP})"
    reasons[(reasons == "") & df["loss"].isna()] = "no C4 loss logged"
    excess = df["loss"] - df.groupby("run")["loss"].cummin()
    reasons[(reasons == "") & (excess > SPIKE)] = f"loss spike (> {SPIKE} nats above the running minimum)"
    over = (df[list(BENCH)] > 1).any(axis=1)
    reasons[(reasons == "") & over] = "a score above 1 (summed duplicate in the source)"
    return df[reasons == ""].reset_index(drop=True), df[reasons != ""].assign(reason=reasons[reasons != ""])


def point_two_step(train: pd.DataFrame, b: str, data: sb.ScalingData):
    """The OLMo-ladder point method: Huber fit of the Chinchilla law, least-squares sigmoid of accuracy in loss.
    Returns f(N, D) → (prediction, 5%, 95%) with the band from step 2's training residuals, and g(loss)."""
    hub = sb.baselines.fit_huber(data)
    _, floor, _ = BENCH[b]
    tr = train.dropna(subset=[b])
    L, y = tr["loss"].to_numpy(), tr[b].to_numpy()

    def curve(th, loss):
        return floor + (1 - floor) / (1 + np.exp(-th[2])) / (1 + np.exp(-np.exp(th[1]) * (th[0] - loss)))

    th = optimize.least_squares(lambda t: curve(t, L) - y, [np.median(L), 1.0, 1.5]).x
    lo, hi = np.quantile(y - curve(th, L), [0.05, 0.95])

    def f(N, D):
        p = curve(th, hub.predict(N=N, D=D))
        return p, np.clip(p + lo, 0, 1), np.clip(p + hi, 0, 1)

    return f, lambda loss: curve(th, loss)


def forecast_rows(test, b, two_steps, acc_fit, point) -> pd.DataFrame:
    """One row per (held-out checkpoint, method): prediction (median), 5%, 95%, truth."""
    rows = []
    t = test.dropna(subset=[b])
    N, D = t["N"].to_numpy(), t["D"].to_numpy()
    base = t[["run", "step", "N", "D", "loss", b]].rename(columns={b: "truth"}).assign(benchmark=b)
    for label, two in two_steps.items():
        r = two.predict(N=N, D=D, seed=SEED)
        rows.append(base.assign(method=label, pred=r["q0.5"].to_numpy(), lo=r["q0.05"].to_numpy(),
                                hi=r["q0.95"].to_numpy(), loss_pred=r["loss_q0.5"].to_numpy()))  # fmt: skip
    a = acc_fit.accuracy_draws(t["loss"].to_numpy()[None, :].repeat(acc_fit.n_samples, 0), seed=SEED)
    rows.append(base.assign(method="step 2 only, observed loss", pred=np.median(a, 0), lo=np.quantile(a, 0.05, 0),
                            hi=np.quantile(a, 0.95, 0), loss_pred=t["loss"].to_numpy()))  # fmt: skip
    p, lo, hi = point(N, D)
    rows.append(base.assign(method=POINT, pred=p, lo=lo, hi=hi, loss_pred=np.nan))
    return pd.concat(rows, ignore_index=True)


def summary(df: pd.DataFrame) -> pd.DataFrame:
    """Coverage of the 90% interval (%), absolute error (accuracy points) and width, by benchmark and method."""
    d = df.assign(covered=(df["truth"] >= df["lo"]) & (df["truth"] <= df["hi"]),
                  err=100 * (df["pred"] - df["truth"]).abs(), width=100 * (df["hi"] - df["lo"]))  # fmt: skip
    g = d.groupby(["benchmark", "method"], sort=False)
    return pd.DataFrame({"n": g.size(), "coverage_90": 100 * g["covered"].mean(), "abs_err_mean": g["err"].mean(),
                         "abs_err_max": g["err"].max(), "width_mean": g["width"].mean()}).round(1)  # fmt: skip


def figure(df: pd.DataFrame, train: pd.DataFrame, path: Path, cut: float) -> None:
    """Accuracy against tokens, one panel per (benchmark, run): training checkpoints, held-out truth, and the 90%
    bands of the two-step forecast (calibrated when it was run) and the point two-step."""
    main = MAIN if (df["method"] == MAIN).any() else UNCAL
    panels = [(b, r) for b in BENCH for r in N_PARAMS if ((df["benchmark"] == b) & (df["run"] == r)).any()]
    fig, axes = plt.subplots(2, 3, figsize=(13, 7.5))
    axes = axes.ravel()
    for ax, (b, run) in zip(axes, panels, strict=False):
        tr = train[train["run"] == run]
        ax.plot(tr["D"], tr[b], ".", ms=3, c="0.6", label="training checkpoints")
        for label, color in ((main, "C0"), (POINT, "C1")):
            s = df[(df["benchmark"] == b) & (df["run"] == run) & (df["method"] == label)]
            ax.fill_between(s["D"], s["lo"], s["hi"], color=color, alpha=0.25, lw=0)
            ax.plot(s["D"], s["pred"], c=color, lw=1.2, label=f"{label}: median, 90%")
        s = df[(df["benchmark"] == b) & (df["run"] == run) & (df["method"] == main)]
        ax.plot(s["D"], s["truth"], "x", c="k", ms=4, label="held-out checkpoints")
        ax.axvline(cut, c="0.3", ls=":", lw=1)
        ax.set_xscale("log")
        ax.set_title(f"{run}: {b}")
        ax.set_xlabel("tokens D")
        ax.set_ylabel("accuracy")
    for ax in axes[len(panels) :]:
        ax.axis("off")
    axes[0].legend(fontsize=7, loc="lower right")
    fig.suptitle("Later OLMo checkpoints' accuracy forecast from (N, D) alone; dotted: end of the training data")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


MAIN, UNCAL = "two-step, calibrated loss", "two-step, loss without discrepancy"
POINT = "point two-step (Huber + LS sigmoid)"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", type=Path, default=None, help="the shared data folder (holding hitchhiker/)")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--replot", action="store_true", help="only redraw the figure from the saved predictions")
    ap.add_argument("--d-split", type=float, default=D_SPLIT, help="last training tokens (default 1e12)")
    args = ap.parse_args()
    data_dir = args.data or next((p for p in DATA_CANDIDATES if (p / "hitchhiker").is_dir()), None)
    if data_dir is None or not (data_dir / "hitchhiker" / "aggregated_eval" / "olmo.csv").exists():
        print("olmo.csv not found (looked in the shared data folder: pass --data); skipping", file=sys.stderr)
        return
    settings = QUICK if args.quick else FULL
    ckpt, removed = load(data_dir)
    cut = args.d_split
    train, test = ckpt[ckpt["D"] <= cut], ckpt[(ckpt["D"] > cut) & (ckpt["step"] % TEST_EVERY == 0)]
    tag = "olmo_twostep" + ("" if cut == D_SPLIT else f"_{cut:.0e}".replace("+", "")) + ("_quick" if args.quick else "")
    if args.replot:  # redraw the figure from the saved predictions
        figure(pd.read_csv(OUT / f"{tag}_predictions.csv"), train, OUT / f"{tag}.png", cut)
        return
    runs = sb.ScalingData.from_frame(train.assign(family="olmo"), N="N", D="D", loss="loss", run="run",
                                     family="family", name=f"olmo checkpoints, D <= {cut:.0e}")  # fmt: skip
    t0 = time.time()
    post = sb.fit(runs, seed=SEED, **settings)
    cal = post if args.quick else sb.calibrate(post, seed=SEED)
    t_loss = time.time() - t0
    frames, fits = [], {}
    for b, (_, floor, n_q) in BENCH.items():
        tr = train.dropna(subset=[b])
        if tr.empty:
            continue
        fits[b] = la.fit(tr["loss"], tr[b], floor=floor, questions=n_q, seed=SEED, **settings)
        two = {UNCAL: sb.TwoStep(post, fits[b])}
        if cal.calibrated:
            two[MAIN] = sb.TwoStep(cal, fits[b])
        point, _ = point_two_step(tr, b, runs)
        frames.append(forecast_rows(test, b, two, fits[b], point))
    df = pd.concat(frames, ignore_index=True)
    OUT.mkdir(exist_ok=True)
    df.to_csv(OUT / f"{tag}_predictions.csv", index=False)
    text = report(df, post, cal, fits, removed, train, test, settings, time.time() - t0, t_loss, cut)
    (OUT / f"{tag}.md").write_text(text)
    figure(df, train, OUT / f"{tag}.png", cut)
    print(text)


def report(df, post, cal, fits, removed, train, test, settings, seconds, t_loss, cut) -> str:
    """The results page: data, split, diagnostics, the table."""
    d = post.diagnostics
    lines = [
        "# Two-step backtest on OLMo checkpoints (C4 loss → PIQA / ARC-Easy)",
        "",
        f"Training: {len(train)} checkpoints with D ≤ {cut:.0e} tokens ({train.groupby('run').size().to_dict()}); "
        f"held out: {len(test)} later checkpoints (every {TEST_EVERY:,}th step). Removed rows: "
        f"{removed['reason'].value_counts().to_dict()}.",
        "",
        f"Loss fit (Chinchilla law, NUTS {settings}, seed {SEED}): "
        f"{'pass' if d.ok else 'FAIL: ' + '; '.join(d.failures)} (R-hat max {d.r_hat_max:.3f}, bulk ESS min "
        f"{d.ess_bulk_min:.0f}, divergences {d.divergences}); calibrated: {cal.calibrated}"
        + (f" (κ median {cal.discrepancy.kappa:.3g}, γ {cal.discrepancy.gamma:.2g})" if cal.calibrated else "")
        + f"; loss fit + calibration {t_loss:.0f} s, everything {seconds:.0f} s.",
        "",
    ]
    for b, f in fits.items():
        g = f.diagnostics
        med = {k: round(float(np.median(v)), 3) for k, v in f.draws.items()}
        verdict = "pass" if g.ok else "FAIL: " + "; ".join(g.failures)
        lines.append(f"Accuracy law {b}: {verdict} (R-hat max {g.r_hat_max:.3f}, bulk ESS min {g.ess_bulk_min:.0f}, "
                     f"tail ESS min {g.ess_tail_min:.0f}, divergences {g.divergences}); "
                     f"medians {med}, loss0 {f.loss0:.3f}.")  # fmt: skip
    tab = summary(df).reset_index()
    head = "| " + " | ".join(tab.columns) + " |"
    body = ["| " + " | ".join(f"{v:g}" if isinstance(v, float) else str(v) for v in r) + " |" for r in tab.values]
    lines += ["", "Nominal 90% intervals; errors and widths in accuracy points.", "", head,
              "|" + "---|" * len(tab.columns), *body, ""]  # fmt: skip
    return "\n".join(lines)


if __name__ == "__main__":
    main()
