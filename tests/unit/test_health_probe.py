"""The health probe's HTTP GET against small servers on 127.0.0.1: the status line decides."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from legato.health import http_status

Serve = Callable[[bytes], Awaitable[tuple[int, list[bytes]]]]


@pytest.fixture
async def serve() -> AsyncIterator[Serve]:
    servers: list[asyncio.Server] = []
    seen: list[bytes] = []

    async def start(answer: bytes) -> tuple[int, list[bytes]]:
        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            seen.append(await reader.readuntil(b"\r\n\r\n"))
            writer.write(answer)
            await writer.drain()
            writer.close()

        server = await asyncio.start_server(handle, "127.0.0.1", 0)
        servers.append(server)
        return server.sockets[0].getsockname()[1], seen

    yield start
    for server in servers:
        server.close()


async def test_the_status_of_an_answer_is_returned_and_the_request_is_well_formed(
    serve: Serve,
) -> None:
    port, seen = await serve(b"HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\n")
    assert await http_status(port, "/healthz?full=1") == 204
    request = seen[0].decode()
    assert request.startswith("GET /healthz?full=1 HTTP/1.1\r\n")
    assert f"Host: 127.0.0.1:{port}\r\n" in request and "Connection: close\r\n" in request


@pytest.mark.parametrize(("answer", "status"), [
    (b"HTTP/1.0 503 Busy\r\n\r\n", 503), (b"HTTP/1.1 302 Found\r\nLocation: /\r\n\r\n", 302),
    (b"HTTP/1.1 200\r\n\r\n", 200),
])
async def test_any_http_1_status_line_counts(
    serve: Serve, answer: bytes, status: int
) -> None:
    port, _ = await serve(answer)
    assert await http_status(port, "/") == status


async def test_an_answer_that_is_not_http_is_an_error(serve: Serve) -> None:
    port, _ = await serve(b"SSH-2.0-OpenSSH\r\n")
    with pytest.raises(ValueError, match="not an HTTP answer"):
        await http_status(port, "/")


async def test_a_closed_port_and_a_connection_closed_early_are_errors(
    serve: Serve,
) -> None:
    port, _ = await serve(b"")
    with pytest.raises(asyncio.IncompleteReadError):
        await http_status(port, "/")
    with pytest.raises(OSError):
        await http_status(1, "/")
