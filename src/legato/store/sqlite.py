"""SQLite store (WAL). Blocking calls run in a worker thread; callers only ever await."""

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

from legato.errors import Conflict, DeploymentNotFound, ServiceNotFound
from legato.spec import ServiceSpec
from legato.store.models import Deployment, Event, Service, Token

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
)


def now() -> datetime:
    return datetime.now(UTC)


def _ts(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


def _dt(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value else None


def new_id(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(8)}"


class Store:
    """All state lives here; every method is a short transaction run off the event loop."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.row_factory = sqlite3.Row
        self._lock = threading.Lock()
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute("PRAGMA foreign_keys=ON")
        self._db.execute("PRAGMA busy_timeout=5000")
        self._migrate()

    def _migrate(self) -> None:
        version = self._db.execute("PRAGMA user_version").fetchone()[0]
        for number, script in enumerate(MIGRATIONS[version:], start=version + 1):
            self._db.executescript(f"BEGIN; {script}; PRAGMA user_version = {number}; COMMIT;")

    def close(self) -> None:
        with self._lock:
            self._db.close()

    async def _run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        def locked() -> T:
            with self._lock:
                return fn(self._db)

        return await asyncio.to_thread(locked)

    async def _write(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        def transaction(db: sqlite3.Connection) -> T:
            db.execute("BEGIN IMMEDIATE")
            try:
                result = fn(db)
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")
            return result

        return await self._run(transaction)

    async def ping(self) -> None:
        await self._run(lambda db: db.execute("SELECT 1").fetchone())

    # services -------------------------------------------------------------------------------

    async def get_service(self, name: str) -> Service:
        row = await self._run(
            lambda db: db.execute("SELECT * FROM services WHERE name = ?", (name,)).fetchone()
        )
        if row is None:
            raise ServiceNotFound(name)
        return _service(row)

    async def list_services(
        self, project: str | None = None, environment: str | None = None
    ) -> list[Service]:
        query, args = "SELECT * FROM services WHERE 1=1", []
        if project:
            query += " AND project = ?"
            args.append(project)
        if environment:
            query += " AND environment = ?"
            args.append(environment)
        rows = await self._run(lambda db: db.execute(query + " ORDER BY name", args).fetchall())
        return [_service(r) for r in rows]

    async def apply_spec(
        self, spec: ServiceSpec, *, actor: str, reason: str
    ) -> tuple[Service, Deployment | None]:
        """Create or update a service; a new deployment only when what runs changes."""

        def apply(db: sqlite3.Connection) -> tuple[Service, Deployment | None]:
            row = db.execute("SELECT * FROM services WHERE name = ?", (spec.name,)).fetchone()
            stamp = _ts(now())
            if row is None:
                db.execute(
                    "INSERT INTO services VALUES (?, ?, ?, ?, 0, NULL, ?, ?)",
                    (spec.name, spec.project, spec.environment, spec.replicas, stamp, stamp),
                )
                deployment = _insert_deployment(db, spec, actor, reason, previous_id=None)
                return _load_service(db, spec.name), deployment
            service = _service(row)
            if (service.project, service.environment) != (spec.project, spec.environment):
                raise Conflict(
                    f"service name taken: {spec.name} belongs to "
                    f"{service.project}/{service.environment}",
                    code="SERVICE_NAME_TAKEN",
                    details={"name": spec.name, "project": service.project},
                )
            current = _load_deployment(db, service.deployment_id) if service.deployment_id else None
            db.execute(
                "UPDATE services SET replicas = ?, stopped = 0, updated_at = ? WHERE name = ?",
                (spec.replicas, stamp, spec.name),
            )
            same = current is not None and current.spec.model_copy(
                update={"replicas": spec.replicas}
            ) == spec
            if same and current is not None and current.status != "failed":
                return _load_service(db, spec.name), None
            deployment = _insert_deployment(db, spec, actor, reason, previous_id=service.deployment_id)
            return _load_service(db, spec.name), deployment

        return await self._write(apply)

    async def set_replicas(self, name: str, replicas: int) -> tuple[Service, int]:
        def scale(db: sqlite3.Connection) -> tuple[Service, int]:
            previous = _load_service(db, name)
            db.execute(
                "UPDATE services SET replicas = ?, updated_at = ? WHERE name = ?",
                (replicas, _ts(now()), name),
            )
            return _load_service(db, name), previous.replicas

        return await self._write(scale)

    async def set_stopped(self, name: str, stopped: bool) -> Service:
        def update(db: sqlite3.Connection) -> Service:
            _load_service(db, name)
            db.execute(
                "UPDATE services SET stopped = ?, updated_at = ? WHERE name = ?",
                (int(stopped), _ts(now()), name),
            )
            return _load_service(db, name)

        return await self._write(update)

    async def set_service_deployment(self, name: str, deployment_id: str) -> None:
        await self._write(
            lambda db: db.execute(
                "UPDATE services SET deployment_id = ?, updated_at = ? WHERE name = ?",
                (deployment_id, _ts(now()), name),
            )
        )

    async def delete_service(self, name: str) -> None:
        def delete(db: sqlite3.Connection) -> None:
            _load_service(db, name)
            db.execute("DELETE FROM services WHERE name = ?", (name,))
            db.execute("DELETE FROM deployments WHERE service = ?", (name,))

        await self._write(delete)

    # deployments ----------------------------------------------------------------------------

    async def create_deployment(
        self, spec: ServiceSpec, *, actor: str, reason: str, previous_id: str | None
    ) -> Deployment:
        return await self._write(lambda db: _insert_deployment(db, spec, actor, reason, previous_id))

    async def get_deployment(self, deployment_id: str) -> Deployment:
        return await self._run(lambda db: _load_deployment(db, deployment_id))

    async def list_deployments(self, service: str, limit: int = 100) -> list[Deployment]:
        rows = await self._run(
            lambda db: db.execute(
                "SELECT * FROM deployments WHERE service = ? ORDER BY number DESC LIMIT ?",
                (service, limit),
            ).fetchall()
        )
        return [_deployment(r) for r in rows]

    async def deployments_by_id(self, ids: Sequence[str]) -> dict[str, Deployment]:
        if not ids:
            return {}
        marks = ",".join("?" * len(ids))
        rows = await self._run(
            lambda db: db.execute(f"SELECT * FROM deployments WHERE id IN ({marks})", ids).fetchall()  # noqa: S608
        )
        return {r["id"]: _deployment(r) for r in rows}

    async def update_deployment(
        self,
        deployment_id: str,
        *,
        status: str | None = None,
        error: str | None = None,
        image_id: str | None = None,
        step: str | None = None,
    ) -> Deployment:
        def update(db: sqlite3.Connection) -> Deployment:
            current = _load_deployment(db, deployment_id)
            stamp = now()
            steps = list(current.steps)
            if step is not None and (not steps or steps[-1]["name"] != step):
                if steps and steps[-1].get("finished_at") is None:
                    steps[-1] = {**steps[-1], "finished_at": _ts(stamp)}
                steps.append({"name": step, "started_at": _ts(stamp), "finished_at": None})
            finished = status in ("successful", "failed", "cancelled", "rolled_back")
            if finished and steps and steps[-1].get("finished_at") is None:
                steps[-1] = {**steps[-1], "finished_at": _ts(stamp)}
            db.execute(
                "UPDATE deployments SET status = ?, error = ?, image_id = ?, steps = ?, updated_at = ?"
                " WHERE id = ?",
                (
                    status or current.status,
                    error if error is not None else current.error,
                    image_id or current.image_id,
                    json.dumps(steps),
                    _ts(stamp),
                    deployment_id,
                ),
            )
            return _load_deployment(db, deployment_id)

        return await self._write(update)

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
        return Event(event_id, service, type_, message, details or {}, stamp)

    async def list_events(
        self,
        service: str,
        *,
        type_: str | None = None,
        since: datetime | None = None,
        before_id: int | None = None,
        limit: int = 100,
    ) -> list[Event]:
        query, args = "SELECT * FROM events WHERE service = ?", [service]
        if type_:
            query += " AND type = ?"
            args.append(type_)
        if since:
            query += " AND created_at >= ?"
            args.append(_ts(since.astimezone(UTC)) or "")  # stored as UTC ISO text
        if before_id:
            query += " AND id < ?"
            args.append(str(before_id))
        query += " ORDER BY id DESC LIMIT ?"
        args.append(str(limit))
        rows = await self._run(lambda db: db.execute(query, args).fetchall())
        return [
            Event(r["id"], r["service"], r["type"], r["message"], json.loads(r["details"]),
                  datetime.fromisoformat(r["created_at"]))
            for r in rows
        ]

    # tokens ---------------------------------------------------------------------------------

    async def create_token(
        self,
        *,
        name: str,
        role: str,
        token_hash: str,
        prefix: str,
        expires_at: datetime | None,
        projects: Sequence[str] = (),
    ) -> Token:
        token_id = new_id("tok")

        def insert(db: sqlite3.Connection) -> Token:
            db.execute(
                "INSERT INTO tokens (id, name, prefix, hash, role, projects, created_at, expires_at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (token_id, name, prefix, token_hash, role, json.dumps(list(projects)),
                 _ts(now()), _ts(expires_at)),
            )
            return _load_token(db, token_id)

        return await self._write(insert)

    async def token_by_hash(self, token_hash: str) -> Token | None:
        row = await self._run(
            lambda db: db.execute("SELECT * FROM tokens WHERE hash = ?", (token_hash,)).fetchone()
        )
        return _token(row) if row else None

    async def list_tokens(self) -> list[Token]:
        rows = await self._run(
            lambda db: db.execute("SELECT * FROM tokens ORDER BY created_at").fetchall()
        )
        return [_token(r) for r in rows]

    async def count_tokens(self) -> int:
        return await self._run(lambda db: int(db.execute("SELECT COUNT(*) FROM tokens").fetchone()[0]))

    async def revoke_token(self, token_id: str) -> Token:
        def revoke(db: sqlite3.Connection) -> Token:
            _load_token(db, token_id)
            db.execute(
                "UPDATE tokens SET revoked_at = COALESCE(revoked_at, ?) WHERE id = ?",
                (_ts(now()), token_id),
            )
            return _load_token(db, token_id)

        return await self._write(revoke)

    async def touch_token(self, token_id: str) -> None:
        await self._run(
            lambda db: db.execute(
                "UPDATE tokens SET last_used_at = ? WHERE id = ?", (_ts(now()), token_id)
            )
        )


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
    )


def _load_service(db: sqlite3.Connection, name: str) -> Service:
    row = db.execute("SELECT * FROM services WHERE name = ?", (name,)).fetchone()
    if row is None:
        raise ServiceNotFound(name)
    return _service(row)


def _deployment(row: sqlite3.Row) -> Deployment:
    return Deployment(
        id=row["id"],
        service=row["service"],
        number=row["number"],
        spec=ServiceSpec.model_validate_json(row["spec"]),
        status=row["status"],
        reason=row["reason"],
        actor=row["actor"],
        image_id=row["image_id"],
        error=row["error"],
        previous_id=row["previous_id"],
        created_at=datetime.fromisoformat(row["created_at"]),
        updated_at=datetime.fromisoformat(row["updated_at"]),
        steps=tuple(json.loads(row["steps"])),
    )


def _load_deployment(db: sqlite3.Connection, deployment_id: str) -> Deployment:
    row = db.execute("SELECT * FROM deployments WHERE id = ?", (deployment_id,)).fetchone()
    if row is None:
        raise DeploymentNotFound(deployment_id)
    return _deployment(row)


def _insert_deployment(
    db: sqlite3.Connection, spec: ServiceSpec, actor: str, reason: str, previous_id: str | None
) -> Deployment:
    number = db.execute(
        "SELECT COALESCE(MAX(number), 0) + 1 FROM deployments WHERE service = ?", (spec.name,)
    ).fetchone()[0]
    deployment_id = new_id("dpl")
    stamp = _ts(now())
    steps = json.dumps([{"name": "queued", "started_at": stamp, "finished_at": None}])
    db.execute(
        "INSERT INTO deployments (id, service, number, spec, status, reason, actor, previous_id,"
        " steps, created_at, updated_at) VALUES (?, ?, ?, ?, 'pending', ?, ?, ?, ?, ?, ?)",
        (deployment_id, spec.name, number, spec.model_dump_json(), reason, actor, previous_id,
         steps, stamp, stamp),
    )
    # Only one deployment of a service is in flight: a newer one supersedes the rest.
    db.execute(
        "UPDATE deployments SET status = 'cancelled', updated_at = ? WHERE service = ? AND id != ?"
        " AND status IN ('pending', 'running', 'awaiting_promotion')",
        (stamp, spec.name, deployment_id),
    )
    db.execute(
        "UPDATE services SET deployment_id = ?, updated_at = ? WHERE name = ?",
        (deployment_id, stamp, spec.name),
    )
    return _load_deployment(db, deployment_id)


def _token(row: sqlite3.Row) -> Token:
    return Token(
        id=row["id"],
        name=row["name"],
        prefix=row["prefix"],
        role=row["role"],
        created_at=datetime.fromisoformat(row["created_at"]),
        expires_at=_dt(row["expires_at"]),
        revoked_at=_dt(row["revoked_at"]),
        last_used_at=_dt(row["last_used_at"]),
        projects=tuple(json.loads(row["projects"])),
    )


def _load_token(db: sqlite3.Connection, token_id: str) -> Token:
    from legato.errors import NotFound

    row = db.execute("SELECT * FROM tokens WHERE id = ?", (token_id,)).fetchone()
    if row is None:
        raise NotFound(f"token not found: {token_id}", code="TOKEN_NOT_FOUND")
    return _token(row)
