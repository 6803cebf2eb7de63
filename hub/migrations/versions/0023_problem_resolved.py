"""A problem is open until it is resolved, by the hub or an administrator, and then kept with how.

Problems stayed listed for ever, also once their cause was gone. A resolved problem now keeps when it
was resolved, by whom (an operator, or the part of the hub that saw the cause go), how ("hub" or
"operator") and why. Problems recorded before this revision are open.
"""

import sqlalchemy as sa
from alembic import op

revision = "0023_problem_resolved"
down_revision = "0012_problem_reference"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Add the resolution columns; every problem so far is open."""
    with op.batch_alter_table("mail_problems") as batch:
        batch.add_column(sa.Column("resolved_at", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("resolved_by", sa.String(100), nullable=True))
        batch.add_column(sa.Column("resolved_how", sa.String(20), nullable=True))
        batch.add_column(sa.Column("resolution", sa.Text(), nullable=True))


def downgrade() -> None:
    """Drop them again, and the resolved problems with them (before, nothing was resolved)."""
    op.execute("DELETE FROM mail_problems WHERE resolved_at IS NOT NULL")
    with op.batch_alter_table("mail_problems") as batch:
        for name in ("resolution", "resolved_how", "resolved_by", "resolved_at"):
            batch.drop_column(name)
