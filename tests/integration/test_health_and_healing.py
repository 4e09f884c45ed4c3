"""Health probes, replacement of unhealthy and crashed replicas, crash-loop backoff."""

from __future__ import annotations

from tests.integration.harness import Legato, service_spec, wait_for


def test_health_report_and_probe_now(legato: Legato, name: str) -> None:
    legato.deploy(service_spec(name, replicas=2))
    legato.wait_healthy(name, 2)

    report = legato.api.get(f"/services/{name}/health").json()
    assert report["health_check"]["path"] == "/healthz"
    assert len(report["replicas"]) == 2
    for replica in report["replicas"]:
        assert replica["health"] == "healthy"
        assert replica["consecutive_failures"] == 0
        assert replica["last_check"]
        assert replica["response_time_ms"] >= 0

    probed = legato.api.post(f"/services/{name}/health/check").json()
    assert [r["ok"] for r in probed["results"]] == [True, True]
    assert all(r["status_code"] == 200 for r in probed["results"])


def test_failing_replica_leaves_the_route_and_is_replaced(legato: Legato, name: str) -> None:
    host = f"{name}.localhost"
    legato.deploy(service_spec(name, replicas=2))
    detail = legato.wait_healthy(name, 2)
    sick, well = detail["containers"][0]["id"], detail["containers"][1]["id"]

    legato.docker.containers.get(sick).exec_run(["rm", "/www/healthz"])

    def replaced() -> bool:
        ids = {c["id"] for c in legato.service(name)["containers"]}
        return sick not in ids and len(ids) == 2
    wait_for(replaced, timeout=20, what="the failing replica to be replaced")
    assert well in {c["id"] for c in legato.service(name)["containers"]}
    legato.wait_healthy(name, 2)
    answers = {legato.get_edge(host, "/cgi-bin/whoami").text.strip() for _ in range(20)}
    assert sick not in answers
    messages = [e["message"] for e in legato.events(name, "health")]
    assert any("unhealthy" in m for m in messages)


def test_killed_replica_is_replaced_with_an_event(legato: Legato, name: str) -> None:
    legato.deploy(service_spec(name, replicas=1))
    [victim] = legato.wait_healthy(name, 1)["containers"]

    legato.docker.containers.get(victim["id"]).kill()

    def new_healthy() -> bool:
        detail = legato.service(name)
        ids = [c["id"] for c in detail["containers"]]
        return ids != [victim["id"]] and detail["replicas"]["healthy"] == 1
    wait_for(new_healthy, timeout=10, what="a new healthy replica")
    crashes = legato.events(name, "crash")
    assert any(victim["name"] in e["message"] and e["details"]["exit_code"] == 137
               for e in crashes)


def test_crashing_container_backs_off_and_shows_crash_loop(legato: Legato, name: str) -> None:
    legato.deploy(service_spec(name, command=["sh", "-c", "echo booting; exit 3"],
                               health_check={"path": "/", "interval_s": 1}))
    wait_for(lambda: legato.service(name)["status"] == "crash_loop", timeout=30,
             what="the crash_loop status")
    crashes = [e for e in legato.events(name, "crash") if "exited with code 3" in e["message"]]
    delays = sorted(e["message"].rsplit("restarting in ", 1)[1] for e in crashes)
    assert {"1s", "2s"} <= set(delays)
    assert crashes[0]["details"]["logs"][-1] == "booting"
