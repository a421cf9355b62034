"""Issue 15 acceptance (API docs offline): Swagger UI renders in a real browser that has no
network, from a real ``reportsvc dev`` process.

Headless Chromium gets every host but loopback mapped to nowhere (``--host-resolver-rules``)
and every request that is not loopback sent to a proxy that does not listen
(``--proxy-server=127.0.0.1:9``; loopback bypasses a proxy by default). A control page that
loads a CDN script shows the network is really gone. The docs page must still render the
create operation: its script, stylesheet and start-up come from the service itself, and it
runs under the Content-Security-Policy the service sends with it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import urllib.parse
from pathlib import Path

import pytest

from ..conftest import REQUIRE_SERVICES
from .procs import Procs
from .test_dev_mode import start_dev

BROWSER_TIMEOUT_SEC = 90.0


def _chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    reason = "no chromium on PATH (.ci/run installs Debian's chromium)"
    if REQUIRE_SERVICES:
        pytest.fail(f"REQUIRE_SERVICES=1 but {reason}", pytrace=False)
    pytest.skip(f"SKIPPED INTEGRATION: {reason}")


def dump_dom_offline(url: str, profile: Path) -> str:
    """The DOM of ``url`` after up to 10 s of (virtual) time, in a browser without a network."""
    argv = [
        _chromium(),
        "--headless=new",
        "--no-sandbox",  # CI runs as root
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        f"--user-data-dir={profile}",
        "--proxy-server=127.0.0.1:9",
        "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
        "--virtual-time-budget=10000",
        "--dump-dom",
        url,
    ]
    done = subprocess.run(
        argv,
        capture_output=True,
        text=True,
        timeout=BROWSER_TIMEOUT_SEC,
        check=False,
        env={**os.environ, "HOME": str(profile)},
    )
    assert done.returncode == 0, done.stderr[-4000:]
    return done.stdout


def test_the_browser_of_this_test_reaches_no_other_origin(tmp_path: Path) -> None:
    page = (
        '<script src="https://cdn.jsdelivr.net/npm/swagger-ui-dist@5/swagger-ui-bundle.js">'
        "</script><p id=probe></p><script>document.getElementById('probe').textContent = "
        "'loaded:' + typeof SwaggerUIBundle</script>"
    )
    dom = dump_dom_offline("data:text/html," + urllib.parse.quote(page), tmp_path / "profile")
    assert "loaded:undefined" in dom


def test_swagger_ui_renders_the_create_operation_without_a_network(tmp_path: Path) -> None:
    with Procs(tmp_path / "logs") as procs:
        _, printed = start_dev(procs, tmp_path / "data")
        dom = dump_dom_offline(printed.base_url + "/api-docs", tmp_path / "profile")
    # Swagger UI built these from /api-docs/openapi.json: the page itself holds none of them
    assert 'id="operations-report_jobs-createJob"' in dom, dom[-3000:]
    assert 'data-path="/api/v1/reports/jobs"' in dom
    assert 'class="opblock-summary-method">POST<' in dom
