"""Deployments: immutable revisions of a service."""

from __future__ import annotations

from fastapi import APIRouter

from legato.api import pagination
from legato.api.deps import Deployer, PlatformDep, Viewer, actor, error_responses
from legato.api.schemas import (
    Accepted,
    DeploymentCreate,
    DeploymentPublic,
    Page,
    deployment_public,
)
from legato.errors import ValidationFailed

router = APIRouter(tags=["deployments"])


@router.post("/services/{name}/deployments", status_code=202, response_model=Accepted,
             responses=error_responses(400, 404))
async def create_deployment(
    name: str, body: DeploymentCreate, platform: PlatformDep, token: Deployer
) -> Accepted:
    """Redeploy the service, optionally with a new image or environment."""
    changes: dict[str, object] = {}
    if body.image is not None:
        changes["image"] = body.image
    if body.env is not None:
        changes["env"] = body.env
    deployment = await platform.redeploy(name, actor=actor(token), reason=body.reason,
                                         changes=changes)
    return Accepted(message=f"deployment #{deployment.number} queued", name=name,
                    deployment_id=deployment.id,
                    status_url=f"/api/v1/deployments/{deployment.id}")


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
    before = pagination.decode(cursor)
    if before is not None and not before.isdigit():
        raise ValidationFailed("invalid cursor", code="INVALID_CURSOR")
    found = [d for d in await platform.store.list_deployments(name, limit=1000)
             if before is None or d.number < int(before)]
    page = found[:limit]
    more = len(found) > limit
    return Page(items=[deployment_public(d) for d in page],
                next_cursor=pagination.encode(str(page[-1].number)) if more else None)


@router.get("/deployments/{deployment_id}", response_model=DeploymentPublic,
            responses=error_responses(404))
async def get_deployment(deployment_id: str, platform: PlatformDep, _: Viewer) -> DeploymentPublic:
    """Status, error and pipeline steps with their timestamps."""
    return deployment_public(await platform.store.get_deployment(deployment_id))
