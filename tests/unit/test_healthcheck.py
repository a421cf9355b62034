"""``reportsvc healthcheck``, the image's HEALTHCHECK: one command right for a container of
``all``, of ``api`` and of ``worker``. Probed here against local HTTP servers answering 200,
503, nothing at all (a hung server), and against ports where nothing listens."""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from entrypoints.cli import main
from entrypoints.healthcheck import HEALTHY, UNHEALTHY, check
from entrypoints.runtime.probes import ProbeServer
from tests.unit.test_probes import Ticks, served  # noqa: F401 (a fixture)

TIMEOUT = 0.5


class _Answer(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(self.server.status)  # type: ignore[attr-defined]
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        pass


@contextlib.contextmanager
def answering(status: int) -> Iterator[int]:
    """A local HTTP server answering ``status`` to every GET; yields its port."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Answer)
    server.status = status  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


@contextlib.contextmanager
def hung() -> Iterator[int]:
    """A port that accepts connections (the kernel's backlog) and never answers."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(8)
        yield sock.getsockname()[1]


def refused() -> int:
    """A port where nothing listens."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def env(api: int, worker: int) -> dict[str, str]:
    return {
        "HOST": "0.0.0.0",  # a wildcard: probed on the loopback
        "APP_PORT": str(api),
        "WORKER_HTTP_HOST": "127.0.0.1",
        "WORKER_HTTP_PORT": str(worker),
    }


def run(api: int, worker: int) -> tuple[int, list[str]]:
    said: list[str] = []
    return check(env(api, worker), timeout=TIMEOUT, say=said.append), said


# --- the three commands of the image, healthy and not ---


def test_all_is_healthy_when_both_answer_200_and_not_when_either_does_not() -> None:
    with answering(200) as api, answering(200) as worker:
        assert run(api, worker)[0] == HEALTHY
    with answering(200) as api, answering(503) as worker:  # the worker loop is stuck
        code, said = run(api, worker)
        assert code == UNHEALTHY
        assert f"worker http://127.0.0.1:{worker}/healthz: 503" in said
    with answering(503) as api, answering(200) as worker:
        assert run(api, worker)[0] == UNHEALTHY


def test_a_worker_container_passes_with_nothing_on_app_port_and_fails_once_stuck() -> None:
    with answering(200) as worker:
        code, said = run(refused(), worker)
        assert code == HEALTHY, said
        assert any("connection refused (not served by this command)" in s for s in said)
    with answering(503) as worker:
        assert run(refused(), worker)[0] == UNHEALTHY


def test_an_api_container_passes_with_nothing_on_the_worker_port_and_fails_unless_200() -> None:
    with answering(200) as api:
        assert run(api, refused())[0] == HEALTHY
    with answering(500) as api:
        assert run(api, refused())[0] == UNHEALTHY


def test_a_server_that_accepts_and_never_answers_fails_within_the_timeout() -> None:
    with answering(200) as api, hung() as worker:
        code, said = run(api, worker)
        assert code == UNHEALTHY
        assert any(s.startswith("worker ") and "no answer" in s for s in said), said
    with hung() as api:
        assert run(api, refused())[0] == UNHEALTHY


def test_nothing_listening_at_all_is_unhealthy() -> None:
    code, said = run(refused(), refused())
    assert code == UNHEALTHY
    assert said[-1] == "unhealthy: no probe answers (not up yet?)"


def test_a_port_turned_off_is_not_probed() -> None:
    with answering(200) as api:
        said: list[str] = []
        assert check(env(api, 0), timeout=TIMEOUT, say=said.append) == HEALTHY
        assert [s.split()[0] for s in said] == ["api"]
    # a worker with its probes off has nothing to vouch for it: it needs its own command
    assert check(env(refused(), 0), timeout=TIMEOUT, say=[].append) == UNHEALTHY


def test_the_real_worker_probe_server_passes_until_its_loop_is_stuck(
    served: tuple[ProbeServer, Ticks, dict[str, str]],  # noqa: F811
) -> None:
    server, ticks, _ = served  # its loop stuck after 60 s without a beat
    port = int(server.url.rsplit(":", 1)[1])
    assert run(refused(), port)[0] == HEALTHY
    ticks.now += 61
    assert run(refused(), port)[0] == UNHEALTHY


# --- the command line ---


def test_the_cli_command_exits_0_or_1_even_on_a_configuration_error(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with answering(200) as api:
        assert main(["healthcheck"], env(api, refused())) == 0
    assert main(["healthcheck"], env(refused(), refused())) == 1
    # never 2 (Docker reserves it), whatever the environment holds
    assert main(["healthcheck"], {"APP_PORT": "not-a-port"}) == 1
    assert "unhealthy: configuration error: APP_PORT" in capsys.readouterr().out
