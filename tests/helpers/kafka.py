"""Small Kafka helpers for tests: produce, and read a topic until a count or a deadline."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Sequence
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition


class Latin1Key(str):
    """A header key as a partner's system writes it in Latin-1, where Kafka says UTF-8. aiokafka's
    compiled writer refuses it; its pure-Python one (`write_keys_as_given`) encodes it through here."""

    def encode(self, encoding: str = "utf-8", errors: str = "strict") -> bytes:
        return str(self).encode("latin-1")


def write_keys_as_given(monkeypatch: Any) -> None:
    """Make this process's aiokafka producers write header keys through their own `encode`."""
    import aiokafka.producer.message_accumulator as accumulator
    import aiokafka.producer.producer as producer
    from aiokafka.record.default_records import _DefaultRecordBatchBuilderPy

    for module in (accumulator, producer):
        monkeypatch.setattr(module, "DefaultRecordBatchBuilder", _DefaultRecordBatchBuilderPy)


async def produce(
    bootstrap: str, topic: str, records: Sequence[tuple[bytes | None, bytes, Sequence[tuple[str, bytes]]]]
) -> None:
    """Send (key, value, headers) records and wait for the acks."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        futures = [
            await producer.send(topic, value, key=key, headers=list(headers))
            for key, value, headers in records
        ]
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


async def read_topic(
    bootstrap: str, topic: str, *, expect: int, timeout_s: float = 20.0, settle_s: float = 0.0
) -> list[ConsumerRecord[Any, Any]]:
    """Every record of `topic` (all partitions, from the start) once `expect` arrived or the deadline passed.

    With `settle_s`, keep reading that long after reaching `expect`, to catch duplicates.
    """
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, enable_auto_commit=False, auto_offset_reset="earliest"
    )
    await consumer.start()
    try:
        partitions = consumer.partitions_for_topic(topic)
        deadline = time.monotonic() + timeout_s
        while not partitions and time.monotonic() < deadline:
            await consumer._client.force_metadata_update()
            partitions = consumer.partitions_for_topic(topic)
            await asyncio.sleep(0.05)
        tps = [TopicPartition(topic, p) for p in sorted(partitions or [])]
        consumer.assign(tps)
        for tp in tps:
            consumer.seek(tp, 0)
        out: list[ConsumerRecord[Any, Any]] = []
        settle_until: float | None = None
        while time.monotonic() < deadline:
            batch = await consumer.getmany(timeout_ms=100)
            for recs in batch.values():
                out.extend(recs)
            if len(out) >= expect:
                if settle_until is None:
                    settle_until = time.monotonic() + settle_s
                if time.monotonic() >= settle_until:
                    break
        return out
    finally:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(consumer.stop(), 5)


def headers_of(record: ConsumerRecord[Any, Any]) -> dict[str, str]:
    """A record's headers as a dict of text."""
    return {k: bytes(v).decode() for k, v in record.headers or ()}


async def wait_for(predicate: Any, *, timeout_s: float = 20.0, interval_s: float = 0.05) -> Any:
    """Poll an async or sync predicate until it returns something truthy; fail at the deadline."""
    deadline = time.monotonic() + timeout_s
    last: Any = None
    while time.monotonic() < deadline:
        last = predicate()
        if asyncio.iscoroutine(last):
            last = await last
        if last:
            return last
        await asyncio.sleep(interval_s)
    raise AssertionError(f"condition not met within {timeout_s}s (last value {last!r})")


async def read_all(bootstrap: str, topic: str, *, timeout_s: float = 30.0) -> list[ConsumerRecord[Any, Any]]:
    """Every record the topic holds now: read each partition up to its high watermark."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        await consumer._client.force_metadata_update()
        tps = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or [])]
        # a topic that is not there holds nothing: "the DLQ is empty" of a misnamed one checks nothing
        assert tps, f"topic {topic!r} does not exist"
        consumer.assign(tps)
        for tp in tps:
            consumer.seek(tp, 0)
        out: list[ConsumerRecord[Any, Any]] = []
        deadline = time.monotonic() + timeout_s
        pending = set(tps)
        while pending and time.monotonic() < deadline:
            batch = await consumer.getmany(*pending, timeout_ms=200)
            for recs in batch.values():
                out.extend(recs)
            for tp in list(pending):
                end = consumer.highwater(tp)  # tansu's end_offsets() is wrong; the fetch's watermark is not
                if end is not None and await consumer.position(tp) >= end:
                    pending.discard(tp)
        if pending:
            raise AssertionError(
                f"{topic}: partitions {sorted(p.partition for p in pending)} not read to the end"
            )
        return out
    finally:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(consumer.stop(), 5)
