"""The Runtime protocol: the only way Legato touches containers.

Each runtime (Docker now, Swarm later) implements this, and all of them pass the same
conformance suite in tests/integration/test_runtime_conformance.py.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal, Protocol

LABEL_INSTANCE = "legato.instance"
LABEL_SERVICE = "legato.service"
LABEL_PROJECT = "legato.project"
LABEL_ENVIRONMENT = "legato.environment"
LABEL_DEPLOYMENT = "legato.deployment"
LABEL_REPLICA = "legato.replica"

ReplicaState = Literal["created", "running", "restarting", "exited", "dead", "paused", "removing"]


@dataclass(frozen=True)
class ReplicaRequest:
    """Everything needed to start one replica; the runtime adds nothing of its own but labels."""

    service: str
    project: str
    environment: str
    deployment: str
    slot: int
    image: str
    port: int
    command: tuple[str, ...] | None = None
    env: Mapping[str, str] = field(default_factory=dict)
    labels: Mapping[str, str] = field(default_factory=dict)
    memory_bytes: int | None = None
    cpus: float | None = None
    volumes: Mapping[str, str] = field(default_factory=dict)  # volume name -> container path
    # Privileged fields (allowed by the API for admins only, once enabled).
    binds: tuple[tuple[str, str, bool], ...] = ()  # (host path, container path, read only)
    privileged: bool = False
    cap_add: tuple[str, ...] = ()
    devices: tuple[str, ...] = ()
    host_network: bool = False
    host_pid: bool = False


@dataclass(frozen=True)
class Replica:
    """One container as the runtime sees it now."""

    id: str
    name: str
    service: str
    deployment: str
    slot: int
    state: ReplicaState
    node: str
    host_port: int | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    exit_code: int | None = None
    error: str = ""

    @property
    def running(self) -> bool:
        return self.state == "running"

    @property
    def gone(self) -> bool:
        """Exited or dead: it will not serve again by itself."""
        return self.state in ("exited", "dead")


@dataclass(frozen=True)
class LogLine:
    replica: str
    timestamp: datetime | None
    message: str


@dataclass(frozen=True)
class ReplicaStats:
    """Raw resource counters of one replica at one moment (CPU as cumulative nanoseconds, so
    a usage share needs two samples)."""

    replica_id: str
    at: float  # wall clock, seconds
    cpu_ns: int  # CPU time the replica used since it started
    system_ns: int  # CPU time the whole host used (all CPUs), same clock
    online_cpus: int
    memory_used: int  # bytes, without the page cache
    memory_limit: int  # bytes: the replica's limit, or the host's memory
    network_rx: int  # bytes received since start
    network_tx: int  # bytes sent since start


@dataclass(frozen=True)
class RuntimeEvent:
    """Something happened to a replica (it started, died, was removed)."""

    action: str
    service: str
    replica_id: str


class Runtime(Protocol):
    """A place where replicas run."""

    name: str
    node: str

    async def ping(self) -> None:
        """Raise if the runtime does not answer."""

    async def resolve_image(self, reference: str) -> str:
        """The image's ID for a reference, pulling it when missing; ImageNotFound otherwise."""

    async def start_replica(self, request: ReplicaRequest) -> Replica:
        """Create and start a replica; its port is published on 127.0.0.1:<ephemeral>."""

    async def list_replicas(self, service: str | None = None) -> list[Replica]:
        """Every replica of this Legato instance (optionally of one service), in any state."""

    async def stop_replica(self, replica_id: str, timeout_s: float = 10) -> None:
        """Stop gracefully (SIGTERM, then SIGKILL after the timeout). Missing is fine."""

    async def resume_replica(self, replica_id: str) -> Replica:
        """Start a stopped replica again, as it was (a sleeping service wakes this way)."""

    async def stats(self, replica_ids: Sequence[str]) -> dict[str, ReplicaStats]:
        """Resource counters of running replicas now, by id (the ones gone are left out)."""

    async def remove_replica(self, replica_id: str) -> None:
        """Remove a replica, stopping it first if needed. Missing is fine."""

    async def remove_volumes(self, service: str) -> int:
        """Remove the named volumes of a service; how many went."""

    def logs(
        self,
        replica: Replica,
        *,
        tail: int | None,
        since: datetime | None,
        follow: bool,
    ) -> AsyncIterator[LogLine]:
        """Log lines of one replica, oldest first; with follow, until the consumer stops."""

    def watch(self) -> AsyncIterator[RuntimeEvent]:
        """Lifecycle events of this instance's replicas, as they happen, forever."""

    async def close(self) -> None:
        """Release connections and threads."""
