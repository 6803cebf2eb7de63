"""The police is one referrer for rule 7, on its Kafka topic and over HTTP alike: its stored
referrals take the key "politie".

Those from the topic ("kafka:politie") all do. Of those over HTTP ("partner:<id>", referrer type
POLITIE) each proces-verbaal number's first does (the one received first: ids are random UUIDs, and
the lowest could be a copy received days later), unless the topic brought it already: a later copy
was the same referral stored twice before this revision, and keeps its old key (the unique
constraint allows one row per referrer and case reference).
"""

import sqlalchemy as sa
from alembic import op

revision = "0017_police_one_referrer"
down_revision = "0002_intake"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Re-key the police's referrals."""
    op.execute("UPDATE referrals SET referrer_key = 'politie' WHERE referrer_key = 'kafka:politie'")
    op.execute(
        sa.text(
            "UPDATE referrals SET referrer_key = 'politie'"
            " WHERE referrer_type = 'POLITIE' AND referrer_key LIKE 'partner:%'"
            " AND NOT EXISTS (SELECT 1 FROM referrals AS known"
            "   WHERE known.referrer_key = 'politie' AND known.case_reference = referrals.case_reference)"
            " AND NOT EXISTS (SELECT 1 FROM referrals AS earlier"
            "   WHERE earlier.referrer_type = 'POLITIE' AND earlier.referrer_key LIKE 'partner:%'"
            "   AND earlier.case_reference = referrals.case_reference"
            "   AND (earlier.received_at < referrals.received_at"
            "     OR (earlier.received_at = referrals.received_at AND earlier.id < referrals.id)))"
        )
    )


def downgrade() -> None:
    """The topic's referrals get their old key back; those over HTTP cannot tell their partner by
    their key any more, so they take it from their partner_id."""
    op.execute(
        "UPDATE referrals SET referrer_key = 'partner:' || partner_id"
        " WHERE referrer_key = 'politie' AND partner_id IS NOT NULL"
    )
    op.execute("UPDATE referrals SET referrer_key = 'kafka:politie' WHERE referrer_key = 'politie'")
