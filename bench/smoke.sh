#!/usr/bin/env bash
# The fast smoke run of every benchmark (make test calls it): each bench/*.py with --smoke must
# finish in about 10 seconds and exit 0; the figures it prints are not judged here.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
status=0
for script in bench/*.py; do
  case "$(basename "$script")" in _*|fake_*|common.py) continue ;; esac
  echo "== smoke: $script"
  if ! timeout 120 "$PY" "$script" --smoke; then
    echo "bench-smoke: $script failed" >&2
    status=1
  fi
done
exit $status
