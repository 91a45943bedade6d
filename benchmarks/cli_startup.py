"""Command-line start-up with the persistent compilation cache (issue #15): first against second call.

    .venv/bin/python benchmarks/cli_startup.py            # ~2-4 min on a 2-core CPU

Runs, each as a fresh ``python -m scalebayes`` process with a fresh, empty cache folder (``XDG_CACHE_HOME`` in a
temporary folder; ``JAX_COMPILATION_CACHE_DIR`` unset so the command line picks its own folder):

- ``fit --no-calibrate`` of ~60 runs of the bundled Chinchilla CSV, 2 chains × (100 warm-up + 100 draws), twice with
  the same shape (the second reads the compiled sampler from the cache), then once more with the cache switched off
  (``SCALEBAYES_COMPILATION_CACHE=0``) to show the same call uncached;
- the same ``fit`` with calibration (the default: four leave-largest-out refits, same compiled program), warm cache;
- ``predict`` at three points from the posterior the first fit wrote, twice (same query);
- ``python -c "import scalebayes"``: the floor every command pays before doing anything;
- a breakdown of a warm-cache ``fit --no-calibrate`` and ``predict`` in one instrumented process (``--breakdown``):
  import, the sampler's tracing and lowering (Python), its compilation (read from the cache), when sampling starts
  (counted from the process's start), sampling, the report.

Wall seconds of the whole process (``time.perf_counter`` around ``subprocess.run``), including writing the report;
"cpu" is the child's user+system CPU seconds (a wall far above cpu means it waited for a core held by others).
Prints a Markdown table.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
BUNDLED = ROOT / "scalebayes" / "bundled" / "chinchilla_epoch" / "svg_extracted_data.csv"
FIT = ["--N", "Model Size", "--C", "Training FLOP", "--loss", "loss", "--chains", "2", "--warmup", "100"]
FIT += ["--draws", "100", "--seed", "0", "--quiet"]
NO_CAL = ["--no-calibrate"]


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
            (
                "fit --no-calibrate, first call (empty cache)",
                _timed([*py, "fit", str(csv), *FIT, *NO_CAL, "--out", str(tmp / "out1")], env),
            ),
            (
                "fit --no-calibrate, second call (same shape)",
                _timed([*py, "fit", str(csv), *FIT, *NO_CAL, "--out", str(tmp / "out2")], env),
            ),
            (
                "fit --no-calibrate, cache off",
                _timed(
                    [*py, "fit", str(csv), *FIT, *NO_CAL, "--out", str(tmp / "out3")],
                    {**env, "SCALEBAYES_COMPILATION_CACHE": "0"},
                ),
            ),
            (
                "fit (calibrating, the default), warm cache",
                _timed([*py, "fit", str(csv), *FIT, "--out", str(tmp / "o4")], env),
            ),
            ("predict, first call", _timed(predict, env)),
            ("predict, second call (same query)", _timed(predict, env)),
        ]
        me = [sys.executable, str(Path(__file__).resolve()), "--breakdown"]
        parts = {
            "fit": _breakdown([*me, "fit", str(csv), *FIT, *NO_CAL, "--out", str(tmp / "out5")], env),
            "predict": _breakdown([*me, *predict[3:]], env),
        }
        size = sum(f.stat().st_size for f in (tmp / "cache").rglob("*") if f.is_file())
    print(f"CLI start-up, {os.cpu_count()} CPU cores; compilation cache {size / 1e6:.1f} MB after these runs\n")
    print("| command | wall (s) | cpu (s) |\n|---|---|---|")
    for name, (wall, cpu) in rows:
        print(f"| {name} | {wall:.1f} | {cpu:.1f} |")
    print("\nWarm-cache breakdown (one instrumented process each, wall / cpu seconds):\n")
    for name, t in parts.items():
        print(f"- {name}: " + ", ".join(f"{k} {w:.2f} / {c:.2f}" for k, (w, c) in t.items()))


def _breakdown(argv: list[str], env: dict) -> dict:
    """The ``--breakdown`` child's timings (a JSON line on stderr)."""
    proc = subprocess.run(argv, capture_output=True, text=True, env=env, cwd=ROOT)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed ({proc.returncode}):\n{proc.stderr}")
    line = [ln for ln in proc.stderr.splitlines() if ln.startswith("BREAKDOWN ")][-1]
    return json.loads(line[len("BREAKDOWN ") :])


def _clock() -> tuple[float, float]:
    return time.perf_counter(), time.process_time()


def _since(t0: tuple[float, float]) -> list[float]:
    """[wall, cpu] seconds since ``t0`` (a :func:`_clock`)."""
    w, c = _clock()
    return [round(w - t0[0], 3), round(c - t0[1], 3)]


def breakdown(argv: list[str]) -> None:
    """Run ``scalebayes argv`` in this process, timing (wall and process cpu) the import, getting the sampler's
    programs (read from the program store, or traced and exported), compiling them (from the compilation cache)
    up to the first sampler loop's dispatch, the sampling, the report, the whole command, and when sampling started
    (counted from this process's start, import included: what a user waits before the sampler runs)."""
    t0 = _clock()
    import jax

    import scalebayes.cli as cli
    import scalebayes.sampler.compiled as comp

    times = {"import": _since(t0)}
    programs, drive = comp.Stepped.programs, comp.drive

    def timed_programs(self, *a):
        t = _clock()
        out = programs(self, *a)
        times.setdefault("sampler programs (stored or traced)", _since(t))
        return out

    def timed_drive(pieces, *a, **k):
        t, first = _clock(), []

        def advance(*args):
            out = pieces.advance(*args)
            if not first:  # dispatched: init and advance are compiled, the loop runs
                first.append(1)
                times.setdefault("sampler compile (from cache)", _since(t))
                times.setdefault("sampling starts at", _since(t0))
            return out

        out = jax.block_until_ready(drive(pieces._replace(advance=advance), *a, **k))
        times.setdefault("sampling", _since(t))
        return out

    comp.Stepped.programs, comp.drive = timed_programs, timed_drive
    write_report = cli.write_report

    def timed_report(*a, **k):
        t = _clock()
        out = write_report(*a, **k)
        times["report"] = _since(t)
        return out

    cli.write_report = timed_report
    t1 = _clock()
    cli.main(argv)
    times["command after import"] = _since(t1)
    times["whole process"] = _since(t0)
    print("BREAKDOWN " + json.dumps(times), file=sys.stderr)


if __name__ == "__main__":
    if sys.argv[1:2] == ["--breakdown"]:
        breakdown(sys.argv[2:])
    else:
        main()
