"""HTTP health probes from the control plane to each replica's published port.

A replica is `starting` until it passes `success_threshold` probes in a row, `healthy` then,
and `unhealthy` after `failure_threshold` failures in a row. While starting it is probed
quickly (so a fresh replica joins its route within milliseconds of answering), and its
failures only count once `interval_s` has passed since it started, so slow boots are not
punished for booting.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime

from legato.reconcile.plan import Health
from legato.runtime.base import Replica
from legato.spec import HealthCheck

log = logging.getLogger(__name__)
_FIRST_PROBE_S = 0.02


@dataclass(frozen=True)
class ProbeResult:
    ok: bool
    status_code: int | None
    response_time_ms: float
    error: str
    checked_at: datetime


@dataclass(frozen=True)
class HealthState:
    status: Health = "starting"
    consecutive_failures: int = 0
    consecutive_successes: int = 0
    last_check: datetime | None = None
    last_error: str = ""
    response_time_ms: float | None = None
    since: float = field(default_factory=time.monotonic)


@dataclass
class _Target:
    replica: Replica
    check: HealthCheck
    strict: bool
    task: asyncio.Task[None] | None = None


async def http_status(port: int, path: str) -> int:
    """The status of `GET path` on 127.0.0.1:port (a new connection, closed after the status
    line: the body does not matter, and a full HTTP client costs ten times the CPU)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
                     "User-Agent: legato-health\r\nConnection: close\r\n\r\n".encode())
        line = await reader.readuntil(b"\n")
    finally:
        writer.close()
    version, _, rest = line.decode("latin-1").partition(" ")
    if not version.startswith("HTTP/1.") or not rest[:3].isdigit():
        raise ValueError(f"not an HTTP answer: {line[:40]!r}")
    return int(rest[:3])


class HealthMonitor:
    """Probes every tracked replica and reports each change of status."""

    def __init__(self, on_change: Callable[[Replica, HealthState, HealthState], None]) -> None:
        self._on_change = on_change
        self._targets: dict[str, _Target] = {}
        self._states: dict[str, HealthState] = {}

    def state(self, replica_id: str) -> HealthState:
        return self._states.get(replica_id, HealthState())

    def status(self, replica_id: str) -> Health:
        return self.state(replica_id).status

    def tracked(self) -> set[str]:
        return set(self._targets)

    def track(
        self, replica: Replica, check: HealthCheck, *, strict: bool, healthy: bool = False
    ) -> None:
        """Start probing a replica (no-op when already tracked with the same port).

        `healthy` seeds a replica adopted from an earlier run as healthy, so restarting the
        control plane does not take it out of its route.
        """
        current = self._targets.get(replica.id)
        if current and current.replica.host_port == replica.host_port:
            current.check, current.strict = check, strict  # a new deployment may change them
            return
        if current:
            self.forget(replica.id)
        target = _Target(replica, check, strict)
        if healthy:
            self._states[replica.id] = HealthState(
                status="healthy", consecutive_successes=check.success_threshold
            )
        else:
            self._states[replica.id] = HealthState()
        target.task = asyncio.create_task(self._probe_loop(target), name=f"health-{replica.name}")
        self._targets[replica.id] = target

    def forget(self, replica_id: str) -> None:
        target = self._targets.pop(replica_id, None)
        self._states.pop(replica_id, None)
        if target and target.task:
            target.task.cancel()

    async def close(self) -> None:
        for replica_id in list(self._targets):
            self.forget(replica_id)

    async def probe(self, replica: Replica, check: HealthCheck, *, strict: bool) -> ProbeResult:
        """One GET of the health path; strict means 2xx/3xx, lenient anything below 500."""
        started = time.perf_counter()
        stamp = datetime.now(UTC)
        if replica.host_port is None:
            return ProbeResult(False, None, 0.0, "replica publishes no port", stamp)
        try:
            status_code = await asyncio.wait_for(
                http_status(replica.host_port, check.path), check.timeout_s)
        except (OSError, TimeoutError, ValueError, asyncio.IncompleteReadError,
                asyncio.LimitOverrunError) as exc:
            elapsed = (time.perf_counter() - started) * 1000
            error = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
            return ProbeResult(False, None, elapsed, error[:300], stamp)
        elapsed = (time.perf_counter() - started) * 1000
        ok = status_code < 400 if strict else status_code < 500
        error = "" if ok else f"HTTP {status_code}"
        return ProbeResult(ok, status_code, elapsed, error, stamp)

    async def check_now(self, replica_id: str) -> ProbeResult | None:
        """Probe a tracked replica at once and fold the result into its state."""
        target = self._targets.get(replica_id)
        if target is None:
            return None
        result = await self.probe(target.replica, target.check, strict=target.strict)
        self._record(target, result, counts=True)
        return result

    async def _probe_loop(self, target: _Target) -> None:
        check = target.check
        started = time.monotonic()
        delay = max(check.initial_delay_s, _FIRST_PROBE_S)
        try:
            while True:
                await asyncio.sleep(delay)
                result = await self.probe(target.replica, check, strict=target.strict)
                state = self.state(target.replica.id)
                booting = state.status == "starting"
                counts = not booting or time.monotonic() - started >= check.interval_s
                self._record(target, result, counts=counts)
                if self.state(target.replica.id).status == "starting":
                    delay = min(check.interval_s, max(delay * 1.5, _FIRST_PROBE_S))
                else:
                    delay = check.interval_s
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("health probe loop of %s failed", target.replica.name)

    def _record(self, target: _Target, result: ProbeResult, *, counts: bool) -> None:
        replica_id = target.replica.id
        if replica_id not in self._targets:
            return
        before = self.state(replica_id)
        check = target.check
        if result.ok:
            successes, failures = before.consecutive_successes + 1, 0
        else:
            successes = 0
            failures = before.consecutive_failures + (1 if counts else 0)
        status = before.status
        if result.ok and successes >= check.success_threshold:
            status = "healthy"
        elif not result.ok and failures >= check.failure_threshold:
            status = "unhealthy"
        after = replace(
            before,
            status=status,
            consecutive_failures=failures,
            consecutive_successes=successes,
            last_check=result.checked_at,
            last_error=result.error or ("" if result.ok else before.last_error),
            response_time_ms=round(result.response_time_ms, 2),
            since=before.since if status == before.status else time.monotonic(),
        )
        self._states[replica_id] = after
        if after.status != before.status:
            with contextlib.suppress(Exception):
                self._on_change(target.replica, before, after)
