"""A parked message is in one hub process's hands by a lease, not by a transaction held over the call.

On PostgreSQL the ladder kept each message it delivered locked in a transaction that spanned the
partner's call, and so one pooled connection per delivery in hand: with a backlog falling due, the
ladders took the whole pool, and every other writer of the hub waited for a connection. A process now
claims a message in a short transaction (`lease`: its token, `due_at`: until when), calls the partner
with no connection held, and records the outcome in a second one while the lease is still its own.

`postponed` counts the attempts the hub's own store spoiled in a row (a lookup on the way, or the
outcome's record, failed): such an attempt waits before it is tried again, longer each time, but
uses no rung of the ladder, which counts the partner's failures only.
"""

import sqlalchemy as sa
from alembic import op

revision = "0028_retry_lease"
down_revision = "0011_retry_record"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Add the lease's token (NULL: in nobody's hands) and the count of postponements."""
    op.add_column("retry_parked", sa.Column("lease", sa.String(32), nullable=True))
    op.add_column(
        "retry_parked", sa.Column("postponed", sa.Integer, nullable=False, server_default=sa.text("0"))
    )


def downgrade() -> None:
    """Drop them again."""
    with op.batch_alter_table("retry_parked") as batch:
        batch.drop_column("postponed")
        batch.drop_column("lease")
