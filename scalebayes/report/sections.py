"""The report's sections, each a function from the fit (a :class:`Context`) to a :class:`~.page.Section` of blocks.

Law-specific words (the formula, what each parameter means, published reference points) come from the
:class:`~scalebayes.laws.Law`, so a law a user registers gets the same report, with generic text where it declares
nothing. Units: N parameters, D tokens, C = 6·N·D FLOP, loss nats/token; intervals are the central 90%.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .. import plots
from ..diagnostics import ESS_MIN, RHAT_MAX, Diagnostics, advice
from ..identification import PRIOR_DOMINATED
from ..misfit import SCATTER, SCATTER_RATIO, per_bin
from ..predict import qcol
from . import numbers
from .page import HI, LO, MID, Box, Figure, Html, Items, Para, Pre, Row, Section, Table, esc, figure, fmt, h
from .page import fmt_interval as fmt_iv

#: At most this many families get their own figures (the tables always cover every family).
MAX_FAMILY_FIGURES = 3
times = plots.times


@dataclass
class Context:
    """What every section reads: the posterior, the output folder, the extrapolation factors (multiples of the
    data's largest compute), the plan budgets (FLOP), the command line, and the problems met so far."""

    post: object
    out: Path
    factors: list[float]
    compute: list[float]
    command: str | None = None
    problems: list[str] = field(default_factory=list)

    @property
    def fams(self) -> list[str]:
        return list(self.post.families)

    @property
    def drawn(self) -> list[str]:
        """The families that get their own figures."""
        return self.fams[:MAX_FAMILY_FIGURES]

    @property
    def multi(self) -> bool:
        return len(self.fams) > 1

    @property
    def kind(self) -> str | None:
        return plots.scale_kind(self.post.law)

    @property
    def c_max(self) -> float:
        return float(self.post.data.frame["C"].max())

    @property
    def data_name(self) -> str:
        return str(self.post.meta.get("data_name", "data"))

    def figure(self, make: Callable[[], object], alt: str, caption: str) -> Figure:
        return figure(make, alt, caption, self.problems)

    def guarded(self, what: str, build: Callable[[], list]) -> list:
        """``build()``'s blocks, or a visible error note when it fails (the rest of the page is still written)."""
        try:
            return build()
        except Exception as e:  # one failing table must not lose the report
            msg = f"{what} could not be computed: {type(e).__name__}: {e}"
            self.problems.append(msg)
            warnings.warn(msg, stacklevel=2)
            return [Para(msg, "err")]

    def who(self, family: str) -> Html:
        """``<b>Family f.</b> `` with several families, else nothing."""
        return h("<b>Family {}.</b> ", family) if self.multi else Html("")


def _for(ctx: Context, what: str, family: str) -> str:
    return what if not ctx.multi else f"{what} for {family}"


# ---------------------------------------------------------------------------------------------------- summary
def diagnostics_box(diag: Diagnostics, health: dict | None = None) -> Box:
    """The box that states plainly whether the sampler's diagnostics passed; if not, which parameters failed and
    what to try (in Python and command-line terms). ``health``: :func:`~.numbers.sampler_health`."""
    extra = _health_words(health) if health else Html("")
    if diag.extensions:  # its note says by how much; these numbers are of all the draws
        extra = extra + h(" Note: {}; the numbers above judge all the draws.", diag.notes[-1])
    if diag.ok:
        return Box(
            "ok",
            [
                Para(
                    h(
                        "<b>Sampler diagnostics passed.</b> Every parameter has R-hat ≤ {} (worst {}), bulk and tail "
                        "effective sample size ≥ {} (worst {} / {}) and there were no divergent transitions: the draws "
                        "can be trusted to represent the posterior. ",
                        RHAT_MAX,
                        f"{diag.r_hat_max:.4f}",
                        ESS_MIN,
                        f"{diag.ess_bulk_min:.0f}",
                        f"{diag.ess_tail_min:.0f}",
                    )
                    + extra
                )
            ],
        )
    tips = advice(diag)
    blocks = [Items(list(diag.failures))]
    failing = numbers.failing_parameters(diag)
    if len(failing):
        blocks.append(Para(h("Parameters that failed ({} of {}):", len(failing), len(diag.table))))
        blocks.append(_failing_table(failing))
    blocks.append(
        Para(
            h(
                "Thresholds: R-hat ≤ {}, bulk and tail ESS ≥ {}, no divergences. The chains may not have converged "
                "or mixed, so intervals can be too narrow or off-centre. ",
                RHAT_MAX,
                ESS_MIN,
            )
            + extra
            + (h("<b>Try:</b> {}. ", tips) if tips else Html(""))
            + Html(
                "On the command line: raise <code>--warmup</code>/<code>--draws</code> (or <code>--chains</code>), "
                "or <code>--target-accept</code> when there are divergences."
            )
        )
    )
    return Box("fail", blocks, head="⚠ Sampler diagnostics FAILED — do not trust these results as they are.")


def _failing_table(failing, limit: int = 12) -> Table:
    rows = [
        [h("<code>{}</code>", name), r["fails"], fmt(r["r_hat"], 4), fmt(r["ess_bulk"], 3), fmt(r["ess_tail"], 3)]
        for name, r in failing.head(limit).iterrows()
    ]
    if len(failing) > limit:
        rows.append([f"… and {len(failing) - limit} more (section 3 lists every one)", "", "", "", ""])
    return Table(["parameter", "failed", "R-hat", "bulk ESS", "tail ESS"], rows, "small")


def _health_words(health: dict) -> Html:
    """Divergences and tree-depth saturation as fractions of the sampling iterations."""
    sat = health["saturated"]
    words = h(
        "{}% of iterations diverged; {}% hit the maximum tree depth ({}), mean {} leapfrog steps per iteration.",
        f"{100 * health['divergent']:.3g}",
        f"{100 * sat:.3g}",
        health["max_tree_depth"],
        f"{health['steps']:.0f}",
    )
    if sat > 0.05:  # a few saturated iterations are harmless; many mean the trajectories were cut short
        words += Html(
            " <span class='bad'>Trajectories were often cut short</span>: the posterior is hard to traverse "
            "(strong curvature or correlation); raise <code>max_tree_depth</code> (<code>--max-tree-depth</code>) "
            "or simplify the model (share parameters across families)."
        )
    return words + Html(" ")


def _pooling_words(post) -> str:
    modes = list(post.spec.modes)
    if len(post.families) == 1:
        return "one family (no pooling needed)"
    if sorted(set(modes)) in (["partial"], ["centred"]):
        return (
            "partial pooling: every parameter varies by family around a population value, shrunk towards it as far "
            "as the data allow"
        )
    parts = [f"{z}: {m}" for z, m in zip(post.law.latents, modes, strict=True)]
    return (
        "per-parameter pooling (" + ", ".join(parts) + "; shared = one value for all families, partial = varies "
        "around a population value, free = independent per family)"
    )


def _headline(ctx: Context) -> Box:
    """The answer most readers came for: the compute-optimal plan at the furthest extrapolation target, per family."""
    post, c_max = ctx.post, ctx.c_max
    fac = max(ctx.factors) if ctx.factors else 1.0
    lines = []
    for f in ctx.drawn:
        d = numbers.optimal_draws(post, [c_max, c_max * fac], f)
        q = {k: np.quantile(d[k], [LO, MID, HI], axis=0) for k in ("N", "D", "D_per_N")}
        q["L"] = numbers.loss_band(post, [c_max, c_max * fac], f, d)
        lines.append(
            (h("<b>{}</b>: ", f) if ctx.multi else Html(""))
            + h(
                "the compute-optimal model has <b>N* = {}</b> parameters trained on <b>D* = {}</b> tokens ({} tokens "
                "per parameter) and is predicted to reach <b>L* = {}</b> nats/token (at the data's largest compute: "
                "L* = {}).",
                fmt_iv(q["N"][1, 1], q["N"][0, 1], q["N"][2, 1]),
                fmt_iv(q["D"][1, 1], q["D"][0, 1], q["D"][2, 1]),
                fmt(q["D_per_N"][1, 1], 3),
                fmt_iv(q["L"][1, 1], q["L"][0, 1], q["L"][2, 1], 4),
                fmt_iv(q["L"][1, 0], q["L"][0, 0], q["L"][2, 0], 4),
            )
        )
    head = h(
        "<b>Headline.</b> At {} the largest compute in the data (C = {} FLOP; the data reach {} FLOP)",
        times(fac),
        fmt(c_max * fac, 3),
        fmt(c_max, 3),
    )
    words = h("Loss intervals: {}.", numbers.predictive_words(post))
    prior_set = sorted(set(post.contraction.loc[post.contraction["prior_dominated"], "parameter"]))
    if prior_set:  # a headline resting on a prior says so where it is read, not only in section 2
        words = words + h(
            " Caution: the runs barely pin {}, so these numbers rest largely on {} prior (section 2, Parameters set "
            "by the prior).",
            ", ".join(prior_set),
            "its" if len(prior_set) == 1 else "their",
        )
    which = Para(words, "note")
    if len(lines) == 1:
        return Box("key", [Para(head + Html(", ") + lines[0]), which])
    more = (
        h(" (the first {} of {} families; section 6 has all)", len(lines), len(ctx.fams))
        if ctx.multi and len(ctx.fams) > len(lines)
        else Html("")
    )
    return Box("key", [Para(head + more + Html(":")), Items(lines), which])


def _failed_headline(ctx: Context) -> Box:
    """Under failed diagnostics the headline is the failure and what to do, not numbers far beyond the data."""
    return Box(
        "fail",
        [
            Para(
                Html(
                    "<b>No headline numbers: the sampler's diagnostics failed</b> (listed above), so the posterior "
                    "below may not be the posterior of this model. Rerun the fit with the changes suggested above "
                    "and check that this banner turns green before using any interval on this page. "
                )
                + h(
                    "The plan and extrapolation sections still show numbers (out to {} the data's largest compute) to "
                    "help diagnose the fit; they are not recommendations.",
                    times(max(ctx.factors, default=1.0)),
                )
            )
        ],
    )


def summary(ctx: Context) -> Section:
    """What was fitted, whether the sampler can be trusted, and the headline answer (or, failing, what to do)."""
    post, law = ctx.post, ctx.post.law
    st = numbers.settings(post)
    diag = post.diagnostics
    fam_words = (
        h("{} families ({}), {}", len(ctx.fams), ", ".join(ctx.fams), _pooling_words(post))
        if ctx.multi
        else Html("one family")
    )
    lik = "Student-t (robust to a few outlying runs)" if post.spec.likelihood == "student_t" else "Gaussian"
    if post.noise_trend:
        zeta = np.quantile(post.run_noise(post.families[0]).trend, [0.05, 0.5, 0.95])
        lik += (
            ", its scale changing with tokens per parameter as (D/N)^ζ, "
            f"ζ = {zeta[1]:.2f} [{zeta[0]:.2f}, {zeta[2]:.2f}] (negative: under-trained runs scatter more)"
        )
        if not post.spec.noise_trend:
            lik += (
                "; the law was fitted with one noise scale and a new run's noise (σ, ζ, ν) refitted to its residuals "
                "afterwards (noise_trend='tokens_per_parameter_cut'), so the trend widens or narrows intervals "
                "without moving the law"
            )
    intro = h(
        "This page fits the <b>{}</b> scaling law, <b>{}</b>, to <b>{} training runs</b> from <code>{}</code> in {}. "
        "The fit is Bayesian: the No-U-Turn sampler (NUTS) drew {} chains × {} draws after {} warm-up iterations "
        "(seed {}), {} posterior draws in all. The noise model is {} on log loss. Every number below is a posterior "
        "quantity: a median with its 90% credible interval [5%, 95%] in brackets unless stated otherwise.",
        law.name,
        Html(law.formula_html),
        len(post.data.frame),
        ctx.data_name,
        fam_words,
        st["chains"],
        post.posterior.sizes["draw"],
        st["warmup"],
        st["seed"],
        post.n_samples,
        lik,
    )
    units = h(
        "Units: N = parameters, D = training tokens, C = 6·N·D = training FLOP, loss and L in nats per token. "
        "Law reference: {}",
        law.reference or "none given",
    )
    blocks = [Para(intro), Para(units, "note"), diagnostics_box(diag, numbers.sampler_health(post))]
    if not diag.ok:
        blocks.append(_failed_headline(ctx))
    elif ctx.kind == "optimal":
        blocks += ctx.guarded("headline", lambda: [_headline(ctx)])
    return Section("summary", "Summary", "Summary", blocks)


# ---------------------------------------------------------------------------------------------------- data
def _data_table(ctx: Context) -> Table:
    fr = ctx.post.data.frame
    rows = []
    for f in ctx.fams:
        s = fr[fr["family"] == f]
        span = [(s[k].min(), s[k].max()) for k in ("N", "D")] + [((s["D"] / s["N"]).min(), (s["D"] / s["N"]).max())]
        span += [(s["C"].min(), s["C"].max())]
        cells = [Html(f"{fmt(a, 2)} – {fmt(b, 2)}") for a, b in span]
        loss = Html(f"{fmt(s['loss'].min(), 3)} – {fmt(s['loss'].max(), 3)}")
        rows.append([f if ctx.multi else "all runs", str(len(s)), *cells, loss])
    return Table(["family", "runs", "N (params)", "D (tokens)", "D/N", "C (FLOP)", "loss (nats)"], rows, "data")


def _text(v) -> Html:
    """A text cell, a missing value as a dash."""
    return Html("–") if v is None or (isinstance(v, float) and np.isnan(v)) else esc(v)


def _excluded_blocks(ctx: Context, limit: int = 50) -> list:
    ex = ctx.post.data.excluded
    if ex is None or not len(ex):
        return [Para("No rows were excluded.")]
    shown = ex.head(limit)
    cols = [c for c in shown.columns if c not in ("index", "row")]
    # numbers to 4 figures; text (family labels such as "01", reasons) exactly as written
    cell = {c: (lambda v: fmt(v, 4)) if getattr(shown[c].dtype, "kind", "O") in "iuf" else _text for c in cols}
    rows = [[r["row"] if "row" in shown.columns else i] + [cell[c](r[c]) for c in cols] for i, r in shown.iterrows()]
    blocks = [
        Para(h("<b>{} row(s) of the input were excluded</b> before fitting (never silently):", len(ex))),
        Table(["row", *cols], rows, "small"),
    ]
    if len(ex) > limit:
        blocks.append(Para(f"… and {len(ex) - limit} more."))
    return blocks


def data(ctx: Context) -> Section:
    """The runs that were fitted: ranges per family, excluded rows, and a figure of the design."""
    n_ex = len(ctx.post.data.excluded)
    caption = (
        "Every training run as a point: its model size N against its training compute C = 6·N·D, coloured by its "
        "final loss (one colour scale for all)"
        + ("; one panel per family, on shared axes" if ctx.multi else "")
        + ". At one compute, a higher point is a bigger model trained on fewer tokens."
        + (" Red crosses are rows excluded before fitting (listed above)." if n_ex else "")
        + " Predictions outside this cloud of points are extrapolations."
    )
    blocks = [
        Para(
            "The training runs that were fitted, one row per family. D/N is tokens per parameter "
            "(Chinchilla-optimal training is about 20)."
        ),
        _data_table(ctx),
        *_excluded_blocks(ctx),
        ctx.figure(
            lambda: plots.data_scatter(numbers.data_for_plots(ctx.post)),
            "the runs: model size against compute, coloured by loss",
            caption,
        ),
    ]
    return Section("data", "1. Data", "Data", blocks)


# ---------------------------------------------------------------------------------------------------- fit
def _fit_figures(ctx: Context, f: str) -> Row:
    """The fitted law against one family's runs: loss against compute at the run sizes, and isoFLOP curves."""
    post = ctx.post
    s = post.data.frame[post.data.frame["family"] == f]
    levels = [c for c, _ in plots.data_levels(s["C"].to_numpy())] or None
    curves = ctx.figure(
        lambda: plots.readable(plots.fit_curves(post, family=f)),
        _for(ctx, "fitted law: loss against compute at the model sizes of the runs", f),
        ctx.who(f)
        + Html(
            "<b>Loss against compute.</b> Each coloured curve follows one model size N of the runs as its training "
            "tokens grow, over the tokens those runs were trained on; the runs are coloured by their own N on the "
            "same scale. The dashed black curve is the compute-optimal loss L*(C), which the runs approach from above."
        ),
    )
    iso = ctx.figure(
        lambda: plots.readable(plots.isoflop(post, C=levels, family=f)),
        _for(ctx, "isoFLOP curves", f),
        ctx.who(f)
        + Html(
            "<b>IsoFLOP view.</b> Each curve is the law's loss against model size N at one fixed training compute C "
            "(D = C/(6N)), at compute levels where runs cluster; the runs within ×1.25 of that compute share its "
            "colour. The star marks the compute-optimal size N* (median, 90% interval as a bar): the valley's bottom."
        ),
    )
    return Row([curves, iso])


def fit(ctx: Context) -> Section:
    """The fitted law drawn against the runs, per family (at most :data:`MAX_FAMILY_FIGURES`)."""
    law, kind = ctx.post.law, ctx.kind
    if kind == "optimal":
        blocks = [
            Para(
                "The fitted law against the runs, in two views. Everywhere, a line is the posterior median of the "
                "law's loss, the darker band its 50% and the lighter band its 90% credible interval: uncertainty "
                "about the law's parameters, without run-to-run noise (section 4 adds that noise)."
            )
        ]
        blocks += [_fit_figures(ctx, f) for f in ctx.drawn]
        if len(ctx.fams) > MAX_FAMILY_FIGURES:
            blocks.append(Para(f"Figures are drawn for the first {MAX_FAMILY_FIGURES} families.", "note"))
    elif kind is not None:
        caption = h(
            "The runs (black) and the fitted law's loss against {}: posterior median (line), 50% and 90% credible "
            "bands of the law itself (parameter uncertainty, without run-to-run noise).{}",
            kind,
            " One panel per family." if ctx.multi else "",
        )
        blocks = [ctx.figure(lambda: plots.one_input(ctx.post, families=ctx.drawn), "fitted law per family", caption)]
    else:
        blocks = [
            Para(
                h(
                    "The {} law has inputs {}; see the residuals and the predictive check in section 4 for how it fits "
                    "each run.",
                    law.name,
                    ", ".join(law.inputs),
                )
            )
        ]
    return Section(
        "fit", "2. Fitted law", "Fitted law", [*blocks, misfit_box(ctx.post.misfit), prior_box(ctx.post.contraction)]
    )


def prior_box(table) -> Box:
    """Which parameters the runs pin and which the prior still sets (:mod:`scalebayes.identification`): green
    with the smallest contraction when every one is pinned, red naming the others."""
    low = table.sort_values("contraction").iloc[0]
    if not table["prior_dominated"].any():
        text = h(
            "<b>The runs pin every parameter.</b> Each posterior is narrower than its prior (contraction, 1 − "
            "posterior/prior variance, at least {}; lowest {}, for {}), so the fitted values come from the runs, not "
            "from the priors.",
            PRIOR_DOMINATED,
            fmt(low["contraction"], 2),
            low["parameter"],
        )
        return Box("ok", [Para(text)])
    rows = [
        [
            esc(r["parameter"]),
            esc(r["family"]),
            fmt(r["prior_sd"], 3),
            fmt(r["posterior_sd"], 3),
            fmt(r["contraction"], 2),
        ]
        for _, r in table[table["prior_dominated"]].iterrows()
    ]
    text = (
        "The runs barely narrow these parameters: their posteriors are about as wide as their priors (contraction "
        f"below {PRIOR_DOMINATED}), so their values, and every prediction that leans on them, come mostly from the "
        "prior. The usual cause is a design that cannot separate a term (two model sizes leave the N exponent to "
        "the prior). Intervals that depend on them are the prior's intervals: add runs that vary that input, or "
        "state the prior you mean (priors=...)."
    )
    table_ = Table(["parameter", "family", "prior s.d.", "posterior s.d.", "contraction"], rows, "small")
    return Box("fail", [Para(text), table_], head="⚠ Parameters set by the prior")


def misfit_box(m) -> Box:
    """Whether the residuals trend with N, D, C or family, or scatter more at some tokens per parameter than at
    others (:mod:`scalebayes.misfit`): green when no check is flagged, red naming the flagged checks otherwise, with
    every check's p-value and binned medians (robust scales for the scatter check) either way."""
    rows = [
        [
            esc(r["against"]),
            fmt(r["p_value"], 2),
            ("s.d. " if r["against"] == SCATTER else "") + per_bin(r),
            "flagged" if r["flagged"] else "",
        ]
        for _, r in m.table.iterrows()
    ]
    header = ["residuals against", "p-value", "median residual per bin (low to high) or family", ""]
    table = Table(header, rows, "small")
    if not m.flagged:
        text = (
            "<b>No residual trend flagged.</b> The runs' residuals (observed − fitted log loss) show no structure with "
            "N, D, C or family beyond run-to-run noise, and their scatter does not change with tokens per parameter "
            + ("beyond the fitted noise trend " if m.trend else "")
            + "(Kruskal-Wallis across quantile bins; flagged at p < 0.001 with a median of at least half the scatter, "
            f"or a scale {SCATTER_RATIO:g}x another bin's)."
        )
        return Box("ok", [Para(text), table])
    flagged = set(m.table.loc[m.table["flagged"], "against"])
    text = []
    if flagged - {SCATTER}:
        text.append(
            "The fitted law leaves structure in its residuals: they trend with the inputs named below, beyond "
            "run-to-run noise. The law's form misses something inside the fitted range, and extrapolations along that "
            "direction are suspect beyond what any interval here says; consider another law, a per-family parameter, "
            "or fewer, more comparable runs."
        )
    if SCATTER in flagged and m.trend:
        text.append(
            "The runs' scatter changes with tokens per parameter (D/N) more than the fit's noise trend allows (robust "
            "s.d. per bin below, after dividing by the fitted trend), so its predictive intervals are too narrow for "
            "runs like the noisiest bin's."
        )
    elif SCATTER in flagged:
        text.append(
            "The runs scatter more at some tokens per parameter (D/N) than at others (robust s.d. per bin below). The "
            "fit has one noise scale, so its predictive intervals are too narrow for runs like the noisiest bin's "
            "(usually the under-trained) and too wide for the calmest. A fit with "
            "<code>noise_trend='tokens_per_parameter_cut'</code> (the default for laws of N and D) models the change "
            "for new runs and leaves the law as fitted."
        )
    return Box("fail", [Para(" ".join(text)), table], head="⚠ Misfit: residual trends inside the data")


# ---------------------------------------------------------------------------------------------------- parameters
def _flag(v: float, bad: bool) -> Html:
    text = fmt(v, 4) if np.isfinite(v) and v < 100 else (f"{v:.0f}" if np.isfinite(v) else fmt(v))
    return h("<span class='bad'>{}</span>", text) if bad or not np.isfinite(v) else esc(text)


def parameter_table(post) -> Table:
    """Every posterior quantity: meaning (from the law), median [5%, 95%], mean, sd, R-hat and ESS flagged red when
    they fail."""
    summ = post.summary(quantiles=(LO, MID, HI))
    lo_c, mid_c, hi_c = f"{100 * LO:g}%", f"{100 * MID:g}%", f"{100 * HI:g}%"
    rows = []
    for name, r in summ.iterrows():
        rh, eb, et = (float(r.get(k, np.nan)) for k in ("r_hat", "ess_bulk", "ess_tail"))
        rows.append(
            [
                h("<code>{}</code>", name),
                post.law.meaning(name),
                fmt_iv(r[mid_c], r[lo_c], r[hi_c], 4),
                fmt(r["mean"], 4),
                fmt(r["sd"], 3),
                _flag(rh, rh > RHAT_MAX),
                _flag(eb, eb < ESS_MIN),
                _flag(et, et < ESS_MIN),
            ]
        )
    header = ["parameter", "meaning", "median [5%, 95%]", "mean", "sd", "R-hat", "bulk ESS", "tail ESS"]
    return Table(header, rows, "params")


def _pair_figure(ctx: Context) -> Figure:
    post = ctx.post
    px, py = numbers.pair_names(post.law)
    ref = post.law.references_for(ctx.data_name) or None
    caption = (
        h("Joint posterior of <code>{}</code> and <code>{}</code>", px, py)
        + Html(" for a new family drawn from the fitted population" if ctx.multi else "")
        + Html(
            ": each dot is one posterior draw, the histograms its marginals. A tilted cloud means the data constrain "
            "a combination of the two better than either alone."
        )
        + (h(" The star is the estimate {} published from these runs.", ", ".join(ref)) if ref else Html(""))
    )
    return ctx.figure(lambda: plots.pair(post, px, py, reference=ref), f"joint posterior of {px} and {py}", caption)


def parameters(ctx: Context) -> Section:
    """The posterior of every parameter with its diagnostics, which parameters failed, and a pair plot."""
    post = ctx.post
    diag = post.diagnostics
    intro = h(
        "Posterior of every parameter. R-hat compares the chains with each other (1 means they agree; the report "
        "requires ≤ {}); ESS is the effective number of independent draws behind the bulk and the tails of each "
        "posterior (≥ {} required). Values that fail are in <span class='bad'>red</span>. ",
        RHAT_MAX,
        ESS_MIN,
    ) + Html("Per-family parameters are written <code>name[family]</code>." if ctx.multi else "")
    blocks = [Para(intro), parameter_table(post)]
    failing = numbers.failing_parameters(diag)
    if len(failing):
        blocks.append(
            Para(
                h(
                    "<b>{} of {} parameters failed their diagnostics</b> (red above; the summary lists the worst): {}.",
                    len(failing),
                    len(diag.table),
                    ", ".join(map(str, failing.index)),
                )
            )
        )
    blocks.append(
        Para(
            esc(str(diag))
            + Html(". ")
            + _health_words(numbers.sampler_health(post))
            + Html(
                "Divergent transitions signal regions the sampler could not explore reliably; leapfrog steps per "
                "iteration measure how hard the posterior was to traverse."
            ),
            "note",
        )
    )
    blocks.append(_pair_figure(ctx))
    return Section("parameters", "3. Parameters and sampler diagnostics", "Parameters & diagnostics", blocks)


# ---------------------------------------------------------------------------------------------------- ppc
def outlier_table(ctx: Context, outside, limit: int = 8) -> list:
    """The runs furthest outside their 90% predictive interval, named by the user's columns: input row label, any
    id-like columns of the data, family, N, D, loss."""
    tab = outside.head(limit)
    if not len(tab):
        return []
    ids = numbers.id_columns(tab)
    header = ["input row", *ids, *(["family"] if ctx.multi else []), "N", "D", "C", "observed loss"]
    header += ["predicted [90% interval]", "observed vs median"]
    rows = [
        [
            str(i),
            *[r[c] for c in ids],
            *([r["family"]] if ctx.multi else []),
            fmt(r["N"], 3),
            fmt(r["D"], 3),
            fmt(r["C"], 3),
            fmt(r["loss"], 4),
            fmt_iv(r["pred_median"], r["pred_5%"], r["pred_95%"], 4),
            f"{100 * r['rel']:+.1f}%",
        ]
        for i, r in tab.iterrows()
    ]
    note = h(
        "Runs furthest outside their 90% predictive interval ({} in all; input row = the row's label in the input "
        "table, 0-based for a CSV):",
        len(outside),
    )
    return [Para(note), Table(header, rows, "small")]


_PPC_CAPTION = Html(
    "<b>Left:</b> each run's observed log loss against the losses the fitted model replicates for it (median and "
    "90% interval); points should straddle the line y = x. <b>Middle:</b> for each run, the share of replicated "
    "losses below the observed one (the probability integral transform, PIT). If the model is calibrated the bars "
    "stay within the grey band; a U shape means the intervals are too narrow, a hump that they are too wide, a slope "
    "that predictions are biased. <b>Right:</b> the distribution of the observed losses over runs (black) against "
    "replicated data sets (blue)."
)
_RESIDUAL_CAPTION = Html(
    "Residuals: each run's observed log loss minus the law's posterior median for it (≈ relative error, 0.01 = 1%), "
    "against compute. Dashed lines (or grey ticks, with a noise trend: ±2σ at each run's tokens per parameter) are "
    "±2σ, twice the fitted run-to-run noise. A trend or curvature with compute "
    "means the law's shape misses something systematic; isolated points far outside are outlying runs (a Student-t "
    "likelihood discounts them)."
)


def _ppc_blocks(ctx: Context) -> list:
    stats = numbers.ppc_stats(ctx.post)
    intro = h(
        "Would the fitted model have produced data like these? For every run the model predicts a distribution of "
        "losses (law plus run-to-run noise). <b>{}%</b> of the {} runs fall inside their 90% predictive interval "
        "(about 90% expected) and <b>{}%</b> inside their 50% interval (about 50% expected). This check uses the same "
        "runs that were fitted, so it detects misfit (a law of the wrong shape, a wrong noise model), not "
        "extrapolation error.",
        f"{100 * stats['coverage90']:.0f}",
        stats["n"],
        f"{100 * stats['coverage50']:.0f}",
    )
    return [
        Para(intro),
        ctx.figure(lambda: plots.ppc(ctx.post), "posterior predictive check", _PPC_CAPTION),
        ctx.figure(lambda: plots.residuals(ctx.post), "residuals against compute", _RESIDUAL_CAPTION),
        *outlier_table(ctx, stats["outside"]),
    ]


def ppc(ctx: Context) -> Section:
    """Posterior predictive check: coverage, calibration figures, residuals and the most outlying runs."""
    return Section(
        "ppc",
        "4. Posterior predictive check",
        "Predictive check",
        ctx.guarded("posterior predictive check", lambda: _ppc_blocks(ctx)),
    )


# ---------------------------------------------------------------------------------------------------- extrapolation
def _extrapolation_table(ctx: Context) -> Table:
    col, x_max = plots.scale_max(ctx.post)
    xs = np.array([x_max, *[x_max * fac for fac in ctx.factors]])
    rows = []
    for f in ctx.fams:
        lo, med, hi = np.quantile(plots.scale_draws(ctx.post, xs, f), [LO, MID, HI], axis=0)
        for j, x in enumerate(xs):
            fac = 1.0 if j == 0 else ctx.factors[j - 1]
            cells = [f] if ctx.multi else []
            half = f"±{100 * (hi[j] - lo[j]) / (2 * med[j]):.2g}%"
            rows.append([*cells, times(fac), fmt(x, 3), fmt_iv(med[j], lo[j], hi[j], 4), half])
    what = "L* (compute-optimal loss)" if ctx.kind == "optimal" else "loss of the law"
    hdr = (["family"] if ctx.multi else []) + [
        "multiple of data max",
        col,
        f"{what}, nats",
        "half-width of 90% interval",
    ]
    return Table(hdr, rows, "extrap")


def _extrapolation_figures(ctx: Context) -> list:
    post, factors = ctx.post, ctx.factors
    col, x_max = plots.scale_max(post)
    if ctx.kind != "optimal":
        return [
            ctx.figure(
                lambda: plots.one_input(post, factors, families=ctx.drawn),
                "extrapolation bands",
                "Black points are the runs; the shaded region is beyond the data and dashed lines mark the "
                "extrapolation targets. "
                + (
                    "The bands include the calibrated discrepancy beyond the data."
                    if post.calibrated
                    else "The bands assume the law's form keeps holding there."
                ),
            )
        ]
    caption = (
        "Grey points are the runs"
        + (" of this family" if ctx.multi else "")
        + ": most were not trained compute-optimally, so they lie above the curve. The shaded region is beyond the "
        "data. "
        + (
            "The bands include the calibrated discrepancy, the law's own error beyond the data."
            if post.calibrated
            else "The bands assume the law's form keeps holding there, which the data cannot check."
        )
    )

    def one(f: str) -> Figure:
        fig = lambda: plots.mark_targets(  # noqa: E731 - drawn inside ctx.figure's guard
            plots.readable(plots.extrapolation(post, k=max(factors, default=1.0), family=f)), x_max, factors
        )
        return ctx.figure(fig, _for(ctx, "extrapolation", f), ctx.who(f) + esc(caption))

    return [Row([one(f) for f in ctx.drawn])]


def extrapolation(ctx: Context) -> Section:
    """The loss beyond the data: bands to each extrapolation target, how fast they widen, and a table."""
    post, law = ctx.post, ctx.post.law
    if ctx.kind is None:
        text = h(
            "The {} law has inputs {}; there is no single scale axis to extrapolate along, so this section is omitted.",
            law.name,
            ", ".join(law.inputs),
        )
        return Section("extrapolation", "5. Extrapolation", "Extrapolation", [Para(text)])
    col, x_max = plots.scale_max(post)
    targets = ", ".join(times(f) for f in ctx.factors)
    if ctx.kind == "optimal":
        intro = h(
            "How low can the loss go with more compute? For each budget C the blue curve is the lowest loss the fitted "
            "law predicts when N and D are chosen optimally (D = C/(6N)); the bands are its 50% and 90% credible "
            "intervals over posterior draws, and the dotted lines the 90% range of a single new run there (adding "
            "run-to-run noise). Lines mark the largest compute in the data ({} FLOP) and {} that; the table gives "
            "the numbers.",
            fmt(x_max, 3),
            targets,
        )
    else:
        intro = h(
            "The fitted law's loss beyond the data, along its input {}: posterior median with 50% and 90% credible "
            "bands (the law itself, without run-to-run noise), out to {} the largest {} in the data ({}).",
            col,
            targets,
            col,
            fmt(x_max, 3),
        )
    width = ctx.figure(
        lambda: plots.band_width(post, ctx.factors, ctx.drawn),
        "width of the extrapolation band",
        "How fast the uncertainty grows: the width of the 90% credible band as a percentage of its median, from the "
        "smallest run in the data to the furthest target (grey: the data's range; dashed: targets).",
    )
    which = Para(h("Bands and table: {}.", numbers.predictive_words(ctx.post)), "note")
    blocks = [Para(intro), which, *_extrapolation_figures(ctx), width]
    blocks += ctx.guarded("extrapolation table", lambda: [_extrapolation_table(ctx)])
    return Section("extrapolation", "5. Extrapolation", "Extrapolation", blocks)


# ---------------------------------------------------------------------------------------------------- plan
def plan_table(ctx: Context) -> Table:
    """The compute plan: per family and budget, N*, D*, D*/N* and L* as median [5%, 95%]; a red note where draws'
    optima hit the search range's edge."""
    frame = numbers.plan_frame(ctx.post, ctx.compute)
    rows = []
    for _, r in frame.iterrows():
        cells = [r["family"]] if ctx.multi else []
        cells.append(fmt(r["C"], 3) + h(" <span class='ci'>({} data max)</span>", times(r["C"] / ctx.c_max)))
        for k in ("N", "D", "D_per_N", "L"):
            q = [r[f"{k}_{qcol(p)}"] for p in (MID, LO, HI)]
            cells.append(fmt_iv(*q, 4 if k == "L" else 3))
        if r["at_edge"] > 0:
            cells[-1] += h(" <span class='bad'>({}% of draws at the search edge)</span>", f"{100 * r['at_edge']:.0f}")
        rows.append(cells)
    header = (["family"] if ctx.multi else []) + [
        "budget C (FLOP)",
        "N* (parameters)",
        "D* (tokens)",
        "D*/N* (tokens per parameter)",
        "L* (nats/token)",
    ]
    return Table(header, rows, "plan")


def _plan_figures(ctx: Context) -> list:
    """Per family the compute-optimal frontier (two panels, full width), then every family's tokens per parameter
    side by side."""
    k = max(10.0, max(ctx.compute) / ctx.c_max * 1.5, max(ctx.factors, default=1.0) * 1.5)
    frontiers = [_frontier_figure(ctx, f, k) for f in ctx.drawn]
    return [*frontiers, Row([_ratio_figure(ctx, f, k) for f in ctx.drawn])]


def _frontier_figure(ctx: Context, f: str, k: float) -> Figure:
    post = ctx.post
    return ctx.figure(
        lambda: plots.frontier(post, family=f, k=k),
        _for(ctx, "compute-optimal frontier", f),
        ctx.who(f)
        + Html(
            "The compute-optimal model size N* (left) and training tokens D* (right) against budget, from the smallest "
            "compute in the data to the largest budget planned, with 50% and 90% credible bands; grey shading is the "
            "data's compute range."
        ),
    )


def _ratio_figure(ctx: Context, f: str, k: float) -> Figure:
    post = ctx.post
    return ctx.figure(
        lambda: plots.readable(plots.ratio(post, family=f, k=k)),
        _for(ctx, "tokens per parameter", f),
        ctx.who(f)
        + Html(
            "The compute-optimal tokens per parameter D*/N* against budget, with 50% and 90% credible bands; the "
            "dashed line is the 20 tokens per parameter rule of thumb (Hoffmann et al. 2022). A band that widens "
            "beyond the data is the recommendation becoming uncertain, not the loss."
        ),
    )


def plan(ctx: Context) -> Section:
    """The compute plan: how to split each budget between model size and tokens, with its uncertainty."""
    law = ctx.post.law
    if ctx.kind != "optimal":
        text = h(
            "Compute planning chooses the model size N and the tokens D for a budget; the {} law has inputs {} (not "
            "both N and D), so there is no allocation to plan.",
            law.name,
            ", ".join(law.inputs),
        )
        return Section("plan", "6. Compute plan", "Compute plan", [Para(text)])
    intro = Html(
        "For each training budget C, the model size N* and tokens D* that minimise the fitted law's loss subject to "
        "6·N·D = C, and the loss L* they reach. Each cell is the posterior median with the 90% credible interval in "
        "brackets: the uncertainty of the <i>recommendation</i>, not of a single run. "
    ) + h(
        "{}The same numbers (with more columns) on the command line: <code>scalebayes plan posterior.nc --compute {}"
        "</code>.",
        "One block per fitted family. " if ctx.multi else "",
        " ".join(fmt(c, 2) for c in ctx.compute),
    )
    which = Para(
        h("L* in the table: {}; the figures show the parameters' uncertainty.", numbers.predictive_words(ctx.post)),
        "note",
    )
    blocks = [Para(intro), which, *ctx.guarded("plan table", lambda: [plan_table(ctx)])]
    blocks += _plan_figures(ctx)
    return Section("plan", "6. Compute plan", "Compute plan", blocks)


# ---------------------------------------------------------------------------------------------------- about
_FILES = {
    "posterior.nc": Html(
        "every posterior draw, sampler statistics and the data (netCDF; <code>scalebayes.load()</code>)"
    ),
    "posterior.zarr": Html("the same as zarr"),
    "summary.csv": Html("the parameter table above"),
}


def _priors_blocks(pri) -> list:
    """The priors of the fit: Normal(loc, scale) on each sampler coordinate, and the noise priors."""
    if not isinstance(pri, dict) or not isinstance(pri.get("latent"), dict):
        return [Para(h("Priors: <code>{}</code>", pri), "note")]
    tau = pri.get("tau") or {}
    rows = []
    for z, v in pri["latent"].items():
        loc, scale = (list(v) + [np.nan, np.nan])[:2]
        spread = Html(f"half-Normal({fmt(tau[z], 3)})") if z in tau else "–"
        rows.append([h("<code>{}</code>", z), Html(f"Normal({fmt(loc, 3)}, {fmt(scale, 3)})"), spread])
    extra = []
    if "sigma" in pri:
        extra.append(f"σ ~ half-Normal({fmt(pri['sigma'], 3)})")
    if isinstance(pri.get("nu"), list | tuple) and len(pri["nu"]) == 2:
        extra.append(f"ν ~ Gamma(shape {fmt(pri['nu'][0], 3)}, rate {fmt(pri['nu'][1], 3)}) (Student-t only)")
    if "sigma_trend" in pri:
        extra.append(f"ζ ~ Normal(0, {fmt(pri['sigma_trend'], 3)}) (noise trend in log D/N, when fitted)")
    note = Html(
        "Priors. Sampler coordinates are logs of positive parameters, with amplitudes measured at the data's "
        "geometric-mean inputs (for the Chinchilla law <code>log_A_c</code> = log A − α·mean(log N)), which "
        "decorrelates them from the exponents. The spread across families is only used under partial pooling."
    ) + (h(" Noise priors: {}.", "; ".join(extra)) if extra else Html(""))
    return [
        Para(note, "note"),
        Table(["sampler coordinate", "prior", "prior on spread across families"], rows, "small"),
    ]


def about(ctx: Context) -> Section:
    """The files next to the report, how to reproduce the fit, its settings and priors, and any problems met while
    writing the page (so this section is built last)."""
    post, law = ctx.post, ctx.post.law
    st = numbers.settings(post)
    blocks = []
    files = [p for p in _FILES if (ctx.out / p).exists()]
    if files:
        blocks.append(Items([h("<a href='{}'><code>{}</code></a>: ", p, p) + _FILES[p] for p in files]))
    if ctx.command:
        blocks += [Para("Produced by:"), Pre(ctx.command)]
    pooling = ", ".join(f"{z}: {m}" for z, m in zip(law.latents, post.spec.modes, strict=True))
    blocks.append(
        Para(
            h("Law <code>{}</code> ({}); ", law.name, law.reference or "no reference given")
            + (h("pooling of the sampler coordinates {}; ", pooling) if ctx.multi else Html(""))
            + h(
                "likelihood {}; noise {}{}; target acceptance {}; maximum tree depth {}; seed {}.",
                post.spec.likelihood,
                post.spec.noise,
                _trend_words(post),
                st["target_accept"],
                st["max_tree_depth"],
                st["seed"],
            ),
            "note",
        )
    )
    blocks += _priors_blocks(post.meta.get("priors"))
    if ctx.problems:
        blocks += [Para(Html("<b>Problems while writing this report:</b>"), "err"), Items(list(ctx.problems), "err")]
    return Section("about", "7. Files and how to reproduce", "Files & reproduce", blocks)


#: The sections in page order.
BUILDERS: Sequence[Callable[[Context], Section]] = (summary, data, fit, parameters, ppc, extrapolation, plan, about)


def _trend_words(post) -> str:
    """How the run noise depends on tokens per parameter, for the settings line."""
    if post.spec.noise_trend:
        return " with a trend in tokens per parameter"
    return " (a new run's refitted to the residuals with a trend in tokens per parameter)" if post.noise_trend else ""
