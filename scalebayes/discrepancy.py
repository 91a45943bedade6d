"""The model-discrepancy term of calibrated extrapolation: its geometry, its value and where it is stored.

Why. A posterior of one functional form is honest about parameter uncertainty *given the form*, but the form itself
is only an approximation: curvature the law lacks is invisible inside the fitted range and grows with every e-fold
beyond it. A new run's log loss is therefore modelled as

    log L = log L_law(x; θ) + ε + δ(x),   ε ~ StudentT(ν, 0, σ) (the fit's noise),   δ(x) = κ·d(x)^γ·z,   z ~ N(0, 1),

where d(x) is the *extrapolation distance* of the query x (nats of log input), κ the scale (nats of log loss at one
nat of distance, ≈ relative loss error) and γ its growth with distance; (κ, γ) are drawn from a posterior learned
by :func:`scalebayes.calibration.calibrate` (:mod:`scalebayes.formerror`), one pair per posterior draw, so their
uncertainty is integrated, not plugged in. Inside the fitted runs d = 0 and the predictive is exactly the fit's.

Distance. One definition everywhere, for learning κ and for predicting: d(x) is the distance of x outside the convex
hull, in the law's log inputs, of the fitted runs *of the query's family* (the largest violated facet,
max(0, max_f n_f·x + b_f): exact off a facet, a slight underestimate off a vertex). A family with no fitted runs
(a new family drawn from the population) has no hull of its own: its distance is the largest over the fitted
families', i.e. max(0, max over every family's facets), so it is never less than that of any fitted family at the
same point. κ is learned with each held-out run's own-family distance, and a held-out family not in the inner fit
gets the same "largest over families" distance, so learning and prediction measure d the same way.

Joint draws. δ is one standard normal z per posterior draw, scaled by κ·d(x)^γ at each query: perfectly correlated
along every query of one prediction. The marginal at each query is the same as with independent draws, but joint
draws stay meaningful: the difference of two far queries at equal distance gets no spurious variance 2κ²d², and a
curve drawn per posterior draw stays a smooth curve. The form error it stands for is one smooth error of the law, not
noise that changes from one query to the next; a perfectly correlated z is the simplest such model (it over-states
the correlation of queries far apart in different directions, which only matters for joint questions about them).

Storage. A :class:`Discrepancy` is stored as JSON in the posterior DataTree's attributes (:data:`ATTR`), so saving
and loading a calibrated posterior keeps it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field

import jax.numpy as jnp
import numpy as np
import pandas as pd
from scipy.spatial import ConvexHull, QhullError

#: Key of the calibration in the posterior DataTree's attributes.
ATTR = "scalebayes_discrepancy"


# ----------------------------------------------------------------------------------------------- geometry
def region(log_x: Mapping[str, np.ndarray], inputs: Sequence[str]) -> dict:
    """The convex hull of fitted runs in log-input space, as half-spaces ``normals @ x + offsets <= 0`` (unit normals).

    ``log_x`` maps each law input to the natural logs of the fitted runs' values (n,). Inputs that are constant over
    the runs get a two-sided bound; one varying input is an interval; two or more use Qhull (falling back to the
    bounding box, plus the bound on the sum of the logs, if the runs are degenerate, e.g. collinear).
    """
    inputs = list(inputs)
    X = np.column_stack([np.asarray(log_x[k], float) for k in inputs])
    k = X.shape[1]
    var = np.ptp(X, axis=0) > 1e-9
    rows, offs = [], []
    for j in np.flatnonzero(~var):  # constant input: x_j = c
        e = np.zeros(k)
        e[j] = 1.0
        rows += [e, -e]
        offs += [-X[0, j], X[0, j]]
    idx = np.flatnonzero(var)
    facets = _hull_facets(X, idx, k) if len(idx) >= 2 and len(X) > len(idx) else None
    if facets is None:
        facets = _box_facets(X, idx, k)
    rows += facets[0]
    offs += facets[1]
    return {"inputs": inputs, "normals": np.asarray(rows).tolist(), "offsets": np.asarray(offs).tolist()}


def _hull_facets(X: np.ndarray, idx: np.ndarray, k: int):
    try:
        h = ConvexHull(X[:, idx])
    except (QhullError, ValueError):  # degenerate runs (collinear, too few): the caller falls back to the box
        return None
    rows = []
    for eq in h.equations:  # unit normal (len(idx)), offset
        e = np.zeros(k)
        e[idx] = eq[:-1]
        rows.append(e)
    return rows, [float(eq[-1]) for eq in h.equations]


def _box_facets(X: np.ndarray, idx: np.ndarray, k: int):
    rows, offs = [], []
    for j in idx:
        e = np.zeros(k)
        e[j] = 1.0
        rows += [e, -e]
        offs += [-X[:, j].max(), X[:, j].min()]
    if len(idx) >= 2:
        e = np.zeros(k)
        e[idx] = 1.0 / np.sqrt(len(idx))
        rows.append(e)
        offs.append(-(X[:, idx] @ e[idx]).max())
    return rows, offs


def facet_distance(normals, offsets, X):
    """max(0, max_f normals_f·x + offsets_f) over the last axis of ``X`` (..., k): nats of log input, shape (...).

    ``jax.numpy``, so it runs inside jitted planners; NumPy arrays are accepted."""
    return jnp.maximum(0.0, jnp.max(X @ jnp.asarray(normals).T + jnp.asarray(offsets), axis=-1))


def grown(d, gamma):
    """d^γ (distance grown by the exponent γ; 0 at d = 0) with a finite gradient at d = 0, where d^γ has none for
    γ < 1. ``jax.numpy``, so planners can differentiate it; NumPy arrays are accepted."""
    return jnp.where(d > 0, jnp.maximum(d, 1e-30) ** gamma, 0.0)


def distance(reg: Mapping, log_x: Mapping[str, np.ndarray]) -> np.ndarray:
    """Distance (nats of log input) of query points outside one :func:`region`, (P,). ``log_x`` maps each input to
    (P,) query log values."""
    X = np.column_stack([np.atleast_1d(np.asarray(log_x[k], float)) for k in reg["inputs"]])
    return np.asarray(facet_distance(np.asarray(reg["normals"], float), np.asarray(reg["offsets"], float), X))


def fitted_regions(data, law) -> dict[str, dict]:
    """:func:`region` of every family's fitted runs (the law's log inputs), keyed by family name."""
    li = data.log_inputs()
    fam = np.asarray(data.frame["family"], dtype=str)
    out = {}
    for f in data.families:
        m = fam == str(f)
        if m.any():
            out[str(f)] = region({k: li[k][m] for k in law.inputs}, law.inputs)
    return out


def facets(regions: Mapping[str, dict], family: str | None) -> tuple[np.ndarray, np.ndarray]:
    """(normals (H, k), offsets (H,)) measuring the distance of ``family``: its own region's facets, or, for a family
    with no fitted runs (None or not in ``regions``), every region's together (the largest distance over families)."""
    chosen = [regions[family]] if family is not None and family in regions else list(regions.values())
    A = np.concatenate([np.asarray(r["normals"], float).reshape(-1, len(r["inputs"])) for r in chosen])
    b = np.concatenate([np.asarray(r["offsets"], float) for r in chosen])
    return A, b


def distances(regions: Mapping[str, dict], frame: pd.DataFrame, law) -> np.ndarray:
    """Distance of each run of ``frame`` (columns of the law's inputs and ``family``) outside the fitted runs of its
    family (see the module docstring for families with none), shape (P,)."""
    fam = frame["family"].astype(str).to_numpy()
    out = np.zeros(len(frame))
    for f in np.unique(fam):
        m = fam == f
        A, b = facets(regions, f)
        X = np.column_stack([np.log(frame.loc[m, k].to_numpy(dtype=float)) for k in law.inputs])
        out[m] = np.asarray(facet_distance(A, b, X))
    return out


# ----------------------------------------------------------------------------------------------- the value
@dataclass
class Discrepancy:
    """A calibrated discrepancy: at distance d outside the fitted runs, δ has s.d. κ·d^γ, with (κ, γ) drawn from
    their calibration posterior, one pair per posterior draw (:mod:`scalebayes.formerror`).

    Attributes:
        kappa: posterior median of κ (nats of log loss at one nat of log-input distance), for display.
        regions: per fitted family, the :func:`region` of its runs (the law's log inputs).
        info: how (κ, γ) were learned (inner splits, lanes left out, prior, held-out runs).
        gamma: the most probable growth exponent γ, for display.
        kappa_draws, gamma_draws: draws of (κ, γ) from their posterior (equal lengths); posterior draw s uses pair
            s mod their length. Empty: κ fixed at ``kappa`` and γ at ``gamma`` (files of earlier versions). With
            several fitted families these are a *new* family's (the population's), and ``family_draws`` holds each
            fitted family's own.
        family_draws: per fitted family, ``{"kappa": [...], "gamma": [...]}``, its own (partially pooled) draws of
            (κ, γ) (:class:`scalebayes.formerror.FamilyKappas`); empty for one family (``kappa_draws`` are its own).
    """

    kappa: float
    regions: dict[str, dict]
    info: dict = field(default_factory=dict)
    gamma: float = 1.0
    kappa_draws: list[float] = field(default_factory=list)
    gamma_draws: list[float] = field(default_factory=list)
    family_draws: dict[str, dict[str, list[float]]] = field(default_factory=dict)

    def scales(self, n_draws: int, family: str | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(κ_s, γ_s) of ``family`` (None or a name without draws of its own: a new family) for posterior draws
        s = 0 … n_draws − 1, each (n_draws,)."""
        own = self.family_draws.get(family) if family is not None else None
        kappa, gamma = (own["kappa"], own["gamma"]) if own else (self.kappa_draws, self.gamma_draws)
        if not kappa:
            return np.full(n_draws, float(self.kappa)), np.full(n_draws, float(self.gamma))
        i = np.arange(n_draws) % len(kappa)
        return np.asarray(kappa, float)[i], np.asarray(gamma, float)[i]

    def at_distance(self, d: np.ndarray, n_draws: int, family: str | None = None) -> np.ndarray:
        """s.d. of δ (nats of log loss), (n_draws, P), at distances ``d`` (P,) (nats of log input) for ``family``."""
        k, g = self.scales(n_draws, family)
        return k[:, None] * np.asarray(grown(np.asarray(d, float)[None, :], g[:, None]))

    def sd(self, log_x: Mapping[str, np.ndarray], n_draws: int, family: str | None = None) -> np.ndarray:
        """s.d. of δ, (n_draws, P), at query points with log inputs ``log_x`` (each (P,)) for ``family`` (None or a
        name without fitted runs: a new family)."""
        A, b = facets(self.regions, family)
        inputs = next(iter(self.regions.values()))["inputs"]
        X = np.column_stack([np.atleast_1d(np.asarray(log_x[k], float)) for k in inputs])
        return self.at_distance(np.asarray(facet_distance(A, b, X)), n_draws, family)

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, s: str) -> Discrepancy:
        d = json.loads(s)
        # "*" (all runs) was stored by earlier versions for new families; they now use every family's facets
        regions = {k: v for k, v in d["regions"].items() if k != "*"} or d["regions"]
        return cls(
            kappa=float(d["kappa"]),
            regions=regions,
            info=d.get("info", {}),
            gamma=float(d.get("gamma", 1.0)),
            kappa_draws=[float(v) for v in d.get("kappa_draws", [])],
            gamma_draws=[float(v) for v in d.get("gamma_draws", [])],
            family_draws={
                str(f): {k: [float(v) for v in fd[k]] for k in ("kappa", "gamma")}
                for f, fd in d.get("family_draws", {}).items()
            },
        )


def stored(idata) -> Discrepancy | None:
    """The calibration stored in a posterior DataTree (by :func:`scalebayes.calibration.calibrate`), or None."""
    s = idata.attrs.get(ATTR)
    return Discrepancy.from_json(s) if s else None


def attached(idata, disc: Discrepancy):
    """A shallow copy of the DataTree ``idata`` carrying ``disc`` in its attributes; ``idata`` itself is unchanged."""
    out = idata.copy(deep=False)
    out.attrs = {**dict(idata.attrs), ATTR: disc.to_json()}
    return out
