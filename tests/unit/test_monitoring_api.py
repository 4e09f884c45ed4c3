"""Monitoring, scaling and sleep through the API on the fake runtime: stats, request metrics,
metrics history, the scaling policy and the autoscaler's decisions, sleep and wake, system
figures, configuration, Prometheus, and the event and metrics streams with reconnection."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import numpy
import pytest
from prometheus_client.parser import text_string_to_metric_families

from legato.monitor.monitor import Monitor
from legato.platform import Platform
from legato.runtime.fake import FakeRuntime
from legato.store import MetricPoint
from tests.unit.conftest import IMAGE_2, Api, Probes, Tokens, bearer, eventually


@pytest.fixture
async def api(client: httpx.AsyncClient, tokens: Tokens) -> Api:
    return Api(client, bearer(tokens.deployer))


@pytest.fixture
def collecting(monkeypatch: pytest.MonkeyPatch) -> None:
    """Pretend the edge's request log is read (unit platforms do not start the reader)."""
    monkeypatch.setattr(Monitor, "requests_known", property(lambda self: True))


async def running(api: Api, runtime: FakeRuntime, count: int = 2, **fields: Any) -> set[str]:
    """Deploy `web` and wait until `count` replicas run and are healthy."""
    deployment = await api.deploy(replicas=count, **fields)
    await api.until(deployment, "successful")

    async def healthy() -> bool:
        body = await api.call("GET", "/services/web", 200)
        return bool(body["replicas"]["healthy"] == count and body["status"] == "running")

    await eventually(healthy, 10, f"{count} healthy replicas")
    return {r.id for r in await runtime.list_replicas("web") if r.running}


async def events(api: Api, **params: Any) -> list[dict[str, Any]]:
    body = await api.call("GET", "/services/web/events", 200, params=params)
    return list(body["items"])


# stats and request figures ------------------------------------------------------------------


async def test_stats_show_each_replica_and_the_total_from_background_samples(
    api: Api, probes: Probes, runtime: FakeRuntime, platform: Platform
) -> None:
    ids = await running(api, runtime)
    empty = await api.call("GET", "/services/web/stats", 200)
    assert (empty["replicas"], empty["sampled_at"]) == ([], None)
    clock = [time.time() - 5]
    runtime.clock = lambda: clock[0]
    for replica_id in ids:
        runtime.usage[replica_id] = {"cpu_percent": 25.0, "memory_used": 128 * 1024**2,
                                     "memory_limit": 512 * 1024**2, "rx": 1000, "tx": 3000}
    await platform.monitor.round()
    first = await api.call("GET", "/services/web/stats", 200)
    assert [r["cpu_percent"] for r in first["replicas"]] == [None, None]  # one sample so far
    clock[0] += 5
    await platform.monitor.round()
    body = await api.call("GET", "/services/web/stats", 200)
    assert {r["id"] for r in body["replicas"]} == {i[:12] for i in ids}
    for replica in body["replicas"]:
        assert replica["cpu_percent"] == pytest.approx(25.0)
        assert (replica["memory_used_bytes"], replica["memory_limit_bytes"]) == (
            128 * 1024**2, 512 * 1024**2)
        assert replica["memory_percent"] == 25.0
        assert (replica["network_rx_bytes"], replica["network_tx_bytes"]) == (1000, 3000)
    assert body["total"] == {"cpu_percent": 50.0, "memory_used_bytes": 256 * 1024**2,
                             "memory_limit_bytes": 1024**3, "network_rx_bytes": 2000,
                             "network_tx_bytes": 6000}
    current = (await api.call("GET", "/services/web/metrics", 200))["current"]
    assert (current["cpu_percent"], current["memory_percent"]) == (25.0, 25.0)
    assert (current["healthy_replicas"], current["total_replicas"]) == (2, 2)


async def test_request_metrics_give_rate_5xx_share_and_exact_percentiles(
    api: Api, probes: Probes, runtime: FakeRuntime, platform: Platform
) -> None:
    await running(api, runtime, 1)
    now = time.time()
    latencies = [1, 1, 2, 3, 5, 8, 13, 21, 34, 55, 89, 144, 233, 377, 610] * 7
    statuses = [200] * 90 + [503] * 8 + [404] * 7
    platform.monitor.requests.started_at = now - 400
    platform.monitor.requests.record_many(
        [("web", s, ms) for s, ms in zip(statuses, latencies, strict=True)], now - 30)
    platform.monitor.requests.record_many([("web", 200, 7)] * 10, now - 200)  # only in 5m
    body = await api.call("GET", "/services/web/request-metrics", 200)
    minute, five = body["windows"]["1m"], body["windows"]["5m"]
    assert (minute["requests"], minute["errors_5xx"]) == (105, 8)
    assert minute["error_rate"] == pytest.approx(8 / 105, abs=1e-6)
    assert minute["rps"] == pytest.approx(105 / 60, abs=1e-3)
    for q in (50, 95, 99):
        assert minute[f"latency_p{q}_ms"] == pytest.approx(numpy.percentile(latencies, q))
    assert (five["requests"], five["seconds"]) == (115, 300)
    assert five["latency_p50_ms"] == pytest.approx(numpy.percentile(latencies + [7] * 10, 50))
    assert body["last_request_at"] is not None and body["collecting"] is False


async def test_metrics_answer_the_figures_now_and_the_history_of_an_interval(
    api: Api, probes: Probes, runtime: FakeRuntime, platform: Platform
) -> None:
    await running(api, runtime, 1)
    start = datetime(2026, 1, 1, tzinfo=UTC)
    await platform.store.add_metric_points([
        MetricPoint("web", "1m", start + timedelta(minutes=i), {"rps": float(i), "requests": i * 60})
        for i in range(5)
    ] + [MetricPoint("web", "5m", start, {"rps": 99.0})])
    body = await api.call("GET", "/services/web/metrics", 200,
                          params={"history": 3, "interval": "1m"})
    assert (body["name"], body["app_name"], body["interval"]) == ("web", "web", "1m")
    assert [p["rps"] for p in body["history"]] == [2.0, 3.0, 4.0]  # the newest 3, oldest first
    assert set(body["current"]) >= {"cpu_percent", "memory_percent", "rps", "latency_p95_ms",
                                    "active_connections", "healthy_replicas", "total_replicas"}
    assert [p["rps"] for p in (await api.call("GET", "/services/web/metrics", 200))["history"]] == [
        99.0]  # 5m by default
    for params in ({"interval": "2m"}, {"history": 5000}, {"history": -1}):
        response = await api.http.get("/api/v1/services/web/metrics", params=params,
                                      headers=api.headers)
        assert response.status_code == 422, params
    missing = await api.http.get("/api/v1/services/nope/metrics", headers=api.headers)
    assert missing.status_code == 404 and missing.json()["code"] == "SERVICE_NOT_FOUND"


# the scaling policy -------------------------------------------------------------------------


async def test_put_scaling_merges_validates_and_moves_the_count_into_bounds_without_deploying(
    api: Api, probes: Probes, runtime: FakeRuntime
) -> None:
    await running(api, runtime)
    before = await api.current()
    initial = await api.call("GET", "/services/web/scaling", 200)
    assert (initial["mode"], initial["policy"]["min_replicas"], initial["replicas"]) == (
        "manual", 1, 2)
    updated = await api.call("PUT", "/services/web/scaling", 200, json={
        "mode": "auto", "min_replicas": 3, "max_replicas": 5, "target_rps_per_replica": 10})
    assert updated["replicas"] == 3
    assert updated["previous_policy"]["mode"] == "manual"
    assert updated["new_policy"]["target_rps_per_replica"] == 10
    assert (await api.current())["id"] == before["id"]  # a policy is no deployment
    await eventually(lambda: _count(runtime, 3), 10, "3 replicas")
    again = await api.call("PUT", "/services/web/scaling", 200, json={"max_replicas": 4})
    assert again["new_policy"]["min_replicas"] == 3  # untouched fields stay
    for bad in ({"min_replicas": 9}, {"bogus": 1}, {"scale_out_threshold_pct": 0},
                {"window_seconds": 1}, {"mode": "sometimes"}):
        response = await api.http.put("/api/v1/services/web/scaling", json=bad, headers=api.headers)
        assert response.status_code == 422, (bad, response.text)
        assert response.json()["code"] == "VALIDATION_FAILED"
    outside = await api.http.post("/api/v1/services/web/scale", json={"replicas": 9},
                                  headers=api.headers)
    assert outside.status_code == 422 and outside.json()["code"] == "OUTSIDE_SCALING_BOUNDS"
    inside = await api.http.post("/api/v1/services/web/scale", json={"replicas": 4},
                                 headers=api.headers)
    assert inside.status_code == 202
    assert [e["details"]["policy"]["mode"] for e in await events(api, type="config")] == [
        "auto", "auto"]


async def _count(runtime: FakeRuntime, count: int) -> bool:
    return len([r for r in await runtime.list_replicas("web") if r.running]) == count


async def test_redeploying_an_autoscaled_service_keeps_the_count_its_autoscaler_chose(
    api: Api, probes: Probes, runtime: FakeRuntime, platform: Platform
) -> None:
    policy = {"mode": "auto", "min_replicas": 1, "max_replicas": 6, "target_rps_per_replica": 5}
    await running(api, runtime, 2, scaling=policy)
    await platform.scale("web", 4, actor="autoscaler")
    await api.deploy(replicas=2, scaling=policy)  # the same file again
    assert (await api.call("GET", "/services/web", 200))["replicas"]["desired"] == 4
    await api.deploy(replicas=2, scaling={**policy, "max_replicas": 3})
    assert (await api.call("GET", "/services/web", 200))["replicas"]["desired"] == 3
    spec = await api.call("GET", "/services/web/spec", 200)
    assert spec["replicas"] == 3


# the autoscaler -----------------------------------------------------------------------------


async def test_the_autoscaler_scales_out_on_load_and_in_after_the_cooldown_with_its_figures(
    api: Api, probes: Probes, runtime: FakeRuntime, platform: Platform, collecting: None
) -> None:
    policy = {"mode": "auto", "min_replicas": 2, "max_replicas": 5, "target_rps_per_replica": 10,
              "window_seconds": 10, "cooldown_seconds": 0}
    await running(api, runtime, 2, scaling=policy)
    autoscaler = platform.autoscaler
    requests = platform.monitor.requests
    requests.started_at = time.time() - 60
    assert await autoscaler.evaluate(await platform.store.get_service("web")) is None  # no load
    requests.record_many([("web", 200, 3)] * 300, time.time() - 1)  # 30 req/s: 15 per replica
    decision = await autoscaler.evaluate(await platform.store.get_service("web"))
    assert decision is not None and (decision.action, decision.previous) == ("scale_out", 2)
    assert decision.target == 5  # ceil(2 * 1.5 / 0.55) = 6, held at max_replicas
    [event] = [e for e in await events(api, type="scaling") if e["details"]["actor"] == "autoscaler"]
    assert event["details"]["trigger"] == "rps_high"
    assert event["details"]["figures"]["rps_per_replica"] == 15.0
    assert "above 80% of its target 10" in event["message"]
    assert (event["details"]["previous_replicas"], event["details"]["new_replicas"]) == (2, 5)
    await eventually(lambda: _steady(api, 5), 10, "5 healthy replicas")

    # The load is gone; the window still shows it until it passes.
    service = await platform.store.get_service("web")
    assert await autoscaler.evaluate(service) is None
    requests.forget("web")
    down = await autoscaler.evaluate(await platform.store.get_service("web"))
    assert down is not None and (down.action, down.target, down.trigger) == ("scale_in", 2, "low_load")
    scaling = await api.call("GET", "/services/web/scaling", 200)
    assert scaling["last_scaling_event"]["action"] == "scaled_in"
    assert (scaling["last_scaling_event"]["from_replicas"],
            scaling["last_scaling_event"]["to_replicas"]) == (5, 2)


async def _steady(api: Api, count: int) -> bool:
    body = await api.call("GET", "/services/web", 200)
    return bool(body["status"] == "running" and body["replicas"]["healthy"] == count)


async def test_the_autoscaler_leaves_alone_what_is_not_steady_manual_or_without_figures(
    api: Api, probes: Probes, runtime: FakeRuntime, platform: Platform
) -> None:
    await running(api, runtime, 2, scaling={"mode": "auto", "min_replicas": 1,
                                            "max_replicas": 4, "target_rps_per_replica": 1,
                                            "cooldown_seconds": 0})
    platform.monitor.requests.record_many([("web", 200, 3)] * 1000)
    service = await platform.store.get_service("web")
    assert await platform.autoscaler.evaluate(service) is None  # no request log: no rps figure
    await platform.set_running("web", False, actor="t")
    assert await platform.autoscaler.evaluate(await platform.store.get_service("web")) is None
    assert [e for e in await events(api, type="scaling")] == []


async def test_at_max_replicas_the_autoscaler_says_so_once(
    api: Api, probes: Probes, runtime: FakeRuntime, platform: Platform, collecting: None
) -> None:
    await running(api, runtime, 2, scaling={"mode": "auto", "min_replicas": 1, "max_replicas": 2,
                                            "target_rps_per_replica": 1, "window_seconds": 5})
    platform.monitor.requests.started_at = time.time() - 60
    platform.monitor.requests.record_many([("web", 200, 3)] * 100)
    for _ in range(3):
        decision = await platform.autoscaler.evaluate(await platform.store.get_service("web"))
        assert decision is not None and decision.action == "at_max"
    at_max = [e for e in await events(api, type="scaling") if e["details"].get("action") == "at_max"]
    assert len(at_max) == 1 and "max_replicas (2)" in at_max[0]["message"]


# sleep and wake -----------------------------------------------------------------------------


async def test_sleep_stops_and_keeps_the_replicas_and_wake_starts_the_same_ones(
    api: Api, probes: Probes, runtime: FakeRuntime, platform: Platform
) -> None:
    ids = await running(api, runtime)
    slept = await api.call("POST", "/services/web/sleep", 202)
    assert (slept["sleeping"], slept["changed"]) == (True, True)

    async def stopped() -> bool:
        found = await runtime.list_replicas("web")
        return {r.id for r in found} == ids and all(r.state == "exited" for r in found)

    await eventually(stopped, 10, "replicas stopped and kept")
    detail = await api.call("GET", "/services/web", 200)
    assert (detail["status"], detail["replicas"]["desired"]) == ("sleeping", 0)
    assert (await api.call("POST", "/services/web/sleep", 202))["changed"] is False
    woke = await api.call("POST", "/services/web/wake", 202)
    assert (woke["changed"], woke["sleeping"]) == (True, False)
    await eventually(lambda: _steady(api, 2), 10, "2 healthy replicas again")
    assert {r.id for r in await runtime.list_replicas("web") if r.running} == ids
    assert (await api.call("POST", "/services/web/wake", 202))["changed"] is False
    actions = [e["details"].get("action") for e in await events(api, type="scaling")]
    assert actions == ["wake", "sleep"]
    assert await events(api, type="crash") == []


async def test_sleep_is_refused_for_a_stopped_service_and_during_a_deployment(
    api: Api, probes: Probes, runtime: FakeRuntime, platform: Platform
) -> None:
    await running(api, runtime, 1)
    probes.fail_new = True  # the next deployment never gets healthy: it stays in flight
    runtime.images.add(IMAGE_2)
    accepted = await api.call("POST", "/services/web/deployments", 202, json={"image": IMAGE_2})
    busy = await api.http.post("/api/v1/services/web/sleep", headers=api.headers)
    assert busy.status_code == 409 and busy.json()["code"] == "DEPLOYMENT_IN_PROGRESS"
    await api.until(accepted["deployment_id"], "rolled_back")
    await api.call("POST", "/services/web/stop", 202)
    stopped = await api.http.post("/api/v1/services/web/sleep", headers=api.headers)
    assert stopped.status_code == 409 and stopped.json()["code"] == "SERVICE_STOPPED"


async def test_concurrent_requests_to_a_sleeping_service_wake_it_once(
    api: Api, probes: Probes, runtime: FakeRuntime, platform: Platform
) -> None:
    await running(api, runtime, 1)
    await platform.sleep("web", actor="t", reason="test")
    holds = await asyncio.gather(*(platform.hold_for_wake("web") for _ in range(20)))
    assert all(holds)
    replicas = await asyncio.gather(*(platform.wait_healthy("web", 10) for _ in range(20)))
    assert all(r is not None for r in replicas)
    woken = [e for e in await events(api, type="scaling") if e["details"].get("action") == "wake"]
    assert len(woken) == 1 and woken[0]["details"]["actor"] == "edge"


async def test_an_awake_service_without_healthy_replicas_is_not_held(
    api: Api, probes: Probes, runtime: FakeRuntime, platform: Platform
) -> None:
    await running(api, runtime, 1)
    assert await platform.hold_for_wake("web") is False


async def test_an_idle_service_is_put_to_sleep_and_a_recent_request_keeps_it_awake(
    api: Api, probes: Probes, runtime: FakeRuntime, platform: Platform, collecting: None
) -> None:
    await running(api, runtime, 1, sleep={"idle_timeout_s": 5})
    autoscaler = platform.autoscaler
    autoscaler.started_at = time.time() - 60
    platform.monitor.requests.record("web", 200, 1, at=time.time() - 1)
    service = await platform.store.get_service("web")
    # The deployment just finished: that counts as activity too.
    assert await autoscaler.check_idle(service) is False
    platform.monitor.requests.forget("web")
    deployment = await api.current()
    await platform.store.update_deployment(deployment["id"], status="successful")
    assert await autoscaler.check_idle(service) is False
    platform.store._deployments[deployment["id"]] = (  # as if it ended a minute ago
        platform.store._deployments[deployment["id"]].__class__(**{
            **platform.store._deployments[deployment["id"]].__dict__,
            "updated_at": datetime.now(UTC) - timedelta(minutes=1)}))
    assert await autoscaler.check_idle(service) is True
    [event] = [e for e in await events(api, type="scaling") if e["details"].get("action") == "sleep"]
    assert "no request for" in event["message"] and event["details"]["actor"] == "autoscaler"


async def test_an_autoscaled_service_with_a_floor_above_zero_never_sleeps_when_idle(
    api: Api, probes: Probes, runtime: FakeRuntime, platform: Platform, collecting: None
) -> None:
    await running(api, runtime, 1, sleep={"idle_timeout_s": 1},
                  scaling={"mode": "auto", "min_replicas": 1, "target_rps_per_replica": 5})
    platform.autoscaler.started_at = time.time() - 3600
    assert await platform.autoscaler.check_idle(await platform.store.get_service("web")) is False


# events, system, dashboard, configuration -------------------------------------------------


async def test_events_pages_carry_the_total_and_whether_more_follow(
    api: Api, probes: Probes, runtime: FakeRuntime, platform: Platform
) -> None:
    await running(api, runtime, 1)
    for index in range(5):
        await platform.store.add_event("web", "config", f"change {index}")
    first = await api.call("GET", "/services/web/events", 200, params={"type": "config", "limit": 2})
    assert (first["name"], first["total"], first["has_more"]) == ("web", 5, True)
    assert [e["message"] for e in first["items"]] == ["change 4", "change 3"]
    rest = await api.call("GET", "/services/web/events", 200,
                          params={"type": "config", "limit": 10, "cursor": first["next_cursor"]})
    assert [e["message"] for e in rest["items"]] == ["change 2", "change 1", "change 0"]
    assert rest["has_more"] is False and rest["next_cursor"] is None


async def test_system_health_metrics_and_the_dashboard_describe_the_installation(
    api: Api, probes: Probes, runtime: FakeRuntime, platform: Platform
) -> None:
    await running(api, runtime, 2)
    health = await api.call("GET", "/system/health", 200)
    assert health["status"] == "healthy"
    assert set(health["components"]) == {"database", "runtime", "edge"}
    assert all(c["response_time_ms"] >= 0 for c in health["components"].values())
    assert health["components"]["runtime"]["details"]["containers_running"] == 2
    assert health["applications"]["running"] == 1
    await platform.monitor.round()
    figures = await api.call("GET", "/system/metrics", 200)
    assert figures["system"]["memory_total_gb"] > 0 and figures["system"]["disk_total_gb"] > 0
    assert figures["system"]["containers_running"] == 2
    assert [a["name"] for a in figures["applications"]] == ["web"]
    assert figures["control_plane"]["resident_memory_mb"] > 0
    summary = await api.call("GET", "/dashboard/summary", 200)
    assert (summary["projects"], summary["services"], summary["deployments_today"]) == (1, 1, 1)
    assert summary["replicas"] == {"desired": 2, "current": 2, "healthy": 2}
    assert summary["deployments_by_status"] == {"successful": 1}
    assert [d["number"] for d in summary["recent_deployments"]] == [1]
    runtime.available = False
    down = await api.call("GET", "/system/health", 200)
    assert down["status"] == "unhealthy" and down["components"]["runtime"]["error"]


async def test_config_patch_applies_at_once_and_is_kept(
    client: httpx.AsyncClient, tokens: Tokens, platform: Platform
) -> None:
    admin = bearer(tokens.admin)
    config = (await client.get("/api/v1/config", headers=admin)).json()
    assert config["monitoring"]["stats_interval_s"] == platform.settings.stats_interval_s
    assert "master_key" not in json.dumps(config)
    changed = await client.patch("/api/v1/config", headers=admin,
                                 json={"stats_interval_s": 2.5, "autoscale_interval_s": 4})
    assert changed.status_code == 200, changed.text
    assert (platform.monitor.interval_s, platform.autoscaler.interval_s) == (2.5, 4)
    assert await platform.store.settings_overrides() == {"stats_interval_s": 2.5,
                                                         "autoscale_interval_s": 4}
    assert changed.json()["config"]["overrides"]["stats_interval_s"] == 2.5
    for bad in ({"wake_timeout_s": 100}, {"stats_interval_s": 0}, {"resync": 1}):
        response = await client.patch("/api/v1/config", headers=admin, json=bad)
        assert response.status_code == 422, bad


# Prometheus -------------------------------------------------------------------------------


async def test_prometheus_metrics_parse_and_carry_requests_latency_and_deployments(
    api: Api, probes: Probes, runtime: FakeRuntime, platform: Platform
) -> None:
    await running(api, runtime, 2)
    platform.monitor.requests.record_many(
        [("web", 200, 3)] * 7 + [("web", 502, 40), ("web", 404, 600), ("web", -1, -1)])
    text = (await api.http.get("/metrics")).text
    families = {f.name: f for f in text_string_to_metric_families(text)}
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for f in families.values() for s in f.samples}
    base = (("project", "default"), ("service", "web"))
    assert samples[("legato_service_replicas_healthy", base)] == 2
    by_code = {dict(k[1])["code"]: v for k, v in samples.items()
               if k[0] == "legato_service_requests_total"}
    assert by_code == {"2xx": 7, "4xx": 1, "5xx": 1, "other": 1}
    assert families["legato_service_request_duration_seconds"].type == "histogram"
    assert samples[("legato_service_request_duration_seconds_count", base)] == 9
    bucket = "legato_service_request_duration_seconds_bucket"
    assert samples[(bucket, (("le", "0.005"), *base))] == 7
    assert samples[(bucket, (("le", "0.05"), *base))] == 8
    assert samples[(bucket, (("le", "+Inf"), *base))] == 9
    assert samples[("legato_service_request_duration_seconds_sum", base)] == pytest.approx(
        (7 * 3 + 40 + 600) / 1000)
    assert samples[("legato_deployments", (("status", "successful"),))] == 1
    assert samples[("legato_service_restarts_total", base)] == 0
    assert samples[("process_resident_memory_bytes", ())] > 0
    assert ("legato_event_loop_lag_seconds", ()) in samples


# streams ------------------------------------------------------------------------------------


class SSE:
    """Reads a response's Server-Sent Events, a few at a time."""

    def __init__(self, response: httpx.Response) -> None:
        self.lines: AsyncIterator[str] = response.aiter_lines()

    async def next(self, count: int) -> list[dict[str, Any]]:
        """The next `count` events (id, event, data), comments skipped."""
        found: list[dict[str, Any]] = []
        current: dict[str, Any] = {}
        while len(found) < count:
            line = await asyncio.wait_for(anext(self.lines), 5)
            if line.startswith(":"):
                continue
            if not line:
                if current:
                    found.append(current)
                current = {}
                continue
            key, _, value = line.partition(": ")
            current[key] = json.loads(value) if key == "data" else value
        return found


async def test_the_event_stream_resumes_after_the_last_event_id_without_gaps_or_repeats(
    api: Api, probes: Probes, runtime: FakeRuntime, platform: Platform
) -> None:
    await running(api, runtime, 1)
    async with api.http.stream("GET", "/api/v1/events/stream", headers=api.headers,
                               params={"service": "web"}) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        stream = SSE(response)
        await platform.store.add_event("web", "config", "one")
        await platform.store.add_event("other", "config", "not this service")
        await platform.store.add_event("web", "config", "two")
        first = await stream.next(2)
    assert [e["data"]["message"] for e in first] == ["one", "two"]
    assert first[0]["event"] == "config" and first[0]["data"]["app_name"] == "web"
    last = first[-1]["id"]
    await platform.store.add_event("web", "config", "three")  # while disconnected
    await platform.store.add_event("web", "config", "four")
    async with api.http.stream("GET", "/api/v1/events/stream",
                               headers={**api.headers, "Last-Event-ID": last},
                               params={"service": "web"}) as response:
        stream = SSE(response)
        missed = await stream.next(2)
        await platform.store.add_event("web", "config", "five")
        live = await stream.next(1)
    assert [e["data"]["message"] for e in missed + live] == ["three", "four", "five"]
    assert [int(e["id"]) for e in missed + live] == sorted(int(e["id"]) for e in missed + live)
    bad = await api.http.get("/api/v1/events/stream", headers=api.headers,
                             params={"last_event_id": "yesterday"})
    assert bad.status_code == 422 and bad.json()["code"] == "INVALID_EVENT_ID"


async def test_the_metrics_stream_sends_each_round_and_resumes_from_the_last_id(
    api: Api, probes: Probes, runtime: FakeRuntime, platform: Platform
) -> None:
    await running(api, runtime, 1)
    await platform.monitor.round()
    async with api.http.stream("GET", "/api/v1/services/web/metrics/stream",
                               headers=api.headers) as response:
        stream = SSE(response)
        [now] = await stream.next(1)
        await asyncio.sleep(0.01)
        await platform.monitor.round()
        [following] = await stream.next(1)
    assert now["event"] == "metrics" and now["data"]["healthy_replicas"] == 1
    assert int(following["id"]) > int(now["id"])
    await asyncio.sleep(0.01)
    await platform.monitor.round()  # while disconnected
    async with api.http.stream("GET", "/api/v1/services/web/metrics/stream",
                               headers={**api.headers, "Last-Event-ID": following["id"]}) as response:
        [missed] = await SSE(response).next(1)
    assert int(missed["id"]) > int(following["id"])
    assert missed["id"] == str(platform.monitor.snapshots_after("web", 0)[-1].id)
