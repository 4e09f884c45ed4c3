"""`since` values: a duration back from now (`30s`, `10m`, `2h`, `1d`) or an ISO timestamp."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

from legato.errors import ValidationFailed

_DURATION = re.compile(r"^(\d+)([smhd])$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}


def parse_since(value: str | None, *, now: datetime | None = None) -> datetime | None:
    if not value:
        return None
    match = _DURATION.match(value.strip())
    if match:
        amount, unit = int(match.group(1)), match.group(2)
        return (now or datetime.now(UTC)) - timedelta(**{_UNITS[unit]: amount})
    try:
        stamp = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    except ValueError as exc:
        raise ValidationFailed(
            f"invalid since {value!r}: use a duration (30s, 10m, 2h, 1d) or an ISO timestamp",
            details={"since": value},
        ) from exc
    return stamp if stamp.tzinfo else stamp.replace(tzinfo=UTC)
