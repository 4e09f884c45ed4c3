"""The Python client and the `legato` CLI against a mocked API (httpx.MockTransport, no network)."""

from __future__ import annotations

import json
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

from legato.cli import main as cli
from legato.client import (
    DEFAULT_URL,
    ApiError,
    Client,
    ConfigError,
    iter_sse,
    load_settings,
    read_config,
    write_config,
)

URL = "http://legato.test"
TOKEN = "lgt_secret"
NOW = "2024-05-01T12:00:00Z"

Handler = Callable[[httpx.Request], httpx.Response]


class FakeApi:
    """Canned answers by (method, path); every request is kept for the assertions."""

    def __init__(self) -> None:
        self.routes: dict[tuple[str, str], Handler] = {}
        self.requests: list[httpx.Request] = []

    def on(self, method: str, path: str, status: int = 200, body: Any = None, **kw: Any) -> None:
        """Answer `method path` with this status and JSON body (or raw content/headers in kw)."""
        def handler(request: httpx.Request) -> httpx.Response:
            if body is None:
                return httpx.Response(status, **kw)
            return httpx.Response(status, json=body, **kw)
        self.routes[(method, path)] = handler

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        handler = self.routes.get((request.method, request.url.path))
        if handler is None:
            return error_response(404, "NOT_FOUND", f"route not found: {request.url.path}")
        return handler(request)

    def client(self, url: str = URL, token: str | None = TOKEN) -> Client:
        return Client(url, token, transport=httpx.MockTransport(self))

    @property
    def last(self) -> httpx.Request:
        return self.requests[-1]


def error_response(status: int, code: str, message: str, details: Any = None) -> httpx.Response:
    return httpx.Response(status, json={"error": message, "code": code, "details": details or {},
                                        "request_id": "req-123"})


def body(request: httpx.Request) -> Any:
    return json.loads(request.content)


def service(name: str, *, healthy: int, desired: int, domains: list[str],
            project: str = "shop") -> dict[str, Any]:
    return {
        "name": name, "project": project, "environment": "production", "status": "running",
        "image": f"{name}:1", "domains": domains, "internal": False, "port": 8080,
        "replicas": {"desired": desired, "current": desired, "healthy": healthy},
        "deployment": None, "created_at": NOW, "updated_at": NOW,
    }


@pytest.fixture(autouse=True)
def _isolated_config(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """No test reads the real environment or ~/.config."""
    monkeypatch.delenv("LEGATO_URL", raising=False)
    monkeypatch.delenv("LEGATO_TOKEN", raising=False)
    path = tmp_path / "cfg" / "config.toml"
    monkeypatch.setenv("LEGATO_CONFIG", str(path))
    return path


@pytest.fixture
def api() -> FakeApi:
    return FakeApi()


@pytest.fixture
def run(api: FakeApi, monkeypatch: pytest.MonkeyPatch) -> Callable[..., Any]:
    """Invoke the CLI with its client wired to the fake API."""
    monkeypatch.setattr(cli, "make_client",
                        lambda url=None, token=None: api.client(url or URL, token or TOKEN))
    runner = CliRunner()

    def invoke(*args: str, input: str | None = None) -> Any:
        return runner.invoke(cli.app, list(args), input=input)

    return invoke


# client: requests -------------------------------------------------------------------------


def test_client_sends_bearer_token_and_drops_unset_query_params(api: FakeApi) -> None:
    api.on("GET", "/api/v1/services", body={"items": [], "next_cursor": None})
    page = api.client().list_services(project="shop", limit=5)
    assert page == {"items": [], "next_cursor": None}
    request = api.last
    assert request.headers["authorization"] == f"Bearer {TOKEN}"
    assert dict(request.url.params) == {"project": "shop", "limit": "5"}


def test_client_without_token_sends_no_authorization(api: FakeApi) -> None:
    api.on("GET", "/api/v1/health", body={"status": "healthy", "checks": {"store": "ok"}})
    assert api.client(token=None).health()["status"] == "healthy"
    assert "authorization" not in api.last.headers


def test_client_url_with_api_prefix_is_not_doubled(api: FakeApi) -> None:
    api.on("GET", "/api/v1/status", body={"services": []})
    api.client(url=f"{URL}/api/v1/").status(project="p")
    assert str(api.last.url) == f"{URL}/api/v1/status?project=p"


def test_deploy_posts_the_services_list(api: FakeApi) -> None:
    result = {"deployed": ["web"], "errors": [], "deployments": []}
    api.on("POST", "/api/v1/deploy", 202, result)
    services = [{"name": "web", "image": "nginx:1"}]
    assert api.client().deploy(services) == result
    assert body(api.last) == {"services": services}


@pytest.mark.parametrize(("call", "method", "path", "expected_body", "params"), [
    (lambda c: c.scale("web", 3), "POST", "/api/v1/services/web/scale", {"replicas": 3}, {}),
    (lambda c: c.start("web"), "POST", "/api/v1/services/web/start", None, {}),
    (lambda c: c.stop("web"), "POST", "/api/v1/services/web/stop", None, {}),
    (lambda c: c.restart("web"), "POST", "/api/v1/services/web/restart", None, {}),
    (lambda c: c.remove("web", keep_data=True), "DELETE", "/api/v1/services/web", None,
     {"keep_data": "true"}),
    (lambda c: c.remove_project_services("shop"), "DELETE", "/api/v1/projects/shop/services",
     None, {"keep_data": "false"}),
    (lambda c: c.get_spec("web"), "GET", "/api/v1/services/web/spec", None, {}),
    (lambda c: c.service_health("web"), "GET", "/api/v1/services/web/health", None, {}),
    (lambda c: c.health("web"), "GET", "/api/v1/services/web/health", None, {}),
    (lambda c: c.check_health("web"), "POST", "/api/v1/services/web/health/check", None, {}),
    (lambda c: c.events("web", type="scale", limit=10), "GET", "/api/v1/services/web/events",
     None, {"type": "scale", "limit": "10"}),
    (lambda c: c.deployments("web"), "GET", "/api/v1/services/web/deployments", None, {}),
    (lambda c: c.get_deployment("d1"), "GET", "/api/v1/deployments/d1", None, {}),
    (lambda c: c.redeploy("web", image="web:2"), "POST", "/api/v1/services/web/deployments",
     {"reason": "redeploy", "image": "web:2"}, {}),
    (lambda c: c.create_token("ci", "deployer", projects=["shop"]), "POST", "/api/v1/tokens",
     {"name": "ci", "role": "deployer", "projects": ["shop"]}, {}),
    (lambda c: c.list_tokens(), "GET", "/api/v1/tokens", None, {}),
    (lambda c: c.revoke_token("t1"), "DELETE", "/api/v1/tokens/t1", None, {}),
])
def test_each_method_calls_its_route(
    api: FakeApi, call: Callable[[Client], Any], method: str, path: str,
    expected_body: Any, params: dict[str, str],
) -> None:
    api.on(method, path, body={"ok": True})
    assert call(api.client()) == {"ok": True}
    request = api.last
    assert (request.method, request.url.path) == (method, path)
    assert dict(request.url.params) == params
    if expected_body is None:
        assert request.content == b""
    else:
        assert body(request) == expected_body


def test_path_segments_are_escaped(api: FakeApi) -> None:
    with pytest.raises(ApiError):
        api.client().get_service("a/b c")
    assert api.last.url.raw_path == b"/api/v1/services/a%2Fb%20c"


def test_logs_text_and_json(api: FakeApi) -> None:
    api.routes[("GET", "/api/v1/services/web/logs")] = lambda r: (
        httpx.Response(200, json={"name": "web", "logs": [], "total_lines": 0})
        if r.url.params["format"] == "json" else httpx.Response(200, text="web-1 - hello\n"))
    client = api.client()
    assert client.logs("web", tail=5, since="10m") == "web-1 - hello\n"
    assert dict(api.last.url.params) == {"tail": "5", "since": "10m", "format": "text"}
    assert client.logs("web", format="json")["total_lines"] == 0


def test_health_returns_an_unhealthy_answer_instead_of_raising(api: FakeApi) -> None:
    api.on("GET", "/api/v1/health", 503, {"status": "unhealthy", "checks": {"docker": "down"}})
    assert api.client().health() == {"status": "unhealthy", "checks": {"docker": "down"}}


# client: errors ---------------------------------------------------------------------------


def test_api_error_is_parsed_from_the_error_body(api: FakeApi) -> None:
    api.routes[("GET", "/api/v1/services/nope")] = lambda r: error_response(
        404, "SERVICE_NOT_FOUND", "service nope not found", {"name": "nope"})
    with pytest.raises(ApiError) as caught:
        api.client().get_service("nope")
    err = caught.value
    assert (err.status, err.code, err.message) == (404, "SERVICE_NOT_FOUND", "service nope not found")
    assert err.details == {"name": "nope"}
    assert err.request_id == "req-123"


def test_api_error_falls_back_when_the_body_is_not_json(api: FakeApi) -> None:
    api.on("GET", "/api/v1/services", 502, content=b"<html>Bad Gateway</html>",
           headers={"x-request-id": "rid-9"})
    with pytest.raises(ApiError) as caught:
        api.client().list_services()
    err = caught.value
    assert (err.status, err.code, err.request_id) == (502, "HTTP_502", "rid-9")
    assert "Bad Gateway" in err.message


def test_unreachable_server_is_an_api_error() -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    client = Client(URL, TOKEN, transport=httpx.MockTransport(refuse))
    with pytest.raises(ApiError) as caught:
        client.status()
    assert (caught.value.status, caught.value.code) == (0, "CONNECTION_FAILED")
    assert URL in caught.value.message


# client: SSE ------------------------------------------------------------------------------


def test_follow_logs_yields_data_payloads_and_skips_comments(api: FakeApi) -> None:
    stream = (b": connected\n\n"
              b"data: web-1 2024-05-01T12:00:00+00:00 hello\n\n"
              b": keepalive\n\n"
              b"data: web-2 - world\r\n\r\n")
    api.on("GET", "/api/v1/services/web/logs", content=stream,
           headers={"content-type": "text/event-stream"})
    lines = list(api.client().follow_logs("web", tail=10, replica="web-1"))
    assert lines == ["web-1 2024-05-01T12:00:00+00:00 hello", "web-2 - world"]
    request = api.last
    assert request.url.params["follow"] == "true"
    assert request.url.params["tail"] == "10"
    assert request.url.params["replica"] == "web-1"
    assert request.headers["accept"] == "text/event-stream"
    assert request.headers["authorization"] == f"Bearer {TOKEN}"


def test_follow_logs_raises_api_error_before_streaming(api: FakeApi) -> None:
    api.routes[("GET", "/api/v1/services/web/logs")] = lambda r: error_response(
        400, "VALIDATION_FAILED", "invalid since 'x'")
    with pytest.raises(ApiError, match="invalid since"):
        next(api.client().follow_logs("web", since="x"))


def test_iter_sse_joins_multiline_data_and_ignores_other_fields() -> None:
    lines = ["event: log", "id: 7", "data: one", "data:two", "", "retry: 10", "", "data: tail"]
    assert list(iter_sse(lines)) == ["one\ntwo", "tail"]


# client: configuration --------------------------------------------------------------------


def test_settings_env_beats_config_file_which_beats_defaults(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text('url = "http://from-file:1"\ntoken = "file-token"\n')
    both = load_settings({"LEGATO_CONFIG": str(path), "LEGATO_URL": "http://env:2",
                          "LEGATO_TOKEN": "env-token"})
    assert (both.url, both.token) == ("http://env:2", "env-token")
    mixed = load_settings({"LEGATO_CONFIG": str(path), "LEGATO_URL": "http://env:2"})
    assert (mixed.url, mixed.token) == ("http://env:2", "file-token")
    nothing = load_settings({"LEGATO_CONFIG": str(tmp_path / "missing.toml")})
    assert (nothing.url, nothing.token) == (DEFAULT_URL, None)


def test_from_env_reads_the_process_environment(
    monkeypatch: pytest.MonkeyPatch, api: FakeApi
) -> None:
    monkeypatch.setenv("LEGATO_URL", "http://env.test:9")
    monkeypatch.setenv("LEGATO_TOKEN", "env-token")
    api.on("GET", "/api/v1/status", body={"services": []})
    client = Client.from_env(transport=httpx.MockTransport(api))
    client.status()
    assert str(api.last.url) == "http://env.test:9/api/v1/status"
    assert api.last.headers["authorization"] == "Bearer env-token"


def test_write_config_is_private_and_round_trips(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "config.toml"
    token = 'lgt_we"ird\\tok\x7f'
    write_config(path, "http://h:1", token)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert read_config(path) == {"url": "http://h:1", "token": token}


def test_bad_config_file_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text("url = [unclosed")
    with pytest.raises(ConfigError, match="cannot read"):
        read_config(path)


# CLI --------------------------------------------------------------------------------------


def test_cli_deploy_yaml_file(run: Callable[..., Any], api: FakeApi, tmp_path: Path) -> None:
    app_file = tmp_path / "app.yaml"
    app_file.write_text("services:\n  - name: web\n    image: nginx:1\n    replicas: 2\n"
                        "  - name: worker\n    image: busybox\n")
    api.on("POST", "/api/v1/deploy", 202, {
        "deployed": ["web", "worker"], "errors": [],
        "deployments": [{"name": "web", "deployment_id": "dep1", "changed": True},
                        {"name": "worker", "deployment_id": "dep0", "changed": False}],
    })
    result = run("deploy", "-f", str(app_file))
    assert result.exit_code == 0, result.output
    assert body(api.last) == {"services": [{"name": "web", "image": "nginx:1", "replicas": 2},
                                           {"name": "worker", "image": "busybox"}]}
    assert "deployed web (deployment dep1)" in result.stdout
    assert "unchanged worker" in result.stdout


def test_cli_deploy_single_service_mapping_and_partial_error_exits_1(
    run: Callable[..., Any], api: FakeApi, tmp_path: Path
) -> None:
    app_file = tmp_path / "svc.json"
    app_file.write_text(json.dumps({"name": "web", "image": "nginx:1"}))
    api.on("POST", "/api/v1/deploy", 202, {
        "deployed": ["web"],
        "errors": [{"index": 1, "name": "bad", "error": "image is required", "code": "VALIDATION_FAILED"}],
        "deployments": [{"name": "web", "deployment_id": "dep1", "changed": True}],
    })
    result = run("deploy", "-f", str(app_file))
    assert body(api.last) == {"services": [{"name": "web", "image": "nginx:1"}]}
    assert result.exit_code == 1
    assert "deployed web" in result.stdout
    assert "error: bad: image is required (VALIDATION_FAILED)" in result.stderr


def test_cli_deploy_rejected_prints_each_error_and_exits_1(
    run: Callable[..., Any], api: FakeApi, tmp_path: Path
) -> None:
    app_file = tmp_path / "app.yaml"
    app_file.write_text("services:\n  - name: web\n")
    errors = [{"index": 0, "name": "web", "error": "image: Field required", "code": "VALIDATION_FAILED"}]
    api.routes[("POST", "/api/v1/deploy")] = lambda r: error_response(
        422, "VALIDATION_FAILED", "no service deployed: image: Field required", {"errors": errors})
    result = run("deploy", "-f", str(app_file))
    assert result.exit_code == 1
    assert "error: web: image: Field required (VALIDATION_FAILED)" in result.stderr
    assert "error: no service deployed: image: Field required (VALIDATION_FAILED)" in result.stderr


def test_cli_deploy_bad_file_sends_nothing(
    run: Callable[..., Any], api: FakeApi, tmp_path: Path
) -> None:
    app_file = tmp_path / "app.yaml"
    app_file.write_text("- just\n- strings\n")
    result = run("deploy", "-f", str(app_file))
    assert result.exit_code == 1
    assert "expected a top-level `services:` list" in result.stderr
    assert api.requests == []


def test_cli_ps_table_follows_pages(run: Callable[..., Any], api: FakeApi) -> None:
    pages = {
        None: {"items": [service("api", healthy=1, desired=2, domains=["api.example.com", "x.io"])],
               "next_cursor": "c1"},
        "c1": {"items": [service("worker", healthy=3, desired=3, domains=[], project="jobs")],
               "next_cursor": None},
    }
    api.routes[("GET", "/api/v1/services")] = lambda r: httpx.Response(
        200, json=pages[r.url.params.get("cursor")])
    result = run("ps", "--project", "shop")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["NAME", "PROJECT", "STATUS", "REPLICAS", "IMAGE", "DOMAIN"]
    assert lines[1].split() == ["api", "shop", "running", "1/2", "api:1", "api.example.com"]
    assert lines[2].split() == ["worker", "jobs", "running", "3/3", "worker:1", "-"]
    assert [r.url.params.get("project") for r in api.requests] == ["shop", "shop"]


def test_cli_json_prints_the_raw_response(run: Callable[..., Any], api: FakeApi) -> None:
    detail = {**service("api", healthy=2, desired=2, domains=["api.example.com"]), "containers": []}
    api.on("GET", "/api/v1/services/api", body=detail)
    result = run("status", "api", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == detail
    assert result.stdout.startswith("{\n  ")


def test_cli_status_shows_detail_and_containers(run: Callable[..., Any], api: FakeApi) -> None:
    container = {"id": "abc123def456", "name": "api-1", "node": "local", "port": 49153,
                 "status": "running", "health": "healthy", "started_at": NOW,
                 "deployment": "d1", "slot": 0}
    detail = {**service("api", healthy=1, desired=2, domains=["api.example.com"]),
              "containers": [container]}
    api.on("GET", "/api/v1/services/api", body=detail)
    result = run("status", "api")
    assert result.exit_code == 0, result.output
    assert "1/2 healthy, 2 running" in result.stdout
    assert "api.example.com" in result.stdout
    assert ["abc123def456", "api-1", "running", "healthy", "49153", "0", "2024-05-01",
            "12:00:00"] in [line.split() for line in result.stdout.splitlines()]


def test_cli_api_error_goes_to_stderr_and_exits_1(run: Callable[..., Any], api: FakeApi) -> None:
    api.routes[("POST", "/api/v1/services/ghost/scale")] = lambda r: error_response(
        404, "SERVICE_NOT_FOUND", "service ghost not found")
    result = run("scale", "ghost", "3")
    assert result.exit_code == 1
    assert result.stderr.strip() == "error: service ghost not found (SERVICE_NOT_FOUND)"
    assert result.stdout == ""
    assert body(api.last) == {"replicas": 3}


ACCEPTED = {"message": "deployment #5 queued", "name": "web", "deployment_id": "d5", "number": 5,
            "status": "pending", "status_url": "/api/v1/deployments/d5"}


@pytest.mark.parametrize(("args", "method", "path", "params", "answer", "printed"), [
    (["restart", "web"], "POST", "/api/v1/services/web/restart", {},
     {"message": "restarting", "name": "web", "deployment_id": "d9", "status_url": "/x"},
     "restarting web (deployment d9)"),
    (["stop", "web"], "POST", "/api/v1/services/web/stop", {},
     {"message": "stopping", "name": "web", "status_url": "/x"}, "stopping web"),
    (["start", "web"], "POST", "/api/v1/services/web/start", {},
     {"message": "starting", "name": "web", "status_url": "/x"}, "starting web"),
    (["rm", "web", "--keep-data"], "DELETE", "/api/v1/services/web", {"keep_data": "true"},
     {"message": "removing", "name": "web", "containers_removed": 2, "keep_data": True},
     "removing web (2 containers; volumes kept)"),
    (["events", "web", "--type", "scale", "--limit", "5"], "GET", "/api/v1/services/web/events",
     {"type": "scale", "limit": "5"},
     {"items": [{"id": 1, "service": "web", "type": "scale", "message": "scaled to 3",
                 "details": {}, "timestamp": NOW}], "next_cursor": None},
     "2024-05-01 12:00:00  scale  scaled to 3"),
    (["deployments", "web"], "GET", "/api/v1/services/web/deployments", {},
     {"items": [{"id": "d1", "number": 4, "status": "successful", "step": "done",
                 "strategy": "rolling", "image": "web:2", "image_id": None, "reason": "deploy",
                 "error": None, "created_at": NOW, "service": "web", "actor": "token:ci",
                 "previous_id": None, "updated_at": NOW, "steps": [], "spec": {}}],
      "next_cursor": None},
     "#4      d1  successful  done  rolling   web:2  deploy  token:ci  2024-05-01 12:00:00  -"),
    (["deploy", "web", "--image", "web:3", "--supersede"], "POST",
     "/api/v1/services/web/deployments", {"supersede": "true"}, ACCEPTED,
     "deployment #5 queued (d5)"),
    (["promote", "web"], "POST", "/api/v1/services/web/promote", {}, ACCEPTED,
     "deployment #5 queued (d5)"),
    (["rollback", "web", "--to", "2"], "POST", "/api/v1/services/web/rollback", {}, ACCEPTED,
     "deployment #5 queued (d5)"),
])
def test_cli_commands_call_their_routes(
    run: Callable[..., Any], api: FakeApi, args: list[str], method: str, path: str,
    params: dict[str, str], answer: dict[str, Any], printed: str,
) -> None:
    api.on(method, path, body=answer)
    result = run(*args)
    assert result.exit_code == 0, result.output
    assert (api.last.method, api.last.url.path) == (method, path)
    assert dict(api.last.url.params) == params
    assert printed in result.stdout


def test_cli_logs_text_and_follow(run: Callable[..., Any], api: FakeApi) -> None:
    def logs(request: httpx.Request) -> httpx.Response:
        if request.url.params.get("follow") == "true":
            return httpx.Response(200, content=b": connected\n\ndata: web-1 - streamed\n\n",
                                  headers={"content-type": "text/event-stream"})
        return httpx.Response(200, text="web-1 - line one\nweb-2 - line two\n")

    api.routes[("GET", "/api/v1/services/web/logs")] = logs
    result = run("logs", "web", "--tail", "2", "--since", "10m")
    assert result.exit_code == 0, result.output
    assert result.stdout == "web-1 - line one\nweb-2 - line two\n"
    assert dict(api.last.url.params) == {"tail": "2", "since": "10m", "format": "text"}
    followed = run("logs", "web", "-f", "--replica", "web-1")
    assert followed.exit_code == 0, followed.output
    assert followed.stdout == "web-1 - streamed\n"
    assert api.last.url.params["replica"] == "web-1"


def test_cli_tokens_create_prints_token_once_with_warning(
    run: Callable[..., Any], api: FakeApi
) -> None:
    api.on("POST", "/api/v1/tokens", 201, {
        "id": "tok1", "name": "ci", "prefix": "lgt_abcd", "role": "deployer", "projects": ["shop"],
        "created_at": NOW, "expires_at": "2024-05-31T12:00:00Z", "revoked_at": None,
        "last_used_at": None, "token": "lgt_abcd_plaintext",
    })
    result = run("tokens", "create", "--name", "ci", "--role", "deployer",
                 "--expires-in-days", "30", "--project", "shop")
    assert result.exit_code == 0, result.output
    assert body(api.last) == {"name": "ci", "role": "deployer", "projects": ["shop"],
                              "expires_in_days": 30}
    assert result.stdout == "lgt_abcd_plaintext\n"
    assert "shown once" in result.stderr


def test_cli_tokens_create_rejects_unknown_role(run: Callable[..., Any], api: FakeApi) -> None:
    result = run("tokens", "create", "--name", "ci", "--role", "root")
    assert result.exit_code == 2
    assert api.requests == []


def test_cli_tokens_ls_and_revoke(run: Callable[..., Any], api: FakeApi) -> None:
    listed: dict[str, Any] = {"items": [
        {"id": "t1", "name": "ci", "prefix": "lgt_ab", "role": "admin", "projects": [],
         "created_at": NOW, "expires_at": None, "revoked_at": None, "last_used_at": NOW},
        {"id": "t2", "name": "old", "prefix": "lgt_cd", "role": "viewer", "projects": ["a", "b"],
         "created_at": NOW, "expires_at": None, "revoked_at": NOW, "last_used_at": None},
    ], "next_cursor": None}
    api.on("GET", "/api/v1/tokens", body=listed)
    api.on("DELETE", "/api/v1/tokens/t1", body={**listed["items"][0], "revoked_at": NOW})
    table = run("tokens", "ls")
    assert table.exit_code == 0, table.output
    rows = [line.split() for line in table.stdout.splitlines()]
    assert rows[1][:6] == ["t1", "ci", "lgt_ab", "admin", "*", "active"]
    assert rows[2][:6] == ["t2", "old", "lgt_cd", "viewer", "a,b", "revoked"]
    revoked = run("tokens", "revoke", "t1")
    assert revoked.exit_code == 0, revoked.output
    assert api.last.method == "DELETE"
    assert "revoked token t1 (ci)" in revoked.stdout


def test_cli_login_verifies_then_writes_private_config(
    run: Callable[..., Any], api: FakeApi, _isolated_config: Path
) -> None:
    api.on("GET", "/api/v1/auth/me", body={"actor": "token:ci"})
    result = run("login", "--url", "http://legato.example:6880", "--token", "lgt_new")
    assert result.exit_code == 0, result.output
    assert api.last.headers["authorization"] == "Bearer lgt_new"
    assert str(api.last.url) == "http://legato.example:6880/api/v1/auth/me"
    assert stat.S_IMODE(_isolated_config.stat().st_mode) == 0o600
    assert read_config(_isolated_config) == {"url": "http://legato.example:6880", "token": "lgt_new"}


def test_cli_login_with_a_bad_token_writes_nothing(
    run: Callable[..., Any], api: FakeApi, _isolated_config: Path
) -> None:
    api.routes[("GET", "/api/v1/auth/me")] = lambda r: error_response(
        401, "UNAUTHORIZED", "invalid token")
    result = run("login", "--token", "lgt_wrong")
    assert result.exit_code == 1
    assert "error: invalid token (UNAUTHORIZED)" in result.stderr
    assert not _isolated_config.exists()


def test_cli_login_with_an_email_saves_the_session(
    run: Callable[..., Any], api: FakeApi, _isolated_config: Path
) -> None:
    api.on("POST", "/api/v1/auth/login", body={"token": "lgt_session", "expires_at": NOW})
    api.on("GET", "/api/v1/auth/me", body={"actor": "user:ana@example.com"})
    result = run("login", "--email", "ana@example.com", input="a long passphrase\n")
    assert result.exit_code == 0, result.output
    login = next(r for r in api.requests if r.url.path == "/api/v1/auth/login")
    assert body(login) == {"email": "ana@example.com", "password": "a long passphrase"}
    assert api.last.headers["authorization"] == "Bearer lgt_session"
    assert read_config(_isolated_config)["token"] == "lgt_session"


def test_cli_users_activity_and_notifications(run: Callable[..., Any], api: FakeApi) -> None:
    api.on("POST", "/api/v1/users", 201, {"id": "usr_1", "email": "bo@example.com",
                                          "role": "deployer", "password": "made-for-bo"})
    made = run("users", "create", "bo@example.com", "--role", "deployer")
    assert made.exit_code == 0, made.output
    assert body(api.last) == {"email": "bo@example.com", "role": "deployer", "name": ""}
    assert made.stdout == "made-for-bo\n"
    api.on("PATCH", "/api/v1/users/usr_1", body={"email": "bo@example.com", "role": "viewer",
                                                 "disabled": True})
    changed = run("users", "set", "usr_1", "--role", "viewer", "--disable")
    assert changed.exit_code == 0 and body(api.last) == {"role": "viewer", "disabled": True}
    api.on("GET", "/api/v1/activity", body={"items": [
        {"at": NOW, "actor": "user:bo@example.com", "action": "services.scale",
         "target": "name:web", "status": 202, "request_id": "req_1"}], "next_cursor": None})
    trail = run("activity", "--result", "failure", "--limit", "5")
    assert trail.exit_code == 0, trail.output
    assert dict(api.last.url.params) == {"result": "failure", "limit": "5"}
    assert "services.scale" in trail.stdout and "req_1" in trail.stdout
    api.on("POST", "/api/v1/notifications/read-all", body={"marked": 2})
    read = run("notifications", "--read-all")
    assert read.exit_code == 0 and read.stdout == "marked 2 read\n"


def test_make_client_prefers_flags_then_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LEGATO_URL", "http://env.test:1")
    monkeypatch.setenv("LEGATO_TOKEN", "env-token")
    from_env = cli.make_client()
    assert (from_env.url, from_env._http.headers["authorization"]) == (
        "http://env.test:1", "Bearer env-token")
    flagged = cli.make_client("http://flag.test:2", "flag-token")
    assert (flagged.url, flagged._http.headers["authorization"]) == (
        "http://flag.test:2", "Bearer flag-token")


def test_cli_deploy_name_sends_the_changes_and_rollback_sends_the_number(
    run: Callable[..., Any], api: FakeApi
) -> None:
    api.on("POST", "/api/v1/services/web/deployments", body=ACCEPTED)
    assert run("deploy", "web", "--image", "web:3", "--env", "A=1", "--env", "B=x=y").exit_code == 0
    assert body(api.last) == {"reason": "redeploy", "image": "web:3", "env": {"A": "1", "B": "x=y"}}
    api.on("POST", "/api/v1/services/web/rollback", body=ACCEPTED)
    assert run("rollback", "web", "--to", "2").exit_code == 0
    assert body(api.last) == {"to": 2}
    assert run("rollback", "web").exit_code == 0
    assert api.last.content == b""  # the last successful one: the server decides


def test_cli_deploy_needs_a_file_or_a_name_not_both(run: Callable[..., Any], api: FakeApi,
                                                    tmp_path: Path) -> None:
    assert run("deploy").exit_code == 1
    spec = tmp_path / "app.yaml"
    spec.write_text("name: web\nimage: web:1\n")
    result = run("deploy", "web", "-f", str(spec))
    assert result.exit_code == 1 and "either a file" in result.stderr
    result = run("deploy", "-f", str(spec), "--image", "web:2")
    assert result.exit_code == 1 and "--image and --env go with a service NAME" in result.stderr
    assert run("deploy", "web", "--env", "NOEQUALS").exit_code == 1
    assert api.requests == []


def test_cli_deploy_wait_follows_the_steps_and_fails_on_a_rollback(
    run: Callable[..., Any], api: FakeApi
) -> None:
    api.on("POST", "/api/v1/services/web/deployments", body=ACCEPTED)
    api.on("GET", "/api/v1/deployments/d5", body={
        "id": "d5", "number": 5, "status": "rolled_back", "error": "new replicas keep failing",
        "steps": [{"name": "queued", "started_at": NOW, "finished_at": NOW},
                  {"name": "pulling", "started_at": NOW, "finished_at": NOW}]})
    result = run("deploy", "web", "--wait")
    assert result.exit_code == 1
    assert "queued" in result.stdout and "pulling" in result.stdout
    assert "deployment #5 rolled_back: new replicas keep failing" in result.stdout


def test_cli_deployment_shows_steps_and_logs(run: Callable[..., Any], api: FakeApi) -> None:
    api.on("GET", "/api/v1/deployments/d5", body={
        "id": "d5", "number": 5, "service": "web", "status": "successful", "strategy": "canary",
        "image": "web:3", "image_id": "sha256:0123456789abcdef0123", "reason": "deploy",
        "actor": "token:ci", "created_at": NOW, "error": None,
        "steps": [{"name": "queued", "started_at": NOW, "finished_at": NOW}]})
    api.on("GET", "/api/v1/deployments/d5/logs", body={
        "deployment_id": "d5", "number": 5, "status": "successful",
        "steps": [{"name": "pulling", "started_at": NOW, "finished_at": NOW,
                   "logs": [{"at": NOW, "message": "image web:3 is sha256:0123"}]}]})
    result = run("deployment", "d5", "--logs")
    assert result.exit_code == 0, result.output
    assert "#5 d5 of web" in result.stdout and "canary" in result.stdout
    assert "[pulling] image web:3 is sha256:0123" in result.stdout


def test_cli_abort_fails_the_deployment_in_flight(run: Callable[..., Any], api: FakeApi) -> None:
    detail = {**service("web", healthy=1, desired=1, domains=[]),
              "deployment": {"id": "d5", "number": 5, "status": "awaiting_promotion"}}
    api.on("GET", "/api/v1/services/web", body=detail)
    api.on("POST", "/api/v1/deployments/d5/fail", body={**ACCEPTED, "message": "failed"})
    result = run("abort", "web")
    assert result.exit_code == 0, result.output
    assert api.last.url.path == "/api/v1/deployments/d5/fail"
    detail["deployment"] = {"id": "d4", "number": 4, "status": "successful"}
    api.on("GET", "/api/v1/services/web", body=detail)
    result = run("abort", "web")
    assert result.exit_code == 1 and "no deployment in flight" in result.stderr


# monitoring and sizing ----------------------------------------------------------------------


@pytest.mark.parametrize(("call", "method", "path", "expected_body", "params"), [
    (lambda c: c.stats("web"), "GET", "/api/v1/services/web/stats", None, {}),
    (lambda c: c.request_metrics("web"), "GET", "/api/v1/services/web/request-metrics", None, {}),
    (lambda c: c.metrics("web", history=3, interval="1m"), "GET", "/api/v1/services/web/metrics",
     None, {"history": "3", "interval": "1m"}),
    (lambda c: c.scaling("web"), "GET", "/api/v1/services/web/scaling", None, {}),
    (lambda c: c.set_scaling("web", mode="auto", max_replicas=4, min_replicas=None), "PUT",
     "/api/v1/services/web/scaling", {"mode": "auto", "max_replicas": 4}, {}),
    (lambda c: c.sleep("web"), "POST", "/api/v1/services/web/sleep", None, {}),
    (lambda c: c.wake("web"), "POST", "/api/v1/services/web/wake", None, {}),
    (lambda c: c.system_health(), "GET", "/api/v1/system/health", None, {}),
    (lambda c: c.system_metrics(), "GET", "/api/v1/system/metrics", None, {}),
    (lambda c: c.dashboard(), "GET", "/api/v1/dashboard/summary", None, {}),
    (lambda c: c.config(), "GET", "/api/v1/config", None, {}),
    (lambda c: c.set_config(stats_interval_s=2.0), "PATCH", "/api/v1/config",
     {"stats_interval_s": 2.0}, {}),
])
def test_each_monitoring_method_calls_its_route(
    api: FakeApi, call: Callable[[Client], Any], method: str, path: str,
    expected_body: Any, params: dict[str, str],
) -> None:
    api.on(method, path, body={"ok": True})
    assert call(api.client()) == {"ok": True}
    request = api.last
    assert (request.method, request.url.path, dict(request.url.params)) == (method, path, params)
    if expected_body is None:
        assert request.content == b""
    else:
        assert body(request) == expected_body


def test_follow_events_resumes_with_the_last_event_id(api: FakeApi) -> None:
    stream = (': connected\n\nid: 7\nevent: scaling\ndata: {"id": 7, "message": "scaled"}\n\n'
              'id: 8\nevent: health\ndata: {"id": 8, "message": "healthy"}\n\n')
    api.on("GET", "/api/v1/events/stream", content=stream.encode(),
           headers={"content-type": "text/event-stream"})
    events = list(api.client().follow_events(service="web", last_event_id="6"))
    assert [e["id"] for e in events] == [7, 8]
    assert api.last.headers["last-event-id"] == "6"
    assert dict(api.last.url.params) == {"service": "web"}


def test_cli_stats_prints_each_replica_and_the_total(run: Callable[..., Any], api: FakeApi) -> None:
    api.on("GET", "/api/v1/services/web/stats", body={
        "name": "web", "interval_s": 5, "sampled_at": NOW,
        "replicas": [{"id": "a1", "name": "lg-web-0", "cpu_percent": 12.5,
                      "memory_used_bytes": 64 * 1024**2, "memory_limit_bytes": 256 * 1024**2,
                      "memory_percent": 25.0, "network_rx_bytes": 2048, "network_tx_bytes": 10,
                      "sampled_at": NOW}],
        "total": {"cpu_percent": 12.5, "memory_used_bytes": 64 * 1024**2,
                  "memory_limit_bytes": 256 * 1024**2, "network_rx_bytes": 2048,
                  "network_tx_bytes": 10}})
    result = run("stats", "web")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["REPLICA", "CPU%", "MEMORY", "MEM%", "NET", "RX", "NET", "TX"]
    assert lines[1].split() == ["lg-web-0", "12.5", "64.0MiB", "25.0", "2.0KiB", "10B"]
    assert lines[2].split()[:3] == ["total", "12.5", "64.0MiB"]


def test_cli_scaling_changes_only_the_fields_given_then_shows_the_policy(
    run: Callable[..., Any], api: FakeApi
) -> None:
    api.on("PUT", "/api/v1/services/web/scaling", body={
        "message": "scaling policy updated", "name": "web", "app_name": "web", "replicas": 2,
        "previous_policy": {}, "new_policy": {}})
    api.on("GET", "/api/v1/services/web/scaling", body={
        "name": "web", "app_name": "web", "mode": "auto", "replicas": 2, "sleeping": False,
        "policy": {"min_replicas": 2, "max_replicas": 6}, "sleep": {"idle_timeout_s": 0},
        "last_scaled_at": None, "last_scaling_event": {
            "timestamp": NOW, "action": "scaled_out", "from_replicas": 1, "to_replicas": 2,
            "reason": "requests per replica 60 is above 80% of its target 50"}})
    result = run("scaling", "web", "--mode", "auto", "--min", "2", "--max", "6")
    assert result.exit_code == 0, result.output
    put = next(r for r in api.requests if r.method == "PUT")
    assert body(put) == {"mode": "auto", "min_replicas": 2, "max_replicas": 6}
    assert "scaling policy updated; 2 replica(s)" in result.stdout
    assert "max_replicas:             6" in result.stdout
    assert "scaled_out: requests per replica 60" in result.stdout


@pytest.mark.parametrize(("command", "path", "message"), [
    ("sleep", "/api/v1/services/web/sleep", "going to sleep"),
    ("wake", "/api/v1/services/web/wake", "waking"),
])
def test_cli_sleep_and_wake(run: Callable[..., Any], api: FakeApi, command: str, path: str,
                            message: str) -> None:
    api.on("POST", path, status=202, body={"message": message, "name": "web", "status": "x",
                                           "sleeping": command == "sleep", "changed": True,
                                           "status_url": "/x"})
    result = run(command, "web")
    assert result.exit_code == 0, result.output
    assert (api.last.method, api.last.url.path) == ("POST", path)
    assert result.stdout.strip() == f"web: {message}"


def test_cli_metrics_prints_history_then_now(run: Callable[..., Any], api: FakeApi) -> None:
    point = {"timestamp": NOW, "rps": 2.5, "error_rate": 0.1, "latency_p50_ms": 3.0,
             "latency_p95_ms": 9.0, "latency_p99_ms": 20.0, "cpu_percent": 4.0,
             "memory_percent": 1.5, "healthy_replicas": 2, "total_replicas": 2}
    api.on("GET", "/api/v1/services/web/metrics", body={
        "name": "web", "app_name": "web", "timestamp": NOW, "interval": "1m",
        "current": {**point, "rps": 3.0}, "history": [point]})
    result = run("metrics", "web", "--interval", "1m", "--history", "1")
    assert result.exit_code == 0, result.output
    assert dict(api.last.url.params) == {"history": "1", "interval": "1m"}
    rows = [line.split() for line in result.stdout.splitlines()[1:]]
    assert rows[0][2:] == ["2.50", "10.0", "3.0", "9.0", "20.0", "4.0", "1.5", "2/2"]
    assert rows[1][2] == "3.00"
