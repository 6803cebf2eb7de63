"""A dead letter's discard says whether it dropped the message, not its reason's text.

One failed record can stand on a DLQ topic twice (the relay publishes at least once). Discarding the
first letter of a record drops the message: no copy of it is replayed after. Discarding a copy drops
that copy alone, and the first stays to be replayed. Which of the two a discard was is kept as a fact
(`drops_message`), not read from the operator's free-text reason. Discards taken before this revision
never meant to stop a copy's replay (a replay only stopped for one replayed already): false.
"""

import sqlalchemy as sa
from alembic import op

revision = "0029_dlq_action_drops_message"
down_revision = "0024_dlq_replay_jobs"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Add dlq_actions.drops_message, false for every action kept so far."""
    op.add_column(
        "dlq_actions",
        sa.Column("drops_message", sa.Boolean(), nullable=False, server_default=sa.false()),
    )


def downgrade() -> None:
    """Drop it again."""
    with op.batch_alter_table("dlq_actions") as batch:
        batch.drop_column("drops_message")
