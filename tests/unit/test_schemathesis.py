"""Schemathesis against /openapi.json with a valid admin token: generated requests for every
operation (a bounded number each, so the suite stays fast) must never get a server error,
and every answer must match the schema the operation documents.

The app runs over the fake runtime: what is tested is the API's handling of whatever a
client sends. Streams (SSE and the follow modes) are left out: they answer forever."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
)

from legato.api.app import create_app
from legato.auth import issue_token
from legato.config import Settings
from legato.crypto import Keyring
from legato.platform import Platform
from legato.runtime.fake import FakeRuntime
from legato.store import Store
from tests.unit.conftest import IMAGE, FakeEdge

EXAMPLES = 10  # per operation
STREAMS = r"/stream$|/logs$|/build-log$"


def _platform(root: Path) -> tuple[Platform, str]:
    settings = Settings(data_dir=root, instance="fuzz", rate_limits=dict.fromkeys(
        ("reads", "writes", "bulk", "auth", "webhooks"), 10_000_000))
    store = Store(root / "db", Keyring(secrets.token_bytes(32)))
    platform = Platform(settings, store, FakeRuntime(images=[IMAGE]), FakeEdge())

    async def seed() -> str:
        _, token = await issue_token(store, name="fuzz", role="admin")
        await platform.deploy([{"name": "web", "image": IMAGE}], actor="fuzz")
        return token

    return platform, asyncio.run(seed())


_root = Path(__import__("tempfile").mkdtemp(prefix="legato-fuzz-"))
_platform_instance, _token = _platform(_root)
schema = schemathesis.openapi.from_asgi("/openapi.json", create_app(_platform_instance)).exclude(
    path_regex=STREAMS)


@pytest.fixture(scope="module", autouse=True)
def _close() -> Iterator[None]:
    yield
    _platform_instance.store.close()


@schema.parametrize()
@settings(max_examples=EXAMPLES, deadline=None, derandomize=True,
          suppress_health_check=list(HealthCheck))
def test_no_server_error_and_every_answer_matches_the_schema(case: schemathesis.Case) -> None:
    case.call_and_validate(
        headers={"Authorization": f"Bearer {_token}"},
        checks=[not_a_server_error, response_schema_conformance, content_type_conformance])
