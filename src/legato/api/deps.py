"""Dependencies shared by the routes: the platform, the caller's token, role checks."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated, Any

from fastapi import Depends, Header
from starlette.requests import HTTPConnection

from legato.access import Grant, grant_for
from legato.errors import DeploymentNotFound, Forbidden, ServiceNotFound, Unauthorized
from legato.platform import Platform
from legato.store import Token
from legato.store.models import Role
from legato.store.projects import ProjectNotFound


def get_platform(request: HTTPConnection) -> Platform:
    platform: Platform = request.app.state.platform
    return platform


PlatformDep = Annotated[Platform, Depends(get_platform)]


def current_token(request: HTTPConnection) -> Token:
    """The caller's token, authenticated by the Authenticate middleware."""
    token: Token | None = getattr(request.state, "token", None)
    if token is None:
        raise Unauthorized("missing bearer token", code="TOKEN_MISSING")
    return token


CurrentToken = Annotated[Token, Depends(current_token)]


def require(role: Role) -> Callable[..., Awaitable[Token]]:
    async def check(token: CurrentToken) -> Token:
        if not token.allows(role):
            raise Forbidden(f"this needs the {role} role; the token has {token.role}",
                            code="INSUFFICIENT_ROLE", details={"required": role,
                                                                "role": token.role})
        return token

    return check


Viewer = Annotated[Token, Depends(require("viewer"))]
Deployer = Annotated[Token, Depends(require("deployer"))]
Admin = Annotated[Token, Depends(require("admin"))]


class ScopeRefused(Forbidden):
    """What a token scoped to projects may not do (`why`)."""

    code = "TOKEN_SCOPE"

    def __init__(self, token: Token, why: str) -> None:
        super().__init__(why, details={"projects": list(token.projects)})


def require_unscoped(token: Token, why: str) -> Token:
    if token.scoped:
        raise ScopeRefused(token, why)
    return token


async def _platform_admin(token: Admin) -> Token:
    """Platform-wide operations (users, configuration, keys, every token) need an admin
    token that is not scoped to projects."""
    return require_unscoped(token, "this is a platform-wide operation; the token is scoped "
                                   "to projects")


PlatformAdmin = Annotated[Token, Depends(_platform_admin)]


IfMatch = Annotated[str | None, Header(
    description="The ETag of GET /services/{name}/spec: the write fails (412) if it changed")]


def actor(token: Token) -> str:
    return token.actor


def grant(token: Token, platform: Platform) -> Grant:
    """What the caller may deploy beyond an ordinary spec: privileged fields are for admins
    scoped to no project (a privileged container is the host's, not a project's)."""
    return grant_for(token.platform_admin, platform.access)


def visible(token: Token) -> list[str] | None:
    """The projects a token sees (None: all of them)."""
    return list(token.projects) if token.scoped else None


def require_project(token: Token, project: str) -> None:
    """A project the token does not see does not exist for it."""
    if not token.sees(project):
        raise ProjectNotFound(project)


async def scope_guard(request: HTTPConnection) -> None:
    """Run before every route under /api/v1: a token scoped to projects finds the objects of
    other projects exactly as it finds missing ones (404), whichever route it asks. Objects
    are found by the route's path parameters: a service `name`, a `project`, a
    `deployment_id`. Lists and bodies that name projects are filtered by their routes."""
    token: Token | None = getattr(request.state, "token", None)
    if token is None or not token.scoped:
        return
    params = request.path_params
    store = request.app.state.platform.store
    path = request.url.path
    if "project" in params:
        require_project(token, params["project"])
    if "name" in params:
        if path.startswith("/api/v1/projects/check-name/"):
            require_project(token, params["name"])
        elif path.startswith("/api/v1/services/"):
            # Missing and unseen alike, before the body is read: no answer tells them apart.
            service = store.service_now(params["name"])
            if service is None or not token.sees(service.project):
                raise ServiceNotFound(params["name"])
    if "deployment_id" in params:
        deployment = await store.get_deployment(params["deployment_id"])
        service = store.service_now(deployment.service)
        if service is None or not token.sees(service.project):
            raise DeploymentNotFound(params["deployment_id"])


def error_responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI entries for the errors a route can answer, all in the one error shape."""
    descriptions = {
        400: "Bad request or state precondition", 401: "Missing or invalid token",
        403: "The token's role or scope is not enough", 404: "Not found", 409: "Conflict",
        412: "The resource changed since it was read (If-Match)",
        413: "Payload too large", 422: "Validation failed", 429: "Rate limited",
        503: "Not ready",
    }
    return {
        code: {"model": _error_model(), "description": descriptions[code]}
        for code in sorted({401, 403, 422, 429, *codes})
    }


def _error_model() -> Any:
    from legato.api.schemas import ErrorBody

    return ErrorBody
