"""The store's projects, environments, groups, encrypted configuration, webhooks and data keys."""

from __future__ import annotations

import json
import secrets
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from legato.crypto import DecryptionFailed, Keyring, key_id_of
from legato.errors import LegatoError
from legato.spec import ServiceSpec
from legato.store import Deployment, Store
from legato.store.projects import config_aad

# Plaintexts that must never reach the database file.
SPEC_SECRET = "hunter2-plaintext"
RESOLVED_SECRET = "resolved-env-plaintext"
CONFIG_SECRET = "config-secret-plaintext"
CONFIG_ENV = "config-env-plaintext"
WEBHOOK_SECRET = "webhook-secret-plaintext"
PLAINTEXTS = (SPEC_SECRET, RESOLVED_SECRET, CONFIG_SECRET, CONFIG_ENV, WEBHOOK_SECRET)


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    """The file the `store` fixture opened."""
    return tmp_path / "db"


@contextmanager
def raw(path: Path) -> Iterator[sqlite3.Connection]:
    """A connection of our own on the store's file, bypassing the Store entirely."""
    assert path.exists()
    db = sqlite3.connect(path, isolation_level=None)
    db.row_factory = sqlite3.Row
    try:
        yield db
    finally:
        db.close()


def expect(error: pytest.ExceptionInfo[LegatoError], status: int, code: str) -> None:
    assert (error.value.status, error.value.code) == (status, code)


async def deploy(store: Store, name: str = "web", **fields: Any) -> Deployment:
    _, deployment = await store.apply_spec(
        ServiceSpec.model_validate({"name": name, "project": "shop", "image": "x:1", **fields}),
        actor="t", reason="t")
    assert deployment is not None
    return deployment


async def seed(store: Store) -> dict[str, Any]:
    """One encrypted value of every kind the store keeps: project and environment config of
    both kinds, a webhook secret, a deployment's spec env and its resolved env."""
    await store.create_project("shop")
    await store.set_config("shop", "", "env", {"LOG_LEVEL": CONFIG_ENV})
    await store.set_config("shop", "", "secret", {"DB_PASSWORD": CONFIG_SECRET})
    await store.set_config("shop", "production", "env", {"MODE": "prod"})
    await store.set_config("shop", "production", "secret", {"API_KEY": "k-123"})
    webhook = await store.create_webhook("shop", "github", WEBHOOK_SECRET)
    deployment = await deploy(store, env={"DB_PASSWORD": SPEC_SECRET})
    await store.update_deployment(deployment.id, env={"DB_PASSWORD": RESOLVED_SECRET})
    return {"webhook": webhook.id, "deployment": deployment.id}


async def assert_seed_reads_back(store: Store, ids: dict[str, Any]) -> None:
    """Everything `seed` stored decrypts to what was written (read from the database)."""
    assert [(c.key, c.value) for c in await store.config("shop", "", "env")] == [
        ("LOG_LEVEL", CONFIG_ENV)]
    assert [(c.key, c.value) for c in await store.config("shop", "", "secret")] == [
        ("DB_PASSWORD", CONFIG_SECRET)]
    assert [(c.key, c.value) for c in await store.config("shop", "production", "env")] == [
        ("MODE", "prod")]
    assert [(c.key, c.value) for c in await store.config("shop", "production", "secret")] == [
        ("API_KEY", "k-123")]
    assert [(w.id, w.secret) for w in await store.list_webhooks()] == [
        (ids["webhook"], WEBHOOK_SECRET)]
    [deployment] = await store.list_deployments("web")
    assert deployment.id == ids["deployment"]
    assert deployment.spec.env == {"DB_PASSWORD": SPEC_SECRET}
    assert deployment.env == {"DB_PASSWORD": RESOLVED_SECRET}


def stored_ciphertexts(path: Path) -> list[str]:
    """Every encrypted value in the file: config values, webhook secrets, deployments' spec env
    values and resolved env."""
    with raw(path) as db:
        found = [r["value"] for r in db.execute("SELECT value FROM config_vars")]
        found += [r["secret"] for r in db.execute("SELECT secret FROM webhooks")]
        for row in db.execute("SELECT spec, env FROM deployments"):
            found += json.loads(row["spec"])["env"].values()
            if row["env"]:
                found.append(row["env"])
    return found


# projects -----------------------------------------------------------------------------------


async def test_create_project_returns_it_and_get_reads_it_back(store: Store) -> None:
    project = await store.create_project("shop", description="the shop",
                                         repository="https://git.example/shop.git")
    assert (project.name, project.description, project.repository) == (
        "shop", "the shop", "https://git.example/shop.git")
    assert project.group_id is None
    assert project.auto_deploy is True
    assert await store.get_project("shop") == project
    assert await store.project_exists("shop")
    assert not await store.project_exists("blog")


async def test_creating_a_project_creates_its_production_environment(store: Store) -> None:
    await store.create_project("shop", branch="trunk")
    [production] = await store.list_environments("shop")
    assert (production.project, production.name, production.branch) == ("shop", "production", "trunk")
    assert production.pull_request is None


async def test_a_taken_project_name_is_a_409_project_exists(store: Store) -> None:
    await store.create_project("shop", description="first")
    with pytest.raises(LegatoError) as caught:
        await store.create_project("shop", description="second")
    expect(caught, 409, "PROJECT_EXISTS")
    assert (await store.get_project("shop")).description == "first"


@pytest.mark.parametrize("call", ["get", "update", "delete", "environments", "webhook"])
async def test_a_missing_project_is_a_404_project_not_found(store: Store, call: str) -> None:
    with pytest.raises(LegatoError) as caught:
        if call == "get":
            await store.get_project("nope")
        elif call == "update":
            await store.update_project("nope", {"description": "x"})
        elif call == "delete":
            await store.delete_project("nope")
        elif call == "environments":
            await store.list_environments("nope")
        else:
            await store.create_webhook("nope", "github", "s")
    expect(caught, 404, "PROJECT_NOT_FOUND")
    assert caught.value.details == {"name": "nope"}


async def test_list_projects_is_sorted_by_name_and_pages_with_after_and_limit(store: Store) -> None:
    for name in ("charlie", "alpha", "bravo"):
        await store.create_project(name)
    assert [p.name for p in await store.list_projects()] == ["alpha", "bravo", "charlie"]
    assert [p.name for p in await store.list_projects(limit=2)] == ["alpha", "bravo"]
    assert [p.name for p in await store.list_projects(after="alpha", limit=1)] == ["bravo"]
    assert [p.name for p in await store.list_projects(after="charlie")] == []


async def test_update_project_changes_only_the_fields_given(store: Store) -> None:
    created = await store.create_project("shop", description="old",
                                         repository="https://git.example/shop.git")
    updated = await store.update_project("shop", {"description": "new", "auto_deploy": False})
    assert (updated.description, updated.auto_deploy) == ("new", False)
    assert updated.repository == "https://git.example/shop.git"
    assert updated.created_at == created.created_at
    assert updated.updated_at >= created.updated_at
    assert await store.get_project("shop") == updated


async def test_update_project_ignores_fields_it_does_not_own(store: Store) -> None:
    created = await store.create_project("shop")
    updated = await store.update_project("shop", {"name": "hijacked", "created_at": "1970-01-01",
                                                  "description = 'x', name": "y"})
    assert updated.name == "shop"
    assert updated.created_at == created.created_at
    assert updated.description == ""
    assert [p.name for p in await store.list_projects()] == ["shop"]


async def test_update_project_can_clear_the_repository(store: Store) -> None:
    await store.create_project("shop", repository="https://git.example/shop.git")
    assert (await store.update_project("shop", {"repository": None})).repository is None


async def test_set_webhooks_enabled_toggles_auto_deploy(store: Store) -> None:
    await store.create_project("shop")
    await store.set_webhooks_enabled("shop", False)
    assert (await store.get_project("shop")).auto_deploy is False
    await store.set_webhooks_enabled("shop", True)
    assert (await store.get_project("shop")).auto_deploy is True


async def test_delete_project_forgets_it(store: Store) -> None:
    await store.create_project("shop")
    await store.delete_project("shop")
    assert not await store.project_exists("shop")
    assert await store.list_projects() == []


async def test_deleting_a_project_deletes_its_environments_config_and_webhooks(
    store: Store, db_path: Path
) -> None:
    await store.create_project("shop")
    await store.create_project("blog")
    for project in ("shop", "blog"):
        await store.create_environment(project, "staging", branch="develop")
        await store.set_config(project, "", "secret", {"DB_PASSWORD": CONFIG_SECRET})
        await store.set_config(project, "staging", "env", {"MODE": "staging"})
        await store.create_webhook(project, "github", WEBHOOK_SECRET)

    await store.delete_project("shop")

    with raw(db_path) as db:
        for table in ("environments", "config_vars", "webhooks"):
            projects = {r["project"] for r in db.execute(f"SELECT project FROM {table}")}  # noqa: S608
            assert projects == {"blog"}, table
    assert [w.project for w in await store.list_webhooks()] == ["blog"]


async def test_a_project_with_services_cannot_be_deleted(store: Store) -> None:
    await deploy(store)
    with pytest.raises(LegatoError) as caught:
        await store.delete_project("shop")
    expect(caught, 409, "PROJECT_HAS_SERVICES")
    assert caught.value.details == {"services": ["web"]}
    assert await store.project_exists("shop")


async def test_a_project_can_be_deleted_once_its_services_are(store: Store) -> None:
    await deploy(store)
    await store.delete_service("web", keep_data=False)
    await store.delete_project("shop")
    assert not await store.project_exists("shop")


async def test_apply_spec_creates_the_project_and_its_environments(store: Store) -> None:
    await deploy(store, environment="staging")
    assert await store.project_exists("shop")
    environments = await store.list_environments("shop")
    assert [(e.name, e.branch) for e in environments] == [("production", "main"), ("staging", None)]


# environments -------------------------------------------------------------------------------


async def test_create_environment_returns_it_and_get_reads_it_back(store: Store) -> None:
    await store.create_project("shop")
    created = await store.create_environment("shop", "pr-7", branch="feature", pull_request=7)
    assert (created.project, created.name, created.branch, created.pull_request) == (
        "shop", "pr-7", "feature", 7)
    assert await store.get_environment("shop", "pr-7") == created


async def test_a_taken_environment_name_is_a_409_environment_exists(store: Store) -> None:
    await store.create_project("shop")
    with pytest.raises(LegatoError) as caught:
        await store.create_environment("shop", "production", branch="other")
    expect(caught, 409, "ENVIRONMENT_EXISTS")
    assert (await store.get_environment("shop", "production")).branch == "main"


async def test_an_environment_of_a_missing_project_is_project_not_found(store: Store) -> None:
    with pytest.raises(LegatoError) as caught:
        await store.create_environment("nope", "staging", branch=None)
    expect(caught, 404, "PROJECT_NOT_FOUND")
    with pytest.raises(LegatoError) as caught:
        await store.get_environment("nope", "production")
    expect(caught, 404, "PROJECT_NOT_FOUND")


@pytest.mark.parametrize("call", ["get", "update", "delete", "set_config"])
async def test_a_missing_environment_is_a_404_environment_not_found(store: Store, call: str) -> None:
    await store.create_project("shop")
    with pytest.raises(LegatoError) as caught:
        if call == "get":
            await store.get_environment("shop", "nope")
        elif call == "update":
            await store.update_environment("shop", "nope", branch="x")
        elif call == "delete":
            await store.delete_environment("shop", "nope")
        else:
            await store.set_config("shop", "nope", "env", {"A": "1"})
    expect(caught, 404, "ENVIRONMENT_NOT_FOUND")
    assert caught.value.details == {"project": "shop", "environment": "nope"}


async def test_list_environments_puts_production_first_then_sorts_by_name(store: Store) -> None:
    await store.create_project("shop")
    for name in ("zeta", "alpha"):
        await store.create_environment("shop", name, branch=None)
    assert [e.name for e in await store.list_environments("shop")] == ["production", "alpha", "zeta"]


async def test_update_environment_sets_and_clears_its_branch(store: Store) -> None:
    await store.create_project("shop")
    await store.create_environment("shop", "staging", branch="develop")
    assert (await store.update_environment("shop", "staging", branch="next")).branch == "next"
    assert (await store.update_environment("shop", "staging", branch=None)).branch is None
    assert (await store.get_environment("shop", "staging")).branch is None


async def test_environments_on_branch_are_those_tracking_it_without_previews(store: Store) -> None:
    await store.create_project("shop")
    await store.create_project("blog")
    await store.create_environment("shop", "staging", branch="develop")
    await store.create_environment("shop", "qa", branch="develop")
    await store.create_environment("shop", "pr-7", branch="develop", pull_request=7)
    await store.create_environment("blog", "staging", branch="develop")
    assert [e.name for e in await store.environments_on_branch("shop", "develop")] == ["qa", "staging"]
    assert [e.name for e in await store.environments_on_branch("shop", "main")] == ["production"]
    assert await store.environments_on_branch("shop", "gone") == []
    assert await store.environments_on_branch("nope", "main") == []


async def test_delete_environment_forgets_it_and_its_config(store: Store) -> None:
    await store.create_project("shop")
    await store.create_environment("shop", "staging", branch="develop")
    await store.set_config("shop", "staging", "secret", {"DB_PASSWORD": CONFIG_SECRET})
    await store.set_config("shop", "", "secret", {"DB_PASSWORD": "project-level"})

    await store.delete_environment("shop", "staging")

    assert [e.name for e in await store.list_environments("shop")] == ["production"]
    await store.create_environment("shop", "staging", branch="develop")
    assert await store.config("shop", "staging", "secret") == []
    assert [c.value for c in await store.config("shop", "", "secret")] == ["project-level"]


async def test_the_production_environment_cannot_be_deleted(store: Store) -> None:
    await store.create_project("shop")
    with pytest.raises(LegatoError) as caught:
        await store.delete_environment("shop", "production")
    expect(caught, 409, "ENVIRONMENT_PROTECTED")
    assert [e.name for e in await store.list_environments("shop")] == ["production"]


async def test_an_environment_with_services_cannot_be_deleted(store: Store) -> None:
    await deploy(store, environment="staging")
    await store.set_config("shop", "staging", "env", {"MODE": "staging"})
    with pytest.raises(LegatoError) as caught:
        await store.delete_environment("shop", "staging")
    expect(caught, 409, "ENVIRONMENT_HAS_SERVICES")
    assert caught.value.details == {"services": ["web"]}
    assert [c.value for c in await store.config("shop", "staging", "env")] == ["staging"]


# configuration ------------------------------------------------------------------------------


async def test_set_config_then_config_reads_values_back_sorted_by_key(store: Store) -> None:
    await store.create_project("shop")
    await store.set_config("shop", "", "env", {"ZED": "z", "ALPHA": "a", "EMPTY": ""})
    found = await store.config("shop", "", "env")
    assert [(c.project, c.environment, c.kind, c.key, c.value) for c in found] == [
        ("shop", "", "env", "ALPHA", "a"), ("shop", "", "env", "EMPTY", ""),
        ("shop", "", "env", "ZED", "z")]


async def test_config_is_kept_per_level_and_kind(store: Store) -> None:
    await store.create_project("shop")
    await store.set_config("shop", "", "env", {"KEY": "project-env"})
    await store.set_config("shop", "", "secret", {"KEY": "project-secret"})
    await store.set_config("shop", "production", "env", {"KEY": "production-env"})
    await store.set_config("shop", "production", "secret", {"KEY": "production-secret"})
    for environment, kind, value in [("", "env", "project-env"), ("", "secret", "project-secret"),
                                     ("production", "env", "production-env"),
                                     ("production", "secret", "production-secret")]:
        assert [c.value for c in await store.config("shop", environment, kind)] == [value]  # type: ignore[arg-type]


async def test_set_config_overwrites_a_key_and_none_deletes_it(store: Store) -> None:
    await store.create_project("shop")
    await store.set_config("shop", "production", "secret", {"A": "1", "B": "2", "C": "3"})
    await store.set_config("shop", "production", "secret", {"A": "one", "B": None, "GONE": None})
    assert [(c.key, c.value) for c in await store.config("shop", "production", "secret")] == [
        ("A", "one"), ("C", "3")]
    assert [k for k, _ in await store.config_keys("shop", "production", "secret")] == ["A", "C"]


async def test_setting_a_key_again_moves_its_updated_at(store: Store) -> None:
    await store.create_project("shop")
    await store.set_config("shop", "", "env", {"A": "1", "B": "2"})
    before = dict(await store.config_keys("shop", "", "env"))
    await store.set_config("shop", "", "env", {"A": "again"})
    after = dict(await store.config_keys("shop", "", "env"))
    assert after["A"] > before["A"]
    assert after["B"] == before["B"]


async def test_config_keys_lists_keys_without_decrypting_anything(
    store: Store, db_path: Path
) -> None:
    await store.create_project("shop")
    await store.set_config("shop", "", "secret", {"B": "2", "A": "1"})
    with raw(db_path) as db:
        db.execute("UPDATE config_vars SET value = 'enc:v1:dk_gone:AAAA'")
    assert [k for k, _ in await store.config_keys("shop", "", "secret")] == ["A", "B"]
    with pytest.raises(DecryptionFailed):
        await store.config("shop", "", "secret")


async def test_project_level_config_of_a_missing_project_is_project_not_found(store: Store) -> None:
    with pytest.raises(LegatoError) as caught:
        await store.set_config("nope", "", "env", {"A": "1"})
    expect(caught, 404, "PROJECT_NOT_FOUND")


# encryption at rest -------------------------------------------------------------------------


async def test_no_plaintext_value_is_stored_in_any_table_or_in_the_file(
    store: Store, db_path: Path
) -> None:
    await seed(store)
    with raw(db_path) as db:
        tables = [r["name"] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        assert {"config_vars", "webhooks", "deployments", "data_keys"} <= set(tables)
        cells = [str(value) for table in tables
                 for row in db.execute(f'SELECT * FROM "{table}"')  # noqa: S608
                 for value in tuple(row)]
    assert cells  # the dump really read rows
    for plaintext in PLAINTEXTS:
        assert not [cell for cell in cells if plaintext in cell], plaintext
    files = b"".join(p.read_bytes() for p in db_path.parent.iterdir() if p.name.startswith("db"))
    for plaintext in PLAINTEXTS:
        assert plaintext.encode() not in files, plaintext


async def test_stored_values_are_ciphertexts_of_the_active_data_key(
    store: Store, db_path: Path
) -> None:
    await seed(store)
    found = stored_ciphertexts(db_path)
    assert len(found) == 4 + 1 + 2  # config, webhook, spec env + resolved env
    assert {key_id_of(c) for c in found} == {store.keyring.active}


def _copy_config(db: sqlite3.Connection, source: tuple[str, str, str, str],
                 target: tuple[str, str, str, str]) -> None:
    db.execute(
        "INSERT OR REPLACE INTO config_vars (project, environment, kind, key, value, updated_at)"
        " SELECT ?, ?, ?, ?, value, updated_at FROM config_vars WHERE project = ?"
        " AND environment = ? AND kind = ? AND key = ?", (*target, *source))


@pytest.mark.parametrize("target", [
    ("shop", "", "secret", "API_KEY"),
    ("shop", "production", "secret", "DB_PASSWORD"),
    ("shop", "", "env", "DB_PASSWORD"),
    ("blog", "", "secret", "DB_PASSWORD"),
], ids=["other key", "other environment", "other kind", "other project"])
async def test_a_config_value_moved_to_another_row_fails_to_decrypt(
    store: Store, db_path: Path, target: tuple[str, str, str, str]
) -> None:
    await store.create_project("shop")
    await store.create_project("blog")
    await store.set_config("shop", "", "secret", {"DB_PASSWORD": CONFIG_SECRET})
    with raw(db_path) as db:
        _copy_config(db, ("shop", "", "secret", "DB_PASSWORD"), target)
    project, environment, kind, _ = target
    with pytest.raises(DecryptionFailed):
        await store.config(project, environment, kind)  # type: ignore[arg-type]


async def test_a_webhook_secret_moved_to_another_webhook_fails_to_decrypt(
    store: Store, db_path: Path
) -> None:
    await store.create_project("shop")
    first = await store.create_webhook("shop", "github", "first-secret")
    second = await store.create_webhook("shop", "gitlab", "second-secret")
    with raw(db_path) as db:
        db.execute("UPDATE webhooks SET secret = (SELECT secret FROM webhooks WHERE id = ?)"
                   " WHERE id = ?", (first.id, second.id))
    assert [w.secret for w in await store.list_webhooks(provider="github")] == ["first-secret"]
    with pytest.raises(DecryptionFailed):
        await store.list_webhooks(provider="gitlab")


async def test_a_deployment_env_value_moved_to_another_deployment_fails_to_decrypt(
    store: Store, db_path: Path
) -> None:
    await deploy(store, "web", env={"DB_PASSWORD": SPEC_SECRET})
    await deploy(store, "api", env={"DB_PASSWORD": "api-password"})
    with raw(db_path) as db:
        web = json.loads(db.execute("SELECT spec FROM deployments WHERE service = 'web'").fetchone()[0])
        api = json.loads(db.execute("SELECT spec FROM deployments WHERE service = 'api'").fetchone()[0])
        api["env"]["DB_PASSWORD"] = web["env"]["DB_PASSWORD"]
        db.execute("UPDATE deployments SET spec = ? WHERE service = 'api'", (json.dumps(api),))
    assert (await store.list_deployments("web"))[0].spec.env == {"DB_PASSWORD": SPEC_SECRET}
    with pytest.raises(DecryptionFailed):
        await store.list_deployments("api")


async def test_a_deployment_env_value_moved_to_another_key_fails_to_decrypt(
    store: Store, db_path: Path
) -> None:
    await deploy(store, env={"DB_PASSWORD": SPEC_SECRET, "API_KEY": "k-123"})
    with raw(db_path) as db:
        spec = json.loads(db.execute("SELECT spec FROM deployments").fetchone()[0])
        spec["env"]["API_KEY"] = spec["env"]["DB_PASSWORD"]
        db.execute("UPDATE deployments SET spec = ?", (json.dumps(spec),))
    with pytest.raises(DecryptionFailed):
        await store.list_deployments("web")


# webhooks -----------------------------------------------------------------------------------


async def test_create_webhook_returns_it_with_its_secret_decrypted(store: Store) -> None:
    await store.create_project("shop")
    webhook = await store.create_webhook("shop", "github", WEBHOOK_SECRET)
    assert webhook.id.startswith("whk_")
    assert (webhook.project, webhook.provider, webhook.secret) == ("shop", "github", WEBHOOK_SECRET)
    assert webhook.enabled is True
    assert webhook.last_delivery is None
    assert await store.list_webhooks() == [webhook]


async def test_list_webhooks_filters_by_project_and_provider(store: Store) -> None:
    await store.create_project("shop")
    await store.create_project("blog")
    shop_github = await store.create_webhook("shop", "github", "a")
    shop_gitlab = await store.create_webhook("shop", "gitlab", "b")
    blog_github = await store.create_webhook("blog", "github", "c")
    assert {w.id for w in await store.list_webhooks(project="shop")} == {shop_github.id, shop_gitlab.id}
    assert {w.id for w in await store.list_webhooks(provider="github")} == {
        shop_github.id, blog_github.id}
    assert await store.list_webhooks(project="shop", provider="github") == [shop_github]
    assert await store.list_webhooks(project="none") == []


async def test_delete_webhook_forgets_it_and_a_missing_one_is_404(store: Store) -> None:
    await store.create_project("shop")
    kept = await store.create_webhook("shop", "github", "a")
    gone = await store.create_webhook("shop", "github", "b")
    await store.delete_webhook(gone.id)
    assert await store.list_webhooks() == [kept]
    with pytest.raises(LegatoError) as caught:
        await store.delete_webhook(gone.id)
    expect(caught, 404, "WEBHOOK_NOT_FOUND")


async def test_record_delivery_stores_the_last_delivery_on_the_webhook(store: Store) -> None:
    await store.create_project("shop")
    webhook = await store.create_webhook("shop", "github", "s")
    assert await store.record_delivery("github", "d-1", webhook, "push", "deployed") is True
    [stored] = await store.list_webhooks()
    assert stored.last_delivery is not None
    assert {k: stored.last_delivery[k] for k in ("id", "event", "result")} == {
        "id": "d-1", "event": "push", "result": "deployed"}
    assert "received_at" in stored.last_delivery


async def test_a_replayed_delivery_id_is_refused_and_changes_nothing(store: Store) -> None:
    await store.create_project("shop")
    webhook = await store.create_webhook("shop", "github", "s")
    assert await store.record_delivery("github", "d-1", webhook, "push", "deployed") is True
    first = (await store.list_webhooks())[0].last_delivery
    assert await store.record_delivery("github", "d-1", webhook, "push", "ignored") is False
    assert (await store.list_webhooks())[0].last_delivery == first


async def test_the_same_delivery_id_from_another_provider_is_not_a_replay(store: Store) -> None:
    await store.create_project("shop")
    github = await store.create_webhook("shop", "github", "s")
    gitlab = await store.create_webhook("shop", "gitlab", "s")
    assert await store.record_delivery("github", "d-1", github, "push", "deployed") is True
    assert await store.record_delivery("gitlab", "d-1", gitlab, "push", "deployed") is True
    assert await store.record_delivery("github", "d-2", github, "push", "deployed") is True


# groups -------------------------------------------------------------------------------------


async def test_create_group_returns_it_and_get_and_list_read_it_back(store: Store) -> None:
    group = await store.create_group("shops", "all the shops")
    assert group.id.startswith("grp_")
    assert (group.name, group.description) == ("shops", "all the shops")
    assert await store.get_group(group.id) == group
    await store.create_group("apps")
    assert [g.name for g in await store.list_groups()] == ["apps", "shops"]


async def test_a_taken_group_name_is_a_409_group_exists(store: Store) -> None:
    await store.create_group("shops")
    other = await store.create_group("apps")
    with pytest.raises(LegatoError) as caught:
        await store.create_group("shops")
    expect(caught, 409, "GROUP_EXISTS")
    with pytest.raises(LegatoError) as caught:
        await store.update_group(other.id, name="shops", description=None)
    expect(caught, 409, "GROUP_EXISTS")
    assert (await store.get_group(other.id)).name == "apps"


async def test_update_group_changes_only_what_is_given(store: Store) -> None:
    group = await store.create_group("shops", "old")
    renamed = await store.update_group(group.id, name="stores", description=None)
    assert (renamed.name, renamed.description) == ("stores", "old")
    described = await store.update_group(group.id, name=None, description="new")
    assert (described.name, described.description) == ("stores", "new")
    assert (await store.update_group(group.id, name="stores", description="")).description == ""


@pytest.mark.parametrize("call", ["get", "update", "delete", "assign", "create_project"])
async def test_a_missing_group_is_a_404_group_not_found(store: Store, call: str) -> None:
    await store.create_project("shop")
    with pytest.raises(LegatoError) as caught:
        if call == "get":
            await store.get_group("grp_none")
        elif call == "update":
            await store.update_group("grp_none", name="x", description=None)
        elif call == "delete":
            await store.delete_group("grp_none")
        elif call == "assign":
            await store.assign_group("grp_none", "shop", member=True)
        else:
            await store.create_project("blog", group_id="grp_none")
    expect(caught, 404, "GROUP_NOT_FOUND")
    assert not await store.project_exists("blog")


async def test_projects_join_and_leave_groups(store: Store) -> None:
    group = await store.create_group("shops")
    await store.create_project("shop", group_id=group.id)
    await store.create_project("blog")
    assert (await store.assign_group(group.id, "blog", member=True)).group_id == group.id
    assert [p.name for p in await store.list_projects(group_id=group.id)] == ["blog", "shop"]
    assert (await store.assign_group(group.id, "shop", member=False)).group_id is None
    assert [p.name for p in await store.list_projects(group_id=group.id)] == ["blog"]


async def test_update_project_moves_a_project_between_groups(store: Store) -> None:
    shops, apps = await store.create_group("shops"), await store.create_group("apps")
    await store.create_project("shop", group_id=shops.id)
    assert (await store.update_project("shop", {"group_id": apps.id})).group_id == apps.id
    assert (await store.update_project("shop", {"group_id": None})).group_id is None
    with pytest.raises(LegatoError) as caught:
        await store.update_project("shop", {"group_id": "grp_none"})
    expect(caught, 404, "GROUP_NOT_FOUND")


async def test_leaving_a_group_the_project_is_not_in_is_404_not_in_group(store: Store) -> None:
    shops, apps = await store.create_group("shops"), await store.create_group("apps")
    await store.create_project("shop", group_id=apps.id)
    with pytest.raises(LegatoError) as caught:
        await store.assign_group(shops.id, "shop", member=False)
    expect(caught, 404, "NOT_IN_GROUP")
    assert (await store.get_project("shop")).group_id == apps.id


async def test_deleting_a_group_keeps_its_projects(store: Store) -> None:
    group = await store.create_group("shops")
    await store.create_project("shop", group_id=group.id)
    await store.create_project("blog", group_id=group.id)
    await store.delete_group(group.id)
    assert await store.list_groups() == []
    assert [(p.name, p.group_id) for p in await store.list_projects()] == [
        ("blog", None), ("shop", None)]


# data keys ----------------------------------------------------------------------------------


async def test_rotate_keys_reencrypts_everything_under_a_new_key(store: Store, db_path: Path) -> None:
    ids = await seed(store)
    old_key = store.keyring.active
    result = await store.rotate_keys()

    new_key = result["key_id"]
    assert new_key != old_key
    assert store.keyring.active == new_key
    assert result["retired"] == [old_key]
    assert result["reencrypted"] == {"config": 4, "webhooks": 1, "deployments": 1,
                                     "webhook_endpoints": 0, "idempotency_keys": 0}
    await assert_seed_reads_back(store, ids)
    found = stored_ciphertexts(db_path)
    assert len(found) == 7
    assert {key_id_of(c) for c in found} == {new_key}
    with raw(db_path) as db:
        rows = [(r["id"], r["active"], r["master_id"]) for r in db.execute("SELECT * FROM data_keys")]
    assert rows == [(new_key, 1, store.keyring.master_id)]


async def test_values_sealed_under_a_retired_key_no_longer_decrypt(store: Store, db_path: Path) -> None:
    await store.create_project("shop")
    await store.set_config("shop", "", "secret", {"DB_PASSWORD": CONFIG_SECRET})
    [old] = stored_ciphertexts(db_path)
    await store.rotate_keys()
    [new] = stored_ciphertexts(db_path)
    aad = config_aad("shop", "", "secret", "DB_PASSWORD")
    assert new != old
    assert store.keyring.decrypt(new, aad) == CONFIG_SECRET
    with pytest.raises(DecryptionFailed, match="unknown data key"):
        store.keyring.decrypt(old, aad)


async def test_new_values_after_rotation_use_the_new_key(store: Store, db_path: Path) -> None:
    await store.create_project("shop")
    result = await store.rotate_keys()
    await store.set_config("shop", "", "secret", {"DB_PASSWORD": CONFIG_SECRET})
    assert [key_id_of(c) for c in stored_ciphertexts(db_path)] == [result["key_id"]]


async def test_a_rotation_that_cannot_decrypt_a_value_changes_nothing(
    store: Store, db_path: Path
) -> None:
    ids = await seed(store)
    with raw(db_path) as db:
        _copy_config(db, ("shop", "", "secret", "DB_PASSWORD"), ("shop", "", "secret", "MOVED"))
        keys_before = [tuple(r) for r in db.execute("SELECT * FROM data_keys")]
    values_before = stored_ciphertexts(db_path)
    old_key = store.keyring.active

    with pytest.raises(DecryptionFailed):
        await store.rotate_keys()

    assert store.keyring.active == old_key
    assert stored_ciphertexts(db_path) == values_before
    with raw(db_path) as db:
        assert [tuple(r) for r in db.execute("SELECT * FROM data_keys")] == keys_before
        db.execute("DELETE FROM config_vars WHERE key = 'MOVED'")
    await assert_seed_reads_back(store, ids)


@pytest.mark.parametrize("rotated", [False, True], ids=["as written", "after rotation"])
async def test_a_store_reopened_with_the_same_master_key_reads_everything(
    store: Store, db_path: Path, master_key: bytes, rotated: bool
) -> None:
    ids = await seed(store)
    if rotated:
        await store.rotate_keys()
    active = store.keyring.active
    reopened = Store(db_path, Keyring(master_key))
    try:
        assert reopened.keyring.active == active
        await assert_seed_reads_back(reopened, ids)
        deployment = await reopened.current_deployment("web")
        assert deployment is not None
        assert deployment.spec.env == {"DB_PASSWORD": SPEC_SECRET}
        assert deployment.env == {"DB_PASSWORD": RESOLVED_SECRET}
    finally:
        reopened.close()


@pytest.mark.parametrize("rotated", [False, True], ids=["as written", "after rotation"])
async def test_a_store_reopened_with_another_master_key_refuses_to_open(
    store: Store, db_path: Path, rotated: bool
) -> None:
    await seed(store)
    if rotated:
        await store.rotate_keys()
    with pytest.raises(DecryptionFailed, match="master key"):
        Store(db_path, Keyring(secrets.token_bytes(32)))
