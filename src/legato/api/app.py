"""The FastAPI application: routers under /api/v1, errors in one shape, a request id each."""

from __future__ import annotations

from datetime import UTC, datetime

from fastapi import Depends, FastAPI
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles
from starlette.types import ASGIApp, Receive, Scope, Send
from swagger_ui_bundle import swagger_ui_path

from legato import __version__
from legato.api import errors
from legato.api.deps import scope_guard
from legato.api.middleware import ActivityLog, Gate, IdempotencyKeys, RequestID
from legato.api.ratelimit import RateLimiter
from legato.api.routes import (
    activity,
    deployments,
    groups,
    hooks,
    monitoring,
    projects,
    services,
    streams,
    system,
    tokens,
    users,
    webhooks,
)
from legato.platform import Platform
from legato.store import Token


def create_app(platform: Platform, *, guards: bool = True) -> FastAPI:
    """The API. `guards=False` leaves out token checks, rate limits, the activity trail and
    idempotency, running every request as `unguarded_token`: it exists only so that
    bench/guard_overhead.py can measure what they cost, and no setting reaches it."""
    app = FastAPI(
        title="Legato",
        version=__version__,
        description="Self-hosted application orchestration: one REST API for services on "
        "Docker behind HAProxy. Authenticate with `Authorization: Bearer lgt_...`.",
        redoc_url=None,
        docs_url=None,
    )
    app.state.platform = platform
    app.state.limiter = RateLimiter(lambda: platform.access.rate_limits)
    errors.install(app)
    for module in (services, deployments, projects, groups, webhooks, hooks, tokens, users,
                   activity, monitoring, streams):
        app.include_router(module.router, prefix="/api/v1", dependencies=[Depends(scope_guard)])
    app.include_router(system.router)
    _install_docs(app)
    # Added innermost first: RequestID runs first, so every error below carries the id.
    if guards:
        app.add_middleware(IdempotencyKeys)
        app.add_middleware(ActivityLog)
        app.add_middleware(Gate)
    else:
        app.add_middleware(_Unguarded)
    app.add_middleware(RequestID)
    return app


def _install_docs(app: FastAPI) -> None:
    """Swagger UI served from the package itself: a self-hosted install may have no internet."""
    app.mount("/docs/static", StaticFiles(directory=str(swagger_ui_path)), name="docs-static")

    @app.get("/docs", include_in_schema=False)
    async def docs() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url="/openapi.json", title="Legato API",
            swagger_js_url="/docs/static/swagger-ui-bundle.js",
            swagger_css_url="/docs/static/swagger-ui.css",
            swagger_favicon_url="/docs/static/favicon-32x32.png",
        )


unguarded_token = Token(id="tok_unguarded", name="unguarded", prefix="", role="admin",
                        created_at=datetime.now(UTC), expires_at=None, revoked_at=None,
                        last_used_at=None)


class _Unguarded:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        scope.setdefault("state", {})["token"] = unguarded_token
        await self.app(scope, receive, send)
