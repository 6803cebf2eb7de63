"""Table definitions of the spine: inbox, outbox and the append-only audit log."""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    BigInteger,
    Column,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    text,
)

from hub.store.types import UtcDateTime

metadata = MetaData()

# One row per processed message per consumer group, written in the same transaction as its effects.
inbox = Table(
    "inbox",
    metadata,
    Column("consumer", String(200), primary_key=True),
    Column("message_id", String(200), primary_key=True),
    Column("processed_at", UtcDateTime(), nullable=False),
    Index("ix_inbox_processed_at", "processed_at"),  # the purge of entries past their term
)

# Messages waiting to be published, written in the same transaction as the state change.
outbox = Table(
    "outbox",
    metadata,
    Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True),
    Column("topic", String(300), nullable=False),
    Column("key", String(200), nullable=True),
    Column("value", LargeBinary, nullable=False),
    Column("headers", JSON, nullable=False),
    Column("message_id", String(200), nullable=True),
    Column("created_at", UtcDateTime(), nullable=False),
    Column("sent_at", UtcDateTime(), nullable=True),
    Index("ix_outbox_unsent", "sent_at", "id"),  # the purge of sent rows, the oldest pending row
    # The relay's read: pending rows in id order (migration 0015 says why it is partial).
    Index(
        "ix_outbox_pending",
        "id",
        postgresql_where=text("sent_at IS NULL"),
        sqlite_where=text("sent_at IS NULL"),
    ),
)

# Outbox rows the brokers would refuse for good (over their message size limit), moved aside by the
# relay so they do not stop everything behind them; an operator releases or discards each (audited).
outbox_parked = Table(
    "outbox_parked",
    metadata,
    Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True),
    Column("outbox_id", BigInteger, nullable=False),  # its id in the outbox (SQLite may hand it out again)
    Column("topic", String(300), nullable=False),
    Column("key", String(200), nullable=True),
    Column("value", LargeBinary, nullable=False),
    Column("headers", JSON, nullable=False),
    Column("message_id", String(200), nullable=True),
    Column("created_at", UtcDateTime(), nullable=False),
    Column("parked_at", UtcDateTime(), nullable=False),
    Column("size", Integer, nullable=False),
    Column("reason", String(300), nullable=False),
    # Released or discarded (0021): emptied at once, kept with who did it and why until its term.
    Column("resolved", String(20), nullable=True),
    Column("resolved_at", UtcDateTime(), nullable=True),
    Column("resolved_by", String(100), nullable=True),
    Column("resolution", Text, nullable=True),
)

# NEN 7513-style audit entries (rule 18): never updated, never deleted before their term.
audit_log = Table(
    "audit_log",
    metadata,
    Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True),
    Column("at", UtcDateTime(), nullable=False),
    Column("action", String(100), nullable=False),
    Column("youth_key", String(64), nullable=True, index=True),
    Column("user", String(200), nullable=False),
    Column("on_behalf_of", String(200), nullable=True),
    Column("system", String(200), nullable=False),
    Column("objects", JSON, nullable=False),
    Column("transaction_id", String(100), nullable=True, index=True),
    Column("legal_basis", Text, nullable=True),
)

# The fingerprint of the pseudonymisation secret the hub first started with on this database: an HMAC
# of a fixed text under the secret, never the secret (hub.secret_fingerprint). One row, id 1.
secret_fingerprint = Table(
    "secret_fingerprint",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("fingerprint", String(64), nullable=False),
    Column("recorded_at", UtcDateTime(), nullable=False),
)
