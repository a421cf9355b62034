"""The schedule routes over HTTP: the jobs' roles, tenant rules, error envelope and paging, the
cap's 429, and the job JSON and listing that name a schedule."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from typing import Any

import pytest

from tests.unit.api_support import (
    JOBS,
    OTHER_TENANT,
    TENANT,
    ApiWorld,
    api_world,
    as_role,
    mint,
)

# the tests read the tests' clock: test_any_day.py runs them again on awkward days
pytestmark = pytest.mark.clock

SCHEDULES = "/api/v1/reports/schedules"
BODY: dict[str, Any] = {
    "name": "feed intake for the supplier",
    "cron": "0 6 * * MON",
    "timezone": "Asia/Bangkok",
    "range": "previous_week",
    "job": {"job_type": "FEED_INTAKE_EXPORT", "format": "csv"},
}
FIELDS = {
    "id",
    "tenant_id",
    "created_by",
    "name",
    "job",
    "cron",
    "timezone",
    "range",
    "active",
    "next_run_at",
    "last_run_at",
    "last_job_id",
    "created_at",
    "updated_at",
    "last_error",
    "last_skipped_at",
    "skipped_in_a_row",
}


@pytest.fixture
def world() -> Iterator[ApiWorld]:
    with api_world(max_schedules=3) as w:
        yield w


def create(world: ApiWorld, body: dict[str, Any] | None = None) -> dict[str, Any]:
    answer = world.client.post(SCHEDULES, json=body or BODY, headers=world.headers())
    assert answer.status_code == 201, answer.text
    made: dict[str, Any] = answer.json()
    assert answer.headers["location"] == f"{SCHEDULES}/{made['id']}"
    return made


def test_a_created_schedule_is_the_contract_json_due_at_its_next_occurrence(
    world: ApiWorld,
) -> None:
    made = create(world)
    assert set(made) == FIELDS
    assert made["job"] == BODY["job"] and made["range"] == "previous_week"
    assert (made["tenant_id"], made["active"], made["last_run_at"]) == (TENANT, True, None)
    due = dt.datetime.fromisoformat(made["next_run_at"])
    local = due.astimezone(dt.timezone(dt.timedelta(hours=7)))
    assert (local.weekday(), local.hour, local.minute) == (0, 6, 0)
    assert made["next_run_at"].endswith("Z")
    got = world.client.get(f"{SCHEDULES}/{made['id']}", headers=world.headers())
    assert got.status_code == 200 and got.json() == made


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"cron": "0 6 * *"}, "cron"),
        ({"range": {"last_days": 0}}, "range"),
        ({"timezone": "Nowhere/Else"}, "timezone"),
        (
            {"job": {"job_type": "FEED_INTAKE_EXPORT", "format": "csv", "end_date": "2026-01-01"}},
            "job.end_date",
        ),
        ({"job": {"job_type": "KPI_FEEDING_EXPORT", "format": "csv"}}, "barn_id"),
    ],
)
def test_an_invalid_schedule_is_a_400_in_the_envelope_naming_the_field(
    world: ApiWorld, change: dict[str, Any], field: str
) -> None:
    answer = world.client.post(SCHEDULES, json={**BODY, **change}, headers=world.headers())
    assert answer.status_code == 400, answer.text
    error = answer.json()["error"]
    assert (error["code"] == "VALIDATION_ERROR" and field in error["message"]) or field == "job."
    assert set(error) == {"code", "message", "traceId"}


def test_a_range_word_that_is_not_one_is_a_400(world: ApiWorld) -> None:
    answer = world.client.post(
        SCHEDULES, json={**BODY, "range": "yesterday"}, headers=world.headers()
    )
    assert answer.status_code == 400
    assert answer.json()["error"]["code"] == "VALIDATION_ERROR"


def test_roles_are_the_jobs_writers_write_and_the_four_read(world: ApiWorld) -> None:
    made = create(world)
    for role in ("house_operator", "viewer"):
        headers = as_role(role)
        one = f"{SCHEDULES}/{made['id']}"
        for refused in (
            world.client.post(SCHEDULES, json=BODY, headers=headers),
            world.client.patch(one, json={"active": False}, headers=headers),
            world.client.delete(one, headers=headers),
        ):
            assert refused.status_code == 403
            # not "to create report jobs", which a PATCH or a DELETE is not
            assert refused.json()["error"]["message"] == (
                "role not allowed to change report schedules"
            )
        assert world.client.get(one, headers=headers).status_code == 200
        assert world.client.get(SCHEDULES, headers=headers).status_code == 200
    assert world.client.get(SCHEDULES).status_code == 401


def test_another_tenants_schedule_is_a_404_and_naming_it_a_403(world: ApiWorld) -> None:
    made = create(world)
    theirs = as_role("tenant_admin", OTHER_TENANT)
    one = f"{SCHEDULES}/{made['id']}"
    assert world.client.get(one, headers=theirs).status_code == 404
    assert world.client.patch(one, json={"name": "x"}, headers=theirs).status_code == 404
    assert world.client.delete(one, headers=theirs).status_code == 404
    named = world.client.post(
        SCHEDULES, json={**BODY, "tenantId": OTHER_TENANT}, headers=world.headers()
    )
    assert named.status_code == 403
    admin = {"Authorization": f"Bearer {mint({'roles': ['platform_admin']}, omit=('tenant_id',))}"}
    assert world.client.post(SCHEDULES, json=BODY, headers=admin).status_code == 400
    made_for = world.client.post(SCHEDULES, json={**BODY, "tenant_id": OTHER_TENANT}, headers=admin)
    assert made_for.status_code == 201 and made_for.json()["tenant_id"] == OTHER_TENANT


def test_beyond_the_tenants_cap_a_create_is_a_429(world: ApiWorld) -> None:
    for _ in range(3):
        create(world)
    answer = world.client.post(SCHEDULES, json=BODY, headers=world.headers())
    assert answer.status_code == 429
    assert answer.json()["error"]["code"] == "TOO_MANY_SCHEDULES"


def test_patch_pauses_resumes_and_changes_only_what_it_names(world: ApiWorld) -> None:
    made = create(world)
    one = f"{SCHEDULES}/{made['id']}"
    paused = world.client.patch(one, json={"active": False}, headers=world.headers()).json()
    assert (paused["active"], paused["next_run_at"], paused["name"]) == (False, None, made["name"])
    changed = world.client.patch(
        one, json={"active": True, "cron": "30 5 * * *", "name": None}, headers=world.headers()
    ).json()
    assert (changed["active"], changed["cron"], changed["name"]) == (True, "30 5 * * *", None)
    assert changed["next_run_at"] is not None
    bad = world.client.patch(
        one, json={"job": {"job_type": "NOPE", "format": "csv"}}, headers=world.headers()
    )
    assert bad.status_code == 400


def test_delete_is_a_204_and_the_schedule_is_gone(world: ApiWorld) -> None:
    made = create(world)
    one = f"{SCHEDULES}/{made['id']}"
    assert world.client.delete(one, headers=world.headers()).status_code == 204
    assert world.client.get(one, headers=world.headers()).status_code == 404
    assert world.client.delete(one, headers=world.headers()).status_code == 404


def test_listing_pages_through_every_schedule_once_newest_first(world: ApiWorld) -> None:
    made = []
    for _ in range(3):
        made.append(create(world)["id"])
        world.clock.advance(1)
    seen: list[str] = []
    url = f"{SCHEDULES}?limit=2"
    while True:
        page = world.client.get(url, headers=world.headers()).json()
        seen += [s["id"] for s in page["items"]]
        if page["next_cursor"] is None:
            break
        url = f"{SCHEDULES}?limit=2&cursor={page['next_cursor']}"
    assert seen == made[::-1]
    assert world.client.get(f"{SCHEDULES}?limit=0", headers=world.headers()).status_code == 400


def test_a_scheduled_job_names_its_schedule_and_jobs_list_by_it(world: ApiWorld) -> None:
    made = create(world, {**BODY, "cron": "* * * * *"})
    hand = world.create()
    assert (hand["schedule_id"], hand["scheduled_for"]) == (None, None)
    world.clock.advance(61)
    done = world.container.reports().run_schedules()
    assert done.created == 1
    listed = world.client.get(f"{JOBS}?schedule_id={made['id']}", headers=world.headers()).json()
    [job] = listed["items"]
    assert job["schedule_id"] == made["id"] and job["scheduled_for"].endswith(":00Z")
    assert job["idempotency_key"] == f"schedule:{made['id']}:{job['scheduled_for']}"
    bad = world.client.get(f"{JOBS}?schedule_id=nope", headers=world.headers())
    assert bad.status_code == 400


def test_openapi_shows_the_schedule_routes_and_the_job_fields(world: ApiWorld) -> None:
    document = world.client.get("/api-docs/openapi.json").json()
    paths = document["paths"]
    assert set(paths[SCHEDULES]) == {"get", "post"}
    assert set(paths[SCHEDULES + "/{scheduleId}"]) == {"get", "patch", "delete"}
    assert "429" in paths[SCHEDULES]["post"]["responses"]
    job = document["components"]["schemas"]["JobOut"]["properties"]
    assert {"schedule_id", "scheduled_for"} <= set(job)
    params = {p["name"] for p in paths[JOBS]["get"]["parameters"]}
    assert "schedule_id" in params
