"""API tokens: `lgt_` + 43 url-safe characters, shown once, stored only as SHA-256."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import re
import secrets
from datetime import UTC, datetime, timedelta
from pathlib import Path

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from legato.errors import BadRequest, Unauthorized, ValidationFailed
from legato.store import Store, Token
from legato.store.models import User

log = logging.getLogger(__name__)

TOKEN_PREFIX = "lgt_"  # noqa: S105 - a prefix, not a secret
TOKEN_PATTERN = re.compile(r"^lgt_[A-Za-z0-9_-]{43}$")
EXPIRY_DAYS = (30, 90, 180, 365)


def generate_token() -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def display_prefix(token: str) -> str:
    return token[: len(TOKEN_PREFIX) + 6]


async def issue_token(
    store: Store,
    *,
    name: str,
    role: str,
    expires_in_days: int | None = None,
    projects: tuple[str, ...] = (),
    plaintext: str | None = None,
    user_id: str | None = None,
    cap: int | None = None,
    parent: Token | None = None,
) -> tuple[Token, str]:
    """Create an API token; the plaintext is returned here and never again. With `cap`, the
    owner may hold at most that many active API tokens. A token made by an API token that
    expires expires no later (a session's tokens are its user's, and outlive it)."""
    if expires_in_days is not None and expires_in_days not in EXPIRY_DAYS:
        raise ValidationFailed(
            f"expires_in_days must be one of {EXPIRY_DAYS} or null (never)",
            details={"expires_in_days": expires_in_days},
        )
    token = plaintext or generate_token()
    if not TOKEN_PATTERN.match(token):
        raise ValidationFailed("a token must look like lgt_ followed by 43 url-safe characters")
    expires_at = datetime.now(UTC) + timedelta(days=expires_in_days) if expires_in_days else None
    if parent is not None and parent.kind == "api" and parent.expires_at is not None:
        expires_at = min(expires_at or parent.expires_at, parent.expires_at)
    record = await store.create_token(
        name=name, role=role, token_hash=hash_token(token), prefix=display_prefix(token),
        expires_at=expires_at, projects=projects, user_id=user_id, cap=cap,
        parent_id=parent.id if parent else None,
    )
    return record, token


# users and sessions -------------------------------------------------------------------------

# Argon2id with RFC 9106's second recommended profile (t=3, 64 MiB, p=4): argon2-cffi's default.
_hasher = PasswordHasher()
_DUMMY_HASH = _hasher.hash("legato: a password no one has")  # verified when the email is unknown
MIN_PASSWORD = 12
MAX_PASSWORD = 1024


def check_password(password: str) -> None:
    if not MIN_PASSWORD <= len(password) <= MAX_PASSWORD:
        raise ValidationFailed(f"a password has {MIN_PASSWORD} to {MAX_PASSWORD} characters",
                               code="WEAK_PASSWORD")


async def hash_password(password: str) -> str:
    check_password(password)
    return await asyncio.to_thread(_hasher.hash, password)


async def _verify(password_hash: str, password: str) -> bool:
    def verify() -> bool:
        try:
            return _hasher.verify(password_hash, password)
        except (VerificationError, InvalidHashError):
            return False

    return await asyncio.to_thread(verify)


async def check_login(store: Store, email: str, password: str) -> User:
    """The user with this email and password. A wrong password, an unknown email and a
    disabled user get the same answer, after the same work."""
    found = await store.user_login(normalize_email(email))
    user, password_hash = found if found else (None, None)
    ok = await _verify(password_hash or _DUMMY_HASH, password[:MAX_PASSWORD])
    if user is None or password_hash is None or not ok or user.disabled_at is not None:
        raise Unauthorized("invalid email or password", code="LOGIN_FAILED")
    return user


async def login(store: Store, email: str, password: str, *, days: int) -> tuple[Token, str, User]:
    """A session for the user with this email and password."""
    user = await check_login(store, email, password)
    token, plaintext = await _session(store, user, days=days)
    return token, plaintext, await store.update_user(user.id, logged_in=True)


async def renew(store: Store, current: Token, *, days: int) -> tuple[Token, str]:
    """A new session in place of the current one (which ends now)."""
    if current.kind != "session" or current.user_id is None:
        raise BadRequest("only a login session can be renewed; API tokens are made anew",
                         code="NOT_A_SESSION")
    user = await store.get_user(current.user_id)
    return await _session(store, user, days=days, replaces=current.id)


async def _session(store: Store, user: User, *, days: int,
                   replaces: str | None = None) -> tuple[Token, str]:
    plaintext = generate_token()
    token = await store.create_token(
        name=f"session of {user.email}", role=user.role, token_hash=hash_token(plaintext),
        prefix=display_prefix(plaintext), expires_at=datetime.now(UTC) + timedelta(days=days),
        user_id=user.id, kind="session", replaces=replaces)
    return token, plaintext


def normalize_email(email: str) -> str:
    value = email.strip().lower()
    if len(value) > 254 or not _EMAIL.fullmatch(value):
        raise ValidationFailed(f"not an email address: {email!r}", code="INVALID_EMAIL")
    return value


_EMAIL = re.compile(r"[^@\s]+@[^@\s]+")


async def authenticate(store: Store, header: str | None) -> Token:
    """The token behind an `Authorization: Bearer` header, or Unauthorized."""
    if not header:
        raise Unauthorized("missing bearer token", code="TOKEN_MISSING")
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        raise Unauthorized("use Authorization: Bearer <token>", code="TOKEN_INVALID")
    token = await store.token_by_hash(hash_token(value.strip()))
    if token is None:
        raise Unauthorized("invalid token", code="TOKEN_INVALID")
    if token.revoked_at is not None:
        raise Unauthorized("token revoked", code="TOKEN_REVOKED")
    if token.expires_at is not None and token.expires_at <= datetime.now(UTC):
        raise Unauthorized("token expired", code="TOKEN_EXPIRED")
    return token


async def bootstrap_admin(store: Store, data_dir: Path, preset: str = "") -> str | None:
    """On first start, create the admin token and write it to `<data dir>/admin-token` (0600).

    Returns the plaintext when one was created now, None when tokens already exist.
    """
    if await store.count_tokens() > 0:
        return None
    _, token = await issue_token(store, name="admin (bootstrap)", role="admin",
                                 plaintext=preset or None)
    path = data_dir / "admin-token"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(token + "\n")
    os.chmod(path, 0o600)
    return token
