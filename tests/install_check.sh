#!/usr/bin/env bash
# `pip install .` and `pip install src/reportcore` as a user runs them: fresh venvs with the pip
# that `python3 -m venv` brings (never upgraded here), no lock, build isolation as pip does it.
# Then pip check, the command answers, the core venv holds the core and msgspec alone, and the
# checkout is exactly as it was (no build/, no .egg-info written into src/). `make test` runs it.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
before=$(git status --porcelain --ignored -- src)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

"$PYTHON" -m venv "$work/service"
echo "install-check: $("$work/service/bin/pip" --version | cut -d' ' -f1-2) as python3 -m venv brings it"
"$work/service/bin/pip" install -q --disable-pip-version-check . 2>&1 | grep -v "is ignored" || true
"$work/service/bin/pip" check
version=$("$work/service/bin/reportsvc" --version)
"$work/service/bin/python" -m reportsvc --version >/dev/null
dists=$("$work/service/bin/pip" list --format=freeze --disable-pip-version-check | grep -cvE '^(pip|setuptools)==')
size=$(du -sm "$work/service/lib" | cut -f1)
echo "install-check: pip install . -> $version; $dists distributions, ${size} MB of site-packages"
# the default install is lean: the S3 store and tracing are extras
for absent in boto3 botocore opentelemetry; do
  if "$work/service/bin/python" -c "import $absent" 2>/dev/null; then
    echo "install-check: $absent is installed by default; it belongs to an extra" >&2; exit 1
  fi
done

"$PYTHON" -m venv "$work/core"
"$work/core/bin/pip" install -q --disable-pip-version-check ./src/reportcore 2>&1 | grep -v "is ignored" || true
"$work/core/bin/pip" check
core=$("$work/core/bin/pip" list --format=freeze --disable-pip-version-check | grep -vE '^(pip|setuptools)==' | cut -d= -f1 | sort | tr '\n' ' ')
if [ "$core" != "farmiq-reportcore msgspec " ]; then
  echo "install-check: the core venv holds $core; want farmiq-reportcore and msgspec alone" >&2; exit 1
fi
"$work/core/bin/python" -c "import reportcore, reportcore.testing"
echo "install-check: pip install src/reportcore -> $core"

after=$(git status --porcelain --ignored -- src)
if [ "$before" != "$after" ]; then
  echo "install-check: installing wrote into src/:" >&2
  diff <(echo "$before") <(echo "$after") >&2 || true
  exit 1
fi
if [ -n "$(git status --porcelain)" ] && [ -z "${ALLOW_DIRTY:-}" ]; then
  echo "install-check: git status is not clean after the installs:" >&2
  git status --porcelain >&2; exit 1
fi
echo "install-check: ok, the checkout is as it was"
