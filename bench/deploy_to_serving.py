"""Deploy-to-serving: from POST /deploy of a fresh 1-replica service to its first HTTP 200
through the edge, against a bare `docker run -d -p 127.0.0.1::8080` of the same image to its
first 200 on the published port. Rounds alternate Legato / bare Docker in one run; the figure
is the ratio of the medians (target <= 1.3).

Alongside, where the time goes: Docker's own create/start events (recorded passively) and the
service's deploy events (read after the round) split each Legato round into phases.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass
from datetime import datetime

import httpx
from common import (
    BenchError,
    DockerEvents,
    Legato,
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
    table,
    verdict,
)

TARGET = 1.3


@dataclass(frozen=True)
class LegatoRound:
    total_s: float
    api_s: float  # POST /deploy answered
    started_event_s: float | None  # "deployment started": the reconciler's pass has begun
    create_s: float | None  # Docker: container created
    start_s: float | None  # Docker: container started
    successful_s: float | None  # "deployment successful": healthy and routed
    tries: int


@dataclass(frozen=True)
class DockerRound:
    total_s: float
    create_s: float | None
    start_s: float | None
    run_returned_s: float  # `docker run -d` exited
    port_s: float  # `docker port` exited
    tries: int


def _event_offset(events: list[dict[str, object]], needle: str, t0_wall: float) -> float | None:
    for event in events:
        if needle in str(event["message"]):
            return datetime.fromisoformat(str(event["timestamp"])).timestamp() - t0_wall
    return None


def legato_round(server: Legato, events: DockerEvents, probe: httpx.Client, name: str) -> LegatoRound:
    t0_wall, t0 = time.time(), time.monotonic()
    server.deploy(service_spec(name))
    api = time.monotonic() - t0
    done, tries = first_200(probe, f"{server.edge_url}/", host=f"{name}.localhost")
    total = done - t0
    history: list[dict[str, object]] = []
    for _ in range(20):  # the "successful" event may be written just after the route is up
        history = server.api.get(f"/services/{name}/events", params={"type": "deploy"}).json()["items"]
        if _event_offset(history, "successful", t0_wall) is not None:
            break
        time.sleep(0.05)
    create = events.first("create", service=name, after=t0_wall - 1)
    start = events.first("start", service=name, after=t0_wall - 1)
    result = LegatoRound(
        total_s=total,
        api_s=api,
        started_event_s=_event_offset(history, "started", t0_wall),
        create_s=create - t0_wall if create else None,
        start_s=start - t0_wall if start else None,
        successful_s=_event_offset(history, "successful", t0_wall),
        tries=tries,
    )
    server.delete(name)
    return result


def docker_round(server: Legato, events: DockerEvents, probe: httpx.Client) -> DockerRound:
    t0_wall, t0 = time.time(), time.monotonic()
    container = docker_run_bare(server.bare_label)
    try:
        run_returned = time.monotonic() - t0
        port = docker_published_port(container)
        port_known = time.monotonic() - t0
        done, tries = first_200(probe, f"http://127.0.0.1:{port}/")
        total = done - t0
        create = events.first("create", container=container, after=t0_wall - 1)
        start = events.first("start", container=container, after=t0_wall - 1)
        return DockerRound(
            total_s=total,
            create_s=create - t0_wall if create else None,
            start_s=start - t0_wall if start else None,
            run_returned_s=run_returned,
            port_s=port_known,
            tries=tries,
        )
    finally:
        docker_remove([container])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=10, help="measured rounds of each (10)")
    parser.add_argument("--pause", type=float, default=0.5, help="seconds between rounds")
    args = parser.parse_args()
    if not 1 <= args.rounds <= 100:
        raise SystemExit("--rounds must be 1..100")

    legato_rounds: list[LegatoRound] = []
    docker_rounds: list[DockerRound] = []
    with (
        legato_server() as server,
        DockerEvents(server.label, server.bare_label) as events,
        new_client() as probe,
    ):
        # One unmeasured round of each first: the first HAProxy reload, page cache, etc.
        legato_round(server, events, probe, "dts-warm")
        docker_round(server, events, probe)
        for index in range(args.rounds):
            time.sleep(args.pause)
            lr = legato_round(server, events, probe, f"dts-{index:02d}")
            time.sleep(args.pause)
            dr = docker_round(server, events, probe)
            legato_rounds.append(lr)
            docker_rounds.append(dr)
            log(
                f"round {index + 1}/{args.rounds}: legato {lr.total_s:.3f}s ({lr.tries} polls), "
                f"docker {dr.total_s:.3f}s ({dr.tries} polls)"
            )

    legato_median = median([r.total_s for r in legato_rounds])
    docker_median = median([r.total_s for r in docker_rounds])
    value = ratio(legato_median, docker_median)

    print("deploy_to_serving breakdown, ms after the request (POST /deploy, `docker run`)")
    print(" legato:")
    legato_table = [
        [r.api_s, r.started_event_s, r.create_s, r.start_s, r.successful_s, r.total_s] for r in legato_rounds
    ]
    for line in table(
        ["api_returned", "pass_began", "created", "started", "deploy_successful", "edge_200"], legato_table
    ):
        print(line)
    print(" docker:")
    docker_table = [[r.create_s, r.start_s, r.run_returned_s, r.port_s, r.total_s] for r in docker_rounds]
    for line in table(["created", "started", "run_returned", "port_known", "direct_200"], docker_table):
        print(line)
    print(
        f"deploy_to_serving: legato_median_s={legato_median:.3f} "
        f"docker_median_s={docker_median:.3f} ratio={value:.2f} (target <= {TARGET}) "
        f"{verdict(value, TARGET, at_most=True)} rounds={args.rounds}"
    )


if __name__ == "__main__":
    try:
        main()
    except BenchError as exc:
        raise SystemExit(f"deploy_to_serving: FAILED: {exc}") from exc
