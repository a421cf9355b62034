"""Every test under tests/integration talks to real services."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from .s3server import Bucket, new_bucket


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/integration" in str(item.path):
            item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="session")
def s3_endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The URL of a real S3-compatible server (moto's, in its own process) for the session."""
    from .s3server import moto_server

    with moto_server(tmp_path_factory.mktemp("moto") / "moto_server.log") as url:
        yield url


@pytest.fixture
def s3_bucket(s3_endpoint: str) -> Bucket:
    """A brand-new bucket of the test server."""
    return new_bucket(s3_endpoint)
