"""Project groups: workspaces that bundle related projects (seed 000). Groups belong to the
whole installation: tokens scoped to projects read them (showing only their own projects) and
put their projects in or out of them, but do not create, rename or delete them."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends

from legato.api.deps import (
    Deployer,
    PlatformDep,
    Viewer,
    error_responses,
    require_unscoped,
    visible,
)
from legato.api.schemas import GroupCreate, GroupPublic, GroupUpdate
from legato.platform import Platform
from legato.store.models import Group, Token

router = APIRouter(tags=["groups"])


async def _unscoped_deployer(token: Deployer) -> Token:
    return require_unscoped(token, "groups span projects: a token scoped to projects cannot "
                                   "change them")


GroupWriter = Annotated[Token, Depends(_unscoped_deployer)]


async def group_public(platform: Platform, group: Group, token: Token) -> GroupPublic:
    projects = await platform.store.list_projects(group_id=group.id, limit=10_000,
                                                  names=visible(token))
    return GroupPublic(id=group.id, name=group.name, description=group.description,
                       projects=[p.name for p in projects], created_at=group.created_at,
                       updated_at=group.updated_at)


@router.get("/groups", response_model=list[GroupPublic], responses=error_responses())
async def list_groups(platform: PlatformDep, token: Viewer) -> list[GroupPublic]:
    """Groups by name, with their projects."""
    return [await group_public(platform, g, token) for g in await platform.store.list_groups()]


@router.post("/groups", status_code=201, response_model=GroupPublic,
             responses=error_responses(409))
async def create_group(body: GroupCreate, platform: PlatformDep, token: GroupWriter) -> GroupPublic:
    group = await platform.store.create_group(body.name, body.description)
    return await group_public(platform, group, token)


@router.get("/groups/{group_id}", response_model=GroupPublic, responses=error_responses(404))
async def get_group(group_id: str, platform: PlatformDep, token: Viewer) -> GroupPublic:
    return await group_public(platform, await platform.store.get_group(group_id), token)


@router.patch("/groups/{group_id}", response_model=GroupPublic,
              responses=error_responses(404, 409))
async def update_group(group_id: str, body: GroupUpdate, platform: PlatformDep,
                       token: GroupWriter) -> GroupPublic:
    group = await platform.store.update_group(group_id, name=body.name,
                                              description=body.description)
    return await group_public(platform, group, token)


@router.delete("/groups/{group_id}", status_code=204, responses=error_responses(404))
async def delete_group(group_id: str, platform: PlatformDep, _: GroupWriter) -> None:
    """Delete the group; its projects stay, ungrouped."""
    await platform.store.delete_group(group_id)


@router.put("/groups/{group_id}/projects/{project}", response_model=GroupPublic,
            responses=error_responses(404))
async def assign_project(group_id: str, project: str, platform: PlatformDep,
                         token: Deployer) -> GroupPublic:
    """Put the project in this group (a project is in at most one)."""
    await platform.store.assign_group(group_id, project, member=True)
    return await get_group(group_id, platform, token)


@router.delete("/groups/{group_id}/projects/{project}", response_model=GroupPublic,
               responses=error_responses(404))
async def unassign_project(group_id: str, project: str, platform: PlatformDep,
                           token: Deployer) -> GroupPublic:
    await platform.store.assign_group(group_id, project, member=False)
    return await get_group(group_id, platform, token)
