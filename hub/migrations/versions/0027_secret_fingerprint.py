"""The store keeps a fingerprint of the pseudonymisation secret, so another secret is refused.

Every youth key is HMAC(secret, BSN). A command run without the hub's secret (`ketenhub inzage`
elsewhere than the hub's state dir made a new one) derived other keys, found nothing, and said so:
a subject-access export of "we hold nothing", audited under a key nobody looks for. The first
`ketenhub run` on a database writes HMAC(secret, a fixed text) here; hubs and commands with a secret
that gives another are refused (hub.secret_fingerprint). A database migrated before has none until
the hub's next start writes it.
"""

import sqlalchemy as sa
from alembic import op

revision = "0027_secret_fingerprint"
down_revision = "0001_spine"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Create secret_fingerprint (one row, written by the hub's next start)."""
    op.create_table(
        "secret_fingerprint",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("fingerprint", sa.String(64), nullable=False),
        sa.Column("recorded_at", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    """Drop it: any secret is taken again."""
    op.drop_table("secret_fingerprint")
