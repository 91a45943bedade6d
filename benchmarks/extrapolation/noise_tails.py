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

    python benchmarks/extrapolation/noise_tails.py --whatif DIR [DIR ...]

replaces the run-noise term of every saved task by other noise models, each fitted to the task's *training*
residuals only (no refit of the law): the posterior's Student-t (as fitted), a Normal of the posterior's σ, a
contaminated Normal ((1 − ε)·N(0, s) + ε·N(0, s_out), by EM), a Student-t with ν ≥ 3 (maximum likelihood), the
posterior's Student-t with σ following a log-linear trend in compute, and no noise; prints each one's coverage and
width per dataset, the training residuals' tails at low and high compute, and how much integrating (κ, γ) widens
δ (``δ inflation``).
(NOISE_TAILS.md holds the numbers and what they say.)
"""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import optimize, stats

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


def contaminated_normal(r: np.ndarray, iters: int = 200) -> tuple[float, float, float]:
    """(ε, s, s_out) of (1 − ε)·N(0, s) + ε·N(0, s_out) fitted to residuals ``r`` by EM (s_out ≥ 3·s)."""
    r = r - np.median(r)
    s = sb.likelihood.robust_sd(r)
    eps, s_out = 0.05, 5 * s
    for _ in range(iters):
        p_in, p_out = (1 - eps) * stats.norm.pdf(r, 0, s), eps * stats.norm.pdf(r, 0, s_out)
        w = p_out / (p_in + p_out)
        eps = float(np.clip(w.mean(), 1e-4, 0.5))
        s = float(np.sqrt(((1 - w) * r * r).sum() / (1 - w).sum()))
        s_out = max(float(np.sqrt((w * r * r).sum() / max(w.sum(), 1e-9))), 3 * s)
    return eps, s, s_out


def student_t_mle(r: np.ndarray, nu_min: float) -> tuple[float, float]:
    """(ν, σ) of a Student-t fitted to residuals ``r`` by maximum likelihood, ν ≥ ``nu_min``."""
    r = r - np.median(r)

    def nll(p):
        return -stats.t.logpdf(r, nu_min + np.exp(p[0]), 0, np.exp(p[1])).sum()

    x = optimize.minimize(nll, [np.log(3.0), np.log(sb.likelihood.robust_sd(r))], method="Nelder-Mead").x
    return nu_min + float(np.exp(x[0])), float(np.exp(x[1]))


def compute_trend(z, heldout_log_c: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Per-draw factors (S, P) on σ at the held-out runs from a log-linear trend of the noise scale in compute:
    log |r| = a + b·(log C − mean), least squares on the training residuals, b drawn from its estimate ± s.e."""
    r = np.abs(z["resid"] - np.median(z["resid"])) + 1e-12
    lc = np.log(z["train_C"]) - np.log(z["train_C"]).mean()
    b, a = np.polyfit(lc, np.log(r), 1)
    se = np.sqrt(np.sum((np.log(r) - a - b * lc) ** 2) / (len(r) - 2) / np.sum(lc**2))
    bs = b + se * rng.standard_normal(z["log_mu"].shape[0])
    return np.exp(bs[:, None] * (heldout_log_c[None, :] - np.log(z["train_C"]).mean()))


def noise_variants(z, heldout_log_c: np.ndarray, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Run-noise draws (S, P) of each noise model for one saved task ``z`` (module docstring)."""
    S, P = z["log_mu"].shape
    eps, s, s_out = contaminated_normal(z["resid"])
    nu3, s3 = student_t_mle(z["resid"], 3.0)
    t = rng.standard_t(np.broadcast_to(z["nu"][:, None], (S, P))) * z["sigma"][:, None]
    return {
        "student_t (fitted)": t,
        "normal, posterior sigma": rng.standard_normal((S, P)) * z["sigma"][:, None],
        "contaminated normal (EM)": np.where(rng.random((S, P)) < eps, s_out, s) * rng.standard_normal((S, P)),
        "student_t, nu >= 3 (MLE)": rng.standard_t(nu3, (S, P)) * s3,
        "student_t, sigma trend in C": t * compute_trend(z, heldout_log_c, rng),
        "no noise": np.zeros((S, P)),
    }


def tails(z) -> dict[str, float]:
    """90% quantile of |training residual| in the lower and upper half of the training runs by compute."""
    r = np.abs(z["resid"] - np.median(z["resid"]))
    high = np.log(z["train_C"]) > np.median(np.log(z["train_C"]))
    return {"q90|r| low C": float(np.quantile(r[~high], 0.9)), "q90|r| high C": float(np.quantile(r[high], 0.9))}


def kappa_inflation(z, seed: int) -> float:
    """Median over held-out runs of δ's 90% width over that of a Normal of the median s.d. κ·d^γ: how much
    integrating (κ, γ) over their posterior widens δ (1 = a plugged-in κ)."""
    zs = predictive.delta_normals(seed, z["disc"].shape[0])  # the z the saved δ = z·κ·d^γ was drawn with
    sd = np.median(np.abs(z["disc"] / zs[:, None]), axis=0)
    return float(np.median(width90(z["disc"]) / (2 * stats.norm.ppf(0.95) * sd)))


def whatif(dirs: list[Path], seed: int = 0) -> pd.DataFrame:
    """Per (dataset, noise model): held-out coverage (50%, 90%) and median 90% width, means over tasks."""
    sb.precision.use_float64()  # the saved δ's normals were drawn in float64
    rng = np.random.default_rng(seed)
    heldout = {t.name.replace("/", "__"): np.log(t.heldout.frame["C"].to_numpy()) for t in load_tasks(None)[0]}
    rows = []
    for f in sorted(p for d in dirs for p in d.glob("*.npz")):
        z = np.load(f)
        base, y, extra = z["log_mu"] + z["disc"], z["y"], {**tails(z), "δ inflation": kappa_inflation(z, seed)}
        for name, noise in noise_variants(z, heldout[f.stem], rng).items():
            x = base + noise
            c50, c90 = covered(x, y, 0.5).mean(), covered(x, y, 0.9).mean()
            rows.append({"dataset": f.stem.split("__")[0], "noise": name, "cov50": c50, "cov90": c90})
            rows[-1].update({"width": float(np.median(width90(x))), **extra})
    return pd.DataFrame(rows).groupby(["noise", "dataset"], sort=False).mean()


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", nargs="+")
    ap.add_argument("--whatif", nargs="+", type=Path, help="summarise saved tasks of these folders (see above)")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path)
    ap.add_argument("--task-filter", default="", help="only tasks whose name contains this")
    ap.add_argument(
        "--nu-prior", nargs=2, type=float, metavar=("SHAPE", "RATE"), help="Gamma prior of ν instead of the default"
    )
    a = ap.parse_args(argv)
    if a.whatif:
        print(whatif(a.whatif, a.seed).round(3).to_string())
        return
    if not (a.only and a.out):
        ap.error("--only and --out are needed to measure")
    if a.nu_prior:  # every fit resolves its priors from this module constant at call time
        sb.priors.NU_SHAPE_RATE = tuple(a.nu_prior)
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
