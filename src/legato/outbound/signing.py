"""The signature of an outbound webhook delivery (Stripe's scheme): the header
`Legato-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, f"{t}." + body)>`.

The timestamp is signed with the body, so a receiver that refuses old timestamps refuses
replays too. Pure functions, no IO; `verify` compares in constant time.
"""

from __future__ import annotations

import hashlib
import hmac
import time

SCHEME = "v1"
DEFAULT_TOLERANCE_S = 300


def digest(secret: str, timestamp: int, body: bytes) -> str:
    """The hex HMAC-SHA256 of `{timestamp}.{body}` keyed by the whole secret (`whsec_...`)."""
    return hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()


def sign(secret: str, timestamp: int, body: bytes) -> str:
    """The value of the Legato-Signature header for `body` sent at `timestamp`."""
    return f"t={timestamp},{SCHEME}={digest(secret, timestamp, body)}"


def parse(header: str) -> tuple[int | None, list[str]]:
    """The timestamp and every v1 signature of a header (unknown parts are ignored, so a
    later scheme can be added beside v1)."""
    timestamp: int | None = None
    signatures: list[str] = []
    for part in header.split(","):
        key, sep, value = part.strip().partition("=")
        if not sep:
            continue
        if key == "t" and value.isdigit():
            timestamp = int(value)
        elif key == SCHEME and value:
            signatures.append(value)
    return timestamp, signatures


def verify(secret: str, header: str, body: bytes, *, tolerance_s: float = DEFAULT_TOLERANCE_S,
           now: float | None = None) -> bool:
    """Whether `header` signs exactly `body` with `secret`, at a time within `tolerance_s` of
    `now` (default: the clock). Any one matching v1 signature is enough."""
    timestamp, signatures = parse(header)
    if timestamp is None or not signatures:
        return False
    current = time.time() if now is None else now
    if abs(current - timestamp) > tolerance_s:
        return False
    expected = digest(secret, timestamp, body)
    # Every candidate is compared (no early exit), each in constant time.
    return sum(hmac.compare_digest(expected, s) for s in signatures) > 0
