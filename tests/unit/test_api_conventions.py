"""SPEC §3 conventions: rate limits, Idempotency-Key, ETag/If-Match, the activity trail,
notifications, and privileged spec fields."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from legato.api.ratelimit import RateLimiter, request_class
from legato.platform import Platform
from legato.store import Store
from tests.unit.conftest import IMAGE, Api, Tokens, bearer

SPEC = {"name": "web", "image": IMAGE}


def deploy_body(**fields: Any) -> dict[str, Any]:
    return {"services": [{**SPEC, **fields}]}


# rate limits --------------------------------------------------------------------------------


def test_requests_fall_into_seed_002s_classes() -> None:
    assert request_class("GET", "/api/v1/services") == "reads"
    assert request_class("POST", "/api/v1/services/web/scale") == "writes"
    assert request_class("POST", "/api/v1/deploy") == "bulk"
    assert request_class("DELETE", "/api/v1/projects/shop/services") == "bulk"
    assert request_class("POST", "/api/v1/auth/login") == "auth"
    assert request_class("POST", "/api/v1/webhooks/github") == "webhooks"
    assert request_class("GET", "/api/v1/webhooks") == "webhooks"


def test_a_window_refills_after_a_minute() -> None:
    now = [1000.0]
    limiter = RateLimiter(lambda: {"reads": 2}, clock=lambda: now[0])
    assert [limiter.hit("t", "reads").allowed for _ in range(3)] == [True, True, False]
    refused = limiter.hit("t", "reads")
    assert (refused.remaining, refused.reset_s) == (0, 60)
    assert limiter.hit("u", "reads").allowed  # another token has its own window
    now[0] += 59.5
    assert limiter.hit("t", "reads").reset_s == 1
    now[0] += 1
    fresh = limiter.hit("t", "reads")
    assert fresh.allowed and fresh.remaining == 1


async def test_every_response_carries_the_limit_and_429_says_when_to_retry(
    client: httpx.AsyncClient, tokens: Tokens, platform: Platform
) -> None:
    platform.access.apply({"rate_limits": {"reads": 3, "writes": 100}})
    answers = [await client.get("/api/v1/services", headers=bearer(tokens.viewer))
               for _ in range(4)]
    assert [r.status_code for r in answers] == [200, 200, 200, 429]
    assert [r.headers["x-ratelimit-remaining"] for r in answers] == ["2", "1", "0", "0"]
    assert all(r.headers["x-ratelimit-limit"] == "3" for r in answers)
    assert all(1 <= int(r.headers["x-ratelimit-reset"]) <= 60 for r in answers)
    limited = answers[-1]
    assert limited.json()["code"] == "RATE_LIMITED"
    assert limited.json()["details"]["class"] == "reads"
    assert limited.headers["retry-after"] == limited.headers["x-ratelimit-reset"]
    # Writes are another class; another token has its own budget; errors carry the headers.
    write = await client.post("/api/v1/services/nope/stop", headers=bearer(tokens.viewer))
    assert write.status_code == 403 and write.headers["x-ratelimit-limit"] == "100"
    other = await client.get("/api/v1/services", headers=bearer(tokens.admin))
    assert other.status_code == 200 and other.headers["x-ratelimit-remaining"] == "2"
    missing = await client.get("/api/v1/services")
    assert missing.status_code == 401 and "x-ratelimit-limit" in missing.headers
    public = await client.get("/health")
    assert "x-ratelimit-remaining" in public.headers


async def test_limits_are_changed_through_the_config(client: httpx.AsyncClient,
                                                     tokens: Tokens) -> None:
    response = await client.patch("/api/v1/config", headers=bearer(tokens.admin),
                                  json={"rate_limits": {"reads": 7}})
    assert response.status_code == 200, response.text
    assert response.json()["config"]["access"]["rate_limits"]["reads"] == 7
    seen = await client.get("/api/v1/status", headers=bearer(tokens.viewer))
    assert seen.headers["x-ratelimit-limit"] == "7"
    bad = await client.patch("/api/v1/config", headers=bearer(tokens.admin),
                             json={"rate_limits": {"everything": 1}})
    assert bad.status_code == 422


# idempotency --------------------------------------------------------------------------------


async def test_one_hundred_parallel_requests_with_one_key_make_one_deployment(
    client: httpx.AsyncClient, tokens: Tokens, store: Store
) -> None:
    headers = {**bearer(tokens.deployer), "Idempotency-Key": "deploy-web-1"}
    answers = await asyncio.gather(*(
        client.post("/api/v1/deploy", json=deploy_body(), headers=headers) for _ in range(100)))
    statuses = [r.status_code for r in answers]
    assert set(statuses) <= {202, 409}, statuses
    assert statuses.count(202) >= 1
    assert all(r.json()["code"] == "IDEMPOTENCY_KEY_IN_USE" for r in answers
               if r.status_code == 409)
    assert len(await store.list_deployments("web")) == 1
    ids = {r.json()["deployments"][0]["deployment_id"] for r in answers if r.status_code == 202}
    assert len(ids) == 1
    # Once it finished, a retry gets the same answer again, marked as a replay.
    replay = await client.post("/api/v1/deploy", json=deploy_body(), headers=headers)
    assert replay.status_code == 202 and replay.headers["idempotent-replayed"] == "true"
    assert replay.json()["deployments"][0]["deployment_id"] in ids
    assert len(await store.list_deployments("web")) == 1


async def test_a_key_with_another_body_is_a_422_and_keys_belong_to_their_token(
    client: httpx.AsyncClient, tokens: Tokens, store: Store
) -> None:
    first = await client.post("/api/v1/deploy", json=deploy_body(),
                              headers={**bearer(tokens.deployer), "Idempotency-Key": "k"})
    assert first.status_code == 202
    other = await client.post("/api/v1/deploy", json=deploy_body(replicas=3),
                              headers={**bearer(tokens.deployer), "Idempotency-Key": "k"})
    assert other.status_code == 422 and other.json()["code"] == "IDEMPOTENCY_KEY_REUSED"
    # The same key from another token is another key.
    theirs = await client.post("/api/v1/deploy", json=deploy_body(replicas=3),
                               headers={**bearer(tokens.admin), "Idempotency-Key": "k"})
    assert theirs.status_code == 202 and "idempotent-replayed" not in theirs.headers
    assert len(await store.list_deployments("web")) == 1  # replicas alone start nothing new
    assert (await store.get_service("web")).replicas == 3


async def test_a_failed_request_is_kept_and_a_server_error_is_not(
    client: httpx.AsyncClient, tokens: Tokens, store: Store
) -> None:
    headers = {**bearer(tokens.deployer), "Idempotency-Key": "scale-1"}
    missing = await client.post("/api/v1/services/web/scale", json={"replicas": 2},
                                headers=headers)
    assert missing.status_code == 404
    again = await client.post("/api/v1/services/web/scale", json={"replicas": 2},
                              headers=headers)
    assert again.status_code == 404 and again.headers["idempotent-replayed"] == "true"
    await store.claim_idempotency_key("tok_x", "crashed", "f")
    await store.release_idempotency_key("tok_x", "crashed")
    assert await store.claim_idempotency_key("tok_x", "crashed", "f") is None


async def test_keys_left_running_by_a_crash_are_forgotten_at_start(store: Store) -> None:
    assert await store.claim_idempotency_key("tok_x", "k", "f") is None
    assert (await store.claim_idempotency_key("tok_x", "k", "f")).state == "running"
    assert await store.prune_idempotency_keys(abandoned=True) == 1
    assert await store.claim_idempotency_key("tok_x", "k", "f") is None


# ETag and If-Match --------------------------------------------------------------------------


async def test_a_stale_if_match_fails_every_spec_write_with_412(
    client: httpx.AsyncClient, tokens: Tokens
) -> None:
    api = Api(client, bearer(tokens.deployer))
    await api.deploy()
    first = await client.get("/api/v1/services/web/spec", headers=api.headers)
    etag = first.headers["etag"]
    assert etag.startswith('"') and first.json()["replicas"] == 2
    again = await client.get("/api/v1/services/web/spec", headers=api.headers)
    assert again.headers["etag"] == etag  # same spec, same tag
    changed = await client.post("/api/v1/services/web/scale", json={"replicas": 3},
                                headers={**api.headers, "If-Match": etag})
    assert changed.status_code == 202, changed.text
    fresh = (await client.get("/api/v1/services/web/spec", headers=api.headers)).headers["etag"]
    assert fresh != etag
    writes = [
        ("POST", "/api/v1/services/web/scale", {"replicas": 4}),
        ("PUT", "/api/v1/services/web/scaling", {"max_replicas": 9}),
        ("POST", "/api/v1/services/web/deployments", {"image": IMAGE}),
        ("POST", "/api/v1/deploy", deploy_body(replicas=5)),
        ("DELETE", "/api/v1/services/web", None),
    ]
    for method, path, body in writes:
        stale = await client.request(method, path, json=body,
                                     headers={**api.headers, "If-Match": etag})
        assert stale.status_code == 412, f"{method} {path}: {stale.text}"
        assert stale.json()["code"] == "PRECONDITION_FAILED"
        details = stale.json()["details"]
        if path == "/api/v1/deploy":  # one error per service of the payload
            details = details["errors"][0]["details"]
        assert details["etag"] == fresh
    spec = (await client.get("/api/v1/services/web/spec", headers=api.headers)).json()
    assert spec["replicas"] == 3 and spec["scaling"]["max_replicas"] == 5
    star = await client.put("/api/v1/services/web/scaling", json={"max_replicas": 9},
                            headers={**api.headers, "If-Match": "*"})
    assert star.status_code == 200


# activity and notifications -----------------------------------------------------------------


async def test_every_write_is_in_the_activity_trail(client: httpx.AsyncClient,
                                                    tokens: Tokens) -> None:
    api = Api(client, {**bearer(tokens.deployer), "X-Request-ID": "req-deploy-1"})
    await api.deploy()
    await client.post("/api/v1/services/web/scale", json={"replicas": 1},
                      headers=bearer(tokens.deployer))
    await client.post("/api/v1/services/nope/stop", headers=bearer(tokens.deployer))
    await client.get("/api/v1/services", headers=bearer(tokens.deployer))  # reads are not
    trail = await client.get("/api/v1/activity", headers=bearer(tokens.admin))
    assert trail.status_code == 200
    items = trail.json()["items"]
    assert [i["action"] for i in items] == ["services.stop", "services.scale", "services.deploy"]
    stop, scale, deploy = items
    assert stop["result"] == "failure" and stop["status"] == 404
    assert scale["target"] == "name:web" and scale["project"] == "default"
    assert scale["result"] == "success" and scale["actor"] == "token:unit-deployer"
    assert deploy["request_id"] == "req-deploy-1"
    failures = await client.get("/api/v1/activity?result=failure", headers=bearer(tokens.admin))
    assert [i["action"] for i in failures.json()["items"]] == ["services.stop"]
    page = await client.get("/api/v1/activity?limit=2", headers=bearer(tokens.admin))
    assert len(page.json()["items"]) == 2 and page.json()["next_cursor"]
    rest = await client.get(f"/api/v1/activity?limit=2&cursor={page.json()['next_cursor']}",
                            headers=bearer(tokens.admin))
    assert [i["action"] for i in rest.json()["items"]] == ["services.deploy"]


async def test_notifications_for_failures_are_read_per_caller(
    client: httpx.AsyncClient, tokens: Tokens, platform: Platform, store: Store
) -> None:
    api = Api(client, bearer(tokens.admin))
    await api.deploy()
    platform.notifier.start()
    try:
        await store.add_event("web", "error", "deployment #1 failed: boom",
                              {"condition": "deployment_failed", "deployment": "dpl_1"})
        await store.add_event("web", "crash", "service is in a crash loop",
                              {"condition": "crash_loop", "failures": 5})
        await store.add_event("web", "deploy", "an ordinary event", {})
        await asyncio.sleep(0.1)
    finally:
        await platform.notifier.close()
    listed = await client.get("/api/v1/notifications", headers=bearer(tokens.viewer))
    body = listed.json()
    assert [n["kind"] for n in body["items"]] == ["crash_loop", "deployment_failed"]
    assert body["unread"] == 2 and body["items"][1]["data"]["deployment"] == "dpl_1"
    one = await client.post(f"/api/v1/notifications/{body['items'][0]['id']}/read",
                            headers=bearer(tokens.viewer))
    assert one.json() == {"marked": 1}
    mine = (await client.get("/api/v1/notifications", headers=bearer(tokens.viewer))).json()
    assert mine["unread"] == 1
    theirs = (await client.get("/api/v1/notifications", headers=bearer(tokens.admin))).json()
    assert theirs["unread"] == 2  # read state is each caller's own
    assert (await client.post("/api/v1/notifications/read-all",
                              headers=bearer(tokens.admin))).json() == {"marked": 2}
    missing = await client.post("/api/v1/notifications/999/read", headers=bearer(tokens.admin))
    assert missing.status_code == 404


async def test_tokens_about_to_expire_are_announced_to_their_owner_once(
    client: httpx.AsyncClient, tokens: Tokens, platform: Platform, store: Store
) -> None:
    made = (await client.post("/api/v1/tokens", headers=bearer(tokens.viewer),
                              json={"name": "soon", "expires_in_days": 30})).json()
    soon = (datetime.now(UTC) + timedelta(days=3)).isoformat()
    await store._run(lambda db: db.execute(
        "UPDATE tokens SET expires_at = ? WHERE id = ?", (soon, made["id"])))
    await platform.notifier.round()
    await platform.notifier.round()
    # The token of no user is its own owner: the notice is addressed to it.
    own = (await client.get("/api/v1/notifications", headers=bearer(made["token"]))).json()
    assert [n["kind"] for n in own["items"]] == ["token_expiring"]
    others = (await client.get("/api/v1/notifications", headers=bearer(tokens.viewer))).json()
    assert others["items"] == []


# privileged specs ---------------------------------------------------------------------------

PRIVILEGED_FIELDS: list[dict[str, Any]] = [
    {"privileged": True},
    {"cap_add": ["SYS_ADMIN"]},
    {"network_mode": "host", "replicas": 1},
    {"pid_mode": "host"},
    {"devices": ["/dev/fuse"]},
    {"volumes": [{"host_path": "/var/run/docker.sock", "path": "/var/run/docker.sock"}]},
    {"volumes": [{"host_path": "/", "path": "/host"}]},
]


@pytest.mark.parametrize("fields", PRIVILEGED_FIELDS, ids=lambda f: next(iter(f)))
async def test_privileged_fields_are_refused_unless_an_admin_enabled_them(
    client: httpx.AsyncClient, tokens: Tokens, platform: Platform, fields: dict[str, Any]
) -> None:
    deployer, admin = bearer(tokens.deployer), bearer(tokens.admin)
    for headers, why in ((deployer, "only an admin"), (admin, "disabled")):
        response = await client.post("/api/v1/deploy", json=deploy_body(**fields),
                                     headers=headers)
        assert response.status_code == 403, response.text
        assert response.json()["code"] == "PRIVILEGED_SPEC" and why in response.text
    platform.access.apply({"allow_privileged_specs": True})
    refused = await client.post("/api/v1/deploy", json=deploy_body(**fields), headers=deployer)
    assert refused.status_code == 403
    allowed = await client.post("/api/v1/deploy", json=deploy_body(**fields), headers=admin)
    assert allowed.status_code == 202, allowed.text


async def test_no_update_path_lets_a_deployer_run_a_privileged_spec(
    client: httpx.AsyncClient, tokens: Tokens, platform: Platform, store: Store
) -> None:
    deployer, admin = bearer(tokens.deployer), bearer(tokens.admin)
    plain = await client.post("/api/v1/deploy", json=deploy_body(), headers=deployer)
    assert plain.status_code == 202
    first = plain.json()["deployments"][0]["deployment_id"]
    await store.update_deployment(first, status="successful")
    changes = await client.post("/api/v1/services/web/deployments", headers=deployer,
                                json={"privileged": True})
    assert changes.status_code == 422, changes.text  # not a field a redeploy changes
    platform.access.apply({"allow_privileged_specs": True})
    made = await client.post("/api/v1/deploy", json=deploy_body(privileged=True), headers=admin,
                             params={"supersede": "true"})
    assert made.status_code == 202, made.text
    privileged = made.json()["deployments"][0]["deployment_id"]
    await store.update_deployment(privileged, status="successful", image_id="sha256:" + "0" * 64)
    for method, path in (("POST", "/api/v1/services/web/restart"),
                         ("POST", "/api/v1/services/web/deployments"),
                         ("POST", f"/api/v1/deployments/{privileged}/rollback"),
                         ("POST", "/api/v1/projects/default/deployments")):
        response = await client.request(method, path, headers=deployer,
                                        params={"supersede": "true"})
        assert response.status_code == 403, f"{method} {path}: {response.text}"
        assert response.json()["code"] == "PRIVILEGED_SPEC"
    # Scaling changes no spec: it stays a deployer's to do.
    assert (await client.post("/api/v1/services/web/scale", json={"replicas": 2},
                              headers=deployer)).status_code == 202



async def test_kept_responses_are_encrypted_at_rest(client: httpx.AsyncClient, tokens: Tokens,
                                                    store: Store) -> None:
    """A kept response may hold a secret shown once: a retry sees it, the database does not."""
    headers = {**bearer(tokens.admin), "Idempotency-Key": "make-ci-token"}
    made = await client.post("/api/v1/tokens", json={"name": "ci"}, headers=headers)
    again = await client.post("/api/v1/tokens", json={"name": "ci"}, headers=headers)
    assert made.status_code == again.status_code == 201
    assert again.json()["token"] == made.json()["token"]
    rows = await store._run(lambda db: db.execute("SELECT body FROM idempotency_keys").fetchall())
    assert len(rows) == 1
    assert made.json()["token"] not in rows[0][0] and "lgt_" not in rows[0][0]
    rotated = await store.rotate_keys()
    assert rotated["reencrypted"]["idempotency_keys"] == 1
    after = await client.post("/api/v1/tokens", json={"name": "ci"}, headers=headers)
    assert after.json()["token"] == made.json()["token"]
