"""Consents, handovers and the receivers' delivery settings."""

import sqlalchemy as sa
from alembic import op

revision = "0007_consent"
down_revision = "0001_spine"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Create consents, handovers and receiver_deliveries."""
    op.create_table(
        "consents",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("youth_key", sa.String(64), nullable=False),
        sa.Column("referral_id", sa.String(36), nullable=True),
        sa.Column("purpose", sa.String(30), nullable=False),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("valid_from", sa.Date, nullable=False),
        sa.Column("valid_until", sa.Date, nullable=False),
        sa.Column("consent", sa.JSON, nullable=False),
        sa.Column("recorded_by", sa.String(100), nullable=False),
        sa.Column("recorded_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("withdrawn_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("withdrawn_by", sa.String(100), nullable=True),
        sa.Column("withdrawal_reason", sa.Text, nullable=True),
        sa.Column("transaction_id", sa.String(100), nullable=False),
    )
    op.create_index("ix_consents_youth_status", "consents", ["youth_key", "status"])
    op.create_table(
        "handovers",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("referral_id", sa.String(36), nullable=False),
        sa.Column("youth_key", sa.String(64), nullable=False),
        sa.Column("from_caseworker", sa.String(100), nullable=False),
        sa.Column("receiver_organisation", sa.String(100), nullable=False),
        sa.Column("receiver_type", sa.String(30), nullable=False),
        sa.Column("purpose", sa.String(30), nullable=False),
        sa.Column("legal_basis", sa.Text, nullable=True),
        sa.Column("consent_id", sa.String(36), nullable=True),
        sa.Column("data_categories", sa.JSON, nullable=False),
        sa.Column("summary", sa.Text, nullable=False),
        sa.Column("joint_meeting", sa.JSON, nullable=True),
        sa.Column("status", sa.String(30), nullable=False),
        sa.Column("status_reason", sa.Text, nullable=True),
        sa.Column("waiting_reasons", sa.JSON, nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("sent_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("delivered_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("answered_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("meeting_planned_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("overdue_notified_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("transaction_id", sa.String(100), nullable=False),
    )
    op.create_index("ix_handovers_referral_id", "handovers", ["referral_id"])
    op.create_index("ix_handovers_youth_status", "handovers", ["youth_key", "status"])
    op.create_index("ix_handovers_status_sent", "handovers", ["status", "sent_at"])
    op.create_table(
        "receiver_deliveries",
        sa.Column("organisation", sa.String(100), primary_key=True),
        sa.Column("receiver_type", sa.String(30), nullable=False),
        sa.Column("mode", sa.String(10), nullable=False),
        sa.Column("url", sa.String(500), nullable=True),
        sa.Column("secret", sa.String(200), nullable=True),
        sa.Column("active", sa.Boolean, nullable=False),
    )


def downgrade() -> None:
    """Drop the three tables."""
    op.drop_table("receiver_deliveries")
    op.drop_table("handovers")
    op.drop_table("consents")
