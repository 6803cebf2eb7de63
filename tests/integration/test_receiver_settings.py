"""Receivers' delivery settings: one reader per type's topic, also when two changes come at once, and
no reader of a topic that may still hold another organisation's handovers."""

from __future__ import annotations

import asyncio
import uuid
from datetime import datetime, timedelta
from pathlib import Path
from unittest.mock import patch

import pytest
from sqlalchemy import insert, select, text
from typer.testing import CliRunner

from hub.audit import AuditEntry, write_audit
from hub.cli import app
from hub.handovers import topic_others
from hub.handovers.delivery_state import record_delivered
from hub.handovers.messages import HANDOVER, HANDOVER_WITHDRAWN
from hub.handovers.receivers import (
    ReceiverDelivery,
    TopicTaken,
    kafka_readers,
    receiver_delivery,
    set_receiver_delivery,
)
from hub.handovers.tables import handovers
from hub.store import Store
from hub.store.tables import audit_log, outbox
from schemas.envelope import Envelope, utcnow
from schemas.handover import HandoverStatus, ReceiverType
from tests.helpers.kafka import wait_for

pytestmark = pytest.mark.integration


async def test_two_organisations_taking_a_topic_at_once_leave_one_reader(store: Store) -> None:
    first = ReceiverDelivery("Jongerenwerk West", ReceiverType.JONGERENWERK, "kafka")
    second = ReceiverDelivery("Jongerenwerk Oost", ReceiverType.JONGERENWERK, "kafka")
    started = asyncio.Event()

    async def take_second() -> None:
        started.set()
        async with store.transaction() as session:
            await set_receiver_delivery(session, second)

    async def second_waits_or_is_done() -> bool:
        """The second change went through (no lock: the test fails below) or waits for the lock."""
        if racer.done() or store.dialect == "sqlite":  # SQLite: it waits for the one writer
            return started.is_set()
        async with store.connect() as conn:
            query = text("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted")
            return bool((await conn.execute(query)).scalar())

    async with store.transaction() as session:
        await set_receiver_delivery(session, first)
        racer = asyncio.create_task(take_second())
        await wait_for(second_waits_or_is_done)  # it looks for readers before the first commits
    with pytest.raises(TopicTaken, match="already read by 'Jongerenwerk West'"):
        await racer
    async with store.read() as session:
        assert await kafka_readers(session, ReceiverType.JONGERENWERK) == ["Jongerenwerk West"]


# Moving a type's topic from one organisation to another: B gets receiver-<type> and reads from the
# topic's start, so A's handovers still there (youths B has no consent for) must be gone first.

WEST, OOST = "Jongerenwerk West", "Jongerenwerk Oost"
TOPIC = "handover.outbound.jongerenwerk.v1"


async def _went_on_topic(
    store: Store,
    organisation: str,
    *,
    days_ago: float,
    kind: str = HANDOVER,
    channel: str = "kafka",
    receiver_type: ReceiverType = ReceiverType.JONGERENWERK,
    topic: str | None = None,
) -> datetime:
    """A handover (or its withdrawal notice) to `organisation` as the hub records it when it goes,
    `record_delivered`, `days_ago`; when it went. Without `topic`, an entry as written before entries
    named the topic they went on."""
    handover_id, now = str(uuid.uuid4()), utcnow()
    message = Envelope(type=kind, payload={"handover_id": handover_id, "receiver_organisation": organisation})
    went = now - timedelta(days=days_ago)
    async with store.transaction() as session:
        await session.execute(
            insert(handovers).values(
                id=handover_id, referral_id=str(uuid.uuid4()), youth_key="a" * 64,
                from_caseworker="cw-ilse", receiver_organisation=organisation,
                receiver_type=receiver_type.value, purpose="WARME_OVERDRACHT", data_categories=[],
                summary="-", status=HandoverStatus.VERZONDEN.value, created_at=went, updated_at=went,
                transaction_id=message.transaction_id,
            )
        )  # fmt: skip
        with patch("hub.audit.utcnow", return_value=went):  # the audit log takes no later change
            await record_delivered(session, message, channel=channel, topic=topic)
    return went


async def _move_west_to_a_webhook(store: Store) -> None:
    """West read the topic, and now takes its handovers by webhook: the topic has no reader."""
    async with store.transaction() as session:
        await set_receiver_delivery(session, ReceiverDelivery(WEST, ReceiverType.JONGERENWERK, "kafka"))
    async with store.transaction() as session:
        hook = ReceiverDelivery(
            WEST, ReceiverType.JONGERENWERK, "webhook", "https://west.example.nl/in?token=t0k3n", "s" * 32
        )
        await set_receiver_delivery(session, hook)


def _shown(until: datetime) -> str:
    return (until + timedelta(seconds=59, microseconds=999_999)).strftime("%Y-%m-%d %H:%M UTC")


async def test_a_topic_with_another_organisations_recent_records_is_refused_until_emptied(
    store: Store,
) -> None:
    """Oost taking the topic would read West's handovers and notices, which are kept 7 days after
    the last: refused, saying whose, until when and what to do, and nothing is stored; the operator's
    word that the topic was emptied lets it through."""
    await _move_west_to_a_webhook(store)
    await _went_on_topic(store, WEST, days_ago=5)
    last = await _went_on_topic(store, WEST, days_ago=1, kind=HANDOVER_WITHDRAWN)
    oost = ReceiverDelivery(OOST, ReceiverType.JONGERENWERK, "kafka")
    with pytest.raises(ValueError, match="may still hold") as refused:
        async with store.transaction() as session:
            await set_receiver_delivery(session, oost)
    until = last + timedelta(days=7, hours=1)  # retention, and the broker's time to delete
    assert isinstance(refused.value, topic_others.TopicHoldsOthers) and refused.value.kept == {WEST: until}
    said = str(refused.value)
    assert f"{TOPIC} may still hold" in said and f"'{WEST}' (until {_shown(until)})" in said
    assert "Rotate receiver-jongerenwerk's password" in said and "delete and recreate the topic" in said
    assert "a" * 64 not in said
    async with store.read() as session:
        assert await receiver_delivery(session, OOST) is None
    async with store.transaction() as session:
        await set_receiver_delivery(session, oost, topic_emptied=True, user="cli:olaf")
    async with store.read() as session:
        assert await kafka_readers(session, ReceiverType.JONGERENWERK) == [OOST]
        query = select(audit_log.c.user, audit_log.c.objects).where(
            audit_log.c.action == "receiver.delivery_set"
        )
        set_ = [(r.user, r.objects) for r in await session.execute(query.order_by(audit_log.c.id))]
    assert [o["mode"] for _, o in set_] == ["kafka", "webhook", "kafka"]  # West twice, then Oost
    assert set_[-1] == (
        "cli:olaf",
        {
            "organisation": OOST, "type": "JONGERENWERK", "mode": "kafka", "to": TOPIC,
            "active": True, "topic_emptied_for": [WEST],
        },
    )  # fmt: skip
    assert "topic_emptied_for" not in set_[0][1] and "secret" not in str(set_)
    assert set_[1][1]["to"] == "https://west.example.nl"  # a webhook by its origin, no path or query


async def test_a_topic_free_of_other_organisations_records_is_taken(store: Store) -> None:
    """Nothing of another organisation's within retention on this topic: records past it, delivered
    by webhook, of another type's topic, or the organisation's own do not stop the move."""
    async with store.transaction() as session:  # nothing ever went on the topic
        await set_receiver_delivery(session, ReceiverDelivery(OOST, ReceiverType.JONGERENWERK, "kafka"))
        hook = ReceiverDelivery(
            OOST, ReceiverType.JONGERENWERK, "webhook", "https://oost.example.nl/", "s" * 32
        )
        await set_receiver_delivery(session, hook)
    await _move_west_to_a_webhook(store)
    await _went_on_topic(store, WEST, days_ago=7.1)  # past retention and the margin
    await _went_on_topic(store, WEST, days_ago=0.1, channel="webhook")
    await _went_on_topic(store, "Wijkteam Centrum", days_ago=0.1, receiver_type=ReceiverType.WIJKTEAM)
    await _went_on_topic(store, OOST, days_ago=0.1)
    async with store.transaction() as session:
        await set_receiver_delivery(session, ReceiverDelivery(OOST, ReceiverType.JONGERENWERK, "kafka"))
    async with store.read() as session:
        assert await kafka_readers(session, ReceiverType.JONGERENWERK) == [OOST]


async def test_records_that_name_their_topic_count_on_that_topic_whatever_their_type(store: Store) -> None:
    """West, set up as a wijkteam then, got a jongerenwerk handover on the wijkteam topic, and a
    wijkteam one on this topic, with their settings changed in between: matched by type and setting,
    the first counted here and the second not; the topic the entry names decides."""
    await _move_west_to_a_webhook(store)
    wijkteam_topic = "handover.outbound.wijkteam.v1"
    await _went_on_topic(store, WEST, days_ago=1, topic=wijkteam_topic)  # a jongerenwerk handover
    here = await _went_on_topic(store, WEST, days_ago=2, receiver_type=ReceiverType.WIJKTEAM, topic=TOPIC)
    with pytest.raises(topic_others.TopicHoldsOthers) as refused:
        async with store.transaction() as session:
            await set_receiver_delivery(session, ReceiverDelivery(OOST, ReceiverType.JONGERENWERK, "kafka"))
    assert refused.value.kept == {WEST: here + timedelta(days=7, hours=1)}
    async with store.read() as session:
        objects = [r.objects for r in await session.execute(select(audit_log.c.objects).where(
            audit_log.c.action == "handover.disclosed"))]  # fmt: skip
    assert sorted(o["topic"] for o in objects) == [TOPIC, wijkteam_topic]


async def test_a_record_still_in_the_outbox_counts_as_going_now(store: Store) -> None:
    """The audit entry is written when the record is queued; one the relay has not sent yet lands on
    the topic later, and is kept from then on."""
    await _move_west_to_a_webhook(store)
    await _went_on_topic(store, WEST, days_ago=10)
    async with store.read() as session:
        objects = (
            await session.execute(
                select(audit_log.c.objects).where(audit_log.c.action == "handover.disclosed")
            )
        ).scalar_one()
    async with store.transaction() as session:
        await session.execute(
            insert(outbox).values(topic=f"tx.{TOPIC}", key="r", value=b"{}", headers={},
                                  message_id=objects["message_id"], created_at=utcnow() - timedelta(days=10))
        )  # fmt: skip
    before = utcnow()
    with pytest.raises(ValueError, match="may still hold") as refused:
        async with store.transaction() as session:
            await set_receiver_delivery(session, ReceiverDelivery(OOST, ReceiverType.JONGERENWERK, "kafka"))
    assert isinstance(refused.value, topic_others.TopicHoldsOthers)
    assert refused.value.until >= before + timedelta(days=7)


async def test_a_parked_record_released_later_counts_from_its_release(store: Store) -> None:
    """A handover parked (too large) 10 days ago and released 2 days ago went on the topic then: its
    sent row purged an hour later, the check read only its queue time and let Oost read it."""
    await _move_west_to_a_webhook(store)
    await _went_on_topic(store, WEST, days_ago=10)
    async with store.read() as session:
        query = select(audit_log.c.objects).where(audit_log.c.action == "handover.disclosed")
        objects = (await session.execute(query)).scalar_one()
    released = utcnow() - timedelta(days=2)
    entry = AuditEntry(
        action="outbox.released", user="olaf",
        objects={"topic": f"tx.{TOPIC}", "message_id": objects["message_id"], "parked_id": 1},
    )  # fmt: skip
    async with store.transaction() as session:
        with patch("hub.audit.utcnow", return_value=released):
            await write_audit(session, entry, transaction_id=None, system="ketenhub-ops")
    with pytest.raises(topic_others.TopicHoldsOthers) as refused:
        async with store.transaction() as session:
            await set_receiver_delivery(session, ReceiverDelivery(OOST, ReceiverType.JONGERENWERK, "kafka"))
    assert refused.value.kept == {WEST: released + timedelta(days=7, hours=1)}


def test_cli_refuses_the_move_until_the_topic_is_emptied(tmp_path: Path) -> None:
    """`partners delivery --kafka` says whose records are on the topic and what to do (exit 1), and
    moves the topic with --topic-emptied."""
    url = f"sqlite+aiosqlite:///{tmp_path / 'hub.db'}"

    async def west_was_there() -> datetime:
        store = Store(url)
        try:
            await store.migrate()
            await _move_west_to_a_webhook(store)
            return await _went_on_topic(store, WEST, days_ago=2)
        finally:
            await store.close()

    last = asyncio.run(west_was_there())
    env = {"KETENHUB_DATABASE__URL": url}
    move = ["partners", "delivery", OOST, "--type", "jongerenwerk", "--kafka"]
    refused = CliRunner().invoke(app, move, env=env)
    assert refused.exit_code == 1, refused.output
    said = refused.stderr
    assert said.startswith("ketenhub: --kafka: ") and "Traceback" not in said
    assert f"'{WEST}' (until {_shown(last + timedelta(days=7, hours=1))})" in said and TOPIC in said
    assert "receiver-jongerenwerk's password" in said and "--topic-emptied" in said
    moved = CliRunner().invoke(app, [*move, "--topic-emptied"], env=env)
    assert moved.exit_code == 0, moved.output
    assert f"handovers go to topic {TOPIC}" in moved.stdout
    hook = ["--webhook", "https://west.example.nl/", "--topic-emptied"]
    wrong = CliRunner().invoke(app, ["partners", "delivery", WEST, "--type", "jongerenwerk", *hook], env=env)
    assert wrong.exit_code == 2 and "goes with --kafka" in wrong.stderr
