"""Tables of the mail area: mails sent (once per notification), problems for administrators, the sink."""

from __future__ import annotations

from sqlalchemy import BigInteger, Column, Index, Integer, String, Table, Text

from hub.store.tables import metadata
from hub.store.types import UtcDateTime

# One row per notification that the SMTP server accepted; written in the same transaction as the
# mail consumer's inbox entry (or the retry ladder's un-parking), so a redelivery never resends.
mail_sent = Table(
    "mail_sent",
    metadata,
    Column("notification_id", String(100), primary_key=True),
    Column("message_id", String(300), nullable=False),  # the RFC 5322 Message-ID we sent
    Column("recipient_caseworker_id", String(64), nullable=False),
    Column("sent_at", UtcDateTime(), nullable=False),
)

# What an administrator must act on: a mail that could not reach anybody (absent, no delegate),
# a mail the SMTP server refused, a borging without a reachable delegate. Open until resolved, by the
# hub or by an administrator (hub.notify.problems); a resolved row stays, with when, who, how and why.
mail_problems = Table(
    "mail_problems",
    metadata,
    Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True),
    Column("at", UtcDateTime(), nullable=False, index=True),
    Column("kind", String(40), nullable=False),
    Column("caseworker_id", String(64), nullable=True, index=True),
    Column("reference", String(200), nullable=True),  # notification, match or signal id: never a BSN
    Column("reason", Text, nullable=False),
    Column("transaction_id", String(100), nullable=True),
    Column("resolved_at", UtcDateTime(), nullable=True),  # None: open
    Column("resolved_by", String(100), nullable=True),  # the operator, or the part of the hub
    Column("resolved_how", String(20), nullable=True),  # "hub" or "operator"
    Column("resolution", Text, nullable=True),  # why: the hub's text, or the operator's reason
    Index("ix_mail_problems_kind_reference", "kind", "reference"),
)

# The embedded SMTP sink's mailbox (only when no SMTP host is configured); capped.
mail_sink = Table(
    "mail_sink",
    metadata,
    Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True),
    Column("received_at", UtcDateTime(), nullable=False),
    Column("mail_from", String(320), nullable=False),
    Column("rcpt_to", Text, nullable=False),
    Column("subject", Text, nullable=True),
    Column("message_id", String(300), nullable=True),
    Column("raw", Text, nullable=False),
)
