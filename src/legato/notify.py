"""In-product notifications (seed 000's /notifications): a deployment failed, a service is in a
crash loop, an API token expires within a week. Failures and crash loops go to everyone who
sees the project; an expiring token to its owner. The same background round forgets expired
idempotency keys and activity older than its retention."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import timedelta

from legato.store import Event, Store
from legato.ticker import Ticker

log = logging.getLogger(__name__)

EXPIRY_NOTICE = timedelta(days=7)
_TITLES = {"deployment_failed": "Deployment failed", "crash_loop": "Service in a crash loop"}


class Notifier:
    def __init__(self, store: Store, interval_s: float = 3600.0) -> None:
        self.store = store
        self.ticker = Ticker(interval_s)
        self._tasks: list[asyncio.Task[None]] = []
        self._events: asyncio.Queue[tuple[Event, str]] = asyncio.Queue()

    def start(self) -> None:
        self.store.event_listeners.append(self._on_event)
        self._tasks = [asyncio.create_task(self._run(), name="notifier"),
                       asyncio.create_task(self._drain(), name="notifier-events")]

    async def close(self) -> None:
        with contextlib.suppress(ValueError):
            self.store.event_listeners.remove(self._on_event)
        while not self._events.empty():  # what was announced before closing is kept
            await self._notify(*self._events.get_nowait())
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def _on_event(self, event: Event) -> None:
        condition = event.details.get("condition")
        if condition in _TITLES:
            self._events.put_nowait((event, str(condition)))

    async def _drain(self) -> None:
        """One notification at a time, in the order of their events."""
        while True:
            event, condition = await self._events.get()
            await self._notify(event, condition)

    async def _notify(self, event: Event, condition: str) -> None:
        service = self.store.service_now(event.service)
        try:
            await self.store.add_notification(
                kind=condition, title=f"{_TITLES[condition]}: {event.service}",
                message=event.message, project=service.project if service else None,
                service=event.service, data={"event_id": event.id, **{
                    k: v for k, v in event.details.items() if k != "condition"}})
        except Exception:
            log.exception("could not record a notification for event %s", event.id)

    async def _run(self) -> None:
        await self.store.prune_idempotency_keys(abandoned=True)
        while True:
            try:
                await self.round()
            except Exception:
                log.exception("notification round failed")
            await self.ticker.wait()

    async def round(self) -> None:
        """Announce tokens about to expire (once each); forget what has aged out."""
        for token in await self.store.tokens_expiring(EXPIRY_NOTICE):
            assert token.expires_at is not None
            await self.store.add_notification(
                kind="token_expiring", title=f"Token {token.name} expires soon",
                message=f"API token {token.name} ({token.prefix}…) expires at "
                        f"{token.expires_at.isoformat()}; make a new one before then",
                recipient=token.principal,
                data={"token_id": token.id, "expires_at": token.expires_at.isoformat()})
            await self.store.mark_expiry_notified(token.id)
        await self.store.prune_idempotency_keys()
        await self.store.prune_activity()
