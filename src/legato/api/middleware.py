"""Pure ASGI middleware (cheaper than BaseHTTPMiddleware on every request)."""

from __future__ import annotations

import re
import secrets
import time

from starlette.datastructures import MutableHeaders
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from starlette.websockets import WebSocket

from legato.api.errors import deny_websocket, error_response
from legato.auth import authenticate
from legato.errors import LegatoError
from legato.store import Token

PUBLIC_PATHS = frozenset({"/api/v1/health", "/health", "/metrics", "/docs", "/openapi.json"})
PUBLIC_PREFIXES = ("/docs/static/",)
# Git hosts sign their deliveries instead of sending a token (the route checks the signature).
SIGNED_POSTS = frozenset(f"/api/v1/webhooks/{p}" for p in ("github", "gitea", "gitlab"))
_TOUCH_EVERY_S = 60.0

_SAFE_ID = re.compile(r"^[A-Za-z0-9._-]{1,128}$")
# Browsers cannot set headers on a WebSocket: they offer the token as a subprotocol instead.
BEARER_SUBPROTOCOL = "bearer."


class RequestID:
    """Gives every request an id (the client's X-Request-ID if sane) and echoes it back."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        incoming = ""
        for key, value in scope["headers"]:
            if key == b"x-request-id":
                incoming = value.decode("latin-1")
                break
        request_id = incoming if _SAFE_ID.match(incoming) else f"req_{secrets.token_hex(8)}"
        scope.setdefault("state", {})["request_id"] = request_id
        if scope["type"] == "websocket":
            await self.app(scope, receive, send)
            return

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                MutableHeaders(scope=message)["X-Request-ID"] = request_id
            await send(message)

        await self.app(scope, receive, send_with_id)


class Authenticate:
    """Every request but the public ones needs a valid token, checked before anything else
    (before routing and body parsing), so a route can never forget it. Roles are checked by
    the routes' dependencies (api/deps.py)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self._touched: dict[str, float] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if scope["type"] == "websocket":
            await self._websocket(scope, receive, send)
            return
        if (scope["type"] != "http" or path in PUBLIC_PATHS or path.startswith(PUBLIC_PREFIXES)
                or (path in SIGNED_POSTS and scope.get("method") == "POST")):
            await self.app(scope, receive, send)
            return
        request = Request(scope)
        store = scope["app"].state.platform.store
        try:
            token = await authenticate(store, request.headers.get("authorization"))
        except LegatoError as exc:
            await error_response(request, exc)(scope, receive, send)
            return
        await self._admit(scope, receive, send, token)

    async def _websocket(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Every WebSocket needs a token: the Authorization header, or a `bearer.<token>`
        subprotocol (the route accepts with another one the client offered)."""
        websocket = WebSocket(scope, receive, send)
        header = websocket.headers.get("authorization")
        if header is None:
            offered = scope.get("subprotocols") or []
            bearer = next((p for p in offered if p.startswith(BEARER_SUBPROTOCOL)), None)
            header = f"Bearer {bearer.removeprefix(BEARER_SUBPROTOCOL)}" if bearer else None
        try:
            token = await authenticate(scope["app"].state.platform.store, header)
        except LegatoError as exc:
            await deny_websocket(websocket, exc)
            return
        await self._admit(scope, receive, send, token)

    async def _admit(self, scope: Scope, receive: Receive, send: Send, token: Token) -> None:
        store = scope["app"].state.platform.store
        now = time.monotonic()
        if now - self._touched.get(token.id, 0.0) > _TOUCH_EVERY_S:
            self._touched[token.id] = now
            await store.touch_token(token.id)
        scope.setdefault("state", {})["token"] = token
        await self.app(scope, receive, send)
