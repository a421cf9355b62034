"""Delivery: the `reportsvc` command line, the Litestar API, the worker and their wiring.

Importing this package first keeps httpx's command-line client out of the service's processes
(:func:`_without_httpx_command_line`).
"""

import sys
import types


def _without_httpx_command_line() -> None:
    """Keep httpx's command-line client out of the service's processes.

    ``import httpx`` loads ``httpx._main`` (click, rich and pygments, ~6 MB of RSS in every
    api and worker process) whenever those are installed, and Litestar installs them. The
    service never runs ``httpx`` as a command, so before httpx is first imported its
    ``_main`` is registered as a module holding only a ``main`` that says so. A process that
    imported httpx before us (a test runner) keeps the real one.
    """
    if "httpx" in sys.modules or "httpx._main" in sys.modules:
        return
    stand_in = types.ModuleType("httpx._main", "httpx's command line, not loaded by reportsvc")

    def main() -> None:
        raise SystemExit("httpx's command line client is not loaded in reportsvc processes")

    stand_in.main = main  # type: ignore[attr-defined]
    sys.modules["httpx._main"] = stand_in


_without_httpx_command_line()
