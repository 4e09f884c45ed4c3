"""The store's outbound webhook records: endpoints (secret sealed at rest, re-sealed by key
rotation), the event cursor and fan-out, due deliveries, attempts, the delivery log."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from legato.crypto import DecryptionFailed
from legato.errors import LegatoError
from legato.store import Store
from legato.store.hooks import OutboundEvent, WebhookEndpoint, endpoint_aad
from tests.unit.test_store_projects import raw

SECRET = "whsec_" + "s" * 43


async def endpoint(store: Store, **fields: Any) -> WebhookEndpoint:
    values: dict[str, Any] = {"url": "https://hooks.example.test/in", "events": ["*"],
                              "secret": SECRET, "owner": "tok_1", "created_by": "token:ci"}
    return await store.create_webhook_endpoint(**{**values, **fields})


def offered(event_id: int, type_: str = "deploy", project: str | None = "shop") -> OutboundEvent:
    return OutboundEvent(event_id, type_, project, {"type": type_, "project": project,
                                                    "data": {"id": event_id}})


# endpoints ----------------------------------------------------------------------------------


async def test_an_endpoint_reads_back_without_its_secret_unless_asked(store: Store) -> None:
    made = await endpoint(store, project="shop", description="CI", events=["deploy", "crash"])
    found = await store.get_webhook_endpoint(made.id)
    assert found == made
    assert found.secret is None
    assert (found.url, found.events, found.project, found.active) == (
        "https://hooks.example.test/in", ("deploy", "crash"), "shop", True)
    assert (found.owner, found.created_by, found.description) == ("tok_1", "token:ci", "CI")
    assert made.id.startswith("whe_")
    assert (await store.get_webhook_endpoint(made.id, with_secret=True)).secret == SECRET
    assert SECRET not in repr(await store.get_webhook_endpoint(made.id, with_secret=True))


async def test_the_secret_is_sealed_at_rest_and_bound_to_its_endpoint(
    store: Store, tmp_path: Path
) -> None:
    first, second = await endpoint(store), await endpoint(store, secret="whsec_other")
    with raw(tmp_path / "db") as db:
        rows = {r["id"]: r["secret"] for r in db.execute("SELECT id, secret FROM webhook_endpoints")}
    assert SECRET not in rows[first.id] and "whsec_" not in rows[first.id]
    assert store.keyring.decrypt(rows[first.id], endpoint_aad(first.id)) == SECRET
    with pytest.raises(DecryptionFailed):  # moved to another row, it does not open
        store.keyring.decrypt(rows[first.id], endpoint_aad(second.id))


async def test_key_rotation_reseals_endpoint_secrets(store: Store, tmp_path: Path) -> None:
    made = await endpoint(store)
    with raw(tmp_path / "db") as db:
        [before] = [r[0] for r in db.execute("SELECT secret FROM webhook_endpoints")]
    result = await store.rotate_keys()
    assert result["reencrypted"]["webhook_endpoints"] == 1
    with raw(tmp_path / "db") as db:
        [after] = [r[0] for r in db.execute("SELECT secret FROM webhook_endpoints")]
    assert after != before
    assert (await store.get_webhook_endpoint(made.id, with_secret=True)).secret == SECRET
    with pytest.raises(DecryptionFailed, match="unknown data key"):
        store.keyring.decrypt(before, endpoint_aad(made.id))


async def test_endpoints_list_oldest_first_in_pages_and_by_project(store: Store) -> None:
    made = [await endpoint(store, project=p) for p in ("shop", None, "blog", "shop")]
    first = await store.list_webhook_endpoints(limit=2)
    assert [e.id for e in first] == [made[0].id, made[1].id]
    last = first[-1]
    rest = await store.list_webhook_endpoints(
        after=f"{last.created_at.isoformat(timespec='microseconds')}|{last.id}")
    assert [e.id for e in rest] == [made[2].id, made[3].id]
    shop = await store.list_webhook_endpoints(projects=["shop"])
    assert [e.id for e in shop] == [made[0].id, made[3].id]
    assert await store.list_webhook_endpoints(projects=[]) == []


async def test_an_update_changes_only_what_it_names(store: Store) -> None:
    made = await endpoint(store, description="old")
    changed = await store.update_webhook_endpoint(
        made.id, {"events": ["health"], "active": False, "project": "hijack", "secret": "x"})
    assert (changed.events, changed.active, changed.description) == (("health",), False, "old")
    assert changed.project is None  # not changeable
    assert changed.updated_at > made.updated_at
    assert (await store.get_webhook_endpoint(made.id, with_secret=True)).secret == SECRET


async def test_a_missing_endpoint_is_404_webhook_endpoint_not_found(store: Store) -> None:
    for call in (store.get_webhook_endpoint("whe_none"),
                 store.update_webhook_endpoint("whe_none", {"active": False}),
                 store.delete_webhook_endpoint("whe_none"),
                 store.list_webhook_deliveries("whe_none")):
        with pytest.raises(LegatoError) as caught:
            await call
        assert (caught.value.status, caught.value.code) == (404, "WEBHOOK_ENDPOINT_NOT_FOUND")


async def test_deleting_an_endpoint_deletes_its_deliveries_and_attempts(
    store: Store, tmp_path: Path
) -> None:
    made = await endpoint(store)
    delivery = await store.add_webhook_delivery(made.id, event_type="ping", payload={})
    await store.record_webhook_attempt(delivery.id, at=datetime.now(UTC), status_code=500,
                                       error="HTTP 500", duration_ms=3, status="pending",
                                       next_attempt_at=datetime.now(UTC))
    await store.delete_webhook_endpoint(made.id)
    with raw(tmp_path / "db") as db:
        assert db.execute("SELECT COUNT(*) FROM outbound_deliveries").fetchone()[0] == 0
        assert db.execute("SELECT COUNT(*) FROM outbound_attempts").fetchone()[0] == 0
    later = await store.record_webhook_attempt(
        delivery.id, at=datetime.now(UTC), status_code=200, error=None, duration_ms=1,
        status="succeeded", next_attempt_at=None)
    assert later is None  # an attempt that ends after the delete is dropped


# fan-out ------------------------------------------------------------------------------------


def test_an_endpoint_wants_its_types_of_its_project_while_active() -> None:
    now = datetime.now(UTC)
    base = WebhookEndpoint("whe_1", "https://x.test", "", ("deploy",), "shop", True, "o", "c",
                           now, now)
    assert base.wants("deploy", "shop")
    assert not base.wants("crash", "shop")
    assert not base.wants("deploy", "blog")
    assert not base.wants("deploy", None)  # a service that is gone: project unknown
    every = WebhookEndpoint("whe_2", "https://x.test", "", ("*",), None, True, "o", "c", now, now)
    assert every.wants("crash", "blog") and every.wants("health", None)
    paused = WebhookEndpoint("whe_3", "https://x.test", "", ("*",), None, False, "o", "c", now,
                             now)
    assert not paused.wants("deploy", "shop")


async def test_the_cursor_starts_after_the_events_that_came_before(store: Store) -> None:
    await store.add_event("web", "deploy", "old news")
    second = await store.add_event("web", "deploy", "also old")
    assert await store.webhook_event_cursor() == second.id
    await store.add_event("web", "deploy", "new")
    assert await store.webhook_event_cursor() == second.id  # stored, not recomputed


async def test_events_fan_out_to_the_endpoints_that_want_them(store: Store) -> None:
    every = await endpoint(store)
    shop_deploys = await endpoint(store, project="shop", events=["deploy"])
    paused = await endpoint(store, active=False)
    made = await store.enqueue_webhook_deliveries(
        [offered(1), offered(2, "crash"), offered(3, "deploy", "blog"), offered(4, "deploy", None)],
        through=4)
    pairs = sorted((d.endpoint_id, d.event_id) for d in made)
    assert pairs == sorted([(every.id, 1), (every.id, 2), (every.id, 3), (every.id, 4),
                            (shop_deploys.id, 1)])
    assert all(d.endpoint_id != paused.id for d in made)
    delivery = next(d for d in made if d.endpoint_id == shop_deploys.id)
    assert (delivery.status, delivery.attempts, delivery.event_type) == ("pending", 0, "deploy")
    assert delivery.payload == {"type": "deploy", "project": "shop", "data": {"id": 1}}
    assert delivery.next_attempt_at == delivery.created_at  # due at once
    assert await store.webhook_event_cursor() == 4


async def test_the_cursor_never_moves_back(store: Store) -> None:
    await store.enqueue_webhook_deliveries([], through=10)
    await store.enqueue_webhook_deliveries([], through=7)
    assert await store.webhook_event_cursor() == 10


# attempts and the log ----------------------------------------------------------------------


async def test_due_deliveries_are_pending_ones_of_active_endpoints_due_by_now(store: Store) -> None:
    live, paused = await endpoint(store), await endpoint(store)
    now = datetime.now(UTC)
    first = await store.add_webhook_delivery(live.id, event_type="ping", payload={})
    waiting = await store.add_webhook_delivery(paused.id, event_type="ping", payload={})
    later = await store.add_webhook_delivery(live.id, event_type="ping", payload={})
    await store.record_webhook_attempt(later.id, at=now, status_code=503, error="HTTP 503",
                                       duration_ms=2, status="pending",
                                       next_attempt_at=now + timedelta(minutes=5))
    await store.update_webhook_endpoint(paused.id, {"active": False})
    soon = now + timedelta(seconds=1)
    assert [d.id for d in await store.due_webhook_deliveries(soon, limit=10)] == [first.id]
    assert await store.due_webhook_deliveries(soon, limit=10, exclude=[first.id]) == []
    assert await store.next_webhook_attempt_at(exclude=[first.id]) == now + timedelta(minutes=5)
    assert waiting.id not in {d.id for d in await store.due_webhook_deliveries(
        now + timedelta(days=2), limit=10)}
    await store.update_webhook_endpoint(paused.id, {"active": True})
    assert waiting.id in {d.id for d in await store.due_webhook_deliveries(soon, limit=10)}


async def test_attempts_are_numbered_and_the_delivery_shows_the_last(store: Store) -> None:
    made = await endpoint(store)
    delivery = await store.add_webhook_delivery(made.id, event_type="ping", payload={"a": 1})
    t1 = datetime.now(UTC)
    retry_at = t1 + timedelta(seconds=10)
    pending = await store.record_webhook_attempt(
        delivery.id, at=t1, status_code=500, error="HTTP 500", duration_ms=12.5,
        status="pending", next_attempt_at=retry_at, last_error="HTTP 500: boom")
    assert pending is not None
    assert (pending.status, pending.attempts, pending.last_status_code) == ("pending", 1, 500)
    assert (pending.last_error, pending.next_attempt_at, pending.finished_at) == (
        "HTTP 500: boom", retry_at, None)
    t2 = t1 + timedelta(seconds=11)
    done = await store.record_webhook_attempt(
        delivery.id, at=t2, status_code=200, error=None, duration_ms=3, status="succeeded",
        next_attempt_at=None)
    assert done is not None
    assert (done.status, done.attempts, done.last_status_code, done.last_error) == (
        "succeeded", 2, 200, None)
    assert (done.finished_at, done.next_attempt_at) == (t2, None)
    detail = await store.get_webhook_delivery(made.id, delivery.id)
    assert [(a.number, a.at, a.status_code, a.error, a.duration_ms)
            for a in detail.attempt_log] == [(1, t1, 500, "HTTP 500", 12.5), (2, t2, 200, None, 3)]


async def test_the_delivery_log_is_newest_first_in_pages(store: Store) -> None:
    made, other = await endpoint(store), await endpoint(store)
    ids = [(await store.add_webhook_delivery(made.id, event_type="ping", payload={})).id
           for _ in range(5)]
    await store.add_webhook_delivery(other.id, event_type="ping", payload={})
    page = await store.list_webhook_deliveries(made.id, limit=3)
    assert [d.id for d in page] == ids[::-1][:3]
    last = page[-1]
    rest = await store.list_webhook_deliveries(
        made.id, before=f"{last.created_at.isoformat(timespec='microseconds')}|{last.id}")
    assert [d.id for d in rest] == ids[::-1][3:]
    assert await store.list_webhook_deliveries(made.id, status="failed") == []
    assert len(await store.list_webhook_deliveries(made.id, status="pending")) == 5


async def test_a_delivery_of_another_endpoint_is_404(store: Store) -> None:
    made, other = await endpoint(store), await endpoint(store)
    delivery = await store.add_webhook_delivery(other.id, event_type="ping", payload={})
    for call in (store.get_webhook_delivery(made.id, delivery.id),
                 store.redeliver_webhook(made.id, delivery.id)):
        with pytest.raises(LegatoError) as caught:
            await call
        assert (caught.value.status, caught.value.code) == (404, "WEBHOOK_DELIVERY_NOT_FOUND")


async def test_a_redelivery_copies_the_payload_into_a_new_delivery_due_now(store: Store) -> None:
    made = await endpoint(store)
    [original] = await store.enqueue_webhook_deliveries([offered(7)], through=7)
    await store.record_webhook_attempt(original.id, at=datetime.now(UTC), status_code=410,
                                       error="HTTP 410", duration_ms=1, status="failed",
                                       next_attempt_at=None)
    again = await store.redeliver_webhook(made.id, original.id)
    assert again.id != original.id
    assert (again.redelivery_of, again.payload, again.event_id, again.event_type) == (
        original.id, original.payload, 7, "deploy")
    assert (again.status, again.attempts) == ("pending", 0)
    assert again.id in {d.id for d in await store.due_webhook_deliveries(
        datetime.now(UTC), limit=10)}


async def test_pruning_forgets_old_finished_deliveries_only(store: Store) -> None:
    made = await endpoint(store)
    done = await store.add_webhook_delivery(made.id, event_type="ping", payload={})
    await store.record_webhook_attempt(done.id, at=datetime.now(UTC), status_code=200,
                                       error=None, duration_ms=1, status="succeeded",
                                       next_attempt_at=None)
    pending = await store.add_webhook_delivery(made.id, event_type="ping", payload={})
    assert await store.prune_webhook_deliveries(datetime.now(UTC) - timedelta(days=1)) == 0
    assert await store.prune_webhook_deliveries(datetime.now(UTC) + timedelta(seconds=1)) == 1
    assert [d.id for d in await store.list_webhook_deliveries(made.id)] == [pending.id]
