"""A create names only dates the worker can export, over a range the job type allows: what
would once crash the worker (``end_date: 9999-12-31``) or hold it for minutes is a 400."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.unit.api_support import JOBS, ApiWorld, api_world, auth, mint


@pytest.fixture
def world() -> Iterator[ApiWorld]:
    with api_world() as w:
        yield w


def _create(world: ApiWorld, **fields: str) -> tuple[int, dict[str, object]]:
    body = {"job_type": "TELEMETRY_EXPORT", "format": "csv", **fields}
    answer = world.client.post(JOBS, json=body, headers=auth(mint()))
    return answer.status_code, answer.json()


def test_an_end_date_with_no_day_after_it_is_a_400_and_stores_no_job(world: ApiWorld) -> None:
    status, body = _create(world, start_date="9999-12-01", end_date="9999-12-31")
    assert status == 400
    assert body["error"]["code"] == "VALIDATION_ERROR"  # type: ignore[index]
    assert body["error"]["message"] == (  # type: ignore[index]
        "end_date must be between 1970-01-01 and 9999-12-30"
    )
    assert world.queue.take() is None


def test_a_six_year_telemetry_range_is_a_400_naming_the_types_maximum(world: ApiWorld) -> None:
    status, body = _create(world, start_date="2020-01-01", end_date="2025-12-31")
    assert status == 400
    assert body["error"]["message"] == (  # type: ignore[index]
        "TELEMETRY_EXPORT may span at most 92 days; start_date..end_date spans 2192"
    )


def test_the_maximum_range_comes_from_the_settings() -> None:
    from reportcore.jobs import JobType

    with api_world(max_range_days={JobType.TELEMETRY_EXPORT: 7}) as world:
        assert _create(world, start_date="2026-01-01", end_date="2026-01-07")[0] == 201
        assert _create(world, start_date="2026-01-01", end_date="2026-01-08")[0] == 400
