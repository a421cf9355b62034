"""The export options' checks and defaults, called directly (issue 20: mutation score): each
refusal is a 400 naming its field with the message a client reads, each limit holds at its edge,
and options left out read back as the contract's plain file."""

from __future__ import annotations

import datetime as dt
import zoneinfo

import pytest

from reportcore.errors import ValidationError
from reportcore.jobs import Compression, CsvOptions, Job, JobType, LineEnding, ReportFormat
from reportcore.jobtypes import JOB_TYPES
from reportcore.options import (
    ExportOptions,
    check_applies,
    export_options,
    options_of,
    validate_columns,
    validate_timezone,
    zone_of,
)
from tests.clock import pinned_now

pytestmark = pytest.mark.clock  # reads the tests' clock: rerun on awkward days

FEED = JOB_TYPES[JobType.FEED_INTAKE_EXPORT]
KPI = JOB_TYPES[JobType.KPI_FEEDING_EXPORT]
FEED_ALLOWED = (
    "id, tenant_id, farm_id, barn_id, batch_id, device_id, source, feed_formula_id, "
    "feed_lot_id, quantity_kg, occurred_at, created_at, ingested_at, event_id, external_ref, "
    "idempotency_key, sequence, notes, created_by_user_id"
)


def refusal(call: object, *args: object) -> ValidationError:
    assert callable(call)
    with pytest.raises(ValidationError) as caught:
        call(*args)
    return caught.value


# --- timezone ---


def test_no_timezone_asked_stays_none() -> None:
    assert validate_timezone(None) is None


@pytest.mark.parametrize("name", ["Asia/Bangkok", "UTC", "America/Argentina/ComodRivadavia", "NZ"])
def test_a_known_zone_name_is_accepted_as_given(name: str) -> None:
    assert validate_timezone(name) == name


def test_an_empty_timezone_is_refused_as_no_zone_name() -> None:
    error = refusal(validate_timezone, "")
    assert str(error) == "timezone must be an IANA time zone name"
    assert error.field == "timezone"


def test_a_timezone_of_64_characters_is_looked_up_and_one_of_65_refused_unread() -> None:
    at_limit = refusal(validate_timezone, "A" * 64)
    assert str(at_limit) == (
        f"unknown time zone {'A' * 64!r}; use an IANA name such as Asia/Bangkok"
    )
    assert at_limit.field == "timezone"
    over = refusal(validate_timezone, "A" * 65)
    assert str(over) == "timezone must be an IANA time zone name"
    assert over.field == "timezone"


def test_a_one_character_timezone_is_looked_up_and_named_unknown() -> None:
    error = refusal(validate_timezone, "Z")
    assert str(error) == "unknown time zone 'Z'; use an IANA name such as Asia/Bangkok"


def test_a_timezone_that_is_not_text_is_refused() -> None:
    error = refusal(validate_timezone, 7)
    assert str(error) == "timezone must be an IANA time zone name"
    assert error.field == "timezone"


@pytest.mark.parametrize("name", ["Mars/Olympus_Mons", "../../etc/passwd", "America"])
def test_an_unknown_zone_is_named_with_an_example_of_a_good_one(name: str) -> None:
    error = refusal(validate_timezone, name)
    assert str(error) == f"unknown time zone '{name}'; use an IANA name such as Asia/Bangkok"
    assert error.field == "timezone"


@pytest.mark.parametrize(
    "name", ["localtime", "Factory", "posixrules", "posix/Asia/Bangkok", "right/UTC"]
)
def test_a_file_of_the_zone_database_that_is_no_iana_zone_is_refused(name: str) -> None:
    """``localtime`` loads each machine's own zone: workers elsewhere would write others."""
    error = refusal(validate_timezone, name)
    assert str(error) == f"unknown time zone '{name}'; use an IANA name such as Asia/Bangkok"


def test_an_unknown_zone_with_a_control_character_is_shown_escaped() -> None:
    error = refusal(validate_timezone, "Asia/\nBangkok")
    assert str(error) == (
        "unknown time zone \"'Asia/\\\\nBangkok'\"; use an IANA name such as Asia/Bangkok"
    )


def test_utc_is_the_fixed_utc_zone_that_needs_no_zone_database() -> None:
    assert zone_of("UTC") is dt.UTC
    assert zone_of("Asia/Bangkok") == zoneinfo.ZoneInfo("Asia/Bangkok")


# --- columns ---


def test_no_columns_asked_stays_none() -> None:
    assert validate_columns(FEED, None) is None


def test_columns_are_kept_in_the_order_asked() -> None:
    asked = ["quantity_kg", "id", "occurred_at"]
    assert validate_columns(FEED, asked) == ["quantity_kg", "id", "occurred_at"]


@pytest.mark.parametrize("columns", [[], "id", ("id",)])
def test_columns_must_be_a_non_empty_list(columns: object) -> None:
    error = refusal(validate_columns, FEED, columns)
    assert str(error) == "columns must be a non-empty list of column names"
    assert error.field == "columns"


def test_an_unknown_column_is_named_by_its_place_with_the_allowed_ones() -> None:
    error = refusal(validate_columns, FEED, ["id", "occurred_at", "weight"])
    assert str(error) == (
        f"unknown column 'weight' for FEED_INTAKE_EXPORT; allowed: {FEED_ALLOWED}"
    )
    assert error.field == "columns[2]"


def test_an_unknown_column_is_shown_cut_at_100_characters() -> None:
    error = refusal(validate_columns, FEED, ["x" * 150])
    assert str(error) == (
        f"unknown column '{'x' * 100}' for FEED_INTAKE_EXPORT; allowed: {FEED_ALLOWED}"
    )
    assert error.field == "columns[0]"


def test_a_column_name_that_is_not_text_is_refused_as_unknown() -> None:
    error = refusal(validate_columns, FEED, ["id", 3])
    assert str(error) == f"unknown column 3 for FEED_INTAKE_EXPORT; allowed: {FEED_ALLOWED}"
    assert error.field == "columns[1]"


def test_a_column_named_twice_is_refused_at_its_second_place() -> None:
    error = refusal(validate_columns, FEED, ["id", "occurred_at", "id"])
    assert str(error) == "column 'id' is named twice"
    assert error.field == "columns[2]"


# --- which formats an option applies to ---


def test_csv_options_apply_to_csv_only() -> None:
    check_applies(ReportFormat.CSV, None, CsvOptions(delimiter=";"))
    for fmt in (ReportFormat.JSON, ReportFormat.XLSX):
        error = refusal(check_applies, fmt, None, CsvOptions())
        assert str(error) == "csv options apply to format csv only"
        assert error.field == "csv"


def test_gzip_applies_to_csv_and_json_but_not_xlsx() -> None:
    check_applies(ReportFormat.CSV, Compression.GZIP, None)
    check_applies(ReportFormat.JSON, Compression.GZIP, None)
    check_applies(ReportFormat.XLSX, Compression.NONE, None)
    error = refusal(check_applies, ReportFormat.XLSX, Compression.GZIP, None)
    assert str(error) == (
        "compression applies to csv and json only (an xlsx file is compressed already)"
    )
    assert error.field == "compression"


# --- the options the encoders read ---


def test_options_left_out_read_as_an_uncompressed_rfc_4180_file_of_every_column() -> None:
    options = export_options(FEED, compression=None, csv=None, columns=None, timezone=None)
    assert options.compression is Compression.NONE
    assert options.csv == CsvOptions(delimiter=",", bom=False, line_ending=LineEnding.CRLF)
    assert options.columns is None
    assert options.timezone is None
    assert options.zone is None
    assert [c.name for c in options.columns_of(FEED)] == list(FEED_ALLOWED.split(", "))


def test_options_given_are_read_as_given() -> None:
    spelling = CsvOptions(delimiter="|", bom=True, line_ending=LineEnding.LF)
    options = export_options(
        KPI,
        compression=Compression.GZIP,
        csv=spelling,
        columns=["farm_id", "fcr"],
        timezone="Asia/Bangkok",
    )
    assert options.compression is Compression.GZIP
    assert options.csv == spelling
    assert options.columns is not None
    assert [(c.name, c.attr, c.scope) for c in options.columns] == [
        ("farm_id", None, "farm_id"),
        ("fcr", "fcr", None),
    ]
    assert [c.name for c in options.columns_of(KPI)] == ["farm_id", "fcr"]
    assert options.timezone == "Asia/Bangkok"
    assert options.zone == zoneinfo.ZoneInfo("Asia/Bangkok")


def job_with(job_type: JobType, **options: object) -> Job:
    now = pinned_now()
    return Job(
        id="j1",
        tenant_id="t1",
        requested_by=None,
        job_type=job_type,
        format=ReportFormat.CSV,
        created_at=now,
        updated_at=now,
        **options,  # type: ignore[arg-type]
    )


def test_a_jobs_stored_options_are_read_with_its_own_job_types_columns() -> None:
    job = job_with(
        JobType.KPI_FEEDING_EXPORT,
        compression=Compression.GZIP,
        csv=CsvOptions(delimiter=";"),
        columns=["batch_id", "record_date"],
        timezone="Asia/Kathmandu",
    )
    assert options_of(job) == ExportOptions(
        compression=Compression.GZIP,
        csv=CsvOptions(delimiter=";"),
        columns=(KPI.columns[7], KPI.columns[0]),
        timezone="Asia/Kathmandu",
    )
    assert [c.name for c in options_of(job).columns_of(KPI)] == ["batch_id", "record_date"]


def test_a_job_without_options_reads_as_the_plain_file() -> None:
    assert options_of(job_with(JobType.TELEMETRY_EXPORT)) == ExportOptions()


def test_a_jobs_options_may_be_read_with_another_job_type_table() -> None:
    spec = JOB_TYPES[JobType.TELEMETRY_EXPORT]
    job = job_with(JobType.FEED_INTAKE_EXPORT, columns=["metric"])
    assert options_of(job, spec).columns == (spec.columns[6],)
    assert spec.columns[6].name == "metric"
