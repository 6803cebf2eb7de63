"""Idempotency-Key on the caseworker POSTs: which key made which resource, kept 24 hours."""

import sqlalchemy as sa
from alembic import op

revision = "0016_idempotency"
down_revision = "0001_spine"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Create idempotency_keys."""
    op.create_table(
        "idempotency_keys",
        sa.Column("scope", sa.String(200), primary_key=True),
        sa.Column("key", sa.String(255), primary_key=True),
        sa.Column("fingerprint", sa.String(64), nullable=False),
        sa.Column("resource_id", sa.String(64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_idempotency_keys_created_at", "idempotency_keys", ["created_at"])


def downgrade() -> None:
    """Drop idempotency_keys: a repeated POST makes a second resource again."""
    op.drop_index("ix_idempotency_keys_created_at", table_name="idempotency_keys")
    op.drop_table("idempotency_keys")
