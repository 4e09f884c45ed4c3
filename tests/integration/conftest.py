"""Integration tests run one real `legato server` (real Docker, real HAProxy) per session."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.harness import Legato, running_legato

pytestmark = pytest.mark.integration


@pytest.fixture(scope="session")
def legato(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Legato]:
    with running_legato(tmp_path_factory.mktemp("legato")) as server:
        yield server


@pytest.fixture
def name() -> str:
    """A service name no other test uses."""
    return f"svc-{secrets.token_hex(3)}"


@pytest.fixture
def fresh_legato(tmp_path: Path) -> Iterator[Legato]:
    """A server of its own, for tests that kill or restart it."""
    with running_legato(tmp_path) as server:
        yield server
