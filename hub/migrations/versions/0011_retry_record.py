"""The retry ladder keeps the record a message came in, so its dead letter is that record."""

import sqlalchemy as sa
from alembic import op

revision = "0011_retry_record"
down_revision = "0010_retry"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Add the record's key, value and headers to retry_parked (NULL in rows parked before)."""
    op.add_column("retry_parked", sa.Column("record_key", sa.String(200), nullable=True))
    op.add_column("retry_parked", sa.Column("record_value", sa.LargeBinary, nullable=True))
    op.add_column("retry_parked", sa.Column("record_headers", sa.JSON, nullable=True))


def downgrade() -> None:
    """Drop them again."""
    with op.batch_alter_table("retry_parked") as batch:
        batch.drop_column("record_headers")
        batch.drop_column("record_value")
        batch.drop_column("record_key")
