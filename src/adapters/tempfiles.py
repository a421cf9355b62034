"""The worker's temporary files (a bounded export's window spools, an xlsx workbook being
built): where they go (``TMPDIR``), and how their failure reads."""

from __future__ import annotations

from reportcore.errors import StorageFailure


def failure(exc: BaseException) -> StorageFailure:
    """``exc`` (a full or unwritable ``TMPDIR``) as the export's failure: STORAGE_FAILED saying
    it is the worker's temporary space, not the export file ("export file could not be
    written"), which would send an operator to the export store."""
    # xlsxwriter wraps the OSError of its zip in a FileCreateError of its own
    cause = exc.args[0] if exc.args and isinstance(exc.args[0], OSError) else exc
    reason = getattr(cause, "strerror", None) or str(cause) or type(exc).__name__
    return StorageFailure(f"the worker's temporary files (TMPDIR) could not be written: {reason}")
