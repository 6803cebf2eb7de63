"""A handover remembers when the hub first tried to hand it to a webhook receiver.

A POST that timed out or got a 5xx may still have been stored by the receiver. When the consent
is withdrawn afterwards, rule 10 says to tell the receivers that have the data: the withdrawal
notice now goes to every receiver that was tried, not only to one that answered 2xx.
"""

import sqlalchemy as sa
from alembic import op

revision = "0018_handover_attempted"
down_revision = "0007_consent"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Add handovers.attempted_at; a handover sent but never confirmed may have been tried already."""
    op.add_column("handovers", sa.Column("attempted_at", sa.DateTime(timezone=True), nullable=True))
    op.execute(
        "UPDATE handovers SET attempted_at = sent_at WHERE sent_at IS NOT NULL AND delivered_at IS NULL"
    )


def downgrade() -> None:
    """Drop it again."""
    with op.batch_alter_table("handovers") as batch:
        batch.drop_column("attempted_at")
