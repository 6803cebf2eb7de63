"""Tables of the signals area: signals (with their delivery status), matches and the feed cursor."""

from __future__ import annotations

from sqlalchemy import JSON, Column, Date, Index, Integer, String, Table, Text

from hub.store.tables import metadata
from hub.store.types import UtcDateTime

# One row per signal: the rule-11 whitelist of the youth, the contact, the rule 12/14 facts, and the
# delivery status of the latest command for it (queued | delivered | retrying | dead_lettered).
signals = Table(
    "signals",
    metadata,
    Column("signal_id", String(64), primary_key=True),
    Column("youth_key", String(64), nullable=False, index=True),
    # rule 11 whitelist: identifiers only; never a reason, offence, screening result or parent
    Column("bsn", String(9), nullable=False),
    Column("given_names", String(200), nullable=False),
    Column("surname", String(200), nullable=False),
    Column("birth_date", Date, nullable=False),
    Column("gender", String(20), nullable=False),
    Column("municipality", String(100), nullable=False),
    Column("organisation", String(200), nullable=False),
    Column("caseworker_id", String(64), nullable=False, index=True),
    Column("contact", JSON, nullable=False),  # schemas.caseworker.ContactDetails as JSON
    Column("created", Date, nullable=False),
    Column("end_date", Date, nullable=False),
    Column("status", String(40), nullable=False),
    Column("withdrawal_reason", String(20), nullable=True),
    Column("parent_letter_sent_at", Date, nullable=True),
    Column("youth_informed_at", Date, nullable=True),
    Column("deferral_reason", Text, nullable=True),
    Column("delivery_command", String(40), nullable=True),  # type of the latest command
    Column("delivery_message_id", String(64), nullable=True),  # its message id
    Column("delivery_state", String(20), nullable=False, default="queued"),
    Column("attempt", Integer, nullable=False, default=0),
    Column("next_try_at", UtcDateTime(), nullable=True),
    Column("last_error", Text, nullable=True),
    Column("delivered_at", UtcDateTime(), nullable=True),
    Column("updated_at", UtcDateTime(), nullable=False),
)

# One row per match from the feed; the unique match id makes each one a single message.
matches = Table(
    "signal_matches",
    metadata,
    Column("match_id", String(200), primary_key=True),
    Column("signal_id", String(64), nullable=False, index=True),
    Column("type", String(20), nullable=False),
    Column("counterparts", JSON, nullable=False),  # list of ContactDetails as JSON
    Column("received_at", UtcDateTime(), nullable=False),
    # when the SMTP server accepted the match's mail, and who read it (the signal's contact then, or
    # their delegate); None until then, and for a match nobody could be told of
    Column("notified_at", UtcDateTime(), nullable=True),
    Column("notified_caseworker_id", String(64), nullable=True),
    Index("ix_signal_matches_received", "received_at"),
)

# Where the match feed poller is; one row per feed.
feed_cursor = Table(
    "verwijsindex_feed_cursor",
    metadata,
    Column("feed", String(100), primary_key=True),
    Column("cursor", String(200), nullable=True),
    Column("updated_at", UtcDateTime(), nullable=False),
)
