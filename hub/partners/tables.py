"""The partners table: name, type and the hash of the current API key (never the key itself)."""

from __future__ import annotations

from sqlalchemy import Boolean, Column, DateTime, String, Table

from hub.store.tables import metadata

partners = Table(
    "partners",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("name", String(100), nullable=False, unique=True),
    Column("type", String(30), nullable=False),
    # The key's public id: looked up by index, then the hash is compared in constant time.
    Column("key_id", String(32), nullable=False, unique=True),
    Column("key_hash", String(64), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("rotated_at", DateTime(timezone=True), nullable=True),
    Column("active", Boolean, nullable=False, default=True),
)
