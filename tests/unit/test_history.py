"""The metrics history: closed minutes become 1m points, and they add up to 5m, 1h and 1d ones."""

from __future__ import annotations

import math
import random
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pytest

from legato.monitor.history import CLOSE_LAG_S, INTERVALS, RETENTION_S, MetricsHistory
from legato.monitor.requests import RequestMetrics
from legato.monitor.stats import StatsSampler
from legato.runtime.base import Replica, ReplicaRequest
from legato.runtime.fake import FakeRuntime
from legato.store import MetricPoint, Store

DAY = 1_700_006_400  # a UTC midnight, so also the start of an hour and of a 5-minute interval
MiB = 1024**2
GiB = 1024**3
DATA_KEYS = {"cpu_percent", "memory_percent", "memory_used_bytes", "requests", "errors", "rps",
             "error_rate", "latency_p50_ms", "latency_p95_ms", "latency_p99_ms",
             "healthy_replicas", "total_replicas"}


class Clock:
    """One settable clock for RequestMetrics, FakeRuntime and MetricsHistory."""

    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class Rig:
    """Request metrics, a sampler over FakeRuntime and the history, all on one fake clock."""

    def __init__(self, store: Store, start: float) -> None:
        self.clock = Clock(start)
        self.requests = RequestMetrics(clock=self.clock)
        self.runtime = FakeRuntime()
        self.runtime.clock = self.clock
        self.stats = StatsSampler(self.runtime)
        self.history = MetricsHistory(store, self.requests, self.stats, clock=self.clock)
        self.store = store
        self.counts: dict[str, tuple[int, int]] = {}

    def replicas(self, service: str) -> tuple[int, int]:
        return self.counts.get(service, (1, 1))

    async def tick(self, at: float, services: tuple[str, ...] = ("web",)) -> list[MetricPoint]:
        self.clock.now = at
        return await self.history.tick(services, self.replicas)

    async def close_minute(self, minute: int, services: tuple[str, ...] = ("web",)) -> list[MetricPoint]:
        """Tick right when the minute starting at `minute` may close."""
        return await self.tick(minute + 60 + CLOSE_LAG_S, services)

    async def start_replica(self, service: str, slot: int, **usage: float) -> Replica:
        replica = await self.runtime.start_replica(ReplicaRequest(
            service=service, project="default", environment="production", deployment="d1",
            slot=slot, image="legato-test/busybox:latest", port=8080))
        self.runtime.usage[replica.id] = usage
        return replica

    async def sample(self, at: float) -> None:
        self.clock.now = at
        await self.stats.sample(await self.runtime.list_replicas())


def at(epoch: float) -> datetime:
    return datetime.fromtimestamp(epoch, UTC)


def by_start(points: list[MetricPoint], interval: str) -> dict[int, dict[str, Any]]:
    return {int(p.at.timestamp()): p.data for p in points if p.interval == interval}


def numpy_percentiles(samples: list[int]) -> list[float]:
    return [float(v) for v in np.percentile(np.array(samples, dtype=np.float64), [50, 95, 99])]


def record_minute(rig: Rig, minute: int, rng: random.Random, count: int,
                  service: str = "web") -> tuple[list[int], int]:
    """`count` requests at random times within the minute; their latencies and 5xx count."""
    latencies = [int(rng.lognormvariate(3.5, 1.0)) for _ in range(count)]
    statuses = [rng.choices([200, 302, 404, 500, 503], weights=[80, 5, 5, 5, 5])[0]
                for _ in range(count)]
    times = sorted(minute + rng.uniform(0, 59.999) for _ in range(count))
    for t, status, latency in zip(times, statuses, latencies, strict=True):
        rig.requests.record(service, status, latency, at=t)
    return latencies, sum(1 for s in statuses if s >= 500)


@pytest.fixture
async def rig(store: Store) -> Rig:
    """A history whose first tick came 30 s before DAY (that minute is its partial first point)."""
    setup = Rig(store, DAY - 40.0)
    assert await setup.tick(DAY - 30.0) == []
    return setup


# the first tick ------------------------------------------------------------------------------


async def test_first_tick_records_nothing(store: Store) -> None:
    """The first tick only notes where it stands: no point, nothing stored."""
    rig = Rig(store, DAY + 10.0)
    rig.requests.record("web", 200, 5, at=DAY - 70.0)
    rig.requests.record("web", 200, 5, at=DAY + 5.0)
    assert await rig.tick(DAY + 30.0) == []
    for interval in INTERVALS:
        assert await store.metric_points("web", interval, 100) == []


@pytest.mark.parametrize("offset", [1.0, 30.0, 59.0])
async def test_the_minute_in_progress_at_the_first_tick_counts_only_the_seconds_it_covered(
    store: Store, offset: float
) -> None:
    """The first point is the minute the first tick fell in, its rate over the seconds after
    that tick; the minute before (ended before the history began) is never recorded."""
    rig = Rig(store, DAY + offset - 0.5)
    rig.requests.record_many([("web", 200, 5)] * 12, at=DAY + offset + 0.25)
    assert await rig.tick(DAY + offset) == []
    points = await rig.close_minute(DAY + 60)
    minutes = by_start(points, "1m")
    assert sorted(minutes) == [DAY, DAY + 60]
    covered = max(1, math.ceil(60 - offset))
    assert minutes[DAY]["requests"] == 12
    assert minutes[DAY]["rps"] == pytest.approx(12 / covered, abs=1e-3)
    assert minutes[DAY + 60]["requests"] == 0
    assert [p.at for p in await store.metric_points("web", "1m", 100)] == [at(DAY), at(DAY + 60)]
    assert await store.metric_points("web", "5m", 100) == []


# one minute ----------------------------------------------------------------------------------


async def test_a_minute_closes_only_after_close_lag(rig: Rig) -> None:
    """The minute starting at DAY closes at DAY + 60 + CLOSE_LAG_S, not a moment before."""
    rig.requests.record("web", 200, 5, at=DAY + 59.9)
    assert by_start(await rig.tick(DAY + 60 + CLOSE_LAG_S - 0.01), "1m").get(DAY) is None
    points = await rig.close_minute(DAY)
    assert by_start(points, "1m")[DAY]["requests"] == 1
    assert by_start(await rig.tick(DAY + 60 + CLOSE_LAG_S + 5), "1m") == {}  # closed only once


async def test_a_closed_minute_has_its_exact_request_figures(rig: Rig) -> None:
    """Requests, errors, rps and latency percentiles of exactly that minute (numpy-exact)."""
    rng = random.Random(11)
    latencies, errors = record_minute(rig, DAY, rng, 733)
    rig.requests.record("web", -1, -1, at=DAY + 30)  # aborted: a request without a latency
    rig.requests.record("web", 500, 99_999, at=DAY - 0.5)  # the minute before
    rig.requests.record("web", 500, 99_999, at=DAY + 60.0)  # the minute after
    rig.requests.record("api", 500, 99_999, at=DAY + 10)  # another service
    rig.counts["web"] = (2, 3)
    data = by_start(await rig.close_minute(DAY), "1m")[DAY]
    assert set(data) == DATA_KEYS
    assert (data["requests"], data["errors"]) == (734, errors)
    assert data["rps"] == round(734 / 60, 3)
    assert data["error_rate"] == round(errors / 734, 4)
    p50, p95, p99 = numpy_percentiles(latencies)
    assert data["latency_p50_ms"] == pytest.approx(p50, rel=1e-12, abs=1e-9)
    assert data["latency_p95_ms"] == pytest.approx(p95, rel=1e-12, abs=1e-9)
    assert data["latency_p99_ms"] == pytest.approx(p99, rel=1e-12, abs=1e-9)
    assert (data["healthy_replicas"], data["total_replicas"]) == (2, 3)
    stored = await rig.store.metric_points("web", "1m", 10)
    assert [(p.service, p.interval, p.at, p.data) for p in stored if p.at >= at(DAY)] == [
        ("web", "1m", at(DAY), data)]


async def test_a_quiet_minute_is_a_point_of_zeros(rig: Rig) -> None:
    """No request: zero requests, rps and error rate, no latency, no resource figures."""
    data = by_start(await rig.close_minute(DAY), "1m")[DAY]
    assert data == {
        "cpu_percent": None, "memory_percent": None, "memory_used_bytes": 0, "requests": 0,
        "errors": 0, "rps": 0.0, "error_rate": 0.0, "latency_p50_ms": None, "latency_p95_ms": None,
        "latency_p99_ms": None, "healthy_replicas": 1, "total_replicas": 1,
    }


async def test_a_closed_minute_has_the_resource_samples_of_that_minute(rig: Rig) -> None:
    """CPU and memory are the means of the minute's samples, memory_used the last one's."""
    first = await rig.start_replica("web", 0, cpu_percent=40, memory_used=256 * MiB, memory_limit=GiB)
    await rig.start_replica("web", 1, cpu_percent=20, memory_used=512 * MiB, memory_limit=GiB)
    await rig.sample(DAY - 10)  # the first samples have no CPU figure (and are the minute before)
    await rig.sample(DAY + 10)
    await rig.sample(DAY + 30)
    rig.runtime.usage[first.id] = {"cpu_percent": 80, "memory_used": 128 * MiB, "memory_limit": GiB}
    await rig.sample(DAY + 50)
    await rig.sample(DAY + 60)  # the next minute
    data = by_start(await rig.close_minute(DAY), "1m")[DAY]
    # per-replica means per round: 30, 30, 50 (CPU); 37.5, 37.5, 31.25 (memory)
    assert data["cpu_percent"] == pytest.approx(round((30 + 30 + 50) / 3, 2))
    assert data["memory_percent"] == pytest.approx(round((37.5 + 37.5 + 31.25) / 3, 2))
    assert data["memory_used_bytes"] == 640 * MiB
    later = by_start(await rig.close_minute(DAY + 60), "1m")[DAY + 60]
    assert later["cpu_percent"] == pytest.approx(50.0)
    assert later["memory_used_bytes"] == 640 * MiB


async def test_several_minutes_between_ticks_are_all_closed(rig: Rig) -> None:
    """One tick after three minutes closes each of them with its own figures."""
    rng = random.Random(3)
    recorded = {minute: record_minute(rig, minute, rng, 50 + 40 * i)
                for i, minute in enumerate((DAY, DAY + 60, DAY + 120))}
    points = by_start(await rig.close_minute(DAY + 120), "1m")
    assert {m for m in points if m >= DAY} == set(recorded)
    for minute, (latencies, errors) in recorded.items():
        data = points[minute]
        assert (data["requests"], data["errors"]) == (len(latencies), errors)
        assert [data["latency_p50_ms"], data["latency_p95_ms"], data["latency_p99_ms"]] == (
            pytest.approx(numpy_percentiles(latencies), rel=1e-12, abs=1e-9))


async def test_every_service_named_gets_its_points(rig: Rig) -> None:
    """Each service in the tick gets a point per minute, from its own figures only."""
    rig.requests.record("web", 200, 5, at=DAY + 1)
    rig.requests.record_many([("api", 503, 7)] * 4, at=DAY + 2)
    points = await rig.close_minute(DAY, ("web", "api", "idle"))
    found = {(p.service, int(p.at.timestamp())): p.data["requests"]
             for p in points if p.interval == "1m"}
    assert {k: v for k, v in found.items() if k[1] >= DAY} == {
        ("web", DAY): 1, ("api", DAY): 4, ("idle", DAY): 0}
    assert (await rig.store.metric_points("api", "1m", 10))[-1].data["errors"] == 4


# coarser intervals ---------------------------------------------------------------------------


async def test_five_minutes_make_a_5m_point_with_merged_exact_figures(rig: Rig) -> None:
    """After the fifth minute the 5m point sums requests and has percentiles over all samples."""
    rng = random.Random(5)
    await rig.start_replica("web", 0, cpu_percent=10, memory_used=100 * MiB, memory_limit=GiB)
    await rig.sample(DAY - 5)
    everything: list[int] = []
    errors = 0
    cpu = [10.0, 30.0, 50.0, 70.0, 90.0]
    for i in range(5):
        minute = DAY + 60 * i
        latencies, minute_errors = record_minute(rig, minute, rng, rng.randint(20, 400))
        everything += latencies
        errors += minute_errors
        rig.runtime.usage[next(iter(rig.runtime.usage))]["cpu_percent"] = cpu[i]
        await rig.sample(minute + 30)
        points = await rig.close_minute(minute)
        if i < 4:
            assert DAY not in by_start(points, "5m")
    data = by_start(points, "5m")[DAY]
    assert set(data) == DATA_KEYS
    assert (data["requests"], data["errors"]) == (len(everything), errors)
    assert data["rps"] == round(len(everything) / 300, 3)
    assert data["error_rate"] == round(errors / len(everything), 4)
    assert [data["latency_p50_ms"], data["latency_p95_ms"], data["latency_p99_ms"]] == (
        pytest.approx(numpy_percentiles(everything), rel=1e-12, abs=1e-9))
    assert data["cpu_percent"] == pytest.approx(50.0)
    assert data["memory_used_bytes"] == 100 * MiB
    stored = await rig.store.metric_points("web", "5m", 10)
    assert [p.data for p in stored if p.at == at(DAY)] == [data]


async def test_a_5m_point_merges_minutes_closed_in_one_tick(rig: Rig) -> None:
    """Five minutes closed by a single tick still add up to one 5m point."""
    rng = random.Random(6)
    everything: list[int] = []
    for i in range(5):
        everything += record_minute(rig, DAY + 60 * i, rng, 30)[0]
    points = await rig.close_minute(DAY + 240)
    assert sorted(m for m in by_start(points, "1m") if m >= DAY) == [DAY + 60 * i for i in range(5)]
    data = by_start(points, "5m")[DAY]
    assert data["requests"] == 150
    assert data["latency_p99_ms"] == pytest.approx(numpy_percentiles(everything)[2], rel=1e-12)


async def test_an_hour_boundary_yields_a_1h_point(rig: Rig) -> None:
    """Sixty minutes ticked one by one give twelve 5m points and one 1h point at the hour."""
    latencies = []
    for i in range(60):
        minute = DAY + 60 * i
        rig.requests.record("web", 500 if i % 10 == 0 else 200, i * 3, at=minute + 15)
        latencies.append(i * 3)
        points = await rig.close_minute(minute)
        if i < 59:
            assert DAY not in by_start(points, "1h")
    hour = by_start(points, "1h")[DAY]
    assert (hour["requests"], hour["errors"]) == (60, 6)
    assert hour["rps"] == round(60 / 3600, 3)
    assert [hour["latency_p50_ms"], hour["latency_p95_ms"], hour["latency_p99_ms"]] == (
        pytest.approx(numpy_percentiles(latencies), rel=1e-12, abs=1e-9))
    fives = [p for p in await rig.store.metric_points("web", "5m", 100) if p.at >= at(DAY)]
    assert [p.at for p in fives] == [at(DAY + 300 * i) for i in range(12)]
    assert sum(p.data["requests"] for p in fives) == 60
    assert [p.at for p in await rig.store.metric_points("web", "1h", 10) if p.at >= at(DAY)] == [
        at(DAY)]


# the store -----------------------------------------------------------------------------------


async def test_metric_points_are_oldest_first_and_at_most_limit(rig: Rig) -> None:
    """store.metric_points gives the newest `limit` points of one interval, oldest first."""
    for i in range(6):
        rig.requests.record("web", 200, i, at=DAY + 60 * i + 1)
        await rig.close_minute(DAY + 60 * i)
    newest = await rig.store.metric_points("web", "1m", 3)
    assert [p.at for p in newest] == [at(DAY + 180), at(DAY + 240), at(DAY + 300)]
    assert [p.data["latency_p50_ms"] for p in newest] == [3.0, 4.0, 5.0]
    every = await rig.store.metric_points("web", "1m", 100)
    assert [p.at for p in every] == sorted(p.at for p in every)
    assert [p.at for p in every][-6:] == [at(DAY + 60 * i) for i in range(6)]
    assert all(p.interval == "1m" and p.service == "web" for p in every)
    assert await rig.store.metric_points("other", "1m", 100) == []


async def test_a_tick_more_than_a_day_later_prunes_old_1m_points(rig: Rig) -> None:
    """1m points older than RETENTION_S are pruned; coarser ones are kept longer."""
    rig.requests.record("web", 200, 5, at=DAY + 1)
    await rig.close_minute(DAY)
    assert at(DAY) in [p.at for p in await rig.store.metric_points("web", "1m", 10)]
    now = DAY + RETENTION_S["1m"] + 600.0
    points = await rig.tick(now)
    assert DAY + 86400 - 60 in by_start(points, "1m")  # the day's minutes were closed meanwhile
    assert by_start(points, "1d")[DAY]["requests"] == 1
    left = await rig.store.metric_points("web", "1m", 10_000)
    assert left
    assert min(p.at for p in left) >= at(now - RETENTION_S["1m"])
    assert at(DAY) not in [p.at for p in left]
    assert at(DAY) in [p.at for p in await rig.store.metric_points("web", "5m", 10_000)]
    assert at(DAY) in [p.at for p in await rig.store.metric_points("web", "1h", 10_000)]


async def test_prune_metric_points_removes_only_older_points_of_one_interval(store: Store) -> None:
    """prune_metric_points(interval, before) deletes that interval's points with at < before."""
    points = [MetricPoint("web", interval, at(DAY + 60 * i), {"requests": i})
              for interval in ("1m", "5m") for i in range(5)]
    points.append(MetricPoint("api", "1m", at(DAY), {"requests": 0}))
    await store.add_metric_points(points)
    assert await store.prune_metric_points("1m", at(DAY + 120)) == 3
    assert [p.at for p in await store.metric_points("web", "1m", 10)] == [
        at(DAY + 120), at(DAY + 180), at(DAY + 240)]
    assert await store.metric_points("api", "1m", 10) == []
    assert len(await store.metric_points("web", "5m", 10)) == 5
    assert await store.prune_metric_points("1h", at(DAY + 10_000)) == 0


async def test_adding_a_point_again_replaces_it(store: Store) -> None:
    """A point is keyed by service, interval and start: a second write replaces the first."""
    await store.add_metric_points([MetricPoint("web", "1m", at(DAY), {"requests": 1})])
    await store.add_metric_points([MetricPoint("web", "1m", at(DAY), {"requests": 2})])
    await store.add_metric_points([])
    assert [p.data for p in await store.metric_points("web", "1m", 10)] == [{"requests": 2}]
