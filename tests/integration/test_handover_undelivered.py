"""A handover whose delivery failed for good: its caseworker is told so, once, and never that the
receiver did not answer; replayed and delivered after all, it goes on as any other.

Real broker, both stores, a real signed-webhook receiver over HTTP (tests.integration.test_handover_flow).
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import delete, insert, select, update

from hub.embedded import EmbeddedKafka
from hub.handovers.answers import notify_unanswered
from hub.handovers.receivers import ReceiverDelivery, set_receiver_delivery
from hub.handovers.routing import routing_of
from hub.handovers.service import Act
from hub.handovers.tables import handovers, receiver_deliveries
from hub.ops.dlq import DeadLetters, ReplayJob
from hub.spine.dlq import DLQ_EXC_MESSAGE
from hub.store.tables import outbox
from hub.topics import HANDOVER_DISPATCH
from schemas.envelope import Envelope
from schemas.handover import ReceiverType
from schemas.pseudonym import youth_ref
from tests.conftest import TEST_SECRET
from tests.helpers.kafka import headers_of, read_topic, wait_for
from tests.integration.test_handover_flow import CW, SECRET, World, world

pytestmark = pytest.mark.integration
WEBHOOK_RECEIVER = "jongerenwerk-dh"
KAFKA_RECEIVER = "jeugdhulp-dh"  # reads handover.outbound.jeugdhulp.v1 (the world's settings)
UNDELIVERED = "handover.undelivered"


async def queued(w: World, template: str, handover_id: str) -> list[dict[str, Any]]:
    """The caseworker mails of `template` about one handover the hub sent or will send."""
    assert w.hub.store is not None
    async with w.hub.store.connect() as conn:
        rows = (await conn.execute(select(outbox.c.topic, outbox.c.value))).all()
    payloads = [Envelope.from_bytes(bytes(v)).payload for t, v in rows if "notification.mail" in t]
    return [p for p in payloads if p["template"] == template and handover_id in p["body_text"]]


async def unanswered_check(w: World, *, days_later: int) -> None:
    """Routing's periodic check for unanswered handovers, `days_later` days on (the answer time is
    5 days)."""
    assert w.hub.store is not None
    real = w.hub.clock
    w.hub.clock = lambda: datetime.now(UTC) + timedelta(days=days_later)
    try:
        async with w.hub.store.transaction() as session:
            await notify_unanswered(
                session, routing_of(w.hub), timedelta(days=5), Act("test", str(uuid.uuid4()))
            )
    finally:
        w.hub.clock = real


async def dispatch_dead_letters(kafka: EmbeddedKafka, w: World, expect: int) -> list[Any]:
    records = await read_topic(
        kafka.bootstrap, w.hub.topic(HANDOVER_DISPATCH.dlq), expect=expect, timeout_s=30, settle_s=0.5
    )
    assert len(records) == expect
    return records


async def replay_dispatch_letters(w: World) -> None:
    """What an operator does once the receiver's problem is fixed: replay the dispatch dead letters."""
    assert w.hub.store is not None and w.hub.relay is not None
    letters = DeadLetters(
        w.hub.store, w.hub.kafka_options, [w.hub.topic(HANDOVER_DISPATCH.dlq)], wake=w.hub.relay.wake
    )
    job = await letters.start_replay(await letters.find(), "olaf")

    def done(job: ReplayJob = job) -> bool:
        return job.state == "done"

    await wait_for(done, timeout_s=30)
    assert (job.done, job.skipped, job.failed) == (1, 0, 0)


async def told_undelivered(w: World, handover_id: str, bsn: str) -> dict[str, Any]:
    """The one 'could not be delivered' notice about the handover: to its caseworker, saying what
    happens now, with ids only."""
    (mail,) = await wait_for(lambda: queued(w, UNDELIVERED, handover_id), timeout_s=30)
    assert mail["recipient_caseworker_id"] == CW
    assert mail["subject"].startswith("Overdracht niet afgeleverd")
    text = mail["body_text"]
    assert "afgeleverd" in text and "mislukt" in text and "stuurt haar opnieuw" in text, text
    for secret in (bsn, "Sam", "Jansen"):  # rule 16's way for every caseworker mail: no BSN, no name
        assert secret not in text and secret not in mail["body_html"]
    (entry,) = [a for a in await w.audit(f"mail.{UNDELIVERED}.queued") if a.objects["case_reference"] in text]
    assert entry.objects["for_caseworker_id"] == CW and entry.transaction_id
    return mail


def same_bytes_every_attempt(w: World, kind: str, org: str, key: str) -> Envelope:
    """Every webhook call of `kind` (the first attempt, the ladder's retries, the replays) carried the
    same bytes: the receiver's `youth_ref` for the youth, never the youth key. Receivers de-duplicate
    by message id: a replay must be the message they may have kept already."""
    bodies = {
        body for to, body in w.receiver.attempts if to == org and Envelope.from_bytes(body).type == kind
    }
    assert len(bodies) == 1, bodies
    (body,) = bodies
    sent = Envelope.from_bytes(body)
    assert sent.payload["youth_ref"] == youth_ref(TEST_SECRET, org, key)
    assert "youth_key" not in sent.payload and key.encode() not in body
    return sent


@pytest.mark.parametrize("failure", ["refused", "down"])
async def test_a_handover_that_cannot_be_delivered_is_told_once_as_such_and_never_as_unanswered(
    kafka: EmbeddedKafka, db_url: str, unique: str, failure: str
) -> None:
    """A handover the receiver's webhook refused for good (401: a secret it no longer has) or that
    was dead-lettered after the last rung (the receiver stayed down) was only marked: its caseworker
    heard nothing of it, and after the answer time read that the receiver had not answered in time.
    Replayed once the receiver is fixed and delivered after all, it goes on as any other handover."""
    async with world(kafka, db_url, unique) as w:
        assert w.hub.store is not None
        if failure == "refused":  # the receiver checks signatures with another secret: 401
            async with w.hub.store.transaction() as session:
                await set_receiver_delivery(
                    session,
                    ReceiverDelivery(
                        WEBHOOK_RECEIVER,
                        ReceiverType.JONGERENWERK,
                        "webhook",
                        w.receiver.url(WEBHOOK_RECEIVER),
                        "een-ander-geheim-0123456789abcdefghij",
                    ),
                )
        else:  # 503 on every attempt, to the last rung
            w.receiver.down = True
        bsn = w.bsn_pool[-1]
        rid, key = await w.referral(17)
        await w.consent(rid)
        hid = await w.handover(rid)

        (dead,) = await dispatch_dead_letters(kafka, w, expect=1)
        assert Envelope.from_bytes(dead.value).payload["handover_id"] == hid
        await told_undelivered(w, hid, bsn)
        state = await w.status(hid)
        assert state["status"] == "VERZONDEN" and state["status_reason"] == "AFLEVERING_MISLUKT"
        assert state["delivered_at"] is None
        (failed,) = await w.audit("handover.delivery_failed")
        assert failed.youth_key == key and failed.objects["handover_id"] == hid
        assert failed.objects["caseworker_told"] is True

        # Past the answer time: no "not answered" notice for a handover the receiver never got.
        await unanswered_check(w, days_later=10)
        assert await queued(w, "handover.unanswered", hid) == []
        assert len(await queued(w, UNDELIVERED, hid)) == 1

        # The operator replays it once the receiver is fixed, days after it was sent.
        async with w.hub.store.transaction() as session:
            await session.execute(
                update(handovers)
                .where(handovers.c.id == hid)
                .values(sent_at=datetime.now(UTC) - timedelta(days=10))
            )
        if failure == "refused":
            async with w.hub.store.transaction() as session:
                await set_receiver_delivery(
                    session,
                    ReceiverDelivery(
                        WEBHOOK_RECEIVER,
                        ReceiverType.JONGERENWERK,
                        "webhook",
                        w.receiver.url(WEBHOOK_RECEIVER),
                        SECRET,
                    ),
                )
        w.receiver.down = False
        await replay_dispatch_letters(w)
        await wait_for(lambda: [e.payload["handover_id"] for e in w.receiver.handovers()] == [hid])
        assert len(w.receiver.attempts) >= 2  # the first attempt (and the ladder's retries), the replay
        sent = same_bytes_every_attempt(w, "Handover", WEBHOOK_RECEIVER, key)
        assert sent.message_id == Envelope.from_bytes(dead.value).message_id

        async def delivered() -> dict[str, Any] | None:
            state = await w.status(hid)
            return state if state["delivered_at"] else None

        state = await wait_for(delivered)
        assert state["status"] == "VERZONDEN" and state["status_reason"] is None
        assert [a.objects["handover_id"] for a in await w.audit("handover.disclosed")] == [hid]

        # The receiver gets its answer time from now, not from the first send ...
        await unanswered_check(w, days_later=0)
        assert await queued(w, "handover.unanswered", hid) == []
        # ... and past it its caseworker is told, once, as for any other handover.
        await unanswered_check(w, days_later=6)
        await unanswered_check(w, days_later=7)
        assert len(await queued(w, "handover.unanswered", hid)) == 1
        r = await w.client.post(
            f"/api/v1/overdrachten/{hid}/status",
            json={"status": "GEWEIGERD", "reason": "geen plek"},
            headers={"Authorization": f"Bearer {w.partner_keys[WEBHOOK_RECEIVER]}"},
        )
        assert r.status_code == 200 and r.json()["status"] == "GEWEIGERD", r.text
        assert len(await queued(w, "handover.declined", hid)) == 1
        assert len(await queued(w, UNDELIVERED, hid)) == 1  # still the one


async def test_a_handover_dead_lettered_on_the_kafka_path_is_told_once_and_never_as_unanswered(
    kafka: EmbeddedKafka, db_url: str, unique: str
) -> None:
    """On the Kafka path a handover to a type's topic that two organisations read is dead-lettered
    (each would read the other's handovers): the handover was not even marked, and its caseworker was
    told only that the receiver did not answer. Replayed once the settings are mended, it goes out."""
    async with world(kafka, db_url, unique) as w:
        assert w.hub.store is not None
        async with w.hub.store.transaction() as session:  # bypasses set_receiver_delivery's check
            await session.execute(
                insert(receiver_deliveries).values(
                    organisation="jeugdhulp-rijswijk", receiver_type="JEUGDHULP", mode="kafka", active=True
                )
            )
        bsn = w.bsn_pool[-1]
        rid, key = await w.referral(17)
        await w.consent(rid, recipient_organisations=[KAFKA_RECEIVER])
        hid = await w.handover(rid, org=KAFKA_RECEIVER, data_categories=["PERSONALIA"])

        (dead,) = await dispatch_dead_letters(kafka, w, expect=1)
        assert "read by 2 organisations" in headers_of(dead)[DLQ_EXC_MESSAGE]
        dispatch = {"topic": w.hub.topic("handover.dispatch.v1"), "outcome": "dead_lettered"}
        assert (
            w.hub.metrics.registry.get_sample_value("ketenhub_messages_total", dispatch) == 1
        )  # counted as one
        await told_undelivered(w, hid, bsn)
        state = await w.status(hid)
        assert state["status_reason"] == "AFLEVERING_MISLUKT" and state["delivered_at"] is None
        (failed,) = await w.audit("handover.delivery_failed")
        assert failed.youth_key == key and failed.objects["caseworker_told"] is True
        assert "read by 2 organisations" in failed.objects["error"]
        await unanswered_check(w, days_later=10)
        assert await queued(w, "handover.unanswered", hid) == []

        async with w.hub.store.transaction() as session:  # mended: one reader again
            await session.execute(
                delete(receiver_deliveries).where(receiver_deliveries.c.organisation == "jeugdhulp-rijswijk")
            )
        await replay_dispatch_letters(w)
        outbound = w.hub.topic("handover.outbound.jeugdhulp.v1")
        (record,) = await read_topic(kafka.bootstrap, outbound, expect=1, timeout_s=30)
        assert Envelope.from_bytes(record.value).payload["handover_id"] == hid
        ref = youth_ref(TEST_SECRET, KAFKA_RECEIVER, key)
        assert record.key.decode() == ref and Envelope.from_bytes(record.value).payload["youth_ref"] == ref
        assert key.encode() not in record.value and b"youth_key" not in record.value
        state = await w.status(hid)
        assert state["delivered_at"] and state["status_reason"] is None
        await unanswered_check(w, days_later=10)
        assert len(await queued(w, "handover.unanswered", hid)) == 1
        assert len(await queued(w, UNDELIVERED, hid)) == 1


async def test_a_withdrawal_notice_that_cannot_be_delivered_is_told_once_and_keeps_the_withdrawal(
    kafka: EmbeddedKafka, db_url: str, unique: str
) -> None:
    """Rule 10: the receiver had the handover; the consent was withdrawn while its webhook was down
    past the last rung. The notice's dead letter marked the handover AFLEVERING_MISLUKT over its
    TOESTEMMING_INGETROKKEN (as if the handover had not gone out), and nobody heard that the
    receiver did not know and could go on using the data."""
    async with world(kafka, db_url, unique) as w:
        bsn = w.bsn_pool[-1]
        rid, key = await w.referral(17)
        consent = await w.consent(rid)
        hid = await w.handover(rid)
        await wait_for(lambda: [e.payload["handover_id"] for e in w.receiver.handovers()] == [hid])
        w.receiver.down = True  # 503 on every attempt, to the last rung
        r = await w.client.post(
            f"/api/v1/toestemmingen/{consent['consent_id']}/intrekking",
            json={"reason": "jeugdige wil het niet meer"},
            headers={"X-Medewerker": CW},
        )
        assert r.status_code == 200, r.text

        (dead,) = await dispatch_dead_letters(kafka, w, expect=1)
        assert Envelope.from_bytes(dead.value).type == "HandoverWithdrawn"
        notice = "handover.notice_undelivered"
        (mail,) = await wait_for(lambda: queued(w, notice, hid), timeout_s=30)
        assert mail["recipient_caseworker_id"] == CW
        assert mail["subject"].startswith("Intrekking niet afgeleverd")
        assert "weet nog niet" in mail["body_text"] and "niet verder mag gebruiken" in mail["body_text"]
        for secret in (bsn, "Sam", "Jansen"):
            assert secret not in mail["body_text"] and secret not in mail["body_html"]
        state = await w.status(hid)
        assert (state["status"], state["status_reason"]) == ("INGETROKKEN", "TOESTEMMING_INGETROKKEN")
        (failed,) = await w.audit("handover.delivery_failed")
        assert failed.youth_key == key and failed.objects["caseworker_told"] is True
        assert await queued(w, UNDELIVERED, hid) == []  # not told the handover itself failed

        # replayed while the receiver is still down: dead again, audited again, not told again
        await replay_dispatch_letters(w)
        await dispatch_dead_letters(kafka, w, expect=2)

        async def audited_twice() -> bool:
            return len(await w.audit("handover.delivery_failed")) == 2

        await wait_for(audited_twice, timeout_s=30)
        entries = await w.audit("handover.delivery_failed")
        assert [a.objects["caseworker_told"] for a in entries] == [True, False]
        assert len(await queued(w, notice, hid)) == 1

        # the receiver back, the replayed notice reaches it
        w.receiver.down = False
        await replay_dispatch_letters(w)

        def told() -> list[Envelope]:
            return [c["env"] for c in w.receiver.calls if c["env"].type == "HandoverWithdrawn"]

        await wait_for(lambda: len(told()) == 1, timeout_s=30)
        assert told()[0].payload["handover_id"] == hid
        # the notice: the same bytes at every attempt and both replays, and the handover's reference
        notice_sent = same_bytes_every_attempt(w, "HandoverWithdrawn", WEBHOOK_RECEIVER, key)
        assert notice_sent.payload["youth_ref"] == w.receiver.handovers()[0].payload["youth_ref"]
        assert (await w.status(hid))["status_reason"] == "TOESTEMMING_INGETROKKEN"
