"""Outbound webhooks: endpoints that receive Legato's events, and the deliveries made to
them (signed, retried with backoff for 24 hours, logged). Mixed into the Store.

A delivery is written before it is attempted, so a restart carries on with the pending ones;
events become deliveries in id order behind a cursor (`outbound_cursor`) that moves in the
same transaction, so none is skipped or fanned out twice across a crash. Signing secrets are
encrypted under the store's keyring, bound to their endpoint. (`webhook_deliveries` is the
log of inbound git deliveries; the outbound tables are named for this module.)
"""

from __future__ import annotations

import json
import secrets
import sqlite3
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, TypeVar

from legato.crypto import Keyring
from legato.errors import NotFound

T = TypeVar("T")

MIGRATION = """
    CREATE TABLE webhook_endpoints (
        id TEXT PRIMARY KEY,
        url TEXT NOT NULL,
        description TEXT NOT NULL DEFAULT '',
        events TEXT NOT NULL,
        project TEXT,
        secret TEXT NOT NULL,
        active INTEGER NOT NULL DEFAULT 1,
        owner TEXT NOT NULL,
        created_by TEXT NOT NULL,
        created_at TEXT NOT NULL,
        updated_at TEXT NOT NULL
    );
    CREATE INDEX webhook_endpoints_order ON webhook_endpoints(created_at, id);
    CREATE TABLE outbound_deliveries (
        id TEXT PRIMARY KEY,
        endpoint_id TEXT NOT NULL REFERENCES webhook_endpoints(id) ON DELETE CASCADE,
        event_id INTEGER,
        event_type TEXT NOT NULL,
        payload TEXT NOT NULL,
        status TEXT NOT NULL,
        attempts INTEGER NOT NULL DEFAULT 0,
        next_attempt_at TEXT,
        last_status_code INTEGER,
        last_error TEXT,
        redelivery_of TEXT,
        created_at TEXT NOT NULL,
        finished_at TEXT
    );
    CREATE INDEX outbound_deliveries_due ON outbound_deliveries(status, next_attempt_at);
    CREATE INDEX outbound_deliveries_endpoint ON outbound_deliveries(endpoint_id, created_at);
    CREATE TABLE outbound_attempts (
        delivery_id TEXT NOT NULL REFERENCES outbound_deliveries(id) ON DELETE CASCADE,
        number INTEGER NOT NULL,
        at TEXT NOT NULL,
        status_code INTEGER,
        error TEXT,
        duration_ms REAL NOT NULL,
        PRIMARY KEY (delivery_id, number)
    ) WITHOUT ROWID;
    CREATE TABLE outbound_cursor (
        id INTEGER PRIMARY KEY CHECK (id = 1),
        event_id INTEGER NOT NULL
    );
"""

ALL_EVENTS = "*"
DELIVERY_STATUSES = ("pending", "succeeded", "failed")
ENDPOINT_FIELDS = ("url", "events", "active", "description")  # what an update may change


class WebhookEndpointNotFound(NotFound):
    code = "WEBHOOK_ENDPOINT_NOT_FOUND"

    def __init__(self, endpoint_id: str) -> None:
        super().__init__(f"webhook endpoint not found: {endpoint_id}",
                         details={"id": endpoint_id})


class WebhookDeliveryNotFound(NotFound):
    code = "WEBHOOK_DELIVERY_NOT_FOUND"

    def __init__(self, delivery_id: str) -> None:
        super().__init__(f"webhook delivery not found: {delivery_id}",
                         details={"id": delivery_id})


@dataclass(frozen=True)
class WebhookEndpoint:
    """A subscription: where to POST which events (`*`: all) of which project (None: all)."""

    id: str
    url: str
    description: str
    events: tuple[str, ...]
    project: str | None
    active: bool
    owner: str  # the principal that made it
    created_by: str  # its display name
    created_at: datetime
    updated_at: datetime
    secret: str | None = field(default=None, repr=False)  # decrypted, only when asked for

    def wants(self, event_type: str, project: str | None) -> bool:
        """Whether an event of `event_type` in `project` is delivered here."""
        if not self.active or (self.project is not None and self.project != project):
            return False
        return ALL_EVENTS in self.events or event_type in self.events


@dataclass(frozen=True)
class WebhookAttempt:
    number: int
    at: datetime
    status_code: int | None
    error: str | None
    duration_ms: float


@dataclass(frozen=True)
class WebhookDelivery:
    """One event (or ping, or redelivery) for one endpoint, and how sending it went."""

    id: str
    endpoint_id: str
    event_id: int | None
    event_type: str
    payload: dict[str, Any]  # the body sent, but for its `id` (the delivery's)
    status: str  # pending | succeeded | failed
    attempts: int
    next_attempt_at: datetime | None
    last_status_code: int | None
    last_error: str | None
    redelivery_of: str | None
    created_at: datetime
    finished_at: datetime | None
    attempt_log: tuple[WebhookAttempt, ...] = ()  # filled by get_webhook_delivery only


@dataclass(frozen=True)
class OutboundEvent:
    """An event as it is offered to the endpoints: its type, project and payload."""

    event_id: int
    type: str
    project: str | None
    payload: dict[str, Any]


def _now() -> datetime:
    return datetime.now(UTC)


def _ts(value: datetime) -> str:
    """Fixed-width UTC text, so that stored times sort as strings."""
    return value.astimezone(UTC).isoformat(timespec="microseconds")


def _dt(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value else None


def endpoint_aad(endpoint_id: str) -> str:
    return f"webhook-endpoint:{endpoint_id}"


def reseal_endpoints(db: sqlite3.Connection, keyring: Keyring) -> int:
    """Re-encrypt every endpoint secret under the active data key (key rotation)."""
    rows = db.execute("SELECT id, secret FROM webhook_endpoints").fetchall()
    for row in rows:
        aad = endpoint_aad(row["id"])
        db.execute("UPDATE webhook_endpoints SET secret = ? WHERE id = ?",
                   (keyring.encrypt(keyring.decrypt(row["secret"], aad), aad), row["id"]))
    return len(rows)


class HookRecords:
    """Mixed into Store: it supplies the connection, the keyring and the transactions."""

    keyring: Keyring

    if TYPE_CHECKING:
        async def _run(self, fn: Callable[[sqlite3.Connection], T]) -> T: ...
        async def _write(self, fn: Callable[[sqlite3.Connection], T]) -> T: ...

    # endpoints ------------------------------------------------------------------------------

    async def create_webhook_endpoint(
        self, *, url: str, events: Sequence[str], secret: str, owner: str, created_by: str,
        project: str | None = None, description: str = "", active: bool = True,
    ) -> WebhookEndpoint:
        endpoint_id = "whe_" + secrets.token_hex(8)
        sealed = self.keyring.encrypt(secret, endpoint_aad(endpoint_id))

        def insert(db: sqlite3.Connection) -> WebhookEndpoint:
            stamp = _ts(_now())
            db.execute(
                "INSERT INTO webhook_endpoints (id, url, description, events, project, secret,"
                " active, owner, created_by, created_at, updated_at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (endpoint_id, url, description, json.dumps(list(events)), project, sealed,
                 int(active), owner, created_by, stamp, stamp))
            return _load_endpoint(db, endpoint_id)

        return await self._write(insert)

    async def get_webhook_endpoint(self, endpoint_id: str, *,
                                   with_secret: bool = False) -> WebhookEndpoint:
        """The endpoint; its signing secret decrypted only `with_secret` (for sending)."""
        row = await self._run(lambda db: db.execute(
            "SELECT * FROM webhook_endpoints WHERE id = ?", (endpoint_id,)).fetchone())
        if row is None:
            raise WebhookEndpointNotFound(endpoint_id)
        endpoint = _endpoint(row)
        if not with_secret:
            return endpoint
        secret = self.keyring.decrypt(row["secret"], endpoint_aad(endpoint_id))
        return replace(endpoint, secret=secret)

    async def list_webhook_endpoints(
        self, *, projects: Collection[str] | None = None, after: str | None = None,
        limit: int = 100,
    ) -> list[WebhookEndpoint]:
        """Endpoints, oldest first. `projects`: only those filtered to one of them (None: all
        endpoints); `after`: the "<created_at>|<id>" of the previous page's last one."""
        stamp, _, last_id = (after or "").partition("|")

        def query(db: sqlite3.Connection) -> list[sqlite3.Row]:
            sql, args = "SELECT * FROM webhook_endpoints WHERE 1 = 1", list[Any]()
            if projects is not None:
                marks = ", ".join("?" for _ in projects)
                sql, args = sql + f" AND project IN ({marks})", [*args, *projects]
            if after:
                sql += " AND (created_at > ? OR (created_at = ? AND id > ?))"
                args += [stamp, stamp, last_id]
            return db.execute(sql + " ORDER BY created_at, id LIMIT ?", [*args, limit]).fetchall()

        return [_endpoint(r) for r in await self._run(query)]

    async def update_webhook_endpoint(self, endpoint_id: str,
                                      changes: Mapping[str, Any]) -> WebhookEndpoint:
        """Change url, events, active or description (only those given)."""
        fields = {k: v for k, v in changes.items() if k in ENDPOINT_FIELDS}

        def update(db: sqlite3.Connection) -> WebhookEndpoint:
            _load_endpoint(db, endpoint_id)
            for column, value in fields.items():  # column names come from ENDPOINT_FIELDS only
                stored = (json.dumps(list(value)) if column == "events"
                          else int(value) if column == "active" else value)
                db.execute(f"UPDATE webhook_endpoints SET {column} = ? WHERE id = ?",  # noqa: S608
                           (stored, endpoint_id))
            db.execute("UPDATE webhook_endpoints SET updated_at = ? WHERE id = ?",
                       (_ts(_now()), endpoint_id))
            return _load_endpoint(db, endpoint_id)

        return await self._write(update)

    async def delete_webhook_endpoint(self, endpoint_id: str) -> None:
        """Forget the endpoint with its deliveries and their attempts."""
        def delete(db: sqlite3.Connection) -> None:
            if db.execute("DELETE FROM webhook_endpoints WHERE id = ?",
                          (endpoint_id,)).rowcount == 0:
                raise WebhookEndpointNotFound(endpoint_id)

        await self._write(delete)

    # deliveries -----------------------------------------------------------------------------

    async def webhook_event_cursor(self) -> int:
        """The id of the last event offered to the endpoints. The first time, the newest
        event's: what happened before outbound webhooks existed is not sent."""
        def read(db: sqlite3.Connection) -> int:
            row = db.execute("SELECT event_id FROM outbound_cursor WHERE id = 1").fetchone()
            if row is not None:
                return int(row["event_id"])
            last = int(db.execute("SELECT COALESCE(MAX(id), 0) FROM events").fetchone()[0])
            db.execute("INSERT INTO outbound_cursor (id, event_id) VALUES (1, ?)", (last,))
            return last

        return await self._write(read)

    async def enqueue_webhook_deliveries(self, events: Sequence[OutboundEvent],
                                         through: int) -> list[WebhookDelivery]:
        """A pending delivery of each event to every active endpoint that wants it, and the
        cursor moved to `through`, in one transaction."""
        def enqueue(db: sqlite3.Connection) -> list[WebhookDelivery]:
            endpoints = [_endpoint(r) for r in db.execute(
                "SELECT * FROM webhook_endpoints WHERE active = 1 ORDER BY created_at, id")]
            made = [
                _insert_delivery(db, endpoint.id, event_type=event.type, payload=event.payload,
                                 event_id=event.event_id)
                for event in events for endpoint in endpoints
                if endpoint.wants(event.type, event.project)
            ]
            db.execute("INSERT INTO outbound_cursor (id, event_id) VALUES (1, ?)"
                       " ON CONFLICT (id) DO UPDATE SET event_id = MAX(event_id, excluded.event_id)",
                       (through,))
            return made

        return await self._write(enqueue)

    async def add_webhook_delivery(self, endpoint_id: str, *, event_type: str,
                                   payload: dict[str, Any], event_id: int | None = None,
                                   ) -> WebhookDelivery:
        """A pending delivery, due now (a ping)."""
        def insert(db: sqlite3.Connection) -> WebhookDelivery:
            _load_endpoint(db, endpoint_id)
            return _insert_delivery(db, endpoint_id, event_type=event_type, payload=payload,
                                    event_id=event_id)

        return await self._write(insert)

    async def redeliver_webhook(self, endpoint_id: str, delivery_id: str) -> WebhookDelivery:
        """A new pending delivery, due now, with the payload of an earlier one."""
        def insert(db: sqlite3.Connection) -> WebhookDelivery:
            original = _load_delivery(db, endpoint_id, delivery_id)
            return _insert_delivery(db, endpoint_id, event_type=original.event_type,
                                    payload=original.payload, event_id=original.event_id,
                                    redelivery_of=original.id)

        return await self._write(insert)

    async def due_webhook_deliveries(self, now: datetime, *, limit: int,
                                     exclude: Collection[str] = (),
                                     busy: Collection[str] = ()) -> list[WebhookDelivery]:
        """Pending deliveries of active endpoints due by `now`, the longest due first, at
        most one per endpoint, none of `busy` endpoints."""
        exclude, busy = tuple(exclude), tuple(busy)  # the callers' sets change meanwhile
        marks = ", ".join("?" for _ in exclude)
        busy_marks = ", ".join("?" for _ in busy)

        def query(db: sqlite3.Connection) -> list[sqlite3.Row]:
            sql = ("SELECT d.* FROM outbound_deliveries d"
                   " JOIN webhook_endpoints e ON e.id = d.endpoint_id"
                   " WHERE d.status = 'pending' AND d.next_attempt_at <= ? AND e.active = 1")
            sql += f" AND d.id NOT IN ({marks}) AND d.endpoint_id NOT IN ({busy_marks})"
            sql += " ORDER BY d.next_attempt_at LIMIT ?"
            rows = db.execute(sql, [_ts(now), *exclude, *busy, limit * 8]).fetchall()
            picked: dict[str, sqlite3.Row] = {}
            for row in rows:
                picked.setdefault(row["endpoint_id"], row)
            return list(picked.values())[:limit]

        return [_delivery(r) for r in await self._run(query)]

    async def next_webhook_attempt_at(self, exclude: Collection[str] = (),
                                      busy: Collection[str] = ()) -> datetime | None:
        """When the next pending delivery of an active endpoint not `busy` is due (None:
        none is)."""
        exclude, busy = tuple(exclude), tuple(busy)  # the callers' sets change meanwhile
        marks = ", ".join("?" for _ in exclude)
        busy_marks = ", ".join("?" for _ in busy)

        def query(db: sqlite3.Connection) -> str | None:
            sql = ("SELECT MIN(d.next_attempt_at) FROM outbound_deliveries d"
                   " JOIN webhook_endpoints e ON e.id = d.endpoint_id"
                   " WHERE d.status = 'pending' AND e.active = 1")
            sql += f" AND d.id NOT IN ({marks}) AND d.endpoint_id NOT IN ({busy_marks})"
            row = db.execute(sql, [*exclude, *busy]).fetchone()
            return str(row[0]) if row and row[0] else None

        return _dt(await self._run(query))

    async def record_webhook_attempt(
        self, delivery_id: str, *, at: datetime, status_code: int | None, error: str | None,
        duration_ms: float, status: str, next_attempt_at: datetime | None,
        last_error: str | None = None,
    ) -> WebhookDelivery | None:
        """Log an attempt and what the delivery became (`status`, due again at
        `next_attempt_at`); `last_error` (default `error`) is what the delivery shows. None
        when the delivery is gone (its endpoint was deleted meanwhile)."""
        def record(db: sqlite3.Connection) -> WebhookDelivery | None:
            row = db.execute("SELECT attempts FROM outbound_deliveries WHERE id = ?",
                             (delivery_id,)).fetchone()
            if row is None:
                return None
            number = int(row["attempts"]) + 1
            db.execute(
                "INSERT INTO outbound_attempts (delivery_id, number, at, status_code, error,"
                " duration_ms) VALUES (?, ?, ?, ?, ?, ?)",
                (delivery_id, number, _ts(at), status_code, error, round(duration_ms, 3)))
            finished = _ts(at) if status != "pending" else None
            db.execute(
                "UPDATE outbound_deliveries SET attempts = ?, status = ?, next_attempt_at = ?,"
                " last_status_code = ?, last_error = ?, finished_at = ? WHERE id = ?",
                (number, status, _ts(next_attempt_at) if next_attempt_at else None, status_code,
                 last_error if last_error is not None else error, finished, delivery_id))
            return _delivery(db.execute("SELECT * FROM outbound_deliveries WHERE id = ?",
                                        (delivery_id,)).fetchone())

        return await self._write(record)

    async def list_webhook_deliveries(
        self, endpoint_id: str, *, before: str | None = None, limit: int = 100,
        status: str | None = None,
    ) -> list[WebhookDelivery]:
        """The endpoint's deliveries, newest first; `before` is the "<created_at>|<id>" of the
        previous page's last one."""
        stamp, _, last_id = (before or "").partition("|")

        def query(db: sqlite3.Connection) -> list[sqlite3.Row]:
            _load_endpoint(db, endpoint_id)
            sql, args = "SELECT * FROM outbound_deliveries WHERE endpoint_id = ?", [endpoint_id]
            if status is not None:
                sql, args = sql + " AND status = ?", [*args, status]
            if before:
                sql += " AND (created_at < ? OR (created_at = ? AND id < ?))"
                args += [stamp, stamp, last_id]
            return db.execute(sql + " ORDER BY created_at DESC, id DESC LIMIT ?",
                              [*args, limit]).fetchall()

        return [_delivery(r) for r in await self._run(query)]

    async def get_webhook_delivery(self, endpoint_id: str, delivery_id: str) -> WebhookDelivery:
        """One delivery of the endpoint with every attempt, oldest first."""
        def query(db: sqlite3.Connection) -> WebhookDelivery:
            delivery = _load_delivery(db, endpoint_id, delivery_id)
            attempts = tuple(
                WebhookAttempt(number=r["number"], at=datetime.fromisoformat(r["at"]),
                               status_code=r["status_code"], error=r["error"],
                               duration_ms=r["duration_ms"])
                for r in db.execute("SELECT * FROM outbound_attempts WHERE delivery_id = ?"
                                    " ORDER BY number", (delivery_id,)))
            return replace(delivery, attempt_log=attempts)

        return await self._run(query)

    async def prune_webhook_deliveries(self, before: datetime) -> int:
        """Forget finished deliveries made before `before` (with their attempts)."""
        def prune(db: sqlite3.Connection) -> int:
            return int(db.execute(
                "DELETE FROM outbound_deliveries WHERE status != 'pending' AND created_at < ?",
                (_ts(before),)).rowcount)

        return await self._write(prune)


def _endpoint(row: sqlite3.Row) -> WebhookEndpoint:
    return WebhookEndpoint(
        id=row["id"], url=row["url"], description=row["description"],
        events=tuple(json.loads(row["events"])), project=row["project"],
        active=bool(row["active"]), owner=row["owner"], created_by=row["created_by"],
        created_at=datetime.fromisoformat(row["created_at"]),
        updated_at=datetime.fromisoformat(row["updated_at"]))


def _load_endpoint(db: sqlite3.Connection, endpoint_id: str) -> WebhookEndpoint:
    row = db.execute("SELECT * FROM webhook_endpoints WHERE id = ?", (endpoint_id,)).fetchone()
    if row is None:
        raise WebhookEndpointNotFound(endpoint_id)
    return _endpoint(row)


def _delivery(row: sqlite3.Row) -> WebhookDelivery:
    return WebhookDelivery(
        id=row["id"], endpoint_id=row["endpoint_id"], event_id=row["event_id"],
        event_type=row["event_type"], payload=json.loads(row["payload"]), status=row["status"],
        attempts=row["attempts"], next_attempt_at=_dt(row["next_attempt_at"]),
        last_status_code=row["last_status_code"], last_error=row["last_error"],
        redelivery_of=row["redelivery_of"], created_at=datetime.fromisoformat(row["created_at"]),
        finished_at=_dt(row["finished_at"]))


def _load_delivery(db: sqlite3.Connection, endpoint_id: str, delivery_id: str) -> WebhookDelivery:
    _load_endpoint(db, endpoint_id)
    row = db.execute("SELECT * FROM outbound_deliveries WHERE id = ? AND endpoint_id = ?",
                     (delivery_id, endpoint_id)).fetchone()
    if row is None:
        raise WebhookDeliveryNotFound(delivery_id)
    return _delivery(row)


def _insert_delivery(db: sqlite3.Connection, endpoint_id: str, *, event_type: str,
                     payload: dict[str, Any], event_id: int | None,
                     redelivery_of: str | None = None) -> WebhookDelivery:
    delivery_id = "whd_" + secrets.token_hex(8)
    stamp = _ts(_now())
    db.execute(
        "INSERT INTO outbound_deliveries (id, endpoint_id, event_id, event_type, payload, status,"
        " next_attempt_at, redelivery_of, created_at) VALUES (?, ?, ?, ?, ?, 'pending', ?, ?, ?)",
        (delivery_id, endpoint_id, event_id, event_type, json.dumps(payload), stamp,
         redelivery_of, stamp))
    return _delivery(db.execute("SELECT * FROM outbound_deliveries WHERE id = ?",
                                (delivery_id,)).fetchone())
