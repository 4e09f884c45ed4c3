"""Settings: read once at start from the environment (LEGATO_*) or a config file, then passed down."""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


def _default_data_dir() -> Path:
    return Path.home() / ".local" / "share" / "legato"


class Settings(BaseSettings):
    """Everything the server needs to know about its surroundings."""

    model_config = SettingsConfigDict(
        env_prefix="LEGATO_",
        env_file=os.environ.get("LEGATO_CONFIG_FILE"),
        extra="ignore",
        frozen=True,
    )

    data_dir: Path = Field(default_factory=_default_data_dir)
    api_host: str = "127.0.0.1"
    api_port: int = 6880
    edge_host: str = "0.0.0.0"
    edge_http_port: int = 8080
    edge_https_port: int = 8443
    database_url: str = ""
    instance: str = "default"
    bootstrap_token: str = ""
    docker_host: str = ""
    haproxy_bin: str = "haproxy"
    resync_interval_s: float = 10.0
    log_level: str = "info"
    # Configuration values are encrypted under data keys wrapped by this master key (base64 of
    # 32 bytes); without it, a 0600 key file in the data dir is made on first start.
    master_key: str = ""
    registry: str = "127.0.0.1:5000"  # where builds are pushed (host:port of a registry v2 API)
    git_timeout_s: float = 120.0
    build_timeout_s: float = 1800.0
    # Repositories given as local paths or file:// URLs are refused unless this is set: they
    # would let an API caller read any repository on the host.
    git_allow_local: bool = False
    # Monitoring and autoscaling (SPEC §6).
    access_log: bool = True  # HAProxy logs every request for request metrics (and idle sleep)
    stats_interval_s: float = Field(5.0, gt=0)  # container stats and metric snapshots
    autoscale_interval_s: float = Field(10.0, gt=0)  # how often policies are evaluated
    wake_timeout_s: float = Field(30.0, gt=0)  # a request to a sleeping service waits this long
    # Access control (SPEC §3); each of these may also be changed with PATCH /config.
    session_days: int = Field(7, ge=1, le=365)  # a login session lasts this long, renewable
    max_tokens_per_user: int = Field(20, ge=1, le=10_000)  # active API tokens per owner
    # Privileged containers, added capabilities, host namespaces, devices and host paths: off
    # unless enabled, and then for admins only.
    allow_privileged_specs: bool = False
    # Outbound webhooks never reach loopback, private, link-local or metadata addresses, except
    # these (IPs or CIDRs, JSON list in the environment).
    webhook_allowed_hosts: tuple[str, ...] = ()
    # A failed delivery is retried after this, doubling each time (at most an hour apart).
    webhook_retry_base_s: float = Field(10.0, gt=0)
    # Requests per minute by class, over the defaults (JSON in the environment, e.g.
    # {"reads": 5000}); classes: reads, writes, bulk, auth (per IP), webhooks.
    rate_limits: dict[str, int] = Field(default_factory=dict)

    @property
    def database_path(self) -> Path:
        """The SQLite file; `database_url` may name another (sqlite:///path)."""
        if self.database_url.startswith("sqlite:///"):
            return Path(self.database_url.removeprefix("sqlite:///"))
        return self.data_dir / "legato.db"

    @property
    def edge_dir(self) -> Path:
        return self.data_dir / "edge"

    @property
    def access_log_socket(self) -> Path:
        return self.edge_dir / "access.sock"

    @property
    def wake_socket(self) -> Path:
        return self.edge_dir / "wake.sock"

    @property
    def master_key_file(self) -> Path:
        return self.data_dir / "master.key"

    @property
    def builds_dir(self) -> Path:
        return self.data_dir / "builds"

    @property
    def api_url(self) -> str:
        return f"http://{self.api_host}:{self.api_port}"

    @property
    def edge_url(self) -> str:
        host = "127.0.0.1" if self.edge_host in ("0.0.0.0", "::") else self.edge_host
        return f"http://{host}:{self.edge_http_port}"
