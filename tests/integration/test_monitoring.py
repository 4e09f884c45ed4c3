"""What services do, measured on real Docker and HAProxy: request metrics from the edge's log,
container stats, the metrics history, Prometheus, system figures, and the live streams (SSE
and WebSocket) with reconnection."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest
import websockets.sync.client as ws_client
from prometheus_client.parser import text_string_to_metric_families
from websockets.exceptions import InvalidStatus

from tests.integration.harness import Legato, service_spec, wait_for


def hit(legato: Legato, host: str, path: str, count: int) -> list[int]:
    """`count` requests through the edge (a few at a time); their statuses."""
    with ThreadPoolExecutor(8) as pool:
        return list(pool.map(lambda _: legato.get_edge(host, path).status_code, range(count)))


def request_metrics(legato: Legato, name: str) -> dict[str, Any]:
    body: dict[str, Any] = legato.api.get(f"/services/{name}/request-metrics").json()
    return body


def test_request_metrics_count_every_request_the_edge_answered(legato: Legato, name: str) -> None:
    host = f"{name}.localhost"
    legato.deploy(service_spec(name, replicas=2))
    legato.wait_healthy(name, 2)
    assert set(hit(legato, host, "/version", 40)) == {200}
    assert set(hit(legato, host, "/missing", 10)) == {404}
    assert set(hit(legato, host, "/cgi-bin/status?503", 6)) == {503}
    assert set(hit(legato, host, "/cgi-bin/sleep?0.3", 4)) == {200}

    def counted() -> dict[str, Any] | None:
        minute = request_metrics(legato, name)["windows"]["1m"]
        return minute if minute["requests"] >= 60 else None

    def reader() -> str:
        """What the control plane read of the edge's log."""
        return " ".join(line for line in httpx.get(f"{legato.url}/metrics").text.splitlines()
                        if line.startswith("legato_access_log"))

    try:
        minute = wait_for(counted, timeout=10, what="the edge's log lines to be counted")
    except AssertionError as exc:
        raise AssertionError(f"{exc}; {request_metrics(legato, name)}; {reader()}") from None
    assert (minute["requests"], minute["errors_5xx"]) == (60, 6)  # exactly what was sent
    assert minute["error_rate"] == pytest.approx(6 / 60, abs=1e-6)
    assert minute["latency_p99_ms"] >= 300 > minute["latency_p50_ms"]  # the 4 slow ones
    assert request_metrics(legato, name)["collecting"] is True

    families = {f.name: f for f in text_string_to_metric_families(
        httpx.get(f"{legato.url}/metrics").text)}
    by_code = {s.labels["code"]: s.value for s in families["legato_service_requests"].samples
               if s.labels.get("service") == name}
    assert by_code == {"2xx": 44, "4xx": 10, "5xx": 6}
    counts = [s.value for s in families["legato_service_request_duration_seconds"].samples
              if s.labels.get("service") == name and s.name.endswith("_count")]
    assert counts == [60]


def test_prometheus_output_passes_promtool(legato: Legato, name: str) -> None:
    legato.deploy(service_spec(name, replicas=1))
    legato.wait_healthy(name, 1)
    hit(legato, f"{name}.localhost", "/version", 5)
    text = httpx.get(f"{legato.url}/metrics").text
    promtool = shutil.which("promtool")
    assert promtool, "promtool (Debian's prometheus package) is installed by scripts/setup.sh"
    checked = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True,
                             text=True, check=False)
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_stats_measure_cpu_memory_and_network_of_real_containers(legato: Legato, name: str) -> None:
    host = f"{name}.localhost"
    legato.deploy(service_spec(name, replicas=2, resources={"memory": "64Mi"}))
    detail = legato.wait_healthy(name, 2)
    ids = {c["id"] for c in detail["containers"]}

    def busy() -> dict[str, Any] | None:
        hit(legato, host, "/cgi-bin/burn?40", 4)  # hashing zeros: CPU work in the replicas
        body: dict[str, Any] = legato.api.get(f"/services/{name}/stats").json()
        measured = [r for r in body["replicas"] if (r["cpu_percent"] or 0) > 1]
        return body if len(body["replicas"]) == 2 and measured else None

    body = wait_for(busy, timeout=20, interval=0.2, what="a CPU sample of the busy replicas")
    assert {r["id"] for r in body["replicas"]} == ids
    for replica in body["replicas"]:
        assert 0 < replica["memory_used_bytes"] < replica["memory_limit_bytes"] == 64 * 1024**2
        assert replica["network_rx_bytes"] > 0 and replica["network_tx_bytes"] > 0
    total = body["total"]
    assert total["memory_limit_bytes"] == 2 * 64 * 1024**2
    assert total["network_rx_bytes"] == sum(r["network_rx_bytes"] for r in body["replicas"])
    metrics = legato.api.get(f"/services/{name}/metrics").json()["current"]
    assert metrics["total_replicas"] == metrics["healthy_replicas"] == 2
    assert metrics["memory_percent"] > 0


def test_the_history_keeps_a_point_per_minute_with_the_minutes_requests(
    legato: Legato, name: str
) -> None:
    host = f"{name}.localhost"
    legato.deploy(service_spec(name, replicas=1))
    legato.wait_healthy(name, 1)
    # Requests spread over a minute boundary (at most ~70 s), so a whole minute closes.
    deadline = time.monotonic() + 75

    def point() -> dict[str, Any] | None:
        hit(legato, host, "/version", 3)
        body = legato.api.get(f"/services/{name}/metrics",
                              params={"interval": "1m", "history": 5}).json()
        busy = [p for p in body["history"] if p["requests"] > 0]
        return busy[-1] if busy else None

    found = wait_for(point, timeout=deadline - time.monotonic(), interval=0.5,
                     what="a 1m point with requests")
    # A full minute's rate is requests / 60; the server's first minute counts fewer seconds.
    assert found["requests"] / 60 - 1e-3 <= found["rps"] <= found["requests"]
    assert found["latency_p95_ms"] is not None and found["healthy_replicas"] == 1
    assert found["error_rate"] == 0.0


def test_system_health_metrics_and_summary_on_real_parts(legato: Legato, name: str) -> None:
    legato.deploy(service_spec(name, replicas=1))
    legato.wait_healthy(name, 1)
    health = legato.api.get("/system/health").json()
    assert health["status"] == "healthy"
    for component in ("database", "runtime", "edge"):
        assert health["components"][component]["status"] == "healthy"
        assert 0 <= health["components"][component]["response_time_ms"] < 3000
    assert health["components"]["runtime"]["details"]["containers_running"] >= 1
    figures = wait_for(lambda: (b := legato.api.get("/system/metrics").json())["system"][
        "cpu_percent"] is not None and b, what="a host sample")
    assert 0 < figures["system"]["memory_used_gb"] < figures["system"]["memory_total_gb"]
    assert 0 < figures["system"]["disk_used_gb"] < figures["system"]["disk_total_gb"]
    assert name in {a["name"] for a in figures["applications"]}
    summary = legato.api.get("/dashboard/summary").json()
    assert summary["services"] >= 1 and summary["deployments_today"] >= 1


# streams ------------------------------------------------------------------------------------


class SSE:
    """An open SSE stream: connected on entry, so nothing recorded after that is missed."""

    def __init__(self, legato: Legato, path: str, last_id: str | None = None,
                 **params: str) -> None:
        headers = {"Last-Event-ID": last_id} if last_id else {}
        self._context = legato.api.stream("GET", path, params=params, headers=headers,
                                          timeout=httpx.Timeout(10, read=20))

    def __enter__(self) -> SSE:
        response = self._context.__enter__()
        assert response.status_code == 200, response.read()
        self._lines = response.iter_lines()
        return self

    def __exit__(self, *exc: object) -> None:
        self._context.__exit__(None, None, None)

    def next(self, timeout: float = 20) -> dict[str, Any]:
        """The next event (id, event, data); keep-alive comments are skipped."""
        deadline = time.monotonic() + timeout
        current: dict[str, Any] = {}
        for line in self._lines:
            if time.monotonic() > deadline:
                break
            if line.startswith(":"):
                continue
            if not line:
                if current:
                    return current
                continue
            key, _, value = line.partition(": ")
            current[key] = json.loads(value) if key == "data" else value
        raise AssertionError(f"no event within {timeout}s")


def ws_url(legato: Legato, path: str) -> str:
    return legato.url.replace("http://", "ws://") + "/api/v1" + path


def test_the_event_stream_over_sse_resumes_without_gaps(legato: Legato, name: str) -> None:
    legato.deploy(service_spec(name, replicas=1))
    legato.wait_healthy(name, 1)
    with SSE(legato, "/events/stream", service=name, type="scaling") as stream:
        legato.api.post(f"/services/{name}/scale", json={"replicas": 2})
        first = stream.next()
    assert first["event"] == "scaling" and first["data"]["details"]["new_replicas"] == 2
    for count in (3, 1):  # while nobody listens
        legato.api.post(f"/services/{name}/scale", json={"replicas": count})
    with SSE(legato, "/events/stream", last_id=first["id"], service=name,
             type="scaling") as resumed:
        missed = [resumed.next(), resumed.next()]
    assert [e["data"]["details"]["new_replicas"] for e in missed] == [3, 1]
    assert int(first["id"]) < int(missed[0]["id"]) < int(missed[1]["id"])


def test_the_event_stream_over_websocket_authenticates_and_resumes(legato: Legato, name: str) -> None:
    legato.deploy(service_spec(name, replicas=1))
    legato.wait_healthy(name, 1)
    url = ws_url(legato, f"/events/stream?service={name}&type=scaling")
    with pytest.raises(InvalidStatus) as refused:
        ws_client.connect(url, open_timeout=5)
    assert refused.value.response.status_code in (401, 403)
    with pytest.raises(InvalidStatus):
        ws_client.connect(url, additional_headers={"Authorization": "Bearer lgt_" + "x" * 43})
    with ws_client.connect(url, additional_headers={"Authorization": f"Bearer {legato.token}"},
                           open_timeout=5) as socket:
        legato.api.post(f"/services/{name}/scale", json={"replicas": 2})
        first = json.loads(socket.recv(timeout=10))
    assert (first["event"], first["details"]["new_replicas"]) == ("scaling", 2)
    legato.api.post(f"/services/{name}/scale", json={"replicas": 1})  # while disconnected
    # A browser offers the token as a subprotocol; the server answers with the other one.
    with ws_client.connect(f"{url}&last_event_id={first['id']}", open_timeout=5,
                           subprotocols=["legato", f"bearer.{legato.token}"]) as socket:
        assert socket.subprotocol == "legato"
        missed = json.loads(socket.recv(timeout=10))
    assert missed["details"]["new_replicas"] == 1 and int(missed["id"]) > int(first["id"])


def test_the_log_stream_sends_new_lines_and_resumes_after_the_last_one(
    legato: Legato, name: str
) -> None:
    host = f"{name}.localhost"
    # httpd -vv logs the path of every request on stderr (the health checks' too).
    legato.deploy(service_spec(name, replicas=1,
                               command=["httpd", "-f", "-vv", "-p", "8080", "-h", "/www"]))
    legato.wait_healthy(name, 1)
    url = ws_url(legato, f"/services/{name}/logs/stream?tail=0")
    deadline = time.monotonic() + 30
    with ws_client.connect(url, additional_headers={"Authorization": f"Bearer {legato.token}"},
                           open_timeout=5) as socket:
        legato.get_edge(host, "/index.html")
        line = json.loads(socket.recv(timeout=10))
        while not line["message"].endswith("url:/index.html"):  # health checks log lines too
            assert time.monotonic() < deadline, "the request's log line never came"
            line = json.loads(socket.recv(timeout=10))
    assert line["event"] == "log" and line["replica"].startswith("lg-")
    legato.get_edge(host, "/version")  # while disconnected
    after = []
    with SSE(legato, f"/services/{name}/logs/stream", last_id=line["id"]) as resumed:
        while not after or not after[-1]["data"]["message"].endswith("url:/version"):
            assert time.monotonic() < deadline + 30, f"no line of /version in {after}"
            after.append(resumed.next())
    assert all(e["id"] > line["id"] for e in after)  # nothing sent twice
    assert not any(e["data"]["message"].endswith("url:/index.html") for e in after)
    missing = legato.api.get("/services/nope-x/logs/stream")
    assert missing.status_code == 404


def test_the_metrics_stream_sends_a_snapshot_each_round(legato: Legato, name: str) -> None:
    legato.deploy(service_spec(name, replicas=1))
    legato.wait_healthy(name, 1)
    url = ws_url(legato, f"/services/{name}/metrics/stream")
    with ws_client.connect(url, additional_headers={"Authorization": f"Bearer {legato.token}"},
                           open_timeout=5) as socket:
        snapshots = [json.loads(socket.recv(timeout=10)) for _ in range(3)]
    assert [s["event"] for s in snapshots] == ["metrics"] * 3
    assert [int(s["id"]) for s in snapshots] == sorted({int(s["id"]) for s in snapshots})
    assert snapshots[-1]["healthy_replicas"] == 1 and snapshots[-1]["name"] == name
    with SSE(legato, f"/services/{name}/metrics/stream", last_id=snapshots[0]["id"]) as resumed:
        following = resumed.next()
    assert int(following["id"]) > int(snapshots[0]["id"])
