"""Authentication and roles on every operation the OpenAPI document lists.

The operations come from the app's own /openapi.json, so a route added tomorrow is covered
without touching this file; the count floor keeps the test from passing on an empty list.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from legato.auth import display_prefix, generate_token, hash_token, issue_token
from legato.store import Store
from tests.unit.conftest import Tokens, bearer

PUBLIC_PATHS = {"/api/v1/health", "/health", "/metrics", "/docs", "/openapi.json"}
ERROR_KEYS = {"error", "code", "details", "request_id"}
PATH_VALUES = {
    "name": "web",
    "project": "default",
    "deployment_id": "dpl_0123456789abcdef",
    "token_id": "tok_0123456789abcdef",
    "environment": "production",
    "group_id": "grp_0123456789ab",
    "webhook_id": "whk_0123456789abcdef",
    "provider": "github",
    "key": "API_KEY",
    "tag": "web:0123456789ab",
    "user_id": "usr_0123456789abcdef",
    "notification_id": "1",
    "endpoint_id": "whe_0123456789abcdef",
    "delivery_id": "whd_0123456789abcdef",
}
# Deliveries from git hosts carry a signature instead of a token (SPEC §3); a login is how
# one gets a token.
SIGNED = {("POST", "/api/v1/webhooks/{provider}"), ("POST", "/api/v1/auth/login")}
MIN_PROTECTED = 15


@dataclass(frozen=True)
class Operation:
    method: str
    template: str
    path: str
    has_body: bool

    def __str__(self) -> str:
        return f"{self.method} {self.template}"


async def operations(client: httpx.AsyncClient) -> list[Operation]:
    """Every (method, path) in the OpenAPI document, with its path parameters filled in."""
    response = await client.get("/openapi.json")
    assert response.status_code == 200
    found = []
    for template, methods in response.json()["paths"].items():
        params = re.findall(r"{(\w+)}", template)
        missing = [p for p in params if p not in PATH_VALUES]
        assert not missing, f"no test value for path parameter(s) {missing} of {template}"
        path = template
        for param in params:
            path = path.replace(f"{{{param}}}", PATH_VALUES[param])
        for method, operation in methods.items():
            found.append(Operation(method.upper(), template, path, "requestBody" in operation))
    return found


async def protected(client: httpx.AsyncClient) -> list[Operation]:
    ops = [op for op in await operations(client)
           if op.template not in PUBLIC_PATHS and (op.method, op.template) not in SIGNED]
    assert len(ops) >= MIN_PROTECTED, f"only {len(ops)} protected operations found"
    return ops


async def call(
    client: httpx.AsyncClient, op: Operation, headers: dict[str, str] | None = None
) -> httpx.Response:
    # A JSON body that parses (even if the route would reject its fields), so that only
    # authentication and roles decide the answer.
    body: dict[str, Any] | None = {} if op.has_body else None
    async with client.stream(op.method, op.path, json=body, headers=headers or {}) as response:
        if response.headers.get("content-type", "").startswith("text/event-stream"):
            return response  # a stream that began: the answer is its status and headers
        await response.aread()
        return response


def assert_error(response: httpx.Response, status: int, code: str, op: Operation) -> None:
    assert response.status_code == status, f"{op}: {response.status_code} {response.text}"
    body = response.json()
    assert set(body) == ERROR_KEYS, f"{op}: {body}"
    assert body["code"] == code, f"{op}: {body}"
    assert isinstance(body["error"], str) and body["error"]
    assert body["request_id"] == response.headers["x-request-id"]
    if status == 401:
        assert response.headers.get("www-authenticate") == "Bearer", f"{op}"


# public routes ------------------------------------------------------------------------------


async def test_public_routes_answer_without_a_token(client: httpx.AsyncClient) -> None:
    in_schema = {op.template for op in await operations(client) if op.template in PUBLIC_PATHS}
    assert in_schema == {"/api/v1/health", "/health", "/metrics"}
    for path in sorted(PUBLIC_PATHS):
        response = await client.get(path)
        assert response.status_code == 200, f"{path}: {response.status_code} {response.text}"


async def test_git_deliveries_need_a_valid_signature_instead_of_a_token(
    client: httpx.AsyncClient,
) -> None:
    template = "/api/v1/webhooks/{provider}"
    signed = [op for op in await operations(client) if (op.method, op.template) in SIGNED]
    assert len(signed) == 2
    for provider in ("github", "gitea", "gitlab"):
        op = Operation("POST", template, f"/api/v1/webhooks/{provider}", True)
        assert_error(await call(client, op), 401, "INVALID_SIGNATURE", op)
    other = Operation("POST", template, "/api/v1/webhooks/bitbucket", True)
    assert_error(await call(client, other), 401, "TOKEN_MISSING", other)


async def test_public_health_reports_every_check(client: httpx.AsyncClient) -> None:
    response = await client.get("/api/v1/health")
    assert response.json() == {
        "status": "healthy", "checks": {"database": "ok", "runtime": "ok", "edge": "ok"},
    }


# 401 ----------------------------------------------------------------------------------------


async def test_every_protected_operation_needs_a_token(client: httpx.AsyncClient) -> None:
    for op in await protected(client):
        assert_error(await call(client, op), 401, "TOKEN_MISSING", op)


async def test_malformed_json_without_a_token_is_still_401(client: httpx.AsyncClient) -> None:
    writes = [op for op in await protected(client) if op.has_body]
    assert writes
    for op in writes:
        response = await client.request(op.method, op.path, content=b'{"broken',
                                        headers={"Content-Type": "application/json"})
        assert_error(response, 401, "TOKEN_MISSING", op)


@pytest.mark.parametrize(
    "authorization",
    [
        "lgt_" + "a" * 43,  # no scheme
        "Basic dXNlcjpwYXNz",
        "Bearer",
        "Bearer   ",
        "Token lgt_" + "a" * 43,
    ],
)
async def test_malformed_authorization_is_rejected_everywhere(
    client: httpx.AsyncClient, tokens: Tokens, authorization: str
) -> None:
    for op in await protected(client):
        response = await call(client, op, {"Authorization": authorization})
        assert_error(response, 401, "TOKEN_INVALID", op)


@pytest.mark.parametrize("token", ["lgt_" + "a" * 43, "not-a-token", "lgt_"])
async def test_unknown_token_is_rejected_everywhere(
    client: httpx.AsyncClient, tokens: Tokens, token: str
) -> None:
    for op in await protected(client):
        assert_error(await call(client, op, bearer(token)), 401, "TOKEN_INVALID", op)


async def test_revoked_token_is_rejected_everywhere(
    client: httpx.AsyncClient, store: Store
) -> None:
    record, plaintext = await issue_token(store, name="revoked", role="admin")
    await store.revoke_token(record.id)
    for op in await protected(client):
        assert_error(await call(client, op, bearer(plaintext)), 401, "TOKEN_REVOKED", op)


async def test_expired_token_is_rejected_everywhere(
    client: httpx.AsyncClient, store: Store
) -> None:
    # Written through the store's own API with an expiry in the past, exactly as a token
    # issued 30 days ago would be stored today.
    plaintext = generate_token()
    await store.create_token(
        name="expired", role="admin", token_hash=hash_token(plaintext),
        prefix=display_prefix(plaintext), expires_at=datetime.now(UTC) - timedelta(seconds=1),
    )
    for op in await protected(client):
        assert_error(await call(client, op, bearer(plaintext)), 401, "TOKEN_EXPIRED", op)


async def test_a_token_still_valid_is_accepted(client: httpx.AsyncClient, store: Store) -> None:
    _, plaintext = await issue_token(store, name="fresh", role="viewer", expires_in_days=30)
    response = await client.get("/api/v1/services", headers=bearer(plaintext))
    assert response.status_code == 200, response.text


# tokens through the API (roles and scopes: test_access_matrix.py) ----------------------


async def test_token_created_through_the_api_works_and_revoking_it_locks_it_out(
    client: httpx.AsyncClient, tokens: Tokens
) -> None:
    created = await client.post("/api/v1/tokens", json={"name": "ci", "role": "viewer"},
                                headers=bearer(tokens.admin))
    assert created.status_code == 201, created.text
    body = created.json()
    assert body["token"].startswith(body["prefix"])
    assert (await client.get("/api/v1/status", headers=bearer(body["token"]))).status_code == 200

    revoked = await client.delete(f"/api/v1/tokens/{body['id']}", headers=bearer(tokens.admin))
    assert revoked.status_code == 200 and revoked.json()["revoked_at"] is not None
    response = await client.get("/api/v1/status", headers=bearer(body["token"]))
    assert response.status_code == 401
    assert response.json()["code"] == "TOKEN_REVOKED"
    listed = await client.get("/api/v1/tokens", headers=bearer(tokens.admin))
    assert all("token" not in t for t in listed.json()["items"])
