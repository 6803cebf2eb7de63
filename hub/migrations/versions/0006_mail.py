"""Mail: sent notifications, problems for administrators, the embedded sink's mailbox (issue 6)."""

import sqlalchemy as sa
from alembic import op

revision = "0006_mail"
down_revision = "0001_spine"
branch_labels = None
depends_on = None


def _id() -> sa.Column:  # type: ignore[type-arg]
    return sa.Column(
        "id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True, autoincrement=True
    )


def upgrade() -> None:
    """Create mail_sent, mail_problems and mail_sink."""
    op.create_table(
        "mail_sent",
        sa.Column("notification_id", sa.String(100), primary_key=True),
        sa.Column("message_id", sa.String(300), nullable=False),
        sa.Column("recipient_caseworker_id", sa.String(64), nullable=False),
        sa.Column("sent_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "mail_problems",
        _id(),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("kind", sa.String(40), nullable=False),
        sa.Column("caseworker_id", sa.String(64), nullable=True),
        sa.Column("reference", sa.String(200), nullable=True),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("transaction_id", sa.String(100), nullable=True),
    )
    op.create_index("ix_mail_problems_at", "mail_problems", ["at"])
    op.create_index("ix_mail_problems_caseworker_id", "mail_problems", ["caseworker_id"])
    op.create_table(
        "mail_sink",
        _id(),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("mail_from", sa.String(320), nullable=False),
        sa.Column("rcpt_to", sa.Text, nullable=False),
        sa.Column("subject", sa.Text, nullable=True),
        sa.Column("message_id", sa.String(300), nullable=True),
        sa.Column("raw", sa.Text, nullable=False),
    )


def downgrade() -> None:
    """Drop the mail tables."""
    op.drop_table("mail_sink")
    op.drop_table("mail_problems")
    op.drop_table("mail_sent")
