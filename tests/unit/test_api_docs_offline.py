"""/api-docs works without the internet: Swagger UI's files are served from the installed
package, and the page needs no inline script and nothing from another origin, so that it
works under the strict Content-Security-Policy it is sent with. The page rendered in a real
browser without a network is tests/integration/test_api_docs_browser.py."""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest

from entrypoints.api.docs import CONTENT_SECURITY_POLICY

from .api_support import ApiWorld, api_world
from .test_api_hostile_input import assert_envelope

pytestmark = pytest.mark.clock  # reads the tests' clock: rerun on awkward days

_SRC = re.compile(r"""(?:src|href)=["']([^"']+)["']""")


@pytest.fixture
def world() -> Iterator[ApiWorld]:
    with api_world() as w:
        yield w


def test_the_docs_page_loads_nothing_from_another_origin(world: ApiWorld) -> None:
    page = world.client.get("/api-docs").text
    referenced = _SRC.findall(page)
    assert referenced, "the page loads Swagger UI from somewhere"
    for url in referenced:
        assert url.startswith("/api-docs/static/"), url
    assert "//" not in "".join(referenced)


def test_the_docs_page_has_no_inline_script_or_style(world: ApiWorld) -> None:
    page = world.client.get("/api-docs").text
    scripts = re.findall(r"<script([^>]*)>(.*?)</script>", page, re.S)
    assert scripts
    for attributes, body in scripts:
        assert "src=" in attributes and body.strip() == ""
    assert "<style" not in page and "style=" not in page and " on" not in page.lower()


def test_the_docs_are_sent_with_a_strict_content_security_policy(world: ApiWorld) -> None:
    answer = world.client.get("/api-docs")
    policy = answer.headers["content-security-policy"]
    assert policy == CONTENT_SECURITY_POLICY
    directives = dict(d.strip().split(" ", 1) for d in policy.split(";"))
    assert directives["script-src"] == "'self'"
    assert directives["default-src"] == "'none'"
    assert "unsafe" not in policy


def test_every_file_the_page_names_is_served_from_the_installed_package(
    world: ApiWorld,
) -> None:
    page = world.client.get("/api-docs").text
    types = {".js": "text/javascript", ".css": "text/css", ".png": "image/png"}
    for url in _SRC.findall(page):
        answer = world.client.get(url)
        assert answer.status_code == 200, url
        assert answer.headers["content-type"].startswith(types[url[url.rindex(".") :]])
        assert len(answer.content) > 0
    bundle = world.client.get("/api-docs/static/swagger-ui-bundle.js").content
    assert b"SwaggerUIBundle" in bundle and len(bundle) > 500_000


@pytest.mark.parametrize(
    "path",
    [
        "/api-docs/static/index.html",  # in the package, but not one of the page's files
        "/api-docs/static/unknown.js",
        "/api-docs/static/..%2F..%2Fdocs.py",
        "/api-docs/static/",
    ],
)
def test_only_the_pages_own_files_are_served_under_static(world: ApiWorld, path: str) -> None:
    assert_envelope(world.client.get(path), 404, "NOT_FOUND")
