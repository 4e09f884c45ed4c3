"""Scale to zero on real Docker and HAProxy: an idle service sleeps (its containers stop and
stay), the edge holds the next request while Legato wakes it, and the client gets a slow
200, never an error; concurrent requests wake it once; sleeping survives a restart."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx

from tests.integration.harness import Legato, service_spec, wait_for


def asleep(legato: Legato, name: str) -> dict[str, Any]:
    """Wait until the service sleeps and Docker shows each of its containers stopped."""
    def stopped() -> dict[str, Any] | None:
        body = legato.service(name)
        states = {c.status for c in legato.containers(name)}
        return body if body["status"] == "sleeping" and states == {"exited"} else None
    found: dict[str, Any] = wait_for(stopped, timeout=30, what=f"{name} to sleep")
    return found


def container_ids(legato: Legato, name: str) -> set[str]:
    return {c.id[:12] for c in legato.containers(name)}


def wake_events(legato: Legato, name: str) -> list[dict[str, Any]]:
    return [e for e in legato.events(name, "scaling") if e["details"].get("action") == "wake"]


def fresh_get(legato: Legato, host: str, path: str = "/version") -> httpx.Response:
    with httpx.Client(timeout=60) as client:
        return client.get(f"{legato.edge_url}{path}", headers={"Host": host})


def test_an_idle_service_sleeps_and_a_request_wakes_the_same_containers(
    legato: Legato, name: str
) -> None:
    host = f"{name}.localhost"
    legato.deploy(service_spec(name, replicas=2, sleep={"idle_timeout_s": 3}))
    before = {c["id"] for c in legato.wait_healthy(name, 2)["containers"]}
    assert legato.get_edge(host, "/version").status_code == 200
    asleep(legato, name)
    assert container_ids(legato, name) == before  # stopped, not removed
    [slept] = [e for e in legato.events(name, "scaling") if e["details"].get("action") == "sleep"]
    assert "no request for" in slept["message"] and slept["details"]["actor"] == "autoscaler"

    started = time.monotonic()
    response = fresh_get(legato, host)
    waited = time.monotonic() - started
    assert (response.status_code, response.text.strip()) == (200, "1")  # held, then served
    assert waited > 0.05  # it really waited for a start (a served request takes ~1 ms)
    detail = legato.wait_healthy(name, 2)
    assert {c["id"] for c in detail["containers"]} == before  # the same containers, started again
    assert len(wake_events(legato, name)) == 1
    assert [e for e in legato.events(name, "crash")] == []


def test_concurrent_requests_to_a_sleeping_service_wake_it_once_and_all_succeed(
    legato: Legato, name: str
) -> None:
    host = f"{name}.localhost"
    legato.deploy(service_spec(name, replicas=1))
    legato.wait_healthy(name, 1)
    assert legato.api.post(f"/services/{name}/sleep").status_code == 202
    asleep(legato, name)
    with ThreadPoolExecutor(12) as pool:
        answers = list(pool.map(lambda _: fresh_get(legato, host), range(12)))
    assert [(r.status_code, r.text.strip()) for r in answers] == [(200, "1")] * 12
    [woken] = wake_events(legato, name)
    assert woken["details"]["actor"] == "edge"


def test_sleep_and_wake_by_hand(legato: Legato, name: str) -> None:
    legato.deploy(service_spec(name, replicas=1))
    ids = {c["id"] for c in legato.wait_healthy(name, 1)["containers"]}
    slept = legato.api.post(f"/services/{name}/sleep")
    assert slept.status_code == 202 and slept.json()["sleeping"] is True
    asleep(legato, name)
    assert legato.service(name)["replicas"]["desired"] == 0
    woke = legato.api.post(f"/services/{name}/wake")
    assert woke.status_code == 202 and woke.json()["changed"] is True
    assert {c["id"] for c in legato.wait_healthy(name, 1)["containers"]} == ids
    assert legato.api.post(f"/services/{name}/wake").json()["changed"] is False
    assert legato.api.post("/services/nope-x/sleep").status_code == 404


def test_a_sleeping_service_stays_asleep_across_a_restart_and_wakes_after_it(
    fresh_legato: Legato, name: str
) -> None:
    legato, host = fresh_legato, f"{name}.localhost"
    legato.deploy(service_spec(name, replicas=1))
    ids = {c["id"] for c in legato.wait_healthy(name, 1)["containers"]}
    legato.api.post(f"/services/{name}/sleep")
    asleep(legato, name)
    legato.kill()
    legato.start()
    time.sleep(2.5)  # a resync or two: nothing may start or remove its containers
    assert legato.service(name)["status"] == "sleeping"
    assert container_ids(legato, name) == ids
    assert {c.status for c in legato.containers(name)} == {"exited"}
    response = fresh_get(legato, host)
    assert (response.status_code, response.text.strip()) == (200, "1")
    assert {c["id"] for c in legato.wait_healthy(name, 1)["containers"]} == ids
    assert [e for e in legato.events(name, "crash")] == []


def test_a_service_with_no_healthy_replica_that_is_not_asleep_answers_503(
    legato: Legato, name: str
) -> None:
    legato.deploy(service_spec(name, replicas=1, health_check={
        "path": "/missing", "interval_s": 0.5, "failure_threshold": 100}))
    wait_for(lambda: legato.service(name)["replicas"]["current"] == 1, what="a running replica")
    response = legato.get_edge(f"{name}.localhost", "/version")
    assert response.status_code == 503
    assert response.json()["code"] == "NO_HEALTHY_REPLICA"
