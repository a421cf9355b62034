"""Who may do what, and for which tenant, against the contract's route table written out here."""

from __future__ import annotations

import itertools

import pytest

from reportcore.access import Action, Principal, Role, authorize, resolve_tenant
from reportcore.errors import Forbidden, ValidationError

# The contract's table: POST jobs, cancel and a schedule's POST, PATCH and DELETE for
# tenant_admin and farm_manager; every GET for those two plus house_operator and viewer;
# platform_admin on every JWT route.
ALLOWED = {
    "create": {"platform_admin", "tenant_admin", "farm_manager"},
    "read": {"platform_admin", "tenant_admin", "farm_manager", "house_operator", "viewer"},
    "cancel": {"platform_admin", "tenant_admin", "farm_manager"},
    "schedule": {"platform_admin", "tenant_admin", "farm_manager"},
}
ROLES = ["platform_admin", "tenant_admin", "farm_manager", "house_operator", "viewer", "auditor"]


def caller(*roles: str, tenant: str | None = "t1") -> Principal:
    return Principal(subject="user-1", roles=frozenset(roles), tenant_id=tenant)


@pytest.mark.parametrize(
    ("role", "action"), list(itertools.product(ROLES, Action)), ids=lambda v: str(v)
)
def test_each_role_may_do_exactly_what_the_route_table_says(role: str, action: Action) -> None:
    if role in ALLOWED[action.value]:
        authorize(caller(role), action)
    else:
        with pytest.raises(Forbidden) as raised:
            authorize(caller(role), action)
        assert raised.value.code == "FORBIDDEN"
        assert action.value in raised.value.message


def test_the_route_table_covers_every_action_and_every_known_role() -> None:
    assert {a.value for a in Action} == set(ALLOWED)
    assert {r.value for r in Role} == set(ROLES) - {"auditor"}


@pytest.mark.parametrize("action", list(Action), ids=str)
def test_a_caller_without_roles_may_do_nothing(action: Action) -> None:
    with pytest.raises(Forbidden):
        authorize(caller(), action)


@pytest.mark.parametrize("action", list(Action), ids=str)
def test_one_allowing_role_among_others_is_enough(action: Action) -> None:
    authorize(caller("auditor", "viewer", "tenant_admin"), action)


@pytest.mark.parametrize(
    ("principal", "requested", "expected"),
    [
        (caller("viewer"), None, "t1"),
        (caller("viewer"), "", "t1"),
        (caller("tenant_admin"), "t1", "t1"),  # the dashboard always names its own tenant
        (caller("platform_admin"), "t2", "t2"),
        (caller("platform_admin", tenant=None), "t9", "t9"),
        (caller("platform_admin", "viewer"), "t2", "t2"),
    ],
    ids=[
        "own tenant by default",
        "empty means absent",
        "naming the own tenant",
        "platform admin names any tenant",
        "platform admin without a tenant claim",
        "platform admin among other roles",
    ],
)
def test_a_request_acts_for_the_resolved_tenant(
    principal: Principal, requested: str | None, expected: str
) -> None:
    assert resolve_tenant(principal, requested) == expected


@pytest.mark.parametrize(
    ("principal", "requested", "error", "message"),
    [
        (caller("viewer"), "t2", Forbidden, "token does not grant access to that tenant"),
        (caller("tenant_admin", tenant=None), None, Forbidden, "token carries no tenant_id"),
        (caller("tenant_admin", tenant=""), "t1", Forbidden, "token carries no tenant_id"),
        (caller("platform_admin"), None, ValidationError, "tenant_id is required for"),
        (caller("platform_admin"), "", ValidationError, "tenant_id is required for"),
        (caller("platform_admin"), "../t2", ValidationError, "tenant_id must be 1..128"),
        (caller("viewer", tenant="a/b"), None, ValidationError, "tenant_id must be 1..128"),
    ],
    ids=[
        "another tenant",
        "token without tenant",
        "token with an empty tenant",
        "platform admin naming none",
        "platform admin naming an empty one",
        "platform admin naming an unsafe one",
        "token with an unsafe tenant",
    ],
)
def test_a_request_for_no_tenant_or_another_tenant_is_refused(
    principal: Principal, requested: str | None, error: type[Exception], message: str
) -> None:
    with pytest.raises(error) as raised:
        resolve_tenant(principal, requested)
    assert str(raised.value).startswith(message)


def test_a_request_naming_two_different_tenants_is_refused_and_one_named_twice_is_fine() -> None:
    from entrypoints.schemas import named_tenant

    assert named_tenant("t-1", "t-1", None) == "t-1"
    assert named_tenant(None, "") is None
    with pytest.raises(ValidationError) as refused:
        named_tenant("t-1", "t-2")
    assert refused.value.field == "tenant_id"


def test_a_platform_admin_naming_no_tenant_is_told_which_field_is_missing() -> None:
    with pytest.raises(ValidationError) as refused:
        resolve_tenant(caller("platform_admin"), None)
    assert refused.value.message == "tenant_id is required for platform_admin"
    assert refused.value.field == "tenant_id"


def test_two_different_tenants_are_refused_with_both_spellings_named() -> None:
    from entrypoints.schemas import named_tenant

    with pytest.raises(ValidationError) as refused:
        named_tenant("t-1", None, "t-2")
    assert refused.value.message == "tenant_id and tenantId name different tenants"
