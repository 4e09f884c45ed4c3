"""The Edge protocol: what routes HTTP traffic from domains to healthy replicas."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

UpstreamState = Literal["ready", "drain"]


@dataclass(frozen=True)
class Upstream:
    """One replica in a route: `ready` takes new requests, `drain` finishes what it has."""

    name: str
    port: int
    state: UpstreamState = "ready"


@dataclass(frozen=True)
class Route:
    """A service's public face: its domains and the replicas that answer them."""

    service: str
    domains: tuple[str, ...]
    upstreams: tuple[Upstream, ...] = ()


class Edge(Protocol):
    """An HTTP router driven by Legato."""

    url: str

    async def start(self) -> None:
        """Start the router, or adopt the one already running from a previous start."""

    def routes(self) -> Sequence[Route]:
        """The routes the router serves now (after start: what it was serving before)."""

    async def apply(self, routes: Sequence[Route]) -> None:
        """Make the router serve exactly these routes, without dropping a connection."""

    async def sessions(self, service: str, upstream: str) -> int:
        """Requests in flight on one upstream (to know when a draining one is idle)."""

    async def backend_sessions(self) -> dict[str, int]:
        """Connections open now on each service's route."""

    async def ping(self) -> None:
        """Raise if the router does not answer."""

    async def shutdown(self) -> None:
        """Stop the router itself (not done on a normal control-plane exit)."""
