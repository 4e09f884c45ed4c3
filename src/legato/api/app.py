"""The FastAPI application: routers under /api/v1, errors in one shape, a request id each."""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles
from swagger_ui_bundle import swagger_ui_path

from legato import __version__
from legato.api import errors
from legato.api.middleware import Authenticate, RequestID
from legato.api.routes import (
    deployments,
    groups,
    monitoring,
    projects,
    services,
    streams,
    system,
    tokens,
    webhooks,
)
from legato.platform import Platform


def create_app(platform: Platform) -> FastAPI:
    app = FastAPI(
        title="Legato",
        version=__version__,
        description="Self-hosted application orchestration: one REST API for services on "
        "Docker behind HAProxy. Authenticate with `Authorization: Bearer lgt_...`.",
        redoc_url=None,
        docs_url=None,
    )
    app.state.platform = platform
    errors.install(app)
    for module in (services, deployments, projects, groups, webhooks, tokens, monitoring, streams):
        app.include_router(module.router, prefix="/api/v1")
    app.include_router(system.router)
    _install_docs(app)
    app.add_middleware(Authenticate)
    app.add_middleware(RequestID)  # added last, runs first: errors above carry the id
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
