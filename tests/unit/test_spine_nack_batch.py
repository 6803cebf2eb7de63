"""Handing a failed batch back: every partition still ours is rewound, also after a rebalance."""

from __future__ import annotations

from typing import Any

from aiokafka import ConsumerRecord, TopicPartition
from aiokafka.errors import IllegalStateError
from faststream.kafka.message import KafkaAckableMessage

from hub.spine.consumer import nack_batch


class _Consumer:
    """aiokafka's consumer as far as a seek goes: it refuses a partition it no longer holds."""

    def __init__(self, *assigned: int) -> None:
        self.assigned = set(assigned)
        self.positions: dict[int, int] = {}

    def seek(self, partition: TopicPartition, offset: int) -> None:
        if partition.partition not in self.assigned:
            raise IllegalStateError(f"No current assignment for partition {partition}")
        self.positions[partition.partition] = offset


def _record(partition: int, offset: int) -> ConsumerRecord[Any, Any]:
    return ConsumerRecord(
        topic="t.in",
        partition=partition,
        offset=offset,
        timestamp=0,
        timestamp_type=0,
        key=b"k",
        value=b"{}",
        checksum=None,
        serialized_key_size=1,
        serialized_value_size=2,
        headers=(),
    )


async def test_a_batch_handed_back_after_a_rebalance_rewinds_the_partitions_still_held() -> None:
    """A rebalance took partition 1 away while its batch was handled: FastStream's nack stopped at
    that partition, and 0 and 2, still this consumer's, stayed past the batch for the next ack to
    commit: their records in it were never handled."""
    records = (_record(1, 40), _record(0, 7), _record(0, 8), _record(2, 3), _record(2, 4))
    consumer = _Consumer(0, 2)
    msg = KafkaAckableMessage(raw_message=records, body=b"", consumer=consumer)
    await nack_batch(msg, records)
    assert consumer.positions == {0: 7, 2: 3}  # each at the batch's first record; 1 is its new owner's


async def test_a_batch_handed_back_rewinds_every_partition_it_spans() -> None:
    records = (_record(3, 12), _record(0, 7), _record(3, 13))
    consumer = _Consumer(0, 1, 2, 3)
    msg = KafkaAckableMessage(raw_message=records, body=b"", consumer=consumer)
    await nack_batch(msg, records)
    assert consumer.positions == {3: 12, 0: 7}
