"""The schedule routes: create, list, get, PATCH and DELETE under /api/v1/reports/schedules.

Thin as the job routes: parse, call one method of the application, shape the answer. Roles
are the jobs': writers create, change and delete, the four roles read.
"""

from __future__ import annotations

from litestar import Response, delete, get, patch, post
from litestar.di import NamedDependency
from litestar.params import FromPath, FromQuery, JSONBody

from reportcore.access import Action, Principal
from reportcore.requests import ListRequest
from reportcore.service import ReportService

from ..schedule_schemas import (
    SCHEDULES_PATH,
    ScheduleCreate,
    ScheduleOut,
    SchedulePageOut,
    SchedulePatchBody,
    schedule_out,
    schedule_page_out,
)
from ..schemas import TenantBody, decode_cursor, named_tenant
from .errors import error_specs
from .routes import BEARER_SCHEME

_SECURED: list[dict[str, list[str]]] = [{BEARER_SCHEME: []}]
_TAGS = ["schedules"]


@post(
    "/",
    sync_to_thread=True,
    operation_id="createSchedule",
    opt={"action": Action.SCHEDULE},
    status_code=201,
    security=_SECURED,
    tags=_TAGS,
    responses=error_specs(400, 401, 403, 413, 429, 503),
)
def create_schedule(
    data: JSONBody[ScheduleCreate],
    principal: NamedDependency[Principal],
    reports: NamedDependency[ReportService],
) -> Response[ScheduleOut]:
    """Create a schedule: a job at each occurrence of ``cron`` in ``timezone`` (201)."""
    made = reports.create_schedule(data.to_core(), principal)
    return Response(
        schedule_out(made), status_code=201, headers={"location": f"{SCHEDULES_PATH}/{made.id}"}
    )


@get(
    "/",
    sync_to_thread=True,
    operation_id="listSchedules",
    opt={"action": Action.READ},
    security=_SECURED,
    tags=_TAGS,
    responses=error_specs(400, 401, 403, 503),
)
def list_schedules(
    tenant: NamedDependency[str],
    reports: NamedDependency[ReportService],
    cursor: FromQuery[str | None] = None,
    limit: FromQuery[str | None] = None,
) -> SchedulePageOut:
    """The tenant's schedules, newest first, ``limit`` (1..100, default 25) at a time."""
    wanted = ListRequest(after=decode_cursor(cursor) if cursor else None, limit=limit)
    return schedule_page_out(reports.list_schedules(tenant, wanted))


@get(
    "/{scheduleId:str}",
    sync_to_thread=True,
    operation_id="getSchedule",
    opt={"action": Action.READ},
    security=_SECURED,
    tags=_TAGS,
    responses=error_specs(400, 401, 403, 404, 503),
)
def get_schedule(
    scheduleId: FromPath[str],
    tenant: NamedDependency[str],
    reports: NamedDependency[ReportService],
) -> ScheduleOut:
    """One schedule of the tenant."""
    return schedule_out(reports.get_schedule(scheduleId, tenant))


@patch(
    "/{scheduleId:str}",
    sync_to_thread=True,
    operation_id="updateSchedule",
    opt={"action": Action.SCHEDULE},
    security=_SECURED,
    tags=_TAGS,
    responses=error_specs(400, 401, 403, 404, 413, 503),
)
def update_schedule(
    scheduleId: FromPath[str],
    data: JSONBody[SchedulePatchBody],
    principal: NamedDependency[Principal],
    reports: NamedDependency[ReportService],
    tenant_id: FromQuery[str | None] = None,
    tenantId: FromQuery[str | None] = None,
) -> ScheduleOut:
    """Change the fields the body names (``active: false`` pauses, ``true`` resumes)."""
    named = named_tenant(data.tenant_id, data.tenantId, tenant_id, tenantId)
    return schedule_out(reports.update_schedule(scheduleId, data.to_core(), principal, named))


@delete(
    "/{scheduleId:str}",
    sync_to_thread=True,
    operation_id="deleteSchedule",
    opt={"action": Action.SCHEDULE},
    status_code=204,
    security=_SECURED,
    tags=_TAGS,
    responses=error_specs(400, 401, 403, 404, 503),
)
def delete_schedule(
    scheduleId: FromPath[str],
    principal: NamedDependency[Principal],
    reports: NamedDependency[ReportService],
    data: JSONBody[TenantBody | None] = None,
    tenant_id: FromQuery[str | None] = None,
    tenantId: FromQuery[str | None] = None,
) -> None:
    """Remove a schedule (204); the jobs it created stay."""
    body = data or TenantBody()
    named = named_tenant(body.tenant_id, body.tenantId, tenant_id, tenantId)
    reports.delete_schedule(scheduleId, principal, named)
