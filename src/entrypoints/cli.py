"""``reportsvc``: the one console script. Each command is a few lines over the container.

Every process checks the settings it cannot run without before it does anything else; a
missing or malformed one prints ``reportsvc: configuration error: <message>`` and exits 2.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import threading
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from reportcore.access import Role
from reportcore.errors import StorageFailure
from reportsvc import __version__

from .commands import (
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_TERMINATED,
    EXIT_USAGE,
    Failure,
)
from .commands import settings_for as _settings
from .containers import check_upstream_tls
from .export_flags import add_option_flags, add_request_flags
from .local import TOKEN_REQUIRED, Stopped, cmd_export, cmd_token
from .runtime.serving import PortUnavailable, check_ports, connection_limits, relog, serve
from .runtime.tracing import setup_tracing
from .settings import (
    SETTING_TO_VARIABLE,
    UPSTREAM_URLS,
    ConfigError,
    Settings,
    fallbacks,
    variable_of,
)

API_REQUIRED = ("database_url", "rabbitmq_url", "download_secret", "jwt_secret")
WORKER_REQUIRED = (
    "database_url",
    "rabbitmq_url",
    # a worker runs every job type, so it needs every upstream
    *UPSTREAM_URLS.values(),
)
MIGRATE_REQUIRED = ("database_url",)
# One container for everything (FarmIQ's compose, small deployments): what the API needs. The
# upstream URLs are not required, as the old service ran with the feed URL alone: a job whose
# upstream is not configured fails UPSTREAM_UNAVAILABLE naming the variable, and the start
# warns about each one missing.
ALL_REQUIRED = API_REQUIRED


# --- commands ---


def _app_port(settings: Settings, env: Mapping[str, str]) -> tuple[str, int, str]:
    return (settings.host, settings.port, variable_of("port", env))


def _probe_ports(settings: Settings) -> list[tuple[str, int, str]]:
    """The probes' listen, if any: ``WORKER_HTTP_PORT=0`` turns them off."""
    port = settings.worker_http_port
    return [(settings.worker_http_host, port, "WORKER_HTTP_PORT")] if port else []


def _traced_app(app: Any, tracing: Any) -> Any:
    """``app`` with a server span per request when tracing is on (OpenTelemetry stays
    unloaded when it is off)."""
    if tracing is not None:
        from .api.spans import ServerSpans

        app.asgi_handler = ServerSpans(app.asgi_handler, tracing.tracer)
    return app


def _check_store(container: Any, *, writes: bool = True) -> None:

    from .containers import check_file_store

    try:
        check_file_store(container, writes=writes)
    except StorageFailure as exc:
        raise Failure(exc.message) from exc


def cmd_api(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    """Serve the HTTP API."""
    settings = _settings(env, API_REQUIRED)
    check_ports([_app_port(settings, env)])
    tracing = setup_tracing(env, command="api", database=True)
    from .api import create_app
    from .containers import service_container

    container = service_container(settings, tracing, "api")
    container.init_resources()
    try:
        _check_store(container, writes=False)  # the api only reads files
        app = _traced_app(create_app(container), tracing)
        relog(settings)
        serve(app, settings.host, settings.port, limits=connection_limits(settings))
    finally:
        container.shutdown_resources()
    return EXIT_OK


def cmd_worker(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    """Consume ``report.jobs`` until SIGTERM or SIGINT."""
    settings = _settings(env, WORKER_REQUIRED)
    check_upstream_tls(settings)
    check_ports(_probe_ports(settings))
    tracing = setup_tracing(env, command="worker", database=True)
    from .containers import service_container
    from .runtime.probes import probes_served
    from .worker import Worker, stop_on_signals

    stop = threading.Event()
    stop_on_signals(stop)
    container = service_container(settings, tracing, "worker")
    container.init_resources()
    try:
        _check_store(container)
        worker = Worker(container.reports(), settings)
        # /metrics, /healthz, /readyz
        with probes_served(worker.reports, settings, worker.heartbeat):
            worker.run(stop)
    finally:
        container.shutdown_resources()
    return EXIT_OK


def _migrate(database_url: str | None) -> list[str]:
    from adapters.postgres import migrate

    assert database_url is not None  # required by the command
    try:
        return migrate(database_url)
    except Exception as exc:
        raise Failure(f"migrate failed: {_one_line(exc, database_url)}") from exc


def _one_line(exc: Exception, database_url: str) -> str:
    """``exc``'s text on one line (psycopg's spans several: each address tried, a DETAIL or
    HINT), without the password of ``database_url``: libpq quotes a token of the URL it cannot
    read (``invalid percent-encoded token: "<password>"``), and a password with an unencoded
    ``@`` leaves its tail in the host name it fails to resolve."""
    from .runtime.logs import redact

    said = "; ".join(line.strip() for line in str(exc).splitlines() if line.strip())
    password = urlsplit(database_url).password or ""
    secrets = {password, unquote(password)}
    if "@" in password:
        secrets.add(password.partition("@")[2] + "@")
    # longest first, so that a secret containing another is replaced whole
    return redact(said or type(exc).__name__, sorted(secrets, key=len, reverse=True))


def cmd_migrate(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    """Bring the database schema up to date."""
    applied = _migrate(_settings(env, MIGRATE_REQUIRED).database_url)
    for name in applied:
        print(f"applied {name}")
    print("schema is up to date" + ("" if applied else " (nothing to apply)"))
    return EXIT_OK


def cmd_all(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    """Migrate, then serve the API and run a worker in this process until SIGTERM or SIGINT."""
    settings = _settings(env, ALL_REQUIRED)
    check_upstream_tls(settings)
    check_ports([_app_port(settings, env), *_probe_ports(settings)])
    if args.reload:
        from .runtime.reloader import main_reloading

        return main_reloading(["all"], env)
    from .api import create_app
    from .containers import service_container
    from .runtime.probes import start_probes
    from .worker import Worker, warn_unconfigured_upstreams

    # an OTEL_* typo stops the process before the schema is touched
    tracing = setup_tracing(env, command="all", database=True)
    applied = _migrate(settings.database_url)
    # a log record as every other line of the process (one JSON object under LOG_FORMAT=json)
    logging.getLogger("reportsvc").info("schema is up to date", extra={"applied": len(applied)})
    warn_unconfigured_upstreams(settings)
    stop = threading.Event()
    container = service_container(settings, tracing)
    container.init_resources()
    worker_thread: threading.Thread | None = None
    probes = None
    try:
        _check_store(container)  # as api and worker do: a bucket unusable stops the process
        worker = Worker(container.reports(), settings)
        probes = start_probes(worker.reports, settings, worker.heartbeat)
        worker_thread = threading.Thread(target=worker.run, args=(stop,), name="worker")
        worker_thread.start()
        app = _traced_app(create_app(container), tracing)
        relog(settings)
        # the signal stops both at once: the server finishes in-flight requests while the
        # worker hands its running jobs back
        serve(
            app,
            settings.host,
            settings.port,
            limits=connection_limits(settings),
            on_stop=stop.set,
        )
    finally:
        stop.set()
        if worker_thread is not None:
            worker_thread.join()
        if probes is not None:
            probes.close()
        container.shutdown_resources()
    return EXIT_OK


def cmd_healthcheck(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    """Probe the api's and the worker's liveness on this host: exit 0 healthy, 1 not."""
    from .healthcheck import check

    return check(env)


def cmd_dev(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    """Run the embedded default: API, worker and demo upstream in one process."""
    from .dev import run_dev

    return run_dev(env, data_dir=Path(args.data_dir), host=args.host, port=args.port)


# --- the parser ---


def needs(required: Sequence[str]) -> str:
    """``Needs A, B and C.``: the variables of the settings a command checks, written from the
    same tuple the command passes to :func:`load_settings`, so its help cannot name another."""
    names = [SETTING_TO_VARIABLE[setting] for setting in required]
    listed = names[-1] if len(names) == 1 else f"{', '.join(names[:-1])} and {names[-1]}"
    return f"Needs {listed}."


def _positive_int(text: str) -> int:
    # ASCII digits: isdigit() also takes other scripts' ("٣"), as the variables refuse them
    if not (text.isascii() and text.isdigit()) or int(text) < 1:
        raise argparse.ArgumentTypeError(f"must be a whole number of at least 1, got {text!r}")
    return int(text)


def _port(text: str) -> int:
    if not (text.isascii() and text.isdigit()) or int(text) > 65535:
        raise argparse.ArgumentTypeError(f"must be a port number 0..65535, got {text!r}")
    return int(text)


def build_parser() -> argparse.ArgumentParser:
    """The ``reportsvc`` argument parser; each command has its own ``--help``."""
    parser = argparse.ArgumentParser(
        prog="reportsvc",
        description="FarmIQ reporting export service. Configuration is read from the "
        "environment (see docs/operations.md).",
    )
    parser.add_argument("--version", action="version", version=f"reportsvc {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    api = commands.add_parser(
        "api",
        help="serve the HTTP API",
        description=f"Serve the HTTP API on {fallbacks('host')} and {fallbacks('port')}. "
        + needs(API_REQUIRED),
    )
    api.set_defaults(run=cmd_api)

    worker = commands.add_parser(
        "worker",
        help="consume report.jobs and run exports",
        description="Consume report.jobs and run exports, WORKER_CONCURRENCY at a time, until "
        "SIGTERM or SIGINT (running jobs are handed back). " + needs(WORKER_REQUIRED),
    )
    worker.set_defaults(run=cmd_worker)

    everything = commands.add_parser(
        "all",
        help="migrate, then serve the API and run a worker in one process (the image's default)",
        description="One container for small deployments and FarmIQ's compose: bring the "
        "schema up to date, then serve the HTTP API on HOST and APP_PORT and consume "
        "report.jobs in the same process, with the settings of api and worker. SIGTERM: "
        "in-flight requests finish, running jobs are handed back, exit 0. "
        + needs(ALL_REQUIRED)
        + " An upstream URL left unset fails the jobs of its types.",
    )
    everything.add_argument(
        "--reload",
        action="store_true",
        help="development: run it in a child process and start that again whenever a .py or "
        ".sql file of the installed source changes (an editable install: your checkout)",
    )
    everything.set_defaults(run=cmd_all)

    migrate = commands.add_parser(
        "migrate",
        help="bring the database schema up to date",
        description="Bring the schema of DATABASE_URL up to date. Idempotent; safe on a "
        "database the old service created. " + needs(MIGRATE_REQUIRED),
    )
    migrate.set_defaults(run=cmd_migrate)

    healthcheck = commands.add_parser(
        "healthcheck",
        help="probe this container's api and worker liveness (the image's HEALTHCHECK)",
        description="GET /api/health on APP_PORT and /healthz on WORKER_HTTP_PORT (unless 0) "
        "on this host. Exit 0 when at least one answers 200 and none answers otherwise or "
        "hangs; a refused connection is a port the running command does not serve "
        "(api or worker). Exit 1 otherwise.",
    )
    healthcheck.set_defaults(run=cmd_healthcheck)

    dev = commands.add_parser(
        "dev",
        help="run API, worker and demo data in one process (no PostgreSQL/RabbitMQ)",
        description="The embedded default: API and worker in one process over SQLite and an "
        "in-process queue, with a demo upstream. Prints the URL, a bearer token and curl lines. "
        "Jobs, files and the generated secrets live in the data folder and survive a restart.",
    )
    dev.add_argument("--data-dir", default=".dev-data", help="data folder (default %(default)s)")
    dev.add_argument("--host", default="127.0.0.1", help="address to listen on (%(default)s)")
    dev.add_argument(
        "--port",
        type=_port,
        default=None,
        help=f"port (default {fallbacks('port')}; 0 picks a free one)",
    )
    dev.set_defaults(run=cmd_dev)

    token = commands.add_parser(
        "token",
        help="print a signed user JWT (local use and tests)",
        description="Print a JWT signed HS256 with JWT_SECRET, with iss JWT_ISSUER and aud "
        "JWT_AUDIENCE, as the API verifies it. " + needs(TOKEN_REQUIRED),
    )
    token.add_argument("--tenant", help="tenant_id claim (platform_admin may go without)")
    token.add_argument(
        "--role",
        action="append",
        required=True,
        choices=[role.value for role in Role],  # another role is a 403 on every route
        metavar="ROLE",
        help=f"a role (repeatable): {', '.join(role.value for role in Role)}",
    )
    token.add_argument("--sub", default="reportsvc-cli", help="subject (requested_by)")
    token.add_argument(
        "--ttl",
        type=_positive_int,
        default=3600,
        help="lifetime in seconds (%(default)s; at most ten years)",
    )
    token.set_defaults(run=cmd_token)

    export = commands.add_parser(
        "export",
        help="export one job type and scope straight to a local file",
        description="Fetch the records of one job type and scope from the upstream service "
        "and write them to a local file, as a job would, without the API or a worker. Uses "
        "the upstream URLs and INTERNAL_SERVICE_TOKEN of the environment, or --demo.",
    )
    add_request_flags(export)
    add_option_flags(export)
    export.add_argument("--output", help="file to write (default <job_type>.<extension>)")
    export.add_argument(
        "--demo", action="store_true", help="read from a built-in demo upstream with sample data"
    )
    export.set_defaults(run=cmd_export)
    return parser


def main(argv: Sequence[str] | None = None, env: Mapping[str, str] | None = None) -> int:
    """Run one ``reportsvc`` command; returns the process exit code."""
    args = build_parser().parse_args(argv)
    run: Callable[[argparse.Namespace, Mapping[str, str]], int] = args.run
    try:
        return run(args, os.environ if env is None else env)
    except ConfigError as exc:
        print(f"reportsvc: configuration error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except Failure as exc:
        print(f"reportsvc: {exc}", file=sys.stderr)
        return exc.exit_code
    except PortUnavailable as exc:
        print(f"reportsvc: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:  # Ctrl+C where a command does not stop by itself (export)
        print("reportsvc: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Stopped:
        print("reportsvc: stopped (SIGTERM)", file=sys.stderr)
        return EXIT_TERMINATED


if __name__ == "__main__":
    sys.exit(main())
