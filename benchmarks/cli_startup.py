"""Command-line start-up with the persistent compilation cache (issue #15): first against second call.

    .venv/bin/python benchmarks/cli_startup.py            # ~2-4 min on a 2-core CPU

Runs, each as a fresh ``python -m scalebayes`` process with a fresh, empty cache folder (``XDG_CACHE_HOME`` in a
temporary folder; ``JAX_COMPILATION_CACHE_DIR`` unset so the command line picks its own folder):

- ``fit`` of ~60 runs of the bundled Chinchilla CSV, 2 chains × (100 warm-up + 100 draws), twice with the same
  shape (the second reads the compiled sampler from the cache), then once more with the cache switched off
  (``SCALEBAYES_COMPILATION_CACHE=0``) to show the same call uncached;
- ``predict`` at three points from the posterior the first fit wrote, twice (same query);
- ``python -c "import scalebayes"``: the floor every command pays before doing anything.

Wall seconds of the whole process (``time.perf_counter`` around ``subprocess.run``), including writing the report;
"cpu" is the child's user+system CPU seconds (a wall far above cpu means it waited for a core held by others).
Prints a Markdown table.
"""

from __future__ import annotations

import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
BUNDLED = ROOT / "scalebayes" / "data" / "chinchilla_epoch" / "svg_extracted_data.csv"
FIT = ["--N", "Model Size", "--C", "Training FLOP", "--loss", "loss", "--chains", "2", "--warmup", "100"]
FIT += ["--draws", "100", "--seed", "0", "--quiet"]


def _timed(argv: list[str], env: dict) -> tuple[float, float]:
    """(wall, cpu) seconds of one child process; raises when it fails."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    proc = subprocess.run(argv, capture_output=True, text=True, env=env, cwd=ROOT)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed ({proc.returncode}):\n{proc.stderr}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        csv = tmp / "runs.csv"
        df = pd.read_csv(BUNDLED)
        df.drop(df["loss"].nlargest(5).index).iloc[::4].to_csv(csv, index=False)
        env = {k: v for k, v in os.environ.items() if k != "JAX_COMPILATION_CACHE_DIR"}
        env.update(XDG_CACHE_HOME=str(tmp / "cache"), MPLBACKEND="Agg", PYTHONPATH=str(ROOT))
        py = [sys.executable, "-m", "scalebayes"]
        post = tmp / "out1" / "posterior.nc"
        predict = [*py, "predict", str(post), "--N", "1e9", "7e10", "1e11", "--D", "2e10", "1.4e12", "2e12"]
        rows = [
            ("import scalebayes", _timed([sys.executable, "-c", "import scalebayes"], env)),
            ("fit, first call (empty cache)", _timed([*py, "fit", str(csv), *FIT, "--out", str(tmp / "out1")], env)),
            ("fit, second call (same shape)", _timed([*py, "fit", str(csv), *FIT, "--out", str(tmp / "out2")], env)),
            (
                "fit, cache off",
                _timed(
                    [*py, "fit", str(csv), *FIT, "--out", str(tmp / "out3")],
                    {**env, "SCALEBAYES_COMPILATION_CACHE": "0"},
                ),
            ),
            ("predict, first call", _timed(predict, env)),
            ("predict, second call (same query)", _timed(predict, env)),
        ]
        size = sum(f.stat().st_size for f in (tmp / "cache").rglob("*") if f.is_file())
    print(f"CLI start-up, {os.cpu_count()} CPU cores; compilation cache {size / 1e6:.1f} MB after these runs\n")
    print("| command | wall (s) | cpu (s) |\n|---|---|---|")
    for name, (wall, cpu) in rows:
        print(f"| {name} | {wall:.1f} | {cpu:.1f} |")


if __name__ == "__main__":
    main()
