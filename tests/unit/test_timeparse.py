"""parse_since: a duration back from now, or an ISO timestamp; anything else is a 422."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from legato.errors import ValidationFailed
from legato.timeparse import parse_since

NOW = datetime(2024, 5, 1, 12, 0, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("value", "back"),
    [
        ("30s", timedelta(seconds=30)),
        ("10m", timedelta(minutes=10)),
        ("2h", timedelta(hours=2)),
        ("1d", timedelta(days=1)),
        ("0s", timedelta(0)),
        (" 5m ", timedelta(minutes=5)),
    ],
)
def test_duration_is_subtracted_from_now(value: str, back: timedelta) -> None:
    assert parse_since(value, now=NOW) == NOW - back


def test_duration_defaults_to_the_current_time() -> None:
    before = datetime.now(UTC)
    result = parse_since("1h")
    after = datetime.now(UTC)
    assert result is not None
    assert before - timedelta(hours=1) <= result <= after - timedelta(hours=1)


@pytest.mark.parametrize("value", [None, ""])
def test_empty_means_no_lower_bound(value: str | None) -> None:
    assert parse_since(value, now=NOW) is None


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("2024-05-01T10:00:00Z", datetime(2024, 5, 1, 10, tzinfo=UTC)),
        ("2024-05-01T10:00:00+00:00", datetime(2024, 5, 1, 10, tzinfo=UTC)),
        ("2024-05-01T10:00:00.250Z", datetime(2024, 5, 1, 10, 0, 0, 250_000, tzinfo=UTC)),
        ("2024-05-01", datetime(2024, 5, 1, tzinfo=UTC)),
    ],
)
def test_iso_timestamp_in_utc(value: str, expected: datetime) -> None:
    assert parse_since(value, now=NOW) == expected


def test_naive_timestamp_is_taken_as_utc() -> None:
    result = parse_since("2024-05-01T10:00:00")
    assert result == datetime(2024, 5, 1, 10, tzinfo=UTC)
    assert result.tzinfo is not None


def test_timestamp_offset_is_kept() -> None:
    result = parse_since("2024-05-01T12:00:00+02:00")
    assert result is not None
    assert result.utcoffset() == timedelta(hours=2)
    assert result == datetime(2024, 5, 1, 10, tzinfo=UTC)
    assert result.tzinfo == timezone(timedelta(hours=2))


@pytest.mark.parametrize("value", ["yesterday", "10x", "-5m", "5 m", "1.5h", "m", "2024-13-01"])
def test_invalid_since_is_validation_failed(value: str) -> None:
    with pytest.raises(ValidationFailed) as caught:
        parse_since(value, now=NOW)
    assert caught.value.status == 422
    assert caught.value.code == "VALIDATION_FAILED"
    assert caught.value.details == {"since": value}
