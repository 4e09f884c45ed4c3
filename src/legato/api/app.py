"""The FastAPI application: routers under /api/v1, errors in one shape, a request id each."""

from __future__ import annotations

from fastapi import FastAPI

from legato import __version__
from legato.api import errors
from legato.api.middleware import RequestID
from legato.api.routes import deployments, services, system, tokens
from legato.platform import Platform

PUBLIC_PATHS = frozenset({"/api/v1/health", "/health", "/metrics", "/docs", "/openapi.json",
                          "/docs/oauth2-redirect", "/redoc"})


def create_app(platform: Platform) -> FastAPI:
    app = FastAPI(
        title="Legato",
        version=__version__,
        description="Self-hosted application orchestration: one REST API for services on "
        "Docker behind HAProxy. Authenticate with `Authorization: Bearer lgt_...`.",
        redoc_url=None,
    )
    app.state.platform = platform
    errors.install(app)
    for module in (services, deployments, tokens):
        app.include_router(module.router, prefix="/api/v1")
    app.include_router(system.router)
    app.add_middleware(RequestID)
    return app
