"""The Python client of Legato's REST API (/api/v1): one method per route, errors as `ApiError`."""

from __future__ import annotations

import json
import os
import tomllib
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Literal, overload
from urllib.parse import quote

import httpx

from legato import __version__

DEFAULT_URL = "http://127.0.0.1:6880"
API_PREFIX = "/api/v1"

JSON = dict[str, Any]


class ApiError(Exception):
    """A non-2xx answer of the API (or no answer at all: status 0), in SPEC §3's terms."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        details: Any = None,
        request_id: str | None = None,
    ) -> None:
        super().__init__(f"{message} ({code})")
        self.status = status
        self.code = code
        self.message = message
        self.details: Any = details if details is not None else {}
        self.request_id = request_id

    @classmethod
    def from_response(cls, response: httpx.Response) -> ApiError:
        """Parse the error body; fall back to the status line when it is not SPEC §3's JSON."""
        try:
            body = response.json()
        except ValueError:
            body = None
        if isinstance(body, dict) and isinstance(body.get("error"), str):
            request_id = body.get("request_id") or response.headers.get("x-request-id")
            return cls(response.status_code, str(body.get("code") or f"HTTP_{response.status_code}"),
                       body["error"], body.get("details"), str(request_id) if request_id else None)
        text = response.text.strip()
        message = text[:500] if text else (response.reason_phrase or "error")
        return cls(response.status_code, f"HTTP_{response.status_code}",
                   f"HTTP {response.status_code}: {message}",
                   request_id=response.headers.get("x-request-id"))


class ConfigError(Exception):
    """The client configuration file cannot be read."""


@dataclass(frozen=True)
class ClientSettings:
    """Where the API is, the token to use, and the config file they may come from."""

    url: str
    token: str | None
    config_path: Path


def load_settings(environ: Mapping[str, str] | None = None) -> ClientSettings:
    """Resolve url and token: LEGATO_URL / LEGATO_TOKEN, else the config file, else defaults."""
    env = os.environ if environ is None else environ
    path = Path(env["LEGATO_CONFIG"]) if env.get("LEGATO_CONFIG") else default_config_path()
    url = env.get("LEGATO_URL") or None
    token = env.get("LEGATO_TOKEN") or None
    if url is None or token is None:
        saved = read_config(path)
        url = url or saved.get("url")
        token = token or saved.get("token")
    return ClientSettings(url=url or DEFAULT_URL, token=token, config_path=path)


def default_config_path() -> Path:
    """~/.config/legato/config.toml."""
    return Path.home() / ".config" / "legato" / "config.toml"


def read_config(path: Path) -> dict[str, str]:
    """The `url` and `token` keys of a config file; empty when there is no file."""
    try:
        with path.open("rb") as fh:
            data = tomllib.load(fh)
    except FileNotFoundError:
        return {}
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"cannot read {path}: {exc}") from exc
    found: dict[str, str] = {}
    for key in ("url", "token"):
        value = data.get(key)
        if value is None:
            continue
        if not isinstance(value, str):
            raise ConfigError(f"{path}: {key} must be a string")
        if value:
            found[key] = value
    return found


def write_config(path: Path, url: str, token: str) -> None:
    """Write url and token to the config file, readable by its owner only (0600)."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    text = f"url = {_toml_string(url)}\ntoken = {_toml_string(token)}\n"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, text.encode())
    finally:
        os.close(fd)


def _toml_string(value: str) -> str:
    """A TOML basic string."""
    out = []
    for char in value:
        if char in ('"', "\\"):
            out.append("\\" + char)
        elif ord(char) < 0x20 or ord(char) == 0x7F:
            out.append(f"\\u{ord(char):04x}")
        else:
            out.append(char)
    return '"' + "".join(out) + '"'


def _seg(value: str) -> str:
    """One URL path segment, escaped."""
    return quote(value, safe="")


def _params(**given: Any) -> dict[str, Any]:
    """Query parameters without the unset ones."""
    return {k: v for k, v in given.items() if v is not None}


def iter_sse(lines: Iterable[str]) -> Iterator[str]:
    """The data of each server-sent event; comment (`:`) and other fields are skipped."""
    data: list[str] = []
    for raw in lines:
        line = raw.rstrip("\r\n")
        if not line:
            if data:
                yield "\n".join(data)
                data = []
            continue
        if line.startswith(":"):
            continue
        field, _, value = line.partition(":")
        if field == "data":
            data.append(value.removeprefix(" "))
    if data:
        yield "\n".join(data)


class Client:
    """A synchronous client of one Legato installation."""

    def __init__(
        self,
        url: str,
        token: str | None,
        timeout: float = 30,
        *,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        base = url.rstrip("/").removesuffix(API_PREFIX)
        self.url = base
        self.timeout = timeout
        headers = {"User-Agent": f"legato-client/{__version__}", "Accept": "application/json"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        self._http = httpx.Client(base_url=base + API_PREFIX, headers=headers, timeout=timeout,
                                  transport=transport)

    @classmethod
    def from_env(
        cls, timeout: float = 30, *, transport: httpx.BaseTransport | None = None
    ) -> Client:
        """A client for LEGATO_URL / LEGATO_TOKEN or the config file."""
        settings = load_settings()
        return cls(settings.url, settings.token, timeout, transport=transport)

    def close(self) -> None:
        """Close the connection pool."""
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # plumbing ---------------------------------------------------------------------------------

    def _send(self, method: str, path: str, *, params: Mapping[str, Any] | None = None,
              json: Any = None, ok: tuple[int, ...] = ()) -> httpx.Response:
        """Send one request; a non-2xx answer not in `ok` raises ApiError."""
        try:
            response = self._http.request(method, path, params=params, json=json)
        except httpx.TransportError as exc:
            raise ApiError(0, "CONNECTION_FAILED", f"cannot reach {self.url}: {exc}") from exc
        if not response.is_success and response.status_code not in ok:
            raise ApiError.from_response(response)
        return response

    def _json(self, method: str, path: str, *, params: Mapping[str, Any] | None = None,
              json: Any = None, ok: tuple[int, ...] = ()) -> JSON:
        """Send one request and return its JSON object."""
        response = self._send(method, path, params=params, json=json, ok=ok)
        try:
            body = response.json()
        except ValueError as exc:
            raise ApiError(response.status_code, "INVALID_RESPONSE",
                           f"expected JSON from {method} {path}, got {response.text[:200]!r}") from exc
        if not isinstance(body, dict):
            raise ApiError(response.status_code, "INVALID_RESPONSE",
                           f"expected a JSON object from {method} {path}")
        return body

    # system -----------------------------------------------------------------------------------

    def health(self, name: str | None = None) -> JSON:
        """Control-plane health (public; an unhealthy answer is returned, not raised), or a service's."""
        if name is not None:
            return self.service_health(name)
        return self._json("GET", "/health", ok=(503,))

    # services ---------------------------------------------------------------------------------

    def deploy(self, services: list[dict[str, Any]], supersede: bool = False) -> JSON:
        """Create or update services: {deployed, errors, deployments}."""
        return self._json("POST", "/deploy", json={"services": services},
                          params=_params(supersede=supersede or None))

    def list_services(
        self,
        project: str | None = None,
        environment: str | None = None,
        status: str | None = None,
        limit: int | None = None,
        cursor: str | None = None,
    ) -> JSON:
        """One page of services: {items, next_cursor}."""
        return self._json("GET", "/services", params=_params(
            project=project, environment=environment, status=status, limit=limit, cursor=cursor))

    def status(self, project: str | None = None) -> JSON:
        """Every service's status in seed 001's shape: {services: [...]}."""
        return self._json("GET", "/status", params=_params(project=project))

    def get_service(self, name: str) -> JSON:
        """A service with its containers and current deployment."""
        return self._json("GET", f"/services/{_seg(name)}")

    def get_spec(self, name: str) -> JSON:
        """The service's spec as applied."""
        return self._json("GET", f"/services/{_seg(name)}/spec")

    def scale(self, name: str, replicas: int) -> JSON:
        """Set the replica count."""
        return self._json("POST", f"/services/{_seg(name)}/scale", json={"replicas": replicas})

    def start(self, name: str) -> JSON:
        """Start a stopped service."""
        return self._json("POST", f"/services/{_seg(name)}/start")

    def stop(self, name: str) -> JSON:
        """Stop every replica; the service stays."""
        return self._json("POST", f"/services/{_seg(name)}/stop")

    def restart(self, name: str, supersede: bool = False) -> JSON:
        """Rolling restart (a new deployment of the same spec)."""
        return self._json("POST", f"/services/{_seg(name)}/restart",
                          params=_params(supersede=supersede or None))

    def remove(self, name: str, keep_data: bool = False) -> JSON:
        """Remove the service, its containers, its route and (unless keep_data) its volumes."""
        return self._json("DELETE", f"/services/{_seg(name)}", params={"keep_data": keep_data})

    def remove_project_services(self, project: str, keep_data: bool = False) -> JSON:
        """Remove every service of a project: {project, removed}."""
        return self._json("DELETE", f"/projects/{_seg(project)}/services",
                          params={"keep_data": keep_data})

    @overload
    def logs(self, name: str, tail: int | None = ..., since: str | None = ...,
             replica: str | None = ..., format: Literal["text"] = ...) -> str: ...

    @overload
    def logs(self, name: str, tail: int | None = ..., since: str | None = ...,
             replica: str | None = ..., *, format: Literal["json"]) -> JSON: ...

    @overload
    def logs(self, name: str, tail: int | None = ..., since: str | None = ...,
             replica: str | None = ..., format: Literal["text", "json"] = ...) -> str | JSON: ...

    def logs(self, name: str, tail: int | None = 100, since: str | None = None,
             replica: str | None = None, format: Literal["text", "json"] = "text") -> str | JSON:
        """Merged recent logs: text lines, or {name, logs, total_lines} with format="json"."""
        params = _params(tail=tail, since=since, replica=replica, format=format)
        path = f"/services/{_seg(name)}/logs"
        if format == "json":
            return self._json("GET", path, params=params)
        return self._send("GET", path, params=params).text

    def follow_logs(self, name: str, tail: int | None = 100, since: str | None = None,
                    replica: str | None = None, format: Literal["text", "json"] = "text",
                    ) -> Iterator[str]:
        """Stream logs (SSE): yield each event's data until the server or the caller stops."""
        params = _params(tail=tail, since=since, replica=replica, format=format, follow=True)
        return self._stream(f"/services/{_seg(name)}/logs", params, "log stream")

    def _stream(self, path: str, params: Mapping[str, Any], what: str,
                last_event_id: str | None = None) -> Iterator[str]:
        """The data of each event of an SSE stream, until the server or the caller stops."""
        timeout = httpx.Timeout(self.timeout, read=None)
        headers = {"Accept": "text/event-stream"}
        if last_event_id:
            headers["Last-Event-ID"] = last_event_id
        try:
            with self._http.stream("GET", path, params=params, headers=headers,
                                   timeout=timeout) as response:
                if not response.is_success:
                    response.read()
                    raise ApiError.from_response(response)
                yield from iter_sse(response.iter_lines())
        except httpx.TransportError as exc:
            raise ApiError(0, "CONNECTION_FAILED", f"{what} from {self.url}: {exc}") from exc

    def follow_events(self, service: str | None = None, type: str | None = None,
                      last_event_id: str | None = None) -> Iterator[JSON]:
        """Every event as it is recorded (from after `last_event_id` when given)."""
        for data in self._stream("/events/stream", _params(service=service, type=type),
                                 "event stream", last_event_id):
            yield json.loads(data)

    def follow_metrics(self, name: str) -> Iterator[JSON]:
        """The service's figures, one snapshot per monitoring round."""
        for data in self._stream(f"/services/{_seg(name)}/metrics/stream", {}, "metrics stream"):
            yield json.loads(data)

    # monitoring -------------------------------------------------------------------------------

    def stats(self, name: str) -> JSON:
        """CPU, memory and network of each replica and summed (last background sample)."""
        return self._json("GET", f"/services/{_seg(name)}/stats")

    def request_metrics(self, name: str) -> JSON:
        """Requests per second, 5xx share and latency percentiles over 1 and 5 minutes."""
        return self._json("GET", f"/services/{_seg(name)}/request-metrics")

    def metrics(self, name: str, history: int | None = None, interval: str | None = None) -> JSON:
        """The figures now and the last `history` points of `interval` (1m, 5m, 1h, 1d)."""
        return self._json("GET", f"/services/{_seg(name)}/metrics",
                          params=_params(history=history, interval=interval))

    def scaling(self, name: str) -> JSON:
        """The scaling and sleep policies, and the last scaling decision."""
        return self._json("GET", f"/services/{_seg(name)}/scaling")

    def set_scaling(self, name: str, **policy: Any) -> JSON:
        """Change the given fields of the scaling policy."""
        return self._json("PUT", f"/services/{_seg(name)}/scaling",
                          json={k: v for k, v in policy.items() if v is not None})

    def sleep(self, name: str) -> JSON:
        """Scale to zero now; the next request wakes it."""
        return self._json("POST", f"/services/{_seg(name)}/sleep")

    def wake(self, name: str) -> JSON:
        """Start a sleeping service's replicas again."""
        return self._json("POST", f"/services/{_seg(name)}/wake")

    def system_health(self) -> JSON:
        return self._json("GET", "/system/health")

    def system_metrics(self) -> JSON:
        return self._json("GET", "/system/metrics")

    def dashboard(self) -> JSON:
        return self._json("GET", "/dashboard/summary")

    def config(self) -> JSON:
        return self._json("GET", "/config")

    def set_config(self, **values: Any) -> JSON:
        return self._json("PATCH", "/config", json={k: v for k, v in values.items()
                                                    if v is not None})

    def service_health(self, name: str) -> JSON:
        """Per replica: health, last check, failures, last error, response time."""
        return self._json("GET", f"/services/{_seg(name)}/health")

    def check_health(self, name: str) -> JSON:
        """Probe every replica now."""
        return self._json("POST", f"/services/{_seg(name)}/health/check")

    def events(self, name: str, type: str | None = None, since: str | None = None,
               limit: int | None = None, cursor: str | None = None) -> JSON:
        """One page of the service's events, newest first: {items, next_cursor}."""
        return self._json("GET", f"/services/{_seg(name)}/events", params=_params(
            type=type, since=since, limit=limit, cursor=cursor))

    # deployments ------------------------------------------------------------------------------

    def deployments(self, name: str, limit: int | None = None, cursor: str | None = None) -> JSON:
        """One page of the service's deployments, newest first: {items, next_cursor}."""
        return self._json("GET", f"/services/{_seg(name)}/deployments",
                          params=_params(limit=limit, cursor=cursor))

    def get_deployment(self, deployment_id: str) -> JSON:
        """A deployment with its status, error and steps."""
        return self._json("GET", f"/deployments/{_seg(deployment_id)}")

    def redeploy(self, name: str, image: str | None = None, env: dict[str, str] | None = None,
                 reason: str = "redeploy", supersede: bool = False,
                 **changes: Any) -> JSON:
        """Queue a new deployment with these changes (image, env, command, deploy, ...); with
        none, every replica is replaced."""
        body: dict[str, Any] = {"reason": reason, **changes}
        if image is not None:
            body["image"] = image
        if env is not None:
            body["env"] = env
        return self._json("POST", f"/services/{_seg(name)}/deployments", json=body,
                          params=_params(supersede=supersede or None))

    def deployment_logs(self, deployment_id: str) -> JSON:
        """What each step of a deployment did: {deployment_id, number, status, steps}."""
        return self._json("GET", f"/deployments/{_seg(deployment_id)}/logs")

    def promote(self, name: str) -> JSON:
        """Promote the service's current deployment (end its canary phase)."""
        return self._json("POST", f"/services/{_seg(name)}/promote")

    def promote_deployment(self, deployment_id: str) -> JSON:
        """Promote one deployment."""
        return self._json("POST", f"/deployments/{_seg(deployment_id)}/promote")

    def fail_deployment(self, deployment_id: str) -> JSON:
        """Abort a deployment in flight and restore the last successful version."""
        return self._json("POST", f"/deployments/{_seg(deployment_id)}/fail")

    def rollback(self, name: str, to: int | None = None, supersede: bool = False) -> JSON:
        """Roll back to the last successful deployment before the current one (or number `to`)."""
        return self._json("POST", f"/services/{_seg(name)}/rollback",
                          json={"to": to} if to is not None else None,
                          params=_params(supersede=supersede or None))

    def rollback_deployment(self, deployment_id: str, supersede: bool = False) -> JSON:
        """Run exactly this deployment's revision again."""
        return self._json("POST", f"/deployments/{_seg(deployment_id)}/rollback",
                          params=_params(supersede=supersede or None))

    # tokens -----------------------------------------------------------------------------------

    def create_token(self, name: str, role: str | None = None,
                     expires_in_days: int | None = None, projects: Iterable[str] = ()) -> JSON:
        """A new token of the caller's (its role by default, never above it); its plaintext
        (`token`) is in this answer only."""
        body: dict[str, Any] = {"name": name, "projects": list(projects)}
        if role is not None:
            body["role"] = role
        if expires_in_days is not None:
            body["expires_in_days"] = expires_in_days
        return self._json("POST", "/tokens", json=body)

    def list_tokens(self, all_tokens: bool = False) -> JSON:
        """The caller's tokens (every token, for an unscoped admin with `all_tokens`)."""
        return self._json("GET", "/tokens", params=_params(all=all_tokens or None))

    # users and sessions -----------------------------------------------------------------------

    def log_in(self, email: str, password: str) -> JSON:
        """A session for a user: {token, expires_at, session, user} (needs no token)."""
        return self._json("POST", "/auth/login", json={"email": email, "password": password})

    def renew_session(self) -> JSON:
        return self._json("POST", "/auth/renew")

    def log_out(self) -> JSON:
        return self._json("POST", "/auth/logout")

    def whoami(self) -> JSON:
        return self._json("GET", "/auth/me")

    def create_user(self, email: str, role: str = "viewer", name: str = "",
                    password: str | None = None) -> JSON:
        """A new user; without a password, the answer holds the one made (shown once)."""
        body: dict[str, Any] = {"email": email, "role": role, "name": name}
        if password is not None:
            body["password"] = password
        return self._json("POST", "/users", json=body)

    def list_users(self, limit: int | None = None, cursor: str | None = None) -> JSON:
        return self._json("GET", "/users", params=_params(limit=limit, cursor=cursor))

    def update_user(self, user_id: str, **changes: Any) -> JSON:
        """Change role, name, disabled or password (with current_password for one's own)."""
        return self._json("PATCH", f"/users/{_seg(user_id)}", json=changes)

    def delete_user(self, user_id: str) -> JSON:
        return self._json("DELETE", f"/users/{_seg(user_id)}")

    # activity and notifications ---------------------------------------------------------------

    def activity(self, limit: int | None = None, cursor: str | None = None,
                 **filters: str | None) -> JSON:
        """Writes through the API, newest first (filters: actor, action, target, project,
        result, since)."""
        return self._json("GET", "/activity", params=_params(limit=limit, cursor=cursor,
                                                             **filters))

    def notifications(self, unread: bool = False) -> JSON:
        return self._json("GET", "/notifications", params=_params(unread=unread or None))

    def read_notification(self, notification_id: int | None = None) -> JSON:
        """Mark one notification read, or all of them without an id."""
        if notification_id is None:
            return self._json("POST", "/notifications/read-all")
        return self._json("POST", f"/notifications/{notification_id}/read")

    def revoke_token(self, token_id: str) -> JSON:
        """Revoke a token."""
        return self._json("DELETE", f"/tokens/{_seg(token_id)}")

    # projects, configuration, keys, webhooks --------------------------------------------------

    def list_projects(self) -> JSON:
        return self._json("GET", "/projects", params={"limit": 100})

    def create_project(self, name: str, repository: str | None = None,
                       branch: str | None = None) -> JSON:
        body = {k: v for k, v in {"name": name, "repository": repository,
                                  "branch": branch}.items() if v is not None}
        return self._json("POST", "/projects", json=body)

    def delete_project(self, name: str, force: bool = False) -> JSON:
        return self._json("DELETE", f"/projects/{_seg(name)}", params={"force": force})

    def _vars_path(self, project: str, environment: str | None) -> str:
        scope = f"/environments/{_seg(environment)}" if environment else ""
        return f"/projects/{_seg(project)}{scope}/env-vars"

    def env_vars(self, project: str, environment: str | None = None) -> JSON:
        """Decrypted variables of the project, or of one of its environments."""
        return self._json("GET", self._vars_path(project, environment))

    def set_env_vars(self, project: str, values: dict[str, str | None],
                     environment: str | None = None) -> JSON:
        """Set variables (None deletes one)."""
        return self._json("PATCH", self._vars_path(project, environment), json={"env": values})

    def list_secrets(self, project: str) -> list[Any]:
        """Names and dates of the project's secrets (never their values)."""
        found: list[Any] = self._send("GET", f"/projects/{_seg(project)}/secrets").json()
        return found

    def set_secret(self, project: str, key: str, value: str) -> JSON:
        return self._json("PUT", f"/projects/{_seg(project)}/secrets/{_seg(key)}",
                          json={"value": value})

    def delete_secret(self, project: str, key: str) -> None:
        self._send("DELETE", f"/projects/{_seg(project)}/secrets/{_seg(key)}")

    def rotate_keys(self) -> JSON:
        """A new data key; every stored value re-encrypted under it (admin)."""
        return self._json("POST", "/keys/rotate")

    def list_webhooks(self, project: str | None = None) -> list[Any]:
        found: list[Any] = self._send("GET", "/webhooks",
                                      params={"project": project} if project else None).json()
        return found

    def create_webhook(self, project: str, provider: str, secret: str | None = None) -> JSON:
        """Register a webhook; the answer holds its secret, this once."""
        body = {"project": project, "provider": provider}
        if secret:
            body["secret"] = secret
        return self._json("POST", "/webhooks", json=body)

    def delete_webhook(self, webhook_id: str) -> None:
        self._send("DELETE", f"/webhooks/{_seg(webhook_id)}")

    # outbound webhooks ------------------------------------------------------------------------

    def list_webhook_endpoints(self, limit: int | None = None,
                               cursor: str | None = None) -> JSON:
        """One page of outbound webhook endpoints: {items, next_cursor}."""
        return self._json("GET", "/webhook-endpoints", params=_params(limit=limit, cursor=cursor))

    def create_webhook_endpoint(self, url: str, events: list[str], project: str | None = None,
                                description: str | None = None, active: bool = True) -> JSON:
        """Subscribe `url` to events (or ["*"]); the answer holds the signing secret, this once."""
        body: JSON = {"url": url, "events": events, "active": active}
        if project is not None:
            body["project"] = project
        if description is not None:
            body["description"] = description
        return self._json("POST", "/webhook-endpoints", json=body)

    def get_webhook_endpoint(self, endpoint_id: str) -> JSON:
        return self._json("GET", f"/webhook-endpoints/{_seg(endpoint_id)}")

    def update_webhook_endpoint(self, endpoint_id: str, **changes: Any) -> JSON:
        """Change url, events, description or active (only those given)."""
        return self._json("PATCH", f"/webhook-endpoints/{_seg(endpoint_id)}", json=changes)

    def delete_webhook_endpoint(self, endpoint_id: str) -> None:
        self._send("DELETE", f"/webhook-endpoints/{_seg(endpoint_id)}")

    def ping_webhook_endpoint(self, endpoint_id: str) -> JSON:
        """Send a ping event now; the delivery (pending) to follow."""
        return self._json("POST", f"/webhook-endpoints/{_seg(endpoint_id)}/ping")

    def list_webhook_deliveries(self, endpoint_id: str, status: str | None = None,
                                limit: int | None = None, cursor: str | None = None) -> JSON:
        """One page of an endpoint's deliveries, newest first: {items, next_cursor}."""
        return self._json("GET", f"/webhook-endpoints/{_seg(endpoint_id)}/deliveries",
                          params=_params(status=status, limit=limit, cursor=cursor))

    def get_webhook_delivery(self, endpoint_id: str, delivery_id: str) -> JSON:
        """A delivery with its payload and every attempt."""
        return self._json("GET", f"/webhook-endpoints/{_seg(endpoint_id)}/deliveries/"
                                 f"{_seg(delivery_id)}")

    def redeliver_webhook(self, endpoint_id: str, delivery_id: str) -> JSON:
        """Send a delivery's payload again as a new delivery."""
        return self._json("POST", f"/webhook-endpoints/{_seg(endpoint_id)}/deliveries/"
                                  f"{_seg(delivery_id)}/redeliver")
