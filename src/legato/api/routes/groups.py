"""Project groups: workspaces that bundle related projects (seed 000)."""

from __future__ import annotations

from fastapi import APIRouter

from legato.api.deps import Deployer, PlatformDep, Viewer, error_responses
from legato.api.schemas import GroupCreate, GroupPublic, GroupUpdate
from legato.platform import Platform
from legato.store.models import Group

router = APIRouter(tags=["groups"])


async def group_public(platform: Platform, group: Group) -> GroupPublic:
    projects = await platform.store.list_projects(group_id=group.id, limit=10_000)
    return GroupPublic(id=group.id, name=group.name, description=group.description,
                       projects=[p.name for p in projects], created_at=group.created_at,
                       updated_at=group.updated_at)


@router.get("/groups", response_model=list[GroupPublic], responses=error_responses())
async def list_groups(platform: PlatformDep, _: Viewer) -> list[GroupPublic]:
    """Groups by name, with their projects."""
    return [await group_public(platform, g) for g in await platform.store.list_groups()]


@router.post("/groups", status_code=201, response_model=GroupPublic,
             responses=error_responses(409))
async def create_group(body: GroupCreate, platform: PlatformDep, _: Deployer) -> GroupPublic:
    return await group_public(platform, await platform.store.create_group(body.name,
                                                                          body.description))


@router.get("/groups/{group_id}", response_model=GroupPublic, responses=error_responses(404))
async def get_group(group_id: str, platform: PlatformDep, _: Viewer) -> GroupPublic:
    return await group_public(platform, await platform.store.get_group(group_id))


@router.patch("/groups/{group_id}", response_model=GroupPublic,
              responses=error_responses(404, 409))
async def update_group(group_id: str, body: GroupUpdate, platform: PlatformDep,
                       _: Deployer) -> GroupPublic:
    group = await platform.store.update_group(group_id, name=body.name,
                                              description=body.description)
    return await group_public(platform, group)


@router.delete("/groups/{group_id}", status_code=204, responses=error_responses(404))
async def delete_group(group_id: str, platform: PlatformDep, _: Deployer) -> None:
    """Delete the group; its projects stay, ungrouped."""
    await platform.store.delete_group(group_id)


@router.put("/groups/{group_id}/projects/{project}", response_model=GroupPublic,
            responses=error_responses(404))
async def assign_project(group_id: str, project: str, platform: PlatformDep,
                         _: Deployer) -> GroupPublic:
    """Put the project in this group (a project is in at most one)."""
    await platform.store.assign_group(group_id, project, member=True)
    return await get_group(group_id, platform, _)


@router.delete("/groups/{group_id}/projects/{project}", response_model=GroupPublic,
               responses=error_responses(404))
async def unassign_project(group_id: str, project: str, platform: PlatformDep,
                           _: Deployer) -> GroupPublic:
    await platform.store.assign_group(group_id, project, member=False)
    return await get_group(group_id, platform, _)
