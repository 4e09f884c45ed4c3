"""The reconciler: carries out the planner's decisions against the runtime and the edge.

Level-based, like controller-runtime: a pass gets only a service's name, re-reads the store
and the runtime, plans, acts and is safe to repeat. Passes run on API writes, on runtime
events, on health changes and on a periodic resync; passes of one service never overlap,
passes of different services run in parallel.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from legato.edge.base import Edge, Route, Upstream
from legato.errors import ImageNotFound, LegatoError, ServiceNotFound
from legato.health import HealthMonitor, HealthState
from legato.reconcile.plan import Clear, Desired, Observed, Retire, Start, plan
from legato.runtime.base import Replica, ReplicaRequest, Runtime
from legato.spec import ServiceSpec
from legato.store import Deployment, Service, Store

log = logging.getLogger(__name__)

CRASH_LOOP_AFTER = 3
BACKOFF_MAX_S = 300.0
HEALTHY_RESETS_BACKOFF_S = 30.0
DRAIN_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 10.0


def server_name(replica: Replica) -> str:
    return f"r{replica.slot}-{replica.id[:10]}"


def backoff_s(failures: int) -> float:
    """1 s, 2 s, 4 s ... up to 5 min."""
    return float(min(BACKOFF_MAX_S, 2 ** max(0, failures - 1)))


@dataclass
class _Slot:
    failures: int = 0
    not_before: float = 0.0


@dataclass
class _ServiceState:
    spec: ServiceSpec | None = None
    replicas: tuple[Replica, ...] = ()
    slots: dict[tuple[str, int], _Slot] = field(default_factory=dict)  # (deployment, slot)
    crash_loop: bool = False


class Reconciler:
    """Converges every service towards its desired state."""

    def __init__(
        self,
        store: Store,
        runtime: Runtime,
        edge: Edge,
        *,
        resync_interval_s: float = 10.0,
    ) -> None:
        self.store = store
        self.runtime = runtime
        self.edge = edge
        self.health = HealthMonitor(self._on_health_change)
        self.resync_interval_s = resync_interval_s
        self._state: dict[str, _ServiceState] = {}
        self._retiring: dict[str, str] = {}  # replica id -> "drain" | "out"
        self._dirty: set[str] = set()
        self._workers: dict[str, asyncio.Task[None]] = {}
        self._background: set[asyncio.Task[Any]] = set()
        self._routes: dict[str, Route] = {}
        self._route_lock = asyncio.Lock()
        self._deleted: set[str] = set()
        self._pass_errors: dict[str, tuple[int, str]] = {}  # service -> (failures, last error)

    # lifecycle ------------------------------------------------------------------------------

    async def start(self, adopted_routes: Sequence[Route] = ()) -> None:
        """Adopt what already runs (without touching it), then converge every service."""
        self._routes = {r.service: r for r in adopted_routes}
        in_route = {u.name for r in adopted_routes for u in r.upstreams if u.state == "ready"}
        services = {s.name: s for s in await self.store.list_services()}
        replicas = await self.runtime.list_replicas()
        by_service: dict[str, list[Replica]] = {}
        for replica in replicas:
            by_service.setdefault(replica.service, []).append(replica)
        for name, found in by_service.items():
            state = self._state.setdefault(name, _ServiceState(replicas=tuple(found)))
            if name in services and services[name].deployment_id:
                with contextlib.suppress(LegatoError):
                    state.spec = (await self.store.get_deployment(
                        services[name].deployment_id or "")).spec
            for replica in found:
                if replica.running and state.spec is not None:
                    self._track(replica, state.spec, healthy=server_name(replica) in in_route)
        for name in set(services) | set(by_service) | set(self._routes):
            self.trigger(name)
        self._spawn(self._watch_runtime())
        self._spawn(self._resync_forever())

    async def close(self) -> None:
        for task in [*self._background, *self._workers.values()]:
            task.cancel()
        await asyncio.gather(*self._background, *self._workers.values(), return_exceptions=True)
        await self.health.close()

    def _spawn(self, coro: Any) -> asyncio.Task[Any]:
        task = asyncio.create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        return task

    # triggering -----------------------------------------------------------------------------

    def trigger(self, service: str) -> None:
        """Ask for a pass over `service`; passes coalesce and never overlap."""
        self._dirty.add(service)
        worker = self._workers.get(service)
        if worker is None or worker.done():
            self._workers[service] = asyncio.create_task(self._work(service))

    def trigger_later(self, service: str, delay_s: float) -> None:
        asyncio.get_running_loop().call_later(max(0.0, delay_s), self.trigger, service)

    async def settled(self, service: str) -> None:
        """Wait until no pass over `service` is queued or running."""
        while (worker := self._workers.get(service)) is not None and not worker.done():
            await asyncio.wait([worker])

    async def _work(self, service: str) -> None:
        while service in self._dirty:
            self._dirty.discard(service)
            try:
                await self._pass(service)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                # Transient trouble (Docker restarting, say): retry with backoff, and record
                # an event when the error is new rather than on every retry.
                message = exc.message if isinstance(exc, LegatoError) else f"{exc}"
                failures, last = self._pass_errors.get(service, (0, ""))
                self._pass_errors[service] = (failures + 1, message)
                delay = min(60.0, 2.0 * 2**failures)
                log.warning("reconcile of %s failed (retry in %gs): %s", service, delay, message,
                            exc_info=not isinstance(exc, LegatoError))
                if message != last:
                    await self._event(service, "error", f"reconcile failed: {message}",
                                      {"retry_in_s": delay})
                self.trigger_later(service, delay)
            else:
                self._pass_errors.pop(service, None)

    async def _watch_runtime(self) -> None:
        async for event in self.runtime.watch():
            if event.service:
                self.trigger(event.service)

    async def _resync_forever(self) -> None:
        while True:
            await asyncio.sleep(self.resync_interval_s)
            try:
                await self.resync()
            except Exception:
                log.exception("resync failed")

    async def resync(self) -> None:
        """One look at everything; services whose replicas changed unseen get a pass."""
        replicas = await self.runtime.list_replicas()
        seen: dict[str, set[tuple[str, str]]] = {}
        for replica in replicas:
            seen.setdefault(replica.service, set()).add((replica.id, replica.state))
        names = {s.name for s in await self.store.list_services()} | set(seen)
        for name in names:
            state = self._state.get(name)
            known = {(r.id, r.state) for r in state.replicas} if state else None
            if known != seen.get(name, set()) or name not in self._state:
                self.trigger(name)

    # one pass -------------------------------------------------------------------------------

    async def _pass(self, name: str) -> None:
        try:
            service = await self.store.get_service(name)
        except ServiceNotFound:
            await self._teardown(name)
            return
        self._deleted.discard(name)
        state = self._state.setdefault(name, _ServiceState())
        deployment = await self.store.get_deployment(service.deployment_id or "")
        state.spec = deployment.spec
        if deployment.status == "pending":
            deployment = await self._begin(service, deployment)
            if deployment.status == "failed":
                service = await self.store.get_service(name)
                if service.deployment_id != deployment.id:
                    return  # _fail restored the previous deployment and queued a pass for it

        replicas = await self.runtime.list_replicas(name)
        state.replicas = tuple(replicas)
        self._sync_health(state, replicas)

        count = 0 if deployment.status == "failed" else service.desired_replicas
        now = time.monotonic()
        self._reset_backoff(state, replicas, now)
        waiting = {
            slot: entry.not_before for (dep, slot), entry in state.slots.items()
            if dep == deployment.id and entry.not_before > now
        }
        desired = Desired(
            deployment=deployment.id,
            replicas=count,
            strategy=deployment.spec.deploy.strategy,
            max_surge=deployment.spec.deploy.max_surge,
            max_unavailable=deployment.spec.deploy.max_unavailable,
        )
        observed = Observed(
            replicas=tuple(replicas),
            health={r.id: self.health.status(r.id) for r in replicas},
            retiring=frozenset(self._retiring),
            backoff_slots=frozenset(waiting),
        )
        result = plan(desired, observed)

        route_update = asyncio.create_task(self._sync_routes())
        for action in result.actions:
            if isinstance(action, Clear):
                await self._clear(service, deployment, state, action.replica)
            elif isinstance(action, Retire):
                self._begin_retire(service.name, action.replica, action.reason)
        starts = [a for a in result.actions if isinstance(a, Start)]
        if starts:
            if deployment.active:
                await self.store.update_deployment(deployment.id, step="starting")
            await asyncio.gather(*(self._start(service, deployment, state, a.slot) for a in starts))
        if starts or result.of(Clear):
            state.replicas = tuple(await self.runtime.list_replicas(name))
        await route_update
        await self._sync_routes()

        if waiting:
            self.trigger_later(name, min(waiting.values()) - now + 0.01)
        await self._progress(service, deployment, state, done=result.rollout_done)

    async def _begin(self, service: Service, deployment: Deployment) -> Deployment:
        """Resolve the image of a new deployment; a missing image fails it at once."""
        await self.store.update_deployment(deployment.id, status="running", step="pulling")
        await self._event(service.name, "deploy",
                          f"deployment #{deployment.number} started ({deployment.reason})",
                          {"deployment": deployment.id, "image": deployment.spec.image})
        try:
            image_id = await self.runtime.resolve_image(deployment.spec.image)
        except ImageNotFound as exc:
            return await self._fail(service, deployment, exc.message)
        return await self.store.update_deployment(deployment.id, image_id=image_id, step="health")

    async def _fail(self, service: Service, deployment: Deployment, error: str) -> Deployment:
        """Fail a deployment and put the service back on the version that last worked."""
        failed = await self.store.update_deployment(deployment.id, status="failed", error=error)
        previous = await self._last_good(deployment)
        details: dict[str, Any] = {"deployment": deployment.id, "error": error}
        if previous is not None:
            await self.store.set_service_deployment(service.name, previous.id)
            details["restored"] = previous.id
            message = (f"deployment #{deployment.number} failed: {error}; "
                       f"#{previous.number} keeps serving")
        else:
            message = f"deployment #{deployment.number} failed: {error}"
        await self._event(service.name, "error", message, details)
        state = self._state.get(service.name)
        if state:
            state.slots = {k: v for k, v in state.slots.items() if k[0] != deployment.id}
            state.crash_loop = False
        if previous is not None:
            self.trigger(service.name)
        return failed

    async def _last_good(self, deployment: Deployment) -> Deployment | None:
        previous_id = deployment.previous_id
        while previous_id:
            candidate = await self.store.get_deployment(previous_id)
            if candidate.status == "successful":
                return candidate
            previous_id = candidate.previous_id
        return None

    async def _progress(
        self, service: Service, deployment: Deployment, state: _ServiceState, *, done: bool
    ) -> None:
        if not deployment.active:
            return
        if done:
            await self.store.update_deployment(deployment.id, status="successful", step="done")
            await self._event(service.name, "deploy",
                              f"deployment #{deployment.number} successful",
                              {"deployment": deployment.id, "replicas": service.desired_replicas})
            return
        deadline = deployment.spec.deploy.progress_deadline_s
        elapsed = (datetime.now(UTC) - deployment.created_at).total_seconds()
        crashing = any(
            entry.failures >= CRASH_LOOP_AFTER
            for (dep, _), entry in state.slots.items() if dep == deployment.id
        )
        if crashing:
            await self._fail(service, deployment, "new replicas keep failing")
        elif elapsed > deadline:
            await self._fail(service, deployment,
                             f"not healthy within progress_deadline_s={deadline:g}")
        else:
            self.trigger_later(service.name, deadline - elapsed + 0.1)

    # actions --------------------------------------------------------------------------------

    async def _start(
        self, service: Service, deployment: Deployment, state: _ServiceState, slot: int
    ) -> None:
        spec = deployment.spec
        request = ReplicaRequest(
            service=service.name,
            project=service.project,
            environment=service.environment,
            deployment=deployment.id,
            slot=slot,
            image=deployment.image_id or spec.image,
            port=spec.port,
            command=tuple(spec.command) if spec.command else None,
            env={"PORT": str(spec.port), **spec.env},
            labels=spec.labels,
            memory_bytes=spec.resources.memory_bytes,
            cpus=spec.resources.cpu,
            volumes={v.name: v.path for v in spec.volumes},
        )
        try:
            replica = await self.runtime.start_replica(request)
        except LegatoError as exc:
            failures = self._record_failure(state, deployment.id, slot)
            await self._event(service.name, "crash",
                              f"replica {slot} failed to start: {exc.message}",
                              {"slot": slot, "error": exc.message, "failures": failures,
                               "retry_in_s": backoff_s(failures)})
            await self._check_crash_loop(service.name, state)
            return
        self._track(replica, spec)

    async def _clear(
        self, service: Service, deployment: Deployment, state: _ServiceState, replica: Replica
    ) -> None:
        """A replica exited on its own: record the crash, remove it, restart after backoff."""
        self.health.forget(replica.id)
        tail: list[str] = []
        with contextlib.suppress(Exception):
            tail = [line.message async for line in self.runtime.logs(
                replica, tail=20, since=None, follow=False)]
        await self.runtime.remove_replica(replica.id)
        if replica.deployment != deployment.id:
            return
        failures = self._record_failure(state, replica.deployment, replica.slot)
        await self._event(
            service.name, "crash",
            f"replica {replica.name} exited with code {replica.exit_code}; "
            f"restarting in {backoff_s(failures):g}s",
            {"replica": replica.name, "container_id": replica.id[:12],
             "exit_code": replica.exit_code, "error": replica.error, "failures": failures,
             "logs": tail[-20:]},
        )
        await self._check_crash_loop(service.name, state)

    def _record_failure(self, state: _ServiceState, deployment: str, slot: int) -> int:
        entry = state.slots.setdefault((deployment, slot), _Slot())
        entry.failures += 1
        entry.not_before = time.monotonic() + backoff_s(entry.failures)
        return entry.failures

    def _reset_backoff(self, state: _ServiceState, replicas: Sequence[Replica], now: float) -> None:
        for replica in replicas:
            key = (replica.deployment, replica.slot)
            health = self.health.state(replica.id)
            if key in state.slots and health.status == "healthy" and (
                now - health.since >= HEALTHY_RESETS_BACKOFF_S
            ):
                del state.slots[key]
        if state.crash_loop and not any(
            e.failures >= CRASH_LOOP_AFTER for e in state.slots.values()
        ):
            state.crash_loop = False

    async def _check_crash_loop(self, name: str, state: _ServiceState) -> None:
        looping = any(e.failures >= CRASH_LOOP_AFTER for e in state.slots.values())
        if looping and not state.crash_loop:
            state.crash_loop = True
            await self._event(name, "crash", "service is in a crash loop",
                              {"failures": max(e.failures for e in state.slots.values())})

    def _begin_retire(self, service: str, replica: Replica, reason: str) -> None:
        if replica.id in self._retiring:
            return
        self._retiring[replica.id] = "drain"
        self._spawn(self._retire(service, replica, reason))

    async def _retire(self, service: str, replica: Replica, reason: str) -> None:
        """Drain from the route, wait for in-flight requests, then stop and remove."""
        try:
            in_route = self.health.status(replica.id) == "healthy"
            if reason == "unhealthy":
                state = self._state.get(service)
                if state is not None:
                    self._record_failure(state, replica.deployment, replica.slot)
                await self._event(service, "health",
                                  f"replica {replica.name} is unhealthy; replacing it",
                                  {"replica": replica.name,
                                   "last_error": self.health.state(replica.id).last_error})
            if in_route:
                await self._sync_routes()
                deadline = time.monotonic() + DRAIN_TIMEOUT_S
                while time.monotonic() < deadline:
                    try:
                        if await self.edge.sessions(service, server_name(replica)) == 0:
                            break
                    except LegatoError:
                        break
                    await asyncio.sleep(0.05)
            self._retiring[replica.id] = "out"
            await self._sync_routes()
            self.health.forget(replica.id)
            await self.runtime.stop_replica(replica.id, STOP_TIMEOUT_S)
            await self.runtime.remove_replica(replica.id)
        except Exception:
            log.exception("retiring %s failed", replica.name)
        finally:
            self._retiring.pop(replica.id, None)
            self.trigger(service)

    async def _teardown(self, name: str) -> None:
        """The service is gone from the store: take its route down and remove its replicas."""
        state = self._state.pop(name, None)
        self._deleted.add(name)
        await self._sync_routes()
        replicas = await self.runtime.list_replicas(name)
        for replica in replicas:
            self.health.forget(replica.id)
        await asyncio.gather(*(self.runtime.remove_replica(r.id) for r in replicas
                               if r.id not in self._retiring))
        del state

    # health and routes ----------------------------------------------------------------------

    def _track(self, replica: Replica, spec: ServiceSpec, *, healthy: bool = False) -> None:
        if replica.running and replica.host_port:
            self.health.track(replica, spec.health, strict=spec.health_check is not None,
                              healthy=healthy)

    def _sync_health(self, state: _ServiceState, replicas: Sequence[Replica]) -> None:
        assert state.spec is not None
        by_id = {r.id: r for r in replicas}
        for replica in replicas:
            if replica.running and replica.id not in self._retiring:
                self._track(replica, state.spec)
            elif replica.gone:
                self.health.forget(replica.id)
        for replica_id in self.health.tracked():
            known = any(replica_id == r.id for r in state.replicas)
            if known and replica_id not in by_id:
                self.health.forget(replica_id)

    def _on_health_change(self, replica: Replica, before: HealthState, after: HealthState) -> None:
        self._spawn(self._sync_routes())
        self.trigger(replica.service)
        if before.status != "starting" or after.status != "healthy":
            self._spawn(self._event(
                replica.service, "health",
                f"replica {replica.name} is {after.status}",
                {"replica": replica.name, "from": before.status, "to": after.status,
                 "last_error": after.last_error},
            ))

    def route_of(self, name: str) -> Route | None:
        state = self._state.get(name)
        if state is None or state.spec is None or not state.spec.routed or name in self._deleted:
            return None
        upstreams = []
        for replica in state.replicas:
            if replica.host_port is None or not replica.running:
                continue
            phase = self._retiring.get(replica.id)
            if phase == "out":
                continue
            if phase == "drain" and self.health.status(replica.id) == "healthy":
                upstreams.append(Upstream(server_name(replica), replica.host_port, "drain"))
            elif phase is None and self.health.status(replica.id) == "healthy":
                upstreams.append(Upstream(server_name(replica), replica.host_port, "ready"))
        return Route(name, state.spec.domains, tuple(upstreams))

    async def _sync_routes(self) -> None:
        async with self._route_lock:
            routes = {}
            for name in set(self._state) | set(self._routes):
                route = self.route_of(name)
                if route is not None:
                    routes[name] = route
            if routes != self._routes:
                await self.edge.apply(list(routes.values()))
                self._routes = routes

    # reading --------------------------------------------------------------------------------

    def replicas_of(self, name: str) -> tuple[Replica, ...]:
        state = self._state.get(name)
        return state.replicas if state else ()

    def status_of(self, service: Service, deployment: Deployment | None) -> str:
        """running, deploying, degraded, crash_loop, stopped, idle or failed."""
        state = self._state.get(service.name)
        healthy = sum(1 for r in self.replicas_of(service.name)
                      if r.running and self.health.status(r.id) == "healthy")
        if service.stopped:
            return "stopped"
        if state and state.crash_loop:
            return "crash_loop"
        if deployment is not None and deployment.status == "failed" and healthy == 0:
            return "failed"
        if deployment is not None and deployment.active:
            return "deploying"
        if service.replicas == 0:
            return "idle"
        return "running" if healthy >= service.replicas else "degraded"

    async def _event(self, service: str, type_: str, message: str, details: dict[str, Any]) -> None:
        try:
            await self.store.add_event(service, type_, message, details)
        except Exception:
            log.exception("could not record event for %s", service)
