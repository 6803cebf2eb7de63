"""Receivers' delivery settings: one reader per type's topic, also when two changes come at once."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import text

from hub.handovers.receivers import ReceiverDelivery, TopicTaken, kafka_readers, set_receiver_delivery
from hub.store import Store
from schemas.handover import ReceiverType
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
