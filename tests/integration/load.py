"""Steady HTTP load through the edge for the zero-downtime tests.

A fixed-rate client (requests are due on a schedule, not sent as fast as answers come back)
over a few keep-alive connections to 127.0.0.1, in a thread with its own event loop. Every
answer that is not a 200, and every connection error, is a failure, kept with its time and
cause. The body of `/version` tells which version of the app answered.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from types import TracebackType

import httpx


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


class Load:
    """`with Load(edge_url, host) as load: ...` then `load.result`."""

    def __init__(self, edge_url: str, host: str, *, rate: float = 250, connections: int = 8,
                 path: str = "/version") -> None:
        self.url = f"{edge_url}{path}"
        self.host = host
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
        limits = httpx.Limits(max_connections=self.connections,
                              max_keepalive_connections=self.connections)
        async with httpx.AsyncClient(limits=limits, timeout=30,
                                     headers={"Host": self.host}) as client:
            pending: set[asyncio.Task[None]] = set()
            started = time.monotonic()
            self._started.set()
            index = 0
            while not self._stop.is_set():
                due = started + index / self.rate
                delay = due - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
                index += 1
                task = asyncio.create_task(self._one(client, started))
                pending.add(task)
                task.add_done_callback(pending.discard)
            if pending:
                await asyncio.wait(pending, timeout=30)
            self.result.seconds = time.monotonic() - started

    async def _one(self, client: httpx.AsyncClient, started: float) -> None:
        self.result.sent += 1
        try:
            response = await client.get(self.url)
        except httpx.HTTPError as exc:
            self.result.failures.append((round(time.monotonic() - started, 3),
                                         f"{type(exc).__name__}: {exc}"))
            return
        if response.status_code != 200:
            self.result.failures.append((round(time.monotonic() - started, 3),
                                         f"HTTP {response.status_code}: {response.text[:80]}"))
            return
        self.result.ok += 1
        self.result.versions[response.text.strip()] += 1
