"""The service spec (SPEC §2): validated, frozen, no IO.

Unknown fields are rejected, names are slugs, commands are argv lists: whatever reaches the
runtime from here has already been checked.
"""

from __future__ import annotations

import hashlib
import json
import re
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    field_validator,
    model_validator,
)

from legato.gitevents import valid_branch, valid_clone_url

SLUG_PATTERN = r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$"  # a DNS label: 1 to 63 characters
Slug = Annotated[str, StringConstraints(pattern=SLUG_PATTERN)]
_LABEL = r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?"
_HOSTNAME = re.compile(rf"^(?=.{{1,253}}$)(\*|{_LABEL})(\.{_LABEL})*$")
ENV_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_MEMORY = re.compile(r"^(\d+(?:\.\d+)?)\s*([KMGT]i?|[kmgt]|[KMGT]B|B)?$")
_MEMORY_UNITS = {
    None: 1, "B": 1,
    "k": 1000, "K": 1000, "KB": 1000, "Ki": 1024,
    "m": 1000**2, "M": 1000**2, "MB": 1000**2, "Mi": 1024**2,
    "g": 1000**3, "G": 1000**3, "GB": 1000**3, "Gi": 1024**3,
    "t": 1000**4, "T": 1000**4, "TB": 1000**4, "Ti": 1024**4,
}
MIN_MEMORY = 6 * 1024**2  # Docker refuses limits below 6 MiB


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def parse_memory(value: str | int) -> int:
    """Bytes from a memory quantity such as `512Mi`, `1G` or `268435456`."""
    if isinstance(value, int):
        amount = value
    else:
        match = _MEMORY.match(value.strip())
        if not match:
            raise ValueError(f"invalid memory quantity {value!r}: use e.g. 256Mi, 1Gi, 512M")
        amount = int(float(match.group(1)) * _MEMORY_UNITS[match.group(2)])
    if amount < MIN_MEMORY:
        raise ValueError(f"memory must be at least 6Mi, got {value!r}")
    return amount


class HealthCheck(_Strict):
    """An HTTP GET from the control plane to each replica."""

    path: str = "/"
    interval_s: float = Field(10.0, gt=0, le=3600)
    timeout_s: float = Field(5.0, gt=0, le=300)
    failure_threshold: int = Field(3, ge=1, le=100)
    success_threshold: int = Field(1, ge=1, le=100)
    initial_delay_s: float = Field(0.0, ge=0, le=3600)

    @field_validator("path")
    @classmethod
    def _path(cls, value: str) -> str:
        if not value.startswith("/") or not value.isprintable() or any(c.isspace() for c in value):
            raise ValueError("health check path must start with / and contain no spaces")
        return value


class Resources(_Strict):
    memory: str | None = None
    cpu: float | None = Field(None, gt=0, le=256)

    @field_validator("memory")
    @classmethod
    def _memory(cls, value: str | None) -> str | None:
        if value is not None:
            parse_memory(value)
        return value

    @property
    def memory_bytes(self) -> int | None:
        return parse_memory(self.memory) if self.memory is not None else None


class Placement(_Strict):
    node: str | None = None


class Volume(_Strict):
    """A named volume Legato manages (`name`), or a directory of the host (`host_path`, a
    privileged field: only admins may use it, and only once enabled)."""

    name: Slug | None = None
    host_path: str | None = Field(None, max_length=4096)
    path: str
    read_only: bool = False

    @field_validator("path")
    @classmethod
    def _path(cls, value: str) -> str:
        if not value.startswith("/") or ".." in value.split("/") or value == "/":
            raise ValueError("volume path must be an absolute path inside the container, not /")
        return value

    @field_validator("host_path")
    @classmethod
    def _host_path(cls, value: str | None) -> str | None:
        if value is not None and (not value.startswith("/") or ".." in value.split("/")
                                  or "\0" in value or ":" in value or "," in value):
            raise ValueError("host_path must be an absolute path without .., : or ,")
        return value

    @model_validator(mode="after")
    def _one_source(self) -> Volume:
        if (self.name is None) == (self.host_path is None):
            raise ValueError("a volume has either a name (a managed volume) or a host_path")
        return self


class DeployConfig(_Strict):
    strategy: Literal["rolling", "canary", "recreate"] = "rolling"
    max_surge: int = Field(1, ge=0, le=100)
    max_unavailable: int = Field(0, ge=0, le=100)
    canary: int = Field(0, ge=0, le=100)
    auto_promote: bool = False
    min_healthy_s: float = Field(0.0, ge=0, le=3600)
    progress_deadline_s: float = Field(120.0, gt=0, le=86400)
    auto_rollback: bool = True
    drain_timeout_s: float = Field(30.0, ge=0, le=3600)  # in-flight requests may finish
    stop_timeout_s: float = Field(10.0, ge=0, le=3600)  # SIGTERM, then SIGKILL after this

    @model_validator(mode="after")
    def _progress(self) -> DeployConfig:
        if self.max_surge == 0 and self.max_unavailable == 0:
            raise ValueError("max_surge and max_unavailable cannot both be 0")
        if self.strategy == "canary" and self.canary < 1:
            raise ValueError("the canary strategy needs canary >= 1")
        return self


class Scaling(_Strict):
    mode: Literal["manual", "auto"] = "manual"
    min_replicas: int = Field(1, ge=0, le=100)
    max_replicas: int = Field(5, ge=1, le=100)
    target_rps_per_replica: float | None = Field(None, gt=0)
    max_p95_latency_ms: float | None = Field(None, gt=0)
    max_cpu_percent: float | None = Field(None, gt=0, le=100)
    max_memory_percent: float | None = Field(None, gt=0, le=100)
    scale_out_threshold_pct: float = Field(80, gt=0, le=100)
    scale_in_threshold_pct: float = Field(30, gt=0, le=100)
    window_seconds: int = Field(60, ge=5, le=3600)
    cooldown_seconds: int = Field(180, ge=0, le=86400)

    @model_validator(mode="after")
    def _bounds(self) -> Scaling:
        if self.min_replicas > self.max_replicas:
            raise ValueError("min_replicas must not exceed max_replicas")
        return self


class Sleep(_Strict):
    idle_timeout_s: float = Field(0, ge=0)


_SAFE_PATH = re.compile(r"^[A-Za-z0-9_.][A-Za-z0-9_./-]{0,254}$")
_LOCAL_URL = re.compile(r"^(file://)?/[A-Za-z0-9._~/-]+$")


_SHELL_CHARACTERS = frozenset("$`;|&<>(){}'\"!\\")


def valid_repository(url: str) -> bool:
    """A git URL that git reads as a URL, never as an option or a transport helper: http(s),
    git, ssh and scp-like forms, and local paths (which a setting must allow separately)."""
    if url.startswith("-") or "::" in url or ".." in url.split("/"):
        return False
    if any(c in _SHELL_CHARACTERS for c in url):  # inert to git, but no real URL needs them
        return False
    return bool(_LOCAL_URL.fullmatch(url)) or valid_clone_url(url)


def is_local_repository(url: str) -> bool:
    return bool(_LOCAL_URL.fullmatch(url))


def _relative_path(value: str, what: str) -> str:
    parts = value.split("/")
    if not _SAFE_PATH.fullmatch(value) or ".." in parts or value.startswith("-"):
        raise ValueError(f"{what} must be a relative path inside the repository "
                         "(letters, digits, . _ - /; no .. and no leading - or /)")
    return value


class Build(_Strict):
    """Build the image from a git repository instead of naming one."""

    git: str | None = Field(None, max_length=1024)  # default: the project's repository
    branch: str | None = Field(None, max_length=255)  # default: the environment's branch
    dockerfile: str = "Dockerfile"
    context: str = "."
    args: dict[str, str] = Field(default_factory=dict)

    @field_validator("git")
    @classmethod
    def _git(cls, value: str | None) -> str | None:
        if value is not None and not valid_repository(value):
            raise ValueError("git must be a repository URL (https://, http://, git://, ssh://, "
                             "user@host:path or a local path), without spaces or a leading -")
        return value

    @field_validator("branch")
    @classmethod
    def _branch(cls, value: str | None) -> str | None:
        if value is not None and not valid_branch(value):
            raise ValueError(f"invalid branch name {value!r}")
        return value

    @field_validator("dockerfile")
    @classmethod
    def _dockerfile(cls, value: str) -> str:
        return _relative_path(value, "dockerfile")

    @field_validator("context")
    @classmethod
    def _context(cls, value: str) -> str:
        return _relative_path(value, "context")

    @field_validator("args")
    @classmethod
    def _args(cls, value: dict[str, str]) -> dict[str, str]:
        for key, arg in value.items():
            if not ENV_KEY.fullmatch(key):
                raise ValueError(f"invalid build argument name {key!r}")
            if "\x00" in arg:
                raise ValueError(f"build argument {key} contains a NUL byte")
        return value


class ServiceSpec(_Strict):
    """One service as the user asked for it."""

    name: Slug
    project: Slug = "default"
    environment: Slug = "production"
    image: str | None = Field(None, min_length=1, max_length=512)
    build: Build | None = None
    command: list[str] | None = None
    replicas: int = Field(1, ge=0, le=100)
    port: int = Field(8080, ge=1, le=65535)
    domains: tuple[str, ...] = ()
    internal: bool = False
    health_check: HealthCheck | None = None
    env: dict[str, str] = Field(default_factory=dict)
    resources: Resources = Field(default_factory=Resources)
    placement: Placement = Field(default_factory=Placement)
    volumes: tuple[Volume, ...] = ()
    labels: dict[str, str] = Field(default_factory=dict)
    deploy: DeployConfig = Field(default_factory=DeployConfig)
    scaling: Scaling = Field(default_factory=Scaling)
    sleep: Sleep = Field(default_factory=Sleep)
    # Privileged fields (PRIVILEGED_FIELDS): refused unless an admin asks and an admin has
    # enabled them (allow_privileged_specs).
    privileged: bool = False
    cap_add: tuple[str, ...] = ()
    devices: tuple[str, ...] = ()  # /dev/fuse, or /dev/host-path:/dev/container-path[:rwm]
    network_mode: Literal["bridge", "host"] = "bridge"
    pid_mode: Literal["private", "host"] = "private"

    @model_validator(mode="before")
    @classmethod
    def _shorthands(cls, data: Any) -> Any:
        """Fold `domain` into `domains` and `health` into `health_check`."""
        if not isinstance(data, dict):
            return data
        data = dict(data)
        if "domain" in data:
            domain = data.pop("domain")
            if domain is not None:
                if not isinstance(domain, str):
                    raise ValueError("domain must be a string")
                data["domains"] = [domain, *[d for d in data.get("domains") or [] if d != domain]]
        if "health" in data:
            path = data.pop("health")
            if path is not None:
                if "health_check" in data:
                    raise ValueError("give either health or health_check, not both")
                data["health_check"] = {"path": path}
        if isinstance(data.get("env"), dict):
            data["env"] = {k: _env_value(v) for k, v in data["env"].items()}
        return data

    @field_validator("image")
    @classmethod
    def _image(cls, value: str | None) -> str | None:
        if value is not None and not (_IMAGE_REFERENCE.fullmatch(value)
                                      or _IMAGE_ID.fullmatch(value)):
            raise ValueError("image must be an image reference such as nginx:alpine or "
                             "registry:5000/team/app:1.2@sha256:...")
        return value

    @field_validator("command", mode="before")
    @classmethod
    def _command(cls, value: Any) -> Any:
        if isinstance(value, str):
            raise ValueError('command must be an argv list such as ["httpd", "-f"], not a shell string')
        return value

    @field_validator("command")
    @classmethod
    def _command_items(cls, value: list[str] | None) -> list[str] | None:
        if value is not None and (not value or not value[0]):
            raise ValueError("command must name a program")
        return value

    @field_validator("domains")
    @classmethod
    def _domains(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        seen: list[str] = []
        for domain in value:
            host = domain.strip().lower()
            if not _HOSTNAME.match(host):
                raise ValueError(f"invalid domain {domain!r}")
            if host not in seen:
                seen.append(host)
        return tuple(seen)

    @field_validator("env")
    @classmethod
    def _env(cls, value: dict[str, str]) -> dict[str, str]:
        for key in value:
            if not ENV_KEY.fullmatch(key):
                raise ValueError(f"invalid environment variable name {key!r}")
        return value

    @field_validator("labels")
    @classmethod
    def _labels(cls, value: dict[str, str]) -> dict[str, str]:
        for key in value:
            if key.startswith("legato.") or not _LABEL_KEY.fullmatch(key):
                raise ValueError(f"invalid label {key!r}: letters, digits and . _ / -, at most "
                                 "128; the legato. prefix is reserved")
        return value

    @field_validator("cap_add")
    @classmethod
    def _capabilities(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        normal = tuple(c.upper().removeprefix("CAP_") for c in value)
        for capability in normal:
            if not _CAPABILITY.fullmatch(capability):
                raise ValueError(f"invalid capability {capability!r}")
        return normal

    @field_validator("devices")
    @classmethod
    def _devices(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for device in value:
            if not _DEVICE.fullmatch(device) or ".." in device.split("/"):
                raise ValueError(f"invalid device {device!r}: give /dev/name, optionally "
                                 ":/dev/name-inside and :rwm permissions")
        return value

    @model_validator(mode="after")
    def _defaults(self) -> ServiceSpec:
        if (self.image is None) == (self.build is None):
            raise ValueError("give either image or build (a git repository to build), not both")
        if not self.domains and not self.internal:
            object.__setattr__(self, "domains", (f"{self.name}.localhost",))
        names = [v.name for v in self.volumes if v.name is not None]
        if len(names) != len(set(names)):
            raise ValueError("volume names must be unique")
        if self.network_mode == "host" and (self.replicas > 1 or self.scaling.mode == "auto"):
            raise ValueError("a service on the host network runs one replica (its port is the "
                             "host's), so replicas ≤ 1 and manual scaling")
        return self

    def privileges(self) -> list[str]:
        """The privileged fields this spec uses (empty for an ordinary service)."""
        used = [name for name, on in (
            ("privileged", self.privileged), ("cap_add", bool(self.cap_add)),
            ("devices", bool(self.devices)), ("network_mode", self.network_mode == "host"),
            ("pid_mode", self.pid_mode == "host"),
        ) if on]
        if any(v.host_path is not None for v in self.volumes):
            used.append("volumes.host_path")
        return used

    @property
    def health(self) -> HealthCheck:
        """The health check in force: the spec's, or a GET / that accepts any answer below 500."""
        return self.health_check or HealthCheck()

    @property
    def routed(self) -> bool:
        return not self.internal and bool(self.domains)

    def to_json(self) -> dict[str, Any]:
        return self.model_dump(mode="json")

    def fingerprint(self, image_id: str, nonce: str = "") -> str:
        """Identifies what a replica of this spec runs: the image and everything that shapes
        its container. Routing, health checks and policies are left out: changing them
        changes no container. A `nonce` makes it unique (a restart replaces every replica)."""
        shaping = self.model_dump(mode="json", include=_CONTAINER_FIELDS)
        text = json.dumps({"image_id": image_id, "nonce": nonce, **shaping}, sort_keys=True)
        return "fp_" + hashlib.sha256(text.encode()).hexdigest()[:32]


_CONTAINER_FIELDS = {
    "build", "name", "project", "environment", "command", "port", "env", "resources", "placement",
    "volumes", "labels", "privileged", "cap_add", "devices", "network_mode", "pid_mode",
}
_CAPABILITY = re.compile(r"[A-Z][A-Z0-9_]{1,31}")
_LABEL_KEY = re.compile(r"[A-Za-z0-9][A-Za-z0-9._/-]{0,127}")
# Docker's reference grammar (distribution/reference): [host[:port]/]path[:tag][@digest].
_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_HOST_PART = r"[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?"
_IMAGE_REFERENCE = re.compile(
    rf"(?:(?:{_HOST_PART}(?:\.{_HOST_PART})*|\[[0-9A-Fa-f:]+\])(?::[0-9]{{1,5}})?/)?"
    rf"{_COMPONENT}(?:/{_COMPONENT})*"
    r"(?::[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})?"
    r"(?:@[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,})?")
_IMAGE_ID = re.compile(r"sha256:[0-9a-f]{64}")
_DEVICE = re.compile(r"/dev/[A-Za-z0-9._/-]{1,200}(:/dev/[A-Za-z0-9._/-]{1,200})?(:[rwm]{1,3})?")


def _env_value(value: Any) -> Any:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    return value
