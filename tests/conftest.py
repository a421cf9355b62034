"""Shared fixtures: real services, each test isolated in its own database and vhost.

Integration tests skip with a loud reason when PostgreSQL or RabbitMQ cannot be reached,
unless REQUIRE_SERVICES=1 (as in CI), where that is a failure instead.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import uuid
from collections.abc import Iterator
from urllib.parse import quote

import pytest

PG_HOST = os.environ.get("TEST_PG_HOST", "127.0.0.1")
PG_PORT = int(os.environ.get("TEST_PG_PORT", "5432"))
PG_USER = os.environ.get("TEST_PG_USER", "postgres")
PG_ADMIN_DB = os.environ.get("TEST_PG_DB", "test")
AMQP_HOST = os.environ.get("TEST_AMQP_HOST", "127.0.0.1")
AMQP_PORT = int(os.environ.get("TEST_AMQP_PORT", "5672"))
REQUIRE_SERVICES = os.environ.get("REQUIRE_SERVICES") == "1"


def _reachable(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=2):
            return True
    except OSError:
        return False


def need_service(name: str, host: str, port: int) -> None:
    """Skip (loudly) or fail, as REQUIRE_SERVICES says, when a service is unreachable."""
    if _reachable(host, port):
        return
    reason = f"{name} is not reachable at {host}:{port}"
    if REQUIRE_SERVICES:
        pytest.fail(f"REQUIRE_SERVICES=1 but {reason}", pytrace=False)
    pytest.skip(f"SKIPPED INTEGRATION: {reason} (set REQUIRE_SERVICES=1 to make this fail)")


def pg_url(dbname: str) -> str:
    return f"postgresql://{PG_USER}@{PG_HOST}:{PG_PORT}/{dbname}"


@pytest.fixture
def database_url() -> Iterator[str]:
    """A brand-new, empty PostgreSQL database, dropped after the test."""
    need_service("PostgreSQL", PG_HOST, PG_PORT)
    import psycopg

    name = f"rt_{uuid.uuid4().hex[:16]}"
    with psycopg.connect(pg_url(PG_ADMIN_DB), autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield pg_url(name)
    finally:
        with psycopg.connect(pg_url(PG_ADMIN_DB), autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _rabbitmqctl(*args: str) -> None:
    exe = shutil.which("rabbitmqctl")
    if exe is None:
        pytest.fail("rabbitmqctl is needed to create test vhosts", pytrace=False)
    subprocess.run([exe, "-q", *args], check=True, capture_output=True, timeout=60)


@pytest.fixture
def amqp_url() -> Iterator[str]:
    """An AMQP URL of a brand-new vhost (guest has all rights), deleted after the test."""
    need_service("RabbitMQ", AMQP_HOST, AMQP_PORT)
    vhost = f"rt_{uuid.uuid4().hex[:16]}"
    _rabbitmqctl("add_vhost", vhost)
    try:
        _rabbitmqctl("set_permissions", "-p", vhost, "guest", ".*", ".*", ".*")
        yield f"amqp://guest:guest@{AMQP_HOST}:{AMQP_PORT}/{quote(vhost, safe='')}"
    finally:
        _rabbitmqctl("delete_vhost", vhost)
