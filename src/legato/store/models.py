"""Objects read from the store. They are constants: change state through the Store, not these."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from legato.spec import Scaling, ServiceSpec, Sleep

Role = Literal["viewer", "deployer", "admin"]
ROLE_RANK: dict[str, int] = {"viewer": 0, "deployer": 1, "admin": 2}

DeploymentStatus = Literal[
    "pending", "running", "awaiting_promotion", "successful", "failed", "cancelled", "rolled_back"
]
ACTIVE_DEPLOYMENT = ("pending", "running", "awaiting_promotion")
FINISHED_DEPLOYMENT = ("successful", "failed", "cancelled", "rolled_back")
# The pipeline of a deployment, in order; a deployment moves forward through it, never back.
STEPS = ("queued", "cloning", "building", "pushing", "pulling", "starting", "health", "promoting",
         "switching", "draining", "done")


@dataclass(frozen=True)
class Service:
    name: str
    project: str
    environment: str
    replicas: int
    stopped: bool
    deployment_id: str | None
    created_at: datetime
    updated_at: datetime
    # Policies in force: set from the spec on deploy, and by PUT /scaling; changing them
    # changes no container, so they are the service's rather than a deployment's.
    scaling: Scaling = field(default_factory=Scaling)
    sleep: Sleep = field(default_factory=Sleep)
    sleeping: bool = False  # scaled to zero while idle; the edge wakes it on a request
    slept_at: datetime | None = None
    woke_at: datetime | None = None
    last_scaled_at: datetime | None = None  # the last change of replicas (autoscaler cooldown)

    @property
    def desired_replicas(self) -> int:
        return 0 if self.stopped or self.sleeping else self.replicas

    @property
    def autoscaled(self) -> bool:
        return self.scaling.mode == "auto"


@dataclass(frozen=True)
class Removal:
    """A deleted service whose containers, route and (unless keep_data) volumes still go."""

    service: str
    keep_data: bool
    requested_at: datetime


@dataclass(frozen=True)
class Deployment:
    id: str
    service: str
    number: int
    spec: ServiceSpec
    status: DeploymentStatus
    reason: str
    actor: str
    image_id: str | None
    error: str | None
    previous_id: str | None
    created_at: datetime
    updated_at: datetime
    steps: tuple[dict[str, Any], ...] = ()
    fingerprint: str | None = None  # what its containers run; set once the image is resolved
    rollback_of: str | None = None  # the deployment this one copies (rollbacks)
    forced: bool = False  # replace every replica even if what they run is unchanged
    promoted_at: datetime | None = None  # canary phase over (set from the start: no canary)
    # The environment its containers get, resolved from project, environment and service
    # variables and secrets when it begins (encrypted at rest; never in an API response).
    env: dict[str, str] | None = None
    build: dict[str, Any] | None = None  # a source build: commit, image, digest, step timings

    @property
    def active(self) -> bool:
        return self.status in ACTIVE_DEPLOYMENT

    @property
    def image(self) -> str:
        """The image reference it runs: the one it built, or the one its spec names."""
        built = self.build.get("image") if self.build else None
        return str(built or self.spec.image or "")

    @property
    def step(self) -> str:
        return str(self.steps[-1]["name"]) if self.steps else "queued"


@dataclass(frozen=True)
class DeploymentLog:
    """One line of a deployment's own log, written by the step it belongs to."""

    step: str
    message: str
    at: datetime


@dataclass(frozen=True)
class Event:
    id: int
    service: str
    type: str
    message: str
    details: dict[str, Any]
    created_at: datetime


@dataclass(frozen=True)
class MetricPoint:
    """One downsampled interval of a service's figures (`data`: cpu_percent, rps, ...)."""

    service: str
    interval: str  # 1m, 5m, 1h or 1d
    at: datetime  # the interval's start
    data: dict[str, Any]


TokenKind = Literal["api", "session"]


@dataclass(frozen=True)
class Token:
    """An API token or a login session. `user_id` is its owner (None for tokens made by the
    bootstrap token, which belong to no user); `projects` empty means every project."""

    id: str
    name: str
    prefix: str
    role: Role
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None
    last_used_at: datetime | None
    projects: tuple[str, ...] = field(default=())
    user_id: str | None = None
    user_email: str | None = None
    kind: TokenKind = "api"
    parent_id: str | None = None  # the token that made it

    def allows(self, role: Role) -> bool:
        return ROLE_RANK[self.role] >= ROLE_RANK[role]

    def sees(self, project: str) -> bool:
        """Whether objects of `project` exist for this token (a scoped token sees only its
        own projects; for every other one it gets the answer a missing object gets)."""
        return not self.projects or project in self.projects

    @property
    def scoped(self) -> bool:
        return bool(self.projects)

    @property
    def platform_admin(self) -> bool:
        """An admin scoped to no project: the one who may act on the whole installation."""
        return self.allows("admin") and not self.scoped

    @property
    def principal(self) -> str:
        """Who acts: the user behind the token, or the token itself when it has no user."""
        return self.user_id or self.id

    @property
    def actor(self) -> str:
        return f"user:{self.user_email}" if self.user_email else f"token:{self.name}"


@dataclass(frozen=True)
class User:
    id: str
    email: str
    name: str
    role: Role
    created_at: datetime
    updated_at: datetime
    disabled_at: datetime | None
    last_login_at: datetime | None
    has_password: bool


@dataclass(frozen=True)
class Activity:
    """One write through the API: who, what, on what, and how it ended."""

    id: int
    at: datetime
    actor: str
    actor_id: str | None
    action: str
    method: str
    path: str
    target: str | None
    project: str | None
    status: int
    result: Literal["success", "failure"]
    request_id: str
    ip: str | None


@dataclass(frozen=True)
class Notification:
    id: int
    at: datetime
    kind: str  # deployment_failed, crash_loop, token_expiring
    title: str
    message: str
    project: str | None
    service: str | None
    recipient: str | None  # a principal; None: everyone who sees the project
    data: dict[str, Any]
    read: bool = False


@dataclass(frozen=True)
class Group:
    """A workspace bundling related projects (deleting it keeps the projects)."""

    id: str
    name: str
    description: str
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True)
class Project:
    name: str
    description: str
    repository: str | None  # git URL its builds and webhooks use
    group_id: str | None
    auto_deploy: bool  # webhooks deploy on push (the webhook toggle)
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True)
class Environment:
    project: str
    name: str
    branch: str | None  # a push to this branch deploys the environment
    pull_request: int | None  # the pull request a preview environment belongs to
    created_at: datetime
    updated_at: datetime


ConfigKind = Literal["env", "secret"]


@dataclass(frozen=True)
class ConfigVar:
    """One configuration value, decrypted; secrets are only read to deploy, never returned."""

    project: str
    environment: str  # "" for project level
    kind: ConfigKind
    key: str
    value: str
    updated_at: datetime


@dataclass(frozen=True)
class Webhook:
    id: str
    project: str
    provider: str
    secret: str  # decrypted; shown once at creation, used to verify deliveries
    enabled: bool
    created_at: datetime
    last_delivery: dict[str, Any] | None = None  # id, event, received_at, result


def spec_document(service: Service, deployment: Deployment | None) -> dict[str, Any]:
    """The spec as applied (GET /services/{name}/spec): the current deployment's, with the
    service's own replica count and policies."""
    if deployment is None:
        return {"name": service.name, "project": service.project,
                "environment": service.environment, "replicas": service.replicas}
    return {**deployment.spec.to_json(), "replicas": service.replicas,
            "scaling": service.scaling.model_dump(mode="json"),
            "sleep": service.sleep.model_dump(mode="json")}


def spec_etag(document: dict[str, Any]) -> str:
    """A strong ETag of a spec document: equal documents, equal tags."""
    text = json.dumps(document, sort_keys=True, separators=(",", ":"))
    return '"' + hashlib.sha256(text.encode()).hexdigest()[:32] + '"'


def etag_matches(if_match: str, etag: str) -> bool:
    """RFC 9110 If-Match: `*`, or any of a comma-separated list of tags (weak ones too)."""
    tags = [t.strip().removeprefix("W/") for t in if_match.split(",")]
    return "*" in tags or etag in tags
