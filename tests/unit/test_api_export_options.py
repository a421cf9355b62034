"""The export options over HTTP (issue 18): validated with a 400 naming the field, stored,
echoed in the job JSON, and obeyed by the file the worker writes."""

from __future__ import annotations

import csv
import gzip
import hashlib
import io
from collections.abc import Iterator
from typing import Any

import openpyxl
import pytest

from tests.unit.api_support import FEED_BODY, JOBS, ApiWorld, api_world, feed_record

pytestmark = pytest.mark.clock  # reads the tests' clock: rerun on awkward days


@pytest.fixture
def world() -> Iterator[ApiWorld]:
    with api_world() as w:
        yield w


def refused(world: ApiWorld, **fields: Any) -> dict[str, Any]:
    answer = world.client.post(JOBS, json={**FEED_BODY, **fields}, headers=world.headers())
    assert answer.status_code == 400, answer.text
    error: dict[str, Any] = answer.json()["error"]
    assert error["code"] == "VALIDATION_ERROR"
    return error


@pytest.mark.parametrize(
    ("fields", "named"),
    [
        ({"csv": {"delimiter": ":"}}, "csv.delimiter"),
        ({"csv": {"delimiter": ";;"}}, "csv.delimiter"),
        ({"csv": {"line_ending": "cr"}}, "csv.line_ending"),
        ({"csv": {"bom": "yes"}}, "csv.bom"),
        ({"csv": {"quote": "'"}}, "quote"),
        ({"columns": ["id", "weight"]}, "columns[1]"),
        ({"columns": ["id", "occurred_at", "id"]}, "columns[2]"),
        ({"columns": []}, "columns"),
        ({"columns": "id"}, "columns"),
        ({"timezone": "Mars/Olympus_Mons"}, "timezone"),
        ({"timezone": "../../etc/passwd"}, "timezone"),
        ({"timezone": "America"}, "timezone"),
        ({"timezone": ""}, "timezone"),
        ({"compression": "zip"}, "compression"),
        ({"format": "json", "csv": {"delimiter": ";"}}, "csv"),
        ({"format": "xlsx", "compression": "gzip"}, "compression"),
    ],
)
def test_a_bad_option_is_a_400_naming_the_field(
    world: ApiWorld, fields: dict[str, Any], named: str
) -> None:
    error = refused(world, **fields)
    assert named in error["message"]


def test_an_unknown_column_is_named_and_the_allowed_ones_listed(world: ApiWorld) -> None:
    error = refused(world, columns=["id", "weight"])
    assert "'weight'" in error["message"] and "quantity_kg" in error["message"]


def test_a_repeated_column_is_named(world: ApiWorld) -> None:
    error = refused(world, columns=["id", "occurred_at", "id"])
    assert "'id' is named twice" in error["message"]


def test_a_job_echoes_the_options_given_with_csv_defaults_filled_in(world: ApiWorld) -> None:
    job = world.create(
        {
            **FEED_BODY,
            "compression": "gzip",
            "csv": {"delimiter": ";"},
            "columns": ["occurred_at", "id"],
            "timezone": "Asia/Bangkok",
        }
    )
    assert job["compression"] == "gzip"
    assert job["csv"] == {
        "delimiter": ";",
        "bom": False,
        "line_ending": "crlf",
        "formula_guard": True,
    }
    assert job["columns"] == ["occurred_at", "id"]
    assert job["timezone"] == "Asia/Bangkok"
    assert job["row_count"] is None
    again = world.client.get(f"{JOBS}/{job['id']}", headers=world.headers()).json()
    assert again == job


def test_a_job_without_options_shows_none_of_them(world: ApiWorld) -> None:
    job = world.create()
    assert not {"compression", "csv", "columns", "timezone"} & set(job)
    assert job["row_count"] is None


def test_the_same_key_with_other_options_is_a_conflict(world: ApiWorld) -> None:
    world.create({**FEED_BODY, "idempotency_key": "k1", "timezone": "Asia/Bangkok"})
    replay = world.client.post(
        JOBS,
        json={**FEED_BODY, "idempotency_key": "k1", "timezone": "Asia/Bangkok"},
        headers=world.headers(),
    )
    assert replay.status_code == 200
    other = world.client.post(
        JOBS,
        json={**FEED_BODY, "idempotency_key": "k1", "timezone": "Europe/Paris"},
        headers=world.headers(),
    )
    assert other.status_code == 409
    assert other.json()["error"]["code"] == "IDEMPOTENCY_KEY_REUSED"


def _finished(world: ApiWorld, body: dict[str, Any], rows: int) -> dict[str, Any]:
    job = world.create(body)
    world.run_queued([feed_record(i) for i in range(rows)])
    done: dict[str, Any] = world.client.get(f"{JOBS}/{job['id']}", headers=world.headers()).json()
    assert done["status"] == "succeeded", done
    return done


def _download(world: ApiWorld, job: dict[str, Any]) -> tuple[bytes, Any]:
    answer = world.client.get(world.download_url(job["id"]))
    assert answer.status_code == 200
    return answer.content, answer.headers


def test_a_gzip_csv_job_serves_the_compressed_bytes_it_counted_and_hashed(
    world: ApiWorld,
) -> None:
    job = _finished(
        world,
        {
            **FEED_BODY,
            "compression": "gzip",
            "csv": {"delimiter": ";", "bom": True, "line_ending": "lf"},
            "columns": ["id", "occurred_at", "quantity_kg"],
            "timezone": "Asia/Bangkok",
        },
        rows=3,
    )
    assert job["row_count"] == 3
    assert (job["file_name"], job["mime_type"]) == ("feed_intake_export.csv.gz", "application/gzip")
    body, headers = _download(world, job)
    assert headers["content-type"] == "application/gzip"
    assert 'filename="feed_intake_export.csv.gz"' in headers["content-disposition"]
    assert headers["etag"].strip('"') == job["sha256"] == hashlib.sha256(body).hexdigest()
    assert len(body) == job["size_bytes"] == int(headers["content-length"])
    assert job["file_path"].endswith("/report.csv.gz")
    text = gzip.decompress(body).decode("utf-8")
    assert text.startswith("\ufeff") and "\r" not in text
    rows = list(csv.reader(io.StringIO(text.removeprefix("\ufeff"), newline=""), delimiter=";"))
    assert rows == [
        ["id", "occurred_at", "quantity_kg"],
        ["rec-00000", "2026-01-01T07:00:00.000+07:00", "0.5"],
        ["rec-00001", "2026-01-01T07:01:00.000+07:00", "1.5"],
        ["rec-00002", "2026-01-01T07:02:00.000+07:00", "2.5"],
    ]


def test_an_xlsx_job_serves_a_workbook_with_typed_cells(world: ApiWorld) -> None:
    job = _finished(
        world, {**FEED_BODY, "format": "xlsx", "columns": ["id", "quantity_kg"]}, rows=4
    )
    assert job["row_count"] == 4
    assert job["file_name"] == "feed_intake_export.xlsx"
    body, headers = _download(world, job)
    assert headers["content-type"] == (
        "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
    )
    sheet = openpyxl.load_workbook(io.BytesIO(body), read_only=True).active
    assert sheet is not None
    assert list(sheet.iter_rows(values_only=True)) == [
        ("id", "quantity_kg"),
        ("rec-00000", 0.5),
        ("rec-00001", 1.5),
        ("rec-00002", 2.5),
        ("rec-00003", 3.5),
    ]


def test_a_job_without_options_writes_the_bytes_it_always_did(world: ApiWorld) -> None:
    job = _finished(world, FEED_BODY, rows=2)
    body, headers = _download(world, job)
    assert headers["content-type"] == "text/csv; charset=utf-8"
    assert job["row_count"] == 2
    assert body.startswith(b"id,tenant_id,farm_id,")
    assert body.endswith(b",2026-01-01T00:01:00Z,2026-01-01T00:00:00Z,,,,,,,\r\n")
