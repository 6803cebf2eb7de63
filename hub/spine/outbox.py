"""The outbox: messages written with their state change, published by a relay with acks=all."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.producer.message_accumulator import BatchBuilder
from aiokafka.record.default_records import DefaultRecordBatchBuilder
from sqlalchemy import Row, Select, and_, bindparam, delete, exists, func, insert, or_, select, text, update
from sqlalchemy.ext.asyncio import AsyncSession

from hub.clock import aware
from hub.kafka import KeyPartitioner
from hub.logging import get_logger
from hub.spine.dlq import safe_error_message
from hub.store import Store
from hub.store.tables import inbox, outbox, outbox_parked
from schemas.envelope import H_MESSAGE_ID, Envelope, utcnow

log = get_logger(__name__)
RELAY_LOCK = 7_301_001  # PostgreSQL advisory lock id of the outbox relay
PARKED_TERM = timedelta(days=30)  # as long as a dead letter is kept (hub/topics.py)
INBOX_PURGE_CHUNK = 5_000  # inbox entries deleted a transaction


def _outbox_row(
    topic: str, message: Envelope | bytes, key: str | None, headers: Mapping[str, str] | None
) -> dict[str, Any]:
    if isinstance(message, Envelope):
        value = message.to_bytes()
        all_headers = message.header_map()
    else:
        value, all_headers = message, {}
    all_headers.update(headers or {})
    return {
        "topic": topic,
        "key": key,
        "value": value,
        "headers": all_headers,
        "message_id": _short(all_headers.get(H_MESSAGE_ID)),
        "created_at": utcnow(),
    }


def _short(message_id: str | None) -> str | None:
    """The id for the outbox's message_id column (operators look rows up by it). A dead letter keeps
    an unusable id header (over 200 characters, or with a NUL that PostgreSQL refuses in text) in its
    headers, not in the column."""
    if message_id is None or len(message_id) > 200 or not message_id.isprintable():
        return None
    return message_id


async def add_to_outbox(
    session: AsyncSession,
    topic: str,
    message: Envelope | bytes,
    *,
    key: str | None,
    headers: Mapping[str, str] | None = None,
) -> None:
    """Queue a message in the caller's transaction; it is published only if that commits."""
    await session.execute(insert(outbox).values(**_outbox_row(topic, message, key, headers)))


_INSERT_OUTBOX = insert(outbox)  # built once, with its cache key


async def add_many_to_outbox(
    session: AsyncSession, messages: Sequence[tuple[str, Envelope | bytes, str | None]]
) -> None:
    """`add_to_outbox` for many (topic, message, key), in order, in one statement."""
    if messages:
        await session.execute(_INSERT_OUTBOX, [_outbox_row(t, m, k, None) for t, m, k in messages])


@dataclass(frozen=True)
class OutboxState:
    """What waits in the outbox, and what the relay parked."""

    waiting: int
    oldest_seconds: float  # age of the oldest row waiting; 0 when none waits
    parked: int

    def as_json(self) -> dict[str, Any]:
        """The shape the dashboard and the operator API give."""
        return {"waiting": self.waiting, "oldest_seconds": self.oldest_seconds, "parked": self.parked}


async def outbox_state(store: Store) -> OutboxState:
    """Rows waiting to be published (and the oldest one's age), and rows parked."""
    async with store.connect() as conn:
        waiting, oldest = (
            await conn.execute(
                select(func.count(), func.min(outbox.c.created_at)).where(outbox.c.sent_at.is_(None))
            )
        ).one()
        parked = (
            await conn.execute(
                select(func.count()).select_from(outbox_parked).where(outbox_parked.c.resolved.is_(None))
            )
        ).scalar_one()
    age = max((utcnow() - aware(oldest)).total_seconds(), 0.0) if oldest is not None else 0.0
    return OutboxState(int(waiting), round(age, 3), int(parked))


@dataclass(slots=True)
class _Record:
    """An outbox row as the record it goes out as."""

    row: Row[Any]
    key: bytes | None
    headers: list[tuple[str, bytes]]
    size: int  # an upper bound of its size in a record batch of its own


class Relay:
    """Publishes outbox rows in id order, marks them sent, purges sent rows after `keep`.

    After a publish of less than a full batch the relay waits `gather_s` before it looks again:
    under load the transactions of that moment (a group commit of HTTP requests, a consumer's batch)
    then go out in one publish and one "sent" write, which on SQLite shares the single writer with
    them, instead of one each. A quiet hub publishes a commit at once.
    """

    def __init__(
        self,
        store: Store,
        producer: AIOKafkaProducer,
        *,
        batch: int = 500,
        poll_s: float = 0.5,
        keep: timedelta = timedelta(hours=1),
        gather_s: float = 0.0,
        max_message_bytes: int = 1_048_588,
        mark_every_s: float = 0.1,
        inbox_keep: timedelta | None = None,
        watched: Mapping[str, str] | None = None,
        watched_keep: timedelta = timedelta(days=7),
    ) -> None:
        self.store, self.producer, self.batch, self.poll_s, self.keep = store, producer, batch, poll_s, keep
        self.gather_s, self.max_message_bytes, self.inbox_keep = gather_s, max_message_bytes, inbox_keep
        # topic -> the consumer group that takes it in: a sent row of such a topic is kept until that
        # group has taken its message in (its inbox holds the id), `watched_keep` (the topic's
        # retention) at most; the hub asks them whether a message is still on its way
        # (hub.signals.waiting)
        self.watched, self.watched_keep = dict(watched or {}), watched_keep
        self.parked = 0
        self.last_published_at: datetime | None = None
        self.partitioner = KeyPartitioner()  # as the producer's own (make_producer)
        self._wake = asyncio.Event()
        self._stopping = False
        self.published = 0
        self.last_error: str | None = None
        # SQLite: the highest id published and not yet marked sent, how many rows that is, and the
        # task marking them. At most `unmarked_max` rows wait for their mark before publishing waits.
        self._unmarked: int | None = None
        self._unmarked_n = 0
        self._marker: asyncio.Task[None] | None = None
        self.unmarked_max = 10 * batch
        self.mark_every_s = mark_every_s
        self._mark_now = asyncio.Event()
        # The reads of every round, built once (SQLAlchemy works out a cache key per new statement).
        self._read_locked = self._pending().with_for_update(skip_locked=True)
        self._read = self._pending()
        self._read_after = self._pending().where(outbox.c.id > bindparam("after"))

    def stop(self) -> None:
        """Finish the batch in hand, then return from `run()`: a clean stop publishes nothing twice."""
        self._stopping = True
        self._wake.set()

    def wake(self) -> None:
        """Something was committed to the outbox: publish it now rather than at the next poll."""
        self._wake.set()

    async def publish_once(self) -> int:
        """Publish one batch of pending rows and mark them sent; return how many were sent."""
        if self.store.dialect != "postgresql":
            sent = await self._publish_ahead()
            await self._marks_done()
            return sent
        return await self._publish_locked()

    async def _publish_locked(self) -> int:
        async with self.store.transaction() as session:
            # One relay publishes at a time across all hub processes: per-key order holds. Row and
            # advisory locks do not stop other writers on PostgreSQL, so they may span the publish.
            got = await session.execute(text("SELECT pg_try_advisory_xact_lock(:k)"), {"k": RELAY_LOCK})
            if not got.scalar():
                return 0
            # Read the pending rows by walking ix_outbox_pending in id order: that walk clears the
            # entries of rows marked sent since, where the bitmap scan the planner prefers on its
            # estimates visits all of them again, every batch (migration 0015).
            await session.execute(text("SET LOCAL enable_bitmapscan = off"))
            rows = (await session.execute(self._read_locked)).all()
            if not rows:
                return 0
            out, oversize = self._records(rows)
            if oversize:
                await self._park(session, oversize)
            if out:
                await self._send(out)
                await session.execute(
                    update(outbox).where(outbox.c.id.in_([r.row.id for r in out])).values(sent_at=utcnow())
                )
        self._parked(oversize)
        self._published(len(out))
        return len(rows)

    async def _publish_ahead(self) -> int:
        """SQLite: publish the next batch; its "sent" mark is written by a task of its own.

        A write transaction locks the whole file, so none is held while the broker is slow or away.
        Under load every component queues for that one writer, and a relay that waited its turn to
        mark each batch before it read the next got out one batch a queue round: 50 rows a second
        with the intake, routing, Verwijsindex and mail consumers all busy. Now the mark waits its
        turn while the next batches are read and published, and marks all of them at once.

        The marks are also gathered: at most one "sent" write each `mark_every_s` (0.1 s), so
        the relay does not take the writer between every two consumer batches (at 1,000 referrals
        a second: 479-519 write transactions in 10 s instead of 729-754, the time a consumer batch
        waited for the writer 1.7-1.9 ms at the median instead of 5.7, latency p50 73-78 ms instead
        of 78-83, p99 152-162 ms instead of 205-297). A stop or `publish_once` marks at once.

        Rows already published are skipped by id: on SQLite transactions commit one at a time, so
        ids commit in order and every unsent row at or below the highest id published went out.
        A crash before the mark publishes those rows again, as a crash between publish and mark
        always did; consumers drop the repeat by its message id.
        """
        await self._check_marker()
        if self._unmarked_n >= self.unmarked_max:
            await self._marks_done()  # the marks are far behind: let them catch up first
        async with self.store.connect() as conn:
            if self._unmarked is None:
                rows = (await conn.execute(self._read)).all()
            else:
                rows = (await conn.execute(self._read_after, {"after": self._unmarked})).all()
        if not rows:
            return 0
        out, oversize = self._records(rows)
        if oversize:  # moved out of the outbox before anything is marked sent
            async with self.store.transaction() as session:
                await self._park(session, oversize)
            self._parked(oversize)
        if out:
            await self._send(out)
            self._unmarked, self._unmarked_n = out[-1].row.id, self._unmarked_n + len(out)
            self._published(len(out))
            self._start_marker()
        return len(rows)

    def _start_marker(self) -> None:
        if self._unmarked is not None and (self._marker is None or self._marker.done()):
            self._marker = asyncio.create_task(self._mark(), name="outbox-relay-mark")

    async def _mark(self) -> None:
        """Mark every published row sent, in as few writes as the writer queue allows."""
        while self._unmarked is not None:
            if self.mark_every_s > 0 and not self._mark_now.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._mark_now.wait(), self.mark_every_s)
            high, n = self._unmarked, self._unmarked_n
            async with self.store.transaction() as session:
                await session.execute(
                    update(outbox)
                    .where(outbox.c.sent_at.is_(None), outbox.c.id <= high)
                    .values(sent_at=utcnow())
                )
            self._unmarked_n -= n
            if self._unmarked == high:
                self._unmarked = None

    async def _check_marker(self) -> None:
        """Raise a failed mark's error (the relay backs off and tries again); restart marking."""
        marker = self._marker
        if marker is not None and marker.done():
            self._marker = None
            if not marker.cancelled() and (exc := marker.exception()) is not None:
                raise exc
        self._start_marker()

    async def _marks_done(self) -> None:
        """Wait until every published row is marked sent; raise the mark's error if it failed."""
        await self._check_marker()
        if self._marker is not None:
            self._mark_now.set()
            try:
                # Not cancelled with this caller. Another caller may meanwhile have taken a failed
                # mark's error and started marking again: wait for whichever marker is current.
                while (marker := self._marker) is not None and not marker.done():
                    await asyncio.wait([marker])
            finally:
                self._mark_now.clear()  # also when the mark failed: the next ones gather again
            await self._check_marker()  # its error is raised here once, not again to the next caller

    def _pending(self) -> Select[Any]:
        return (
            select(
                outbox.c.id,
                outbox.c.topic,
                outbox.c.key,
                outbox.c.value,
                outbox.c.headers,
                outbox.c.created_at,
            )
            .where(outbox.c.sent_at.is_(None))
            .order_by(outbox.c.id)
            .limit(self.batch)
        )

    def _published(self, n: int) -> None:
        if n:
            self.published += n
            self.last_published_at = utcnow()

    def _records(self, rows: Sequence[Row[Any]]) -> tuple[list[_Record], list[_Record]]:
        """The rows as records, and apart those larger than the brokers take."""
        out: list[_Record] = []
        oversize: list[_Record] = []
        for r in rows:
            key = r.key.encode() if r.key is not None else None
            headers = [(k, str(v).encode()) for k, v in (r.headers or {}).items()]
            size = DefaultRecordBatchBuilder.estimate_size_in_bytes(key, r.value, headers)
            (oversize if size > self.max_message_bytes else out).append(_Record(r, key, headers, size))
        return out, oversize

    async def _park(self, session: AsyncSession, records: Sequence[_Record]) -> None:
        """Move rows the brokers would refuse for good out of the outbox, for an operator (`ketenhub
        outbox`): retried, such a row would stop every row behind it."""
        now = utcnow()
        await session.execute(
            insert(outbox_parked),
            [
                {
                    "outbox_id": r.row.id,
                    "topic": r.row.topic,
                    "key": r.row.key,
                    "value": r.row.value,
                    "headers": r.row.headers,
                    "message_id": _short((r.row.headers or {}).get(H_MESSAGE_ID)),
                    "created_at": r.row.created_at,
                    "parked_at": now,
                    "size": r.size,
                    "reason": (
                        f"a record of {r.size:,} bytes, over the brokers' limit of"
                        f" {self.max_message_bytes:,} (kafka.max_message_bytes)"
                    ),
                }
                for r in records
            ],
        )
        await session.execute(delete(outbox).where(outbox.c.id.in_([r.row.id for r in records])))

    def _parked(self, records: Sequence[_Record]) -> None:
        """Count and log rows parked, once their transaction committed."""
        self.parked += len(records)
        for r in records:
            log.error(
                "outbox row parked: larger than the brokers take; release or discard it with"
                " `ketenhub outbox`",
                outbox_id=r.row.id,
                topic=r.row.topic,
                size=r.size,
                limit=self.max_message_bytes,
            )

    async def _send(self, records: Sequence[_Record]) -> None:
        """Publish `rows` in order and wait for every ack (acks=all).

        The rows go out as one record batch per partition rather than message by message: the
        producer's `send` makes a future, a partition lookup and an accumulator append for every
        message, about half its cost. A partition's rows stay in id order within its batch. Rows a
        batch has no room for go in the partition's next batch, sent only once every batch before it
        is acked: the producer does not retry a batch that expired, so one queued behind it would
        land first, and the rows published again after the failure would put a youth's later
        message before an earlier one. The partition is the producer's own choice (`KeyPartitioner`).
        """
        chains: dict[tuple[str, int], list[BatchBuilder]] = {}
        by_topic: dict[str, list[_Record]] = {}
        for r in records:
            by_topic.setdefault(r.row.topic, []).append(r)
        for topic, its_records in by_topic.items():
            partitions = sorted(await self.producer.partitions_for(topic))
            available = sorted(self.producer.client.cluster.available_partitions_for_topic(topic) or ())
            for r in its_records:
                key, value, headers = r.key, r.row.value, r.headers
                partition = self.partitioner(key, partitions, available or partitions)
                chain = chains.setdefault((topic, partition), [])
                if (
                    not chain
                    or chain[-1].append(key=key, value=value, timestamp=None, headers=headers) is None
                ):
                    # a fresh batch always takes its first record, whatever its size (up to the
                    # brokers' limit: larger rows were parked)
                    chain.append(self.producer.create_batch())
                    chain[-1].append(key=key, value=value, timestamp=None, headers=headers)
        wave = 0
        while sends := [(tp, chain[wave]) for tp, chain in chains.items() if len(chain) > wave]:
            futures = [await self.producer.send_batch(b, topic, partition=p) for (topic, p), b in sends]
            await asyncio.gather(*futures)
            wave += 1

    async def purge_sent(self) -> None:
        """Sent rows hold personal data: keep them only as long as operators need them. A parked row
        is kept as long as a dead letter (30 days): the alert on it fires all that time. An inbox
        entry is kept while a topic may still deliver its message again (`inbox_keep`)."""
        now = utcnow()
        past = outbox.c.sent_at < now - self.keep
        held = [
            and_(
                outbox.c.topic == topic,
                outbox.c.sent_at >= now - self.watched_keep,
                outbox.c.message_id.is_not(None),  # no inbox could hold it
                ~exists().where(inbox.c.consumer == group, inbox.c.message_id == outbox.c.message_id),
            )
            for topic, group in self.watched.items()
        ]
        async with self.store.transaction() as session:
            await session.execute(delete(outbox).where(and_(past, ~or_(*held)) if held else past))
            gone = await session.execute(
                delete(outbox_parked).where(outbox_parked.c.parked_at < now - PARKED_TERM)
            )
        if (n := getattr(gone, "rowcount", 0)) > 0:
            log.warning("parked outbox rows past their term deleted", rows=n, term_days=30)
        if self.inbox_keep is not None:
            await self._purge_inbox(now - self.inbox_keep)

    async def _purge_inbox(self, before: datetime) -> None:
        """Inbox entries processed before `before`, a few thousand a transaction: the first purge of an
        inbox that grew for long would otherwise hold SQLite's one writer for as long as it takes."""
        while not self._stopping:
            async with self.store.transaction() as session:
                nth = (  # the time of the chunk's last entry; entries of one batch share their time
                    select(inbox.c.processed_at)
                    .where(inbox.c.processed_at < before)
                    .order_by(inbox.c.processed_at)
                    .offset(INBOX_PURGE_CHUNK - 1)
                    .limit(1)
                    .scalar_subquery()
                )
                bound = (await session.execute(select(nth))).scalar()
                if bound is None:  # fewer than a chunk left
                    await session.execute(delete(inbox).where(inbox.c.processed_at < before))
                    return
                await session.execute(delete(inbox).where(inbox.c.processed_at <= bound))

    async def run(self) -> None:
        """Publish until stopped or cancelled; broker or database trouble is retried with backoff."""
        try:
            await self._run()
            try:
                await self._marks_done()  # a clean stop leaves nothing to publish twice
            except Exception as exc:
                log.warning(
                    "outbox relay stopped before its last rows were marked sent; they go out again"
                    " after a restart",
                    error=f"{type(exc).__name__}: {safe_error_message(exc)}"[:300],
                )
        finally:
            marker = self._marker
            if marker is not None and not marker.done():
                marker.cancel()
            elif marker is not None and not marker.cancelled() and (failed := marker.exception()) is not None:
                log.warning(  # its error was not taken by a caller: say it once, here
                    "outbox relay's last sent mark failed; its rows go out again after a restart",
                    error=f"{type(failed).__name__}: {safe_error_message(failed)}"[:300],
                )

    async def _run(self) -> None:
        backoff, cycles = 0.1, 0
        while not self._stopping:
            try:
                sent = await (
                    self._publish_locked() if self.store.dialect == "postgresql" else self._publish_ahead()
                )
                self.last_error, backoff = None, 0.1
                cycles += 1
                if cycles % 1000 == 0:
                    await self.purge_sent()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                # shown to every operator, viewers too: never a value a statement carried
                self.last_error = f"{type(exc).__name__}: {safe_error_message(exc)}"[:300]
                log.warning("outbox relay failed; will retry", error=self.last_error, retry_in_s=backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)
                continue
            if self._stopping:
                continue
            if sent == 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), self.poll_s)
                self._wake.clear()
            elif sent < self.batch and self.gather_s > 0:
                await self._gather()

    async def _gather(self) -> None:
        """Wait `gather_s` for more commits; a stop cuts it short."""
        self._wake.clear()
        deadline = asyncio.get_running_loop().time() + self.gather_s
        while not self._stopping and (left := deadline - asyncio.get_running_loop().time()) > 0:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), left)
            self._wake.clear()

    async def pending(self) -> int:
        """How many rows wait to be published."""
        return (await outbox_state(self.store)).waiting
