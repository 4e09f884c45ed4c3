"""Rollouts: how long a rolling deploy of 3 replicas takes, how soon a new healthy replica
gets traffic, and how soon a broken deploy is detected.

1. Rolling deploy of 3 replicas (v1 <-> v2 of the test image, so every replica is replaced),
   from the API call to the deployment being `successful`, against 3 sequential bare
   `docker run`s each waited to its first 200, alternating in one run. Figure: ratio of the
   medians with max_surge 1 (target <= 1.5); max_surge 3 reported.
2. Healthy -> traffic: during those rollouts a steady load goes through the edge; for every
   new replica, from the moment the control plane logged it healthy (deployment log) to the
   moment HAProxy's counters show its first request (admin socket, polled every 10 ms).
   p99 target <= 200 ms.
3. Failure detection: a deploy whose replicas exit at once, and one whose health check never
   passes (progress_deadline_s 10), from the API call to `rolled_back`; reported against
   progress_deadline_s.
"""

from __future__ import annotations

import argparse
import threading
import time
from datetime import datetime
from typing import Any

import httpx
from common import (
    BenchError,
    Legato,
    docker,
    docker_published_port,
    docker_remove,
    docker_run_bare,
    first_200,
    legato_server,
    log,
    median,
    new_client,
    percentile,
    ratio,
    service_spec,
    verdict,
)

RATIO_TARGET = 1.5
TRAFFIC_P99_TARGET_MS = 200.0
NAME = "rollout"
IMAGES = ("legato-test/busybox:latest", "legato-test/busybox:v2")
FINISHED = ("successful", "failed", "cancelled", "rolled_back")


class EdgeTraffic:
    """Steady GETs through the edge (several threads, a fixed rate) and, from HAProxy's own
    counters (`show stat` on the admin socket, every 10 ms), when each server of the
    service's backend took its first request."""

    def __init__(self, server: Legato, rate: float, threads: int = 4) -> None:
        self.server = server
        self.url = f"{server.edge_url}/"
        self.rate = rate
        self.first_request: dict[str, float] = {}  # HAProxy server name -> time.time()
        self.errors = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._send, args=(i, threads), daemon=True)
                         for i in range(threads)]
        self._threads.append(threading.Thread(target=self._watch, daemon=True))

    def __enter__(self) -> EdgeTraffic:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(10)

    def _send(self, offset: int, threads: int) -> None:
        with httpx.Client(timeout=5, headers={"Host": f"{NAME}.localhost"}) as client:
            start = time.monotonic()
            index = offset
            while not self._stop.is_set():
                time.sleep(max(0.0, start + index / self.rate - time.monotonic()))
                index += threads
                try:
                    ok = client.get(self.url).status_code == 200
                except httpx.HTTPError:
                    ok = False
                if not ok:
                    with self._lock:
                        self.errors += 1

    def _watch(self) -> None:
        while not self._stop.is_set():
            at = time.time()
            for name, row in self.server.haproxy_stats(f"svc_{NAME}").items():
                if name not in ("FRONTEND", "BACKEND") and int(row.get("stot") or 0) > 0:
                    self.first_request.setdefault(name, at)
            time.sleep(0.01)


def wait_deployment(server: Legato, deployment_id: str, poll_s: float = 0.02,
                    timeout: float = 300) -> tuple[dict[str, Any], float]:
    """The finished deployment and time.monotonic() when it was first seen finished."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found: dict[str, Any] = server.api.get(f"/deployments/{deployment_id}").json()
        if found["status"] in FINISHED:
            return found, time.monotonic()
        time.sleep(poll_s)
    raise BenchError(f"deployment {deployment_id} not finished within {timeout:g}s")


def rolling(server: Legato, image: str, surge: int) -> tuple[float, str]:
    t0 = time.monotonic()
    response = server.api.post(f"/services/{NAME}/deployments",
                               json={"image": image, "deploy": {"max_surge": surge}})
    if response.status_code != 202:
        raise BenchError(f"deploy answered {response.status_code}: {response.text[:300]}")
    deployment_id = response.json()["deployment_id"]
    found, done = wait_deployment(server, deployment_id)
    if found["status"] != "successful":
        raise BenchError(f"rollout ended {found['status']}: {found.get('error')}")
    return done - t0, deployment_id


def bare_three(server: Legato, probe: httpx.Client) -> float:
    containers: list[str] = []
    t0 = time.monotonic()
    try:
        for _ in range(3):
            containers.append(docker_run_bare(server.bare_label))
            first_200(probe, f"http://127.0.0.1:{docker_published_port(containers[-1])}/")
        return time.monotonic() - t0
    finally:
        docker_remove(containers)


def healthy_to_traffic(server: Legato, deployment_id: str, edge: EdgeTraffic) -> list[float]:
    """Seconds from each new replica's "is healthy" log line to its first request at the edge."""
    logs = server.api.get(f"/deployments/{deployment_id}/logs").json()
    healthy_at: dict[str, float] = {}
    for step in logs["steps"]:
        for line in step["logs"]:
            name, _, rest = line["message"].partition(" is ")
            if rest == "healthy":
                healthy_at.setdefault(name, datetime.fromisoformat(line["at"]).timestamp())
    gaps = []
    deadline = time.monotonic() + 5
    for name, at in healthy_at.items():
        container = docker("inspect", "-f", "{{.Id}} {{index .Config.Labels \"legato.replica\"}}",
                           name).split()
        upstream = f"r{container[1]}-{container[0][:10]}"  # the reconciler's server name
        while upstream not in edge.first_request and time.monotonic() < deadline:
            time.sleep(0.05)
        if upstream not in edge.first_request:
            raise BenchError(f"{name} ({upstream}) never took a request at the edge")
        gaps.append(edge.first_request[upstream] - at)
    return gaps


def detection(server: Legato, changes: dict[str, Any]) -> tuple[float, dict[str, Any]]:
    t0 = time.monotonic()
    response = server.api.post(f"/services/{NAME}/deployments", json=changes)
    if response.status_code != 202:
        raise BenchError(f"deploy answered {response.status_code}: {response.text[:300]}")
    found, done = wait_deployment(server, response.json()["deployment_id"], poll_s=0.05)
    if found["status"] != "rolled_back":
        raise BenchError(f"broken deploy ended {found['status']}, not rolled_back")
    restore = server.service(NAME)["deployment"]["id"]
    wait_deployment(server, restore)
    return done - t0, found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5, help="rollouts per max_surge (5)")
    parser.add_argument("--rate", type=float, default=200, help="req/s via the edge")
    args = parser.parse_args()
    if not 1 <= args.rounds <= 50:
        raise SystemExit("--rounds must be 1..50")

    legato_s: dict[int, list[float]] = {1: [], 3: []}
    bare_s: list[float] = []
    gaps: list[float] = []
    spec = {k: v for k, v in service_spec(NAME, replicas=3).items() if k != "health"}
    spec["health_check"] = {"path": "/healthz", "interval_s": 2, "timeout_s": 1,
                            "failure_threshold": 2}
    with legato_server() as server, new_client() as probe:
        server.deploy(spec)
        server.wait_healthy(NAME, 3, timeout=60)
        flip = 1
        with EdgeTraffic(server, args.rate) as load:
            for index in range(args.rounds):
                for surge in (1, 3):
                    took, deployment_id = rolling(server, IMAGES[flip], surge)
                    flip = 1 - flip
                    legato_s[surge].append(took)
                    gaps += healthy_to_traffic(server, deployment_id, load)
                    time.sleep(0.5)
                bare_s.append(bare_three(server, probe))
                log(f"round {index + 1}/{args.rounds}: surge1 {legato_s[1][-1]:.2f}s, "
                    f"surge3 {legato_s[3][-1]:.2f}s, bare x3 {bare_s[-1]:.2f}s")
            edge_errors = load.errors
        crash_s, crashed = detection(server, {"image": IMAGES[flip],
                                              "command": ["sh", "-c", "exit 3"]})
        never_s, never = detection(server, {"image": IMAGES[flip], "health_check": {
            "path": "/missing", "interval_s": 1, "failure_threshold": 100},
            "deploy": {"progress_deadline_s": 10}})

    surge1, surge3, bare = median(legato_s[1]), median(legato_s[3]), median(bare_s)
    value = ratio(surge1, bare)
    gap_ms = [g * 1000 for g in gaps]
    p99 = percentile(gap_ms, 99)
    print("rollout breakdown (s per round)")
    print(f"  max_surge=1: {' '.join(f'{x:.2f}' for x in legato_s[1])}")
    print(f"  max_surge=3: {' '.join(f'{x:.2f}' for x in legato_s[3])}")
    print(f"  bare docker run x3: {' '.join(f'{x:.2f}' for x in bare_s)}")
    print("  healthy->traffic ms, all:", " ".join(f"{g:.0f}" for g in sorted(gap_ms)))
    print(f"  healthy->traffic ms: p50={percentile(gap_ms, 50):.0f} max={max(gap_ms):.0f} "
          f"samples={len(gap_ms)}; edge errors during rollouts: {edge_errors}")
    print(f"rollout: surge1_median_s={surge1:.2f} bare3_median_s={bare:.2f} ratio={value:.2f} "
          f"(target <= {RATIO_TARGET}) {verdict(value, RATIO_TARGET, at_most=True)} "
          f"surge3_median_s={surge3:.2f} surge3_ratio={ratio(surge3, bare):.2f} "
          f"rounds={args.rounds}")
    print(f"rollout: healthy_to_traffic_p99_ms={p99:.0f} (target <= {TRAFFIC_P99_TARGET_MS:g}) "
          f"{verdict(p99, TRAFFIC_P99_TARGET_MS, at_most=True)} samples={len(gap_ms)}")
    print(f"rollout: failed_detection crash_s={crash_s:.1f} ({crashed['error']}; "
          f"progress_deadline_s=120) never_healthy_s={never_s:.1f} ({never['error']})")


if __name__ == "__main__":
    try:
        main()
    except BenchError as exc:
        raise SystemExit(f"rollout: FAILED: {exc}") from exc
