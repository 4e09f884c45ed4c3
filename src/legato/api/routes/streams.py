"""Live streams (seed 004): events, a service's metrics and its logs, each over Server-Sent
Events (GET) and WebSocket on the same path.

Every item carries an id. A client that reconnects with the last id it saw (SSE's
`Last-Event-ID` header, or `?last_event_id=` on either transport) first gets what it missed,
then the live feed, with nothing twice:

- events: ids are the events' own; missed ones come from the database.
- metrics: ids are the snapshot's time in ms; missed snapshots come from the monitor's ring
  (the last hour at the default interval).
- logs: ids are the line's timestamp; missed lines come from the runtime's log since then.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncGenerator, AsyncIterator
from datetime import UTC, datetime
from typing import Annotated, Any, Generic, TypeVar

from fastapi import APIRouter, Header, Query, Request, WebSocket, WebSocketDisconnect
from fastapi.responses import StreamingResponse
from starlette.requests import HTTPConnection

from legato.api import pagination
from legato.api.deps import PlatformDep, Viewer, error_responses
from legato.api.errors import deny_websocket
from legato.api.middleware import BEARER_SUBPROTOCOL
from legato.api.schemas import event_public
from legato.errors import LegatoError, ServiceNotFound, ValidationFailed
from legato.platform import Platform
from legato.runtime.base import LogLine
from legato.store.models import Token
from legato.timeparse import parse_since

router = APIRouter(tags=["streams"])
HEARTBEAT_S = 15.0
_EVENT_PAGE = 500
Item = tuple[str, str, dict[str, Any]]  # id, SSE event name, data
T = TypeVar("T")
_SSE: dict[int | str, dict[str, Any]] = {200: {"content": {"text/event-stream": {}},
              "description": "Server-Sent Events; the same path also takes a WebSocket"}}
LastEventId = Annotated[str | None, Header(alias="Last-Event-ID", include_in_schema=False)]


async def still_allowed(connection: HTTPConnection) -> bool:
    """Whether the token a stream was opened with still holds (not revoked, not expired):
    streams ask at each heartbeat, and end when it no longer does."""
    token: Token | None = connection.scope.get("state", {}).get("token")
    if token is None:
        return True
    try:
        current = await connection.app.state.platform.store.get_token(token.id)
    except LegatoError:
        return False
    expired = current.expires_at is not None and current.expires_at <= datetime.now(UTC)
    return current.revoked_at is None and not expired


async def framed(frames: AsyncIterator[bytes], connection: HTTPConnection) -> AsyncIterator[bytes]:
    """An SSE body: `: connected`, the frames, a keep-alive comment at each idle heartbeat;
    it ends with the frames, or at a heartbeat once the caller's token no longer holds."""
    yield b": connected\n\n"
    async with Feed(frames) as feed:
        while True:
            frame = await feed.next(HEARTBEAT_S)
            if frame is Feed.IDLE:
                if not await still_allowed(connection):
                    return
                yield b": keep-alive\n\n"
                continue
            if frame is None:
                return
            yield frame


def sse(items: AsyncIterator[Item], connection: HTTPConnection) -> StreamingResponse:
    async def frames() -> AsyncIterator[bytes]:
        try:
            async for item_id, event, data in items:
                yield f"id: {item_id}\nevent: {event}\ndata: {json.dumps(data)}\n\n".encode()
        finally:
            await items.aclose()  # type: ignore[attr-defined]  # its listeners go with it

    return StreamingResponse(framed(frames(), connection), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


class Feed(Generic[T]):
    """Items with a timeout that does not end the feed: a pending item is waited for again
    (cancelling it would close the generator behind it)."""

    IDLE: Any = object()

    def __init__(self, items: AsyncIterator[T]) -> None:
        self.items = items
        self._pending: asyncio.Future[T] | None = None

    async def __aenter__(self) -> Feed[T]:
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._pending is not None and not self._pending.done():
            self._pending.cancel()
            with contextlib.suppress(BaseException):
                await self._pending
        with contextlib.suppress(Exception):
            await self.items.aclose()  # type: ignore[attr-defined]

    def future(self) -> asyncio.Future[T]:
        if self._pending is None:
            self._pending = asyncio.ensure_future(anext(self.items))
        return self._pending

    def take(self) -> T | None:
        """The finished item (None: the feed ended)."""
        assert self._pending is not None
        pending, self._pending = self._pending, None
        try:
            return pending.result()
        except StopAsyncIteration:
            return None

    async def next(self, timeout_s: float) -> T | None:
        """The next item, None when the feed ended, IDLE after `timeout_s` without one."""
        done, _ = await asyncio.wait({self.future()}, timeout=timeout_s)
        return self.take() if done else self.IDLE


async def pump(websocket: WebSocket, items: AsyncIterator[Item]) -> None:
    """Accept and send each item as one JSON text message until either side stops."""
    offered = websocket.scope.get("subprotocols") or []
    chosen = next((p for p in offered if not p.startswith(BEARER_SUBPROTOCOL)), None)
    await websocket.accept(subprotocol=chosen)
    closed = asyncio.create_task(_until_closed(websocket))
    beat = asyncio.create_task(asyncio.sleep(HEARTBEAT_S))
    try:
        async with Feed(items) as feed:
            while True:
                following: asyncio.Future[Any] = feed.future()
                done, _ = await asyncio.wait({following, closed, beat},
                                             return_when=asyncio.FIRST_COMPLETED)
                if closed in done:
                    return
                if beat in done:
                    if not await still_allowed(websocket):
                        await websocket.close(code=1008, reason="TOKEN_REVOKED")
                        return
                    beat = asyncio.create_task(asyncio.sleep(HEARTBEAT_S))
                    if following not in done:
                        continue
                item = feed.take()
                if item is None:
                    await websocket.close()
                    return
                item_id, event, data = item
                await websocket.send_text(json.dumps({"id": item_id, "event": event, **data}))
    except WebSocketDisconnect:
        return
    finally:
        closed.cancel()
        beat.cancel()


async def _until_closed(websocket: WebSocket) -> None:
    while (await websocket.receive())["type"] != "websocket.disconnect":
        pass


def _last_id(header: str | None, query: str | None) -> str | None:
    return query if query is not None else header


# events -----------------------------------------------------------------------------------


def _int_id(value: str | None) -> int | None:
    return pagination.number(value, code="INVALID_EVENT_ID")


async def event_items(platform: Platform, after: int | None, service: str | None,
                      type_: str | None, token: Token) -> AsyncIterator[Item]:
    """Events after `after` (from now when None), then each new one as it is recorded.
    Where "now" is, is settled here, before the stream answers."""
    store = platform.store
    last = await store.last_event_id() if after is None else after
    return _events_after(platform, last, service, type_, token)


async def _events_after(platform: Platform, last: int, service: str | None,
                        type_: str | None, token: Token) -> AsyncIterator[Item]:
    store = platform.store
    bell = asyncio.Event()

    def ring(event: Any) -> None:
        bell.set()

    store.event_listeners.append(ring)
    try:
        while True:
            # The listener is only a doorbell: events commit in id order, so reading them
            # back from the database never skips one that was recorded concurrently.
            bell.clear()
            batch = await store.events_after(last, service=service, type_=type_, limit=_EVENT_PAGE)
            for event in batch:
                last = event.id
                owner = store.service_now(event.service)
                if token.scoped and (owner is None or not token.sees(owner.project)):
                    continue
                public = event_public(event).model_dump(mode="json")
                yield str(event.id), event.type, {**public, "app_name": event.service}
            if len(batch) < _EVENT_PAGE:
                await bell.wait()
    finally:
        store.event_listeners.remove(ring)


@router.get("/events/stream", response_model=None, responses={**error_responses(), **_SSE})
async def events_stream(
    request: Request,
    platform: PlatformDep,
    token: Viewer,
    last_event_id_header: LastEventId = None,
    last_event_id: str | None = None,
    service: str | None = None,
    type: str | None = None,
) -> StreamingResponse:
    """Every service's events as they happen (SSE; WebSocket on the same path); a token
    scoped to projects gets their services' events only."""
    after = _int_id(_last_id(last_event_id_header, last_event_id))
    return sse(await event_items(platform, after, service, type, token), request)


@router.websocket("/events/stream")
async def events_socket(websocket: WebSocket, last_event_id: str | None = None,
                        service: str | None = None, type: str | None = None) -> None:
    platform: Platform = websocket.app.state.platform
    try:
        after = _int_id(last_event_id)
    except LegatoError as exc:
        await deny_websocket(websocket, exc)
        return
    await pump(websocket, await event_items(platform, after, service, type,
                                            websocket.scope["state"]["token"]))


# metrics ----------------------------------------------------------------------------------


async def metric_items(platform: Platform, name: str, after: int | None) -> AsyncIterator[Item]:
    """The service's snapshots after `after` (the newest one when None), then each new one."""
    monitor = platform.monitor
    if after is None:
        snapshot = monitor.snapshot(name)
        after = snapshot.id
        yield str(snapshot.id), "metrics", {"name": name, "app_name": name, **snapshot.to_json()}
    while True:
        for snapshot in monitor.snapshots_after(name, after):
            after = snapshot.id
            yield str(snapshot.id), "metrics", {"name": name, "app_name": name,
                                                **snapshot.to_json()}
        await monitor.next_round(HEARTBEAT_S)
        try:
            await platform.store.get_service(name)
        except ServiceNotFound:
            return  # deleted: the stream ends


@router.get("/services/{name}/metrics/stream", response_model=None,
            responses={**error_responses(404), **_SSE})
async def metrics_stream(name: str, request: Request, platform: PlatformDep, _: Viewer,
                         last_event_id_header: LastEventId = None,
                         last_event_id: str | None = None) -> StreamingResponse:
    """The service's figures each monitoring round (SSE; WebSocket on the same path)."""
    await platform.store.get_service(name)
    return sse(metric_items(platform, name, _int_id(_last_id(last_event_id_header,
                                                             last_event_id))), request)


@router.websocket("/services/{name}/metrics/stream")
async def metrics_socket(websocket: WebSocket, name: str,
                         last_event_id: str | None = None) -> None:
    platform: Platform = websocket.app.state.platform
    try:
        await platform.store.get_service(name)
        after = _int_id(last_event_id)
    except LegatoError as exc:
        await deny_websocket(websocket, exc)
        return
    await pump(websocket, metric_items(platform, name, after))


# logs -------------------------------------------------------------------------------------


def _log_since(value: str | None) -> datetime | None:
    if not value:
        return None
    try:
        return datetime.fromisoformat(value)
    except ValueError as exc:
        raise ValidationFailed("last_event_id must be a log line's timestamp",
                               code="INVALID_EVENT_ID") from exc


async def log_items(platform: Platform, name: str, *, tail: int | None, since: datetime | None,
                    after: datetime | None, replica: str | None) -> AsyncIterator[Item]:
    """The service's log lines (after the line `after`, when reconnecting), as they come;
    a bad service or replica fails here, before any line."""
    lines = await platform.follow_logs(name, tail=None if after else tail,
                                       since=after or since, replica=replica)
    return _log_lines(name, lines, after)


async def _log_lines(name: str, lines: AsyncGenerator[LogLine, None],
                     after: datetime | None) -> AsyncIterator[Item]:
    try:
        async for line in lines:
            if after is not None and line.timestamp is not None and line.timestamp <= after:
                continue  # sent before the reconnect
            stamp = line.timestamp.isoformat() if line.timestamp else ""
            yield stamp, "log", {"name": name, "app_name": name, "timestamp": stamp or None,
                                 "replica": line.replica, "container": line.replica,
                                 "message": line.message}
    finally:
        await lines.aclose()


@router.get("/services/{name}/logs/stream", response_model=None,
            responses={**error_responses(400, 404), **_SSE})
async def logs_stream(
    name: str,
    request: Request,
    platform: PlatformDep,
    _: Viewer,
    last_event_id_header: LastEventId = None,
    last_event_id: str | None = None,
    tail: Annotated[int | None, Query(ge=0, le=100_000)] = 100,
    since: str | None = None,
    replica: str | None = None,
) -> StreamingResponse:
    """The service's log lines as they are written (SSE; WebSocket on the same path)."""
    after = _log_since(_last_id(last_event_id_header, last_event_id))
    return sse(await log_items(platform, name, tail=tail, since=parse_since(since), after=after,
                               replica=replica), request)


@router.websocket("/services/{name}/logs/stream")
async def logs_socket(websocket: WebSocket, name: str, last_event_id: str | None = None,
                      tail: int | None = 100, since: str | None = None,
                      replica: str | None = None) -> None:
    platform: Platform = websocket.app.state.platform
    try:
        items = await log_items(platform, name, tail=max(0, tail) if tail is not None else None,
                                since=parse_since(since), after=_log_since(last_event_id),
                                replica=replica)
    except LegatoError as exc:
        await deny_websocket(websocket, exc)
        return
    await pump(websocket, items)
