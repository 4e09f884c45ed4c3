"""Every error, whatever raised it, leaves the API in SPEC §3's shape."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import HTTPConnection
from starlette.websockets import WebSocket

from legato.errors import LegatoError

log = logging.getLogger(__name__)

_HTTP_CODES = {
    400: "BAD_REQUEST", 401: "UNAUTHORIZED", 403: "FORBIDDEN", 404: "NOT_FOUND",
    405: "METHOD_NOT_ALLOWED", 409: "CONFLICT", 413: "PAYLOAD_TOO_LARGE", 415: "UNSUPPORTED_MEDIA_TYPE",
    422: "VALIDATION_FAILED", 429: "RATE_LIMITED", 503: "UNAVAILABLE",
}


def error_body(request: HTTPConnection, message: str, code: str,
               details: Any = None) -> dict[str, Any]:
    return {
        "error": message,
        "code": code,
        "details": details if details is not None else {},
        "request_id": getattr(request.state, "request_id", ""),
    }


def error_response(request: HTTPConnection, exc: LegatoError) -> JSONResponse:
    headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else None
    return JSONResponse(error_body(request, exc.message, exc.code, exc.details),
                        status_code=exc.status, headers=headers)


async def deny_websocket(websocket: WebSocket, exc: LegatoError) -> None:
    """Refuse a WebSocket before accepting it: with the error as an HTTP answer where the
    server can send one, else by closing (policy violation; the reason names the error)."""
    if "websocket.http.response" in websocket.scope.get("extensions", {}):
        await websocket.send_denial_response(error_response(websocket, exc))
    else:
        await websocket.close(code=1008, reason=f"{exc.code}: {exc.message}"[:120])


def install(app: FastAPI) -> None:
    @app.exception_handler(LegatoError)
    async def legato_error(request: Request, exc: LegatoError) -> JSONResponse:
        return error_response(request, exc)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [
            {"field": _field(err), "message": err["msg"], "type": err["type"]}
            for err in exc.errors()
        ]
        first = errors[0] if errors else {"field": "(body)", "message": "invalid request"}
        return JSONResponse(
            error_body(request, f"invalid request: {first['field']}: {first['message']}",
                       "VALIDATION_FAILED", {"errors": errors}),
            status_code=422,
        )

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        if exc.status_code == 404 and exc.detail == "Not Found":
            message = f"route not found: {request.method} {request.url.path}"
        elif exc.status_code == 405:
            message = f"method not allowed: {request.method} {request.url.path}"
        else:
            message = str(exc.detail)
        code = _HTTP_CODES.get(exc.status_code, "ERROR")
        return JSONResponse(error_body(request, message, code), status_code=exc.status_code,
                            headers=getattr(exc, "headers", None))

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return JSONResponse(
            error_body(request, "internal error", "INTERNAL_ERROR", {"type": type(exc).__name__}),
            status_code=500,
        )


def _field(error: dict[str, Any]) -> str:
    if error["type"] == "json_invalid":
        return "(body)"  # its location is a character offset, not a field
    return ".".join(str(part) for part in error["loc"] if part != "body") or "(body)"
