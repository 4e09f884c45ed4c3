"""Users (made by admins) and their login sessions (seed 002: email + password, 7 days,
renewable). Login is public and limited per client address (the `auth` rate class)."""

from __future__ import annotations

import secrets

from fastapi import APIRouter, Request

from legato.api.access_schemas import (
    LoginRequest,
    Session,
    TokenPublic,
    UserCreate,
    UserCreated,
    UserPublic,
    UserUpdate,
    WhoAmI,
    token_public,
    user_public,
)
from legato.api.deps import (
    CurrentToken,
    PlatformAdmin,
    PlatformDep,
    Viewer,
    error_responses,
    require_unscoped,
)
from legato.api.pagination import Cursor, Limit, decode, encode
from legato.api.ratelimit import RateLimited
from legato.api.schemas import Page
from legato.auth import check_login, hash_password, login, normalize_email, renew
from legato.errors import Conflict, Forbidden, Unauthorized
from legato.store.access import UserNotFound
from legato.store.models import Token

router = APIRouter(tags=["users"])


# sessions -----------------------------------------------------------------------------------


@router.post("/auth/login", response_model=Session, responses=error_responses())
async def log_in(body: LoginRequest, platform: PlatformDep) -> Session:
    """A session token for a user's email and password, valid `session_days` (7) days.
    At most 5 attempts a minute from one address (429 with Retry-After beyond)."""
    token, plaintext, user = await login(platform.store, body.email, body.password,
                                         days=platform.access.session_days)
    assert token.expires_at is not None
    return Session(token=plaintext, expires_at=token.expires_at, session=token_public(token),
                   user=user_public(user))


@router.post("/auth/renew", response_model=Session, responses=error_responses(400))
async def renew_session(platform: PlatformDep, token: CurrentToken) -> Session:
    """A new session in place of the caller's (which ends now), valid another 7 days."""
    session, plaintext = await renew(platform.store, token, days=platform.access.session_days)
    assert session.expires_at is not None and session.user_id is not None
    return Session(token=plaintext, expires_at=session.expires_at, session=token_public(session),
                   user=user_public(await platform.store.get_user(session.user_id)))


@router.post("/auth/logout", response_model=TokenPublic, responses=error_responses(400))
async def log_out(platform: PlatformDep, token: CurrentToken) -> TokenPublic:
    """End the caller's session (API tokens are revoked with DELETE /tokens/{id})."""
    if token.kind != "session":
        raise Unauthorized("only a session logs out; revoke an API token instead",
                           code="NOT_A_SESSION", status=400)
    return token_public(await platform.store.revoke_token(token.id))


@router.get("/auth/me", response_model=WhoAmI, responses=error_responses())
async def who_am_i(platform: PlatformDep, token: CurrentToken) -> WhoAmI:
    """The caller's token and user."""
    user = await platform.store.get_user(token.user_id) if token.user_id else None
    return WhoAmI(token=token_public(token), user=user_public(user) if user else None,
                  actor=token.actor)


# users --------------------------------------------------------------------------------------


@router.post("/users", status_code=201, response_model=UserCreated, responses=error_responses(409))
async def create_user(body: UserCreate, platform: PlatformDep, _: PlatformAdmin) -> UserCreated:
    """A new user; without a password one is made and shown in this response only."""
    made = None if body.password else secrets.token_urlsafe(18)
    user = await platform.store.create_user(
        email=normalize_email(body.email), name=body.name, role=body.role,
        password_hash=await hash_password(body.password or made or ""))
    return UserCreated(**user_public(user).model_dump(), password=made)


@router.get("/users", response_model=Page[UserPublic], responses=error_responses())
async def list_users(platform: PlatformDep, _: PlatformAdmin, limit: Limit = 20,
                     cursor: Cursor = None) -> Page[UserPublic]:
    """Users by email."""
    users = await platform.store.list_users(after=decode(cursor), limit=limit + 1)
    page = [user_public(u) for u in users[:limit]]
    return Page(items=page, next_cursor=encode(page[-1].email) if len(users) > limit else None)


@router.get("/users/{user_id}", response_model=UserPublic, responses=error_responses(404))
async def get_user(user_id: str, platform: PlatformDep, caller: Viewer) -> UserPublic:
    """A user (oneself, or anyone for an unscoped admin)."""
    _require_self_or_admin(caller, user_id)
    return user_public(await platform.store.get_user(user_id))


@router.patch("/users/{user_id}", response_model=UserPublic, responses=error_responses(404, 409))
async def update_user(user_id: str, body: UserUpdate, request: Request, platform: PlatformDep,
                      caller: Viewer) -> UserPublic:
    """Admins change role, name, password or disabled (which revokes every token of the
    user); users change their own name, and their password given the current one."""
    admin = _require_self_or_admin(caller, user_id)
    require_unscoped(caller, "an account is changed with a token scoped to no project")
    if not admin and (body.role is not None or body.disabled is not None):
        raise Forbidden("only an admin changes roles or disables users", code="INSUFFICIENT_ROLE")
    if user_id == caller.user_id and (body.disabled or (body.role and body.role != caller.role)):
        raise Conflict("one cannot disable or change the role of oneself", code="SELF_CHANGE")
    password_hash = None
    if body.password is not None:
        if user_id == caller.user_id:
            await _check_current_password(request, platform, user_id, body.current_password)
        password_hash = await hash_password(body.password)
    return user_public(await platform.store.update_user(
        user_id, role=body.role, name=body.name, password_hash=password_hash,
        disabled=body.disabled))


@router.delete("/users/{user_id}", response_model=UserPublic, responses=error_responses(404, 409))
async def delete_user(user_id: str, platform: PlatformDep, caller: PlatformAdmin) -> UserPublic:
    """Remove a user; every token and session of it is revoked."""
    if user_id == caller.user_id:
        raise Conflict("one cannot delete oneself", code="SELF_CHANGE")
    return user_public(await platform.store.delete_user(user_id))


def _require_self_or_admin(caller: Token, user_id: str) -> bool:
    """Whether the caller is an unscoped admin; else it must be the user (or it is a 404)."""
    if caller.platform_admin:
        return True
    if caller.user_id != user_id:
        raise UserNotFound(user_id)
    return False


async def _check_current_password(request: Request, platform: PlatformDep, user_id: str,
                                  current: str | None) -> None:
    """A password check is a login attempt: it counts in the `auth` class, per user."""
    verdict = request.app.state.limiter.hit(f"password:{user_id}", "auth")
    if not verdict.allowed:
        raise RateLimited(verdict, "auth")
    user = await platform.store.get_user(user_id)
    try:
        await check_login(platform.store, user.email, current or "")
    except Unauthorized as exc:
        raise Forbidden("give current_password to change your password",
                        code="CURRENT_PASSWORD_WRONG") from exc
