"""``reportsvc healthcheck``: the image's ``HEALTHCHECK``, right for ``all``, ``api`` and
``worker`` alike without the operator overriding it.

It cannot tell which command the container runs (``docker run IMAGE reportsvc worker``
replaces the ``CMD``; a health command runs beside the process, not inside it), so it probes
both ports the settings name and judges by what answers:

- ``GET /api/health`` on ``APP_PORT`` (the api's liveness) and ``GET /healthz`` on
  ``WORKER_HTTP_PORT`` (the worker loop's: 503 once it is stuck), unless that port is 0;
- a port that answers 200 is healthy; one that answers anything else, or accepts the
  connection and then says nothing within the timeout (a hung server), fails the check;
- a port whose connection is *refused* has nothing listening: the running command does not
  serve it (a worker serves no API, an api no worker probes). A process whose server died
  exits, and its container with it, so a refusal is never taken for a failure by itself;
- healthy (exit 0) when at least one port answered 200 and none failed; unhealthy (exit 1)
  when none answered at all (nothing to vouch for: still starting, or a worker with
  ``WORKER_HTTP_PORT=0``, which needs a health command of its own).

Exit codes are 0 or 1 only (Docker reserves 2). Only the standard library's urllib, no proxy
(a container's ``HTTP_PROXY`` must not carry a loopback probe), a short timeout per probe.
"""

from __future__ import annotations

import urllib.error
import urllib.request
from collections.abc import Callable, Mapping

from .settings import ConfigError, Settings, load_settings

HEALTHY = 0
UNHEALTHY = 1
TIMEOUT_SEC = 2.0  # per probe: both fit the image's HEALTHCHECK --timeout=5s
_WILDCARDS = {"": "127.0.0.1", "0.0.0.0": "127.0.0.1", "::": "::1"}
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def _url(host: str, port: int, path: str) -> str:
    address = _WILDCARDS.get(host, host)
    return (
        f"http://[{address}]:{port}{path}" if ":" in address else f"http://{address}:{port}{path}"
    )


def targets(settings: Settings) -> list[tuple[str, str]]:
    """(what, URL) of each liveness probe the settings name; a port of 0 has none."""
    found = []
    if settings.port:  # 0: a free port picked at start, which nothing outside knows
        found.append(("api", _url(settings.host, settings.port, "/api/health")))
    if settings.worker_http_port:
        found.append(
            ("worker", _url(settings.worker_http_host, settings.worker_http_port, "/healthz"))
        )
    return found


def probe(url: str, timeout: float) -> int | None:
    """The status ``url`` answers; ``None`` when the connection is refused (nothing listens).
    Raises :class:`OSError` for anything else: a timeout, a reset, a refused name."""
    try:
        with _OPENER.open(url, timeout=timeout) as answer:
            status: int = answer.status
            return status
    except urllib.error.HTTPError as exc:
        exc.close()
        return exc.code
    except urllib.error.URLError as exc:
        if isinstance(exc.reason, ConnectionRefusedError):
            return None
        raise OSError(str(exc.reason)) from exc


def check(
    env: Mapping[str, str], *, timeout: float = TIMEOUT_SEC, say: Callable[[str], None] = print
) -> int:
    """Probe what this container serves; :data:`HEALTHY` or :data:`UNHEALTHY`."""
    try:
        settings = load_settings(env)
    except ConfigError as exc:
        say(f"unhealthy: configuration error: {exc}")
        return UNHEALTHY
    answered = failed = 0
    for what, url in targets(settings):
        try:
            status = probe(url, timeout)
        except OSError as exc:
            say(f"{what} {url}: no answer ({exc})")
            failed += 1
            continue
        if status is None:
            say(f"{what} {url}: connection refused (not served by this command)")
            continue
        say(f"{what} {url}: {status}")
        answered += 1
        failed += status != 200
    if failed or not answered:
        say("unhealthy" if failed else "unhealthy: no probe answers (not up yet?)")
        return UNHEALTHY
    return HEALTHY
