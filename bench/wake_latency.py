"""Wake latency: a request to a sleeping service, through the edge, to its first byte, against
a bare `docker start` of a stopped container of the same image to its first 200, in the same
run (rounds alternate). Targets: median ratio <= 1.5 and median wake <= 1 s.

Legato's side: the service is put to sleep (POST /sleep) and the benchmark waits until Docker
shows its container stopped; then one GET goes to the edge on a new connection and the time
to the first byte of the answer is taken. The baseline: a container made once with
`docker create -p 127.0.0.1::8080`, stopped between rounds; timed are `docker start`, `docker
port` (the ephemeral port may change) and polling it every 5 ms until it answers 200.
"""

from __future__ import annotations

import argparse
import socket
import time

from common import (
    HTTPD_ARGV,
    IMAGE,
    LOCALHOST,
    BenchError,
    Legato,
    docker,
    docker_ids,
    docker_published_port,
    first_200,
    legato_server,
    log,
    median,
    new_client,
    ratio,
    service_spec,
    verdict,
    wait_for,
)

RATIO_TARGET = 1.5
P50_TARGET_S = 1.0
NAME = "wake"


def first_byte(port: int, host: str, path: str = "/version") -> tuple[float, bytes]:
    """Seconds from connecting to the first byte of the answer, and the answer's start."""
    started = time.monotonic()
    with socket.create_connection((LOCALHOST, port), timeout=60) as sock:
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
        first = sock.recv(1)
        elapsed = time.monotonic() - started
        rest = sock.recv(65536)
    if not first:
        raise BenchError("the edge closed without answering")
    return elapsed, first + rest


def container_states(server: Legato) -> set[str]:
    ids = docker_ids(server.label, f"legato.service={NAME}")
    return set(docker("inspect", "-f", "{{.State.Status}}", *ids).split()) if ids else set()


def wake_once(server: Legato) -> float:
    response = server.api.post(f"/services/{NAME}/sleep")
    if response.status_code != 202:
        raise BenchError(f"sleep answered {response.status_code}: {response.text[:300]}")
    wait_for(lambda: server.service(NAME)["status"] == "sleeping"
             and container_states(server) == {"exited"},
             timeout=60, interval=0.05, what="the service to sleep")
    time.sleep(0.2)
    elapsed, answer = first_byte(server.edge_port, f"{NAME}.localhost")
    if not answer.startswith(b"HTTP/1.1 200"):
        raise BenchError(f"the woken service answered {answer[:60]!r}")
    server.wait_healthy(NAME, 1, timeout=30)
    return elapsed


def bare_once(container: str) -> float:
    docker("stop", "-t", "10", container)
    time.sleep(0.2)
    with new_client() as client:
        started = time.monotonic()
        docker("start", container)
        port = docker_published_port(container)
        answered, _ = first_200(client, f"http://{LOCALHOST}:{port}/version", interval=0.005)
    return answered - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=10)
    args = parser.parse_args()
    if not 1 <= args.rounds <= 50:
        raise SystemExit("--rounds 1..50")
    wakes: list[float] = []
    bares: list[float] = []
    with legato_server() as server:
        server.deploy(service_spec(NAME))
        server.wait_healthy(NAME, 1, timeout=60)
        bare = docker("create", "-p", f"{LOCALHOST}::8080", "--label", server.bare_label,
                      IMAGE, *HTTPD_ARGV).splitlines()[-1]
        docker("start", bare)
        for index in range(args.rounds):
            wakes.append(wake_once(server))
            bares.append(bare_once(bare))
            log(f"round {index + 1}/{args.rounds}: wake {wakes[-1]:.3f}s, "
                f"bare start {bares[-1]:.3f}s")
        events = [e for e in server.api.get(f"/services/{NAME}/events",
                                            params={"type": "scaling", "limit": 100}).json()["items"]
                  if e["details"].get("action") == "wake"]
        crashes = server.api.get(f"/services/{NAME}/events", params={"type": "crash"}).json()
    wake, base = median(wakes), median(bares)
    value = ratio(wake, base)
    print("wake_latency breakdown (seconds, per round)")
    print("  round  wake_first_byte  bare_start_first_200")
    for index, (w, b) in enumerate(zip(wakes, bares, strict=True), start=1):
        print(f"  {index:5d}  {w:15.3f}  {b:20.3f}")
    print(f"  wake events: {len(events)} (one per round expected); crash events: "
          f"{len(crashes['items'])}")
    print(f"wake_latency: wake_p50_s={wake:.3f} bare_start_p50_s={base:.3f} ratio={value:.2f} "
          f"(target <= {RATIO_TARGET}) {verdict(value, RATIO_TARGET, at_most=True)} "
          f"p50 (target <= {P50_TARGET_S:g} s) {verdict(wake, P50_TARGET_S, at_most=True)} "
          f"max_s={max(wakes):.3f} rounds={args.rounds}")


if __name__ == "__main__":
    try:
        main()
    except BenchError as exc:
        raise SystemExit(f"wake_latency: FAILED: {exc}") from exc
