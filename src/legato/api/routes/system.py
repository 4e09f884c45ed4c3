"""Public endpoints: health and Prometheus metrics (SPEC §3)."""

from __future__ import annotations

from collections.abc import Callable

from fastapi import APIRouter
from fastapi.responses import JSONResponse, PlainTextResponse

from legato import __version__
from legato.api.deps import PlatformDep
from legato.api.schemas import HealthResponse
from legato.monitor.prometheus import CONTENT_TYPE, Family, render, request_families
from legato.platform import ServiceView

router = APIRouter(tags=["system"])


async def _health(platform: PlatformDep) -> JSONResponse:
    checks = await platform.checks()
    healthy = all(value == "ok" for value in checks.values())
    body = HealthResponse(status="healthy" if healthy else "unhealthy", checks=checks)
    return JSONResponse(body.model_dump(), status_code=200 if healthy else 503)


router.add_api_route("/api/v1/health", _health, methods=["GET"], response_model=HealthResponse,
                     summary="Health of the control plane (public)",
                     responses={503: {"model": HealthResponse, "description": "A check failed"}})
router.add_api_route("/health", _health, methods=["GET"], response_model=HealthResponse,
                     summary="Health of the control plane (public)", include_in_schema=True,
                     responses={503: {"model": HealthResponse, "description": "A check failed"}})


@router.get("/metrics", response_class=PlainTextResponse, summary="Prometheus metrics (public)")
async def metrics(platform: PlatformDep) -> PlainTextResponse:
    """Per service: replicas, requests, latency histogram, restarts; deployments by status;
    and the control plane's own figures. Prometheus text format 0.0.4."""
    views = await platform.list_views()
    projects = {v.service.name: v.service.project for v in views}
    families = [Family("legato_info", "gauge", "Legato's version.").add(1, {"version": __version__}),
                Family("legato_services", "gauge", "Services known to this installation.")
                .add(len(views))]
    per_service: list[tuple[str, str, Callable[[ServiceView], int]]] = [
        ("legato_service_replicas_desired", "Replicas the service should run.",
         lambda v: v.service.desired_replicas),
        ("legato_service_replicas_current", "Replicas running.", lambda v: v.current),
        ("legato_service_replicas_healthy", "Replicas passing health checks and in the route.",
         lambda v: v.healthy),
        ("legato_service_sleeping", "1 while the service is scaled to zero for idleness.",
         lambda v: int(v.service.sleeping)),
    ]
    for name, help_text, value in per_service:
        family = Family(name, "gauge", help_text)
        for view in views:
            family.add(value(view), _labels(view.service.name, view.service.project))
        families.append(family)
    restarts = Family("legato_service_restarts_total", "counter",
                      "Replicas replaced after they crashed or failed their health checks.")
    for view in views:
        restarts.add(platform.reconciler.restarts.get(view.service.name, 0),
                     _labels(view.service.name, view.service.project))
    families.append(restarts)
    monitor = platform.monitor
    families += request_families(monitor.requests.totals(), projects)
    deployments = Family("legato_deployments", "gauge", "Deployments recorded, by status.")
    for status, count in sorted((await platform.store.deployment_counts()).items()):
        deployments.add(count, {"status": status})
    families.append(deployments)

    process = monitor.host.process()
    reader = monitor.access_log
    families += [
        Family("process_cpu_seconds_total", "counter", "CPU time of the control plane.")
        .add(process.cpu_seconds),
        Family("process_resident_memory_bytes", "gauge", "Resident memory of the control plane.")
        .add(process.resident_bytes),
        Family("process_open_fds", "gauge", "Open file descriptors.").add(process.open_fds),
        Family("process_start_time_seconds", "gauge", "Start of the control plane (epoch).")
        .add(process.started_at),
        Family("legato_reconcile_passes_total", "counter", "Reconcile passes run.")
        .add(platform.reconciler.passes),
        Family("legato_reconcile_failures_total", "counter", "Reconcile passes that failed.")
        .add(platform.reconciler.pass_failures),
        Family("legato_autoscaler_evaluations_total", "counter",
               "Rounds of the autoscaler over every service.")
        .add(platform.autoscaler.evaluations),
        Family("legato_access_log_lines_total", "counter",
               "Request log lines read from the edge.").add(reader.lines if reader else 0),
        Family("legato_access_log_invalid_total", "counter",
               "Request log lines of a service that could not be parsed.")
        .add(reader.invalid if reader else 0),
        Family("legato_access_log_notices_total", "counter",
               "Log lines that are no request of a service (unknown hosts, HAProxy's notices).")
        .add(reader.notices if reader else 0),
        Family("legato_event_loop_lag_seconds", "gauge",
               "Highest delay of the control plane's event loop over the last ~10 s.")
        .add(monitor.loop_lag_s),
        Family("legato_monitor_round_seconds", "gauge",
               "Time the last monitoring round took (stats of every replica).")
        .add(monitor.round_seconds),
    ]
    return PlainTextResponse(render(families), media_type=CONTENT_TYPE)


def _labels(service: str, project: str) -> dict[str, str]:
    return {"service": service, "project": project}
