"""Steady HTTP load through the edge for the zero-downtime tests.

A fixed-rate client (requests are due on a schedule, not sent as fast as answers come back)
over a few keep-alive HTTP/1.1 connections to 127.0.0.1, in a thread with its own event loop.
Every answer that is not a 200, and every connection error, is a failure, kept with its time
and cause. The body of `/version` tells which version of the app answered.

It speaks HTTP/1.1 on raw asyncio streams rather than through a full client library: the
tests share two cores with Docker, HAProxy and the control plane, and a client that spends
milliseconds of CPU per request cannot hold the rate it promises there.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from types import TracebackType
from urllib.parse import urlsplit


@dataclass
class LoadResult:
    sent: int = 0
    ok: int = 0
    failures: list[tuple[float, str]] = field(default_factory=list)  # (seconds in, what)
    versions: Counter[str] = field(default_factory=Counter)
    seconds: float = 0.0

    @property
    def rate(self) -> float:
        """Answered requests per second over the run."""
        return self.ok / self.seconds if self.seconds else 0.0

    def summary(self) -> str:
        return (f"{self.sent} sent, {self.ok} ok, {len(self.failures)} failed in "
                f"{self.seconds:.1f}s ({self.rate:.0f}/s); versions {dict(self.versions)}; "
                f"first failures: {self.failures[:5]}")


class ProtocolError(Exception):
    """The answer was not well-formed HTTP/1.1."""


@dataclass
class Answer:
    status: int
    body: bytes
    keep_alive: bool


async def read_answer(reader: asyncio.StreamReader) -> Answer:
    """One HTTP/1.1 response: status line, headers, a Content-Length or chunked body."""
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/1.") or not parts[1].isdigit():
        raise ProtocolError(f"bad status line {lines[0]!r}")
    headers = {}
    for line in lines[1:]:
        if line:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
    keep_alive = headers.get("connection", "").lower() != "close"
    if "content-length" in headers:
        body = await reader.readexactly(int(headers["content-length"]))
    elif headers.get("transfer-encoding", "").lower() == "chunked":
        chunks = []
        while size := int((await reader.readuntil(b"\r\n")).split(b";")[0], 16):
            chunks.append(await reader.readexactly(size))
            await reader.readexactly(2)
        await reader.readuntil(b"\r\n")  # no trailers are sent to this client
        body = b"".join(chunks)
    else:
        body, keep_alive = await reader.read(), False
    return Answer(int(parts[1]), body, keep_alive)


class Load:
    """`with Load(edge_url, host) as load: ...` then `load.result`."""

    def __init__(self, edge_url: str, host: str, *, rate: float = 250, connections: int = 8,
                 path: str = "/version") -> None:
        url = urlsplit(edge_url)
        self.address = (url.hostname or "127.0.0.1", url.port or 80)
        self.request = (f"GET {path} HTTP/1.1\r\nHost: {host}\r\n"
                        "User-Agent: legato-load\r\n\r\n").encode()
        self.rate = rate
        self.connections = connections
        self.result = LoadResult()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="load", daemon=True)
        self._started = threading.Event()

    def __enter__(self) -> Load:
        self._thread.start()
        self._started.wait(10)
        return self

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    def stop(self) -> LoadResult:
        self._stop.set()
        self._thread.join(30)
        return self.result

    def _run(self) -> None:
        asyncio.run(self._drive())

    async def _drive(self) -> None:
        due: asyncio.Queue[float | None] = asyncio.Queue()
        started = time.monotonic()
        workers = [asyncio.create_task(self._connection(due, started))
                   for _ in range(self.connections)]
        self._started.set()
        index = 0
        while not self._stop.is_set():
            delay = started + index / self.rate - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            index += 1
            due.put_nowait(time.monotonic())
        for _ in workers:
            due.put_nowait(None)
        await asyncio.wait(workers, timeout=30)
        self.result.seconds = time.monotonic() - started

    async def _connection(self, due: asyncio.Queue[float | None], started: float) -> None:
        """One keep-alive connection taking due requests one at a time, reopened when closed."""
        reader: asyncio.StreamReader | None = None
        writer: asyncio.StreamWriter | None = None
        while await due.get() is not None:
            self.result.sent += 1
            try:
                if writer is None or reader is None:
                    reader, writer = await asyncio.open_connection(*self.address)
                writer.write(self.request)
                answer = await asyncio.wait_for(read_answer(reader), 30)
            except (TimeoutError, OSError, EOFError, asyncio.IncompleteReadError,
                    asyncio.LimitOverrunError, ValueError, ProtocolError) as exc:
                self.result.failures.append((round(time.monotonic() - started, 3),
                                             f"{type(exc).__name__}: {exc}"))
                self._close(writer)
                reader = writer = None
                continue
            if not answer.keep_alive:
                self._close(writer)
                reader = writer = None
            if answer.status != 200:
                self.result.failures.append((round(time.monotonic() - started, 3),
                                             f"HTTP {answer.status}: {answer.body[:80]!r}"))
                continue
            self.result.ok += 1
            self.result.versions[answer.body.decode().strip()] += 1
        self._close(writer)

    @staticmethod
    def _close(writer: asyncio.StreamWriter | None) -> None:
        if writer is not None:
            writer.close()
