"""Dead letters: read from the DLQ topics, shown masked, replayed through the outbox, or discarded.

Replay and the inbox: the spine records a dead-lettered message id in its inbox (dead-lettering is how
that record was handled, so a redelivery after a crash is not dead-lettered twice). A replay therefore
deletes that one inbox row (consumer = `dlq-consumer-group`, the record's `message-id`) in the same
transaction that queues the original record again, so the replay is processed while the message id,
and with it deduplication of any further copy, stays the same. The spine is unchanged.

A letter without a usable message-id header was keyed by its position; a copy of it would be keyed by a
new position each time the relay repeats it. Its replay copy carries a message id made from the letter's
own id instead, so a repeat of that copy is dropped by the inbox like any other.

A letter's key is whatever its sender used, even a BSN: it is shown, and matched by a key filter, only
when it is the hub's own youth key, unless the operator may see personal data unmasked.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import uuid
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Annotated, Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError
from pydantic import Field
from sqlalchemy import and_, delete, insert, or_, select
from sqlalchemy import exc as sa_exc

from hub.audit import AuditEntry, write_audit
from hub.clock import LOCAL
from hub.logging import get_logger
from hub.ops.lag import BrokersUnavailable
from hub.ops.masking import is_youth_key, show_key
from hub.ops.tables import dlq_actions
from hub.spine.dlq import (
    DLQ_EXC_CLASS,
    DLQ_EXC_MESSAGE,
    DLQ_GROUP,
    DLQ_LAST_FAILURE,
    DLQ_TOPIC,
    safe_error_message,
)
from hub.spine.outbox import add_to_outbox
from hub.store import Store, store_failed
from hub.store.tables import inbox
from schemas._base import NO_CONTROL
from schemas.envelope import H_MESSAGE_ID, H_TRANSACTION_ID, is_id, utcnow

log = get_logger(__name__)
REPLAYED_FROM = "dlq-replayed-from"
SYSTEM = "ketenhub-ops"
REASON_MIN, REASON_MAX = 3, 500
# Why a dead letter is discarded: the API's body and the CLI's option both hold to it.
Reason = Annotated[str, Field(min_length=REASON_MIN, max_length=REASON_MAX, pattern=NO_CONTROL)]
READ_S = 15.0  # for the brokers to answer a start or a metadata request, and to read the letters


@dataclass
class DeadLetter:
    """One record on a DLQ topic, with what was done with it."""

    topic: str
    partition: int
    offset: int
    timestamp_ms: int
    key: str | None
    headers: dict[str, str]
    # None when only listed: a list of letters holds no payloads, which can be megabytes each.
    payload: bytes | None = field(default=None, repr=False)
    status: str = "open"

    @property
    def youth_key(self) -> str | None:
        """The youth the letter is about, for the audit log: its key when that is the hub's own youth
        key (a sender's own key, even a BSN, is not written into the audit log)."""
        return self.key if is_youth_key(self.key) else None

    @property
    def value(self) -> bytes:
        """The payload, as read by `DeadLetters.get`; a listed letter has none loaded (LookupError)."""
        if self.payload is None:
            raise LookupError(f"the payload of dead letter {self.id} was not read")
        return self.payload

    @property
    def position(self) -> tuple[str, int, int]:
        """Topic, partition and offset."""
        return self.topic, self.partition, self.offset

    @property
    def id(self) -> str:
        """`<dlq topic>:<partition>:<offset>`: stable, and names no person."""
        return f"{self.topic}:{self.partition}:{self.offset}"

    @property
    def failed_at(self) -> datetime:
        """When it last failed (header), else when it was written."""
        with contextlib.suppress(KeyError, ValueError):
            return datetime.fromisoformat(self.headers[DLQ_LAST_FAILURE])
        return datetime.fromtimestamp(self.timestamp_ms / 1000, UTC)

    def usable_id(self, name: str) -> str | None:
        """An id header as the spine would use it: None when absent or unusable (empty, too long, not
        printable), as for a record the spine dead-lettered for that very header."""
        value = self.headers.get(name)
        return value if is_id(value) else None

    def summary(self, *, unmasked: bool = False) -> dict[str, Any]:
        """What a list shows: ids, error and status; no payload. The key only when it is a youth key
        or `unmasked` (an operator allowed to see personal data, audited by the caller)."""
        return {
            "id": self.id,
            "dlq_topic": self.topic,
            "original_topic": self.headers.get(DLQ_TOPIC),
            "group": self.headers.get(DLQ_GROUP),
            "error_class": self.headers.get(DLQ_EXC_CLASS),
            "error": self.headers.get(DLQ_EXC_MESSAGE),
            "failed_at": self.failed_at.isoformat(),
            "key": show_key(self.key, unmasked=unmasked),
            "message_id": self.headers.get(H_MESSAGE_ID),
            "transaction_id": self.headers.get(H_TRANSACTION_ID),
            "status": self.status,
        }


@dataclass(frozen=True)
class Filter:
    """Which dead letters: by DLQ or original topic, error class (substring), time range, key, status.

    A key matches a youth key only, unless `raw_keys`: any other key is personal data (a BSN even),
    to be searched for only by an operator who may see it unmasked.
    """

    topic: str | None = None
    error_class: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    key: str | None = None
    status: str | None = "open"
    raw_keys: bool = False

    def __post_init__(self) -> None:
        # A time without an offset is the operator's own: Dutch local time (as hub.clock reads one).
        # Left naive, comparing it with a letter's time raised TypeError.
        for name in ("since", "until"):
            moment = getattr(self, name)
            if moment is not None and moment.tzinfo is None:
                object.__setattr__(self, name, moment.replace(tzinfo=LOCAL))

    def matches(self, d: DeadLetter) -> bool:
        """True when `d` passes every given criterion."""
        return (
            (self.topic is None or self.topic in (d.topic, d.headers.get(DLQ_TOPIC)))
            and (self.error_class is None or self.error_class in d.headers.get(DLQ_EXC_CLASS, ""))
            and (self.since is None or d.failed_at >= self.since)
            and (self.until is None or d.failed_at <= self.until)
            and (self.key is None or (d.key == self.key and (self.raw_keys or is_youth_key(d.key))))
            and (self.status is None or d.status == self.status)
        )


_LETTER_ID = re.compile(r"(.+):([0-9]{1,10}):([0-9]{1,19})")
PARTITION_END, OFFSET_END = 2**31, 2**63  # Kafka's partitions are int32, its offsets int64


def parse_id(letter_id: str) -> tuple[str, int, int]:
    """Split `<topic>:<partition>:<offset>`; ValueError when malformed or past what Kafka can hold
    (an offset of 2**70 was sought for 15 s)."""
    found = _LETTER_ID.fullmatch(letter_id)
    if found is None or int(found[2]) >= PARTITION_END or int(found[3]) >= OFFSET_END:
        raise ValueError("a dead-letter id is <dlq topic>:<partition>:<offset>, within Kafka's range")
    return found[1], int(found[2]), int(found[3])


async def read_records(options: Mapping[str, Any], topics: list[str]) -> list[DeadLetter]:
    """Every record of `topics` up to their high watermark: headers and key, not the payload."""
    return await _read(options, topics, None)


async def read_at(
    options: Mapping[str, Any], positions: Collection[tuple[str, int, int]]
) -> list[DeadLetter]:
    """The records at `positions` (topic, partition, offset), payload included; absent ones left out."""
    return await _read(options, [], set(positions)) if positions else []


async def _read(
    options: Mapping[str, Any], topics: list[str], wanted: set[tuple[str, int, int]] | None
) -> list[DeadLetter]:
    """BrokersUnavailable when the brokers refuse, fail or do not answer in time."""
    consumer = AIOKafkaConsumer(**options, enable_auto_commit=False, fetch_max_wait_ms=20)
    try:
        # started within the try: a start that fails has opened connections too, which stop() closes
        await asyncio.wait_for(consumer.start(), READ_S)
        cluster = await asyncio.wait_for(consumer._client.fetch_all_metadata(), READ_S)
        # per partition, the offsets to read from and to (None: from the beginning, to the end)
        span: dict[TopicPartition, tuple[int, int] | None] = {}
        if wanted is None:
            span = {TopicPartition(t, p): None for t in topics for p in cluster.partitions_for_topic(t) or ()}
        for t, p, o in wanted or ():
            if p in (cluster.partitions_for_topic(t) or ()):
                first, last = span.get(TopicPartition(t, p)) or (o, o)
                span[TopicPartition(t, p)] = (min(first, o), max(last, o))
        if not span:
            return []
        consumer.assign(list(span))
        if wanted is None:
            await consumer.seek_to_beginning(*span)
        for tp, bounds in span.items():
            if bounds is not None:
                consumer.seek(tp, bounds[0])
        out: list[DeadLetter] = []
        pending = set(span)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + READ_S
        while pending and loop.time() < deadline:
            batch = await consumer.getmany(*pending, timeout_ms=200)
            for records in batch.values():
                out += [
                    _letter(r, wanted)
                    for r in records
                    if wanted is None or (r.topic, r.partition, r.offset) in wanted
                ]
            for tp in list(pending):
                hw, position, bounds = consumer.highwater(tp), await consumer.position(tp), span[tp]
                if (hw is not None and position >= hw) or (bounds is not None and position > bounds[1]):
                    pending.discard(tp)
        return out
    except (TimeoutError, KafkaError, OSError) as exc:
        if isinstance(exc, TimeoutError):
            detail = f"the brokers did not answer within {READ_S:g} s"
        else:
            said = safe_error_message(exc)
            detail = said if type(exc).__name__ in said else f"{type(exc).__name__}: {said}"
        raise BrokersUnavailable(f"dead letters not read: {detail}"[:300]) from exc
    finally:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(consumer.stop(), 5)


def _letter(r: Any, wanted: set[tuple[str, int, int]] | None) -> DeadLetter:
    return DeadLetter(
        r.topic,
        r.partition,
        r.offset,
        r.timestamp,
        bytes(r.key).decode("utf-8", "replace") if r.key is not None else None,
        {k: bytes(v).decode("utf-8", "replace") for k, v in r.headers or ()},
        None if wanted is None else bytes(r.value or b""),
    )


def replay_message_id(d: DeadLetter) -> str:
    """The message id of the replay copy of a letter without a usable one: the letter's own id, or a
    UUID made from it when that is too long for a message id (a topic name runs to 249 characters)."""
    return d.id if is_id(d.id) else str(uuid.uuid5(uuid.NAMESPACE_URL, f"ketenhub:dlq:{d.id}"))


@dataclass
class ReplayJob:
    """A replay running in the background; its progress is polled by id."""

    id: str
    total: int
    operator: str
    done: int = 0
    skipped: int = 0
    failed: int = 0
    state: str = "running"
    error: str | None = None
    task: asyncio.Task[None] | None = field(default=None, repr=False)

    def progress(self) -> dict[str, Any]:
        """What the dashboard and the CLI show."""
        return {k: getattr(self, k) for k in ("id", "total", "done", "skipped", "failed", "state", "error")}


class DeadLetters:
    """List, show, replay and discard dead letters; every action is recorded and audited."""

    def __init__(
        self,
        store: Store,
        options: Mapping[str, Any],
        dlq_topics: list[str],
        *,
        wake: Callable[[], None] | None = None,
        rate_per_s: float = 200.0,
    ) -> None:
        self.store, self.options, self.dlq_topics = store, dict(options), dlq_topics
        self.wake, self.rate_per_s = wake or (lambda: None), rate_per_s
        self.jobs: dict[str, ReplayJob] = {}

    async def _statuses(self, letters: Iterable[DeadLetter]) -> dict[tuple[str, int, int], str]:
        """What was done with `letters`: one range per partition, not the whole history of actions."""
        span: dict[tuple[str, int], tuple[int, int]] = {}
        for d in letters:
            first, last = span.get((d.topic, d.partition), (d.offset, d.offset))
            span[d.topic, d.partition] = (min(first, d.offset), max(last, d.offset))
        if not span:
            return {}
        c = dlq_actions.c
        ranges = [
            and_(c.dlq_topic == t, c.partition == p, c.offset.between(first, last))
            for (t, p), (first, last) in span.items()
        ]
        async with self.store.connect() as conn:
            rows = await conn.execute(
                select(c.dlq_topic, c.partition, c.offset, c.action).where(or_(*ranges))
            )
            return {(t, int(p), int(o)): a for t, p, o, a in rows}

    async def find(self, flt: Filter = Filter()) -> list[DeadLetter]:
        """Dead letters matching `flt`, oldest first; without their payloads (see `get`)."""
        letters = await read_records(self.options, self.dlq_topics)
        statuses = await self._statuses(letters)
        for d in letters:
            d.status = statuses.get(d.position, "open")
        return sorted((d for d in letters if flt.matches(d)), key=lambda d: (d.failed_at, d.id))

    async def get(self, letter_id: str) -> DeadLetter | None:
        """One dead letter by id, with its payload, or None."""
        topic, partition, offset = parse_id(letter_id)
        if topic not in self.dlq_topics:
            return None
        found = await read_at(self.options, [(topic, partition, offset)])
        if not found:
            return None
        d = found[0]
        d.status = (await self._statuses([d])).get(d.position, "open")
        return d

    async def record_view(self, d: DeadLetter, operator: str, *, unmasked: bool) -> None:
        """Audit that an operator looked at a dead letter's payload (rule 18): masked, a partner's
        record still shows what is not a name or number (an offence, a case number); unmasked, all."""
        async with self.store.transaction() as session:
            await write_audit(
                session,
                AuditEntry(
                    action="dlq.viewed_unmasked" if unmasked else "dlq.viewed",
                    user=operator,
                    youth_key=d.youth_key,
                    objects={"dead_letter": d.id},
                ),
                transaction_id=d.usable_id(H_TRANSACTION_ID),
                system=SYSTEM,
            )

    async def record_key_search(self, found: list[DeadLetter], operator: str) -> None:
        """Audit that an operator found dead letters by a key that is personal data (rule 18); the
        key itself stays out of the audit log, which is kept for years."""
        async with self.store.transaction() as session:
            await write_audit(
                session,
                AuditEntry(
                    action="dlq.searched_by_key",
                    user=operator,
                    objects={"found": len(found), "dead_letters": [d.id for d in found[:100]]},
                ),
                transaction_id=None,
                system=SYSTEM,
            )

    async def discard(self, d: DeadLetter, operator: str, reason: str) -> bool:
        """Mark a dead letter discarded with a reason; False when it was already resolved."""
        try:
            async with self.store.transaction() as session:
                await self._resolve(session, d, "discarded", operator, reason=reason, job_id=None)
        except sa_exc.IntegrityError:
            return False
        return True

    async def _resolve(
        self,
        session: Any,
        d: DeadLetter,
        action: str,
        operator: str,
        *,
        reason: str | None,
        job_id: str | None,
    ) -> None:
        await session.execute(
            insert(dlq_actions).values(
                dlq_topic=d.topic,
                partition=d.partition,
                offset=d.offset,
                action=action,
                reason=reason,
                operator=operator,
                at=utcnow(),
                job_id=job_id,
            )
        )
        objects = {"dead_letter": d.id, "original_topic": d.headers.get(DLQ_TOPIC)}
        if reason:
            objects["reason"] = reason
        await write_audit(
            session,
            AuditEntry(action=f"dlq.{action}", user=operator, youth_key=d.youth_key, objects=objects),
            transaction_id=d.usable_id(H_TRANSACTION_ID),
            system=SYSTEM,
        )

    async def _replay_one(
        self, session: Any, d: DeadLetter, value: bytes | None, operator: str, job_id: str | None
    ) -> None:
        original = d.headers.get(DLQ_TOPIC)
        if not original:
            raise ValueError("dead letter without its original topic")
        if value is None:
            raise ValueError("dead letter no longer on its topic")
        await self._resolve(session, d, "replayed", operator, reason=None, job_id=job_id)
        # An unusable message-id header was never an inbox key: the spine keyed that record by its
        # position, and the replayed copy gets a position of its own.
        message_id, group = d.usable_id(H_MESSAGE_ID), d.headers.get(DLQ_GROUP)
        if message_id and group:  # see the module docstring: let the group process this id again
            await session.execute(
                delete(inbox).where(and_(inbox.c.consumer == group, inbox.c.message_id == message_id))
            )
        headers = {k: v for k, v in d.headers.items() if not k.startswith("dlq-")}
        headers[REPLAYED_FROM] = d.id
        if message_id is None:  # see the module docstring: a repeat of this copy is dropped
            headers[H_MESSAGE_ID] = replay_message_id(d)
        await add_to_outbox(session, original, value, key=d.key, headers=headers)

    def start_replay(self, letters: list[DeadLetter], operator: str, *, batch: int = 50) -> ReplayJob:
        """Replay `letters` in the background, rate-limited; returns the job to poll."""
        job = ReplayJob(id=uuid.uuid4().hex[:12], total=len(letters), operator=operator)
        self.jobs[job.id] = job
        job.task = asyncio.create_task(self._run(job, letters, batch), name=f"dlq-replay-{job.id}")
        return job

    async def _run(self, job: ReplayJob, letters: list[DeadLetter], batch: int) -> None:
        loop = asyncio.get_running_loop()
        started = loop.time()
        try:
            for i in range(0, len(letters), batch):
                done = skipped = failed = 0  # counted once their transaction committed
                chunk = letters[i : i + batch]
                # payloads are read per batch: a job over the whole queue holds one batch of them
                unread = [d.position for d in chunk if d.payload is None]
                values = {d.position: d.value for d in chunk if d.payload is not None}
                values |= {d.position: d.value for d in await read_at(self.options, unread)}
                async with self.store.transaction() as session:
                    for d in chunk:
                        try:
                            async with session.begin_nested():
                                await self._replay_one(
                                    session, d, values.get(d.position), job.operator, job.id
                                )
                            done += 1
                        except sa_exc.IntegrityError:
                            skipped += 1  # already replayed or discarded
                        except (ValueError, sa_exc.DBAPIError) as exc:  # this one; the batch goes on
                            if store_failed(exc):  # the store's trouble, not this letter's: stop
                                raise
                            failed += 1
                            log.warning(
                                "replaying a dead letter failed", letter=d.id, error=safe_error_message(exc)
                            )
                job.done, job.skipped, job.failed = (
                    job.done + done,
                    job.skipped + skipped,
                    job.failed + failed,
                )
                self.wake()
                handled = job.done + job.skipped + job.failed
                ahead = handled / self.rate_per_s - (loop.time() - started)
                if ahead > 0:
                    await asyncio.sleep(ahead)
            job.state = "done"
        except Exception as exc:
            job.state, job.error = "failed", f"{type(exc).__name__}: {safe_error_message(exc)}"[:300]
