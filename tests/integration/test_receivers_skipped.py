"""A handover withdrawn before it went out is skipped, and never audited as disclosed (rules 10, 18)."""

from __future__ import annotations

import uuid

import pytest
from sqlalchemy import insert, select

from connectors.receivers.component import register_receivers
from hub.embedded import EmbeddedKafka
from hub.handovers.messages import HANDOVER
from hub.handovers.tables import handovers
from hub.runtime import Hub
from hub.store.tables import audit_log
from schemas.envelope import Envelope, utcnow
from schemas.handover import HandoverStatus
from tests.conftest import make_settings

pytestmark = pytest.mark.integration


async def test_a_skipped_handover_is_not_audited_when_its_outcome_is_recorded_again(
    kafka: EmbeddedKafka, db_url: str, unique: str
) -> None:
    """The ladder records a round's deliveries together; when that batch rolls back it records them
    one by one. A withdrawn handover's message must be found as skipped both times."""
    settings = make_settings(kafka, db_url, unique, components=["routing"])
    hub = Hub(settings, registrars={"routing": [register_receivers]})
    await hub.start()
    try:
        assert hub.store is not None
        handover_id, now = str(uuid.uuid4()), utcnow()
        async with hub.store.transaction() as session:
            await session.execute(
                insert(handovers).values(
                    id=handover_id, referral_id=str(uuid.uuid4()), youth_key="a" * 64,
                    from_caseworker="cw-ilse", receiver_organisation="jeugdwerk-den-haag",
                    receiver_type="JEUGDWERK", purpose="WARME_OVERDRACHT", data_categories=[],
                    summary="-", status=HandoverStatus.INGETROKKEN.value, created_at=now,
                    updated_at=now, transaction_id=str(uuid.uuid4()),
                )
            )  # fmt: skip
        message = Envelope(
            type=HANDOVER,
            payload={"handover_id": handover_id, "receiver_organisation": "jeugdwerk-den-haag"},
        )
        webhook = hub.components["receivers"]
        await webhook.deliver(message)  # withdrawn: not sent, remembered as skipped
        for _ in ("together", "one by one"):
            async with hub.store.transaction() as session:
                await webhook.on_delivered(session, message)
        async with hub.store.connect() as conn:
            actions = list(
                (
                    await conn.execute(
                        select(audit_log.c.action).where(audit_log.c.action.like("handover.%"))
                    )
                ).scalars()
            )
            delivered_at = (
                await conn.execute(select(handovers.c.delivered_at).where(handovers.c.id == handover_id))
            ).scalar()
        assert actions == [] and delivered_at is None
    finally:
        await hub.stop()
