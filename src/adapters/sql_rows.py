"""Job <-> row of ``report_jobs``, for every engine: the :class:`Dialect` an engine brings
(how it spells parameters and carries instants, dates, JSON and status lists) and the
:class:`RowCodec` derived from the fields of :class:`reportcore.jobs.Job`, so that a new column
is one edit of ``Job`` plus a migration. :mod:`adapters.sql_jobs` runs the statements."""

from __future__ import annotations

import abc
import datetime as dt
import enum
import typing
from collections.abc import Mapping
from typing import Any

import msgspec

from reportcore.jobs import Job


class Dialect(abc.ABC):
    """How one engine spells parameters and carries instants, dates, JSON and status lists."""

    #: the folder of its migrations and ``dialect.sql`` under ``adapters/sql``
    engine: str

    @abc.abstractmethod
    def parameter(self, name: str) -> str:
        """The placeholder of parameter ``name`` (with any cast the engine needs)."""

    @abc.abstractmethod
    def instant(self, value: dt.datetime | None) -> Any:
        """An aware instant as the engine stores it."""

    @abc.abstractmethod
    def read_instant(self, value: Any) -> dt.datetime | None:
        """An instant read back, aware UTC."""

    def date(self, value: dt.date | None) -> Any:
        """A date as the engine stores it (natively, unless the engine has no date type)."""
        return value

    def read_date(self, value: Any) -> dt.date | None:
        """A date read back."""
        return value  # type: ignore[no-any-return]

    @abc.abstractmethod
    def json(self, value: Any) -> Any:
        """A JSON value as the engine takes it as a parameter."""

    @abc.abstractmethod
    def read_json(self, value: Any) -> Any:
        """A JSON column read back as Python values."""

    @abc.abstractmethod
    def statuses(self, values: list[str]) -> Any:
        """A list of statuses as the ``:sources`` parameter."""


class _Kind(enum.Enum):
    VALUE = "value"
    INSTANT = "instant"
    DATE = "date"
    JSON = "json"
    ENUM = "enum"


def _kind_of(field_type: msgspec.inspect.Type) -> tuple[_Kind, type[enum.Enum] | None]:
    if isinstance(field_type, msgspec.inspect.UnionType):
        present = [t for t in field_type.types if not isinstance(t, msgspec.inspect.NoneType)]
        if len(present) == 1:
            return _kind_of(present[0])
    if isinstance(field_type, msgspec.inspect.DateTimeType):
        return _Kind.INSTANT, None
    if isinstance(field_type, msgspec.inspect.DateType):
        return _Kind.DATE, None
    if isinstance(
        field_type,
        msgspec.inspect.DictType | msgspec.inspect.ListType | msgspec.inspect.StructType,
    ):
        return _Kind.JSON, None
    if isinstance(field_type, msgspec.inspect.EnumType):
        return _Kind.ENUM, field_type.cls
    return _Kind.VALUE, None


_JOB_INFO = msgspec.inspect.type_info(Job)
assert isinstance(_JOB_INFO, msgspec.inspect.StructType)
# (column, kind, enum class): a column per field of Job, named as the field
_JOB_FIELDS = tuple((f.name, *_kind_of(f.type)) for f in _JOB_INFO.fields)
JOB_COLUMNS = tuple(name for name, _, _ in _JOB_FIELDS)
# each JSON column's Python type (a dict, a list, an options Struct), to decode it back into
_JSON_TYPES = {
    name: typing.get_type_hints(Job)[name] for name, kind, _ in _JOB_FIELDS if kind is _Kind.JSON
}


class RowCodec:
    """Job <-> row of ``report_jobs`` in one dialect, derived from the fields of ``Job``."""

    def __init__(self, dialect: Dialect) -> None:
        self._dialect = dialect

    def row(self, job: Job) -> dict[str, Any]:
        """``job``'s row as statement parameters."""
        d = self._dialect
        row: dict[str, Any] = {}
        for name, kind, _ in _JOB_FIELDS:
            value = getattr(job, name)
            if kind is _Kind.INSTANT:
                value = d.instant(value)
            elif kind is _Kind.DATE:
                value = d.date(value)
            elif kind is _Kind.JSON:
                # an absent option is SQL NULL, not JSON null
                value = None if value is None else d.json(msgspec.to_builtins(value))
            elif kind is _Kind.ENUM and value is not None:
                # enum members go as their values: psycopg would dump a plain Enum by its name
                value = value.value
            row[name] = value
        return row

    def job(self, row: Mapping[str, Any]) -> Job:
        """The job of a row read back."""
        d = self._dialect
        values: dict[str, Any] = {}
        for name, kind, enum_cls in _JOB_FIELDS:
            value = row[name]
            if kind is _Kind.INSTANT:
                value = d.read_instant(value)
            elif kind is _Kind.DATE:
                value = d.read_date(value)
            elif kind is _Kind.JSON:
                value = self._read_json(name, d.read_json(value))
            elif kind is _Kind.ENUM and enum_cls is not None and value is not None:
                value = enum_cls(value)
            values[name] = value
        return Job(**values)

    @staticmethod
    def _read_json(name: str, value: Any) -> Any:
        if name == "filters":
            # the old service may have stored NULL where an object is expected
            return value if isinstance(value, dict) else {}
        return None if value is None else msgspec.convert(value, type=_JSON_TYPES[name])
