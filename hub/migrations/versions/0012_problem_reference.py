"""Problems are looked up by kind and reference (a refused match is told about once)."""

from alembic import op

revision = "0012_problem_reference"
down_revision = "0006_mail"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Index mail_problems on (kind, reference)."""
    op.create_index("ix_mail_problems_kind_reference", "mail_problems", ["kind", "reference"])


def downgrade() -> None:
    """Drop the index again."""
    op.drop_index("ix_mail_problems_kind_reference", table_name="mail_problems")
