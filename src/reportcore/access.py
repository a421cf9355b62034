"""Who may do what, and for which tenant: the role table and tenant resolution."""

from __future__ import annotations

import enum
from collections.abc import Mapping

import msgspec

from .errors import Forbidden, ValidationError
from .requests import validate_tenant_id


class Role(enum.StrEnum):
    """FarmIQ roles known to this service."""

    PLATFORM_ADMIN = "platform_admin"
    TENANT_ADMIN = "tenant_admin"
    FARM_MANAGER = "farm_manager"
    HOUSE_OPERATOR = "house_operator"
    VIEWER = "viewer"


class Action(enum.StrEnum):
    """What a route does, as far as permissions go."""

    CREATE = "create"
    READ = "read"
    CANCEL = "cancel"
    SCHEDULE = "schedule"  # create, change or delete a schedule


_WRITERS = frozenset({Role.PLATFORM_ADMIN, Role.TENANT_ADMIN, Role.FARM_MANAGER})
_READERS = _WRITERS | {Role.HOUSE_OPERATOR, Role.VIEWER}

PERMISSIONS: Mapping[Action, frozenset[Role]] = {
    Action.CREATE: _WRITERS,
    Action.READ: _READERS,
    Action.CANCEL: _WRITERS,
    Action.SCHEDULE: _WRITERS,
}
# what a refused caller was not allowed to do, as the 403 says it
_REFUSED: Mapping[Action, str] = {
    Action.CREATE: "create report jobs",
    Action.READ: "read report jobs",
    Action.CANCEL: "cancel report jobs",
    Action.SCHEDULE: "change report schedules",
}


class Principal(msgspec.Struct, frozen=True, kw_only=True):
    """A verified caller: who, with which roles, of which tenant (if any)."""

    subject: str | None
    roles: frozenset[str]
    tenant_id: str | None


def authorize(principal: Principal, action: Action) -> None:
    """Raise :class:`Forbidden` unless one of the caller's roles allows ``action``."""
    if not principal.roles & {r.value for r in PERMISSIONS[action]}:
        raise Forbidden(f"role not allowed to {_REFUSED[action]}")


def resolve_tenant(principal: Principal, requested: str | None) -> str:
    """The tenant a request acts for.

    A ``platform_admin`` acts for the tenant it names (400 if none). Anyone else acts for the
    tenant of their token; a token without one is refused, and so is naming another tenant.
    """
    if Role.PLATFORM_ADMIN.value in principal.roles:
        if not requested:
            raise ValidationError("tenant_id is required for platform_admin", field="tenant_id")
        return validate_tenant_id(requested)
    if not principal.tenant_id:
        raise Forbidden("token carries no tenant_id")
    if requested and requested != principal.tenant_id:
        raise Forbidden("token does not grant access to that tenant")
    return validate_tenant_id(principal.tenant_id)
