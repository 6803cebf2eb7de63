"""The consents table: one row per recorded consent, the canonical consent (with BSN) inside."""

from __future__ import annotations

from sqlalchemy import JSON, Column, Date, Index, String, Table, Text

from hub.store.tables import metadata
from hub.store.types import UtcDateTime

# Personal data (rule 18): read and changed only through hub.consent.store, which audits.
consents = Table(
    "consents",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("youth_key", String(64), nullable=False),
    Column("referral_id", String(36), nullable=True),
    Column("purpose", String(30), nullable=False),
    Column("status", String(20), nullable=False),
    Column("valid_from", Date, nullable=False),
    Column("valid_until", Date, nullable=False),
    Column("consent", JSON, nullable=False),
    Column("recorded_by", String(100), nullable=False),
    Column("recorded_at", UtcDateTime(), nullable=False),
    Column("withdrawn_at", UtcDateTime(), nullable=True),
    Column("withdrawn_by", String(100), nullable=True),
    Column("withdrawal_reason", Text, nullable=True),
    Column("transaction_id", String(100), nullable=False),
    Index("ix_consents_youth_status", "youth_key", "status"),
)
