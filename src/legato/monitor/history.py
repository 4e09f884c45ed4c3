"""Each service's figures over time, downsampled to 1 minute, 5 minutes, 1 hour and 1 day.

Every closed minute becomes a point from the exact request figures and the resource samples
of that minute; the coarser intervals accumulate the minutes (latencies merged as counts, so
their percentiles are exact too) and become points when they close. Retention is bounded per
interval. The first minute after a start, and any interval open when the control plane
stopped, hold only what came after the start: their rates count the seconds they covered.
"""

from __future__ import annotations

import math
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from legato.monitor.requests import RequestMetrics, percentiles
from legato.monitor.stats import ServiceSample, StatsSampler
from legato.store import MetricPoint, Store

INTERVALS: dict[str, int] = {"1m": 60, "5m": 300, "1h": 3600, "1d": 86400}
RETENTION_S: dict[str, int] = {"1m": 86400, "5m": 7 * 86400, "1h": 90 * 86400, "1d": 730 * 86400}
CLOSE_LAG_S = 2.0  # the last log lines of a minute have arrived by then
_PRUNE_EVERY_S = 3600.0


@dataclass
class _Bucket:
    start: int
    seconds: int = 0
    requests: int = 0
    errors: int = 0
    latencies: Counter[int] = field(default_factory=Counter)
    cpu: list[float] = field(default_factory=list)  # per replica, one per sample
    memory_percent: list[float] = field(default_factory=list)
    memory_used: int = 0
    healthy: int = 0
    total: int = 0

    def add(self, other: _Bucket) -> None:
        self.seconds += other.seconds
        self.requests += other.requests
        self.errors += other.errors
        self.latencies.update(other.latencies)
        self.cpu += other.cpu
        self.memory_percent += other.memory_percent
        self.memory_used, self.healthy, self.total = other.memory_used, other.healthy, other.total

    def data(self) -> dict[str, Any]:
        p50, p95, p99 = percentiles(self.latencies, (50, 95, 99))
        return {
            "cpu_percent": _mean(self.cpu),
            "memory_percent": _mean(self.memory_percent),
            "memory_used_bytes": self.memory_used,
            "requests": self.requests,
            "errors": self.errors,
            "rps": round(self.requests / self.seconds, 3) if self.seconds else 0.0,
            "error_rate": round(self.errors / self.requests, 4) if self.requests else 0.0,
            "latency_p50_ms": p50,
            "latency_p95_ms": p95,
            "latency_p99_ms": p99,
            "healthy_replicas": self.healthy,
            "total_replicas": self.total,
        }


def minute_bucket(start: int, requests: RequestMetrics, samples: Iterable[ServiceSample],
                  service: str, replicas: tuple[int, int]) -> _Bucket:
    """The figures of one service over the minute beginning at `start`."""
    window = requests.between(service, start, start + 60)
    within = [s for s in samples if start <= s.at < start + 60]
    return _Bucket(
        start=start, seconds=60, requests=window.requests, errors=window.errors,
        latencies=Counter(window.latencies),
        cpu=[s.cpu_percent_avg for s in within if s.cpu_percent_avg is not None],
        memory_percent=[s.memory_percent_avg for s in within],
        memory_used=within[-1].memory_used if within else 0,
        healthy=replicas[0], total=replicas[1],
    )


class MetricsHistory:
    """Closes minutes as they end and stores the points of every interval."""

    def __init__(self, store: Store, requests: RequestMetrics, stats: StatsSampler,
                 clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self.requests = requests
        self.stats = stats
        self._clock = clock
        self._open: dict[tuple[str, str], _Bucket] = {}
        self._closed: int | None = None  # start of the last minute closed
        self._since = 0.0  # when recording began
        self._pruned = 0.0

    async def tick(self, services: Iterable[str],
                   replicas: Callable[[str], tuple[int, int]]) -> list[MetricPoint]:
        """Close every minute that has ended since the last tick; the points stored."""
        now = self._clock()
        if self._closed is None:
            # The minute under way becomes the first point, covering the part from now on.
            self._closed, self._since = int(now // 60) * 60 - 60, now
            return []
        latest = int((now - CLOSE_LAG_S) // 60) * 60 - 60  # start of the last complete minute
        points: list[MetricPoint] = []
        names = list(services)
        for minute in range(self._closed + 60, latest + 60, 60):
            for service in names:
                points += self._close(service, minute, replicas(service))
        self._closed = max(self._closed, latest)
        live = set(names)
        self._open = {k: v for k, v in self._open.items() if k[0] in live}
        await self.store.add_metric_points(points)
        if now - self._pruned >= _PRUNE_EVERY_S:
            self._pruned = now
            for interval, keep in RETENTION_S.items():
                await self.store.prune_metric_points(interval, _at(int(now) - keep))
        return points

    def _close(self, service: str, minute: int, replicas: tuple[int, int]) -> list[MetricPoint]:
        bucket = minute_bucket(minute, self.requests, self.stats.series(service, minute),
                               service, replicas)
        if minute < self._since:
            bucket.seconds = max(1, math.ceil(minute + 60 - self._since))
        points = [MetricPoint(service, "1m", _at(minute), bucket.data())]
        for interval, seconds in INTERVALS.items():
            if seconds == 60:
                continue
            start = minute - minute % seconds
            key = (service, interval)
            open_ = self._open.get(key)
            if open_ is None or open_.start != start:
                open_ = self._open[key] = _Bucket(start)
            open_.add(bucket)
            if minute + 60 == start + seconds:
                points.append(MetricPoint(service, interval, _at(start), open_.data()))
                del self._open[key]
        return points


def _mean(values: list[float]) -> float | None:
    return round(sum(values) / len(values), 2) if values else None


def _at(epoch: int) -> datetime:
    return datetime.fromtimestamp(epoch, UTC)
