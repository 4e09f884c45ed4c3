"""Outbound webhooks against a real `legato server` and a real receiver (an HTTP server this
test runs on 127.0.0.1, allow-listed with LEGATO_WEBHOOK_ALLOWED_HOSTS): a deploy's events
arrive signed, a receiver that fails first is retried and the log shows it, a manual
redelivery arrives again, and private URLs that are not allow-listed are refused."""

from __future__ import annotations

import json
import secrets
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from legato.outbound.signing import verify
from tests.integration.harness import Legato, service_spec, wait_for

pytestmark = pytest.mark.integration
RETRY_BASE_S = 0.5


class WebhookLegato(Legato):
    """A server that may reach 127.0.0.1 and retries after half a second."""

    @property
    def env(self) -> dict[str, str]:
        return {**super().env, "LEGATO_WEBHOOK_ALLOWED_HOSTS": '["127.0.0.1"]',
                "LEGATO_WEBHOOK_RETRY_BASE_S": str(RETRY_BASE_S)}


@pytest.fixture(scope="module")
def legato(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Legato]:
    server = WebhookLegato(Path(tmp_path_factory.mktemp("hooks")))
    try:
        server.start()
        yield server
    except BaseException:
        print(server.log_tail(), file=sys.stderr)
        raise
    finally:
        server.close()


@dataclass(frozen=True)
class Request:
    path: str
    headers: dict[str, str]
    raw: bytes
    at: float

    @property
    def body(self) -> Any:
        return json.loads(self.raw)


class Receiver:
    """An HTTP server on 127.0.0.1 that keeps every POST; `fail_first[path]` answers that many
    500s on a path before it answers 200."""

    def __init__(self) -> None:
        self.requests: list[Request] = []
        self.fail_first: dict[str, int] = {}
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                raw = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                with receiver.lock:
                    receiver.requests.append(Request(
                        self.path, {k.lower(): v for k, v in self.headers.items()}, raw,
                        time.monotonic()))
                    failing = receiver.fail_first.get(self.path, 0)
                    if failing:
                        receiver.fail_first[self.path] = failing - 1
                status = 500 if failing else 200
                answer = b"receiver is down" if failing else b"thanks"
                self.send_response(status)
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def at(self, path: str) -> list[Request]:
        with self.lock:
            return [r for r in self.requests if r.path == path]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    server = Receiver()
    yield server
    server.close()


def new_project(legato: Legato) -> str:
    project = f"p{secrets.token_hex(3)}"
    response = legato.api.post("/projects", json={"name": project})
    assert response.status_code == 201, response.text
    return project


def subscribe(legato: Legato, url: str, events: list[str], **fields: Any) -> dict[str, Any]:
    response = legato.api.post("/webhook-endpoints", json={"url": url, "events": events,
                                                           **fields})
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    assert body["secret"].startswith("whsec_")
    return body


def delivery(legato: Legato, endpoint_id: str, delivery_id: str) -> dict[str, Any]:
    response = legato.api.get(f"/webhook-endpoints/{endpoint_id}/deliveries/{delivery_id}")
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def finished(legato: Legato, endpoint_id: str, delivery_id: str) -> dict[str, Any]:
    return wait_for(lambda: (lambda d: d if d["status"] != "pending" else None)(
        delivery(legato, endpoint_id, delivery_id)), timeout=20,
        what=f"delivery {delivery_id} to finish")


def assert_signed(request: Request, secret: str) -> None:
    headers = request.headers
    timestamp = int(headers["legato-timestamp"])
    assert abs(time.time() - timestamp) < 60
    assert headers["legato-signature"].startswith(f"t={timestamp},v1=")
    assert verify(secret, headers["legato-signature"], request.raw)
    assert not verify(secret, headers["legato-signature"], request.raw + b" ")
    assert not verify("whsec_not-the-secret", headers["legato-signature"], request.raw)
    assert headers["content-type"] == "application/json"
    assert headers["user-agent"].startswith("Legato-Webhooks/")
    assert headers["legato-delivery"] == request.body["id"]
    assert headers["legato-event"] == request.body["type"]


def test_a_deploy_sends_signed_deploy_events(legato: Legato, receiver: Receiver) -> None:
    project = new_project(legato)
    hook = subscribe(legato, f"{receiver.url}/deploys", ["deploy"], project=project)
    other = subscribe(legato, f"{receiver.url}/elsewhere", ["deploy"],
                      project=new_project(legato))
    name = f"hook-{secrets.token_hex(3)}"
    response = legato.deploy(service_spec(name, project=project))
    assert response.status_code == 202, response.text
    legato.wait_healthy(name, 1)

    def arrived() -> list[Request]:
        return [r for r in receiver.at("/deploys") if r.body["service"] == name]
    requests = wait_for(arrived, timeout=20, what="deploy events at the receiver")
    for request in requests:
        assert_signed(request, hook["secret"])
        body = request.body
        assert (body["type"], body["project"], body["service"]) == ("deploy", project, name)
        assert set(body["data"]) == {"id", "type", "message", "details", "created_at"}
        assert body["data"]["type"] == "deploy"

    def every_event_sent() -> set[int] | None:
        ids = {e["id"] for e in legato.events(name, "deploy")}
        return ids if ids and ids <= {r.body["data"]["id"] for r in arrived()} else None
    wait_for(every_event_sent, timeout=20, what="every deploy event at the receiver")
    log = legato.api.get(f"/webhook-endpoints/{hook['id']}/deliveries").json()["items"]
    assert log and {d["event_type"] for d in log} == {"deploy"}
    wait_for(lambda: all(d["status"] == "succeeded" and d["last_status_code"] == 200 for d in
                         legato.api.get(f"/webhook-endpoints/{hook['id']}/deliveries")
                         .json()["items"]), timeout=20, what="every delivery to succeed")
    assert receiver.at("/elsewhere") == []  # another project's endpoint got nothing
    assert legato.api.get(f"/webhook-endpoints/{other['id']}/deliveries").json()["items"] == []
    assert legato.api.delete(f"/services/{name}").status_code == 202


def test_a_receiver_that_fails_first_is_retried(legato: Legato, receiver: Receiver) -> None:
    receiver.fail_first["/flaky"] = 1
    hook = subscribe(legato, f"{receiver.url}/flaky", ["ping"])
    response = legato.api.post(f"/webhook-endpoints/{hook['id']}/ping")
    assert response.status_code == 202, response.text
    queued = response.json()
    done = finished(legato, hook["id"], queued["id"])
    assert (done["status"], done["attempts"], done["last_status_code"]) == ("succeeded", 2, 200)
    attempts = done["attempt_log"]
    assert [(a["number"], a["status_code"], a["error"]) for a in attempts] == [
        (1, 500, "HTTP 500"), (2, 200, None)]
    first, second = receiver.at("/flaky")
    assert first.body == second.body  # the same delivery, sent again
    assert first.headers["legato-delivery"] == second.headers["legato-delivery"] == queued["id"]
    assert second.at - first.at >= RETRY_BASE_S * 0.8  # the backoff, less its jitter
    for request in (first, second):
        assert_signed(request, hook["secret"])
    page = legato.api.get(f"/webhook-endpoints/{hook['id']}/deliveries").json()
    assert [(d["id"], d["status"], d["attempts"]) for d in page["items"]] == [
        (queued["id"], "succeeded", 2)]


def test_a_manual_redelivery_arrives_again(legato: Legato, receiver: Receiver) -> None:
    hook = subscribe(legato, f"{receiver.url}/again", ["ping"])
    ping = legato.api.post(f"/webhook-endpoints/{hook['id']}/ping").json()
    finished(legato, hook["id"], ping["id"])
    response = legato.api.post(
        f"/webhook-endpoints/{hook['id']}/deliveries/{ping['id']}/redeliver")
    assert response.status_code == 202, response.text
    again = response.json()
    assert again["redelivery_of"] == ping["id"] and again["id"] != ping["id"]
    done = finished(legato, hook["id"], again["id"])
    assert done["status"] == "succeeded"
    original, copy = receiver.at("/again")
    assert_signed(copy, hook["secret"])
    assert copy.body["id"] == again["id"]
    assert {k: v for k, v in copy.body.items() if k != "id"} == \
        {k: v for k, v in original.body.items() if k != "id"}
    log = legato.api.get(f"/webhook-endpoints/{hook['id']}/deliveries").json()["items"]
    assert [d["id"] for d in log] == [again["id"], ping["id"]]


@pytest.mark.parametrize("url", [
    "http://10.255.0.1/hook", "http://192.168.77.1/hook", "http://169.254.169.254/latest/",
    "http://127.0.0.2:9/hook", "http://[::1]:9/hook",
])
def test_private_urls_that_are_not_allow_listed_are_refused(legato: Legato, url: str) -> None:
    response = legato.api.post("/webhook-endpoints", json={"url": url, "events": ["*"]})
    assert response.status_code == 422, response.text
    body = response.json()
    assert body["code"] == "WEBHOOK_URL_REFUSED"
    assert body["details"]["url"] == url
    assert "webhook_allowed_hosts" in body["details"]["reason"]
