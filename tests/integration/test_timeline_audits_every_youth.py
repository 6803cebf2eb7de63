"""The timeline audits its read for every youth whose entries it shows (rules 18 and 20).

A search by the transaction id of a 120-row leerplicht CSV upload showed entries of 120 youths and
wrote `audit.timeline_read` for the first 50 only: a subject-access export of any of the other 70
did not find that an operator had read about them.
"""

from __future__ import annotations

import uuid

import pytest
from sqlalchemy import select

from hub.audit import audit_row, write_audits
from hub.embedded import EmbeddedKafka
from hub.store.tables import audit_log
from schemas.envelope import utcnow
from tests.conftest import make_settings
from tests.integration.test_ops_dlq import youth_key
from tests.integration.test_ops_lag import ops_hub

pytestmark = pytest.mark.integration
YOUTHS = 120


async def test_a_timeline_read_over_120_youths_is_audited_for_each(
    kafka: EmbeddedKafka, db_url: str, unique: str
) -> None:
    async with ops_hub(make_settings(kafka, db_url, unique)) as (hub, client):
        assert hub.store is not None
        upload = str(uuid.uuid4())  # one CSV upload: one transaction id, a referral per row
        keys = [youth_key(f"leerling-{i}") for i in range(YOUTHS)]
        now = utcnow()
        rows = [
            audit_row(
                "referral.stored",
                "intake",
                at=now,
                system="ketenhub-intake",
                transaction_id=upload,
                youth_key=key,
                objects={"referral_id": str(uuid.uuid4()), "row": i + 2},
            )
            for i, key in enumerate(keys)
        ]
        async with hub.store.transaction() as session:
            await write_audits(session, rows)

        r = await client.get("/ops/api/timeline", params={"id": upload})
        assert r.status_code == 200, r.text
        assert len(r.json()["events"]) == YOUTHS and r.json()["truncated"] is False

        async with hub.store.connect() as conn:
            reads = list(
                await conn.execute(select(audit_log).where(audit_log.c.action == "audit.timeline_read"))
            )
        assert sorted(e.youth_key for e in reads) == sorted(keys)  # each youth once, none left out
        assert {e.user for e in reads} == {"olga"}
        assert all(e.objects == {"id": upload, "events": YOUTHS, "youths": YOUTHS} for e in reads)


async def test_a_timeline_longer_than_it_shows_says_so(
    kafka: EmbeddedKafka, db_url: str, unique: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The timeline showed its first 500 entries and said nothing of the rest: a busy case's newest
    events were left out silently."""
    import hub.ops.api as ops_api

    monkeypatch.setattr(ops_api, "TIMELINE_MAX", 3)
    async with ops_hub(make_settings(kafka, db_url, unique)) as (hub, client):
        assert hub.store is not None
        upload, now = str(uuid.uuid4()), utcnow()
        rows = [
            audit_row("referral.stored", "intake", at=now, system="ketenhub-intake", transaction_id=upload,
                      objects={"row": i + 2})
            for i in range(4)
        ]  # fmt: skip
        async with hub.store.transaction() as session:
            await write_audits(session, rows[:3])
        whole = (await client.get("/ops/api/timeline", params={"id": upload})).json()
        assert (len(whole["events"]), whole["truncated"]) == (3, False)
        async with hub.store.transaction() as session:
            await write_audits(session, rows[3:])
        cut = (await client.get("/ops/api/timeline", params={"id": upload})).json()
        assert (len(cut["events"]), cut["truncated"]) == (3, True)
        assert [e["objects"]["row"] for e in cut["events"]] == [2, 3, 4]  # the oldest, in order
