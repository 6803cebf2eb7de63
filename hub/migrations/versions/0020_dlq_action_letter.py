"""A dead-letter action names its letter by position and the letter's own time.

A DLQ position is not a letter for good: the embedded broker keeps nothing over a restart, and a
topic deleted and made again starts at offset 0, while the actions stay in the store. A new letter
at an old position took the old letter's action: it left the open list, and replaying it answered
"already resolved". With the letter's timestamp kept, an action is the letter's it was taken on.
Actions taken before this revision have none and keep applying to their position.
"""

import sqlalchemy as sa
from alembic import op

revision = "0020_dlq_action_letter"
down_revision = "0019_dlq_action_source"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Add dlq_actions.letter_at (the DLQ record's timestamp, ms); one action per letter."""
    op.add_column("dlq_actions", sa.Column("letter_at", sa.BigInteger(), nullable=True))
    op.drop_index("ux_dlq_actions_record", table_name="dlq_actions")
    op.create_index(
        "ux_dlq_actions_record", "dlq_actions", ["dlq_topic", "partition", "offset", "letter_at"], unique=True
    )


def downgrade() -> None:
    """Drop it again (fails while two letters of one position have actions)."""
    op.drop_index("ux_dlq_actions_record", table_name="dlq_actions")
    op.create_index("ux_dlq_actions_record", "dlq_actions", ["dlq_topic", "partition", "offset"], unique=True)
    with op.batch_alter_table("dlq_actions") as batch:
        batch.drop_column("letter_at")
