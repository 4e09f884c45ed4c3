"""Monitoring and sizing (SPEC §4 "Monitoring", seeds 000 and 004): stats, request metrics,
metrics history, scaling policy, sleep and wake, system health and metrics, the dashboard
summary, and the control plane's configuration."""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query

from legato import __version__
from legato.api.deps import (
    Deployer,
    IfMatch,
    PlatformAdmin,
    PlatformDep,
    Viewer,
    actor,
    error_responses,
    visible,
)
from legato.api.schemas import (
    ComponentHealth,
    ConfigPublic,
    ConfigUpdate,
    ConfigUpdated,
    DashboardSummary,
    LastScaling,
    MetricsCurrent,
    MetricsPointPublic,
    MetricsPublic,
    ReplicaCounts,
    ReplicaStatsPublic,
    RequestMetricsPublic,
    RequestWindowPublic,
    ScalingPublic,
    ScalingUpdate,
    ScalingUpdated,
    ServiceStats,
    SleepState,
    StatsTotals,
    SystemHealth,
    SystemMetrics,
    deployment_summary,
)
from legato.monitor.requests import Window
from legato.platform import Platform, ServiceView, validated
from legato.runtime.base import Replica
from legato.spec import HealthCheck, Scaling
from legato.store.models import Token

router = APIRouter(tags=["monitoring"])
_GB = 1024**3


def _at(epoch: float | None) -> datetime | None:
    return datetime.fromtimestamp(epoch, UTC) if epoch else None


@router.get("/services/{name}/stats", response_model=ServiceStats, responses=error_responses(404))
async def stats(name: str, platform: PlatformDep, _: Viewer) -> ServiceStats:
    """CPU, memory and network of each running replica and summed, from the last background
    sample (taken every `stats_interval_s`)."""
    await platform.store.get_service(name)
    samples = platform.monitor.stats.latest(name)
    replicas = [
        ReplicaStatsPublic(
            id=s.replica_id[:12], name=s.name,
            cpu_percent=None if s.cpu_percent is None else round(s.cpu_percent, 2),
            memory_used_bytes=s.memory_used, memory_limit_bytes=s.memory_limit,
            memory_percent=round(s.memory_percent, 2), network_rx_bytes=s.network_rx,
            network_tx_bytes=s.network_tx, sampled_at=_at(s.at) or datetime.now(UTC),
        )
        for s in samples
    ]
    return ServiceStats(
        name=name, interval_s=platform.monitor.interval_s,
        sampled_at=_at(max((s.at for s in samples), default=0.0)),
        replicas=replicas,
        total=StatsTotals(
            cpu_percent=round(sum(s.cpu_percent or 0.0 for s in samples), 2),
            memory_used_bytes=sum(s.memory_used for s in samples),
            memory_limit_bytes=sum(s.memory_limit for s in samples),
            network_rx_bytes=sum(s.network_rx for s in samples),
            network_tx_bytes=sum(s.network_tx for s in samples),
        ),
    )


def _ms(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


def _window(window: Window) -> RequestWindowPublic:
    p50, p95, p99 = window.percentiles(50, 95, 99)
    mean = window.mean_ms
    return RequestWindowPublic(
        seconds=round(window.seconds, 3), requests=window.requests, errors_5xx=window.errors,
        rps=round(window.rps, 3), error_rate=round(window.error_rate, 6),
        latency_p50_ms=_ms(p50), latency_p95_ms=_ms(p95), latency_p99_ms=_ms(p99),
        latency_mean_ms=_ms(mean),
    )


@router.get("/services/{name}/request-metrics", response_model=RequestMetricsPublic,
            responses=error_responses(404))
async def request_metrics(name: str, platform: PlatformDep, _: Viewer) -> RequestMetricsPublic:
    """Requests per second, 5xx share and p50/p95/p99 latency over the last minute and the
    last five minutes, from the edge's log of every request."""
    await platform.store.get_service(name)
    figures = platform.monitor.requests
    now = time.time()
    return RequestMetricsPublic(
        name=name, collecting=platform.monitor.requests_known,
        last_request_at=_at(figures.last_request_at(name)),
        windows={"1m": _window(figures.window(name, 60, now)),
                 "5m": _window(figures.window(name, 300, now))},
    )


@router.get("/services/{name}/metrics", response_model=MetricsPublic,
            responses=error_responses(404))
async def metrics(
    name: str,
    platform: PlatformDep,
    _: Viewer,
    history: Annotated[int, Query(ge=0, le=1440, description="Points of history")] = 10,
    interval: Literal["1m", "5m", "1h", "1d"] = "5m",
) -> MetricsPublic:
    """Seed 004's shape: the figures now, and the last `history` points of `interval`."""
    await platform.store.get_service(name)
    snapshot = platform.monitor.snapshot(name)
    points = await platform.store.metric_points(name, interval, history) if history else []
    return MetricsPublic(
        name=name, app_name=name, timestamp=_at(snapshot.at) or datetime.now(UTC),
        interval=interval, current=MetricsCurrent(**{
            k: v for k, v in snapshot.to_json().items() if k != "timestamp"}),
        history=[MetricsPointPublic(timestamp=p.at, **p.data) for p in points],
    )


# scaling ----------------------------------------------------------------------------------


async def _scaling(platform: Platform, name: str) -> ScalingPublic:
    service = await platform.store.get_service(name)
    last = await platform.store.list_events(name, type_="scaling", limit=20)
    scaled = next((e for e in last if e.details.get("action") in
                   ("scaled_out", "scaled_in", "kept", "sleep", "wake")), None)
    return ScalingPublic(
        name=name, app_name=name, mode=service.scaling.mode, replicas=service.replicas,
        policy=service.scaling.model_dump(exclude={"mode"}), sleep=service.sleep.model_dump(),
        sleeping=service.sleeping, last_scaled_at=service.last_scaled_at,
        last_scaling_event=None if scaled is None else LastScaling(
            timestamp=scaled.created_at, action=str(scaled.details.get("action")),
            from_replicas=scaled.details.get("previous_replicas"),
            to_replicas=scaled.details.get("new_replicas", scaled.details.get("replicas")),
            reason=str(scaled.details.get("reason") or scaled.message)),
    )


@router.get("/services/{name}/scaling", response_model=ScalingPublic,
            responses=error_responses(404))
async def get_scaling(name: str, platform: PlatformDep, _: Viewer) -> ScalingPublic:
    """The scaling policy in force, the sleep policy, and the last scaling decision."""
    return await _scaling(platform, name)


@router.put("/services/{name}/scaling", response_model=ScalingUpdated,
            responses=error_responses(404, 412))
async def put_scaling(name: str, body: ScalingUpdate, platform: PlatformDep,
                      token: Deployer, if_match: IfMatch = None) -> ScalingUpdated:
    """Change the scaling policy (the fields given; the others stay). In auto mode the replica
    count moves into the new bounds at once; no deployment is made."""
    service = await platform.store.get_service(name)
    merged = {**service.scaling.model_dump(), **body.model_dump(exclude_unset=True)}
    policy = validated(Scaling, merged, "scaling policy")
    updated, previous = await platform.set_scaling(name, policy, actor=actor(token),
                                                   if_match=if_match)
    return ScalingUpdated(
        message="scaling policy updated", name=name, app_name=name, replicas=updated.replicas,
        previous_policy=previous.model_dump(), new_policy=policy.model_dump(),
    )


@router.post("/services/{name}/sleep", status_code=202, response_model=SleepState,
             responses=error_responses(404, 409))
async def sleep(name: str, platform: PlatformDep, token: Deployer) -> SleepState:
    """Scale to zero now: the replicas drain and stop (kept for waking); the next request
    through the edge wakes the service."""
    service, changed = await platform.sleep(name, actor=actor(token),
                                            reason=f"asked by {actor(token)}")
    view = platform.view_now(service)
    return SleepState(message="going to sleep" if changed else "already asleep", name=name,
                      status=view.status, sleeping=service.sleeping, changed=changed,
                      status_url=f"/api/v1/services/{name}")


@router.post("/services/{name}/wake", status_code=202, response_model=SleepState,
             responses=error_responses(404))
async def wake(name: str, platform: PlatformDep, token: Deployer) -> SleepState:
    """Start a sleeping service's replicas again (no-op for an awake one)."""
    service, changed = await platform.wake(name, actor=actor(token),
                                           reason=f"asked by {actor(token)}")
    view = platform.view_now(service)
    return SleepState(message="waking" if changed else "not asleep", name=name,
                      status=view.status, sleeping=service.sleeping, changed=changed,
                      status_url=f"/api/v1/services/{name}")


# system -----------------------------------------------------------------------------------


@router.get("/system/health", response_model=SystemHealth, responses=error_responses())
async def system_health(platform: PlatformDep, token: Viewer) -> SystemHealth:
    """Database, runtime and edge, each with its response time, and the services' states."""
    found = await platform.timed_checks()
    views = await platform.list_views(projects=visible(token))
    replicas = _replicas(platform, views, token)
    details = {
        "database": {} if token.scoped else {"path": str(platform.settings.database_path)},
        "runtime": {"kind": platform.runtime.name, "node": platform.runtime.node,
                    "containers_running": sum(1 for r in replicas if r.running),
                    "containers_total": len(replicas)},
        "edge": {"url": platform.edge.url,
                 "routes": sum(1 for v in views if v.spec and v.spec.routed) if token.scoped
                 else len(platform.edge.routes()),
                 "access_log": platform.monitor.requests_known},
    }
    components = {
        name: ComponentHealth(status="healthy" if error is None else "unhealthy",
                              response_time_ms=round(ms, 2), error=error, details=details[name])
        for name, (error, ms) in found.items()
    }
    statuses = [v.status for v in views]
    return SystemHealth(
        status="healthy" if all(c.status == "healthy" for c in components.values()) else "unhealthy",
        timestamp=datetime.now(UTC), version=__version__,
        uptime_seconds=round(time.time() - platform.started_at, 1),
        components=components,
        applications={"total": len(views), "running": statuses.count("running"),
                      "stopped": statuses.count("stopped"), "sleeping": statuses.count("sleeping"),
                      "error": sum(statuses.count(s) for s in ("failed", "crash_loop", "degraded"))},
    )


def _replicas(platform: Platform, views: list[ServiceView], token: Token) -> list[Replica]:
    """Every replica; for a token scoped to projects, those of its services only."""
    if not token.scoped:
        return list(platform.reconciler.all_replicas())
    return [r for v in views for r in v.replicas]


@router.get("/system/metrics", response_model=SystemMetrics, responses=error_responses())
async def system_metrics(platform: PlatformDep, token: Viewer) -> SystemMetrics:
    """The host (CPU, memory, disk), containers, every application (the token sees) and the
    edge's traffic."""
    monitor = platform.monitor
    host = monitor.host.latest
    process = monitor.host.process()
    views = await platform.list_views(projects=visible(token))
    replicas = _replicas(platform, views, token)
    now = time.time()
    applications, requests, errors, latency_sum, latency_count = [], 0, 0, 0.0, 0
    totals = {name: t for name, t in monitor.requests.totals().items()
              if not token.scoped or name in {v.service.name for v in views}}
    for view in views:
        name = view.service.name
        snap = monitor.snapshot(name, now)
        applications.append({
            "name": name, "status": view.status, "replicas": view.current,
            "cpu_percent": snap.cpu_percent,
            "memory_mb": round(snap.memory_used_bytes / 1024**2, 1), "rps": round(snap.rps, 3),
        })
        window = monitor.requests.window(name, 60, now)
        requests += window.requests
        errors += window.errors
        count = sum(window.latencies.values())
        latency_sum += (window.mean_ms or 0.0) * count
        latency_count += count
    return SystemMetrics(
        timestamp=datetime.now(UTC),
        system={
            "cpu_percent": host.cpu_percent if host else None,
            "cpus": host.cpus if host else None,
            "load_1m": host.load_1m if host else None,
            "memory_used_gb": round(host.memory_used / _GB, 3) if host else None,
            "memory_total_gb": round(host.memory_total / _GB, 3) if host else None,
            "disk_used_gb": round(host.disk_used / _GB, 3) if host else None,
            "disk_total_gb": round(host.disk_total / _GB, 3) if host else None,
            "containers_running": sum(1 for r in replicas if r.running),
            "containers_total": len(replicas),
            "sampled_at": _at(host.at) if host else None,
        },
        applications=applications,
        network={
            "requests_per_second": round(requests / 60, 3),
            "total_requests": sum(t.requests for t in totals.values()),
            "error_rate_percent": round(100 * errors / requests, 3) if requests else 0.0,
            "avg_response_time_ms": round(latency_sum / latency_count, 3) if latency_count else None,
        },
        control_plane={
            "cpu_seconds": round(process.cpu_seconds, 2),
            "resident_memory_mb": round(process.resident_bytes / 1024**2, 1),
            "threads": process.threads, "open_fds": process.open_fds,
            "event_loop_lag_ms": round(monitor.loop_lag_s * 1000, 2),
            "reconcile_passes": platform.reconciler.passes,
            "access_log_lines": monitor.access_log.lines if monitor.access_log else 0,
        },
    )


@router.get("/dashboard/summary", response_model=DashboardSummary, responses=error_responses())
async def dashboard_summary(platform: PlatformDep, token: Viewer) -> DashboardSummary:
    """Counts of projects, services and replicas, today's deployments and failures (of the
    projects the token sees)."""
    views = await platform.list_views(projects=visible(token))
    names = [v.service.name for v in views] if token.scoped else None
    midnight = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    today = await platform.store.deployment_counts(since=midnight, services=names)
    by_status: dict[str, int] = {}
    for view in views:
        by_status[view.status] = by_status.get(view.status, 0) + 1
    recent = await platform.store.recent_deployments(5, services=names)
    return DashboardSummary(
        projects=len(await platform.store.list_projects(names=visible(token))),
        services=len(views),
        services_by_status=by_status,
        replicas=ReplicaCounts(desired=sum(v.service.desired_replicas for v in views),
                               current=sum(v.current for v in views),
                               healthy=sum(v.healthy for v in views)),
        deployments_today=sum(today.values()),
        failed_deployments_today=today.get("failed", 0) + today.get("rolled_back", 0),
        deployments_by_status=await platform.store.deployment_counts(services=names),
        failing_services=sorted(v.service.name for v in views
                                if v.status in ("failed", "crash_loop", "degraded")),
        recent_deployments=[deployment_summary(d) for d in recent],
    )


# configuration ----------------------------------------------------------------------------


def _config(platform: Platform, overrides: dict[str, Any]) -> ConfigPublic:
    settings = platform.settings
    return ConfigPublic(
        version=__version__,
        api={"host": settings.api_host, "port": settings.api_port, "url": settings.api_url},
        edge={"host": settings.edge_host, "http_port": settings.edge_http_port,
              "https_port": settings.edge_https_port, "url": platform.edge.url,
              "access_log": settings.access_log},
        database={"kind": "sqlite", "path": str(settings.database_path)},
        runtime={"kind": platform.runtime.name, "node": platform.runtime.node,
                 "instance": settings.instance},
        registry=settings.registry,
        monitoring={"stats_interval_s": platform.monitor.interval_s,
                    "history_intervals": ["1m", "5m", "1h", "1d"],
                    "history_retention_days": {"1m": 1, "5m": 7, "1h": 90, "1d": 730}},
        scaling={"default_check_interval": platform.autoscaler.interval_s,
                 "autoscale_interval_s": platform.autoscaler.interval_s,
                 "default_cooldown": Scaling().cooldown_seconds,
                 "default_window_seconds": Scaling().window_seconds,
                 "wake_timeout_s": platform.waker.timeout_s},
        health={"default_check_interval": HealthCheck().interval_s,
                "default_timeout": HealthCheck().timeout_s,
                "default_failure_threshold": HealthCheck().failure_threshold},
        log_level=logging.getLevelName(logging.getLogger().level).lower(),
        access=platform.access.public(),
        overrides=overrides,
    )


@router.get("/config", response_model=ConfigPublic, responses=error_responses())
async def get_config(platform: PlatformDep, _: PlatformAdmin) -> ConfigPublic:
    """The control plane's configuration in force (no secrets)."""
    return _config(platform, await platform.store.settings_overrides())


@router.patch("/config", response_model=ConfigUpdated, responses=error_responses())
async def patch_config(body: ConfigUpdate, platform: PlatformDep,
                       token: PlatformAdmin) -> ConfigUpdated:
    """Change the settings that apply at once; they are kept across restarts."""
    changed = body.model_dump(exclude_none=True)
    if changed:
        await platform.configure(changed, actor=actor(token))
    overrides = await platform.store.settings_overrides()
    return ConfigUpdated(message="configuration updated" if changed else "nothing to change",
                         changed=changed, config=_config(platform, overrides))

