"""Where a route sends requests while it has no replica to take them: a sleeping service.

Every backend in HAProxy has this unix socket as its `backup` server, which HAProxy uses only
when no replica can take a request. A request for a sleeping service wakes it (once, however
many requests arrive together), is held until a replica is healthy, then goes to that replica,
and its answer comes back as is: the client sees a slow first response, never an error. For a
service that is not asleep (a replica crashed, a deployment is starting) the answer is a 503.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import secrets
from collections.abc import Awaitable
from pathlib import Path
from typing import Protocol

import h11

from legato.runtime.base import Replica

log = logging.getLogger(__name__)

MAX_BODY = 16 * 1024 * 1024
_READ = 65536
_HOP_BY_HOP = frozenset({
    b"connection", b"keep-alive", b"proxy-connection", b"te", b"trailer", b"upgrade",
})


class Services(Protocol):
    """What the waker needs of the platform."""

    def service_of_host(self, host: str) -> str | None: ...

    def healthy_replica(self, name: str) -> Replica | None: ...

    def hold_for_wake(self, name: str) -> Awaitable[bool]:
        """Wake the service if it sleeps; whether a request for it should wait."""

    def wait_healthy(self, name: str, timeout_s: float) -> Awaitable[Replica | None]: ...


class Answer(Exception):
    """Reply to the client with this status and error body instead of a replica's answer."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


class Waker:
    def __init__(self, path: Path, services: Services, *, timeout_s: float = 30.0) -> None:
        self.path = path
        self.services = services
        self.timeout_s = timeout_s
        self.held = 0  # requests that waited for a wake
        self._server: asyncio.AbstractServer | None = None

    async def start(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
        self._server = await asyncio.start_unix_server(self._handle, path=str(self.path))
        os.chmod(self.path, 0o600)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 2)
            self._server = None
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connection = h11.Connection(h11.SERVER, max_incomplete_event_size=64 * 1024)
        try:
            request, body = await asyncio.wait_for(_read_request(reader, connection), 30)
            replica = await self._replica_for(request)
            await self._forward(request, body, replica, writer)
        except Answer as answer:
            await _reply(writer, connection, answer)
        except h11.RemoteProtocolError as exc:
            await _reply(writer, connection, Answer(400, "BAD_REQUEST", f"malformed request: {exc}"))
        except (TimeoutError, ConnectionError, OSError) as exc:
            log.debug("waker: %s", exc)
        except Exception:
            log.exception("waker failed")
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _replica_for(self, request: h11.Request) -> Replica:
        host = next((v.decode("latin-1") for k, v in request.headers if k == b"host"), "")
        name = self.services.service_of_host(host)
        if name is None:
            raise Answer(404, "ROUTE_NOT_FOUND", "no service for this host")
        replica = self.services.healthy_replica(name)
        if replica is not None:
            return replica  # woken meanwhile: the route has it, or is about to
        if not await self.services.hold_for_wake(name):
            raise Answer(503, "NO_HEALTHY_REPLICA", f"service {name} has no healthy replica")
        self.held += 1
        replica = await self.services.wait_healthy(name, self.timeout_s)
        if replica is None:
            raise Answer(503, "WAKE_TIMEOUT",
                         f"service {name} did not wake within {self.timeout_s:g}s")
        return replica

    async def _forward(self, request: h11.Request, body: bytes, replica: Replica,
                       writer: asyncio.StreamWriter) -> None:
        """Send the request to the replica (closing after it) and relay the answer verbatim."""
        upstream_reader, upstream_writer = await asyncio.open_connection(
            "127.0.0.1", replica.host_port)
        try:
            client = h11.Connection(h11.CLIENT)
            headers = [(k, v) for k, v in request.headers
                       if k not in _HOP_BY_HOP and k != b"content-length"]
            headers += [(b"content-length", str(len(body)).encode()), (b"connection", b"close")]
            upstream_writer.write(client.send(h11.Request(
                method=request.method, target=request.target, headers=headers)) or b"")
            if body:
                upstream_writer.write(client.send(h11.Data(data=body)) or b"")
            upstream_writer.write(client.send(h11.EndOfMessage()) or b"")
            await upstream_writer.drain()
            while chunk := await upstream_reader.read(_READ):
                writer.write(chunk)
                await writer.drain()
        finally:
            upstream_writer.close()
            with contextlib.suppress(Exception):
                await upstream_writer.wait_closed()


async def _read_request(reader: asyncio.StreamReader,
                        connection: h11.Connection) -> tuple[h11.Request, bytes]:
    request: h11.Request | None = None
    body = bytearray()
    while True:
        event = connection.next_event()
        if event is h11.NEED_DATA:
            data = await reader.read(_READ)
            connection.receive_data(data)
            if not data and connection.their_state is not h11.DONE:
                raise ConnectionError("client closed before the request ended")
            continue
        if isinstance(event, h11.Request):
            request = event
        elif isinstance(event, h11.Data):
            body += event.data
            if len(body) > MAX_BODY:
                raise Answer(413, "PAYLOAD_TOO_LARGE",
                             "request body too large to hold while the service wakes")
        elif isinstance(event, h11.EndOfMessage):
            assert request is not None
            return request, bytes(body)
        elif isinstance(event, h11.ConnectionClosed):
            raise ConnectionError("client closed before the request ended")


async def _reply(writer: asyncio.StreamWriter, connection: h11.Connection, answer: Answer) -> None:
    body = json.dumps({"error": answer.message, "code": answer.code, "details": {},
                       "request_id": f"req_{secrets.token_hex(8)}"}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
               (b"connection", b"close")]
    if answer.status == 503:
        headers.append((b"retry-after", b"1"))
    try:
        writer.write(connection.send(h11.Response(status_code=answer.status, headers=headers))
                     or b"")
        writer.write(connection.send(h11.Data(data=body)) or b"")
        writer.write(connection.send(h11.EndOfMessage()) or b"")
        await writer.drain()
    except h11.LocalProtocolError:
        # The request was not readable as HTTP at all: answer without h11's state machine.
        writer.write(b"HTTP/1.1 %d Error\r\ncontent-length: %d\r\nconnection: close\r\n\r\n%s"
                     % (answer.status, len(body), body))
        await writer.drain()
