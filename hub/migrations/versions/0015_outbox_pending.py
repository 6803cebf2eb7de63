"""The relay reads pending outbox rows through an index of those rows alone.

On PostgreSQL every "sent" mark leaves a dead entry for the row's old version in an index that
holds sent_at: the relay's query for `sent_at IS NULL` went through all of them (a bitmap scan
that never clears them), 50,000 after 50,000 rows, and took 24-39 ms a batch of 500 where the
publish took 7. A partial index holds the pending rows only, is read in id order, and the entries
of rows marked since are cleared as it reads them. The outbox is small (sent rows are purged after
an hour), so the index is built in moments.
"""

import sqlalchemy as sa
from alembic import op

revision = "0015_outbox_pending"
down_revision = "0001_spine"
branch_labels = None
depends_on = None

PENDING = sa.text("sent_at IS NULL")


def upgrade() -> None:
    """Index the pending rows by id."""
    op.create_index("ix_outbox_pending", "outbox", ["id"], postgresql_where=PENDING, sqlite_where=PENDING)


def downgrade() -> None:
    """Drop the index again."""
    op.drop_index("ix_outbox_pending", table_name="outbox")
