"""A parked message is found by its id on its ladder through an index.

The mail connector looks up the record keys of the mails in hand by their message ids; every mail
passes through the ladder's table. Served by the ladder's part of `ix_retry_parked_due` alone, each
look read every mail parked: during an SMTP outage of N mails, N rows for each of them as the backlog
drained.
"""

from alembic import op

revision = "0030_retry_parked_message"
down_revision = "0028_retry_lease"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Index retry_parked by ladder and message id."""
    op.create_index("ix_retry_parked_message", "retry_parked", ["ladder", "message_id"])


def downgrade() -> None:
    """Drop it again."""
    op.drop_index("ix_retry_parked_message", table_name="retry_parked")
