"""Metrics ingestion: request log lines per second that the control plane's reader parses and
records, on one core.

The reader is Legato's own (`legato.edge.accesslog.AccessLogReader` feeding
`RequestMetrics`), bound to a unix datagram socket as in the server. A separate process sends
it HAProxy's log lines (50 services, a mix of statuses and latencies), one datagram each, as
fast as the socket takes them: a blocking sender waits while the reader's queue is full, so
nothing is dropped and the rate is the reader's. The figure is lines per CPU second of this
process (the reader thread; the main thread only waits), with the wall-clock rate beside it.
"""

from __future__ import annotations

import argparse
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import ROOT, BenchError, log

sys.path.insert(0, str(ROOT / "src"))

from legato.edge.accesslog import AccessLogReader
from legato.monitor.requests import RequestMetrics

SENDER = r"""
import random, socket, sys, time
path, count = sys.argv[1], int(sys.argv[2])
rng = random.Random(7)
lines = []
for i in range(10000):
    service = f"svc_app-{rng.randrange(50)}"
    status = rng.choice((200,) * 90 + (404,) * 6 + (503,) * 3 + (-1,))
    latency = int(rng.expovariate(1 / 20)) if status != -1 else -1
    server = f"r{rng.randrange(4)}-0123456789"
    lines.append(f"{service} {server} {status} {latency} {rng.randrange(9000)}\n".encode())
sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
for i in range(count):
    sock.sendto(lines[i % 10000], path)
"""


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lines", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    if not 10_000 <= args.lines <= 20_000_000 or not 1 <= args.rounds <= 10:
        raise SystemExit("--lines 10000..20000000, --rounds 1..10")
    per_cpu: list[float] = []
    per_wall: list[float] = []
    with tempfile.TemporaryDirectory(prefix="legato-ingest-") as tmp:
        for index in range(args.rounds):
            metrics = RequestMetrics()
            reader = AccessLogReader(Path(tmp) / "access.sock", metrics)
            reader.start()
            try:
                cpu_before, started = cpu_seconds(), time.monotonic()
                sender = subprocess.run([sys.executable, "-c", SENDER, str(reader.path),
                                         str(args.lines)], check=False, timeout=600)
                if sender.returncode != 0:
                    raise BenchError(f"the sender failed ({sender.returncode})")
                deadline = time.monotonic() + 30
                while reader.lines < args.lines and time.monotonic() < deadline:
                    time.sleep(0.005)
                wall, cpu = time.monotonic() - started, cpu_seconds() - cpu_before
            finally:
                reader.close()
            if reader.lines < args.lines:
                raise BenchError(f"only {reader.lines} of {args.lines} lines arrived")
            recorded = sum(t.requests for t in metrics.totals().values())
            if recorded != reader.records or reader.invalid:
                raise BenchError(f"{recorded} recorded of {reader.records} parsed, "
                                 f"{reader.invalid} invalid")
            per_cpu.append(reader.lines / cpu)
            per_wall.append(reader.lines / wall)
            log(f"round {index + 1}/{args.rounds}: {reader.lines} lines in {wall:.2f}s wall, "
                f"{cpu:.2f}s CPU ({per_cpu[-1]:.0f} lines/CPU-s)")
    value = sorted(per_cpu)[len(per_cpu) // 2]
    print("access_log_ingest breakdown (per round: lines per CPU second, per wall second)")
    for index, (c, w) in enumerate(zip(per_cpu, per_wall, strict=True), start=1):
        print(f"  {index}: {c:,.0f} lines/CPU-s, {w:,.0f} lines/s wall")
    print(f"access_log_ingest: lines_per_cpu_second={value:.0f} (median) "
          f"lines_per_wall_second={sorted(per_wall)[len(per_wall) // 2]:.0f} "
          f"lines={args.lines} rounds={args.rounds}")


if __name__ == "__main__":
    try:
        main()
    except BenchError as exc:
        raise SystemExit(f"access_log_ingest: FAILED: {exc}") from exc
