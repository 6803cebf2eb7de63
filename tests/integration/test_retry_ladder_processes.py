"""The retry ladder run by two hub processes on one PostgreSQL database: each message tried by one of
them, and the other does not spin while a delivery is in the first one's hands."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiokafka import ConsumerRecord
from sqlalchemy import event, insert

from hub.metrics import Metrics
from hub.retry import Delivery, RetryLadder, RetryPolicy
from hub.retry.tables import parked
from hub.store import Store
from schemas.envelope import Envelope
from tests.conftest import create_pg_database, drop_pg_database, require_pg

pytestmark = pytest.mark.integration
POLICY = RetryPolicy(in_place_attempts=1, schedule_s=(1,), jitter=0.0)
WINDOW_S = 0.4  # how long the second process is watched while the first one's call is in hand
MAX_STATEMENTS = 20  # one round and a look at what is due next; a spinning process makes hundreds


@dataclass
class HeldPartner:
    """A partner whose call for the message named "held" lasts until the test releases it."""

    delivered: list[str] = field(default_factory=list)
    calls: dict[str, int] = field(default_factory=dict)
    calling: asyncio.Event = field(default_factory=asyncio.Event)
    release: asyncio.Event = field(default_factory=asyncio.Event)
    arrived: asyncio.Event = field(default_factory=asyncio.Event)
    expected: int = 0

    async def deliver(self, message: Envelope) -> None:
        name = str(message.payload["name"])
        self.calls[name] = self.calls.get(name, 0) + 1
        if name == "held":
            self.calling.set()
            await self.release.wait()
        self.delivered.append(name)
        if len(self.delivered) >= self.expected:
            self.arrived.set()


@pytest.fixture
async def pg_url(unique: str) -> AsyncIterator[str]:
    await require_pg()
    name = f"kh_{unique}"
    yield await create_pg_database(name)
    await drop_pg_database(name)


@contextlib.asynccontextmanager
async def _processes(url: str, partner: HeldPartner) -> AsyncIterator[tuple[RetryLadder, RetryLadder]]:
    """Two hub processes' ladders: one store (connection pool) and one metrics registry each."""
    stores = [Store(url), Store(url)]
    await stores[0].migrate()
    ladders = [
        RetryLadder(
            store,
            Metrics(),
            name="t",
            topic="t",
            retry_topic="t.retry",
            dlq_topic="t.dlq",
            partner="p",
            delivery=Delivery(deliver=partner.deliver),
            policy=POLICY,
        )
        for store in stores
    ]
    try:
        yield ladders[0], ladders[1]
    finally:
        partner.release.set()
        for store in stores:
            await store.close()


async def _queue(ladder: RetryLadder, name: str, key: str) -> None:
    message = Envelope(type="Cmd", payload={"name": name})
    value = message.to_bytes()
    record: ConsumerRecord[Any, Any] = ConsumerRecord(
        "t", 0, 0, 0, 0, key.encode(), value, None, len(key), len(value), []
    )
    async with ladder.store.transaction() as session:
        await session.execute(insert(parked).values(ladder._row(message, key, record, due_at=ladder.clock())))


@contextlib.asynccontextmanager
async def _running(ladder: RetryLadder, idle_s: float = 1.0) -> AsyncIterator[None]:
    task = asyncio.create_task(ladder.run(idle_s))
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def test_a_process_does_not_spin_on_a_message_another_process_is_delivering(pg_url: str) -> None:
    partner = HeldPartner(expected=1)
    async with _processes(pg_url, partner) as (first, second):
        await _queue(first, "held", "k1")
        in_hand = asyncio.create_task(first.step())
        await asyncio.wait_for(partner.calling.wait(), 20)

        statements, busy = 0, asyncio.Event()

        def count(*_: object) -> None:
            nonlocal statements
            statements += 1
            if statements >= MAX_STATEMENTS:
                busy.set()

        event.listen(second.store.engine.sync_engine, "before_cursor_execute", count)
        async with _running(second):
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(busy.wait(), WINDOW_S)
        event.remove(second.store.engine.sync_engine, "before_cursor_execute", count)
        assert statements < MAX_STATEMENTS, f"{statements} statements in {WINDOW_S} s: the process spins"

        partner.release.set()
        assert await asyncio.wait_for(in_hand, 20) == 1
        assert partner.calls == {"held": 1} and await first.parked_count() == 0


async def test_a_process_that_delivers_goes_on_at_once_beside_a_message_in_other_hands(pg_url: str) -> None:
    partner = HeldPartner(expected=2)
    async with _processes(pg_url, partner) as (first, second):
        await _queue(first, "held", "k1")
        in_hand = asyncio.create_task(first.step())
        await asyncio.wait_for(partner.calling.wait(), 20)

        # a long idle wait: only the wake and going straight on after a delivery can make it in time
        async with _running(second, idle_s=30):
            await _queue(second, "b1", "k2")
            await _queue(second, "b2", "k2")
            second.wake()
            await asyncio.wait_for(partner.arrived.wait(), 15)  # well under the idle 30 s
        assert partner.delivered == ["b1", "b2"]  # in order for their key, k1's call still in hand

        partner.release.set()
        assert await asyncio.wait_for(in_hand, 20) == 1
        assert partner.calls == {"held": 1, "b1": 1, "b2": 1} and await first.parked_count() == 0
