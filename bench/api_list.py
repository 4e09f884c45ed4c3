"""API under load with 50 services: GET /api/v1/services at max throughput (wrk -t1 -c10) and
at a fixed 200 req/s (an open-loop asyncio + httpx generator; target p99 <= 20 ms), and the
idle control plane's RSS (target <= 150 MB) and CPU over 60 s (target <= 2 % of one core).

Each load runs twice: on the bare path (the first page, 20 services, the default limit) and
with ?limit=100 (all 50 services in one answer). The server's CPU is read from /proc around each
load, and a serial pass (one request at a time) over a few endpoints gives the server CPU each
request costs: the list against a single service's GET and an authenticated 404 (the fixed
cost of the HTTP stack and the token check).
"""

from __future__ import annotations

import argparse
import asyncio
import time
from dataclasses import dataclass

import httpx
from common import (
    BenchError,
    Legato,
    cpu_seconds,
    legato_server,
    log,
    percentile,
    rss_mb,
    service_spec,
    verdict,
    wait_for,
    wrk,
)

P99_TARGET_MS = 20.0
RSS_TARGET_MB = 150.0
CPU_TARGET_PCT = 2.0
PATHS = ("/api/v1/services", "/api/v1/services?limit=100")
COST_PATHS = (*PATHS, "/api/v1/services/api-00", "/api/v1/no-such-route")


@dataclass(frozen=True)
class Idle:
    rss_mb: float
    rss_max_mb: float
    cpu_pct: float
    seconds: float


@dataclass(frozen=True)
class FixedRate:
    sent: int
    ok: int
    errors: int
    unfinished: int  # still queued or in flight when the drain timed out
    achieved_rps: float
    p50_ms: float
    p95_ms: float
    p99_ms: float
    max_ms: float
    service_p99_ms: float  # from the moment the request was actually sent
    client_cpu_pct: float  # the generator's own CPU, % of one core


def measure_idle(pid: int, seconds: float) -> Idle:
    rss_seen: list[float] = []
    cpu0, t0 = cpu_seconds(pid), time.monotonic()
    end = t0 + seconds
    while (now := time.monotonic()) < end:
        rss_seen.append(rss_mb(pid))
        time.sleep(min(5.0, end - now))
    cpu1, t1 = cpu_seconds(pid), time.monotonic()
    return Idle(rss_mb(pid), max(rss_seen), (cpu1 - cpu0) / (t1 - t0) * 100, t1 - t0)


async def fixed_rate(
    url: str, token: str, *, rate: float, seconds: float, connections: int = 50
) -> FixedRate:
    """Open loop: request i is due at t0 + i/rate whatever the earlier ones are doing, and its
    latency counts from when it was due (so a stall shows; coordinated omission does not hide
    it). `connections` workers, each with one keep-alive connection, take due requests in order
    from a queue: when all are busy, requests wait in that queue (their wait counts)."""
    total = int(rate * seconds)
    latencies: list[float] = []
    service_times: list[float] = []
    errors = 0
    due_times: asyncio.Queue[float | None] = asyncio.Queue()
    limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections)
    headers = {"Authorization": f"Bearer {token}"}
    async with httpx.AsyncClient(limits=limits, headers=headers, timeout=5.0) as client:
        await asyncio.gather(*(client.get(url) for _ in range(connections)))  # open the pool

        async def worker() -> None:
            nonlocal errors
            while (due := await due_times.get()) is not None:
                sent = time.perf_counter()
                try:
                    response = await client.get(url)
                except httpx.HTTPError:
                    errors += 1
                    continue
                done = time.perf_counter()
                if response.status_code != 200:
                    errors += 1
                    continue
                latencies.append(done - due)
                service_times.append(done - sent)

        workers = [asyncio.create_task(worker()) for _ in range(connections)]
        cpu0 = time.process_time()
        t0 = time.perf_counter()
        for i in range(total):
            due = t0 + i / rate
            delay = due - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            due_times.put_nowait(due)
        for _ in workers:
            due_times.put_nowait(None)
        _, pending = await asyncio.wait(workers, timeout=seconds + 60)
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        elapsed = time.perf_counter() - t0
        client_cpu_pct = (time.process_time() - cpu0) / elapsed * 100
    if not latencies:
        raise BenchError(f"no successful request at {rate:g} req/s ({errors} errors)")
    ms = [x * 1000 for x in latencies]
    return FixedRate(
        sent=total,
        ok=len(latencies),
        errors=errors,
        unfinished=total - len(latencies) - errors,
        achieved_rps=len(latencies) / elapsed,
        p50_ms=percentile(ms, 50),
        p95_ms=percentile(ms, 95),
        p99_ms=percentile(ms, 99),
        max_ms=max(ms),
        service_p99_ms=percentile([x * 1000 for x in service_times], 99),
        client_cpu_pct=client_cpu_pct,
    )


def serial_cost(server: Legato, path: str, count: int = 200) -> tuple[float, float]:
    """(median latency, server CPU per request), both in ms, of `count` GETs one at a time."""
    client = httpx.Client(base_url=server.api_url, headers={"Authorization": f"Bearer {server.token}"})
    with client:
        for _ in range(20):
            client.get(path)
        latencies = []
        cpu0 = cpu_seconds(server.pid)
        for _ in range(count):
            started = time.perf_counter()
            client.get(path)
            latencies.append(time.perf_counter() - started)
        cpu = cpu_seconds(server.pid) - cpu0
    return percentile(latencies, 50) * 1000, cpu / count * 1000


def create_services(server: Legato, count: int, timeout: float) -> float:
    t0 = time.monotonic()
    names = [f"api-{i:02d}" for i in range(count)]
    server.deploy(*(service_spec(name) for name in names))

    def all_healthy() -> bool:
        items = server.api.get("/services", params={"limit": 100}).json()["items"]
        healthy = sum(1 for s in items if s["replicas"]["healthy"] == s["replicas"]["desired"] == 1)
        return len(items) == count and healthy == count

    wait_for(all_healthy, timeout=timeout, interval=1.0, what=f"{count} services healthy")
    return time.monotonic() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--services", type=int, default=50)
    parser.add_argument("--idle", type=float, default=60.0, help="idle measurement, s (60)")
    parser.add_argument("--rate", type=float, default=200.0, help="fixed rate, req/s (200)")
    parser.add_argument("--rate-seconds", type=float, default=15.0, help="fixed-rate run, s (15)")
    parser.add_argument("--wrk-seconds", type=int, default=10, help="wrk run, s (10)")
    args = parser.parse_args()
    if not 1 <= args.services <= 100 or not 1 <= args.idle <= 600 or not 1 <= args.rate_seconds <= 120:
        raise SystemExit("--services 1..100, --idle 1..600, --rate-seconds 1..120")

    results: list[str] = []
    with legato_server() as server:
        took = create_services(server, args.services, timeout=300)
        log(f"{args.services} services healthy after {took:.1f}s; settling 5 s")
        time.sleep(5)
        log(f"measuring the idle control plane for {args.idle:g}s")
        idle = measure_idle(server.pid, args.idle)
        for path in PATHS:
            url = f"{server.api_url}{path}"
            log(f"wrk -t1 -c10 -d{args.wrk_seconds}s {path}")
            cpu0, t0 = cpu_seconds(server.pid), time.monotonic()
            max_tp = wrk(
                url,
                threads=1,
                connections=10,
                duration_s=args.wrk_seconds,
                headers={"Authorization": f"Bearer {server.token}"},
            )
            wrk_cpu, wrk_wall = cpu_seconds(server.pid) - cpu0, time.monotonic() - t0
            time.sleep(2)
            log(f"{args.rate:g} req/s for {args.rate_seconds:g}s {path}")
            cpu0, t0 = cpu_seconds(server.pid), time.monotonic()
            fixed = asyncio.run(fixed_rate(url, server.token, rate=args.rate, seconds=args.rate_seconds))
            fixed_cpu_pct = (cpu_seconds(server.pid) - cpu0) / (time.monotonic() - t0) * 100
            results.append(
                f"api_list: path={path} max_rps={max_tp.requests_per_s:.0f} "
                f"wrk_p50_ms={max_tp.p50_s * 1000:.1f} wrk_p99_ms={max_tp.p99_s * 1000:.1f} "
                f"wrk_errors={max_tp.errors} server_cpu_pct={wrk_cpu / wrk_wall * 100:.0f} "
                f"server_cpu_ms_per_req={wrk_cpu / max(1, max_tp.requests) * 1000:.2f}"
            )
            results.append(
                f"api_list: path={path} fixed_rate={args.rate:g}/s achieved={fixed.achieved_rps:.0f}/s "
                f"p50_ms={fixed.p50_ms:.1f} p95_ms={fixed.p95_ms:.1f} p99_ms={fixed.p99_ms:.1f} "
                f"max_ms={fixed.max_ms:.1f} service_p99_ms={fixed.service_p99_ms:.1f} "
                f"server_cpu_pct={fixed_cpu_pct:.0f} client_cpu_pct={fixed.client_cpu_pct:.0f} "
                f"errors={fixed.errors}/{fixed.sent} unfinished={fixed.unfinished} "
                f"(target p99 <= {P99_TARGET_MS:g}) "
                f"{verdict(fixed.p99_ms, P99_TARGET_MS, at_most=True)}"
            )
            time.sleep(2)
        rss_after = rss_mb(server.pid)
        costs = {path: serial_cost(server, path) for path in COST_PATHS}

    print(f"api_list breakdown: serial GETs with {args.services} services (200 each, one at a time)")
    for path, (latency_ms, cpu_ms) in costs.items():
        print(f"  {path}: p50_ms={latency_ms:.2f} server_cpu_ms_per_req={cpu_ms:.2f}")
    for line in results:
        print(line)
    print(
        f"api_list: idle services={args.services} rss_mb={idle.rss_mb:.1f} "
        f"(target <= {RSS_TARGET_MB:g}) {verdict(idle.rss_mb, RSS_TARGET_MB, at_most=True)} "
        f"rss_max_mb={idle.rss_max_mb:.1f} rss_after_load_mb={rss_after:.1f}"
    )
    print(
        f"api_list: idle cpu_pct={idle.cpu_pct:.2f} over {idle.seconds:.0f}s "
        f"(target <= {CPU_TARGET_PCT:g}) {verdict(idle.cpu_pct, CPU_TARGET_PCT, at_most=True)}"
    )


if __name__ == "__main__":
    try:
        main()
    except BenchError as exc:
        raise SystemExit(f"api_list: FAILED: {exc}") from exc
