"""Outbound webhooks: endpoints that receive Legato's events, and the deliveries made to
them (signed, retried with backoff for 24 hours, logged). Mixed into the Store."""

from __future__ import annotations

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
    CREATE TABLE webhook_deliveries (
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
    CREATE INDEX webhook_deliveries_due ON webhook_deliveries(status, next_attempt_at);
    CREATE INDEX webhook_deliveries_endpoint ON webhook_deliveries(endpoint_id, created_at);
    CREATE TABLE webhook_attempts (
        delivery_id TEXT NOT NULL REFERENCES webhook_deliveries(id) ON DELETE CASCADE,
        number INTEGER NOT NULL,
        at TEXT NOT NULL,
        status_code INTEGER,
        error TEXT,
        duration_ms REAL NOT NULL,
        PRIMARY KEY (delivery_id, number)
    ) WITHOUT ROWID;
"""


class HookRecords:
    """Mixed into Store: it supplies the connection, the keyring and the transactions."""
