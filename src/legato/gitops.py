"""Git to running services: a signed push deploys the environments that follow its branch; a
pull request gets a preview environment `pr-<n>` that goes away, with everything it made, when
the pull request is closed."""

from __future__ import annotations

import asyncio
import hashlib
import logging
from dataclasses import dataclass, field
from typing import Any

from legato.errors import LegatoError, Unauthorized
from legato.gitevents import Ignored, Provider, PullRequest, Push, delivery_id, parse_event
from legato.gitevents import signature_valid as _signature_valid
from legato.spec import ServiceSpec
from legato.store import Deployment, Store
from legato.store.models import Environment, Project, Webhook

log = logging.getLogger(__name__)


@dataclass
class Delivery:
    """What a delivery did: the answer of POST /webhooks/{provider}."""

    delivery: str
    project: str
    event: str
    status: str  # deploying | preview | removed | ignored | duplicate
    reason: str = ""
    deployments: list[dict[str, Any]] = field(default_factory=list)

    def summary(self) -> str:
        return f"{self.status}: {self.reason}" if self.reason else self.status


def preview_name(name: str, number: int) -> str:
    return f"{name}-pr-{number}"


def preview_domain(domain: str, number: int) -> str:
    """`web.example.com` -> `web-pr-7.example.com`."""
    first, dot, rest = domain.partition(".")
    return f"{first}-pr-{number}{dot}{rest}"


class GitOps:
    """Inbound git webhooks, by way of the platform's own operations."""

    def __init__(self, platform: Any) -> None:
        # The Platform (typed loosely: it imports this module).
        self.platform = platform
        self.store: Store = platform.store
        self._cleanups: set[asyncio.Task[None]] = set()

    async def receive(self, provider: Provider, headers: Any, body: bytes) -> Delivery:
        """Authenticate, de-duplicate and act; quick (builds run afterwards). A delivery whose
        signature no registered webhook of this provider accepts is refused with nothing done."""
        hooks = await self.store.list_webhooks(provider=provider)
        hook = next((h for h in hooks if _signature_valid(provider, h.secret, body, headers)),
                    None)
        if hook is None:
            raise Unauthorized("the delivery's signature matches no registered webhook",
                               code="INVALID_SIGNATURE", details={"provider": provider})
        event = parse_event(provider, headers, body)
        project = await self.store.get_project(hook.project)
        identity = delivery_id(provider, headers) or "sha256:" + hashlib.sha256(body).hexdigest()
        kind = type(event).__name__.lower()
        if not await self.store.record_delivery(provider, identity, hook, kind, "received"):
            return Delivery(identity, project.name, kind, "duplicate",
                            "this delivery was received before; nothing done")
        actor = f"webhook:{provider}"
        if isinstance(event, Ignored):
            result = Delivery(identity, project.name, event.event, "ignored", event.reason)
        elif not hook.enabled or not project.auto_deploy:
            result = Delivery(identity, project.name, kind, "ignored",
                              "auto-deploy is disabled for this project")
        elif isinstance(event, Push):
            result = await self._push(project, event, identity, f"{actor}:{event.pusher}")
        else:
            result = await self._pull_request(project, event, identity, f"{actor}:{event.sender}")
        await self.store.record_outcome(hook, identity, result.summary())
        return result

    async def _push(self, project: Project, push: Push, identity: str, actor: str) -> Delivery:
        environments = await self.store.environments_on_branch(project.name, push.branch)
        result = Delivery(identity, project.name, "push", "deploying")
        for environment in environments:
            for deployment in await self._redeploy_builds(
                    project, environment, push.branch,
                    f"push {push.branch}@{push.commit[:12]}", actor):
                result.deployments.append(_entry(deployment))
        if not result.deployments:
            result.status = "ignored"
            result.reason = f"no environment of {project.name} builds from {push.branch}"
        return result

    async def _redeploy_builds(self, project: Project, environment: Environment, branch: str,
                               reason: str, actor: str) -> list[Deployment]:
        """A new deployment (a rebuild) of every service of the environment built from
        `branch`; a newer push supersedes a build still running."""
        created = []
        for service in await self.store.list_services(project.name, environment.name):
            current = await self.store.current_deployment(service.name)
            build = current.spec.build if current else None
            if build is None or (build.branch not in (None, branch)):
                continue
            created.append(await self.platform.redeploy(
                service.name, actor=actor, reason=reason, supersede=True))
        return created

    # previews -------------------------------------------------------------------------------

    async def _pull_request(self, project: Project, pr: PullRequest, identity: str,
                            actor: str) -> Delivery:
        name = f"pr-{pr.number}"
        if pr.action == "closed":
            removed = await self.remove_preview(project.name, name)
            return Delivery(identity, project.name, "pull_request", "removed",
                            f"{name}: {len(removed)} service(s) removed")
        base = next(iter(await self.store.environments_on_branch(project.name, pr.base_branch)),
                    None) or await self.store.get_environment(project.name, "production")
        result = Delivery(identity, project.name, "pull_request", "preview", name)
        environment = await self._preview_environment(project, base, name, pr)
        for service in await self.store.list_services(project.name, base.name):
            current = await self.store.current_deployment(service.name)
            if current is None:
                continue
            spec = _preview_spec(current.spec, pr.number, name)
            _, created = await self.store.apply_spec(
                spec, actor=actor, reason=f"pull request #{pr.number} ({pr.commit[:12]})",
                supersede=True)
            if created is None and spec.build is not None:  # same spec, new commit: rebuild
                created = await self.platform.redeploy(
                    spec.name, actor=actor, reason=f"pull request #{pr.number} "
                    f"updated ({pr.commit[:12]})", supersede=True)
            if created is not None:
                self.platform.reconciler.trigger(spec.name)
                result.deployments.append(_entry(created))
        result.reason = f"{environment.name} from {pr.branch}"
        return result

    async def _preview_environment(self, project: Project, base: Environment, name: str,
                                   pr: PullRequest) -> Environment:
        try:
            environment = await self.store.get_environment(project.name, name)
        except LegatoError:
            environment = await self.store.create_environment(
                project.name, name, branch=pr.branch, pull_request=pr.number)
            inherited = await self.store.config(project.name, base.name, "env")
            if inherited:
                await self.store.set_config(project.name, name, "env",
                                            {v.key: v.value for v in inherited})
        if environment.branch != pr.branch:
            environment = await self.store.update_environment(project.name, name,
                                                              branch=pr.branch)
        return environment

    async def remove_preview(self, project: str, name: str) -> list[str]:
        """Delete a preview environment's services (containers, routes, volumes), its images
        (registry and local) and the environment itself."""
        services = [s.name for s in await self.store.list_services(project, name)]
        for service in services:
            await self.platform.delete(service, keep_data=False, actor="webhook")
        try:
            await self.store.delete_environment(project, name)
        except LegatoError as exc:
            log.warning("preview environment %s/%s not deleted: %s", project, name, exc.message)
        task = asyncio.create_task(self._remove_images(project, services))
        self._cleanups.add(task)
        task.add_done_callback(self._cleanups.discard)
        return services

    async def _remove_images(self, project: str, services: list[str]) -> None:
        """Once their containers are gone, the images built for `services` go too."""
        for service in services:
            try:
                await self.platform.reconciler.settled(service)
                await self.platform.remove_images(project, service)
            except Exception:
                log.exception("removing the images of %s/%s failed", project, service)

    async def settled(self) -> None:
        """Wait for background clean-ups (tests, shutdown)."""
        while self._cleanups:
            await asyncio.gather(*list(self._cleanups), return_exceptions=True)

    async def close(self) -> None:
        for task in list(self._cleanups):
            task.cancel()
        await asyncio.gather(*list(self._cleanups), return_exceptions=True)


def _preview_spec(spec: ServiceSpec, number: int, environment: str) -> ServiceSpec:
    data = spec.to_json()
    data.update(name=preview_name(spec.name, number), environment=environment, replicas=1,
                domains=[preview_domain(d, number) for d in spec.domains])
    if data.get("build"):  # built from the pull request's branch (the environment's)
        data["build"]["branch"] = None
    return ServiceSpec.model_validate(data)


def _entry(deployment: Deployment) -> dict[str, Any]:
    return {"service": deployment.service, "deployment_id": deployment.id,
            "number": deployment.number, "status_url": f"/api/v1/deployments/{deployment.id}"}


def webhook_url(provider: str) -> str:
    return f"/api/v1/webhooks/{provider}"


def public(hook: Webhook) -> dict[str, Any]:
    """A webhook as the API shows it: never its secret."""
    return {"id": hook.id, "project": hook.project, "provider": hook.provider,
            "enabled": hook.enabled, "url": webhook_url(hook.provider),
            "created_at": hook.created_at, "last_delivery": hook.last_delivery}
