"""Unit fixtures: a Platform over a temporary SQLite store, the in-memory FakeRuntime and a
FakeEdge, plus an HTTP client on the ASGI app (no sockets) and a token of each role."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from legato.api.app import create_app
from legato.auth import issue_token
from legato.config import Settings
from legato.crypto import Keyring
from legato.edge.base import Edge, Route
from legato.errors import EdgeFailure
from legato.platform import Platform
from legato.runtime.fake import FakeRuntime
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
    return Settings(data_dir=tmp_path, instance="unit")


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


@pytest.fixture
async def client(platform: Platform) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=create_app(platform))
    async with httpx.AsyncClient(transport=transport, base_url=BASE_URL) as http:
        yield http


@pytest.fixture
async def tokens(store: Store) -> Tokens:
    plaintext = {}
    for role in ("admin", "deployer", "viewer"):
        _, plaintext[role] = await issue_token(store, name=f"unit-{role}", role=role)
    return Tokens(**plaintext)
