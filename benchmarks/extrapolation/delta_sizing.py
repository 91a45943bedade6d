"""How the discrepancy δ is sized from a dataset's own inner splits, re-scored without refitting (issue 13).

    python benchmarks/extrapolation/delta_sizing.py --capture --quick --only DATASET ... --out DIR
    python benchmarks/extrapolation/delta_sizing.py --rescore DIR [--variants NAME ...] [--csv FILE]

``--capture``: per task, the suite's plain posterior of the fit set (quick or full settings, seed 0), its inner
splits (:func:`scalebayes.calibration.inner_errors`, with each refit's own training residuals), the lanes left out,
the leave-one-dataset-out log-κ prior (:func:`methods.lodo_prior`), the held-out runs' distances, and the law and
noise draws of the predictive at the held-out runs: everything a variant of how (κ, γ) are learned needs, saved to
``DIR/<task>.npz`` (arrays, and the rest as JSON in its ``meta`` entry: no pickle, so a capture cannot run code when
it is read back).

``--rescore``: learns (κ, γ) per family under each variant (:data:`VARIANTS`) and scores the calibrated predictive
at the held-out runs exactly as the suite's ``discrepancy`` method does (the same random numbers: ``today``
reproduces the suite's quick-settings scores), per task, per dataset and over all tasks. ``dir_mixed`` (a
direction-aware δ, :func:`direction_mixed`) reloads the tasks for the held-out runs' N and C, so it needs the data.

(DELTA_SIZING.md holds the numbers and what they say.)
"""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.special import logsumexp

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from methods import FULL, QUICK, Context, lodo_prior  # noqa: E402
from score import score_draws, summarise  # noqa: E402
from tasks import load_tasks  # noqa: E402

import scalebayes as sb  # noqa: E402
from scalebayes import calibration, predictive  # noqa: E402
from scalebayes.checkpoints import intra_run_correlation  # noqa: E402
from scalebayes.discrepancy import distances, fitted_regions  # noqa: E402
from scalebayes.formerror import GAMMAS, FamilyKappas, KappaPosterior, SplitErrors  # noqa: E402
from scalebayes.likelihood import robust_sd  # noqa: E402
from scalebayes.priors import NU_SHAPE_RATE, SIGMA_SCALE  # noqa: E402


# ------------------------------------------------------------------------------------------------ capture
def capture(task, others, settings, seed: int, out: Path) -> None:
    """Fit ``task``'s plain posterior, measure its inner splits and save what re-scoring needs to ``out``."""
    ctx = Context(task=task, settings=settings, seed=seed)
    post = ctx.posterior()
    prior = lodo_prior(others)
    splits, report = calibration.inner_errors(post)
    ho = predictive.for_frame(post, task.heldout.frame, seed=seed, disc=None)
    fit = predictive.for_frame(post, post.data.frame, seed=seed, disc=None)
    fr = task.heldout.frame
    rec = {
        "task": task.name,
        "dataset": task.dataset,
        "split": task.split,
        "prior": prior,
        "splits": splits,
        "report": report,
        "families": [str(f) for f in post.families],
        "heldout_family": fr["family"].astype(str).to_numpy(),
        "distance": distances(fitted_regions(post.data, post.law), fr, post.law),
        "log_mu": ho.log_mu,
        "sigma": ho.sigma,
        "nu": ho.nu,
        "y": np.log(task.heldout.loss),
        # the fit's own residuals (log loss − the law's median log mean, nats) and both sets' log tokens per parameter
        "train_resid": np.log(post.data.loss) - np.median(fit.log_mu, axis=0),
        "train_log_tpp": np.log(post.data.frame["D"].to_numpy(float) / post.data.frame["N"].to_numpy(float)),
        "heldout_log_tpp": np.log(fr["D"].to_numpy(float) / fr["N"].to_numpy(float)),
        "train_frame": task.train.frame[[c for c in ("N", "D", "C", "family", "run") if c in task.train.frame]],
        "seed": seed,
        "fit_ok": bool(post.diagnostics.ok),
    }
    save_capture(rec, out / (task.name.replace("/", "__") + ".npz"))
    left = len(report.get("left_out", []))
    print(f"{task.name}: {len(splits)} splits, {left}/{report['lanes']} lanes left out, prior {prior}", flush=True)


#: A capture's arrays, and each inner split's (:class:`scalebayes.formerror.SplitErrors`).
ARRAYS = ("heldout_family", "distance", "log_mu", "sigma", "nu", "y", "train_resid", "train_log_tpp", "heldout_log_tpp")
SPLIT_ARRAYS = ("residual", "distance", "param_var", "rows", "train_residual", "train_rows")
META = ("task", "dataset", "split", "prior", "report", "families", "seed", "fit_ok")


def save_capture(rec: dict, path: Path) -> None:
    """``rec`` as one ``.npz``: arrays by name, the training frame by column, row labels as strings (the frame's
    index too, so the splits' row labels still find their rows), the rest as JSON."""
    tf = rec["train_frame"]
    arrays = {k: np.asarray(rec[k]) for k in ARRAYS} | {"heldout_family": np.asarray(rec["heldout_family"], str)}
    num = pd.api.types.is_numeric_dtype
    arrays |= {f"train_frame/{c}": tf[c].to_numpy(float) if num(tf[c]) else tf[c].to_numpy(str) for c in tf}
    arrays["train_frame/index"] = tf.index.astype(str).to_numpy(str)
    for i, e in enumerate(rec["splits"]):
        for f in SPLIT_ARRAYS:
            v = np.asarray(getattr(e, f))
            arrays[f"split{i}/{f}"] = v.astype(str) if f.endswith("rows") else v
    meta = {k: rec[k] for k in META} | {"splits": [{"noise": e.noise, "info": e.info} for e in rec["splits"]]}
    meta["train_columns"] = list(tf.columns)
    np.savez_compressed(path, meta=np.asarray(json.dumps(meta, default=float)), **arrays)


def load_capture(path: Path) -> dict:
    """The record :func:`save_capture` wrote (read with ``allow_pickle=False``)."""
    with np.load(path, allow_pickle=False) as z:
        meta = json.loads(str(z["meta"]))
        rec = {k: meta[k] for k in META} | {k: z[k] for k in ARRAYS}
        cols = meta["train_columns"]
        rec["train_frame"] = pd.DataFrame({c: z[f"train_frame/{c}"] for c in cols}, index=z["train_frame/index"])
        rec["splits"] = [
            SplitErrors(**{f: z[f"split{i}/{f}"] for f in SPLIT_ARRAYS}, noise=m["noise"], info=m["info"])
            for i, m in enumerate(meta["splits"])
        ]
    rec["prior"] = tuple(rec["prior"])
    return rec


# ------------------------------------------------------------------------------------------------ re-scoring
def kappa_draws(rec: dict, splits, prior, gamma_prior=None) -> dict:
    """Per fitted family, (κ (S,), γ (S,)) as :func:`scalebayes.calibration.learn` stores them and the predictive
    uses them (posterior draw s takes stored pair s mod their number)."""
    fk = FamilyKappas.learn(splits, prior=prior, gamma_prior=gamma_prior)
    fams, seed, S = rec["families"], rec["seed"], rec["log_mu"].shape[0]
    if len(fams) == 1:
        per = {fams[0]: fk.families.get(fams[0], fk.new).draws(calibration.N_SCALE_DRAWS, seed=seed)}
    else:
        per = {
            f: fk.families.get(f, fk.new).draws(calibration.N_FAMILY_DRAWS, seed=seed + 1 + i)
            for i, f in enumerate(fams)
        }
    return {f: (k[np.arange(S) % len(k)], g[np.arange(S) % len(k)]) for f, (k, g) in per.items()}


def predictive_draws(rec: dict, per: dict, noise: bool = True, sigma=None, nu=None) -> np.ndarray:
    """The suite's ``discrepancy`` draws of log loss (S, P) at the held-out runs, with (κ, γ) per family ``per``
    (and run noise of scale ``sigma`` (S,) or (S, P) and degrees of freedom ``nu`` (S,) in place of the fit's)."""
    S, P = rec["log_mu"].shape
    d = rec["distance"]
    extra = np.zeros((S, P))
    for f, (k, g) in per.items():
        m = rec["heldout_family"] == f
        extra[:, m] = k[:, None] * np.where(d[m] > 0, np.maximum(d[m], 1e-30)[None, :] ** g[:, None], 0.0)
    out = rec["log_mu"] + predictive.delta_normals(rec["seed"], S)[:, None] * extra
    if noise:
        sigma, nu = (rec["sigma"], rec["nu"]) if sigma is None else (sigma, nu)
        out = out + predictive.noise_draws(rec["seed"], sigma, nu, P)
    return out


def t_noise_fit(r: np.ndarray, x: np.ndarray | None) -> tuple[float, float, float]:
    """Maximum-likelihood Student-t of residuals ``r`` (n,) whose log scale is a + b·x (``x`` (n,) centred; None:
    b = 0): (a, b, ν), ν in [0.5, 200]."""
    from scipy.optimize import minimize
    from scipy.stats import t as student_t

    xs = np.zeros_like(r) if x is None else x

    def unpack(th):  # (a, b, ν) from the optimiser's coordinates (b absent without x; ν as its clipped log)
        return th[0], (th[1] if x is not None else 0.0), float(np.exp(np.clip(th[-1], np.log(0.5), np.log(200))))

    def nll(th):
        a, b, nu = unpack(th)
        return -student_t.logpdf(r, nu, 0.0, np.exp(a + b * xs)).sum()

    start = [np.log(robust_sd(r) + 1e-6), *([0.0] if x is not None else []), np.log(5.0)]
    th = minimize(nll, start, method="Nelder-Mead", options={"maxiter": 4000, "xatol": 1e-6, "fatol": 1e-9}).x
    a, b, nu = unpack(th)
    return float(a), float(b), nu


def t_noise_posterior(r: np.ndarray, x: np.ndarray, n_draws: int, seed: int) -> tuple[np.ndarray, ...]:
    """Posterior draws (σ, b, ν), each (n_draws,), of residuals ``r`` ~ Student-t(ν, 0, σ·exp(b·x)) under the
    package's default priors for σ and ν (``SIGMA_SCALE``, ``NU_SHAPE_RATE`` of :mod:`scalebayes.priors`) and
    b ~ Normal(0, 0.5): NUTS, 2 chains × (500 + 500), draws cycled to ``n_draws``."""
    import jax
    import jax.numpy as jnp
    import numpyro
    import numpyro.distributions as dist
    from numpyro.infer import MCMC, NUTS

    def model(r, x):
        sigma = numpyro.sample("sigma", dist.HalfNormal(SIGMA_SCALE))
        b = numpyro.sample("b", dist.Normal(0.0, 0.5))
        nu = numpyro.sample("nu", dist.Gamma(*NU_SHAPE_RATE))
        numpyro.sample("r", dist.StudentT(nu, 0.0, sigma * jnp.exp(b * x)), obs=r)

    mcmc = MCMC(
        NUTS(model), num_warmup=500, num_samples=500, num_chains=2, progress_bar=False, chain_method="sequential"
    )
    mcmc.run(jax.random.key(seed), jnp.asarray(r), jnp.asarray(x))
    d = mcmc.get_samples()
    i = np.arange(n_draws) % len(d["b"])
    return tuple(np.asarray(d[k])[i] for k in ("sigma", "b", "nu"))


def noise_variant(name: str, rec: dict) -> tuple[np.ndarray, np.ndarray, dict]:
    """Run noise of variant ``name`` at the held-out runs: scale (S, P), ν (S,) and the fitted (a, b, ν).
    ``tpp_noise``: a Student-t whose log scale is linear in log tokens per parameter (under-trained runs scatter
    more), fitted by maximum likelihood to the fit's own residuals; ``ml_t_noise``: the same with a constant scale
    (what the plug-in fit alone changes); ``tpp_noise_bayes``: ``tpp_noise`` with its posterior (σ, b, ν) draws
    instead of the plug-in (:func:`t_noise_posterior`), one per posterior draw of the law."""
    S, P = rec["log_mu"].shape
    x0 = rec["train_log_tpp"].mean()
    if name == "tpp_noise_bayes":
        sigma, b, nu = t_noise_posterior(rec["train_resid"], rec["train_log_tpp"] - x0, S, rec["seed"])
        scale = sigma[:, None] * np.exp(b[:, None] * (rec["heldout_log_tpp"] - x0)[None, :])
        return scale, nu, {"b": float(np.median(b)), "nu": float(np.median(nu)), "sigma": float(np.median(sigma))}
    x = rec["train_log_tpp"] - x0 if name == "tpp_noise" else None
    a, b, nu = t_noise_fit(rec["train_resid"], x)
    scale = np.exp(a + b * (rec["heldout_log_tpp"] - x0))
    return np.broadcast_to(scale, (S, P)), np.full(S, nu), {"a": a, "b": b, "nu": nu}


def _rms(r: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.asarray(r) ** 2)))


def _edge_noise(rec: dict, e, share: float = 0.25, k_min: int = 8) -> float:
    """RMS of split ``e``'s refit training residuals at its training runs nearest the held-out edge: the largest
    max(k_min, share·n) by the split's own variable (C or N)."""
    col = "C" if e.info["split"] == "compute" else "N"
    x = np.log(rec["train_frame"].loc[e.train_rows, col].to_numpy(float))
    k = min(len(x), max(k_min, int(round(share * len(x)))))
    return _rms(e.train_residual[np.argsort(-x)[:k]])


def design_effect(rec: dict, e) -> float:
    """Kish's design effect 1 + (m̃ − 1)·ρ̂ of split ``e``'s refit training set (1 without a run column): ρ̂ the
    intra-run correlation of the refit's training residuals, m̃ = Σm²/Σm over its runs' checkpoint counts m."""
    fr = rec["train_frame"]
    if "run" not in fr:
        return 1.0
    runs = fr.loc[e.train_rows, "run"].astype(str).to_numpy()
    m = np.unique(runs, return_counts=True)[1].astype(float)
    return float(1 + ((m**2).sum() / m.sum() - 1) * intra_run_correlation(e.train_residual, runs))


#: Each dataset's first suite task: its evidence for the priors learned across datasets (``methods.dataset_mode``).
FIRST = {
    "chinchilla_epoch": "chinchilla_epoch/all/compute",
    "porian_isoflop": "porian_isoflop/rw/base/long/kaplan/compute",
    "datablations": "datablations/c4/compute",
    "misfitting": "misfitting/open_lm/N",
    "openathena_isoflops": "openathena_isoflops/llama_3/compute",
    "hitchhiker": "hitchhiker/gpt3/N",
}


def _others_first(recs: list[dict], rec: dict) -> list[dict]:
    return [r for r in recs if r["task"] == FIRST.get(r["dataset"]) and r["dataset"] != rec["dataset"]]


def gamma_marginal_lodo(recs: list[dict], rec: dict) -> np.ndarray:
    """Prior of γ for ``rec``'s dataset: the mean of the other datasets' γ marginals (flat prior of log κ)."""
    lw = [KappaPosterior.learn(r["splits"], prior=(0.0, 1e3)).log_weight for r in _others_first(recs, rec)]
    return np.mean([np.exp(logsumexp(w, axis=(0, 2))) for w in lw], axis=0)


def gamma_mode_lodo(recs: list[dict], rec: dict) -> np.ndarray:
    """Prior of γ for ``rec``'s dataset from the other datasets' modes of (κ, γ) (flat prior of log κ), as the κ
    prior is built from their modes: counts of the γ modes on :data:`GAMMAS`, plus one each."""
    counts = np.ones(len(GAMMAS))
    for r in _others_first(recs, rec):
        counts[list(GAMMAS).index(KappaPosterior.learn(r["splits"], prior=(0.0, 1e3)).mode()[1])] += 1
    return counts / counts.sum()


def variant(name: str, rec: dict, recs: list[dict]) -> tuple[list, tuple, np.ndarray | None, float]:
    """(splits, prior of log κ, prior of γ or None, multiplier of κ) of variant ``name`` (:data:`VARIANTS`)."""
    splits, prior, gp, scale = rec["splits"], rec["prior"], None, 1.0
    if name.startswith("x"):  # today's κ times a constant (what-if)
        scale = float(name[1:])
    elif name == "family_noise":  # s per family, not pooled over families
        by: dict[str, list] = {}
        for e in splits:
            by.setdefault(e.info["family"], []).append(e.train_residual)
        s = {f: _rms(np.concatenate(v)) for f, v in by.items()}
        splits = [replace(e, noise=s[e.info["family"]]) for e in splits]
    elif name == "lane_noise":  # s per split: its own refit's training residuals
        splits = [replace(e, noise=_rms(e.train_residual)) for e in splits]
    elif name == "edge_noise":  # s per split: its refit's training residuals nearest the held-out edge
        splits = [replace(e, noise=_edge_noise(rec, e)) for e in splits]
    elif name == "deff_b":  # the refit's bootstrap variance times its design effect (checkpoints are not runs)
        splits = [replace(e, param_var=e.param_var * design_effect(rec, e)) for e in splits]
    elif name == "gamma_half":  # γ fixed at 0.5 (what-if)
        gp = np.r_[1.0, np.full(len(GAMMAS) - 1, 1e-12)]
    elif name == "gamma_marginal_lodo":
        gp = gamma_marginal_lodo(recs, rec)
    elif name == "gamma_mode_lodo":
        gp = gamma_mode_lodo(recs, rec)
    elif name == "dir_oracle":  # only the inner splits of the outer task's own direction (what-if, not a method)
        want = "params" if rec["split"] == "N" else "compute"
        splits = [e for e in splits if e.info["split"] == want]
    elif name != "today":
        raise KeyError(name)
    return splits, prior, gp, scale


VARIANTS = (
    "today",
    "x0",
    "x0.5",
    "x2",
    "family_noise",
    "lane_noise",
    "edge_noise",
    "deff_b",
    "gamma_half",
    "gamma_marginal_lodo",
    "gamma_mode_lodo",
    "dir_oracle",
    "dir_mixed",
    "kappa_rms",
    "kappa_median",
    "ml_t_noise",
    "tpp_noise",
    "tpp_noise_bayes",
)
#: Variants of the run noise alone (today's δ).
NOISE_VARIANTS = ("ml_t_noise", "tpp_noise", "tpp_noise_bayes")


def _score_sd(rec: dict, name: str, sd: np.ndarray) -> dict:
    """A score row for δ of s.d. ``sd`` (S, P) at the held-out runs (the same random numbers as the suite)."""
    S, P = sd.shape
    law = rec["log_mu"] + predictive.delta_normals(rec["seed"], S)[:, None] * sd
    full = law + predictive.noise_draws(rec["seed"], rec["sigma"], rec["nu"], P)
    loss = np.exp(rec["y"])
    s = summarise(score_draws(full, loss))
    row = {"task": rec["task"], "dataset": rec["dataset"], "variant": name, **s}
    return {**row, "cov90_no_noise": summarise(score_draws(law, loss))["coverage90"], "kappa": np.nan}


def direction_weight(rec: dict, heldout) -> np.ndarray:
    """Per held-out run (P,): the share w_N = e_N² / (e_N² + e_C²) of its extrapolation that is in N, e_N and e_C
    its excess of log N and log C over its family's fitted runs (0.5 when it exceeds neither)."""
    tr = rec["train_frame"]
    fam = heldout["family"].astype(str).to_numpy()
    w = np.full(len(heldout), 0.5)
    for f in np.unique(fam):
        m, t = fam == f, tr[tr["family"].astype(str) == f]
        e_n = np.maximum(0, np.log(heldout.loc[m, "N"].to_numpy(float)) - np.log(t["N"].max()))
        e_c = np.maximum(0, np.log(heldout.loc[m, "C"].to_numpy(float)) - np.log(t["C"].max()))
        tot = e_n**2 + e_c**2
        w[m] = np.where(tot > 0, e_n**2 / np.where(tot > 0, tot, 1.0), 0.5)
    return w


def direction_mixed(rec: dict, heldout) -> dict:
    """What-if: κ learned separately from the params splits (κ_N, γ_N) and the compute splits (κ_C, γ_C); a
    held-out run's δ has variance w_N·(κ_N·d^γ_N)² + (1 − w_N)·(κ_C·d^γ_C)² (:func:`direction_weight`), returned as
    the equivalent per-run (κ_eff, γ = 1) per family, (S, P) via ``per_run``."""
    by = {k: [e for e in rec["splits"] if e.info["split"] == k] for k in ("params", "compute")}
    kd = {k: kappa_draws(rec, v or rec["splits"], rec["prior"]) for k, v in by.items()}
    d = rec["distance"]
    w = direction_weight(rec, heldout)
    S, P = rec["log_mu"].shape
    sd = np.zeros((S, P))
    for f in kd["params"]:
        m = rec["heldout_family"] == f
        g = {k: kd[k][f][0][:, None] * np.maximum(d[m], 1e-30)[None] ** kd[k][f][1][:, None] for k in kd}
        sd[:, m] = np.sqrt(w[m] * g["params"] ** 2 + (1 - w[m]) * g["compute"] ** 2) * (d[m] > 0)
    return sd


def delta_sd(rec: dict, per: dict) -> np.ndarray:
    """δ's s.d. κ_s·d^γ_s per posterior draw s at the held-out runs, (S, P), from (κ, γ) draws per family ``per``."""
    d = rec["distance"]
    sd = np.zeros(rec["log_mu"].shape)
    for f, (k, g) in per.items():
        m = rec["heldout_family"] == f
        sd[:, m] = k[:, None] * np.where(d[m] > 0, np.maximum(d[m], 1e-30)[None, :] ** g[:, None], 0.0)
    return sd


def pooled_sd(rec: dict, how: str) -> np.ndarray:
    """δ's s.d. with (κ, γ)'s uncertainty pooled per held-out run, (S, P): ``"rms"`` the root mean square of
    κ·d^γ over draws (δ Normal with the mixture's variance: the uncertainty kept in the variance, not in the
    tails), ``"median"`` its median (a plug-in, for comparison)."""
    sd = delta_sd(rec, kappa_draws(rec, rec["splits"], rec["prior"]))
    one = np.sqrt(np.mean(sd**2, axis=0)) if how == "rms" else np.median(sd, axis=0)
    return np.broadcast_to(one, sd.shape)


def rescore(dirs: list[str], variants: list[str], csv: str | None = None) -> pd.DataFrame:
    """Scores (one row per task and variant) of the captured tasks under ``dirs``; prints per task and dataset."""
    recs = []
    for d in dirs:
        recs += [load_capture(p) for p in sorted(Path(d).glob("*.npz"))]
    heldout = {}
    if "dir_mixed" in variants:
        heldout = {t.name: t.heldout.frame for t in load_tasks(None, None, log=lambda s: None)[0]}
    rows = []
    for rec in recs:
        loss = np.exp(rec["y"])
        for v in variants:
            if v == "dir_mixed":
                rows.append(_score_sd(rec, v, direction_mixed(rec, heldout[rec["task"]])))
                continue
            if v in ("kappa_rms", "kappa_median"):
                rows.append(_score_sd(rec, v, pooled_sd(rec, v.split("_")[1])))
                continue
            if v in NOISE_VARIANTS:
                per = kappa_draws(rec, rec["splits"], rec["prior"])
                sigma, nu, fitted = noise_variant(v, rec)
                print(f"{rec['task']} {v}: {fitted}", flush=True)
                s = summarise(score_draws(predictive_draws(rec, per, sigma=sigma, nu=nu), loss))
                row = {"task": rec["task"], "dataset": rec["dataset"], "variant": v, **s}
                rows.append({**row, "cov90_no_noise": np.nan, "kappa": np.nan, "tpp_slope": fitted["b"]})
                continue
            splits, prior, gp, scale = variant(v, rec, recs)
            per = {f: (k * scale, g) for f, (k, g) in kappa_draws(rec, splits, prior, gp).items()}
            s = summarise(score_draws(predictive_draws(rec, per), loss))
            s0 = summarise(score_draws(predictive_draws(rec, per, noise=False), loss))
            kappa = float(np.median(np.concatenate([k for k, _ in per.values()])))
            row = {"task": rec["task"], "dataset": rec["dataset"], "variant": v, **s}
            rows.append({**row, "cov90_no_noise": s0["coverage90"], "kappa": kappa})
    df = pd.DataFrame(rows)
    cols = ["coverage50", "coverage90", "are", "width", "lpd", "cov90_no_noise", "kappa"]
    print(df.pivot_table(index="task", columns="variant", values=["coverage90", "width"]).round(3).to_string())
    print(df.groupby(["dataset", "variant"])[cols].mean().round(4).to_string())
    print(df.groupby("variant")[cols].mean().round(4).to_string())
    if csv:
        df.to_csv(csv, index=False)
    return df


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--capture", action="store_true", help="fit and save each task's inner splits and draws")
    p.add_argument("--quick", action="store_true")
    p.add_argument("--only", nargs="*", default=None)
    p.add_argument("--out", default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--data-root", default=None)
    p.add_argument("--rescore", nargs="*", default=None, help="folders of captured tasks")
    p.add_argument("--variants", nargs="*", default=list(VARIANTS))
    p.add_argument("--csv", default=None)
    a = p.parse_args(argv)
    sb.use_float64()
    if a.rescore:
        rescore(a.rescore, a.variants, a.csv)
        return
    if not a.capture or not a.out:
        p.error("give --capture --out DIR, or --rescore DIR")
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    tasks, _, _ = load_tasks(None, a.data_root)
    for t in tasks:
        if a.only and t.dataset not in a.only:
            continue
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            capture(t, [o for o in tasks if o.dataset != t.dataset], QUICK if a.quick else FULL, a.seed, out)


if __name__ == "__main__":
    main()
