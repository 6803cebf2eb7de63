"""Column types the store shares across its tables."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import DateTime
from sqlalchemy.types import TypeDecorator


class UtcDateTime(TypeDecorator[datetime]):
    """A moment, stored in UTC and read back with its offset, on PostgreSQL and SQLite alike.

    SQLite keeps a datetime's clock time and drops its offset: a receiver's meeting at 10:30+01:00 was
    stored as 10:30 and read back as 10:30 UTC, and every moment came back naive. A naive moment is
    the hub's own, in UTC, and is stored as it is.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None or value.tzinfo is None:
            return value
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None or value.tzinfo is not None:
            return value
        return value.replace(tzinfo=UTC)
