"""Projects and their environments, configuration, secrets, analysis, webhook and images
(SPEC §4 "Projects and environments", seed 000)."""

from __future__ import annotations

import asyncio
import re
import shutil
import tempfile
from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, Query

from legato.api import pagination
from legato.api.deps import (
    Deployer,
    PlatformDep,
    ScopeRefused,
    Viewer,
    actor,
    error_responses,
    grant,
    visible,
)
from legato.api.schemas import (
    AnalysisPublic,
    AnalyzeRequest,
    DeploymentPublic,
    EnvironmentCreate,
    EnvironmentPublic,
    EnvironmentUpdate,
    EnvVars,
    EnvVarsChanged,
    EnvVarsPatch,
    EnvVarsPut,
    ImageList,
    ImagePublic,
    NameCheck,
    Page,
    ProjectCreate,
    ProjectDeleted,
    ProjectDeploy,
    ProjectDetail,
    ProjectPublic,
    ProjectUpdate,
    ProjectWebhook,
    SecretPublic,
    SecretPut,
    WebhookPublic,
    WebhookToggle,
    deployment_accepted,
    deployment_public,
)
from legato.build import git
from legato.build.analyze import analyze
from legato.errors import BadRequest, Conflict, ValidationFailed
from legato.gitops import public as webhook_public
from legato.platform import Platform
from legato.spec import ENV_KEY, SLUG_PATTERN
from legato.store.models import Environment, Project
from legato.store.projects import PRODUCTION

router = APIRouter(tags=["projects"])
_RESERVED = frozenset({"check-name", "api", "legato", "system"})


async def project_public(project: Project) -> ProjectPublic:
    return ProjectPublic(**{k: getattr(project, k) for k in ProjectPublic.model_fields})


async def environment_public(platform: Platform, environment: Environment) -> EnvironmentPublic:
    services = await platform.store.list_services(environment.project, environment.name)
    return EnvironmentPublic(
        project=environment.project, name=environment.name, branch=environment.branch,
        pull_request=environment.pull_request, protected=environment.name == PRODUCTION,
        services=[s.name for s in services], created_at=environment.created_at,
        updated_at=environment.updated_at)


# projects ---------------------------------------------------------------------------------


@router.get("/projects", response_model=Page[ProjectPublic], responses=error_responses())
async def list_projects(
    platform: PlatformDep, token: Viewer, group_id: str | None = None,
    limit: pagination.Limit = 20, cursor: pagination.Cursor = None,
) -> Page[ProjectPublic]:
    """Projects by name (those the token sees)."""
    found = await platform.store.list_projects(after=pagination.decode(cursor), limit=limit + 1,
                                               group_id=group_id, names=visible(token))
    page = [await project_public(p) for p in found[:limit]]
    return Page(items=page,
                next_cursor=pagination.encode(page[-1].name) if len(found) > limit else None)


@router.post("/projects", status_code=201, response_model=ProjectDetail,
             responses=error_responses(404, 409))
async def create_project(body: ProjectCreate, platform: PlatformDep,
                         token: Deployer) -> ProjectDetail:
    """A project, with its `production` environment (on `branch`, default main). A token
    scoped to projects creates only those."""
    if not token.sees(body.name):
        raise ScopeRefused(token, "the token is scoped to other projects")
    if body.name in _RESERVED:
        raise ValidationFailed(f"project name {body.name} is reserved", code="NAME_RESERVED")
    project = await platform.store.create_project(
        body.name, description=body.description, repository=body.repository,
        group_id=body.group_id, branch=body.branch or "main")
    return await project_detail(platform, project)


@router.get("/projects/check-name/{name}", response_model=NameCheck, responses=error_responses())
async def check_name(name: str, platform: PlatformDep, _: Viewer) -> NameCheck:
    """Whether `name` can name a new project."""
    if not re.match(SLUG_PATTERN, name):
        return NameCheck(name=name, available=False,
                         reason="use lowercase letters, digits and -, 1 to 63 characters")
    if name in _RESERVED:
        return NameCheck(name=name, available=False, reason="reserved")
    if await platform.store.project_exists(name):
        return NameCheck(name=name, available=False, reason="taken")
    return NameCheck(name=name, available=True)


async def project_detail(platform: Platform, project: Project) -> ProjectDetail:
    environments = await platform.store.list_environments(project.name)
    return ProjectDetail(
        **(await project_public(project)).model_dump(),
        environments=[await environment_public(platform, e) for e in environments],
        services=[s.name for s in await platform.store.list_services(project.name)])


@router.get("/projects/{project}", response_model=ProjectDetail, responses=error_responses(404))
async def get_project(project: str, platform: PlatformDep, _: Viewer) -> ProjectDetail:
    """The project with its environments and services."""
    return await project_detail(platform, await platform.store.get_project(project))


@router.patch("/projects/{project}", response_model=ProjectDetail, responses=error_responses(404))
async def update_project(project: str, body: ProjectUpdate, platform: PlatformDep,
                         _: Deployer) -> ProjectDetail:
    """Change the description, repository or group (only the fields given)."""
    updated = await platform.store.update_project(project, body.model_dump(exclude_unset=True))
    return await project_detail(platform, updated)


@router.delete("/projects/{project}", response_model=ProjectDeleted,
               responses=error_responses(404, 409))
async def delete_project(project: str, platform: PlatformDep, token: Deployer,
                         force: bool = False) -> ProjectDeleted:
    """Delete the project with its environments, configuration and webhooks. With running
    services this is a 409 unless `force=true`, which removes them (containers, routes and
    volumes) first."""
    removed = await platform.delete_project(project, force=force, actor=actor(token))
    return ProjectDeleted(name=project, deleted=True, services_removed=removed)


# environments -----------------------------------------------------------------------------


@router.get("/projects/{project}/environments", response_model=list[EnvironmentPublic],
            responses=error_responses(404))
async def list_environments(project: str, platform: PlatformDep,
                            _: Viewer) -> list[EnvironmentPublic]:
    """production first, then the others by name."""
    return [await environment_public(platform, e)
            for e in await platform.store.list_environments(project)]


@router.post("/projects/{project}/environments", status_code=201,
             response_model=EnvironmentPublic, responses=error_responses(404, 409))
async def create_environment(project: str, body: EnvironmentCreate, platform: PlatformDep,
                             _: Deployer) -> EnvironmentPublic:
    """An environment with its own branch, variables and deploy history."""
    environment = await platform.store.create_environment(project, body.name, branch=body.branch)
    return await environment_public(platform, environment)


@router.get("/projects/{project}/environments/{environment}", response_model=EnvironmentPublic,
            responses=error_responses(404))
async def get_environment(project: str, environment: str, platform: PlatformDep,
                          _: Viewer) -> EnvironmentPublic:
    return await environment_public(platform,
                                    await platform.store.get_environment(project, environment))


@router.patch("/projects/{project}/environments/{environment}",
              response_model=EnvironmentPublic, responses=error_responses(404))
async def update_environment(project: str, environment: str, body: EnvironmentUpdate,
                             platform: PlatformDep, _: Deployer) -> EnvironmentPublic:
    """Change the branch whose pushes deploy this environment."""
    updated = await platform.store.update_environment(project, environment, branch=body.branch)
    return await environment_public(platform, updated)


@router.delete("/projects/{project}/environments/{environment}", status_code=204,
               responses=error_responses(404, 409))
async def delete_environment(project: str, environment: str, platform: PlatformDep,
                             _: Deployer) -> None:
    """Delete an environment without services; production cannot be deleted (409)."""
    await platform.store.delete_environment(project, environment)


# configuration ----------------------------------------------------------------------------


async def _read_vars(platform: Platform, project: str, environment: str) -> EnvVars:
    if environment:
        await platform.store.get_environment(project, environment)
    else:
        await platform.store.get_project(project)
    found = await platform.store.config(project, environment, "env")
    return EnvVars(project=project, environment=environment or None,
                   env={v.key: v.value for v in found})


async def _write_vars(platform: Platform, project: str, environment: str,
                      values: dict[str, str | None], *, replace: bool) -> EnvVarsChanged:
    if replace:
        current = await platform.store.config_keys(project, environment, "env")
        values = {**{key: None for key, _ in current}, **values}
    await platform.store.set_config(project, environment, "env", values)
    return EnvVarsChanged(
        project=project, environment=environment or None, keys=sorted(values),
        message="saved (encrypted); running services get them with their next deployment "
                f"(POST /api/v1/projects/{project}/deployments)")


@router.get("/projects/{project}/env-vars", response_model=EnvVars,
            responses=error_responses(404))
async def get_project_vars(project: str, platform: PlatformDep, _: Deployer) -> EnvVars:
    """The project's variables, decrypted (every service of every environment gets them)."""
    return await _read_vars(platform, project, "")


@router.put("/projects/{project}/env-vars", response_model=EnvVarsChanged,
            responses=error_responses(404))
async def put_project_vars(project: str, body: EnvVarsPut, platform: PlatformDep,
                           _: Deployer) -> EnvVarsChanged:
    """Replace the project's variables."""
    return await _write_vars(platform, project, "", dict(body.env), replace=True)


@router.patch("/projects/{project}/env-vars", response_model=EnvVarsChanged,
              responses=error_responses(404))
async def patch_project_vars(project: str, body: EnvVarsPatch, platform: PlatformDep,
                             _: Deployer) -> EnvVarsChanged:
    """Set some of the project's variables; null deletes one."""
    return await _write_vars(platform, project, "", body.env, replace=False)


@router.get("/projects/{project}/environments/{environment}/env-vars", response_model=EnvVars,
            responses=error_responses(404))
async def get_environment_vars(project: str, environment: str, platform: PlatformDep,
                               _: Deployer) -> EnvVars:
    """The environment's variables, decrypted (they override the project's)."""
    return await _read_vars(platform, project, environment)


@router.put("/projects/{project}/environments/{environment}/env-vars",
            response_model=EnvVarsChanged, responses=error_responses(404))
async def put_environment_vars(project: str, environment: str, body: EnvVarsPut,
                               platform: PlatformDep, _: Deployer) -> EnvVarsChanged:
    return await _write_vars(platform, project, environment, dict(body.env), replace=True)


@router.patch("/projects/{project}/environments/{environment}/env-vars",
              response_model=EnvVarsChanged, responses=error_responses(404))
async def patch_environment_vars(project: str, environment: str, body: EnvVarsPatch,
                                 platform: PlatformDep, _: Deployer) -> EnvVarsChanged:
    return await _write_vars(platform, project, environment, body.env, replace=False)


def _secret_key(key: str) -> str:
    if not ENV_KEY.fullmatch(key) or len(key) > 256:
        raise ValidationFailed(f"invalid secret name {key!r}: use letters, digits and _",
                               code="INVALID_SECRET_NAME")
    return key


@router.get("/projects/{project}/secrets", response_model=list[SecretPublic],
            responses=error_responses(404))
async def list_secrets(project: str, platform: PlatformDep, _: Viewer) -> list[SecretPublic]:
    """The project's secrets: names and dates only (they are write-only)."""
    await platform.store.get_project(project)
    return [SecretPublic(key=key, updated_at=at, reference=f"${{secrets.{key}}}")
            for key, at in await platform.store.config_keys(project, "", "secret")]


@router.put("/projects/{project}/secrets/{key}", response_model=SecretPublic,
            responses=error_responses(404))
async def put_secret(project: str, key: str, body: SecretPut, platform: PlatformDep,
                     _: Deployer) -> SecretPublic:
    """Set a secret (encrypted at rest; never returned); services use it as `${secrets.KEY}`."""
    await platform.store.set_config(project, "", "secret", {_secret_key(key): body.value})
    [at] = [stamp for name, stamp in await platform.store.config_keys(project, "", "secret")
            if name == key]
    return SecretPublic(key=key, updated_at=at, reference=f"${{secrets.{key}}}")


@router.delete("/projects/{project}/secrets/{key}", status_code=204,
               responses=error_responses(404))
async def delete_secret(project: str, key: str, platform: PlatformDep, _: Deployer) -> None:
    """Delete a secret; deployments that reference it will fail until it is set again."""
    keys = {k for k, _ in await platform.store.config_keys(project, "", "secret")}
    if _secret_key(key) not in keys:
        raise BadRequest(f"no secret {key} in project {project}", code="SECRET_NOT_FOUND",
                         status=404)
    await platform.store.set_config(project, "", "secret", {key: None})


# deployments ------------------------------------------------------------------------------


@router.post("/projects/{project}/deployments", status_code=202, response_model=ProjectDeploy,
             responses=error_responses(404, 409))
async def deploy_project(
    project: str, platform: PlatformDep, token: Deployer,
    environment: Annotated[str, Query(description="default production")] = PRODUCTION,
    supersede: bool = False,
) -> ProjectDeploy:
    """Deploy every service of an environment again (with the configuration as it is now;
    source builds are rebuilt)."""
    deployments = await platform.deploy_environment(project, environment, actor=actor(token),
                                                    supersede=supersede,
                                                    grant=grant(token, platform))
    return ProjectDeploy(project=project, environment=environment, deployments=[
        deployment_accepted(d, f"deployment #{d.number} queued") for d in deployments])


@router.get("/projects/{project}/deployments", response_model=Page[DeploymentPublic],
            responses=error_responses(404))
async def list_project_deployments(
    project: str, platform: PlatformDep, _: Viewer, environment: str | None = None,
    limit: pagination.Limit = 20, cursor: pagination.Cursor = None,
) -> Page[DeploymentPublic]:
    """Deployments of the project's services, newest first."""
    await platform.store.get_project(project)
    found = await platform.store.project_deployments(
        project, environment, before=pagination.decode(cursor), limit=limit + 1)
    page = found[:limit]
    more = len(found) > limit
    return Page(items=[deployment_public(d) for d in page],
                next_cursor=pagination.encode(f"{page[-1].created_at.isoformat()}|{page[-1].id}")
                if more else None)


# analysis ---------------------------------------------------------------------------------


@router.post("/projects/{project}/analyze", response_model=AnalysisPublic,
             responses=error_responses(400, 404))
async def analyze_project(project: str, platform: PlatformDep, _: Deployer,
                          body: AnalyzeRequest | None = None) -> AnalysisPublic:
    """Clone the repository (or `git`) and say how to build it: an existing Dockerfile, or
    Python, Node, Go or a static site with a generated Dockerfile, and why."""
    body = body or AnalyzeRequest()
    found = await platform.store.get_project(project)
    repository = body.git or found.repository
    if not repository:
        raise BadRequest(f"project {project} has no repository; give one as `git`",
                         code="NO_REPOSITORY")
    branch = body.branch or (await platform.store.get_environment(project, PRODUCTION)).branch
    settings = platform.settings
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix="analyze-", dir=settings.data_dir))
    try:
        output: list[str] = []
        commit = await git.clone(repository, branch or "main", scratch / "src",
                                 allow_local=settings.git_allow_local,
                                 timeout_s=settings.git_timeout_s, output=output.append)
        result = await asyncio.to_thread(analyze, scratch / "src", dockerfile=body.dockerfile,
                                         context=body.context)
    finally:
        await asyncio.to_thread(shutil.rmtree, scratch, True)
    return AnalysisPublic(
        repository=repository, branch=branch or "main", commit=commit, kind=result.kind,
        framework=result.framework, found=list(result.found), reason=result.reason,
        port=result.port, dockerfile=result.dockerfile, dockerfile_path=result.dockerfile_path,
        warnings=list(result.warnings))


# webhook ----------------------------------------------------------------------------------


@router.get("/projects/{project}/webhook", response_model=ProjectWebhook,
            responses=error_responses(404))
async def project_webhook(project: str, platform: PlatformDep, _: Viewer) -> ProjectWebhook:
    """The project's webhooks: provider, URL, whether pushes deploy, the last delivery."""
    found = await platform.store.get_project(project)
    hooks = await platform.store.list_webhooks(project=project)
    deliveries = [h.last_delivery for h in hooks if h.last_delivery]
    return ProjectWebhook(
        project=project, enabled=found.auto_deploy,
        webhooks=[WebhookPublic(**webhook_public(h)) for h in hooks],
        last_delivery=max(deliveries, key=lambda d: str(d["received_at"])) if deliveries else None)


@router.post("/projects/{project}/webhook/toggle", response_model=ProjectWebhook,
             responses=error_responses(404))
async def toggle_webhook(project: str, platform: PlatformDep, token: Deployer,
                         body: WebhookToggle | None = None) -> ProjectWebhook:
    """Turn deploy-on-push on or off (by default: flip it)."""
    found = await platform.store.get_project(project)
    enabled = (body.enabled if body and body.enabled is not None else not found.auto_deploy)
    await platform.store.set_webhooks_enabled(project, enabled)
    return await project_webhook(project, platform, token)


# images -----------------------------------------------------------------------------------


async def _live_digests(platform: Platform, project: str) -> set[str]:
    """Digests that a service of the project runs or is rolling out."""
    live = set()
    for service in await platform.store.list_services(project):
        for deployment in await platform.store.list_deployments(service.name, limit=5):
            if deployment.build and (deployment.active or deployment.id == service.deployment_id):
                live.add(str(deployment.build.get("digest")))
    return live


@router.get("/projects/{project}/images", response_model=ImageList,
            responses=error_responses(404, 503))
async def list_images(project: str, platform: PlatformDep, _: Viewer) -> ImageList:
    """Images built for the project, in the registry, newest first; `live` marks the ones
    that run."""
    await platform.store.get_project(project)
    live = await _live_digests(platform, project)
    tags = await platform.registry.project_images(project)
    return ImageList(project=project, items=[
        ImagePublic(repository=t.repository, tag=t.tag, digest=t.digest, size=t.size,
                    created_at=t.created_at, reference=t.reference, live=t.digest in live)
        for t in tags])


@router.delete("/projects/{project}/images/{tag}", response_model=ImagePublic,
               responses=error_responses(404, 409, 503))
async def delete_image(
    project: str, tag: str, platform: PlatformDep, _: Deployer,
    service: Annotated[str | None, Query(description="the service the tag belongs to; "
                                                     "or give the tag as service:tag")] = None,
) -> ImagePublic:
    """Delete an image tag from the registry; the image that runs is refused (409)."""
    await platform.store.get_project(project)
    if service is None:
        service, _sep, tag = tag.rpartition(":")
        if not service:
            raise ValidationFailed("name the service: ?service=NAME or a tag SERVICE:TAG",
                                   code="SERVICE_REQUIRED")
    repository = f"{project}/{service}"
    found = {t.tag: t for t in await platform.registry.tags(repository)}
    target = found.get(tag)
    if target is not None and target.digest in await _live_digests(platform, project):
        raise Conflict(f"image {repository}:{tag} is live; deploy another version first",
                       code="IMAGE_LIVE", details={"digest": target.digest})
    deleted = await platform.registry.delete(repository, tag)
    return ImagePublic(repository=deleted.repository, tag=deleted.tag, digest=deleted.digest,
                       size=deleted.size, created_at=deleted.created_at,
                       reference=deleted.reference, live=False)
