"""SQLite store (WAL), with services and current deployments also held in memory.

This process is the database's only writer, so, like Nomad's state store, reads of services
and of the deployments they run are answered from memory: the API's hot paths never wait for
a thread. Every write is a transaction run in a worker thread under one lock; its changes to
the in-memory copies are handed to the event loop after COMMIT and applied there before the
write returns, so memory is only ever touched by the loop and never shows an uncommitted
state. Everything else (deployment history, events, logs) is read from the database in a
thread.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import sqlite3
import threading
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

from legato.access import UNPRIVILEGED, Grant
from legato.crypto import Keyring
from legato.errors import (
    Conflict,
    DeploymentInProgress,
    DeploymentNotActive,
    DeploymentNotFound,
    PreconditionFailed,
    ServiceNotFound,
)
from legato.spec import Scaling, ServiceSpec, Sleep
from legato.store import access, hooks
from legato.store.access import AccessRecords
from legato.store.hooks import HookRecords
from legato.store.models import (
    FINISHED_DEPLOYMENT,
    STEPS,
    Deployment,
    DeploymentLog,
    Event,
    MetricPoint,
    Removal,
    Service,
    Token,
    etag_matches,
    spec_document,
    spec_etag,
)
from legato.store.projects import ProjectRecords

T = TypeVar("T")

MIGRATIONS: Sequence[str] = (
    """
    CREATE TABLE services (
        name TEXT PRIMARY KEY,
        project TEXT NOT NULL,
        environment TEXT NOT NULL,
        replicas INTEGER NOT NULL,
        stopped INTEGER NOT NULL DEFAULT 0,
        deployment_id TEXT,
        created_at TEXT NOT NULL,
        updated_at TEXT NOT NULL
    );
    CREATE INDEX services_project ON services(project, environment);
    CREATE TABLE deployments (
        id TEXT PRIMARY KEY,
        service TEXT NOT NULL,
        number INTEGER NOT NULL,
        spec TEXT NOT NULL,
        status TEXT NOT NULL,
        reason TEXT NOT NULL,
        actor TEXT NOT NULL,
        image_id TEXT,
        error TEXT,
        previous_id TEXT,
        steps TEXT NOT NULL DEFAULT '[]',
        created_at TEXT NOT NULL,
        updated_at TEXT NOT NULL,
        UNIQUE(service, number)
    );
    CREATE TABLE events (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        service TEXT NOT NULL,
        type TEXT NOT NULL,
        message TEXT NOT NULL,
        details TEXT NOT NULL,
        created_at TEXT NOT NULL
    );
    CREATE INDEX events_service ON events(service, id);
    CREATE TABLE tokens (
        id TEXT PRIMARY KEY,
        name TEXT NOT NULL,
        prefix TEXT NOT NULL,
        hash TEXT NOT NULL UNIQUE,
        role TEXT NOT NULL,
        projects TEXT NOT NULL DEFAULT '[]',
        created_at TEXT NOT NULL,
        expires_at TEXT,
        revoked_at TEXT,
        last_used_at TEXT
    );
    """,
    """
    CREATE TABLE removals (
        service TEXT PRIMARY KEY,
        keep_data INTEGER NOT NULL,
        requested_at TEXT NOT NULL
    );
    ALTER TABLE deployments ADD COLUMN fingerprint TEXT;
    ALTER TABLE deployments ADD COLUMN rollback_of TEXT;
    ALTER TABLE deployments ADD COLUMN forced INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE deployments ADD COLUMN promoted_at TEXT;
    CREATE TABLE deployment_logs (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        deployment_id TEXT NOT NULL,
        step TEXT NOT NULL,
        message TEXT NOT NULL,
        created_at TEXT NOT NULL
    );
    CREATE INDEX deployment_logs_deployment ON deployment_logs(deployment_id, id);
    """,
    """
    CREATE TABLE data_keys (
        id TEXT PRIMARY KEY,
        wrapped TEXT NOT NULL,
        master_id TEXT NOT NULL,
        active INTEGER NOT NULL DEFAULT 0,
        created_at TEXT NOT NULL
    );
    CREATE TABLE groups (
        id TEXT PRIMARY KEY,
        name TEXT NOT NULL UNIQUE,
        description TEXT NOT NULL DEFAULT '',
        created_at TEXT NOT NULL,
        updated_at TEXT NOT NULL
    );
    CREATE TABLE projects (
        name TEXT PRIMARY KEY,
        description TEXT NOT NULL DEFAULT '',
        repository TEXT,
        group_id TEXT REFERENCES groups(id) ON DELETE SET NULL,
        auto_deploy INTEGER NOT NULL DEFAULT 1,
        created_at TEXT NOT NULL,
        updated_at TEXT NOT NULL
    );
    CREATE TABLE environments (
        project TEXT NOT NULL REFERENCES projects(name) ON DELETE CASCADE,
        name TEXT NOT NULL,
        branch TEXT,
        pull_request INTEGER,
        created_at TEXT NOT NULL,
        updated_at TEXT NOT NULL,
        PRIMARY KEY (project, name)
    );
    CREATE TABLE config_vars (
        project TEXT NOT NULL REFERENCES projects(name) ON DELETE CASCADE,
        environment TEXT NOT NULL DEFAULT '',
        kind TEXT NOT NULL,
        key TEXT NOT NULL,
        value TEXT NOT NULL,
        updated_at TEXT NOT NULL,
        PRIMARY KEY (project, environment, kind, key)
    );
    CREATE TABLE webhooks (
        id TEXT PRIMARY KEY,
        project TEXT NOT NULL REFERENCES projects(name) ON DELETE CASCADE,
        provider TEXT NOT NULL,
        secret TEXT NOT NULL,
        enabled INTEGER NOT NULL DEFAULT 1,
        created_at TEXT NOT NULL,
        last_delivery TEXT
    );
    CREATE TABLE webhook_deliveries (
        provider TEXT NOT NULL,
        delivery_id TEXT NOT NULL,
        webhook_id TEXT,
        event TEXT NOT NULL,
        result TEXT NOT NULL,
        received_at TEXT NOT NULL,
        PRIMARY KEY (provider, delivery_id)
    );
    ALTER TABLE deployments ADD COLUMN env TEXT;
    ALTER TABLE deployments ADD COLUMN build TEXT;
    INSERT INTO projects (name, created_at, updated_at)
        SELECT DISTINCT project, MIN(created_at), MIN(created_at) FROM services GROUP BY project;
    INSERT INTO environments (project, name, branch, created_at, updated_at)
        SELECT DISTINCT project, environment, CASE environment WHEN 'production' THEN 'main' END,
               MIN(created_at), MIN(created_at)
        FROM services GROUP BY project, environment;
    INSERT OR IGNORE INTO environments (project, name, branch, created_at, updated_at)
        SELECT name, 'production', 'main', created_at, created_at FROM projects;
    """,
    """
    ALTER TABLE services ADD COLUMN scaling TEXT;
    ALTER TABLE services ADD COLUMN sleep TEXT;
    ALTER TABLE services ADD COLUMN sleeping INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE services ADD COLUMN slept_at TEXT;
    ALTER TABLE services ADD COLUMN woke_at TEXT;
    ALTER TABLE services ADD COLUMN last_scaled_at TEXT;
    UPDATE services SET
        scaling = (SELECT json_extract(d.spec, '$.scaling') FROM deployments d
                   WHERE d.id = services.deployment_id),
        sleep = (SELECT json_extract(d.spec, '$.sleep') FROM deployments d
                 WHERE d.id = services.deployment_id);
    CREATE TABLE metric_points (
        service TEXT NOT NULL,
        interval TEXT NOT NULL,
        at TEXT NOT NULL,
        data TEXT NOT NULL,
        PRIMARY KEY (service, interval, at)
    ) WITHOUT ROWID;
    CREATE INDEX metric_points_age ON metric_points(interval, at);
    CREATE TABLE settings (
        key TEXT PRIMARY KEY,
        value TEXT NOT NULL,
        updated_at TEXT NOT NULL
    );
    """,
    access.MIGRATION + hooks.MIGRATION,
)

_DEPLOYMENT_CACHE_MAX = 2048  # deployments kept in memory besides the services' current ones


def now() -> datetime:
    return datetime.now(UTC)


def _ts(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


def _dt(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value else None


def new_id(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(8)}"


class Store(ProjectRecords, AccessRecords, HookRecords):
    """All state lives here. Reads of services and current deployments come from memory;
    every write is a short transaction run off the event loop."""

    def __init__(self, path: Path, keyring: Keyring) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.keyring = keyring
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.row_factory = sqlite3.Row
        self._lock = threading.Lock()
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute("PRAGMA foreign_keys=ON")
        self._db.execute("PRAGMA busy_timeout=5000")
        self._migrate()
        self._load_keys()
        self._services: dict[str, Service] = {}
        self._deployments: dict[str, Deployment] = {}
        self._tokens: dict[str, Token] = {}  # hash -> token, see token_by_hash
        self._token_generation = 0
        self._removals: dict[str, Removal] = {}
        self._on_commit: list[Callable[[], None]] = []
        self.event_listeners: list[Callable[[Event], None]] = []  # called on the loop
        self._load()

    def _migrate(self) -> None:
        version = self._db.execute("PRAGMA user_version").fetchone()[0]
        for number, script in enumerate(MIGRATIONS[version:], start=version + 1):
            self._db.executescript(f"BEGIN; {script}; PRAGMA user_version = {number}; COMMIT;")

    def _load_keys(self) -> None:
        """Unwrap the data keys; the first start makes one."""
        rows = self._db.execute("SELECT * FROM data_keys").fetchall()
        if not rows:
            key_id, wrapped = self.keyring.new_data_key()
            self._db.execute(
                "INSERT INTO data_keys (id, wrapped, master_id, active, created_at)"
                " VALUES (?, ?, ?, 1, ?)", (key_id, wrapped, self.keyring.master_id, _ts(now())))
            return
        active = next((r["id"] for r in rows if r["active"]), None)
        self.keyring.load({r["id"]: r["wrapped"] for r in rows}, active)

    def _load(self) -> None:
        """Services and their current deployments into memory (once, at open)."""
        for row in self._db.execute("SELECT * FROM services"):
            self._services[row["name"]] = _service(row)
        for row in self._db.execute(
            "SELECT d.* FROM deployments d JOIN services s ON s.deployment_id = d.id"
        ):
            self._deployments[row["id"]] = self._deployment(row)
        for row in self._db.execute("SELECT * FROM removals"):
            self._removals[row["service"]] = _removal(row)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    async def _run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        def locked() -> T:
            with self._lock:
                return fn(self._db)

        return await asyncio.to_thread(locked)

    async def _write(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run `fn` in one transaction. The in-memory changes it queued (`_on_commit`) are
        scheduled on the loop after COMMIT, ahead of this coroutine's own resumption."""
        loop = asyncio.get_running_loop()

        def transaction(db: sqlite3.Connection) -> T:
            changes: list[Callable[[], None]] = []
            self._on_commit = changes
            db.execute("BEGIN IMMEDIATE")
            try:
                result = fn(db)
            except BaseException:
                db.execute("ROLLBACK")
                raise
            finally:
                self._on_commit = []
            db.execute("COMMIT")
            if changes:
                loop.call_soon_threadsafe(_apply, changes)
            return result

        return await self._run(transaction)

    def _check_etag(self, db: sqlite3.Connection, name: str, if_match: str) -> None:
        """PreconditionFailed unless the service's spec (as this transaction sees it) has an
        ETag that `if_match` names (a service that does not exist has none)."""
        row = db.execute("SELECT * FROM services WHERE name = ?", (name,)).fetchone()
        if row is None:
            raise PreconditionFailed(f"If-Match was given, but {name} has no spec yet",
                                     details={"name": name, "etag": None})
        service = _service(row)
        deployment = (self._load_deployment(db, service.deployment_id)
                      if service.deployment_id else None)
        etag = spec_etag(spec_document(service, deployment))
        if not etag_matches(if_match, etag):
            raise PreconditionFailed(
                f"the spec of {name} changed since it was read (If-Match {if_match} is not "
                f"{etag}); read it again and retry", details={"name": name, "etag": etag})

    async def ping(self) -> None:
        await self._run(lambda db: db.execute("SELECT 1").fetchone())

    # in-memory copies (changed on the loop only) -------------------------------------------

    def _reload_service(self, db: sqlite3.Connection, name: str) -> Service:
        """The service as this transaction left it; memory follows after COMMIT."""
        service = _load_service(db, name)
        self._on_commit.append(lambda: self._services.__setitem__(name, service))
        return service

    def _reload_deployment(self, db: sqlite3.Connection, deployment_id: str) -> Deployment:
        deployment = self._load_deployment(db, deployment_id)
        self._on_commit.append(lambda: self._remember(deployment))
        return deployment

    def _remember(self, deployment: Deployment) -> None:
        if len(self._deployments) >= _DEPLOYMENT_CACHE_MAX:
            current = {s.deployment_id for s in self._services.values()}
            self._deployments = {k: v for k, v in self._deployments.items() if k in current}
        self._deployments[deployment.id] = deployment

    # services -------------------------------------------------------------------------------

    def service_now(self, name: str) -> Service | None:
        """The service from memory, without waiting (None when there is none)."""
        return self._services.get(name)

    async def get_service(self, name: str) -> Service:
        service = self._services.get(name)
        if service is None:
            raise ServiceNotFound(name)
        return service

    async def list_services(
        self, project: str | None = None, environment: str | None = None
    ) -> list[Service]:
        return [
            s for _, s in sorted(self._services.items())
            if (not project or s.project == project)
            and (not environment or s.environment == environment)
        ]

    async def list_services_with_deployments(
        self,
        project: str | None = None,
        environment: str | None = None,
        *,
        after: str | None = None,
        limit: int | None = None,
        projects: Sequence[str] | None = None,
    ) -> list[tuple[Service, Deployment | None]]:
        """Services by name (after `after`, at most `limit`, of `projects` if given), each
        with its current deployment."""
        found = [s for s in await self.list_services(project, environment)
                 if (after is None or s.name > after)
                 and (projects is None or s.project in projects)]
        return [(s, self._deployments.get(s.deployment_id or "")) for s in found[:limit]]

    def deployment_now(self, service: Service) -> Deployment | None:
        """The service's current deployment, from memory (where current ones always are)."""
        return self._deployments.get(service.deployment_id or "")

    async def apply_spec(
        self, spec: ServiceSpec, *, actor: str, reason: str, supersede: bool = False,
        grant: Grant = UNPRIVILEGED, if_match: str | None = None,
    ) -> tuple[Service, Deployment | None]:
        """Create or update a service; a new deployment only when what runs changes (while one
        is in flight: DeploymentInProgress, unless `supersede`). A spec with privileged fields
        needs a `grant`; with `if_match`, the service's spec must still have that ETag."""
        grant.check(spec)

        def apply(db: sqlite3.Connection) -> tuple[Service, Deployment | None]:
            if if_match is not None:
                self._check_etag(db, spec.name, if_match)
            self._ensure_project(db, spec.project, spec.environment)
            row = db.execute("SELECT * FROM services WHERE name = ?", (spec.name,)).fetchone()
            stamp = _ts(now())
            policies = (spec.scaling.model_dump_json(), spec.sleep.model_dump_json())
            if row is None:
                db.execute(
                    "INSERT INTO services (name, project, environment, replicas, stopped,"
                    " deployment_id, created_at, updated_at, scaling, sleep)"
                    " VALUES (?, ?, ?, ?, 0, NULL, ?, ?, ?, ?)",
                    (spec.name, spec.project, spec.environment,
                     _within(spec.scaling, spec.replicas), stamp, stamp, *policies),
                )
                deployment = self._insert_deployment(db, spec, actor=actor, reason=reason)
                return self._reload_service(db, spec.name), deployment
            service = _service(row)
            if (service.project, service.environment) != (spec.project, spec.environment):
                raise Conflict(
                    f"service name taken: {spec.name} belongs to "
                    f"{service.project}/{service.environment}",
                    code="SERVICE_NAME_TAKEN",
                    details={"name": spec.name, "project": service.project},
                )
            current = self._load_deployment(db, service.deployment_id) if service.deployment_id else None
            # Replica counts and policies are the service's: changing only them starts nothing.
            same = current is not None and current.status != "failed" and current.spec.model_copy(
                update={"replicas": spec.replicas, "scaling": spec.scaling, "sleep": spec.sleep}
            ) == spec
            created = None if same else self._insert_deployment(
                db, spec, actor=actor, reason=reason, supersede=supersede
            )
            # An autoscaled service keeps the count its autoscaler chose (within the bounds).
            replicas = (_within(spec.scaling, service.replicas) if spec.scaling.mode == "auto"
                        else spec.replicas)
            db.execute(
                "UPDATE services SET replicas = ?, stopped = 0, scaling = ?, sleep = ?,"
                " updated_at = ? WHERE name = ?",
                (replicas, *policies, stamp, spec.name),
            )
            return self._reload_service(db, spec.name), created

        return await self._write(apply)

    async def set_replicas(
        self, name: str, replicas: int, *, expect: int | None = None,
        if_match: str | None = None,
    ) -> tuple[Service, int]:
        """Set the replica count (waking a sleeping service when more than 0); with `expect`,
        only if the count is still that (an autoscaler's decision on fresh figures)."""

        def scale(db: sqlite3.Connection) -> tuple[Service, int]:
            previous = _load_service(db, name)
            if if_match is not None:
                self._check_etag(db, name, if_match)
            if expect is not None and previous.replicas != expect:
                return previous, previous.replicas
            stamp = _ts(now())
            db.execute(
                "UPDATE services SET replicas = ?, last_scaled_at = ?, updated_at = ? WHERE name = ?",
                (replicas, stamp, stamp, name),
            )
            if replicas > 0:
                _wake(db, name, stamp)
            return self._reload_service(db, name), previous.replicas

        return await self._write(scale)

    async def set_stopped(self, name: str, stopped: bool) -> Service:
        """Stop or start a service; either way it is no longer asleep."""

        def update(db: sqlite3.Connection) -> Service:
            _load_service(db, name)
            stamp = _ts(now())
            db.execute(
                "UPDATE services SET stopped = ?, updated_at = ? WHERE name = ?",
                (int(stopped), stamp, name),
            )
            _wake(db, name, stamp)
            return self._reload_service(db, name)

        return await self._write(update)

    async def set_sleeping(self, name: str, sleeping: bool) -> tuple[Service, bool]:
        """Put a service to sleep (its replicas stop, kept for waking) or wake it; whether
        that changed anything (a service already in that state, or stopped, is left as is)."""

        def update(db: sqlite3.Connection) -> tuple[Service, bool]:
            service = _load_service(db, name)
            if service.sleeping == sleeping or (sleeping and service.stopped):
                return service, False
            stamp = _ts(now())
            if sleeping:
                db.execute("UPDATE services SET sleeping = 1, slept_at = ?, updated_at = ?"
                           " WHERE name = ?", (stamp, stamp, name))
            else:
                _wake(db, name, stamp)
            return self._reload_service(db, name), True

        return await self._write(update)

    async def set_scaling(self, name: str, scaling: Scaling, *,
                          if_match: str | None = None) -> tuple[Service, Scaling]:
        """Replace the scaling policy; in auto mode the replica count moves into its bounds.
        The service and the policy it had."""

        def update(db: sqlite3.Connection) -> tuple[Service, Scaling]:
            service = _load_service(db, name)
            if if_match is not None:
                self._check_etag(db, name, if_match)
            stamp = _ts(now())
            replicas = (_within(scaling, service.replicas) if scaling.mode == "auto"
                        else service.replicas)
            db.execute(
                "UPDATE services SET scaling = ?, replicas = ?, updated_at = ?,"
                " last_scaled_at = CASE WHEN replicas != ? THEN ? ELSE last_scaled_at END"
                " WHERE name = ?",
                (scaling.model_dump_json(), replicas, stamp, replicas, stamp, name),
            )
            return self._reload_service(db, name), service.scaling

        return await self._write(update)

    async def delete_service(self, name: str, *, keep_data: bool,
                             if_match: str | None = None) -> Service:
        """Forget a service and record its removal, which the reconciler carries out (and
        finds again after a crash): containers, route and, unless `keep_data`, volumes."""

        def delete(db: sqlite3.Connection) -> Service:
            service = _load_service(db, name)
            if if_match is not None:
                self._check_etag(db, name, if_match)
            for table, column in (("services", "name"), ("events", "service")):
                db.execute(f"DELETE FROM {table} WHERE {column} = ?", (name,))  # noqa: S608
            db.execute(
                "DELETE FROM deployment_logs WHERE deployment_id IN"
                " (SELECT id FROM deployments WHERE service = ?)", (name,),
            )
            db.execute("DELETE FROM deployments WHERE service = ?", (name,))
            db.execute(
                "INSERT INTO removals (service, keep_data, requested_at) VALUES (?, ?, ?)"
                " ON CONFLICT(service) DO UPDATE SET keep_data = excluded.keep_data",
                (name, int(keep_data), _ts(now())),
            )

            removal = _removal(db.execute(
                "SELECT * FROM removals WHERE service = ?", (name,)).fetchone())

            def forget() -> None:
                self._removals[name] = removal
                self._services.pop(name, None)
                for deployment_id in [k for k, d in self._deployments.items() if d.service == name]:
                    del self._deployments[deployment_id]

            self._on_commit.append(forget)
            return service

        return await self._write(delete)

    async def pending_removal(self, name: str) -> Removal | None:
        return self._removals.get(name)

    async def list_removals(self) -> list[str]:
        return sorted(self._removals)

    def _forget_removal(self, name: str) -> None:
        self._removals.pop(name, None)

    async def finish_removal(self, name: str) -> None:
        def finish(db: sqlite3.Connection) -> None:
            db.execute("DELETE FROM removals WHERE service = ?", (name,))
            self._on_commit.append(lambda: self._forget_removal(name))

        await self._write(finish)

    # deployments ----------------------------------------------------------------------------

    async def create_deployment(
        self,
        spec: ServiceSpec,
        *,
        actor: str,
        reason: str,
        supersede: bool = False,
        copy_of: Deployment | None = None,
        forced: bool = False,
        promoted: bool = False,
        grant: Grant = UNPRIVILEGED,
        if_match: str | None = None,
    ) -> Deployment:
        """A new deployment of an existing service, which becomes its current one.

        `copy_of` (rollbacks) reuses that deployment's resolved image and fingerprint, so
        nothing is pulled or rebuilt. While another deployment is in flight this raises
        DeploymentInProgress, unless `supersede` (which cancels it). A spec with privileged
        fields needs a `grant`; with `if_match`, the spec must still have that ETag.
        """
        grant.check(spec)

        def create(db: sqlite3.Connection) -> Deployment:
            _load_service(db, spec.name)
            if if_match is not None:
                self._check_etag(db, spec.name, if_match)
            deployment = self._insert_deployment(
                db, spec, actor=actor, reason=reason, supersede=supersede, copy_of=copy_of,
                forced=forced, promoted=promoted,
            )
            self._reload_service(db, spec.name)
            return deployment

        return await self._write(create)

    async def get_deployment(self, deployment_id: str) -> Deployment:
        if (cached := self._deployments.get(deployment_id)) is not None:
            return cached
        deployment = await self._run(lambda db: self._load_deployment(db, deployment_id))
        self._remember(deployment)
        return deployment

    async def current_deployment(self, name: str) -> Deployment | None:
        service = await self.get_service(name)
        return await self.get_deployment(service.deployment_id) if service.deployment_id else None

    async def list_deployments(
        self, service: str, *, before_number: int | None = None, limit: int = 100
    ) -> list[Deployment]:
        """The service's deployments, newest first (numbers below `before_number`)."""

        def query(db: sqlite3.Connection) -> list[sqlite3.Row]:
            return db.execute(
                "SELECT * FROM deployments WHERE service = ? AND number < ?"
                " ORDER BY number DESC LIMIT ?",
                (service, before_number if before_number is not None else 2**62, limit),
            ).fetchall()

        return [self._deployment(r) for r in await self._run(query)]

    async def project_deployments(
        self, project: str, environment: str | None = None, *, before: str | None = None,
        limit: int = 100,
    ) -> list[Deployment]:
        """Deployments of the project's services, newest first; `before` is the
        "<created_at>|<id>" of the last one of the previous page."""
        stamp, _, last_id = (before or "").partition("|")

        def query(db: sqlite3.Connection) -> list[sqlite3.Row]:
            sql = ("SELECT d.* FROM deployments d JOIN services s ON s.name = d.service"
                   " WHERE s.project = ?")
            args: list[Any] = [project]
            if environment:
                sql, args = sql + " AND s.environment = ?", [*args, environment]
            if before:
                sql += " AND (d.created_at < ? OR (d.created_at = ? AND d.id < ?))"
                args += [stamp, stamp, last_id]
            return db.execute(sql + " ORDER BY d.created_at DESC, d.id DESC LIMIT ?",
                              [*args, limit]).fetchall()

        return [self._deployment(r) for r in await self._run(query)]

    async def deployment_by_number(self, service: str, number: int) -> Deployment:
        row = await self._run(lambda db: db.execute(
            "SELECT * FROM deployments WHERE service = ? AND number = ?", (service, number)
        ).fetchone())
        if row is None:
            raise DeploymentNotFound(f"{service}#{number}")
        return self._deployment(row)

    async def deployments_by_id(self, ids: Sequence[str]) -> dict[str, Deployment]:
        found = {i: self._deployments[i] for i in ids if i in self._deployments}
        missing = [i for i in ids if i not in found]
        if missing:
            marks = ",".join("?" * len(missing))
            rows = await self._run(lambda db: db.execute(
                f"SELECT * FROM deployments WHERE id IN ({marks})", missing  # noqa: S608
            ).fetchall())
            for row in rows:
                found[row["id"]] = deployment = self._deployment(row)
                self._remember(deployment)
        return found

    async def last_successful(self, service: str, *, before_number: int) -> Deployment | None:
        """The newest successful deployment numbered below `before_number` that can run again
        (its image was resolved)."""
        row = await self._run(lambda db: db.execute(
            "SELECT * FROM deployments WHERE service = ? AND number < ? AND status = 'successful'"
            " AND image_id IS NOT NULL ORDER BY number DESC LIMIT 1", (service, before_number),
        ).fetchone())
        return self._deployment(row) if row else None

    async def update_deployment(
        self,
        deployment_id: str,
        *,
        status: str | None = None,
        error: str | None = None,
        image_id: str | None = None,
        fingerprint: str | None = None,
        step: str | None = None,
        promoted: bool = False,
        env: dict[str, str] | None = None,
        build: dict[str, Any] | None = None,
        expect: Sequence[str] | None = None,
    ) -> Deployment:
        """Change a deployment; `step` only ever moves forward (see STEPS). With `expect`,
        nothing changes unless its status is one of those (a concurrent transition won)."""

        def update(db: sqlite3.Connection) -> Deployment:
            current = self._load_deployment(db, deployment_id)
            if expect is not None and current.status not in expect:
                return current
            stamp = now()
            steps = _advance(list(current.steps), step, stamp)
            if status in FINISHED_DEPLOYMENT:
                steps = _close(steps, stamp)
            db.execute(
                "UPDATE deployments SET status = ?, error = ?, image_id = ?, fingerprint = ?,"
                " steps = ?, promoted_at = ?, updated_at = ?, env = ?, build = ? WHERE id = ?",
                (
                    status or current.status,
                    error if error is not None else current.error,
                    image_id or current.image_id,
                    fingerprint or current.fingerprint,
                    json.dumps(steps),
                    _ts(current.promoted_at or (stamp if promoted else None)),
                    _ts(stamp),
                    self._sealed_env(deployment_id, env if env is not None else current.env),
                    json.dumps(build if build is not None else current.build)
                    if (build or current.build) else None,
                    deployment_id,
                ),
            )
            return self._reload_deployment(db, deployment_id)

        return await self._write(update)

    async def advance_step(self, deployment_id: str, step: str) -> bool:
        """Begin `step` if the deployment is in flight and has not reached it; whether it did."""

        def advance(db: sqlite3.Connection) -> bool:
            current = self._load_deployment(db, deployment_id)
            if not current.active:
                return False
            steps = _advance(list(current.steps), step, now())
            if len(steps) == len(current.steps):
                return False
            db.execute("UPDATE deployments SET steps = ?, updated_at = ? WHERE id = ?",
                       (json.dumps(steps), _ts(now()), deployment_id))
            self._reload_deployment(db, deployment_id)
            return True

        return await self._write(advance)

    async def finish_deployment(
        self,
        deployment_id: str,
        status: str,
        *,
        error: str | None = None,
        then: tuple[ServiceSpec, Deployment, str, str] | None = None,
    ) -> tuple[Deployment, Deployment | None]:
        """End a deployment with `status` and, in the same transaction, optionally start its
        successor: `then` = (spec, deployment to copy, actor, reason). Crash-safe: a failed
        deployment and the rollback it calls for are recorded together or not at all."""

        def finish(db: sqlite3.Connection) -> tuple[Deployment, Deployment | None]:
            current = self._load_deployment(db, deployment_id)
            if not current.active:
                raise DeploymentNotActive(deployment_id, current.number, current.status)
            stamp = _ts(now())
            steps = _close(list(current.steps), now())
            db.execute(
                "UPDATE deployments SET status = ?, error = COALESCE(?, error), steps = ?,"
                " updated_at = ? WHERE id = ?",
                (status, error, json.dumps(steps), stamp, deployment_id),
            )
            finished = self._reload_deployment(db, deployment_id)
            successor = None
            if then is not None:
                spec, source, actor, reason = then
                successor = self._insert_deployment(
                    db, spec, actor=actor, reason=reason, copy_of=source, promoted=True
                )
                self._reload_service(db, spec.name)
            return finished, successor

        return await self._write(finish)

    def _insert_deployment(
        self,
        db: sqlite3.Connection,
        spec: ServiceSpec,
        *,
        actor: str,
        reason: str,
        supersede: bool = False,
        copy_of: Deployment | None = None,
        forced: bool = False,
        promoted: bool = False,
    ) -> Deployment:
        """Insert a pending deployment and make it the service's current one. Only one is in
        flight per service: another raises DeploymentInProgress unless `supersede`."""
        active = db.execute(
            "SELECT id, number, status FROM deployments WHERE service = ?"
            " AND status IN ('pending', 'running', 'awaiting_promotion')"  # ACTIVE_DEPLOYMENT
            " ORDER BY number DESC LIMIT 1",
            (spec.name,),
        ).fetchone()
        if active is not None and not supersede:
            raise DeploymentInProgress(active["id"], active["number"], active["status"])
        number = db.execute(
            "SELECT COALESCE(MAX(number), 0) + 1 FROM deployments WHERE service = ?", (spec.name,)
        ).fetchone()[0]
        previous = db.execute(
            "SELECT deployment_id FROM services WHERE name = ?", (spec.name,)
        ).fetchone()
        deployment_id = new_id("dpl")
        stamp = _ts(now())
        steps = json.dumps([{"name": "queued", "started_at": stamp, "finished_at": None}])
        db.execute(
            "INSERT INTO deployments (id, service, number, spec, status, reason, actor, image_id,"
            " fingerprint, rollback_of, forced, promoted_at, previous_id, steps, created_at,"
            " updated_at, env, build) VALUES (?, ?, ?, ?, 'pending', ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?,"
            " ?, ?)",
            (deployment_id, spec.name, number, self._sealed_spec(deployment_id, spec), reason,
             actor, copy_of.image_id if copy_of else None,
             copy_of.fingerprint if copy_of else None,
             copy_of.id if copy_of else None, int(forced), stamp if promoted else None,
             previous["deployment_id"] if previous else None, steps, stamp, stamp,
             self._sealed_env(deployment_id, copy_of.env if copy_of else None),
             json.dumps(copy_of.build) if copy_of and copy_of.build else None),
        )
        if active is not None:
            superseded = self._load_deployment(db, active["id"])
            closed = _close(list(superseded.steps), now())
            db.execute(
                "UPDATE deployments SET status = 'cancelled', error = ?, steps = ?, updated_at = ?"
                " WHERE id = ?",
                (f"superseded by deployment #{number}", json.dumps(closed), stamp, active["id"]),
            )
            self._reload_deployment(db, active["id"])
        db.execute(
            "UPDATE services SET deployment_id = ?, updated_at = ? WHERE name = ?",
            (deployment_id, stamp, spec.name),
        )
        _wake(db, spec.name, stamp)  # a new version is meant to run
        return self._reload_deployment(db, deployment_id)

    def _deployment(self, row: sqlite3.Row) -> Deployment:
        spec = json.loads(row["spec"])
        spec["env"] = {k: self.keyring.decrypt(v, _env_aad(row["id"], k))
                       for k, v in spec.get("env", {}).items()}
        env = (json.loads(self.keyring.decrypt(row["env"], _env_aad(row["id"])))
               if row["env"] else None)
        return Deployment(
            id=row["id"],
            service=row["service"],
            number=row["number"],
            spec=ServiceSpec.model_validate(spec),
            status=row["status"],
            reason=row["reason"],
            actor=row["actor"],
            image_id=row["image_id"],
            error=row["error"],
            previous_id=row["previous_id"],
            created_at=datetime.fromisoformat(row["created_at"]),
            updated_at=datetime.fromisoformat(row["updated_at"]),
            steps=tuple(json.loads(row["steps"])),
            fingerprint=row["fingerprint"],
            rollback_of=row["rollback_of"],
            forced=bool(row["forced"]),
            promoted_at=_dt(row["promoted_at"]),
            env=env,
            build=json.loads(row["build"]) if row["build"] else None,
        )

    def _load_deployment(self, db: sqlite3.Connection, deployment_id: str) -> Deployment:
        row = db.execute("SELECT * FROM deployments WHERE id = ?", (deployment_id,)).fetchone()
        if row is None:
            raise DeploymentNotFound(deployment_id)
        return self._deployment(row)

    def _sealed_env(self, deployment_id: str, env: dict[str, str] | None) -> str | None:
        if env is None:
            return None
        return self.keyring.encrypt(json.dumps(env), _env_aad(deployment_id))

    def _sealed_spec(self, deployment_id: str, spec: ServiceSpec) -> str:
        """The spec as stored: its env values encrypted, each bound to its deployment and key."""
        data = spec.to_json()
        data["env"] = {k: self.keyring.encrypt(v, _env_aad(deployment_id, k))
                       for k, v in spec.env.items()}
        return json.dumps(data)

    # deployment logs ------------------------------------------------------------------------

    async def add_deployment_log(self, deployment_id: str, step: str, message: str) -> None:
        stamp = _ts(now())
        await self._run(lambda db: db.execute(
            "INSERT INTO deployment_logs (deployment_id, step, message, created_at)"
            " VALUES (?, ?, ?, ?)", (deployment_id, step, message, stamp),
        ))

    async def deployment_logs(self, deployment_id: str) -> list[DeploymentLog]:
        rows = await self._run(lambda db: db.execute(
            "SELECT * FROM deployment_logs WHERE deployment_id = ? ORDER BY id", (deployment_id,)
        ).fetchall())
        return [DeploymentLog(r["step"], r["message"], datetime.fromisoformat(r["created_at"]))
                for r in rows]

    # events ---------------------------------------------------------------------------------

    async def add_event(
        self, service: str, type_: str, message: str, details: dict[str, Any] | None = None
    ) -> Event:
        stamp = now()
        body = json.dumps(details or {})

        def insert(db: sqlite3.Connection) -> int:
            cursor = db.execute(
                "INSERT INTO events (service, type, message, details, created_at) VALUES (?, ?, ?, ?, ?)",
                (service, type_, message, body, _ts(stamp)),
            )
            return int(cursor.lastrowid or 0)

        event_id = await self._run(insert)
        event = Event(event_id, service, type_, message, details or {}, stamp)
        for listener in self.event_listeners:
            listener(event)
        return event

    async def list_events(
        self,
        service: str,
        *,
        type_: str | None = None,
        since: datetime | None = None,
        before_id: int | None = None,
        limit: int = 100,
    ) -> list[Event]:
        where, args = _event_filter(service, type_, since)
        if before_id:
            where += " AND id < ?"
            args.append(str(before_id))
        query = f"SELECT * FROM events WHERE {where} ORDER BY id DESC LIMIT ?"  # noqa: S608
        args.append(str(limit))
        rows = await self._run(lambda db: db.execute(query, args).fetchall())
        return [_event(r) for r in rows]

    async def count_events(self, service: str, *, type_: str | None = None,
                           since: datetime | None = None) -> int:
        where, args = _event_filter(service, type_, since)
        query = f"SELECT COUNT(*) FROM events WHERE {where}"  # noqa: S608
        return int(await self._run(lambda db: db.execute(query, args).fetchone()[0]))

    async def events_after(
        self, after_id: int, *, service: str | None = None, type_: str | None = None,
        limit: int = 500,
    ) -> list[Event]:
        """Events with an id above `after_id`, oldest first (a stream catching up)."""
        query, args = "SELECT * FROM events WHERE id > ?", [str(after_id)]
        if service:
            query += " AND service = ?"
            args.append(service)
        if type_:
            query += " AND type = ?"
            args.append(type_)
        query += " ORDER BY id LIMIT ?"
        args.append(str(limit))
        rows = await self._run(lambda db: db.execute(query, args).fetchall())
        return [_event(r) for r in rows]

    async def last_event_id(self) -> int:
        return int(await self._run(
            lambda db: db.execute("SELECT COALESCE(MAX(id), 0) FROM events").fetchone()[0]))

    # metrics history and summaries ----------------------------------------------------------

    async def add_metric_points(self, points: Sequence[MetricPoint]) -> None:
        rows = [(p.service, p.interval, _ts(p.at), json.dumps(p.data)) for p in points]
        if rows:
            await self._run(lambda db: db.executemany(
                "INSERT OR REPLACE INTO metric_points (service, interval, at, data)"
                " VALUES (?, ?, ?, ?)", rows))

    async def metric_points(self, service: str, interval: str, limit: int) -> list[MetricPoint]:
        """The newest `limit` points of one interval, oldest first."""
        rows = await self._run(lambda db: db.execute(
            "SELECT * FROM metric_points WHERE service = ? AND interval = ?"
            " ORDER BY at DESC LIMIT ?", (service, interval, limit)).fetchall())
        return [MetricPoint(r["service"], r["interval"], datetime.fromisoformat(r["at"]),
                            json.loads(r["data"])) for r in reversed(rows)]

    async def prune_metric_points(self, interval: str, before: datetime) -> int:
        cursor = await self._run(lambda db: db.execute(
            "DELETE FROM metric_points WHERE interval = ? AND at < ?", (interval, _ts(before))))
        return int(cursor.rowcount)

    async def recent_deployments(self, limit: int,
                                 services: Sequence[str] | None = None) -> list[Deployment]:
        """The newest deployments of every service (of `services`, if given)."""
        where, args = _services_filter(services)
        rows = await self._run(lambda db: db.execute(
            f"SELECT * FROM deployments WHERE {where} ORDER BY created_at DESC LIMIT ?",  # noqa: S608
            (*args, limit)).fetchall())
        return [self._deployment(r) for r in rows]

    async def deployment_counts(self, since: datetime | None = None,
                                services: Sequence[str] | None = None) -> dict[str, int]:
        """Deployments by status (those created since `since`, of `services`, if given)."""
        where, args = _services_filter(services)
        if since is not None:
            where += " AND created_at >= ?"
            args.append(_ts(since.astimezone(UTC)) or "")
        query = f"SELECT status, COUNT(*) FROM deployments WHERE {where}"  # noqa: S608
        rows = await self._run(lambda db: db.execute(query + " GROUP BY status", args).fetchall())
        return {str(status): int(count) for status, count in rows}

    async def settings_overrides(self) -> dict[str, Any]:
        rows = await self._run(lambda db: db.execute("SELECT key, value FROM settings").fetchall())
        return {r["key"]: json.loads(r["value"]) for r in rows}

    async def set_settings_overrides(self, values: dict[str, Any]) -> None:
        stamp = _ts(now())

        def write(db: sqlite3.Connection) -> None:
            db.executemany(
                "INSERT INTO settings (key, value, updated_at) VALUES (?, ?, ?)"
                " ON CONFLICT(key) DO UPDATE SET value = excluded.value,"
                " updated_at = excluded.updated_at",
                [(k, json.dumps(v), stamp) for k, v in values.items()])

        await self._write(write)


def _services_filter(services: Sequence[str] | None) -> tuple[str, list[str]]:
    if services is None:
        return "1 = 1", []
    return f"service IN ({', '.join('?' for _ in services) or 'NULL'})", list(services)


def _apply(changes: list[Callable[[], None]]) -> None:
    for change in changes:
        change()


def _close(steps: list[dict[str, Any]], stamp: datetime) -> list[dict[str, Any]]:
    """`steps` with the last one finished at `stamp`, if it was still open."""
    if steps and steps[-1].get("finished_at") is None:
        return [*steps[:-1], {**steps[-1], "finished_at": _ts(stamp)}]
    return steps


def _advance(steps: list[dict[str, Any]], step: str | None, stamp: datetime) -> list[dict[str, Any]]:
    """`steps` with `step` begun, if it comes after the last one (the pipeline never goes back)."""
    if step is None:
        return steps
    last = STEPS.index(steps[-1]["name"]) if steps else -1
    if STEPS.index(step) <= last:
        return steps
    return [*_close(steps, stamp), {"name": step, "started_at": _ts(stamp), "finished_at": None}]


def _service(row: sqlite3.Row) -> Service:
    return Service(
        name=row["name"],
        project=row["project"],
        environment=row["environment"],
        replicas=row["replicas"],
        stopped=bool(row["stopped"]),
        deployment_id=row["deployment_id"],
        created_at=datetime.fromisoformat(row["created_at"]),
        updated_at=datetime.fromisoformat(row["updated_at"]),
        scaling=Scaling.model_validate_json(row["scaling"]) if row["scaling"] else Scaling(),
        sleep=Sleep.model_validate_json(row["sleep"]) if row["sleep"] else Sleep(),
        sleeping=bool(row["sleeping"]),
        slept_at=_dt(row["slept_at"]),
        woke_at=_dt(row["woke_at"]),
        last_scaled_at=_dt(row["last_scaled_at"]),
    )


def _within(scaling: Scaling, replicas: int) -> int:
    """`replicas` moved into the autoscaling bounds (unchanged in manual mode)."""
    if scaling.mode != "auto":
        return replicas
    return max(scaling.min_replicas, min(scaling.max_replicas, replicas))


def _wake(db: sqlite3.Connection, name: str, stamp: str | None) -> None:
    """No longer asleep (if it was): what it stopped for sleeping starts again."""
    db.execute("UPDATE services SET sleeping = 0, woke_at = ? WHERE name = ? AND sleeping = 1",
               (stamp, name))


def _event_filter(service: str, type_: str | None,
                  since: datetime | None) -> tuple[str, list[str]]:
    """The WHERE clause (fixed text, values as parameters) of a service's events."""
    where, args = "service = ?", [service]
    if type_:
        where += " AND type = ?"
        args.append(type_)
    if since:
        where += " AND created_at >= ?"
        args.append(_ts(since.astimezone(UTC)) or "")  # stored as UTC ISO text
    return where, args


def _event(row: sqlite3.Row) -> Event:
    return Event(row["id"], row["service"], row["type"], row["message"], json.loads(row["details"]),
                 datetime.fromisoformat(row["created_at"]))


def _removal(row: sqlite3.Row) -> Removal:
    return Removal(row["service"], bool(row["keep_data"]), datetime.fromisoformat(row["requested_at"]))


def _load_service(db: sqlite3.Connection, name: str) -> Service:
    row = db.execute("SELECT * FROM services WHERE name = ?", (name,)).fetchone()
    if row is None:
        raise ServiceNotFound(name)
    return _service(row)


def _env_aad(deployment_id: str, key: str | None = None) -> str:
    return f"deployment:{deployment_id}:env" + (f":{key}" if key else "")
