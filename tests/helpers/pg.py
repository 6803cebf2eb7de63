"""PostgreSQL facts the race tests wait on: a backend of the test's database waiting for a lock."""

from __future__ import annotations

from sqlalchemy import text

_WAITING = (
    "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'"
)
# waiting for an advisory lock (a youth's case lock; a migration elsewhere takes one too)
WAITING_FOR_ADVISORY = text(f"{_WAITING} AND wait_event = 'advisory'")
# waiting for a lock of any kind (advisory, a row's)
WAITING_FOR_ANY_LOCK = text(_WAITING)
