"""Create and list checks the other request tests leave unstated (issue 20: mutation score):
the NUL check names each list parameter, a cursor's validity does not depend on the machine's
time zone, and a checked create reads back as the options the encoders get."""

from __future__ import annotations

import base64
import datetime as dt

import pytest

from entrypoints.schemas import encode_cursor
from reportcore.errors import ValidationError
from reportcore.jobs import Compression, CsvOptions, JobType, LineEnding, ReportFormat, Scope
from reportcore.options import ExportOptions
from reportcore.requests import (
    Cursor,
    ValidCreate,
    options_of_create,
    refuse_nul,
    validate_idempotency_key,
)
from tests.unit.test_requests import (
    listing,
    local_time_is_bangkok,  # noqa: F401 (a fixture)
)


@pytest.mark.parametrize("name", ["status", "job_type", "created_from", "created_to", "limit"])
def test_a_nul_in_any_list_parameter_is_a_400_naming_it(name: str) -> None:
    with pytest.raises(ValidationError) as raised:
        listing(**{name: "a\x00b"})
    assert (raised.value.field, raised.value.message) == (
        name,
        f"{name} must not contain NUL characters",
    )


def test_a_cursor_whose_id_holds_a_nul_is_a_400_naming_the_cursor() -> None:
    text = encode_cursor(Cursor(dt.datetime(2026, 1, 1, tzinfo=dt.UTC), "a\x00b"))
    with pytest.raises(ValidationError) as raised:
        listing(cursor=text)
    assert (raised.value.field, raised.value.message) == (
        "cursor",
        "cursor must not contain NUL characters",
    )


@pytest.mark.usefixtures("local_time_is_bangkok")
def test_a_cursor_in_the_last_hour_of_9999_utc_is_valid_whatever_the_local_zone() -> None:
    # in Asia/Bangkok (+07:00) that instant is past the calendar: only UTC is asked of it
    text = base64.urlsafe_b64encode(b'["9999-12-31T23:00:00+00:00","x"]').decode().rstrip("=")
    after = listing(cursor=text).after
    assert after is not None
    assert (after.created_at.isoformat(), after.id) == ("9999-12-31T23:00:00+00:00", "x")


def test_a_checked_create_reads_back_as_the_options_the_encoders_get() -> None:
    valid = ValidCreate(
        job_type=JobType.KPI_FEEDING_EXPORT,
        format=ReportFormat.CSV,
        scope=Scope(),
        idempotency_key=None,
        compression=Compression.GZIP,
        csv=CsvOptions(delimiter="\t", bom=True, line_ending=LineEnding.LF),
        columns=["fcr", "farm_id"],
        timezone="Asia/Bangkok",
    )
    options = options_of_create(valid)
    assert options.compression is Compression.GZIP
    assert options.csv == CsvOptions(delimiter="\t", bom=True, line_ending=LineEnding.LF)
    assert options.columns is not None
    assert [(c.name, c.attr, c.scope) for c in options.columns] == [
        ("fcr", "fcr", None),
        ("farm_id", None, "farm_id"),
    ]
    assert options.timezone == "Asia/Bangkok"


def test_a_create_without_options_reads_back_as_the_plain_file() -> None:
    valid = ValidCreate(
        job_type=JobType.TELEMETRY_EXPORT,
        format=ReportFormat.JSON,
        scope=Scope(),
        idempotency_key=None,
    )
    assert options_of_create(valid) == ExportOptions()


@pytest.mark.parametrize("key", ["a\nb", "a\rb", "a\x1bb", "a\u2028b"])
def test_an_idempotency_key_with_a_control_character_is_a_400_naming_it(key: str) -> None:
    with pytest.raises(ValidationError) as raised:
        validate_idempotency_key(key)
    assert (raised.value.field, raised.value.message) == (
        "idempotency_key",
        "idempotency_key must not contain control characters",
    )


@pytest.mark.parametrize(
    ("value", "named"),
    [
        ("a\x00b", "request"),
        ({"a\x00b": "x"}, "request"),
        ({"filters": {"so\x00urce": "x"}}, "filters"),
        ({"filters": {"source": ["x", "y\x00"]}}, "filters.source"),
    ],
)
def test_a_nul_anywhere_in_a_request_is_a_400_naming_where(value: object, named: str) -> None:
    with pytest.raises(ValidationError) as raised:
        refuse_nul(value)
    assert (raised.value.field, raised.value.message) == (
        named,
        f"{named} must not contain NUL characters",
    )


def test_a_filter_list_of_100_values_is_taken_and_of_101_refused_naming_the_cap() -> None:
    from reportcore.requests import MAX_FILTER_VALUES, CreateRequest, validate_create

    def feed(devices: list[str]) -> CreateRequest:
        return CreateRequest(
            job_type="FEED_INTAKE_EXPORT", format=ReportFormat.CSV, filters={"device_id": devices}
        )

    many = [f"d{i:03d}" for i in range(MAX_FILTER_VALUES)]
    assert validate_create(feed(many)).scope.filters == {"device_id": many}
    with pytest.raises(ValidationError) as refused:
        validate_create(feed([*many, "d100"]))
    assert (refused.value.field, refused.value.message) == (
        "filters.device_id",
        "filter 'device_id' takes at most 100 values, got 101",
    )


def test_a_cursor_longer_than_any_the_api_hands_out_is_refused_before_decoding() -> None:
    from entrypoints.schemas import MAX_CURSOR_CHARS, decode_cursor

    issued = encode_cursor(Cursor(dt.datetime(9999, 12, 31, 23, tzinfo=dt.UTC), "f" * 36))
    assert len(issued) < MAX_CURSOR_CHARS and decode_cursor(issued).id == "f" * 36
    with pytest.raises(ValidationError) as refused:
        decode_cursor("A" * (MAX_CURSOR_CHARS + 1))
    assert refused.value.field == "cursor"
    assert refused.value.message == "cursor is not valid (at most 200 characters)"
