"""Autoscaling with real load through the edge: latency or requests above target scale out,
the new replicas take traffic, quiet scales back in after the cooldown, and min/max hold
throughout; each decision is an event with its reason and figures."""

from __future__ import annotations

import threading
import time
from types import TracebackType
from typing import Any

from tests.integration.harness import Legato, service_spec, wait_for
from tests.integration.load import Load


class Counts:
    """Samples the service's desired replica count while a test runs."""

    def __init__(self, legato: Legato, name: str) -> None:
        self.legato, self.name = legato, name
        self.seen: list[int] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Counts:
        self._thread.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None,
                 tb: TracebackType | None) -> None:
        self._stop.set()
        self._thread.join(10)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.seen.append(self.legato.service(self.name)["replicas"]["desired"])
            time.sleep(0.2)


def decisions(legato: Legato, name: str, action: str) -> list[dict[str, Any]]:
    return [e for e in legato.events(name, "scaling") if e["details"].get("action") == action
            and e["details"].get("actor", "autoscaler") == "autoscaler"]


def hostnames(legato: Legato, host: str, tries: int = 30) -> set[str]:
    return {legato.get_edge(host, "/cgi-bin/whoami").text.strip() for _ in range(tries)}


def test_slow_answers_scale_out_to_max_and_quiet_scales_back_in(legato: Legato, name: str) -> None:
    host = f"{name}.localhost"
    policy = {"mode": "auto", "min_replicas": 1, "max_replicas": 3, "max_p95_latency_ms": 150,
              "window_seconds": 5, "cooldown_seconds": 6}
    legato.deploy(service_spec(name, replicas=1, scaling=policy))
    legato.wait_healthy(name, 1)
    with Counts(legato, name) as counts:
        # /cgi-bin/sleep?0.3 answers in 300 ms: p95 latency twice the target.
        with Load(legato.edge_url, host, rate=10, path="/cgi-bin/sleep?0.3") as load:
            first = wait_for(lambda: decisions(legato, name, "scaled_out"), timeout=20,
                             what="a scale-out on latency")[-1]
            legato.wait_healthy(name, 2)
            assert len(wait_for(lambda: len(found := hostnames(legato, host)) >= 2 and found,
                                timeout=10, what="the new replica to take traffic")) >= 2
            wait_for(lambda: decisions(legato, name, "at_max"), timeout=30,
                     what="the autoscaler to reach max_replicas")
        assert load.result.failures == [], load.result.summary()
        assert (first["details"]["trigger"], first["details"]["previous_replicas"],
                first["details"]["new_replicas"]) == ("latency_high", 1, 2)
        assert first["details"]["figures"]["latency_p95_ms"] >= 300
        assert "p95 latency (ms)" in first["message"] and "target 150" in first["message"]
        assert legato.service(name)["replicas"]["desired"] == 3
        # Load gone: once the window is quiet and the cooldown has passed, one step at a time.
        wait_for(lambda: legato.service(name)["replicas"]["desired"] == 1, timeout=40,
                 what="scaling back in to min_replicas")
    scaled_in = decisions(legato, name, "scaled_in")
    assert [(e["details"]["previous_replicas"], e["details"]["new_replicas"])
            for e in reversed(scaled_in)] == [(3, 2), (2, 1)]
    assert all(e["details"]["trigger"] == "low_load" for e in scaled_in)
    assert counts.seen and min(counts.seen) >= 1 and max(counts.seen) <= 3


def test_requests_above_target_scale_out_in_proportion_and_back_in_after_the_cooldown(
    legato: Legato, name: str
) -> None:
    host = f"{name}.localhost"
    policy = {"mode": "auto", "min_replicas": 1, "max_replicas": 4, "target_rps_per_replica": 5,
              "window_seconds": 5, "cooldown_seconds": 4}
    legato.deploy(service_spec(name, replicas=1, scaling=policy))
    legato.wait_healthy(name, 1)
    with Counts(legato, name) as counts:
        # 30 req/s on one replica is 6 times the target: more than one replica at once.
        with Load(legato.edge_url, host, rate=30, path="/version") as load:
            out = wait_for(lambda: decisions(legato, name, "scaled_out"), timeout=20,
                           what="a scale-out on requests per replica")[-1]
            wait_for(lambda: legato.service(name)["replicas"]["desired"] == 4, timeout=20,
                     what="max_replicas")
            legato.wait_healthy(name, 4)
        assert load.result.failures == [], load.result.summary()
        figures = out["details"]["figures"]
        assert out["details"]["trigger"] == "rps_high" and figures["rps_per_replica"] > 4
        assert out["details"]["new_replicas"] >= 3  # a proportional step, not one replica
        wait_for(lambda: legato.service(name)["replicas"]["desired"] == 1, timeout=30,
                 what="scaling back in")
    back = decisions(legato, name, "scaled_in")
    assert back and all(e["details"]["new_replicas"] < e["details"]["previous_replicas"]
                        and e["details"]["trigger"] == "low_load" for e in back)
    assert max(counts.seen) <= 4 and min(counts.seen) >= 1
    scaling = legato.api.get(f"/services/{name}/scaling").json()
    assert scaling["last_scaling_event"]["action"] == "scaled_in"
    assert scaling["policy"]["max_replicas"] == 4
