"""Replay jobs are kept in the store, and one replay of many dead letters runs at a time per hub.

A job lived in the process that started it: with two API replicas behind one Service, half of the
dashboard's polls of a job reached the other replica and were answered 404, and a second "replay all"
(on the other replica, or from the CLI) was accepted while the first ran, each at the full rate. The
jobs table is read by every replica; a partial unique index lets one bulk job (more than one letter)
be running at a time.
"""

import sqlalchemy as sa
from alembic import op

revision = "0024_dlq_replay_jobs"
down_revision = "0020_dlq_action_letter"
branch_labels = None
depends_on = None

ONE_BULK_RUNNING = sa.text("state = 'running' AND total > 1")


def upgrade() -> None:
    """Create dlq_replay_jobs (jobs that ran before lived in memory and are gone)."""
    op.create_table(
        "dlq_replay_jobs",
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column("operator", sa.String(200), nullable=False),
        sa.Column("filter", sa.String(500), nullable=False),
        sa.Column("total", sa.Integer, nullable=False),
        sa.Column("done", sa.Integer, nullable=False),
        sa.Column("skipped", sa.Integer, nullable=False),
        sa.Column("failed", sa.Integer, nullable=False),
        sa.Column("state", sa.String(20), nullable=False),
        sa.Column("error", sa.String(500), nullable=True),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("progress_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
    )
    op.create_index(
        "ux_dlq_replay_jobs_one_bulk_running",
        "dlq_replay_jobs",
        ["state"],
        unique=True,
        postgresql_where=ONE_BULK_RUNNING,
        sqlite_where=ONE_BULK_RUNNING,
    )
    op.create_index("ix_dlq_replay_jobs_finished_at", "dlq_replay_jobs", ["finished_at"])


def downgrade() -> None:
    """Drop it again."""
    op.drop_table("dlq_replay_jobs")
