"""The service's :class:`reportcore.ports.IdSource`: a random UUID for each new job and
schedule."""

from __future__ import annotations

import uuid


class RandomIds:
    """A fresh random (version 4) UUID each time, in its canonical text form."""

    __slots__ = ()

    def new_id(self) -> str:
        return str(uuid.uuid4())


RANDOM_IDS = RandomIds()
"""The one a caller gets unless it passes its own."""
