"""The numbers behind the report, from a posterior, as arrays and frames (no HTML): compute-optimal plans per draw,
the plan table, the posterior predictive check, the runs' identifying columns, sampler health and which parameters
failed their diagnostics.

Units: N parameters, D tokens, C FLOP, loss nats/token; intervals are the central 90% (5% and 95% quantiles).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np
import pandas as pd

from .. import plan as _plan
from ..data import ScalingData
from ..diagnostics import Diagnostics
from ..predict import qcol
from .page import HI, LO, MID

#: Columns of the fitted frame every run has; any other column is the user's and may identify a run.
STANDARD_COLUMNS = ("N", "D", "C", "U", "loss", "family")


def optimal_draws(post, C, family: str | None) -> dict[str, np.ndarray]:
    """Per-draw compute-optimal ``N``, ``D``, ``D_per_N``, ``L``, ``at_edge`` (S, B) at budgets C (B,) in FLOP,
    from :func:`scalebayes.plan.plan_draws` (its warnings about the search edge are reported in the table)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return _plan.plan_draws(post, np.asarray(C, float), family=family)


def loss_band(post, C, family: str | None, d: dict | None = None) -> np.ndarray:
    """L* at budgets C (B,) in FLOP as (3, B) quantiles (LO, MID, HI) in nats: on a calibrated posterior from
    ``Posterior.plan`` (the law's loss plus the learned model discrepancy beyond the fitted runs), otherwise from
    the per-draw plans ``d`` (:func:`optimal_draws`, computed when not given)."""
    if post.calibrated:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # edge warnings are reported from the per-draw plans
            df = post.plan(np.asarray(C, float), family=family, quantiles=(LO, MID, HI))
        return np.stack([df[f"L_{qcol(q)}"].to_numpy() for q in (LO, MID, HI)])
    d = optimal_draws(post, C, family) if d is None else d
    return np.quantile(d["L"], (LO, MID, HI), axis=0)


def predictive_words(post) -> str:
    """Which predictive the report's loss numbers show, in words."""
    if post.calibrated:
        d = post.discrepancy
        fams = d.info.get("families") or {}
        per = "; ".join(f"{f}: κ ≈ {v['kappa_median']:.3g}, γ ≈ {v['gamma_mode']:g}" for f, v in fams.items())
        scale = (
            f"per family, partially pooled: {per}; a new family κ ≈ {d.kappa:.3g}"
            if per
            else (f"κ ≈ {d.kappa:.3g}, γ ≈ {d.gamma:g}")
        )
        return (
            f"calibrated predictive: besides the parameters' uncertainty the loss carries the law's own error beyond "
            f"the data, δ = κ·d^γ·z at distance d outside the fitted runs ({scale}; "
            "learned from leave-largest-out refits of these runs), as scalebayes predict/plan show it. Every query "
            "shares the draw of z, because the law's error far out is one error, not a new one per run: the queries "
            "beyond the data fall inside or outside their intervals largely together, so a 90% interval means about "
            "9 in 10 analyses like this one, not 9 in 10 of its queries"
        )
    return (
        "parameters only: the posterior is not calibrated, so L* shows the parameters' uncertainty and no model "
        "discrepancy beyond the data (run scalebayes fit without --no-calibrate, or scalebayes.calibrate)"
    )


def plan_frame(post, compute: Sequence[float]) -> pd.DataFrame:
    """The compute-plan table behind the report, every family: columns ``family``, ``C``, then ``<k>_q0.05``,
    ``<k>_q0.5``, ``<k>_q0.95`` for k in N, D, D_per_N, L, and ``at_edge`` (share of draws whose optimum hit the
    search range's edge). The same quantiles as ``Posterior.plan``, computed from the same per-draw plans; only the
    columns a reader of the report needs (no inference-token or epoch columns)."""
    frames = []
    for f in post.families:
        d = optimal_draws(post, compute, f)
        df = pd.DataFrame({"family": f, "C": np.asarray(compute, float)})
        for k in ("N", "D", "D_per_N", "L"):
            qs = loss_band(post, compute, f, d) if k == "L" else np.quantile(d[k], (LO, MID, HI), axis=0)
            for q, row in zip((LO, MID, HI), qs, strict=True):
                df[f"{k}_{qcol(q)}"] = row
        df["at_edge"] = np.asarray(d["at_edge"], float).mean(axis=0)
        frames.append(df)
    return pd.concat(frames, ignore_index=True)


def ppc_stats(post) -> dict:
    """Posterior predictive check numbers: share of runs inside their 50% and 90% predictive intervals (``coverage50``,
    ``coverage90``), ``n`` runs, ``frame`` (the runs with ``pred_median``, ``pred_5%``, ``pred_95%`` in nats) and
    ``outside`` (the runs outside their 90% interval, furthest first, with ``rel`` = observed/median − 1)."""
    if "posterior_predictive" not in post.idata.children:
        post.pointwise()
    pp = post.idata["posterior_predictive"]["log_loss"]
    rep = np.asarray(pp.transpose("chain", "draw", "obs").values)
    rep = rep.reshape(-1, rep.shape[-1])
    obs = np.asarray(post.idata["observed_data"]["log_loss"].values)
    lo90, lo50, med, hi50, hi90 = np.quantile(rep, [0.05, 0.25, 0.5, 0.75, 0.95], axis=0)
    inside90 = (obs >= lo90) & (obs <= hi90)
    frame = post.data.frame.copy()
    frame["pred_median"] = np.exp(med)
    frame["pred_5%"] = np.exp(lo90)
    frame["pred_95%"] = np.exp(hi90)
    outside = frame[~inside90].copy()
    outside["rel"] = outside["loss"] / outside["pred_median"] - 1
    outside = outside.reindex(outside["rel"].abs().sort_values(ascending=False).index)
    return {
        "coverage90": float(inside90.mean()),
        "coverage50": float(((obs >= lo50) & (obs <= hi50)).mean()),
        "n": len(obs),
        "frame": frame,
        "outside": outside,
    }


def id_columns(frame: pd.DataFrame) -> list[str]:
    """The user's own columns of the fitted frame (anything beyond N, D, C, U, loss and family), which name a run
    better than its row number: text columns first, then the rest, in the frame's order."""
    extra = [c for c in frame.columns if c not in STANDARD_COLUMNS and not str(c).startswith("pred_") and c != "rel"]
    text = [c for c in extra if not pd.api.types.is_numeric_dtype(frame[c])]
    return text + [c for c in extra if c not in text]


def failing_parameters(diag: Diagnostics) -> pd.DataFrame:
    """The parameters that failed the diagnostics' thresholds (:meth:`Diagnostics.failing_parameters`)."""
    return diag.failing_parameters()


def sampler_health(post) -> dict:
    """Fractions of sampling iterations that diverged (``divergent``) or hit the maximum tree depth
    (``saturated``: the trajectory was cut short, so the sampler moved less far than NUTS wanted), the
    ``max_tree_depth`` setting and the mean leapfrog ``steps`` per iteration."""
    ss = post.idata["sample_stats"]
    depth_max = int((post.meta.get("sampler") or {}).get("max_tree_depth") or 10)
    div = np.asarray(ss["diverging"].values, bool)
    if "tree_depth" in ss.data_vars:
        depth = np.asarray(ss["tree_depth"].values)
    else:  # a tree of depth d takes 2^d - 1 leapfrog steps
        depth = np.ceil(np.log2(np.asarray(ss["n_steps"].values) + 1))
    return {
        "divergent": float(div.mean()),
        "saturated": float((depth >= depth_max).mean()),
        "max_tree_depth": depth_max,
        "steps": float(np.asarray(ss["n_steps"].values).mean()),
    }


def data_for_plots(post) -> ScalingData:
    """The fitted runs, with the excluded rows' numbers as numbers (a loaded posterior stores them as text), for
    :func:`scalebayes.plots.data_scatter`."""
    data = post.data
    ex = data.excluded
    if ex is None or not len(ex):
        return data
    ex = ex.copy()
    for c in ex.columns:
        if c in ("reason", "family", "row"):
            continue
        num = pd.to_numeric(ex[c], errors="coerce")
        if num.notna().all():
            ex[c] = num
    return ScalingData(frame=data.frame, excluded=ex, name=data.name)


def settings(post) -> dict:
    """The sampler settings of the fit: chains, draws, warmup, target_accept, max_tree_depth and seed."""
    s = post.meta.get("sampler", {}) or {}
    keys = ("chains", "draws", "warmup", "target_accept", "max_tree_depth")
    return {**{k: s.get(k) for k in keys}, "seed": post.meta.get("seed")}


def pair_names(law) -> tuple[str, str]:
    """The two parameters of the report's pair plot: the two exponents of a Chinchilla-form law, else the first
    two parameters."""
    for a, b in (("alpha", "beta"), ("alpha_N", "alpha_D"), ("alpha_1", "alpha_2"), ("E", "alpha"), ("E", "eta")):
        if a in law.params and b in law.params:
            return a, b
    return law.params[0], law.params[1]
