"""Container resource figures, sampled in the background (never on a request's path).

Each round asks the runtime for the counters of every running replica in one call; CPU use is the
difference between a replica's last two samples, as `docker stats` computes it (100 % = one
core). Per service, each round's figures are kept for an hour for the autoscaler's windows and
the metrics history.
"""

from __future__ import annotations

import contextlib
import logging
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from legato.errors import LegatoError
from legato.runtime.base import Replica, ReplicaStats, Runtime

log = logging.getLogger(__name__)
SERIES_SECONDS = 3600.0


@dataclass(frozen=True)
class ReplicaSample:
    replica_id: str
    name: str
    at: float
    cpu_percent: float | None  # None on a replica's first sample
    memory_used: int
    memory_limit: int
    network_rx: int
    network_tx: int

    @property
    def memory_percent(self) -> float:
        return 100.0 * self.memory_used / self.memory_limit if self.memory_limit else 0.0


@dataclass(frozen=True)
class ServiceSample:
    """One round's figures of a service: sums over its replicas, and per-replica averages."""

    at: float
    replicas: int
    cpu_percent: float  # summed over replicas
    memory_used: int
    memory_limit: int
    network_rx: int
    network_tx: int
    cpu_percent_avg: float | None  # per replica (None before a second sample): what the
    # autoscaler compares with its target
    memory_percent_avg: float


def cpu_percent(before: ReplicaStats, after: ReplicaStats) -> float | None:
    """CPU share between two samples, 100 per fully used core; None if it cannot be told."""
    cpu = after.cpu_ns - before.cpu_ns
    system = after.system_ns - before.system_ns
    if system <= 0 or cpu < 0:
        return None
    return 100.0 * cpu / system * after.online_cpus


def summarize(at: float, samples: Sequence[ReplicaSample]) -> ServiceSample:
    measured = [s.cpu_percent for s in samples if s.cpu_percent is not None]
    return ServiceSample(
        at=at,
        replicas=len(samples),
        cpu_percent=sum(measured),
        memory_used=sum(s.memory_used for s in samples),
        memory_limit=sum(s.memory_limit for s in samples),
        network_rx=sum(s.network_rx for s in samples),
        network_tx=sum(s.network_tx for s in samples),
        cpu_percent_avg=sum(measured) / len(measured) if measured else None,
        memory_percent_avg=(sum(s.memory_percent for s in samples) / len(samples)
                            if samples else 0.0),
    )


class StatsSampler:
    """The latest resource figures of every replica, and each service's recent series."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self._raw: dict[str, ReplicaStats] = {}
        self._latest: dict[str, dict[str, ReplicaSample]] = {}  # service -> replica id -> sample
        self._series: dict[str, deque[ServiceSample]] = {}
        self.rounds = 0
        self.failures = 0

    async def sample(self, replicas: Iterable[Replica]) -> dict[str, ServiceSample]:
        """One round over the running replicas given; each service's figures of this round."""
        running = [r for r in replicas if r.running]
        try:
            raw = await self.runtime.stats([r.id for r in running])
        except LegatoError as exc:
            self.failures += 1
            log.warning("container stats: %s", exc.message)
            return {}
        by_service: dict[str, dict[str, ReplicaSample]] = {}
        for replica in running:
            counters = raw.get(replica.id)
            if counters is None:
                continue
            before = self._raw.get(replica.id)
            self._raw[replica.id] = counters
            by_service.setdefault(replica.service, {})[replica.id] = ReplicaSample(
                replica_id=replica.id, name=replica.name, at=counters.at,
                cpu_percent=cpu_percent(before, counters) if before else None,
                memory_used=counters.memory_used, memory_limit=counters.memory_limit,
                network_rx=counters.network_rx, network_tx=counters.network_tx,
            )
        live = {r.id for r in running}
        self._raw = {k: v for k, v in self._raw.items() if k in live}
        self._latest = by_service
        rounds: dict[str, ServiceSample] = {}
        for service, samples in by_service.items():
            at = max(s.at for s in samples.values())
            summary = summarize(at, list(samples.values()))
            series = self._series.setdefault(service, deque())
            series.append(summary)
            while series and series[0].at < at - SERIES_SECONDS:
                series.popleft()
            rounds[service] = summary
        for service in set(self._series) - set(by_service):
            del self._series[service]
        self.rounds += 1
        return rounds

    def latest(self, service: str) -> list[ReplicaSample]:
        """The last sample of each running replica of `service`."""
        return sorted(self._latest.get(service, {}).values(), key=lambda s: s.name)

    def last(self, service: str) -> ServiceSample | None:
        series = self._series.get(service)
        return series[-1] if series else None

    def series(self, service: str, since: float = 0.0) -> list[ServiceSample]:
        """The service's round figures from `since` on (at most the last hour)."""
        return [s for s in self._series.get(service, ()) if s.at >= since]

    def forget(self, service: str) -> None:
        with contextlib.suppress(KeyError):
            del self._series[service]
        self._latest.pop(service, None)
