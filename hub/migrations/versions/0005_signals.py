"""Signals, their matches and the match-feed cursor (issue 5)."""

import sqlalchemy as sa
from alembic import op

revision = "0005_signals"
down_revision = "0001_spine"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Create signals, signal_matches and verwijsindex_feed_cursor."""
    op.create_table(
        "signals",
        sa.Column("signal_id", sa.String(64), primary_key=True),
        sa.Column("youth_key", sa.String(64), nullable=False),
        sa.Column("bsn", sa.String(9), nullable=False),
        sa.Column("given_names", sa.String(200), nullable=False),
        sa.Column("surname", sa.String(200), nullable=False),
        sa.Column("birth_date", sa.Date, nullable=False),
        sa.Column("gender", sa.String(20), nullable=False),
        sa.Column("municipality", sa.String(100), nullable=False),
        sa.Column("organisation", sa.String(200), nullable=False),
        sa.Column("caseworker_id", sa.String(64), nullable=False),
        sa.Column("contact", sa.JSON, nullable=False),
        sa.Column("created", sa.Date, nullable=False),
        sa.Column("end_date", sa.Date, nullable=False),
        sa.Column("status", sa.String(40), nullable=False),
        sa.Column("withdrawal_reason", sa.String(20), nullable=True),
        sa.Column("parent_letter_sent_at", sa.Date, nullable=True),
        sa.Column("youth_informed_at", sa.Date, nullable=True),
        sa.Column("deferral_reason", sa.Text, nullable=True),
        sa.Column("delivery_command", sa.String(40), nullable=True),
        sa.Column("delivery_message_id", sa.String(64), nullable=True),
        sa.Column("delivery_state", sa.String(20), nullable=False),
        sa.Column("attempt", sa.Integer, nullable=False),
        sa.Column("next_try_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_error", sa.Text, nullable=True),
        sa.Column("delivered_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_signals_youth_key", "signals", ["youth_key"])
    op.create_index("ix_signals_caseworker_id", "signals", ["caseworker_id"])
    op.create_table(
        "signal_matches",
        sa.Column("match_id", sa.String(200), primary_key=True),
        sa.Column("signal_id", sa.String(64), nullable=False),
        sa.Column("type", sa.String(20), nullable=False),
        sa.Column("counterparts", sa.JSON, nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("notified_at", sa.DateTime(timezone=True), nullable=True),
    )
    op.create_index("ix_signal_matches_signal_id", "signal_matches", ["signal_id"])
    op.create_index("ix_signal_matches_received", "signal_matches", ["received_at"])
    op.create_table(
        "verwijsindex_feed_cursor",
        sa.Column("feed", sa.String(100), primary_key=True),
        sa.Column("cursor", sa.String(200), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    """Drop the signal tables."""
    op.drop_table("verwijsindex_feed_cursor")
    op.drop_table("signal_matches")
    op.drop_table("signals")
