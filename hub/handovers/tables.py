"""Handovers and the receivers' delivery settings (webhook or Kafka topic)."""

from __future__ import annotations

from sqlalchemy import JSON, Boolean, Column, Index, String, Table, Text

from hub.store.tables import metadata
from hub.store.types import UtcDateTime

handovers = Table(
    "handovers",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("referral_id", String(36), nullable=False, index=True),
    Column("youth_key", String(64), nullable=False),
    Column("from_caseworker", String(100), nullable=False),
    Column("receiver_organisation", String(100), nullable=False),
    Column("receiver_type", String(30), nullable=False),
    # WARME_OVERDRACHT or DELEN_NA_MATCH under consent; ZORGMELDING without (rule 21).
    Column("purpose", String(30), nullable=False),
    Column("legal_basis", Text, nullable=True),
    Column("consent_id", String(36), nullable=True),
    Column("data_categories", JSON, nullable=False),
    Column("summary", Text, nullable=False),
    Column("joint_meeting", JSON, nullable=True),
    Column("status", String(30), nullable=False),
    Column("status_reason", Text, nullable=True),
    Column("waiting_reasons", JSON, nullable=True),
    Column("created_at", UtcDateTime(), nullable=False),
    Column("updated_at", UtcDateTime(), nullable=False),
    Column("sent_at", UtcDateTime(), nullable=True),
    Column("delivered_at", UtcDateTime(), nullable=True),
    # The first POST to a webhook receiver: it may have the data even without a 2xx (rule 10).
    Column("attempted_at", UtcDateTime(), nullable=True),
    Column("answered_at", UtcDateTime(), nullable=True),
    Column("meeting_planned_at", UtcDateTime(), nullable=True),
    Column("overdue_notified_at", UtcDateTime(), nullable=True),
    Column("transaction_id", String(100), nullable=False),
    Index("ix_handovers_youth_status", "youth_key", "status"),
    Index("ix_handovers_status_sent", "status", "sent_at"),
)

# How each receiving organisation (a registered partner, by name) gets its handovers.
receiver_deliveries = Table(
    "receiver_deliveries",
    metadata,
    Column("organisation", String(100), primary_key=True),
    Column("receiver_type", String(30), nullable=False),
    Column("mode", String(10), nullable=False),  # "kafka" or "webhook"
    Column("url", String(500), nullable=True),
    # The HMAC key the receiver verifies signatures with; it must be readable to sign, so not hashed.
    Column("secret", String(200), nullable=True),
    Column("active", Boolean, nullable=False),
)
