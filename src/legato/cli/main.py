"""`legato`: each command is a call of the Python client, which is a call of the REST API."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
import yaml

from legato.cli.output import error, print_json, print_table, when
from legato.client import JSON, ApiError, Client, ConfigError, load_settings, write_config

app = typer.Typer(help="Legato: run services on Docker behind HAProxy.", no_args_is_help=True)
tokens_app = typer.Typer(help="API tokens of your own: create, list, revoke.", no_args_is_help=True)
app.add_typer(tokens_app, name="tokens")
users_app = typer.Typer(help="Users who log in with email and password (admin).",
                        no_args_is_help=True)
app.add_typer(users_app, name="users")
projects_app = typer.Typer(help="Projects: list, create, remove.", no_args_is_help=True)
app.add_typer(projects_app, name="projects")
env_app = typer.Typer(help="Environment variables of a project or environment (encrypted).",
                      no_args_is_help=True)
app.add_typer(env_app, name="env")
secrets_app = typer.Typer(help="Write-only project secrets, used as ${secrets.KEY}.",
                          no_args_is_help=True)
app.add_typer(secrets_app, name="secrets")
keys_app = typer.Typer(help="Encryption keys of stored configuration (admin).",
                       no_args_is_help=True)
app.add_typer(keys_app, name="keys")
webhooks_app = typer.Typer(help="Git webhooks (GitHub, Gitea, GitLab) that deploy on push.",
                           no_args_is_help=True)
app.add_typer(webhooks_app, name="webhooks")

UrlOpt = Annotated[str | None, typer.Option("--url", help="API URL (default: LEGATO_URL or config)")]
TokenOpt = Annotated[str | None, typer.Option("--token", help="API token (default: LEGATO_TOKEN or config)")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print the raw API response")]
NameArg = Annotated[str, typer.Argument(help="Service name")]


class Role(StrEnum):
    """A token's role."""

    viewer = "viewer"
    deployer = "deployer"
    admin = "admin"


def make_client(url: str | None = None, token: str | None = None) -> Client:
    """The CLI's one way to a client: flags first, then LEGATO_URL / LEGATO_TOKEN, then the config."""
    settings = load_settings()
    return Client(url or settings.url, token or settings.token)


def fail(message: str) -> NoReturn:
    """Print `error: message` to stderr and exit 1."""
    error(f"error: {message}")
    raise typer.Exit(1)


@contextmanager
def api_errors() -> Iterator[None]:
    """Turn an ApiError (or a bad config file) into `error: <message> (<code>)` and exit 1."""
    try:
        yield
    except ApiError as exc:
        fail(f"{exc.message} ({exc.code})")
    except ConfigError as exc:
        fail(str(exc))


def all_pages(fetch: Callable[[str | None], JSON]) -> list[Any]:
    """Every item of a paginated listing."""
    items: list[Any] = []
    cursor: str | None = None
    seen: set[str] = set()
    while True:
        page = fetch(cursor)
        items.extend(page.get("items", []))
        cursor = page.get("next_cursor")
        if not cursor or cursor in seen:
            return items
        seen.add(cursor)


@app.callback()
def main() -> None:
    """Legato: run services on Docker behind HAProxy."""


@app.command()
def server(
    data_dir: Annotated[Path | None, typer.Option(help="LEGATO_DATA_DIR")] = None,
    api_host: Annotated[str | None, typer.Option(help="LEGATO_API_HOST")] = None,
    api_port: Annotated[int | None, typer.Option(help="LEGATO_API_PORT")] = None,
    edge_host: Annotated[str | None, typer.Option(help="LEGATO_EDGE_HOST")] = None,
    edge_http_port: Annotated[int | None, typer.Option(help="LEGATO_EDGE_HTTP_PORT")] = None,
    edge_https_port: Annotated[int | None, typer.Option(help="LEGATO_EDGE_HTTPS_PORT")] = None,
    database_url: Annotated[str | None, typer.Option(help="LEGATO_DATABASE_URL")] = None,
    instance: Annotated[str | None, typer.Option(help="LEGATO_INSTANCE")] = None,
) -> None:
    """Run the API, the reconciler and the edge manager (flags override LEGATO_* variables)."""
    from legato.config import Settings
    from legato.server import run

    given: dict[str, Any] = {
        "data_dir": data_dir, "api_host": api_host, "api_port": api_port,
        "edge_host": edge_host, "edge_http_port": edge_http_port,
        "edge_https_port": edge_https_port, "database_url": database_url, "instance": instance,
    }
    run(Settings(**{k: v for k, v in given.items() if v is not None}))


# session ----------------------------------------------------------------------------------


@app.command()
def login(
    url: UrlOpt = None, token: TokenOpt = None, as_json: JsonOpt = False,
    email: Annotated[str | None, typer.Option(
        "--email", help="Log in as a user (asks for the password): a 7-day session")] = None,
) -> None:
    """Check a URL and token (or log in with an email and password), then save them to the
    config file (0600)."""
    with api_errors():
        settings = load_settings()
        if email is not None:
            password = typer.prompt("Password", hide_input=True)
            # The login route needs no token (any given one is ignored there).
            token = str(make_client(url or settings.url, token).log_in(email, password)["token"])
        token = token or typer.prompt("Token", hide_input=True)
        client = make_client(url or settings.url, token)
        client.whoami()
        write_config(settings.config_path, client.url, token)
    if as_json:
        print_json({"url": client.url, "config_path": str(settings.config_path)})
    else:
        typer.echo(f"logged in to {client.url}; saved {settings.config_path}")


# services ---------------------------------------------------------------------------------


def read_services(path: Path) -> list[dict[str, Any]]:
    """The services of a YAML or JSON file: a top-level `services:` list or one service mapping."""
    try:
        text = sys.stdin.read() if str(path) == "-" else path.read_text()
        data = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (OSError, ValueError, yaml.YAMLError) as exc:
        fail(f"cannot read {path}: {exc}")
    if isinstance(data, dict) and "services" in data:
        data = data["services"]
    elif isinstance(data, dict):
        data = [data]
    if not isinstance(data, list) or not data or not all(isinstance(s, dict) for s in data):
        fail(f"{path}: expected a top-level `services:` list of mappings, or one service mapping")
    return data


def print_deploy_errors(errors: Any) -> None:
    """One stderr line per service that was not deployed."""
    for err in errors if isinstance(errors, list) else []:
        if not isinstance(err, dict):
            continue
        who = err.get("name") or err.get("field") or f"#{err.get('index', '?')}"
        code = f" ({err['code']})" if err.get("code") else ""
        error(f"error: {who}: {err.get('error') or err.get('message')}{code}")


SupersedeOpt = Annotated[bool, typer.Option(
    "--supersede", help="Cancel a deployment in flight instead of failing with 409")]
WaitOpt = Annotated[bool, typer.Option("--wait", help="Follow the deployment to its end; exit 1 "
                                                      "unless it succeeds")]
FINISHED = ("successful", "failed", "cancelled", "rolled_back")


def parse_env(pairs: list[str] | None) -> dict[str, str] | None:
    """KEY=VALUE options as a mapping."""
    if not pairs:
        return None
    env = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            fail(f"--env takes KEY=VALUE, got {pair!r}")
        env[key] = value
    return env


def follow_deployment(client: Client, deployment_id: str, timeout_s: float = 900) -> JSON:
    """Print each step as the deployment reaches it; its final state (exit 1 unless successful)."""
    seen: set[str] = set()
    deadline = time.monotonic() + timeout_s
    while True:
        deployment = client.get_deployment(deployment_id)
        for step in deployment.get("steps", []):
            if step["name"] not in seen:
                seen.add(step["name"])
                typer.echo(f"  {when(step.get('started_at'))}  {step['name']}")
        if deployment["status"] in FINISHED:
            break
        if time.monotonic() > deadline:
            fail(f"deployment #{deployment['number']} still {deployment['status']} after "
                 f"{timeout_s:g}s")
        time.sleep(0.5)
    outcome = f"deployment #{deployment['number']} {deployment['status']}"
    if deployment.get("error"):
        outcome += f": {deployment['error']}"
    typer.echo(outcome)
    if deployment["status"] != "successful":
        raise typer.Exit(1)
    return deployment


@app.command()
def deploy(
    name: Annotated[str | None, typer.Argument(help="Service to redeploy (instead of -f)")] = None,
    file: Annotated[Path | None, typer.Option("--file", "-f",
                                              help="YAML or JSON file (- for stdin)")] = None,
    image: Annotated[str | None, typer.Option("--image", help="With NAME: the new image")] = None,
    env: Annotated[list[str] | None, typer.Option("--env", help="With NAME: KEY=VALUE, the "
                                                   "whole new environment (repeatable)")] = None,
    supersede: SupersedeOpt = False,
    wait: WaitOpt = False,
    url: UrlOpt = None, token: TokenOpt = None, as_json: JsonOpt = False,
) -> None:
    """Create or update the services of a file (-f), or deploy one service anew (NAME, with
    --image or --env; with neither, every replica is replaced). Exit 1 if any fails."""
    if (name is None) == (file is None):
        fail("give either a file (-f app.yaml) or a service NAME")
    if file is None and name is not None:
        with api_errors():
            client = make_client(url, token)
            result = client.redeploy(name, image=image, env=parse_env(env), supersede=supersede)
            if as_json and not wait:
                print_json(result)
                return
            typer.echo(f"{result['message']} ({result['deployment_id']})")
            if wait:
                follow_deployment(client, result["deployment_id"])
        return
    if image or env:
        fail("--image and --env go with a service NAME, not with -f")
    assert file is not None
    services = read_services(file)
    with api_errors():
        client = make_client(url, token)
        try:
            result = client.deploy(services, supersede=supersede)
        except ApiError as exc:
            if isinstance(exc.details, dict):
                print_deploy_errors(exc.details.get("errors"))
            raise
        if as_json:
            print_json(result)
        else:
            for item in result.get("deployments", []):
                if item.get("changed", True):
                    typer.echo(f"deployed {item['name']} "
                               f"(deployment {item.get('deployment_id') or '-'})")
                else:
                    typer.echo(f"unchanged {item['name']}")
            print_deploy_errors(result.get("errors"))
        if wait:
            for item in result.get("deployments", []):
                if item.get("changed") and item.get("deployment_id"):
                    typer.echo(f"{item['name']}:")
                    follow_deployment(client, item["deployment_id"])
    if result.get("errors"):
        raise typer.Exit(1)


@app.command()
def ps(
    project: Annotated[str | None, typer.Option("--project", "-p", help="Only this project")] = None,
    environment: Annotated[str | None, typer.Option("--environment", help="Only this environment")] = None,
    status: Annotated[str | None, typer.Option("--status", help="Only services in this status")] = None,
    url: UrlOpt = None, token: TokenOpt = None, as_json: JsonOpt = False,
) -> None:
    """List services: name, project, status, healthy/desired replicas, image, domain."""
    with api_errors():
        client = make_client(url, token)
        items = all_pages(lambda cursor: client.list_services(
            project=project, environment=environment, status=status, limit=100, cursor=cursor))
    if as_json:
        print_json({"items": items, "next_cursor": None})
        return
    print_table(
        ["NAME", "PROJECT", "STATUS", "REPLICAS", "IMAGE", "DOMAIN"],
        [[s["name"], s.get("project"), s.get("status"),
          f"{s['replicas']['healthy']}/{s['replicas']['desired']}", s.get("image"),
          (s.get("domains") or [None])[0]] for s in items],
    )


@app.command()
def status(name: NameArg, url: UrlOpt = None, token: TokenOpt = None, as_json: JsonOpt = False) -> None:
    """A service's status, replicas, deployment and containers."""
    with api_errors():
        service = make_client(url, token).get_service(name)
    if as_json:
        print_json(service)
        return
    replicas = service.get("replicas", {})
    deployment = service.get("deployment") or {}
    fields: list[tuple[str, Any]] = [
        ("name", service.get("name")), ("project", service.get("project")),
        ("environment", service.get("environment")), ("status", service.get("status")),
        ("image", service.get("image")),
        ("replicas", f"{replicas.get('healthy', 0)}/{replicas.get('desired', 0)} healthy, "
                     f"{replicas.get('current', 0)} running"),
        ("domains", ", ".join(service.get("domains") or []) or "-"),
        ("port", service.get("port")),
        ("deployment", f"#{deployment['number']} {deployment['id']} ({deployment['status']}, "
                       f"{when(deployment.get('created_at'))})" if deployment else None),
    ]
    if deployment.get("error"):
        fields.append(("error", deployment["error"]))
    fields += [("created", when(service.get("created_at"))), ("updated", when(service.get("updated_at")))]
    for key, value in fields:
        typer.echo(f"{key + ':':<13}{'-' if value is None else value}")
    containers = service.get("containers") or []
    if containers:
        typer.echo("")
        print_table(
            ["ID", "NAME", "STATUS", "HEALTH", "PORT", "SLOT", "STARTED"],
            [[c.get("id"), c.get("name"), c.get("status"), c.get("health"), c.get("port"),
              c.get("slot"), when(c.get("started_at"))] for c in containers],
        )


@app.command()
def scale(
    name: NameArg,
    replicas: Annotated[int, typer.Argument(help="Replica count")],
    url: UrlOpt = None, token: TokenOpt = None, as_json: JsonOpt = False,
) -> None:
    """Set a service's replica count."""
    with api_errors():
        result = make_client(url, token).scale(name, replicas)
    if as_json:
        print_json(result)
    else:
        typer.echo(result.get("message", f"scaling {name}"))


def _lifecycle(action: str, name: str, url: str | None, token: str | None, as_json: bool,
               **options: Any) -> None:
    """Start, stop or restart, and say so."""
    with api_errors():
        client = make_client(url, token)
        result: JSON = getattr(client, action)(name, **options)
    if as_json:
        print_json(result)
        return
    extra = f" (deployment {result['deployment_id']})" if result.get("deployment_id") else ""
    typer.echo(f"{result.get('message', action)} {name}{extra}")


@app.command()
def restart(
    name: NameArg, supersede: SupersedeOpt = False,
    url: UrlOpt = None, token: TokenOpt = None, as_json: JsonOpt = False,
) -> None:
    """Rolling restart of a service: every replica replaced, as its deploy strategy says."""
    _lifecycle("restart", name, url, token, as_json, supersede=supersede)


@app.command()
def stop(name: NameArg, url: UrlOpt = None, token: TokenOpt = None, as_json: JsonOpt = False) -> None:
    """Stop every replica of a service (it stays defined)."""
    _lifecycle("stop", name, url, token, as_json)


@app.command()
def start(name: NameArg, url: UrlOpt = None, token: TokenOpt = None, as_json: JsonOpt = False) -> None:
    """Start a stopped service."""
    _lifecycle("start", name, url, token, as_json)


@app.command()
def rm(
    name: NameArg,
    keep_data: Annotated[bool, typer.Option("--keep-data", help="Keep the service's volumes")] = False,
    url: UrlOpt = None, token: TokenOpt = None, as_json: JsonOpt = False,
) -> None:
    """Remove a service, its containers, its route and (unless --keep-data) its volumes."""
    with api_errors():
        result = make_client(url, token).remove(name, keep_data=keep_data)
    if as_json:
        print_json(result)
        return
    kept = "; volumes kept" if result.get("keep_data") else ""
    typer.echo(f"removing {name} ({result.get('containers_removed', 0)} containers{kept})")


@app.command()
def logs(
    name: NameArg,
    follow: Annotated[bool, typer.Option("--follow", "-f", help="Stream new lines")] = False,
    tail: Annotated[int, typer.Option("--tail", help="Lines from the end")] = 100,
    since: Annotated[str | None, typer.Option("--since", help="30s, 10m, 2h, 1d or ISO time")] = None,
    replica: Annotated[str | None, typer.Option("--replica", help="Only this replica")] = None,
    url: UrlOpt = None, token: TokenOpt = None, as_json: JsonOpt = False,
) -> None:
    """A service's merged logs; -f follows them until interrupted."""
    fmt: Any = "json" if as_json else "text"
    with api_errors():
        client = make_client(url, token)
        if follow:
            try:
                for line in client.follow_logs(name, tail=tail, since=since, replica=replica, format=fmt):
                    typer.echo(line)
            except KeyboardInterrupt:
                raise typer.Exit(130) from None
            return
        result = client.logs(name, tail=tail, since=since, replica=replica, format=fmt)
    if isinstance(result, dict):
        print_json(result)
    else:
        typer.echo(result, nl=False)


@app.command()
def deployments(
    name: NameArg,
    limit: Annotated[int | None, typer.Option("--limit", help="At most this many (max 100)")] = None,
    url: UrlOpt = None, token: TokenOpt = None, as_json: JsonOpt = False,
) -> None:
    """A service's deployments, newest first."""
    with api_errors():
        result = make_client(url, token).deployments(name, limit=limit)
    if as_json:
        print_json(result)
        return
    print_table(
        ["NUMBER", "ID", "STATUS", "STEP", "STRATEGY", "IMAGE", "REASON", "ACTOR", "CREATED",
         "ERROR"],
        [[f"#{d.get('number')}", d.get("id"), d.get("status"), d.get("step"), d.get("strategy"),
          d.get("image"), d.get("reason"), d.get("actor"), when(d.get("created_at")),
          d.get("error")] for d in result.get("items", [])],
    )


@app.command()
def deployment(
    deployment_id: Annotated[str, typer.Argument(help="Deployment id (dpl_...)")],
    show_logs: Annotated[bool, typer.Option("--logs", help="Also print its log, by step")] = False,
    url: UrlOpt = None, token: TokenOpt = None, as_json: JsonOpt = False,
) -> None:
    """One deployment: status, image, steps with their times, and (--logs) what each step did."""
    with api_errors():
        client = make_client(url, token)
        found = client.get_deployment(deployment_id)
        logs = client.deployment_logs(deployment_id) if show_logs else None
    if as_json:
        print_json({**found, "logs": logs} if logs is not None else found)
        return
    for key, value in (
        ("deployment", f"#{found['number']} {found['id']} of {found['service']}"),
        ("status", found["status"]), ("strategy", found.get("strategy")),
        ("image", f"{found['image']} ({(found.get('image_id') or '-')[:19]})"),
        ("reason", found.get("reason")), ("actor", found.get("actor")),
        ("created", when(found.get("created_at"))), ("error", found.get("error")),
    ):
        typer.echo(f"{key + ':':<12}{'-' if value is None else value}")
    typer.echo("")
    print_table(["STEP", "STARTED", "FINISHED"],
                [[step["name"], when(step.get("started_at")), when(step.get("finished_at"))]
                 for step in found.get("steps", [])])
    if logs is not None:
        typer.echo("")
        for step in logs.get("steps", []):
            for line in step.get("logs", []):
                typer.echo(f"{when(line['at'])}  [{step['name']}] {line['message']}")


@app.command()
def promote(
    name: NameArg, wait: WaitOpt = False,
    url: UrlOpt = None, token: TokenOpt = None, as_json: JsonOpt = False,
) -> None:
    """Promote a service's canary deployment: roll out the rest."""
    with api_errors():
        client = make_client(url, token)
        result = client.promote(name)
        _accepted(client, result, as_json, wait)


@app.command()
def rollback(
    name: NameArg,
    to: Annotated[int | None, typer.Option("--to", help="Deployment number to go back to "
                                                        "(default: the last successful one)")] = None,
    supersede: SupersedeOpt = False, wait: WaitOpt = False,
    url: UrlOpt = None, token: TokenOpt = None, as_json: JsonOpt = False,
) -> None:
    """Roll a service back: a new deployment with an earlier spec and image, nothing rebuilt."""
    with api_errors():
        client = make_client(url, token)
        result = client.rollback(name, to=to, supersede=supersede)
        _accepted(client, result, as_json, wait)


@app.command()
def abort(
    name: NameArg, url: UrlOpt = None, token: TokenOpt = None, as_json: JsonOpt = False,
) -> None:
    """Fail the deployment in flight of a service and restore the last successful version."""
    with api_errors():
        client = make_client(url, token)
        current = client.get_service(name).get("deployment") or {}
        if current.get("status") not in ("pending", "running", "awaiting_promotion"):
            fail(f"{name} has no deployment in flight")
        result = client.fail_deployment(current["id"])
        _accepted(client, result, as_json, wait=False)


def _accepted(client: Client, result: JSON, as_json: bool, wait: bool) -> None:
    if as_json and not wait:
        print_json(result)
        return
    typer.echo(f"{result['message']} ({result['deployment_id']})")
    if wait:
        follow_deployment(client, result["deployment_id"])


@app.command()
def events(
    name: NameArg,
    type: Annotated[str | None, typer.Option("--type", help="Only events of this type")] = None,
    since: Annotated[str | None, typer.Option("--since", help="30s, 10m, 2h, 1d or ISO time")] = None,
    limit: Annotated[int | None, typer.Option("--limit", help="At most this many (max 100)")] = None,
    follow: Annotated[bool, typer.Option("-f", "--follow", help="Stream new events")] = False,
    url: UrlOpt = None, token: TokenOpt = None, as_json: JsonOpt = False,
) -> None:
    """What happened to a service, newest first; with -f, each new event as it happens."""
    with api_errors():
        client = make_client(url, token)
        if follow:
            for event in client.follow_events(service=name, type=type):
                if as_json:
                    typer.echo(json.dumps(event))
                else:
                    typer.echo(f"{when(event.get('timestamp'))}  {event.get('type'):<9} "
                               f"{event.get('message')}")
            return
        result = client.events(name, type=type, since=since, limit=limit)
    if as_json:
        print_json(result)
        return
    print_table(["TIME", "TYPE", "MESSAGE"],
                [[when(e.get("timestamp")), e.get("type"), e.get("message")]
                 for e in result.get("items", [])])


# monitoring and sizing --------------------------------------------------------------------


def _size(value: Any) -> str:
    """Bytes as KiB/MiB/GiB."""
    if value is None:
        return "-"
    amount = float(value)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if amount < 1024 or unit == "GiB":
            return f"{amount:.0f}{unit}" if unit == "B" else f"{amount:.1f}{unit}"
        amount /= 1024
    return f"{amount:.1f}GiB"


def _num(value: Any, digits: int = 1) -> str:
    return "-" if value is None else f"{float(value):.{digits}f}"


@app.command()
def stats(name: NameArg, url: UrlOpt = None, token: TokenOpt = None, as_json: JsonOpt = False) -> None:
    """CPU, memory and network of each replica (sampled in the background)."""
    with api_errors():
        result = make_client(url, token).stats(name)
    if as_json:
        print_json(result)
        return
    rows = [[r.get("name"), _num(r.get("cpu_percent")), _size(r.get("memory_used_bytes")),
             _num(r.get("memory_percent")), _size(r.get("network_rx_bytes")),
             _size(r.get("network_tx_bytes"))] for r in result.get("replicas", [])]
    total = result.get("total", {})
    rows.append(["total", _num(total.get("cpu_percent")), _size(total.get("memory_used_bytes")), "",
                 _size(total.get("network_rx_bytes")), _size(total.get("network_tx_bytes"))])
    print_table(["REPLICA", "CPU%", "MEMORY", "MEM%", "NET RX", "NET TX"], rows)


@app.command()
def metrics(
    name: NameArg,
    history: Annotated[int, typer.Option("--history", help="Points of history")] = 10,
    interval: Annotated[str, typer.Option("--interval", help="1m, 5m, 1h or 1d")] = "5m",
    follow: Annotated[bool, typer.Option("-f", "--follow", help="Stream the figures")] = False,
    url: UrlOpt = None, token: TokenOpt = None, as_json: JsonOpt = False,
) -> None:
    """Requests, latency, CPU and memory of a service: now and over time."""
    columns = ["TIME", "RPS", "ERR%", "P50MS", "P95MS", "P99MS", "CPU%", "MEM%", "HEALTHY"]

    def row(point: JSON, stamp: Any) -> list[Any]:
        return [when(stamp), _num(point.get("rps"), 2), _num(100 * (point.get("error_rate") or 0)),
                _num(point.get("latency_p50_ms")), _num(point.get("latency_p95_ms")),
                _num(point.get("latency_p99_ms")), _num(point.get("cpu_percent")),
                _num(point.get("memory_percent")),
                f"{point.get('healthy_replicas', '-')}/{point.get('total_replicas', '-')}"]

    with api_errors():
        client = make_client(url, token)
        if follow:
            for snapshot in client.follow_metrics(name):
                stamp = datetime.fromtimestamp(float(snapshot["timestamp"]), UTC).isoformat()
                typer.echo(json.dumps(snapshot) if as_json else "  ".join(
                    str(v) for v in row(snapshot, stamp)))
            return
        result = client.metrics(name, history=history, interval=interval)
    if as_json:
        print_json(result)
        return
    rows = [row(p, p.get("timestamp")) for p in result.get("history", [])]
    rows.append(row(result.get("current", {}), result.get("timestamp")))
    print_table(columns, rows)


@app.command()
def scaling(
    name: NameArg,
    mode: Annotated[str | None, typer.Option("--mode", help="manual or auto")] = None,
    min_replicas: Annotated[int | None, typer.Option("--min")] = None,
    max_replicas: Annotated[int | None, typer.Option("--max")] = None,
    target_rps: Annotated[float | None, typer.Option("--target-rps", help="Per replica")] = None,
    max_p95_ms: Annotated[float | None, typer.Option("--max-p95-ms")] = None,
    max_cpu: Annotated[float | None, typer.Option("--max-cpu", help="Percent, per replica")] = None,
    max_memory: Annotated[float | None, typer.Option("--max-memory", help="Percent")] = None,
    window: Annotated[int | None, typer.Option("--window", help="Seconds")] = None,
    cooldown: Annotated[int | None, typer.Option("--cooldown", help="Seconds")] = None,
    url: UrlOpt = None, token: TokenOpt = None, as_json: JsonOpt = False,
) -> None:
    """Show a service's scaling policy, or change the fields given."""
    changes = {"mode": mode, "min_replicas": min_replicas, "max_replicas": max_replicas,
               "target_rps_per_replica": target_rps, "max_p95_latency_ms": max_p95_ms,
               "max_cpu_percent": max_cpu, "max_memory_percent": max_memory,
               "window_seconds": window, "cooldown_seconds": cooldown}
    with api_errors():
        client = make_client(url, token)
        if any(v is not None for v in changes.values()):
            updated = client.set_scaling(name, **changes)
            if as_json:
                print_json(updated)
                return
            typer.echo(f"{updated.get('message')}; {updated.get('replicas')} replica(s)")
        result = client.scaling(name)
    if as_json:
        print_json(result)
        return
    typer.echo(f"{'mode:':<13}{result.get('mode')} ({result.get('replicas')} replica(s)"
               + (", asleep" if result.get("sleeping") else "") + ")")
    for key, value in (result.get("policy") or {}).items():
        typer.echo(f"{key + ':':<26}{'-' if value is None else value}")
    typer.echo(f"{'idle_timeout_s:':<26}{(result.get('sleep') or {}).get('idle_timeout_s')}")
    last = result.get("last_scaling_event")
    if last:
        typer.echo(f"last: {when(last.get('timestamp'))} {last.get('action')}: {last.get('reason')}")


@app.command("sleep")
def sleep_(name: NameArg, url: UrlOpt = None, token: TokenOpt = None, as_json: JsonOpt = False) -> None:
    """Scale a service to zero now; the next request through the edge wakes it."""
    with api_errors():
        result = make_client(url, token).sleep(name)
    if as_json:
        print_json(result)
    else:
        typer.echo(f"{name}: {result.get('message')}")


@app.command()
def wake(name: NameArg, url: UrlOpt = None, token: TokenOpt = None, as_json: JsonOpt = False) -> None:
    """Start a sleeping service's replicas again."""
    with api_errors():
        result = make_client(url, token).wake(name)
    if as_json:
        print_json(result)
    else:
        typer.echo(f"{name}: {result.get('message')}")


@app.command()
def system(url: UrlOpt = None, token: TokenOpt = None, as_json: JsonOpt = False) -> None:
    """The control plane's components, the host's figures and a summary of what runs."""
    with api_errors():
        client = make_client(url, token)
        health, figures, summary = client.system_health(), client.system_metrics(), client.dashboard()
    if as_json:
        print_json({"health": health, "metrics": figures, "summary": summary})
        return
    typer.echo(f"status: {health.get('status')} (up {_num(health.get('uptime_seconds'), 0)} s, "
               f"version {health.get('version')})")
    print_table(["COMPONENT", "STATUS", "MS", "ERROR"],
                [[k, c.get("status"), _num(c.get("response_time_ms"), 2), c.get("error")]
                 for k, c in (health.get("components") or {}).items()])
    host = figures.get("system") or {}
    typer.echo(f"host: cpu {_num(host.get('cpu_percent'))}%, memory "
               f"{_num(host.get('memory_used_gb'), 2)}/{_num(host.get('memory_total_gb'), 2)} GB, "
               f"disk {_num(host.get('disk_used_gb'), 1)}/{_num(host.get('disk_total_gb'), 1)} GB, "
               f"containers {host.get('containers_running')}/{host.get('containers_total')}")
    replicas = summary.get("replicas") or {}
    typer.echo(f"services: {summary.get('services')} in {summary.get('projects')} project(s); "
               f"replicas {replicas.get('healthy')}/{replicas.get('desired')} healthy; "
               f"deployments today {summary.get('deployments_today')} "
               f"({summary.get('failed_deployments_today')} failed)")


# tokens -----------------------------------------------------------------------------------


@tokens_app.command("create")
def tokens_create(
    name: Annotated[str, typer.Option("--name", help="What the token is for")],
    role: Annotated[Role | None, typer.Option(
        "--role", help="viewer, deployer or admin (default: your own; never above it)")] = None,
    expires_in_days: Annotated[int | None, typer.Option(
        "--expires-in-days", help="30, 90, 180 or 365 (default: never)")] = None,
    projects: Annotated[list[str] | None, typer.Option(
        "--project", help="Limit to this project (repeatable)")] = None,
    url: UrlOpt = None, token: TokenOpt = None, as_json: JsonOpt = False,
) -> None:
    """Create a token; it is printed this once and never again."""
    with api_errors():
        created = make_client(url, token).create_token(
            name, role.value if role else None, expires_in_days=expires_in_days,
            projects=projects or ())
    if as_json:
        print_json(created)
    else:
        scope = ", projects " + ",".join(created["projects"]) if created.get("projects") else ""
        expires = f", expires {when(created['expires_at'])}" if created.get("expires_at") else ""
        error(f"created token {created['id']} ({created['name']}, role {created['role']}{scope}{expires})")
        typer.echo(created["token"])
    error("warning: the token is shown once and cannot be retrieved again; store it now")


def _token_state(item: JSON) -> str:
    """active, expired or revoked."""
    if item.get("revoked_at"):
        return "revoked"
    expires = item.get("expires_at")
    if expires and datetime.fromisoformat(str(expires).replace("Z", "+00:00")) <= datetime.now(UTC):
        return "expired"
    return "active"


@tokens_app.command("ls")
def tokens_ls(
    url: UrlOpt = None, token: TokenOpt = None, as_json: JsonOpt = False,
    all_tokens: Annotated[bool, typer.Option("--all", help="Every token (unscoped admins)")] = False,
) -> None:
    """Your tokens' ids, prefixes, roles and states (never the tokens themselves)."""
    with api_errors():
        result = make_client(url, token).list_tokens(all_tokens)
    if as_json:
        print_json(result)
        return
    print_table(
        ["ID", "NAME", "PREFIX", "ROLE", "PROJECTS", "STATE", "CREATED", "EXPIRES", "LAST USED"],
        [[t.get("id"), t.get("name"), t.get("prefix"), t.get("role"), t.get("projects") or "*",
          _token_state(t), when(t.get("created_at")), when(t.get("expires_at")),
          when(t.get("last_used_at"))] for t in result.get("items", [])],
    )


@tokens_app.command("revoke")
def tokens_revoke(
    token_id: Annotated[str, typer.Argument(metavar="ID", help="Token id")],
    url: UrlOpt = None, token: TokenOpt = None, as_json: JsonOpt = False,
) -> None:
    """Revoke a token; it is refused from now on."""
    with api_errors():
        result = make_client(url, token).revoke_token(token_id)
    if as_json:
        print_json(result)
    else:
        typer.echo(f"revoked token {result.get('id', token_id)} ({result.get('name', '-')})")


# projects, configuration, keys, webhooks -----------------------------------------------------

ProjectArg = Annotated[str, typer.Argument(metavar="PROJECT", help="Project name")]
EnvironmentOpt = Annotated[str | None, typer.Option(
    "--environment", "-e", help="An environment of the project (default: project level)")]


@projects_app.command("ls")
def projects_ls(url: UrlOpt = None, token: TokenOpt = None, as_json: JsonOpt = False) -> None:
    """Every project with its repository."""
    with api_errors():
        result = make_client(url, token).list_projects()
    if as_json:
        print_json(result)
        return
    print_table(["NAME", "REPOSITORY", "AUTO-DEPLOY", "CREATED"],
                [[p["name"], p.get("repository"), p.get("auto_deploy"), when(p.get("created_at"))]
                 for p in result.get("items", [])])


@projects_app.command("create")
def projects_create(
    name: ProjectArg,
    repository: Annotated[str | None, typer.Option("--repository", help="Git URL")] = None,
    branch: Annotated[str | None, typer.Option("--branch", help="production's branch")] = None,
    url: UrlOpt = None, token: TokenOpt = None, as_json: JsonOpt = False,
) -> None:
    """Create a project (with its production environment)."""
    with api_errors():
        result = make_client(url, token).create_project(name, repository, branch)
    print_json(result) if as_json else typer.echo(f"created project {result['name']}")


@projects_app.command("rm")
def projects_rm(
    name: ProjectArg,
    force: Annotated[bool, typer.Option("--force", help="Also remove its services")] = False,
    url: UrlOpt = None, token: TokenOpt = None, as_json: JsonOpt = False,
) -> None:
    """Delete a project; with services only with --force."""
    with api_errors():
        result = make_client(url, token).delete_project(name, force=force)
    if as_json:
        print_json(result)
    else:
        removed = ", ".join(result.get("services_removed") or []) or "none"
        typer.echo(f"deleted project {name} (services removed: {removed})")


@env_app.command("ls")
def env_ls(project: ProjectArg, environment: EnvironmentOpt = None, url: UrlOpt = None,
           token: TokenOpt = None, as_json: JsonOpt = False) -> None:
    """The variables, decrypted."""
    with api_errors():
        result = make_client(url, token).env_vars(project, environment)
    if as_json:
        print_json(result)
        return
    print_table(["KEY", "VALUE"], [[k, v] for k, v in sorted(result.get("env", {}).items())])


@env_app.command("set")
def env_set(
    project: ProjectArg,
    pairs: Annotated[list[str], typer.Argument(metavar="KEY=VALUE...")],
    environment: EnvironmentOpt = None, url: UrlOpt = None, token: TokenOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Set variables; services get them with their next deployment."""
    values: dict[str, str | None] = dict(parse_env(pairs) or {})
    with api_errors():
        result = make_client(url, token).set_env_vars(project, values, environment)
    print_json(result) if as_json else typer.echo(result["message"])


@env_app.command("unset")
def env_unset(
    project: ProjectArg,
    keys: Annotated[list[str], typer.Argument(metavar="KEY...")],
    environment: EnvironmentOpt = None, url: UrlOpt = None, token: TokenOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Remove variables."""
    with api_errors():
        result = make_client(url, token).set_env_vars(project, dict.fromkeys(keys), environment)
    print_json(result) if as_json else typer.echo(result["message"])


@secrets_app.command("ls")
def secrets_ls(project: ProjectArg, url: UrlOpt = None, token: TokenOpt = None,
               as_json: JsonOpt = False) -> None:
    """Secret names and when each was set (values are never shown)."""
    with api_errors():
        result = make_client(url, token).list_secrets(project)
    if as_json:
        print_json(result)
        return
    print_table(["KEY", "REFERENCE", "UPDATED"],
                [[s["key"], s["reference"], when(s["updated_at"])] for s in result])


@secrets_app.command("set")
def secrets_set(
    project: ProjectArg,
    key: Annotated[str, typer.Argument(metavar="KEY")],
    value: Annotated[str, typer.Option("--value", prompt=True, hide_input=True,
                                       help="The value (prompted, hidden, if not given)")],
    url: UrlOpt = None, token: TokenOpt = None, as_json: JsonOpt = False,
) -> None:
    """Set a secret; reference it in a spec as ${secrets.KEY}."""
    with api_errors():
        result = make_client(url, token).set_secret(project, key, value)
    print_json(result) if as_json else typer.echo(f"set {result['reference']}")


@secrets_app.command("rm")
def secrets_rm(project: ProjectArg, key: Annotated[str, typer.Argument(metavar="KEY")],
               url: UrlOpt = None, token: TokenOpt = None) -> None:
    """Delete a secret."""
    with api_errors():
        make_client(url, token).delete_secret(project, key)
    typer.echo(f"deleted secret {key}")


@keys_app.command("rotate")
def keys_rotate(url: UrlOpt = None, token: TokenOpt = None, as_json: JsonOpt = False) -> None:
    """Make a new data key and re-encrypt every stored value under it."""
    with api_errors():
        result = make_client(url, token).rotate_keys()
    if as_json:
        print_json(result)
    else:
        counts = ", ".join(f"{n} {what}" for what, n in result["reencrypted"].items())
        typer.echo(f"active key {result['key_id']}; re-encrypted {counts}; "
                   f"retired {', '.join(result['retired']) or 'none'}")


@webhooks_app.command("ls")
def webhooks_ls(project: Annotated[str | None, typer.Option("--project")] = None,
                url: UrlOpt = None, token: TokenOpt = None, as_json: JsonOpt = False) -> None:
    """Registered webhooks and their last delivery."""
    with api_errors():
        result = make_client(url, token).list_webhooks(project)
    if as_json:
        print_json(result)
        return
    print_table(["ID", "PROJECT", "PROVIDER", "URL", "LAST DELIVERY"],
                [[h["id"], h["project"], h["provider"], h["url"],
                  (h.get("last_delivery") or {}).get("result")] for h in result])


@webhooks_app.command("add")
def webhooks_add(
    project: ProjectArg,
    provider: Annotated[str, typer.Option("--provider", help="github, gitea or gitlab")],
    secret: Annotated[str | None, typer.Option("--secret", help="default: a random one")] = None,
    url: UrlOpt = None, token: TokenOpt = None, as_json: JsonOpt = False,
) -> None:
    """Register a webhook; prints its secret this once."""
    with api_errors():
        result = make_client(url, token).create_webhook(project, provider, secret)
    if as_json:
        print_json(result)
        return
    error(f"webhook {result['id']}: point {provider} at <legato URL>{result['url']} "
          "(content type application/json) with this secret:")
    typer.echo(result["secret"])


@webhooks_app.command("rm")
def webhooks_rm(webhook_id: Annotated[str, typer.Argument(metavar="ID")], url: UrlOpt = None,
                token: TokenOpt = None) -> None:
    """Remove a webhook."""
    with api_errors():
        make_client(url, token).delete_webhook(webhook_id)
    typer.echo(f"deleted webhook {webhook_id}")


# outbound webhooks ------------------------------------------------------------------------

hooks_app = typer.Typer(help="Outbound webhooks: endpoints that receive Legato's events, "
                             "signed, and their delivery log.", no_args_is_help=True)
app.add_typer(hooks_app, name="hooks")
EndpointArg = Annotated[str, typer.Argument(metavar="ENDPOINT", help="Endpoint id (whe_...)")]
DeliveryArg = Annotated[str, typer.Argument(metavar="DELIVERY", help="Delivery id (whd_...)")]


@hooks_app.command("ls")
def hooks_ls(url: UrlOpt = None, token: TokenOpt = None, as_json: JsonOpt = False) -> None:
    """Outbound webhook endpoints (never their secrets)."""
    with api_errors():
        client = make_client(url, token)
        items = all_pages(lambda cursor: client.list_webhook_endpoints(limit=100, cursor=cursor))
    if as_json:
        print_json(items)
        return
    print_table(["ID", "URL", "EVENTS", "PROJECT", "ACTIVE", "DESCRIPTION"],
                [[h["id"], h["url"], h["events"], h.get("project"),
                  "yes" if h["active"] else "no", h.get("description")] for h in items])


@hooks_app.command("create")
def hooks_create(
    endpoint_url: Annotated[str, typer.Argument(metavar="URL", help="http(s) URL to POST to")],
    events: Annotated[list[str] | None, typer.Option(
        "--event", "-e", help="An event type to send (repeatable; default: every type)")] = None,
    project: Annotated[str | None, typer.Option("--project", help="Only this project's "
                                                                  "events")] = None,
    description: Annotated[str | None, typer.Option("--description")] = None,
    inactive: Annotated[bool, typer.Option("--inactive", help="Create it paused")] = False,
    url: UrlOpt = None, token: TokenOpt = None, as_json: JsonOpt = False,
) -> None:
    """Subscribe a URL to events; prints its signing secret this once."""
    with api_errors():
        result = make_client(url, token).create_webhook_endpoint(
            endpoint_url, events or ["*"], project=project, description=description,
            active=not inactive)
    if as_json:
        print_json(result)
        return
    error(f"endpoint {result['id']}: {', '.join(result['events'])} -> {result['url']}; "
          "verify Legato-Signature with this secret:")
    typer.echo(result["secret"])


@hooks_app.command("rm")
def hooks_rm(endpoint_id: EndpointArg, url: UrlOpt = None, token: TokenOpt = None) -> None:
    """Remove an endpoint and its delivery log."""
    with api_errors():
        make_client(url, token).delete_webhook_endpoint(endpoint_id)
    typer.echo(f"deleted webhook endpoint {endpoint_id}")


@hooks_app.command("ping")
def hooks_ping(endpoint_id: EndpointArg, url: UrlOpt = None, token: TokenOpt = None,
               as_json: JsonOpt = False) -> None:
    """Send a ping event to an endpoint now."""
    with api_errors():
        result = make_client(url, token).ping_webhook_endpoint(endpoint_id)
    print_json(result) if as_json else typer.echo(f"ping queued as delivery {result['id']}")


@hooks_app.command("deliveries")
def hooks_deliveries(
    endpoint_id: EndpointArg,
    delivery_id: Annotated[str | None, typer.Argument(
        metavar="[DELIVERY]", help="Show this delivery's attempts")] = None,
    status: Annotated[str | None, typer.Option("--status",
                                               help="pending, succeeded or failed")] = None,
    limit: Annotated[int, typer.Option("--limit", min=1, max=100)] = 20,
    url: UrlOpt = None, token: TokenOpt = None, as_json: JsonOpt = False,
) -> None:
    """An endpoint's deliveries, newest first; or one delivery with every attempt."""
    if delivery_id is not None:
        with api_errors():
            detail = make_client(url, token).get_webhook_delivery(endpoint_id, delivery_id)
        if as_json:
            print_json(detail)
            return
        typer.echo(f"{detail['id']}  {detail['event_type']}  {detail['status']}"
                   + (f"  (redelivery of {detail['redelivery_of']})"
                      if detail.get("redelivery_of") else ""))
        print_table(["#", "AT", "STATUS", "MS", "ERROR"],
                    [[a["number"], when(a["at"]), a.get("status_code"),
                      f"{a['duration_ms']:.0f}", a.get("error")] for a in detail["attempt_log"]])
        return
    with api_errors():
        page = make_client(url, token).list_webhook_deliveries(endpoint_id, status=status,
                                                               limit=limit)
    if as_json:
        print_json(page)
        return
    print_table(["ID", "EVENT", "STATUS", "ATTEMPTS", "CODE", "CREATED", "NEXT", "ERROR"],
                [[d["id"], d["event_type"], d["status"], d["attempts"], d.get("last_status_code"),
                  when(d["created_at"]),
                  when(d.get("next_attempt_at")) if d["status"] == "pending" else None,
                  d.get("last_error")] for d in page["items"]])


@hooks_app.command("redeliver")
def hooks_redeliver(endpoint_id: EndpointArg, delivery_id: DeliveryArg, url: UrlOpt = None,
                    token: TokenOpt = None, as_json: JsonOpt = False) -> None:
    """Send a delivery's payload again, as a new delivery."""
    with api_errors():
        result = make_client(url, token).redeliver_webhook(endpoint_id, delivery_id)
    print_json(result) if as_json else typer.echo(
        f"redelivering {delivery_id} as {result['id']}")


# users, activity, notifications -----------------------------------------------------------


@app.command()
def whoami(url: UrlOpt = None, token: TokenOpt = None, as_json: JsonOpt = False) -> None:
    """The token in use: its role, scope, expiry and user."""
    with api_errors():
        me = make_client(url, token).whoami()
    if as_json:
        print_json(me)
        return
    found = me["token"]
    scope = ",".join(found["projects"]) or "all projects"
    typer.echo(f"{me['actor']}: {found['kind']} {found['prefix']}… role {found['role']}, "
               f"{scope}, expires {when(found.get('expires_at'))}")


@users_app.command("ls")
def users_ls(url: UrlOpt = None, token: TokenOpt = None, as_json: JsonOpt = False) -> None:
    """Users by email."""
    with api_errors():
        result = make_client(url, token).list_users(limit=100)
    if as_json:
        print_json(result)
        return
    print_table(["ID", "EMAIL", "NAME", "ROLE", "STATE", "LAST LOGIN"],
                [[u["id"], u["email"], u["name"] or "-", u["role"],
                  "disabled" if u["disabled"] else "active", when(u.get("last_login_at"))]
                 for u in result["items"]])


@users_app.command("create")
def users_create(
    email: Annotated[str, typer.Argument(help="Their login")],
    role: Annotated[Role, typer.Option("--role", help="viewer, deployer or admin")] = Role.viewer,
    name: Annotated[str, typer.Option("--name")] = "",
    url: UrlOpt = None, token: TokenOpt = None, as_json: JsonOpt = False,
) -> None:
    """Create a user with a password made for them, printed this once."""
    with api_errors():
        user = make_client(url, token).create_user(email, role.value, name)
    if as_json:
        print_json(user)
        return
    error(f"created user {user['id']} ({user['email']}, role {user['role']}); their password:")
    typer.echo(user["password"])


@users_app.command("set")
def users_set(
    user_id: Annotated[str, typer.Argument(metavar="ID")],
    role: Annotated[Role | None, typer.Option("--role")] = None,
    disabled: Annotated[bool | None, typer.Option(
        "--disable/--enable", help="Disabling revokes every token and session")] = None,
    url: UrlOpt = None, token: TokenOpt = None, as_json: JsonOpt = False,
) -> None:
    """Change a user's role, or disable / enable them."""
    changes: dict[str, Any] = {}
    if role is not None:
        changes["role"] = role.value
    if disabled is not None:
        changes["disabled"] = disabled
    if not changes:
        fail("give --role or --disable/--enable")
    with api_errors():
        user = make_client(url, token).update_user(user_id, **changes)
    print_json(user) if as_json else typer.echo(
        f"{user['email']}: role {user['role']}, {'disabled' if user['disabled'] else 'active'}")


@users_app.command("rm")
def users_rm(user_id: Annotated[str, typer.Argument(metavar="ID")], url: UrlOpt = None,
             token: TokenOpt = None, as_json: JsonOpt = False) -> None:
    """Remove a user (their tokens and sessions are revoked)."""
    with api_errors():
        user = make_client(url, token).delete_user(user_id)
    print_json(user) if as_json else typer.echo(f"removed user {user['email']}")


@app.command()
def activity(
    project: Annotated[str | None, typer.Option("--project")] = None,
    actor: Annotated[str | None, typer.Option("--actor", help="e.g. user:ana@example.com")] = None,
    result: Annotated[str | None, typer.Option("--result", help="success or failure")] = None,
    since: Annotated[str | None, typer.Option("--since", help="10m, 2h, 1d or an ISO time")] = None,
    limit: Annotated[int, typer.Option("--limit", min=1, max=100)] = 20,
    url: UrlOpt = None, token: TokenOpt = None, as_json: JsonOpt = False,
) -> None:
    """Writes through the API, newest first: who did what, on what, and how it ended."""
    with api_errors():
        page = make_client(url, token).activity(limit=limit, project=project, actor=actor,
                                                result=result, since=since)
    if as_json:
        print_json(page)
        return
    print_table(["AT", "ACTOR", "ACTION", "TARGET", "STATUS", "REQUEST"],
                [[when(a["at"]), a["actor"], a["action"], a.get("target") or "-", a["status"],
                  a["request_id"]] for a in page["items"]])


@app.command()
def notifications(
    unread: Annotated[bool, typer.Option("--unread", help="Only those not read yet")] = False,
    read_all: Annotated[bool, typer.Option("--read-all", help="Mark them all read")] = False,
    url: UrlOpt = None, token: TokenOpt = None, as_json: JsonOpt = False,
) -> None:
    """Failed deployments, crash loops and tokens about to expire."""
    with api_errors():
        client = make_client(url, token)
        if read_all:
            marked = client.read_notification()
            print_json(marked) if as_json else typer.echo(f"marked {marked['marked']} read")
            return
        found = client.notifications(unread=unread)
    if as_json:
        print_json(found)
        return
    print_table(["ID", "AT", "KIND", "", "TITLE"],
                [[n["id"], when(n["at"]), n["kind"], " " if n["read"] else "*", n["title"]]
                 for n in found["items"]])
    typer.echo(f"{found['unread']} unread")


if __name__ == "__main__":
    app()
