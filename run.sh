#!/usr/bin/env bash
# One entry point for set-up and the project's jobs; see README.md.
#   bash run.sh demo   - set up, then fit the bundled Chinchilla data and write the case-study report
#   bash run.sh test   - set up, then run the default test suite
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
bash "$root/scripts/env.sh"
py="${SCALEBAYES_VENV:-$root/.venv}/bin/python"
cmd="${1:-demo}"; shift || true
case "$cmd" in
  demo) exec "$py" "$root/case_studies/chinchilla_replication/run.py" "$@" ;;
  test)
    cd "$root"
    # Test modules run in parallel processes (pytest-xdist), whole modules per process so that their fixtures'
    # fits are made once; most of the suite's time is XLA compiling one program at a time on one core.
    exec "$py" -m pytest -q -n auto --maxprocesses 4 --dist loadfile "$@" ;;
  bench) exec "$py" "$root/benchmarks/run.py" "$@" ;;
  *) echo "usage: bash run.sh {demo|test|bench} [args...]" >&2; exit 2 ;;
esac
