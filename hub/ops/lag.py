"""Consumer lag measured from what the broker really holds (fetch high watermark), right on tansu and Kafka.

`end_offsets()` (ListOffsets LATEST) is wrong on tansu: it counts record batches, not records. The fetch
response's high watermark is right on both, so the probe assigns a group-less consumer to the partitions,
seeks each to the committed offset, fetches, and reads `highwater(tp)`; the record it fetched at the
committed offset gives the age of the oldest unprocessed message.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError

from hub.errors import DependencyDown
from hub.logging import get_logger

log = get_logger(__name__)


class BrokersUnavailable(DependencyDown):
    """The lag could not be measured: the brokers refused, failed or did not answer in time."""


@dataclass(frozen=True)
class PartitionLag:
    """One group on one partition: committed offset, log end, lag in messages and seconds."""

    group: str
    topic: str
    partition: int
    committed: int | None
    end: int
    lag: int
    lag_seconds: float
    # Records the group had not read that the broker deleted (retention): its committed offset is
    # behind the log's start. The lag counts from the start, so it did not show them; they are lost
    # to the hub, and must be asked of their sender again.
    expired: int = 0


def unread_expired(committed: int, start: int) -> int:
    """Records between a group's committed offset and the log's start, deleted before it read them
    (0 when it has not committed: it reads from the start, and what went before is not its own)."""
    return max(start - committed, 0) if committed >= 0 else 0


@dataclass(frozen=True)
class PartitionOffsets:
    """Log start and end (high watermark) of one partition."""

    topic: str
    partition: int
    start: int
    end: int


@dataclass
class LagSample:
    """Everything one probe saw, at one moment."""

    at: float
    lags: list[PartitionLag] = field(default_factory=list)
    offsets: dict[tuple[str, int], PartitionOffsets] = field(default_factory=dict)
    members: dict[str, int | None] = field(default_factory=dict)
    # records deleted unread, counted by this process since it started, per (group, topic, partition)
    expired_total: dict[tuple[str, str, int], int] = field(default_factory=dict)

    def group_lag(self, group: str) -> int:
        """Total lag of a group over its partitions."""
        return sum(p.lag for p in self.lags if p.group == group)

    def topic_size(self, topic: str) -> int:
        """Records currently held on a topic (end - start over its partitions)."""
        return sum(o.end - o.start for (t, _), o in self.offsets.items() if t == topic)


class LagProbe:
    """Measures committed offsets, log ends and record ages; one admin client and one consumer, reused."""

    def __init__(
        self, options: Mapping[str, Any], *, timeout_s: float = 5.0, describe_groups: bool = True
    ) -> None:
        self.options = dict(options)
        self.timeout_s = timeout_s
        # Group membership (DescribeGroups) is a hint for the verdict; tansu answers it with a
        # response aiokafka cannot decode, so the embedded broker is not asked, nor is a broker
        # that failed to answer once.
        self.describe_groups = describe_groups
        self._admin: AIOKafkaAdminClient | None = None
        self._consumer: AIOKafkaConsumer | None = None
        self._lock = asyncio.Lock()
        # Records deleted unread, counted once each: per group and partition, the committed offset
        # the last loss was seen at and how many lay behind the log's start then; and the running total.
        self._seen_expired: dict[tuple[str, str, int], tuple[int, int]] = {}
        self.expired_total: dict[tuple[str, str, int], int] = {}

    async def _clients(self) -> tuple[AIOKafkaAdminClient, AIOKafkaConsumer]:
        # Each client is kept before it starts: a start that fails or runs out of time has opened
        # connections too, and `close()` after the failure must stop them.
        if self._admin is None:
            self._admin = AIOKafkaAdminClient(**self.options)
            await self._admin.start()
        if self._consumer is None:
            self._consumer = AIOKafkaConsumer(
                **self.options,
                enable_auto_commit=False,
                fetch_max_wait_ms=20,
                max_partition_fetch_bytes=64 * 1024,
            )
            await self._consumer.start()
        return self._admin, self._consumer

    async def close(self) -> None:
        """Stop the clients (a stop that hangs on a dead broker is abandoned)."""
        consumer, admin = self._consumer, self._admin
        self._admin = self._consumer = None
        with contextlib.suppress(Exception):
            if consumer is not None:
                await asyncio.wait_for(consumer.stop(), 2)
        with contextlib.suppress(Exception):
            if admin is not None:
                await asyncio.wait_for(admin.close(), 2)

    async def measure(
        self,
        topics: Iterable[str],
        groups: Mapping[str, Iterable[str] | None],
        *,
        discover_prefix: str | None = None,
    ) -> LagSample:
        """Offsets of `topics`, and the lag of each group on its topics (None: any topic it committed on).

        With `discover_prefix`, every other group the brokers know by that prefix is measured too,
        on any topic it committed on. All of it, client start included, within `timeout_s`.
        """
        async with self._lock:
            try:
                return await asyncio.wait_for(
                    self._measure(list(topics), groups, discover_prefix), self.timeout_s
                )
            except (TimeoutError, KafkaError, OSError) as exc:
                await self.close()  # a broken client is rebuilt on the next probe
                if isinstance(exc, TimeoutError):
                    detail = f"the brokers did not answer within {self.timeout_s:g} s"
                else:
                    detail = str(exc) if type(exc).__name__ in str(exc) else f"{type(exc).__name__}: {exc}"
                raise BrokersUnavailable(f"lag not measured: {detail}"[:300]) from exc
            except BaseException:
                await self.close()
                raise

    async def _measure(
        self, topics: list[str], groups: Mapping[str, Iterable[str] | None], discover_prefix: str | None
    ) -> LagSample:
        admin, consumer = await self._clients()
        if discover_prefix is not None:
            groups = dict(groups)
            # Listing is a hint: a broker that cannot (or answers what the client cannot read) leaves
            # the known groups. A cancellation (the time limit) is no Exception and still ends it all.
            with contextlib.suppress(Exception):
                for listed in await admin.list_consumer_groups():
                    name = str(listed[0])
                    if name.startswith(discover_prefix) and name not in groups:
                        groups[name] = None  # a group of ours not run here: any topic it committed on
        cluster = await consumer._client.fetch_all_metadata()  # no auto-creation, unlike a topic request
        parts = {t: sorted(cluster.partitions_for_topic(t) or ()) for t in topics}
        tps = [TopicPartition(t, p) for t, ps in parts.items() for p in ps]
        committed: dict[tuple[str, TopicPartition], int] = {}
        for group, wanted in groups.items():
            group_tps = [tp for tp in tps if wanted is None or tp.topic in set(wanted)]
            if not group_tps:
                continue
            answer = await admin.list_consumer_group_offsets(group, partitions=group_tps)
            # A group reads a topic it was given, or one it committed on; a partition without a commit
            # is read from the start (the hub's consumers use auto_offset_reset=earliest).
            reads = {tp.topic for tp, meta in answer.items() if wanted is not None or meta.offset >= 0}
            for tp, meta in answer.items():
                if tp.topic in reads:
                    committed[(group, tp)] = meta.offset if meta.offset >= 0 else -1
        starts = await consumer.beginning_offsets(tps) if tps else {}
        # Rounds: each seeks every partition to one offset whose record age we need, then fetches.
        targets: dict[TopicPartition, set[int]] = {tp: {starts[tp]} for tp in tps}
        for (_, tp), off in committed.items():
            targets[tp].add(starts[tp] if off < 0 else max(off, starts[tp]))
        stamps: dict[tuple[TopicPartition, int], int | None] = {}
        ends: dict[TopicPartition, int] = {}
        while True:
            todo = {tp: min(offs) for tp, offs in targets.items()}
            if not todo:
                break
            await self._fetch_round(consumer, todo, stamps, ends)
            for tp, offs in targets.items():
                targets[tp] = {o for o in offs if (tp, o) not in stamps}
            targets = {tp: offs for tp, offs in targets.items() if offs}
        now = time.time()
        sample = LagSample(at=now)
        for tp in tps:
            sample.offsets[(tp.topic, tp.partition)] = PartitionOffsets(
                tp.topic, tp.partition, starts[tp], ends[tp]
            )
        for (group, tp), off in sorted(committed.items(), key=lambda i: (i[0][0], i[0][1])):
            position = starts[tp] if off < 0 else max(off, starts[tp])
            lag = max(ends[tp] - position, 0)
            ts = stamps.get((tp, position))
            age = max(now - ts / 1000, 0.0) if lag and ts is not None else 0.0
            expired = unread_expired(off, starts[tp])
            self.count_expired((group, tp.topic, tp.partition), off, expired)
            sample.lags.append(
                PartitionLag(
                    group, tp.topic, tp.partition, None if off < 0 else off, ends[tp], lag, age, expired
                )
            )
        sample.members = await self._members(admin, list(groups))
        sample.expired_total = dict(self.expired_total)
        return sample

    def count_expired(self, where: tuple[str, str, int], committed: int, expired: int) -> int:
        """Add to `expired_total` the records newly seen deleted unread at `where` (group, topic,
        partition), and log them; what a later sample sees again at the same committed offset is not
        counted twice. A snapshot alone went back to 0 once the group read on: the loss was gone from
        the figures within seconds of a restart."""
        if not expired:
            return 0
        at, seen = self._seen_expired.get(where, (committed, 0))
        new = expired - seen if at == committed else expired  # a new offset: records not counted yet
        if new <= 0:
            return 0
        self._seen_expired[where] = (committed, expired)
        self.expired_total[where] = self.expired_total.get(where, 0) + new
        group, topic, partition = where
        log.error(
            "records expired unread: the broker deleted them before the group read them",
            group=group, topic=topic, partition=partition, records=new,
        )  # fmt: skip
        return new

    async def _members(self, admin: AIOKafkaAdminClient, groups: list[str]) -> dict[str, int | None]:
        out: dict[str, int | None] = dict.fromkeys(groups)
        if not groups or not self.describe_groups:
            return out
        try:
            for response in await admin.describe_consumer_groups(groups):
                for g in response.groups:
                    if g[0] == 0:
                        out[str(g[1])] = len(g[5])
        except Exception:  # liveness is a hint for the verdict, not a must
            self.describe_groups = False
        return out

    async def _fetch_round(
        self,
        consumer: AIOKafkaConsumer,
        todo: dict[TopicPartition, int],
        stamps: dict[tuple[TopicPartition, int], int | None],
        ends: dict[TopicPartition, int],
    ) -> None:
        consumer.assign(list(todo))
        for tp, offset in todo.items():
            consumer.seek(tp, offset)
        pending = dict(todo)
        while pending:
            batch = await consumer.getmany(*pending, timeout_ms=200)
            for tp, records in batch.items():
                if tp in pending and records:
                    stamps[(tp, pending[tp])] = records[0].timestamp
            for tp in list(pending):
                hw = consumer.highwater(tp)
                if hw is None:
                    continue
                ends[tp] = hw
                if (tp, pending[tp]) in stamps or pending[tp] >= hw:
                    stamps.setdefault((tp, pending[tp]), None)
                    del pending[tp]
