"""Dependencies shared by the routes: the platform, the caller's token, role checks."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated, Any

from fastapi import Depends
from starlette.requests import HTTPConnection

from legato.errors import Forbidden, Unauthorized
from legato.platform import Platform
from legato.store import Token
from legato.store.models import Role


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


def actor(token: Token) -> str:
    return f"token:{token.name}"


def error_responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI entries for the errors a route can answer, all in the one error shape."""
    descriptions = {
        400: "Bad request or state precondition", 401: "Missing or invalid token",
        403: "The token's role is not enough", 404: "Not found", 409: "Conflict",
        413: "Payload too large", 422: "Validation failed", 429: "Rate limited",
        503: "Not ready",
    }
    return {
        code: {"model": _error_model(), "description": descriptions[code]}
        for code in sorted({401, 403, 422, *codes})
    }


def _error_model() -> Any:
    from legato.api.schemas import ErrorBody

    return ErrorBody
