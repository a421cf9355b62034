"""Issue 19: the image fits FarmIQ's compose files, checked by reading the Dockerfile (no Docker
engine runs here) against the compose lines the old service was run with and against the
lines docs/operations.md tells an operator to use."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from entrypoints.cli import ALL_REQUIRED, build_parser
from entrypoints.healthcheck import TIMEOUT_SEC
from entrypoints.settings import ConfigError, load_settings
from tests.dockerfile import image_command, stages

OPERATIONS = Path(__file__).resolve().parents[2] / "docs" / "operations.md"

# The service's block in FarmIQ_V02 cloud-layer/docker-compose.yml, as the Node service ran
# (the DD_* lines, networks and depends_on left out: they do not concern the image).
OLD_COMPOSE = """
cloud-reporting-export-service:
  build:
    context: ./cloud-reporting-export-service
    dockerfile: Dockerfile
    target: production
  ports:
    - "5129:3000"
  environment:
    - NODE_ENV=production
    - APP_PORT=3000
    - DATABASE_URL=postgresql://farmiq:farmiq_dev@postgres:5432/cloud_reporting_export
    - RABBITMQ_URL=amqp://farmiq:farmiq_dev@rabbitmq:5672
    - REPORT_DOWNLOAD_SECRET=dev-report-secret
    - EXPORT_ROOT=/data/exports
    - WORKER_CONCURRENCY=1
    - CLOUD_FEED_SERVICE_URL=http://cloud-feed-service:3000
  volumes:
    - report_exports_data:/data/exports
  healthcheck:
    test: [ "CMD", "wget", "--quiet", "--tries=1", "--spider", "http://localhost:3000/api/health" ]
"""
# ... and docker-compose.dev.yml builds the other target
OLD_DEV_TARGET = "development"


def _service(text: str) -> dict[str, Any]:
    block: dict[str, Any] = yaml.safe_load(text)["cloud-reporting-export-service"]
    return block


def _env(service: dict[str, Any]) -> dict[str, str]:
    pairs = (line.partition("=") for line in service["environment"])
    return {name: value for name, _, value in pairs}


def _resolve(value: str) -> str:
    """Compose's ``${VAR:-default}`` with nothing set: the default."""
    return re.sub(r"\$\{[A-Z_]+:-([^}]*)\}", r"\1", value)


def _docs_compose_block() -> dict[str, Any]:
    text = OPERATIONS.read_text()
    section = text.split("## Drop-in replacement in FarmIQ's compose", 1)[1].split("\n## ", 1)[0]
    first_yaml = section.split("```yaml\n", 1)[1].split("```", 1)[0]
    # the docs show the lines inside the service's block, indented as in the compose file
    return _service("cloud-reporting-export-service:\n" + first_yaml)


def _subcommands() -> set[str]:
    parser = build_parser()
    [commands] = [a for a in parser._actions if a.dest == "command"]
    assert commands.choices is not None
    return set(commands.choices)


def test_the_stages_compose_builds_exist_and_production_is_the_default_target() -> None:
    names = list(stages())
    targets = {_service(OLD_COMPOSE)["build"]["target"], OLD_DEV_TARGET}
    assert targets <= set(names), names
    assert names[-1] == "production"  # a plain `docker build` gives the production image


@pytest.mark.parametrize(
    ("stage", "command"),
    [
        ("production", ["reportsvc", "all"]),
        ("development", ["reportsvc", "all", "--reload"]),  # starts again on each edit
    ],
)
def test_each_target_runs_reportsvc_all_a_command_the_cli_has(
    stage: str, command: list[str]
) -> None:
    argv = image_command(stage)
    assert argv == command, argv
    assert argv[1] in _subcommands()
    build_parser().parse_args(argv[1:])  # the CLI takes its options as written


@pytest.mark.parametrize("stage", ["production", "development"])
def test_each_target_installs_wget_and_checks_health_with_reportsvc_healthcheck(
    stage: str,
) -> None:
    """The image's HEALTHCHECK suits `all`, `api` and `worker` alike (issue: it probed only
    /api/health, which a worker container fails and which never sees a stuck worker loop);
    wget stays for FarmIQ's compose healthcheck."""
    built = stages()[stage]
    installs = " ".join(built.runs())
    assert re.search(r"apt-get install [^&]*\bwget\b", installs), installs
    check = built.last("HEALTHCHECK") or ""
    options, _, command = check.partition(" CMD ")
    assert json.loads(command) == ["reportsvc", "healthcheck"], check
    assert "healthcheck" in _subcommands()
    # both probes (api, worker) may each take their whole timeout within Docker's
    timeout = re.search(r"--timeout=(\d+)s", options)
    assert timeout and int(timeout.group(1)) > 2 * TIMEOUT_SEC, options


def test_the_image_sets_no_port_so_that_port_alone_is_honoured() -> None:
    """ENV APP_PORT=5129 made the contract's `APP_PORT, else PORT, else 5129` a fixed 5129:
    `docker run -e PORT=8080` (Cloud Run, Heroku inject PORT) still listened on 5129."""
    for stage in ("production", "development"):
        assert "APP_PORT" not in stages()[stage].env(), stage
        assert "PORT" not in stages()[stage].env(), stage


def test_the_development_target_has_the_dev_extras_and_an_editable_install() -> None:
    installs = " ".join(stages()["development"].runs())
    assert "--require-hashes -r requirements-dev.lock" in installs
    assert "--no-deps --no-build-isolation -e ./src/reportcore -e ." in installs


def test_the_old_compose_healthcheck_is_answerable_by_the_image_as_written() -> None:
    service = _service(OLD_COMPOSE)
    kind, program, *args = service["healthcheck"]["test"]
    assert kind == "CMD"
    assert program == "wget"  # installed: the test above
    url = args[-1]
    port = _env(service)["APP_PORT"]
    assert url == f"http://localhost:{port}/api/health"
    assert service["ports"] == [f"5129:{port}"]


def test_the_old_compose_environment_is_enough_but_for_jwt_secret_which_is_asked_for() -> None:
    env = _env(_service(OLD_COMPOSE))
    with pytest.raises(ConfigError) as raised:
        load_settings(env, required=ALL_REQUIRED)
    assert str(raised.value).startswith("JWT_SECRET is required but not set: add JWT_SECRET")
    assert "identity service" in str(raised.value)
    settings = load_settings(env | {"JWT_SECRET": "x" * 32}, required=ALL_REQUIRED)
    assert settings.port == 3000
    assert settings.export_root == "/data/exports"


def test_the_compose_lines_in_the_docs_build_the_image_and_configure_it_for_farmiq() -> None:
    docs = _docs_compose_block()
    old = _service(OLD_COMPOSE)
    assert docs["build"]["target"] in stages()
    assert docs["healthcheck"]["test"] == old["healthcheck"]["test"]  # kept as written
    env = {name: _resolve(value) for name, value in _env(docs).items()}
    settings = load_settings(env, required=ALL_REQUIRED)
    assert settings.port == 3000
    # FarmIQ's refreshed and SSO tokens carry no iss/aud
    assert settings.jwt_issuer is None and settings.jwt_audience is None
    assert settings.telemetry_service_url and settings.weighvision_url
    # every old line but NODE_ENV is still there with its value
    kept = {k: v for k, v in _env(old).items() if k != "NODE_ENV"}
    assert kept.items() <= {k: _resolve(v) for k, v in _env(docs).items()}.items()
