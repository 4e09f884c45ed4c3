"""Request and response bodies (XCreate / XPublic), and their construction from domain objects."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Generic, Literal, TypeVar

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator

from legato.access import RATE_CLASSES
from legato.gitevents import valid_branch
from legato.health import HealthState
from legato.outbound.guard import parse_networks
from legato.platform import ServiceView
from legato.spec import ENV_KEY, Slug, valid_repository
from legato.store import Deployment, DeploymentLog, Event

T = TypeVar("T")


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ErrorBody(BaseModel):
    error: str
    code: str
    details: Any = None
    request_id: str


class Page(BaseModel, Generic[T]):
    items: list[T]
    next_cursor: str | None = None


# services ---------------------------------------------------------------------------------


class DeployRequest(_In):
    services: list[dict[str, Any]] = Field(
        description="Service specs (SPEC §2); each is validated on its own", max_length=100
    )


class DeployResponse(BaseModel):
    deployed: list[str]
    errors: list[dict[str, Any]]
    deployments: list[dict[str, Any]]


class ScaleRequest(_In):
    replicas: int = Field(ge=0, le=100)


class ScaleResponse(BaseModel):
    message: str
    name: str
    previous_replicas: int
    current_replicas: int
    status_url: str


class Accepted(BaseModel):
    message: str
    name: str
    status_url: str
    deployment_id: str | None = None


class RemoveResponse(BaseModel):
    message: str
    name: str
    containers_removed: int
    keep_data: bool


class ReplicaCounts(BaseModel):
    desired: int
    current: int
    healthy: int


class ContainerPublic(BaseModel):
    id: str
    name: str
    node: str
    port: int | None
    status: str
    health: str
    started_at: datetime | None
    deployment: str
    slot: int


class DeploymentSummary(BaseModel):
    id: str
    number: int
    status: str
    step: str
    strategy: str
    image: str
    image_id: str | None
    reason: str
    error: str | None
    created_at: datetime


class ServicePublic(BaseModel):
    name: str
    project: str
    environment: str
    status: str
    image: str | None
    domains: list[str]
    internal: bool
    port: int | None
    replicas: ReplicaCounts
    deployment: DeploymentSummary | None
    created_at: datetime
    updated_at: datetime


class ServiceDetail(ServicePublic):
    containers: list[ContainerPublic]


class StatusEntry(BaseModel):
    name: str
    project: str
    status: str
    replicas: int
    running_replicas: int
    healthy_replicas: int
    image: str | None
    domain: str | None


class StatusResponse(BaseModel):
    services: list[StatusEntry]


class DeploymentCreate(_In):
    """What changes; nothing at all replaces every replica (and resolves the image again)."""

    image: str | None = None
    command: list[str] | None = None
    port: int | None = None
    env: dict[str, str] | None = None
    resources: dict[str, Any] | None = None
    health_check: dict[str, Any] | None = None
    deploy: dict[str, Any] | None = Field(None, description="strategy, max_surge, canary, ...")
    labels: dict[str, str] | None = None
    reason: str = Field("redeploy", min_length=1, max_length=200)

    def changes(self) -> dict[str, Any]:
        return self.model_dump(exclude={"reason"}, exclude_none=True)


class RollbackRequest(_In):
    to: int | None = Field(None, ge=1, description="Deployment number; default: the last "
                           "successful deployment before the current one")


class DeploymentAccepted(BaseModel):
    message: str
    name: str
    deployment_id: str
    number: int
    status: str
    status_url: str


class StepPublic(BaseModel):
    name: str
    started_at: datetime
    finished_at: datetime | None


class DeploymentPublic(DeploymentSummary):
    service: str
    actor: str
    previous_id: str | None
    rollback_of: str | None
    fingerprint: str | None
    promoted_at: datetime | None
    updated_at: datetime
    steps: list[StepPublic]
    spec: dict[str, Any]
    build: dict[str, Any] | None = Field(
        None, description="A source build: commit, image, digest, seconds per step")


class DeploymentLogLine(BaseModel):
    at: datetime
    message: str


class DeploymentStepLogs(BaseModel):
    name: str
    started_at: datetime | None
    finished_at: datetime | None
    logs: list[DeploymentLogLine]


class DeploymentLogs(BaseModel):
    deployment_id: str
    number: int
    status: str
    steps: list[DeploymentStepLogs]


class EventPublic(BaseModel):
    id: int
    service: str
    type: str
    message: str
    details: dict[str, Any]
    timestamp: datetime


class ReplicaHealth(BaseModel):
    id: str
    name: str
    port: int | None
    health: str
    last_check: datetime | None
    consecutive_failures: int
    consecutive_successes: int
    last_error: str
    response_time_ms: float | None


class HealthReport(BaseModel):
    name: str
    health_check: dict[str, Any]
    replicas: list[ReplicaHealth]


class ProbePublic(BaseModel):
    id: str
    name: str
    ok: bool
    status_code: int | None
    response_time_ms: float
    error: str
    health: str


class ProbeReport(BaseModel):
    name: str
    results: list[ProbePublic]


class LogLinePublic(BaseModel):
    timestamp: datetime | None
    replica: str
    message: str


class LogsResponse(BaseModel):
    name: str
    logs: list[LogLinePublic]
    total_lines: int


# tokens -----------------------------------------------------------------------------------


# system -----------------------------------------------------------------------------------


class HealthResponse(BaseModel):
    status: Literal["healthy", "unhealthy"]
    checks: dict[str, str]


# construction -----------------------------------------------------------------------------


def deployment_summary(deployment: Deployment) -> DeploymentSummary:
    return DeploymentSummary(
        id=deployment.id, number=deployment.number, status=deployment.status,
        step=deployment.step, strategy=deployment.spec.deploy.strategy,
        image=deployment.image, image_id=deployment.image_id, reason=deployment.reason,
        error=deployment.error, created_at=deployment.created_at,
    )


def deployment_public(deployment: Deployment) -> DeploymentPublic:
    return DeploymentPublic(
        **deployment_summary(deployment).model_dump(),
        service=deployment.service, actor=deployment.actor, previous_id=deployment.previous_id,
        rollback_of=deployment.rollback_of, fingerprint=deployment.fingerprint,
        promoted_at=deployment.promoted_at, updated_at=deployment.updated_at,
        steps=[StepPublic.model_validate(step) for step in deployment.steps],
        spec=deployment.spec.to_json(), build=deployment.build,
    )


def deployment_accepted(deployment: Deployment, message: str) -> DeploymentAccepted:
    return DeploymentAccepted(
        message=message, name=deployment.service, deployment_id=deployment.id,
        number=deployment.number, status=deployment.status,
        status_url=f"/api/v1/deployments/{deployment.id}",
    )


def deployment_logs(deployment: Deployment, lines: list[DeploymentLog]) -> DeploymentLogs:
    """The deployment's log lines grouped under the pipeline steps they belong to."""
    steps = {str(step["name"]): DeploymentStepLogs(
        name=str(step["name"]), started_at=step["started_at"], finished_at=step["finished_at"],
        logs=[]) for step in deployment.steps}
    for line in lines:
        entry = steps.setdefault(line.step, DeploymentStepLogs(
            name=line.step, started_at=None, finished_at=None, logs=[]))
        entry.logs.append(DeploymentLogLine(at=line.at, message=line.message))
    return DeploymentLogs(deployment_id=deployment.id, number=deployment.number,
                          status=deployment.status, steps=list(steps.values()))


def service_public(view: ServiceView) -> ServicePublic:
    spec = view.spec
    service = view.service
    return ServicePublic(
        name=service.name, project=service.project, environment=service.environment,
        status=view.status, image=spec.image if spec else None,
        domains=list(spec.domains) if spec else [], internal=spec.internal if spec else False,
        port=spec.port if spec else None,
        replicas=ReplicaCounts(desired=service.desired_replicas, current=view.current,
                               healthy=view.healthy),
        deployment=deployment_summary(view.deployment) if view.deployment else None,
        created_at=service.created_at, updated_at=service.updated_at,
    )


def service_detail(view: ServiceView) -> ServiceDetail:
    containers = [
        ContainerPublic(
            id=r.id[:12], name=r.name, node=r.node, port=r.host_port, status=r.state,
            health=view.health.get(r.id, "starting"), started_at=r.started_at,
            deployment=r.deployment, slot=r.slot,
        )
        for r in sorted(view.replicas, key=lambda r: (r.slot, r.name))
    ]
    return ServiceDetail(**service_public(view).model_dump(), containers=containers)


def event_public(event: Event) -> EventPublic:
    return EventPublic(id=event.id, service=event.service, type=event.type,
                       message=event.message, details=event.details, timestamp=event.created_at)


def replica_health(replica_id: str, name: str, port: int | None, state: HealthState) -> ReplicaHealth:
    return ReplicaHealth(
        id=replica_id[:12], name=name, port=port, health=state.status,
        last_check=state.last_check, consecutive_failures=state.consecutive_failures,
        consecutive_successes=state.consecutive_successes, last_error=state.last_error,
        response_time_ms=state.response_time_ms,
    )



# projects, environments, configuration ------------------------------------------------------


def _repository(value: str | None) -> str | None:
    if value is not None and not valid_repository(value):
        raise ValueError("repository must be a git URL (https://, http://, git://, ssh://, "
                         "user@host:path or a local path), without spaces or a leading -")
    return value


def _branch(value: str | None) -> str | None:
    if value is not None and not valid_branch(value):
        raise ValueError(f"invalid branch name {value!r}")
    return value


Repository = Annotated[str | None, Field(None, max_length=1024), AfterValidator(_repository)]
Branch = Annotated[str | None, Field(None, max_length=255), AfterValidator(_branch)]


class ProjectCreate(_In):
    name: Slug
    description: str = Field("", max_length=1000)
    repository: Repository = None
    branch: Branch = Field(None, description="production's branch (default main)")
    group_id: str | None = None


class ProjectUpdate(_In):
    description: str | None = Field(None, max_length=1000)
    repository: Repository = None
    group_id: str | None = None


class EnvironmentPublic(BaseModel):
    project: str
    name: str
    branch: str | None
    pull_request: int | None
    protected: bool
    services: list[str]
    created_at: datetime
    updated_at: datetime


class ProjectPublic(BaseModel):
    name: str
    description: str
    repository: str | None
    group_id: str | None
    auto_deploy: bool
    created_at: datetime
    updated_at: datetime


class ProjectDetail(ProjectPublic):
    environments: list[EnvironmentPublic]
    services: list[str]


class NameCheck(BaseModel):
    name: str
    available: bool
    reason: str | None = None


class ProjectDeleted(BaseModel):
    name: str
    deleted: bool
    services_removed: list[str]


class EnvironmentCreate(_In):
    name: Slug
    branch: Branch = None


class EnvironmentUpdate(_In):
    branch: Branch = None


def _env_keys(value: dict[str, Any]) -> dict[str, Any]:
    for key, item in value.items():
        if not ENV_KEY.fullmatch(key):
            raise ValueError(f"invalid environment variable name {key!r}")
        if item is not None and "\x00" in item:
            raise ValueError(f"{key}: values cannot contain NUL bytes")
    return value


class EnvVars(BaseModel):
    """Decrypted values of one scope (project or environment)."""

    project: str
    environment: str | None
    env: dict[str, str]


class EnvVarsPut(_In):
    env: Annotated[dict[str, str], AfterValidator(_env_keys)] = Field(max_length=500)


class EnvVarsPatch(_In):
    env: Annotated[dict[str, str | None], AfterValidator(_env_keys)] = Field(
        max_length=500, description="null deletes a variable")


class EnvVarsChanged(BaseModel):
    project: str
    environment: str | None
    keys: list[str]
    message: str


class SecretPut(_In):
    value: str = Field(min_length=1, max_length=65536)


class SecretPublic(BaseModel):
    """A secret is write-only: its key and when it was set, never its value."""

    key: str
    updated_at: datetime
    reference: str


class ProjectDeploy(BaseModel):
    project: str
    environment: str
    deployments: list[DeploymentAccepted]


class AnalyzeRequest(_In):
    git: Repository = None
    branch: Branch = None
    dockerfile: str = "Dockerfile"
    context: str = "."


class AnalysisPublic(BaseModel):
    repository: str
    branch: str
    commit: str
    kind: str
    framework: str | None
    found: list[str]
    reason: str
    port: int
    dockerfile: str | None
    dockerfile_path: str | None
    warnings: list[str]


class WebhookCreate(_In):
    project: Slug
    provider: Literal["github", "gitea", "gitlab"]
    secret: str | None = Field(None, min_length=16, max_length=256,
                               description="default: a random secret, returned once")


class WebhookPublic(BaseModel):
    id: str
    project: str
    provider: str
    enabled: bool
    url: str
    created_at: datetime
    last_delivery: dict[str, Any] | None


class WebhookCreated(WebhookPublic):
    secret: str = Field(description="Shown once: configure it in the git host")


class ProjectWebhook(BaseModel):
    project: str
    enabled: bool
    webhooks: list[WebhookPublic]
    last_delivery: dict[str, Any] | None


class WebhookToggle(_In):
    enabled: bool | None = Field(None, description="default: the opposite of now")


class DeliveryResult(BaseModel):
    delivery: str
    project: str
    event: str
    status: str
    reason: str
    deployments: list[dict[str, Any]]


class ImagePublic(BaseModel):
    repository: str
    tag: str
    digest: str
    size: int
    created_at: datetime | None
    reference: str
    live: bool


class ImageList(BaseModel):
    project: str
    items: list[ImagePublic]


class GroupCreate(_In):
    name: Annotated[str, Field(min_length=1, max_length=100)]
    description: str = Field("", max_length=1000)


class GroupUpdate(_In):
    name: Annotated[str | None, Field(None, min_length=1, max_length=100)] = None
    description: str | None = Field(None, max_length=1000)


class GroupPublic(BaseModel):
    id: str
    name: str
    description: str
    projects: list[str]
    created_at: datetime
    updated_at: datetime


class KeyRotation(BaseModel):
    key_id: str
    retired: list[str]
    reencrypted: dict[str, int]


# monitoring -------------------------------------------------------------------------------


class EventPage(Page[EventPublic]):
    name: str
    total: int = Field(description="Events matching the filters, over every page")
    has_more: bool


class ReplicaStatsPublic(BaseModel):
    id: str
    name: str
    cpu_percent: float | None = Field(description="100 = one core; null until a 2nd sample")
    memory_used_bytes: int
    memory_limit_bytes: int
    memory_percent: float
    network_rx_bytes: int
    network_tx_bytes: int
    sampled_at: datetime


class StatsTotals(BaseModel):
    cpu_percent: float
    memory_used_bytes: int
    memory_limit_bytes: int
    network_rx_bytes: int
    network_tx_bytes: int


class ServiceStats(BaseModel):
    name: str
    interval_s: float = Field(description="How often the replicas are sampled")
    sampled_at: datetime | None
    replicas: list[ReplicaStatsPublic]
    total: StatsTotals


class RequestWindowPublic(BaseModel):
    seconds: float
    requests: int
    errors_5xx: int
    rps: float
    error_rate: float = Field(description="The 5xx share of the answers, 0 to 1")
    latency_p50_ms: float | None
    latency_p95_ms: float | None
    latency_p99_ms: float | None
    latency_mean_ms: float | None


class RequestMetricsPublic(BaseModel):
    name: str
    collecting: bool = Field(description="The edge's request log is being read")
    last_request_at: datetime | None
    windows: dict[str, RequestWindowPublic] = Field(description='"1m" and "5m"')


class MetricsCurrent(BaseModel):
    cpu_percent: float | None
    memory_percent: float | None
    memory_used_bytes: int
    rps: float
    error_rate: float
    latency_p50_ms: float | None
    latency_p95_ms: float | None
    latency_p99_ms: float | None
    active_connections: int
    healthy_replicas: int
    total_replicas: int


class MetricsPointPublic(BaseModel):
    timestamp: datetime
    cpu_percent: float | None = None
    memory_percent: float | None = None
    memory_used_bytes: int = 0
    rps: float = 0.0
    requests: int = 0
    errors: int = 0
    error_rate: float = 0.0
    latency_p50_ms: float | None = None
    latency_p95_ms: float | None = None
    latency_p99_ms: float | None = None
    healthy_replicas: int = 0
    total_replicas: int = 0


class MetricsPublic(BaseModel):
    name: str
    app_name: str
    timestamp: datetime
    interval: str
    current: MetricsCurrent
    history: list[MetricsPointPublic]


class ScalingUpdate(_In):
    """Fields to change; the rest of the policy stays."""

    mode: Literal["manual", "auto"] | None = None
    min_replicas: int | None = None
    max_replicas: int | None = None
    target_rps_per_replica: float | None = None
    max_p95_latency_ms: float | None = None
    max_cpu_percent: float | None = None
    max_memory_percent: float | None = None
    scale_out_threshold_pct: float | None = None
    scale_in_threshold_pct: float | None = None
    window_seconds: int | None = None
    cooldown_seconds: int | None = None


class LastScaling(BaseModel):
    timestamp: datetime
    action: str
    from_replicas: int | None
    to_replicas: int | None
    reason: str


class ScalingPublic(BaseModel):
    name: str
    app_name: str
    mode: str
    replicas: int
    policy: dict[str, Any]
    sleep: dict[str, Any]
    sleeping: bool
    last_scaled_at: datetime | None
    last_scaling_event: LastScaling | None


class ScalingUpdated(BaseModel):
    message: str
    name: str
    app_name: str
    replicas: int
    previous_policy: dict[str, Any]
    new_policy: dict[str, Any]


class SleepState(BaseModel):
    message: str
    name: str
    status: str
    sleeping: bool
    changed: bool
    status_url: str


class ComponentHealth(BaseModel):
    status: Literal["healthy", "unhealthy"]
    response_time_ms: float
    error: str | None = None
    details: dict[str, Any] = Field(default_factory=dict)


class SystemHealth(BaseModel):
    status: Literal["healthy", "unhealthy"]
    timestamp: datetime
    version: str
    uptime_seconds: float
    components: dict[str, ComponentHealth]
    applications: dict[str, int]


class SystemMetrics(BaseModel):
    timestamp: datetime
    system: dict[str, Any]
    applications: list[dict[str, Any]]
    network: dict[str, Any]
    control_plane: dict[str, Any]


class DashboardSummary(BaseModel):
    projects: int
    services: int
    services_by_status: dict[str, int]
    replicas: ReplicaCounts
    deployments_today: int
    failed_deployments_today: int
    deployments_by_status: dict[str, int]
    failing_services: list[str]
    recent_deployments: list[DeploymentSummary]


class ConfigUpdate(_In):
    """Settings that apply at once (and are kept across restarts)."""

    stats_interval_s: float | None = Field(None, gt=0, le=3600)
    autoscale_interval_s: float | None = Field(None, gt=0, le=3600)
    wake_timeout_s: float | None = Field(None, gt=0, le=55)
    log_level: Literal["debug", "info", "warning", "error"] | None = None
    allow_privileged_specs: bool | None = None
    max_tokens_per_user: int | None = Field(None, ge=1, le=10_000)
    session_days: int | None = Field(None, ge=1, le=365)
    webhook_allowed_hosts: list[str] | None = Field(None, max_length=100,
                                                    description="IPs or CIDRs")
    rate_limits: dict[str, int] | None = Field(
        None, description="Requests a minute by class: reads, writes, bulk, auth, webhooks")

    @field_validator("webhook_allowed_hosts")
    @classmethod
    def _networks(cls, value: list[str] | None) -> list[str] | None:
        return None if value is None else [str(n) for n in parse_networks(value)]

    @field_validator("rate_limits")
    @classmethod
    def _limits(cls, value: dict[str, int] | None) -> dict[str, int] | None:
        if value is not None:
            unknown = set(value) - set(RATE_CLASSES)
            if unknown:
                raise ValueError(f"unknown classes {sorted(unknown)}; they are {list(RATE_CLASSES)}")
            if any(not 1 <= v <= 1_000_000 for v in value.values()):
                raise ValueError("a rate limit is between 1 and 1000000 requests a minute")
        return value


class ConfigPublic(BaseModel):
    version: str
    api: dict[str, Any]
    edge: dict[str, Any]
    database: dict[str, Any]
    runtime: dict[str, Any]
    registry: str
    monitoring: dict[str, Any]
    scaling: dict[str, Any]
    health: dict[str, Any]
    log_level: str
    access: dict[str, Any] = Field(description="Access control: privileged specs, tokens, "
                                   "sessions, webhook allow-list, rate limits")
    overrides: dict[str, Any] = Field(description="Values set through PATCH /config")


class ConfigUpdated(BaseModel):
    message: str
    changed: dict[str, Any]
    config: ConfigPublic
