"""The client's outbound webhook methods and `legato hooks` against a mocked API
(httpx.MockTransport): what each sends, and what each prints."""

from __future__ import annotations

import json
from typing import Any

import httpx

from tests.unit.test_client_cli import (  # noqa: F401 - the fixtures are used by name
    FakeApi,
    _isolated_config,
    api,
    error_response,
    run,
)

NOW = "2024-05-01T12:00:00Z"
BASE = "/api/v1/webhook-endpoints"
ENDPOINT = {"id": "whe_1", "url": "https://hooks.example.test/in", "events": ["deploy"],
            "project": "shop", "description": "CI", "active": True, "owner": "usr_1",
            "created_by": "user:ada@example.test", "created_at": NOW, "updated_at": NOW}
DELIVERY = {"id": "whd_1", "endpoint_id": "whe_1", "event_id": 7, "event_type": "deploy",
            "status": "failed", "attempts": 2, "last_status_code": 500,
            "last_error": "HTTP 500: down", "redelivery_of": None, "created_at": NOW,
            "finished_at": NOW, "next_attempt_at": None}


def sent(api: FakeApi) -> Any:
    return json.loads(api.last.content)


def test_the_client_calls_each_route(api: FakeApi) -> None:
    client = api.client()
    api.on("POST", BASE, 201, {**ENDPOINT, "secret": "whsec_x"})
    assert client.create_webhook_endpoint("https://hooks.example.test/in", ["deploy"],
                                          project="shop")["secret"] == "whsec_x"
    assert sent(api) == {"url": "https://hooks.example.test/in", "events": ["deploy"],
                         "active": True, "project": "shop"}
    api.on("GET", BASE, body={"items": [ENDPOINT], "next_cursor": None})
    assert client.list_webhook_endpoints(limit=5)["items"] == [ENDPOINT]
    assert dict(api.last.url.params) == {"limit": "5"}
    api.on("PATCH", f"{BASE}/whe_1", body={**ENDPOINT, "active": False})
    assert client.update_webhook_endpoint("whe_1", active=False)["active"] is False
    assert sent(api) == {"active": False}
    api.on("POST", f"{BASE}/whe_1/ping", 202, {**DELIVERY, "event_type": "ping"})
    assert client.ping_webhook_endpoint("whe_1")["event_type"] == "ping"
    api.on("GET", f"{BASE}/whe_1/deliveries", body={"items": [DELIVERY], "next_cursor": None})
    assert client.list_webhook_deliveries("whe_1", status="failed")["items"] == [DELIVERY]
    assert dict(api.last.url.params) == {"status": "failed"}
    api.on("POST", f"{BASE}/whe_1/deliveries/whd_1/redeliver", 202,
           {**DELIVERY, "id": "whd_2", "redelivery_of": "whd_1"})
    assert client.redeliver_webhook("whe_1", "whd_1")["redelivery_of"] == "whd_1"
    api.on("DELETE", f"{BASE}/whe_1", 204)
    client.delete_webhook_endpoint("whe_1")
    assert api.last.method == "DELETE"


def test_hooks_create_prints_the_secret_alone_on_stdout(api: FakeApi, run: Any) -> None:
    api.on("POST", BASE, 201, {**ENDPOINT, "secret": "whsec_abc"})
    result = run("hooks", "create", "https://hooks.example.test/in", "-e", "deploy",
                 "--project", "shop")
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == "whsec_abc"
    assert sent(api)["events"] == ["deploy"]
    every = run("hooks", "create", "https://hooks.example.test/in", "--inactive")
    assert every.exit_code == 0
    assert sent(api) == {"url": "https://hooks.example.test/in", "events": ["*"],
                         "active": False}


def test_hooks_create_reports_a_refused_url(api: FakeApi, run: Any) -> None:
    api.routes[("POST", BASE)] = lambda _: error_response(
        422, "WEBHOOK_URL_REFUSED", "webhook URL refused: 10.0.0.1 is a private address")
    result = run("hooks", "create", "http://10.0.0.1/")
    assert result.exit_code == 1
    assert "private address (WEBHOOK_URL_REFUSED)" in result.output


def test_hooks_ls_walks_every_page(api: FakeApi, run: Any) -> None:
    pages = iter([{"items": [ENDPOINT], "next_cursor": "c2"},
                  {"items": [{**ENDPOINT, "id": "whe_2", "active": False}], "next_cursor": None}])
    api.routes[("GET", BASE)] = lambda _: httpx.Response(200, json=next(pages))
    result = run("hooks", "ls")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["ID", "URL", "EVENTS", "PROJECT", "ACTIVE", "DESCRIPTION"]
    assert lines[1].split()[:5] == ["whe_1", "https://hooks.example.test/in", "deploy", "shop",
                                    "yes"]
    assert lines[2].split()[0] == "whe_2" and "no" in lines[2].split()
    assert dict(api.last.url.params)["cursor"] == "c2"


def test_hooks_deliveries_lists_and_shows_attempts(api: FakeApi, run: Any) -> None:
    api.on("GET", f"{BASE}/whe_1/deliveries", body={"items": [DELIVERY], "next_cursor": None})
    listing = run("hooks", "deliveries", "whe_1", "--status", "failed")
    assert listing.exit_code == 0, listing.output
    assert "whd_1" in listing.stdout and "HTTP 500: down" in listing.stdout
    assert dict(api.last.url.params) == {"status": "failed", "limit": "20"}
    attempts = [{"number": 1, "at": NOW, "status_code": 500, "error": "HTTP 500",
                 "duration_ms": 12.3},
                {"number": 2, "at": NOW, "status_code": None, "error": "timed out after 10 s",
                 "duration_ms": 10000.0}]
    api.on("GET", f"{BASE}/whe_1/deliveries/whd_1",
           body={**DELIVERY, "payload": {}, "attempt_log": attempts})
    detail = run("hooks", "deliveries", "whe_1", "whd_1")
    assert detail.exit_code == 0, detail.output
    lines = detail.stdout.splitlines()
    assert lines[0].split() == ["whd_1", "deploy", "failed"]
    assert lines[2].split()[:2] == ["1", "2024-05-01"] and "HTTP 500" in lines[2]
    assert "timed out after 10 s" in lines[3] and "10000" in lines[3]


def test_hooks_redeliver_rm_and_ping(api: FakeApi, run: Any) -> None:
    api.on("POST", f"{BASE}/whe_1/deliveries/whd_1/redeliver", 202,
           {**DELIVERY, "id": "whd_2", "redelivery_of": "whd_1", "status": "pending"})
    again = run("hooks", "redeliver", "whe_1", "whd_1")
    assert again.exit_code == 0 and again.stdout.strip() == "redelivering whd_1 as whd_2"
    api.on("POST", f"{BASE}/whe_1/ping", 202, {**DELIVERY, "id": "whd_3"})
    assert run("hooks", "ping", "whe_1").stdout.strip() == "ping queued as delivery whd_3"
    api.on("DELETE", f"{BASE}/whe_1", 204)
    assert run("hooks", "rm", "whe_1").stdout.strip() == "deleted webhook endpoint whe_1"
    api.routes[("DELETE", f"{BASE}/whe_9")] = lambda _: error_response(
        404, "WEBHOOK_ENDPOINT_NOT_FOUND", "webhook endpoint not found: whe_9")
    missing = run("hooks", "rm", "whe_9")
    assert missing.exit_code == 1 and "WEBHOOK_ENDPOINT_NOT_FOUND" in missing.output
