"""Rate limits per token (or per client address without one) and request class, in fixed
one-minute windows held in memory: a restart forgets them, which lets nobody do more than one
extra window's worth. Classes and defaults after seed 002 (`legato.access`)."""

from __future__ import annotations

import math
import re
import time
from collections.abc import Callable
from dataclasses import dataclass

from legato.errors import LegatoError

WINDOW_S = 60.0
_BULK = (
    ("POST", re.compile(r"^/api/v1/deploy$")),
    ("POST", re.compile(r"^/api/v1/projects/[^/]+/deployments$")),
    ("DELETE", re.compile(r"^/api/v1/projects/[^/]+(/services)?$")),
    ("POST", re.compile(r"^/api/v1/keys/rotate$")),
)
_READS = frozenset({"GET", "HEAD", "OPTIONS"})
_PRUNE_EVERY = 1024


def request_class(method: str, path: str) -> str:
    """reads, writes, bulk, auth or webhooks."""
    if path == "/api/v1/auth/login":
        return "auth"
    if path.startswith(("/api/v1/webhooks", "/api/v1/webhook-endpoints")):
        return "webhooks"
    if method in _READS:
        return "reads"
    if any(method == m and pattern.match(path) for m, pattern in _BULK):
        return "bulk"
    return "writes"


@dataclass(frozen=True)
class Verdict:
    allowed: bool
    limit: int
    remaining: int
    reset_s: int  # seconds until the window starts anew

    def headers(self) -> list[tuple[bytes, bytes]]:
        values = [(b"x-ratelimit-limit", self.limit), (b"x-ratelimit-remaining", self.remaining),
                  (b"x-ratelimit-reset", self.reset_s)]
        if not self.allowed:
            values.append((b"retry-after", self.reset_s))
        return [(name, str(value).encode()) for name, value in values]


class RateLimited(LegatoError):
    status = 429
    code = "RATE_LIMITED"

    def __init__(self, verdict: Verdict, klass: str) -> None:
        super().__init__(
            f"rate limit of {verdict.limit} {klass} requests a minute reached; retry in "
            f"{verdict.reset_s} s",
            details={"class": klass, "limit": verdict.limit, "retry_after_s": verdict.reset_s})


class RateLimiter:
    def __init__(self, limits: Callable[[], dict[str, int]],
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._limits = limits
        self._clock = clock
        self._windows: dict[tuple[str, str], list[float]] = {}  # -> [started, count]
        self._hits = 0

    def hit(self, who: str, klass: str) -> Verdict:
        """Count one request of `who` in `klass`; refused ones count too (a client that
        keeps knocking does not get in sooner)."""
        limit = self._limits()[klass]
        now = self._clock()
        key = (who, klass)
        window = self._windows.get(key)
        if window is None or now - window[0] >= WINDOW_S:
            window = self._windows[key] = [now, 0]
        window[1] += 1
        self._hits += 1
        if self._hits % _PRUNE_EVERY == 0:
            self._prune(now)
        reset = max(1, math.ceil(window[0] + WINDOW_S - now))
        count = int(window[1])
        return Verdict(count <= limit, limit, max(0, limit - count), reset)

    def _prune(self, now: float) -> None:
        for key in [k for k, w in self._windows.items() if now - w[0] >= WINDOW_S]:
            del self._windows[key]
