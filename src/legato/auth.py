"""API tokens: `lgt_` + 43 url-safe characters, shown once, stored only as SHA-256."""

from __future__ import annotations

import hashlib
import logging
import os
import re
import secrets
from datetime import UTC, datetime, timedelta
from pathlib import Path

from legato.errors import Unauthorized, ValidationFailed
from legato.store import Store, Token

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
) -> tuple[Token, str]:
    """Create a token; the plaintext is returned here and never again."""
    if expires_in_days is not None and expires_in_days not in EXPIRY_DAYS:
        raise ValidationFailed(
            f"expires_in_days must be one of {EXPIRY_DAYS} or null (never)",
            details={"expires_in_days": expires_in_days},
        )
    token = plaintext or generate_token()
    if not TOKEN_PATTERN.match(token):
        raise ValidationFailed("a token must look like lgt_ followed by 43 url-safe characters")
    expires_at = datetime.now(UTC) + timedelta(days=expires_in_days) if expires_in_days else None
    record = await store.create_token(
        name=name, role=role, token_hash=hash_token(token), prefix=display_prefix(token),
        expires_at=expires_at, projects=projects,
    )
    return record, token


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
