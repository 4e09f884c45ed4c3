"""kill -9 of the control plane: apps keep answering, and a restart adopts everything."""

from __future__ import annotations

import signal

from tests.integration.harness import Legato, service_spec, wait_for


def test_kill_9_then_restart_touches_no_container(fresh_legato: Legato) -> None:
    legato = fresh_legato
    legato.deploy(service_spec("steady", replicas=2), service_spec("other", replicas=1))
    legato.wait_healthy("steady", 2)
    legato.wait_healthy("other", 1)

    def snapshot() -> dict[str, str]:
        return {c.id: c.attrs["State"]["StartedAt"]
                for s in ("steady", "other") for c in legato.containers(s)}

    before = snapshot()
    assert len(before) == 3

    legato.kill(signal.SIGKILL)
    for _ in range(20):  # the edge is its own daemon: apps answer with no control plane
        assert legato.get_edge("steady.localhost").status_code == 200
        assert legato.get_edge("other.localhost").status_code == 200

    legato.start()
    legato.wait_healthy("steady", 2)
    legato.wait_healthy("other", 1)
    for _ in range(20):
        assert legato.get_edge("steady.localhost").status_code == 200
    wait_for(lambda: legato.api.get("/services/steady/health").json()["replicas"][0]["last_check"],
             what="probes to run again after the restart")
    assert snapshot() == before  # same containers, same StartedAt: nothing restarted
    kinds = [e["type"] for e in legato.events("steady")]
    assert "crash" not in kinds


def test_replica_that_died_while_down_is_replaced_on_restart(fresh_legato: Legato) -> None:
    legato = fresh_legato
    legato.deploy(service_spec("healer", replicas=2))
    detail = legato.wait_healthy("healer", 2)
    legato.kill(signal.SIGKILL)
    victim = detail["containers"][0]["id"]
    legato.docker.containers.get(victim).kill()

    legato.start()

    def healed() -> bool:
        ids = {c["id"] for c in legato.service("healer")["containers"]}
        return victim not in ids and legato.service("healer")["replicas"]["healthy"] == 2
    wait_for(healed, timeout=15, what="the dead replica to be replaced")
