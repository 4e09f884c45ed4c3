"""`Deliverer`: turns Legato's events into deliveries and sends them, in the background.

Two tasks. The fan-out follows the events table behind a stored cursor (the store's event
listener is only a doorbell) and writes a pending delivery per subscribed endpoint. The sender
attempts due deliveries, a few at a time: the URL is checked again (`guard.resolve`) and the
request goes to the checked address, signed, with a 10 s budget and no redirects. A 2xx
succeeds; anything else is retried with backoff (`retry.after_attempt`) for 24 hours. Every
attempt is logged; of a response body only the first 512 bytes of a failure are kept.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Callable, Coroutine
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

from legato.access import AccessPolicy
from legato.outbound import guard, payload, retry
from legato.store import Event, Store
from legato.store.hooks import OutboundEvent, WebhookDelivery, WebhookEndpointNotFound

log = logging.getLogger(__name__)

TIMEOUT_S = 10.0
CONCURRENCY = 8  # attempts in flight at once
MAX_ERROR_BYTES = 512  # of a failed response's body, kept in last_error
FAN_OUT_BATCH = 500
IDLE_WAKEUP_S = 60.0  # the sender looks at the table at least this often
RETENTION = timedelta(days=30)  # finished deliveries are kept this long
PRUNE_EVERY_S = 3600.0


def _now() -> datetime:
    return datetime.now(UTC)


class Deliverer:
    """Owns the outbound webhook work of one platform: `start()` subscribes to the store's
    events and begins sending; `close()` stops (pending deliveries stay in the database)."""

    def __init__(
        self,
        store: Store,
        access: AccessPolicy,
        *,
        retry_base_s: float = 10.0,
        timeout_s: float = TIMEOUT_S,
        concurrency: int = CONCURRENCY,
        transport: httpx.AsyncBaseTransport | None = None,
        resolver: guard.Resolver = guard.system_resolver,
        clock: Callable[[], datetime] = _now,
        rand: Callable[[], float] = random.random,
    ) -> None:
        self.store = store
        self.access = access  # read at every check: PATCH /config changes the allow-list
        self.retry_base_s = retry_base_s
        self.timeout_s = timeout_s
        self.concurrency = concurrency
        self.transport = transport
        self.resolver = resolver
        self.clock = clock
        self.rand = rand
        self._doorbell = asyncio.Event()  # new events
        self._wake = asyncio.Event()  # new or finished deliveries
        self._projects: dict[int, str | None] = {}  # event id -> its project when it happened
        self._in_flight: set[str] = set()
        self._busy: dict[str, str] = {}  # delivery in flight -> its endpoint
        self._tasks: set[asyncio.Task[Any]] = set()
        self._client: httpx.AsyncClient | None = None
        self._started = False

    # lifecycle ------------------------------------------------------------------------------

    async def start(self) -> None:
        if self._started:
            return
        self._started = True
        # The cursor is read (on the first start: set to the newest event) before listening,
        # so every event from here on is after it, and none before it is sent.
        cursor = await self.store.webhook_event_cursor()
        self.store.event_listeners.append(self._on_event)
        self._doorbell.set()  # catch up with events since the cursor
        self._spawn(self._fan_out_loop(cursor))
        self._spawn(self._send_loop())

    async def close(self) -> None:
        if self._on_event in self.store.event_listeners:
            self.store.event_listeners.remove(self._on_event)
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._client is not None:
            await self._client.aclose()
            self._client = None
        self._started = False

    def kick(self) -> None:
        """Look for due deliveries now (one was made or became due)."""
        self._wake.set()

    async def check_url(self, url: str) -> guard.Target:
        """The URL checked now against the guard and the allow-list, or UrlRefused."""
        return await guard.resolve(url, self.access.webhook_allowed_hosts, self.resolver)

    def _http(self) -> httpx.AsyncClient:
        if self._client is None:
            self._client = httpx.AsyncClient(
                transport=self.transport, trust_env=False, follow_redirects=False,
                timeout=httpx.Timeout(self.timeout_s),
                # A fresh connection per attempt: the pool is keyed by address, and a
                # connection made for one host name must not carry another's request.
                limits=httpx.Limits(max_keepalive_connections=0))
        return self._client

    def _spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # events -> deliveries -------------------------------------------------------------------

    def _on_event(self, event: Event) -> None:
        """The store's listener (on the loop): remember the event's project while its service
        still exists, and ring."""
        service = self.store.service_now(event.service)
        self._projects[event.id] = service.project if service else None
        self._doorbell.set()

    async def _fan_out_loop(self, cursor: int) -> None:
        while True:
            await self._doorbell.wait()
            self._doorbell.clear()
            try:
                cursor = await self._fan_out(cursor)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("outbound webhooks: events could not be queued; retrying")
                await asyncio.sleep(1.0)
                self._doorbell.set()

    async def _fan_out(self, cursor: int) -> int:
        """Offer every event after `cursor` to the endpoints; the new cursor."""
        while True:
            events = await self.store.events_after(cursor, limit=FAN_OUT_BATCH)
            if not events:
                return cursor
            offered = [OutboundEvent(e.id, e.type, project, payload.event_payload(e, project))
                       for e in events for project in [self._project_of(e)]]
            made = await self.store.enqueue_webhook_deliveries(offered, through=events[-1].id)
            cursor = events[-1].id
            for stale in [k for k in self._projects if k <= cursor]:
                del self._projects[stale]  # heard while the cursor was first read: done
            if made:
                self.kick()

    def _project_of(self, event: Event) -> str | None:
        if event.id in self._projects:
            return self._projects.pop(event.id)
        service = self.store.service_now(event.service)  # an event from before a restart
        return service.project if service else None

    # sending --------------------------------------------------------------------------------

    async def _send_loop(self) -> None:
        next_prune = 0.0
        while True:
            self._wake.clear()
            try:
                if time.monotonic() >= next_prune:
                    next_prune = time.monotonic() + PRUNE_EVERY_S
                    await self.store.prune_webhook_deliveries(self.clock() - RETENTION)
                wait = await self._dispatch()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("outbound webhooks: the delivery table could not be read")
                wait = 1.0
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), wait)

    async def _dispatch(self) -> float:
        """Start the due attempts there is room for; seconds until the next one is due."""
        room = self.concurrency - len(self._in_flight)
        if room <= 0:
            return IDLE_WAKEUP_S  # full: a finishing attempt kicks
        # One attempt in flight per endpoint: a slow endpoint delays only its own deliveries.
        due = await self.store.due_webhook_deliveries(self.clock(), limit=room,
                                                      exclude=self._in_flight,
                                                      busy=set(self._busy.values()))
        for delivery in due:
            self._in_flight.add(delivery.id)
            self._busy[delivery.id] = delivery.endpoint_id
            self._spawn(self._attempt(delivery))
        if len(due) == room:
            return IDLE_WAKEUP_S  # full, and maybe more are due: a finishing attempt kicks
        nxt = await self.store.next_webhook_attempt_at(exclude=self._in_flight,
                                                       busy=set(self._busy.values()))
        if nxt is None:
            return IDLE_WAKEUP_S
        return min(IDLE_WAKEUP_S, max(0.0, (nxt - self.clock()).total_seconds()))

    async def _attempt(self, delivery: WebhookDelivery) -> None:
        try:
            await self.attempt(delivery)
        except Exception:
            log.exception("outbound webhooks: delivery %s could not be attempted", delivery.id)
            await asyncio.sleep(1.0)  # still due: not again at once
        finally:
            self._in_flight.discard(delivery.id)
            self._busy.pop(delivery.id, None)
            self.kick()

    async def attempt(self, delivery: WebhookDelivery) -> WebhookDelivery | None:
        """Send `delivery` once and record how it went; the delivery as it is now (None when
        its endpoint was deleted)."""
        try:
            endpoint = await self.store.get_webhook_endpoint(delivery.endpoint_id,
                                                             with_secret=True)
        except WebhookEndpointNotFound:
            return None
        assert endpoint.secret is not None
        at = self.clock()
        started = time.monotonic()
        status_code, error, excerpt = await self._send(endpoint.url, endpoint.secret, delivery, at)
        duration_ms = (time.monotonic() - started) * 1000
        ok = status_code is not None and 200 <= status_code < 300
        outcome = retry.after_attempt(ok=ok, created_at=delivery.created_at, attempted_at=at,
                                      attempts=delivery.attempts + 1, base_s=self.retry_base_s,
                                      rand=self.rand)
        return await self.store.record_webhook_attempt(
            delivery.id, at=at, status_code=status_code, error=error, duration_ms=duration_ms,
            status=outcome.status, next_attempt_at=outcome.next_attempt_at,
            last_error=excerpt or error)

    async def _send(self, url: str, secret: str, delivery: WebhookDelivery,
                    at: datetime) -> tuple[int | None, str | None, str | None]:
        """One POST: (status code, error, last_error with the start of a failed body)."""
        client = self._http()
        content = payload.body(delivery.id, delivery.payload)
        timestamp = int(at.timestamp())
        headers = payload.headers(secret=secret, delivery_id=delivery.id,
                                  event_type=delivery.event_type, timestamp=timestamp,
                                  content=content)
        try:
            async with asyncio.timeout(self.timeout_s):
                target = await self.check_url(url)
                headers["Host"] = target.host_header
                extensions = {"sni_hostname": target.server_name} if target.server_name else {}
                request = client.build_request("POST", target.url, content=content,
                                                     headers=headers, extensions=extensions)
                response = await client.send(request, stream=True)
                try:
                    status = response.status_code
                    head = b"" if response.is_success else await _head(response, MAX_ERROR_BYTES)
                finally:
                    await response.aclose()
        except TimeoutError:
            return None, f"timed out after {self.timeout_s:g} s", None
        except guard.UrlRefused as exc:
            return None, f"refused: {exc.reason}", None
        except httpx.HTTPError as exc:
            return None, f"{type(exc).__name__}: {exc}".rstrip(": "), None
        except Exception as exc:  # whatever else went wrong, it is this attempt's failure
            log.exception("outbound webhooks: sending delivery %s failed", delivery.id)
            return None, f"{type(exc).__name__}: {exc}".rstrip(": "), None
        if 200 <= status < 300:
            return status, None, None
        error = f"HTTP {status}"
        text = head.decode("utf-8", errors="replace").strip()
        return status, error, f"{error}: {text}" if text else error


async def _head(response: httpx.Response, limit: int) -> bytes:
    """At most the first `limit` bytes of a streamed body, as sent (never decompressed)."""
    data = b""
    async for chunk in response.aiter_raw():
        data += chunk
        if len(data) >= limit:
            break
    return data[:limit]
