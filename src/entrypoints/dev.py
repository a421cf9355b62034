"""``reportsvc dev``: the embedded default. API and worker in one process, nothing to install.

Jobs live in SQLite and files on disk under the data folder, messages in an in-process queue,
and every upstream is the demo upstream, started in this process on a free port. The JWT and
download secrets are generated once and kept in the data folder, so that a printed token and
a download URL stay valid across restarts. On start the worker's recovery pass publishes the
jobs a previous run left queued.
"""

from __future__ import annotations

import os
import secrets
import shlex
import sqlite3
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import msgspec

from adapters.sqlite import SchemaTooNew

from .settings import DECLARED, UPSTREAM_URLS, Settings, load_settings, variable_of
from .variables import ConfigError

SECRETS_FILE = "secrets.json"
DEV_TOKEN_TTL_SEC = 24 * 3600
DEV_USER = "dev-user"


class DevSecrets(msgspec.Struct, frozen=True):
    """The keys of a data folder, made once."""

    jwt_secret: str
    download_secret: str


def load_or_create_secrets(data_dir: Path) -> DevSecrets:
    """The data folder's secrets; generated (readable by the owner only) on first use."""
    path = data_dir / SECRETS_FILE
    if path.exists():
        return msgspec.json.decode(path.read_bytes(), type=DevSecrets)
    made = DevSecrets(
        jwt_secret=secrets.token_urlsafe(32), download_secret=secrets.token_urlsafe(32)
    )
    tmp = path.with_name(f".{SECRETS_FILE}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(msgspec.json.encode(made))
    # renamed into place whole: a crash never leaves a half-written secrets file behind
    os.replace(tmp, path)
    return made


# what the embedded default brings itself (SQLite, an in-process queue, files under the data
# folder, a demo upstream): these settings are not read, so that a value meant for another
# process (a mysql:// URL, FILE_STORE=s3 without a bucket) neither stops dev nor is shown
DEV_OWN = (
    "database_url",
    "rabbitmq_url",
    "export_root",
    "file_store",
    "s3_bucket",
    "s3_prefix",
    "s3_endpoint_url",
    "s3_region",
    "download_redirect",
    *UPSTREAM_URLS.values(),
)


def dev_settings(env: Mapping[str, str], data_dir: Path, host: str, port: int | None) -> Settings:
    """Settings of the embedded default: the environment's but for :data:`DEV_OWN`, with the
    data folder's secrets (unless the environment sets its own) and files under
    ``data_dir/exports``."""
    ignored = {name for setting in DEV_OWN for name in DECLARED[setting].names}
    base = load_settings({name: value for name, value in env.items() if name not in ignored})
    kept = load_or_create_secrets(data_dir)
    return msgspec.structs.replace(
        base,
        jwt_secret=base.jwt_secret or kept.jwt_secret,
        download_secret=base.download_secret or kept.download_secret,
        export_root=str(data_dir / "exports"),
        host=host,
        port=base.port if port is None else port,
    )


def banner(url: str, token: str, tenant: str, data_dir: Path, sample: dict[str, Any]) -> str:
    """What ``reportsvc dev`` prints once it listens: where, a token, and the whole flow."""
    body = shlex.quote(msgspec.json.encode(sample).decode())
    auth = '-H "Authorization: Bearer $TOKEN"'
    field = "python3 -c 'import json,sys; print(json.load(sys.stdin)[sys.argv[1]])'"
    ext = "json" if sample.get("format") == "json" else "csv"
    return "\n".join(
        [
            "",
            f"reportsvc dev is ready at {url}  (API docs: {url}/api-docs)",
            f"data folder: {data_dir}  (jobs, files and secrets survive a restart)",
            "",
            f"Bearer token of a tenant_admin of the demo tenant {tenant} (valid 24 h):",
            "",
            f"export BASE={url}",
            f"export TOKEN={token}",
            "",
            "Create an export, poll it, get its download URL and download the file:",
            "",
            f'JOB=$(curl -s -X POST "$BASE/api/v1/reports/jobs" {auth} '
            f"-H 'Content-Type: application/json' -d {body} | {field} id)",
            f'curl -s "$BASE/api/v1/reports/jobs/$JOB" {auth}',
            '# repeat the line above until "status" is "succeeded" (a second or two), then:',
            f'URL=$(curl -s "$BASE/api/v1/reports/jobs/$JOB/download" {auth} '
            f"| {field} download_url)",
            f'curl -s -o report.{ext} "$BASE$URL"',
            "",
            "The same export of the day before, every morning at 06:00 Bangkok time, and its jobs:",
            "",
            f'SCHEDULE=$(curl -s -X POST "$BASE/api/v1/reports/schedules" {auth} '
            f"-H 'Content-Type: application/json' -d {schedule_body(sample)} | {field} id)",
            f'curl -s "$BASE/api/v1/reports/jobs?schedule_id=$SCHEDULE" {auth}',
            "",
            "Stop with Ctrl+C.",
            "",
        ]
    )


def schedule_body(sample: dict[str, Any]) -> str:
    """The schedule the banner creates: ``sample`` without its dates, daily, for the day before
    (docs/api.md, "Schedules"), shell-quoted."""
    job = {k: v for k, v in sample.items() if k not in ("start_date", "end_date")}
    body = {"cron": "0 6 * * *", "timezone": "Asia/Bangkok", "range": "previous_day", "job": job}
    return shlex.quote(msgspec.json.encode(body).decode())


def sample_request() -> dict[str, Any]:
    """The create body the printed curl line sends: a CSV of the demo farm's feed intake."""
    from adapters.demo_upstream import DEMO_END, DEMO_FARM_ID, DEMO_START

    return {
        "job_type": "FEED_INTAKE_EXPORT",
        "format": "csv",
        "farm_id": DEMO_FARM_ID,
        "start_date": DEMO_START,
        "end_date": DEMO_END,
    }


def _unusable(data_dir: Path, exc: BaseException) -> ConfigError:
    """``--data-dir`` that cannot hold the embedded service's files, named with the reason."""
    reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc) or repr(exc)
    return ConfigError(f"--data-dir {data_dir} cannot be used: {reason}")


def run_dev(env: Mapping[str, str], *, data_dir: Path, host: str, port: int | None) -> int:
    """Run the embedded default until SIGINT or SIGTERM; :class:`PortUnavailable` before
    anything starts when its port cannot be bound."""
    from adapters.demo_upstream import DEMO_TENANT, DemoUpstream

    from .api import create_app
    from .auth import sign_user_token
    from .containers import demo_clock, embedded_container
    from .runtime.logs import setup_logging
    from .runtime.serving import check_ports, connection_limits, relog, serve
    from .worker import Worker

    data_dir = data_dir.resolve()
    try:
        data_dir.mkdir(parents=True, exist_ok=True)
        settings = dev_settings(env, data_dir, host, port)
    except (OSError, msgspec.DecodeError) as exc:  # a file there, no rights, a bad secrets file
        raise _unusable(data_dir, exc) from exc
    setup_logging(settings)
    check_ports(
        [(settings.host, settings.port, "--port" if port is not None else variable_of("port", env))]
    )

    demo = DemoUpstream(clock=demo_clock(settings))
    upstream_url = demo.start("127.0.0.1", 0)
    container = embedded_container(settings, data_dir, upstream_url)
    stop = threading.Event()
    worker_thread: threading.Thread | None = None
    try:
        try:
            container.init_resources()
            reports = container.reports()
        except (OSError, sqlite3.DatabaseError, SchemaTooNew) as exc:
            raise _unusable(data_dir, exc) from exc
        worker = Worker(reports, settings)
        worker_thread = threading.Thread(target=worker.run, args=(stop,), name="worker")
        worker_thread.start()
        token = sign_user_token(
            settings,
            tenant=DEMO_TENANT,
            roles=["tenant_admin"],
            sub=DEV_USER,
            ttl_sec=DEV_TOKEN_TTL_SEC,
        )

        def ready(url: str) -> None:
            text = banner(url, token, DEMO_TENANT, data_dir, sample_request())
            print(text, flush=True)

        app = create_app(container)
        relog(settings)
        serve(
            app,
            settings.host,
            settings.port,
            limits=connection_limits(settings),
            on_ready=ready,
        )
    finally:
        # the worker first: it hands running jobs back while storage is still open
        stop.set()
        if worker_thread is not None:
            worker_thread.join()
        container.shutdown_resources()
        demo.stop()
    return 0
