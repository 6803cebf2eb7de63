"""The referrals table: one row per (referrer, case reference), holding the referral and its decision."""

from __future__ import annotations

from sqlalchemy import JSON, Column, Index, String, Table, UniqueConstraint

from hub.store.tables import metadata
from hub.store.types import UtcDateTime

# Personal data (rule 18 applies): the canonical referral with BSN and names lives here and only here.
referrals = Table(
    "referrals",
    metadata,
    Column("id", String(36), primary_key=True),
    # Who referred, as rule 7 identifies it: "politie" for the police (Kafka or HTTP), "partner:<id>"
    # for another HTTP partner and the Kafka connector whose source it claimed, "kafka:<source>" for
    # a connector no partner claimed (or before the claim: hub.intake.sources).
    Column("referrer_key", String(200), nullable=False),
    Column("case_reference", String(100), nullable=False),
    Column("partner_id", String(36), nullable=True, index=True),
    Column("referrer_type", String(20), nullable=False),
    Column("channel", String(20), nullable=False),
    Column("youth_key", String(64), nullable=False),
    Column("bsn", String(9), nullable=False),
    Column("track", String(30), nullable=False),
    Column("outcome", String(20), nullable=False),
    Column("referral", JSON, nullable=False),
    Column("decision", JSON, nullable=False),
    Column("transaction_id", String(100), nullable=False),
    Column("received_at", UtcDateTime(), nullable=False),
    # Rule 7: concurrent repeats of one referral collide here, so it is stored once.
    UniqueConstraint("referrer_key", "case_reference", name="uq_referrals_referrer_case"),
    Index("ix_referrals_youth_track", "youth_key", "track"),
)
