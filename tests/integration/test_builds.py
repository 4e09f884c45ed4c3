"""From source to running app on real Docker, a real registry and HAProxy: builds from a local
bare repository, their logs, failing builds, signed webhooks, previews and their clean-up."""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.integration.harness import REGISTRY, GitRepo, Legato, wait_for

pytestmark = pytest.mark.integration
SECRET = "a-webhook-secret-for-tests-" + secrets.token_hex(4)


@pytest.fixture
def repo(tmp_path: Path) -> GitRepo:
    return GitRepo(tmp_path)


def built_service(name: str, project: str, **build: Any) -> dict[str, Any]:
    return {"name": name, "project": project, "port": 8080, "replicas": 1,
            "build": build, "health_check": {"path": "/healthz", "interval_s": 1,
                                             "timeout_s": 1, "failure_threshold": 2}}


def make_project(legato: Legato, repo: GitRepo) -> str:
    project = f"p{secrets.token_hex(3)}"
    response = legato.api.post("/projects", json={"name": project, "repository": str(repo.bare)})
    assert response.status_code == 201, response.text
    return project


def deployment(legato: Legato, deployment_id: str) -> dict[str, Any]:
    body: dict[str, Any] = legato.api.get(f"/deployments/{deployment_id}").json()
    return body


def wait_finished(legato: Legato, deployment_id: str, timeout: float = 90) -> dict[str, Any]:
    return wait_for(lambda: (d := deployment(legato, deployment_id))["status"] not in
                    ("pending", "running", "awaiting_promotion") and d, timeout=timeout,
                    what=f"deployment {deployment_id} to finish")


def serves(legato: Legato, host: str, text: str, timeout: float = 90) -> None:
    wait_for(lambda: legato.get_edge(host).text == text, timeout=timeout,
             what=f"{host} to answer {text!r}")


def github(legato: Legato, event: str, payload: dict[str, Any], *, secret: str = SECRET,
           delivery: str | None = None) -> httpx.Response:
    body = json.dumps(payload).encode()
    signature = "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    return httpx.post(f"{legato.url}/api/v1/webhooks/github", content=body, timeout=10, headers={
        "Content-Type": "application/json", "X-GitHub-Event": event,
        "X-GitHub-Delivery": delivery or secrets.token_hex(8), "X-Hub-Signature-256": signature})


def push(branch: str, commit: str) -> dict[str, Any]:
    return {"ref": f"refs/heads/{branch}", "after": commit, "pusher": {"name": "dev"},
            "repository": {"clone_url": "https://git.example.test/team/app.git",
                           "full_name": "team/app"}}


def pull_request(action: str, number: int, branch: str, commit: str) -> dict[str, Any]:
    return {"action": action, "number": number, "sender": {"login": "dev"},
            "pull_request": {"head": {"ref": branch, "sha": commit}, "base": {"ref": "main"},
                             "merged": False},
            "repository": {"clone_url": "https://git.example.test/team/app.git",
                           "full_name": "team/app"}}


def test_a_build_deploys_the_pushed_digest_with_its_log_and_a_failing_build_keeps_it(
    legato: Legato, repo: GitRepo, name: str
) -> None:
    commit = repo.app("v1")
    project = make_project(legato, repo)
    answer = legato.deploy(built_service(name, project, args={"GREETING": "built"}))
    assert answer.status_code == 202, answer.text
    first = answer.json()["deployments"][0]["deployment_id"]

    # the build log streams live while the build runs, and ends with the push
    with httpx.stream("GET", f"{legato.url}/api/v1/deployments/{first}/build-log",
                      params={"follow": "true"}, timeout=120,
                      headers={"Authorization": f"Bearer {legato.token}"}) as stream:
        assert stream.headers["content-type"].startswith("text/event-stream")
        streamed = [json.loads(line.removeprefix("data: ")) for line in stream.iter_lines()
                    if line.startswith("data: ") and line != "data: {}"]
    assert any("Step" in line for line in streamed)
    assert any(line.startswith("pushed ") for line in streamed)

    done = wait_finished(legato, first)
    assert done["status"] == "successful", done
    assert done["build"]["commit"] == commit
    assert done["image"] == f"{REGISTRY}/{project}/{name}@{done['build']['digest']}"
    assert set(done["build"]["seconds"]) == {"clone", "build", "push"}
    assert [s["name"] for s in done["steps"]][:4] == ["queued", "cloning", "building", "pushing"]
    serves(legato, f"{name}.localhost", "v1\n")
    assert legato.get_edge(f"{name}.localhost", "/greeting").text == "built\n"
    kept = legato.api.get(f"/deployments/{first}/build-log").text
    assert kept.splitlines() == streamed

    # the registry lists the image as live, and refuses to delete it
    images = legato.api.get(f"/projects/{project}/images").json()["items"]
    [image] = [i for i in images if i["repository"] == f"{project}/{name}"]
    assert image["tag"] == commit[:12] and image["live"] and image["size"] > 0
    refused = legato.api.delete(f"/projects/{project}/images/{name}:{commit[:12]}")
    assert refused.status_code == 409 and refused.json()["code"] == "IMAGE_LIVE"

    # a broken Dockerfile fails the next deployment with the log's tail; v1 keeps serving
    repo.commit({"Dockerfile": repo.DOCKERFILE + "RUN echo doomed-build && exit 3\n"})
    again = legato.api.post(f"/services/{name}/deployments", json={"reason": "broken"})
    assert again.status_code == 202, again.text
    failing = again.json()["deployment_id"]
    while (d := deployment(legato, failing))["status"] in ("pending", "running"):
        assert legato.get_edge(f"{name}.localhost").text == "v1\n"
        time.sleep(0.2)
    assert d["status"] == "rolled_back", d
    assert "build failed" in d["error"] and "doomed-build" in d["error"]
    assert legato.get_edge(f"{name}.localhost").text == "v1\n"
    legato.api.delete(f"/projects/{project}", params={"force": "true"})


def test_signed_pushes_deploy_their_branch_once_and_bad_signatures_do_nothing(
    legato: Legato, repo: GitRepo, name: str
) -> None:
    repo.app("v1")
    project = make_project(legato, repo)
    hook = legato.api.post("/webhooks", json={"project": project, "provider": "github",
                                              "secret": SECRET})
    assert hook.status_code == 201 and hook.json()["secret"] == SECRET
    assert "secret" not in legato.api.get("/webhooks", params={"project": project}).json()[0]
    first = legato.deploy(built_service(name, project)).json()["deployments"][0]["deployment_id"]
    assert wait_finished(legato, first)["status"] == "successful"

    commit = repo.app("v2")
    delivery = secrets.token_hex(8)
    started = time.monotonic()
    answer = github(legato, "push", push("main", commit), delivery=delivery)
    answered_s = time.monotonic() - started
    assert answer.status_code == 200, answer.text
    assert answer.json()["status"] == "deploying", answer.json()
    [created] = answer.json()["deployments"]
    assert answered_s < 5  # the build runs afterwards (bench/ measures the answer time)
    assert wait_finished(legato, created["deployment_id"])["build"]["commit"] == commit
    serves(legato, f"{name}.localhost", "v2\n")

    count = len(legato.api.get(f"/services/{name}/deployments").json()["items"])
    replay = github(legato, "push", push("main", commit), delivery=delivery)
    assert replay.status_code == 200 and replay.json()["status"] == "duplicate"
    forged = github(legato, "push", push("main", commit), secret="not-the-secret-at-all")
    assert forged.status_code == 401 and forged.json()["code"] == "INVALID_SIGNATURE"
    other = github(legato, "push", push("unrelated", commit))
    assert other.json()["status"] == "ignored"
    assert len(legato.api.get(f"/services/{name}/deployments").json()["items"]) == count

    info = legato.api.get(f"/projects/{project}/webhook").json()
    assert info["enabled"] and info["last_delivery"]["event"] == "push"
    legato.api.post(f"/projects/{project}/webhook/toggle", json={"enabled": False})
    disabled = github(legato, "push", push("main", commit))
    assert disabled.json()["status"] == "ignored" and "disabled" in disabled.json()["reason"]
    legato.api.delete(f"/projects/{project}", params={"force": "true"})


def test_a_pull_request_gets_a_preview_that_leaves_nothing_behind_when_closed(
    legato: Legato, repo: GitRepo, name: str
) -> None:
    repo.app("main")
    project = make_project(legato, repo)
    legato.api.post("/webhooks", json={"project": project, "provider": "github",
                                       "secret": SECRET})
    volumes = [{"name": "data", "path": "/data"}]
    first = legato.deploy({**built_service(name, project), "volumes": volumes}).json()
    assert wait_finished(legato, first["deployments"][0]["deployment_id"])["status"] == "successful"

    commit = repo.app("feature", branch="feature")
    opened = github(legato, "pull_request", pull_request("opened", 7, "feature", commit))
    assert opened.status_code == 200 and opened.json()["status"] == "preview", opened.text
    preview = f"{name}-pr-7"
    serves(legato, f"{preview}.localhost", "feature\n")
    serves(legato, f"{name}.localhost", "main\n", timeout=5)
    environment = legato.api.get(f"/projects/{project}/environments/pr-7").json()
    assert environment["branch"] == "feature" and environment["pull_request"] == 7
    assert environment["services"] == [preview]
    repository = f"{REGISTRY}/{project}/{preview}"
    assert legato.docker.api.images(name=repository)

    closed = github(legato, "pull_request", pull_request("closed", 7, "feature", commit))
    assert closed.json()["status"] == "removed"
    label = [f"legato.instance={legato.instance}", f"legato.service={preview}"]
    wait_for(lambda: not legato.docker.api.containers(all=True, filters={"label": label}),
             timeout=30, what="the preview's containers to go")
    wait_for(lambda: legato.get_edge(f"{preview}.localhost").status_code == 404, timeout=10,
             what="the preview's route to go")
    wait_for(lambda: not legato.docker.api.images(name=repository), timeout=30,
             what="the preview's local images to go")
    assert not [v for v in legato.docker.volumes.list(filters={"label": label[0]})
                if preview in v.name]
    assert legato.api.get(f"/projects/{project}/environments/pr-7").status_code == 404
    tags = legato.api.get(f"/projects/{project}/images").json()["items"]
    assert not [t for t in tags if t["repository"] == f"{project}/{preview}"]
    assert legato.get_edge(f"{name}.localhost").text == "main\n"
    legato.api.delete(f"/projects/{project}", params={"force": "true"})


def test_projects_with_services_are_deleted_only_with_force(legato: Legato, name: str) -> None:
    project = f"p{secrets.token_hex(3)}"
    legato.deploy({"name": name, "project": project, "image": "legato-test/busybox:latest",
                   "command": ["httpd", "-f", "-p", "8080", "-h", "/www"]})
    legato.wait_healthy(name, 1)
    refused = legato.api.delete(f"/projects/{project}")
    assert refused.status_code == 409 and refused.json()["code"] == "PROJECT_HAS_SERVICES"
    removed = legato.api.delete(f"/projects/{project}", params={"force": "true"})
    assert removed.status_code == 200 and removed.json()["services_removed"] == [name]
    wait_for(lambda: not legato.containers(name), timeout=30, what="containers to go")
    assert legato.api.get(f"/projects/{project}").status_code == 404


def test_analyze_clones_the_repository_and_says_how_it_builds(
    legato: Legato, repo: GitRepo
) -> None:
    sha = repo.commit({"requirements.txt": "flask==3.0\n", "app.py": "from flask import Flask\n"
                       "app = Flask(__name__)\n"})
    project = make_project(legato, repo)
    found = legato.api.post(f"/projects/{project}/analyze").json()
    assert found["commit"] == sha and found["kind"] == "python"
    assert found["framework"] == "flask" and "requirements.txt" in found["found"]
    assert "FROM python" in found["dockerfile"] and found["reason"]
    repo.app("v1")
    assert legato.api.post(f"/projects/{project}/analyze").json()["kind"] == "dockerfile"
    refused = legato.api.post(f"/projects/{project}/analyze", json={"git": "--upload-pack=x"})
    assert refused.status_code == 422
    legato.api.delete(f"/projects/{project}")
