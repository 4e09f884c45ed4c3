"""Backoff of failed deliveries (pure): base doubling, an hour at most, jitter that only
shortens, and the 24-hour window after which a delivery fails."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from legato.outbound.retry import MAX_DELAY_S, after_attempt, delay_s

T0 = datetime(2024, 5, 1, 12, tzinfo=UTC)


def no_jitter() -> float:
    return 0.0


def full_jitter() -> float:
    return 1.0


def test_delays_double_from_the_base_and_stop_at_an_hour() -> None:
    delays = [delay_s(n, 10.0, rand=no_jitter) for n in range(1, 13)]
    assert delays[:9] == [10, 20, 40, 80, 160, 320, 640, 1280, 2560]
    assert delays[9:] == [MAX_DELAY_S] * 3
    assert delay_s(500, 10.0, rand=no_jitter) == MAX_DELAY_S  # no overflow after many


def test_jitter_shortens_a_delay_by_at_most_a_fifth() -> None:
    assert delay_s(3, 10.0, rand=full_jitter) == 40 * 0.8
    assert delay_s(20, 10.0, rand=full_jitter) == MAX_DELAY_S * 0.8
    assert all(32 <= delay_s(3, 10.0) <= 40 for _ in range(200))


def test_success_finishes_the_delivery() -> None:
    outcome = after_attempt(ok=True, created_at=T0, attempted_at=T0, attempts=1, base_s=10)
    assert (outcome.status, outcome.next_attempt_at) == ("succeeded", None)


def test_a_failure_is_due_again_after_the_backoff() -> None:
    at = T0 + timedelta(seconds=30)
    outcome = after_attempt(ok=False, created_at=T0, attempted_at=at, attempts=3, base_s=10,
                            rand=no_jitter)
    assert outcome.status == "pending"
    assert outcome.next_attempt_at == at + timedelta(seconds=40)


def test_a_failure_after_24_hours_fails_the_delivery() -> None:
    late = T0 + timedelta(hours=23, minutes=30)
    outcome = after_attempt(ok=False, created_at=T0, attempted_at=late, attempts=30,
                            base_s=10, rand=no_jitter)
    assert (outcome.status, outcome.next_attempt_at) == ("failed", None)
    # the same failure earlier in the window is retried
    early = after_attempt(ok=False, created_at=T0, attempted_at=T0 + timedelta(hours=22),
                          attempts=30, base_s=10, rand=no_jitter)
    assert early.status == "pending"


def test_a_full_schedule_makes_about_thirty_attempts_in_a_day() -> None:
    at, attempts, status = T0, 0, "pending"
    while status == "pending":
        attempts += 1
        outcome = after_attempt(ok=False, created_at=T0, attempted_at=at, attempts=attempts,
                                base_s=10, rand=no_jitter)
        status = outcome.status
        if outcome.next_attempt_at is not None:
            assert outcome.next_attempt_at - at <= timedelta(hours=1)
            at = outcome.next_attempt_at
    assert status == "failed"
    assert 25 <= attempts <= 32
    assert at < T0 + timedelta(hours=24)
