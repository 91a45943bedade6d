"""Which law for chinchilla_epoch? PSIS-LOO (interpolation) next to leave-largest-out (extrapolation).

    .venv/bin/python case_studies/backtests/compare_laws.py

Fits the Chinchilla, Kaplan and over-training (Gadre et al.) laws to all 240 runs and ranks them twice with
:func:`scalebayes.compare`: by PSIS-LOO ELPD of log loss (``method="loo"``, with Pareto-k counts), and by the log
predictive density of the largest 20% of runs (by compute) when each law is refitted on the rest
(``method="backtest"``). Writes ``results/compare_laws.md`` and ``results/compare_laws.json``.
"""

from __future__ import annotations

import json
import sys
import warnings
from pathlib import Path

import scalebayes as sb

HERE = Path(__file__).resolve().parent
OUT = HERE / "results"
FULL = dict(chains=4, warmup=500, draws=500)
LAWS = ("chinchilla", "kaplan", "overtrained")


def main() -> int:
    OUT.mkdir(parents=True, exist_ok=True)
    data = sb.datasets.load("chinchilla_epoch")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", sb.errors.SamplingWarning)
        posts = {law: sb.fit(data, law, seed=0, **FULL) for law in LAWS}
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            loo = sb.compare(posts)
        llo = sb.compare(posts, method="backtest", split="compute", holdout_fraction=0.2)
    notes = [str(w.message) for w in caught if "Pareto" in str(w.message)]
    cols_loo = ["rank", "elpd", "se", "p", "elpd_diff", "dse", "weight", "n_high_k", "max_k"]
    md = [
        "# Law comparison on chinchilla_epoch (240 runs)\n",
        "\n## PSIS-LOO (interpolation): ELPD of log loss, nats\n\n",
        _md(loo[cols_loo]),
        "\n" + ("\n".join(f"- warning: {n}" for n in notes) + "\n" if notes else ""),
        "\n## Leave-largest-out (extrapolation): the largest 20% of runs by compute, each law refitted on the rest\n\n",
        _md(llo),
        "\nelpd: summed log predictive density of the 48 held-out runs (nats of log loss); dse: s.e. of the paired "
        "difference to the best; coverage/width/ARE of the central 90% interval.\n",
    ]
    (OUT / "compare_laws.md").write_text("".join(md))
    (OUT / "compare_laws.json").write_text(
        json.dumps(
            {"loo": loo[cols_loo].to_dict(orient="index"), "backtest": llo.to_dict(orient="index")}, default=float
        )
    )
    print("".join(md))
    return 0


def _md(df) -> str:
    d = df.reset_index()
    head = "| " + " | ".join(map(str, d.columns)) + " |\n|" + "---|" * len(d.columns) + "\n"
    rows = []
    for _, r in d.iterrows():
        rows.append("| " + " | ".join(f"{v:.4g}" if isinstance(v, float) else str(v) for v in r) + " |")
    return head + "\n".join(rows) + "\n"


if __name__ == "__main__":
    sys.exit(main())
