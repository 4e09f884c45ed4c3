"""Services: deploy, read, scale, lifecycle, logs, health, events (SPEC §4)."""

from __future__ import annotations

import json
from collections.abc import AsyncGenerator, AsyncIterator
from typing import Annotated, Literal

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse, PlainTextResponse, StreamingResponse

from legato.api import pagination
from legato.api.deps import (
    Deployer,
    IfMatch,
    PlatformDep,
    Viewer,
    actor,
    error_responses,
    grant,
    visible,
)
from legato.api.routes.streams import framed
from legato.api.schemas import (
    Accepted,
    DeployRequest,
    DeployResponse,
    EventPage,
    HealthReport,
    LogLinePublic,
    LogsResponse,
    Page,
    ProbePublic,
    ProbeReport,
    RemoveResponse,
    ScaleRequest,
    ScaleResponse,
    ServiceDetail,
    ServicePublic,
    StatusEntry,
    StatusResponse,
    event_public,
    replica_health,
    service_detail,
    service_public,
)
from legato.errors import LegatoError
from legato.runtime.base import LogLine
from legato.store.models import spec_document, spec_etag
from legato.timeparse import parse_since

router = APIRouter(tags=["services"])
ServiceStatus = Literal["running", "deploying", "degraded", "crash_loop", "stopped", "sleeping",
                        "idle", "failed"]


@router.post("/deploy", status_code=202, response_model=DeployResponse,
             responses=error_responses(400))
async def deploy(
    body: DeployRequest,
    request: Request,
    platform: PlatformDep,
    token: Deployer,
    supersede: Annotated[bool, Query(description="Cancel deployments in flight")] = False,
    if_match: IfMatch = None,
) -> JSONResponse:
    """Create or update services from seed 001's payload; each bad service is listed in errors
    (a service with a deployment in flight too, unless `supersede`). If-Match (the ETag of
    GET /services/{name}/spec) holds for a payload of one service."""
    projects = {s.get("project", "default") for s in body.services if isinstance(s, dict)}
    if len(projects) == 1:  # for the activity trail
        request.state.activity_project = str(projects.pop())
    result = await platform.deploy(body.services, actor=actor(token), supersede=supersede,
                                   grant=grant(token, platform), sees=token.sees,
                                   if_match=if_match)
    if not result.deployed and result.errors:
        # Nothing deployed: answer with the errors' own status when they agree (409 for a
        # deployment in flight, say), else 422.
        first = result.errors[0]
        statuses = {e["status"] for e in result.errors}
        raise LegatoError(
            f"no service deployed: {first['error']}",
            code=first["code"] if len(statuses) == 1 else "VALIDATION_FAILED",
            status=statuses.pop() if len(statuses) == 1 else 422,
            details={"errors": result.errors},
        )
    payload = DeployResponse(
        deployed=[d["name"] for d in result.deployed], errors=result.errors,
        deployments=result.deployed,
    )
    return JSONResponse(payload.model_dump(mode="json"), status_code=202)


@router.get("/services", response_model=Page[ServicePublic], responses=error_responses())
async def list_services(
    platform: PlatformDep,
    token: Viewer,
    project: str | None = None,
    environment: str | None = None,
    status: ServiceStatus | None = None,
    limit: pagination.Limit = 20,
    cursor: pagination.Cursor = None,
) -> Page[ServicePublic]:
    """Services with replicas desired/current/healthy, by name."""
    after = pagination.decode(cursor)
    if status is None:  # the page comes straight from the store
        views = await platform.list_views(project, environment, after=after, limit=limit + 1,
                                          projects=visible(token))
    else:  # status is live state: filter every service
        views = [v for v in await platform.list_views(project, environment, after=after,
                                                      projects=visible(token))
                 if v.status == status]
    page = [service_public(v) for v in views[:limit]]
    more = len(views) > limit
    return Page(items=page, next_cursor=pagination.encode(page[-1].name) if more else None)


@router.get("/status", response_model=StatusResponse, responses=error_responses())
async def status(platform: PlatformDep, token: Viewer,
                 project: str | None = None) -> StatusResponse:
    """Seed 001's status shape."""
    views = await platform.list_views(project, projects=visible(token))
    return StatusResponse(services=[
        StatusEntry(
            name=v.service.name, project=v.service.project, status=v.status,
            replicas=v.service.desired_replicas, running_replicas=v.current,
            healthy_replicas=v.healthy, image=v.spec.image if v.spec else None,
            domain=v.spec.domains[0] if v.spec and v.spec.domains else None,
        )
        for v in views
    ])


@router.get("/services/{name}", response_model=ServiceDetail, responses=error_responses(404))
async def get_service(name: str, platform: PlatformDep, _: Viewer) -> ServiceDetail:
    """Status, replica counts, containers, current deployment and domains."""
    return service_detail(await platform.describe(name))


@router.get("/services/{name}/spec", responses=error_responses(404))
async def get_spec(name: str, platform: PlatformDep, _: Viewer) -> JSONResponse:
    """The spec as applied (with the service's current replica count and policies). Its
    ETag header goes into If-Match of a write, which then fails (412) if the spec changed."""
    service = await platform.store.get_service(name)
    document = spec_document(service, platform.store.deployment_now(service))
    return JSONResponse(document, headers={"ETag": spec_etag(document)})


@router.post("/services/{name}/scale", status_code=202, response_model=ScaleResponse,
             responses=error_responses(404))
async def scale(name: str, body: ScaleRequest, platform: PlatformDep,
                token: Deployer, if_match: IfMatch = None) -> ScaleResponse:
    """Set the replica count; new replicas start in parallel, surplus ones drain first."""
    service, previous = await platform.scale(name, body.replicas, actor=actor(token),
                                             if_match=if_match)
    return ScaleResponse(
        message=f"scaling {name} from {previous} to {service.replicas} replicas", name=name,
        previous_replicas=previous, current_replicas=service.replicas,
        status_url=f"/api/v1/services/{name}",
    )


@router.post("/services/{name}/start", status_code=202, response_model=Accepted,
             responses=error_responses(404))
async def start(name: str, platform: PlatformDep, token: Deployer) -> Accepted:
    """Run the service's replicas again after a stop."""
    await platform.set_running(name, True, actor=actor(token))
    return Accepted(message="starting", name=name, status_url=f"/api/v1/services/{name}")


@router.post("/services/{name}/stop", status_code=202, response_model=Accepted,
             responses=error_responses(404))
async def stop(name: str, platform: PlatformDep, token: Deployer) -> Accepted:
    """Drain and stop every replica; the service and its spec stay."""
    await platform.set_running(name, False, actor=actor(token))
    return Accepted(message="stopping", name=name, status_url=f"/api/v1/services/{name}")


@router.post("/services/{name}/restart", status_code=202, response_model=Accepted,
             responses=error_responses(400, 404, 409))
async def restart(
    name: str,
    platform: PlatformDep,
    token: Deployer,
    supersede: Annotated[bool, Query(description="Cancel a deployment in flight")] = False,
) -> Accepted:
    """Rolling restart: a new deployment of the same spec that replaces every replica, as the
    spec's strategy says (one at a time by default)."""
    deployment = await platform.redeploy(name, actor=actor(token), reason="restart",
                                         supersede=supersede, grant=grant(token, platform))
    return Accepted(message="restarting", name=name, deployment_id=deployment.id,
                    status_url=f"/api/v1/deployments/{deployment.id}")


@router.delete("/services/{name}", status_code=202, response_model=RemoveResponse,
               responses=error_responses(404))
async def remove(
    name: str,
    platform: PlatformDep,
    token: Deployer,
    keep_data: Annotated[bool, Query(description="Keep the service's volumes")] = False,
    if_match: IfMatch = None,
) -> RemoveResponse:
    """Remove the service, its containers and its route (and its volumes, unless keep_data)."""
    count = await platform.delete(name, keep_data=keep_data, actor=actor(token),
                                  if_match=if_match)
    return RemoveResponse(message="removing", name=name, containers_removed=count,
                          keep_data=keep_data)


@router.delete("/projects/{project}/services", status_code=202, responses=error_responses())
async def remove_project_services(
    project: str, platform: PlatformDep, token: Deployer, keep_data: bool = False
) -> dict[str, object]:
    """Stop and remove every service of a project."""
    removed = []
    for service in await platform.store.list_services(project):
        await platform.delete(service.name, keep_data=keep_data, actor=actor(token))
        removed.append(service.name)
    return {"project": project, "removed": removed}


@router.get(
    "/services/{name}/logs",
    responses={**error_responses(400, 404),
               200: {"content": {"text/plain": {}, "application/json": {},
                                 "text/event-stream": {}},
                     "description": "Log lines; with follow=true an SSE stream"}},
    response_model=None,
)
async def logs(
    name: str,
    request: Request,
    platform: PlatformDep,
    _: Viewer,
    tail: Annotated[int | None, Query(ge=0, le=100_000)] = 100,
    since: str | None = None,
    replica: str | None = None,
    follow: bool = False,
    format: Literal["text", "json"] = "text",
) -> PlainTextResponse | JSONResponse | StreamingResponse:
    """Merged logs of the replicas; follow=true streams (SSE) until the client leaves."""
    since_at = parse_since(since)
    if follow:
        lines = await platform.follow_logs(name, tail=tail, since=since_at, replica=replica)
        return StreamingResponse(framed(_frames(lines, format), request),
                                 media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
    found = await platform.logs(name, tail=tail, since=since_at, replica=replica)
    if format == "json":
        body = LogsResponse(name=name, total_lines=len(found), logs=[
            LogLinePublic(timestamp=line.timestamp, replica=line.replica, message=line.message)
            for line in found
        ])
        return JSONResponse(body.model_dump(mode="json"))
    return PlainTextResponse("".join(_text(line) for line in found))


def _text(line: LogLine) -> str:
    stamp = line.timestamp.isoformat() if line.timestamp else "-"
    return f"{line.replica} {stamp} {line.message}\n"


async def _frames(lines: AsyncGenerator[LogLine, None], format: str) -> AsyncIterator[bytes]:
    """One SSE `data:` frame per line."""
    try:
        async for line in lines:
            if format == "json":
                data = json.dumps({
                    "timestamp": line.timestamp.isoformat() if line.timestamp else None,
                    "replica": line.replica, "message": line.message,
                })
            else:
                data = _text(line).rstrip("\n")
            yield f"data: {data}\n\n".encode()
    finally:
        await lines.aclose()


@router.get("/services/{name}/health", response_model=HealthReport,
            responses=error_responses(404))
async def health(name: str, platform: PlatformDep, _: Viewer) -> HealthReport:
    """Per replica: health, last check, consecutive failures, last error, response time."""
    view = await platform.describe(name)
    monitor = platform.reconciler.health
    spec = view.spec
    return HealthReport(
        name=name,
        health_check=spec.health.model_dump() if spec else {},
        replicas=[replica_health(r.id, r.name, r.host_port, monitor.state(r.id))
                  for r in view.replicas if r.running],
    )


@router.post("/services/{name}/health/check", response_model=ProbeReport,
             responses=error_responses(404))
async def check_health(name: str, platform: PlatformDep, _: Deployer) -> ProbeReport:
    """Probe every replica now and return the results."""
    results = await platform.check_health(name)
    monitor = platform.reconciler.health
    return ProbeReport(name=name, results=[
        ProbePublic(id=r.id[:12], name=r.name, ok=bool(p and p.ok),
                    status_code=p.status_code if p else None,
                    response_time_ms=round(p.response_time_ms, 2) if p else 0.0,
                    error=p.error if p else "not probed yet", health=monitor.status(r.id))
        for r, p in results
    ])


@router.get("/services/{name}/events", response_model=EventPage,
            responses=error_responses(404))
async def events(
    name: str,
    platform: PlatformDep,
    _: Viewer,
    type: str | None = None,
    since: str | None = None,
    limit: pagination.Limit = 100,
    cursor: pagination.Cursor = None,
) -> EventPage:
    """What happened to the service, newest first (seed 004): deploy, scaling, health, crash,
    config, lifecycle, error."""
    await platform.store.get_service(name)
    since_at = parse_since(since)
    found = await platform.store.list_events(
        name, type_=type, since=since_at, limit=limit + 1,
        before_id=pagination.decode_number(cursor),
    )
    page = found[:limit]
    more = len(found) > limit
    return EventPage(name=name, items=[event_public(e) for e in page],
                     next_cursor=pagination.encode(str(page[-1].id)) if more else None,
                     has_more=more,
                     total=await platform.store.count_events(name, type_=type, since=since_at))
