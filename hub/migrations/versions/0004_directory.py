"""The caseworker directory."""

import sqlalchemy as sa
from alembic import op

revision = "0004_directory"
down_revision = "0001_spine"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Create caseworkers and their absences."""
    op.create_table(
        "caseworkers",
        sa.Column("caseworker_id", sa.String(64), primary_key=True),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("email", sa.String(320), nullable=False),
        sa.Column("phone", sa.String(40), nullable=True),
        sa.Column("team", sa.String(20), nullable=False),
        sa.Column("meldingsbevoegd", sa.Boolean, nullable=False),
        sa.Column("delegate_id", sa.String(64), nullable=True),
        sa.Column("active", sa.Boolean, nullable=False),
    )
    op.create_table(
        "caseworker_absences",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column(
            "caseworker_id",
            sa.String(64),
            sa.ForeignKey("caseworkers.caseworker_id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("start", sa.Date, nullable=False),
        sa.Column("end", sa.Date, nullable=False),
    )
    op.create_index("ix_caseworker_absences_caseworker_id", "caseworker_absences", ["caseworker_id"])


def downgrade() -> None:
    """Drop the directory."""
    op.drop_table("caseworker_absences")
    op.drop_table("caseworkers")
