"""The S3 store and tracing are extras: a process configured for one that is not installed stops
at start with one line naming the extra (pyproject.toml, docs/operations.md "Installing")."""

from __future__ import annotations

import pytest

from entrypoints import cli
from entrypoints.containers import service_container
from entrypoints.runtime import extras
from entrypoints.runtime.tracing import setup_tracing
from entrypoints.settings import ConfigError, load_settings

# what `reportsvc api` requires; nothing listens there: the start must stop before connecting
API_ENV = {
    "DATABASE_URL": "postgresql://127.0.0.1:1/none",
    "RABBITMQ_URL": "amqp://guest:guest@127.0.0.1:1/",
    "REPORT_DOWNLOAD_SECRET": "d" * 32,
    "JWT_SECRET": "j" * 32,
    "HOST": "127.0.0.1",
    "APP_PORT": "0",  # a free port: the start must not depend on 5129 being free here
}


@pytest.fixture
def without(monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    """Make an extra look uninstalled: its module is one that does not exist."""

    def uninstall(extra: str) -> None:
        monkeypatch.setitem(extras.EXTRAS, extra, "reportsvc_no_such_module.inner")

    return uninstall


def test_both_extras_are_installed_in_the_dev_environment() -> None:
    extras.require("s3", "FILE_STORE=s3")
    extras.require("tracing", "tracing")


def test_the_s3_store_without_its_extra_names_the_extra(without) -> None:  # type: ignore[no-untyped-def]
    without("s3")
    settings = load_settings({"FILE_STORE": "s3", "S3_BUCKET": "exports"})
    with pytest.raises(ConfigError) as raised:
        service_container(settings)
    assert str(raised.value) == (
        "FILE_STORE=s3 needs the [s3] extra, which is not installed: "
        "pip install 'farmiq-reportsvc[s3]'"
    )


def test_tracing_without_its_extra_names_the_extra(without) -> None:  # type: ignore[no-untyped-def]
    without("tracing")
    with pytest.raises(ConfigError, match=r"\[tracing\] extra.*farmiq-reportsvc\[tracing\]"):
        setup_tracing({"OTEL_TRACES_EXPORTER": "console"}, command="worker", database=False)
    # tracing off needs no extra
    assert setup_tracing({}, command="worker", database=False) is None


@pytest.mark.parametrize(
    ("extra", "env"),
    [
        ("s3", {"FILE_STORE": "s3", "S3_BUCKET": "exports"}),
        ("tracing", {"OTEL_TRACES_EXPORTER": "console"}),
    ],
)
def test_the_api_stops_at_start_with_one_line(
    extra: str,
    env: dict[str, str],
    without,  # type: ignore[no-untyped-def]
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    without(extra)
    # the process's logging set-up would outlive this test (root handlers on a closed stream)
    monkeypatch.setattr("entrypoints.runtime.logs.setup_logging", lambda settings: None)
    assert cli.main(["api"], env=API_ENV | env) == cli.EXIT_USAGE
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    assert err.startswith("reportsvc: configuration error: ") and f"[{extra}] extra" in err
