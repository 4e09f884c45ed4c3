"""Scaling: parallel starts, healthy-only routes, drain before stop, zero errors under load."""

from __future__ import annotations

import re
import subprocess
import time

from tests.integration.harness import Legato, service_spec, wait_for


def whoami_set(legato: Legato, host: str, tries: int = 40) -> set[str]:
    return {legato.get_edge(host, "/cgi-bin/whoami").text.strip() for _ in range(tries)}


def test_scale_up_and_down_routes_only_healthy_replicas(legato: Legato, name: str) -> None:
    host = f"{name}.localhost"
    legato.deploy(service_spec(name, replicas=1))
    legato.wait_healthy(name, 1)

    response = legato.api.post(f"/services/{name}/scale", json={"replicas": 4})
    assert response.status_code == 202
    assert response.json()["previous_replicas"] == 1
    assert response.json()["current_replicas"] == 4
    detail = legato.wait_healthy(name, 4)
    ids = {c["id"] for c in detail["containers"]}
    assert len(ids) == 4
    starts = sorted(c["started_at"] for c in detail["containers"][1:])
    assert starts  # the three new replicas started in parallel, within a short window
    answered = wait_for(lambda: whoami_set(legato, host) == ids, timeout=10,
                        what="every healthy replica to answer through the edge")
    assert answered

    legato.api.post(f"/services/{name}/scale", json={"replicas": 1})
    detail = legato.wait_healthy(name, 1)
    # A surplus container may still be listed while Docker removes it ("removing").
    remaining = {c["id"] for c in detail["containers"] if c["status"] == "running"}
    assert len(remaining) == 1
    assert whoami_set(legato, host, 10) == remaining
    wait_for(lambda: len(legato.containers(name)) == 1, what="surplus containers to be removed")
    kinds = [e["type"] for e in legato.events(name)]
    assert kinds.count("scaling") == 2


def test_scale_validation(legato: Legato, name: str) -> None:
    legato.deploy(service_spec(name, replicas=0))
    assert legato.api.post(f"/services/{name}/scale", json={"replicas": -1}).status_code == 422
    assert legato.api.post(f"/services/{name}/scale", json={"replicas": "x"}).status_code == 422
    assert legato.api.post("/services/nope-x/scale", json={"replicas": 1}).status_code == 404


def test_unhealthy_replicas_stay_out_of_the_route(legato: Legato, name: str) -> None:
    legato.deploy(service_spec(name, replicas=1, health_check={
        "path": "/missing", "interval_s": 0.5, "failure_threshold": 100}))
    wait_for(lambda: legato.service(name)["replicas"]["current"] == 1, what="a running replica")
    time.sleep(1.5)
    detail = legato.service(name)
    assert detail["replicas"]["healthy"] == 0
    assert detail["containers"][0]["health"] == "starting"
    assert legato.get_edge(f"{name}.localhost").status_code == 503


def test_route_changes_under_keep_alive_load_drop_nothing(legato: Legato, name: str) -> None:
    """wrk holds keep-alive load while services are scaled, added and removed: 0 errors."""
    host = f"{name}.localhost"
    legato.deploy(service_spec(name, replicas=2))
    legato.wait_healthy(name, 2)

    wrk = subprocess.Popen(
        ["wrk", "-t1", "-c8", "-d14s", "-H", f"Host: {host}", f"{legato.edge_url}/"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    try:
        time.sleep(1)
        legato.api.post(f"/services/{name}/scale", json={"replicas": 4})
        legato.wait_healthy(name, 4)
        legato.deploy(service_spec(f"{name}-b"))           # a new backend: seamless reload
        legato.wait_healthy(f"{name}-b", 1)
        legato.api.post(f"/services/{name}/scale", json={"replicas": 1})
        legato.wait_healthy(name, 1)
        wait_for(lambda: len(legato.containers(name)) == 1, what="drained replicas to stop")
        legato.api.delete(f"/services/{name}-b")          # a backend goes: seamless reload
        legato.api.post(f"/services/{name}/scale", json={"replicas": 3})
        legato.wait_healthy(name, 3)
        legato.api.post(f"/services/{name}/restart")      # rolling, one replica at a time
        wait_for(lambda: legato.service(name)["deployment"]["reason"] == "restart"
                 and legato.service(name)["status"] == "running", timeout=30,
                 what="the rolling restart to finish")
        output, _ = wrk.communicate(timeout=60)
    finally:
        if wrk.poll() is None:
            wrk.kill()
    requests = int(re.search(r"(\d+) requests in", output).group(1))  # type: ignore[union-attr]
    assert requests > 1000, output
    assert "Socket errors" not in output, output
    assert "Non-2xx" not in output, output
