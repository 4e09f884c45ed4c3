"""Request and response bodies of users, sessions, tokens, activity and notifications."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, Field

from legato.api.schemas import _In
from legato.store.models import Activity, Notification, Role, Token, User

# users and sessions -----------------------------------------------------------------------


class UserCreate(_In):
    email: str = Field(min_length=3, max_length=254)
    name: str = Field("", max_length=200)
    role: Role = "viewer"
    password: str | None = Field(None, description="Omitted: one is made and shown once",
                                 max_length=1024)


class UserUpdate(_In):
    name: str | None = Field(None, max_length=200)
    role: Role | None = Field(None, description="Admins only")
    disabled: bool | None = Field(None, description="Admins only; revokes every token")
    password: str | None = Field(None, max_length=1024)
    current_password: str | None = Field(
        None, max_length=1024, description="Needed to change one's own password")


class UserPublic(BaseModel):
    id: str
    email: str
    name: str
    role: str
    created_at: datetime
    updated_at: datetime
    disabled: bool
    last_login_at: datetime | None


class UserCreated(UserPublic):
    password: str | None = Field(None, description="The password made here; shown this once")


class LoginRequest(_In):
    email: str = Field(min_length=1, max_length=254)
    password: str = Field(min_length=1, max_length=1024)


class TokenCreate(_In):
    name: str = Field(min_length=1, max_length=100)
    role: Role | None = Field(None, description="At most the caller's; default the caller's")
    expires_in_days: Literal[30, 90, 180, 365] | None = None
    projects: list[str] = Field(default_factory=list, max_length=100)


class TokenPublic(BaseModel):
    id: str
    name: str
    prefix: str
    role: str
    kind: str
    projects: list[str]
    user_id: str | None
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None
    last_used_at: datetime | None


class TokenCreated(TokenPublic):
    token: str = Field(description="The token itself; shown this once, never again")


class Session(BaseModel):
    token: str = Field(description="A bearer token for this session; shown this once")
    expires_at: datetime
    session: TokenPublic
    user: UserPublic


class WhoAmI(BaseModel):
    token: TokenPublic
    user: UserPublic | None
    actor: str


# activity and notifications ---------------------------------------------------------------


class ActivityPublic(BaseModel):
    id: int
    at: datetime
    actor: str
    actor_id: str | None
    action: str
    method: str
    path: str
    target: str | None
    project: str | None
    status: int
    result: str
    request_id: str
    ip: str | None


class ActivityPage(BaseModel):
    items: list[ActivityPublic]
    next_cursor: str | None = None


class NotificationPublic(BaseModel):
    id: int
    at: datetime
    kind: str
    title: str
    message: str
    project: str | None
    service: str | None
    data: dict[str, Any]
    read: bool


class NotificationList(BaseModel):
    items: list[NotificationPublic]
    unread: int


class MarkedRead(BaseModel):
    marked: int


def user_public(user: User) -> UserPublic:
    return UserPublic(id=user.id, email=user.email, name=user.name, role=user.role,
                      created_at=user.created_at, updated_at=user.updated_at,
                      disabled=user.disabled_at is not None, last_login_at=user.last_login_at)


def token_public(token: Token) -> TokenPublic:
    return TokenPublic(
        id=token.id, name=token.name, prefix=token.prefix, role=token.role, kind=token.kind,
        projects=list(token.projects), user_id=token.user_id, created_at=token.created_at,
        expires_at=token.expires_at, revoked_at=token.revoked_at, last_used_at=token.last_used_at,
    )


def activity_public(record: Activity) -> ActivityPublic:
    return ActivityPublic(**{f: getattr(record, f) for f in ActivityPublic.model_fields})


def notification_public(note: Notification) -> NotificationPublic:
    return NotificationPublic(**{f: getattr(note, f) for f in NotificationPublic.model_fields})
