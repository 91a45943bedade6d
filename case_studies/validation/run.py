"""Simulation-based calibration of the shipped laws (full run; the test suite runs a small one).

    .venv/bin/python case_studies/validation/run.py            # 200 simulations per check (~1 h on 2 CPU cores)
    .venv/bin/python case_studies/validation/run.py --quick    # 20 simulations per check, a smoke test

Checks: the Chinchilla law with complete pooling (one family) and with partial pooling (four families), every
other shipped law (Kaplan, compute, over-training, broken power law, data-constrained; complete pooling), and the
deliberately broken pipelines (wrong noise scale, prior mismatch, tempered likelihood) on the Chinchilla design,
which must fail. Designs are the real run layouts of the bundled data (subsampled to 60-64 runs so that 200 fits
stay practical; the data-constrained law gets the same runs with a synthetic number of epochs, there being no
bundled repeated-data runs). Writes ``results/sbc.json``, ``results/sbc.md``
and one ECDF-difference plot per check (``results/sbc_<check>.png``).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

import scalebayes as sb  # noqa: E402
from scalebayes.validation import SBCResult, sbc  # noqa: E402

#: Options of a check that are SBC's or the sampler's; the rest are the model's (a FitSpec).
RUN_OPTIONS = ("warmup", "draws", "max_tree_depth", "corrupt")

HERE = Path(__file__).resolve().parent
OUT = HERE / "results"


def designs() -> dict:
    chin = sb.datasets.load("chinchilla_epoch")
    single = chin.subset(np.arange(len(chin)) % 4 == 0)  # 60 runs over the whole (N, D) range
    por = sb.datasets.load("porian_isoflop")
    fams = ["rw/base/short/kaplan", "rw/tuned/short/const", "owt2/base/short/kaplan", "owt2/tuned/short/const"]
    por = por.select_families(fams)
    keep = np.zeros(len(por), bool)
    for f in fams:  # 16 runs per family, spread over its compute range
        idx = np.flatnonzero(por.frame["family"].to_numpy() == f)
        idx = idx[np.argsort(por.C[idx], kind="stable")]
        keep[idx[np.linspace(0, len(idx) - 1, 16).round().astype(int)]] = True
    # The data-constrained law needs unique tokens U: the same 60 runs, each repeating its data 1, 2, 4, 8 or 16
    # times (cycled). A synthetic layout (no bundled real repeated-data runs), used only to check the sampler.
    rep = single.frame[["N", "D"]].copy()
    rep["U"] = rep["D"] / np.resize([1.0, 2.0, 4.0, 8.0, 16.0], len(rep))
    return {"single": single, "families": por.subset(keep), "repeated": rep}


CHECKS = [
    # name, law, design, options, must_pass
    ("chinchilla_complete", "chinchilla", "single", {}, True),
    ("chinchilla_partial", "chinchilla", "families", {"pooling": "partial"}, True),
    # the same with longer chains and deeper trees: the default SBC settings (2 x 300/250, depth 8) leave a third of
    # the hierarchical fits with chains that disagree (R-hat > 1.05), which shows up as low per-quantity p-values
    (
        "chinchilla_partial_long",
        "chinchilla",
        "families",
        {"pooling": "partial", "warmup": 500, "draws": 500, "max_tree_depth": 10},
        True,
    ),
    ("kaplan_complete", "kaplan", "single", {}, True),
    ("compute_complete", "compute", "single", {}, True),
    ("overtrained_complete", "overtrained", "single", {}, True),
    ("broken_power_complete", "broken_power", "single", {}, True),
    ("data_constrained_complete", "data_constrained", "repeated", {}, True),
    ("broken_noise", "chinchilla", "single", {"corrupt": "noise"}, False),
    ("broken_prior", "chinchilla", "single", {"corrupt": "prior"}, False),
    ("broken_tempered", "chinchilla", "single", {"corrupt": "tempered"}, False),
]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--quick", action="store_true", help="20 simulations per check")
    ap.add_argument("--n-sims", type=int, default=None)
    ap.add_argument("--only", nargs="*", default=None, help="names of checks to run")
    ap.add_argument("--replot", action="store_true", help="redraw plots and tables from the saved ranks (no sampling)")
    args = ap.parse_args(argv)
    if args.replot:
        return replot()
    n_sims = args.n_sims or (20 if args.quick else 200)
    OUT.mkdir(parents=True, exist_ok=True)
    des = designs()
    path = OUT / "sbc.json"
    results = json.loads(path.read_text()) if path.exists() and args.only else {}
    for name, law, design, opts, must_pass in CHECKS:
        if args.only and name not in args.only:
            continue
        t = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            spec = sb.FitSpec(law=law, **{k: v for k, v in opts.items() if k not in RUN_OPTIONS})
            run_opts = {k: v for k, v in opts.items() if k in RUN_OPTIONS}
            r = sbc(spec, des[design], n_sims=n_sims, seed=2024, **run_opts)
        s = r.summary()
        s["expected"] = "pass" if must_pass else "fail"
        s["as_expected"] = bool(r.passed(0.01) == must_pass)
        s["wall_seconds"] = time.perf_counter() - t
        results[name] = s
        r.ranks.to_csv(OUT / f"sbc_{name}_ranks.csv", index=False)
        r.sims.to_csv(OUT / f"sbc_{name}_sims.csv", index=False)
        plt.close(r.plot(OUT / f"sbc_{name}.png"))
        print(
            f"{name}: n_sims={r.n_sims} adjusted p={s['p_value_adjusted']:.3g} "
            f"({'pass' if r.passed(0.01) else 'FAIL'}; expected {s['expected']}) "
            f"divergent sims {s['divergent_sims']} in {s['wall_seconds']:.0f}s",
            flush=True,
        )
        path.write_text(json.dumps(results, indent=1, default=float))
    (OUT / "sbc.md").write_text(markdown(results))
    print(markdown(results))
    return 0 if all(v["as_expected"] for v in results.values()) else 1


def replot() -> int:
    """Redraw every check's ECDF-difference plot from its saved ranks (``results/sbc_<check>_ranks.csv``)."""
    results = json.loads((OUT / "sbc.json").read_text())
    for name, s in results.items():
        ranks = pd.read_csv(OUT / f"sbc_{name}_ranks.csv")
        sims = pd.read_csv(OUT / f"sbc_{name}_sims.csv")
        r = SBCResult(s["law"], s["pooling"], ranks, ranks * 0.0, sims, n_rank=int(s["n_rank"]), config=s["config"])
        plt.close(r.plot(OUT / f"sbc_{name}.png"))
        s["sims_r_hat_over_1.05"] = int((sims["max_r_hat"] > 1.05).sum())
    (OUT / "sbc.json").write_text(json.dumps(results, indent=1, default=float))
    (OUT / "sbc.md").write_text(markdown(results))
    print(markdown(results))
    return 0


def markdown(results: dict) -> str:
    lines = [
        "| check | law | pooling | n_sims | adjusted p (pot_c) | smallest per-quantity p | sims with divergences |"
        " sims with R-hat > 1.05 | expected | outcome |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, s in results.items():
        pmin = min(s["p_pot_c"], key=s["p_pot_c"].get)
        outcome = "pass" if s["passed_at_0.01"] else "fail"
        lines.append(
            f"| {name} | {s['law']} | {s['pooling']} | {s['n_sims']} | {s['p_value_adjusted']:.3g} | "
            f"{pmin} {s['p_pot_c'][pmin]:.3g} | {s['divergent_sims']} | {s.get('sims_r_hat_over_1.05', '?')} | "
            f"{s['expected']} | {outcome}"
            f"{'' if s['as_expected'] else ' (UNEXPECTED)'} |"
        )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
