"""The outbox relay on the real broker and both stores: a busy moment's commits go out together,
a quiet hub's commit at once, and a stop does not wait out the gathering."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime, timedelta
from typing import Any

import pytest
import structlog
from aiokafka.errors import KafkaTimeoutError
from aiokafka.partitioner import DefaultPartitioner
from sqlalchemy import event, insert, select

from hub.embedded import EmbeddedKafka
from hub.kafka import ensure_topics, make_producer
from hub.spine import Relay, add_to_outbox
from hub.spine import outbox as outbox_module
from hub.store import Store
from hub.store.tables import inbox, outbox
from hub.topics import Topic, inbox_term
from schemas.envelope import utcnow
from tests.helpers.kafka import headers_of, read_topic, wait_for

pytestmark = pytest.mark.integration


@asynccontextmanager
async def _relay(
    kafka: EmbeddedKafka, store: Store, topic: str, *, gather_s: float, partitions: int = 1
) -> AsyncIterator[Relay]:
    options = {"bootstrap_servers": kafka.bootstrap}
    await ensure_topics(
        options, [Topic(topic, partitions=partitions, description="relay test")], replication_factor=1
    )
    producer = make_producer(options)
    await producer.start()
    relay = Relay(store, producer, gather_s=gather_s)
    task = asyncio.create_task(relay.run())
    try:
        yield relay
    finally:
        relay.stop()
        await asyncio.wait_for(task, 10)
        await producer.stop()


async def _queue(store: Store, relay: Relay, topic: str, value: bytes) -> None:
    async with store.transaction() as session:
        await add_to_outbox(session, topic, value, key="youth-a")
    relay.wake()  # as the spine and the HTTP batcher do after they commit


async def _sent_at(store: Store, topic: str) -> dict[bytes, datetime | None]:
    async with store.connect() as conn:
        rows = (
            await conn.execute(select(outbox.c.value, outbox.c.sent_at).where(outbox.c.topic == topic))
        ).all()
    return {bytes(r.value): r.sent_at for r in rows}


async def test_commits_of_a_busy_moment_go_out_in_one_publish(
    kafka: EmbeddedKafka, store: Store, unique: str
) -> None:
    topic = f"{unique}.relay"
    # The window only has to outlast the four commits below (0.2 s), also on a loaded machine.
    async with _relay(kafka, store, topic, gather_s=5.0) as relay:
        await _queue(store, relay, topic, b"a")
        await wait_for(lambda: _all_sent(store, topic, 1))
        # four more transactions, 50 ms apart, each waking the relay, while it gathers after "a":
        # without the gathering each would be published (and marked sent) on its own
        for value in (b"b", b"c", b"d", b"e"):
            await _queue(store, relay, topic, value)
            await asyncio.sleep(0.05)
        await wait_for(lambda: _all_sent(store, topic, 5))
        sent = await _sent_at(store, topic)
    # marked sent by one "sent" write: the four commits went out in one publish, after "a"'s
    assert sent[b"b"] == sent[b"c"] == sent[b"d"] == sent[b"e"]
    assert sent[b"a"] != sent[b"b"]
    out = await read_topic(kafka.bootstrap, topic, expect=5, settle_s=0.3)
    assert [r.value for r in out] == [b"a", b"b", b"c", b"d", b"e"]  # in commit order, each once


async def test_a_quiet_hub_publishes_a_commit_at_once_and_a_stop_cuts_the_gathering_short(
    kafka: EmbeddedKafka, store: Store, unique: str
) -> None:
    topic = f"{unique}.quiet"
    gather_s = 120.0  # far longer than the test waits: a gathering before the first publish fails it
    async with _relay(kafka, store, topic, gather_s=gather_s) as relay:
        started = time.monotonic()
        await _queue(store, relay, topic, b"lone")
        out = await read_topic(kafka.bootstrap, topic, expect=1, timeout_s=30)
        assert [r.value for r in out] == [b"lone"]
        assert time.monotonic() - started < gather_s / 3
        stopping = time.monotonic()
    # the relay gathers after that publish; stopping it did not wait for the gathering to end
    assert time.monotonic() - stopping < gather_s / 3


async def _all_sent(store: Store, topic: str, n: int) -> bool:
    sent = await _sent_at(store, topic)
    return len(sent) == n and all(v is not None for v in sent.values())


async def test_rows_go_out_once_in_key_order_on_the_partition_the_key_hashes_to(
    kafka: EmbeddedKafka, store: Store, unique: str
) -> None:
    """The relay publishes a batch of rows per partition: each row lands where Kafka's default
    partitioner puts its key, each key's rows in commit order, a batch that fills up (256 KiB)
    continues in the next, a record larger than a whole batch goes out alone, and a row without
    a key goes out too."""
    topic = f"{unique}.partitioned"
    keys = [f"youth-{i}" for i in range(12)]
    big = b"x" * 300_000  # larger than the producer's batch (256 KiB)
    queued: list[tuple[str | None, bytes]] = []
    async with store.transaction() as session:
        for n in range(20):
            for key in keys:
                value = (b"%s-%02d-" % (key.encode(), n)) + (big if (n, key) == (7, keys[3]) else b"")
                value += b"y" * (40_000 if n == 11 else 0)  # the 12 rows of round 11 fill batches
                queued.append((key, value))
                await add_to_outbox(session, topic, value, key=key, headers={"row": str(len(queued))})
        await add_to_outbox(session, topic, b"no-key", key=None)
        queued.append((None, b"no-key"))
    async with _relay(kafka, store, topic, gather_s=0.0, partitions=4) as relay:
        relay.wake()
        out = await read_topic(kafka.bootstrap, topic, expect=len(queued), settle_s=0.5)
    got = Counter((r.key.decode() if r.key is not None else None, r.value) for r in out)
    assert got == Counter(queued)  # every row once, key and value as queued
    choose = DefaultPartitioner()
    for record in out:
        if record.key is not None:
            assert record.partition == choose(record.key, [0, 1, 2, 3], [0, 1, 2, 3])
    for key in keys:
        rows = [int(headers_of(r)["row"]) for r in out if r.key == key.encode()]
        assert rows == sorted(rows) and len(rows) == 20  # in commit order within the key


async def test_the_relay_keeps_publishing_while_its_sent_marks_wait_for_the_writer(
    kafka: EmbeddedKafka, store: Store, unique: str
) -> None:
    """Under load every component queues for the store's writer (on SQLite one at a time). The relay
    publishes the next batches while the "sent" mark of the last waits its turn, then marks them
    all; a stop waits for that mark, so nothing goes out twice after a restart."""
    topic = f"{unique}.busy-writer"
    n = 1_600  # more than three of the relay's batches of 500
    async with store.transaction() as session:
        for i in range(n):
            await add_to_outbox(session, topic, b"%05d" % i, key=f"youth-{i % 7}")
    release = asyncio.Event()
    holding = asyncio.Event()

    async def busy_writer() -> None:  # another component's long write transaction
        async with store.transaction() as session:
            await session.execute(select(outbox.c.id).limit(1))
            holding.set()
            await release.wait()

    writer = asyncio.create_task(busy_writer())
    await holding.wait()
    try:
        async with _relay(kafka, store, topic, gather_s=0.0) as relay:
            relay.wake()
            # every row out while the writer is held: before, the relay stopped after its first batch
            out = await read_topic(kafka.bootstrap, topic, expect=n, timeout_s=20, settle_s=0.5)
            assert sorted(r.value for r in out) == [b"%05d" % i for i in range(n)]  # each once
            assert relay.published == n
            release.set()
            await writer
        # stopped: the marks are written, nothing is left to publish again
        assert await _all_sent(store, topic, n)
    finally:
        release.set()
        await writer


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
async def test_on_sqlite_the_sent_marks_of_a_moment_are_one_write(
    kafka: EmbeddedKafka, store: Store, unique: str
) -> None:
    """Each commit is published at once (no gathering here), but their "sent" marks wait and go in
    one write (at most one a `mark_every_s`; a stop writes the rest at once): the relay takes
    SQLite's one writer less often. The window here outlasts the test, so the one write is the
    stop's; the tests above show the marks written without a stop at the default 0.1 s."""
    topic = f"{unique}.marks"
    options = {"bootstrap_servers": kafka.bootstrap}
    await ensure_topics(options, [Topic(topic, description="relay test")], replication_factor=1)
    producer = make_producer(options)
    await producer.start()
    # Longer than the test: the one write is the stop's, whatever the machine's speed.
    relay = Relay(store, producer, gather_s=0.0, mark_every_s=60.0)
    task = asyncio.create_task(relay.run())
    try:
        for value in (b"a", b"b", b"c"):
            await _queue(store, relay, topic, value)
            out = await read_topic(kafka.bootstrap, topic, expect=ord(value) - ord("a") + 1, timeout_s=30)
            assert out[-1].value == value  # published before the next commit
        assert set((await _sent_at(store, topic)).values()) == {None}  # published, the marks wait
    finally:
        relay.stop()
        await asyncio.wait_for(task, 10)
        await producer.stop()
    sent = await _sent_at(store, topic)
    assert sent[b"a"] == sent[b"b"] == sent[b"c"] is not None  # one "sent" write for the three


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
async def test_after_a_forced_mark_fails_the_marks_are_gathered_again(
    kafka: EmbeddedKafka, store: Store, unique: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`publish_once` marks at once. When that mark failed, the relay went on marking every publish
    at once, taking SQLite's writer as often as before the gathering; the failed row is marked with
    the next ones."""
    topic = f"{unique}.failed-mark"
    options = {"bootstrap_servers": kafka.bootstrap}
    await ensure_topics(options, [Topic(topic, description="relay test")], replication_factor=1)
    producer = make_producer(options)
    await producer.start()
    relay = Relay(store, producer, gather_s=0.0, mark_every_s=60.0)  # the stop writes the one mark
    real_transaction = store.transaction

    def failing_transaction() -> Any:
        monkeypatch.setattr(store, "transaction", real_transaction)  # fails once
        raise RuntimeError("database is locked")

    await _queue(store, relay, topic, b"x")
    monkeypatch.setattr(store, "transaction", failing_transaction)
    with pytest.raises(RuntimeError, match="locked"):
        await relay.publish_once()  # published; its forced mark failed
    assert (await _sent_at(store, topic))[b"x"] is None
    with structlog.testing.capture_logs() as logs:
        task = asyncio.create_task(relay.run())
        try:
            for n, value in enumerate((b"a", b"b", b"c"), start=2):
                await _queue(store, relay, topic, value)
                out = await read_topic(kafka.bootstrap, topic, expect=n, timeout_s=30)
                assert out[-1].value == value
            assert set((await _sent_at(store, topic)).values()) == {None}  # the marks wait again
        finally:
            relay.stop()
            await asyncio.wait_for(task, 10)
            await producer.stop()
    sent = await _sent_at(store, topic)
    assert sent[b"x"] == sent[b"a"] == sent[b"b"] == sent[b"c"] is not None  # one write, the stop's
    # the failure was raised to publish_once's caller, not a second time to the running relay
    assert [e["event"] for e in logs if "relay failed" in e["event"]] == []


async def test_inbox_entries_past_their_term_are_purged_the_rest_kept(
    kafka: EmbeddedKafka, store: Store, unique: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The inbox remembers a message id while a topic may still deliver it again (the longest topic
    retention and a week): older entries go with the relay's housekeeping, younger ones stay."""
    term = inbox_term()
    assert term >= timedelta(days=30)  # at least the dead letters' retention
    now = utcnow()
    async with store.transaction() as session:
        await session.execute(
            insert(inbox),
            [
                *(  # batches of entries sharing their time, more than a purge's chunk of them
                    {
                        "consumer": f"g{unique}",
                        "message_id": f"old-{i}",
                        "processed_at": now - term - timedelta(hours=1 + i // 10),
                    }
                    for i in range(35)
                ),
                {
                    "consumer": f"g{unique}",
                    "message_id": "young",
                    "processed_at": now - term + timedelta(hours=1),
                },
            ],
        )
    monkeypatch.setattr(outbox_module, "INBOX_PURGE_CHUNK", 4)  # chunks that end inside a batch
    producer = make_producer({"bootstrap_servers": kafka.bootstrap})
    await producer.start()
    try:
        await Relay(store, producer, inbox_keep=term).purge_sent()
    finally:
        await producer.stop()
    async with store.connect() as conn:
        kept = (
            await conn.execute(select(inbox.c.message_id).where(inbox.c.consumer == f"g{unique}"))
        ).scalars()
        assert sorted(kept) == ["young"]


@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)
async def test_the_relay_reads_pending_rows_in_id_order_from_their_own_index(
    kafka: EmbeddedKafka, store: Store, unique: str
) -> None:
    """Every "sent" mark leaves a dead index entry on PostgreSQL. The relay's read went through all of
    them, batch after batch, by a bitmap scan the planner chose on its estimates (24-39 ms a batch of
    500 after 50,000 rows, `python -m bench.relay --store postgresql`: 8,000 rows/s, 25,000 with
    this). A walk of the pending rows' own index in id order clears them as it goes. Which plan the
    planner picks depends on statistics a test cannot pin, so this checks the two parts: the relay's
    read runs with bitmap scans off, and its plan then walks ix_outbox_pending."""
    topic = f"{unique}.plan"
    options = {"bootstrap_servers": kafka.bootstrap}
    await ensure_topics(options, [Topic(topic, description="relay test")], replication_factor=1)
    producer = make_producer(options)
    await producer.start()
    relay = Relay(store, producer)
    for n in range(20):
        await _queue(store, relay, topic, f"v{n}".encode())
    statements: list[tuple[str, Any]] = []

    def seen(_conn: Any, _cursor: Any, statement: str, parameters: Any, *_: Any) -> None:
        statements.append((statement, parameters))

    event.listen(store.engine.sync_engine, "before_cursor_execute", seen)
    try:
        assert await relay.publish_once() == 20
    finally:
        event.remove(store.engine.sync_engine, "before_cursor_execute", seen)
        await producer.stop()
    read = next(i for i, (s, _) in enumerate(statements) if s.lstrip().startswith("SELECT outbox"))
    async with store.engine.connect() as conn:  # the relay's transaction up to its read, replayed
        driver = (await conn.get_raw_connection()).driver_connection
        async with driver.transaction():
            for statement, parameters in statements[:read]:
                await driver.execute(statement, *(parameters or ()))
            assert await driver.fetchval("SHOW enable_bitmapscan") == "off"
            statement, parameters = statements[read]
            plan = str(await driver.fetchval(f"EXPLAIN (FORMAT JSON) {statement}", *(parameters or ())))
    assert "'Index Name': 'ix_outbox_pending'" in plan and "Bitmap" not in plan, plan


async def test_a_batch_that_expires_is_not_overtaken_by_the_next_one_of_its_partition(
    kafka: EmbeddedKafka, store: Store, unique: str
) -> None:
    """Two rows of one youth too large for one record batch: the relay queued the second batch
    behind the first at once. The producer does not retry a batch that expired; the second was
    acked, the round failed, and the relay published both again: the partition read the later
    message, then the earlier, then the later again, and a consumer (dropping the repeat) took the
    later one first. The next batch of a partition now goes only once the one before it is acked."""
    topic = f"{unique}.relay-order"
    options = {"bootstrap_servers": kafka.bootstrap}
    await ensure_topics(options, [Topic(topic, partitions=1, description="relay test")], replication_factor=1)
    producer = make_producer(options)
    await producer.start()
    real_send_batch = producer.send_batch
    sent = 0

    async def first_expires(batch: Any, topic: str, partition: int) -> asyncio.Future[Any]:
        nonlocal sent
        sent += 1
        if sent == 1:  # as the producer's sender fails a batch past its request timeout
            expired: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
            asyncio.get_running_loop().call_later(0.3, expired.set_exception, KafkaTimeoutError())
            return expired
        return await real_send_batch(batch, topic, partition=partition)

    producer.send_batch = first_expires  # type: ignore[method-assign]
    big = 200 * 1024  # two do not fit in one batch of the relay's producer (256 KiB)
    async with store.transaction() as session:
        for n in (b"1", b"2"):
            await add_to_outbox(session, topic, n + b"x" * big, key="youth-a")
    relay = Relay(store, producer, gather_s=0.0)
    task = asyncio.create_task(relay.run())
    try:

        async def all_sent() -> bool:
            return all(at is not None for at in (await _sent_at(store, topic)).values())

        await wait_for(all_sent, timeout_s=30)
        records = await read_topic(kafka.bootstrap, topic, expect=2, settle_s=0.5)
        assert [bytes(r.value)[:1] for r in records] == [b"1", b"2"]
        assert sent >= 3  # the first failed, and both went again
    finally:
        relay.stop()
        await asyncio.wait_for(task, 10)
        await producer.stop()


async def test_a_sent_row_of_a_watched_topic_is_kept_until_its_group_took_it_in(
    kafka: EmbeddedKafka, store: Store, unique: str
) -> None:
    """Sent rows went after an hour. Whether a signal's registration is still on its way looks for one
    published and not yet taken in by the Verwijsindex connector: with the connector down for more
    than an hour the row was gone, and an operator's register-again disclosed the youth a second time.
    A watched topic's sent row stays until its group took it in, the topic's retention at most."""
    watched, other, group = f"{unique}.watched", f"{unique}.other", f"g{unique}"
    now = utcnow()
    rows = [  # (topic, message id, sent)
        (watched, "waiting", now - timedelta(hours=3)),
        (watched, "taken-in", now - timedelta(hours=3)),
        (watched, "past-the-topics-retention", now - timedelta(days=8)),
        (watched, "recent", now - timedelta(minutes=5)),
        (other, "waiting", now - timedelta(hours=3)),
    ]
    async with store.transaction() as session:
        await session.execute(
            insert(outbox),
            [
                {"topic": t, "key": "youth-a", "value": b"v", "headers": {}, "message_id": m,
                 "created_at": sent, "sent_at": sent}
                for t, m, sent in rows
            ],
        )  # fmt: skip
        await session.execute(
            insert(inbox), [{"consumer": group, "message_id": "taken-in", "processed_at": now}]
        )
    producer = make_producer({"bootstrap_servers": kafka.bootstrap})
    await producer.start()
    try:
        relay = Relay(store, producer, watched={watched: group}, watched_keep=timedelta(days=7))
        await relay.purge_sent()
    finally:
        await producer.stop()
    async with store.connect() as conn:
        kept = (await conn.execute(select(outbox.c.topic, outbox.c.message_id))).all()
    assert sorted(kept) == [(watched, "recent"), (watched, "waiting")]


async def test_the_relays_error_shown_to_every_operator_carries_no_value_a_statement_held(
    kafka: EmbeddedKafka, store: Store, unique: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The relay's last error is on the console for viewers too (`/ops/api/connectors`). It was the
    driver's text as it came, which quotes the values a statement refused: a youth's name in a row."""
    from sqlalchemy.exc import IntegrityError

    said = "duplicate key value violates unique constraint: Key (name)=(Sanne de Vries) already exists."

    async def failing(*_: Any, **__: Any) -> int:
        raise IntegrityError("INSERT INTO outbox ...", {"name": "Sanne de Vries"}, Exception(said))

    async with _relay(kafka, store, f"t{unique}.relay.error.v1", gather_s=0.0) as relay:
        monkeypatch.setattr(relay, "_publish_ahead", failing)
        monkeypatch.setattr(relay, "_publish_locked", failing)
        relay.wake()
        await wait_for(lambda: relay.last_error is not None)
        shown = relay.last_error
        assert shown is not None and "IntegrityError" in shown and "Sanne" not in shown, shown
