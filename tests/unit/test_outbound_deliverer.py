"""The Deliverer on a real store with an httpx.MockTransport as the receiver (no sockets):
what a delivery sends and how it is signed, retries with a tiny backoff base, the 24-hour
deadline on a fake clock, no redirects, the pinned address, DNS rebinding, timeouts, response
bodies kept out, and a restart that resumes pending deliveries and events missed meanwhile."""

from __future__ import annotations

import asyncio
import itertools
import json
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from legato import __version__
from legato.access import AccessPolicy
from legato.outbound.deliverer import Deliverer
from legato.outbound.signing import verify
from legato.store import Store
from legato.store.hooks import WebhookDelivery, WebhookEndpoint
from tests.unit.conftest import eventually

SECRET = "whsec_" + "k" * 43
PUBLIC = "93.184.215.14"
URL = "https://hooks.example.test/legato?x=1"


@dataclass
class Received:
    request: httpx.Request
    body: dict[str, Any]


@dataclass
class Receiver:
    """A webhook receiver behind MockTransport: answers `statuses` in turn (then 200)."""

    statuses: list[int] = field(default_factory=list)
    answer_body: bytes = b"ok"
    headers: dict[str, str] = field(default_factory=dict)
    raise_error: Exception | None = None
    delay_s: float = 0.0
    received: list[Received] = field(default_factory=list)

    async def __call__(self, request: httpx.Request) -> httpx.Response:
        self.received.append(Received(request, json.loads(request.content)))
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        if self.raise_error is not None:
            raise self.raise_error
        status = self.statuses.pop(0) if self.statuses else 200
        # a stream, as a real connection gives (content= would arrive already read)
        return httpx.Response(status, stream=httpx.ByteStream(self.answer_body),
                              headers=self.headers)

    @property
    def transport(self) -> httpx.MockTransport:
        return httpx.MockTransport(self)


class Dns:
    """A resolver from a table the test may change (a DNS answer that changes)."""

    def __init__(self, **hosts: Sequence[str]) -> None:
        self.hosts = {k.replace("_", "."): list(v) for k, v in hosts.items()}

    async def __call__(self, host: str, port: int) -> Sequence[str]:
        if host not in self.hosts:
            raise OSError(f"unknown host {host}")
        return self.hosts[host]


def dns() -> Dns:
    return Dns(hooks_example_test=[PUBLIC])


def no_jitter() -> float:
    return 0.0


@pytest.fixture
def receiver() -> Receiver:
    return Receiver()


@pytest.fixture
async def deliverer(store: Store, receiver: Receiver) -> AsyncIterator[Deliverer]:
    sender = Deliverer(store, AccessPolicy(), retry_base_s=0.02, transport=receiver.transport,
                       resolver=dns(), rand=no_jitter)
    yield sender
    await sender.close()


async def endpoint(store: Store, url: str = URL, **fields: Any) -> WebhookEndpoint:
    values: dict[str, Any] = {"events": ["*"], "secret": SECRET, "owner": "tok_1",
                              "created_by": "token:unit"}
    return await store.create_webhook_endpoint(url=url, **{**values, **fields})


async def ping(store: Store, hook: WebhookEndpoint) -> WebhookDelivery:
    return await store.add_webhook_delivery(hook.id, event_type="ping",
                                            payload={"type": "ping", "data": {"id": None}})


async def until_finished(store: Store, hook: WebhookEndpoint, delivery_id: str,
                         timeout: float = 5) -> WebhookDelivery:
    async def finished() -> WebhookDelivery | None:
        found = await store.get_webhook_delivery(hook.id, delivery_id)
        return found if found.status != "pending" else None
    found: WebhookDelivery = await eventually(finished, timeout, "the delivery to finish")
    return found


# what is sent -------------------------------------------------------------------------------


async def test_a_delivery_is_a_signed_json_post_to_the_pinned_address(
    store: Store, deliverer: Deliverer, receiver: Receiver
) -> None:
    hook = await endpoint(store)
    delivery = await ping(store, hook)
    await deliverer.start()
    done = await until_finished(store, hook, delivery.id)
    assert (done.status, done.attempts, done.last_status_code) == ("succeeded", 1, 200)
    [got] = receiver.received
    request = got.request
    assert request.method == "POST"
    assert str(request.url) == f"https://{PUBLIC}/legato?x=1"  # the address that was checked
    assert request.headers["host"] == "hooks.example.test"
    assert request.extensions["sni_hostname"] == "hooks.example.test"
    assert request.headers["content-type"] == "application/json"
    assert request.headers["user-agent"] == f"Legato-Webhooks/{__version__}"
    assert request.headers["legato-event"] == "ping"
    assert request.headers["legato-delivery"] == delivery.id
    assert "authorization" not in request.headers
    timestamp = int(request.headers["legato-timestamp"])
    signature = request.headers["legato-signature"]
    assert signature.startswith(f"t={timestamp},v1=")
    assert verify(SECRET, signature, request.content, now=timestamp)
    assert not verify("whsec_wrong", signature, request.content, now=timestamp)
    assert got.body == {"id": delivery.id, "type": "ping", "data": {"id": None}}


async def test_events_become_deliveries_of_the_subscribed_endpoints(
    store: Store, deliverer: Deliverer, receiver: Receiver
) -> None:
    every = await endpoint(store)
    crashes = await endpoint(store, events=["crash"])
    elsewhere = await endpoint(store, project="blog")
    await deliverer.start()
    event = await store.add_event("gone", "deploy", "deployment #1 started", {"number": 1})

    async def delivered() -> bool:
        return len(receiver.received) == 1
    await eventually(delivered, 5, "the event to be delivered")
    await asyncio.sleep(0.1)  # nothing else arrives
    [got] = receiver.received
    assert got.body["type"] == "deploy"
    assert got.body["service"] == "gone"
    assert got.body["project"] is None  # no such service: only unfiltered endpoints get it
    assert got.body["data"]["id"] == event.id
    assert got.body["data"]["message"] == "deployment #1 started"
    assert got.body["data"]["details"] == {"number": 1}
    assert got.body["id"] == got.request.headers["legato-delivery"]
    assert [d.event_id for d in await store.list_webhook_deliveries(every.id)] == [event.id]
    assert await store.list_webhook_deliveries(crashes.id) == []
    assert await store.list_webhook_deliveries(elsewhere.id) == []


# failures and retries -----------------------------------------------------------------------


async def test_a_failed_attempt_is_retried_with_backoff_until_it_succeeds(
    store: Store, deliverer: Deliverer, receiver: Receiver
) -> None:
    receiver.statuses = [500, 503]
    hook = await endpoint(store)
    delivery = await ping(store, hook)
    await deliverer.start()
    done = await until_finished(store, hook, delivery.id)
    assert (done.status, done.attempts, done.last_status_code, done.last_error) == (
        "succeeded", 3, 200, None)
    detail = await store.get_webhook_delivery(hook.id, delivery.id)
    log = detail.attempt_log
    assert [(a.number, a.status_code, a.error) for a in log] == [
        (1, 500, "HTTP 500"), (2, 503, "HTTP 503"), (3, 200, None)]
    gaps = [(b.at - a.at).total_seconds() for a, b in itertools.pairwise(log)]
    assert gaps[0] >= 0.02 and gaps[1] >= 0.04  # base, then doubled
    ids = {r.request.headers["legato-delivery"] for r in receiver.received}
    assert ids == {delivery.id}  # a retry is the same delivery


async def test_a_failure_after_the_24_hour_window_fails_the_delivery(
    store: Store, receiver: Receiver
) -> None:
    receiver.statuses = [500]
    hook = await endpoint(store)
    delivery = await ping(store, hook)
    late = Deliverer(store, AccessPolicy(), transport=receiver.transport, resolver=dns(),
                     clock=lambda: datetime.now(UTC) + timedelta(hours=24, seconds=1))
    try:
        await late.start()
        done = await until_finished(store, hook, delivery.id)
    finally:
        await late.close()
    assert (done.status, done.attempts, done.next_attempt_at) == ("failed", 1, None)
    assert done.finished_at is not None
    assert done.last_error == "HTTP 500: ok"


async def test_a_pending_retry_shows_when_it_is_due(store: Store, receiver: Receiver) -> None:
    receiver.statuses = [500]
    hook = await endpoint(store)
    delivery = await ping(store, hook)
    slow = Deliverer(store, AccessPolicy(), retry_base_s=10, transport=receiver.transport,
                     resolver=dns(), rand=no_jitter)
    after = await slow.attempt(delivery)
    await slow.close()
    assert after is not None
    assert (after.status, after.attempts, after.last_status_code) == ("pending", 1, 500)
    assert after.next_attempt_at is not None
    [attempt] = (await store.get_webhook_delivery(hook.id, delivery.id)).attempt_log
    assert after.next_attempt_at - attempt.at == timedelta(seconds=10)


async def test_a_redirect_is_a_failure_and_is_not_followed(
    store: Store, deliverer: Deliverer, receiver: Receiver
) -> None:
    receiver.statuses = [302]
    receiver.headers = {"Location": "http://169.254.169.254/latest/meta-data/"}
    hook = await endpoint(store)
    after = await deliverer.attempt(await ping(store, hook))
    assert after is not None
    assert (after.status, after.last_status_code, after.last_error) == ("pending", 302,
                                                                         "HTTP 302: ok")
    assert len(receiver.received) == 1


async def test_only_the_first_512_bytes_of_a_failed_response_are_kept(
    store: Store, deliverer: Deliverer, receiver: Receiver
) -> None:
    receiver.statuses = [500]
    receiver.answer_body = b"x" * 5000
    hook = await endpoint(store)
    after = await deliverer.attempt(await ping(store, hook))
    assert after is not None and after.last_error is not None
    assert after.last_error == "HTTP 500: " + "x" * 512
    [attempt] = (await store.get_webhook_delivery(hook.id, after.id)).attempt_log
    assert attempt.error == "HTTP 500"  # the attempt log keeps no body at all


async def test_a_success_keeps_no_response_body(
    store: Store, deliverer: Deliverer, receiver: Receiver
) -> None:
    receiver.answer_body = b"secret receiver internals"
    hook = await endpoint(store)
    after = await deliverer.attempt(await ping(store, hook))
    assert after is not None and (after.status, after.last_error) == ("succeeded", None)
    detail = await store.get_webhook_delivery(hook.id, after.id)
    assert "internals" not in repr(detail)


async def test_a_connection_error_is_a_failed_attempt(
    store: Store, deliverer: Deliverer, receiver: Receiver
) -> None:
    receiver.raise_error = httpx.ConnectError("connection refused")
    hook = await endpoint(store)
    after = await deliverer.attempt(await ping(store, hook))
    assert after is not None
    assert (after.status, after.last_status_code) == ("pending", None)
    assert after.last_error == "ConnectError: connection refused"


async def test_an_attempt_has_a_time_budget(store: Store, receiver: Receiver) -> None:
    receiver.delay_s = 2
    hook = await endpoint(store)
    quick = Deliverer(store, AccessPolicy(), timeout_s=0.1, transport=receiver.transport,
                      resolver=dns())
    started = asyncio.get_running_loop().time()
    after = await quick.attempt(await ping(store, hook))
    await quick.close()
    assert asyncio.get_running_loop().time() - started < 1.5
    assert after is not None and after.last_error == "timed out after 0.1 s"


async def test_the_url_is_checked_again_at_each_attempt_dns_rebinding(
    store: Store, deliverer: Deliverer, receiver: Receiver
) -> None:
    hook = await endpoint(store)
    assert isinstance(deliverer.resolver, Dns)
    deliverer.resolver.hosts["hooks.example.test"] = ["169.254.169.254"]  # rebound
    after = await deliverer.attempt(await ping(store, hook))
    assert after is not None
    assert after.status == "pending"
    assert after.last_error is not None and after.last_error.startswith("refused: ")
    assert "metadata" in after.last_error
    assert receiver.received == []  # nothing was sent


async def test_the_allow_list_is_read_at_every_attempt(store: Store, receiver: Receiver) -> None:
    access = AccessPolicy()
    local = Deliverer(store, access, transport=receiver.transport, resolver=dns())
    hook = await endpoint(store, url="http://127.0.0.1:9/hook")
    refused = await local.attempt(await ping(store, hook))
    assert refused is not None and (refused.last_error or "").startswith("refused: ")
    access.apply({"webhook_allowed_hosts": ["127.0.0.1"]})  # as PATCH /config does
    sent = await local.attempt(await ping(store, hook))
    await local.close()
    assert sent is not None and sent.status == "succeeded"
    assert str(receiver.received[0].request.url) == "http://127.0.0.1:9/hook"


async def test_an_inactive_endpoint_holds_its_deliveries_until_it_is_active(
    store: Store, deliverer: Deliverer, receiver: Receiver
) -> None:
    hook = await endpoint(store, active=False)
    delivery = await ping(store, hook)
    await deliverer.start()
    await asyncio.sleep(0.2)
    assert receiver.received == []
    await store.update_webhook_endpoint(hook.id, {"active": True})
    deliverer.kick()
    done = await until_finished(store, hook, delivery.id)
    assert done.status == "succeeded"


async def test_attempts_in_flight_are_bounded_and_one_per_endpoint(
    store: Store, receiver: Receiver
) -> None:
    receiver.delay_s = 0.05
    hooks = [await endpoint(store, url=f"{URL}/{index}") for index in range(3)]
    deliveries = [(hook, await ping(store, hook)) for hook in hooks for _ in range(2)]
    busy: dict[str, int] = {}
    peak, peak_per_endpoint = 0, 0
    answer = receiver.__call__

    async def counting(request: httpx.Request) -> httpx.Response:
        nonlocal peak, peak_per_endpoint
        url = str(request.url)
        busy[url] = busy.get(url, 0) + 1
        peak = max(peak, sum(busy.values()))
        peak_per_endpoint = max(peak_per_endpoint, busy[url])
        try:
            return await answer(request)
        finally:
            busy[url] -= 1

    narrow = Deliverer(store, AccessPolicy(), concurrency=2, resolver=dns(),
                       transport=httpx.MockTransport(counting))
    try:
        await narrow.start()
        for hook, delivery in deliveries:
            assert (await until_finished(store, hook, delivery.id)).status == "succeeded"
    finally:
        await narrow.close()
    assert peak == 2  # the bound holds across endpoints
    assert peak_per_endpoint == 1  # a slow endpoint holds up only its own deliveries
    assert len(receiver.received) == 6


# restarts -----------------------------------------------------------------------------------


async def test_a_restart_resumes_pending_deliveries_and_events_missed_meanwhile(
    store: Store, receiver: Receiver
) -> None:
    def make() -> Deliverer:
        return Deliverer(store, AccessPolicy(), retry_base_s=0.02, transport=receiver.transport,
                         resolver=dns())

    hook = await endpoint(store, events=["health"])
    first = make()
    await first.start()
    await store.add_event("web", "health", "replica unhealthy")
    await eventually(lambda: _count(receiver, 1), 5, "the first event")
    await first.close()

    pending = await ping(store, hook)  # written while nothing runs
    missed = await store.add_event("web", "health", "replica healthy again")
    second = make()
    try:
        await second.start()
        await eventually(lambda: _count(receiver, 3), 5, "the pending and the missed one")
    finally:
        await second.close()
    kinds = sorted((r.body["type"], r.body["data"]["id"]) for r in receiver.received)
    assert kinds[-1] == ("ping", None)
    assert ("health", missed.id) in kinds
    assert len(kinds) == 3  # the first event was not sent again
    assert (await store.get_webhook_delivery(hook.id, pending.id)).status == "succeeded"


async def _count(receiver: Receiver, n: int) -> bool:
    return len(receiver.received) >= n


async def test_close_unsubscribes_from_the_store(store: Store, deliverer: Deliverer) -> None:
    await deliverer.start()
    assert len(store.event_listeners) == 1
    await deliverer.close()
    assert store.event_listeners == []
