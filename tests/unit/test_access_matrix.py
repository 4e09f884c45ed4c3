"""Roles by project scope on every operation of the OpenAPI document.

ROUTES says, for each operation, the least role it needs and what it acts on. The test fails
when the app lists an operation the table does not (or the other way round), so a new route
cannot arrive without its access rule. Each cell is then proven against the app:

- a role below the least one gets 403 INSUFFICIENT_ROLE; the least one gets past auth;
- a token scoped to project alpha gets, for project zebra's objects, exactly the answer it
  gets for objects that do not exist (a 404), so it cannot tell that zebra exists;
- on alpha's own objects the scoped token gets past auth, except on platform-wide
  operations (403 TOKEN_SCOPE);
- lists and summaries answer the scoped token without a trace of zebra.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from legato.auth import issue_token
from legato.platform import Platform
from legato.store import Store
from tests.unit.conftest import IMAGE, bearer

V, D, A = "viewer", "deployer", "admin"
# What an operation acts on: a service, project or deployment (found by its path: 404 when
# unseen), "platform" (unscoped admins only), "listing" (filtered to what the token sees),
# "owned" (the caller's own tokens, user, notifications), "registration" (a git webhook),
# "group" (workspace-wide), "public" (no token at all).
ROUTES: dict[tuple[str, str], tuple[str | None, str]] = {
    ("POST", "/api/v1/deploy"): (D, "listing"),
    ("GET", "/api/v1/services"): (V, "listing"),
    ("GET", "/api/v1/status"): (V, "listing"),
    ("GET", "/api/v1/services/{name}"): (V, "service"),
    ("DELETE", "/api/v1/services/{name}"): (D, "service"),
    ("GET", "/api/v1/services/{name}/spec"): (V, "service"),
    ("POST", "/api/v1/services/{name}/scale"): (D, "service"),
    ("POST", "/api/v1/services/{name}/start"): (D, "service"),
    ("POST", "/api/v1/services/{name}/stop"): (D, "service"),
    ("POST", "/api/v1/services/{name}/restart"): (D, "service"),
    ("DELETE", "/api/v1/projects/{project}/services"): (D, "project"),
    ("GET", "/api/v1/services/{name}/logs"): (V, "service"),
    ("GET", "/api/v1/services/{name}/health"): (V, "service"),
    ("POST", "/api/v1/services/{name}/health/check"): (D, "service"),
    ("GET", "/api/v1/services/{name}/events"): (V, "service"),
    ("POST", "/api/v1/services/{name}/deployments"): (D, "service"),
    ("GET", "/api/v1/services/{name}/deployments"): (V, "service"),
    ("GET", "/api/v1/deployments/{deployment_id}"): (V, "deployment"),
    ("GET", "/api/v1/deployments/{deployment_id}/logs"): (V, "deployment"),
    ("GET", "/api/v1/deployments/{deployment_id}/build-log"): (V, "deployment"),
    ("POST", "/api/v1/deployments/{deployment_id}/promote"): (D, "deployment"),
    ("POST", "/api/v1/deployments/{deployment_id}/fail"): (D, "deployment"),
    ("POST", "/api/v1/deployments/{deployment_id}/rollback"): (D, "deployment"),
    ("POST", "/api/v1/services/{name}/promote"): (D, "service"),
    ("POST", "/api/v1/services/{name}/rollback"): (D, "service"),
    ("GET", "/api/v1/projects"): (V, "listing"),
    ("POST", "/api/v1/projects"): (D, "listing"),
    ("GET", "/api/v1/projects/check-name/{name}"): (V, "project"),
    ("GET", "/api/v1/projects/{project}"): (V, "project"),
    ("PATCH", "/api/v1/projects/{project}"): (D, "project"),
    ("DELETE", "/api/v1/projects/{project}"): (D, "project"),
    ("GET", "/api/v1/projects/{project}/environments"): (V, "project"),
    ("POST", "/api/v1/projects/{project}/environments"): (D, "project"),
    ("GET", "/api/v1/projects/{project}/environments/{environment}"): (V, "project"),
    ("PATCH", "/api/v1/projects/{project}/environments/{environment}"): (D, "project"),
    ("DELETE", "/api/v1/projects/{project}/environments/{environment}"): (D, "project"),
    # Decrypted configuration is for deployers.
    ("GET", "/api/v1/projects/{project}/env-vars"): (D, "project"),
    ("PUT", "/api/v1/projects/{project}/env-vars"): (D, "project"),
    ("PATCH", "/api/v1/projects/{project}/env-vars"): (D, "project"),
    ("GET", "/api/v1/projects/{project}/environments/{environment}/env-vars"): (D, "project"),
    ("PUT", "/api/v1/projects/{project}/environments/{environment}/env-vars"): (D, "project"),
    ("PATCH", "/api/v1/projects/{project}/environments/{environment}/env-vars"): (D, "project"),
    ("GET", "/api/v1/projects/{project}/secrets"): (V, "project"),
    ("PUT", "/api/v1/projects/{project}/secrets/{key}"): (D, "project"),
    ("DELETE", "/api/v1/projects/{project}/secrets/{key}"): (D, "project"),
    ("POST", "/api/v1/projects/{project}/deployments"): (D, "project"),
    ("GET", "/api/v1/projects/{project}/deployments"): (V, "project"),
    ("POST", "/api/v1/projects/{project}/analyze"): (D, "project"),
    ("GET", "/api/v1/projects/{project}/webhook"): (V, "project"),
    ("POST", "/api/v1/projects/{project}/webhook/toggle"): (D, "project"),
    ("GET", "/api/v1/projects/{project}/images"): (V, "project"),
    ("DELETE", "/api/v1/projects/{project}/images/{tag}"): (D, "project"),
    ("GET", "/api/v1/groups"): (V, "listing"),
    ("POST", "/api/v1/groups"): (D, "group"),
    ("GET", "/api/v1/groups/{group_id}"): (V, "listing"),
    ("PATCH", "/api/v1/groups/{group_id}"): (D, "group"),
    ("DELETE", "/api/v1/groups/{group_id}"): (D, "group"),
    ("PUT", "/api/v1/groups/{group_id}/projects/{project}"): (D, "project"),
    ("DELETE", "/api/v1/groups/{group_id}/projects/{project}"): (D, "project"),
    ("GET", "/api/v1/webhooks"): (D, "listing"),
    ("POST", "/api/v1/webhooks"): (D, "listing"),
    ("DELETE", "/api/v1/webhooks/{webhook_id}"): (D, "registration"),
    ("POST", "/api/v1/webhooks/{provider}"): (None, "public"),
    ("POST", "/api/v1/keys/rotate"): (A, "platform"),
    ("GET", "/api/v1/tokens"): (V, "owned"),
    ("POST", "/api/v1/tokens"): (V, "owned"),
    ("DELETE", "/api/v1/tokens/{token_id}"): (V, "owned"),
    ("GET", "/api/v1/api-tokens"): (V, "owned"),
    ("POST", "/api/v1/api-tokens"): (V, "owned"),
    ("DELETE", "/api/v1/api-tokens/{token_id}"): (V, "owned"),
    ("POST", "/api/v1/auth/login"): (None, "public"),
    ("POST", "/api/v1/auth/renew"): (V, "owned"),
    ("POST", "/api/v1/auth/logout"): (V, "owned"),
    ("GET", "/api/v1/auth/me"): (V, "owned"),
    ("POST", "/api/v1/users"): (A, "platform"),
    ("GET", "/api/v1/users"): (A, "platform"),
    ("GET", "/api/v1/users/{user_id}"): (V, "owned"),
    ("PATCH", "/api/v1/users/{user_id}"): (V, "owned"),
    ("DELETE", "/api/v1/users/{user_id}"): (A, "platform"),
    ("GET", "/api/v1/activity"): (V, "listing"),
    ("GET", "/api/v1/notifications"): (V, "owned"),
    ("POST", "/api/v1/notifications/read-all"): (V, "owned"),
    ("POST", "/api/v1/notifications/{notification_id}/read"): (V, "owned"),
    ("GET", "/api/v1/services/{name}/stats"): (V, "service"),
    ("GET", "/api/v1/services/{name}/request-metrics"): (V, "service"),
    ("GET", "/api/v1/services/{name}/metrics"): (V, "service"),
    ("GET", "/api/v1/services/{name}/scaling"): (V, "service"),
    ("PUT", "/api/v1/services/{name}/scaling"): (D, "service"),
    ("POST", "/api/v1/services/{name}/sleep"): (D, "service"),
    ("POST", "/api/v1/services/{name}/wake"): (D, "service"),
    ("GET", "/api/v1/system/health"): (V, "listing"),
    ("GET", "/api/v1/system/metrics"): (V, "listing"),
    ("GET", "/api/v1/dashboard/summary"): (V, "listing"),
    ("GET", "/api/v1/config"): (A, "platform"),
    ("PATCH", "/api/v1/config"): (A, "platform"),
    ("GET", "/api/v1/events/stream"): (V, "listing"),
    ("GET", "/api/v1/services/{name}/metrics/stream"): (V, "service"),
    ("GET", "/api/v1/services/{name}/logs/stream"): (V, "service"),
    ("POST", "/api/v1/webhook-endpoints"): (D, "listing"),
    ("GET", "/api/v1/webhook-endpoints"): (D, "listing"),
    ("GET", "/api/v1/webhook-endpoints/{endpoint_id}"): (D, "endpoint"),
    ("PATCH", "/api/v1/webhook-endpoints/{endpoint_id}"): (D, "endpoint"),
    ("DELETE", "/api/v1/webhook-endpoints/{endpoint_id}"): (D, "endpoint"),
    ("POST", "/api/v1/webhook-endpoints/{endpoint_id}/ping"): (D, "endpoint"),
    ("GET", "/api/v1/webhook-endpoints/{endpoint_id}/deliveries"): (D, "endpoint"),
    ("GET", "/api/v1/webhook-endpoints/{endpoint_id}/deliveries/{delivery_id}"): (D, "endpoint"),
    ("POST", "/api/v1/webhook-endpoints/{endpoint_id}/deliveries/{delivery_id}/redeliver"):
        (D, "endpoint"),
    ("GET", "/api/v1/health"): (None, "public"),
    ("GET", "/health"): (None, "public"),
    ("GET", "/metrics"): (None, "public"),
}
RANK = {V: 0, D: 1, A: 2}
FOUND_BY_PATH = {"service", "project", "deployment"}


@dataclass
class World:
    """Two projects, alpha and zebra, each with a service, a deployment and a git webhook;
    tokens of each role, unscoped and scoped to alpha."""

    client: httpx.AsyncClient
    unscoped: dict[str, str]
    scoped: dict[str, str]
    values: dict[str, dict[str, str]]  # own / other / missing -> path parameter values


@pytest.fixture
async def world(client: httpx.AsyncClient, store: Store, platform: Platform) -> World:
    unscoped, scoped = {}, {}
    for role in RANK:
        _, unscoped[role] = await issue_token(store, name=f"all-{role}", role=role)
        _, scoped[role] = await issue_token(store, name=f"alpha-{role}", role=role,
                                            projects=("alpha",))
    spare, _ = await issue_token(store, name="spare", role=V)  # one to revoke
    admin = bearer(unscoped[A])
    deployment = {}
    for project in ("alpha", "zebra"):
        response = await client.post("/api/v1/deploy", headers=admin, json={"services": [
            {"name": f"{project}-web", "project": project, "image": IMAGE}]})
        assert response.status_code == 202, response.text
        deployment[project] = response.json()["deployments"][0]["deployment_id"]
    hooks = {}
    for project in ("alpha", "zebra"):
        response = await client.post("/api/v1/webhooks", headers=admin,
                                     json={"project": project, "provider": "github"})
        assert response.status_code == 201, response.text
        hooks[project] = response.json()["id"]
    platform.access.apply({"webhook_allowed_hosts": ["127.0.0.1"]})
    endpoints = {}
    for project in ("alpha", "zebra"):
        response = await client.post("/api/v1/webhook-endpoints", headers=admin, json={
            "url": "http://127.0.0.1:9/hook", "events": ["deploy"], "project": project})
        assert response.status_code == 201, response.text
        endpoints[project] = response.json()["id"]
    group = await client.post("/api/v1/groups", headers=admin, json={"name": "shops"})
    assert group.status_code == 201, group.text
    for project in ("alpha", "zebra"):
        assigned = await client.put(f"/api/v1/groups/{group.json()['id']}/projects/{project}",
                                    headers=admin)
        assert assigned.status_code == 200, assigned.text
    common = {"environment": "production", "group_id": group.json()["id"], "key": "API_KEY",
              "tag": "web-0123456789ab", "provider": "github", "token_id": spare.id,
              "user_id": "usr_0123456789abcdef", "notification_id": "1",
              "delivery_id": "whd_0000000000000000"}
    values = {
        "own": {**common, "name": "alpha-web", "project": "alpha",
                "deployment_id": deployment["alpha"], "webhook_id": hooks["alpha"],
                "endpoint_id": endpoints["alpha"]},
        "other": {**common, "name": "zebra-web", "project": "zebra",
                  "deployment_id": deployment["zebra"], "webhook_id": hooks["zebra"],
                  "endpoint_id": endpoints["zebra"]},
        "missing": {**common, "name": "nope-web", "project": "nope",
                    "deployment_id": "dpl_0000000000000000", "webhook_id": "whk_0000000000000000",
                    "endpoint_id": "whe_0000000000000000"},
    }
    return World(client, unscoped, scoped, values)


@dataclass(frozen=True)
class Op:
    method: str
    template: str
    has_body: bool

    def __str__(self) -> str:
        return f"{self.method} {self.template}"

    def path(self, values: dict[str, str]) -> str:
        if self.template.startswith("/api/v1/projects/check-name/"):
            values = {**values, "name": values["project"]}  # a project's name, there
        return re.sub(r"{(\w+)}", lambda m: values[m.group(1)], self.template)


async def openapi_ops(client: httpx.AsyncClient) -> list[Op]:
    """Every operation; removals last, and those of a whole project after those of one
    object, so that each operation still finds the objects it acts on."""
    document = (await client.get("/openapi.json")).json()
    ops = [Op(method.upper(), template, "requestBody" in operation)
           for template, methods in document["paths"].items()
           for method, operation in methods.items()]
    last = ("/api/v1/projects/{project}/services", "/api/v1/projects/{project}")
    return sorted(ops, key=lambda op: (op.method == "DELETE", op.template in last,
                                       op.template == last[1]))


async def call(world: World, op: Op, token: str, which: str = "own") -> httpx.Response:
    """The answer's status and body (a stream that began answers with its headers only). The
    body is a JSON object that parses, so auth and scope alone decide a 401, 403 or 404."""
    body: dict[str, Any] | None = {} if op.has_body else None
    async with world.client.stream(op.method, op.path(world.values[which]), json=body,
                                   headers=bearer(token)) as response:
        if not response.headers.get("content-type", "").startswith("text/event-stream"):
            await response.aread()
        return response


def code(response: httpx.Response) -> str | None:
    if response.headers.get("content-type", "").startswith("application/json"):
        body = response.json()
        return body.get("code") if isinstance(body, dict) else None
    return None


async def test_the_table_names_every_operation_and_nothing_else(world: World) -> None:
    listed = {(op.method, op.template) for op in await openapi_ops(world.client)}
    assert listed - set(ROUTES) == set(), "operations without an access rule in ROUTES"
    assert set(ROUTES) - listed == set(), "ROUTES names operations the app does not have"


async def test_a_role_below_the_least_one_is_refused(world: World) -> None:
    failures, cells = [], 0
    for op in await openapi_ops(world.client):
        least, _ = ROUTES[(op.method, op.template)]
        if least is None:
            continue
        for role in (r for r in RANK if RANK[r] < RANK[least]):
            cells += 1
            response = await call(world, op, world.unscoped[role])
            if (response.status_code, code(response)) != (403, "INSUFFICIENT_ROLE"):
                failures.append(f"{op} as {role}: {response.status_code} {code(response)}")
    assert cells >= 40
    assert failures == []


async def test_the_least_role_and_every_one_above_get_past_auth(world: World) -> None:
    failures, cells = [], 0
    for op in await openapi_ops(world.client):
        least, _ = ROUTES[(op.method, op.template)]
        if least is None:
            continue  # public: proven in test_api_auth.py
        for role in (r for r in RANK if RANK[r] >= RANK[least]):
            cells += 1
            response = await call(world, op, world.unscoped[role])
            if response.status_code in (401, 403):
                failures.append(f"{op} as {role}: {response.status_code} {response.text}")
    assert cells >= 150
    assert failures == []


async def test_a_scoped_token_finds_other_projects_objects_missing(world: World) -> None:
    failures, cells = [], 0
    for op in await openapi_ops(world.client):
        least, kind = ROUTES[(op.method, op.template)]
        if kind not in FOUND_BY_PATH and kind not in ("registration", "endpoint"):
            continue
        token = world.scoped[least or A]
        other, missing = await call(world, op, token, "other"), await call(world, op, token,
                                                                           "missing")
        cells += 1
        seen = (other.status_code, code(other))
        if other.status_code != 404 or seen != (missing.status_code, code(missing)):
            failures.append(f"{op}: zebra's gives {seen}, a missing one "
                            f"{(missing.status_code, code(missing))}")
    assert cells >= 50
    assert failures == []


async def test_a_scoped_token_works_on_its_own_projects(world: World) -> None:
    failures = []
    for op in await openapi_ops(world.client):
        _, kind = ROUTES[(op.method, op.template)]
        if kind == "public":
            continue
        response = await call(world, op, world.scoped[A])
        if kind in ("platform", "group"):
            if (response.status_code, code(response)) != (403, "TOKEN_SCOPE"):
                failures.append(f"{op}: {response.status_code} {code(response)}")
        elif response.status_code in (401, 403) or (
                kind in FOUND_BY_PATH and code(response) in {
                    "SERVICE_NOT_FOUND", "PROJECT_NOT_FOUND", "DEPLOYMENT_NOT_FOUND"}):
            failures.append(f"{op}: {response.status_code} {response.text[:200]}")
    assert failures == []


async def test_lists_and_summaries_show_a_scoped_token_nothing_of_other_projects(
    world: World,
) -> None:
    reads = [op for op in await openapi_ops(world.client) if op.method == "GET"
             and ROUTES[(op.method, op.template)][1] in ("listing", "owned")
             and (op.template.count("{") == 0 or op.template.endswith("{group_id}"))]
    assert len(reads) >= 10
    for op in reads:
        response = await call(world, op, world.scoped[A])
        if response.headers.get("content-type", "").startswith("text/event-stream"):
            continue  # the events stream: proven by its own test below
        assert response.status_code == 200, f"{op}: {response.text}"
        assert "zebra" not in response.text, f"{op} shows zebra: {response.text[:300]}"
        if op.template in ("/api/v1/services", "/api/v1/projects", "/api/v1/status"):
            assert "alpha" in response.text, f"{op}: the control is missing"


async def test_the_events_stream_carries_only_the_scoped_projects_events(world: World) -> None:
    admin = bearer(world.unscoped[A])
    for name in ("zebra-web", "alpha-web"):
        stopped = await world.client.post(f"/api/v1/services/{name}/stop", headers=admin)
        assert stopped.status_code == 202
    seen = ""
    async with world.client.stream("GET", "/api/v1/events/stream?last_event_id=0",
                                   headers=bearer(world.scoped[V])) as response:
        assert response.status_code == 200
        async for chunk in response.aiter_text():
            seen += chunk
            if "alpha-web" in seen and "service stopped" in seen:
                break
    assert "alpha-web" in seen and "zebra" not in seen


async def test_a_scoped_deploy_cannot_reach_other_projects(world: World) -> None:
    token = bearer(world.scoped[D])
    response = await world.client.post("/api/v1/deploy", headers=token, json={"services": [
        {"name": "new-web", "project": "zebra", "image": IMAGE}]})
    assert response.status_code == 404, response.text
    assert response.json()["code"] == "PROJECT_NOT_FOUND"
    # Service names are unique platform-wide: taken, without saying by which project.
    response = await world.client.post("/api/v1/deploy", headers=token, json={"services": [
        {"name": "zebra-web", "project": "alpha", "image": IMAGE}]})
    assert response.status_code == 409, response.text
    assert response.json()["code"] == "SERVICE_NAME_TAKEN"
    assert "production" not in response.text and '"project"' not in response.text
    made = await world.client.post("/api/v1/deploy", headers=token, json={"services": [
        {"name": "alpha-api", "project": "alpha", "image": IMAGE}]})
    assert made.status_code == 202, made.text
