"""Operator console: operators, operator sessions, dead-letter actions."""

import sqlalchemy as sa
from alembic import op

revision = "0003_operators"
down_revision = "0001_spine"
branch_labels = None
depends_on = None

_ID = sa.BigInteger().with_variant(sa.Integer, "sqlite")


def upgrade() -> None:
    """Create the operator tables."""
    op.create_table(
        "operators",
        sa.Column("username", sa.String(100), primary_key=True),
        sa.Column("password_hash", sa.String(200), nullable=False),
        sa.Column("role", sa.String(30), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("disabled", sa.Boolean, nullable=False, server_default=sa.false()),
    )
    op.create_table(
        "operator_sessions",
        sa.Column("token_hash", sa.String(64), primary_key=True),
        sa.Column("username", sa.String(100), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "dlq_actions",
        sa.Column("id", _ID, primary_key=True, autoincrement=True),
        sa.Column("dlq_topic", sa.String(300), nullable=False),
        sa.Column("partition", sa.Integer, nullable=False),
        sa.Column("offset", sa.BigInteger, nullable=False),
        sa.Column("action", sa.String(20), nullable=False),
        sa.Column("reason", sa.Text, nullable=True),
        sa.Column("operator", sa.String(100), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("job_id", sa.String(40), nullable=True),
    )
    op.create_index("ux_dlq_actions_record", "dlq_actions", ["dlq_topic", "partition", "offset"], unique=True)


def downgrade() -> None:
    """Drop the operator tables."""
    for table in ("dlq_actions", "operator_sessions", "operators"):
        op.drop_table(table)
