"""The retry schedule as pure functions: what to wait before attempt n, honouring Retry-After."""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime


@dataclass(frozen=True)
class RetryPolicy:
    """A few quick retries in place, then parked attempts after growing delays, then the DLQ."""

    in_place_attempts: int = 3
    in_place_wait_s: float = 0.1
    in_place_max_wait_s: float = 1.0
    # Delay before each parked attempt; after the last one fails, the message is dead-lettered.
    schedule_s: tuple[float, ...] = (1.0, 5.0, 30.0, 120.0, 600.0)
    jitter: float = 0.1
    max_retry_after_s: float = 3600.0

    @property
    def max_parked_attempts(self) -> int:
        """How many parked attempts there are before the DLQ."""
        return len(self.schedule_s)

    def in_place_delay(self, attempt: int) -> float:
        """Wait before in-place retry `attempt` (1-based): exponential, capped."""
        return float(min(self.in_place_wait_s * 2 ** (attempt - 1), self.in_place_max_wait_s))


def next_due(
    policy: RetryPolicy,
    parked_attempt: int,
    now: datetime,
    *,
    retry_after: float | None = None,
    rand: random.Random | None = None,
) -> datetime | None:
    """When parked attempt `parked_attempt` (1-based) is due; None when the ladder is exhausted.

    A Retry-After from the partner is honoured when it asks for longer than the schedule.
    """
    if parked_attempt > policy.max_parked_attempts:
        return None
    return _after(policy, policy.schedule_s[parked_attempt - 1], now, retry_after, rand)


# A message whose attempt the hub's own store spoiled this many times in a row is no longer put off
# without a rung: a failure that keeps coming for it alone climbs the ladder to the DLQ.
POSTPONE_AT_MOST = 10


def put_off(
    policy: RetryPolicy,
    attempt: int,
    postponed: int,
    now: datetime,
    *,
    retry_after: float | None = None,
    rand: random.Random | None = None,
) -> datetime:
    """When a message is tried again whose attempt the hub's own store spoiled, for the `postponed`th
    time in a row (a lookup on the way, or the outcome's record, failed), at parked attempt `attempt`.

    It is no failure of the partner's, so it uses no rung (up to `POSTPONE_AT_MOST` in a row); it
    waits as long as rung `attempt + postponed` would (the last rung's wait past the end): a store in
    trouble is not hammered, and a delivery that did get through is not sent again as fast as the
    scheduler runs.
    """
    delays = policy.schedule_s or (1.0,)  # a ladder of no rungs still waits a moment
    base = delays[max(1, min(attempt + postponed, len(delays))) - 1]
    return _after(policy, base, now, retry_after, rand)


def _after(
    policy: RetryPolicy, base: float, now: datetime, retry_after: float | None, rand: random.Random | None
) -> datetime:
    """`now` plus `base` seconds, spread by the policy's jitter, or the partner's longer Retry-After."""
    delay = base + (rand or random).uniform(-policy.jitter, policy.jitter) * base
    if retry_after is not None:
        delay = max(delay, min(retry_after, policy.max_retry_after_s))
    return now + timedelta(seconds=delay)


def parse_retry_after(value: str | None, now: datetime | None = None) -> float | None:
    """Seconds to wait from a partner's Retry-After: delay-seconds or an HTTP-date; None if absent or bad.

    Every connector reads the header with this one function, so a partner that answers with a date
    (as RFC 9110 allows) is honoured everywhere, not taken for "no wait".
    """
    if value is None or not value.strip():
        return None
    text = value.strip()
    try:
        seconds = float(text)  # delay-seconds; a decimal is read too, leniently
    except ValueError:
        pass
    else:
        return seconds if math.isfinite(seconds) and seconds >= 0 else None
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError, OverflowError):  # numbers no date can hold
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())
