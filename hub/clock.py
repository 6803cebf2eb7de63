"""The hub's clock: moments in UTC, days as Halt counts them (the Dutch calendar day).

A date rule (an end date, an absence, "not in the future") is about the day in the Netherlands,
not the day on the server's clock: between 23:00 and 24:00 UTC in winter they differ.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, date, datetime
from zoneinfo import ZoneInfo

from schemas.envelope import utcnow

LOCAL = ZoneInfo("Europe/Amsterdam")
Clock = Callable[[], datetime]


def local_day(moment: datetime) -> date:
    """The Dutch calendar day of a moment (naive moments are taken as Dutch local time)."""
    return moment.astimezone(LOCAL).date() if moment.tzinfo else moment.date()


def today(clock: Clock = utcnow) -> date:
    """Today in the Netherlands, by `clock`."""
    return local_day(clock())


def aware(moment: datetime) -> datetime:
    """A moment as the hub keeps it, in UTC: a naive one (SQLite's, read by a raw query; the tables'
    `UtcDateTime` columns come back aware) is UTC."""
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)
