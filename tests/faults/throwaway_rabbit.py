"""A throwaway RabbitMQ node for fault tests that stop the broker.

The shared node (``rabbit@localhost`` on 5672) serves every other test, so a test that stops
a broker stops this one instead: its own node name, AMQP and distribution ports, data, logs,
configuration (no listener of /etc/rabbitmq/rabbitmq.conf, no plugins, hence no management
or prometheus port) and Erlang cookie, all under one temporary folder. It runs as a child
process in its own session and is always torn down: ``rabbitmqctl stop``, then SIGKILL if it
is still there.

"Broker stopped" is :meth:`ThrowawayRabbit.stop_app`: the RabbitMQ application stops on the
running Erlang node, which closes every client connection and the AMQP listener (new
connections are refused, as with a stopped server), while durable queues and persistent
messages stay on disk for :meth:`ThrowawayRabbit.start_app`, as over a restart.

    with ThrowawayRabbit(tmp_path) as rabbit:
        url = rabbit.new_vhost_url()
        rabbit.stop_app()
        ...
        rabbit.start_app()
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import socket
import subprocess
import time
from pathlib import Path
from types import TracebackType
from urllib.parse import quote

START_TIMEOUT_SEC = 90.0
CTL_TIMEOUT_SEC = 60.0


def _script(name: str) -> str:
    """The real RabbitMQ script, not Debian's /usr/sbin wrapper (which, run by root, switches
    to the ``rabbitmq`` user, whose home holds the shared node's cookie)."""
    packaged = Path("/usr/lib/rabbitmq/bin") / name
    if packaged.is_file():
        return str(packaged)
    found = shutil.which(name)
    if found is None:
        raise RuntimeError(f"{name} is not installed")
    return found


def available() -> bool:
    """Whether a RabbitMQ server can be started here."""
    try:
        _script("rabbitmq-server")
        _script("rabbitmqctl")
    except RuntimeError:
        return False
    return True


def _free_port(low: int, high: int) -> int:
    """A port in [low, high) that nothing listens on now (``+10000`` is where rabbitmqctl's
    own distribution port goes, so the range must leave room for it)."""
    for _ in range(200):
        port = low + secrets.randbelow(high - low)
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError(f"no free port in [{low}, {high})")


class ThrowawayRabbit:
    """One RabbitMQ node of our own under ``base``; a context manager that always tears it
    down."""

    def __init__(self, base: Path) -> None:
        self.base = base
        self.base.mkdir(parents=True, exist_ok=True)
        self.node = f"faults-{secrets.token_hex(4)}@localhost"
        self.port = _free_port(20_000, 40_000)
        self.dist_port = _free_port(40_000, 50_000)
        self.log_path = base / "server.log"
        self._proc: subprocess.Popen[bytes] | None = None
        config = base / "rabbitmq.conf"
        config.write_text(
            f"listeners.tcp.1 = 127.0.0.1:{self.port}\n"
            "loopback_users.guest = true\n"
            # a small disk or memory must not make this broker block publishers
            "disk_free_limit.absolute = 1MB\n"
            "vm_memory_high_watermark.relative = 0.9\n"
        )
        plugins = base / "enabled_plugins"
        plugins.write_text("[].\n")
        env_file = base / "rabbitmq-env.conf"
        env_file.write_text("")  # instead of /etc/rabbitmq/rabbitmq-env.conf (its NODENAME)
        home = base / "home"
        home.mkdir(exist_ok=True)
        self.env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("RABBITMQ_", "ERL_")) and k != "HOME"
        }
        self.env.update(
            HOME=str(home),  # the Erlang cookie of this node and its rabbitmqctl
            RABBITMQ_NODENAME=self.node,
            RABBITMQ_NODE_IP_ADDRESS="127.0.0.1",
            RABBITMQ_NODE_PORT=str(self.port),
            RABBITMQ_DIST_PORT=str(self.dist_port),
            RABBITMQ_CONFIG_FILE=str(config),
            RABBITMQ_ADVANCED_CONFIG_FILE=str(base / "advanced.config"),
            RABBITMQ_CONF_ENV_FILE=str(env_file),
            RABBITMQ_ENABLED_PLUGINS_FILE=str(plugins),
            RABBITMQ_MNESIA_BASE=str(base / "mnesia"),
            RABBITMQ_LOG_BASE=str(base / "log"),
            RABBITMQ_PID_FILE=str(base / "node.pid"),
            ERL_EPMD_ADDRESS="127.0.0.1",
        )

    # --- lifecycle ---

    def start(self) -> None:
        """Start the node and return once RabbitMQ accepts connections."""
        if self._proc is not None:
            raise RuntimeError("already started")
        with self.log_path.open("ab") as out:
            self._proc = subprocess.Popen(
                [_script("rabbitmq-server")],
                env=self.env,
                cwd=self.base,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + START_TIMEOUT_SEC
        while True:
            if self._proc.poll() is not None:
                raise RuntimeError(f"rabbitmq-server exited early\n{self.describe()}")
            done = self._ctl("await_startup", "--timeout", "10", check=False, timeout=20.0)
            if done.returncode == 0:
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"{self.node} did not start\n{self.describe()}")
            time.sleep(0.5)
        self.wait_accepting()

    def close(self) -> None:
        """Stop the node (gracefully if it answers, killed if not)."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        if proc.poll() is None:
            with contextlib.suppress(subprocess.SubprocessError, OSError):
                self._ctl("stop", check=False, timeout=30.0)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(10.0)
        if proc.poll() is None:
            # the Erlang VM itself (the script execs it); not the process group, where an
            # epmd this node had to start would serve other nodes too
            proc.kill()
        proc.wait(10.0)

    def __enter__(self) -> ThrowawayRabbit:
        try:
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # --- the faults ---

    def stop_app(self) -> None:
        """Stop RabbitMQ (the Erlang node stays): connections closed, new ones refused."""
        self._ctl("stop_app")
        deadline = time.monotonic() + 10.0
        while self.accepting():
            if time.monotonic() > deadline:
                raise AssertionError(f"{self.node} still accepts connections after stop_app")
            time.sleep(0.05)

    def start_app(self) -> None:
        """Start RabbitMQ again; returns once it accepts connections."""
        self._ctl("start_app")
        self.wait_accepting()

    def restart(self) -> None:
        """Stop the whole node (every connection closed, the port refused) and start it again
        on the same data; returns once it accepts connections."""
        proc = self._proc
        if proc is None:
            raise RuntimeError("not started")
        self._ctl("stop")
        try:
            proc.wait(30.0)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"{self.node} did not stop\n{self.describe()}") from None
        self._proc = None
        self.start()

    def ensure_running(self) -> None:
        """Undo a fault a failed test left behind (``start_app`` of a running app is a no-op)."""
        if self._proc is None or self._proc.poll() is not None:
            self._proc = None
            self.start()
        self.start_app()

    # --- use ---

    def accepting(self) -> bool:
        """Whether the AMQP port takes a TCP connection now."""
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1.0):
                return True
        except OSError:
            return False

    def wait_accepting(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while not self.accepting():
            if time.monotonic() > deadline:
                raise RuntimeError(f"{self.node} does not accept connections\n{self.describe()}")
            time.sleep(0.05)

    def new_vhost_url(self) -> str:
        """A new vhost where guest has every right; its AMQP URL."""
        vhost = f"ft_{secrets.token_hex(8)}"
        self._ctl("add_vhost", vhost)
        self._ctl("set_permissions", "-p", vhost, "guest", ".*", ".*", ".*")
        return f"amqp://guest:guest@127.0.0.1:{self.port}/{quote(vhost, safe='')}"

    def delete_vhost(self, url: str) -> None:
        vhost = url.rsplit("/", 1)[1]
        self._ctl("delete_vhost", vhost, check=False)

    def queue_depths(self, vhost_url: str) -> dict[str, tuple[int, int]]:
        """Each queue of the vhost: (messages ready, messages unacknowledged)."""
        from urllib.parse import unquote

        vhost = unquote(vhost_url.rsplit("/", 1)[1])
        done = self._ctl(
            "list_queues",
            "-p",
            vhost,
            "--no-table-headers",
            "name",
            "messages_ready",
            "messages_unacknowledged",
        )
        depths: dict[str, tuple[int, int]] = {}
        for line in done.stdout.splitlines():
            parts = line.split()
            if len(parts) == 3 and parts[1].isdigit():
                depths[parts[0]] = (int(parts[1]), int(parts[2]))
        return depths

    def describe(self) -> str:
        log = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return f"--- throwaway RabbitMQ {self.node} on {self.port}:\n{log[-4000:]}"

    def _ctl(
        self, *args: str, check: bool = True, timeout: float = CTL_TIMEOUT_SEC
    ) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            [_script("rabbitmqctl"), "-q", "-n", self.node, *args],
            env=self.env,
            cwd=self.base,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if check and done.returncode != 0:
            raise RuntimeError(
                f"rabbitmqctl {' '.join(args)} failed ({done.returncode}): "
                f"{done.stdout}{done.stderr}"
            )
        return done
