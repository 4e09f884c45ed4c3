"""The activity trail (every write: actor, action, target, result, request id) and in-product
notifications (seed 000)."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Path, Query

from legato.api.access_schemas import (
    ActivityPage,
    MarkedRead,
    NotificationList,
    activity_public,
    notification_public,
)
from legato.api.deps import PlatformDep, Viewer, error_responses, visible
from legato.api.pagination import MAX_ID, Limit, number
from legato.store.models import Token
from legato.timeparse import parse_since

router = APIRouter(tags=["activity"])


def _viewer(token: Token) -> str | None:
    """An unscoped admin sees every record; anyone else its own and its projects'."""
    return None if token.platform_admin else token.principal


@router.get("/activity", response_model=ActivityPage, responses=error_responses())
async def list_activity(
    platform: PlatformDep,
    token: Viewer,
    actor: str | None = None,
    action: str | None = None,
    target: Annotated[str | None, Query(description="e.g. name:web")] = None,
    project: str | None = None,
    result: Literal["success", "failure"] | None = None,
    since: Annotated[str | None, Query(description="10m, 2h, 1d or an ISO time")] = None,
    limit: Limit = 20,
    cursor: Annotated[str | None, Query(description="From the previous page's next_cursor")] = None,
) -> ActivityPage:
    """Writes through the API, newest first: the caller's own, and those of the projects it
    sees (platform-wide ones, such as users and tokens, for unscoped admins)."""
    records = await platform.store.list_activity(
        visible_to=_viewer(token), projects=visible(token),
        before_id=number(cursor), limit=limit + 1, actor=actor, action=action,
        target=target, project=project, result=result, since=parse_since(since))
    page = records[:limit]
    more = len(records) > limit
    return ActivityPage(items=[activity_public(r) for r in page],
                        next_cursor=str(page[-1].id) if more else None)


@router.get("/notifications", response_model=NotificationList, responses=error_responses())
async def list_notifications(platform: PlatformDep, token: Viewer, unread: bool = False,
                             limit: Annotated[int, Query(ge=1, le=50)] = 50) -> NotificationList:
    """The 50 most recent notifications: failed deployments and crash loops of the projects
    the caller sees, and its tokens about to expire."""
    notes = await platform.store.list_notifications(token.principal, visible(token),
                                                    limit=limit, unread=unread)
    count = await platform.store.count_unread(token.principal, visible(token))
    return NotificationList(items=[notification_public(n) for n in notes], unread=count)


@router.post("/notifications/read-all", response_model=MarkedRead, responses=error_responses())
async def read_all(platform: PlatformDep, token: Viewer) -> MarkedRead:
    """Mark every notification read (for the caller)."""
    return MarkedRead(marked=await platform.store.mark_read(token.principal, visible(token)))


@router.post("/notifications/{notification_id}/read", response_model=MarkedRead,
             responses=error_responses(404))
async def read_one(notification_id: Annotated[int, Path(ge=1, le=MAX_ID)], platform: PlatformDep,
                   token: Viewer) -> MarkedRead:
    """Mark one notification read (for the caller)."""
    return MarkedRead(marked=await platform.store.mark_read(
        token.principal, visible(token), notification_id))
