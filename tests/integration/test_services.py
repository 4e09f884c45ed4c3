"""Deploy, read and validate services against real Docker and HAProxy."""

from __future__ import annotations

import pytest

from tests.integration.harness import TEST_IMAGE, Legato, service_spec, wait_for


def test_deploy_serves_through_the_edge_and_reports_bad_services(legato: Legato, name: str) -> None:
    response = legato.deploy(service_spec(name, replicas=2), {"name": "Bad_Name", "image": "x"})

    assert response.status_code == 202
    body = response.json()
    assert body["deployed"] == [name]
    assert len(body["errors"]) == 1
    assert body["errors"][0]["name"] == "Bad_Name"
    assert body["errors"][0]["code"] == "VALIDATION_FAILED"
    answer = wait_for(lambda: legato.get_edge(f"{name}.localhost").status_code == 200,
                      timeout=15, what="first 200 through the edge")
    assert answer
    assert legato.get_edge(f"{name}.localhost").text == "hello from legato\n"


def test_service_detail_list_status_and_spec(legato: Legato, name: str) -> None:
    legato.deploy(service_spec(name, replicas=2, project="shop", labels={"team": "checkout"}))
    detail = legato.wait_healthy(name, 2)

    assert detail["project"] == "shop"
    assert detail["replicas"] == {"desired": 2, "current": 2, "healthy": 2}
    assert detail["domains"] == [f"{name}.localhost"]
    assert detail["deployment"]["status"] == "successful"
    assert detail["deployment"]["image_id"].startswith("sha256:")
    containers = detail["containers"]
    assert len(containers) == 2
    for container in containers:
        assert container["status"] == "running"
        assert container["health"] == "healthy"
        assert container["port"] > 0
        assert container["started_at"]
        labels = legato.docker.containers.get(container["id"]).labels
        assert labels["legato.instance"] == legato.instance
        assert labels["legato.service"] == name
        assert labels["legato.project"] == "shop"
        assert labels["legato.deployment"] == detail["deployment"]["id"]
        assert labels["team"] == "checkout"

    listed = legato.api.get("/services", params={"project": "shop"}).json()
    assert name in [item["name"] for item in listed["items"]]
    assert "next_cursor" in listed

    status = legato.api.get("/status", params={"project": "shop"}).json()["services"]
    entry = next(s for s in status if s["name"] == name)
    assert entry["replicas"] == 2
    assert entry["running_replicas"] == 2
    assert entry["image"] == TEST_IMAGE
    assert entry["domain"] == f"{name}.localhost"

    spec = legato.api.get(f"/services/{name}/spec").json()
    assert spec["command"] == ["httpd", "-f", "-p", "8080", "-h", "/www"]
    assert spec["health_check"]["path"] == "/healthz"
    assert spec["replicas"] == 2


def test_list_is_cursor_paginated(legato: Legato, name: str) -> None:
    legato.deploy(*(service_spec(f"{name}-{i}", replicas=0, project="paging") for i in range(3)))
    first = legato.api.get("/services", params={"project": "paging", "limit": 2}).json()
    assert len(first["items"]) == 2
    assert first["next_cursor"]
    second = legato.api.get("/services", params={"project": "paging", "limit": 2,
                                                  "cursor": first["next_cursor"]}).json()
    names = [i["name"] for i in first["items"] + second["items"]]
    assert names == sorted(f"{name}-{i}" for i in range(3))
    assert second["next_cursor"] is None


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"unknown_field": 1}, "unknown_field"),
        ({"name": "-bad-"}, "name"),
        ({"replicas": -1}, "replicas"),
        ({"resources": {"memory": "lots"}}, "resources.memory"),
        ({"command": "httpd -f; rm -rf /"}, "command"),
        ({"volumes": [{"name": "data", "path": "/../etc"}]}, "volumes.0.path"),
    ],
)
def test_invalid_specs_are_422_with_the_field(legato: Legato, name: str, change: dict[str, object],
                                              field: str) -> None:
    response = legato.deploy({**service_spec(name), **change})

    assert response.status_code == 422
    body = response.json()
    assert body["code"] == "VALIDATION_FAILED"
    assert body["request_id"] == response.headers["X-Request-ID"]
    fields = [e["field"] for e in body["details"]["errors"][0]["details"]["errors"]]
    assert field in fields
    assert legato.api.get(f"/services/{name}").status_code == 404


def test_name_taken_by_another_project_is_a_conflict(legato: Legato, name: str) -> None:
    assert legato.deploy(service_spec(name, replicas=0, project="one")).status_code == 202
    response = legato.deploy(service_spec(name, replicas=0, project="two"))

    assert response.status_code == 409  # the only service in the payload: its own status
    error = response.json()["details"]["errors"][0]
    assert error["code"] == "SERVICE_NAME_TAKEN"
    assert legato.service(name)["project"] == "one"


def test_missing_image_fails_the_deployment_and_the_old_version_keeps_serving(
    legato: Legato, name: str
) -> None:
    legato.deploy(service_spec(name))
    before = legato.wait_healthy(name, 1)
    old_container = before["containers"][0]["id"]

    response = legato.api.post(f"/services/{name}/deployments",
                               json={"image": "legato-test/does-not-exist:1"})
    assert response.status_code == 202
    deployment_id = response.json()["deployment_id"]

    failed = wait_for(
        lambda: (d := legato.api.get(f"/deployments/{deployment_id}").json())["status"]
        == "rolled_back" and d,
        what="the deployment to fail and be rolled back",
    )
    assert "image not found: legato-test/does-not-exist:1" in failed["error"]
    assert [s["name"] for s in failed["steps"]] == ["queued", "pulling"]
    # A new deployment restores #1: its spec and image ID. It runs exactly what the old
    # container runs, so that container is kept, not replaced.
    after = wait_for(lambda: (body := legato.wait_healthy(name, 1))["deployment"]["status"]
                     == "successful" and body, what="the rollback to succeed")
    assert after["deployment"]["number"] == 3
    assert after["deployment"]["reason"] == "rollback to #1 (#2 failed)"
    rollback = legato.api.get(f"/deployments/{after['deployment']['id']}").json()
    assert rollback["rollback_of"] == before["deployment"]["id"]
    assert rollback["image_id"] == before["deployment"]["image_id"]
    assert [c["id"] for c in after["containers"]] == [old_container]
    assert legato.get_edge(f"{name}.localhost").status_code == 200
    messages = [e["message"] for e in legato.events(name, "error")]
    assert any("image not found" in m and "#3 restores #1" in m for m in messages)


def test_unknown_service_and_route_errors_have_the_error_shape(legato: Legato) -> None:
    missing = legato.api.get("/services/nope-404")
    assert missing.status_code == 404
    assert missing.json()["code"] == "SERVICE_NOT_FOUND"
    assert missing.json()["error"] == "service not found: nope-404"

    route = legato.api.get("/no/such/route")
    assert route.status_code == 404
    assert route.json()["code"] == "NOT_FOUND"
    assert route.json()["request_id"]
