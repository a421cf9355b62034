"""The optional parts of the service, each an extra of the distribution (pyproject.toml).

``pip install farmiq-reportsvc`` installs what every deployment runs; the S3 file store and
tracing are off by default and come with ``[s3]`` and ``[tracing]`` (the image and
requirements.lock install both). A process configured for one without its extra stops at start
with one line that names the extra, instead of an ``ImportError`` traceback from deep in the
wiring.
"""

from __future__ import annotations

import importlib.util

from ..settings import ConfigError

# extra -> a module it installs (the one whose absence is checked)
EXTRAS = {"s3": "boto3", "tracing": "opentelemetry.sdk"}


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:  # a parent package (opentelemetry) is missing
        return False


def require(extra: str, wanted_by: str) -> None:
    """Stop with a :class:`ConfigError` when ``extra`` is not installed; ``wanted_by`` says which
    setting asked for it (``FILE_STORE=s3``)."""
    if not _installed(EXTRAS[extra]):
        raise ConfigError(
            f"{wanted_by} needs the [{extra}] extra, which is not installed: "
            f"pip install 'farmiq-reportsvc[{extra}]'"
        )
