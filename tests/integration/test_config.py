"""Configuration with real containers: project < environment < service variables and secrets
reach the replica; a secret is never returned, logged or stored in the clear; a deployment whose
secret is missing or does not decrypt fails while the old version serves; a deployment keeps the
configuration it was made with; key rotation survives a restart."""

from __future__ import annotations

import secrets
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.integration.harness import Legato, service_spec, wait_for

FINISHED = ("successful", "failed", "cancelled", "rolled_back")


# helpers --------------------------------------------------------------------------------------


def new_project(legato: Legato, **fields: Any) -> str:
    """A project no other test uses."""
    project = f"p{secrets.token_hex(3)}"
    response = legato.api.post("/projects", json={"name": project, **fields})
    assert response.status_code == 201, response.text
    return project


def set_vars(legato: Legato, project: str, values: dict[str, str | None],
             environment: str | None = None) -> None:
    scope = f"/projects/{project}" + (f"/environments/{environment}" if environment else "")
    response = legato.api.patch(f"{scope}/env-vars", json={"env": values})
    assert response.status_code == 200, response.text


def set_secret(legato: Legato, project: str, key: str, value: str) -> None:
    response = legato.api.put(f"/projects/{project}/secrets/{key}", json={"value": value})
    assert response.status_code == 200, response.text


def replica_env(legato: Legato, name: str) -> dict[str, str]:
    """The environment of the replica that answers through the edge (its /cgi-bin/env)."""
    answer = legato.get_edge(f"{name}.localhost", "/cgi-bin/env")
    assert answer.status_code == 200, answer.text
    return dict(line.split("=", 1) for line in answer.text.splitlines() if "=" in line)


def wait_env(legato: Legato, name: str, **expected: str) -> dict[str, str]:
    """Wait until the replica behind the edge has every `expected` variable."""
    def matches() -> dict[str, str] | None:
        env = replica_env(legato, name)
        return env if all(env.get(k) == v for k, v in expected.items()) else None

    return wait_for(matches, timeout=30, what=f"{name}'s replica to have {sorted(expected)}")


def finished(legato: Legato, deployment_id: str, timeout: float = 60) -> dict[str, Any]:
    """The deployment once it has ended, whichever way."""
    def ended() -> dict[str, Any] | None:
        body: dict[str, Any] = legato.api.get(f"/deployments/{deployment_id}").json()
        return body if body["status"] in FINISHED else None

    return wait_for(ended, timeout=timeout, what=f"deployment {deployment_id} to finish")


def deploy(legato: Legato, spec: dict[str, Any]) -> dict[str, Any]:
    """Deploy one spec and wait for its deployment to succeed."""
    response = legato.deploy(spec)
    assert response.status_code == 202, response.text
    deployment = finished(legato, response.json()["deployments"][0]["deployment_id"])
    assert deployment["status"] == "successful", deployment
    return deployment


def redeploy(legato: Legato, name: str, **changes: Any) -> str:
    """A new deployment of the service (with `changes`); its id."""
    response = legato.api.post(f"/services/{name}/deployments", json=changes or None)
    assert response.status_code == 202, response.text
    deployment_id: str = response.json()["deployment_id"]
    return deployment_id


@dataclass
class EdgeWatch:
    """What the edge answered, asked over and over on its own connections."""

    answers: list[tuple[int, str | None]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


@contextmanager
def watching(legato: Legato, name: str, key: str) -> Iterator[EdgeWatch]:
    """Poll the service's /cgi-bin/env through the edge until the block ends, recording each
    status and the value of `key` the answering replica had."""
    watch = EdgeWatch()
    stop = threading.Event()

    def poll() -> None:
        with httpx.Client(base_url=legato.edge_url, timeout=5,
                          limits=httpx.Limits(max_keepalive_connections=0)) as client:
            while not stop.is_set():
                try:
                    answer = client.get("/cgi-bin/env", headers={"Host": f"{name}.localhost"})
                except httpx.HTTPError as exc:
                    watch.errors.append(repr(exc))
                else:
                    env = dict(line.split("=", 1) for line in answer.text.splitlines()
                               if "=" in line)
                    watch.answers.append((answer.status_code, env.get(key)))
                stop.wait(0.05)

    thread = threading.Thread(target=poll, daemon=True)
    thread.start()
    try:
        yield watch
    finally:
        stop.set()
        thread.join(timeout=10)


def raw_database(legato: Legato) -> tuple[bytes, str]:
    """The database as bytes on disk (main file, WAL and shared memory) and as text: every
    row of every table, read with sqlite3."""
    db = legato.data_dir / "legato.db"
    raw = b"".join(p.read_bytes() for p in (db, Path(f"{db}-wal"), Path(f"{db}-shm"))
                   if p.exists())
    connection = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        tables = [r[0] for r in connection.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table'")]
        assert {"config_vars", "deployments", "deployment_logs", "events"} <= set(tables)
        rows = [repr(row) for table in tables
                for row in connection.execute(f'SELECT * FROM "{table}"')]  # noqa: S608 - names from sqlite_master
    finally:
        connection.close()
    return raw, "\n".join(rows)


def stored_config(legato: Legato, project: str) -> dict[tuple[str, str, str], str]:
    """The project's configuration rows as stored: (environment, kind, key) -> value."""
    connection = sqlite3.connect(f"file:{legato.data_dir / 'legato.db'}?mode=ro", uri=True)
    try:
        return {(e, k, key): v for e, k, key, v in connection.execute(
            "SELECT environment, kind, key, value FROM config_vars WHERE project = ?", (project,))}
    finally:
        connection.close()


# precedence, substitution, secrecy ------------------------------------------------------------


@dataclass(frozen=True)
class Configured:
    """A service deployed with variables at every layer and a secret."""

    project: str
    name: str
    secret: str
    plain: dict[str, str]  # every plaintext value set, by where it was set
    deployment_id: str


@pytest.fixture(scope="module")
def configured(legato: Legato) -> Configured:
    project = new_project(legato)
    name = f"svc-{secrets.token_hex(3)}"
    tag = secrets.token_hex(4)
    plain = {"project A": f"project-a-{tag}", "project B": f"project-b-{tag}",
             "environment B": f"env-b-{tag}", "environment C": f"env-c-{tag}",
             "service C": f"service-c-{tag}"}
    secret = f"s3cr3t-{secrets.token_urlsafe(16)}"
    set_vars(legato, project, {"A": plain["project A"], "B": plain["project B"]})
    set_vars(legato, project, {"B": plain["environment B"], "C": plain["environment C"]},
             environment="production")
    set_secret(legato, project, "TOKEN", secret)
    deployment = deploy(legato, service_spec(name, project=project, env={
        "C": plain["service C"], "D": "${secrets.TOKEN}"}))
    return Configured(project, name, secret, plain, deployment["id"])


def test_service_beats_environment_beats_project_and_secrets_are_substituted(
    legato: Legato, configured: Configured
) -> None:
    env = wait_env(legato, configured.name, D=configured.secret)

    assert env["A"] == configured.plain["project A"]
    assert env["B"] == configured.plain["environment B"]
    assert env["C"] == configured.plain["service C"]
    assert env["D"] == configured.secret


def test_the_secret_is_never_returned_logged_or_stored_in_the_clear(
    legato: Legato, configured: Configured
) -> None:
    wait_env(legato, configured.name, D=configured.secret)
    name, project, deployment = configured.name, configured.project, configured.deployment_id
    paths = [
        f"/services/{name}", f"/services/{name}/spec", f"/services/{name}/deployments",
        f"/deployments/{deployment}", f"/deployments/{deployment}/logs",
        f"/deployments/{deployment}/logs?format=text", f"/services/{name}/events",
        f"/services/{name}/health", f"/projects/{project}", f"/projects/{project}/secrets",
        f"/projects/{project}/env-vars", f"/projects/{project}/environments/production/env-vars",
        f"/projects/{project}/deployments", "/services", "/status",
    ]
    for path in paths:
        response = legato.api.get(path)
        assert response.status_code == 200, (path, response.text)
        assert configured.secret not in response.text, f"the secret is in GET {path}"
    listed = legato.api.get(f"/projects/{project}/secrets").json()
    assert [(s["key"], s["reference"]) for s in listed] == [("TOKEN", "${secrets.TOKEN}")]
    # The project's variables are readable (decrypted) by a deployer; the spec shows the reference.
    assert legato.api.get(f"/projects/{project}/env-vars").json()["env"] == {
        "A": configured.plain["project A"], "B": configured.plain["project B"]}
    assert legato.api.get(f"/services/{name}/spec").json()["env"]["D"] == "${secrets.TOKEN}"

    server_log = (legato.data_dir / "server.log").read_bytes()
    assert configured.secret.encode() not in server_log

    raw, rows = raw_database(legato)
    for label, value in {"the secret": configured.secret, **configured.plain}.items():
        assert value not in rows, f"{label} is in a database row in the clear"
        assert value.encode() not in raw, f"{label} is in the database file in the clear"
    assert stored_config(legato, project)[("", "secret", "TOKEN")].startswith("enc:v1:dk_")

    for path in legato.data_dir.rglob("*"):  # edge config, build logs, anything else
        if path.is_file() and not path.is_symlink():
            assert configured.secret.encode() not in path.read_bytes(), f"the secret is in {path}"


# failing deployments --------------------------------------------------------------------------


def test_a_missing_secret_fails_the_deployment_and_the_old_version_keeps_serving(
    legato: Legato, name: str
) -> None:
    project = new_project(legato)
    secret = f"s3cr3t-{secrets.token_urlsafe(12)}"
    missing = f"MISSING_{secrets.token_hex(3).upper()}"
    set_secret(legato, project, "TOKEN", secret)
    first = deploy(legato, service_spec(name, project=project, env={"D": "${secrets.TOKEN}"}))
    wait_env(legato, name, D=secret)

    with watching(legato, name, "D") as watch:
        # A reference to a secret that was never set ...
        never_set = finished(legato, redeploy(
            legato, name, env={"D": "${secrets.TOKEN}", "E": f"${{secrets.{missing}}}"}))
        wait_for(lambda: legato.service(name)["deployment"]["status"] == "successful",
                 what="the rollback after the first failure")
        # ... and a secret deleted after it was deployed.
        assert legato.api.delete(f"/projects/{project}/secrets/TOKEN").status_code == 204
        deleted = finished(legato, redeploy(legato, name))
        wait_for(lambda: legato.service(name)["deployment"]["status"] == "successful",
                 what="the rollback after the second failure")
        wait_for(lambda: len(watch.answers) > 20, what="answers after the failures")

    for failed, key in ((never_set, missing), (deleted, "TOKEN")):
        assert failed["status"] in ("failed", "rolled_back"), failed
        assert key in failed["error"] and "not set" in failed["error"], failed["error"]
        assert [s["name"] for s in failed["steps"]] == ["queued", "pulling"], failed["steps"]
        text = legato.api.get(f"/deployments/{failed['id']}/logs", params={"format": "text"}).text
        assert key in text
    errors = [e["message"] for e in legato.events(name, "error")]
    assert any(missing in m for m in errors) and any("TOKEN" in m for m in errors), errors

    assert not watch.errors, watch.errors[:5]
    assert watch.answers and {status for status, _ in watch.answers} == {200}
    # Never an empty value: every replica that answered had the secret.
    assert {value for _, value in watch.answers} == {secret}
    after = legato.service(name)
    assert after["deployment"]["reason"].startswith("rollback to #"), after["deployment"]
    assert after["deployment"]["number"] > first["number"]
    env = replica_env(legato, name)
    assert env["D"] == secret and "E" not in env
    for container in legato.containers(name):
        variables = container.attrs["Config"]["Env"]
        assert f"D={secret}" in variables and not any(v.startswith("E=") for v in variables)


def test_a_secret_that_does_not_decrypt_fails_the_deployment_and_names_it(
    fresh_legato: Legato, name: str
) -> None:
    legato = fresh_legato
    project = new_project(legato)
    secret = f"s3cr3t-{secrets.token_urlsafe(12)}"
    set_secret(legato, project, "TOKEN", secret)
    set_vars(legato, project, {"OTHER": "other-value"})
    deploy(legato, service_spec(name, project=project, env={"D": "${secrets.TOKEN}"}))
    wait_env(legato, name, D=secret)
    # Another value's ciphertext in TOKEN's row: valid, but bound to another place, so it
    # must not decrypt (and must not be used as TOKEN's value either).
    db = sqlite3.connect(legato.data_dir / "legato.db", timeout=10)
    try:
        with db:
            db.execute(
                "UPDATE config_vars SET value = (SELECT value FROM config_vars WHERE project = ?"
                " AND key = 'OTHER') WHERE project = ? AND kind = 'secret' AND key = 'TOKEN'",
                (project, project))
    finally:
        db.close()

    with watching(legato, name, "D") as watch:
        failed = finished(legato, redeploy(legato, name))
        wait_for(lambda: legato.service(name)["deployment"]["status"] == "successful",
                 what="the rollback")
        wait_for(lambda: len(watch.answers) > 10, what="answers after the failure")

    assert failed["status"] in ("failed", "rolled_back"), failed
    assert "configuration" in failed["error"], failed["error"]
    assert {status for status, _ in watch.answers} == {200} and not watch.errors
    assert {value for _, value in watch.answers} == {secret}
    assert "other-value" not in {value for _, value in watch.answers}
    # Which value is broken must be clear from the error: the operator has to set it again.
    assert "TOKEN" in failed["error"], failed["error"]


# deployments keep their configuration ---------------------------------------------------------


def test_a_changed_variable_reaches_the_next_deployment_and_rollback_restores_the_old_one(
    legato: Legato, name: str
) -> None:
    project = new_project(legato)
    old, new = f"blue-{secrets.token_hex(3)}", f"green-{secrets.token_hex(3)}"
    set_vars(legato, project, {"COLOR": old})
    deploy(legato, service_spec(name, project=project))
    wait_env(legato, name, COLOR=old)

    set_vars(legato, project, {"COLOR": new})
    assert replica_env(legato, name)["COLOR"] == old  # nothing changes until a deployment
    response = legato.api.post(f"/projects/{project}/deployments",
                               params={"environment": "production"})
    assert response.status_code == 202, response.text
    [accepted] = response.json()["deployments"]
    assert accepted["name"] == name
    assert finished(legato, accepted["deployment_id"])["status"] == "successful"
    wait_env(legato, name, COLOR=new)

    rollback = legato.api.post(f"/services/{name}/rollback")
    assert rollback.status_code == 202, rollback.text
    assert finished(legato, rollback.json()["deployment_id"])["status"] == "successful"
    wait_env(legato, name, COLOR=old)
    # The rollback re-applied a deployment; the project's configuration is what it was.
    assert legato.api.get(f"/projects/{project}/env-vars").json()["env"] == {"COLOR": new}


# key rotation ---------------------------------------------------------------------------------


def test_key_rotation_reencrypts_everything_and_deployments_still_get_the_secret(
    legato: Legato, name: str
) -> None:
    project = new_project(legato)
    secret = f"s3cr3t-{secrets.token_urlsafe(12)}"
    set_secret(legato, project, "TOKEN", secret)
    set_vars(legato, project, {"A": "a-value"})
    deploy(legato, service_spec(name, project=project, env={"D": "${secrets.TOKEN}"}))
    wait_env(legato, name, D=secret)

    first = legato.api.post("/keys/rotate")
    assert first.status_code == 200, first.text
    rotated = first.json()
    assert rotated["key_id"].startswith("dk_")
    assert rotated["retired"] and rotated["key_id"] not in rotated["retired"]
    assert rotated["reencrypted"]["config"] >= 2  # TOKEN and A, at least
    assert rotated["reencrypted"]["deployments"] >= 1
    second = legato.api.post("/keys/rotate").json()
    assert second["key_id"] != rotated["key_id"]
    assert second["retired"] == [rotated["key_id"]]

    stored = stored_config(legato, project)
    assert sorted(stored) == [("", "env", "A"), ("", "secret", "TOKEN")]
    assert all(v.startswith(f"enc:v1:{second['key_id']}:") for v in stored.values()), stored
    assert legato.api.get(f"/projects/{project}/env-vars").json()["env"] == {"A": "a-value"}
    deployment = finished(legato, redeploy(legato, name))
    assert deployment["status"] == "successful", deployment
    wait_env(legato, name, D=secret, A="a-value")


def test_after_rotation_and_a_restart_everything_still_decrypts(
    fresh_legato: Legato, name: str
) -> None:
    legato = fresh_legato
    project = new_project(legato)
    secret = f"s3cr3t-{secrets.token_urlsafe(12)}"
    set_secret(legato, project, "TOKEN", secret)
    set_vars(legato, project, {"A": "a-value"})
    set_vars(legato, project, {"B": "b-value"}, environment="production")
    deploy(legato, service_spec(name, project=project, env={"D": "${secrets.TOKEN}"}))
    wait_env(legato, name, D=secret)
    master_key = (legato.data_dir / "master.key").read_bytes()

    rotated = legato.api.post("/keys/rotate")
    assert rotated.status_code == 200, rotated.text
    legato.kill()
    legato.start()

    assert (legato.data_dir / "master.key").read_bytes() == master_key
    assert legato.api.get(f"/projects/{project}/env-vars").json()["env"] == {"A": "a-value"}
    assert legato.api.get(f"/projects/{project}/environments/production/env-vars"
                          ).json()["env"] == {"B": "b-value"}
    assert [s["key"] for s in legato.api.get(f"/projects/{project}/secrets").json()] == ["TOKEN"]
    deployment = finished(legato, redeploy(legato, name))
    assert deployment["status"] == "successful", deployment
    wait_env(legato, name, D=secret, A="a-value", B="b-value")
    again = legato.api.post("/keys/rotate").json()
    assert again["retired"] == [rotated.json()["key_id"]]
