"""Intake: the partner registry (hashed API keys) and the referrals with their decisions."""

import sqlalchemy as sa
from alembic import op

revision = "0002_intake"
down_revision = "0001_spine"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Create partners and referrals."""
    op.create_table(
        "partners",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("name", sa.String(100), nullable=False, unique=True),
        sa.Column("type", sa.String(30), nullable=False),
        sa.Column("key_id", sa.String(32), nullable=False, unique=True),
        sa.Column("key_hash", sa.String(64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("rotated_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("active", sa.Boolean, nullable=False),
    )
    op.create_table(
        "referrals",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("referrer_key", sa.String(200), nullable=False),
        sa.Column("case_reference", sa.String(100), nullable=False),
        sa.Column("partner_id", sa.String(36), nullable=True),
        sa.Column("referrer_type", sa.String(20), nullable=False),
        sa.Column("channel", sa.String(20), nullable=False),
        sa.Column("youth_key", sa.String(64), nullable=False),
        sa.Column("bsn", sa.String(9), nullable=False),
        sa.Column("track", sa.String(30), nullable=False),
        sa.Column("outcome", sa.String(20), nullable=False),
        sa.Column("referral", sa.JSON, nullable=False),
        sa.Column("decision", sa.JSON, nullable=False),
        sa.Column("transaction_id", sa.String(100), nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.UniqueConstraint("referrer_key", "case_reference", name="uq_referrals_referrer_case"),
    )
    op.create_index("ix_referrals_partner_id", "referrals", ["partner_id"])
    op.create_index("ix_referrals_youth_track", "referrals", ["youth_key", "track"])


def downgrade() -> None:
    """Drop referrals and partners."""
    op.drop_table("referrals")
    op.drop_table("partners")
