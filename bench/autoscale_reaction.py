"""Autoscale reaction: from the start of load above target to the first answer from the new
replica, against `window_seconds` + a bare `docker run` to its first 200, in the same run.

Each round deploys a fresh one-replica service autoscaled on requests per replica (target 10,
window 10 s, the server evaluating every second: LEGATO_AUTOSCALE_INTERVAL_S=1; the default
is 10 s), then sends 40 req/s of /cgi-bin/whoami through the edge, each on a new connection,
and notes when an answer first names another container. The decision's own time (its event)
is reported too.
"""

from __future__ import annotations

import argparse
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime

from common import (
    LOCALHOST,
    BenchError,
    Legato,
    docker_published_port,
    docker_remove,
    docker_run_bare,
    first_200,
    legato_server,
    log,
    median,
    new_client,
    service_spec,
    wait_for,
)

WINDOW_S = 10
RATE = 40


class Load:
    """Fixed-rate GETs of /cgi-bin/whoami; (monotonic time, hostname) of every answer."""

    def __init__(self, server: Legato, host: str) -> None:
        self.url = f"{server.edge_url}/cgi-bin/whoami"
        self.host = host
        self.answers: list[tuple[float, str]] = []
        self.errors = 0
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Load:
        self.started = time.monotonic()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(30)

    def _one(self) -> None:
        try:
            with new_client(timeout=10) as client:
                text = client.get(self.url, headers={"Host": self.host}).text.strip()
        except Exception:
            with self._lock:
                self.errors += 1
            return
        with self._lock:
            self.answers.append((time.monotonic(), text))

    def _run(self) -> None:
        with ThreadPoolExecutor(16) as pool:
            index = 0
            while not self._stop.is_set():
                delay = self.started + index / RATE - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
                pool.submit(self._one)
                index += 1

    def first_other(self, hostname: str) -> float | None:
        with self._lock:
            return next((t for t, h in self.answers if h != hostname), None)


def round_(server: Legato, index: int) -> tuple[float, float]:
    """(load start -> decision, load start -> first answer from the new replica), seconds."""
    name = f"react-{index}"
    host = f"{name}.localhost"
    spec = {**service_spec(name), "scaling": {
        "mode": "auto", "min_replicas": 1, "max_replicas": 3, "target_rps_per_replica": 10,
        "window_seconds": WINDOW_S, "cooldown_seconds": 300}}
    server.deploy(spec)
    body = server.wait_healthy(name, 1, timeout=60)
    first = body["containers"][0]["id"]
    with Load(server, host) as load:
        started_wall = time.time()
        reached = wait_for(lambda: load.first_other(first), timeout=120, interval=0.01,
                           what="an answer from a second replica")
        reaction = reached - load.started
    events = server.api.get(f"/services/{name}/events", params={"type": "scaling"}).json()["items"]
    decided = [e for e in events if e["details"].get("actor") == "autoscaler"]
    if not decided:
        raise BenchError("no autoscaler decision recorded")
    decision = datetime.fromisoformat(decided[-1]["timestamp"]).timestamp() - started_wall
    if load.errors:
        raise BenchError(f"{load.errors} requests failed during the round")
    server.delete(name)
    return decision, reaction


def bare_start(server: Legato) -> float:
    with new_client() as client:
        started = time.monotonic()
        container = docker_run_bare(server.bare_label)
        port = docker_published_port(container)
        answered, _ = first_200(client, f"http://{LOCALHOST}:{port}/version")
    docker_remove([container])
    return answered - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    if not 1 <= args.rounds <= 10:
        raise SystemExit("--rounds 1..10")
    rounds: list[tuple[float, float]] = []
    bares: list[float] = []
    with legato_server(settings={"LEGATO_AUTOSCALE_INTERVAL_S": "1"}) as server:
        for index in range(args.rounds):
            rounds.append(round_(server, index))
            bares.append(bare_start(server))
            log(f"round {index + 1}/{args.rounds}: decision {rounds[-1][0]:.2f}s, new replica "
                f"answers {rounds[-1][1]:.2f}s, bare start {bares[-1]:.2f}s")
    reaction = median([r[1] for r in rounds])
    decision = median([r[0] for r in rounds])
    bare = median(bares)
    print(f"autoscale_reaction breakdown (seconds; {RATE} req/s against a target of 10 per "
          f"replica, window {WINDOW_S} s, evaluated every 1 s)")
    print("  round  decision  new_replica_answers  bare_start")
    for index, ((d, r), b) in enumerate(zip(rounds, bares, strict=True), start=1):
        print(f"  {index:5d}  {d:8.2f}  {r:19.2f}  {b:10.2f}")
    print(f"autoscale_reaction: reaction_s={reaction:.2f} decision_s={decision:.2f} "
          f"window_plus_bare_start_s={WINDOW_S + bare:.2f} (window {WINDOW_S} + bare start "
          f"{bare:.2f}) rounds={args.rounds}")


if __name__ == "__main__":
    try:
        main()
    except BenchError as exc:
        raise SystemExit(f"autoscale_reaction: FAILED: {exc}") from exc
