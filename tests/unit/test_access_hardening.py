"""Attacks on access control that once worked, each kept here as a test: a scoped admin
running privileged containers, a scoped token reading or changing its owner's wider world,
tokens minting longer-lived or uncapped tokens, unlimited bad-token guessing, streams outliving
their token, a cut-short upload poisoning its idempotency key, inputs that gave a 500."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from legato.api.routes import streams
from legato.auth import issue_token
from legato.outbound.guard import UrlRefused, parse_url
from legato.platform import Platform
from legato.runtime.docker import _replica_from_inspect
from legato.store import Store
from tests.unit.conftest import IMAGE, Tokens, bearer

PASSWORD = "correct horse battery staple"


async def scoped(store: Store, role: str, project: str = "alpha", **kw: Any) -> str:
    _, token = await issue_token(store, name=f"{project}-{role}", role=role, projects=(project,),
                                 **kw)
    return token


async def deploy(client: httpx.AsyncClient, token: str, name: str, project: str,
                 **fields: Any) -> httpx.Response:
    return await client.post("/api/v1/deploy", headers=bearer(token), json={"services": [
        {"name": name, "project": project, "image": IMAGE, **fields}]})


async def test_a_scoped_admin_cannot_run_privileged_containers(
    client: httpx.AsyncClient, store: Store, platform: Platform
) -> None:
    platform.access.apply({"allow_privileged_specs": True})
    token = await scoped(store, "admin")
    response = await deploy(client, token, "escape", "alpha", privileged=True)
    assert response.status_code == 403 and response.json()["code"] == "PRIVILEGED_SPEC"


def test_a_host_port_label_from_an_image_is_not_believed() -> None:
    inspected = {
        "Id": "c1", "Name": "/x", "Config": {"Labels": {"legato.host-port": "oops",
                                                        "legato.service": "web"}},
        "State": {"Status": "exited", "ExitCode": 1}, "NetworkSettings": {"Ports": {}},
        "HostConfig": {"NetworkMode": "bridge"},
    }
    assert _replica_from_inspect(inspected, "node").host_port is None
    inspected["HostConfig"] = {"NetworkMode": "host"}
    inspected["Config"]["Labels"]["legato.host-port"] = "9090"
    assert _replica_from_inspect(inspected, "node").host_port == 9090


async def test_the_activity_trail_names_no_unseen_project(
    client: httpx.AsyncClient, tokens: Tokens, store: Store
) -> None:
    assert (await deploy(client, tokens.admin, "zebra-web", "zebra")).status_code == 202
    token = await scoped(store, "deployer")
    for name in ("zebra-web", "nope-web"):
        answer = await client.post(f"/api/v1/services/{name}/scale", json={"replicas": 1},
                                   headers=bearer(token))
        assert answer.status_code == 404
    trail = (await client.get("/api/v1/activity", headers=bearer(token))).json()["items"]
    # Only records without a project (its own) or of alpha: these two name none.
    assert [r["project"] for r in trail] == [None, None]
    assert "zebra" not in str([r["project"] for r in trail])
    admin = (await client.get("/api/v1/activity", headers=bearer(tokens.admin))).json()["items"]
    deploy_record = next(r for r in admin if r["action"] == "services.deploy")
    assert deploy_record["project"] == "zebra"  # /deploy names its project too


async def test_a_scoped_token_of_a_user_sees_only_its_projects_activity(
    client: httpx.AsyncClient, tokens: Tokens, platform: Platform
) -> None:
    await client.post("/api/v1/users", headers=bearer(tokens.admin), json={
        "email": "ana@example.com", "role": "admin", "password": PASSWORD})
    session = (await client.post("/api/v1/auth/login", json={
        "email": "ana@example.com", "password": PASSWORD})).json()["token"]
    assert (await deploy(client, session, "zebra-web", "zebra")).status_code == 202
    made = await client.post("/api/v1/tokens", headers=bearer(session), json={
        "name": "alpha ci", "role": "viewer", "projects": ["alpha"]})
    alpha = made.json()["token"]
    trail = (await client.get("/api/v1/activity", headers=bearer(alpha))).json()["items"]
    assert all(r["project"] in (None, "alpha") for r in trail)
    assert "zebra" not in str(trail)


async def test_a_narrow_token_cannot_reach_its_users_wider_tokens_or_account(
    client: httpx.AsyncClient, tokens: Tokens, store: Store
) -> None:
    user = (await client.post("/api/v1/users", headers=bearer(tokens.admin), json={
        "email": "ana@example.com", "role": "admin", "password": PASSWORD})).json()
    session = (await client.post("/api/v1/auth/login", json={
        "email": "ana@example.com", "password": PASSWORD})).json()["token"]
    wide = (await client.post("/api/v1/tokens", headers=bearer(session),
                              json={"name": "wide"})).json()
    narrow = (await client.post("/api/v1/tokens", headers=bearer(session), json={
        "name": "narrow", "role": "viewer", "projects": ["alpha"]})).json()["token"]
    listed = (await client.get("/api/v1/tokens", headers=bearer(narrow))).json()["items"]
    assert [t["name"] for t in listed] == ["narrow"]
    revoke = await client.delete(f"/api/v1/tokens/{wide['id']}", headers=bearer(narrow))
    assert revoke.status_code == 404
    assert (await client.get("/api/v1/auth/me", headers=bearer(wide["token"]))).status_code == 200
    rename = await client.patch(f"/api/v1/users/{user['id']}", json={"name": "pwned"},
                                headers=bearer(narrow))
    assert rename.status_code == 403 and rename.json()["code"] == "TOKEN_SCOPE"


async def test_password_checks_count_as_login_attempts(
    client: httpx.AsyncClient, tokens: Tokens, platform: Platform
) -> None:
    platform.access.apply({"rate_limits": {"auth": 3}})
    user = (await client.post("/api/v1/users", headers=bearer(tokens.admin), json={
        "email": "ana@example.com", "role": "viewer", "password": PASSWORD})).json()
    session = (await client.post("/api/v1/auth/login", json={
        "email": "ana@example.com", "password": PASSWORD})).json()["token"]
    answers = [await client.patch(f"/api/v1/users/{user['id']}", headers=bearer(session), json={
        "password": "a new long password", "current_password": f"guess {i}"}) for i in range(4)]
    assert [a.status_code for a in answers] == [403, 403, 403, 429]


async def test_a_token_of_no_user_owns_the_tokens_it_makes_and_they_expire_with_it(
    client: httpx.AsyncClient, store: Store
) -> None:
    _, parent = await issue_token(store, name="ci", role="deployer", expires_in_days=30)
    child = (await client.post("/api/v1/tokens", headers=bearer(parent),
                               json={"name": "child"})).json()
    limit = datetime.now(UTC) + timedelta(days=30)
    assert child["expires_at"] is not None
    assert datetime.fromisoformat(child["expires_at"]) <= limit
    listed = (await client.get("/api/v1/tokens", headers=bearer(parent))).json()["items"]
    assert sorted(t["name"] for t in listed) == ["child", "ci"]
    assert (await client.delete(f"/api/v1/tokens/{child['id']}",
                                headers=bearer(parent))).status_code == 200
    grandchild_parent = (await client.post("/api/v1/tokens", headers=bearer(parent),
                                           json={"name": "c2"})).json()
    grandchild = (await client.post("/api/v1/tokens", headers=bearer(grandchild_parent["token"]),
                                    json={"name": "c3"})).json()
    me = await client.get("/api/v1/tokens", headers=bearer(parent))
    revoked = await client.delete(f"/api/v1/tokens/{me.json()['items'][0]['id']}",
                                  headers=bearer(parent))
    assert revoked.status_code == 200  # the parent itself: its descendants go with it
    for token in (grandchild_parent["token"], grandchild["token"]):
        assert (await client.get("/api/v1/auth/me", headers=bearer(token))).status_code == 401


async def test_one_tokens_children_do_not_use_up_anothers_cap(
    client: httpx.AsyncClient, tokens: Tokens, store: Store, platform: Platform
) -> None:
    platform.access.apply({"max_tokens_per_user": 2})
    for index in range(2):
        made = await client.post("/api/v1/tokens", headers=bearer(tokens.viewer),
                                 json={"name": f"v{index}"})
        assert made.status_code == 201
    assert (await client.post("/api/v1/tokens", headers=bearer(tokens.viewer),
                              json={"name": "v2"})).status_code == 409
    assert (await client.post("/api/v1/tokens", headers=bearer(tokens.admin),
                              json={"name": "a0"})).status_code == 201


async def test_guessing_tokens_is_rate_limited(client: httpx.AsyncClient,
                                               platform: Platform) -> None:
    platform.access.apply({"rate_limits": {"reads": 3}})
    answers = [await client.get("/api/v1/services", headers=bearer("lgt_" + "a" * 43))
               for _ in range(5)]
    assert [a.status_code for a in answers] == [401, 401, 401, 429, 429]
    assert answers[-1].json()["code"] == "RATE_LIMITED"


async def test_a_stream_ends_when_its_token_is_revoked(
    client: httpx.AsyncClient, store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(streams, "HEARTBEAT_S", 0.05)
    record, token = await issue_token(store, name="watcher", role="viewer")
    async with client.stream("GET", "/api/v1/events/stream", headers=bearer(token)) as response:
        assert response.status_code == 200
        await store.revoke_token(record.id)
        body = await asyncio.wait_for(response.aread(), 5)  # the stream ends by itself
    assert body.startswith(b": connected")
    await asyncio.sleep(0.05)
    assert store.event_listeners == []  # and let go of the store


async def test_a_body_cut_short_leaves_its_idempotency_key_free(
    platform: Platform, tokens: Tokens, store: Store
) -> None:
    from legato.api.app import create_app

    app = create_app(platform)
    sent: list[dict[str, Any]] = []
    parts = iter([{"type": "http.request", "body": b'{"serv', "more_body": True},
                  {"type": "http.disconnect"}])

    async def receive() -> dict[str, Any]:
        return next(parts)

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await app({"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1",
               "method": "POST", "scheme": "http", "path": "/api/v1/deploy", "raw_path": b"",
               "query_string": b"", "root_path": "", "server": ("t", 80),
               "client": ("127.0.0.1", 1),
               "headers": [(b"authorization", f"Bearer {tokens.deployer}".encode()),
                           (b"idempotency-key", b"k1"),
                           (b"content-type", b"application/json")]}, receive, send)
    rows = await store._run(lambda db: db.execute("SELECT * FROM idempotency_keys").fetchall())
    assert rows == []


@pytest.mark.parametrize("path", [
    "/api/v1/activity?cursor=99999999999999999999", "/api/v1/activity?cursor=%C2%B2",
    "/api/v1/services/web/events?cursor=OTk5OTk5OTk5OTk5OTk5OTk5OTk5",
    "/api/v1/events/stream?last_event_id=%C2%B2",
])
async def test_out_of_range_ids_are_422s(client: httpx.AsyncClient, tokens: Tokens,
                                         path: str) -> None:
    await deploy(client, tokens.admin, "web", "default")
    response = await client.get(path, headers=bearer(tokens.admin))
    assert response.status_code == 422, response.text


async def test_a_notification_id_out_of_range_is_a_422(client: httpx.AsyncClient,
                                                       tokens: Tokens) -> None:
    response = await client.post("/api/v1/notifications/99999999999999999999/read",
                                 headers=bearer(tokens.admin))
    assert response.status_code == 422


@pytest.mark.parametrize("url", ["https://xn--/", "http://xn--ls8h.xn--/"])
def test_invalid_international_hosts_are_refused(url: str) -> None:
    with pytest.raises(UrlRefused):
        parse_url(url)


async def test_a_project_deploy_refused_for_one_service_deploys_none(
    client: httpx.AsyncClient, tokens: Tokens, platform: Platform, store: Store
) -> None:
    platform.access.apply({"allow_privileged_specs": True})
    for name, fields in (("a-web", {}), ("b-priv", {"cap_add": ["NET_ADMIN"]}), ("c-web", {})):
        assert (await deploy(client, tokens.admin, name, "p", **fields)).status_code == 202
    before = {n: len(await store.list_deployments(n)) for n in ("a-web", "b-priv", "c-web")}
    refused = await client.post("/api/v1/projects/p/deployments", headers=bearer(tokens.deployer),
                                params={"supersede": "true"})
    assert refused.status_code == 403 and refused.json()["code"] == "PRIVILEGED_SPEC"
    after = {n: len(await store.list_deployments(n)) for n in ("a-web", "b-priv", "c-web")}
    assert after == before


async def test_if_match_needs_one_service_and_an_existing_spec(client: httpx.AsyncClient,
                                                               tokens: Tokens) -> None:
    headers = {**bearer(tokens.admin), "If-Match": '"abc"'}
    two = await client.post("/api/v1/deploy", headers=headers, json={"services": [
        {"name": "one", "image": IMAGE}, {"name": "two", "image": IMAGE}]})
    assert two.status_code == 422 and two.json()["code"] == "IF_MATCH_NEEDS_ONE_SERVICE"
    new = await client.post("/api/v1/deploy", headers=headers, json={"services": [
        {"name": "one", "image": IMAGE}]})
    assert new.status_code == 412


async def test_platform_figures_for_a_scoped_token_cover_its_projects_only(
    client: httpx.AsyncClient, tokens: Tokens, store: Store, runtime: Any
) -> None:
    for name, project in (("alpha-web", "alpha"), ("zebra-web", "zebra"), ("zebra-api", "zebra")):
        assert (await deploy(client, tokens.admin, name, project)).status_code == 202

    async def started() -> bool:
        return len(await runtime.list_replicas()) == 3

    for _ in range(200):
        if await started():
            break
        await asyncio.sleep(0.02)
    token = await scoped(store, "viewer")
    health = (await client.get("/api/v1/system/health", headers=bearer(token))).json()
    assert health["components"]["database"]["details"] == {}
    assert health["components"]["runtime"]["details"]["containers_total"] == 1
    assert health["applications"]["total"] == 1
    everything = (await client.get("/api/v1/system/health", headers=bearer(tokens.admin))).json()
    assert everything["components"]["runtime"]["details"]["containers_total"] == 3
    metrics = (await client.get("/api/v1/system/metrics", headers=bearer(token))).json()
    assert [a["name"] for a in metrics["applications"]] == ["alpha-web"]
    assert metrics["system"]["containers_total"] == 1
