"""Public endpoints: health and Prometheus metrics."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse, PlainTextResponse

from legato.api.deps import PlatformDep
from legato.api.schemas import HealthResponse

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
    """Replicas desired/current/healthy per service, in the Prometheus text format."""
    views = await platform.list_views()
    lines = [
        "# HELP legato_services Services known to this installation.",
        "# TYPE legato_services gauge",
        f"legato_services {len(views)}",
    ]
    for metric, help_text in (
        ("legato_service_replicas_desired", "Replicas the service should run."),
        ("legato_service_replicas_current", "Replicas running."),
        ("legato_service_replicas_healthy", "Replicas passing health checks and in the route."),
    ):
        lines += [f"# HELP {metric} {help_text}", f"# TYPE {metric} gauge"]
        for view in views:
            value = {
                "legato_service_replicas_desired": view.service.desired_replicas,
                "legato_service_replicas_current": view.current,
                "legato_service_replicas_healthy": view.healthy,
            }[metric]
            labels = f'service="{view.service.name}",project="{view.service.project}"'
            lines.append(f"{metric}{{{labels}}} {value}")
    return PlainTextResponse("\n".join(lines) + "\n",
                             media_type="text/plain; version=0.0.4; charset=utf-8")
