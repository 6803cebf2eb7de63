"""Rule 19: what routing's periodic check sends carries the transaction id of the request it serves.

The check acted under a new transaction id of its own, one for every handover it sent in a round: a
handover waiting for a consent that started the next day was disclosed under an id no request had,
so the caseworker's request (handovers.transaction_id) no longer led to the disclosure.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select, update

from hub.clock import today
from hub.embedded import EmbeddedKafka
from hub.intake.tables import referrals
from hub.store.tables import outbox
from schemas.envelope import Envelope
from tests.helpers.kafka import wait_for
from tests.integration.test_handover_flow import CW, World, world

pytestmark = pytest.mark.integration


async def _request(w: World, referral_id: str, transaction_id: str) -> str:
    body = {
        "referral_id": referral_id,
        "receiver_organisation": "jongerenwerk-dh",
        "data_categories": ["PERSONALIA", "VERWIJZING"],
        "summary": "Sam wil graag meedoen aan een sportproject.",
    }
    r = await w.client.post(
        "/api/v1/overdrachten",
        json=body,
        headers={"X-Medewerker": CW, "Fsc-Transaction-Id": transaction_id},
    )
    assert r.status_code == 202, r.text
    return str(r.json()["handover_id"])


async def test_handovers_sent_by_the_check_keep_their_requests_transaction_ids(
    kafka: EmbeddedKafka, db_url: str, unique: str
) -> None:
    async with world(kafka, db_url, unique) as w:
        requests: dict[str, str] = {}  # handover id -> its request's transaction id
        for _ in range(2):  # two requests, sent by one check on the consents' first day
            rid, _ = await w.referral(17)
            await w.consent(
                rid,
                valid_from=(today() + timedelta(days=1)).isoformat(),
                valid_until=(today() + timedelta(days=90)).isoformat(),
            )
            tx = str(uuid.uuid4())
            requests[await _request(w, rid, tx)] = tx

        async def waiting() -> bool:
            states = [await w.status(h) for h in requests]
            return all(s["waiting_reasons"] == ["NOG_NIET_GELDIG"] for s in states)

        await wait_for(waiting, timeout_s=15)
        w.hub.clock = lambda: datetime.now(UTC) + timedelta(days=1)  # the consents' first day

        async def sent() -> bool:
            return all([(await w.status(h))["status"] != "WACHT_OP_TOESTEMMING" for h in requests])

        await wait_for(sent, timeout_s=15)
        audited = {a.objects["handover_id"]: a.transaction_id for a in await w.audit("handover.sent")}
        assert audited == requests

        await wait_for(lambda: len(w.receiver.handovers()) == 2, timeout_s=15)
        delivered = {
            c["env"].payload["handover_id"]: (c["env"].transaction_id, c["transaction"])
            for c in w.receiver.calls
            if c["env"].type == "Handover"
        }
        assert delivered == {h: (tx, tx) for h, tx in requests.items()}  # Fsc-Transaction-Id too


async def test_an_unanswered_notice_carries_the_requests_transaction_id(
    kafka: EmbeddedKafka, db_url: str, unique: str
) -> None:
    async with world(kafka, db_url, unique, answer_timeout_s=0.5) as w:
        requests: dict[str, str] = {}
        for _ in range(2):
            rid, _ = await w.referral(17)
            await w.consent(rid)
            tx = str(uuid.uuid4())
            requests[await _request(w, rid, tx)] = tx

        async def notices() -> dict[str, str]:
            assert w.hub.store is not None
            async with w.hub.store.connect() as conn:
                values = (await conn.execute(select(outbox.c.value))).scalars().all()
            found = {}
            for value in values:
                env = Envelope.from_bytes(bytes(value))
                if env.type == "MailNotification" and env.payload["template"] == "handover.unanswered":
                    handover = next(h for h in requests if h in env.payload["body_text"])
                    found[handover] = env.transaction_id
            return found

        async def both_told() -> bool:
            return len(await notices()) == 2

        await wait_for(both_told, timeout_s=20)
        assert await notices() == requests


async def test_a_youth_whose_referral_cannot_be_read_holds_back_no_other_youths_handover(
    kafka: EmbeddedKafka, db_url: str, unique: str
) -> None:
    """The check routed every youth's waiting handovers in one transaction: one youth whose stored
    referral no longer read rolled it back, every minute, and no handover of any youth went out on
    its consent's first day."""
    async with world(kafka, db_url, unique) as w:
        handover_of: dict[str, str] = {}  # referral id -> its handover
        for _ in range(2):
            rid, _ = await w.referral(17)
            await w.consent(
                rid,
                valid_from=(today() + timedelta(days=1)).isoformat(),
                valid_until=(today() + timedelta(days=90)).isoformat(),
            )
            handover_of[rid] = await _request(w, rid, str(uuid.uuid4()))
        broken, fine = handover_of

        async def waiting() -> bool:
            states = [await w.status(h) for h in handover_of.values()]
            return all(s["waiting_reasons"] == ["NOG_NIET_GELDIG"] for s in states)

        await wait_for(waiting, timeout_s=15)
        assert w.hub.store is not None
        async with w.hub.store.transaction() as session:  # a row the current model cannot read
            await session.execute(update(referrals).where(referrals.c.id == broken).values(referral={}))
        w.hub.clock = lambda: datetime.now(UTC) + timedelta(days=1)  # the consents' first day

        async def sent() -> bool:
            return (await w.status(handover_of[fine]))["status"] != "WACHT_OP_TOESTEMMING"

        await wait_for(sent, timeout_s=15)
        assert (await w.status(handover_of[broken]))["status"] == "WACHT_OP_TOESTEMMING"
        await wait_for(lambda: len(w.receiver.handovers()) == 1, timeout_s=15)
