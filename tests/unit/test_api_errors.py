"""Every error leaves the API in SPEC §3's shape, with the request's id; /deploy's partial
success; X-Request-ID handling; and the error responses the OpenAPI document promises."""

from __future__ import annotations

from typing import Any

import httpx

from legato.platform import Platform
from legato.runtime.fake import FakeRuntime, image_id
from tests.unit.conftest import Tokens, bearer

ERROR_KEYS = {"error", "code", "details", "request_id"}
PUBLIC_PATHS = {"/api/v1/health", "/health", "/metrics", "/docs", "/openapi.json"}
IMAGE = "legato-test/busybox:latest"


def error_of(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body: dict[str, Any] = response.json()
    assert set(body) == ERROR_KEYS
    assert body["code"] == code
    assert body["request_id"] == response.headers["x-request-id"]
    return body


async def test_unknown_route_is_404_not_found_with_the_request_id(
    client: httpx.AsyncClient, tokens: Tokens
) -> None:
    response = await client.get("/api/v1/nope", headers=bearer(tokens.viewer))
    body = error_of(response, 404, "NOT_FOUND")
    assert body["request_id"].startswith("req_")
    assert "/api/v1/nope" in body["error"]


async def test_unknown_route_without_a_token_is_401(client: httpx.AsyncClient) -> None:
    """Unauthenticated callers learn nothing, not even which routes exist."""
    response = await client.get("/api/v1/nope")
    error_of(response, 401, "TOKEN_MISSING")


async def test_wrong_method_is_405_method_not_allowed(
    client: httpx.AsyncClient, tokens: Tokens
) -> None:
    response = await client.put("/api/v1/services", headers=bearer(tokens.viewer))
    body = error_of(response, 405, "METHOD_NOT_ALLOWED")
    assert "PUT" in body["error"]
    assert response.headers["allow"] == "GET"


async def test_invalid_json_body_is_422_validation_failed(
    client: httpx.AsyncClient, tokens: Tokens
) -> None:
    response = await client.post(
        "/api/v1/deploy", content=b'{"services": [', headers={
            **bearer(tokens.deployer), "Content-Type": "application/json"},
    )
    body = error_of(response, 422, "VALIDATION_FAILED")
    assert body["details"]["errors"][0]["type"] == "json_invalid"


async def test_body_of_the_wrong_shape_is_422_naming_the_field(
    client: httpx.AsyncClient, tokens: Tokens
) -> None:
    response = await client.post("/api/v1/services/web/scale", json={"replicas": -1},
                                 headers=bearer(tokens.deployer))
    body = error_of(response, 422, "VALIDATION_FAILED")
    assert [e["field"] for e in body["details"]["errors"]] == ["replicas"]


async def test_bad_query_parameter_is_422(client: httpx.AsyncClient, tokens: Tokens) -> None:
    response = await client.get("/api/v1/services", params={"limit": 1000},
                                headers=bearer(tokens.viewer))
    body = error_of(response, 422, "VALIDATION_FAILED")
    assert body["details"]["errors"][0]["field"] == "query.limit"


async def test_unknown_service_is_404_service_not_found(
    client: httpx.AsyncClient, tokens: Tokens
) -> None:
    for method, path in [
        ("GET", "/api/v1/services/ghost"),
        ("GET", "/api/v1/services/ghost/events"),
        ("GET", "/api/v1/services/ghost/logs"),
        ("POST", "/api/v1/services/ghost/stop"),
        ("DELETE", "/api/v1/services/ghost"),
    ]:
        response = await client.request(method, path, headers=bearer(tokens.admin))
        body = error_of(response, 404, "SERVICE_NOT_FOUND")
        assert body["details"] == {"name": "ghost"}, f"{method} {path}"


async def test_unknown_deployment_is_404_deployment_not_found(
    client: httpx.AsyncClient, tokens: Tokens
) -> None:
    response = await client.get("/api/v1/deployments/dpl_missing", headers=bearer(tokens.viewer))
    assert error_of(response, 404, "DEPLOYMENT_NOT_FOUND")["details"] == {"id": "dpl_missing"}


async def test_invalid_since_is_422(client: httpx.AsyncClient, tokens: Tokens) -> None:
    await client.post("/api/v1/deploy", json={"services": [{"name": "web", "image": IMAGE}]},
                      headers=bearer(tokens.deployer))
    response = await client.get("/api/v1/services/web/events", params={"since": "yesterday"},
                                headers=bearer(tokens.viewer))
    assert error_of(response, 422, "VALIDATION_FAILED")["details"] == {"since": "yesterday"}


async def test_deploy_with_one_valid_and_one_invalid_service_is_202_with_both(
    client: httpx.AsyncClient, tokens: Tokens, platform: Platform, runtime: FakeRuntime
) -> None:
    response = await client.post(
        "/api/v1/deploy",
        json={"services": [
            {"name": "web", "image": IMAGE, "replicas": 2},
            {"name": "Bad_Name", "image": IMAGE},
        ]},
        headers=bearer(tokens.deployer),
    )
    assert response.status_code == 202, response.text
    body = response.json()
    assert body["deployed"] == ["web"]
    [deployed] = body["deployments"]
    assert deployed["changed"] is True and deployed["deployment_id"].startswith("dpl_")
    [error] = body["errors"]
    assert (error["index"], error["name"], error["code"]) == (1, "Bad_Name", "VALIDATION_FAILED")
    assert error["details"]["errors"][0]["field"] == "name"

    # The valid one was stored and handed to the reconciler, which ran it on the fake runtime.
    service = await client.get("/api/v1/services/web", headers=bearer(tokens.viewer))
    assert service.status_code == 200
    assert service.json()["replicas"]["desired"] == 2
    await platform.reconciler.settled("web")
    replicas = await runtime.list_replicas("web")
    assert sorted(r.slot for r in replicas) == [0, 1]
    assert all(r.running and r.deployment == deployed["deployment_id"] for r in replicas)
    assert {req.image for req in runtime.requests} == {image_id(IMAGE)}
    missing = await client.get("/api/v1/services/bad-name", headers=bearer(tokens.viewer))
    assert missing.status_code == 404


async def test_deploy_with_only_invalid_services_is_422_listing_each(
    client: httpx.AsyncClient, tokens: Tokens
) -> None:
    response = await client.post(
        "/api/v1/deploy",
        json={"services": [
            {"name": "web", "image": IMAGE, "command": "httpd -f"},
            {"name": "api", "image": IMAGE, "replicas": -1},
            {"name": "cache", "image": IMAGE, "surprise": True},
        ]},
        headers=bearer(tokens.deployer),
    )
    body = error_of(response, 422, "VALIDATION_FAILED")
    errors = body["details"]["errors"]
    assert [(e["index"], e["name"]) for e in errors] == [(0, "web"), (1, "api"), (2, "cache")]
    assert [e["details"]["errors"][0]["field"] for e in errors] == ["command", "replicas", "surprise"]
    listed = await client.get("/api/v1/services", headers=bearer(tokens.viewer))
    assert listed.json()["items"] == []


async def test_deploy_of_a_name_taken_in_another_project_is_reported(
    client: httpx.AsyncClient, tokens: Tokens
) -> None:
    headers = bearer(tokens.deployer)
    first = await client.post("/api/v1/deploy", headers=headers,
                              json={"services": [{"name": "web", "image": IMAGE, "project": "a"}]})
    assert first.status_code == 202
    second = await client.post("/api/v1/deploy", headers=headers,
                               json={"services": [{"name": "web", "image": IMAGE, "project": "b"}]})
    body = error_of(second, 409, "SERVICE_NAME_TAKEN")  # the only service's own status
    assert body["details"]["errors"][0]["code"] == "SERVICE_NAME_TAKEN"
    mixed = await client.post("/api/v1/deploy", headers=headers, json={"services": [
        {"name": "web", "image": IMAGE, "project": "b"}, {"name": "Bad_Name", "image": IMAGE}]})
    body = error_of(mixed, 422, "VALIDATION_FAILED")  # errors that disagree: 422
    assert [e["code"] for e in body["details"]["errors"]] == ["SERVICE_NAME_TAKEN",
                                                              "VALIDATION_FAILED"]


async def test_sane_x_request_id_is_echoed_in_header_and_error_body(
    client: httpx.AsyncClient,
) -> None:
    response = await client.get("/api/v1/services", headers={"X-Request-ID": "trace-42.a_b"})
    assert response.headers["x-request-id"] == "trace-42.a_b"
    assert error_of(response, 401, "TOKEN_MISSING")["request_id"] == "trace-42.a_b"
    ok = await client.get("/health", headers={"X-Request-ID": "trace-43"})
    assert ok.status_code == 200 and ok.headers["x-request-id"] == "trace-43"


async def test_insane_x_request_id_is_replaced(client: httpx.AsyncClient) -> None:
    for incoming in ["has space", "x" * 129, "semi;colon", "<script>"]:
        response = await client.get("/api/v1/nope", headers={"X-Request-ID": incoming})
        assert response.headers["x-request-id"] != incoming
        assert response.headers["x-request-id"].startswith("req_")
        assert response.json()["request_id"] == response.headers["x-request-id"]


async def test_every_request_gets_its_own_id(client: httpx.AsyncClient) -> None:
    ids = {(await client.get("/health")).headers["x-request-id"] for _ in range(5)}
    assert len(ids) == 5


async def test_every_protected_operation_documents_401_and_403(client: httpx.AsyncClient) -> None:
    document = (await client.get("/openapi.json")).json()
    checked = 0
    for path, methods in document["paths"].items():
        if path in PUBLIC_PATHS:
            continue
        for method, operation in methods.items():
            responses = operation["responses"]
            for status in ("401", "403"):
                assert status in responses, f"{method.upper()} {path} does not document {status}"
                schema = responses[status]["content"]["application/json"]["schema"]
                assert schema == {"$ref": "#/components/schemas/ErrorBody"}
            checked += 1
    assert checked >= 15
    error_body = document["components"]["schemas"]["ErrorBody"]
    assert set(error_body["properties"]) == ERROR_KEYS
