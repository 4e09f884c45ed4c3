"""Scale-out: one service scaled 0 -> 20 until the API reports desired == healthy == 20, against
20 sequential bare `docker run`s of the same image, each waited to its first HTTP 200 on its
published port. The figure is legato / docker (target <= 0.6); with several rounds, of the
medians.

Where the time goes comes from Docker's create/start events (recorded passively), the counts
seen while polling the API, and, after the API reports all healthy, when HAProxy's backend for
the service (read from its admin socket) has every replica in the route.
"""

from __future__ import annotations

import argparse
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import httpx
from common import (
    BenchError,
    DockerEvents,
    Legato,
    docker,
    docker_ids,
    docker_published_port,
    docker_remove,
    docker_run_bare,
    first_200,
    legato_server,
    log,
    median,
    new_client,
    ratio,
    service_spec,
    verdict,
)

TARGET = 0.6
NAME = "scale-out"


@dataclass(frozen=True)
class LegatoScale:
    total_s: float
    api_s: float
    first_create_s: float | None
    last_create_s: float | None
    first_start_s: float | None
    last_start_s: float | None
    first_healthy_s: float | None  # first poll that saw healthy >= 1
    all_running_s: float | None  # first poll that saw current == 20
    polls: int
    edge_routed_s: float | None  # HAProxy's backend had all replicas ready (None: not in 30 s)


@dataclass(frozen=True)
class DockerScale:
    total_s: float
    per_container_s: list[float]


def legato_scale(server: Legato, events: DockerEvents, replicas: int, poll_s: float) -> LegatoScale:
    t0_wall, t0 = time.time(), time.monotonic()
    server.scale(NAME, replicas)
    api = time.monotonic() - t0
    first_healthy: float | None = None
    all_running: float | None = None
    polls = 0
    deadline = t0 + 180
    while True:
        polls += 1
        tick = time.monotonic()
        counts = server.service(NAME)["replicas"]
        seen = time.monotonic() - t0
        if first_healthy is None and counts["healthy"] >= 1:
            first_healthy = seen
        if all_running is None and counts["current"] >= replicas:
            all_running = seen
        if counts["desired"] == counts["healthy"] == replicas:
            total = seen
            break
        if tick > deadline:
            raise BenchError(f"{NAME} not healthy x{replicas} within 180s: {counts}")
        time.sleep(max(0.0, tick + poll_s - time.monotonic()))
    edge_routed = wait_edge_routed(server, replicas, t0, poll_s)
    time.sleep(0.5)  # let the last docker events arrive
    creates = sorted(events.all("create", service=NAME, after=t0_wall))
    starts = sorted(events.all("start", service=NAME, after=t0_wall))
    return LegatoScale(
        total_s=total,
        api_s=api,
        first_create_s=creates[0] - t0_wall if creates else None,
        last_create_s=creates[-1] - t0_wall if creates else None,
        first_start_s=starts[0] - t0_wall if starts else None,
        last_start_s=starts[-1] - t0_wall if starts else None,
        first_healthy_s=first_healthy,
        all_running_s=all_running,
        polls=polls,
        edge_routed_s=edge_routed,
    )


def edge_ready(server: Legato) -> int:
    """Servers of the service's HAProxy backend that take traffic (not in maintenance/drain)."""
    rows = server.haproxy_stats(f"svc_{NAME}")
    return sum(
        1
        for name, row in rows.items()
        if name not in ("FRONTEND", "BACKEND") and row.get("status") in ("UP", "no check")
    )


def wait_edge_routed(server: Legato, replicas: int, t0: float, poll_s: float) -> float | None:
    """Seconds after t0 when HAProxy routes to all `replicas`; None if not within 30 s."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if edge_ready(server) >= replicas:
            return time.monotonic() - t0
        time.sleep(poll_s)
    return None


def edge_spread(server: Legato, replicas: int) -> int:
    """How many distinct replicas answer /cgi-bin/whoami through the edge in 3x`replicas` GETs."""
    seen: set[str] = set()
    with new_client() as client:
        for _ in range(3 * replicas):
            response = client.get(f"{server.edge_url}/cgi-bin/whoami", headers={"Host": f"{NAME}.localhost"})
            if response.status_code == 200:
                seen.add(response.text.strip())
    return len(seen)


def docker_scale(server: Legato, replicas: int, probe: httpx.Client) -> DockerScale:
    each: list[float] = []
    containers: list[str] = []
    t0 = time.monotonic()
    try:
        for _ in range(replicas):
            started = time.monotonic()
            containers.append(docker_run_bare(server.bare_label))
            port = docker_published_port(containers[-1])
            try:
                first_200(probe, f"http://127.0.0.1:{port}/", timeout=20)
            except BenchError:
                log(
                    docker("inspect", "-f", "{{json .State}} {{json .NetworkSettings.Ports}}", containers[-1])
                )
                log(docker("logs", containers[-1]))
                raise
            each.append(time.monotonic() - started)
        return DockerScale(time.monotonic() - t0, each)
    finally:
        docker_remove(containers)


def docker_parallel(server: Legato, replicas: int) -> float:
    """Diagnostic: the same `docker run`s all at once, to the last first-200 (the host's floor
    for starting `replicas` containers in parallel)."""
    containers: list[str] = []

    def one() -> None:
        container = docker_run_bare(server.bare_label)
        containers.append(container)
        port = docker_published_port(container)
        with new_client() as client:
            first_200(client, f"http://127.0.0.1:{port}/", timeout=60)

    t0 = time.monotonic()
    try:
        with ThreadPoolExecutor(replicas) as pool:
            for future in [pool.submit(one) for _ in range(replicas)]:
                future.result()
        return time.monotonic() - t0
    finally:
        docker_remove(containers)


def _legato_ids(server: Legato) -> set[str]:
    return set(docker_ids(server.label, f"legato.service={NAME}"))


def scale_down(server: Legato) -> None:
    server.scale(NAME, 0)
    server.wait_healthy(NAME, 0, timeout=120)
    start = time.monotonic()
    while _legato_ids(server):
        if time.monotonic() - start > 60:
            raise BenchError(f"containers of {NAME} still there 60s after scaling to 0")
        time.sleep(0.1)


def _ms(value: float | None) -> str:
    return "n/a" if value is None else f"{value * 1000:.0f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--replicas", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds of each (3)")
    parser.add_argument("--poll", type=float, default=0.02, help="API poll interval, s (0.02)")
    args = parser.parse_args()
    if not 1 <= args.replicas <= 100 or not 1 <= args.rounds <= 10:
        raise SystemExit("--replicas must be 1..100 and --rounds 1..10")

    legato_runs: list[LegatoScale] = []
    docker_runs: list[DockerScale] = []
    spreads: list[int] = []
    parallel: list[float] = []
    with (
        legato_server() as server,
        DockerEvents(server.label, server.bare_label) as events,
        new_client() as probe,
    ):
        server.deploy(service_spec(NAME, replicas=0))
        server.wait_healthy(NAME, 0, timeout=60)
        for index in range(args.rounds):
            time.sleep(1.0)
            run = legato_scale(server, events, args.replicas, args.poll)
            legato_runs.append(run)
            spreads.append(edge_spread(server, args.replicas))
            scale_down(server)
            time.sleep(1.0)
            base = docker_scale(server, args.replicas, probe)
            docker_runs.append(base)
            time.sleep(1.0)
            parallel.append(docker_parallel(server, args.replicas))
            log(
                f"round {index + 1}/{args.rounds}: legato {run.total_s:.2f}s, "
                f"docker {base.total_s:.2f}s, docker parallel {parallel[-1]:.2f}s, "
                f"edge reached {spreads[-1]} replicas"
            )

    legato_s = median([r.total_s for r in legato_runs])
    docker_s = median([r.total_s for r in docker_runs])
    value = ratio(legato_s, docker_s)
    print(f"scale_out breakdown (ms after POST /scale; 0 -> {args.replicas} replicas)")
    for r in legato_runs:
        print(
            f"  legato: api_returned={_ms(r.api_s)} first_create={_ms(r.first_create_s)} "
            f"last_create={_ms(r.last_create_s)} first_start={_ms(r.first_start_s)} "
            f"last_start={_ms(r.last_start_s)} first_healthy<={_ms(r.first_healthy_s)} "
            f"all_running<={_ms(r.all_running_s)} all_healthy={_ms(r.total_s)} "
            f"edge_routed_all={_ms(r.edge_routed_s)} "
            f"(api polls={r.polls})"
        )
    for d in docker_runs:
        print(
            f"  docker: total={_ms(d.total_s)} per_container_median={_ms(median(d.per_container_s))} "
            f"min={_ms(min(d.per_container_s))} max={_ms(max(d.per_container_s))}"
        )
    print(
        f"  docker, all {args.replicas} runs in parallel (diagnostic: the host's floor): "
        f"{', '.join(_ms(p) for p in parallel)}"
    )
    print(f"  edge: distinct replicas answering whoami (3 GETs per replica) once all routed: {spreads}")
    print(
        f"scale_out: legato_s={legato_s:.2f} docker_sequential_s={docker_s:.2f} ratio={value:.2f} "
        f"(target <= {TARGET}) {verdict(value, TARGET, at_most=True)} replicas={args.replicas} "
        f"rounds={args.rounds}"
    )


if __name__ == "__main__":
    try:
        main()
    except BenchError as exc:
        raise SystemExit(f"scale_out: FAILED: {exc}") from exc
