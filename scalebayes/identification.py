"""Which parameters the runs pin and which the prior sets: posterior contraction per latent and family.

For each sampled latent coordinate (the law's unconstrained parameters: log E, log α, ...; one per family) the
contraction is ``1 − var_posterior / var_prior`` (Schad, Betancourt & Vasishth 2021, "Toward a principled Bayesian
workflow in cognitive science"), with the prior the law's Normal(loc, scale) on that latent. Near 1 the runs decide
the value; near 0 (or below, when a ridge the prior bounds leaves the posterior as wide as the prior) they do not,
and whatever depends on that parameter (an extrapolation in N, when it is α) is the prior's answer, however narrow
the fitted range's own intervals look. The typical cause is a design that cannot separate a term: two model sizes
(the N exponent), one token count per size, or a range too short for the curvature.

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


def warn_if_prior_dominated(table: pd.DataFrame, what: str, stacklevel: int = 3) -> None:
    """A :class:`~scalebayes.errors.PriorDominatedWarning` naming the latents the runs leave to the prior."""
    text = message(table)
    if text:
        warnings.warn(f"{what}: {text}", PriorDominatedWarning, stacklevel=stacklevel)
