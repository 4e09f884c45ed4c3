"""Objects read from the store. They are constants: change state through the Store, not these."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from legato.spec import ServiceSpec

Role = Literal["viewer", "deployer", "admin"]
ROLE_RANK: dict[str, int] = {"viewer": 0, "deployer": 1, "admin": 2}

DeploymentStatus = Literal[
    "pending", "running", "awaiting_promotion", "successful", "failed", "cancelled", "rolled_back"
]
ACTIVE_DEPLOYMENT = ("pending", "running", "awaiting_promotion")


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

    @property
    def desired_replicas(self) -> int:
        return 0 if self.stopped else self.replicas


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

    @property
    def active(self) -> bool:
        return self.status in ACTIVE_DEPLOYMENT


@dataclass(frozen=True)
class Event:
    id: int
    service: str
    type: str
    message: str
    details: dict[str, Any]
    created_at: datetime


@dataclass(frozen=True)
class Token:
    id: str
    name: str
    prefix: str
    role: Role
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None
    last_used_at: datetime | None
    projects: tuple[str, ...] = field(default=())

    def allows(self, role: Role) -> bool:
        return ROLE_RANK[self.role] >= ROLE_RANK[role]
