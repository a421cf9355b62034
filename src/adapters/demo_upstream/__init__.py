"""A demo upstream: the four FarmIQ upstream APIs of the contract, served over real HTTP with
generated sample data. ``reportsvc dev`` and ``reportsvc export --demo`` read from it, and the
integration and fault tests drive it.

The data is a pure function of the seed and the query parameters: any tenant, farm, barn or
batch asked for has records, and asking again (whole, or page by page, or through narrower
windows) gives the same records. Paging follows the contract: feed intake newest first by
cursor (``limit`` at most 100), telemetry newest first in ``from``/``to`` windows (``limit`` at
most 10000, several readings per timestamp), WeighVision oldest first, KPIs one item a day.
Without dates the last 7 days are served.

Record ids are UUIDs whose last field holds the record's day and index, so that a feed cursor
(the last record's id) is a position: any page can be served without state.

Tests inject faults through :attr:`DemoUpstream.faults` and read what the server saw in
:attr:`DemoUpstream.requests`. Run on its own:
``python -m adapters.demo_upstream --port 8081``.
"""

from __future__ import annotations

from .draws import (
    DEMO_BARN_ID,
    DEMO_BATCH_ID,
    DEMO_END,
    DEMO_FARM_ID,
    DEMO_START,
    DEMO_TENANT,
    BadRequest,
)
from .faults import Faults, SeenRequest
from .samples import DemoData
from .server import DemoUpstream

__all__ = [
    "DEMO_BARN_ID",
    "DEMO_BATCH_ID",
    "DEMO_END",
    "DEMO_FARM_ID",
    "DEMO_START",
    "DEMO_TENANT",
    "BadRequest",
    "DemoData",
    "DemoUpstream",
    "Faults",
    "SeenRequest",
]
