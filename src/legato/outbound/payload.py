"""What a delivery sends (pure): its JSON body and headers.

The body is `{"id": <delivery id>, "type", "created_at", "project", "service", "data": {<the
event: id, type, message, details, created_at>}}`. The stored payload is everything but
`id`, so a redelivery sends the same payload under its own delivery id; receivers that want
exactly-once handling key on `data.id` (the event) or on the delivery id of retries.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from legato import __version__
from legato.outbound.signing import sign
from legato.store.models import Event

PING = "ping"
# The platform's event types (Event.type), plus ping; an endpoint subscribes to some or "*".
EVENT_TYPES = ("deploy", "crash", "health", "scaling", "lifecycle", "config", "error", PING)
ALL_EVENTS = "*"
USER_AGENT = f"Legato-Webhooks/{__version__}"


def stamp(value: datetime) -> str:
    """A time as the API writes it: UTC, ISO 8601, `Z`."""
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def event_payload(event: Event, project: str | None) -> dict[str, Any]:
    return {
        "type": event.type,
        "created_at": stamp(event.created_at),
        "project": project,
        "service": event.service,
        "data": {"id": event.id, "type": event.type, "message": event.message,
                 "details": event.details, "created_at": stamp(event.created_at)},
    }


def ping_payload(endpoint_id: str, project: str | None, at: datetime) -> dict[str, Any]:
    return {
        "type": PING,
        "created_at": stamp(at),
        "project": project,
        "service": None,
        "data": {"id": None, "type": PING, "message": "ping from Legato",
                 "details": {"endpoint_id": endpoint_id}, "created_at": stamp(at)},
    }


def body(delivery_id: str, payload: dict[str, Any]) -> bytes:
    return json.dumps({"id": delivery_id, **payload}, separators=(",", ":")).encode()


def headers(*, secret: str, delivery_id: str, event_type: str, timestamp: int,
            content: bytes) -> dict[str, str]:
    return {
        "Content-Type": "application/json",
        "Accept-Encoding": "identity",  # an error body is kept in part, never decompressed
        "User-Agent": USER_AGENT,
        "Legato-Event": event_type,
        "Legato-Delivery": delivery_id,
        "Legato-Timestamp": str(timestamp),
        "Legato-Signature": sign(secret, timestamp, content),
    }
