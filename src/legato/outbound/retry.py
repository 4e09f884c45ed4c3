"""When a failed delivery is attempted again (pure): exponential backoff from a base (10 s),
doubling, at most an hour apart, with jitter, until 24 hours after the delivery was made."""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

MAX_DELAY_S = 3600.0
RETRY_WINDOW = timedelta(hours=24)
JITTER = 0.2  # a delay is shortened by up to this fraction, so receivers are not hit in step


def delay_s(attempts: int, base_s: float, *, rand: Callable[[], float] = random.random) -> float:
    """Seconds to wait after the `attempts`-th failed attempt: base * 2^(attempts-1), capped
    at an hour, less up to 20 % jitter."""
    raw = min(MAX_DELAY_S, base_s * 2.0 ** min(max(attempts - 1, 0), 40))
    return raw * (1.0 - JITTER * rand())


@dataclass(frozen=True)
class Outcome:
    status: str  # succeeded | pending (another attempt at next_attempt_at) | failed
    next_attempt_at: datetime | None


def after_attempt(*, ok: bool, created_at: datetime, attempted_at: datetime, attempts: int,
                  base_s: float, rand: Callable[[], float] = random.random) -> Outcome:
    """What a delivery becomes after its `attempts`-th attempt (made at `attempted_at`)."""
    if ok:
        return Outcome("succeeded", None)
    due = attempted_at + timedelta(seconds=delay_s(attempts, base_s, rand=rand))
    if due >= created_at + RETRY_WINDOW:
        return Outcome("failed", None)
    return Outcome("pending", due)
