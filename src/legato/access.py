"""Access settings in force and the rules built on them: who may run privileged specs, how many
tokens an owner may hold, how fast each class of request may come, which private addresses
outbound webhooks may reach. Set from the environment, changed by PATCH /config."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from legato.config import Settings
from legato.errors import Forbidden
from legato.outbound.guard import Network, parse_networks
from legato.spec import ServiceSpec

# Requests per minute by class (seed 002): per token, or per client address without one.
DEFAULT_RATE_LIMITS = {"reads": 1000, "writes": 500, "bulk": 100, "auth": 5, "webhooks": 100}
RATE_CLASSES = tuple(DEFAULT_RATE_LIMITS)


@dataclass
class AccessPolicy:
    allow_privileged_specs: bool = False
    max_tokens_per_user: int = 20
    session_days: int = 7
    webhook_allowed_hosts: tuple[Network, ...] = ()
    rate_limits: dict[str, int] = field(default_factory=lambda: dict(DEFAULT_RATE_LIMITS))

    @classmethod
    def from_settings(cls, settings: Settings) -> AccessPolicy:
        policy = cls(
            allow_privileged_specs=settings.allow_privileged_specs,
            max_tokens_per_user=settings.max_tokens_per_user,
            session_days=settings.session_days,
        )
        policy.apply({"webhook_allowed_hosts": list(settings.webhook_allowed_hosts),
                      "rate_limits": settings.rate_limits})
        return policy

    def apply(self, values: dict[str, Any]) -> None:
        """Take the access settings among `values` (PATCH /config's, already validated)."""
        for name in ("allow_privileged_specs", "max_tokens_per_user", "session_days"):
            if name in values:
                setattr(self, name, type(getattr(self, name))(values[name]))
        if "webhook_allowed_hosts" in values:
            self.webhook_allowed_hosts = parse_networks(values["webhook_allowed_hosts"])
        if "rate_limits" in values:
            unknown = set(values["rate_limits"]) - set(RATE_CLASSES)
            if unknown:
                raise ValueError(f"unknown rate limit classes {sorted(unknown)}; "
                                 f"the classes are {list(RATE_CLASSES)}")
            self.rate_limits = {**self.rate_limits, **{
                k: int(v) for k, v in values["rate_limits"].items()}}

    def public(self) -> dict[str, Any]:
        return {
            "allow_privileged_specs": self.allow_privileged_specs,
            "max_tokens_per_user": self.max_tokens_per_user,
            "session_days": self.session_days,
            "webhook_allowed_hosts": [str(n) for n in self.webhook_allowed_hosts],
            "rate_limits": dict(self.rate_limits),
        }


class PrivilegedSpecRefused(Forbidden):
    code = "PRIVILEGED_SPEC"

    def __init__(self, spec: ServiceSpec, fields: list[str], why: str) -> None:
        super().__init__(
            f"service {spec.name} uses privileged fields ({', '.join(fields)}): {why}",
            details={"name": spec.name, "fields": fields})


@dataclass(frozen=True)
class Grant:
    """What the caller of a spec-writing operation may do beyond an ordinary spec: None
    (`privileged`) when it may run privileged specs, else why not."""

    refusal: str | None = "only an admin token scoped to no project may deploy them"

    def check(self, spec: ServiceSpec) -> None:
        """Refuse a spec with privileged fields unless granted (every path that writes a
        deployment calls this: a default Grant refuses)."""
        fields = spec.privileges()
        if fields and self.refusal is not None:
            raise PrivilegedSpecRefused(spec, fields, self.refusal)


PRIVILEGED = Grant(refusal=None)
UNPRIVILEGED = Grant()


def grant_for(platform_admin: bool, policy: AccessPolicy) -> Grant:
    if not platform_admin:
        return UNPRIVILEGED
    if not policy.allow_privileged_specs:
        return Grant("they are disabled; an admin enables them with PATCH /api/v1/config "
                     '{"allow_privileged_specs": true}')
    return PRIVILEGED
