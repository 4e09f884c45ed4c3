"""Who may do what, and what they did: users, tokens and sessions, the activity trail,
notifications and idempotency records. Mixed into the Store (SPEC §3, seeds 000 and 002)."""

from __future__ import annotations

import base64
import json
import secrets
import sqlite3
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, TypeVar

from legato.crypto import Keyring
from legato.errors import Conflict, NotFound, Unauthorized
from legato.store.models import ROLE_RANK, Activity, Notification, Token, User

T = TypeVar("T")

MIGRATION = """
    CREATE TABLE users (
        id TEXT PRIMARY KEY,
        email TEXT NOT NULL UNIQUE,
        name TEXT NOT NULL DEFAULT '',
        role TEXT NOT NULL,
        password_hash TEXT,
        created_at TEXT NOT NULL,
        updated_at TEXT NOT NULL,
        disabled_at TEXT,
        last_login_at TEXT
    );
    ALTER TABLE tokens ADD COLUMN user_id TEXT;
    ALTER TABLE tokens ADD COLUMN kind TEXT NOT NULL DEFAULT 'api';
    ALTER TABLE tokens ADD COLUMN expiry_notified_at TEXT;
    ALTER TABLE tokens ADD COLUMN parent_id TEXT;
    CREATE INDEX tokens_user ON tokens(user_id);
    CREATE INDEX tokens_parent ON tokens(parent_id);
    CREATE TABLE activity (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        at TEXT NOT NULL,
        actor TEXT NOT NULL,
        actor_id TEXT,
        action TEXT NOT NULL,
        method TEXT NOT NULL,
        path TEXT NOT NULL,
        target TEXT,
        project TEXT,
        status INTEGER NOT NULL,
        request_id TEXT NOT NULL,
        ip TEXT
    );
    CREATE INDEX activity_project ON activity(project, id);
    CREATE INDEX activity_actor ON activity(actor_id, id);
    CREATE TABLE notifications (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        at TEXT NOT NULL,
        kind TEXT NOT NULL,
        title TEXT NOT NULL,
        message TEXT NOT NULL,
        project TEXT,
        service TEXT,
        recipient TEXT,
        data TEXT NOT NULL DEFAULT '{}'
    );
    CREATE TABLE notification_reads (
        notification_id INTEGER NOT NULL REFERENCES notifications(id) ON DELETE CASCADE,
        principal TEXT NOT NULL,
        at TEXT NOT NULL,
        PRIMARY KEY (notification_id, principal)
    ) WITHOUT ROWID;
    CREATE TABLE idempotency_keys (
        owner TEXT NOT NULL,
        key TEXT NOT NULL,
        fingerprint TEXT NOT NULL,
        state TEXT NOT NULL,
        status INTEGER,
        headers TEXT,
        body TEXT,
        created_at TEXT NOT NULL,
        PRIMARY KEY (owner, key)
    ) WITHOUT ROWID;
    CREATE INDEX idempotency_age ON idempotency_keys(created_at);
"""

IDEMPOTENCY_TTL = timedelta(hours=24)
ACTIVITY_RETENTION = timedelta(days=365)


class UserNotFound(NotFound):
    code = "USER_NOT_FOUND"

    def __init__(self, user_id: str) -> None:
        super().__init__(f"user not found: {user_id}", details={"id": user_id})


class TokenNotFound(NotFound):
    code = "TOKEN_NOT_FOUND"

    def __init__(self, token_id: str) -> None:
        super().__init__(f"token not found: {token_id}", details={"id": token_id})


@dataclass(frozen=True)
class Idempotency:
    """What an Idempotency-Key already stands for: the request running now, or the response
    it got (replayed to every retry)."""

    fingerprint: str
    state: str  # running | done
    status: int | None = None
    headers: list[tuple[str, str]] | None = None
    body: bytes | None = None


def _now() -> datetime:
    return datetime.now(UTC)


def _ts(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


def _dt(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value else None


class AccessRecords:
    """Mixed into Store: it supplies the connection, the keyring and the transactions."""

    keyring: Keyring

    if TYPE_CHECKING:
        async def _run(self, fn: Callable[[sqlite3.Connection], T]) -> T: ...
        async def _write(self, fn: Callable[[sqlite3.Connection], T]) -> T: ...

    _tokens: dict[str, Token]  # hash -> token, see token_by_hash
    _token_generation: int

    # users ----------------------------------------------------------------------------------

    async def create_user(self, *, email: str, name: str, role: str,
                          password_hash: str | None) -> User:
        user_id = f"usr_{secrets.token_hex(8)}"

        def insert(db: sqlite3.Connection) -> User:
            if db.execute("SELECT 1 FROM users WHERE email = ?", (email,)).fetchone():
                raise Conflict(f"a user with this email exists: {email}", code="USER_EXISTS",
                               details={"email": email})
            stamp = _ts(_now())
            db.execute(
                "INSERT INTO users (id, email, name, role, password_hash, created_at, updated_at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?)",
                (user_id, email, name, role, password_hash, stamp, stamp))
            return _load_user(db, user_id)

        return await self._write(insert)

    async def get_user(self, user_id: str) -> User:
        return await self._run(lambda db: _load_user(db, user_id))

    async def user_login(self, email: str) -> tuple[User, str | None] | None:
        """The user with this email and its password hash, for a login."""
        def query(db: sqlite3.Connection) -> tuple[User, str | None] | None:
            row = db.execute("SELECT * FROM users WHERE email = ?", (email,)).fetchone()
            return None if row is None else (_user(row), row["password_hash"])

        return await self._run(query)

    async def list_users(self, *, after: str | None = None, limit: int = 100) -> list[User]:
        rows = await self._run(lambda db: db.execute(
            "SELECT * FROM users WHERE email > ? ORDER BY email LIMIT ?",
            (after or "", limit)).fetchall())
        return [_user(r) for r in rows]

    async def update_user(self, user_id: str, *, role: str | None = None,
                          name: str | None = None, password_hash: str | None = None,
                          disabled: bool | None = None, logged_in: bool = False) -> User:
        """Change a user. A lower role lowers the user's tokens with it; disabling a user
        revokes every token and session it has; a new password ends its sessions."""

        def update(db: sqlite3.Connection) -> User:
            user = _load_user(db, user_id)
            stamp = _ts(_now())
            changes: dict[str, Any] = {"updated_at": stamp}
            if role is not None:
                changes["role"] = role
                higher = [r for r in ROLE_RANK if ROLE_RANK[r] > ROLE_RANK[role]]
                marks = ", ".join("?" for _ in higher) or "NULL"
                db.execute(f"UPDATE tokens SET role = ? WHERE user_id = ? AND role IN ({marks})",  # noqa: S608
                           (role, user_id, *higher))
            if name is not None:
                changes["name"] = name
            if password_hash is not None:
                changes["password_hash"] = password_hash
                db.execute("UPDATE tokens SET revoked_at = ? WHERE user_id = ? AND kind ="
                           " 'session' AND revoked_at IS NULL", (stamp, user_id))
            if disabled is not None and disabled != (user.disabled_at is not None):
                changes["disabled_at"] = stamp if disabled else None
                if disabled:
                    db.execute("UPDATE tokens SET revoked_at = ? WHERE user_id = ? AND"
                               " revoked_at IS NULL", (stamp, user_id))
            if logged_in:
                changes["last_login_at"] = stamp
            columns = ", ".join(f"{column} = ?" for column in changes)
            db.execute(f"UPDATE users SET {columns} WHERE id = ?",  # noqa: S608 - fixed names
                       (*changes.values(), user_id))
            return _load_user(db, user_id)

        try:
            return await self._write(update)
        finally:
            self._forget_tokens()

    async def delete_user(self, user_id: str) -> User:
        """Remove a user; its tokens and sessions are revoked (their records stay, as the
        activity that names them does)."""

        def delete(db: sqlite3.Connection) -> User:
            user = _load_user(db, user_id)
            db.execute("UPDATE tokens SET revoked_at = ? WHERE user_id = ? AND revoked_at IS NULL",
                       (_ts(_now()), user_id))
            db.execute("DELETE FROM users WHERE id = ?", (user_id,))
            return user

        try:
            return await self._write(delete)
        finally:
            self._forget_tokens()

    async def count_admins(self) -> int:
        return int(await self._run(lambda db: db.execute(
            "SELECT COUNT(*) FROM users WHERE role = 'admin' AND disabled_at IS NULL"
        ).fetchone()[0]))

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
        user_id: str | None = None,
        kind: str = "api",
        cap: int | None = None,
        replaces: str | None = None,
        parent_id: str | None = None,
    ) -> Token:
        """A new token, made by `parent_id` (a token). With `cap`, refused (409) when its owner
        (its user; for a token of no user, its parent) already has that many active API
        tokens; `replaces` revokes that token in the same transaction (a renewed session). A
        user disabled or deleted meanwhile gets none."""
        token_id = f"tok_{secrets.token_hex(8)}"

        def insert(db: sqlite3.Connection) -> Token:
            stamp = _now()
            if user_id is not None and not db.execute(
                    "SELECT 1 FROM users WHERE id = ? AND disabled_at IS NULL",
                    (user_id,)).fetchone():
                raise Unauthorized("the user is disabled or gone", code="TOKEN_REVOKED")
            if cap is not None:
                active = _count_active(db, user_id, parent_id, stamp)
                if active >= cap:
                    raise Conflict(
                        f"token limit reached: {active} active tokens (at most {cap}); revoke one",
                        code="TOKEN_LIMIT", details={"active": active, "limit": cap})
            if replaces is not None:
                db.execute("UPDATE tokens SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL",
                           (_ts(stamp), replaces))
            db.execute(
                "INSERT INTO tokens (id, name, prefix, hash, role, projects, created_at,"
                " expires_at, user_id, kind, parent_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (token_id, name, prefix, token_hash, role, json.dumps(list(projects)),
                 _ts(stamp), _ts(expires_at), user_id, kind, parent_id),
            )
            return _load_token(db, token_id)

        try:
            return await self._write(insert)
        finally:
            self._forget_tokens()

    async def token_by_hash(self, token_hash: str) -> Token | None:
        """The token with this hash. Every request asks, so known tokens are answered from
        memory; this store is their only writer and forgets them on every token write."""
        if (cached := self._tokens.get(token_hash)) is not None:
            return cached
        generation = self._token_generation
        row = await self._run(lambda db: db.execute(
            f"{_TOKEN_SELECT} WHERE t.hash = ?", (token_hash,)).fetchone())
        if row is None:
            return None
        token = _token(row)
        if generation == self._token_generation:  # no token write happened meanwhile
            self._tokens[token_hash] = token
        return token

    def _forget_tokens(self) -> None:
        self._token_generation += 1
        self._tokens.clear()

    async def get_token(self, token_id: str) -> Token:
        return await self._run(lambda db: _load_token(db, token_id))

    async def list_tokens(self, *, user_id: str | None = None, owned_by: str | None = None,
                          kind: str | None = "api", include_revoked: bool = True) -> list[Token]:
        """Tokens, oldest first: all of them, or those of one user (`user_id`), or those a
        principal owns (`owned_by`: a user id, or the id of a token of no user: itself)."""
        sql = f"{_TOKEN_SELECT} WHERE 1 = 1"
        args: list[Any] = []
        if kind is not None:
            sql, args = sql + " AND t.kind = ?", [*args, kind]
        if user_id is not None:
            sql, args = sql + " AND t.user_id = ?", [*args, user_id]
        if owned_by is not None:
            if owned_by.startswith("usr_"):
                sql, args = sql + " AND t.user_id = ?", [*args, owned_by]
            else:  # a token of no user: itself and the tokens it made
                sql = sql + " AND t.user_id IS NULL AND (t.id = ? OR t.parent_id = ?)"
                args = [*args, owned_by, owned_by]
        if not include_revoked:
            sql += " AND t.revoked_at IS NULL"
        rows = await self._run(lambda db: db.execute(sql + " ORDER BY t.created_at",
                                                     args).fetchall())
        return [_token(r) for r in rows]

    async def count_tokens(self) -> int:
        return await self._run(lambda db: int(db.execute("SELECT COUNT(*) FROM tokens").fetchone()[0]))

    async def revoke_token(self, token_id: str) -> Token:
        """Revoke a token, and with a token of no user every token it made (and so on): they
        have no user to answer to but it."""
        def revoke(db: sqlite3.Connection) -> Token:
            _load_token(db, token_id)
            db.execute(
                "WITH RECURSIVE made(id) AS (SELECT ? UNION SELECT t.id FROM tokens t"
                " JOIN made ON t.parent_id = made.id WHERE t.user_id IS NULL)"
                " UPDATE tokens SET revoked_at = COALESCE(revoked_at, ?)"
                " WHERE id IN (SELECT id FROM made)", (token_id, _ts(_now())))
            return _load_token(db, token_id)

        try:
            return await self._write(revoke)
        finally:
            self._forget_tokens()

    async def touch_token(self, token_id: str) -> None:
        await self._run(lambda db: db.execute(
            "UPDATE tokens SET last_used_at = ? WHERE id = ?", (_ts(_now()), token_id)))

    async def tokens_expiring(self, within: timedelta) -> list[Token]:
        """Active API tokens that expire within `within` and were not yet announced."""
        stamp = _now()
        rows = await self._run(lambda db: db.execute(
            f"{_TOKEN_SELECT} WHERE t.kind = 'api' AND t.revoked_at IS NULL"
            " AND t.expiry_notified_at IS NULL AND t.expires_at > ? AND t.expires_at <= ?",
            (_ts(stamp), _ts(stamp + within))).fetchall())
        return [_token(r) for r in rows]

    async def mark_expiry_notified(self, token_id: str) -> None:
        await self._run(lambda db: db.execute(
            "UPDATE tokens SET expiry_notified_at = ? WHERE id = ?", (_ts(_now()), token_id)))

    # activity -------------------------------------------------------------------------------

    async def add_activity(self, record: Activity) -> None:
        await self._run(lambda db: db.execute(
            "INSERT INTO activity (at, actor, actor_id, action, method, path, target, project,"
            " status, request_id, ip) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (_ts(record.at), record.actor, record.actor_id, record.action, record.method,
             record.path, record.target, record.project, record.status, record.request_id,
             record.ip)))

    async def list_activity(
        self, *, visible_to: str | None, projects: Sequence[str] | None,
        before_id: int | None = None, limit: int = 20, actor: str | None = None,
        action: str | None = None, target: str | None = None, project: str | None = None,
        result: str | None = None, since: datetime | None = None,
    ) -> list[Activity]:
        """Newest first. `visible_to` (a principal) sees its own records and those of
        `projects` (None: every project); without it (an unscoped admin) everything shows."""
        where: list[str] = ["1 = 1"]
        args: list[Any] = []
        if visible_to is not None:
            args.append(visible_to)
            if projects is None:
                where.append("(actor_id = ? OR project IS NOT NULL)")
            else:  # a scoped token: its own records too only where they touch its projects
                marks = ", ".join("?" for _ in projects) or "NULL"
                where.append(f"((actor_id = ? AND project IS NULL) OR project IN ({marks}))")
                args.extend(projects)
        for column, value in (("actor", actor), ("action", action), ("target", target),
                              ("project", project)):
            if value is not None:
                where.append(f"{column} = ?")
                args.append(value)
        if result == "success":
            where.append("status < 400")
        elif result == "failure":
            where.append("status >= 400")
        if since is not None:
            where.append("at >= ?")
            args.append(_ts(since))
        if before_id is not None:
            where.append("id < ?")
            args.append(before_id)
        sql = f"SELECT * FROM activity WHERE {' AND '.join(where)} ORDER BY id DESC LIMIT ?"  # noqa: S608
        rows = await self._run(lambda db: db.execute(sql, (*args, limit)).fetchall())
        return [_activity(r) for r in rows]

    async def prune_activity(self) -> int:
        cutoff = _ts(_now() - ACTIVITY_RETENTION)
        return int(await self._run(lambda db: db.execute(
            "DELETE FROM activity WHERE at < ?", (cutoff,)).rowcount))

    # notifications --------------------------------------------------------------------------

    async def add_notification(self, *, kind: str, title: str, message: str,
                               project: str | None = None, service: str | None = None,
                               recipient: str | None = None,
                               data: dict[str, Any] | None = None) -> int:
        def insert(db: sqlite3.Connection) -> int:
            cursor = db.execute(
                "INSERT INTO notifications (at, kind, title, message, project, service, recipient,"
                " data) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (_ts(_now()), kind, title, message, project, service, recipient,
                 json.dumps(data or {})))
            return int(cursor.lastrowid or 0)

        return await self._run(insert)

    async def list_notifications(self, principal: str, projects: Sequence[str] | None, *,
                                 limit: int = 50, unread: bool = False) -> list[Notification]:
        """The newest notifications for `principal`: those addressed to it, and those of the
        projects it sees (`projects` None: all), each with its read state."""
        where, args = _notification_filter(principal, projects)
        if unread:
            where += " AND r.principal IS NULL"
        sql = f"{_NOTIFICATIONS_SELECT} WHERE {where} ORDER BY n.id DESC LIMIT ?"
        rows = await self._run(lambda db: db.execute(sql, (principal, *args, limit)).fetchall())
        return [_notification(r) for r in rows]

    async def count_unread(self, principal: str, projects: Sequence[str] | None) -> int:
        where, args = _notification_filter(principal, projects)
        sql = (f"SELECT COUNT(*) FROM notifications n WHERE {where} AND NOT EXISTS"  # noqa: S608
               " (SELECT 1 FROM notification_reads r WHERE r.notification_id = n.id"
               " AND r.principal = ?)")
        return int(await self._run(lambda db: db.execute(sql, (*args, principal)).fetchone()[0]))

    async def mark_read(self, principal: str, projects: Sequence[str] | None,
                        notification_id: int | None = None) -> int:
        """Mark one notification (or, without an id, all) read for `principal`; how many
        changed. An id the principal cannot see is a 404."""
        where, args = _notification_filter(principal, projects)

        def mark(db: sqlite3.Connection) -> int:
            sql = f"SELECT n.id FROM notifications n WHERE {where}"  # noqa: S608
            params: list[Any] = list(args)
            if notification_id is not None:
                sql += " AND n.id = ?"
                params.append(notification_id)
            ids = [r[0] for r in db.execute(sql, params).fetchall()]
            if notification_id is not None and not ids:
                raise NotFound(f"notification not found: {notification_id}",
                               code="NOTIFICATION_NOT_FOUND", details={"id": notification_id})
            stamp = _ts(_now())
            before = db.total_changes
            db.executemany(
                "INSERT OR IGNORE INTO notification_reads (notification_id, principal, at)"
                " VALUES (?, ?, ?)", [(i, principal, stamp) for i in ids])
            return db.total_changes - before

        return await self._write(mark)

    # idempotency ----------------------------------------------------------------------------

    async def claim_idempotency_key(self, owner: str, key: str,
                                    fingerprint: str) -> Idempotency | None:
        """Claim `key` for a request; None when it is new (the caller runs the request), else
        what the key already stands for. Keys older than 24 hours are forgotten."""

        def claim(db: sqlite3.Connection) -> Idempotency | None:
            row = db.execute("SELECT * FROM idempotency_keys WHERE owner = ? AND key = ?",
                             (owner, key)).fetchone()
            stamp = _now()
            if row is not None and _dt(row["created_at"]) > stamp - IDEMPOTENCY_TTL:  # type: ignore[operator]
                return Idempotency(
                    fingerprint=row["fingerprint"], state=row["state"], status=row["status"],
                    headers=[tuple(h) for h in json.loads(row["headers"])] if row["headers"]
                    else None,
                    body=self._open_response(owner, key, row["body"]) if row["body"] else None)
            db.execute(
                "INSERT OR REPLACE INTO idempotency_keys (owner, key, fingerprint, state,"
                " created_at) VALUES (?, ?, ?, 'running', ?)", (owner, key, fingerprint,
                                                                _ts(stamp)))
            return None

        return await self._write(claim)

    async def finish_idempotency_key(self, owner: str, key: str, status: int,
                                     headers: list[tuple[str, str]], body: bytes) -> None:
        """Keep the response for retries; encrypted, as it may hold a secret shown once (a
        new token's plaintext, a webhook's signing secret)."""
        sealed = self.keyring.encrypt(base64.b64encode(body).decode(),
                                      idempotency_aad(owner, key))
        await self._run(lambda db: db.execute(
            "UPDATE idempotency_keys SET state = 'done', status = ?, headers = ?, body = ?"
            " WHERE owner = ? AND key = ?", (status, json.dumps(headers), sealed, owner, key)))

    def _open_response(self, owner: str, key: str, sealed: str) -> bytes:
        return base64.b64decode(self.keyring.decrypt(sealed, idempotency_aad(owner, key)))

    async def release_idempotency_key(self, owner: str, key: str) -> None:
        """Forget a key whose request failed on the server's side: a retry may run again."""
        await self._run(lambda db: db.execute(
            "DELETE FROM idempotency_keys WHERE owner = ? AND key = ?", (owner, key)))

    async def prune_idempotency_keys(self, *, abandoned: bool = False) -> int:
        """Drop expired keys; with `abandoned` (at start), also those whose request was still
        running when the previous process ended: they will never finish."""
        cutoff = _ts(_now() - IDEMPOTENCY_TTL)
        sql = "DELETE FROM idempotency_keys WHERE created_at < ?"
        if abandoned:
            sql += " OR state = 'running'"
        return int(await self._run(lambda db: db.execute(sql, (cutoff,)).rowcount))


_TOKEN_SELECT = "SELECT t.*, u.email AS user_email FROM tokens t LEFT JOIN users u ON u.id = t.user_id"  # noqa: S105


_NOTIFICATIONS_SELECT = (
    "SELECT n.*, r.principal IS NOT NULL AS is_read FROM notifications n"
    " LEFT JOIN notification_reads r ON r.notification_id = n.id AND r.principal = ?")


def idempotency_aad(owner: str, key: str) -> str:
    return f"idempotency:{owner}:{key}"


def reseal_idempotency(db: sqlite3.Connection, keyring: Keyring) -> int:
    """Re-encrypt the kept responses under the active key (key rotation)."""
    rows = db.execute("SELECT owner, key, body FROM idempotency_keys WHERE body IS NOT NULL")
    count = 0
    for row in rows.fetchall():
        aad = idempotency_aad(row["owner"], row["key"])
        db.execute("UPDATE idempotency_keys SET body = ? WHERE owner = ? AND key = ?",
                   (keyring.encrypt(keyring.decrypt(row["body"], aad), aad), row["owner"],
                    row["key"]))
        count += 1
    return count


def _count_active(db: sqlite3.Connection, user_id: str | None, parent_id: str | None,
                  stamp: datetime) -> int:
    owner = "user_id = ?" if user_id else "user_id IS NULL AND parent_id IS ?"
    args: tuple[Any, ...] = (user_id,) if user_id else (parent_id,)
    return int(db.execute(
        f"SELECT COUNT(*) FROM tokens WHERE {owner} AND kind = 'api' AND revoked_at IS NULL"  # noqa: S608
        " AND (expires_at IS NULL OR expires_at > ?)", (*args, _ts(stamp))).fetchone()[0])


def _notification_filter(principal: str,
                         projects: Sequence[str] | None) -> tuple[str, list[Any]]:
    if projects is None:
        return "(n.recipient = ? OR (n.recipient IS NULL))", [principal]
    marks = ", ".join("?" for _ in projects) or "NULL"
    return (f"(n.recipient = ? OR (n.recipient IS NULL AND n.project IN ({marks})))",
            [principal, *projects])


def _user(row: sqlite3.Row) -> User:
    return User(
        id=row["id"], email=row["email"], name=row["name"], role=row["role"],
        created_at=datetime.fromisoformat(row["created_at"]),
        updated_at=datetime.fromisoformat(row["updated_at"]),
        disabled_at=_dt(row["disabled_at"]), last_login_at=_dt(row["last_login_at"]),
        has_password=row["password_hash"] is not None,
    )


def _load_user(db: sqlite3.Connection, user_id: str) -> User:
    row = db.execute("SELECT * FROM users WHERE id = ?", (user_id,)).fetchone()
    if row is None:
        raise UserNotFound(user_id)
    return _user(row)


def _token(row: sqlite3.Row) -> Token:
    return Token(
        id=row["id"], name=row["name"], prefix=row["prefix"], role=row["role"],
        created_at=datetime.fromisoformat(row["created_at"]),
        expires_at=_dt(row["expires_at"]), revoked_at=_dt(row["revoked_at"]),
        last_used_at=_dt(row["last_used_at"]), projects=tuple(json.loads(row["projects"])),
        user_id=row["user_id"], user_email=row["user_email"], kind=row["kind"],
        parent_id=row["parent_id"],
    )


def _load_token(db: sqlite3.Connection, token_id: str) -> Token:
    row = db.execute(f"{_TOKEN_SELECT} WHERE t.id = ?", (token_id,)).fetchone()
    if row is None:
        raise TokenNotFound(token_id)
    return _token(row)


def _activity(row: sqlite3.Row) -> Activity:
    return Activity(
        id=row["id"], at=datetime.fromisoformat(row["at"]), actor=row["actor"],
        actor_id=row["actor_id"], action=row["action"], method=row["method"], path=row["path"],
        target=row["target"], project=row["project"], status=row["status"],
        result="success" if row["status"] < 400 else "failure", request_id=row["request_id"],
        ip=row["ip"])


def _notification(row: sqlite3.Row) -> Notification:
    return Notification(
        id=row["id"], at=datetime.fromisoformat(row["at"]), kind=row["kind"],
        title=row["title"], message=row["message"], project=row["project"],
        service=row["service"], recipient=row["recipient"], data=json.loads(row["data"]),
        read=bool(row["is_read"]))
