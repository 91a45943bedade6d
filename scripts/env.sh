#!/usr/bin/env bash
# Creates (once) the project's virtual environment in .venv with a Python >= 3.12 found on this machine,
# and installs scalebayes with its test extras into it. Idempotent: a second run only re-checks.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${SCALEBAYES_VENV:-$root/.venv}"

works() { "$1" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 12) else 1)' >/dev/null 2>&1; }

find_python() {
  local c
  # A shim (pyenv) may exist on PATH yet refuse to run, so every candidate is tried, not just looked up.
  for c in "${SCALEBAYES_PYTHON:-}" python3.14 python3.13 python3.12 python3 python; do
    [ -n "$c" ] && command -v "$c" >/dev/null 2>&1 && works "$c" && { command -v "$c"; return 0; }
  done
  for c in "$HOME"/.pyenv/versions/3.1[2-9]*/bin/python3 /usr/local/bin/python3.1[2-9] /usr/bin/python3.1[2-9]; do
    [ -x "$c" ] && works "$c" && { echo "$c"; return 0; }
  done
  if command -v pyenv >/dev/null 2>&1; then
    for c in $(pyenv versions --bare 2>/dev/null | grep -E '^3\.(1[2-9])' | sort -rV); do
      c="$(pyenv root)/versions/$c/bin/python3"; [ -x "$c" ] && works "$c" && { echo "$c"; return 0; }
    done
  fi
  return 1
}

stamp="$venv/.scalebayes-installed"
if [ ! -x "$venv/bin/python" ] || ! works "$venv/bin/python"; then
  py="$(find_python)" || { echo "scalebayes: no Python >= 3.12 found (set SCALEBAYES_PYTHON=/path/to/python3.12)" >&2; exit 1; }
  echo "scalebayes: creating $venv with $py ($("$py" --version 2>&1))" >&2
  "$py" -m venv "$venv"
  rm -f "$stamp"
fi
if [ ! -f "$stamp" ] || [ "$root/pyproject.toml" -nt "$stamp" ]; then
  "$venv/bin/python" -m pip install --quiet --upgrade pip
  "$venv/bin/python" -m pip install --quiet -e "$root[test]"
  touch "$stamp"
fi
