"""A dead-letter action names the record that failed: its consumer group and original position.

The relay publishes at least once, so one failed record can stand on a DLQ topic twice (a crash
between publishing it and marking it sent). Replaying the second copy after the first was processed
cleared the processed message's inbox row and ran it again. With the source of each replayed letter
kept, a later copy of it is recognised and not replayed.
"""

import sqlalchemy as sa
from alembic import op

revision = "0019_dlq_action_source"
down_revision = "0003_operators"
branch_labels = None
depends_on = None


REPLAYED = sa.text("action = 'replayed'")


def upgrade() -> None:
    """Add dlq_actions.source, indexed; one replay per source (two processes replaying two copies at
    once: the second insert fails, and its letter is counted as skipped)."""
    op.add_column("dlq_actions", sa.Column("source", sa.String(400), nullable=True))
    op.create_index("ix_dlq_actions_source", "dlq_actions", ["source"])
    op.create_index(
        "ux_dlq_actions_source_replayed",
        "dlq_actions",
        ["source"],
        unique=True,
        postgresql_where=REPLAYED,
        sqlite_where=REPLAYED,
    )


def downgrade() -> None:
    """Drop it again."""
    op.drop_index("ux_dlq_actions_source_replayed", table_name="dlq_actions")
    op.drop_index("ix_dlq_actions_source", table_name="dlq_actions")
    with op.batch_alter_table("dlq_actions") as batch:
        batch.drop_column("source")
