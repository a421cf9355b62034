#!/bin/sh
# The whole suite with coverage of reportcore, in three pytest processes side by side (make test):
# - tests/integration and tests/faults (real PostgreSQL, RabbitMQ, S3, processes of the service:
#   about half of their time is spent waiting, one core of the two busy on average) in two
#   processes, their files dealt alternately, in the machine's own local time;
# - tests/unit (CPU-bound, no services) under TZ=Asia/Bangkok, a local time 7 h off UTC: a naive
#   instant read as local time shows there.
# Each writes its own coverage data; they are combined and must reach 95 %. Any failing fails
# the run; each one's output is printed whole, one after the other. Arguments go to every run.
set -u
python=${PYTHON:-.venv/bin/python}
cov="--cov=reportcore --cov-branch --cov-report="
services=$(ls tests/integration/test_*.py tests/faults/test_*.py | LC_ALL=C sort)
services_a=$(printf '%s\n' "$services" | awk 'NR % 2 == 1')
services_b=$(printf '%s\n' "$services" | awk 'NR % 2 == 0')
logs=$(mktemp -d)
trap 'rm -rf "$logs"' EXIT
rm -f .coverage .coverage.*
# shellcheck disable=SC2086 # option and file lists: one word each (no spaces in them)
COVERAGE_FILE=.coverage.services-a "$python" -m pytest -q -p no:cacheprovider $cov "$@" \
  $services_a >"$logs/services-a" 2>&1 &
pid_a=$!
# shellcheck disable=SC2086
COVERAGE_FILE=.coverage.services-b "$python" -m pytest -q -p no:cacheprovider $cov "$@" \
  $services_b >"$logs/services-b" 2>&1 &
pid_b=$!
# shellcheck disable=SC2086
TZ=Asia/Bangkok COVERAGE_FILE=.coverage.unit "$python" -m pytest -q -p no:cacheprovider $cov \
  "$@" tests/unit >"$logs/unit" 2>&1
status_unit=$?
wait "$pid_a"
status_a=$?
wait "$pid_b"
status_b=$?
echo "--- tests/unit (TZ=Asia/Bangkok):"
cat "$logs/unit"
echo "--- tests/integration and tests/faults, files 1, 3, 5, ...:"
cat "$logs/services-a"
echo "--- tests/integration and tests/faults, files 2, 4, 6, ...:"
cat "$logs/services-b"
echo "--- coverage of reportcore, the three runs together:"
"$python" -m coverage combine -q .coverage.services-a .coverage.services-b .coverage.unit &&
  "$python" -m coverage report -m --fail-under=95
status_coverage=$?
[ "$status_unit" -eq 0 ] && [ "$status_a" -eq 0 ] && [ "$status_b" -eq 0 ] &&
  [ "$status_coverage" -eq 0 ]
