"""FarmIQ reporting export service (``reportsvc``).

``__version__`` is the one version of the service: the installed distribution's, read once
here, and taken from here by ``reportsvc --version``, the OpenAPI document's ``info.version``,
the upstream client's ``User-Agent`` and tracing's ``service.version``, so they never differ.
"""

from __future__ import annotations

import importlib.metadata

DISTRIBUTION = "farmiq-reportsvc"

try:
    __version__ = importlib.metadata.version(DISTRIBUTION)
except importlib.metadata.PackageNotFoundError:  # run from a source tree that is not installed
    __version__ = "0+unknown"
