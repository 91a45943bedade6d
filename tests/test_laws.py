"""The law library: each law's mean function against its published formula, its latent coordinates, its priors,
and recovery of known parameters from simulated runs.

The recovery tests cost one sampler compilation per law (~15-25 s on a 2-core CPU) and a few seconds of sampling;
the rest of the file runs in a second or two.
"""

from __future__ import annotations

import re

import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest
from conftest import FULL, LAW_ONLY

import scalebayes as sb
from scalebayes import laws
from scalebayes.errors import DataError, ModelError
from scalebayes.fitting import prepare
from scalebayes.model import pooling_modes

#: Sampler settings of the recovery tests: conftest's FULL (4 chains × 500 draws). Each law compiles its own sampler
#: anyway (~15-25 s); sampling these 64-run posteriors takes well under a second more.
RECOVERY = dict(FULL, **LAW_ONLY)
N_RUNS = 64  # one padded size (64) for every law
SIGMA = 0.01  # 1% run-to-run scatter of the loss, typical of well-tuned sweeps

# ---------------------------------------------------------------------------------------------------- references
# Published formulas written out in numpy, independently of the JAX log-space implementations.


def _ref_kaplan(p, N, D, C, U):
    return ((p["N_c"] / N) ** (p["alpha_N"] / p["alpha_D"]) + p["D_c"] / D) ** p["alpha_D"]


def _ref_compute(p, N, D, C, U):
    return p["E"] + p["A"] * C ** -p["alpha"]


def _ref_data_constrained(p, N, D, C, U):
    u_d = np.minimum(U, D)
    r = D / u_d - 1
    d_eff = u_d + u_d * p["R_star"] * (1 - np.exp(-r / p["R_star"]))
    return p["E"] + p["A"] * N ** -p["alpha"] + p["B"] * d_eff ** -p["beta"]


def _ref_overtrained(p, N, D, C, U):
    M, C6 = D / N, 6 * N * D
    return p["E"] + (p["a"] * M ** p["eta"] + p["b"] * M ** -p["eta"]) * C6 ** -p["eta"]


def _ref_broken_power(p, N, D, C, U):
    br = (1 + (C / p["C_b"]) ** (1 / p["s"])) ** (-(p["alpha_2"] - p["alpha_1"]) * p["s"])
    return p["E"] + p["A"] * C ** -p["alpha_1"] * br


def _ref_broken_power_N(p, N, D, C, U):
    br = (1 + (N / p["N_b"]) ** (1 / p["s"])) ** (-(p["alpha_2"] - p["alpha_1"]) * p["s"])
    return p["E"] + p["A"] * N ** -p["alpha_1"] * br


def _ref_chinchilla(p, N, D, C, U):
    return p["E"] + p["A"] * N ** -p["alpha"] + p["B"] * D ** -p["beta"]


_A_BP = float(2.0 * 1e18**0.1)  # reducible loss 2 nats at the break, 1e18 FLOP

#: Ground truth per law: realistic magnitudes (Kaplan et al.'s published fit; Chinchilla's Approach-3 values with
#: Muennighoff et al.'s R* = 15.4; an over-training law whose compute-optimal multiplier (b/a)^(1/2η) is ~20 tokens
#: per parameter; a compute curve that steepens from slope 0.1 to 0.4 at 1e18 FLOP while still well above its
#: floor — a break that runs straight into the floor leaves α₂ and E on a ridge the data cannot resolve).
TRUTH = {
    "chinchilla": dict(E=1.69, A=406.4, B=410.7, alpha=0.34, beta=0.28),
    "kaplan": dict(N_c=8.8e13, D_c=5.4e13, alpha_N=0.076, alpha_D=0.095),
    "compute": dict(E=1.7, A=1000.0, alpha=0.15),
    "data_constrained": dict(E=1.69, A=406.4, B=410.7, alpha=0.34, beta=0.28, R_star=15.4),
    "overtrained": dict(E=1.7, a=300.0, b=740.0, eta=0.15),
    "broken_power": dict(E=1.0, A=_A_BP, alpha_1=0.1, alpha_2=0.4, C_b=1e18, s=0.5),
    "broken_power_N": dict(E=1.0, A=_A_BP, alpha_1=0.1, alpha_2=0.4, N_b=1e8, s=0.5),
}
REFS = {
    "chinchilla": _ref_chinchilla,
    "kaplan": _ref_kaplan,
    "compute": _ref_compute,
    "data_constrained": _ref_data_constrained,
    "overtrained": _ref_overtrained,
    "broken_power": _ref_broken_power,
    "broken_power_N": _ref_broken_power_N,
}


def design(name: str, n: int, seed: int) -> pd.DataFrame:
    """Inputs of ``n`` simulated runs suited to law ``name``: N (parameters), D (tokens) and, for the
    data-constrained law, U (unique tokens)."""
    rng = np.random.default_rng(seed)
    if name in ("compute", "broken_power"):
        # Compute-optimal-ish runs (20 tokens/param) over six decades of C: a compute law sees only C, and the
        # broken law needs data well on both sides of its break at 1e18 FLOP.
        lo, hi = (17, 23) if name == "compute" else (15, 21)
        C = 10 ** rng.uniform(lo, hi, n)
        N = np.sqrt(C / (6 * 20))
        return pd.DataFrame({"N": N, "D": C / (6 * N)})
    N = 10 ** rng.uniform(7, 10, n)
    # Over-training needs multipliers far past compute-optimal (5-500 tokens/param); the others 5-200.
    hi = 500 if name == "overtrained" else 200
    df = pd.DataFrame({"N": N, "D": N * 10 ** rng.uniform(np.log10(5), np.log10(hi), n)})
    if name == "data_constrained":
        # Half the runs see each token once (they pin the Chinchilla part); the others repeat their unique data
        # 2-100 times, enough to see the value of repeated tokens decay (R* ≈ 15) and level off.
        epochs = np.where(np.arange(n) % 2 == 0, 1.0, 10 ** rng.uniform(np.log10(2), 2, n))
        df["U"] = df["D"] / epochs
    return df


def simulate(name: str, n: int = N_RUNS, *, seed: int = 0, sigma: float = SIGMA) -> sb.ScalingData:
    """Runs from law ``name`` at :data:`TRUTH` with log-normal scatter ``sigma`` on the loss (nats)."""
    law = laws.get(name)
    df = design(name, n, seed)
    C = 6 * df["N"].to_numpy() * df["D"].to_numpy()
    inputs = {"N": df["N"].to_numpy(), "D": df["D"].to_numpy(), "C": C}
    if "U" in df:
        inputs["U"] = df["U"].to_numpy()
    loss = np.asarray(law.loss(TRUTH[name], **{k: inputs[k] for k in law.inputs}))
    df["loss"] = loss * np.exp(sigma * np.random.default_rng(seed + 1000).standard_normal(n))
    return sb.ScalingData.from_frame(df, N="N", D="D", loss="loss", U="U" if "U" in df else None, name=name)


# ---------------------------------------------------------------------------------------------------- fast checks
def test_library_is_registered():
    assert set(laws.available()) >= set(TRUTH)
    for name in TRUTH:
        law = laws.get(name)
        assert law.reference, f"{name} has no reference"
        assert laws.get(name) is law


def _inputs(seed: int, n: int):
    """(N, D, C, U) of n random runs and their logs as a law's inputs: N 1e6-1e11, 0.3-1000 tokens per parameter,
    U from above D (fewer than one epoch) to ~300 epochs."""
    rng = np.random.default_rng(seed)
    N = 10 ** rng.uniform(6, 11, n)
    D = N * 10 ** rng.uniform(-0.5, 3, n)
    U = D / 10 ** rng.uniform(-0.5, 2.5, n)
    C = 6 * N * D
    return (N, D, C, U), {"N": np.log(N), "D": np.log(D), "C": np.log(C), "U": np.log(U)}


@pytest.mark.parametrize("name", sorted(TRUTH))
def test_log_mean_matches_published_formula(name):
    law = laws.get(name)
    (N, D, C, U), x = _inputs(0, 50)
    got = np.exp(np.asarray(law.log_mean({k: jnp.asarray(v) for k, v in TRUTH[name].items()}, x)))
    # Both sides are exact closed forms in float64; 1e-10 allows only rounding.
    np.testing.assert_allclose(got, REFS[name](TRUTH[name], N, D, C, U), rtol=1e-10)


@pytest.mark.parametrize("name", sorted(TRUTH))
def test_per_run_form_equals_log_mean(name):
    # The sampler evaluates laws through per_run (prepare once per family, evaluate per run); both are closed
    # forms in float64, so 1e-12 on log L allows only rounding.
    law = laws.get(name)
    _, x = _inputs(1, 40)
    p = {k: jnp.asarray(v) for k, v in TRUTH[name].items()}
    prepare, evaluate = law.per_run
    np.testing.assert_allclose(evaluate(prepare(p), x), law.log_mean(p, x), rtol=0, atol=1e-12)


@pytest.mark.parametrize("name", sorted(TRUTH))
def test_latents_round_trip(name):
    law = laws.get(name)
    centre = {"N": np.log(3e8), "D": np.log(6e9), "C": np.log(1.1e19), "U": np.log(1e9)}
    centre = {k: v for k, v in centre.items() if k in law.inputs}
    z = law.from_params({k: jnp.asarray(v) for k, v in TRUTH[name].items()}, centre)
    assert set(z) == set(law.latents)
    back = law.to_params(z, centre)
    for k, v in TRUTH[name].items():
        np.testing.assert_allclose(float(back[k]), v, rtol=1e-10)


@pytest.mark.parametrize("name", sorted(TRUTH))
def test_priors_are_weakly_informative_around_the_truth(name):
    # The realistic ground truths (several are published fits) must sit well inside the default priors: within 2.5
    # prior standard deviations of each latent's prior mean, for data centred where the simulated runs are.
    law = laws.get(name)
    data = simulate(name)
    centre = law.centre(data.log_inputs())
    pri = law.default_priors(centre, float(np.median(data.loss)))
    z = law.from_params({k: jnp.asarray(v) for k, v in TRUTH[name].items()}, centre)
    for k, (loc, scale) in pri.items():
        assert abs(float(z[k]) - loc) < 2.5 * scale, f"{name}: {k} = {float(z[k]):.3f} vs prior ({loc:.3f}, {scale})"


def test_data_constrained_reduces_to_chinchilla_without_repetition():
    # With U ≥ D nothing repeats, D' = D, and the law is Chinchilla's exactly.
    rng = np.random.default_rng(1)
    N, D = 10 ** rng.uniform(7, 10, 20), 10 ** rng.uniform(9, 12, 20)
    x = {"N": np.log(N), "D": np.log(D), "U": np.log(D * 10 ** rng.uniform(0, 1, 20))}
    p = TRUTH["data_constrained"]
    got = laws.data_constrained.log_mean(p, x)
    np.testing.assert_allclose(got, laws.chinchilla.log_mean(p, x), rtol=1e-12)
    # And repeated data is worth less than fresh data, but never less than one epoch of it.
    x_rep = {**x, "U": x["D"] - np.log(40.0)}
    assert np.all(np.asarray(laws.data_constrained.log_mean(p, x_rep)) > np.asarray(got))
    d_eff = np.exp(np.asarray(laws._effective_log_data(p, x_rep)))
    assert np.all((d_eff > D / 40) & (d_eff < D))


def test_overtrained_m_opt_minimises_loss_at_fixed_compute():
    p = TRUTH["overtrained"]
    m_opt = float(laws.overtrained.derived["M_opt"]({k: jnp.asarray(v) for k, v in p.items()}))
    C = 1e21
    M = np.geomspace(m_opt / 30, m_opt * 30, 2001)
    N = np.sqrt(C / (6 * M))
    L = np.asarray(laws.overtrained.loss(p, N=N, D=M * N))
    # The grid has 2001 points over a factor 900: neighbouring points differ by 0.34%.
    assert abs(np.log(M[np.argmin(L)] / m_opt)) < 0.004


@pytest.mark.parametrize("name", ["broken_power", "broken_power_N"])
def test_broken_power_slopes_before_and_after_the_break(name):
    law, p = laws.get(name), TRUTH[name]
    xb = p["C_b"] if "C_b" in p else p["N_b"]
    key = law.inputs[0]
    q = {**p, "E": 1e-12}  # look at the reducible term alone
    for far, slope in ((xb * 1e-5, p["alpha_1"]), (xb * 1e5, p["alpha_2"])):
        x = np.array([far, far * 1.01])
        ln = np.log(np.asarray(law.loss(q, **{key: x})))
        # Five decades (25 s) from the break the correction to the slope is (α₂−α₁)·e^(−11.5/0.5) ≈ 3e-11.
        assert np.isclose(-(ln[1] - ln[0]) / np.log(1.01), slope, rtol=1e-6)


def test_pooling_options_accept_published_parameter_names():
    # shared=/free= take published names even when the latent is centred or renamed.
    assert pooling_modes(laws.kaplan, "partial", 3, shared=("N_c", "alpha_D")) == (
        "shared",
        "marginal",
        "marginal",
        "shared",
    )
    assert pooling_modes(laws.overtrained, "partial", 3, free=("a",))[laws.overtrained.latents.index("log_a_c")] == (
        "free"
    )
    modes = pooling_modes(laws.broken_power, "none", 2, shared=("C_b", "s"))
    assert [z for z, m in zip(laws.broken_power.latents, modes, strict=True) if m == "shared"] == [
        "log_C_b_rel",
        "log_s",
    ]
    assert pooling_modes(laws.data_constrained, "partial", 4, shared=("R_star",))[-1] == "shared"


def test_check_params_and_bad_declarations():
    with pytest.raises(ModelError, match="alpha_N"):
        laws.kaplan.check_params({**TRUTH["kaplan"], "alpha_N": -0.1})
    with pytest.raises(ModelError, match="missing"):
        laws.compute.check_params({"E": 1.0})
    with pytest.raises(ModelError, match="latent_of"):
        laws.Law("x", ("E",), ("C",), lambda p, x: x["C"], {"log_E": (0, 1)}, latent_of={"E": "nope"})
    with pytest.raises(ModelError, match="constraints"):
        laws.Law("x", ("E",), ("C",), lambda p, x: x["C"], {"log_E": (0, 1)}, constraints={"E": "integer"})


def test_data_constrained_law_needs_unique_tokens():
    data = simulate("chinchilla")
    with pytest.raises(DataError, match="unique tokens"):
        prepare(data, "data_constrained")


def test_user_defined_law_from_the_docstring_example():
    # The example in scalebayes.laws' docstring must run as written and give a law fit() accepts.
    code = re.search(r"Writing your own law.*?::\n\n(.*?)\n\nWith the defaults", laws.__doc__, re.S).group(1)
    ns: dict = {}
    exec(compile("\n".join(line[4:] for line in code.splitlines()), "<laws docstring>", "exec"), ns)
    try:
        law = laws.get("my_compute_law")
        assert law is ns["my_law"] and law.latents == ("log_E", "log_A", "log_alpha")
        data = simulate("compute", 20)
        prep = prepare(data, "my_compute_law")
        assert prep.spec.law is law and prep.priors.latent["log_alpha"] == (-1.5, 0.6)
        p = law.to_params(law.from_params(TRUTH["compute"], {}), {})
        np.testing.assert_allclose(law.loss(p, C=1e20), _ref_compute(TRUTH["compute"], 0, 0, 1e20, 0), rtol=1e-12)
    finally:
        laws._REGISTRY.pop("my_compute_law", None)


# ---------------------------------------------------------------------------------------------------- report words
@pytest.mark.parametrize("name", laws.available())
def test_every_builtin_law_carries_its_report_words(name):
    # the report reads a law's formula and parameter meanings from the law itself (not from tables of its own)
    law = laws.get(name)
    assert law.formula and law.formula_html == law.formula and "<sup>" in law.formula
    for q in (*law.params, *law.derived, "sigma", "nu"):
        assert law.meaning(q) and not law.meaning(q).startswith(("parameter of", "quantity derived")), (name, q)


def test_law_meanings_and_generic_fallbacks():
    assert "model-size" in laws.chinchilla.meaning("A[big]")  # a family suffix is ignored
    assert "exponent of training compute" in laws.compute.meaning("alpha")
    assert "critical model size" in laws.kaplan.meaning("N_c")
    assert "across families" in laws.chinchilla.meaning("tau_log_E")
    assert "break (FLOP)" in laws.broken_power.meaning("C_b") and "break (parameters)" in laws.broken_power_N.meaning(
        "N_b"
    )
    assert laws.chinchilla.meaning("zeta") == ""
    # a user's law that declares no words still gets a formula and a meaning for every quantity
    bare = laws.Law(
        name="bare",
        params=("E", "k"),
        inputs=("C",),
        log_mean=lambda p, x: jnp.log(p["E"] + p["k"] / x["C"]),
        priors={"log_E": (0.0, 1.0), "log_k": (0.0, 1.0)},
        derived={"twice_k": lambda p: 2 * p["k"]},
    )
    assert bare.formula_html == "L(C) with parameters E, k"
    assert "irreducible" in bare.meaning("E") and bare.meaning("k") == "parameter of the bare law"
    assert "derived" in bare.meaning("twice_k") and bare.references_for("anything") == {}


def test_hoffmann_point_belongs_to_chinchilla_epoch_only():
    # defined once, on the law, and shown only beside fits of the data it was estimated on
    ref = laws.chinchilla.references_for("chinchilla_epoch")
    assert ref == {"Hoffmann et al. 2022": {"E": 1.69, "A": 406.4, "B": 410.7, "alpha": 0.34, "beta": 0.28}}
    assert laws.chinchilla.references_for("porian_isoflop[standard,val]") == {}
    assert laws.chinchilla.references_for("data") == {}
    everywhere = laws.ReferencePoint("mine", {"alpha": 0.3})
    assert everywhere.applies_to("any data")


# ---------------------------------------------------------------------------------------------------- recovery
#: Parameters the simulated design pins down, with the relative error allowed on the posterior median. With 64 runs
#: at 1% scatter the exponents come out to 1-4% (posterior sd) — 10% leaves about three posterior sd for the seed's
#: luck; R* and the break location are pinned less sharply (posterior sd ~8% and ~20%), hence 25% and 50%.
PINNED = {
    "kaplan": {"alpha_N": 0.1, "alpha_D": 0.1},
    "compute": {"E": 0.1, "alpha": 0.1},
    "data_constrained": {"alpha": 0.1, "beta": 0.1, "R_star": 0.25},
    "overtrained": {"E": 0.1, "eta": 0.1},
    "broken_power": {"E": 0.1, "alpha_1": 0.1, "alpha_2": 0.25, "C_b": 0.5},
}


@pytest.mark.parametrize("name", sorted(PINNED))
def test_recovers_parameters_from_simulated_runs(name):
    law = laws.get(name)
    data = simulate(name, seed=1)
    post = sb.fit(data, law=name, seed=0, warn=False, **RECOVERY)
    d = post.diagnostics
    assert d.divergences == 0
    # Converged chains: R-hat and ESS at about the strict levels of Diagnostics.ok (1.01, 400), with a margin for
    # the weakly identified coordinates (the break's sharpness s, the Student-t ν) whose ESS runs lowest.
    assert d.r_hat_max < 1.02, str(d)
    assert d.ess_bulk_min > 200 and d.ess_tail_min > 200, str(d)
    for k in law.params:
        # Every parameter, pinned or not, within 4 posterior sd of the truth, on the log scale its latent lives on
        # (all are positive). For a calibrated posterior that fails about once in 16,000 checks; a 99% interval
        # would fail once in a hundred, i.e. every few runs of this 26-check test across seeds.
        v = np.log(post.draws(k))
        z = (np.median(v) - np.log(TRUTH[name][k])) / v.std()
        assert abs(z) < 4, f"{name}.{k}: truth {TRUTH[name][k]:.4g}, median {np.exp(np.median(v)):.4g} ({z:+.1f} sd)"
    for k, tol in PINNED[name].items():
        med = np.median(post.draws(k))
        assert abs(med / TRUTH[name][k] - 1) < tol, f"{name}.{k}: median {med:.4g} vs truth {TRUTH[name][k]:.4g}"


def test_user_law_object_fits_without_registering(tmp_path):
    # The laws module docstring's example, passed to fit() as an object: fit registers it so the Posterior, its
    # summary and a save/load round trip in this session find it by name. Short chains: only the plumbing is tested
    # (the recovery tests above check the sampler on the shipped laws).
    def log_mean(p, x):
        return jnp.logaddexp(jnp.log(p["E"]), jnp.log(p["A"]) - p["alpha"] * x["C"])

    mine = laws.Law(
        name="test_user_compute_law",
        params=("E", "A", "alpha"),
        inputs=("C",),
        log_mean=log_mean,
        priors={"log_E": (0.5, 0.5), "log_A": (4.0, 3.0), "log_alpha": (-1.6, 0.6)},
        reference="test",
    )
    rng = np.random.default_rng(0)
    N = 10 ** rng.uniform(7, 10, 40)
    D = 20 * N
    loss = 1.8 + 60.0 * (6 * N * D) ** -0.15 * np.exp(0.01 * rng.standard_normal(40))
    data = sb.ScalingData.from_frame(pd.DataFrame({"N": N, "D": D, "loss": loss}), N="N", D="D", loss="loss")
    post = sb.fit(data, law=mine, chains=2, warmup=150, draws=100, seed=0, warn=False, **LAW_ONLY)
    assert laws.get("test_user_compute_law") is mine
    assert {"E", "A", "alpha"} <= set(post.summary().index)
    again = sb.load(post.save(tmp_path / "mine.nc"))
    assert again.law is mine
    other = laws.Law(
        name="test_user_compute_law", params=("E",), inputs=("C",), log_mean=log_mean, priors={"log_E": (0.5, 0.5)}
    )
    with pytest.raises(ModelError, match="already registered"):
        sb.fit(data, law=other)
