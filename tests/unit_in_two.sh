#!/bin/sh
# The unit suite in two pytest processes side by side, its files dealt alternately: the suite
# is CPU-bound (hypothesis) and needs no services, so on two cores it takes about half as long.
# Arguments go to both runs; the second run's output follows the first's; either failing fails.
set -u
python=${PYTHON:-.venv/bin/python}
files=$(ls tests/unit/test_*.py | LC_ALL=C sort)
odd=$(printf '%s\n' "$files" | awk 'NR % 2 == 1')
even=$(printf '%s\n' "$files" | awk 'NR % 2 == 0')
log=$(mktemp)
trap 'rm -f "$log"' EXIT
# shellcheck disable=SC2086 # file lists: one word a file (no spaces in test file names)
"$python" -m pytest -q -p no:cacheprovider "$@" $even >"$log" 2>&1 &
other=$!
# shellcheck disable=SC2086
"$python" -m pytest -q -p no:cacheprovider "$@" $odd
first=$?
wait "$other"
second=$?
echo "--- the other half of tests/unit:"
cat "$log"
[ "$first" -eq 0 ] && [ "$second" -eq 0 ]
