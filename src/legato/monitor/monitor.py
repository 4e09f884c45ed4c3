"""The monitor: what every service does, gathered in the background.

It owns the request figures (fed by the edge's access log), the resource samples of every
replica, the host's figures and the metrics history. Each round (`stats_interval_s`) it
samples, then records one snapshot per service, which the metrics stream sends and which a
reconnecting client catches up from.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from legato.edge.accesslog import AccessLogReader
from legato.edge.base import Edge
from legato.errors import LegatoError
from legato.monitor.history import MetricsHistory
from legato.monitor.host import HostSampler
from legato.monitor.requests import RequestMetrics
from legato.monitor.stats import StatsSampler
from legato.runtime.base import Replica, Runtime
from legato.store import Store
from legato.ticker import Ticker

log = logging.getLogger(__name__)
SNAPSHOTS_KEPT = 720
_LAG_PROBE_S = 0.25
_LAG_WINDOW = 40  # probes: the highest lag of the last ~10 s


@dataclass(frozen=True)
class Snapshot:
    """A service's figures at one moment (requests over the last minute)."""

    service: str
    at: float
    cpu_percent: float | None  # per replica
    memory_percent: float | None  # per replica
    memory_used_bytes: int
    rps: float
    error_rate: float
    latency_p50_ms: float | None
    latency_p95_ms: float | None
    latency_p99_ms: float | None
    active_connections: int
    healthy_replicas: int
    total_replicas: int

    @property
    def id(self) -> int:
        """Milliseconds since the epoch: the stream's event id."""
        return int(self.at * 1000)

    def to_json(self) -> dict[str, Any]:
        return {
            "timestamp": self.at, "cpu_percent": _round(self.cpu_percent),
            "memory_percent": _round(self.memory_percent),
            "memory_used_bytes": self.memory_used_bytes, "rps": round(self.rps, 3),
            "error_rate": round(self.error_rate, 4),
            "latency_p50_ms": _round(self.latency_p50_ms, 3),
            "latency_p95_ms": _round(self.latency_p95_ms, 3),
            "latency_p99_ms": _round(self.latency_p99_ms, 3),
            "active_connections": self.active_connections,
            "healthy_replicas": self.healthy_replicas, "total_replicas": self.total_replicas,
        }


class Monitor:
    def __init__(
        self,
        *,
        store: Store,
        runtime: Runtime,
        edge: Edge,
        replicas: Callable[[], Iterable[Replica]],
        counts: Callable[[str], tuple[int, int]],
        data_dir: Path,
        access_log: Path | None,
        interval_s: float,
    ) -> None:
        """`replicas`: every replica known now; `counts`: a service's (healthy, running)."""
        self.store = store
        self.edge = edge
        self.ticker = Ticker(interval_s)
        self._replicas = replicas
        self._counts = counts
        self.requests = RequestMetrics()
        self.access_log = AccessLogReader(access_log, self.requests) if access_log else None
        self.stats = StatsSampler(runtime)
        self.host = HostSampler(data_dir)
        self.history = MetricsHistory(store, self.requests, self.stats)
        self.connections: dict[str, int] = {}
        self.loop_lag_s = 0.0
        self.rounds = 0
        self.round_seconds = 0.0
        self._lags: deque[float] = deque(maxlen=_LAG_WINDOW)
        self._snapshots: dict[str, deque[Snapshot]] = {}
        self._round = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    @property
    def interval_s(self) -> float:
        return self.ticker.interval_s

    @interval_s.setter
    def interval_s(self, value: float) -> None:
        self.ticker.interval_s = value

    @property
    def requests_known(self) -> bool:
        """Request figures are being gathered (the access log is read)."""
        return self.access_log is not None and self.access_log.running

    def open_log(self) -> None:
        """Bind the access log socket: before the edge starts, so no line is lost."""
        if self.access_log is not None:
            self.access_log.start()

    def start(self) -> None:
        self._tasks = [asyncio.create_task(self._run()), asyncio.create_task(self._measure_lag())]

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self.access_log is not None:
            await asyncio.to_thread(self.access_log.close)

    async def _run(self) -> None:
        while True:
            started = time.monotonic()
            try:
                await self.round()
            except Exception:
                log.exception("monitor round failed")
            self.round_seconds = time.monotonic() - started
            await self.ticker.wait(max(0.0, self.round_seconds - 0.05))

    async def _measure_lag(self) -> None:
        while True:
            before = time.monotonic()
            await asyncio.sleep(_LAG_PROBE_S)
            self._lags.append(max(0.0, time.monotonic() - before - _LAG_PROBE_S))
            self.loop_lag_s = max(self._lags)

    async def round(self) -> None:
        """Sample every replica and the host, then record a snapshot of every service."""
        await self.stats.sample(self._replicas())
        await asyncio.to_thread(self.host.sample)
        try:
            self.connections = await self.edge.backend_sessions()
        except LegatoError as exc:
            log.debug("edge sessions: %s", exc.message)
        names = [s.name for s in await self.store.list_services()]
        now = time.time()
        for name in names:
            ring = self._snapshots.setdefault(name, deque(maxlen=SNAPSHOTS_KEPT))
            ring.append(self.snapshot(name, now))
        for name in set(self._snapshots) - set(names):
            del self._snapshots[name]
            self.stats.forget(name)
            self.requests.forget(name)
        self.rounds += 1
        self._round.set()
        self._round = asyncio.Event()
        with contextlib.suppress(LegatoError):
            await self.history.tick(names, self._counts)

    def snapshot(self, name: str, now: float | None = None) -> Snapshot:
        """The service's figures now: the last resource sample, requests of the last minute."""
        now = time.time() if now is None else now
        window = self.requests.window(name, 60, now)
        p50, p95, p99 = window.percentiles(50, 95, 99)
        sample = self.stats.last(name)
        if sample is not None and sample.at < now - 3 * max(self.interval_s, 1.0):
            sample = None  # stale: the replicas are gone
        healthy, total = self._counts(name)
        return Snapshot(
            service=name, at=now,
            cpu_percent=sample.cpu_percent_avg if sample else None,
            memory_percent=sample.memory_percent_avg if sample else None,
            memory_used_bytes=sample.memory_used if sample else 0,
            rps=window.rps, error_rate=window.error_rate,
            latency_p50_ms=p50, latency_p95_ms=p95, latency_p99_ms=p99,
            active_connections=self.connections.get(name, 0),
            healthy_replicas=healthy, total_replicas=total,
        )

    def snapshots_after(self, name: str, after_id: int) -> list[Snapshot]:
        """Snapshots newer than the event id `after_id`, oldest first (as many as are kept)."""
        return [s for s in self._snapshots.get(name, ()) if s.id > after_id]

    async def next_round(self, timeout_s: float) -> None:
        """Return after the next round (or after `timeout_s`)."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._round.wait(), timeout_s)

    def averages(self, name: str, seconds: float) -> tuple[float | None, float | None]:
        """Per-replica CPU % and memory % averaged over the last `seconds` (None: no samples)."""
        samples = self.stats.series(name, time.time() - seconds)
        cpu = [s.cpu_percent_avg for s in samples if s.cpu_percent_avg is not None]
        memory = [s.memory_percent_avg for s in samples if s.replicas]
        return (sum(cpu) / len(cpu) if cpu else None,
                sum(memory) / len(memory) if memory else None)


def _round(value: float | None, digits: int = 2) -> float | None:
    return None if value is None else round(value, digits)
