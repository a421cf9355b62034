"""Every test under tests/faults injects a real fault: killed processes, stopped servers, a full
disk, a misbehaving upstream. A test that stops a server runs its own throwaway instance, so the
rest of the suite never sees the fault."""

from __future__ import annotations

import pytest


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/faults" in str(item.path):
            item.add_marker(pytest.mark.faults)
            item.add_marker(pytest.mark.integration)
