"""``/api-docs``: Swagger UI from installed files, no CDN, under a strict Content-Security-Policy.

The page is a few static tags: Swagger UI's script and stylesheet come from the
``swagger-ui-bundle-v2`` package, its start-up from ``static/swagger-init.js`` beside this
module, all under ``/api-docs/static/``; the document is fetched from ``/api-docs/openapi.json``.
No inline script or style, nothing from another origin: the docs work on a machine without
the internet and under the :data:`CONTENT_SECURITY_POLICY` the page is sent with.
"""

from __future__ import annotations

import html
from pathlib import Path
from typing import Any

from litestar import Request, get
from litestar.datastructures import ResponseHeader
from litestar.exceptions import NotFoundException
from litestar.openapi.plugins import OpenAPIRenderPlugin
from litestar.params import FromPath
from litestar.response import File

ASSETS_PATH = "/api-docs/static"
_OWN = Path(__file__).resolve().parent / "static"

# name under ASSETS_PATH -> (file, media type); nothing else of either folder is served
_ASSETS: dict[str, tuple[str, str]] = {
    "swagger-ui-bundle.js": ("bundle", "text/javascript; charset=utf-8"),
    "swagger-ui.css": ("bundle", "text/css; charset=utf-8"),
    "favicon-32x32.png": ("bundle", "image/png"),
    "swagger-init.js": ("own", "text/javascript; charset=utf-8"),
}

# Swagger UI needs: its own scripts and styles, the document (connect-src), and the data: SVG
# icons of its stylesheet. React sets styles through the DOM, which style-src does not govern.
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; font-src 'self'; base-uri 'none'; form-action 'none'; "
    "frame-ancestors 'none'"
)
CSP_HEADER = ResponseHeader(name="content-security-policy", value=CONTENT_SECURITY_POLICY)


def _bundle_folder() -> Path:
    # imported on first use: a worker, or an API nobody reads the docs of, never loads it
    from swagger_ui_bundle import swagger_ui_path

    return Path(str(swagger_ui_path))


def asset_file(name: str) -> tuple[Path, str]:
    """The file served as ``/api-docs/static/<name>`` and its media type."""
    if name not in _ASSETS:
        raise NotFoundException
    where, media_type = _ASSETS[name]
    return (_bundle_folder() if where == "bundle" else _OWN) / name, media_type


@get(f"{ASSETS_PATH}/{{name:str}}", include_in_schema=False, sync_to_thread=False)
def docs_asset(name: FromPath[str]) -> File:
    """One of Swagger UI's files; they change only with the package, so caches may keep them
    for a day."""
    path, media_type = asset_file(name)
    return File(
        path,
        media_type=media_type,
        content_disposition_type="inline",
        headers={"cache-control": "public, max-age=86400"},
    )


class OfflineSwaggerPlugin(OpenAPIRenderPlugin):
    """Swagger UI as a static page over :data:`ASSETS_PATH` (Litestar's own plugin inlines the
    document in a script and loads Swagger UI from a CDN)."""

    def __init__(self, path: str = "/") -> None:
        super().__init__(path=path, favicon="", style="")

    def render(self, request: Request[Any, Any, Any], openapi_schema: dict[str, Any]) -> bytes:
        title = html.escape(str(openapi_schema.get("info", {}).get("title", "API")))
        return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title}</title>
<link rel="icon" type="image/png" href="{ASSETS_PATH}/favicon-32x32.png">
<link rel="stylesheet" href="{ASSETS_PATH}/swagger-ui.css">
</head>
<body>
<div id="swagger-ui"></div>
<script src="{ASSETS_PATH}/swagger-ui-bundle.js"></script>
<script src="{ASSETS_PATH}/swagger-init.js"></script>
</body>
</html>
""".encode()
