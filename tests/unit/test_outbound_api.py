"""/api/v1/webhook-endpoints on the fake runtime, with an httpx.MockTransport receiver: CRUD
and validation, the secret shown once, the SSRF guard at create and update, roles, scoped
tokens, ping, events of a real deploy, the delivery log and manual redelivery."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from legato.auth import issue_token
from legato.outbound.signing import verify
from legato.platform import Platform
from legato.store import Store
from tests.unit.conftest import Api, Probes, Tokens, bearer, eventually
from tests.unit.test_outbound_deliverer import Dns, Receiver

HOOK_URL = "https://hooks.example.test/legato"
PATHS = "/webhook-endpoints"


@pytest.fixture
def receiver() -> Receiver:
    return Receiver()


@pytest.fixture
async def sending(platform: Platform, receiver: Receiver) -> Platform:
    """The platform's deliverer, started, sending to the receiver; DNS from a table."""
    platform.deliverer.transport = receiver.transport
    platform.deliverer.resolver = Dns(hooks_example_test=["93.184.215.14"],
                                      other_example_test=["93.184.215.15"],
                                      intranet_example_test=["10.0.0.8"])
    platform.deliverer.retry_base_s = 0.02
    await platform.deliverer.start()
    return platform


@pytest.fixture
def api(client: httpx.AsyncClient, tokens: Tokens, sending: Platform) -> Api:
    return Api(client, bearer(tokens.deployer))


async def create(api: Api, status: int = 201, **fields: Any) -> Any:
    body = {"url": HOOK_URL, "events": ["*"], **fields}
    return await api.call("POST", PATHS, status, json=body)


async def token_for(store: Store, *projects: str, role: str = "deployer") -> dict[str, str]:
    _, plaintext = await issue_token(store, name=f"scoped-{'-'.join(projects)}", role=role,
                                     projects=projects)
    return bearer(plaintext)


async def until_status(api: Api, endpoint_id: str, delivery_id: str, status: str) -> Any:
    async def reached() -> Any:
        found = await api.call("GET", f"{PATHS}/{endpoint_id}/deliveries/{delivery_id}", 200)
        return found if found["status"] == status else None
    return await eventually(reached, 5, f"delivery {delivery_id} to be {status}")


# endpoints ----------------------------------------------------------------------------------


async def test_create_shows_the_secret_once_and_reads_never_do(api: Api, tokens: Tokens,
                                                                store: Store) -> None:
    made = await create(api, events=["deploy", "crash"], description="CI")
    assert made["secret"].startswith("whsec_") and len(made["secret"]) == 6 + 43
    assert made["id"].startswith("whe_")
    assert (made["url"], made["events"], made["project"], made["active"]) == (
        HOOK_URL, ["deploy", "crash"], None, True)
    token = next(t for t in await store.list_tokens() if t.name == "unit-deployer")
    assert (made["owner"], made["created_by"]) == (token.principal, token.actor)
    one = await api.call("GET", f"{PATHS}/{made['id']}", 200)
    assert "secret" not in one
    assert one == {k: v for k, v in made.items() if k != "secret"}
    listed = await api.call("GET", PATHS, 200)
    assert listed == {"items": [one], "next_cursor": None}
    stored = await store.get_webhook_endpoint(made["id"], with_secret=True)
    assert stored.secret == made["secret"]


async def test_endpoints_list_in_pages(api: Api) -> None:
    ids = [(await create(api, description=str(n)))["id"] for n in range(5)]
    seen: list[str] = []
    cursor = None
    while True:
        params: dict[str, Any] = {"limit": 2, **({"cursor": cursor} if cursor else {})}
        page = await api.call("GET", PATHS, 200, params=params)
        assert len(page["items"]) <= 2
        seen += [e["id"] for e in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == ids
    await api.call("GET", PATHS, 422, params={"cursor": "!!"})
    await api.call("GET", PATHS, 422, params={"limit": 101})


async def test_patch_changes_what_it_names_and_delete_removes(api: Api) -> None:
    made = await create(api)
    changed = await api.call("PATCH", f"{PATHS}/{made['id']}", 200,
                             json={"events": ["health"], "active": False, "description": "x",
                                   "url": "https://other.example.test/h"})
    assert (changed["events"], changed["active"], changed["description"], changed["url"]) == (
        ["health"], False, "x", "https://other.example.test/h")
    assert changed["updated_at"] > made["updated_at"]
    await api.call("PATCH", f"{PATHS}/{made['id']}", 422, json={"project": "other"})
    await api.call("PATCH", f"{PATHS}/{made['id']}", 422, json={"secret": "mine"})
    deleted = await api.http.delete(f"/api/v1{PATHS}/{made['id']}", headers=api.headers)
    assert (deleted.status_code, deleted.content) == (204, b"")
    body = await api.call("GET", f"{PATHS}/{made['id']}", 404)
    assert body["code"] == "WEBHOOK_ENDPOINT_NOT_FOUND"
    assert (await api.call("DELETE", f"{PATHS}/{made['id']}", 404))["code"] == \
        "WEBHOOK_ENDPOINT_NOT_FOUND"


@pytest.mark.parametrize("events", [["nope"], [], ["*", "deploy"], ["deploy", "Deploy"], "deploy"])
async def test_events_must_be_known_types_or_star_alone(api: Api, events: Any) -> None:
    body = await create(api, 422, events=events)
    assert body["code"] == "VALIDATION_FAILED"
    assert body["details"]


async def test_event_types_are_the_platform_ones_and_ping(api: Api) -> None:
    every = ["deploy", "crash", "health", "scaling", "lifecycle", "config", "error", "ping"]
    assert (await create(api, events=every))["events"] == every
    assert (await create(api, events=["deploy", "deploy"]))["events"] == ["deploy"]


async def test_unknown_fields_are_422(api: Api) -> None:
    assert (await create(api, 422, secret="mine"))["code"] == "VALIDATION_FAILED"


async def test_a_project_filter_must_name_an_existing_project(api: Api, store: Store) -> None:
    assert (await create(api, 404, project="nope"))["code"] == "PROJECT_NOT_FOUND"
    await store.create_project("shop")
    assert (await create(api, project="shop"))["project"] == "shop"


# the SSRF guard -----------------------------------------------------------------------------


@pytest.mark.parametrize("url", [
    "http://127.0.0.1:8080/hook", "http://[::1]/hook", "http://10.1.2.3/", "http://192.168.0.9/",
    "http://169.254.169.254/latest/meta-data/", "http://100.64.0.1/", "http://0.0.0.0/",
    "http://[::ffff:127.0.0.1]/", "https://intranet.example.test/", "ftp://hooks.example.test/",
    "https://user:pw@hooks.example.test/", "https://unknown.example.test/",
])
async def test_urls_that_reach_private_addresses_are_refused(api: Api, url: str) -> None:
    body = await create(api, 422, url=url)
    assert body["code"] == "WEBHOOK_URL_REFUSED"
    assert body["details"]["url"] == url
    assert body["details"]["reason"]


async def test_a_patch_to_a_private_url_is_refused_and_changes_nothing(api: Api) -> None:
    made = await create(api)
    body = await api.call("PATCH", f"{PATHS}/{made['id']}", 422,
                          json={"url": "http://169.254.169.254/"})
    assert body["code"] == "WEBHOOK_URL_REFUSED"
    assert "metadata" in body["details"]["reason"]
    assert (await api.call("GET", f"{PATHS}/{made['id']}", 200))["url"] == HOOK_URL


async def test_the_admins_allow_list_admits_127_0_0_1(api: Api, sending: Platform) -> None:
    await create(api, 422, url="http://127.0.0.1:9/hook")
    sending.access.apply({"webhook_allowed_hosts": ["127.0.0.1"]})
    assert (await create(api, url="http://127.0.0.1:9/hook"))["url"] == "http://127.0.0.1:9/hook"
    assert (await create(api, 422, url="http://127.0.0.2:9/hook"))["code"] == \
        "WEBHOOK_URL_REFUSED"


# who may -----------------------------------------------------------------------------------


async def test_every_route_needs_the_deployer_role(
    client: httpx.AsyncClient, tokens: Tokens, api: Api
) -> None:
    made = await create(api)
    delivery = await api.call("POST", f"{PATHS}/{made['id']}/ping", 202)
    base = f"/api/v1{PATHS}/{made['id']}"
    routes = [("GET", f"/api/v1{PATHS}"), ("POST", f"/api/v1{PATHS}"), ("GET", base),
              ("PATCH", base), ("DELETE", base), ("POST", f"{base}/ping"),
              ("GET", f"{base}/deliveries"), ("GET", f"{base}/deliveries/{delivery['id']}"),
              ("POST", f"{base}/deliveries/{delivery['id']}/redeliver")]
    for method, path in routes:
        response = await client.request(method, path, headers=bearer(tokens.viewer),
                                        json={} if method in ("POST", "PATCH") else None)
        assert response.status_code == 403, f"{method} {path}: {response.text}"
        assert response.json()["code"] == "INSUFFICIENT_ROLE"
        anonymous = await client.request(method, path)
        assert anonymous.status_code == 401


async def test_a_scoped_token_must_name_a_project_it_sees(api: Api, client: httpx.AsyncClient,
                                                         store: Store) -> None:
    for name in ("shop", "blog"):
        await store.create_project(name)
    shop = Api(client, await token_for(store, "shop"))
    for fields in ({}, {"project": "blog"}, {"project": "nope"}):
        body = await create(shop, 403, **fields)
        assert body["code"] == "TOKEN_SCOPE", fields
    made = await create(shop, project="shop")
    assert made["project"] == "shop"


async def test_a_scoped_token_sees_only_its_projects_endpoints(
    api: Api, client: httpx.AsyncClient, store: Store
) -> None:
    for name in ("shop", "blog"):
        await store.create_project(name)
    mine = await create(api, project="shop")
    theirs = await create(api, project="blog")
    everything = await create(api)  # no project: it would show other projects' events
    delivery = await api.call("POST", f"{PATHS}/{theirs['id']}/ping", 202)
    shop = Api(client, await token_for(store, "shop"))
    listed = await shop.call("GET", PATHS, 200)
    assert [e["id"] for e in listed["items"]] == [mine["id"]]
    missing = await shop.call("GET", f"{PATHS}/whe_0000000000000000", 404)
    for hidden in (theirs["id"], everything["id"]):
        base = f"{PATHS}/{hidden}"
        for method, path in [("GET", base), ("PATCH", base), ("DELETE", base),
                             ("POST", f"{base}/ping"), ("GET", f"{base}/deliveries"),
                             ("GET", f"{base}/deliveries/{delivery['id']}"),
                             ("POST", f"{base}/deliveries/{delivery['id']}/redeliver")]:
            body = await shop.call(method, path, 404,
                                   json={"active": False} if method == "PATCH" else None)
            assert body["code"] == missing["code"] == "WEBHOOK_ENDPOINT_NOT_FOUND"
            assert body["error"] == f"webhook endpoint not found: {hidden}"
            assert body["details"] == {"id": hidden}
    assert (await api.call("GET", f"{PATHS}/{theirs['id']}", 200))["active"] is True
    assert len((await api.call("GET", PATHS, 200))["items"]) == 3  # unscoped: all


# ping, events, the log, redelivery -----------------------------------------------------------


async def test_ping_sends_a_signed_ping_and_the_log_shows_it(api: Api, receiver: Receiver) -> None:
    made = await create(api, events=["deploy"])
    delivery = await api.call("POST", f"{PATHS}/{made['id']}/ping", 202)
    assert (delivery["event_type"], delivery["status"], delivery["attempts"]) == (
        "ping", "pending", 0)
    done = await until_status(api, made["id"], delivery["id"], "succeeded")
    assert (done["attempts"], done["last_status_code"], done["finished_at"] is not None) == (
        1, 200, True)
    [attempt] = done["attempt_log"]
    assert (attempt["number"], attempt["status_code"], attempt["error"]) == (1, 200, None)
    assert attempt["duration_ms"] >= 0
    [got] = receiver.received
    assert got.body["id"] == delivery["id"]
    assert got.body["type"] == "ping" and got.body["data"]["details"] == {"endpoint_id": made["id"]}
    assert done["payload"] == {k: v for k, v in got.body.items() if k != "id"}
    headers = got.request.headers
    assert verify(made["secret"], headers["legato-signature"], got.request.content,
                  now=int(headers["legato-timestamp"]))


async def test_ping_and_redeliver_of_an_inactive_endpoint_are_409(api: Api) -> None:
    made = await create(api, active=False)
    body = await api.call("POST", f"{PATHS}/{made['id']}/ping", 409)
    assert body["code"] == "WEBHOOK_ENDPOINT_INACTIVE"


async def test_a_deploy_sends_deploy_events_to_the_endpoints_that_want_them(
    api: Api, probes: Probes, receiver: Receiver, store: Store
) -> None:
    await store.create_project("default")
    everything = await create(api, events=["deploy"], project="default")
    crashes = await create(api, events=["crash"])
    deployment = await api.deploy()
    await api.until(deployment, "successful")
    await eventually(lambda: _has_type(receiver, "deploy"), 5, "a deploy event")

    async def all_sent() -> bool:
        page = await api.call("GET", f"{PATHS}/{everything['id']}/deliveries", 200)
        return bool(page["items"]) and all(d["status"] == "succeeded" for d in page["items"])
    await eventually(all_sent, 5, "every delivery to succeed")
    bodies = [r.body for r in receiver.received]
    assert {b["type"] for b in bodies} == {"deploy"}
    assert {b["service"] for b in bodies} == {"web"}
    assert {b["project"] for b in bodies} == {"default"}
    events = await api.call("GET", "/services/web/events", 200, params={"type": "deploy"})
    sent_ids = {b["data"]["id"] for b in bodies}
    assert {e["id"] for e in events["items"]} <= sent_ids
    assert (await api.call("GET", f"{PATHS}/{crashes['id']}/deliveries", 200))["items"] == []


async def _has_type(receiver: Receiver, type_: str) -> bool:
    return any(r.body["type"] == type_ for r in receiver.received)


async def test_events_of_another_project_are_not_sent(
    api: Api, probes: Probes, receiver: Receiver, store: Store
) -> None:
    await store.create_project("shop")
    shop = await create(api, project="shop")
    await create(api, events=["deploy"])
    deployment = await api.deploy()  # project "default"
    await api.until(deployment, "successful")
    await eventually(lambda: _has_type(receiver, "deploy"), 5, "a deploy event")
    assert (await api.call("GET", f"{PATHS}/{shop['id']}/deliveries", 200))["items"] == []


async def test_a_failing_receiver_is_retried_and_the_log_shows_each_attempt(
    api: Api, receiver: Receiver
) -> None:
    receiver.statuses = [500]
    receiver.answer_body = b"receiver is down"
    made = await create(api)
    delivery = await api.call("POST", f"{PATHS}/{made['id']}/ping", 202)
    done = await until_status(api, made["id"], delivery["id"], "succeeded")
    assert [(a["number"], a["status_code"], a["error"]) for a in done["attempt_log"]] == [
        (1, 500, "HTTP 500"), (2, 200, None)]
    assert done["attempts"] == 2
    page = await api.call("GET", f"{PATHS}/{made['id']}/deliveries", 200)
    assert [(d["id"], d["status"], d["attempts"]) for d in page["items"]] == [
        (delivery["id"], "succeeded", 2)]


async def test_the_last_error_of_a_pending_delivery_holds_the_start_of_the_answer(
    api: Api, receiver: Receiver, sending: Platform
) -> None:
    sending.deliverer.retry_base_s = 3600
    receiver.statuses = [502]
    receiver.answer_body = b"bad gateway"
    made = await create(api)
    delivery = await api.call("POST", f"{PATHS}/{made['id']}/ping", 202)

    async def tried() -> Any:
        found = await api.call("GET", f"{PATHS}/{made['id']}/deliveries/{delivery['id']}", 200)
        return found if found["attempts"] == 1 else None
    found = await eventually(tried, 5, "one attempt")
    assert (found["status"], found["last_status_code"], found["last_error"]) == (
        "pending", 502, "HTTP 502: bad gateway")
    assert found["next_attempt_at"] > found["attempt_log"][0]["at"]
    failed = await api.call("GET", f"{PATHS}/{made['id']}/deliveries", 200,
                            params={"status": "pending"})
    assert [d["id"] for d in failed["items"]] == [delivery["id"]]
    await api.call("GET", f"{PATHS}/{made['id']}/deliveries", 422, params={"status": "odd"})


async def test_redelivery_sends_the_same_payload_as_a_new_delivery(
    api: Api, receiver: Receiver
) -> None:
    made = await create(api)
    first = await api.call("POST", f"{PATHS}/{made['id']}/ping", 202)
    await until_status(api, made["id"], first["id"], "succeeded")
    again = await api.call("POST", f"{PATHS}/{made['id']}/deliveries/{first['id']}/redeliver", 202)
    assert again["id"] != first["id"]
    assert (again["redelivery_of"], again["event_type"], again["status"]) == (
        first["id"], "ping", "pending")
    await until_status(api, made["id"], again["id"], "succeeded")
    original, copy = receiver.received
    assert copy.body["id"] == again["id"] == copy.request.headers["legato-delivery"]
    assert {k: v for k, v in copy.body.items() if k != "id"} == \
        {k: v for k, v in original.body.items() if k != "id"}
    page = await api.call("GET", f"{PATHS}/{made['id']}/deliveries", 200)
    assert [d["id"] for d in page["items"]] == [again["id"], first["id"]]  # newest first
    missing = await api.call("POST", f"{PATHS}/{made['id']}/deliveries/whd_none/redeliver", 404)
    assert missing["code"] == "WEBHOOK_DELIVERY_NOT_FOUND"


async def test_the_delivery_log_pages_newest_first(api: Api) -> None:
    made = await create(api, active=True)
    ids = [(await api.call("POST", f"{PATHS}/{made['id']}/ping", 202))["id"] for _ in range(5)]
    seen: list[str] = []
    cursor = None
    while True:
        params: dict[str, Any] = {"limit": 2, **({"cursor": cursor} if cursor else {})}
        page = await api.call("GET", f"{PATHS}/{made['id']}/deliveries", 200, params=params)
        seen += [d["id"] for d in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == ids[::-1]
    assert set(page["items"][0]) == {
        "id", "endpoint_id", "event_id", "event_type", "status", "attempts", "last_status_code",
        "last_error", "redelivery_of", "created_at", "finished_at", "next_attempt_at"}
