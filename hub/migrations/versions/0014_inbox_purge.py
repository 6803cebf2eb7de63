"""Inbox entries are purged once no topic can deliver their message again: indexed by time."""

from alembic import op

revision = "0014_inbox_purge"
down_revision = "0001_spine"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Index inbox on processed_at."""
    op.create_index("ix_inbox_processed_at", "inbox", ["processed_at"])


def downgrade() -> None:
    """Drop the index again."""
    op.drop_index("ix_inbox_processed_at", table_name="inbox")
