"""Routing replicas side by side (PostgreSQL): what one replica tells a caseworker, the other does not."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import update

from hub.embedded import EmbeddedKafka
from hub.handovers.answers import notify_unanswered
from hub.handovers.component import routing_of
from hub.handovers.service import Act
from hub.handovers.tables import handovers
from hub.store import Store
from tests.helpers.kafka import wait_for
from tests.integration.test_handover_flow import _queued, world

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
