"""Which parameters the runs pin and which the prior sets: posterior contraction per latent and family.

For each sampled latent coordinate (the law's unconstrained parameters: log E, log α, ...; one per family) the
contraction is ``1 − var_posterior / var_prior`` (Schad, Betancourt & Vasishth 2021, "Toward a principled Bayesian
workflow in cognitive science"), with the prior the law's Normal(loc, scale) on that latent. Near 1 the runs decide
the value; near 0 (or below, when a ridge the prior bounds leaves the posterior as wide as the prior) they do not,
and whatever depends on that parameter (an extrapolation in N, when it is α) is the prior's answer, however narrow
the fitted range's own intervals look. The typical cause is a design that cannot separate a term: two model sizes
(the N exponent), one token count per size, or a range too short for the curvature.

Before sampling, :func:`design` reads the same cause off the runs alone: a family whose model sizes (or token
counts) take fewer than three values, or whose token counts vary only together with its model sizes (one token count
per size, D = 20·N, checkpoints at one D), cannot separate the law's N term from its D term, whatever the sampler
does. :func:`warn_if_poor_design` says so in a second instead of after a fit that fails or leans on the prior.

Under partial pooling a family's value is also informed by the other families (through the population), which is
information from data, so it counts as contraction here. This is a description of the posterior, not a failure:
the fit's numbers are right for its prior; the warning says where that prior is doing the work.
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd

from .errors import PriorDominatedWarning
from .model import latent_for

#: An input needs this many distinct values in a family for its power-law term: amplitude and exponent beside the
#: offset E are three numbers, and two sizes give two losses (any exponent fits them, with E moving along).
MIN_DISTINCT = 3
#: Residual s.d. (nats of the log input) of log N given log D, or of log D given log N, below which the two vary
#: only together: over 0.1 nats (a factor 1.1) a term with exponent ~0.3 changes by ~3%, the size of run-to-run
#: noise on log loss, so the runs cannot tell which term moved.
TOGETHER = 0.1
#: Contraction below this is reported: the posterior s.d. is more than 71% of the prior's.
PRIOR_DOMINATED = 0.5


def contraction(post) -> pd.DataFrame:
    """One row per latent and family: ``latent``, ``parameter`` (the published parameter it carries), ``family``,
    ``prior_sd`` and ``posterior_sd`` (latent units), ``contraction`` (1 − posterior variance / prior variance)
    and ``prior_dominated`` (contraction below :data:`PRIOR_DOMINATED`)."""
    priors = post.meta["priors"]["latent"]
    lat = post.idata["latent_posterior"]
    rows = []
    for z in lat.data_vars:
        names = [p for p in post.law.params if latent_for(post.law, p) == z] or [str(z)]
        draws = np.asarray(lat[z].transpose("chain", "draw", "family").values, dtype=float)
        sd = draws.reshape(-1, draws.shape[-1]).std(axis=0)
        prior_sd = float(priors[z][1])
        for f, s in zip(lat["family"].values, sd, strict=True):
            c = 1.0 - (s / prior_sd) ** 2
            rows.append((str(z), "/".join(names), str(f), prior_sd, float(s), float(c), bool(c < PRIOR_DOMINATED)))
    cols = ["latent", "parameter", "family", "prior_sd", "posterior_sd", "contraction", "prior_dominated"]
    return pd.DataFrame(rows, columns=cols)


def message(table: pd.DataFrame) -> str:
    """One line per latent the runs leave to the prior (empty when none), naming the families."""
    lines = []
    bad = table[table["prior_dominated"]]
    for z, g in bad.groupby("latent", sort=False):
        fams = "" if set(g["family"]) == {"all"} else f" in families {', '.join(g['family'])}"
        worst = g.sort_values("contraction").iloc[0]
        lines.append(
            f"the runs barely pin {worst['parameter']}{fams}: posterior s.d. of {z} {worst['posterior_sd']:.3g} "
            f"against the prior's {worst['prior_sd']:.3g} (contraction {worst['contraction']:.2f}); its value, and "
            "any prediction that depends on it, comes mostly from the prior"
        )
    return "\n".join(lines)


def _resid_sd(x: np.ndarray, y: np.ndarray) -> float:
    """Root mean square of x's residuals after a least-squares line in y (x's own s.d. when y is constant)."""
    dx, dy = x - x.mean(), y - y.mean()
    vy = float(dy @ dy)
    r = dx - (float(dx @ dy) / vy) * dy if vy > 0 else dx
    return float(np.sqrt(np.mean(r * r)))


def design(data, law, per_family: bool = True) -> pd.DataFrame:
    """Per family (or, ``per_family=False``, for all runs as family ``"all"``: a law whose parameters every family
    shares) and input of the law among N and D (only when it has both): ``runs``; ``distinct`` values of the input
    (values within 1% of each other count once); ``alone_sd``, the s.d. (nats) of its log left after a line in the
    other input's log, i.e. how far it varies on its own; and ``reason``, empty when the runs can pin that input's
    term (see :data:`MIN_DISTINCT`, :data:`TOGETHER`). ``data``: :class:`~scalebayes.data.ScalingData`; ``law``: a
    :class:`~scalebayes.laws.Law`."""
    cols = ["family", "input", "runs", "distinct", "alone_sd", "reason"]
    if not {"N", "D"} <= set(law.inputs):
        return pd.DataFrame(columns=cols)
    logs = data.log_inputs()
    fam = data.frame["family"].to_numpy() if per_family else np.full(len(data), "all")
    other = {"N": "D", "D": "N"}
    rows = []
    for f in pd.unique(fam):
        m = fam == f
        together = False  # a pair that moves together is said once, on N (the first input)
        for k in ("N", "D"):
            x, y = logs[k][m], logs[other[k]][m]
            k_distinct = len(np.unique(np.round(x, 2)))  # values 1% apart or less count once
            sd = _resid_sd(x, y)
            reason = ""
            if k_distinct < MIN_DISTINCT:
                reason = f"only {k_distinct} distinct value{'s' if k_distinct > 1 else ''} of {k}"
            elif sd < TOGETHER and not together:
                together = True
                reason = f"{k} varies only together with {other[k]} (s.d. of log {k} beyond log {other[k]}: {sd:.3f})"
            rows.append((str(f), k, int(m.sum()), k_distinct, sd, reason))
    return pd.DataFrame(rows, columns=cols)


def _runs(n: int) -> str:
    return f"{n} run{'s' if n != 1 else ''}"


def design_message(table: pd.DataFrame, pooled: bool = False) -> str:
    """One line per family whose runs cannot pin a term of the law (empty when none)."""
    lines = []
    rest = "the other families and the prior" if pooled else "the prior"
    for f, g in table[table["reason"] != ""].groupby("family", sort=False):
        who = "" if f == "all" else f"family {f!r}: "
        lines.append(
            f"{who}{'; '.join(g['reason'])} in {_runs(int(g['runs'].iloc[0]))}: these runs alone cannot separate the "
            f"law's N and D terms, so {rest} will set that split (and any prediction that depends on it)"
        )
    return "\n".join(lines)


def design_for(data, spec) -> str:
    """:func:`design_message` for the model ``spec`` (:class:`~scalebayes.model.Spec`): per family unless every
    latent is shared, naming the other families as a source when some latent is partially pooled."""
    per_family = any(m != "shared" for m in spec.modes)
    pooled = any(m not in ("shared", "free") for m in spec.modes)
    return design_message(design(data, spec.law, per_family), pooled)


def warn_if_poor_design(data, spec, what: str, stacklevel: int = 3) -> None:
    """A :class:`~scalebayes.errors.PriorDominatedWarning` before sampling when :func:`design_for` flags a family."""
    text = design_for(data, spec)
    if text:
        warnings.warn(f"{what}: {text}", PriorDominatedWarning, stacklevel=stacklevel)


def warn_if_prior_dominated(table: pd.DataFrame, what: str, stacklevel: int = 3) -> None:
    """A :class:`~scalebayes.errors.PriorDominatedWarning` naming the latents the runs leave to the prior."""
    text = message(table)
    if text:
        warnings.warn(f"{what}: {text}", PriorDominatedWarning, stacklevel=stacklevel)
