"""Dead letters: read from the DLQ topics, shown masked, replayed through the outbox, or discarded.

Replay and the inbox: the spine records a dead-lettered message id in its inbox (dead-lettering is how
that record was handled, so a redelivery after a crash is not dead-lettered twice). A replay therefore
deletes that one inbox row (consumer = `dlq-consumer-group`, the record's `message-id`) in the same
transaction that queues the original record again, so the replay is processed while the message id,
and with it deduplication of any further copy, stays the same. The spine is unchanged.

One failed record can stand on a DLQ topic twice: the relay publishes at least once (a crash between
publishing and marking it sent). Each action keeps the record that failed (`source_of`: its group and
original position). The first letter of a source is the message; a list names each later one a copy
of it (`copy_of`, among letters with a first failure: see `copy_source`). Discarding the first drops
the message (its action `drops_message`): its open copies are discarded with it, in its transaction (a
replay of a copy at the same moment conflicts with it on that letter's own row, and one of the two is
refused). Discarding a copy drops that copy alone. A letter of a source replayed, or dropped, already
is not replayed: it is resolved as a copy (discarded, the reason naming the first), and its inbox
row, by now perhaps the processed replay's, is kept.

A letter without a usable message-id header was keyed by its position; a copy of it would be keyed by a
new position each time the relay repeats it. Its replay copy carries a message id made from the letter's
own id instead, so a repeat of that copy is dropped by the inbox like any other.

Reading the letters, and what one letter is, are in `hub.ops.dlq_records`; replay jobs, kept in the
store for every replica to read, one replay of many letters at a time per hub, in `hub.ops.dlq_jobs`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

from pydantic import AfterValidator, Field
from sqlalchemy import and_, delete, insert, or_, select
from sqlalchemy import exc as sa_exc

from hub.audit import AuditEntry, write_audit
from hub.clock import Clock, aware
from hub.handovers.tables import handovers
from hub.logging import HEX_ID_MIN, get_logger, holds_bsn_in_groups
from hub.ops import dlq_jobs
from hub.ops.dlq_jobs import ABANDONED, DONE, FAILED, STALE_AFTER, JobAbandoned, ReplayJob
from hub.ops.dlq_records import DeadLetter, Filter, bsn_in_key_or_payload, parse_id, read_at, read_records
from hub.ops.lag import BrokersUnavailable
from hub.ops.masking import BETWEEN_DIGITS
from hub.ops.tables import dlq_actions
from hub.spine.dlq import (
    DLQ_FIRST_FAILURE,
    DLQ_GROUP,
    DLQ_OFFSET,
    DLQ_PARTITION,
    DLQ_TOPIC,
    KEY_PSEUDONYM,
    key_without_bsn,
    safe_error_message,
)
from hub.spine.outbox import add_to_outbox
from hub.store import Store, store_failed
from hub.store.tables import inbox
from schemas._base import NO_CONTROL, as_code
from schemas.bsn import contains_bsn, is_valid_bsn, normalise_bsn
from schemas.envelope import H_MESSAGE_ID, H_TRANSACTION_ID, is_id, trace_id, utcnow
from schemas.pseudonym import youth_key

log = get_logger(__name__)
OPEN = Filter()  # every open letter
REPLAYED_FROM = "dlq-replayed-from"
SYSTEM = "ketenhub-ops"
REASON_MIN, REASON_MAX = 3, 500


def _no_bsn(text: str) -> str:
    """`text`, unless it names what looks like a BSN, also written in groups ("252-760-189")."""
    if contains_bsn(text) or contains_bsn(BETWEEN_DIGITS.sub("", text)) or holds_bsn_in_groups(text):
        raise ValueError("names what looks like a BSN: say why without naming the youth")
    return text


# Why a dead letter or a parked row is dropped or released: the API's body and the CLI's option both
# hold to it. An operator's reason is about the message, never the youth: no BSN (rule 18).
Reason = Annotated[
    str, Field(min_length=REASON_MIN, max_length=REASON_MAX, pattern=NO_CONTROL), AfterValidator(_no_bsn)
]


COPY_OF = "a copy of dead letter"  # the reason a copy of a replayed or discarded letter is resolved with


def source_of(d: DeadLetter, *, legacy: bool = False) -> str | None:
    """The record that failed, as `<group>|<original topic>:<partition>:<offset>@<first failure>`
    (its DLQ headers); None when a header is missing or the position unknown (-1). Letters of one
    source are copies: the relay published one letter twice, headers and all. The first failure
    tells a record from another at the same position once its topic started over (0020); `legacy`
    gives the form actions were kept under before."""
    group, topic = d.headers.get(DLQ_GROUP), d.headers.get(DLQ_TOPIC)
    partition, offset = d.headers.get(DLQ_PARTITION, ""), d.headers.get(DLQ_OFFSET, "")
    if not (group and topic and partition.isdigit() and offset.isdigit()):
        return None
    position = f"{group}|{topic}:{partition}:{offset}"
    if legacy:
        return position[:400]
    return f"{position}@{d.headers.get(DLQ_FIRST_FAILURE, '')}"[:400]


def letter_time(d: DeadLetter) -> datetime:
    """When the letter was written (its record's timestamp)."""
    return datetime.fromtimestamp(d.timestamp_ms / 1000, UTC)


def legacy_applies(acted_at: datetime, d: DeadLetter) -> bool:
    """Whether an action kept before 0020 (no letter time) is this letter's: a letter written after
    the action was taken is a later one at the same position (the topic started over)."""
    return letter_time(d) <= acted_at


class AlreadyResolved(Exception):
    """An action kept before 0020 already resolved this letter."""


@dataclass(frozen=True)
class Discarded:
    """A discard done: the letter of its source it was discarded as a copy of (the first, or one
    replayed already), else the ids of its open copies, discarded with it."""

    copy_of: str | None
    copies: list[str]


def copy_source(d: DeadLetter) -> str | None:
    """`source_of(d)` when it tells one failed record from another for good: with its first failure.
    Without it (a letter written before the spine kept one), two records at one original position, the
    topic started over between them, would pass for copies of each other."""
    return source_of(d) if d.headers.get(DLQ_FIRST_FAILURE) else None


def mark_copies(letters: Iterable[DeadLetter]) -> None:
    """Name each later letter of a source as a copy of the first (`DeadLetter.copy_of`), among
    `letters` as read from the topics, in the order they were written."""
    first: dict[str, str] = {}
    for d in sorted(letters, key=lambda d: (d.timestamp_ms, d.position)):
        source = copy_source(d)
        if source is not None:
            found = first.setdefault(source, d.id)
            d.copy_of = found if found != d.id else None


def _trace(d: DeadLetter) -> str | None:
    """A letter's transaction id for the audit log, as the spine takes one in (rule 19): a letter
    written before the spine made ids of names may still carry a name there."""
    found = d.usable_id(H_TRANSACTION_ID)
    return trace_id(found) if found is not None else None


def replay_message_id(d: DeadLetter) -> str:
    """The message id of the replay copy of a letter without a usable one: the letter's own id, or a
    UUID made from it when that is too long for a message id (a topic name runs to 249 characters)."""
    return d.id if is_id(d.id) else str(uuid.uuid5(uuid.NAMESPACE_URL, f"ketenhub:dlq:{d.id}"))


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
        secret: str | None = None,
        clock: Clock = utcnow,
        stale_after: timedelta = STALE_AFTER,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.store, self.options, self.dlq_topics = store, dict(options), dlq_topics
        self.secret = secret  # the pseudonymisation secret: the youth key of a BSN in a letter
        self.wake, self.rate_per_s = wake or (lambda: None), rate_per_s
        # the jobs' clock (progress, abandonment) and the rate limit's wait: a test moves or holds them
        self.clock, self.stale_after, self.sleep = clock, stale_after, sleep
        self.running: dict[str, ReplayJob] = {}  # this process's jobs, until their tasks end

    async def _statuses(self, letters: Iterable[DeadLetter]) -> dict[tuple[str, int, int], str]:
        """What was done with `letters`, by position: an action taken on the letter now at that
        position (or, kept before 0020, on whatever letter was there). One range per partition,
        not the whole history of actions."""
        letters = list(letters)
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
                select(c.dlq_topic, c.partition, c.offset, c.letter_at, c.action, c.at).where(or_(*ranges))
            )
            done = {(t, int(p), int(o), letter): (a, aware(at)) for t, p, o, letter, a, at in rows}
        out = {}
        for d in letters:
            found = done.get((*d.position, d.timestamp_ms))
            legacy = done.get((*d.position, None))
            if found is None and legacy is not None and legacy_applies(legacy[1], d):
                found = legacy
            if found is not None:
                out[d.position] = found[0]
        return out

    async def find(self, flt: Filter = OPEN) -> list[DeadLetter]:
        """Dead letters matching `flt`, oldest first; without their payloads (see `get`). A key with a
        BSN in it finds the letters filed under its pseudonym too (`Filter.with_pseudonym`)."""
        flt = flt.with_pseudonym(self.secret)
        letters = await read_records(self.options, self.dlq_topics)
        statuses = await self._statuses(letters)
        for d in letters:
            d.status = statuses.get(d.position, "open")
        mark_copies(letters)
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
                    youth_key=await self._youth_of(session, d),
                    objects={"dead_letter": d.id},
                ),
                transaction_id=_trace(d),
                system=SYSTEM,
            )

    async def _youth_of(self, session: Any, d: DeadLetter, payload: bytes | None = None) -> str | None:
        """The youth a letter is about, for its audit entries: by its key (`DeadLetter.youth_key`), a
        BSN it names (`_youth_in`), or the handover it answers: a receiver keys its answers by its
        own `youth_ref`, which is no youth key of the hub's, and names the handover."""
        found = d.youth_key or self._youth_in(d, payload)
        if found is not None:
            return found
        handover_id = _handover_id_in(payload if payload is not None else d.payload)
        if handover_id is None:
            return None
        query = select(handovers.c.youth_key).where(handovers.c.id == handover_id)
        youth: str | None = (await session.execute(query)).scalar()
        return youth

    def _youth_in(self, d: DeadLetter, payload: bytes | None = None) -> str | None:
        """The youth key of the BSN in a letter's payload or key, for the audit entry of a view, a
        replay or a discard: a sender's record names the youth by BSN, and a subject-access export
        (rule 20) finds what was done with a youth's data by that key. `payload` when the letter's
        own was not kept on it (a replay reads them per batch). None without the secret, or when no
        BSN is found. A key that is the pseudonym of the BSN its sender keyed it by counts as the key
        did before it was replaced: when the payload names no BSN."""
        if self.secret is None:
            return d.key_youth
        found = bsn_in_key_or_payload(d.key, payload if payload is not None else d.payload)
        return youth_key(self.secret, found) if found is not None else d.key_youth

    async def record_key_search(self, found: list[DeadLetter], operator: str, key: str | None = None) -> None:
        """Audit that an operator found dead letters by a key that is personal data (rule 18); the
        key itself stays out of the audit log, which is kept for years (a BSN as its youth key)."""
        youth = None
        if self.secret is not None and key is not None and is_valid_bsn(key):
            youth = youth_key(self.secret, normalise_bsn(key))
        async with self.store.transaction() as session:
            await write_audit(
                session,
                AuditEntry(
                    action="dlq.searched_by_key",
                    user=operator,
                    youth_key=youth,
                    objects={"found": len(found), "dead_letters": [d.id for d in found[:100]]},
                ),
                transaction_id=None,
                system=SYSTEM,
            )

    async def _letters_of_source(self, d: DeadLetter) -> list[DeadLetter]:
        """The letters of `d`'s source as read now from its DLQ topic (where its copies stand: on its
        partition, when it has a key, which its copies share), `d`'s own among them, with their status
        and `copy_of`; none when its source is unknown."""
        source = copy_source(d)
        if source is None:
            return []
        partition = d.partition if d.key is not None else None
        letters = await read_records(self.options, [d.topic], partition=partition)
        statuses = await self._statuses(letters)
        for c in letters:
            c.status = statuses.get(c.position, "open")
        mark_copies(letters)
        return [c for c in letters if copy_source(c) == source]

    async def mark_copy(self, d: DeadLetter) -> None:
        """Set `d.copy_of` as a list would; left None when its topic cannot be read."""
        with contextlib.suppress(BrokersUnavailable):
            found = [c for c in await self._letters_of_source(d) if c.position == d.position]
            d.copy_of = found[0].copy_of if found else None

    async def discard(self, d: DeadLetter, operator: str, reason: str) -> Discarded | None:
        """Mark a dead letter discarded with a reason; None when it was resolved already. The first
        letter of a source is the message: discarding it drops the message (`drops_message`: no copy
        of it is replayed after), and its open copies are discarded with it. A later letter is a copy
        (the relay published it twice): discarding it drops the copy alone, and the first stays to be
        replayed. BrokersUnavailable when its DLQ topic cannot be read to tell which it is."""
        value = d.payload
        if value is None and d.youth_key is None and self.secret is not None:
            # a listed letter: its payload names the youth the audit entry is about; the brokers
            # down, it is audited under its key's youth if it names one
            with contextlib.suppress(BrokersUnavailable):
                value = next((found.value for found in await read_at(self.options, [d.position])), None)
        for attempt in range(2):
            same = await self._letters_of_source(d)
            first = next((c.copy_of for c in same if c.position == d.position), None)
            # a copy of it replayed already: the message went, and this letter is discarded as a copy
            ran = next((c.id for c in same if c.status == "replayed"), None)
            others = [c for c in same if c.position != d.position and c.status == "open"]
            copies = [] if first or ran else others
            try:
                async with self.store.transaction() as session:
                    await self._resolve(
                        session,
                        d,
                        "discarded",
                        operator,
                        reason=reason if ran is None else f"{COPY_OF} {ran}, replayed already: {reason}",
                        job_id=None,
                        value=value,
                        # a letter whose copies cannot be told (no first failure) drops itself alone
                        drops_message=first is None and ran is None and copy_source(d) is not None,
                    )
                    for copy in copies:  # one payload: the audit entries are about the same youth
                        why = f"{COPY_OF} {d.id}, discarded with it"
                        await self._resolve(
                            session, copy, "discarded", operator, reason=why, job_id=None, value=value
                        )
            except (sa_exc.IntegrityError, AlreadyResolved):
                # the letter resolved meanwhile; or a copy (replayed, or discarded alone, since it
                # was read): read them again, and the letter, if still open, goes once more
                if attempt == 0 and copies:
                    continue
                return None
            return Discarded(copy_of=first or ran, copies=[copy.id for copy in copies])
        return None

    async def _resolve(
        self,
        session: Any,
        d: DeadLetter,
        action: str,
        operator: str,
        *,
        reason: str | None,
        job_id: str | None,
        value: bytes | None,
        drops_message: bool = False,
    ) -> None:
        c = dlq_actions.c
        legacy = (
            await session.execute(
                select(c.id).where(
                    c.dlq_topic == d.topic,
                    c.partition == d.partition,
                    c.offset == d.offset,
                    c.letter_at.is_(None),
                    c.at >= letter_time(d),
                )
            )
        ).first()
        if legacy is not None:  # the unique index sees no conflict with a row without letter time
            raise AlreadyResolved(d.id)
        done = await session.execute(
            insert(dlq_actions).values(
                dlq_topic=d.topic,
                partition=d.partition,
                offset=d.offset,
                action=action,
                reason=reason,
                operator=operator,
                at=utcnow(),
                job_id=job_id,
                source=source_of(d),
                letter_at=d.timestamp_ms,
                drops_message=drops_message,
            )
        )
        # The reason is an operator's free text and the audit log is kept for years (rule 18): it
        # stays on the dlq_actions row, which the entry names, with only the reason's length.
        objects = {
            "dead_letter": d.id,
            "original_topic": d.headers.get(DLQ_TOPIC),
            "dlq_action_id": done.inserted_primary_key[0],
        }
        if reason:
            objects["reason_length"] = len(reason)
        await write_audit(
            session,
            AuditEntry(
                action=f"dlq.{action}",
                user=operator,
                youth_key=await self._youth_of(session, d, value),
                objects=objects,
            ),
            transaction_id=_trace(d),
            system=SYSTEM,
        )

    async def _replay_one(
        self, session: Any, d: DeadLetter, value: bytes | None, operator: str, job_id: str | None
    ) -> bool:
        """Queue `d` again; False (resolved as a copy, nothing queued) when a letter of the same
        failed record was replayed or discarded already."""
        original = d.headers.get(DLQ_TOPIC)
        if not original:
            raise ValueError("dead letter without its original topic")
        if value is None:
            raise ValueError("dead letter no longer on its topic")
        source = source_of(d)
        if source is not None:
            first = (
                await session.execute(
                    select(
                        dlq_actions.c.dlq_topic,
                        dlq_actions.c.partition,
                        dlq_actions.c.offset,
                        dlq_actions.c.action,
                    )
                    .where(
                        or_(
                            dlq_actions.c.source == source,
                            and_(  # replayed before 0020, its source kept without the failure time
                                dlq_actions.c.source == source_of(d, legacy=True),
                                dlq_actions.c.letter_at.is_(None),
                                dlq_actions.c.at >= letter_time(d),  # not a letter written after it
                            ),
                        ),
                        # replayed, or discarded by an operator who dropped the message (its copies
                        # open then were discarded with it; this one came later): not a copy's discard
                        or_(dlq_actions.c.action == "replayed", dlq_actions.c.drops_message.is_(True)),
                    )
                    .order_by(dlq_actions.c.id)
                    .limit(1)
                )
            ).first()
            if first is not None:  # its inbox row may be the replayed copy's, processed: kept
                done = f"{first.action} already"
                reason = f"{COPY_OF} {first.dlq_topic}:{first.partition}:{first.offset}, {done}"
                await self._resolve(
                    session, d, "discarded", operator, reason=reason, job_id=job_id, value=value
                )
                return False
        await self._resolve(session, d, "replayed", operator, reason=None, job_id=job_id, value=value)
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
        # a letter written before the spine kept no BSN as a key may hold one: its copy does not
        key, pseudonym = key_without_bsn(d.key, self.secret)
        if pseudonym is not None:
            headers[KEY_PSEUDONYM] = pseudonym
        await add_to_outbox(session, original, value, key=key, headers=headers)
        return True

    async def start_replay(
        self, letters: list[DeadLetter], operator: str, *, what: str | None = None, batch: int = 50
    ) -> ReplayJob:
        """Replay `letters` in the background, rate-limited; returns the job, whose progress any
        replica reads (`job`). `what` says which letters, for whoever reads the job (no BSN).

        One replay of many letters runs at a time in the hub, whichever replica or CLI started it
        (`ReplayBusy` names the one running): the rate limit holds for the hub, not per job."""
        if what is None:
            what = f"dead letter {letters[0].id}" if len(letters) == 1 else f"{len(letters)} dead letters"
        # the first letter of each source before any copy of it (a list names them, `copy_of`), so
        # that the one replayed is the one the list shows as the message; otherwise in the order given
        letters = sorted(letters, key=lambda d: d.copy_of is not None)
        now = self.clock()
        # an id of HEX_ID_MIN hex characters: kept whole by the log's redaction (hub.logging)
        job = ReplayJob(
            id=uuid.uuid4().hex[:HEX_ID_MIN], total=len(letters), operator=operator, filter=what[:500]
        )
        await dlq_jobs.claim(self.store, job, now, self.stale_after)
        self.running[job.id] = job
        job.task = asyncio.create_task(self._run(job, letters, batch), name=f"dlq-replay-{job.id}")
        job.task.add_done_callback(lambda _: self.running.pop(job.id, None))
        return job

    async def aclose(self) -> None:
        """Stop this process's jobs (the hub stops): each is marked abandoned at once, its letters not
        yet replayed left open, rather than found stale minutes later."""
        tasks = [job.task for job in self.running.values() if job.task is not None]
        for job in self.running.values():
            job.stop()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def job(self, job_id: str) -> ReplayJob | None:
        """A replay job as the store holds it, whichever process runs it; None when there is none."""
        return await dlq_jobs.read(self.store, job_id, self.clock(), self.stale_after)

    async def _pace(self, job: ReplayJob, seconds: float) -> None:
        """Wait out the rate limit; a long wait says the job is alive every `HEARTBEAT_S`."""
        while seconds > 0:
            step = min(seconds, dlq_jobs.HEARTBEAT_S)
            await self.sleep(step)
            seconds -= step
            if seconds > 0:
                with job.in_store():
                    await dlq_jobs.touch(self.store, job, self.clock())

    async def _end(self, job: ReplayJob, state: str, error: str | None = None) -> None:
        """Write a job's end (its store may be what failed: then it is abandoned once stale), and take
        its counts as the store holds them: a cancellation that came as a batch committed left the
        batch replayed and counted there, not here (the CLI said "queued 50" of 100 queued)."""
        job.state, job.error = state, error
        with job.in_store():  # a second Ctrl-C does not cut its writes off
            await self._write_end(job, state, error)

    async def _write_end(self, job: ReplayJob, state: str, error: str | None) -> None:
        try:
            if not await asyncio.wait_for(dlq_jobs.finish(self.store, job, self.clock(), state, error), 10):
                # marked so meanwhile: no progress was seen for too long
                job.state, job.error = ABANDONED, dlq_jobs.abandoned_why(self.stale_after)
        except Exception as exc:
            log.warning("a replay job's end was not written", job=job.id, error=safe_error_message(exc))
            return
        try:
            stored = await asyncio.wait_for(
                dlq_jobs.read(self.store, job.id, self.clock(), self.stale_after), 10
            )
        except Exception as exc:  # the counts in memory stand
            log.warning("a replay job's counts were not read back", job=job.id, error=safe_error_message(exc))
            return
        if stored is not None:
            job.done, job.skipped, job.failed = stored.done, stored.skipped, stored.failed

    async def _replay_batch(
        self, job: ReplayJob, chunk: list[DeadLetter], values: dict[tuple[str, int, int], bytes]
    ) -> None:
        """One batch in one transaction; the job's counts are what it committed."""
        done = skipped = failed = 0
        async with self.store.transaction() as session:
            for d in chunk:
                if job.stopping:  # a stop waited for this: the batch is rolled back
                    raise asyncio.CancelledError
                try:
                    async with session.begin_nested():
                        queued = await self._replay_one(
                            session, d, values.get(d.position), job.operator, job.id
                        )
                    done, skipped = (done + 1, skipped) if queued else (done, skipped + 1)
                except (sa_exc.IntegrityError, AlreadyResolved):
                    skipped += 1  # already replayed or discarded
                except (ValueError, sa_exc.DBAPIError) as exc:  # this one; the batch goes on
                    if store_failed(exc):  # the store's trouble, not this letter's: stop
                        raise
                    failed += 1
                    log.warning("replaying a dead letter failed", letter=d.id, error=safe_error_message(exc))
            # in the batch's transaction: the counts are what was committed; a job marked
            # abandoned meanwhile rolls its batch back and stops
            await dlq_jobs.record_progress(
                session, job, self.clock(), done=done, skipped=skipped, failed=failed
            )
        job.done, job.skipped, job.failed = job.done + done, job.skipped + skipped, job.failed + failed

    async def _run(self, job: ReplayJob, letters: list[DeadLetter], batch: int) -> None:
        loop = asyncio.get_running_loop()
        started = loop.time()
        try:
            for i in range(0, len(letters), batch):
                if job.stopping:  # asked to stop, and the cancellation did not come through
                    raise asyncio.CancelledError
                chunk = letters[i : i + batch]
                # payloads are read per batch: a job over the whole queue holds one batch of them
                unread = [d.position for d in chunk if d.payload is None]
                values = {d.position: d.value for d in chunk if d.payload is not None}
                values |= {d.position: d.value for d in await read_at(self.options, unread)}
                with job.in_store():
                    await self._replay_batch(job, chunk, values)
                self.wake()
                ahead = job.handled / self.rate_per_s - (loop.time() - started)
                await self._pace(job, ahead)
            await self._end(job, DONE)
        except JobAbandoned:
            job.state, job.error = ABANDONED, dlq_jobs.abandoned_why(self.stale_after)
        except asyncio.CancelledError:  # the process stops: say so now rather than once stale
            await self._end(job, ABANDONED, dlq_jobs.STOPPED)
            raise
        except Exception as exc:
            await self._end(job, FAILED, f"{type(exc).__name__}: {safe_error_message(exc)}"[:300])


def _handover_id_in(value: bytes | None) -> str | None:
    """The handover a letter's envelope names (`payload.handover_id`), if it reads as one."""
    if not value:
        return None
    try:
        envelope = json.loads(value)
    except ValueError:
        return None
    payload = envelope.get("payload") if isinstance(envelope, dict) else None
    return as_code(payload.get("handover_id")) if isinstance(payload, dict) else None
