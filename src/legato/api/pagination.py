"""Cursor pagination: opaque cursors, `limit` capped at 100."""

from __future__ import annotations

import base64
import binascii
from typing import Annotated

from fastapi import Query

from legato.errors import ValidationFailed

Limit = Annotated[int, Query(ge=1, le=100, description="Items per page (max 100)")]
Cursor = Annotated[str | None, Query(description="From the previous page's next_cursor")]


def encode(value: str) -> str:
    return base64.urlsafe_b64encode(value.encode()).decode().rstrip("=")


MAX_ID = 2**63 - 1  # SQLite's integers


def number(value: str | None, code: str = "INVALID_CURSOR") -> int | None:
    """A row id or number given as text (a cursor, an event id), or 422 `code`."""
    if value is None or value == "":
        return None
    if not (value.isascii() and value.isdigit()) or int(value) > MAX_ID:
        raise ValidationFailed(f"not an id: {value[:40]!r}", code=code)
    return int(value)


def decode_number(cursor: str | None) -> int | None:
    """The number an opaque cursor stands for, or 422 INVALID_CURSOR."""
    return number(decode(cursor))


def decode(cursor: str | None) -> str | None:
    if not cursor:
        return None
    try:
        return base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
    except (binascii.Error, ValueError) as exc:  # ValueError: not ASCII, or not UTF-8
        raise ValidationFailed("invalid cursor", code="INVALID_CURSOR") from exc
