"""Tables of the operator console: operators, sessions, what was done with dead letters, replay jobs."""

from __future__ import annotations

from sqlalchemy import BigInteger, Boolean, Column, Index, Integer, String, Table, Text, false, text

from hub.store.tables import metadata
from hub.store.types import UtcDateTime

ROLES = ("viewer", "operator", "privacy_officer")

operators = Table(
    "operators",
    metadata,
    Column("username", String(100), primary_key=True),
    Column("password_hash", String(200), nullable=False),
    Column("role", String(30), nullable=False),
    Column("created_at", UtcDateTime(), nullable=False),
    Column("disabled", Boolean, nullable=False, default=False, server_default=false()),
)

# Server-side sessions: the cookie holds a random token (signed); only its SHA-256 is stored.
operator_sessions = Table(
    "operator_sessions",
    metadata,
    Column("token_hash", String(64), primary_key=True),
    Column("username", String(100), nullable=False),
    Column("created_at", UtcDateTime(), nullable=False),
    Column("expires_at", UtcDateTime(), nullable=False),
)

# One row per resolved dead letter (replayed or discarded); a resolved record leaves the DLQ depth.
dlq_actions = Table(
    "dlq_actions",
    metadata,
    Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True),
    Column("dlq_topic", String(300), nullable=False),
    Column("partition", Integer, nullable=False),
    Column("offset", BigInteger, nullable=False),
    Column("action", String(20), nullable=False),
    Column("reason", Text, nullable=True),
    Column("operator", String(100), nullable=False),
    Column("at", UtcDateTime(), nullable=False),
    Column("job_id", String(40), nullable=True),
    # The record that failed, `<group>|<original topic>:<partition>:<offset>`: two letters of one
    # source are copies (the relay publishes at least once); one replayed, the other is not (0019).
    Column("source", String(400), nullable=True),
    # The letter's own timestamp (ms): a position is used again when a topic starts over (the
    # embedded broker's restart, a topic made again), and an action is its letter's alone (0020).
    Column("letter_at", BigInteger, nullable=True),
    # A discard of the first letter of a source drops the message: no copy of it is replayed after; a
    # copy's discard, a copy resolved as such, and every action before 0029 do not (0029).
    Column("drops_message", Boolean, nullable=False, default=False, server_default=false()),
    Index("ux_dlq_actions_record", "dlq_topic", "partition", "offset", "letter_at", unique=True),
    Index("ix_dlq_actions_source", "source"),
    Index(
        "ux_dlq_actions_source_replayed",
        "source",
        unique=True,
        postgresql_where=text("action = 'replayed'"),
        sqlite_where=text("action = 'replayed'"),
    ),
)

# Replay jobs, one row each, readable from every API replica and the CLI: who started it, what it
# replays (a summary of the filter, never a key's value), its counts as committed per batch (0024).
dlq_replay_jobs = Table(
    "dlq_replay_jobs",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("operator", String(200), nullable=False),
    Column("filter", String(500), nullable=False),
    Column("total", Integer, nullable=False),
    Column("done", Integer, nullable=False, default=0),
    Column("skipped", Integer, nullable=False, default=0),
    Column("failed", Integer, nullable=False, default=0),
    Column("state", String(20), nullable=False),
    Column("error", String(500), nullable=True),
    Column("started_at", UtcDateTime(), nullable=False),
    # the last batch committed, or the last sign of life while it waits: a job without one for
    # `STALE_AFTER` lost its process and is marked abandoned
    Column("progress_at", UtcDateTime(), nullable=False),
    Column("finished_at", UtcDateTime(), nullable=True),
    # One replay of many letters runs at a time in the hub, whichever replica or CLI started it.
    Index(
        "ux_dlq_replay_jobs_one_bulk_running",
        "state",
        unique=True,
        postgresql_where=text("state = 'running' AND total > 1"),
        sqlite_where=text("state = 'running' AND total > 1"),
    ),
    Index("ix_dlq_replay_jobs_finished_at", "finished_at"),
)
