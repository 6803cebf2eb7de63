"""Routing beside another writer: a second replica (PostgreSQL), a consent recorded before routing."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import update

from hub.embedded import EmbeddedKafka
from hub.handovers.answers import notify_unanswered
from hub.handovers.component import routing_of
from hub.handovers.service import Act, create_handover, route
from hub.handovers.tables import handovers
from hub.store import Store
from schemas.consent import DataCategory
from schemas.handover import Handover, ReceiverType
from tests.helpers.kafka import wait_for
from tests.integration.test_handover_flow import CW, _queued, world

pytestmark = pytest.mark.integration


async def test_two_replicas_checking_at_once_tell_of_an_unanswered_handover_once(
    kafka: EmbeddedKafka, db_url: str, unique: str
) -> None:
    """Each replica read the unanswered handovers without a lock and marked them afterwards: two
    replicas checking at the same moment (as replicas of one rollout do) each queued the notice."""
    if not db_url.startswith("postgresql"):
        pytest.skip("SQLite has one writer: a second replica's check waits for the first to commit")
    async with world(kafka, db_url, unique, check_interval_s=3600) as w:
        rid, _ = await w.referral(17)
        await w.consent(rid)
        hid = await w.handover(rid)

        async def delivered() -> bool:
            return bool((await w.status(hid))["delivered_at"])

        await wait_for(delivered)
        assert w.hub.store is not None
        async with w.hub.store.transaction() as s:
            week_ago = datetime.now(UTC) - timedelta(days=7)
            await s.execute(update(handovers).where(handovers.c.id == hid).values(sent_at=week_ago))
        r, other = routing_of(w.hub), Store(db_url)  # the second replica's own connections
        try:
            async with w.hub.store.transaction() as first:
                act = Act("routing", str(uuid.uuid4()), None)
                assert await notify_unanswered(first, r, timedelta(days=5), act) == 1
                # the second replica checks while the first has not committed yet
                async with other.transaction() as second:
                    act = Act("routing", str(uuid.uuid4()), None)
                    told = await asyncio.wait_for(notify_unanswered(second, r, timedelta(days=5), act), 10)
                assert told == 0
        finally:
            await other.close()
        assert await _queued(w, "notification.mail", "handover.unanswered", hid) == 1


async def test_a_handover_a_consent_finds_waiting_before_routing_does_is_told_about_once(
    kafka: EmbeddedKafka, db_url: str, unique: str
) -> None:
    """Recording a consent routes the youth's waiting handovers at once, without a notice. When the
    consent came before routing had taken the request (restarts, load), routing then found the
    handover judged already and the caseworker was never told it waits (rule 9)."""
    async with world(kafka, db_url, unique) as w:
        rid, _ = await w.referral(17)
        r = routing_of(w.hub)
        asked = Handover(
            referral_id=rid,
            from_caseworker=CW,
            receiver_organisation="jongerenwerk-dh",
            receiver_type=ReceiverType.JONGERENWERK,
            data_categories=[DataCategory.PERSONALIA],
            summary="Sam wil graag meedoen aan een sportproject.",
        )
        assert w.hub.store is not None
        async with w.hub.store.transaction() as session:  # stored; routing has not taken it yet
            row = await create_handover(session, r, asked, Act(CW, str(uuid.uuid4())), announce=False)
        hid = row.id
        await w.consent(rid, recipient_organisations=["wijkteam-dh"])  # covers another receiver
        async with w.hub.store.transaction() as session:  # routing takes the request now
            assert await route(session, r, hid, Act("routing", str(uuid.uuid4()))) == "WACHT_OP_TOESTEMMING"
        assert (await w.status(hid))["waiting_reasons"] == ["ANDERE_ONTVANGER"]
        assert await _queued(w, "notification.mail", "handover.waiting", hid) == 1
        told = [a for a in await w.audit("handover.waiting") if a.objects.get("handover_id") == hid]
        assert len(told) == 1
