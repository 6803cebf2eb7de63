"""Receivers' delivery settings: one reader per type's topic, also when two changes come at once."""

from __future__ import annotations

import asyncio

import pytest

from hub.handovers.receivers import ReceiverDelivery, TopicTaken, kafka_readers, set_receiver_delivery
from hub.store import Store
from schemas.handover import ReceiverType

pytestmark = pytest.mark.integration


async def test_two_organisations_taking_a_topic_at_once_leave_one_reader(store: Store) -> None:
    first = ReceiverDelivery("Jongerenwerk West", ReceiverType.JONGERENWERK, "kafka")
    second = ReceiverDelivery("Jongerenwerk Oost", ReceiverType.JONGERENWERK, "kafka")
    started = asyncio.Event()

    async def take_second() -> None:
        started.set()
        async with store.transaction() as session:
            await set_receiver_delivery(session, second)

    async with store.transaction() as session:
        await set_receiver_delivery(session, first)
        racer = asyncio.create_task(take_second())
        await started.wait()
        await asyncio.sleep(0.5)  # the second looks for readers before the first commits
    with pytest.raises(TopicTaken, match="already read by 'Jongerenwerk West'"):
        await racer
    async with store.read() as session:
        assert await kafka_readers(session, ReceiverType.JONGERENWERK) == ["Jongerenwerk West"]
