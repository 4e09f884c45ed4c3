"""An in-memory Runtime for unit tests of the planner and the API.

Nothing here touches Docker, the network or the disk: replicas are records in a dict, their
"host ports" are numbers handed out from a counter and their logs are canned lines. It never
backs an integration test; those run against the real `DockerRuntime`.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import itertools
import secrets
import time
from collections.abc import AsyncIterator, Iterable, Sequence
from datetime import UTC, datetime

from legato.errors import ImageNotFound, RuntimeFailure
from legato.runtime.base import (
    LogLine,
    Replica,
    ReplicaRequest,
    ReplicaStats,
    Runtime,
    RuntimeEvent,
)

DEFAULT_IMAGES = frozenset({"legato-test/busybox:latest"})
DEFAULT_PORT_BASE = 41_000


def image_id(reference: str) -> str:
    """The stable fake ID of an image reference: `sha256:` + 64 hex digits."""
    return "sha256:" + hashlib.sha256(reference.encode()).hexdigest()


class FakeRuntime:
    """A Runtime whose replicas live in memory.

    - `resolve_image` knows the references in `images` (a mutable set) and nothing else.
    - `start_replica` records the request in `requests` and returns a `running` replica with a
      unique fake `host_port` (nothing listens on it).
    - `stop_replica` leaves a replica `exited` (code 0), `remove_replica` forgets it.
    - `logs` yields `log_lines` (plus lines added with `emit_log`) for every replica.
    - `watch` yields lifecycle events from one `asyncio.Queue` (`events`); it has one consumer.
    - `resume_replica` runs a stopped replica again on a new fake port.
    - `stats` reports `usage[replica_id]` (cpu_percent, memory_used, memory_limit, rx, tx),
      accumulating CPU time as if that share had been used since the last call.
    - `crash` makes a replica exit as if its process died.
    - `available = False` makes `ping` fail; `start_error` makes every start fail with it.
    """

    name = "fake"
    node = "fake-node"

    def __init__(
        self,
        images: Iterable[str] = DEFAULT_IMAGES,
        *,
        log_lines: Iterable[str] = (),
        port_base: int = DEFAULT_PORT_BASE,
    ) -> None:
        self.images: set[str] = set(images)
        self.log_lines: list[str] = list(log_lines)
        self.requests: list[ReplicaRequest] = []
        self.events: asyncio.Queue[RuntimeEvent] = asyncio.Queue()
        self.available = True
        self.start_error: RuntimeFailure | None = None
        self.closed = False
        self._replicas: dict[str, Replica] = {}
        self._volumes: set[tuple[str, str]] = set()  # (service, volume name)
        self._extra_logs: dict[str, list[LogLine]] = {}
        self._followers: dict[str, list[asyncio.Queue[LogLine]]] = {}
        self._ports = itertools.count(port_base)
        self.usage: dict[str, dict[str, float]] = {}
        self._counters: dict[str, tuple[float, int, int]] = {}  # id -> (at, cpu_ns, system_ns)
        self.clock = time.time

    # the Runtime protocol -------------------------------------------------------------------

    async def ping(self) -> None:
        """Fail with RuntimeFailure while `available` is False."""
        if not self.available:
            raise RuntimeFailure("fake runtime is unavailable")

    async def resolve_image(self, reference: str) -> str:
        """`sha256:<hex>` for a known reference (or that ID itself); ImageNotFound otherwise."""
        if reference in {image_id(i) for i in self.images}:
            return reference
        if reference not in self.images:
            raise ImageNotFound(reference, "not in the fake runtime's images")
        return image_id(reference)

    async def start_replica(self, request: ReplicaRequest) -> Replica:
        """A new running replica of a known image (by reference or by resolved ID)."""
        self.requests.append(request)
        if self.start_error is not None:
            raise self.start_error
        if request.image not in self.images and request.image not in {
            image_id(i) for i in self.images
        }:
            raise ImageNotFound(request.image, "not in the fake runtime's images")
        replica_id = secrets.token_hex(32)
        replica = Replica(
            id=replica_id,
            name=f"lg-fake-{request.service}-{request.slot}-{replica_id[:6]}",
            service=request.service,
            deployment=request.deployment,
            slot=request.slot,
            state="running",
            node=self.node,
            host_port=next(self._ports),
            started_at=datetime.now(UTC),
        )
        self._replicas[replica_id] = replica
        self._volumes.update((request.service, volume) for volume in request.volumes)
        self._emit("start", replica)
        return replica

    async def list_replicas(self, service: str | None = None) -> list[Replica]:
        """Every replica (optionally of one service), oldest first, in any state."""
        return [r for r in self._replicas.values() if service is None or r.service == service]

    async def stop_replica(self, replica_id: str, timeout_s: float = 10) -> None:
        """Leave the replica `exited` with code 0; missing or already gone is fine."""
        replica = self._replicas.get(replica_id)
        if replica is None or replica.gone:
            return
        self._finish(replica, exit_code=0, error="")

    async def resume_replica(self, replica_id: str) -> Replica:
        """Run a stopped replica again, on a new fake port."""
        replica = self._replicas.get(replica_id)
        if replica is None:
            raise RuntimeFailure(f"no such replica {replica_id}")
        resumed = dataclasses.replace(replica, state="running", host_port=next(self._ports),
                                      started_at=datetime.now(UTC), exit_code=None)
        self._replicas[replica_id] = resumed
        self._emit("start", resumed)
        return resumed

    async def stats(self, replica_ids: Sequence[str]) -> dict[str, ReplicaStats]:
        """Counters from `usage` (default: idle, 64 MiB of a 1 GiB limit)."""
        found = {}
        for replica_id in replica_ids:
            stats = self._stats(replica_id)
            if stats is not None:
                found[replica_id] = stats
        return found

    def _stats(self, replica_id: str) -> ReplicaStats | None:
        replica = self._replicas.get(replica_id)
        if replica is None or not replica.running:
            return None
        usage = self.usage.get(replica_id, {})
        now = self.clock()
        at, cpu_ns, system_ns = self._counters.get(replica_id, (now, 0, 0))
        elapsed_ns = int((now - at) * 1e9)
        cpus = 2
        cpu_ns += int(elapsed_ns * usage.get("cpu_percent", 0.0) / 100)
        system_ns += elapsed_ns * cpus
        self._counters[replica_id] = (now, cpu_ns, system_ns)
        return ReplicaStats(
            replica_id=replica_id, at=now, cpu_ns=cpu_ns, system_ns=system_ns,
            online_cpus=cpus, memory_used=int(usage.get("memory_used", 64 * 1024**2)),
            memory_limit=int(usage.get("memory_limit", 1024**3)),
            network_rx=int(usage.get("rx", 0)), network_tx=int(usage.get("tx", 0)),
        )

    async def remove_replica(self, replica_id: str) -> None:
        """Forget the replica (stopping it first when it runs); missing is fine."""
        replica = self._replicas.get(replica_id)
        if replica is None:
            return
        if not replica.gone:
            self._finish(replica, exit_code=137, error="")
        del self._replicas[replica_id]
        self._extra_logs.pop(replica_id, None)
        self._emit("destroy", replica)

    async def remove_volumes(self, service: str) -> int:
        """Forget the volumes replicas of `service` were started with; how many went."""
        gone = {v for v in self._volumes if v[0] == service}
        self._volumes -= gone
        return len(gone)

    async def logs(
        self,
        replica: Replica,
        *,
        tail: int | None,
        since: datetime | None,
        follow: bool,
    ) -> AsyncIterator[LogLine]:
        """The replica's lines, oldest first; with follow, then each new `emit_log` line."""
        queue: asyncio.Queue[LogLine] | None = None
        if follow:
            queue = asyncio.Queue()
            self._followers.setdefault(replica.id, []).append(queue)
        try:
            lines = self._lines_of(replica)
            if since is not None:
                lines = [line for line in lines if line.timestamp is None or line.timestamp >= since]
            if tail is not None:
                lines = lines[-tail:] if tail > 0 else []
            for line in lines:
                yield line
            while queue is not None:
                yield await queue.get()
        finally:
            if queue is not None:
                self._followers.get(replica.id, []).remove(queue)

    async def watch(self) -> AsyncIterator[RuntimeEvent]:
        """Lifecycle events (`start`, `die`, `destroy`) from `events`, forever."""
        while True:
            yield await self.events.get()

    async def close(self) -> None:
        """Nothing to release; remembers that it was called."""
        self.closed = True

    # test helpers ---------------------------------------------------------------------------

    @property
    def volumes(self) -> set[tuple[str, str]]:
        """(service, volume name) of every volume that exists now."""
        return set(self._volumes)

    def crash(self, replica_id: str, exit_code: int = 1, error: str = "") -> Replica:
        """Make a running replica exit with `exit_code`, as if its process died."""
        replica = self._replicas.get(replica_id)
        if replica is None:
            raise KeyError(f"no fake replica {replica_id}")
        return self._finish(replica, exit_code=exit_code, error=error)

    def emit_log(self, replica_id: str, message: str) -> LogLine:
        """Add a log line to one replica (and hand it to whoever follows its logs)."""
        replica = self._replicas.get(replica_id)
        if replica is None:
            raise KeyError(f"no fake replica {replica_id}")
        line = LogLine(replica=replica.name, timestamp=datetime.now(UTC), message=message)
        self._extra_logs.setdefault(replica_id, []).append(line)
        for queue in self._followers.get(replica_id, []):
            queue.put_nowait(line)
        return line

    # internals ------------------------------------------------------------------------------

    def _lines_of(self, replica: Replica) -> list[LogLine]:
        stamp = replica.started_at
        canned = [LogLine(replica=replica.name, timestamp=stamp, message=m) for m in self.log_lines]
        return canned + self._extra_logs.get(replica.id, [])

    def _finish(self, replica: Replica, *, exit_code: int, error: str) -> Replica:
        finished = dataclasses.replace(
            replica, state="exited", exit_code=exit_code, error=error,
            finished_at=datetime.now(UTC),
        )
        self._replicas[replica.id] = finished
        self._emit("die", finished)
        return finished

    def _emit(self, action: str, replica: Replica) -> None:
        self.events.put_nowait(RuntimeEvent(action=action, service=replica.service,
                                            replica_id=replica.id))


def _conforms(runtime: FakeRuntime) -> Runtime:
    """Never called: makes mypy check that FakeRuntime implements the Runtime protocol."""
    return runtime
