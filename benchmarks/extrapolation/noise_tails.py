"""Where the width of the calibrated predictive comes from, and how heavy the fitted noise tails are (issue 13).

    python benchmarks/extrapolation/noise_tails.py --quick --only datablations misfitting --out DIR

For each task of the chosen datasets: the plain posterior of the fit set and its calibration (``sb.calibrate`` under
the leave-one-dataset-out log-κ prior, as the suite's ``discrepancy`` method), then, at the held-out runs, the 90%
width (q95 − q05 of log loss, ≈ relative width) of each term of the predictive alone and of all three together:

- ``w_law``: the law's log mean, posterior draws (parameter uncertainty);
- ``w_disc``: the discrepancy δ = κ·d^γ·z alone;
- ``w_noise``: the run noise σ·t_ν alone (mixed over the posterior's (σ, ν));
- ``w_full``: law + δ + noise, the ``discrepancy`` method's predictive;

and the posterior ν and σ, the in-sample coverage of the noise predictive (training runs, law at its posterior
median), and the held-out coverage. Everything each task needs for post-hoc what-ifs (training residuals, the
held-out draws of each term) is saved to ``DIR/<task>.npz``; the per-task table to ``DIR/noise_tails.csv``.
"""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from methods import FULL, QUICK, Context, lodo_prior  # noqa: E402
from tasks import load_tasks  # noqa: E402

import scalebayes as sb  # noqa: E402
from scalebayes import predictive  # noqa: E402
from scalebayes.errors import CalibrationWarning  # noqa: E402


def width90(x: np.ndarray) -> np.ndarray:
    """q95 − q05 per column of draws (S, P): the 90% width in log loss (≈ relative width)."""
    lo, hi = np.quantile(x, [0.05, 0.95], axis=0)
    return hi - lo


def covered(x: np.ndarray, y: np.ndarray, level: float) -> np.ndarray:
    lo, hi = np.quantile(x, [(1 - level) / 2, (1 + level) / 2], axis=0)
    return (y >= lo) & (y <= hi)


def measure(task, others, settings, seed: int, out: Path) -> dict:
    ctx = Context(task=task, settings=settings, seed=seed)
    post = ctx.posterior()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CalibrationWarning)
        cal = sb.calibrate(post, prior=lodo_prior(others))
    ho = predictive.for_frame(cal, task.heldout.frame, seed=seed, disc=cal.discrepancy)
    tr = predictive.for_frame(post, task.train.frame, seed=seed, disc=None)
    z = predictive.delta_normals(seed, ho.log_mu.shape[0])
    disc = z[:, None] * ho.extra_sd
    noise = predictive.noise_draws(seed, ho.sigma, ho.nu, ho.n_points)
    full = ho.log_mu + disc + noise
    y = np.log(task.heldout.loss)
    y_tr = np.log(task.train.loss)
    resid = y_tr - np.median(tr.log_mu, axis=0)
    tr_noise = predictive.noise_draws(seed + 1, tr.sigma, tr.nu, tr.n_points)
    in_pred = np.median(tr.log_mu, axis=0)[None, :] + tr_noise
    tname = task.name.replace("/", "__")
    np.savez_compressed(
        out / f"{tname}.npz",
        resid=resid,
        train_C=task.train.frame["C"].to_numpy(),
        train_N=task.train.frame["N"].to_numpy(),
        log_mu=ho.log_mu,
        disc=disc,
        sigma=ho.sigma[:, 0],
        nu=ho.nu,
        y=y,
    )
    row = {
        "task": task.name,
        "dataset": task.dataset,
        "n_train": len(task.train),
        "n_heldout": len(task.heldout),
        "nu_med": float(np.median(ho.nu)),
        "nu_q05": float(np.quantile(ho.nu, 0.05)),
        "nu_q95": float(np.quantile(ho.nu, 0.95)),
        "sigma_med": float(np.median(ho.sigma)),
        "resid_mad_sd": float(sb.likelihood.robust_sd(resid)),
        "in_cov50": float(covered(in_pred, y_tr, 0.5).mean()),
        "in_cov90": float(covered(in_pred, y_tr, 0.9).mean()),
        "w_law": float(np.median(width90(ho.log_mu))),
        "w_disc": float(np.median(width90(disc))),
        "w_noise": float(np.median(width90(noise))),
        "w_law_disc": float(np.median(width90(ho.log_mu + disc))),
        "w_full": float(np.median(width90(full))),
        "cov50": float(covered(full, y, 0.5).mean()),
        "cov90": float(covered(full, y, 0.9).mean()),
        "cov90_no_noise": float(covered(ho.log_mu + disc, y, 0.9).mean()),
        "are": float(np.median(np.abs(np.exp(np.median(full, axis=0) - y) - 1))),
        "fit_ok": bool(post.diagnostics.ok),
    }
    print(" ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items()), flush=True)
    return row


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", nargs="+", required=True)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--task-filter", default="", help="only tasks whose name contains this")
    a = ap.parse_args(argv)
    a.out.mkdir(parents=True, exist_ok=True)
    tasks, _, _ = load_tasks(None)
    rows = []
    for t in tasks:
        if t.dataset not in a.only or a.task_filter not in t.name:
            continue
        others = [o for o in tasks if o.dataset != t.dataset]
        rows.append(measure(t, others, QUICK if a.quick else FULL, a.seed, a.out))
        pd.DataFrame(rows).to_csv(a.out / "noise_tails.csv", index=False)


if __name__ == "__main__":
    main()
