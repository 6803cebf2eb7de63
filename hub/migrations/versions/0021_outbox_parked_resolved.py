"""A parked outbox row released or discarded is kept, emptied, with who did it and why.

The row was deleted, and the operator's reason went into the audit log, kept for years and never
blanked: a name typed into it would stay. The reason is now kept on the row, as a dead letter's is on
its action, and goes with the row when its term (30 days from parking) ends; the audit entry names
the row and the reason's length. The record itself (key, value, headers) is emptied at once.
"""

import sqlalchemy as sa
from alembic import op

revision = "0021_outbox_parked_resolved"
down_revision = "0013_outbox_parked"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Add the resolution columns; rows parked so far are unresolved."""
    with op.batch_alter_table("outbox_parked") as batch:
        batch.add_column(sa.Column("resolved", sa.String(20), nullable=True))
        batch.add_column(sa.Column("resolved_at", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("resolved_by", sa.String(100), nullable=True))
        batch.add_column(sa.Column("resolution", sa.Text(), nullable=True))


def downgrade() -> None:
    """Drop them again, and the resolved rows with them (before, they were deleted)."""
    op.execute("DELETE FROM outbox_parked WHERE resolved IS NOT NULL")
    with op.batch_alter_table("outbox_parked") as batch:
        for name in ("resolution", "resolved_by", "resolved_at", "resolved"):
            batch.drop_column(name)
