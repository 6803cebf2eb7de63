"""The raw baseline: a plain aiokafka consume -> produce relay of the same records on the same broker."""

from __future__ import annotations

import asyncio
import contextlib

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

# Records a poll takes: as many as the benchmarked hub's consumers (bench.run.hub_settings)
BATCH = 1000


class RawRelay:
    """Consumes `source` in a group, produces each value to `target` (acks=all), commits after the acks."""

    def __init__(self, bootstrap: str, source: str, target: str, group: str) -> None:
        self.bootstrap, self.source, self.target, self.group = bootstrap, source, target, group
        self.task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Begin relaying in the background."""
        self.consumer = AIOKafkaConsumer(
            self.source,
            bootstrap_servers=self.bootstrap,
            group_id=self.group,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            session_timeout_ms=2000,
            heartbeat_interval_ms=500,
            max_poll_records=BATCH,
        )
        self.producer = AIOKafkaProducer(
            bootstrap_servers=self.bootstrap, acks="all", linger_ms=2, max_batch_size=256 * 1024
        )
        await self.producer.start()
        await self.consumer.start()
        self.task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        while True:
            batch = await self.consumer.getmany(timeout_ms=100, max_records=BATCH)
            futures = [
                await self.producer.send(self.target, r.value, key=r.key)
                for records in batch.values()
                for r in records
            ]
            if futures:
                await asyncio.gather(*futures)
                await self.consumer.commit()

    async def stop(self) -> None:
        """Stop relaying."""
        if self.task:
            self.task.cancel()
            with contextlib.suppress(BaseException):
                await self.task
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.consumer.stop(), 5)
        await self.producer.stop()
