"""For the poison tests: produce records and know where they landed, and which topics a running hub
consumes (read from its /metrics, which lists every group and topic its spine subscribed)."""

from __future__ import annotations

import asyncio
import re
from collections import defaultdict

import httpx
from aiokafka import AIOKafkaProducer

Record = tuple[bytes | None, bytes, list[tuple[str, bytes]]]
_LAG = re.compile(r"^kafka_consumergroup_lag\{(?P<labels>[^}]*)\}", re.MULTILINE)
_LABEL = re.compile(r'(\w+)="([^"]*)"')


async def produce_located(bootstrap: str, topic: str, records: list[Record]) -> list[tuple[int, int]]:
    """Send (key, value, headers) records, wait for the acks; the (partition, offset) of each, in order."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        futures = [
            await producer.send(topic, value, key=key, headers=headers) for key, value, headers in records
        ]
        return [(m.partition, m.offset) for m in await asyncio.gather(*futures)]
    finally:
        await producer.stop()


async def consumed_by(hub_url: str) -> dict[str, set[str]]:
    """Topic -> the consumer groups a running hub reads it with, from its /metrics
    (`kafka_consumergroup_lag{consumergroup,topic,partition}`, built from the spine's subscriptions)."""
    async with httpx.AsyncClient(timeout=30) as client:
        answer = await client.get(hub_url + "/metrics")
    answer.raise_for_status()
    out: dict[str, set[str]] = defaultdict(set)
    for match in _LAG.finditer(answer.text):
        labels = dict(_LABEL.findall(match["labels"]))
        out[labels["topic"]].add(labels["consumergroup"])
    return dict(out)
