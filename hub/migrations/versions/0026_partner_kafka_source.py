"""A partner may claim the Kafka connector source that speaks for it (rule 7 across channels).

A referral's rule 7 key was its channel's: `partner:<id>` over HTTP, `kafka:<envelope source>` on
referral.received.v1, so one organisation's referral sent both ways was stored and decided twice.
`partners.kafka_source` names the connector that publishes the partner's referrals; the intake then
stores them under the partner's key. At most one partner per source (a unique index: NULLs repeat).

No referral is re-keyed here, nor later when a source is claimed: a claim is made at run time, and
an intake that has not read it yet (its cache, up to http.key_cache_s) still looks under
`kafka:<source>`; rows moved away from that key in the meantime would be missed and stored twice.
The claimed source's key stays one of the partner's keys instead (hub.intake.sources, README).
"""

import sqlalchemy as sa
from alembic import op

revision = "0026_partner_kafka_source"
down_revision = "0017_police_one_referrer"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Add partners.kafka_source (unclaimed: NULL) and its unique index."""
    op.add_column("partners", sa.Column("kafka_source", sa.String(100), nullable=True))
    op.create_index("ux_partners_kafka_source", "partners", ["kafka_source"], unique=True)


def downgrade() -> None:
    """Drop them; referrals stored under a partner's key through its connector keep that key."""
    op.drop_index("ux_partners_kafka_source", table_name="partners")
    op.drop_column("partners", "kafka_source")
