"""Serving an ASGI app until a signal says stop (``reportsvc api`` and ``reportsvc dev``), and
checking first that the ports a process will listen on are free."""

from __future__ import annotations

import errno
import signal
import socket
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from ..settings import ConfigError, Settings

if TYPE_CHECKING:  # uvicorn is imported only by the commands that serve HTTP
    from .connections import ConnectionLimits

# how long in-flight requests may take to finish after SIGTERM
GRACEFUL_SHUTDOWN_SEC = 30


class PortUnavailable(Exception):
    """A port the process would listen on cannot be bound; the message names the variable."""


def listening_url(host: str, port: int) -> str:
    """The URL a client on this machine reaches a server on ``host`` and ``port`` at: a
    wildcard address as the loopback, an IPv6 address in brackets."""
    shown = {"0.0.0.0": "127.0.0.1", "": "127.0.0.1", "::": "::1"}.get(host, host)
    if ":" in shown:
        shown = f"[{shown}]"
    return f"http://{shown}:{port}"


def check_ports(listens: Iterable[tuple[str, int, str]]) -> None:
    """Bind each ``(host, port, variable)`` as the servers will (``SO_REUSEADDR``, as uvicorn
    and the probe server set it) and let go, before anything else starts: a port in use is then
    one line naming it, not a uvicorn ERROR among INFO lines after a worker already started.
    The sockets are held until all are bound, so two settings naming one port (``all``'s
    APP_PORT and WORKER_HTTP_PORT) are caught too: a :class:`ConfigError` naming both, as the
    clash is theirs, not the one's that came second. Port 0 (a free port) is bound too: the
    host must still be one this machine can listen on (``--host 999.1.1.1`` was a uvicorn
    error after the worker had started)."""
    held: list[tuple[socket.socket, int, str]] = []
    try:
        for host, port, variable in listens:
            try:
                held.append((_listening(host, port), port, variable))
            except OSError as exc:
                reason = exc.strerror or str(exc)
                if exc.errno != errno.EADDRINUSE:
                    raise PortUnavailable(
                        f"cannot listen on {host}:{port} ({variable}): {reason}"
                    ) from exc
                for sock, taken, other in held:
                    if taken == port and _free_without(sock, host, port):
                        raise ConfigError(
                            f"{other} and {variable} are both port {port}: two servers cannot "
                            "listen on one port, give them different ones"
                        ) from exc
                raise PortUnavailable(f"port {port} is in use ({variable}): {reason}") from exc
    finally:
        for sock, _, _ in held:
            sock.close()


def _listening(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen()  # two bound sockets collide on Linux only once one listens
    except OSError:
        sock.close()
        raise
    return sock


def _free_without(ours: socket.socket, host: str, port: int) -> bool:
    """Whether ``host``:``port`` can be bound once ``ours`` lets go of it (the port is taken
    by our own other setting, not by another process)."""
    ours.close()
    try:
        _listening(host, port).close()
    except OSError:
        return False
    return True


def connection_limits(settings: Settings) -> ConnectionLimits:
    """The slow-client limits of ``settings``."""
    from .connections import ConnectionLimits

    return ConnectionLimits(
        header_timeout_sec=settings.http_header_timeout_sec,
        body_timeout_sec=settings.http_body_timeout_sec,
        max_connections=settings.http_max_connections,
    )


def serve(
    app: Any,
    host: str,
    port: int,
    *,
    limits: ConnectionLimits | None = None,
    on_ready: Callable[[str], None] | None = None,
    on_stop: Callable[[], None] | None = None,
) -> None:
    """Serve ``app`` until SIGTERM or SIGINT, then finish in-flight requests and return.

    ``limits`` bound how long a client may take to send a request and how many may be
    connected (defaults when not given); ``on_ready`` gets the base URL once the socket
    listens (the real port when ``port`` is 0); ``on_stop`` is called when SIGTERM or SIGINT
    arrives, so that what runs beside the server (``reportsvc all``'s worker) starts its own
    shutdown while in-flight requests finish, not after. It runs in the signal handler: it
    must only set an event.
    """
    import logging

    import uvicorn

    from .connections import ConnectionLimits, guarded_protocol

    log = logging.getLogger("reportsvc")

    class Server(uvicorn.Server):
        async def startup(self, sockets: Any = None) -> None:
            await super().startup(sockets=sockets)
            if self.started:
                bound = self.servers[0].sockets[0].getsockname()[1]
                url = listening_url(host, bound)
                log.info("listening", extra={"url": url, "host": host, "port": bound})
                if on_ready is not None:
                    on_ready(url)

        def handle_exit(self, sig: int, frame: Any) -> None:
            if on_stop is not None:
                on_stop()
            super().handle_exit(sig, frame)

    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        log_config=None,  # our handler (one line, redacted) is already on the root logger
        access_log=False,  # the API logs one line per request itself, with ids and duration
        timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_SEC,
        server_header=False,
        loop="uvloop",  # named, not "auto": a build without uvloop fails here instead of
        # running slower unnoticed (docs/performance.md); httptools with read deadlines
        # and a connection cap, which uvicorn lacks (entrypoints.runtime.connections)
        http=guarded_protocol(limits or ConnectionLimits()),
    )
    # uvicorn re-raises the signal that stopped it once it is done; with these handlers in
    # place (uvicorn restores them) that ends the process with exit code 0, not by the signal
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda signum, frame: None)
    Server(config).run()


def relog(settings: Settings) -> None:
    """Set our logging up again once the web app is built: building a Litestar app applies
    its default logging configuration, which replaces the root logger's handlers."""
    from .logs import setup_logging

    setup_logging(settings)
