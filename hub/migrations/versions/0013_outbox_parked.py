"""Outbox rows over the brokers' message size limit are parked beside the outbox for an operator."""

import sqlalchemy as sa
from alembic import op

revision = "0013_outbox_parked"
down_revision = "0001_spine"
branch_labels = None
depends_on = None

_ID = sa.BigInteger().with_variant(sa.Integer, "sqlite")


def upgrade() -> None:
    """Create outbox_parked."""
    op.create_table(
        "outbox_parked",
        sa.Column("id", _ID, primary_key=True, autoincrement=True),
        sa.Column("outbox_id", sa.BigInteger, nullable=False),
        sa.Column("topic", sa.String(300), nullable=False),
        sa.Column("key", sa.String(200), nullable=True),
        sa.Column("value", sa.LargeBinary, nullable=False),
        sa.Column("headers", sa.JSON, nullable=False),
        sa.Column("message_id", sa.String(200), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("parked_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("size", sa.Integer, nullable=False),
        sa.Column("reason", sa.String(300), nullable=False),
    )


def downgrade() -> None:
    """Drop outbox_parked (its rows go back to the outbox first, so nothing is lost)."""
    op.execute(
        "INSERT INTO outbox (topic, key, value, headers, message_id, created_at)"
        " SELECT topic, key, value, headers, message_id, created_at FROM outbox_parked ORDER BY id"
    )
    op.drop_table("outbox_parked")
