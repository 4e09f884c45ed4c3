"""Zero dropped requests: every kind of rollout under steady load through the edge.

Each test holds >= 200 req/s of keep-alive traffic at 127.0.0.1 on the service's domain
while the deployment runs, and counts every answer that is not a 200 and every connection
error as a failure: there must be none. `/version` tells which version answered.
"""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import docker

from tests.integration.harness import Legato, service_spec, wait_for
from tests.integration.load import Load, LoadResult

V2 = "legato-test/busybox:v2"
RATE = 250
FINISHED = ("successful", "failed", "cancelled", "rolled_back")


def deployment(legato: Legato, deployment_id: str) -> dict[str, Any]:
    body: dict[str, Any] = legato.api.get(f"/deployments/{deployment_id}").json()
    return body


def wait_status(legato: Legato, deployment_id: str, *statuses: str,
                timeout: float = 60) -> dict[str, Any]:
    def reached() -> dict[str, Any] | None:
        found = deployment(legato, deployment_id)
        if found["status"] in statuses:
            return found
        assert found["status"] not in FINISHED, found  # it ended otherwise
        return None
    return wait_for(reached, timeout=timeout, interval=0.1,
                    what=f"deployment {deployment_id} to be {statuses}")


def versions(legato: Legato, host: str, count: int = 30) -> set[str]:
    return {legato.get_edge(host, "/version").text.strip() for _ in range(count)}


@contextmanager
def steady_load(legato: Legato, host: str) -> Iterator[LoadResult]:
    """Load before, during and a moment after the block; then: no failure, enough rate."""
    with Load(legato.edge_url, host, rate=RATE) as load:
        time.sleep(0.5)
        yield load.result
        time.sleep(0.5)
    result = load.result
    assert result.failures == [], result.summary()
    assert result.rate >= 200, result.summary()


def deploy_v1(legato: Legato, name: str, replicas: int, **fields: Any) -> dict[str, Any]:
    assert legato.deploy(service_spec(name, replicas=replicas, **fields)).status_code == 202
    return legato.wait_healthy(name, replicas)


def new_deployment(legato: Legato, name: str, **changes: Any) -> str:
    response = legato.api.post(f"/services/{name}/deployments", json=changes)
    assert response.status_code == 202, response.text
    deployment_id: str = response.json()["deployment_id"]
    return deployment_id


def container_ids(legato: Legato, name: str) -> set[str]:
    return {c["id"] for c in legato.service(name)["containers"]}


# rolling ----------------------------------------------------------------------------------


def test_rolling_deploy_of_3_replicas_drops_nothing(legato: Legato, name: str) -> None:
    host = f"{name}.localhost"
    deploy_v1(legato, name, 3)
    before = container_ids(legato, name)
    with steady_load(legato, host) as load:
        done = wait_status(legato, new_deployment(legato, name, image=V2), "successful")
    assert {"1", "2"} <= set(load.versions)
    assert versions(legato, host) == {"2"}
    assert not before & container_ids(legato, name)
    assert [s["name"] for s in done["steps"]][-3:] == ["switching", "draining", "done"]


def test_rolling_deploy_of_a_1_replica_service_drops_nothing(legato: Legato, name: str) -> None:
    host = f"{name}.localhost"
    deploy_v1(legato, name, 1)
    with steady_load(legato, host) as load:
        wait_status(legato, new_deployment(legato, name, image=V2), "successful")
    assert {"1", "2"} <= set(load.versions)
    assert versions(legato, host) == {"2"}


def test_rolling_restart_drops_nothing(legato: Legato, name: str) -> None:
    host = f"{name}.localhost"
    deploy_v1(legato, name, 3)
    before = container_ids(legato, name)
    with steady_load(legato, host):
        response = legato.api.post(f"/services/{name}/restart")
        assert response.status_code == 202
        wait_status(legato, response.json()["deployment_id"], "successful")
    assert not before & container_ids(legato, name)


def test_scale_3_to_1_drains_and_drops_nothing(legato: Legato, name: str) -> None:
    deploy_v1(legato, name, 3)
    with steady_load(legato, f"{name}.localhost"):
        assert legato.api.post(f"/services/{name}/scale",
                               json={"replicas": 1}).status_code == 202
        wait_for(lambda: len(legato.containers(name)) == 1, what="two replicas to go")


# canary -----------------------------------------------------------------------------------


def test_canary_then_promote_drops_nothing(legato: Legato, name: str) -> None:
    host = f"{name}.localhost"
    deploy_v1(legato, name, 3)
    with steady_load(legato, host) as load:
        canary = new_deployment(legato, name, image=V2,
                                deploy={"strategy": "canary", "canary": 1})
        wait_status(legato, canary, "awaiting_promotion")
        seen = versions(legato, host, 60)  # the canary takes a share of the traffic
        assert legato.api.post(f"/deployments/{canary}/promote").status_code == 202
        wait_status(legato, canary, "successful")
    assert seen == {"1", "2"}
    assert {"1", "2"} <= set(load.versions)
    assert versions(legato, host) == {"2"}


def test_canary_then_fail_restores_the_old_version_and_drops_nothing(
    legato: Legato, name: str
) -> None:
    host = f"{name}.localhost"
    deploy_v1(legato, name, 3)
    before = container_ids(legato, name)
    with steady_load(legato, host):
        canary = new_deployment(legato, name, image=V2,
                                deploy={"strategy": "canary", "canary": 1})
        wait_status(legato, canary, "awaiting_promotion")
        assert legato.api.post(f"/deployments/{canary}/fail").status_code == 202
        assert deployment(legato, canary)["status"] == "rolled_back"
        restore = legato.service(name)["deployment"]["id"]
        wait_status(legato, restore, "successful")
        wait_for(lambda: container_ids(legato, name) == before, what="the canary to go")
    assert versions(legato, host) == {"1"}


# rollback and failure ---------------------------------------------------------------------


def test_rollback_drops_nothing_and_rebuilds_nothing(legato: Legato, name: str) -> None:
    host = f"{name}.localhost"
    first = deploy_v1(legato, name, 3)["deployment"]
    wait_status(legato, new_deployment(legato, name, image=V2), "successful")
    with steady_load(legato, host) as load:
        response = legato.api.post(f"/services/{name}/rollback")
        assert response.status_code == 202
        done = wait_status(legato, response.json()["deployment_id"], "successful")
    assert done["image_id"] == first["image_id"] and done["rollback_of"] == first["id"]
    assert "promoting" not in [s["name"] for s in done["steps"]]
    assert {"1", "2"} <= set(load.versions)
    assert versions(legato, host) == {"1"}


def test_a_failing_deploy_rolls_back_by_itself_and_drops_nothing(
    legato: Legato, name: str
) -> None:
    host = f"{name}.localhost"
    deploy_v1(legato, name, 3)
    before = container_ids(legato, name)
    with steady_load(legato, host) as load:
        bad = new_deployment(legato, name, image=V2, command=["sh", "-c", "exit 3"])
        failed = wait_status(legato, bad, "rolled_back")
        restore = legato.service(name)["deployment"]["id"]
        wait_status(legato, restore, "successful")
    assert failed["error"] == "new replicas keep failing"
    assert set(load.versions) == {"1"}  # the broken version never took a request
    assert container_ids(legato, name) == before  # the old replicas served throughout


# the control plane dies mid-rollout --------------------------------------------------------


class ContainerWatch:
    """Samples the service's running containers from Docker while a test runs."""

    def __init__(self, legato: Legato, name: str) -> None:
        self.client = docker.from_env()
        self.filters = {"label": [f"legato.instance={legato.instance}",
                                  f"legato.service={name}"], "status": "running"}
        self.most = 0
        self.seen: dict[str, tuple[str, str]] = {}  # container id -> (deployment, slot)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> ContainerWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)
        self.client.close()

    def _run(self) -> None:
        while not self._stop.is_set():
            running = self.client.api.containers(filters=self.filters)
            self.most = max(self.most, len(running))
            for container in running:
                labels = container["Labels"]
                self.seen[container["Id"]] = (labels["legato.deployment"],
                                              labels["legato.replica"])
            time.sleep(0.02)


def test_kill_9_mid_rollout_then_restart_finishes_it_without_duplicates(
    fresh_legato: Legato, name: str
) -> None:
    legato, host = fresh_legato, f"{name}.localhost"
    deploy_v1(legato, name, 3)
    with ContainerWatch(legato, name) as watch, steady_load(legato, host) as load:
        # min_healthy_s keeps the rollout going long enough to die in its middle.
        rollout = new_deployment(legato, name, image=V2, deploy={"min_healthy_s": 1.5})
        wait_for(lambda: deployment(legato, rollout)["step"] in ("switching", "draining"),
                 what="the rollout to be under way")
        legato.kill(signal.SIGKILL)
        time.sleep(1.0)  # the edge serves on its own meanwhile
        legato.start()
        done = wait_status(legato, rollout, "successful")
    assert {"1", "2"} <= set(load.versions)
    assert versions(legato, host) == {"2"}
    new = sorted(slot for dep, slot in watch.seen.values() if dep == rollout)
    assert new == ["0", "1", "2"], f"one container per slot, none started twice: {watch.seen}"
    # replicas + max_surge serve or start at most; one more may be terminating (out of the
    # route, SIGTERM sent), which max_surge does not count.
    assert watch.most <= 3 + 1 + 1, watch.most
    assert done["spec"]["image"] == V2
    current = legato.service(name)
    assert current["deployment"]["id"] == rollout
    assert {c["deployment"] for c in current["containers"]} == {rollout}
