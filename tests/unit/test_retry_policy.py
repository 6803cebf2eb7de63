"""The retry schedule: growing delays, Retry-After honoured, exhausted after the last step."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

from hub.retry import RetryPolicy, next_due, parse_retry_after
from hub.retry.policy import put_off

NOW = datetime(2026, 1, 1, tzinfo=UTC)


def test_schedule_grows_and_ends() -> None:
    policy = RetryPolicy(schedule_s=(1, 5, 30), jitter=0.0)
    delays = [(next_due(policy, n, NOW) - NOW).total_seconds() for n in (1, 2, 3)]  # type: ignore[operator]
    assert delays == [1, 5, 30]
    assert next_due(policy, 4, NOW) is None


def test_jitter_stays_within_its_band() -> None:
    policy = RetryPolicy(schedule_s=(10,), jitter=0.1)
    rand = random.Random(7)
    for _ in range(200):
        due = next_due(policy, 1, NOW, rand=rand)
        assert due is not None
        assert timedelta(seconds=9) <= due - NOW <= timedelta(seconds=11)


def test_retry_after_wins_when_longer_and_is_capped() -> None:
    policy = RetryPolicy(schedule_s=(1,), jitter=0.0, max_retry_after_s=60)
    assert next_due(policy, 1, NOW, retry_after=20) == NOW + timedelta(seconds=20)
    assert next_due(policy, 1, NOW, retry_after=0.5) == NOW + timedelta(seconds=1)
    assert next_due(policy, 1, NOW, retry_after=10_000) == NOW + timedelta(seconds=60)


def test_a_store_failure_puts_off_as_long_as_a_rung_would_and_never_ends_the_ladder() -> None:
    """The hub's own store spoiling an attempt is no failure of the partner's: the wait grows with
    each one in a row, from the rung the message is on, and stays at the last rung's past the end."""
    policy = RetryPolicy(schedule_s=(1, 5, 30), jitter=0.0)

    def waits(attempt: int) -> list[float]:
        return [(put_off(policy, attempt, n, NOW) - NOW).total_seconds() for n in (1, 2, 3, 4)]

    assert waits(0) == [1, 5, 30, 30]  # before the first rung: as the first rung would wait
    assert waits(2) == [30, 30, 30, 30]
    assert waits(3) == [30, 30, 30, 30]  # at the last rung: no dead letter
    assert put_off(policy, 0, 1, NOW, retry_after=20) == NOW + timedelta(seconds=20)
    assert put_off(RetryPolicy(schedule_s=(), jitter=0.0), 0, 1, NOW) == NOW + timedelta(seconds=1)


def test_in_place_backoff_is_exponential_and_capped() -> None:
    policy = RetryPolicy(in_place_wait_s=0.1, in_place_max_wait_s=0.3)
    assert [policy.in_place_delay(n) for n in (1, 2, 3, 4)] == [0.1, 0.2, 0.3, 0.3]


def test_retry_after_in_seconds_or_as_an_http_date() -> None:
    now = datetime(2026, 1, 15, 12, 0, tzinfo=UTC)
    assert parse_retry_after("120", now) == 120
    assert parse_retry_after(" 1.5 ", now) == 1.5
    assert parse_retry_after("Thu, 15 Jan 2026 12:00:30 GMT", now) == 30
    assert parse_retry_after("Thu, 15 Jan 2026 11:00:00 GMT", now) == 0  # already past: no wait
    for bad in ("soon", "-3", "nan", "inf", "", None):
        assert parse_retry_after(bad, now) is None, bad
    # numbers beyond what a date holds raised OverflowError, which a connector took for a permanent
    # failure: a partner's temporary refusal was dead-lettered instead of retried
    huge = "9" * 20
    for odd in (
        f"Mon, 01 Jan {huge} 00:00:00 GMT",
        f"Mon, 01 Jan 2026 {huge}:00:00 GMT",
        f"Mon, 01 Jan 2026 00:00:00 +{huge}",
        "Mon, 01 Jan 2026 00:00:00 +9999",
    ):
        assert parse_retry_after(odd, now) is None, odd
