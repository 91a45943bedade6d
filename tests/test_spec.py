"""The settings of a fit: FitSpec (the model) and SamplerConfig (NUTS), resolved in one place, validated with errors
that name the argument, stored in the DataTree and rebuilt exactly; the padding rule; float64 as an explicit switch."""

from __future__ import annotations

import os
import subprocess
import sys
import warnings

import numpy as np
import pytest
import xarray as xr
from conftest import QUICK, simulate_chinchilla

import scalebayes as sb
from scalebayes.errors import LargeFitWarning, ModelError, SamplingWarning, UnknownNameError
from scalebayes.fitting import prepare, warn_if_large
from scalebayes.padding import pad, pad_size
from scalebayes.spec import FitSpec, check_dtype, check_seed, resolve, sampler_config

TRUE = {"E": 1.7, "A": 400.0, "B": 1500.0, "alpha": 0.34, "beta": 0.30}


@pytest.fixture(scope="module")
def small_data():
    return sb.ScalingData.from_frame(simulate_chinchilla(TRUE, n=40, sigma=0.02, seed=5), N="N", D="D", loss="loss")


@pytest.fixture(scope="module")
def spec_post(small_data):
    spec = FitSpec(likelihood="normal", priors={"sigma": 0.05})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SamplingWarning)  # QUICK settings: too short for ESS 400
        return spec, sb.fit(small_data, spec=spec, seed=7, **QUICK)


# ---------------------------------------------------------------------------------------------- FitSpec in fits
def test_fit_stores_its_spec_and_sampler_settings(spec_post, tmp_path):
    spec, post = spec_post
    assert post.fit_spec == spec
    cfg = post.sampler_config
    assert (cfg.chains, cfg.warmup, cfg.draws) == (QUICK["chains"], QUICK["warmup"], QUICK["draws"])
    back = sb.load(post.save(tmp_path / "post.nc"))
    assert back.fit_spec == spec and back.sampler_config == cfg


def test_refit_with_stored_spec_gives_the_same_draws(small_data, spec_post):
    spec, post = spec_post
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SamplingWarning)
        again = sb.fit(small_data, spec=post.fit_spec, seed=7, **QUICK)
        keywords = sb.fit(small_data, likelihood="normal", priors={"sigma": 0.05}, seed=7, **QUICK)
    for other in (again, keywords):
        xr.testing.assert_equal(other.idata["posterior"].to_dataset(), post.idata["posterior"].to_dataset())


def test_resolve_builds_one_spec_from_keywords_or_takes_it():
    assert resolve(None, None, {}) == FitSpec()
    assert resolve(None, "kaplan", {"likelihood": "normal"}) == FitSpec(law="kaplan", likelihood="normal")
    s = FitSpec(pooling="partial", centred=("alpha",))
    assert resolve(s, None, {}) is s and resolve(None, s, {}) is s
    with pytest.raises(ModelError, match="not both"):
        resolve(s, None, {"pooling": "none"})
    with pytest.raises(ModelError, match="colour"):
        resolve(None, None, {"colour": "red"})
    with pytest.raises(ModelError, match="FitSpec"):
        resolve({"law": "chinchilla"}, None, {})


def test_fitspec_rejects_unknown_names():
    with pytest.raises(UnknownNameError, match="likelihood"):
        FitSpec(likelihood="cauchy")
    with pytest.raises(UnknownNameError, match="pooling"):
        FitSpec(pooling="some")
    with pytest.raises(UnknownNameError, match="noise"):
        FitSpec(noise="per_run")
    with pytest.raises(UnknownNameError, match="no_such_law"):
        FitSpec(law="no_such_law")
    with pytest.raises(UnknownNameError, match="gamma"):
        FitSpec(shared=("gamma",))
    with pytest.raises(ModelError, match="priors"):
        FitSpec(priors="wide")


# ------------------------------------------------------------------------------------------- argument validation
@pytest.mark.parametrize(
    "kw, name",
    [
        (dict(draws=10.5), "draws"),
        (dict(draws=0), "draws"),
        (dict(chains="4"), "chains"),
        (dict(warmup=-1), "warmup"),
        (dict(chains=True), "chains"),
        (dict(target_accept=1.0), "target_accept"),
        (dict(target_accept=0.0), "target_accept"),
        (dict(target_accept="high"), "target_accept"),
        (dict(max_tree_depth=0), "max_tree_depth"),
        (dict(max_tree_depth=2.5), "max_tree_depth"),
        (dict(max_tree_depth=64), "max_tree_depth"),
        (dict(dense_mass="yes"), "dense_mass"),
    ],
)
def test_bad_sampler_settings_name_the_argument(kw, name):
    with pytest.raises(ModelError, match=name):
        sampler_config(**kw)


def test_whole_floats_are_accepted_not_truncated():
    cfg = sampler_config(draws=1e3, warmup=500.0)
    assert (cfg.draws, cfg.warmup) == (1000, 500) and isinstance(cfg.draws, int)


def test_bad_seed_and_dtype():
    for bad in (-1, 1.5, "0", True, 2**64):
        with pytest.raises(ModelError, match="seed"):
            check_seed(bad)
    assert check_seed(np.int64(3)) == 3
    with pytest.raises(ModelError, match="dtype"):
        check_dtype("float16")
    assert check_dtype(np.float32) == "float32" and check_dtype("float64") == "float64"


@pytest.mark.parametrize(
    "kw, error, name",
    [
        (dict(draws=10.5), ModelError, "draws"),
        (dict(seed=-3), ModelError, "seed"),
        (dict(dtype="int32"), ModelError, "dtype"),
        (dict(max_tree_depth=100), ModelError, "max_tree_depth"),
        (dict(target_accept=1.5), ModelError, "target_accept"),
        (dict(likelihood="cauchy"), UnknownNameError, "likelihood"),
        (dict(pooling="some"), UnknownNameError, "pooling"),
        (dict(noise="per_run"), UnknownNameError, "noise"),
        (dict(pointwise="sometimes"), ModelError, "pointwise"),
        (dict(colour="red"), ModelError, "colour"),
    ],
)
def test_fit_and_fit_many_validate_before_sampling(small_data, kw, error, name):
    with pytest.raises(error, match=name):
        sb.fit(small_data, **kw)
    with pytest.raises(error, match=name):
        sb.fit_many([small_data], **kw)


def test_sbc_validates_its_arguments(small_data):
    from scalebayes.validation import sbc

    with pytest.raises(ModelError, match="n_sims"):
        sbc("chinchilla", small_data, n_sims=10.5)
    with pytest.raises(ModelError, match="draws"):
        sbc("chinchilla", small_data, draws=0)
    with pytest.raises(UnknownNameError, match="pooling"):
        sbc("chinchilla", small_data, pooling="some")
    with pytest.raises(ModelError, match="not both"):
        sbc(None, small_data, spec=FitSpec(), likelihood="normal")


def test_large_fit_warns_before_sampling(small_data):
    many = sb.ScalingData.from_frame(
        simulate_chinchilla(TRUE, n=400, sigma=0.02, seed=1).assign(family=[f"f{i % 50}" for i in range(400)]),
        N="N",
        D="D",
        loss="loss",
        family="family",
    )
    prep = prepare(many, pooling="partial")  # 50 families × 5 partially pooled latents: > 200 coordinates
    with pytest.warns(LargeFitWarning, match="coordinates"):
        warn_if_large(prep, sampler_config(), "test fit")
    with warnings.catch_warnings():
        warnings.simplefilter("error", LargeFitWarning)
        warn_if_large(prepare(small_data), sampler_config(), "small fit")  # 40 runs, 7 coordinates: silent


# ------------------------------------------------------------------------------------------------------ padding
def test_padding_rule():
    assert [pad_size(n) for n in (1, 8, 9, 40, 45, 128, 129, 240, 565, 100_000)] == [
        8,
        8,
        16,
        40,
        48,
        128,
        144,
        240,
        576,
        106_496,
    ]
    sizes = [pad_size(n) for n in range(1, 5000)]
    # at most 7 rows of padding up to 128 runs, then under 12.5%
    assert all(0 <= s - n < max(8, n / 8) for n, s in zip(range(1, 5000), sizes, strict=True))
    assert len(set(sizes)) < 80  # few distinct compiled sizes
    np.testing.assert_array_equal(pad(np.array([1.0, 2.0]), 4, 0.0), [1.0, 2.0, 0.0, 0.0])
    with pytest.raises(ValueError):
        pad(np.ones(5), 4, 0.0)


# ------------------------------------------------------------------------------------------------ precision
def _x64_in_fresh_python(code: str, **env) -> str:
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    e = {k: v for k, v in os.environ.items() if k != "SCALEBAYES_X64"} | env
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=e, cwd=root, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    return out.stdout.strip()


def test_import_leaves_jax_precision_alone():
    code = "import jax, scalebayes as sb; a = jax.config.jax_enable_x64; sb.use_float64()\n"
    code += "print(a, jax.config.jax_enable_x64)"
    assert _x64_in_fresh_python(code) == "False True"


def test_opt_out_keeps_float32_and_refuses_float64_work():
    # SCALEBAYES_X64=0: a float64 fit is refused; a float32 fit runs whole (law, the cut noise refit after it, its
    # predictions and plans) in float32, with no warning that something asked for float64 and was truncated
    code = (
        "import jax, warnings, numpy as np, scalebayes as sb\n"
        "d = sb.datasets.load('chinchilla_epoch')\n"
        "try:\n    sb.fit(d, draws=10)\nexcept sb.errors.ModelError as e:\n    print('refused', 'float64' in str(e))\n"
        "warnings.filterwarnings('error', message='Explicitly requested dtype')\n"
        "p = sb.fit(d, dtype='float32', chains=1, warmup=60, draws=60, warn=False)\n"
        "n = p.run_noise()\n"
        "q = p.predict(7e10, 1.4e12)\n"
        "pl = p.plan([1e24])\n"
        "pr = p.prob_loss_below(2.0, 7e10, 1.4e12)\n"
        "print(p.noise_trend, n.sigma.dtype, p.posterior['alpha'].dtype)\n"
        "print(bool(np.isfinite(q['q0.5']).all() and np.isfinite(pl['L_q0.5']).all() and 0 <= pr <= 1))\n"
        "print(jax.config.jax_enable_x64)\n"
    )
    out = _x64_in_fresh_python(code, SCALEBAYES_X64="0").splitlines()
    assert out == ["refused True", "True float32 float32", "True", "False"]
