"""What the guards cost on `GET /api/v1/services/{name}`: token check, rate limit, activity
trail and idempotency (target: p50 added <= 0.5 ms).

One server process (bench/guard_server.py) serves the same platform twice: guarded on its API
port, unguarded on a second one. A closed-loop client on one kept-alive connection per port
alternates requests between the two, so that both sides see the same machine at the same
moments; the figure is the difference of the medians, with p99 of both reported beside it.
"""

from __future__ import annotations

import argparse
import socket
import sys
import time
from pathlib import Path

from common import (
    BenchError,
    Legato,
    free_port,
    legato_server,
    log,
    percentile,
    service_spec,
    verdict,
)

TARGET_MS = 0.5
ROOT = Path(__file__).resolve().parent.parent


class KeepAlive:
    """One HTTP/1.1 connection; `get` sends a request and reads its whole answer."""

    def __init__(self, port: int, token: str | None) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port))
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.token = token
        self.buffer = b""

    def get(self, path: str) -> tuple[int, float]:
        auth = f"Authorization: Bearer {self.token}\r\n" if self.token else ""
        request = f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n{auth}\r\n".encode()
        started = time.perf_counter()
        self.sock.sendall(request)
        while b"\r\n\r\n" not in self.buffer:
            self.buffer += self._recv()
        head, _, rest = self.buffer.partition(b"\r\n\r\n")
        length = next(int(line.split(b":", 1)[1]) for line in head.split(b"\r\n")
                      if line.lower().startswith(b"content-length:"))
        while len(rest) < length:
            rest += self._recv()
        elapsed = time.perf_counter() - started
        self.buffer = rest[length:]
        return int(head.split(b" ", 2)[1]), elapsed

    def _recv(self) -> bytes:
        data = self.sock.recv(65536)
        if not data:
            raise BenchError("the server closed the connection")
        return data

    def close(self) -> None:
        self.sock.close()


def measure(server: Legato, unguarded_port: int, path: str, requests: int) -> dict[str, float]:
    guarded = KeepAlive(server.api_port, server.token)
    bare = KeepAlive(unguarded_port, None)
    times: dict[str, list[float]] = {"on": [], "off": []}
    try:
        for _ in range(200):  # warm both paths (imports, caches, the token lookup)
            guarded.get(path)
            bare.get(path)
        for index in range(requests):
            pairs = (("on", guarded), ("off", bare)) if index % 2 else (("off", bare),
                                                                      ("on", guarded))
            for side, connection in pairs:
                status, elapsed = connection.get(path)
                if status != 200:
                    raise BenchError(f"{side}: {path} answered {status}")
                times[side].append(elapsed * 1000)
    finally:
        guarded.close()
        bare.close()
    return {f"{side}_{name}": percentile(values, pct) for side, values in times.items()
            for name, pct in (("p50", 50), ("p99", 99))}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=5000, help="per side and round")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    unguarded_port = free_port()
    argv = [sys.executable, str(ROOT / "bench" / "guard_server.py")]
    with legato_server(argv=argv, settings={"BENCH_UNGUARDED_PORT": str(unguarded_port)}) as server:
        server.deploy(service_spec("api"))
        rounds = []
        for number in range(1, args.rounds + 1):
            figures = measure(server, unguarded_port, "/api/v1/services/api", args.requests)
            rounds.append(figures)
            log(f"round {number}/{args.rounds}: on p50 {figures['on_p50']:.3f} ms, "
                f"off p50 {figures['off_p50']:.3f} ms")
    print("guard_overhead breakdown (ms, per round; one kept-alive connection per side)")
    for number, figures in enumerate(rounds, 1):
        print(f"  round {number}: " + " ".join(f"{k}={v:.3f}" for k, v in figures.items()))
    added = sorted(r["on_p50"] - r["off_p50"] for r in rounds)[len(rounds) // 2]
    on = sorted(r["on_p50"] for r in rounds)[len(rounds) // 2]
    off = sorted(r["off_p50"] for r in rounds)[len(rounds) // 2]
    print(f"guard_overhead: p50_added_ms={added:.3f} on_p50_ms={on:.3f} off_p50_ms={off:.3f} "
          f"(target <= {TARGET_MS}) {verdict(added, TARGET_MS, at_most=True)} "
          f"requests={args.requests} rounds={args.rounds}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
