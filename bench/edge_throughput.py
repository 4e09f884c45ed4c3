"""Edge throughput: wrk -t1 -c50 through HAProxy (Host header of a 1-replica service) against
wrk straight at that replica's published port, in the same run. The figure is
edge req/s / direct req/s (target >= 0.5), of the medians when rounds alternate.

The test image's busybox httpd closes every connection after one answer and listens with a
small backlog, so both sides pay a new connection to the replica per request, and a few SYNs
are dropped under 50 connections (1 s retransmits: the ~1 s p99 on both sides). Through the
edge wrk keeps its connections to HAProxy. HAProxy's own counters for the service's backend
(answers by class, connect errors, retries, average connect/response times) are read from its
admin socket around each edge run, and the CPU used meanwhile by the host, HAProxy (master and
workers), Docker's userland port proxy (docker-proxy: on both paths) is reported.

Each run starts only once the TIME-WAIT sockets towards port 8080 left by the previous one have
expired (Linux keeps them 60 s). Both paths reach the replica through docker-proxy, whose
connections to the container (172.17.0.1 -> container:8080, one per request since httpd closes
each) end in TIME-WAIT on the host side; with tens of thousands of them its connect() spends its
time searching the 28k ephemeral ports (kernel time), and whichever run comes second is 3-5x
slower. Waiting keeps the edge/direct comparison about the edge.
"""

from __future__ import annotations

import argparse
import subprocess
import time
from dataclasses import dataclass

from common import (
    BenchError,
    CpuSnapshot,
    Legato,
    WrkResult,
    legato_server,
    log,
    median,
    pids,
    ratio,
    service_spec,
    verdict,
    wrk,
)

TARGET = 0.5
NAME = "edge-tp"
BACKEND = f"svc_{NAME}"
COUNTERS = ("hrsp_2xx", "hrsp_4xx", "hrsp_5xx", "econ", "eresp", "wretr", "wredis")


@dataclass(frozen=True)
class Run:
    wrk: WrkResult
    cpu: dict[str, float]  # host_busy_pct (of all cores); haproxy_pct, docker_proxy_pct (of one)


@dataclass(frozen=True)
class EdgeRun:
    run: Run
    counters: dict[str, int]  # deltas over the run, of the backend
    ctime_ms: int  # HAProxy's averages over the backend's last 1024 requests
    rtime_ms: int
    ttime_ms: int


def _counts(server: Legato) -> dict[str, int]:
    row = server.haproxy_stats(BACKEND)["BACKEND"]
    return {key: int(row.get(key) or 0) for key in COUNTERS}


def measured(server: Legato, url: str, connections: int, seconds: int, headers: dict[str, str]) -> Run:
    """One wrk run with the CPU of the host and the processes on the path around it."""
    master = int((server.data_dir / "edge" / "haproxy.pid").read_text().split()[0])
    groups = {
        "haproxy": [master, *pids("-P", str(master))],
        "docker_proxy": pids("-x", "docker-proxy"),
    }
    before = CpuSnapshot.take(groups)
    result = wrk(url, threads=1, connections=connections, duration_s=seconds, headers=headers)
    return Run(result, CpuSnapshot.take(groups).since(before))


def edge_run(server: Legato, url: str, connections: int, seconds: int) -> EdgeRun:
    before = _counts(server)
    run = measured(server, url, connections, seconds, _host())
    row = server.haproxy_stats(BACKEND)["BACKEND"]
    after = {key: int(row.get(key) or 0) for key in COUNTERS}
    return EdgeRun(
        run=run,
        counters={key: after[key] - before[key] for key in COUNTERS},
        ctime_ms=int(row.get("ctime") or 0),
        rtime_ms=int(row.get("rtime") or 0),
        ttime_ms=int(row.get("ttime") or 0),
    )


def time_wait_to_8080() -> int:
    """Sockets in TIME-WAIT towards any port 8080 (docker-proxy's connections to replicas)."""
    result = subprocess.run(
        ["ss", "-Htan", "state", "time-wait", "dport", "=", ":8080"],
        capture_output=True,
        text=True,
        check=False,
        timeout=10,
    )
    return len(result.stdout.splitlines())


def drain_time_wait(limit: int = 2000, timeout: float = 90) -> None:
    """Wait (at most `timeout` s) until fewer than `limit` such sockets are left."""
    started = time.monotonic()
    count = time_wait_to_8080()
    if count >= limit:
        log(f"waiting for {count} TIME-WAIT sockets towards :8080 to expire")
    while count >= limit and time.monotonic() - started < timeout:
        time.sleep(2)
        count = time_wait_to_8080()
    if count >= limit:
        log(f"still {count} TIME-WAIT sockets after {timeout:g}s; measuring anyway")


def _host() -> dict[str, str]:
    return {"Host": f"{NAME}.localhost"}


def _line(label: str, run: Run) -> str:
    result = run.wrk
    cpu = " ".join(f"{k}={v:.0f}" for k, v in run.cpu.items())
    return (
        f"{label}: req/s={result.requests_per_s:.0f} p50_ms={result.p50_s * 1000:.2f} "
        f"p99_ms={result.p99_s * 1000:.2f} requests={result.requests} "
        f"errors={result.errors} ({result.error_detail})\n        cpu: {cpu}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=10, help="each wrk run, s (10)")
    parser.add_argument("--connections", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=2, help="alternating edge/direct pairs (2)")
    args = parser.parse_args()
    if not 1 <= args.seconds <= 120 or not 1 <= args.connections <= 1000 or not 1 <= args.rounds <= 10:
        raise SystemExit("--seconds 1..120, --connections 1..1000, --rounds 1..10")

    edges: list[EdgeRun] = []
    directs: list[Run] = []
    with legato_server() as server:
        server.deploy(service_spec(NAME))
        body = server.wait_healthy(NAME, 1, timeout=60)
        port = int(body["containers"][0]["port"])
        edge_url, direct_url = f"{server.edge_url}/", f"http://127.0.0.1:{port}/"
        log(f"warming up (1 s each): edge {edge_url}, direct {direct_url}")
        wrk(edge_url, threads=1, connections=args.connections, duration_s=1, headers=_host())
        wrk(direct_url, threads=1, connections=args.connections, duration_s=1)
        for index in range(args.rounds):
            drain_time_wait()
            edges.append(edge_run(server, edge_url, args.connections, args.seconds))
            drain_time_wait()
            directs.append(measured(server, direct_url, args.connections, args.seconds, {}))
            log(
                f"round {index + 1}/{args.rounds}: edge {edges[-1].run.wrk.requests_per_s:.0f} req/s, "
                f"direct {directs[-1].wrk.requests_per_s:.0f} req/s"
            )

    edge_rps = median([e.run.wrk.requests_per_s for e in edges])
    edge_p99 = median([e.run.wrk.p99_s for e in edges])
    direct_rps = median([d.wrk.requests_per_s for d in directs])
    direct_p99 = median([d.wrk.p99_s for d in directs])
    value = ratio(edge_rps, direct_rps)
    print(f"edge_throughput breakdown (wrk -t1 -c{args.connections} -d{args.seconds}s --latency, per round)")
    for index, (edge, direct) in enumerate(zip(edges, directs, strict=True), start=1):
        counters = " ".join(f"{k}={v}" for k, v in edge.counters.items())
        print(f"  {index} {_line('edge  ', edge.run)}")
        print(
            f"      haproxy backend: {counters} avg_connect_ms={edge.ctime_ms} "
            f"avg_response_ms={edge.rtime_ms} avg_total_ms={edge.ttime_ms}"
        )
        pair = ratio(edge.run.wrk.requests_per_s, direct.wrk.requests_per_s)
        print(f"  {index} {_line('direct', direct)}  pair_ratio={pair:.2f}")
    print(
        f"edge_throughput: edge_rps={edge_rps:.0f} edge_p99_ms={edge_p99 * 1000:.1f} "
        f"direct_rps={direct_rps:.0f} direct_p99_ms={direct_p99 * 1000:.1f} "
        f"ratio={value:.2f} (target >= {TARGET}) {verdict(value, TARGET, at_most=False)} "
        f"rounds={args.rounds}"
    )


if __name__ == "__main__":
    try:
        main()
    except BenchError as exc:
        raise SystemExit(f"edge_throughput: FAILED: {exc}") from exc
