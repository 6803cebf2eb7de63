"""The retry ladder's parking lot."""

import sqlalchemy as sa
from alembic import op

revision = "0010_retry"
down_revision = "0001_spine"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Create retry_parked."""
    op.create_table(
        "retry_parked",
        sa.Column(
            "seq", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True, autoincrement=True
        ),
        sa.Column("ladder", sa.String(100), nullable=False),
        sa.Column("key", sa.String(200), nullable=False),
        sa.Column("message_id", sa.String(200), nullable=False),
        sa.Column("value", sa.LargeBinary, nullable=False),
        sa.Column("headers", sa.JSON, nullable=False),
        sa.Column("attempt", sa.Integer, nullable=False),
        sa.Column("due_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("first_failure", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_error", sa.Text, nullable=True),
    )
    op.create_index("ix_retry_parked_ladder_key", "retry_parked", ["ladder", "key", "seq"])
    op.create_index("ix_retry_parked_due", "retry_parked", ["ladder", "due_at"])


def downgrade() -> None:
    """Drop retry_parked."""
    op.drop_table("retry_parked")
