"""Column types the store shares across its tables."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import DateTime
from sqlalchemy.types import TypeDecorator

# How SQLAlchemy's SQLite dialect stores a moment: its clock time in UTC, with no offset.
_STORED = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2} [0-9]{2}:[0-9]{2}:[0-9]{2}(?:\.[0-9]{1,6})?")


class UtcDateTime(TypeDecorator[datetime]):
    """A moment, stored in UTC and read back with its offset, on PostgreSQL and SQLite alike.

    SQLite keeps a datetime's clock time and drops its offset: a receiver's meeting at 10:30+01:00 was
    stored as 10:30 and read back as 10:30 UTC, and every moment came back naive. A naive moment is
    the hub's own, in UTC, and is stored as it is.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None or value.tzinfo is None or value.tzinfo is UTC:  # the hub's own: as it is
            return value
        return value.astimezone(UTC)

    def result_processor(self, dialect: Any, coltype: Any) -> Any:
        """SQLite's text read straight as a UTC moment (what it stored, without its offset): a third
        of the time of parsing it naive and then `replace`, on every moment every query reads."""
        if dialect.name != "sqlite":
            return super().result_processor(dialect, coltype)
        general = super().result_processor(dialect, coltype)

        def process(value: Any) -> datetime | None:
            if isinstance(value, str) and _STORED.fullmatch(value):
                return datetime.fromisoformat(value + "+00:00")
            return general(value) if general is not None else value

        return process

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None or value.tzinfo is not None:
            return value
        return value.replace(tzinfo=UTC)
