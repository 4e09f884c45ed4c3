"""Privileged spec fields on a real Docker Engine: refused until an admin enables them, then
applied to the container exactly as asked (capabilities, a read-only host directory, the
host's PID namespace, the host's network)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.harness import Legato, free_port, service_spec, wait_for


@pytest.fixture
def privileged(legato: Legato) -> Iterator[Legato]:
    response = legato.api.patch("/config", json={"allow_privileged_specs": True})
    assert response.status_code == 200, response.text
    try:
        yield legato
    finally:
        legato.api.patch("/config", json={"allow_privileged_specs": False})


def test_privileged_fields_are_refused_while_disabled(legato: Legato, name: str) -> None:
    response = legato.deploy(service_spec(name, cap_add=["NET_ADMIN"]))
    assert response.status_code == 403, response.text
    assert response.json()["code"] == "PRIVILEGED_SPEC"
    assert legato.api.get(f"/services/{name}").status_code == 404
    assert legato.containers(name) == []


def test_an_admin_runs_capabilities_host_paths_and_the_host_pid_namespace(
    privileged: Legato, name: str, tmp_path: Path
) -> None:
    (tmp_path / "greeting").write_text("from the host\n")
    spec = service_spec(name, cap_add=["NET_ADMIN"], pid_mode="host", volumes=[
        {"host_path": str(tmp_path), "path": "/hostdata", "read_only": True}])
    response = privileged.deploy(spec)
    assert response.status_code == 202, response.text
    try:
        privileged.wait_healthy(name, 1)
        [container] = privileged.containers(name)
        host = container.attrs["HostConfig"]
        assert "NET_ADMIN" in (host["CapAdd"] or []) or "CAP_NET_ADMIN" in (host["CapAdd"] or [])
        assert host["PidMode"] == "host"
        assert f"{tmp_path}:/hostdata:ro" in host["Binds"]
        assert host["Privileged"] is False  # only what was asked for
        code, output = container.exec_run(["cat", "/hostdata/greeting"])
        assert (code, output) == (0, b"from the host\n")
        code, _ = container.exec_run(["touch", "/hostdata/written"])
        assert code != 0 and not (tmp_path / "written").exists()  # read only
        # A deployer may not run it again (a restart re-resolves the image).
        made = privileged.api.post("/tokens", json={"name": f"{name}-d", "role": "deployer"})
        deployer = {"Authorization": f"Bearer {made.json()['token']}"}
        restart = privileged.api.post(f"/services/{name}/restart", headers=deployer)
        assert restart.status_code == 403 and restart.json()["code"] == "PRIVILEGED_SPEC"
    finally:
        privileged.api.delete(f"/services/{name}")


def test_a_service_on_the_host_network_is_routed_at_its_own_port(
    privileged: Legato, name: str
) -> None:
    port = free_port()
    spec = service_spec(name, network_mode="host", port=port,
                        command=["httpd", "-f", "-p", f"127.0.0.1:{port}", "-h", "/www"],
                        domain=f"{name}.localhost")
    response = privileged.deploy(spec)
    assert response.status_code == 202, response.text
    try:
        detail = privileged.wait_healthy(name, 1)
        assert [c["port"] for c in detail["containers"]] == [port]
        [container] = privileged.containers(name)
        assert container.attrs["HostConfig"]["NetworkMode"] == "host"
        served = wait_for(lambda: (r := privileged.get_edge(f"{name}.localhost", "/healthz"))
                          .status_code == 200 and r, timeout=20, what="the edge to route it")
        assert served.status_code == 200
    finally:
        privileged.api.delete(f"/services/{name}")
