"""The platform: wires store, runtime, edge and reconciler, and offers the operations the API
exposes. Routes parse and call these; these never build HTTP responses."""

from __future__ import annotations

import asyncio
import heapq
import logging
import time
from collections.abc import AsyncGenerator, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from legato.access import UNPRIVILEGED, AccessPolicy, Grant
from legato.build.builder import Builder, DockerBuilder
from legato.build.log import BuildLogs
from legato.config import Settings
from legato.edge.base import Edge
from legato.edge.waker import Waker
from legato.errors import BadRequest, Conflict, DeploymentInProgress, LegatoError, ValidationFailed
from legato.gitops import GitOps
from legato.health import ProbeResult
from legato.monitor.monitor import Monitor
from legato.notify import Notifier
from legato.outbound.deliverer import Deliverer
from legato.reconcile.loop import Reconciler
from legato.registry import Registry
from legato.release import Releases
from legato.runtime.base import LogLine, Replica, Runtime
from legato.scaling.autoscaler import Autoscaler
from legato.spec import Scaling, ServiceSpec
from legato.store import Deployment, Service, Store
from legato.store.projects import ProjectNotFound

log = logging.getLogger(__name__)
M = TypeVar("M", bound=BaseModel)


@dataclass(frozen=True)
class DeployResult:
    deployed: list[dict[str, Any]]
    errors: list[dict[str, Any]]


@dataclass(frozen=True)
class ServiceView:
    """A service with what runs of it now."""

    service: Service
    deployment: Deployment | None
    status: str
    replicas: tuple[Replica, ...]
    health: dict[str, str]

    @property
    def spec(self) -> ServiceSpec | None:
        return self.deployment.spec if self.deployment else None

    @property
    def healthy(self) -> int:
        return sum(1 for r in self.replicas if r.running and self.health.get(r.id) == "healthy")

    @property
    def current(self) -> int:
        return sum(1 for r in self.replicas if r.running)


def validation_details(exc: ValidationError) -> list[dict[str, Any]]:
    return [
        {"field": ".".join(str(p) for p in err["loc"]) or "(body)", "message": err["msg"],
         "type": err["type"]}
        for err in exc.errors(include_url=False, include_context=False)
    ]


def validated(model: type[M], raw: Any, what: str) -> M:
    """`model` from user input, or ValidationFailed naming each bad field."""
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        details = validation_details(exc)
        first = details[0]
        raise ValidationFailed(
            f"invalid {what}: {first['field']}: {first['message']}",
            details={"errors": details},
        ) from exc


def parse_spec(raw: Any) -> ServiceSpec:
    """A ServiceSpec from user input, or ValidationFailed naming each bad field."""
    return validated(ServiceSpec, raw, "service spec")


def _everything(project: str) -> bool:
    return True


class Platform:
    """One Legato installation: its state, its runtime and its edge."""

    def __init__(self, settings: Settings, store: Store, runtime: Runtime, edge: Edge,
                 builder: Builder | None = None) -> None:
        self.settings = settings
        self.access = AccessPolicy.from_settings(settings)
        self.store = store
        self.runtime = runtime
        self.edge = edge
        self.builder = builder or DockerBuilder(
            registry=settings.registry, docker_host=settings.docker_host,
            workdir=settings.data_dir / "work", allow_local=settings.git_allow_local,
            git_timeout_s=settings.git_timeout_s, build_timeout_s=settings.build_timeout_s)
        self.releases = Releases(store, self.builder, BuildLogs(settings.builds_dir),
                                 settings.instance)
        self.reconciler = Reconciler(
            store, runtime, edge, self.releases, resync_interval_s=settings.resync_interval_s
        )
        self.registry = Registry(settings.registry)
        self.gitops = GitOps(self)
        self.monitor = Monitor(
            store=store, runtime=runtime, edge=edge, replicas=self.reconciler.all_replicas,
            counts=self.counts, data_dir=settings.data_dir,
            access_log=settings.access_log_socket if settings.access_log else None,
            interval_s=settings.stats_interval_s,
        )
        self.waker = Waker(settings.wake_socket, self, timeout_s=settings.wake_timeout_s)
        self.autoscaler = Autoscaler(self, settings.autoscale_interval_s)
        self.notifier = Notifier(store)
        self.deliverer = Deliverer(store, self.access,
                                   retry_base_s=settings.webhook_retry_base_s)
        self._waking: dict[str, float] = {}  # service -> when a request woke it (monotonic)
        self.started_at = time.time()

    async def start(self) -> None:
        self.started_at = time.time()
        self._apply_settings(await self.store.settings_overrides())
        self.monitor.open_log()
        await self.waker.start()
        await self.edge.start()
        await self.reconciler.start(self.edge.routes())
        self.monitor.start()
        self.autoscaler.start()
        self.notifier.start()
        await self.deliverer.start()

    async def close(self) -> None:
        await self.deliverer.close()
        await self.notifier.close()
        await self.autoscaler.close()
        await self.monitor.close()
        await self.waker.close()
        await self.gitops.close()
        await self.reconciler.close()
        await self.builder.close()
        await self.registry.close()
        await self.runtime.close()
        self.store.close()

    # services -------------------------------------------------------------------------------

    async def deploy(
        self, raw_services: list[Any], *, actor: str, supersede: bool = False,
        grant: Grant = UNPRIVILEGED, sees: Callable[[str], bool] = _everything,
        if_match: str | None = None,
    ) -> DeployResult:
        """Apply seed 001's payload: every valid service is deployed, every bad one reported
        (a service whose deployment is still in flight too, unless `supersede`). A project
        the caller does not `see` is reported as missing; `if_match` holds for a payload of
        one service."""
        if if_match is not None and len(raw_services) != 1:
            raise ValidationFailed("If-Match names one spec: send a payload of one service",
                                   code="IF_MATCH_NEEDS_ONE_SERVICE")
        deployed: list[dict[str, Any]] = []
        errors: list[dict[str, Any]] = []
        seen: set[str] = set()
        for index, raw in enumerate(raw_services):
            name = raw.get("name") if isinstance(raw, dict) else None
            try:
                spec = parse_spec(raw)
                if spec.name in seen:
                    raise ValidationFailed(f"service {spec.name} appears twice in one payload")
                seen.add(spec.name)
                if not sees(spec.project):
                    raise ProjectNotFound(spec.project)
                existing = self.store.service_now(spec.name)
                if existing is not None and not sees(existing.project):
                    # Names are unique platform-wide; which project holds it stays unsaid.
                    raise Conflict(f"service name taken: {spec.name}", code="SERVICE_NAME_TAKEN",
                                   details={"name": spec.name})
                service, deployment = await self.store.apply_spec(
                    spec, actor=actor, reason="deploy", supersede=supersede, grant=grant,
                    if_match=if_match)
            except LegatoError as exc:
                errors.append({"index": index, "name": name, "error": exc.message,
                               "code": exc.code, "status": exc.status, "details": exc.details})
                continue
            deployed.append({
                "name": service.name,
                "deployment_id": deployment.id if deployment else service.deployment_id,
                "changed": deployment is not None,
                "status_url": f"/api/v1/services/{service.name}",
            })
            self.reconciler.trigger(service.name)
        return DeployResult(deployed, errors)

    def view_now(self, service: Service) -> ServiceView:
        """The service's view from memory alone (no thread, no database read)."""
        return self._view(service, self.store.deployment_now(service))

    def counts(self, name: str) -> tuple[int, int]:
        """(healthy, running) replicas of a service now."""
        running = [r for r in self.reconciler.replicas_of(name) if r.running]
        healthy = sum(1 for r in running if self.reconciler.health.status(r.id) == "healthy")
        return healthy, len(running)

    async def view(self, service: Service) -> ServiceView:
        deployment = (await self.store.get_deployment(service.deployment_id)
                      if service.deployment_id else None)
        return self._view(service, deployment)

    def _view(self, service: Service, deployment: Deployment | None) -> ServiceView:
        replicas = tuple(r for r in self.reconciler.replicas_of(service.name) if not r.gone)
        health = {r.id: self.reconciler.health.status(r.id) for r in replicas}
        status = self.reconciler.status_of(service, deployment)
        return ServiceView(service, deployment, status, replicas, dict(health))

    async def describe(self, name: str) -> ServiceView:
        return await self.view(await self.store.get_service(name))

    async def list_views(
        self,
        project: str | None = None,
        environment: str | None = None,
        *,
        after: str | None = None,
        limit: int | None = None,
        projects: list[str] | None = None,
    ) -> list[ServiceView]:
        """Views of the services by name: after `after`, at most `limit` of them (of
        `projects` only, if given)."""
        found = await self.store.list_services_with_deployments(
            project, environment, after=after, limit=limit, projects=projects
        )
        return [self._view(service, deployment) for service, deployment in found]

    async def scale(
        self,
        name: str,
        replicas: int,
        *,
        actor: str,
        trigger: str = "manual",
        reason: str | None = None,
        figures: dict[str, Any] | None = None,
        expect: int | None = None,
        if_match: str | None = None,
    ) -> tuple[Service, int]:
        """Set the replica count (and record why). While autoscaling is on, a count outside
        the policy's bounds is refused; `expect`: only if the count is still that."""
        if not 0 <= replicas <= 100:
            raise ValidationFailed("replicas must be between 0 and 100",
                                   details={"replicas": replicas})
        current = await self.store.get_service(name)
        policy = current.scaling
        if current.autoscaled and not policy.min_replicas <= replicas <= policy.max_replicas:
            raise ValidationFailed(
                f"{name} is autoscaled between {policy.min_replicas} and {policy.max_replicas} "
                "replicas; change the scaling policy to go beyond",
                code="OUTSIDE_SCALING_BOUNDS",
                details={"replicas": replicas, "min_replicas": policy.min_replicas,
                         "max_replicas": policy.max_replicas})
        service, previous = await self.store.set_replicas(name, replicas, expect=expect,
                                                          if_match=if_match)
        if service.replicas != replicas:
            return service, previous  # changed meanwhile: this decision is stale
        verb = ("scaled out" if replicas > previous else "scaled in" if replicas < previous
                else "kept")
        message = f"{verb} from {previous} to {replicas} replicas" + (f": {reason}" if reason else "")
        details: dict[str, Any] = {"action": verb.replace(" ", "_"), "previous_replicas": previous,
                                   "new_replicas": replicas, "trigger": trigger, "actor": actor}
        if reason:
            details["reason"] = reason
        if figures is not None:
            details["figures"] = figures
        await self.store.add_event(name, "scaling", message, details)
        self.reconciler.trigger(name)
        return service, previous

    async def set_scaling(self, name: str, policy: Scaling, *, actor: str,
                          if_match: str | None = None) -> tuple[Service, Scaling]:
        """Replace the service's scaling policy (no deployment: no container changes)."""
        service, previous = await self.store.set_scaling(name, policy, if_match=if_match)
        await self.store.add_event(name, "config", f"scaling policy set to {policy.mode}",
                                   {"actor": actor, "previous": previous.model_dump(),
                                    "policy": policy.model_dump(),
                                    "replicas": service.replicas})
        self.reconciler.trigger(name)
        return service, previous

    # sleep and wake -------------------------------------------------------------------------

    async def sleep(self, name: str, *, actor: str, reason: str) -> tuple[Service, bool]:
        """Scale to zero: the replicas drain and stop (kept), the route falls back to the
        waker, and the next request starts them again. Whether it was awake."""
        service = await self.store.get_service(name)
        if service.stopped:
            raise Conflict(f"service {name} is stopped; start it before it can sleep",
                           code="SERVICE_STOPPED")
        deployment = self.store.deployment_now(service)
        if deployment is not None and deployment.active:
            raise DeploymentInProgress(deployment.id, deployment.number, deployment.status)
        service, changed = await self.store.set_sleeping(name, True)
        if changed:
            self._waking.pop(name, None)
            await self.store.add_event(name, "scaling", f"asleep: {reason}",
                                       {"action": "sleep", "actor": actor, "reason": reason,
                                        "replicas": service.replicas})
            self.reconciler.trigger(name)
        return service, changed

    async def wake(self, name: str, *, actor: str, reason: str) -> tuple[Service, bool]:
        """Start a sleeping service's replicas again; whether it was asleep."""
        self._waking[name] = time.monotonic()
        service, changed = await self.store.set_sleeping(name, False)
        if changed:
            await self.store.add_event(name, "scaling", f"woken: {reason}",
                                       {"action": "wake", "actor": actor, "reason": reason,
                                        "replicas": service.replicas})
            self.reconciler.trigger(name)
        else:
            self._waking.pop(name, None)
        return service, changed

    async def hold_for_wake(self, name: str) -> bool:
        """A request found no replica of `name`: wake it if it sleeps. Whether to wait."""
        started = self._waking.get(name)
        if started is not None and time.monotonic() - started < self.waker.timeout_s:
            return True  # another request woke it a moment ago
        service = await self.store.get_service(name)
        if not service.sleeping:
            return False
        await self.wake(name, actor="edge", reason="a request arrived")
        return True

    def healthy_replica(self, name: str) -> Replica | None:
        replica = self.reconciler.healthy_replica(name)
        if replica is not None:
            self._waking.pop(name, None)
        return replica

    async def wait_healthy(self, name: str, timeout_s: float) -> Replica | None:
        replica = await self.reconciler.wait_healthy(name, timeout_s)
        self._waking.pop(name, None)
        return replica

    def service_of_host(self, host: str) -> str | None:
        return self.reconciler.service_of_host(host)

    async def set_running(self, name: str, running: bool, *, actor: str) -> Service:
        service = await self.store.set_stopped(name, not running)
        verb = "started" if running else "stopped"
        await self.store.add_event(name, "lifecycle", f"service {verb}", {"actor": actor})
        self.reconciler.trigger(name)
        return service

    async def redeploy(
        self,
        name: str,
        *,
        actor: str,
        reason: str,
        changes: dict[str, Any] | None = None,
        supersede: bool = False,
        grant: Grant = UNPRIVILEGED,
        if_match: str | None = None,
    ) -> Deployment:
        """A new deployment of the current spec with `changes` applied (a new image, say).
        Without changes every replica is replaced and the image reference resolved again:
        a restart, or a redeploy that picks up a tag pushed anew."""
        current = await self._current(name)
        service = await self.store.get_service(name)
        raw = {**current.spec.to_json(), **(changes or {}), "replicas": service.replicas}
        spec = parse_spec(raw)
        if spec.name != name:
            raise ValidationFailed("a deployment cannot rename its service")
        deployment = await self.store.create_deployment(
            spec, actor=actor, reason=reason, supersede=supersede, forced=not changes,
            grant=grant, if_match=if_match,
        )
        self.reconciler.trigger(name)
        return deployment

    async def rollback(
        self,
        name: str,
        *,
        actor: str,
        to: int | str | None = None,
        supersede: bool = False,
        grant: Grant = UNPRIVILEGED,
    ) -> Deployment:
        """A new deployment that copies an earlier one (`to`: its number or id; by default the
        last successful one before the current): same spec, same image ID, nothing rebuilt,
        no canary phase. Replicas that already run that revision are kept."""
        current = await self._current(name)
        if to is None:
            target = await self.store.last_successful(name, before_number=current.number)
            if target is None:
                raise BadRequest(
                    f"service {name} has no successful deployment before #{current.number}",
                    code="NO_ROLLBACK_TARGET", details={"current": current.number})
        elif isinstance(to, int):
            target = await self.store.deployment_by_number(name, to)
        else:
            target = await self.store.get_deployment(to)
            if target.service != name:
                raise BadRequest(f"deployment {to} is not a deployment of {name}",
                                 code="WRONG_SERVICE")
        if target.image_id is None:
            raise BadRequest(
                f"deployment #{target.number} never resolved its image, so it cannot run again",
                code="NOT_ROLLBACKABLE", details={"deployment_id": target.id})
        service = await self.store.get_service(name)
        spec = target.spec.model_copy(update={"replicas": service.replicas})
        deployment = await self.store.create_deployment(
            spec, actor=actor, reason=f"rollback to #{target.number}", supersede=supersede,
            copy_of=target, promoted=True, grant=grant,
        )
        self.reconciler.trigger(name)
        return deployment

    async def rollback_deployment(
        self, deployment_id: str, *, actor: str, supersede: bool = False,
        grant: Grant = UNPRIVILEGED,
    ) -> Deployment:
        """Roll the deployment's service back to exactly that revision."""
        target = await self.store.get_deployment(deployment_id)
        return await self.rollback(target.service, actor=actor, to=target.id, supersede=supersede,
                                   grant=grant)

    async def promote(self, deployment_id: str, *, actor: str) -> Deployment:
        return await self.reconciler.promote(deployment_id, actor=actor)

    async def promote_service(self, name: str, *, actor: str) -> Deployment:
        return await self.reconciler.promote((await self._current(name)).id, actor=actor)

    async def fail(self, deployment_id: str, *, actor: str) -> Deployment:
        return await self.reconciler.fail(deployment_id, actor=actor)

    async def _current(self, name: str) -> Deployment:
        deployment = await self.store.current_deployment(name)
        if deployment is None:
            raise BadRequest(f"service {name} has nothing deployed yet", code="NOTHING_DEPLOYED")
        return deployment

    async def delete(self, name: str, *, keep_data: bool, actor: str,
                     if_match: str | None = None) -> int:
        """Forget the service now; the reconciler removes its containers, route and (unless
        `keep_data`) volumes, and finishes that after a crash too. How many containers go."""
        count = len(self.reconciler.replicas_of(name))
        await self.store.delete_service(name, keep_data=keep_data, if_match=if_match)
        log.info("service %s deleted by %s (keep_data=%s)", name, actor, keep_data)
        self.reconciler.trigger(name)
        return count

    # projects -------------------------------------------------------------------------------

    async def delete_project(self, name: str, *, force: bool, actor: str) -> list[str]:
        """Delete a project; with services that is a 409 unless `force`, which removes them
        (containers, routes, volumes) first. The services removed."""
        await self.store.get_project(name)
        services = [s.name for s in await self.store.list_services(name)]
        if services and not force:
            raise Conflict(f"project {name} has {len(services)} service(s); delete them first "
                           "or use ?force=true", code="PROJECT_HAS_SERVICES",
                           details={"services": services})
        for service in services:
            await self.delete(service, keep_data=False, actor=actor)
        await self.store.delete_project(name)
        return services

    async def deploy_environment(self, project: str, environment: str, *, actor: str,
                                 supersede: bool = False,
                                 grant: Grant = UNPRIVILEGED) -> list[Deployment]:
        """Redeploy every service of an environment (picking up changed configuration; source
        builds are built again)."""
        await self.store.get_environment(project, environment)
        services = await self.store.list_services(project, environment)
        for service in services:  # all refused or none: no half-deployed environment
            current = self.store.deployment_now(service)
            if current is not None:
                grant.check(current.spec)
        deployments = []
        for service in services:
            if service.deployment_id:
                deployments.append(await self.redeploy(
                    service.name, actor=actor, reason=f"deploy of {project}/{environment}",
                    supersede=supersede, grant=grant))
        return deployments

    async def remove_images(self, project: str, service: str) -> int:
        """The images built for a service, from the registry and from the local engine."""
        repository = f"{project}/{service}"
        removed = await self.registry.delete_repository(repository)
        return removed + await self.builder.remove_images(repository)

    # logs and health ------------------------------------------------------------------------

    def _pick(self, name: str, replica: str | None) -> list[Replica]:
        replicas = list(self.reconciler.replicas_of(name))
        if replica:
            replicas = [r for r in replicas
                        if replica in (r.name, r.id, r.id[:12], str(r.slot))]
            if not replicas:
                raise BadRequest(f"no replica {replica!r} in service {name}",
                                 code="REPLICA_NOT_FOUND")
        return sorted(replicas, key=lambda r: r.slot)

    async def logs(
        self, name: str, *, tail: int | None, since: datetime | None, replica: str | None
    ) -> list[LogLine]:
        await self.store.get_service(name)
        chosen = self._pick(name, replica)

        async def one(r: Replica) -> list[LogLine]:
            return [line async for line in self.runtime.logs(r, tail=tail, since=since,
                                                             follow=False)]

        per_replica = await asyncio.gather(*(one(r) for r in chosen))
        merged = list(heapq.merge(*per_replica, key=lambda line: line.timestamp or datetime.min))
        return merged if tail is None else merged[max(0, len(merged) - tail):]

    async def follow_logs(
        self, name: str, *, tail: int | None, since: datetime | None, replica: str | None
    ) -> AsyncGenerator[LogLine, None]:
        """Check the request now; the returned stream yields lines until it is closed. With
        tail=0 it starts at this moment (not when the runtime's streams open)."""
        await self.store.get_service(name)
        chosen = [r for r in self._pick(name, replica) if r.running]
        if tail == 0 and since is None:
            tail, since = None, datetime.now(UTC)
        return self._follow(chosen, tail=tail, since=since)

    async def _follow(
        self, chosen: list[Replica], *, tail: int | None, since: datetime | None
    ) -> AsyncGenerator[LogLine, None]:
        queue: asyncio.Queue[LogLine] = asyncio.Queue(maxsize=10_000)

        async def pump(r: Replica) -> None:
            async for line in self.runtime.logs(r, tail=tail, since=since, follow=True):
                await queue.put(line)

        tasks = [asyncio.create_task(pump(r)) for r in chosen]
        try:
            while True:
                yield await queue.get()
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def check_health(self, name: str) -> list[tuple[Replica, ProbeResult | None]]:
        await self.store.get_service(name)
        running = [r for r in self.reconciler.replicas_of(name) if r.running]
        results = await asyncio.gather(
            *(self.reconciler.health.check_now(r.id) for r in running)
        )
        self.reconciler.trigger(name)
        return list(zip(running, results, strict=True))

    # system ---------------------------------------------------------------------------------

    async def checks(self) -> dict[str, str]:
        """database, runtime and edge: "ok" or what went wrong."""
        return {name: "ok" if error is None else f"error: {error}"
                for name, (error, _) in (await self.timed_checks()).items()}

    async def timed_checks(self) -> dict[str, tuple[str | None, float]]:
        """database, runtime and edge: (what went wrong or None, response time in ms)."""

        async def run(probe: Any) -> tuple[str | None, float]:
            started = time.perf_counter()
            try:
                await asyncio.wait_for(probe(), timeout=3)
            except Exception as exc:
                return (f"{exc}"[:200] or type(exc).__name__,
                        (time.perf_counter() - started) * 1000)
            return None, (time.perf_counter() - started) * 1000

        database, runtime, edge = await asyncio.gather(
            run(self.store.ping), run(self.runtime.ping), run(self.edge.ping)
        )
        return {"database": database, "runtime": runtime, "edge": edge}

    async def configure(self, changes: dict[str, Any], *, actor: str) -> None:
        """Apply settings that take effect at once, and keep them for the next start."""
        await self.store.set_settings_overrides(changes)
        self._apply_settings(changes)
        log.info("configuration changed by %s: %s", actor, changes)

    def _apply_settings(self, values: dict[str, Any]) -> None:
        if "stats_interval_s" in values:
            self.monitor.interval_s = float(values["stats_interval_s"])
        if "autoscale_interval_s" in values:
            self.autoscaler.interval_s = float(values["autoscale_interval_s"])
        if "wake_timeout_s" in values:
            self.waker.timeout_s = float(values["wake_timeout_s"])
        self.access.apply(values)
        if "log_level" in values:
            logging.getLogger().setLevel(str(values["log_level"]).upper())
