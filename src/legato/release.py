"""What a deployment needs besides its spec before it can run: its environment, resolved from
the project's configuration and secrets, and, for a source build, what to build."""

from __future__ import annotations

import json

from legato.build.builder import Builder, BuildFailed, BuildRequest
from legato.build.log import BuildLogs
from legato.envvars import resolve
from legato.store import Deployment, Store


class Releases:
    """Puts a deployment's configuration together and holds the builder and its logs."""

    def __init__(self, store: Store, builder: Builder, build_logs: BuildLogs,
                 instance: str) -> None:
        self.instance = instance
        self.store = store
        self.builder = builder
        self.build_logs = build_logs

    async def environment(self, deployment: Deployment) -> tuple[dict[str, str], str]:
        """The container environment (project < environment < service, secrets substituted)
        and a keyed digest of it for the deployment's fingerprint. Raises if a value does not
        decrypt or a secret is missing: such a deployment must fail, not run without it."""
        spec = deployment.spec
        project = {v.key: v.value for v in await self.store.config(spec.project, "", "env")}
        environment = {v.key: v.value
                       for v in await self.store.config(spec.project, spec.environment, "env")}
        secrets = {v.key: v.value for v in await self.store.config(spec.project, "", "secret")}
        env = resolve([project, environment, spec.env], secrets)
        return env, self.store.keyring.digest(json.dumps(env, sort_keys=True))

    async def build_request(self, deployment: Deployment) -> BuildRequest:
        spec = deployment.spec
        if spec.build is None:
            raise BuildFailed(f"deployment #{deployment.number} has nothing to build")
        project = await self.store.get_project(spec.project)
        environment = await self.store.get_environment(spec.project, spec.environment)
        repository = spec.build.git or project.repository
        if not repository:
            raise BuildFailed(f"no repository to build {spec.name} from: set build.git in the "
                              f"spec or the repository of project {spec.project}")
        return BuildRequest(
            deployment=deployment.id, project=spec.project, service=spec.name,
            repository=repository, branch=spec.build.branch or environment.branch or "main",
            dockerfile=spec.build.dockerfile, context=spec.build.context,
            args=dict(spec.build.args),
            labels={"legato.instance": self.instance, "legato.project": spec.project,
                    "legato.service": spec.name, "legato.deployment": deployment.id},
        )
