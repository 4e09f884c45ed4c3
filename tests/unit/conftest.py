"""Unit fixtures: a Platform over a temporary SQLite store, the in-memory FakeRuntime and a
FakeEdge, plus an HTTP client on the ASGI app (no sockets) and a token of each role."""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import urllib.parse
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from legato.api.app import create_app
from legato.auth import issue_token
from legato.config import Settings
from legato.crypto import Keyring
from legato.edge.base import Edge, Route
from legato.errors import EdgeFailure
from legato.health import HealthMonitor, ProbeResult
from legato.platform import Platform
from legato.runtime.base import Replica
from legato.runtime.fake import FakeRuntime
from legato.spec import HealthCheck
from legato.store import Store

BASE_URL = "http://legato.test"


class FakeEdge:
    """An Edge that only remembers what it was told to route."""

    url = "http://edge.test"

    def __init__(self) -> None:
        self.started = False
        self.available = True
        self.apply_error: EdgeFailure | None = None
        self.applied: list[tuple[Route, ...]] = []
        self.in_flight: dict[tuple[str, str], int] = {}  # (service, upstream) -> requests
        self._routes: tuple[Route, ...] = ()

    async def start(self) -> None:
        self.started = True

    def routes(self) -> Sequence[Route]:
        return self._routes

    async def apply(self, routes: Sequence[Route]) -> None:
        if self.apply_error is not None:
            raise self.apply_error
        self._routes = tuple(routes)
        self.applied.append(self._routes)

    async def sessions(self, service: str, upstream: str) -> int:
        return self.in_flight.get((service, upstream), 0)

    async def backend_sessions(self) -> dict[str, int]:
        found: dict[str, int] = {}
        for (service, _), count in self.in_flight.items():
            found[service] = found.get(service, 0) + count
        return found

    async def ping(self) -> None:
        if not self.available:
            raise EdgeFailure("fake edge is unavailable")

    async def shutdown(self) -> None:
        self.started = False


def _is_edge(edge: FakeEdge) -> Edge:
    """Type-checks FakeEdge against the Edge protocol."""
    return edge


@dataclass(frozen=True)
class Tokens:
    """A live token (plaintext) of each role, issued through legato.auth.issue_token."""

    admin: str
    deployer: str
    viewer: str


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    # Generous rate limits: tests of the limits themselves set their own.
    return Settings(data_dir=tmp_path, instance="unit", rate_limits=dict.fromkeys(
        ("reads", "writes", "bulk", "auth", "webhooks"), 100_000))


@pytest.fixture
def master_key() -> bytes:
    return secrets.token_bytes(32)


@pytest.fixture
def store(tmp_path: Path, master_key: bytes) -> Iterator[Store]:
    db = Store(tmp_path / "db", Keyring(master_key))
    yield db
    db.close()


@pytest.fixture
def runtime() -> FakeRuntime:
    return FakeRuntime(log_lines=["booting", "listening on :8080"])


@pytest.fixture
def edge() -> FakeEdge:
    return FakeEdge()


@pytest.fixture
async def platform(
    settings: Settings, store: Store, runtime: FakeRuntime, edge: FakeEdge
) -> AsyncIterator[Platform]:
    """A Platform that is never start()ed: no watch or resync loop, only passes on demand.

    API writes still trigger reconcile passes against the fake runtime; close() cancels them
    and the health probes they began.
    """
    platform = Platform(settings, store, runtime, edge)
    yield platform
    await platform.close()


class StreamingASGITransport(httpx.AsyncBaseTransport):
    """httpx's ASGITransport answers only once the app has finished; this one answers when the
    response starts and streams the body, so an endless stream (SSE) can be read in part, and
    closing the response tells the app that the client left."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        body = await request.aread()
        scope = {
            "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1",
            "method": request.method, "scheme": request.url.scheme,
            "headers": [(k.lower(), v) for k, v in request.headers.raw],
            "path": urllib.parse.unquote(request.url.path), "raw_path": request.url.raw_path,
            "query_string": request.url.query, "root_path": "",
            "server": (request.url.host, request.url.port or 80), "client": ("127.0.0.1", 123),
        }
        started: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        parts: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        gone = asyncio.Event()
        sent = False

        async def receive() -> dict[str, Any]:
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            await gone.wait()
            return {"type": "http.disconnect"}

        async def send(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                started.set_result(message)
            elif message["type"] == "http.response.body":
                await parts.put(message)

        async def run() -> None:
            try:
                await self.app(scope, receive, send)
            except BaseException as exc:
                if not started.done():
                    started.set_exception(exc)
                raise
            finally:
                await parts.put({"body": b"", "more_body": False})

        task = asyncio.create_task(run())
        start = await started
        return httpx.Response(start["status"], headers=start.get("headers", []),
                              stream=_AppBody(parts, task, gone))


class _AppBody(httpx.AsyncByteStream):
    def __init__(self, parts: asyncio.Queue[dict[str, Any]], task: asyncio.Task[None],
                 gone: asyncio.Event) -> None:
        self.parts, self.task, self.gone = parts, task, gone

    async def __aiter__(self) -> AsyncIterator[bytes]:
        while True:
            message = await self.parts.get()
            if message.get("body"):
                yield message["body"]
            if not message.get("more_body", False):
                return

    async def aclose(self) -> None:
        self.gone.set()
        with contextlib.suppress(BaseException):
            await asyncio.wait_for(self.task, 5)


@pytest.fixture
async def client(platform: Platform) -> AsyncIterator[httpx.AsyncClient]:
    transport = StreamingASGITransport(create_app(platform))
    async with httpx.AsyncClient(transport=transport, base_url=BASE_URL) as http:
        yield http


@pytest.fixture
async def tokens(store: Store) -> Tokens:
    plaintext = {}
    for role in ("admin", "deployer", "viewer"):
        _, plaintext[role] = await issue_token(store, name=f"unit-{role}", role=role)
    return Tokens(**plaintext)


# deployments through the API, with health answers the test controls --------------------------

IMAGE = "legato-test/busybox:latest"
IMAGE_2 = "legato-test/busybox:2"
FAST = {"path": "/healthz", "interval_s": 0.05, "timeout_s": 1, "failure_threshold": 2}


class Probes:
    """Health answers by host port: healthy unless the port (or every new one) is failing."""

    def __init__(self) -> None:
        self.failing_ports: set[int] = set()
        self.fail_new = False
        self.known: set[int] = set()

    async def probe(self, replica: Replica, check: HealthCheck, *, strict: bool) -> ProbeResult:
        port = replica.host_port or 0
        if port not in self.known:
            self.known.add(port)
            if self.fail_new:
                self.failing_ports.add(port)
        ok = port not in self.failing_ports
        return ProbeResult(ok, 200 if ok else 500, 0.1, "" if ok else "HTTP 500",
                           datetime.now(UTC))


@pytest.fixture
def probes(monkeypatch: pytest.MonkeyPatch) -> Probes:
    table = Probes()

    async def probe(self: HealthMonitor, replica: Replica, check: HealthCheck, *,
                    strict: bool) -> ProbeResult:
        return await table.probe(replica, check, strict=strict)

    monkeypatch.setattr(HealthMonitor, "probe", probe)
    return table


class Api:
    def __init__(self, http: httpx.AsyncClient, headers: dict[str, str]) -> None:
        self.http = http
        self.headers = headers

    async def call(self, method: str, path: str, status: int | None = None,
                   **kw: Any) -> Any:
        response = await self.http.request(method, f"/api/v1{path}", headers=self.headers, **kw)
        if status is not None:
            assert response.status_code == status, response.text
        return response.json()

    async def deploy(self, **fields: Any) -> Any:
        spec = {"name": "web", "image": IMAGE, "replicas": 2, "health_check": FAST, **fields}
        body = await self.call("POST", "/deploy", 202, json={"services": [spec]})
        return body["deployments"][0]["deployment_id"]

    async def deployment(self, deployment_id: str) -> Any:
        return await self.call("GET", f"/deployments/{deployment_id}", 200)

    async def until(self, deployment_id: str, *statuses: str, timeout: float = 10) -> Any:
        async def reached() -> Any:
            found = await self.deployment(deployment_id)
            return found if found["status"] in statuses else None
        return await eventually(reached, timeout, f"deployment to be {statuses}")

    async def current(self) -> Any:
        return (await self.call("GET", "/services/web", 200))["deployment"]


async def eventually(check: Callable[[], Awaitable[Any]], timeout: float, what: str) -> Any:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        found = await check()
        if found:
            return found
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)
