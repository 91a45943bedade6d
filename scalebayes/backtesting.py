"""Backtesting extrapolation: fit on the smaller runs, score the predictions of the larger held-out ones.

:func:`backtest` splits the runs by compute C (or parameters N, or an explicit mask), fits on the smaller ones and
scores the held-out larger runs, per family and pooled over families:

``coverage``
    fraction of held-out runs whose observed loss falls inside the central predictive interval (nominal: the
    difference of the two ``quantiles``, 0.90 by default).
``width``, ``rel_width``
    mean interval width in nats, and mean width relative to the observed loss.
``are``, ``are_median``
    absolute relative error |pred − obs|/obs of the point prediction, averaged (mean and median) over held-out
    runs. The point prediction is the posterior median of the law's loss (Bayes) or the point fit (Huber).
``lpd``
    mean log predictive density of the observed *log* loss (nats; higher is better), a proper scoring rule that
    rewards sharp *and* calibrated predictions.

Every predictive is one of new runs (law + run-to-run noise). ``method="huber_bootstrap"`` scores the baseline of
:mod:`scalebayes.baselines` the same way: per family, a Huber point fit and B bootstrap refits, with each resample's
law prediction plus Gaussian noise of the robust residual scale of the point fit (1.4826·MAD of its log
residuals on the training runs) — the bootstrap alone covers parameter uncertainty only.

Fits of training subsets are padded to the full data's size, so every split (and every inner calibration split of
``extrapolation="discrepancy"``) reuses one compiled sampler.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pandas as pd

from . import laws as _laws
from .baselines import fit_huber
from .calibration import inner_errors, learn
from .data import ScalingData
from .discrepancy import distances, fitted_regions
from .errors import ModelError, UnknownNameError
from .formerror import KAPPA_PRIOR
from .holdout import SPLIT_COLUMN, fit_padded, holdout_mask
from .likelihood import robust_sd
from .padding import pad_size
from .predict import log_mean_draws
from .predictive import LogPredictive, for_frame
from .progress import Steps
from .spec import FIELDS, FitSpec, resolve

METHODS = ("bayes", "huber_bootstrap")


# ----------------------------------------------------------------------------------------------- Huber baseline
def _huber_params(hf, law) -> dict[str, float] | None:
    for attr in ("params", "params_", "point", "estimate"):
        p = getattr(hf, attr, None)
        if isinstance(p, Mapping) and all(k in p for k in law.params):
            return {k: float(p[k]) for k in law.params}
        if isinstance(p, pd.Series) and all(k in p.index for k in law.params):
            return {k: float(p[k]) for k in law.params}
    return None


def _huber_point_log(hf, law, frame: pd.DataFrame) -> np.ndarray:
    """log of the Huber point fit's loss at the rows of ``frame``."""
    p = _huber_params(hf, law)
    if p is not None:
        x = {k: np.log(frame[k].to_numpy()) for k in law.inputs}
        return np.asarray(law.log_mean({k: jnp.asarray(v) for k, v in p.items()}, x))
    out = hf.predict(frame["N"].to_numpy(), frame["D"].to_numpy())
    if isinstance(out, pd.DataFrame):
        col = next(c for c in ("loss", "mean", "L", "pred") if c in out.columns)
        out = out[col]
    return np.log(np.asarray(out, float))


def huber_predictive(train: ScalingData, frame: pd.DataFrame, law, *, bootstrap: int, seed: int, **huber_kwargs):
    """Per family of ``frame``: Huber point fit and bootstrap on that family's training runs, and the predictive
    (bootstrap law draws + Gaussian noise of scale 1.4826·MAD of the point fit's log residuals) at its rows.
    Returns (LogPredictive, point prediction of loss (P,), info per family)."""
    law = _laws.get(law)
    fam = frame["family"].astype(str).to_numpy()
    P = len(frame)
    B = int(bootstrap)
    log_mu = np.empty((B, P))
    sigma = np.empty((B, P))
    point = np.empty(P)
    info = {}
    for f in np.unique(fam):
        m = fam == f
        tr = train.subset(np.asarray(train.frame["family"] == f)) if f in train.families else train
        hf = fit_huber(tr, law, bootstrap=B, seed=seed, **huber_kwargs)
        resid = np.log(tr.loss) - _huber_point_log(hf, law, tr.frame)
        s = robust_sd(resid)
        draws = hf.bootstrap_draws
        rows = draws[list(law.params)].to_numpy(float)
        ok = np.all(np.isfinite(rows) & (rows > 0), axis=1)
        rows = rows[ok]
        if len(rows) == 0:
            raise ModelError(f"every Huber bootstrap resample of family {f!r} failed")
        # keep B rows (resample the successful ones) so that families stack into one (B, P) array
        pick = (
            np.random.default_rng(seed).choice(len(rows), size=B, replace=len(rows) < B)
            if len(rows) != B
            else (np.arange(B))
        )
        params = {k: jnp.asarray(rows[pick, j]) for j, k in enumerate(law.params)}
        x = {k: jnp.log(jnp.asarray(frame.loc[m, k].to_numpy(), dtype=float)) for k in law.inputs}
        log_mu[:, m] = np.asarray(log_mean_draws(law, params, x))
        sigma[:, m] = s
        point[m] = np.exp(_huber_point_log(hf, law, frame.loc[m]))
        info[f] = {"sigma_resid": s, "n_train": len(tr), "bootstrap_ok": int(ok.sum())}
    pred = LogPredictive(log_mu=log_mu, sigma=sigma, nu=np.full(B, np.inf), extra_sd=np.zeros(P))
    return pred, point, info


# ----------------------------------------------------------------------------------------------- scoring
def score(
    pred: LogPredictive, frame: pd.DataFrame, *, quantiles=(0.05, 0.95), point=None, seed: int = 0
) -> pd.DataFrame:
    """Per-run scores of a predictive at the rows of ``frame`` (which holds the observed ``loss``): interval
    ``lo``/``hi`` (nats), ``covered``, ``width``, ``rel_width``, point prediction ``pred`` (default: the posterior
    median of the law's loss), ``are`` and ``lpd`` (log density of the observed log loss)."""
    lo_q, hi_q = quantiles
    if not 0.0 <= lo_q < hi_q <= 1.0:
        raise ModelError(f"quantiles must be two increasing levels in [0, 1], got {quantiles}")
    obs = frame["loss"].to_numpy()
    draws = np.exp(pred.sample(seed=seed, reps=2))
    lo, hi = np.quantile(draws, [lo_q, hi_q], axis=0)
    pt = pred.median() if point is None else np.asarray(point, float)
    out = frame.copy()
    out["pred"] = pt
    out["lo"] = lo
    out["hi"] = hi
    out["covered"] = (obs >= lo) & (obs <= hi)
    out["width"] = hi - lo
    out["rel_width"] = (hi - lo) / obs
    out["are"] = np.abs(pt - obs) / obs
    out["lpd"] = pred.log_density(np.log(obs))
    out["extra_sd"] = np.median(pred.extra_sd, axis=0)  # per run: the median over draws of κ_s·d^γ_s
    return out


def _summarise(runs: pd.DataFrame) -> dict:
    return {
        "n": int(len(runs)),
        "coverage": float(runs["covered"].mean()),
        "width": float(runs["width"].mean()),
        "rel_width": float(runs["rel_width"].mean()),
        "are": float(runs["are"].mean()),
        "are_median": float(runs["are"].median()),
        "lpd": float(runs["lpd"].mean()),
        "max_size_ratio": float(runs["size_ratio"].max()),
    }


@dataclass
class BacktestResult:
    """Scores of one backtest.

    Attributes:
        runs: one row per held-out run: its inputs (N params, D tokens, C FLOP), observed ``loss`` (nats),
            ``family``, ``size_ratio`` (its split value over the largest fitted one in its family), ``distance``
            (outside the fitted region, nats of log input), ``pred``, ``lo``, ``hi``, ``covered``, ``width``,
            ``rel_width``, ``are``, ``lpd`` and ``extra_sd`` (discrepancy s.d., nats of log loss).
        config: method, law, split, holdout_fraction, quantiles, extrapolation, per_family and fit settings.
        train_mask: (n,) True for the runs that were fitted.
        details: per-fit information: seconds, diagnostics, κ and its calibration, Huber residual scales.
        uncalibrated: with ``extrapolation="discrepancy"``, the same fits scored without the discrepancy (the
            "before" of a before/after comparison), else None.
        predictives: per fit, the held-out runs' :class:`~scalebayes.predictive.LogPredictive` (without the
            discrepancy) and, with the discrepancy, the inner calibration splits
            (:class:`~scalebayes.formerror.SplitErrors`; for further analysis; not saved).
    """

    runs: pd.DataFrame
    config: dict
    train_mask: np.ndarray
    details: dict = field(default_factory=dict)
    uncalibrated: BacktestResult | None = None
    predictives: dict = field(default_factory=dict, repr=False)

    @property
    def nominal(self) -> float:
        q = self.config["quantiles"]
        return float(q[1] - q[0])

    def summary(self, by_family: bool = True) -> pd.DataFrame:
        """One row per family (when ``by_family`` and there are several) and ``"all"``: n, coverage, width (nats),
        rel_width, are (mean), are_median, lpd (mean, nats), max_size_ratio."""
        rows = {}
        fams = self.runs["family"].astype(str)
        if by_family and fams.nunique() > 1:
            for f in sorted(fams.unique()):
                rows[f] = _summarise(self.runs[fams == f])
        rows["all"] = _summarise(self.runs)
        return pd.DataFrame(rows).T.rename_axis("family")

    def to_dict(self) -> dict:
        return {
            "config": self.config,
            "summary": self.summary().reset_index().to_dict(orient="records"),
            "details": self.details,
        }


def backtest(
    data: ScalingData,
    law: str | _laws.Law | FitSpec | None = None,
    *,
    spec: FitSpec | None = None,
    split: str | np.ndarray = "compute",
    holdout_fraction: float = 0.2,
    method: str = "bayes",
    quantiles: Sequence[float] = (0.05, 0.95),
    per_family: bool = False,
    extrapolation: str = "none",
    calibration: Mapping | None = None,
    seed: int = 0,
    bootstrap: int = 200,
    huber: Mapping | None = None,
    progress: bool | None = None,
    **fit_kwargs,
) -> BacktestResult:
    """Fit on the smaller runs and score the held-out larger ones.

    Args:
        data: runs (:class:`~scalebayes.data.ScalingData`).
        law: law name, :class:`~scalebayes.laws.Law` or :class:`~scalebayes.spec.FitSpec` (default "chinchilla").
        spec: the model as a :class:`~scalebayes.spec.FitSpec` (or its fields as keywords in ``fit_kwargs``).
        split: ``"compute"`` (hold out the largest C, FLOP), ``"params"`` (largest N) or a boolean mask (n,),
            True = held out.
        holdout_fraction: share of runs held out (ties on the split value stay together, see
            :func:`scalebayes.holdout.holdout_mask`).
        method: ``"bayes"`` (NUTS posterior predictive) or ``"huber_bootstrap"`` (the baseline).
        quantiles: the central interval scored, (0.05, 0.95) = nominal 90%.
        per_family: fit each family separately (split within each family); otherwise one fit of all families
            (hierarchical for several families, see ``pooling``) with one split by size. The Huber baseline
            always fits per family.
        extrapolation: ``"none"`` or ``"discrepancy"`` (Bayes only): widen predictions beyond the fitted runs by the
            discrepancy of :mod:`scalebayes.discrepancy`, learned (:mod:`scalebayes.calibration`) from
            leave-largest-out splits of the *training* runs only.
        calibration: keyword arguments of :func:`scalebayes.calibration.inner_errors` (e.g. ``fractions``,
            ``split``, ``bootstrap``), ``prior`` (of log κ) and ``pool`` (default True): with ``per_family``, learn
            one discrepancy from every family's inner splits together rather than one per family.
        seed: seed of fits, predictive draws and bootstrap.
        bootstrap: Huber bootstrap resamples B.
        huber: extra keyword arguments of :func:`scalebayes.baselines.fit_huber` (``delta``, ``objective``,
            ``init``).
        progress: a line per finished Bayes fit (outer fits and inner refits: done / total, which fit, elapsed,
            ETA) and each fit's sampler bar on stderr; ``None`` (default) when stderr is a terminal or in a notebook,
            ``False`` off. The Huber baseline runs no sampler and reports nothing.
        **fit_kwargs: :func:`scalebayes.fit` options for the Bayes fits (chains, warmup, draws, pooling, priors,
            likelihood, noise, ...).

    Returns:
        :class:`BacktestResult`; ``.summary()`` has coverage, width, ARE and LPD per family and ``"all"``.
    """
    if method not in METHODS:
        raise UnknownNameError(f"unknown method {method!r}; choose one of {METHODS}")
    if extrapolation not in ("none", "discrepancy"):
        raise UnknownNameError(f"unknown extrapolation {extrapolation!r}; choose 'none' or 'discrepancy'")
    if extrapolation != "none" and method != "bayes":
        raise ModelError("extrapolation='discrepancy' applies to method='bayes' only")
    model = {k: fit_kwargs.pop(k) for k in FIELDS if k in fit_kwargs}
    fit_kwargs["spec"] = resolve(spec, law, model)  # the one FitSpec of every Bayes fit of this backtest
    law = _laws.get(fit_kwargs["spec"].law)
    test = holdout_mask(data, split, holdout_fraction, per_family=per_family or method == "huber_bootstrap")
    train = data.subset(~test)
    frame = data.frame.loc[test].copy()
    col = SPLIT_COLUMN.get(split, "C") if isinstance(split, str) else "C"
    frame["size_ratio"] = _size_ratio(train, frame, col)
    frame["distance"] = distances(fitted_regions(train, law), frame, law)
    t0 = time.perf_counter()
    if method == "huber_bootstrap":
        pred, point, info = huber_predictive(train, frame, law, bootstrap=bootstrap, seed=seed, **dict(huber or {}))
        runs, plain, details, predictives = score(pred, frame, quantiles=quantiles, point=point, seed=seed), [], {}, {}
        details["huber"] = info
    else:
        steps = _steps(data, frame, per_family, extrapolation, progress)
        fitted, details = _bayes_fits(data, train, frame, per_family=per_family, seed=seed, steps=steps, **fit_kwargs)
        plain = [score(pred, fr, quantiles=quantiles, seed=seed) for _, fr, _, pred in fitted]
        predictives = {key: {"outer": pred, "frame": fr} for key, fr, _, pred in fitted}
        if extrapolation == "discrepancy":
            n_pad = _pad_for(data, per_family)
            parts = _calibrated(
                fitted, calibration, details, predictives, quantiles=quantiles, seed=seed, n_pad=n_pad, steps=steps
            )
        else:
            parts, plain = plain, []
        runs = pd.concat(parts)
    details["seconds"] = time.perf_counter() - t0
    config = {"method": method} | _config(
        data, law, test, split, holdout_fraction, quantiles, per_family, extrapolation, seed, fit_kwargs
    )
    if method == "huber_bootstrap":
        config["bootstrap"] = int(bootstrap)
        config["huber"] = {k: str(v) for k, v in dict(huber or {}).items()}
    result = BacktestResult(runs=runs.loc[frame.index], config=config, train_mask=~test, details=details)
    result.predictives = predictives
    if plain:  # the same fits scored without the discrepancy: the "before" of a before/after comparison
        result.uncalibrated = BacktestResult(
            runs=pd.concat(plain).loc[frame.index],
            config={**config, "extrapolation": "none"},
            train_mask=~test,
            details={k: v for k, v in details.items() if k not in ("kappa", "calibration")},
        )
    return result


def _pad_for(data: ScalingData, per_family: bool) -> int:
    """The padded size of every backtest fit: that of the full data (or of its largest family)."""
    return pad_size(int(data.family_counts().max()) if per_family else len(data))


def _outer_keys(data, frame, per_family: bool) -> list:
    """The families with held-out runs (``None``: one fit of all families)."""
    if not per_family:
        return [None] if len(frame) else []
    held = set(frame["family"].astype(str))
    return [f for f in data.families if f in held]


def _steps(data, frame, per_family: bool, extrapolation: str, progress) -> Steps:
    """The progress of a Bayes backtest: its outer fits, and with the discrepancy every outer fit's inner refits
    (one step: they run in one vmapped optimisation)."""
    n_outer = len(_outer_keys(data, frame, per_family))
    return Steps("backtest", n_outer * (2 if extrapolation == "discrepancy" else 1), progress)


def _bayes_fits(data, train, frame, *, per_family: bool, seed: int, steps: Steps, **fit_kwargs):
    """The outer fits: [(key, held-out frame, posterior, predictive without discrepancy)], details (diagnostics)."""
    n_pad = _pad_for(data, per_family)
    fitted, details = [], {}
    for f in _outer_keys(data, frame, per_family):
        tr = train if f is None else train.select_families([f])
        fr = frame if f is None else frame[frame["family"].astype(str) == f]
        post = fit_padded(tr, n_pad=n_pad, seed=seed, progress=steps.on, **fit_kwargs)
        steps.advance("outer fit" + ("" if f is None else f" of family {f}"))
        key = "all" if f is None else f
        details.setdefault("diagnostics", {})[key] = post.diagnostics.to_dict()
        fitted.append((key, fr, post, for_frame(post, fr, seed=seed)))
    return fitted, details


def _calibrated(fitted, calibration, details, predictives, *, quantiles, seed: int, n_pad: int, steps: Steps) -> list:
    """Scores of the outer fits with the discrepancy learned from their training runs' inner splits (pooled over
    fits unless ``calibration["pool"]`` is False); κ and the calibration info go into ``details``."""
    del n_pad  # the inner refits are point fits (scalebayes.formerror): no sampler to share
    cal = dict(calibration or {})
    pool = bool(cal.pop("pool", True))
    prior = cal.pop("prior", KAPPA_PRIOR)
    inner = {}
    for key, _, post, _ in fitted:
        inner[key] = inner_errors(post, seed=seed, **cal)
        steps.advance(f"inner refits of {key}")
    pooled = [e for splits, _ in inner.values() for e in splits]
    merged = {"lanes": sum(r["lanes"] for _, r in inner.values()), "left_out": []}
    for _, r in inner.values():
        merged["left_out"] += r["left_out"]
    parts = []
    for key, fr, post, pred in fitted:
        splits, report = (pooled, merged) if pool else inner[key]
        disc = learn(post, splits, report, prior=prior, seed=seed)
        details.setdefault("kappa", {})[key] = disc.kappa
        details.setdefault("calibration", {})[key] = disc.info
        extra = pred.with_extra_sd(_extra_sd(disc, fr, pred.log_mu.shape[0]))
        parts.append(score(extra, fr, quantiles=quantiles, seed=seed))
        predictives[key]["inner"] = inner[key][0]
    return parts


def _extra_sd(disc, fr, n_draws: int) -> np.ndarray:
    """s.d. of δ (n_draws, rows of ``fr``) at each held-out run's distance, with its own family's (κ, γ)."""
    fam = fr["family"].astype(str).to_numpy()
    out = np.zeros((n_draws, len(fr)))
    for f in np.unique(fam):
        m = fam == f
        out[:, m] = disc.at_distance(fr["distance"].to_numpy()[m], n_draws, f)
    return out


def _config(data, law, test, split, holdout_fraction, quantiles, per_family, extrapolation, seed, fit_kwargs) -> dict:
    return {
        "data": data.name,
        "law": law.name,
        "split": split if isinstance(split, str) else "mask",
        "holdout_fraction": float(holdout_fraction),
        "quantiles": [float(q) for q in quantiles],
        "per_family": bool(per_family),
        "extrapolation": extrapolation,
        "seed": int(seed),
        "n_train": int((~test).sum()),
        "n_test": int(test.sum()),
        "fit": {
            k: (
                v.to_dict()
                if isinstance(v, FitSpec)
                else v
                if isinstance(v, int | float | str | bool | type(None))
                else str(v)
            )
            for k, v in fit_kwargs.items()
        },
    }


def _size_ratio(train: ScalingData, frame: pd.DataFrame, col: str) -> np.ndarray:
    """Split value of each held-out run over the largest fitted one of its family (all runs for a new family)."""
    tf = train.frame
    out = np.empty(len(frame))
    fam = frame["family"].astype(str).to_numpy()
    for f in np.unique(fam):
        m = fam == f
        ref = tf.loc[tf["family"] == f, col]
        top = ref.max() if len(ref) else tf[col].max()
        out[m] = frame.loc[m, col].to_numpy() / top
    return out


# ----------------------------------------------------------------------------------------------- tables
COLUMNS = ["n", "coverage", "width", "rel_width", "are", "are_median", "lpd", "max_size_ratio"]


def results_table(results: Mapping[str, BacktestResult], *, by_family: bool = False) -> pd.DataFrame:
    """Side-by-side scores of several backtests (e.g. ``{"Bayes": r1, "Bayes + discrepancy": r2, "Huber
    bootstrap": r3}``): one row per result (× family when ``by_family``), columns n, nominal, coverage, width (nats),
    rel_width, are, are_median, lpd (mean, nats of log loss), max_size_ratio."""
    frames = []
    for name, r in results.items():
        s = r.summary(by_family=by_family)
        s.insert(0, "nominal", r.nominal)
        s.insert(0, "method", name)
        frames.append(s.reset_index())
    df = pd.concat(frames, ignore_index=True)
    if not by_family:
        df = df.drop(columns="family")
        return df.set_index("method")
    return df.set_index(["method", "family"])


def to_markdown(df: pd.DataFrame, *, digits: int = 3) -> str:
    """A GitHub-markdown table of :func:`results_table` (coverage as %, widths and ARE in %, LPD in nats)."""
    d = df.reset_index()
    fmt = {
        "n": lambda v: f"{int(v)}",
        "nominal": lambda v: f"{100 * v:.0f}%",
        "coverage": lambda v: f"{100 * v:.1f}%",
        "width": lambda v: f"{v:.{digits}f}",
        "rel_width": lambda v: f"{100 * v:.1f}%",
        "are": lambda v: f"{100 * v:.2f}%",
        "are_median": lambda v: f"{100 * v:.2f}%",
        "lpd": lambda v: f"{v:.2f}",
        "max_size_ratio": lambda v: f"{v:.1f}x",
    }
    names = {
        "method": "method",
        "family": "family",
        "n": "held out",
        "nominal": "nominal",
        "coverage": "coverage",
        "width": "width (nats)",
        "rel_width": "rel. width",
        "are": "ARE mean",
        "are_median": "ARE median",
        "lpd": "LPD (nats)",
        "max_size_ratio": "max size ratio",
    }
    cols = [c for c in names if c in d.columns]
    lines = ["| " + " | ".join(names[c] for c in cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    for _, row in d.iterrows():
        lines.append("| " + " | ".join(fmt.get(c, str)(row[c]) for c in cols) + " |")
    return "\n".join(lines)


def save_results(results: Mapping[str, BacktestResult], path: str | Path) -> Path:
    """Write summaries, configs and details of several backtests to JSON (read back with :func:`load_table`)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {name: r.to_dict() for name, r in results.items()}
    path.write_text(json.dumps(payload, indent=1, default=float))
    return path


def load_table(path: str | Path, *, by_family: bool = False) -> tuple[pd.DataFrame, str]:
    """(DataFrame, markdown) of the backtests saved by :func:`save_results` at ``path``."""
    payload = json.loads(Path(path).read_text())
    rows = []
    for name, r in payload.items():
        q = r["config"]["quantiles"]
        for s in r["summary"]:
            if by_family or s["family"] == "all":
                rows.append({"method": name, "family": s["family"], "nominal": q[1] - q[0], **s})
    df = pd.DataFrame(rows)
    df = df.set_index(["method", "family"]) if by_family else df.drop(columns="family").set_index("method")
    return df, to_markdown(df)
