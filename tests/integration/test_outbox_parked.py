"""An outbox row larger than the brokers take is parked, not retried for ever with everything behind
it waiting: the rest goes out, operators see it (metrics, dashboard, CLI), and release or discard it,
audited. On the real broker and both stores."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from pathlib import Path

import pytest
from aiokafka.record.default_records import DefaultRecordBatchBuilder
from sqlalchemy import insert, select, update
from typer.testing import CliRunner

from hub.cli import app
from hub.embedded import EmbeddedKafka
from hub.kafka import ensure_topics, make_producer
from hub.ops.parked import NotParked, ParkedRow, StillTooLarge, discard, parked_rows, release
from hub.spine import Relay, add_to_outbox
from hub.spine.outbox import outbox_state
from hub.store import Store
from hub.store.tables import audit_log, outbox, outbox_parked
from hub.topics import Topic
from schemas.envelope import Envelope, trace_id, utcnow
from tests.conftest import TEST_SECRET, make_settings
from tests.helpers.kafka import headers_of, produce, read_topic, wait_for
from tests.integration.test_ops_lag import IN, OUT, Cure, health_of, ops_hub, poisonable_echo

pytestmark = pytest.mark.integration
LIMIT = 50_000
YOUTH = "5f" * 32  # a youth key as the hub makes them (HMAC-SHA256, hex)


async def _publish(kafka: EmbeddedKafka, store: Store, topic: str, *, limit: int) -> Relay:
    options = {"bootstrap_servers": kafka.bootstrap}
    await ensure_topics(
        options, [Topic(topic, partitions=2, description="parked test")], replication_factor=1
    )
    producer = make_producer(options)
    await producer.start()
    relay = Relay(store, producer, max_message_bytes=limit)
    try:
        while await relay.publish_once():
            pass
    finally:
        await producer.stop()
    return relay


async def _actions(store: Store) -> list[tuple[str, dict[str, object], str | None]]:
    async with store.connect() as conn:
        rows = await conn.execute(
            select(audit_log.c.action, audit_log.c.objects, audit_log.c.youth_key)
            .where(audit_log.c.action.like("outbox.%"))
            .order_by(audit_log.c.id)
        )
        return [(r.action, r.objects, r.youth_key) for r in rows]


async def test_a_row_over_the_limit_is_parked_the_rest_go_out_and_an_operator_releases_or_discards_it(
    kafka: EmbeddedKafka, store: Store, unique: str
) -> None:
    topic = f"{unique}.parked"
    big, bigger = b"B" * (LIMIT + 1), b"C" * (2 * LIMIT)
    async with store.transaction() as session:
        await add_to_outbox(session, topic, b"first", key="youth-a")
        await add_to_outbox(session, topic, big, key=YOUTH, headers={"transaction-id": "tx-big"})
        await add_to_outbox(session, topic, b"second", key="youth-a")
        await add_to_outbox(session, topic, bigger, key="youth-b")
        await add_to_outbox(session, topic, b"third", key="youth-b")
    relay = await _publish(kafka, store, topic, limit=LIMIT)

    out = await read_topic(kafka.bootstrap, topic, expect=3, settle_s=0.5)
    assert sorted(r.value for r in out) == [b"first", b"second", b"third"]  # nothing waited behind them
    assert relay.parked == 2
    parked = await parked_rows(store)
    assert [p.topic for p in parked] == [topic, topic]
    assert [p.size > LIMIT for p in parked] == [True, True]
    assert f"over the brokers' limit of {LIMIT:,}" in parked[0].reason
    state = await outbox_state(store)
    assert (state.waiting, state.parked) == (0, 2)
    async with store.connect() as conn:  # moved out of the outbox, not marked sent
        values = (await conn.execute(select(outbox.c.value))).scalars().all()
    assert big not in values and bigger not in values

    # still over the limit: a release is refused, the row stays parked
    with pytest.raises(StillTooLarge, match="raise the brokers' limit"):
        await release(store, parked[0].id, "olga", "try again", max_message_bytes=LIMIT)
    await discard(store, parked[1].id, "olga", "a copy of a record the partner sent again")
    with pytest.raises(NotParked):
        await discard(store, parked[1].id, "olga", "twice")

    # the brokers' limit raised: released, it goes out as it was, once
    new_id = await release(store, parked[0].id, "olga", "limit raised to 2 MB", max_message_bytes=4 * LIMIT)
    relay = await _publish(kafka, store, topic, limit=4 * LIMIT)
    assert relay.published == 1 and relay.parked == 0
    out = await read_topic(kafka.bootstrap, topic, expect=4, settle_s=0.5)
    released = [r for r in out if r.value == big]
    assert len(released) == 1 and released[0].key == YOUTH.encode()
    assert headers_of(released[0])["transaction-id"] == "tx-big"
    assert await parked_rows(store) == []
    # audited with the hub's own youth key; a key that is not one (it may be anything) is left out
    assert [(a, o["parked_id"], o["reason_length"], k) for a, o, k in await _actions(store)] == [
        ("outbox.discarded", parked[1].id, len("a copy of a record the partner sent again"), None),
        ("outbox.released", parked[0].id, len("limit raised to 2 MB"), YOUTH),
    ]
    assert (await _actions(store))[1][1]["new_outbox_id"] == new_id


@pytest.mark.timeout(240)  # its own deadlines add up to 120 s
async def test_a_dead_letter_too_large_for_the_dlq_is_parked_and_operators_see_it(
    kafka: EmbeddedKafka, db_url: str, unique: str
) -> None:
    """A partner's record just under the limit that fails: its dead letter carries the DLQ headers
    too and no longer fits. The consumer and the relay go on; /metrics, the health picture and the
    connector table of the dashboard say a row is parked."""
    settings = make_settings(kafka, db_url, unique)
    settings.kafka.max_message_bytes = LIMIT
    poison = Envelope(type="Test", payload={"n": 0, "poison": True, "pad": "x" * (LIMIT - 600)})
    good = [Envelope(type="Test", payload={"n": i}) for i in range(1, 6)]
    records = [(b"youth-a", e.to_bytes(), e.headers()) for e in [poison, *good]]
    assert LIMIT - 1_000 < DefaultRecordBatchBuilder.estimate_size_in_bytes(*records[0]) <= LIMIT  # fits
    async with ops_hub(settings, poisonable_echo(Cure())) as (hub, client):
        assert hub.store is not None
        await produce(kafka.bootstrap, hub.topic(IN.name), records)
        out = await read_topic(kafka.bootstrap, hub.topic(OUT.name), expect=5, settle_s=0.3)
        assert sorted(Envelope.from_bytes(r.value).payload["n"] for r in out) == [1, 2, 3, 4, 5]
        await wait_for(lambda: _parked(hub.store, 1))
        parked = await parked_rows(hub.store)
        assert parked[0].topic == hub.topic(IN.dlq)
        store = hub.store

        async def all_marked() -> bool:  # the relay marks what it published in a write of its own
            return (await outbox_state(store)).waiting == 0

        await wait_for(all_marked)

        r = await client.get("/metrics")  # 200 also when the lag probe runs out of time
        assert r.status_code == 200, r.text
        metrics = r.text
        assert "ketenhub_outbox_parked 1.0" in metrics
        assert "ketenhub_outbox_waiting 0.0" in metrics
        health = await wait_for(lambda: health_of(client), timeout_s=30)
        assert health["outbox"] == {"waiting": 0, "oldest_seconds": 0.0, "parked": 1}
        status = (await client.get("/ops/api/connectors")).json()["outbox"]
        assert status["parked"] == 1 and "ketenhub outbox list" in status["last_error"]
        assert status["reachable"] is True and status["last_success"] is not None


async def _parked(store: Store | None, n: int) -> bool:
    assert store is not None
    return len(await parked_rows(store)) == n


def test_the_outbox_commands_list_release_and_discard(
    kafka: EmbeddedKafka, tmp_path: Path, unique: str
) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'hub.db'}"
    topic = f"{unique}.cli"

    async def seed() -> list[ParkedRow]:
        store = Store(url)
        try:
            await store.migrate()
            async with store.transaction() as session:
                await add_to_outbox(session, topic, b"D" * (LIMIT + 10), key="youth-c")
                await add_to_outbox(session, topic, b"E" * (LIMIT + 20), key="youth-d")
            await _publish(kafka, store, topic, limit=LIMIT)
            return await parked_rows(store)
        finally:
            await store.close()

    rows = asyncio.run(seed())
    first, second = rows[0].id, rows[1].id
    env = {"KETENHUB_DATABASE__URL": url, "KETENHUB_SECRET": TEST_SECRET}
    runner = CliRunner()
    listed = runner.invoke(app, ["outbox", "list"], env=env)
    assert listed.exit_code == 0, listed.output
    assert "0 row(s) waiting" in listed.output and "2 parked" in listed.output
    for row in rows:
        assert f"{row.size:,}" in listed.output and row.topic in listed.output
    assert "youth-c" not in listed.output  # keys are not shown
    refused = runner.invoke(
        app, ["outbox", "release", str(first), "--reason", "now"],
        env={**env, "KETENHUB_KAFKA__MAX_MESSAGE_BYTES": str(LIMIT)},
    )  # fmt: skip
    assert refused.exit_code == 1 and "raise the brokers' limit" in refused.output
    released = runner.invoke(
        app, ["outbox", "release", str(first), "--reason", "limit raised"],
        env={**env, "KETENHUB_KAFKA__MAX_MESSAGE_BYTES": str(2 * LIMIT)},
    )  # fmt: skip
    assert released.exit_code == 0, released.output
    assert "queued again as outbox row" in released.output
    dropped = runner.invoke(app, ["outbox", "discard", str(second), "--reason", "sent again"], env=env)
    assert dropped.exit_code == 0, dropped.output
    again = runner.invoke(app, ["outbox", "discard", str(second), "--reason", "sent again"], env=env)
    assert again.exit_code == 1 and f"no parked outbox row {second}" in again.output
    no_reason = runner.invoke(app, ["outbox", "discard", str(second)], env=env)
    assert no_reason.exit_code == 2

    async def check() -> tuple[int, list[bytes]]:
        store = Store(url)
        try:
            async with store.connect() as conn:
                waiting = (
                    await conn.execute(select(outbox.c.value).where(outbox.c.sent_at.is_(None)))
                ).scalars()
                query = select(outbox_parked.c.id).where(outbox_parked.c.resolved.is_(None))
                left = (await conn.execute(query)).scalars().all()
            return len(left), [bytes(v)[:1] for v in waiting]
        finally:
            await store.close()

    assert asyncio.run(check()) == (0, [b"D"])  # released: waiting for the hub's relay; none parked


def test_the_audit_log_keeps_no_operators_reason_and_no_senders_ids(tmp_path: Path) -> None:
    """`ketenhub outbox release/discard --help` said the audit log records the reason's length, not its
    text; it recorded the text ("moeder mevr. De Vries belde"), kept for years and never blanked. A
    parked dead letter's message and transaction ids, its sender's own, went into it as they came."""
    url = f"sqlite+aiosqlite:///{tmp_path / 'hub.db'}"
    sender = {"message-id": "zaak Sanne de Vries 06-12345678", "transaction-id": "melding Sanne de Vries"}
    rows = [
        ("ops.in.v1", YOUTH, {"transaction-id": "tx-1"}, "m-1"),
        ("ops.in.dlq.v1", "Sanne", sender, sender["message-id"]),
    ]

    async def seed() -> None:
        store = Store(url)
        try:
            await store.migrate()
            async with store.transaction() as session:
                for n, (topic, key, headers, message_id) in enumerate(rows, start=1):
                    await session.execute(
                        insert(outbox_parked).values(
                            id=n, outbox_id=n, topic=topic, key=key, value=b"{}", headers=headers,
                            message_id=message_id, created_at=utcnow(), parked_at=utcnow(), size=10,
                            reason="over the brokers' limit",
                        )
                    )  # fmt: skip
        finally:
            await store.close()

    async def audited() -> list[tuple[str, dict[str, object], str | None, str | None]]:
        store = Store(url)
        try:
            async with store.connect() as conn:
                found = await conn.execute(
                    select(
                        audit_log.c.action,
                        audit_log.c.objects,
                        audit_log.c.youth_key,
                        audit_log.c.transaction_id,
                    )
                    .where(audit_log.c.action.like("outbox.%"))
                    .order_by(audit_log.c.id)
                )
                return [(r.action, r.objects, r.youth_key, r.transaction_id) for r in found]
        finally:
            await store.close()

    asyncio.run(seed())
    env, runner = {"KETENHUB_DATABASE__URL": url, "KETENHUB_SECRET": TEST_SECRET}, CliRunner()
    listed = runner.invoke(app, ["outbox", "list"], env={**env, "COLUMNS": "200"})
    assert listed.exit_code == 0 and "m-1" in listed.output and "Sanne" not in listed.output, listed.output
    reasons = {"release": "moeder mevr. De Vries belde", "discard": "bericht over Sanne de Vries, dubbel"}
    for row_id, command in ((1, "release"), (2, "discard")):
        result = runner.invoke(app, ["outbox", command, str(row_id), "--reason", reasons[command]], env=env)
        assert result.exit_code == 0, result.output
    entries = asyncio.run(audited())
    assert "Vries" not in repr(entries) and "Sanne" not in repr(entries)
    (released, objects, youth, transaction), (discarded, of_letter, nobody, letters_transaction) = entries
    assert (released, youth, transaction, objects["message_id"]) == ("outbox.released", YOUTH, "tx-1", "m-1")
    assert objects["reason_length"] == len(reasons["release"]) and "reason" not in objects
    assert (discarded, nobody, of_letter["reason_length"]) == (
        "outbox.discarded",
        None,
        len(reasons["discard"]),
    )
    # the sender's transaction id as the spine takes it in: a UUID made from it, the same each time
    assert letters_transaction == trace_id(sender["transaction-id"])


async def test_parking_again_after_the_outbox_gave_an_id_out_twice(
    kafka: EmbeddedKafka, store: Store, unique: str
) -> None:
    """SQLite hands out the highest id again once its row left the outbox, so two parked rows can
    share an outbox id: both are parked, and the relay goes on."""
    topic = f"{unique}.again"
    for value in (b"F" * (LIMIT + 1), b"G" * (LIMIT + 2)):
        async with store.transaction() as session:
            await add_to_outbox(session, topic, value, key="youth-e")
        relay = await _publish(kafka, store, topic, limit=LIMIT)
        assert relay.parked == 1
    rows = await parked_rows(store)
    assert [r.size for r in rows] == sorted(r.size for r in rows) and len({r.id for r in rows}) == 2


async def test_a_parked_row_is_released_or_discarded_once_when_two_operators_act_at_once(
    kafka: EmbeddedKafka, store: Store, unique: str
) -> None:
    topic = f"{unique}.race"
    async with store.transaction() as session:
        await add_to_outbox(session, topic, b"H" * (LIMIT + 1), key="youth-f")
    await _publish(kafka, store, topic, limit=LIMIT)
    (row,) = await parked_rows(store)
    results = await asyncio.gather(
        release(store, row.id, "olga", "first", max_message_bytes=2 * LIMIT),
        release(store, row.id, "otto", "second", max_message_bytes=2 * LIMIT),
        discard(store, row.id, "pia", "third"),
        return_exceptions=True,
    )
    assert sum(not isinstance(r, BaseException) for r in results) == 1
    assert all(isinstance(r, NotParked) for r in results if isinstance(r, BaseException))
    assert len(await _actions(store)) == 1
    async with store.connect() as conn:
        queued = (await conn.execute(select(outbox.c.id).where(outbox.c.topic == topic))).all()
    discarded = results[2] is None
    assert len(queued) == (0 if discarded else 1)


async def test_parked_rows_are_deleted_after_the_term_of_a_dead_letter(
    kafka: EmbeddedKafka, store: Store, unique: str
) -> None:
    topic = f"{unique}.term"
    for value in (b"I" * (LIMIT + 1), b"J" * (LIMIT + 2)):
        async with store.transaction() as session:
            await add_to_outbox(session, topic, value, key="youth-g")
    relay = await _publish(kafka, store, topic, limit=LIMIT)
    old, young = await parked_rows(store)
    async with store.transaction() as session:
        await session.execute(
            update(outbox_parked)
            .where(outbox_parked.c.id == old.id)
            .values(parked_at=utcnow() - timedelta(days=30, minutes=1))
        )
    await relay.purge_sent()
    assert [r.id for r in await parked_rows(store)] == [young.id]
