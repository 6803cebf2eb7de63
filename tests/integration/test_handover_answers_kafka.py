"""Kafka answers to handovers: the topic says who answers, never the record's own `source`.

Real broker, both stores. Each receiver type answers on handover.answers.<type>.v1, which only the
principal reading handover.outbound.<type>.v1 may write (deploy/): the one Kafka-mode organisation of
that type answers there, for its own handovers. The shared handover.status.v1 takes no answers.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import select

from hub.embedded import EmbeddedKafka
from hub.handovers.receivers import ReceiverDelivery, set_receiver_delivery
from hub.spine.dlq import DLQ_EXC_CLASS, DLQ_EXC_MESSAGE
from hub.store.tables import outbox
from schemas.envelope import Envelope
from schemas.handover import ReceiverType
from tests.helpers.kafka import headers_of, produce, read_topic, wait_for
from tests.integration.test_handover_flow import World, world

pytestmark = pytest.mark.integration
KAFKA_RECEIVER = "jeugdhulp-dh"  # reads handover.outbound.jeugdhulp.v1 (the world's settings)
WEBHOOK_RECEIVER = "jongerenwerk-dh"  # gets its handovers by webhook and answers over HTTP


async def answer_on(
    kafka: EmbeddedKafka, w: World, topic: str, handover_id: str, key: str, *, source: str, status: str
) -> Envelope:
    """Produce one answer on `topic` (unprefixed) as a receiver's system would."""
    payload: dict[str, Any] = {"handover_id": handover_id, "status": status}
    if status == "GEWEIGERD":
        payload["reason"] = "geen plek"
    if status == "GEACCEPTEERD":
        payload["meeting_planned_at"] = (datetime.now(UTC) + timedelta(days=3)).isoformat()
    answer = Envelope.new("HandoverAnswer", payload, transaction_id=str(uuid.uuid4()), source=source)
    await produce(kafka.bootstrap, w.hub.topic(topic), [(key.encode(), answer.to_bytes(), answer.headers())])
    return answer


async def dead_letter_of(kafka: EmbeddedKafka, w: World, dlq: str, answer: Envelope) -> dict[str, str]:
    """The headers of `answer`'s dead letter on `dlq` (unprefixed), once it is there."""

    async def found() -> dict[str, str] | None:
        records = await read_topic(kafka.bootstrap, w.hub.topic(dlq), expect=1, timeout_s=1)
        mine = [headers_of(r) for r in records if headers_of(r).get("message-id") == answer.message_id]
        return mine[0] if mine else None

    headers: dict[str, str] = await wait_for(found)
    assert headers[DLQ_EXC_CLASS].rsplit(".", 1)[-1] == "PermanentError"
    return headers


async def declined_mails(w: World, handover_id: str) -> int:
    """'Declined' notices about one handover, sent or queued for the caseworker."""
    assert w.hub.store is not None
    async with w.hub.store.connect() as conn:
        rows = (await conn.execute(select(outbox.c.topic, outbox.c.value))).all()
    return sum(
        1
        for topic, value in rows
        if "notification.mail" in topic
        and b"handover.declined" in bytes(value)
        and handover_id.encode() in bytes(value)
    )


async def add_kafka_receiver(w: World, organisation: str, receiver_type: ReceiverType) -> None:
    assert w.hub.store is not None
    async with w.hub.store.transaction() as session:
        await set_receiver_delivery(session, ReceiverDelivery(organisation, receiver_type, "kafka"))


async def kafka_handover(w: World) -> tuple[str, str]:
    """A handover delivered to the Kafka receiver: (handover id, youth key)."""
    rid, key = await w.referral(17)
    await w.consent(rid, recipient_organisations=[KAFKA_RECEIVER])
    hid = await w.handover(rid, org=KAFKA_RECEIVER, data_categories=["PERSONALIA"])

    async def delivered() -> bool:
        return bool((await w.status(hid))["delivered_at"])

    await wait_for(delivered)
    return hid, key


async def webhook_handover(w: World) -> tuple[str, str]:
    """A handover POSTed to the webhook receiver: (handover id, youth key)."""
    rid, key = await w.referral(17)
    await w.consent(rid)
    hid = await w.handover(rid)
    await wait_for(lambda: [e.payload["handover_id"] for e in w.receiver.handovers()] == [hid])
    return hid, key


async def test_a_kafka_receivers_answer_on_its_own_answers_topic_is_taken(
    kafka: EmbeddedKafka, db_url: str, unique: str
) -> None:
    async with world(kafka, db_url, unique) as w:
        hid, key = await kafka_handover(w)
        await answer_on(
            kafka, w, "handover.answers.jeugdhulp.v1", hid, key, source=KAFKA_RECEIVER, status="GEACCEPTEERD"
        )

        async def accepted() -> dict[str, Any] | None:
            status = await w.status(hid)
            return status if status["status"] == "GEACCEPTEERD" else None

        status = await wait_for(accepted)
        assert status["answered_at"] and status["meeting_planned_at"]
        (answered,) = await w.audit("handover.answered")
        assert (answered.user, answered.on_behalf_of) == (KAFKA_RECEIVER, KAFKA_RECEIVER)
        assert answered.objects["handover_id"] == hid and answered.objects["status"] == "GEACCEPTEERD"
        assert await w.audit("handover.answer_refused") == []
        dlq = w.hub.topic("handover.answers.jeugdhulp.dlq.v1")
        assert await read_topic(kafka.bootstrap, dlq, expect=1, timeout_s=1) == []


async def test_an_answer_on_another_types_topic_or_naming_another_organisation_is_refused(
    kafka: EmbeddedKafka, db_url: str, unique: str
) -> None:
    async with world(kafka, db_url, unique) as w:
        await add_kafka_receiver(w, "verslavingszorg-dh", ReceiverType.VERSLAVINGSZORG)
        hid, key = await kafka_handover(w)
        # The reasons leave the handover id out: a dead letter's message goes through the BSN
        # redaction, which masks a UUID whose first eight characters are all digits.
        refused = {
            # another Kafka receiver, on its own topic, answers a handover that is not its own
            "not its handover": (
                "handover.answers.verslavingszorg.v1",
                "verslavingszorg-dh",
                "went to 'jeugdhulp-dh', not to 'verslavingszorg-dh'",
            ),
            # the rightful receiver's name, on a topic another organisation writes
            "another type's topic": (
                "handover.answers.verslavingszorg.v1",
                KAFKA_RECEIVER,
                "names 'jeugdhulp-dh' as its sender, but handover.answers.verslavingszorg.v1 is written by "
                "'verslavingszorg-dh'",
            ),
            # a type no organisation reads over Kafka: its topic answers for nobody
            "a topic without a reader": (
                "handover.answers.wijkteam.v1",
                KAFKA_RECEIVER,
                "handover.outbound.wijkteam.v1 is read by no organisation over Kafka",
            ),
            # the right topic, naming another organisation
            "another organisation's name": (
                "handover.answers.jeugdhulp.v1",
                "wijkteam-dh",
                "names 'wijkteam-dh' as its sender, but handover.answers.jeugdhulp.v1 is written by "
                "'jeugdhulp-dh'",
            ),
        }
        for case, (topic, source, reason) in refused.items():
            answer = await answer_on(kafka, w, topic, hid, key, source=source, status="GEWEIGERD")
            dlq = topic.removesuffix(".v1") + ".dlq.v1"
            headers = await dead_letter_of(kafka, w, dlq, answer)
            assert reason in headers[DLQ_EXC_MESSAGE], (case, headers[DLQ_EXC_MESSAGE])
        assert (await w.status(hid))["status"] == "VERZONDEN"
        assert await w.audit("handover.answered") == []
        assert await declined_mails(w, hid) == 0
        audited = await w.audit("handover.answer_refused")
        assert sorted((a.user, a.objects["claimed_sender"], a.objects["topic"]) for a in audited) == sorted(
            [
                ("verslavingszorg-dh", "verslavingszorg-dh", "handover.answers.verslavingszorg.v1"),
                ("verslavingszorg-dh", KAFKA_RECEIVER, "handover.answers.verslavingszorg.v1"),
                ("handover.answers.wijkteam.v1 (kafka)", KAFKA_RECEIVER, "handover.answers.wijkteam.v1"),
                (KAFKA_RECEIVER, "wijkteam-dh", "handover.answers.jeugdhulp.v1"),
            ]
        )
        assert all(a.objects["handover_id"] == hid and a.youth_key == key for a in audited)

        # The handover is still the rightful receiver's to answer.
        await answer_on(
            kafka, w, "handover.answers.jeugdhulp.v1", hid, key, source=KAFKA_RECEIVER, status="ONTVANGEN"
        )

        async def received() -> bool:
            return (await w.status(hid))["status"] == "ONTVANGEN"

        await wait_for(received)
        assert [a.user for a in await w.audit("handover.answered")] == [KAFKA_RECEIVER]


async def test_a_webhook_receivers_handover_is_never_answered_over_kafka(
    kafka: EmbeddedKafka, db_url: str, unique: str
) -> None:
    """A webhook receiver answers over HTTP with its key; on Kafka nobody answers for it, neither in
    its own name nor as the organisation that reads its type's topic."""
    async with world(kafka, db_url, unique) as w:
        hid, key = await webhook_handover(w)
        topic = "handover.answers.jongerenwerk.v1"
        dlq = "handover.answers.jongerenwerk.dlq.v1"
        own_name = await answer_on(kafka, w, topic, hid, key, source=WEBHOOK_RECEIVER, status="GEWEIGERD")
        headers = await dead_letter_of(kafka, w, dlq, own_name)
        assert (
            "handover.outbound.jongerenwerk.v1 is read by no organisation over Kafka"
            in headers[DLQ_EXC_MESSAGE]
        )

        await add_kafka_receiver(w, "jongerenwerk-west", ReceiverType.JONGERENWERK)
        for source, reason in (
            ("jongerenwerk-west", "went to 'jongerenwerk-dh', not to 'jongerenwerk-west'"),
            (
                WEBHOOK_RECEIVER,
                f"names 'jongerenwerk-dh' as its sender, but {topic} is written by 'jongerenwerk-west'",
            ),
        ):
            answer = await answer_on(kafka, w, topic, hid, key, source=source, status="GEWEIGERD")
            headers = await dead_letter_of(kafka, w, dlq, answer)
            assert reason in headers[DLQ_EXC_MESSAGE], headers[DLQ_EXC_MESSAGE]

        assert (await w.status(hid))["status"] == "VERZONDEN"
        assert await w.audit("handover.answered") == []
        assert await declined_mails(w, hid) == 0
        assert len(await w.audit("handover.answer_refused")) == 3

        r = await w.client.post(
            f"/api/v1/overdrachten/{hid}/status",
            json={"status": "ONTVANGEN"},
            headers={"Authorization": f"Bearer {w.partner_keys[WEBHOOK_RECEIVER]}"},
        )
        assert r.status_code == 200 and r.json()["status"] == "ONTVANGEN", r.text


async def test_the_shared_status_topic_takes_no_answer(
    kafka: EmbeddedKafka, db_url: str, unique: str
) -> None:
    """handover.status.v1 names its sender only in the envelope: whatever arrives there is a dead
    letter that says where answers go, for a webhook receiver's handover and a Kafka receiver's alike."""
    async with world(kafka, db_url, unique) as w:
        to_hook, hook_key = await webhook_handover(w)
        to_kafka, kafka_key = await kafka_handover(w)
        sent = [
            (to_hook, await answer_on(
                kafka, w, "handover.status.v1", to_hook, hook_key, source=WEBHOOK_RECEIVER, status="GEWEIGERD"
            )),
            (to_kafka, await answer_on(
                kafka, w, "handover.status.v1", to_kafka, kafka_key, source=KAFKA_RECEIVER, status="GEWEIGERD"
            )),
        ]  # fmt: skip
        for hid, answer in sent:
            headers = await dead_letter_of(kafka, w, "handover.status.dlq.v1", answer)
            assert "handover.status.v1 takes no answers" in headers[DLQ_EXC_MESSAGE]
            assert "handover.answers.<type>.v1" in headers[DLQ_EXC_MESSAGE]
            assert (await w.status(hid))["status"] == "VERZONDEN"
            assert await declined_mails(w, hid) == 0
        assert await w.audit("handover.answered") == []
        audited = await w.audit("handover.answer_refused")
        assert sorted(
            (a.objects["handover_id"], a.user, a.objects["claimed_sender"]) for a in audited
        ) == sorted(
            [
                (to_hook, "handover.status.v1 (kafka)", WEBHOOK_RECEIVER),
                (to_kafka, "handover.status.v1 (kafka)", KAFKA_RECEIVER),
            ]
        )


async def test_a_refused_answers_dead_letter_does_not_echo_the_sender_it_names(
    kafka: EmbeddedKafka, db_url: str, unique: str
) -> None:
    """The sender an answer names is the producer's free text: a name typed there ("Jan de Vries")
    went into the dead letter's dlq-exception-message as it came, where the audit log kept only
    `kept_sender` of it."""
    async with world(kafka, db_url, unique) as w:
        hid, key = await kafka_handover(w)
        answer = await answer_on(
            kafka, w, "handover.answers.jeugdhulp.v1", hid, key, source="Jan de Vries", status="GEWEIGERD"
        )
        headers = await dead_letter_of(kafka, w, "handover.answers.jeugdhulp.dlq.v1", answer)
        reason = headers[DLQ_EXC_MESSAGE]
        assert "as its sender, but handover.answers.jeugdhulp.v1 is written by 'jeugdhulp-dh'" in reason
        assert "Jan" not in reason and "Vries" not in reason, reason
        (refused,) = await w.audit("handover.answer_refused")
        assert refused.objects["claimed_sender"] in reason  # what the audit log keeps of it, no more
        assert (await w.status(hid))["status"] == "VERZONDEN"
