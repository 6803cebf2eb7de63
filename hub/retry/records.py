"""What the retry ladder writes in the store: parked rows and their announcements on the retry topic,
dead letters, and the outcome of each attempt (delivered, parked for its next rung, dead-lettered,
or postponed when the hub's own store spoiled it: no rung used). `RetryLadder` adds taking messages
in and the scheduler that delivers them.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

from aiokafka import ConsumerRecord
from pydantic import ValidationError
from sqlalchemy import and_, delete, insert, update
from sqlalchemy.ext.asyncio import AsyncSession

from hub.errors import TransientError
from hub.logging import get_logger
from hub.metrics import Metrics
from hub.retry.delivery import Delivery, Hooks, StoreFailed
from hub.retry.policy import POSTPONE_AT_MOST, RetryPolicy, next_due, put_off
from hub.retry.tables import parked
from hub.spine import add_to_outbox
from hub.spine.consumer import message_id_of, transaction_id_of
from hub.spine.dlq import KEY_PSEUDONYM, dead_letter_key, dlq_headers, original_headers, safe_error_message
from hub.store import Store
from schemas.envelope import H_TRANSACTION_ID, Envelope, trace_id

log = get_logger(__name__)
MESSAGES_KEPT = 1024  # parsed envelopes a ladder keeps at most (`ParkingLot._message`): a round's


class _NotAsTaken(Exception):
    """Some of the rows recorded together are no longer as they were taken: the savepoint goes."""


class ParkingLot:
    """A ladder's records; the attributes are set by `RetryLadder.__init__`."""

    store: Store
    metrics: Metrics
    name: str
    topic: str
    retry_topic: str
    dlq_topic: str
    group: str
    secret: str | None  # the pseudonymisation secret: no BSN in a key the ladder writes to Kafka
    policy: RetryPolicy
    clock: Callable[[], datetime]
    delivery: Delivery
    hooks: Hooks
    _wake: asyncio.Event
    _messages: dict[bytes, Envelope]  # parsed rows' values, the latest `MESSAGES_KEPT`: `_message`

    def _message(self, value: bytes) -> Envelope:
        """A row's envelope, parsed once: a round parses its rows for the connector's lookups, for
        the calls and for their records, and the same bytes give the same (frozen) envelope. Kept
        till the round ends (`RetryLadder._round`), the latest `MESSAGES_KEPT` at most; raises
        pydantic.ValidationError, as `Envelope.from_bytes`."""
        value = value if isinstance(value, bytes) else bytes(value)  # a driver's memoryview
        found = self._messages.get(value)
        if found is None:
            found = Envelope.from_bytes(value)
            if len(self._messages) >= MESSAGES_KEPT:
                del self._messages[next(iter(self._messages))]
            self._messages[value] = found
        return found

    def _row(
        self,
        message: Envelope,
        key: str,
        record: ConsumerRecord[Any, Any],
        *,
        due_at: datetime,
        attempt: int = 0,
        error: str | None = None,
        first_failure: datetime | None = None,
    ) -> dict[str, Any]:
        value = message.to_bytes()
        received = bytes(record.value or b"")
        # What its dead letter will carry: the record's headers and the transaction id the consumer
        # took it under (rule 19), as the spine's own dead letters do.
        record_headers = original_headers(record)
        record_headers[H_TRANSACTION_ID] = transaction_id_of(record, message_id_of(record), message)
        # the key it goes with as the spine's dead letters do: a BSN in the sender's key, never
        record_key, pseudonym = dead_letter_key(record, self.secret)
        if pseudonym is not None:
            record_headers[KEY_PSEUDONYM] = pseudonym
        return {
            "ladder": self.name,
            "key": key,
            "message_id": message.message_id,
            "value": value,
            "headers": message.header_map()
            | {"original-partition": str(record.partition), "original-offset": str(record.offset)},
            "record_key": record_key,
            "record_value": received if received != value else None,  # the hub's own: stored once
            "record_headers": record_headers,
            "attempt": attempt,
            "due_at": due_at,
            "first_failure": first_failure,
            "last_error": error,
        }

    async def _park(
        self,
        session: AsyncSession,
        message: Envelope,
        key: str,
        record: ConsumerRecord[Any, Any],
        *,
        attempt: int,
        due_at: datetime,
        error: str | None,
        first_failure: datetime | None = None,
    ) -> None:
        row = self._row(
            message, key, record, due_at=due_at, attempt=attempt, error=error, first_failure=first_failure
        )
        await session.execute(insert(parked).values(row))
        await self._announce(session, message, key, attempt, due_at, error)
        await self.hooks.run(session, "on_parked", message, attempt, due_at, error, key=key)
        self._wake.set()

    async def _announce(
        self,
        session: AsyncSession,
        message: Envelope,
        key: str,
        attempt: int,
        due_at: datetime,
        error: str | None,
    ) -> None:
        extra = {"retry-attempt": str(attempt), "retry-due-at": due_at.isoformat(), "retry-ladder": self.name}
        if error:
            extra["retry-last-error"] = error
        await add_to_outbox(session, self.retry_topic, message, key=key, headers=extra)

    async def _dead(
        self,
        session: AsyncSession,
        row: Any,
        message: Envelope | None,
        exc: BaseException,
        *,
        attempts: int,
        first_failure: datetime,
    ) -> None:
        """Queue the record the message came in on the DLQ, as it was received, with the DLQ headers.

        `message` is None for a parked row that no longer reads as an envelope: no hook is told.
        """
        log.warning(
            "delivery dead-lettered", ladder=self.name, attempts=attempts, error_class=type(exc).__name__
        )
        if row.record_headers is None:  # parked before the ladder kept the record: the message it has
            headers, key = (message.header_map() if message else dict(row.headers)), row.key
        else:
            headers, key = dict(row.record_headers), row.record_key
        headers.update(
            dlq_headers(
                topic=self.topic,
                partition=int(row.headers.get("original-partition", -1)),
                offset=int(row.headers.get("original-offset", -1)),
                group=self.group,
                exc=exc,
                attempts=attempts,
                first_failure=first_failure,
                last_failure=self.clock(),
            )
        )
        value = row.value if row.record_value is None else row.record_value
        await add_to_outbox(session, self.dlq_topic, value, key=key, headers=headers)
        if message is not None:
            await self.hooks.run(session, "on_dead", message, safe_error_message(exc), key=row.key)

    async def _postpone(self, failed: Sequence[tuple[Any, Exception | None, BaseException]]) -> None:
        """Rows whose outcome could not be recorded (the store failed), in a transaction of their own.

        Each is first recorded again, in a savepoint: a store that lost a connection, or timed out
        a statement, mostly answers the next transaction, and a delivery put off is sent again,
        by any hub process, which knows nothing of the call (a caseworker's mail twice). What fails
        again is put off (`_put_off`) rather than being due at once: a delivery that got through would
        be sent again and again, as fast as the scheduler goes round. A row another hub process handled
        meanwhile (its attempt moved on, or its lease is no longer this delivery's), or an operator
        discarded, is left alone. One whose outcome failed to be recorded `POSTPONE_AT_MOST` times in
        a row has climbed to its last rung meanwhile; once more, and it is dead-lettered (operators see
        it) rather than sent again for ever. When the store cannot take even this, the error is raised:
        the scheduler backs off before its next round, and a row in hand by a lease is due again when
        the lease ends."""
        postponed = 0
        try:
            async with self.store.transaction() as session:
                for row, outcome, exc in failed:
                    recorded = await self._record_again(session, row, outcome)
                    if recorded is not None:
                        postponed += recorded
                        continue
                    as_taken = and_(
                        parked.c.seq == row.seq,
                        parked.c.attempt == row.attempt,
                        parked.c.lease.is_not_distinct_from(row.lease),
                    )
                    values = self._put_off(row, exc, outcome)
                    at_the_end = row.attempt >= self.policy.max_parked_attempts
                    if (
                        values["postponed"] > POSTPONE_AT_MOST
                        and at_the_end
                        and await self._dead_unrecorded(session, row, exc, as_taken)
                    ):
                        continue
                    done = await session.execute(update(parked).where(as_taken).values(**values))
                    if done.rowcount:  # type: ignore[attr-defined]
                        postponed += 1
                        await self._tell_put_off(session, row, values, contained=True)
                        log.error(
                            "recording a delivery's outcome failed; postponed",
                            ladder=self.name,
                            message_id=trace_id(row.message_id),
                            postponed=values["postponed"],
                            error=safe_error_message(exc),
                        )
        except Exception as exc:
            log.error("postponing failed", ladder=self.name, error=safe_error_message(exc))
            raise
        self.metrics.postponed.labels(self.name).inc(postponed)

    async def _tell_put_off(
        self,
        session: AsyncSession,
        row: Any,
        values: dict[str, Any],
        *,
        message: Envelope | None = None,
        contained: bool = False,
    ) -> None:
        """The connector's `on_parked` for a row put off: when it is tried again, and why (`message`:
        the row's, read already). `contained` (`_postpone`): the hook failing, even on the store's
        error, does not undo the postponement."""
        if message is None:
            try:
                message = self._message(row.value)
            except ValidationError:  # dead-lettered as it is at its next try (`_record`)
                return
        args = (values["attempt"], values["due_at"], values["last_error"])
        await self.hooks.run(session, "on_parked", message, *args, key=row.key, contained=contained)

    def _first_failure(self, row: Any) -> datetime:
        """When the row's message first failed (now, when it has not yet), with its time zone: SQLite
        hands back naive datetimes, and the dead letter's header says UTC."""
        first: datetime = row.first_failure or self.clock()
        return first if first.tzinfo is not None else first.replace(tzinfo=self.clock().tzinfo)

    async def _dead_unrecorded(
        self, session: AsyncSession, row: Any, exc: BaseException, as_taken: Any
    ) -> bool:
        """Dead-letter a row whose outcome could not be recorded time after time, in a savepoint; False
        when that fails too (it is put off, as before) or the row is no longer as it was taken."""
        first = self._first_failure(row)
        try:
            async with session.begin_nested():
                if not await self._written(session, delete(parked).where(as_taken)):
                    return False
                try:
                    message: Envelope | None = self._message(row.value)
                except ValidationError:
                    message = None
                failure = StoreFailed(f"its outcome could not be recorded: {safe_error_message(exc)}")
                await self._dead(
                    session, row, message, failure, attempts=row.attempt + 1, first_failure=first
                )
        except Exception as again:
            log.error(
                "dead-lettering a delivery whose outcome could not be recorded failed; postponed",
                ladder=self.name,
                message_id=trace_id(row.message_id),
                error=safe_error_message(again),
            )
            return False
        return True

    def _put_off(self, row: Any, exc: BaseException, outcome: Exception | None) -> dict[str, Any]:
        """What a row's attempt that the hub's own store spoiled leaves: not the partner's failure, so
        its attempt (the rung) stays, `postponed` counts up, and it waits as `policy.put_off` says; the
        partner's Retry-After, when it answered with one, still counts. Out of anyone's hands. Past
        `POSTPONE_AT_MOST` in a row each one climbs a rung (never past the last: `_record` writes the
        DLQ for a store failing on the way, `_postpone` for a record failing time after time)."""
        now = self.clock()
        retry_after = outcome.retry_after if isinstance(outcome, TransientError) else None
        postponed = (row.postponed or 0) + 1
        # put off time after time (a record that fails for this row alone): it shows on its rungs
        attempt = row.attempt if postponed <= POSTPONE_AT_MOST else row.attempt + 1
        return {
            "attempt": min(attempt, max(row.attempt, self.policy.max_parked_attempts)),
            "postponed": postponed,
            "due_at": put_off(self.policy, row.attempt, postponed, now, retry_after=retry_after),
            "first_failure": row.first_failure or now,
            # what a caseworker's status shows: the hub's trouble, in words, not the partner's
            "last_error": safe_error_message(exc)
            if isinstance(exc, StoreFailed)
            else f"the hub could not record its outcome: {safe_error_message(exc)}",
            "lease": None,
        }

    async def _record_outcomes(self, outcomes: Sequence[tuple[Any, Exception | None]]) -> None:
        """Outcomes in one short transaction: a round's (SQLite), or those that came together
        (PostgreSQL, `Batches`). The deliveries among them in a few statements (`_record_delivered`),
        every other in a savepoint of its own, so one that cannot be recorded is the only one put off.
        Each only while its row is as it was taken (`_record`): one another process has by now, or an
        operator discarded, is left alone; its call was idempotent."""
        failed: list[tuple[Any, Exception | None, BaseException]] = []
        put_off = 0  # attempts the store spoiled on their way, put off here
        try:
            async with self.store.transaction() as session:
                rest = outcomes
                delivered = [row for row, outcome in outcomes if outcome is None]
                if len(delivered) > 1 and await self._record_delivered(session, delivered):
                    rest = [(row, outcome) for row, outcome in outcomes if outcome is not None]
                for row, outcome in rest:
                    if len(outcomes) == 1:  # no savepoint needed: its failure is the transaction's
                        put_off += await self._record_one(session, row, outcome)
                        continue
                    try:
                        async with session.begin_nested():
                            recorded = await self._record_one(session, row, outcome)
                        put_off += recorded
                    except Exception as exc:  # this one is put off; the rest are kept
                        failed.append((row, outcome, exc))
        except Exception as exc:  # nothing of it was kept: all of it is put off
            failed, put_off = [(row, outcome, exc) for row, outcome in outcomes], 0
        self.metrics.postponed.labels(self.name).inc(put_off)
        if failed:
            await self._postpone(failed)

    async def _record_again(self, session: AsyncSession, row: Any, outcome: Exception | None) -> int | None:
        """`_record_one` in a savepoint; None when it fails again (the row is put off)."""
        try:
            async with session.begin_nested():
                return await self._record_one(session, row, outcome)
        except Exception as again:
            log.warning(
                "recording a delivery's outcome failed again",
                ladder=self.name,
                message_id=trace_id(row.message_id),
                error=safe_error_message(again),
            )
            return None

    async def _record_one(self, session: AsyncSession, row: Any, outcome: Exception | None) -> int:
        """Record one outcome; 1 when it put the row off (the store failed on its way), else 0."""
        if await self._record(session, row, outcome):
            return int(isinstance(outcome, StoreFailed) and (row.postponed or 0) < POSTPONE_AT_MOST)
        log.warning(
            "a delivery's outcome was not recorded: another process has the message in hand (its "
            "lease ended first), or it is gone",
            ladder=self.name,
            message_id=trace_id(row.message_id),
        )
        return 0

    async def _record_delivered(self, session: AsyncSession, rows: Sequence[Any]) -> bool:
        """Deliveries in one savepoint and a few statements; False (nothing kept) when that fails, or
        when any of the rows is no longer as it was taken, and they are recorded one by one instead,
        so one bad row is the only one left parked."""
        # PostgreSQL's leases: one token per claim statement, shared by the rows it took
        tokens = list({row.lease for row in rows if row.lease is not None})
        as_taken = parked.c.lease.in_(tokens) if tokens else parked.c.lease.is_(None)
        try:
            async with session.begin_nested():
                done = await session.execute(
                    delete(parked).where(parked.c.seq.in_([row.seq for row in rows]), as_taken)
                )
                if done.rowcount != len(rows):  # type: ignore[attr-defined]
                    raise _NotAsTaken
                await self.delivery.delivered_many(session, [self._message(row.value) for row in rows])
        except _NotAsTaken:
            return False
        except Exception as exc:
            log.warning(
                "recording deliveries together failed", ladder=self.name, error=safe_error_message(exc)
            )
            return False
        return True

    async def _record(self, session: AsyncSession, row: Any, outcome: Exception | None) -> bool:
        """Delivered: unpark. Transient: the next rung, or the DLQ past the last. Permanent: the DLQ.
        The hub's own store failed on the way (StoreFailed): put off, no rung used, up to
        `POSTPONE_AT_MOST` times in a row; after that, a rung as a partner's failure.

        Only while the row is as it was taken (in hand by the same lease, or by none): its first
        write says so, and locks it till the transaction ends. False, and nothing written, when it is
        not (another process has it, or it is gone)."""
        first = self._first_failure(row)
        mine = and_(parked.c.seq == row.seq, parked.c.lease.is_not_distinct_from(row.lease))
        try:
            message = self._message(row.value)
        except ValidationError as exc:  # parked under an older, laxer envelope: it cannot be delivered
            if not await self._written(session, delete(parked).where(mine)):
                return False
            await self._dead(session, row, None, exc, attempts=row.attempt + 1, first_failure=first)
            return True
        if outcome is None:
            if not await self._written(session, delete(parked).where(mine)):
                return False
            await self.hooks.run(session, "on_delivered", message, key=row.key)
            return True
        if isinstance(outcome, StoreFailed) and (row.postponed or 0) < POSTPONE_AT_MOST:
            values = self._put_off(row, outcome, outcome)
            if not await self._written(session, update(parked).where(mine).values(**values)):
                return False
            # (counted once its transaction committed: `_record_outcomes`)
            await self._tell_put_off(session, row, values, message=message)
            log.warning(
                "the hub's store failed on a delivery's way; put off, no rung used",
                ladder=self.name,
                message_id=trace_id(row.message_id),
                postponed=values["postponed"],
                error=safe_error_message(outcome),
            )
            return True
        # the partner's failure, or the store's for this message time after time (a failure that keeps
        # coming for it alone is no passing trouble): a rung used, up to the DLQ
        due = None
        if isinstance(outcome, TransientError):
            due = next_due(self.policy, row.attempt + 1, self.clock(), retry_after=outcome.retry_after)
        if due is None:
            if not await self._written(session, delete(parked).where(mine)):
                return False
            await self._dead(session, row, message, outcome, attempts=row.attempt + 1, first_failure=first)
            return True
        error = safe_error_message(outcome)
        next_rung = update(parked).where(mine)
        next_rung = next_rung.values(
            attempt=row.attempt + 1,
            due_at=due,
            first_failure=first,
            last_error=error,
            lease=None,
            postponed=row.postponed if isinstance(outcome, StoreFailed) else 0,  # past the cap, it stays
        )
        if not await self._written(session, next_rung):
            return False
        await self._announce(session, message, row.key, row.attempt + 1, due, error)
        await self.hooks.run(session, "on_parked", message, row.attempt + 1, due, error, key=row.key)
        return True

    @staticmethod
    async def _written(session: AsyncSession, statement: Any) -> bool:
        return bool((await session.execute(statement)).rowcount)  # type: ignore[attr-defined]
