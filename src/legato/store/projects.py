"""Projects, environments, groups, encrypted configuration, webhooks and the data keys: the
part of the Store behind SPEC §4 "Projects and environments".

Every configuration value and webhook secret is stored encrypted (`legato.crypto`), bound by
associated data to its project, environment, kind and key.
"""

from __future__ import annotations

import json
import secrets
import sqlite3
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, TypeVar

from legato.crypto import DecryptionFailed, Keyring
from legato.errors import Conflict, NotFound
from legato.store.access import reseal_idempotency
from legato.store.hooks import reseal_endpoints
from legato.store.models import ConfigKind, ConfigVar, Environment, Group, Project, Webhook

T = TypeVar("T")
PRODUCTION = "production"


class ProjectNotFound(NotFound):
    code = "PROJECT_NOT_FOUND"

    def __init__(self, name: str) -> None:
        super().__init__(f"project not found: {name}", details={"name": name})


class EnvironmentNotFound(NotFound):
    code = "ENVIRONMENT_NOT_FOUND"

    def __init__(self, project: str, name: str) -> None:
        super().__init__(f"environment not found: {project}/{name}",
                         details={"project": project, "environment": name})


def _now() -> str:
    return datetime.now(UTC).isoformat()


def _dt(value: str) -> datetime:
    return datetime.fromisoformat(value)


def config_aad(project: str, environment: str, kind: str, key: str) -> str:
    return f"config:{project}:{environment}:{kind}:{key}"


def _webhook_aad(webhook_id: str) -> str:
    return f"webhook:{webhook_id}"


class ProjectRecords:
    """Mixed into Store: it supplies the connection, the keyring and the transactions."""

    keyring: Keyring

    if TYPE_CHECKING:
        async def _run(self, fn: Callable[[sqlite3.Connection], T]) -> T: ...
        async def _write(self, fn: Callable[[sqlite3.Connection], T]) -> T: ...

    # projects -------------------------------------------------------------------------------

    @staticmethod
    def _ensure_project(db: sqlite3.Connection, project: str, environment: str) -> None:
        """A project and environment named by a deployed spec exist from then on (seed 001's
        payload names its project without creating it first)."""
        stamp = _now()
        db.execute("INSERT OR IGNORE INTO projects (name, created_at, updated_at) VALUES (?, ?, ?)",
                   (project, stamp, stamp))
        for name in {PRODUCTION, environment}:
            db.execute(
                "INSERT OR IGNORE INTO environments (project, name, branch, created_at, updated_at)"
                " VALUES (?, ?, ?, ?, ?)",
                (project, name, "main" if name == PRODUCTION else None, stamp, stamp))

    async def create_project(self, name: str, *, description: str = "",
                             repository: str | None = None, group_id: str | None = None,
                             branch: str = "main") -> Project:
        def create(db: sqlite3.Connection) -> Project:
            if db.execute("SELECT 1 FROM projects WHERE name = ?", (name,)).fetchone():
                raise Conflict(f"project name taken: {name}", code="PROJECT_EXISTS",
                               details={"name": name})
            if group_id is not None:
                _load_group(db, group_id)
            stamp = _now()
            db.execute(
                "INSERT INTO projects (name, description, repository, group_id, created_at,"
                " updated_at) VALUES (?, ?, ?, ?, ?, ?)",
                (name, description, repository, group_id, stamp, stamp))
            db.execute(
                "INSERT INTO environments (project, name, branch, created_at, updated_at)"
                " VALUES (?, ?, ?, ?, ?)", (name, PRODUCTION, branch, stamp, stamp))
            return _load_project(db, name)

        return await self._write(create)

    async def get_project(self, name: str) -> Project:
        return await self._run(lambda db: _load_project(db, name))

    async def list_projects(self, *, after: str | None = None, limit: int = 100,
                            group_id: str | None = None,
                            names: Sequence[str] | None = None) -> list[Project]:
        """Projects by name (of `group_id`, among `names`, if given)."""
        def query(db: sqlite3.Connection) -> list[Project]:
            sql, args = "SELECT * FROM projects WHERE name > ?", [after or ""]
            if group_id is not None:
                sql, args = sql + " AND group_id = ?", [*args, group_id]
            if names is not None:
                marks = ", ".join("?" for _ in names) or "NULL"
                sql, args = sql + f" AND name IN ({marks})", [*args, *names]
            rows = db.execute(sql + " ORDER BY name LIMIT ?", (*args, limit)).fetchall()
            return [_project(r) for r in rows]

        return await self._run(query)

    async def project_exists(self, name: str) -> bool:
        return await self._run(lambda db: db.execute(
            "SELECT 1 FROM projects WHERE name = ?", (name,)).fetchone() is not None)

    async def update_project(self, name: str, changes: Mapping[str, Any]) -> Project:
        """Set description, repository, group_id or auto_deploy (only those given)."""
        allowed = {"description", "repository", "group_id", "auto_deploy"}

        def update(db: sqlite3.Connection) -> Project:
            _load_project(db, name)
            fields = {k: v for k, v in changes.items() if k in allowed}
            if fields.get("group_id") is not None:
                _load_group(db, fields["group_id"])
            for column, value in fields.items():  # column names come from `allowed` only
                db.execute(f"UPDATE projects SET {column} = ? WHERE name = ?",  # noqa: S608
                           (int(value) if isinstance(value, bool) else value, name))
            db.execute("UPDATE projects SET updated_at = ? WHERE name = ?", (_now(), name))
            return _load_project(db, name)

        return await self._write(update)

    async def delete_project(self, name: str) -> None:
        """Forget a project with everything it owns; its services must be gone already."""
        def delete(db: sqlite3.Connection) -> None:
            _load_project(db, name)
            left = db.execute("SELECT name FROM services WHERE project = ?", (name,)).fetchall()
            if left:
                raise Conflict(f"project {name} still has services",
                               code="PROJECT_HAS_SERVICES",
                               details={"services": [r["name"] for r in left]})
            db.execute("DELETE FROM projects WHERE name = ?", (name,))

        await self._write(delete)

    # environments ---------------------------------------------------------------------------

    async def create_environment(self, project: str, name: str, *, branch: str | None,
                                 pull_request: int | None = None) -> Environment:
        def create(db: sqlite3.Connection) -> Environment:
            _load_project(db, project)
            found = db.execute("SELECT 1 FROM environments WHERE project = ? AND name = ?",
                               (project, name)).fetchone()
            if found:
                raise Conflict(f"environment exists: {project}/{name}", code="ENVIRONMENT_EXISTS",
                               details={"project": project, "environment": name})
            stamp = _now()
            db.execute(
                "INSERT INTO environments (project, name, branch, pull_request, created_at,"
                " updated_at) VALUES (?, ?, ?, ?, ?, ?)",
                (project, name, branch, pull_request, stamp, stamp))
            return _load_environment(db, project, name)

        return await self._write(create)

    async def get_environment(self, project: str, name: str) -> Environment:
        return await self._run(lambda db: _load_environment(db, project, name))

    async def list_environments(self, project: str) -> list[Environment]:
        def query(db: sqlite3.Connection) -> list[Environment]:
            _load_project(db, project)
            rows = db.execute("SELECT * FROM environments WHERE project = ? ORDER BY name != ?,"
                              " name", (project, PRODUCTION)).fetchall()
            return [_environment(r) for r in rows]

        return await self._run(query)

    async def environments_on_branch(self, project: str, branch: str) -> list[Environment]:
        rows = await self._run(lambda db: db.execute(
            "SELECT * FROM environments WHERE project = ? AND branch = ? AND pull_request IS NULL"
            " ORDER BY name", (project, branch)).fetchall())
        return [_environment(r) for r in rows]

    async def update_environment(self, project: str, name: str, *, branch: str | None) -> Environment:
        def update(db: sqlite3.Connection) -> Environment:
            _load_environment(db, project, name)
            db.execute("UPDATE environments SET branch = ?, updated_at = ? WHERE project = ?"
                       " AND name = ?", (branch, _now(), project, name))
            return _load_environment(db, project, name)

        return await self._write(update)

    async def delete_environment(self, project: str, name: str) -> None:
        def delete(db: sqlite3.Connection) -> None:
            _load_environment(db, project, name)
            if name == PRODUCTION:
                raise Conflict("the production environment cannot be deleted",
                               code="ENVIRONMENT_PROTECTED",
                               details={"project": project, "environment": name})
            left = db.execute("SELECT name FROM services WHERE project = ? AND environment = ?",
                              (project, name)).fetchall()
            if left:
                raise Conflict(f"environment {project}/{name} still has services",
                               code="ENVIRONMENT_HAS_SERVICES",
                               details={"services": [r["name"] for r in left]})
            db.execute("DELETE FROM config_vars WHERE project = ? AND environment = ?",
                       (project, name))
            db.execute("DELETE FROM environments WHERE project = ? AND name = ?", (project, name))

        await self._write(delete)

    # configuration --------------------------------------------------------------------------

    async def set_config(self, project: str, environment: str, kind: ConfigKind,
                         values: Mapping[str, str | None]) -> None:
        """Upsert values (None deletes one), encrypted, in one transaction."""
        def write(db: sqlite3.Connection) -> None:
            if environment:
                _load_environment(db, project, environment)
            else:
                _load_project(db, project)
            stamp = _now()
            for key, value in values.items():
                if value is None:
                    db.execute("DELETE FROM config_vars WHERE project = ? AND environment = ?"
                               " AND kind = ? AND key = ?", (project, environment, kind, key))
                    continue
                sealed = self.keyring.encrypt(value, config_aad(project, environment, kind, key))
                db.execute(
                    "INSERT INTO config_vars (project, environment, kind, key, value, updated_at)"
                    " VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (project, environment, kind, key)"
                    " DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at",
                    (project, environment, kind, key, sealed, stamp))

        await self._write(write)

    async def config(self, project: str, environment: str, kind: ConfigKind) -> list[ConfigVar]:
        """The decrypted values of one scope; a value that does not decrypt raises."""
        rows = await self._run(lambda db: db.execute(
            "SELECT * FROM config_vars WHERE project = ? AND environment = ? AND kind = ?"
            " ORDER BY key", (project, environment, kind)).fetchall())
        return [ConfigVar(project=r["project"], environment=r["environment"], kind=r["kind"],
                          key=r["key"], updated_at=_dt(r["updated_at"]), value=self._open(r))
                for r in rows]

    def _open(self, row: sqlite3.Row) -> str:
        """A stored value, decrypted; the error names which one did not decrypt."""
        try:
            return self.keyring.decrypt(row["value"], config_aad(
                row["project"], row["environment"], row["kind"], row["key"]))
        except DecryptionFailed as exc:
            scope = (f"environment {row['project']}/{row['environment']}" if row["environment"]
                     else f"project {row['project']}")
            kind = "secret" if row["kind"] == "secret" else "variable"
            raise DecryptionFailed(
                f"{kind} {row['key']} of {scope} cannot be decrypted ({exc.message}); set it "
                "again", details={"key": row["key"], "kind": row["kind"],
                                   "project": row["project"],
                                   "environment": row["environment"] or None}) from exc

    async def config_keys(self, project: str, environment: str,
                          kind: ConfigKind) -> list[tuple[str, datetime]]:
        """Keys and when each was set, without decrypting anything (secrets are write-only)."""
        rows = await self._run(lambda db: db.execute(
            "SELECT key, updated_at FROM config_vars WHERE project = ? AND environment = ?"
            " AND kind = ? ORDER BY key", (project, environment, kind)).fetchall())
        return [(r["key"], _dt(r["updated_at"])) for r in rows]

    # webhooks -------------------------------------------------------------------------------

    async def create_webhook(self, project: str, provider: str, secret: str) -> Webhook:
        webhook_id = "whk_" + secrets.token_hex(8)

        def create(db: sqlite3.Connection) -> Webhook:
            _load_project(db, project)
            db.execute(
                "INSERT INTO webhooks (id, project, provider, secret, created_at)"
                " VALUES (?, ?, ?, ?, ?)",
                (webhook_id, project, provider,
                 self.keyring.encrypt(secret, _webhook_aad(webhook_id)), _now()))
            return self._webhook(db.execute("SELECT * FROM webhooks WHERE id = ?",
                                            (webhook_id,)).fetchone())

        return await self._write(create)

    async def list_webhooks(self, *, project: str | None = None,
                            provider: str | None = None) -> list[Webhook]:
        def query(db: sqlite3.Connection) -> list[sqlite3.Row]:
            sql, args = "SELECT * FROM webhooks WHERE 1 = 1", list[str]()
            if project is not None:
                sql, args = sql + " AND project = ?", [*args, project]
            if provider is not None:
                sql, args = sql + " AND provider = ?", [*args, provider]
            return db.execute(sql + " ORDER BY created_at, id", args).fetchall()

        return [self._webhook(r) for r in await self._run(query)]

    async def delete_webhook(self, webhook_id: str) -> None:
        def delete(db: sqlite3.Connection) -> None:
            if db.execute("DELETE FROM webhooks WHERE id = ?", (webhook_id,)).rowcount == 0:
                raise NotFound(f"webhook not found: {webhook_id}", code="WEBHOOK_NOT_FOUND",
                               details={"id": webhook_id})

        await self._write(delete)

    async def record_delivery(self, provider: str, delivery_id: str, webhook: Webhook,
                              event: str, result: str) -> bool:
        """Remember a delivery; False when its id was seen before (a replay: do nothing)."""
        def record(db: sqlite3.Connection) -> bool:
            stamp = _now()
            fresh = db.execute(
                "INSERT OR IGNORE INTO webhook_deliveries (provider, delivery_id, webhook_id,"
                " event, result, received_at) VALUES (?, ?, ?, ?, ?, ?)",
                (provider, delivery_id, webhook.id, event, result, stamp)).rowcount == 1
            if fresh:
                db.execute("UPDATE webhooks SET last_delivery = ? WHERE id = ?", (json.dumps({
                    "id": delivery_id, "event": event, "result": result, "received_at": stamp,
                }), webhook.id))
            return fresh

        return await self._write(record)

    async def record_outcome(self, webhook: Webhook, delivery_id: str, result: str) -> None:
        """What a recorded delivery led to (its last_delivery shows it)."""
        def record(db: sqlite3.Connection) -> None:
            db.execute("UPDATE webhook_deliveries SET result = ? WHERE provider = ?"
                       " AND delivery_id = ?", (result, webhook.provider, delivery_id))
            row = db.execute("SELECT last_delivery FROM webhooks WHERE id = ?",
                             (webhook.id,)).fetchone()
            last = json.loads(row["last_delivery"]) if row and row["last_delivery"] else None
            if last is not None and last.get("id") == delivery_id:
                db.execute("UPDATE webhooks SET last_delivery = ? WHERE id = ?",
                           (json.dumps({**last, "result": result}), webhook.id))

        await self._write(record)

    def _webhook(self, row: sqlite3.Row) -> Webhook:
        return Webhook(
            id=row["id"], project=row["project"], provider=row["provider"],
            secret=self.keyring.decrypt(row["secret"], _webhook_aad(row["id"])),
            enabled=bool(row["enabled"]), created_at=_dt(row["created_at"]),
            last_delivery=json.loads(row["last_delivery"]) if row["last_delivery"] else None)

    async def set_webhooks_enabled(self, project: str, enabled: bool) -> None:
        def update(db: sqlite3.Connection) -> None:
            _load_project(db, project)
            db.execute("UPDATE projects SET auto_deploy = ?, updated_at = ? WHERE name = ?",
                       (int(enabled), _now(), project))

        await self._write(update)

    # groups ---------------------------------------------------------------------------------

    async def create_group(self, name: str, description: str = "") -> Group:
        group_id = "grp_" + secrets.token_hex(6)

        def create(db: sqlite3.Connection) -> Group:
            if db.execute("SELECT 1 FROM groups WHERE name = ?", (name,)).fetchone():
                raise Conflict(f"group name taken: {name}", code="GROUP_EXISTS",
                               details={"name": name})
            stamp = _now()
            db.execute("INSERT INTO groups (id, name, description, created_at, updated_at)"
                       " VALUES (?, ?, ?, ?, ?)", (group_id, name, description, stamp, stamp))
            return _load_group(db, group_id)

        return await self._write(create)

    async def get_group(self, group_id: str) -> Group:
        return await self._run(lambda db: _load_group(db, group_id))

    async def list_groups(self) -> list[Group]:
        rows = await self._run(lambda db: db.execute("SELECT * FROM groups ORDER BY name")
                               .fetchall())
        return [_group(r) for r in rows]

    async def update_group(self, group_id: str, *, name: str | None,
                           description: str | None) -> Group:
        def update(db: sqlite3.Connection) -> Group:
            group = _load_group(db, group_id)
            if name is not None and name != group.name and db.execute(
                    "SELECT 1 FROM groups WHERE name = ?", (name,)).fetchone():
                raise Conflict(f"group name taken: {name}", code="GROUP_EXISTS",
                               details={"name": name})
            db.execute("UPDATE groups SET name = ?, description = ?, updated_at = ? WHERE id = ?",
                       (name or group.name, group.description if description is None
                        else description, _now(), group_id))
            return _load_group(db, group_id)

        return await self._write(update)

    async def delete_group(self, group_id: str) -> None:
        def delete(db: sqlite3.Connection) -> None:
            _load_group(db, group_id)
            db.execute("UPDATE projects SET group_id = NULL WHERE group_id = ?", (group_id,))
            db.execute("DELETE FROM groups WHERE id = ?", (group_id,))

        await self._write(delete)

    async def assign_group(self, group_id: str, project: str, *, member: bool) -> Project:
        def assign(db: sqlite3.Connection) -> Project:
            _load_group(db, group_id)
            current = _load_project(db, project)
            if member:
                db.execute("UPDATE projects SET group_id = ?, updated_at = ? WHERE name = ?",
                           (group_id, _now(), project))
            elif current.group_id == group_id:
                db.execute("UPDATE projects SET group_id = NULL, updated_at = ? WHERE name = ?",
                           (_now(), project))
            else:
                raise NotFound(f"project {project} is not in group {group_id}",
                               code="NOT_IN_GROUP", details={"project": project})
            return _load_project(db, project)

        return await self._write(assign)

    # data keys ------------------------------------------------------------------------------

    async def rotate_keys(self) -> dict[str, Any]:
        """A new data key; every stored value re-encrypted under it in one transaction; the
        old keys deleted. A crash before COMMIT leaves the old keys and values intact."""
        keyring = self.keyring

        def rotate(db: sqlite3.Connection) -> dict[str, Any]:
            old_active = keyring.active
            old = [r["id"] for r in db.execute("SELECT id FROM data_keys")]
            key_id, wrapped = keyring.new_data_key()
            try:
                counts = _reseal(db, keyring)
                db.execute("DELETE FROM data_keys")
                db.execute("INSERT INTO data_keys (id, wrapped, master_id, active, created_at)"
                           " VALUES (?, ?, ?, 1, ?)", (key_id, wrapped, keyring.master_id, _now()))
            except BaseException:
                keyring.forget(key_id)
                keyring.active = old_active
                raise
            return {"key_id": key_id, "retired": old, "reencrypted": counts}

        result = await self._write(rotate)
        for key_id in result["retired"]:
            keyring.forget(key_id)
        return result


def _reseal(db: sqlite3.Connection, keyring: Keyring) -> dict[str, int]:
    """Decrypt every stored value under its key and encrypt it under the active one."""
    counts = {"config": 0, "webhooks": 0, "deployments": 0}
    for row in db.execute("SELECT * FROM config_vars").fetchall():
        aad = config_aad(row["project"], row["environment"], row["kind"], row["key"])
        db.execute("UPDATE config_vars SET value = ? WHERE project = ? AND environment = ?"
                   " AND kind = ? AND key = ?",
                   (keyring.encrypt(keyring.decrypt(row["value"], aad), aad), row["project"],
                    row["environment"], row["kind"], row["key"]))
        counts["config"] += 1
    for row in db.execute("SELECT id, secret FROM webhooks").fetchall():
        aad = _webhook_aad(row["id"])
        db.execute("UPDATE webhooks SET secret = ? WHERE id = ?",
                   (keyring.encrypt(keyring.decrypt(row["secret"], aad), aad), row["id"]))
        counts["webhooks"] += 1
    for row in db.execute("SELECT id, spec, env FROM deployments").fetchall():
        spec = json.loads(row["spec"])
        prefix = f"deployment:{row['id']}:env"
        spec["env"] = {k: keyring.encrypt(keyring.decrypt(v, f"{prefix}:{k}"), f"{prefix}:{k}")
                       for k, v in spec.get("env", {}).items()}
        env = (keyring.encrypt(keyring.decrypt(row["env"], prefix), prefix)
               if row["env"] else None)
        db.execute("UPDATE deployments SET spec = ?, env = ? WHERE id = ?",
                   (json.dumps(spec), env, row["id"]))
        counts["deployments"] += 1
    counts["webhook_endpoints"] = reseal_endpoints(db, keyring)
    counts["idempotency_keys"] = reseal_idempotency(db, keyring)
    return counts


def _project(row: sqlite3.Row) -> Project:
    return Project(name=row["name"], description=row["description"],
                   repository=row["repository"], group_id=row["group_id"],
                   auto_deploy=bool(row["auto_deploy"]), created_at=_dt(row["created_at"]),
                   updated_at=_dt(row["updated_at"]))


def _load_project(db: sqlite3.Connection, name: str) -> Project:
    row = db.execute("SELECT * FROM projects WHERE name = ?", (name,)).fetchone()
    if row is None:
        raise ProjectNotFound(name)
    return _project(row)


def _environment(row: sqlite3.Row) -> Environment:
    return Environment(project=row["project"], name=row["name"], branch=row["branch"],
                       pull_request=row["pull_request"], created_at=_dt(row["created_at"]),
                       updated_at=_dt(row["updated_at"]))


def _load_environment(db: sqlite3.Connection, project: str, name: str) -> Environment:
    row = db.execute("SELECT * FROM environments WHERE project = ? AND name = ?",
                     (project, name)).fetchone()
    if row is None:
        _load_project(db, project)
        raise EnvironmentNotFound(project, name)
    return _environment(row)


def _group(row: sqlite3.Row) -> Group:
    return Group(id=row["id"], name=row["name"], description=row["description"],
                 created_at=_dt(row["created_at"]), updated_at=_dt(row["updated_at"]))


def _load_group(db: sqlite3.Connection, group_id: str) -> Group:
    row = db.execute("SELECT * FROM groups WHERE id = ?", (group_id,)).fetchone()
    if row is None:
        raise NotFound(f"group not found: {group_id}", code="GROUP_NOT_FOUND",
                       details={"id": group_id})
    return _group(row)
