"""A match keeps whom its mail reached, beside when (the canonical Match: "notified caseworker and when").

`signal_matches.notified_at` existed from the start and was never written: when, and to whom, a
match was told was only in the audit log. The mail connector now writes both when the SMTP server
accepts the match's mail. Matches told before this revision keep neither; their `mail.sent` audit
entries still say it.
"""

import sqlalchemy as sa
from alembic import op

revision = "0022_match_notified"
down_revision = "0005_signals"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Add the caseworker whose mail was the match's."""
    with op.batch_alter_table("signal_matches") as batch:
        batch.add_column(sa.Column("notified_caseworker_id", sa.String(64), nullable=True))


def downgrade() -> None:
    """Drop it again."""
    with op.batch_alter_table("signal_matches") as batch:
        batch.drop_column("notified_caseworker_id")
