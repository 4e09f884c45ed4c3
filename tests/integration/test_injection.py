"""No command runs on the host through any field that reaches git, Docker or the file system:
hostile names, branches, URLs and paths are refused with a 422 (a 404 for a path that cannot
exist) before anything runs, and free text (build argument and environment values) reaches the
container as inert data."""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest

from tests.integration.harness import GitRepo, Legato, service_spec, wait_for

PAYLOADS = (
    "; touch {s}",
    "$(touch {s})",
    "`touch {s}`",
    "| touch {s}",
    "\ntouch {s}",
    "-oProxyCommand=touch {s}",
    "--upload-pack=touch {s}",
    "ext::sh -c touch% {s}",
    "../../etc/passwd",
    "x' || touch '{s}",
    # the same without spaces, for a check that only refuses whitespace
    ";touch${{IFS}}{s}",
    "$(touch${{IFS}}{s})",
    "&&touch${{IFS}}{s}",
    "--upload-pack=touch${{IFS}}{s}",
    "ext::sh${{IFS}}-c${{IFS}}touch${{IFS}}{s}",
)
# Repository URLs that git would read as an option or a transport helper.
URL_PAYLOADS = (
    "fd::17",
    "ext::sh -c 'touch {s}'",
    "file:///tmp/x;touch${{IFS}}{s}",
    "https://127.0.0.1/$(touch${{IFS}}{s})",
    # CVE-2017-1000117: git percent-decodes the host, so ssh would get -oProxyCommand=touch ...
    "ssh://-oProxyCommand%3Dtouch%20{q}/x",
)
GITHUB_SECRET = "an-integration-test-webhook-secret"
NO_REPOSITORY = "/nonexistent/legato-injection.git"  # local, so nothing leaves the host


def corpus(tmp_path: Path, field: str, *, urls: bool = False) -> list[str]:
    """Every payload, each pointed at a sentinel file of its own under `tmp_path`."""
    found = []
    for i, payload in enumerate(PAYLOADS + (URL_PAYLOADS if urls else ())):
        sentinel = tmp_path / f"pwned-{field}-{i}"
        found.append(payload.format(s=sentinel, q=quote(str(sentinel), safe="")))
    return found


def sentinels(tmp_path: Path) -> list[Path]:
    return sorted(tmp_path.glob("pwned-*"))


def assert_error_shape(response: httpx.Response) -> dict[str, Any]:
    """SPEC §3: {error, code, details, request_id}, the request id also in the header."""
    body: dict[str, Any] = response.json()
    assert {"error", "code", "details", "request_id"} <= set(body), body
    assert isinstance(body["error"], str) and body["error"]
    assert isinstance(body["code"], str) and body["code"].isupper()
    assert body["request_id"] == response.headers["X-Request-ID"]
    return body


def token() -> str:
    return secrets.token_hex(3)


def spec(project: str, **fields: Any) -> dict[str, Any]:
    return service_spec(f"svc-{token()}", project=project, **fields)


def build_spec(project: str, **build: Any) -> dict[str, Any]:
    fields = service_spec(f"svc-{token()}", project=project, build={"git": NO_REPOSITORY, **build})
    del fields["image"]
    return fields


def signed_delivery(legato: Legato, event: str, payload: dict[str, Any]) -> httpx.Response:
    body = json.dumps(payload).encode()
    signature = hmac.new(GITHUB_SECRET.encode(), body, hashlib.sha256).hexdigest()
    return legato.api.post("/webhooks/github", content=body, headers={
        "Content-Type": "application/json", "X-GitHub-Event": event,
        "X-GitHub-Delivery": f"d-{secrets.token_hex(8)}", "X-Hub-Signature-256": f"sha256={signature}",
    })


def push(branch: str = "main", clone_url: str = "https://git.example.test/o/app.git") -> dict[str, Any]:
    return {"ref": f"refs/heads/{branch}", "after": "a" * 40, "repository": {
        "clone_url": clone_url, "full_name": "o/app"}, "pusher": {"name": "mallory"}}


def pull_request(head: str = "feature", base: str = "main") -> dict[str, Any]:
    return {"action": "opened", "number": 7, "sender": {"login": "mallory"},
            "repository": {"clone_url": "https://git.example.test/o/app.git", "full_name": "o/app"},
            "pull_request": {"head": {"ref": head, "sha": "b" * 40}, "base": {"ref": base}}}


class Target:
    """Where a hostile string is sent: the project (with a service) that requests go to."""

    def __init__(self, legato: Legato, project: str, service: str) -> None:
        self.legato = legato
        self.api = legato.api
        self.project = project
        self.service = service


Send = Callable[[Target, str], httpx.Response]
BODY = frozenset({422})
PATH = frozenset({404, 422})  # a path segment may not even route
LOOKUP = frozenset({400, 404, 422})  # a name that picks among existing things: none is it

FIELDS: dict[str, tuple[Send, frozenset[int]]] = {
    "service name": (lambda t, h: t.legato.deploy(service_spec(h, project=t.project)), BODY),
    "spec project": (lambda t, h: t.legato.deploy(service_spec(f"svc-{token()}", project=h)), BODY),
    "spec environment": (lambda t, h: t.legato.deploy(spec(t.project, environment=h)), BODY),
    "project name": (lambda t, h: t.api.post("/projects", json={"name": h}), BODY),
    "project name in the path": (
        lambda t, h: t.api.patch(f"/projects/{quote(h, safe='')}/env-vars",
                                 json={"env": {"A": "b"}}), PATH),
    "project branch": (
        lambda t, h: t.api.post("/projects", json={"name": f"p{token()}", "branch": h}), BODY),
    "project repository (create)": (
        lambda t, h: t.api.post("/projects", json={"name": f"p{token()}", "repository": h}), BODY),
    "project repository (update)": (
        lambda t, h: t.api.patch(f"/projects/{t.project}", json={"repository": h}), BODY),
    "environment name": (
        lambda t, h: t.api.post(f"/projects/{t.project}/environments", json={"name": h}), BODY),
    "environment branch (create)": (
        lambda t, h: t.api.post(f"/projects/{t.project}/environments",
                                json={"name": f"e{token()}", "branch": h}), BODY),
    "environment branch (update)": (
        lambda t, h: t.api.patch(f"/projects/{t.project}/environments/production",
                                 json={"branch": h}), BODY),
    "build.git": (lambda t, h: t.legato.deploy(build_spec(t.project, git=h)), BODY),
    "build.branch": (lambda t, h: t.legato.deploy(build_spec(t.project, branch=h)), BODY),
    "build.dockerfile": (lambda t, h: t.legato.deploy(build_spec(t.project, dockerfile=h)), BODY),
    "build.context": (lambda t, h: t.legato.deploy(build_spec(t.project, context=h)), BODY),
    "build argument name": (
        lambda t, h: t.legato.deploy(build_spec(t.project, args={h: "x"})), BODY),
    "spec env key": (lambda t, h: t.legato.deploy(spec(t.project, env={h: "x"})), BODY),
    "redeploy env key": (
        lambda t, h: t.api.post(f"/services/{t.service}/deployments", json={"env": {h: "x"}}), BODY),
    "volume name": (
        lambda t, h: t.legato.deploy(spec(t.project, volumes=[{"name": h, "path": "/data"}])), BODY),
    "volume path": (
        lambda t, h: t.legato.deploy(spec(t.project, volumes=[{"name": "data", "path": h}])), BODY),
    "project env key (patch)": (
        lambda t, h: t.api.patch(f"/projects/{t.project}/env-vars", json={"env": {h: "x"}}), BODY),
    "project env key (put)": (
        lambda t, h: t.api.put(f"/projects/{t.project}/env-vars", json={"env": {h: "x"}}), BODY),
    "environment env key (patch)": (
        lambda t, h: t.api.patch(f"/projects/{t.project}/environments/production/env-vars",
                                 json={"env": {h: "x"}}), BODY),
    "environment env key (put)": (
        lambda t, h: t.api.put(f"/projects/{t.project}/environments/production/env-vars",
                               json={"env": {h: "x"}}), BODY),
    "secret name (put)": (
        lambda t, h: t.api.put(f"/projects/{t.project}/secrets/{quote(h, safe='')}",
                               json={"value": "x"}), PATH),
    "secret name (delete)": (
        lambda t, h: t.api.delete(f"/projects/{t.project}/secrets/{quote(h, safe='')}"), PATH),
    "webhook project": (
        lambda t, h: t.api.post("/webhooks", json={"project": h, "provider": "github"}), BODY),
    "push branch": (lambda t, h: signed_delivery(t.legato, "push", push(branch=h)), BODY),
    "push clone_url": (lambda t, h: signed_delivery(t.legato, "push", push(clone_url=h)), BODY),
    "pull request head branch": (
        lambda t, h: signed_delivery(t.legato, "pull_request", pull_request(head=h)), BODY),
    "pull request base branch": (
        lambda t, h: signed_delivery(t.legato, "pull_request", pull_request(base=h)), BODY),
    "image": (lambda t, h: t.legato.deploy(spec(t.project, image=h)), BODY),
    "domain": (lambda t, h: t.legato.deploy(spec(t.project, domain=h)), BODY),
    "health path": (lambda t, h: t.legato.deploy(spec(t.project, health=h)), BODY),
    "label key": (lambda t, h: t.legato.deploy(spec(t.project, labels={h: "x"})), BODY),
    "volume host_path": (
        lambda t, h: t.legato.deploy(spec(t.project, volumes=[{"host_path": h, "path": "/h"}])),
        BODY),
    "device": (lambda t, h: t.legato.deploy(spec(t.project, devices=[h])), BODY),
    "capability": (lambda t, h: t.legato.deploy(spec(t.project, cap_add=[h])), BODY),
    "outbound webhook url": (
        lambda t, h: t.api.post("/webhook-endpoints", json={"url": h, "events": ["deploy"]}),
        BODY),
    "user email": (lambda t, h: t.api.post("/users", json={"email": h}), BODY),
    "logs replica": (
        lambda t, h: t.api.get(f"/services/{t.service}/logs", params={"replica": h}), LOOKUP),
    "build-log deployment id": (
        lambda t, h: t.api.get(f"/deployments/{quote(h, safe='')}/build-log"), PATH),
    "analyze git": (lambda t, h: t.api.post(f"/projects/{t.project}/analyze", json={"git": h}), BODY),
    "analyze branch": (
        lambda t, h: t.api.post(f"/projects/{t.project}/analyze",
                                json={"git": NO_REPOSITORY, "branch": h}), BODY),
}
# Fields git clones from (a delivery's clone_url is never cloned: the project's repository is).
URL_FIELDS = frozenset({"project repository (create)", "project repository (update)", "build.git",
                        "analyze git"})


@pytest.fixture
def target(legato: Legato) -> Target:
    """A project of its own with a webhook and one deployed (idle) service, for the requests
    that need them."""
    project = f"p{token()}"
    assert legato.api.post("/projects", json={"name": project}).status_code == 201
    hook = legato.api.post("/webhooks", json={"project": project, "provider": "github",
                                              "secret": GITHUB_SECRET})
    assert hook.status_code == 201, hook.text
    service = f"svc-{token()}"
    assert legato.deploy(service_spec(service, project=project, replicas=0)).status_code == 202
    return Target(legato, project, service)


def settle(legato: Legato, response: httpx.Response) -> None:
    """If a request was (wrongly) accepted and queued deployments, let them run to their end, so
    that whatever they would run has run before the sentinels are checked."""
    if response.status_code != 202:
        return
    for entry in response.json().get("deployments", []):
        wait_for(lambda e=entry: legato.api.get(f"/deployments/{e['deployment_id']}").json()[
            "status"] in ("successful", "failed", "cancelled", "rolled_back"),
            timeout=60, what=f"accepted deployment {entry['deployment_id']} to end")


@pytest.mark.parametrize("field", sorted(FIELDS))
def test_hostile_strings_are_refused_before_anything_runs(
    target: Target, tmp_path: Path, field: str
) -> None:
    send, statuses = FIELDS[field]
    label = "".join(c for c in field if c.isalnum())
    hostile = corpus(tmp_path, label, urls=field in URL_FIELDS)
    not_refused = []
    for value in hostile:
        response = send(target, value)
        if response.status_code not in statuses:
            not_refused.append((value, response.status_code, response.text[:300]))
            settle(target.legato, response)
            continue
        body = assert_error_shape(response)
        if body["code"] == "GIT_FAILED":  # git ran with it: refused by luck, not by validation
            not_refused.append((value, response.status_code, body["error"]))

    assert sentinels(tmp_path) == []  # no command ran, whatever was accepted
    assert not_refused == [], f"{field}: {len(not_refused)} of {len(hostile)} not refused"
    # Nothing was made from a refused request.
    assert target.api.get(f"/projects/{target.project}").json()["repository"] is None
    environments = target.api.get(f"/projects/{target.project}/environments").json()
    assert [(e["name"], e["branch"]) for e in environments] == [("production", "main")]
    assert target.api.get(f"/projects/{target.project}/secrets").json() == []
    assert target.api.get(f"/projects/{target.project}/env-vars").json()["env"] == {}


def test_a_trailing_newline_does_not_slip_past_name_and_url_validation(
    target: Target, tmp_path: Path
) -> None:
    # `$` in a Python regex also matches before a final newline: `re.match("^[A-Z]+$", "A\n")`.
    cases = {
        "spec env key": "ENV_KEY\n",
        "build argument name": "GREETING\n",
        "project env key (patch)": "ENV_KEY\n",
        "secret name (put)": "TOKEN\n",
        "project repository (update)": "https://git.example.test/o/app.git\n",
        "build.git": f"{tmp_path}/app.git\n",
        "build.dockerfile": "Dockerfile\n",
    }
    accepted = {}
    for field, value in cases.items():
        send, statuses = FIELDS[field]
        response = send(target, value)
        if response.status_code not in statuses:
            accepted[field] = (value, response.status_code)
            settle(target.legato, response)
    assert accepted == {}, f"accepted with a trailing newline: {accepted}"


def test_build_argument_and_environment_values_reach_the_container_as_data(
    legato: Legato, name: str, tmp_path: Path
) -> None:
    hostile = [*corpus(tmp_path, "data"), r"\1 \g<0> %s {0} ${HOME} 'quoted' \"double\""]
    (tmp_path / "repo").mkdir()
    repo = GitRepo(tmp_path / "repo")
    repo.app("v1")
    project = f"p{token()}"
    created = legato.api.post("/projects", json={"name": project})  # no repository
    assert created.status_code == 201 and created.json()["repository"] is None

    spec_env = {f"S{i}": value for i, value in enumerate(hostile)}
    project_env = {f"P{i}": value for i, value in enumerate(hostile)}
    environment_env = {f"E{i}": value for i, value in enumerate(hostile)}
    response = legato.api.patch(f"/projects/{project}/env-vars", json={"env": project_env})
    assert response.status_code == 200, response.text
    response = legato.api.put(f"/projects/{project}/environments/production/env-vars",
                              json={"env": environment_env})
    assert response.status_code == 200, response.text
    response = legato.api.put(f"/projects/{project}/secrets/HOSTILE", json={"value": hostile[1]})
    assert response.status_code == 200, response.text
    assert legato.api.get(f"/projects/{project}/env-vars").json()["env"] == project_env

    greeting = "\n".join(hostile)
    spec = service_spec(name, project=project, env={**spec_env, "SECRET": "${secrets.HOSTILE}"},
                        build={"git": str(repo.bare), "args": {"GREETING": greeting}})
    del spec["image"]
    deployed = legato.deploy(spec)
    assert deployed.status_code == 202, deployed.text
    deployment_id = deployed.json()["deployments"][0]["deployment_id"]

    def ended() -> dict[str, Any] | None:
        body: dict[str, Any] = legato.api.get(f"/deployments/{deployment_id}").json()
        return body if body["status"] in ("successful", "failed", "rolled_back") else None

    deployment = wait_for(ended, timeout=90, what="the build and deployment")
    assert deployment["status"] == "successful", (
        deployment, legato.api.get(f"/deployments/{deployment_id}/build-log").text[-3000:])

    served = legato.get_edge(f"{name}.localhost", "/greeting")
    assert served.status_code == 200
    assert served.text == greeting + "\n"  # echo's newline; the argument arrived as it was sent
    env = legato.get_edge(f"{name}.localhost", "/cgi-bin/env").text
    for layer in (spec_env, project_env, environment_env, {"SECRET": hostile[1]}):
        for key, value in layer.items():
            assert f"\n{key}={value}\n" in f"\n{env}", (key, value)
    assert sentinels(tmp_path) == []

    # The analyzer reads the repository, never a path outside it.
    for fields in ({"dockerfile": "../../../../../../etc/passwd"}, {"context": "../../../../etc"},
                   {"dockerfile": "/etc/passwd"}):
        analysis = legato.api.post(f"/projects/{project}/analyze",
                                   json={"git": str(repo.bare), **fields})
        assert analysis.status_code in (200, 422), analysis.text
        assert "root:" not in analysis.text, (fields, analysis.text)
    assert sentinels(tmp_path) == []


def test_path_traversal_in_log_and_file_parameters_reads_nothing(target: Target) -> None:
    """Deployment ids and replica names never become paths: nothing outside the data dir is
    read through them, however they are spelled."""
    traversals = ["../../../../etc/passwd", "..%2F..%2F..%2Fetc%2Fpasswd", "/etc/passwd",
                  "dpl_../../../etc/passwd", "....//....//etc/passwd", "%00/etc/passwd"]
    for value in traversals:
        for path, params in (
            (f"/deployments/{quote(value, safe='')}/build-log", {}),
            (f"/deployments/{quote(value, safe='')}/logs", {}),
            (f"/services/{target.service}/logs", {"replica": value}),
            (f"/services/{target.service}/logs", {"since": value}),
        ):
            response = target.api.get(path, params=params)
            assert response.status_code in (400, 404, 422), f"{path} {params}: {response.text}"
            assert "root:" not in response.text
            assert_error_shape(response)
