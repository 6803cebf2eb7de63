"""Two members of a consumer group on the same records, and a batch whose transaction fails: nothing
lost, nothing doubled, and the driver's text (it may hold a sender's values) kept out of the log."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest
import structlog
from aiokafka import ConsumerRecord
from sqlalchemy import event, select
from sqlalchemy import exc as sa_exc

from hub.audit import AuditEntry
from hub.embedded import EmbeddedKafka
from hub.metrics import Metrics
from hub.spine import Tx
from hub.spine.consumer import Spine, Subscription, decode_envelope
from hub.store import Store
from hub.store.tables import audit_log
from schemas.envelope import Envelope
from tests.conftest import make_settings
from tests.helpers.hubs import IN, echo_component, running_hub
from tests.helpers.kafka import produce, wait_for
from tests.helpers.pg import WAITING_FOR_ANY_LOCK

pytestmark = pytest.mark.integration


async def _effects(store: Store) -> list[int]:
    """The `n` of every handled record, in the order the effects were written."""
    async with store.connect() as conn:
        query = select(audit_log.c.objects).where(audit_log.c.action == "test.effect")
        return [o["n"] for o in (await conn.execute(query.order_by(audit_log.c.id))).scalars()]


async def _effect(tx: Tx, message: Envelope) -> None:
    await tx.audit(AuditEntry(action="test.effect", user="test", objects={"n": message.payload["n"]}))


def _consumer_record(offset: int, env: Envelope) -> ConsumerRecord[Any, Any]:
    value = env.to_bytes()
    return ConsumerRecord(
        topic="t.in",
        partition=2,
        offset=offset,
        timestamp=0,
        timestamp_type=0,
        key=b"youth-a",
        value=value,
        checksum=None,
        serialized_key_size=7,
        serialized_value_size=len(value),
        headers=tuple(env.headers()),
    )


class _Relay:
    def wake(self) -> None:
        """Nothing to publish here: the test reads the store."""


class _Offsets:
    """What a member did with its batch's offsets."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    async def ack(self) -> None:
        self.calls.append("ack")

    async def nack(self) -> None:
        self.calls.append("nack")


@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)
async def test_a_member_joining_mid_batch_loses_none_of_the_records_both_were_given(store: Store) -> None:
    """A rebalance gives a partition to a new member (scale-out, a rolling deploy) while the old one
    is in the middle of a batch: both handle the same records. The new member read the inbox at the
    start of its batch (nothing there) and inserted the ids at its end; the old one committed its
    five records first, so the new one's insert hit the inbox's key and its batch failed without
    being handed back: its other five records were never handled, and its consumer's next ack
    committed past them."""
    spine = Spine(store, None, _Relay(), Metrics())  # type: ignore[arg-type]
    in_handler, go_on = asyncio.Event(), asyncio.Event()

    async def held_at_the_first(tx: Tx, message: Envelope) -> None:
        if message.payload["n"] == 0:
            in_handler.set()
            await go_on.wait()
        await _effect(tx, message)

    records = [_consumer_record(i, Envelope(type="Test", payload={"n": i})) for i in range(10)]
    new_member = Subscription("t.in", "g-echo", "t.in.dlq", held_at_the_first, decode_envelope)
    old_member = Subscription("t.in", "g-echo", "t.in.dlq", _effect, decode_envelope)
    new_offsets, old_offsets = _Offsets(), _Offsets()

    # the new member fetched offsets 0-9 from the last commit; the old one still holds 0-4 of them
    new = asyncio.create_task(spine.process(new_member, records, ack=new_offsets.ack, nack=new_offsets.nack))
    await asyncio.wait_for(in_handler.wait(), 20)
    old = asyncio.create_task(
        spine.process(old_member, records[:5], ack=old_offsets.ack, nack=old_offsets.nack)
    )

    async def old_done_or_waiting() -> bool:
        if old.done():
            return True
        async with store.connect() as conn:
            return bool((await conn.execute(WAITING_FOR_ANY_LOCK)).scalar_one())

    try:
        await wait_for(old_done_or_waiting, timeout_s=20)
    finally:
        go_on.set()
    outcomes = await asyncio.wait_for(asyncio.gather(new, old, return_exceptions=True), 30)

    assert [o for o in outcomes if isinstance(o, BaseException)] == []
    assert await _effects(store) == list(range(10))  # each record once, in order
    assert new_offsets.calls == ["ack"]
    assert old_offsets.calls == ["ack"]  # its records were the new member's: nothing of it to redo


class _DriverError(Exception):
    """What PostgreSQL says of a duplicate key: the key's values on the line after the first."""

    sqlstate = "23505"


def _fail_the_first_inbox_write(store: Store) -> list[str]:
    """Make the store's first inbox write fail as a driver would: an IntegrityError whose text names a
    sender's message id (a name). Returns the list the failure is noted in."""
    failed: list[str] = []

    def before(conn: Any, cursor: Any, statement: str, params: Any, context: Any, many: bool) -> None:
        if not failed and statement.lstrip().startswith("INSERT INTO inbox"):
            failed.append(statement)
            orig = _DriverError(
                'duplicate key value violates unique constraint "inbox_pkey"\n'
                "DETAIL:  Key (consumer, message_id)=(g-echo, zaak Sanne de Vries) already exists."
            )
            raise sa_exc.IntegrityError(statement, None, orig)

    event.listen(store.engine.sync_engine, "before_cursor_execute", before)
    return failed


async def test_a_batch_whose_transaction_fails_is_read_again_not_committed_past(
    kafka: EmbeddedKafka, db_url: str, unique: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A batch failed for a reason the spine does not retry in place (there: the inbox's key) and
    left without its partitions rewound; its consumer's position was past it, and the next batch's
    ack committed that position: the failed batch's records never took effect. And FastStream
    logged the driver's error as it came, with the DETAIL line that holds the message id."""
    caplog.set_level(logging.WARNING)
    settings = make_settings(kafka, db_url, unique)
    first = [Envelope(type="Test", payload={"n": n}) for n in range(5)]
    later = [Envelope(type="Test", payload={"n": n}) for n in range(5, 10)]
    with structlog.testing.capture_logs() as logged:
        async with running_hub(settings, echo_component) as hub:
            assert hub.store is not None
            failed = _fail_the_first_inbox_write(hub.store)
            topic = hub.topic(IN.name)
            # one youth: one partition, and an order to keep
            await produce(kafka.bootstrap, topic, [(b"youth-a", e.to_bytes(), e.headers()) for e in first])
            await wait_for(lambda: failed, timeout_s=20)
            await produce(kafka.bootstrap, topic, [(b"youth-a", e.to_bytes(), e.headers()) for e in later])

            async def all_ten() -> bool:
                assert hub.store is not None
                return len(await _effects(hub.store)) >= 10

            await wait_for(all_ten, timeout_s=30)
            effects = await _effects(hub.store)
    assert effects == list(range(10))  # once each, the failed batch before the later records
    assert "Sanne" not in caplog.text
    assert "Sanne" not in repr(logged)
    assert "inbox_pkey" in caplog.text  # what failed is said
