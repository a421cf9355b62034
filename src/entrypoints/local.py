"""The commands that run on their own, without the service's database or queue:
``reportsvc token`` (a signed user JWT) and ``reportsvc export`` (one export straight from
upstream to a local file)."""

from __future__ import annotations

import argparse
import contextlib
import signal
import sys
import threading
import uuid
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import IO

import msgspec

from reportcore.errors import ExportFailure, StorageFailure, ValidationError
from reportcore.jobs import file_name_for
from reportcore.jobtypes import JOB_TYPES, Upstream
from reportcore.pipeline import ExportProgress, export_records
from reportcore.requests import (
    CreateRequest,
    ValidCreate,
    options_of_create,
    validate_create,
    validate_tenant_id,
)

from .commands import EXIT_OK, EXIT_USAGE, Failure, settings_for
from .containers import check_upstream_tls, demo_clock, policy_from, upstream_config
from .export_flags import request_body
from .settings import UPSTREAM_URLS, load_settings
from .variables import MAX_SEC

TOKEN_REQUIRED = ("jwt_secret",)


def cmd_token(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    """Print a signed user JWT."""
    # imported here: PyJWT pulls in cryptography, memory a worker never needs (docs/performance.md)
    from .auth import sign_user_token

    settings = load_settings(env, required=TOKEN_REQUIRED)
    # what the API would refuse is no token to print (a 401 on every request)
    if args.ttl > MAX_SEC:
        raise Failure(f"--ttl must be at most {MAX_SEC} seconds (ten years)", EXIT_USAGE)
    _tenant(args.tenant)
    print(
        sign_user_token(
            settings, tenant=args.tenant, roles=args.role, sub=args.sub, ttl_sec=args.ttl
        )
    )
    return EXIT_OK


def _tenant(given: str | None) -> str | None:
    """``--tenant`` as the API would take it as a tenant id (``None``: not given)."""
    if given is None:
        return None
    try:
        return validate_tenant_id(given, "--tenant")
    except ValidationError as exc:
        raise Failure(str(exc), EXIT_USAGE) from exc


class _ProgressBar:
    """A one-line bar on a terminal, redrawn after each page."""

    WIDTH = 30

    def __init__(self, stream: IO[str]) -> None:
        self._stream = stream

    def update(self, progress: ExportProgress) -> None:
        filled = self.WIDTH * progress.pct // 100
        bar = "#" * filled + "-" * (self.WIDTH - filled)
        self._stream.write(f"\r[{bar}] {progress.pct:3d}%  {progress.rows} rows")
        self._stream.flush()

    def done(self, rows: int) -> None:
        self.update(ExportProgress(pct=100, rows=rows))
        self._stream.write("\n")


def _no_bar(progress: ExportProgress) -> None:
    """Not a terminal: nothing to redraw."""


def _export_request(args: argparse.Namespace) -> ValidCreate:
    """The export's flags as a create request, checked as the API checks one."""
    try:
        return validate_create(msgspec.convert(request_body(args), type=CreateRequest))
    except (msgspec.ValidationError, ValidationError) as exc:
        raise Failure(f"invalid export: {exc}", EXIT_USAGE) from exc
    except ValueError as exc:  # a flag that spells no request (--filter without "=")
        raise Failure(str(exc), EXIT_USAGE) from exc


def _output(given: str) -> Path:
    """Where the file goes: a new file, or a regular one replaced whole (through a symbolic
    link, the file it names). The file is written to a temporary beside it and renamed
    into place, which would replace a device, a FIFO or the link itself, not write to it."""
    if given == "-":
        raise Failure("--output - (standard output) is not supported: name a file", EXIT_USAGE)
    path = Path(given)
    target = path.resolve() if path.is_symlink() else path
    if target.exists() and not target.is_file():
        raise Failure(
            f"--output {given} is not a regular file: the export replaces a file whole",
            EXIT_USAGE,
        )
    return target


class Stopped(Exception):
    """SIGTERM during a local export: the file is dropped as on Ctrl+C."""


@contextlib.contextmanager
def _stopped_by_sigterm() -> Iterator[None]:
    """SIGTERM raises :class:`Stopped` in the export's thread (the main one), so that the
    export drops its temporary files on the way out, as on Ctrl+C; the handler before it is
    put back after."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def stop(signum: int, frame: object) -> None:
        raise Stopped

    before = signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, before)


def cmd_export(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    """Export one job type and scope straight from upstream to a local file."""
    valid = _export_request(args)
    spec = JOB_TYPES[valid.job_type]
    if not args.tenant and not args.demo:
        raise Failure("--tenant is required (or --demo)", EXIT_USAGE)
    tenant = _tenant(args.tenant or None)
    output = _output(args.output or file_name_for(valid.job_type, valid.format, valid.compression))

    with contextlib.ExitStack() as cleanup:
        cleanup.enter_context(_stopped_by_sigterm())
        if args.demo:
            from adapters.demo_upstream import DEMO_TENANT, DemoUpstream

            settings = settings_for(env, ())
            demo = DemoUpstream(clock=demo_clock(settings))
            url = demo.start("127.0.0.1", 0)
            cleanup.callback(demo.stop)
            config = upstream_config(settings, every_upstream=url)
            tenant = tenant or DEMO_TENANT
        else:
            settings = settings_for(env, (UPSTREAM_URLS[Upstream(spec.upstream)],))
            check_upstream_tls(settings)
            config = upstream_config(settings)
        assert tenant is not None

        from adapters.filesystem import FilesystemWriter
        from adapters.upstream import HttpRecordSource
        from adapters.xlsx import row_formats

        source = HttpRecordSource(config)
        cleanup.callback(source.close)
        bar = _ProgressBar(sys.stderr) if sys.stderr.isatty() else None

        def open_file() -> FilesystemWriter:
            # the job store's writer: a hidden temporary, fsynced, renamed into place whole
            try:
                return FilesystemWriter(output, owns_folder=False)
            except StorageFailure as exc:
                raise Failure(f"cannot write {output}: {exc.message}") from exc

        try:
            exported = export_records(
                spec,
                valid.format,
                valid.scope,
                tenant_id=tenant,
                trace_id=str(uuid.uuid4()),  # sent upstream as the trace id
                source=source,
                open_file=open_file,
                on_progress=_no_bar if bar is None else bar.update,
                options=options_of_create(valid),
                formats=row_formats(),
                # pages, rows and bytes as a worker's (the seconds are the caller's: Ctrl+C)
                limits=policy_from(settings).limits,
            )
        except ExportFailure as exc:
            raise Failure(f"export failed: {exc.code}: {exc.message}") from exc
    if bar is not None:
        bar.done(exported.rows)
    print(f"{output}: rows={exported.rows} bytes={exported.size_bytes} sha256={exported.sha256}")
    return EXIT_OK
