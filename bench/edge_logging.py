"""Edge throughput with per-request logging and metrics on, against off, in the same run:
two servers, one with LEGATO_ACCESS_LOG=false, each with the same one-replica service, and
wrk -t1 -c50 through each edge in alternating rounds. The figure is on/off of the median
req/s (target >= 0.9).

With logging on, HAProxy sends a datagram per request to the control plane, whose reader
thread parses it into the request figures; its CPU and the lines it counted are reported.
Between runs the TIME-WAIT sockets towards the replicas are let expire (see
edge_throughput.py: whichever run came second would otherwise be slower).
"""

from __future__ import annotations

import argparse
import contextlib

import httpx
from common import (
    BenchError,
    CpuSnapshot,
    Legato,
    WrkResult,
    legato_server,
    log,
    median,
    ratio,
    service_spec,
    verdict,
    wrk,
)
from edge_throughput import drain_time_wait

TARGET = 0.9
NAME = "edge-log"


def lines_read(server: Legato) -> int:
    text = httpx.get(f"{server.api_url}/metrics", timeout=10).text
    for line in text.splitlines():
        if line.startswith("legato_access_log_lines_total "):
            return int(float(line.split()[1]))
    return 0


def run(server: Legato, seconds: int, connections: int) -> tuple[WrkResult, float, int]:
    """One wrk run: its result, the control plane's CPU (% of one core), log lines read."""
    before_lines = lines_read(server)
    before = CpuSnapshot.take({"legato": [server.pid]})
    result = wrk(f"{server.edge_url}/", threads=1, connections=connections, duration_s=seconds,
                 headers={"Host": f"{NAME}.localhost"})
    cpu = CpuSnapshot.take({"legato": [server.pid]}).since(before)["legato_pct"]
    return result, cpu, lines_read(server) - before_lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--connections", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    if not 1 <= args.seconds <= 120 or not 1 <= args.rounds <= 10:
        raise SystemExit("--seconds 1..120, --rounds 1..10")
    results: dict[str, list[tuple[WrkResult, float, int]]] = {"on": [], "off": []}
    with contextlib.ExitStack() as stack:
        servers = {
            "on": stack.enter_context(legato_server()),
            "off": stack.enter_context(legato_server(settings={"LEGATO_ACCESS_LOG": "false"})),
        }
        for server in servers.values():
            server.deploy(service_spec(NAME))
        for mode, server in servers.items():
            server.wait_healthy(NAME, 1, timeout=60)
            wrk(f"{server.edge_url}/", threads=1, connections=args.connections, duration_s=1,
                headers={"Host": f"{NAME}.localhost"})
            log(f"warmed up the {mode} server")
        for index in range(args.rounds):
            order = ("on", "off") if index % 2 == 0 else ("off", "on")
            for mode in order:
                drain_time_wait()
                results[mode].append(run(servers[mode], args.seconds, args.connections))
            log(f"round {index + 1}/{args.rounds}: on {results['on'][-1][0].requests_per_s:.0f}"
                f" req/s, off {results['off'][-1][0].requests_per_s:.0f} req/s")
    on = median([r[0].requests_per_s for r in results["on"]])
    off = median([r[0].requests_per_s for r in results["off"]])
    value = ratio(on, off)
    print(f"edge_logging breakdown (wrk -t1 -c{args.connections} -d{args.seconds}s, per round)")
    for mode in ("on", "off"):
        for index, (result, cpu, lines) in enumerate(results[mode], start=1):
            print(f"  {mode:3s} {index}: req/s={result.requests_per_s:.0f} "
                  f"p50_ms={result.p50_s * 1000:.2f} p99_ms={result.p99_s * 1000:.2f} "
                  f"requests={result.requests} errors={result.errors} "
                  f"control_plane_cpu_pct={cpu:.1f} log_lines_read={lines}")
    on_lines = sum(r[2] for r in results["on"])
    on_requests = sum(r[0].requests for r in results["on"])
    print(f"  log lines read / requests answered with logging on: {on_lines}/{on_requests}")
    print(f"edge_logging: on_rps={on:.0f} off_rps={off:.0f} ratio={value:.2f} "
          f"(target >= {TARGET}) {verdict(value, TARGET, at_most=False)} rounds={args.rounds}")
    if on_lines == 0:
        raise BenchError("the server with logging on read no log line")


if __name__ == "__main__":
    try:
        main()
    except BenchError as exc:
        raise SystemExit(f"edge_logging: FAILED: {exc}") from exc
