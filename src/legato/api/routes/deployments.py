"""Deployments: immutable revisions of a service, their pipeline, promotion and rollback
(SPEC §4; semantics after Nomad's deployments)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Annotated, Literal

from fastapi import APIRouter, Body, Query
from fastapi.responses import JSONResponse, PlainTextResponse, StreamingResponse

from legato.api import pagination
from legato.api.deps import Deployer, IfMatch, PlatformDep, Viewer, actor, error_responses, grant
from legato.api.schemas import (
    DeploymentAccepted,
    DeploymentCreate,
    DeploymentLogs,
    DeploymentPublic,
    Page,
    RollbackRequest,
    deployment_accepted,
    deployment_logs,
    deployment_public,
)
from legato.build.log import BuildLog

router = APIRouter(tags=["deployments"])

Supersede = Annotated[bool, Query(description="Cancel the deployment in flight (if any) and "
                                              "start from the current state")]
_IN_FLIGHT = error_responses(400, 404, 409)


@router.post("/services/{name}/deployments", status_code=202, response_model=DeploymentAccepted,
             responses=error_responses(400, 404, 409, 412))
async def create_deployment(
    name: str, platform: PlatformDep, token: Deployer,
    body: Annotated[DeploymentCreate | None, Body()] = None, supersede: Supersede = False,
    if_match: IfMatch = None,
) -> DeploymentAccepted:
    """A new deployment of the service's spec with these changes (a new image, say); with
    none, every replica is replaced and the image resolved again. 409 while another is in
    flight, unless `supersede`; 412 if If-Match names a spec that has changed since."""
    body = body or DeploymentCreate()
    deployment = await platform.redeploy(name, actor=actor(token), reason=body.reason,
                                         changes=body.changes(), supersede=supersede,
                                         grant=grant(token, platform), if_match=if_match)
    return deployment_accepted(deployment, f"deployment #{deployment.number} queued")


@router.get("/services/{name}/deployments", response_model=Page[DeploymentPublic],
            responses=error_responses(404))
async def list_deployments(
    name: str,
    platform: PlatformDep,
    _: Viewer,
    limit: pagination.Limit = 20,
    cursor: pagination.Cursor = None,
) -> Page[DeploymentPublic]:
    """The service's deployments, newest first."""
    await platform.store.get_service(name)
    found = await platform.store.list_deployments(
        name, before_number=pagination.decode_number(cursor), limit=limit + 1)
    page = found[:limit]
    return Page(items=[deployment_public(d) for d in page],
                next_cursor=pagination.encode(str(page[-1].number)) if len(found) > limit else None)


@router.get("/deployments/{deployment_id}", response_model=DeploymentPublic,
            responses=error_responses(404))
async def get_deployment(deployment_id: str, platform: PlatformDep, _: Viewer) -> DeploymentPublic:
    """Status, error, the full spec and resolved image, and the pipeline steps with their
    timestamps (queued, pulling, starting, health, promoting, switching, draining, done)."""
    return deployment_public(await platform.store.get_deployment(deployment_id))


@router.get(
    "/deployments/{deployment_id}/logs",
    response_model=DeploymentLogs,
    responses={**error_responses(404),
               200: {"content": {"application/json": {}, "text/plain": {}},
                     "description": "The deployment's log, by step"}},
)
async def get_deployment_logs(
    deployment_id: str,
    platform: PlatformDep,
    _: Viewer,
    format: Literal["json", "text"] = "json",
) -> DeploymentLogs | PlainTextResponse:
    """What each step of the deployment did: the image it resolved, the replicas it started,
    health results, what it drained, why it failed."""
    deployment = await platform.store.get_deployment(deployment_id)
    body = deployment_logs(deployment, await platform.store.deployment_logs(deployment_id))
    if format == "json":
        return body
    text = "".join(
        f"{line.at.isoformat()} [{step.name}] {line.message}\n"
        for step in body.steps for line in step.logs
    )
    return PlainTextResponse(text)


@router.get(
    "/deployments/{deployment_id}/build-log",
    responses={**error_responses(404),
               200: {"content": {"text/plain": {}, "application/json": {},
                                 "text/event-stream": {}},
                     "description": "The builder's output; with follow=true an SSE stream"}},
    response_model=None,
)
async def get_build_log(
    deployment_id: str,
    platform: PlatformDep,
    _: Viewer,
    follow: bool = False,
    format: Literal["text", "json"] = "text",
) -> PlainTextResponse | JSONResponse | StreamingResponse:
    """The full output of the deployment's source build (clone, docker build, push). With
    follow=true, an SSE stream of every line so far and then each new one, until the build
    ends (event `end`)."""
    await platform.store.get_deployment(deployment_id)
    logs = platform.releases.build_logs
    live = logs.live(deployment_id)
    if follow:
        return StreamingResponse(_follow_build(live, await logs.read(deployment_id)
                                               if live is None else []),
                                 media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
    lines = await logs.read(deployment_id)
    if format == "json":
        return JSONResponse({"deployment_id": deployment_id, "building": live is not None,
                             "lines": lines})
    return PlainTextResponse("".join(f"{line}\n" for line in lines))


async def _follow_build(live: BuildLog | None, finished: list[str]) -> AsyncIterator[bytes]:
    source: AsyncIterator[str] = live.follow() if live is not None else _each(finished)
    async for line in source:
        yield f"data: {json.dumps(line)}\n\n".encode()
    yield b"event: end\ndata: {}\n\n"


async def _each(lines: list[str]) -> AsyncIterator[str]:
    for line in lines:
        yield line


@router.post("/deployments/{deployment_id}/promote", status_code=202,
             response_model=DeploymentAccepted, responses=_IN_FLIGHT)
async def promote_deployment(
    deployment_id: str, platform: PlatformDep, token: Deployer
) -> DeploymentAccepted:
    """End the canary phase: the canaries are healthy, roll out the rest."""
    deployment = await platform.promote(deployment_id, actor=actor(token))
    return deployment_accepted(deployment, f"deployment #{deployment.number} promoted")


@router.post("/deployments/{deployment_id}/fail", status_code=202,
             response_model=DeploymentAccepted, responses=_IN_FLIGHT)
async def fail_deployment(
    deployment_id: str, platform: PlatformDep, token: Deployer
) -> DeploymentAccepted:
    """Abort a deployment in flight and restore the last successful version."""
    deployment = await platform.fail(deployment_id, actor=actor(token))
    return deployment_accepted(deployment, f"deployment #{deployment.number} failed")


@router.post("/deployments/{deployment_id}/rollback", status_code=202,
             response_model=DeploymentAccepted, responses=_IN_FLIGHT)
async def rollback_to_deployment(
    deployment_id: str, platform: PlatformDep, token: Deployer, supersede: Supersede = False
) -> DeploymentAccepted:
    """A new deployment that runs exactly this revision again: its spec and image ID."""
    deployment = await platform.rollback_deployment(deployment_id, actor=actor(token),
                                                    supersede=supersede,
                                                    grant=grant(token, platform))
    return deployment_accepted(deployment, f"deployment #{deployment.number} queued")


@router.post("/services/{name}/promote", status_code=202, response_model=DeploymentAccepted,
             responses=_IN_FLIGHT)
async def promote_service(name: str, platform: PlatformDep, token: Deployer) -> DeploymentAccepted:
    """Promote the service's current deployment (seed 001)."""
    deployment = await platform.promote_service(name, actor=actor(token))
    return deployment_accepted(deployment, f"deployment #{deployment.number} promoted")


@router.post("/services/{name}/rollback", status_code=202, response_model=DeploymentAccepted,
             responses=_IN_FLIGHT)
async def rollback_service(
    name: str, platform: PlatformDep, token: Deployer,
    body: Annotated[RollbackRequest | None, Body()] = None, supersede: Supersede = False,
) -> DeploymentAccepted:
    """Roll back to the last successful deployment before the current one, or to deployment
    number `to`: a new deployment with that spec and image ID, nothing rebuilt."""
    to = body.to if body else None
    deployment = await platform.rollback(name, actor=actor(token), to=to, supersede=supersede,
                                         grant=grant(token, platform))
    return deployment_accepted(deployment, f"deployment #{deployment.number} queued")
