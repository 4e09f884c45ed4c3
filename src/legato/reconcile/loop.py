"""The reconciler: carries out the planner's decisions against the runtime and the edge.

Level-based, like controller-runtime: a pass gets only a service's name, re-reads the store
and the runtime, plans, acts and is safe to repeat. Passes run on API writes, on runtime
events, on health changes and on a periodic resync; passes of one service never overlap,
passes of different services run in parallel.

It also drives each deployment through its pipeline (SPEC §4, after Nomad's deployments):
resolving the image, the canary phase and promotion, success, and failure, which restores
the last successful revision when the spec asks for it.
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
from legato.errors import (
    BadRequest,
    DeploymentNotActive,
    ImageNotFound,
    LegatoError,
    ServiceNotFound,
)
from legato.health import HealthMonitor, HealthState
from legato.reconcile.plan import Clear, Desired, Observed, Plan, Resume, Retire, Start, plan
from legato.release import Releases
from legato.runtime.base import Replica, ReplicaRequest, Runtime
from legato.spec import ServiceSpec
from legato.store import Deployment, Service, Store

log = logging.getLogger(__name__)

CRASH_LOOP_AFTER = 3
BACKOFF_MAX_S = 300.0
HEALTHY_RESETS_BACKOFF_S = 30.0
SYSTEM_ACTOR = "legato"


def server_name(replica: Replica) -> str:
    return f"r{replica.slot}-{replica.id[:10]}"


def backoff_s(failures: int) -> float:
    """1 s, 2 s, 4 s ... up to 5 min."""
    return float(min(BACKOFF_MAX_S, 2 ** max(0, failures - 1)))


def fingerprint_of(deployment: Deployment) -> str | None:
    """What the deployment's replicas run (None before its image is resolved)."""
    if deployment.fingerprint:
        return deployment.fingerprint
    if deployment.image_id is None:
        return None
    return deployment.spec.fingerprint(deployment.image_id,
                                       deployment.id if deployment.forced else "")


@dataclass
class _Slot:
    failures: int = 0
    not_before: float = 0.0


@dataclass
class _ServiceState:
    spec: ServiceSpec | None = None
    deployment: Deployment | None = None  # the target of the last pass
    current: frozenset[str] = frozenset()  # deployments that run what the target runs
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
        releases: Releases,
        *,
        resync_interval_s: float = 10.0,
    ) -> None:
        self.store = store
        self.releases = releases
        self._builds: dict[str, asyncio.Task[None]] = {}  # deployment id -> its build
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
        self._pass_errors: dict[str, tuple[int, str]] = {}  # service -> (failures, last error)
        self._slept: set[str] = set()  # replicas this process stopped for their service's sleep
        self._dozing: set[str] = set()  # replicas draining for their service's sleep
        self._healthy_waiters: dict[str, list[asyncio.Future[None]]] = {}
        self.passes = 0
        self.pass_failures = 0
        self.restarts: dict[str, int] = {}  # service -> replicas replaced after a crash or failed checks

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
        removals = await self.store.list_removals()
        for name in set(services) | set(by_service) | set(self._routes) | set(removals):
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
                self.passes += 1
                await self._pass(service)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.pass_failures += 1
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
        removal = await self.store.pending_removal(name)
        if removal is not None:
            # Finished before anything else, also when the name has been deployed again since:
            # the old replicas (and, unless kept, the old data) go before new ones start.
            await self._teardown(name, keep_data=removal.keep_data)
            await self.store.finish_removal(name)
        try:
            service = await self.store.get_service(name)
        except ServiceNotFound:
            if removal is None:
                await self._teardown(name, keep_data=True)  # replicas of no known service
            return
        state = self._state.setdefault(name, _ServiceState())
        deployment = await self.store.get_deployment(service.deployment_id or "")
        if deployment.status == "pending" or (deployment.active and deployment.image_id is None):
            if deployment.spec.build is not None:
                # The build runs on its own; meanwhile the version it replaces is kept running.
                self._ensure_build(service.name, deployment.id)
                serving = await self._serving_meanwhile(deployment)
                if serving is None:
                    return
                deployment = serving
            else:
                begun = await self._begin(service, deployment)
                if begun is None:
                    return  # it failed or was superseded: a pass over what replaced it is queued
                deployment = begun

        if not service.sleeping:
            self._wake_dozing(name)
        replicas = await self.runtime.list_replicas(name)
        state.spec, state.deployment, state.replicas = deployment.spec, deployment, tuple(replicas)
        state.current = await self._equivalent(deployment, replicas)
        self._sync_health(state, replicas)

        now = time.monotonic()
        self._reset_backoff(state, replicas, now)
        waiting = {
            slot: entry.not_before for (dep, slot), entry in state.slots.items()
            if dep == deployment.id and entry.not_before > now
        }
        deploy = deployment.spec.deploy
        desired = Desired(
            deployment=deployment.id,
            replicas=service.desired_replicas,
            strategy=deploy.strategy,
            max_surge=deploy.max_surge,
            max_unavailable=deploy.max_unavailable,
            canary=deploy.canary,
            promoted=deployment.promoted_at is not None,
            min_healthy_s=deploy.min_healthy_s,
            hold=deployment.status == "failed",
            current=state.current,
            asleep=service.sleeping and not service.stopped,
        )
        observed = Observed(
            replicas=tuple(replicas),
            health={r.id: self.health.status(r.id) for r in replicas},
            healthy_for={r.id: now - self.health.state(r.id).since for r in replicas
                         if self.health.status(r.id) == "healthy"},
            retiring=frozenset(self._retiring),
            backoff_slots=frozenset(waiting),
            sleepers=self._sleepers(service, replicas),
        )
        result = plan(desired, observed)
        await self._act(service, deployment, state, result)

        if waiting:
            self.trigger_later(name, min(waiting.values()) - now + 0.01)
        if result.recheck_in_s is not None:
            self.trigger_later(name, result.recheck_in_s + 0.01)
        await self._progress(service, deployment, state, result)

    async def _act(
        self, service: Service, deployment: Deployment, state: _ServiceState, result: Plan
    ) -> None:
        """Carry out a plan; the route follows concurrently (a new backend boots with its
        replicas, so only a runtime `add server` is left once one is healthy)."""
        route_update = asyncio.create_task(self._sync_routes())
        try:
            for action in result.actions:
                if isinstance(action, Clear) and action.crashed:
                    await self._clear(service, deployment, state, action.replica)
                elif isinstance(action, Clear):  # slept, and not needed again
                    self._slept.discard(action.replica.id)
                    await self.runtime.remove_replica(action.replica.id)
            rollout = [a for a in result.of(Retire) if isinstance(a, Retire) and a.reason == "rollout"]
            if deployment.active and result.switching:
                await self._step(deployment, "switching",
                                 "new replicas take traffic beside the old ones")
            if deployment.active and rollout:
                await self._step(deployment, "draining", "old replicas leave the route")
            for action in result.actions:
                if isinstance(action, Retire):
                    self._begin_retire(service.name, action.replica, action.reason, deployment)
            starts = [a.slot for a in result.actions if isinstance(a, Start)]
            resumes = [a.replica for a in result.actions if isinstance(a, Resume)]
            if starts or resumes:
                if deployment.active:
                    await self._step(deployment, "starting",
                                     f"starting {len(starts) + len(resumes)} replica(s) of "
                                     f"{deployment.image}")
                await asyncio.gather(*(self._start(service, deployment, state, s) for s in starts),
                                     *(self._resume(service, deployment, state, r) for r in resumes))
                if deployment.active:
                    await self._step(deployment, "health", "waiting for health checks to pass")
            if starts or result.of(Clear):
                state.replicas = tuple(await self.runtime.list_replicas(service.name))
        finally:
            await route_update
        await self._sync_routes()

    async def _begin(self, service: Service, deployment: Deployment) -> Deployment | None:
        """Resolve the image of a new deployment; a missing image fails it at once."""
        begun = await self.store.update_deployment(
            deployment.id, status="running", step="pulling", expect=("pending", "running")
        )
        if begun.status != "running":
            self.trigger(service.name)
            return None
        if deployment.status == "pending":
            await self._event(service.name, "deploy",
                              f"deployment #{deployment.number} started ({deployment.reason})",
                              {"deployment": deployment.id, "image": deployment.image,
                               "actor": deployment.actor})
        try:
            if deployment.image_id is not None:  # a rollback: the image it ran before
                image_id = await self.runtime.resolve_image(deployment.image_id)
                await self._log(deployment, "pulling",
                                f"reusing image {deployment.image} ({image_id[:19]})")
            else:
                await self._log(deployment, "pulling", f"resolving image {deployment.image}")
                image_id = await self.runtime.resolve_image(deployment.image)
                await self._log(deployment, "pulling",
                                f"image {deployment.image} is {image_id[:19]}")
        except ImageNotFound as exc:
            await self._fail(service, begun, exc.message)
            return None
        return await self._configure(service, begun, image_id)

    async def _configure(self, service: Service, deployment: Deployment, image_id: str,
                         build: dict[str, Any] | None = None) -> Deployment | None:
        """Resolve the deployment's environment and fingerprint what it runs; a secret that is
        missing or a value that does not decrypt fails it (never run with an empty value)."""
        env = deployment.env
        digest = ""
        if env is None:
            try:
                env, digest = await self.releases.environment(deployment)
            except LegatoError as exc:
                await self._log(deployment, deployment.step, f"configuration: {exc.message}")
                await self._fail(service, deployment, f"configuration: {exc.message}")
                return None
            await self._log(deployment, deployment.step,
                            f"environment: {', '.join(sorted(env)) or '(none)'}")
        nonce = (deployment.id if deployment.forced else "") + digest
        fingerprint = deployment.fingerprint or deployment.spec.fingerprint(image_id, nonce)
        configured = await self.store.update_deployment(
            deployment.id, image_id=image_id, fingerprint=fingerprint, env=env, build=build,
            expect=("running",))
        if configured.image_id != image_id:
            self.trigger(service.name)  # it ended meanwhile (superseded, failed by a person)
            return None
        return configured

    # source builds --------------------------------------------------------------------------

    def _ensure_build(self, name: str, deployment_id: str) -> None:
        if deployment_id not in self._builds:
            self._builds[deployment_id] = self._spawn(self._build(name, deployment_id))

    async def _serving_meanwhile(self, deployment: Deployment) -> Deployment | None:
        """What runs while `deployment` builds: the deployment it replaces, if it ever ran."""
        if deployment.previous_id is None:
            return None
        previous = await self.store.get_deployment(deployment.previous_id)
        return previous if previous.image_id is not None else None

    async def _build(self, name: str, deployment_id: str) -> None:
        """Clone, build and push; then the deployment runs the pushed digest. A failure fails
        the deployment with the build log's tail, and the running version stays."""
        logs = self.releases.build_logs
        try:
            service = await self.store.get_service(name)
            deployment = await self.store.get_deployment(deployment_id)
            begun = await self.store.update_deployment(
                deployment_id, status="running", expect=("pending", "running"))
            if begun.status != "running":
                return
            if deployment.status == "pending":
                await self._event(name, "deploy",
                                  f"deployment #{deployment.number} started ({deployment.reason})",
                                  {"deployment": deployment.id, "actor": deployment.actor,
                                   "build": True})
            output = logs.open(deployment_id)
            try:
                request = await self.releases.build_request(begun)
                await self._log(begun, "queued", f"building {request.repository} "
                                f"({request.branch}) for {request.project}/{request.service}")

                async def step(name_: str) -> None:
                    await self._step(begun, name_, f"{name_} ({request.repository})")

                result = await self.releases.builder.build(request, output, step)
                image_id = await self.runtime.resolve_image(result.image)
            except LegatoError as exc:
                output.write(f"error: {exc.message}")
                tail = output.tail(20)
                await self._fail(service, begun, f"build failed: {exc.message}"
                                 + (f"\n{tail}" if tail and exc.message not in tail else ""))
                return
            finally:
                logs.finish(deployment_id)
            await self._log(begun, "pushing",
                            f"built {result.commit[:12]} as {result.image} in "
                            + ", ".join(f"{k} {v:.1f}s" for k, v in result.seconds.items()))
            current = await self.store.get_deployment(deployment_id)
            if current.active:
                await self._configure(service, current, image_id, build=result.record())
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("build of deployment %s failed unexpectedly", deployment_id)
        finally:
            self._builds.pop(deployment_id, None)
            self.trigger(name)

    async def _equivalent(self, deployment: Deployment, replicas: Sequence[Replica]) -> frozenset[str]:
        """The other deployments among `replicas` that run exactly what `deployment` runs."""
        target = fingerprint_of(deployment)
        others = sorted({r.deployment for r in replicas} - {deployment.id})
        if target is None or not others:
            return frozenset()
        found = await self.store.deployments_by_id(others)
        return frozenset(d.id for d in found.values() if fingerprint_of(d) == target)

    async def _progress(
        self, service: Service, deployment: Deployment, state: _ServiceState, result: Plan
    ) -> None:
        if not deployment.active:
            return
        if result.rollout_done:
            done = await self.store.update_deployment(
                deployment.id, status="successful", step="done",
                expect=("running", "awaiting_promotion"),
            )
            if done.status == "successful":
                message = f"deployment #{deployment.number} successful"
                await self._log(deployment, "done",
                                f"{service.desired_replicas} replica(s) healthy; {message}")
                await self._event(service.name, "deploy", message,
                                  {"deployment": deployment.id,
                                   "replicas": service.desired_replicas})
            return
        if result.canaries_ready and deployment.promoted_at is None:
            if deployment.spec.deploy.auto_promote:
                await self._promote(service.name, deployment, actor="auto_promote")
            elif deployment.status != "awaiting_promotion":
                waiting = await self.store.update_deployment(
                    deployment.id, status="awaiting_promotion", step="promoting",
                    expect=("running",))
                if waiting.status == "awaiting_promotion":
                    message = (f"deployment #{deployment.number}: {deployment.spec.deploy.canary}"
                               " canary replica(s) healthy; awaiting promotion")
                    await self._log(deployment, "promoting", message)
                    await self._event(service.name, "deploy", message,
                                      {"deployment": deployment.id})
            return
        if deployment.status == "awaiting_promotion":
            return  # waiting for a person: no deadline
        crashing = any(
            entry.failures >= CRASH_LOOP_AFTER
            for (dep, _), entry in state.slots.items() if dep == deployment.id
        )
        deadline = deployment.spec.deploy.progress_deadline_s
        since = deployment.promoted_at or deployment.created_at
        elapsed = (datetime.now(UTC) - since).total_seconds()
        if crashing:
            await self._fail(service, deployment, "new replicas keep failing")
        elif elapsed > deadline:
            await self._fail(service, deployment,
                             f"not healthy within progress_deadline_s={deadline:g}")
        else:
            self.trigger_later(service.name, deadline - elapsed + 0.1)

    # deployment transitions -----------------------------------------------------------------

    async def _fail(
        self,
        service: Service,
        deployment: Deployment,
        error: str,
        *,
        restore: bool | None = None,
        actor: str = SYSTEM_ACTOR,
    ) -> Deployment:
        """Fail a deployment. With `restore` (default: the spec's auto_rollback) the last
        successful deployment before it comes back as a new deployment, in the same
        transaction; without, the service holds: what still serves stays, nothing starts."""
        restore = deployment.spec.deploy.auto_rollback if restore is None else restore
        good = (await self.store.last_successful(service.name, before_number=deployment.number)
                if restore else None)
        then = None
        if good is not None:
            spec = good.spec.model_copy(update={"replicas": service.replicas})
            then = (spec, good, actor,
                    f"rollback to #{good.number} (#{deployment.number} failed)")
        try:
            failed, rollback = await self.store.finish_deployment(
                deployment.id, "rolled_back" if good else "failed", error=error, then=then,
            )
        except DeploymentNotActive:
            if actor != SYSTEM_ACTOR:
                raise  # a person asked: tell them it had already ended
            self.trigger(service.name)  # it ended meanwhile (promoted, failed, superseded)
            return deployment
        details: dict[str, Any] = {"deployment": deployment.id, "error": error, "actor": actor,
                                   "condition": "deployment_failed"}
        message = f"deployment #{deployment.number} failed: {error}"
        if rollback is not None and good is not None:
            details |= {"rollback": rollback.id, "restored": good.id}
            message += f"; deployment #{rollback.number} restores #{good.number}"
        elif restore:
            message += "; nothing earlier succeeded, so nothing to restore"
        await self._log(deployment, deployment.step, message)
        await self._event(service.name, "error", message, details)
        state = self._state.get(service.name)
        if state and rollback is not None:  # replaced: its crash history is over
            state.slots = {k: v for k, v in state.slots.items() if k[0] != deployment.id}
            state.crash_loop = False
        self.trigger(service.name)
        return failed

    async def _promote(self, name: str, deployment: Deployment, *, actor: str) -> Deployment:
        promoted = await self.store.update_deployment(
            deployment.id, status="running", step="promoting", promoted=True,
            expect=("running", "awaiting_promotion"),
        )
        if promoted.promoted_at is not None and promoted.active:
            message = f"deployment #{deployment.number} promoted by {actor}; rolling the rest"
            await self._log(deployment, "promoting", message)
            await self._event(name, "deploy", message, {"deployment": deployment.id,
                                                        "actor": actor})
        self.trigger(name)
        return promoted

    async def promote(self, deployment_id: str, *, actor: str) -> Deployment:
        """End the canary phase of a deployment whose canaries are healthy."""
        deployment = await self.store.get_deployment(deployment_id)
        _require_active(deployment)
        if deployment.spec.deploy.strategy != "canary" or deployment.promoted_at is not None:
            raise BadRequest(f"deployment #{deployment.number} has no canary phase to promote",
                             code="NOT_PROMOTABLE", details={"deployment_id": deployment.id})
        if deployment.status != "awaiting_promotion":
            raise BadRequest(f"the canaries of deployment #{deployment.number} are not healthy yet",
                             code="CANARIES_NOT_READY", details={"deployment_id": deployment.id})
        return await self._promote(deployment.service, deployment, actor=actor)

    async def fail(self, deployment_id: str, *, actor: str) -> Deployment:
        """Abort a deployment in flight and restore the version that last succeeded."""
        deployment = await self.store.get_deployment(deployment_id)
        _require_active(deployment)
        service = await self.store.get_service(deployment.service)
        return await self._fail(service, deployment, f"failed by {actor}", restore=True,
                                actor=actor)

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
            image=deployment.image_id or deployment.image,
            port=spec.port,
            command=tuple(spec.command) if spec.command else None,
            env={"PORT": str(spec.port),
                 **(deployment.env if deployment.env is not None else spec.env)},
            labels=spec.labels,
            memory_bytes=spec.resources.memory_bytes,
            cpus=spec.resources.cpu,
            volumes={v.name: v.path for v in spec.volumes if v.name is not None},
            binds=tuple((v.host_path, v.path, v.read_only) for v in spec.volumes
                        if v.host_path is not None),
            privileged=spec.privileged,
            cap_add=spec.cap_add,
            devices=spec.devices,
            host_network=spec.network_mode == "host",
            host_pid=spec.pid_mode == "host",
        )
        try:
            replica = await self.runtime.start_replica(request)
        except LegatoError as exc:
            failures = self._record_failure(state, deployment.id, slot)
            message = f"replica {slot} failed to start: {exc.message}"
            await self._log(deployment, "starting", message)
            await self._event(service.name, "crash", message,
                              {"slot": slot, "error": exc.message, "failures": failures,
                               "retry_in_s": backoff_s(failures)})
            await self._check_crash_loop(service.name, state)
            return
        # Known to the route at once: it may be healthy before its siblings have started.
        state.replicas = (*state.replicas, replica)
        self._track(replica, spec)
        await self._log(deployment, "starting",
                        f"started {replica.name} (container {replica.id[:12]}, "
                        f"127.0.0.1:{replica.host_port})")

    async def _resume(
        self, service: Service, deployment: Deployment, state: _ServiceState, replica: Replica
    ) -> None:
        """Start a replica again that was stopped while its service slept; one that does not
        start is removed, and its slot gets a new replica."""
        self._slept.discard(replica.id)
        try:
            resumed = await self.runtime.resume_replica(replica.id)
        except LegatoError as exc:
            await self._event(service.name, "crash",
                              f"replica {replica.name} did not start again: {exc.message}",
                              {"replica": replica.name, "error": exc.message})
            with contextlib.suppress(LegatoError):
                await self.runtime.remove_replica(replica.id)
            self.trigger(service.name)
            return
        state.replicas = (*(r for r in state.replicas if r.id != replica.id), resumed)
        self._track(resumed, deployment.spec)

    def _sleepers(self, service: Service, replicas: Sequence[Replica]) -> frozenset[str]:
        """Stopped replicas that were stopped for sleeping (not crashed): the ones this process
        stopped, and after a restart those that stopped while the service slept."""
        found = set()
        for replica in replicas:
            if not replica.gone:
                continue
            stopped = replica.finished_at
            if replica.id in self._slept or (
                service.slept_at is not None and stopped is not None
                and stopped >= service.slept_at
                and (service.sleeping or (service.woke_at is not None
                                          and stopped <= service.woke_at))
            ):
                found.add(replica.id)
        return frozenset(found)

    async def _clear(
        self, service: Service, deployment: Deployment, state: _ServiceState, replica: Replica
    ) -> None:
        """A replica exited on its own: record the crash, remove it, restart after backoff."""
        self.health.forget(replica.id)
        self._slept.discard(replica.id)
        tail: list[str] = []
        with contextlib.suppress(Exception):
            tail = [line.message async for line in self.runtime.logs(
                replica, tail=20, since=None, follow=False)]
        await self.runtime.remove_replica(replica.id)
        if replica.deployment not in state.current | {deployment.id}:
            return
        failures = self._record_failure(state, deployment.id, replica.slot)
        self.restarts[service.name] = self.restarts.get(service.name, 0) + 1
        held = deployment.status == "failed" and any(
            r.running and r.deployment not in state.current | {deployment.id}
            for r in state.replicas)
        message = (f"replica {replica.name} exited with code {replica.exit_code}; "
                   + ("not restarted: the deployment failed and the old version serves"
                      if held else f"restarting in {backoff_s(failures):g}s"))
        if deployment.active:
            await self._log(deployment, deployment.step, message)
        await self._event(
            service.name, "crash", message,
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
        target = state.deployment.id if state.deployment else ""
        for replica in replicas:
            key = (target if replica.deployment in state.current else replica.deployment,
                   replica.slot)
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
                              {"failures": max(e.failures for e in state.slots.values()),
                               "condition": "crash_loop"})

    def _wake_dozing(self, name: str) -> None:
        """Woken while replicas drain for sleep: they stay (still healthy, back in the route)."""
        for replica in self.replicas_of(name):
            if replica.id in self._dozing and self._retiring.get(replica.id) == "drain":
                self._dozing.discard(replica.id)
                del self._retiring[replica.id]

    def _begin_retire(
        self, service: str, replica: Replica, reason: str, deployment: Deployment
    ) -> None:
        if replica.id in self._retiring:
            return
        self._retiring[replica.id] = "drain"
        if reason == "sleep":
            self._dozing.add(replica.id)
        self._spawn(self._retire(service, replica, reason, deployment))

    async def _retire(
        self, service: str, replica: Replica, reason: str, deployment: Deployment
    ) -> None:
        """Drain from the route, wait for in-flight requests (at most drain_timeout_s), then
        stop (SIGTERM, SIGKILL after stop_timeout_s) and remove."""
        deploy = deployment.spec.deploy
        journal = deployment.active and reason == "rollout"
        try:
            in_route = self.health.status(replica.id) == "healthy"
            if reason == "unhealthy":
                self.restarts[service] = self.restarts.get(service, 0) + 1
                state = self._state.get(service)
                if state is not None and replica.deployment in state.current | {deployment.id}:
                    self._record_failure(state, deployment.id, replica.slot)
                await self._event(service, "health",
                                  f"replica {replica.name} is unhealthy; replacing it",
                                  {"replica": replica.name,
                                   "last_error": self.health.state(replica.id).last_error})
            if in_route:
                await self._sync_routes()
                if journal:
                    await self._log(deployment, "draining", f"draining {replica.name}")
                deadline = time.monotonic() + deploy.drain_timeout_s
                while time.monotonic() < deadline and replica.id in self._retiring:
                    try:
                        if await self.edge.sessions(service, server_name(replica)) == 0:
                            break
                    except LegatoError:
                        break
                    await asyncio.sleep(0.05)
            if replica.id not in self._retiring:
                return  # the service woke while this replica drained for sleep: it stays
            self._dozing.discard(replica.id)
            self._retiring[replica.id] = "out"
            await self._sync_routes()
            self.health.forget(replica.id)
            await self.runtime.stop_replica(replica.id, deploy.stop_timeout_s)
            if reason == "sleep":
                self._slept.add(replica.id)  # kept: waking starts it again
                return
            await self.runtime.remove_replica(replica.id)
            if journal:
                await self._log(deployment, "draining", f"stopped and removed {replica.name}")
        except Exception:
            log.exception("retiring %s failed", replica.name)
        finally:
            self._dozing.discard(replica.id)
            self._retiring.pop(replica.id, None)
            self.trigger(service)

    async def _teardown(self, name: str, *, keep_data: bool) -> None:
        """Take the service's route down, remove its replicas and, unless `keep_data`, its
        volumes. Safe to repeat: a pass that fails half-way is retried."""
        self._state.pop(name, None)
        await self._sync_routes()
        replicas = await self.runtime.list_replicas(name)
        for replica in replicas:
            self.health.forget(replica.id)
            self._slept.discard(replica.id)
        await asyncio.gather(*(self.runtime.remove_replica(r.id) for r in replicas))
        if not keep_data:
            await self.runtime.remove_volumes(name)

    # deployment steps and logs --------------------------------------------------------------

    async def _step(self, deployment: Deployment, step: str, message: str) -> None:
        """Move the deployment to `step` (steps only go forward) with a log line and event."""
        if await self.store.advance_step(deployment.id, step):
            await self._log(deployment, step, message)
            await self._event(deployment.service, "deploy",
                              f"deployment #{deployment.number}: {step}",
                              {"deployment": deployment.id, "step": step})

    async def _log(self, deployment: Deployment, step: str, message: str) -> None:
        try:
            await self.store.add_deployment_log(deployment.id, step, message)
        except Exception:
            log.exception("could not write the log of deployment %s", deployment.id)

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
        self._spawn(self._sync_routes_logged())
        self.trigger(replica.service)
        if after.status == "healthy":
            for waiter in self._healthy_waiters.pop(replica.service, []):
                if not waiter.done():
                    waiter.set_result(None)
        state = self._state.get(replica.service)
        target = state.deployment if state else None
        if target is not None and target.active and replica.deployment == target.id:
            self._spawn(self._log(target, "health", f"{replica.name} is {after.status}"
                                  + (f": {after.last_error}" if after.last_error else "")))
        if before.status != "starting" or after.status != "healthy":
            self._spawn(self._event(
                replica.service, "health",
                f"replica {replica.name} is {after.status}",
                {"replica": replica.name, "from": before.status, "to": after.status,
                 "last_error": after.last_error},
            ))

    def route_of(self, name: str) -> Route | None:
        state = self._state.get(name)
        if state is None or state.spec is None or not state.spec.routed:
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

    async def _sync_routes_logged(self) -> None:
        """A route sync nobody awaits: failures are logged (the pass that follows retries)."""
        try:
            await self._sync_routes()
        except LegatoError as exc:
            log.warning("route update failed: %s", exc.message)

    # reading --------------------------------------------------------------------------------

    def replicas_of(self, name: str) -> tuple[Replica, ...]:
        state = self._state.get(name)
        return state.replicas if state else ()

    def all_replicas(self) -> list[Replica]:
        return [r for state in self._state.values() for r in state.replicas]

    def healthy_replica(self, name: str) -> Replica | None:
        """A replica of the service that takes requests now (healthy, not leaving)."""
        for replica in self.replicas_of(name):
            if (replica.running and replica.host_port and replica.id not in self._retiring
                    and self.health.status(replica.id) == "healthy"):
                return replica
        return None

    async def wait_healthy(self, name: str, timeout_s: float) -> Replica | None:
        """A replica that takes requests, once there is one (None after `timeout_s`)."""
        deadline = time.monotonic() + timeout_s
        while (replica := self.healthy_replica(name)) is None:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            waiter = asyncio.get_running_loop().create_future()
            waiters = self._healthy_waiters.setdefault(name, [])
            waiters.append(waiter)
            try:
                # Also look again now and then: a replica can become usable by other means.
                await asyncio.wait_for(waiter, min(remaining, 1.0))
            except TimeoutError:
                with contextlib.suppress(ValueError):
                    waiters.remove(waiter)
        return replica

    def service_of_host(self, host: str) -> str | None:
        """The service a domain routes to."""
        host = host.split(":", 1)[0].lower()
        for name, state in self._state.items():
            if state.spec is not None and state.spec.routed and host in state.spec.domains:
                return name
        return None

    def status_of(self, service: Service, deployment: Deployment | None) -> str:
        """running, deploying, degraded, crash_loop, stopped, idle or failed."""
        state = self._state.get(service.name)
        healthy = sum(1 for r in self.replicas_of(service.name)
                      if r.running and self.health.status(r.id) == "healthy")
        if service.stopped:
            return "stopped"
        if service.sleeping:
            return "sleeping"
        if state and state.crash_loop:
            return "crash_loop"
        if deployment is not None and deployment.status == "failed":
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


def _require_active(deployment: Deployment) -> None:
    if not deployment.active:
        raise DeploymentNotActive(deployment.id, deployment.number, deployment.status)
