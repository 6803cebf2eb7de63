"""What the retry ladder writes in the store: parked rows and their announcements on the retry topic,
dead letters, and the outcome of each attempt (delivered, parked for its next rung, dead-lettered,
or postponed when the store could not record it). `RetryLadder` adds taking messages in and the
scheduler that delivers them.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

from aiokafka import ConsumerRecord
from pydantic import ValidationError
from sqlalchemy import delete, insert, update
from sqlalchemy.ext.asyncio import AsyncSession

from hub.errors import TransientError
from hub.logging import get_logger
from hub.metrics import Metrics
from hub.retry.delivery import Delivery, Hooks
from hub.retry.policy import RetryPolicy, next_due
from hub.retry.tables import parked
from hub.spine import add_to_outbox
from hub.spine.consumer import message_id_of, transaction_id_of
from hub.spine.dlq import dlq_headers, original_headers, original_key, safe_error_message
from hub.store import Store
from schemas.envelope import H_TRANSACTION_ID, Envelope

log = get_logger(__name__)


class ParkingLot:
    """A ladder's records; the attributes are set by `RetryLadder.__init__`."""

    store: Store
    metrics: Metrics
    name: str
    topic: str
    retry_topic: str
    dlq_topic: str
    group: str
    policy: RetryPolicy
    clock: Callable[[], datetime]
    delivery: Delivery
    hooks: Hooks
    _wake: asyncio.Event

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
        return {
            "ladder": self.name,
            "key": key,
            "message_id": message.message_id,
            "value": value,
            "headers": message.header_map()
            | {"original-partition": str(record.partition), "original-offset": str(record.offset)},
            "record_key": original_key(record),
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
        """Rows whose outcome could not be recorded wait for the next rung, in a transaction of their
        own, rather than being due at once: a delivery that got through would be sent again and again,
        as fast as the scheduler goes round. The partner's Retry-After still counts. A row another
        hub process handled meanwhile (its attempt moved on), or an operator discarded, is left alone.
        When the store cannot take even this, the error is raised: the scheduler backs off before its
        next round."""
        now, postponed = self.clock(), 0
        try:
            async with self.store.transaction() as session:
                for row, outcome, exc in failed:
                    attempt = min(row.attempt + 1, self.policy.max_parked_attempts)
                    retry_after = outcome.retry_after if isinstance(outcome, TransientError) else None
                    done = await session.execute(
                        update(parked)
                        .where(parked.c.seq == row.seq, parked.c.attempt == row.attempt)
                        .values(
                            attempt=attempt,
                            due_at=next_due(self.policy, attempt, now, retry_after=retry_after),
                            first_failure=row.first_failure or now,
                            last_error=safe_error_message(exc),
                        )
                    )
                    if done.rowcount:  # type: ignore[attr-defined]
                        postponed += 1
                        log.error(
                            "recording a delivery's outcome failed; postponed to the next rung",
                            ladder=self.name,
                            message_id=row.message_id,
                            error=safe_error_message(exc),
                        )
        except Exception as exc:
            log.error("postponing failed", ladder=self.name, error=safe_error_message(exc))
            raise
        self.metrics.postponed.labels(self.name).inc(postponed)

    async def _record_delivered(self, session: AsyncSession, rows: Sequence[Any]) -> bool:
        """A round's deliveries in one savepoint and a few statements; False (nothing kept) when that
        fails, and they are recorded one by one instead, so one bad row is the only one left parked."""
        try:
            async with session.begin_nested():
                await session.execute(delete(parked).where(parked.c.seq.in_([row.seq for row in rows])))
                await self.delivery.delivered_many(session, [Envelope.from_bytes(row.value) for row in rows])
        except Exception as exc:
            log.warning(
                "recording deliveries together failed", ladder=self.name, error=safe_error_message(exc)
            )
            return False
        return True

    async def _record(self, session: AsyncSession, row: Any, outcome: Exception | None) -> None:
        """Delivered: unpark. Transient: the next rung, or the DLQ past the last. Permanent: the DLQ."""
        first = row.first_failure or self.clock()
        if first.tzinfo is None:  # SQLite hands back naive datetimes; the dead letter's header says UTC
            first = first.replace(tzinfo=self.clock().tzinfo)
        try:
            message = Envelope.from_bytes(row.value)
        except ValidationError as exc:  # parked under an older, laxer envelope: it cannot be delivered
            await session.execute(delete(parked).where(parked.c.seq == row.seq))
            await self._dead(session, row, None, exc, attempts=row.attempt + 1, first_failure=first)
            return
        if outcome is None:
            await session.execute(delete(parked).where(parked.c.seq == row.seq))
            await self.hooks.run(session, "on_delivered", message, key=row.key)
            return
        due = None
        if isinstance(outcome, TransientError):
            due = next_due(self.policy, row.attempt + 1, self.clock(), retry_after=outcome.retry_after)
        if due is None:
            await session.execute(delete(parked).where(parked.c.seq == row.seq))
            await self._dead(session, row, message, outcome, attempts=row.attempt + 1, first_failure=first)
            return
        error = safe_error_message(outcome)
        await session.execute(
            update(parked)
            .where(parked.c.seq == row.seq)
            .values(attempt=row.attempt + 1, due_at=due, first_failure=first, last_error=error)
        )
        await self._announce(session, message, row.key, row.attempt + 1, due, error)
        await self.hooks.run(session, "on_parked", message, row.attempt + 1, due, error, key=row.key)
