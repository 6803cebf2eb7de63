"""The parking lot of the retry ladder: messages waiting for their next attempt, in order per key."""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    BigInteger,
    Column,
    Index,
    Integer,
    LargeBinary,
    String,
    Table,
    Text,
    text,
)

from hub.store.tables import metadata
from hub.store.types import UtcDateTime

parked = Table(
    "retry_parked",
    metadata,
    Column("seq", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True),
    Column("ladder", String(100), nullable=False),
    Column("key", String(200), nullable=False),
    Column("message_id", String(200), nullable=False),
    Column("value", LargeBinary, nullable=False),
    Column("headers", JSON, nullable=False),
    # The record the message came in, for its dead letter: its key (NULL: none), its value (NULL: the
    # same bytes as `value`) and its headers (NULL: parked before the ladder kept the record).
    Column("record_key", String(200), nullable=True),
    Column("record_value", LargeBinary, nullable=True),
    Column("record_headers", JSON, nullable=True),
    Column("attempt", Integer, nullable=False),
    Column("due_at", UtcDateTime(), nullable=False),
    Column("first_failure", UtcDateTime(), nullable=True),
    Column("last_error", Text, nullable=True),
    # PostgreSQL: the token of the hub process's delivery that has the row in hand, until `due_at`
    # (hub/retry/lease.py); NULL: in nobody's hands. Another process takes it only once that passed.
    Column("lease", String(32), nullable=True),
    # Attempts the hub's own store spoiled in a row (no rung used: `attempt` counts the partner's).
    Column("postponed", Integer, nullable=False, default=0, server_default=text("0")),
    Index("ix_retry_parked_ladder_key", "ladder", "key", "seq"),
    Index("ix_retry_parked_due", "ladder", "due_at"),
    Index("ix_retry_parked_message", "ladder", "message_id"),  # a mail's record key, by its id
)
