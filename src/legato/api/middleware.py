"""Pure ASGI middleware (cheaper than BaseHTTPMiddleware on every request), outermost first:
RequestID, Gate (token and rate limit), ActivityLog (the audit trail of writes) and
IdempotencyKeys."""

from __future__ import annotations

import hashlib
import logging
import re
import secrets
import time
from datetime import UTC, datetime

from starlette.datastructures import MutableHeaders
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from starlette.websockets import WebSocket

from legato.api.errors import deny_websocket, error_response
from legato.api.ratelimit import RateLimited, RateLimiter, request_class
from legato.auth import authenticate
from legato.errors import Conflict, LegatoError, ValidationFailed
from legato.store import Store, Token
from legato.store.access import Idempotency as KnownKey
from legato.store.models import Activity

log = logging.getLogger(__name__)

PUBLIC_PATHS = frozenset({"/api/v1/health", "/health", "/metrics", "/docs", "/openapi.json"})
PUBLIC_PREFIXES = ("/docs/static/",)
# Git hosts sign their deliveries instead of sending a token (the route checks the signature);
# a login is how one gets a token.
PUBLIC_POSTS = frozenset({*(f"/api/v1/webhooks/{p}" for p in ("github", "gitea", "gitlab")),
                          "/api/v1/auth/login"})
_TOUCH_EVERY_S = 60.0

_SAFE_ID = re.compile(r"^[A-Za-z0-9._-]{1,128}$")
# Browsers cannot set headers on a WebSocket: they offer the token as a subprotocol instead.
BEARER_SUBPROTOCOL = "bearer."


def _client(scope: Scope) -> str:
    client = scope.get("client")
    return str(client[0]) if client else "unknown"


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


class Gate:
    """Every request but the public ones needs a valid token, checked before anything else
    (before routing and body parsing), so a route can never forget it; then the rate limit of
    its class, per token (per client address for requests without one), with X-RateLimit-*
    on every response. Roles and project scopes are checked by the routes' dependencies
    (api/deps.py)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self._touched: dict[str, float] = {}

    @staticmethod
    def _limit(scope: Scope) -> RateLimiter:
        limiter: RateLimiter = scope["app"].state.limiter
        return limiter

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket":
            await self._websocket(scope, receive, send)
            return
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path, method = scope.get("path", ""), scope.get("method", "GET")
        klass = request_class(method, path)
        token: Token | None = None
        if not (path in PUBLIC_PATHS or path.startswith(PUBLIC_PREFIXES)
                or (path in PUBLIC_POSTS and method == "POST")):
            request = Request(scope)
            try:
                token = await authenticate(scope["app"].state.platform.store,
                                           request.headers.get("authorization"))
            except LegatoError as exc:
                # Refused tokens count against the address: guessing is limited too.
                verdict = self._limit(scope).hit(_client(scope), klass)
                refusal = exc if verdict.allowed else RateLimited(verdict, klass)
                await self._answer(scope, receive, send, refusal, verdict.headers())
                return
        verdict = self._limit(scope).hit(token.id if token else _client(scope), klass)
        headers = verdict.headers()
        if not verdict.allowed:
            await self._answer(scope, receive, send, RateLimited(verdict, klass), headers)
            return
        if token is not None:
            await self._admit(scope, token)

        async def send_with_limits(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", ()), *headers]
            await send(message)

        await self.app(scope, receive, send_with_limits)

    @staticmethod
    async def _answer(scope: Scope, receive: Receive, send: Send, exc: LegatoError,
                      headers: list[tuple[bytes, bytes]]) -> None:
        response = error_response(Request(scope), exc)
        response.raw_headers.extend(headers)
        await response(scope, receive, send)

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
            verdict = self._limit(scope).hit(token.id, "reads")
            if not verdict.allowed:
                raise RateLimited(verdict, "reads")
        except LegatoError as exc:
            await deny_websocket(websocket, exc)
            return
        await self._admit(scope, token)
        await self.app(scope, receive, send)

    async def _admit(self, scope: Scope, token: Token) -> None:
        now = time.monotonic()
        if now - self._touched.get(token.id, 0.0) > _TOUCH_EVERY_S:
            self._touched[token.id] = now
            await scope["app"].state.platform.store.touch_token(token.id)
        scope.setdefault("state", {})["token"] = token


_WRITES = frozenset({"POST", "PUT", "PATCH", "DELETE"})
# Path parameters that name what a request acts on, in order of preference.
_TARGETS = ("deployment_id", "name", "project", "user_id", "token_id", "group_id", "webhook_id",
            "endpoint_id", "notification_id", "key", "environment", "tag")


class ActivityLog:
    """Records every write through the API (seed 000's activity): who, what, on what, how it
    ended, and the request id, once the response is sent."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("method") not in _WRITES:
            await self.app(scope, receive, send)
            return
        status = 500
        # The project is looked up before the request runs: a removal leaves nothing after.
        project = await _project_of(scope)

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            try:
                await self._record(scope, status, project)
            except Exception:
                log.exception("could not record activity of %s %s", scope.get("method"),
                              scope.get("path"))

    @staticmethod
    async def _record(scope: Scope, status: int, project: str | None) -> None:
        platform = scope["app"].state.platform
        state = scope.get("state", {})
        token: Token | None = state.get("token")
        route = scope.get("route")
        params: dict[str, str] = scope.get("path_params") or {}
        target_key = next((k for k in _TARGETS if k in params), None)
        path = scope.get("path", "")
        project = project or state.get("activity_project") or params.get("project")
        if token is not None and project is not None and not token.sees(project):
            project = None  # the caller's own record must not name a project it cannot see
        tags = getattr(route, "tags", None) or ["api"]
        action = f"{tags[0]}.{route.name}" if route is not None else "unrouted"
        await platform.store.add_activity(Activity(
            id=0, at=datetime.now(UTC),
            actor=token.actor if token else _anonymous(path, scope),
            actor_id=token.principal if token else None,
            action=action, method=scope.get("method", ""), path=path,
            target=f"{target_key}:{params[target_key]}" if target_key else None,
            project=project, status=status, result="success" if status < 400 else "failure",
            request_id=state.get("request_id", ""), ip=_client(scope)))


async def _project_of(scope: Scope) -> str | None:
    """The project a write acts on, as far as its path tells (before routing: by its shape)."""
    store: Store = scope["app"].state.platform.store
    parts: list[str] = str(scope.get("path", "")).split("/")
    if len(parts) < 5 or parts[:3] != ["", "api", "v1"]:
        return None
    kind, key = parts[3], parts[4]
    if kind == "projects" and key != "check-name":
        return key
    if kind == "services":
        service = store.service_now(key)
        return service.project if service else None
    if kind == "deployments":
        try:
            deployment = await store.get_deployment(key)
        except LegatoError:
            return None
        service = store.service_now(deployment.service)
        return service.project if service else None
    return None


def _anonymous(path: str, scope: Scope) -> str:
    if path.startswith("/api/v1/webhooks/"):
        return f"webhook:{path.rsplit('/', 1)[-1]}"
    return f"address:{_client(scope)}"


_MAX_KEY = 255
_MAX_IDEMPOTENT_BODY = 10 * 1024 * 1024


class IdempotencyKeys:
    """`Idempotency-Key` on POSTs (IETF draft semantics), scoped to the token: the first
    request with a key runs; a retry with the same body gets its response again (with
    `Idempotent-Replayed: true`); the same key with another body is a 422, and while the
    first still runs a 409. Responses of 5xx are not kept, so a retry runs again."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        token: Token | None = scope.get("state", {}).get("token")
        key = _header(scope, b"idempotency-key") if scope["type"] == "http" and \
            scope.get("method") == "POST" else None
        if key is None or token is None:
            await self.app(scope, receive, send)
            return
        request = Request(scope)
        if not key or len(key) > _MAX_KEY or not key.isprintable():
            await error_response(request, ValidationFailed(
                f"Idempotency-Key must be 1 to {_MAX_KEY} printable characters",
                code="IDEMPOTENCY_KEY_INVALID"))(scope, receive, send)
            return
        body, more = b"", True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return  # the client left mid-body: nothing ran, the key stays free
            body += message.get("body", b"")
            more = message.get("more_body", False)
            if len(body) > _MAX_IDEMPOTENT_BODY:
                await error_response(request, LegatoError(
                    "request body too large", code="PAYLOAD_TOO_LARGE", status=413))(
                    scope, receive, send)
                return
        fingerprint = hashlib.sha256(b"\n".join([
            scope["method"].encode(), scope["path"].encode(), scope.get("query_string", b""),
            body])).hexdigest()
        store = scope["app"].state.platform.store
        known = await store.claim_idempotency_key(token.id, key, fingerprint)
        if known is not None:
            await self._answer_known(scope, receive, send, request, known, fingerprint)
            return
        await self._run(scope, send, store, token.id, key, body)

    async def _run(self, scope: Scope, send: Send, store: Store, owner: str, key: str,
                   body: bytes) -> None:
        replayed = False

        async def receive_body() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return {"type": "http.disconnect"}

        status = 500
        headers: list[tuple[str, str]] = []
        chunks: list[bytes] = []

        async def capture(message: Message) -> None:
            nonlocal status, headers
            if message["type"] == "http.response.start":
                status = int(message["status"])
                headers = [(k.decode("latin-1"), v.decode("latin-1"))
                           for k, v in message.get("headers", ())
                           if k.lower() not in (b"x-request-id", b"content-length")
                           and not k.lower().startswith(b"x-ratelimit")]
            elif message["type"] == "http.response.body":
                chunks.append(message.get("body", b""))
            await send(message)

        try:
            await self.app(scope, receive_body, capture)
        finally:
            if status < 500:
                await store.finish_idempotency_key(owner, key, status, headers, b"".join(chunks))
            else:
                await store.release_idempotency_key(owner, key)

    @staticmethod
    async def _answer_known(scope: Scope, receive: Receive, send: Send, request: Request,
                            known: KnownKey, fingerprint: str) -> None:
        if known.fingerprint != fingerprint:
            exc: LegatoError = ValidationFailed(
                "this Idempotency-Key was used for another request; use a new key",
                code="IDEMPOTENCY_KEY_REUSED")
        elif known.state != "done":
            exc = Conflict("a request with this Idempotency-Key is still running; retry later",
                           code="IDEMPOTENCY_KEY_IN_USE")
        else:
            raw = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in known.headers or []]
            body = known.body or b""
            await send({"type": "http.response.start", "status": known.status or 200,
                        "headers": [*raw, (b"content-length", str(len(body)).encode()),
                                    (b"idempotent-replayed", b"true")]})
            await send({"type": "http.response.body", "body": body})
            return
        await error_response(request, exc)(scope, receive, send)


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", ()):
        if key == name:
            return str(value.decode("latin-1")).strip()
    return None
