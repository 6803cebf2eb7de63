"""The partners table: name, type, the hash of the current API key (never the key itself), and the
Kafka connector source the partner speaks for."""

from __future__ import annotations

from sqlalchemy import Boolean, Column, Index, String, Table

from hub.store.tables import metadata
from hub.store.types import UtcDateTime

partners = Table(
    "partners",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("name", String(100), nullable=False, unique=True),
    Column("type", String(30), nullable=False),
    # The key's public id: looked up by index, then the hash is compared in constant time.
    Column("key_id", String(32), nullable=False, unique=True),
    Column("key_hash", String(64), nullable=False),
    Column("created_at", UtcDateTime(), nullable=False),
    Column("rotated_at", UtcDateTime(), nullable=True),
    Column("active", Boolean, nullable=False, default=True),
    # The envelope source of the Kafka connector that publishes this partner's referrals on
    # referral.received.v1 (`ketenhub partners set-kafka-source`): rule 7 takes them as this
    # partner's, over HTTP or through the connector alike (hub.intake.sources, hub.intake.claims).
    Column("kafka_source", String(100), nullable=True),
    # One connector speaks for one referrer: a source is claimed by one partner at most.
    Index("ux_partners_kafka_source", "kafka_source", unique=True),
)
