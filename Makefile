# Two commands from a fresh clone: `make run` and `make test`. Only python3 is needed.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat requirements-pip.lock requirements-dev.lock pyproject.toml | cksum | cut -d' ' -f1)
PIP := $(BIN)/python -m pip --disable-pip-version-check

.PHONY: run test venv lint typecheck unit integration faults test-faults bench-smoke bench lock clean mutate install-check

# The venv's own pip (23.0 on Debian 12) is first replaced by the locked one, hash-checked: the
# set-up then reads the locks the same way whatever pip the machine brings and whatever the index
# has published since (requirements-pip.lock says why)
$(STAMP): requirements-pip.lock requirements-dev.lock pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --require-hashes -r requirements-pip.lock
	$(PIP) install -q --require-hashes -r requirements-dev.lock
	$(PIP) install -q --no-deps --no-build-isolation -e src/reportcore -e .
	rm -f $(VENV)/.installed-*
	touch $@

venv: $(STAMP)

## the embedded default: API + worker in one process, no PostgreSQL/RabbitMQ needed
run: venv
	$(BIN)/reportsvc dev

## everything CI checks: lint, types, architecture, the plain installs, the whole suite with coverage
test: venv lint typecheck install-check
	@# the services' suites (in two processes) beside the unit suite, which runs under a local
	@# time 7 h off UTC, where a naive instant read as local time shows (tests/suite.sh)
	PYTHON=$(BIN)/python tests/suite.sh
	$(MAKE) --no-print-directory bench-smoke

lint: venv
	$(BIN)/ruff check src tests bench mutation
	$(BIN)/ruff format --check src tests bench mutation
	$(BIN)/lint-imports

typecheck: venv
	$(BIN)/mypy

## `pip install .` and `pip install src/reportcore` in fresh venvs with the stock pip, then
## pip check and a clean git status (tests/install_check.sh)
install-check:
	tests/install_check.sh

unit: venv
	$(BIN)/python -m pytest -q tests/unit

integration: venv
	$(BIN)/python -m pytest -q tests/integration

## the fault-injection suite alone (make test runs it too)
faults test-faults: venv
	$(BIN)/python -m pytest -q tests/faults

## mutation testing of reportcore against tests/unit, then its score (docs/mutation.md);
## one module: make mutate MUTANTS='reportcore.export.*'
MUTANTS ?=
MUTATE_JOBS ?= 2
mutate: venv
	rm -rf mutants
	$(BIN)/mutmut run --max-children $(MUTATE_JOBS) $(MUTANTS)
	$(BIN)/python mutation/score.py

bench-smoke: venv
	@if [ -x bench/smoke.sh ]; then PYTHON=$(BIN)/python bench/smoke.sh; else echo "bench-smoke: no benchmarks yet"; fi

## regenerate the locks after changing dependencies in pyproject.toml (needs uv): the dev lock
## (runtime + extras + tools, what `make venv` installs) first, then the runtime lock (what the
## image installs: the service with both extras) constrained to the same versions. The core comes
## from the checkout, never from a lock
lock:
	uv pip compile pyproject.toml --extra dev --python-version 3.11 --generate-hashes \
		--no-emit-package farmiq-reportcore -o requirements-dev.lock
	uv pip compile pyproject.toml --extra s3 --extra tracing --python-version 3.11 \
		--generate-hashes --no-emit-package farmiq-reportcore \
		-c requirements-dev.lock -o requirements.lock
	echo hatchling | uv pip compile - --python-version 3.11 --generate-hashes \
		-c requirements-dev.lock -o requirements-build.lock

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .coverage mutants
