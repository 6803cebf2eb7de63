"""Consumers on the spine: effects and inbox in one transaction, offsets committed after it."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

import structlog
from aiokafka import ConsumerRecord, TopicPartition
from aiokafka.errors import IllegalStateError
from faststream import AckPolicy
from faststream.kafka import KafkaBroker
from faststream.kafka.annotations import KafkaMessage
from sqlalchemy.ext.asyncio import AsyncSession

from hub.audit import AuditEntry, write_audit
from hub.errors import TransientError
from hub.logging import get_logger
from hub.metrics import Metrics
from hub.spine.dlq import KEY_PSEUDONYM, dead_letter_key, dlq_headers, original_headers, safe_error_message
from hub.spine.headers import check_id_headers, parse_batch
from hub.spine.headers import message_id_of as message_id_of  # re-exported: hub/retry reads them here
from hub.spine.headers import transaction_id_of as transaction_id_of
from hub.spine.inbox import claim
from hub.spine.outbox import Relay, add_to_outbox
from hub.store import Store, store_failed
from schemas.envelope import H_TRANSACTION_ID, Envelope, trace_id, utcnow

log = get_logger(__name__)
T = TypeVar("T")
_TRANSIENT = (TransientError, OSError, TimeoutError)  # and the store's own failures (`store_failed`)


def transient(exc: BaseException) -> bool:
    """Worth handling again as it is: a partner or the store unavailable, or the store breaking a
    deadlock between two transactions (`store_failed`). Anything else is the record's own fault."""
    return isinstance(exc, _TRANSIENT) or store_failed(exc)


SPLIT_DOWN_TO = 8  # a failed batch of at most this many records is handled record by record

HANDED_BACK_PAUSE_S = 1.0  # before a batch that failed is read again: no loop of failures
# Hand-backs of a batch from the same offsets before it is handled a record at a time. A batch fails
# outside its records' own handling (the inbox claim, writing a dead letter, committing its offsets)
# for a passing reason too: a rebalance racing on the inbox key, a commit refused mid-rebalance; that
# has passed by the next read or the one after (a pause of 0.5-1 s each). Failing a third time in a
# row from the same offsets, it is one of its records: then each record goes in a transaction of its
# own, and the one that fails alone is dead-lettered, rather than its partition stalling for ever.
# Fewer would dead-letter a record for a race; more only holds its partition up longer.
ISOLATE_AFTER = 3


class BatchFailed(Exception):
    """A batch failed for a reason not worth retrying in place; its partitions were rewound to be
    read again. The text says what failed, without a value the driver's own message may echo."""


def rewind(consumer: Any, records: Sequence[ConsumerRecord[Any, Any]]) -> None:
    """Seek each partition of `records` that is still assigned back to its earliest record; one a
    rebalance took away is read by its new owner from the group's committed offset."""
    earliest: dict[TopicPartition, int] = {}
    for r in records:
        tp = TopicPartition(r.topic, r.partition)
        earliest[tp] = min(r.offset, earliest.get(tp, r.offset))
    for tp, offset in earliest.items():
        try:
            consumer.seek(tp, offset)
        except IllegalStateError:
            continue


async def nack_batch(msg: KafkaMessage, records: Sequence[ConsumerRecord[Any, Any]]) -> None:
    """FastStream's nack of a batch; it stops at the first partition a rebalance took away, so the
    partitions after it are rewound here (else the next ack would commit past their records)."""
    try:
        await msg.nack()
    except IllegalStateError:
        rewind(msg.consumer, records)


async def _no_body(message: Any) -> None:
    """FastStream's decoder for the spine's subscribers: the handlers read the raw records, so
    FastStream need not parse and JSON-decode every record of a batch a second time."""


def decode_envelope(record: ConsumerRecord[Any, Any]) -> Envelope:
    """The default decoder: the record value is our envelope."""
    return Envelope.from_bytes(record.value)


class DeadLetter(Exception):
    """Raise from a handler: dead-letter the record for `cause`, yet publish `replies` and keep `audit`.

    The handler's own effects roll back with its savepoint; an answer to the sender (an error
    decision) and its audit entry must survive that, so the spine writes them with the dead letter.
    `then`, when given, records what the dead letter means in the handler's own state (a handover
    marked undelivered, its caseworker told), in the dead letter's transaction, in a savepoint: when
    it fails, the dead letter stands without it.
    """

    def __init__(
        self,
        cause: Exception,
        *,
        replies: Sequence[tuple[str, Envelope | bytes, str | None]] = (),
        audit: Sequence[AuditEntry] = (),
        then: Callable[[AsyncSession], Awaitable[None]] | None = None,
    ) -> None:
        super().__init__(str(cause))
        self.cause, self.replies, self.audit, self.then = cause, list(replies), list(audit), then


@dataclass
class Tx:
    """What a handler gets: the session of this message's transaction and ways to emit and audit."""

    session: AsyncSession
    record: ConsumerRecord[Any, Any]
    transaction_id: str
    system: str
    emitted: list[str] = field(default_factory=list)
    committed: list[Callable[[], None]] = field(default_factory=list)

    def after_commit(self, callback: Callable[[], None]) -> None:
        """Call `callback` once this message's transaction committed (e.g. to wake a scheduler that
        should see what the handler wrote)."""
        self.committed.append(callback)

    async def emit(
        self,
        topic: str,
        message: Envelope | bytes,
        *,
        key: str | None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        """Publish `message` once this transaction commits (outbox)."""
        await add_to_outbox(self.session, topic, message, key=key, headers=headers)
        self.emitted.append(topic)

    async def audit(self, entry: AuditEntry) -> None:
        """Write an audit entry in this transaction, stamped with the transaction id (rule 19)."""
        await write_audit(self.session, entry, transaction_id=self.transaction_id, system=self.system)


Handler = Callable[[Tx, T], Awaitable[None]]


@dataclass
class Item(Generic[T]):
    """One record of a batch, decoded, with its transaction id (rule 19)."""

    record: ConsumerRecord[Any, Any]
    value: T
    transaction_id: str


BatchHandler = Callable[[Tx, list[Item[T]]], Awaitable[None]]


@dataclass
class Subscription(Generic[T]):
    """One handler on one topic in one consumer group."""

    topic: str
    group: str
    dlq: str
    handler: Handler[T]
    decode: Callable[[ConsumerRecord[Any, Any]], T]
    batch_handler: BatchHandler[T] | None = None


class Spine:
    """Registers handlers on the FastStream broker with the hub's delivery guarantees."""

    def __init__(
        self,
        store: Store,
        broker: KafkaBroker,
        relay: Relay,
        metrics: Metrics,
        *,
        secret: str | None = None,
        **consumer_options: Any,
    ) -> None:
        self.store, self.broker, self.relay, self.metrics = store, broker, relay, metrics
        self.secret = secret  # the pseudonymisation secret: a dead letter's key holds no BSN
        self.consumer_options = consumer_options
        self.subscriptions: list[Subscription[Any]] = []
        # failed hand-backs of a batch, by where it started: (group, topic, partition, offset)
        self._failures: dict[tuple[str, str, int, int], int] = {}

    def subscribe(
        self,
        topic: str,
        *,
        group: str,
        dlq: str,
        decode: Callable[[ConsumerRecord[Any, Any]], T] = decode_envelope,  # type: ignore[assignment]
        title: str | None = None,
        batch: BatchHandler[T] | None = None,
    ) -> Callable[[Handler[T]], Handler[T]]:
        """Decorator: run the handler for every record of `topic`, once per message id.

        With `batch`, a whole batch of new records goes to that handler at once (a few statements
        instead of several per record); when it raises, the batch is handled record by record with
        the decorated handler, so one poison record dead-letters alone.
        """

        def register(fn: Handler[T]) -> Handler[T]:
            sub = Subscription(topic, group, dlq, fn, decode, batch)
            self.subscriptions.append(sub)

            async def on_batch(body: Any, msg: KafkaMessage) -> None:
                records = msg.raw_message if isinstance(msg.raw_message, tuple) else (msg.raw_message,)
                await self.process(sub, records, ack=msg.ack, nack=lambda: nack_batch(msg, records))

            self.broker.subscriber(
                topic,
                group_id=group,
                batch=True,
                decoder=_no_body,
                parser=parse_batch,
                # no answer to a record's `reply_to` header: a partner's header named the topic
                # FastStream published the handler's result (nothing) to, with the hub's rights
                no_reply=True,
                ack_policy=AckPolicy.MANUAL,
                auto_offset_reset="earliest",
                title=title or f"{group}:{topic}",
                description=fn.__doc__,
                **self.consumer_options,
            )(on_batch)
            return fn

        return register

    async def process(
        self,
        sub: Subscription[Any],
        records: Sequence[ConsumerRecord[Any, Any]],
        *,
        ack: Callable[[], Awaitable[None]],
        nack: Callable[[], Awaitable[None]],
    ) -> None:
        """Handle a batch in one transaction, then commit offsets; a transient error retries it whole.

        Whatever else fails (the batch, or the commit of its offsets), its partitions are rewound
        (`nack`) before the error leaves: the consumer's position is past the batch already, and the
        next batch's ack commits every position read, so it would commit past records that never
        took effect. The error that leaves says what failed without the driver's text (values).
        A batch handed back that way `ISOLATE_AFTER` times is handled a record at a time."""
        starts = _starts(sub, records)
        failed = max((self._failures.get(s, 0) for s in starts), default=0)
        try:
            if failed >= ISOLATE_AFTER:
                log.warning(
                    "batch failed again and again; handling it record by record",
                    topic=sub.topic,
                    group=sub.group,
                    failures=failed,
                    records=len(records),
                )
                handled = await self._handle_alone(sub, records, nack)
            else:
                handled = await self._handle_retrying(sub, records, nack)
            if handled is None:
                return  # handed back to the poll loop: read again from the batch's start
            outcomes, committed = handled
            await ack()
        except Exception as exc:
            for start in starts:
                self._failures[start] = self._failures.get(start, 0) + 1
            await self._hand_back(sub, records, nack)
            said = f"{type(exc).__name__}: {safe_error_message(exc)}"
            raise BatchFailed(f"{sub.group} on {sub.topic}, read again: {said}") from None
        if self._failures:  # its partitions are past the batch that failed
            done = {start[:3] for start in starts}
            self._failures = {k: n for k, n in self._failures.items() if k[:3] not in done}
        for outcome, count in outcomes.items():
            self.metrics.messages.labels(sub.topic, outcome).inc(count)
        self.relay.wake()
        for callback in committed:
            callback()

    async def _handle_retrying(
        self,
        sub: Subscription[Any],
        records: Sequence[ConsumerRecord[Any, Any]],
        nack: Callable[[], Awaitable[None]],
    ) -> tuple[dict[str, int], list[Callable[[], None]]] | None:
        """The batch's outcomes and after-commit callbacks; a transient error tries the batch again
        a few times, then hands it back (`nack`) and gives None."""
        attempt = 0
        while True:
            committed: list[Callable[[], None]] = []
            try:
                return await self._handle_batch(sub, records, committed), committed
            except Exception as exc:
                if not transient(exc):
                    raise
                attempt += 1
                delay = min(0.2 * 2**attempt, 10.0) * (0.5 + random.random() / 2)
                log.warning(
                    "batch failed transiently; retrying",
                    topic=sub.topic,
                    group=sub.group,
                    error=safe_error_message(exc),
                    attempt=attempt,
                    retry_in_s=round(delay, 2),
                )
                self.metrics.messages.labels(sub.topic, "retried").inc(len(records))
                if attempt >= 5:
                    await nack()  # give the partitions back to the poll loop; redelivered from here
                    await asyncio.sleep(delay)
                    return None
                await asyncio.sleep(delay)

    async def _handle_alone(
        self,
        sub: Subscription[Any],
        records: Sequence[ConsumerRecord[Any, Any]],
        nack: Callable[[], Awaitable[None]],
    ) -> tuple[dict[str, int], list[Callable[[], None]]] | None:
        """`_handle_retrying` for each record in a transaction of its own; a record that fails alone
        is dead-lettered alone (`_dead_letter_alone`). None when a transient error handed it back."""
        outcomes = {"processed": 0, "duplicate": 0, "dead_lettered": 0}
        for record in records:
            try:
                handled = await self._handle_retrying(sub, [record], nack)
            except Exception as exc:  # not transient (those were retried): the record's own fault
                outcomes["dead_lettered"] += await self._dead_letter_alone(sub, record, exc)
                continue
            if handled is None:
                return None  # what was handled is in the inbox: a duplicate when read again
            for outcome, count in handled[0].items():
                outcomes[outcome] += count
            for callback in handled[1]:  # its transaction committed
                callback()
        return outcomes, []

    async def _dead_letter_alone(
        self, sub: Subscription[Any], record: ConsumerRecord[Any, Any], exc: BaseException
    ) -> int:
        """Dead-letter a record whose failure came before or after its handler, in a transaction of
        its own that claims its message id (1); 0 when the id was claimed meanwhile (a rebalance gave
        its partition to another member, which handled it)."""
        message_id = message_id_of(record)
        try:  # rule 19: the transaction id its envelope carries, when it has no header
            decoded = sub.decode(record)
        except Exception:  # undecodable: the header's, else its message id
            decoded = None
        transaction_id = transaction_id_of(record, message_id, decoded)
        structlog.contextvars.bind_contextvars(message_id=trace_id(message_id), transaction_id=transaction_id)
        try:
            async with self.store.transaction() as session:
                if not await claim(session, sub.group, [message_id]):
                    return 0
                log.warning(
                    "message dead-lettered",
                    topic=sub.topic,
                    error_class=type(exc).__name__,
                    error=safe_error_message(exc),
                )
                await self.dead_letter(session, sub, record, exc, transaction_id)
            return 1
        finally:
            structlog.contextvars.unbind_contextvars("message_id", "transaction_id")

    async def _hand_back(
        self,
        sub: Subscription[Any],
        records: Sequence[ConsumerRecord[Any, Any]],
        nack: Callable[[], Awaitable[None]],
    ) -> None:
        """Rewind a failed batch's partitions, so it is read again; pause, so that a batch failing
        every time does not fail hundreds of times a second. (FastStream logs the error raised.)"""
        self.metrics.messages.labels(sub.topic, "failed").inc(len(records))
        try:
            await nack()
        except Exception as exc:  # the consumer stopped: it commits nothing any more either
            log.error("failed batch not rewound", topic=sub.topic, error=safe_error_message(exc))
        await asyncio.sleep(HANDED_BACK_PAUSE_S * (0.5 + random.random() / 2))

    async def _handle_batch(
        self,
        sub: Subscription[Any],
        records: Sequence[ConsumerRecord[Any, Any]],
        committed: list[Callable[[], None]],
    ) -> dict[str, int]:
        outcomes = {"processed": 0, "duplicate": 0, "dead_lettered": 0}
        ids = [message_id_of(r) for r in records]
        async with self.store.transaction() as session:
            # claimed before any handler runs: a second member of the group on the same records
            # (a rebalance) waits here for this transaction, then skips what it committed
            new = await claim(session, sub.group, ids)
            fresh: list[tuple[ConsumerRecord[Any, Any], str]] = []
            for record, message_id in zip(records, ids, strict=True):
                if message_id not in new:
                    outcomes["duplicate"] += 1
                    continue
                new.discard(message_id)  # the same id again later in the batch is a duplicate
                fresh.append((record, message_id))
            await self._handle_part(session, sub, fresh, committed, outcomes)
        return outcomes

    async def _handle_part(
        self,
        session: AsyncSession,
        sub: Subscription[Any],
        fresh: list[tuple[ConsumerRecord[Any, Any], str]],
        committed: list[Callable[[], None]],
        outcomes: dict[str, int],
    ) -> None:
        """The batch handler over `fresh`; when it fails, the batch is split (`_split`)."""
        if sub.batch_handler is not None and len(fresh) > 1:
            if await self._handle_all(session, sub, fresh, committed):
                outcomes["processed"] += len(fresh)
                return
            await self._split(session, sub, fresh, committed, outcomes)
            return
        await self._one_by_one(session, sub, fresh, committed, outcomes)

    async def _split(
        self,
        session: AsyncSession,
        sub: Subscription[Any],
        failed: list[tuple[ConsumerRecord[Any, Any], str]],
        committed: list[Callable[[], None]],
        outcomes: dict[str, int],
    ) -> bool:
        """`failed` failed as a batch: the batch handler over its first half, and so on down the half
        that fails, to a few records that the record handler takes one by one (a poison record
        dead-letters alone). One poison record in a batch of 500 costs about nine batch calls and
        eight single ones instead of 500 single ones, all in the transaction that holds SQLite's one
        writer.

        In order: a half's effects are written only after everything before it is handled, so a
        youth's later records never take effect before an earlier one (per-key order). True when the
        bad records proved many (both halves failed somewhere): the later records then go one by one
        at once, rather than being tried whole and split again."""
        if len(failed) <= SPLIT_DOWN_TO:
            await self._one_by_one(session, sub, failed, committed, outcomes)
            return False
        half = len(failed) // 2
        first, second = failed[:half], failed[half:]
        if await self._handle_all(session, sub, first, committed):
            outcomes["processed"] += len(first)
            return await self._split(session, sub, second, committed, outcomes)  # the failure is here
        many = await self._split(session, sub, first, committed, outcomes)
        if not many and await self._handle_all(session, sub, second, committed):
            outcomes["processed"] += len(second)
            return False
        await self._one_by_one(session, sub, second, committed, outcomes)  # bad records in both halves
        return True

    async def _one_by_one(
        self,
        session: AsyncSession,
        sub: Subscription[Any],
        fresh: list[tuple[ConsumerRecord[Any, Any], str]],
        committed: list[Callable[[], None]],
        outcomes: dict[str, int],
    ) -> None:
        for record, message_id in fresh:
            outcomes[await self._handle_one(session, sub, record, message_id, committed)] += 1

    async def _handle_all(
        self,
        session: AsyncSession,
        sub: Subscription[Any],
        fresh: list[tuple[ConsumerRecord[Any, Any], str]],
        committed: list[Callable[[], None]],
    ) -> bool:
        """The batch handler over every fresh record; False (nothing kept) when any of it fails."""
        assert sub.batch_handler is not None
        started, callbacks = time.perf_counter(), len(committed)
        try:
            async with session.begin_nested():
                items = []
                for r, message_id in fresh:
                    check_id_headers(r)
                    decoded = sub.decode(r)
                    items.append(Item(r, decoded, transaction_id_of(r, message_id, decoded)))
                first = fresh[0][0]
                tx = Tx(session, first, items[0].transaction_id, system=sub.group, committed=committed)
                await sub.batch_handler(tx, items)
        except Exception as exc:  # a poison record among them: the caller splits the batch
            if transient(exc):
                raise
            del committed[callbacks:]  # nothing of this attempt was kept
            return False
        elapsed = (time.perf_counter() - started) / len(fresh)
        for _ in fresh:
            self.metrics.handler_seconds.labels(sub.topic).observe(elapsed)
        return True

    async def _handle_one(
        self,
        session: AsyncSession,
        sub: Subscription[Any],
        record: ConsumerRecord[Any, Any],
        message_id: str,
        committed: list[Callable[[], None]],
    ) -> str:
        transaction_id = trace_id(message_id)  # until the record's own is read, in the try below
        # a sender's message id may be a name ("zaak J. de Vries"): the log gets the id made from it
        structlog.contextvars.bind_contextvars(message_id=trace_id(message_id), transaction_id=transaction_id)
        started, callbacks = time.perf_counter(), len(committed)
        try:
            async with session.begin_nested():
                # the header's, so an undecodable record's dead letter carries it too
                transaction_id = transaction_id_of(record, message_id)
                structlog.contextvars.bind_contextvars(transaction_id=transaction_id)
                check_id_headers(record)
                item = sub.decode(record)
                transaction_id = transaction_id_of(record, message_id, item)
                structlog.contextvars.bind_contextvars(transaction_id=transaction_id)
                tx = Tx(session, record, transaction_id, system=sub.group, committed=committed)
                await sub.handler(tx, item)
            return "processed"
        except Exception as exc:  # permanent: the record goes to the DLQ, the consumer goes on
            if transient(exc):
                raise
            del committed[callbacks:]  # nothing of the handler was kept
            cause = exc.cause if isinstance(exc, DeadLetter) else exc
            log.warning(
                "message dead-lettered",
                topic=sub.topic,
                error_class=type(cause).__name__,
                error=safe_error_message(cause),
            )
            await self.dead_letter(session, sub, record, cause, transaction_id)
            if isinstance(exc, DeadLetter):
                for topic, message, key in exc.replies:
                    await add_to_outbox(session, topic, message, key=key)
                for entry in exc.audit:
                    await write_audit(session, entry, transaction_id=transaction_id, system=sub.group)
                if exc.then is not None:
                    await _then(session, exc.then, sub.topic)
            return "dead_lettered"
        finally:
            self.metrics.handler_seconds.labels(sub.topic).observe(time.perf_counter() - started)
            structlog.contextvars.unbind_contextvars("message_id", "transaction_id")

    async def dead_letter(
        self,
        session: AsyncSession,
        sub: Subscription[Any],
        record: ConsumerRecord[Any, Any],
        exc: BaseException,
        transaction_id: str,
        *,
        attempts: int = 1,
    ) -> None:
        """Queue the original record on the DLQ, with the DLQ headers, in this transaction."""
        now = utcnow()
        headers = original_headers(record)
        headers.update(
            dlq_headers(
                topic=record.topic,
                partition=record.partition,
                offset=record.offset,
                group=sub.group,
                exc=exc,
                attempts=attempts,
                first_failure=now,
                last_failure=now,
            )
        )
        headers[H_TRANSACTION_ID] = transaction_id
        value = bytes(record.value or b"")
        key, pseudonym = dead_letter_key(record, self.secret)
        if pseudonym is not None:
            headers[KEY_PSEUDONYM] = pseudonym
        await add_to_outbox(session, sub.dlq, value, key=key, headers=headers)


def _starts(
    sub: Subscription[Any], records: Sequence[ConsumerRecord[Any, Any]]
) -> set[tuple[str, str, int, int]]:
    """Where a batch starts on each of its partitions, for `sub`'s group."""
    earliest: dict[tuple[str, int], int] = {}
    for r in records:
        tp = (r.topic, r.partition)
        earliest[tp] = min(r.offset, earliest.get(tp, r.offset))
    return {(sub.group, topic, partition, offset) for (topic, partition), offset in earliest.items()}


async def _then(session: AsyncSession, then: Callable[[AsyncSession], Awaitable[None]], topic: str) -> None:
    """A dead letter's `DeadLetter.then`, in a savepoint: a transient failure of it fails the batch
    (read again); any other is logged, and the dead letter stands without it."""
    try:
        async with session.begin_nested():
            await then(session)
    except Exception as exc:
        if transient(exc):
            raise
        log.error("recording what a dead letter means failed", topic=topic, error=safe_error_message(exc))
