"""The API documents itself: Swagger UI at /api-docs, OpenAPI 3 at /api-docs/openapi.json."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

import pytest

from .api_support import ApiWorld, api_world

pytestmark = pytest.mark.clock  # reads the tests' clock: rerun on awkward days

# the contract's route table, written out here
CONTRACT_ROUTES = {
    ("get", "/api/health"),
    ("get", "/metrics"),
    ("get", "/api/ready"),
    ("post", "/api/v1/reports/jobs"),
    ("get", "/api/v1/reports/jobs"),
    ("get", "/api/v1/reports/jobs/{jobId}"),
    ("get", "/api/v1/reports/jobs/{jobId}/download"),
    ("post", "/api/v1/reports/jobs/{jobId}/cancel"),
    ("get", "/api/v1/reports/jobs/{jobId}/file"),
}
JWT_ROUTES = {r for r in CONTRACT_ROUTES if r[1].startswith("/api/v1") and "/file" not in r[1]}


@pytest.fixture(scope="module")
def document() -> Iterator[dict[str, Any]]:
    with api_world() as world:
        answer = world.client.get("/api-docs/openapi.json")
        assert answer.status_code == 200
        yield json.loads(answer.text)


@pytest.fixture
def world() -> Iterator[ApiWorld]:
    with api_world() as w:
        yield w


def _resolve(document: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    ref = schema.get("$ref")
    if ref is None:
        return schema
    name = ref.removeprefix("#/components/schemas/")
    resolved: dict[str, Any] = document["components"]["schemas"][name]
    return resolved


def test_swagger_ui_is_served_at_api_docs(world: ApiWorld) -> None:
    answer = world.client.get("/api-docs")
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("text/html")
    assert "swagger-ui" in answer.text.lower()


def test_the_document_is_openapi_3(document: dict[str, Any]) -> None:
    assert document["openapi"].startswith("3.")
    assert document["info"]["title"]
    assert document["info"]["version"]


def test_the_document_lists_every_route_of_the_contract(document: dict[str, Any]) -> None:
    listed = {(method, path) for path, item in document["paths"].items() for method in item}
    assert listed >= CONTRACT_ROUTES


def test_every_operation_has_an_id_of_its_own_not_one_litestar_made_up(
    document: dict[str, Any],
) -> None:
    # Litestar names an operation without operation_id after its path and handler
    # (ApiHealthHealthHead); docs/api.md lists the ids, written camelCase by hand
    ids = [
        operation.get("operationId", f"{method} {path}")
        for path, item in document["paths"].items()
        for method, operation in item.items()
    ]
    assert all(re.fullmatch(r"[a-z]+(?:[A-Z][a-z]*)*", i) for i in ids), ids
    assert len(set(ids)) == len(ids), ids


def test_jwt_routes_require_the_bearer_scheme_and_the_file_route_does_not(
    document: dict[str, Any],
) -> None:
    schemes = document["components"]["securitySchemes"]
    assert len(schemes) == 1
    ((name, scheme),) = schemes.items()
    assert scheme["type"] == "http"
    assert scheme["scheme"] == "bearer"
    assert scheme["bearerFormat"] == "JWT"
    for method, path in CONTRACT_ROUTES:
        operation = document["paths"][path][method]
        if (method, path) in JWT_ROUTES:
            assert operation["security"] == [{name: []}], path
        else:
            assert not operation.get("security"), path


def test_every_jwt_route_documents_the_error_envelope(document: dict[str, Any]) -> None:
    for method, path in JWT_ROUTES | {("get", "/api/v1/reports/jobs/{jobId}/file")}:
        responses = document["paths"][path][method]["responses"]
        for status in ("400", "401", "500"):
            schema = responses[status]["content"]["application/json"]["schema"]
            envelope = _resolve(document, schema)
            assert set(envelope["properties"]) == {"error"}, (path, status)
            body = _resolve(document, envelope["properties"]["error"])
            assert set(body["properties"]) == {"code", "message", "traceId"}


def test_the_job_schema_is_the_contracts_job_json(document: dict[str, Any]) -> None:
    operation = document["paths"]["/api/v1/reports/jobs/{jobId}"]["get"]
    schema = operation["responses"]["200"]["content"]["application/json"]["schema"]
    job = _resolve(document, schema)
    assert "lease_owner" not in job["properties"]
    assert {"id", "status", "filters", "started_at", "finished_at", "attempts"} <= set(
        job["properties"]
    )


def test_the_create_body_and_its_idempotency_header_are_documented(
    document: dict[str, Any],
) -> None:
    operation = document["paths"]["/api/v1/reports/jobs"]["post"]
    body = operation["requestBody"]["content"]["application/json"]["schema"]
    fields = _resolve(document, body)["properties"]
    assert {"job_type", "format", "filters", "idempotency_key", "tenantId"} <= set(fields)
    headers = {p["name"] for p in operation["parameters"] if p["in"] == "header"}
    assert "Idempotency-Key" in headers
    assert {"200", "201", "409"} <= set(operation["responses"])


def test_the_list_query_parameters_are_documented(document: dict[str, Any]) -> None:
    operation = document["paths"]["/api/v1/reports/jobs"]["get"]
    names = {p["name"] for p in operation["parameters"] if p["in"] == "query"}
    assert names >= {"status", "job_type", "created_from", "created_to", "cursor", "limit"}


@pytest.mark.parametrize("method", ["get", "head"])
def test_the_file_documents_the_answers_of_its_conditional_requests(
    document: dict[str, Any], method: str
) -> None:
    responses = document["paths"]["/api/v1/reports/jobs/{jobId}/file"][method]["responses"]
    assert {"200", "304", "412"} <= set(responses)
