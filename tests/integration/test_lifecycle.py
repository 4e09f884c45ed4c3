"""Stop, start, rolling restart and delete."""

from __future__ import annotations

import threading
import time

from tests.integration.harness import Legato, service_spec, wait_for


def test_stop_then_start(legato: Legato, name: str) -> None:
    legato.deploy(service_spec(name, replicas=2))
    legato.wait_healthy(name, 2)

    assert legato.api.post(f"/services/{name}/stop").status_code == 202
    wait_for(lambda: legato.service(name)["status"] == "stopped"
             and not legato.containers(name), what="every replica to stop")
    assert legato.service(name)["replicas"]["desired"] == 0
    assert legato.get_edge(f"{name}.localhost").status_code == 503

    assert legato.api.post(f"/services/{name}/start").status_code == 202
    legato.wait_healthy(name, 2)
    assert legato.get_edge(f"{name}.localhost").status_code == 200


def test_rolling_restart_never_drops_to_zero_healthy(legato: Legato, name: str) -> None:
    host = f"{name}.localhost"
    legato.deploy(service_spec(name, replicas=2))
    before = {c["id"] for c in legato.wait_healthy(name, 2)["containers"]}
    healthy_seen: list[int] = []
    failures: list[int] = []
    done = threading.Event()

    def watch() -> None:
        while not done.is_set():
            healthy_seen.append(legato.service(name)["replicas"]["healthy"])
            status = legato.get_edge(host).status_code
            if status != 200:
                failures.append(status)
            time.sleep(0.02)

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        response = legato.api.post(f"/services/{name}/restart")
        assert response.status_code == 202
        deployment_id = response.json()["deployment_id"]
        wait_for(lambda: legato.api.get(f"/deployments/{deployment_id}").json()["status"]
                 == "successful", timeout=30, what="the restart deployment to succeed")
    finally:
        done.set()
        watcher.join()
    after = {c["id"] for c in legato.wait_healthy(name, 2)["containers"]}
    assert not before & after, "every replica was replaced"
    assert min(healthy_seen) >= 1
    assert failures == []


def test_delete_removes_containers_route_and_volumes(legato: Legato, name: str) -> None:
    legato.deploy(service_spec(name, volumes=[{"name": "data", "path": "/data"}]))
    legato.wait_healthy(name, 1)
    volume = f"lg-{legato.instance}-{name}-data"
    assert legato.docker.volumes.get(volume)

    response = legato.api.delete(f"/services/{name}")
    assert response.status_code == 202
    assert response.json()["containers_removed"] == 1
    wait_for(lambda: not legato.containers(name), what="containers to be removed")
    assert legato.api.get(f"/services/{name}").status_code == 404
    wait_for(lambda: legato.get_edge(f"{name}.localhost").status_code == 404,
             what="the route to go")
    wait_for(lambda: not legato.docker.volumes.list(filters={"name": volume}),
             what="the volume to be removed")


def test_delete_with_keep_data_keeps_volumes(legato: Legato, name: str) -> None:
    legato.deploy(service_spec(name, volumes=[{"name": "data", "path": "/data"}]))
    [container] = legato.wait_healthy(name, 1)["containers"]
    legato.docker.containers.get(container["id"]).exec_run(["sh", "-c", "echo kept > /data/f"])

    legato.api.delete(f"/services/{name}", params={"keep_data": "true"})
    wait_for(lambda: not legato.containers(name), what="containers to be removed")
    time.sleep(0.5)
    volume = f"lg-{legato.instance}-{name}-data"
    assert legato.docker.volumes.get(volume)

    legato.deploy(service_spec(name, volumes=[{"name": "data", "path": "/data"}]))
    [container] = legato.wait_healthy(name, 1)["containers"]
    output = legato.docker.containers.get(container["id"]).exec_run(["cat", "/data/f"]).output
    assert output == b"kept\n"


def test_project_services_delete(legato: Legato, name: str) -> None:
    project = f"p{name[4:]}"
    legato.deploy(service_spec(f"{name}-a", project=project, replicas=0),
                  service_spec(f"{name}-b", project=project, replicas=0))
    response = legato.api.delete(f"/projects/{project}/services")
    assert response.status_code == 202
    assert sorted(response.json()["removed"]) == [f"{name}-a", f"{name}-b"]
    assert legato.api.get("/services", params={"project": project}).json()["items"] == []
