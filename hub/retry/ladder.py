"""The retry ladder: in-place retries, then a parking lot ordered per key, then the DLQ.

Every message is queued in the store (table retry_parked), written in the same transaction as the
consumer's inbox entry, and delivered by the ladder's scheduler outside that transaction: the first
of each key, keys side by side. So "this youth has a waiting message" is never out of date: a later
message for the same key waits behind it, and a withdrawal cannot overtake its registration. A
message that failed is parked until its next rung; every parking is also published on the topic's
retry topic (`<area>.<name>.retry.v<N>`, with the attempt and due time as headers) so operators see
it on the bus. A message that goes to the DLQ goes as the record it came in (value, key and headers as
received), like the spine's own dead letters, so that a replay republishes exactly that record.

No transaction is held over a partner's call. On SQLite a round's calls run outside one and their
outcomes are written together after. On PostgreSQL, where several hub processes share the parking
lot, each message is taken in hand by a lease (hub/retry/lease.py; a wave of a round's messages in
one statement, before they wait for a call's slot: `Waves`) and its outcome recorded in a short
transaction, with the outcomes that came meanwhile (both in hub/retry/batches.py): a delivery in hand
holds no pooled connection, however long the partner takes. The hub's own store failing on a
delivery's way is not the partner's failure: the message is put off without using a rung
(`policy.put_off`).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

from aiokafka import ConsumerRecord
from pydantic import ValidationError
from sqlalchemy import and_, exists, func, insert, or_, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.sql import Select
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception, stop_after_attempt

from hub.errors import TransientError
from hub.logging import get_logger
from hub.metrics import Metrics
from hub.retry.batches import Batches, Grouped, Wave, Waves
from hub.retry.delivery import Delivery, Hooks, StoreFailed
from hub.retry.lease import LEASE_S, Lease, Leases
from hub.retry.policy import RetryPolicy
from hub.retry.records import ParkingLot
from hub.retry.tables import parked
from hub.spine import Tx
from hub.spine.dlq import safe_error_message
from hub.store import Store, store_failed
from schemas.envelope import Envelope, trace_id, utcnow

log = get_logger(__name__)
STOP_GRACE_S = 10.0  # how long a stopping hub waits for deliveries in hand to be recorded
MAX_BACKOFF_S = 30.0  # the longest wait after rounds that failed in a row
WAVE_PER_SLOT = 4  # PostgreSQL: a round's messages taken in hand together, per call at once (`Waves`)
GIVE_BACK_S = 2.0  # how long a stopping hub tries to let go of messages it took in hand and never called


class RetryLadder(ParkingLot):
    """One ladder per outbound connector and topic."""

    def __init__(
        self,
        store: Store,
        metrics: Metrics,
        *,
        name: str,
        topic: str,
        retry_topic: str,
        dlq_topic: str,
        partner: str,
        delivery: Delivery,
        policy: RetryPolicy | None = None,
        group: str | None = None,
        secret: str | None = None,
        clock: Callable[[], datetime] = utcnow,
        concurrency: int = 16,
        lease_s: float = LEASE_S,
    ) -> None:
        self.store, self.metrics, self.name, self.partner = store, metrics, name, partner
        # The consumer group whose inbox took the message in: a replayed dead letter must clear it.
        self.group = group or name
        self.secret = secret
        self.topic, self.retry_topic, self.dlq_topic = topic, retry_topic, dlq_topic
        self.delivery, self.policy, self.clock = delivery, policy or RetryPolicy(), clock
        self.hooks = Hooks(delivery, metrics, ladder=name, partner=partner)
        metrics.postponed.labels(name)  # from 0, so that the first one is an increase too
        self._wake = asyncio.Event()
        self._messages = {}
        self._slots = asyncio.Semaphore(concurrency)
        self._wave = WAVE_PER_SLOT * concurrency
        self.leases = Leases(store, clock, lease_s)
        # For the console's connector lines (DESIGN: last success, last error), in this process.
        self.last_success: datetime | None = None
        self.last_error: str | None = None
        self.last_error_at: datetime | None = None

    # -- the main consumer's side -------------------------------------------------------------
    async def handle(self, tx: Tx, message: Envelope, *, key: str) -> None:
        """Queue the message for the scheduler to deliver, in order per key.

        The partner is not called inside the consumer's transaction. On SQLite that transaction
        holds the store's only write lock, and every other writer of the process (HTTP intake, the
        outbox relay) would wait as long as the partner takes, a whole batch of calls long; and the
        scheduler delivers different keys side by side, where the consumer went record by record.
        Behind a message of the same key that failed, the new one waits, announced on the retry
        topic with attempt 0.
        """
        await self.handle_many(tx, [(message, key, tx.record)])

    async def handle_many(
        self, tx: Tx, items: Sequence[tuple[Envelope, str, ConsumerRecord[Any, Any]]]
    ) -> None:
        """`handle` for a batch of (message, key, record): one lookup and one insert for all of it."""
        tx.after_commit(self.wake)
        now = self.clock()
        held = await self._held_keys(tx.session, {key for _, key, _ in items})
        queued = []
        for message, key, record in items:
            if key in held:  # every message of a held key takes this path, so its order holds
                await self._park(tx.session, message, key, record, attempt=0, due_at=now, error=None)
            else:
                queued.append(self._row(message, key, record, due_at=now))
        if queued:
            await tx.session.execute(insert(parked), queued)

    async def _held_keys(self, session: AsyncSession, keys: set[str]) -> set[str]:
        """The keys with a message that failed (or was put off) and waits for its next attempt."""
        held: set[str] = set()
        ordered = sorted(keys)
        for start in range(0, len(ordered), 500):
            q = select(parked.c.key).where(
                parked.c.ladder == self.name,
                parked.c.key.in_(ordered[start : start + 500]),
                or_(parked.c.attempt >= 1, parked.c.postponed > 0),
            )
            held |= set((await session.execute(q)).scalars())
        return held

    def wake(self) -> None:
        """Something became due: let the scheduler look now."""
        self._wake.set()

    async def _attempt(self, message: Envelope, *, in_place: bool = True) -> None:
        """One rung of the ladder: a call, plus quick retries in place on the first rung only.

        The quick retries are tenacity's; a first call that is answered (nearly every one) is made
        without it: tenacity's loop, its state and its callbacks cost more than a local call."""
        attempts = self.policy.in_place_attempts if in_place else 1
        try:
            await self._call(message)
            return
        except Exception as exc:
            if attempts < 2 or not self._quick(exc):
                raise
            wait = self._wait_after(1, exc)
        await asyncio.sleep(wait)
        async for attempt in AsyncRetrying(
            stop=stop_after_attempt(attempts - 1),
            wait=self._in_place_wait,
            retry=retry_if_exception(self._quick),
            reraise=True,
        ):
            with attempt:
                await self._call(message)

    def _quick(self, exc: BaseException) -> bool:
        """Retried in place: a transient failure whose partner asks for no longer a wait than allowed."""
        wait = getattr(exc, "retry_after", None) or 0
        return isinstance(exc, TransientError) and wait <= self.policy.in_place_max_wait_s

    async def _call(self, message: Envelope) -> None:
        """The connector's call, counted, its failure kept for the console."""
        try:
            await self.delivery.deliver(message)
        except TransientError as exc:
            self.metrics.delivery_attempts.labels(self.partner, "transient").inc()
            self._failed(exc)
            raise
        except Exception as exc:
            if store_failed(exc):  # the hub's own store, read on the way: not the partner's
                self.metrics.delivery_attempts.labels(self.partner, "store").inc()
                failure = StoreFailed(f"the hub's store failed: {safe_error_message(exc)}")
                self._failed(failure)
                raise failure from exc
            self.metrics.delivery_attempts.labels(self.partner, "permanent").inc()
            self._failed(exc)
            raise
        self.metrics.delivery_attempts.labels(self.partner, "ok").inc()
        self.last_success = self.clock()

    def _failed(self, exc: BaseException) -> None:
        self.last_error, self.last_error_at = safe_error_message(exc)[:300], self.clock()

    def status(self) -> dict[str, Any]:
        """Last success and last error (kept after a later success, with its time), in the console's
        shape (GET /ops/api/connectors)."""
        return {
            "last_success": self.last_success.isoformat() if self.last_success else None,
            "last_error": self.last_error,
            "last_error_at": self.last_error_at.isoformat() if self.last_error_at else None,
        }

    def _in_place_wait(self, state: RetryCallState) -> float:
        """Tenacity's wait after its attempt n, the ladder's attempt n + 1 (the first was made before)."""
        exc = state.outcome.exception() if state.outcome is not None else None
        return self._wait_after(state.attempt_number + 1, exc)

    def _wait_after(self, attempt: int, exc: BaseException | None) -> float:
        """The policy's quick wait after `attempt`, or longer when the partner's Retry-After asks."""
        return max(self.policy.in_place_delay(attempt), getattr(exc, "retry_after", None) or 0.0)

    # -- the scheduler's side -----------------------------------------------------------------
    def _first_in_line(self) -> Any:
        """The rows of this ladder with no earlier row of their key: the only ones that may go."""
        earlier = parked.alias("earlier")
        blocked = exists().where(
            and_(
                earlier.c.ladder == parked.c.ladder,
                earlier.c.key == parked.c.key,
                earlier.c.seq < parked.c.seq,
            )
        )
        return and_(parked.c.ladder == self.name, ~blocked)

    def _due_heads(self, now: datetime, limit: int) -> Select[Any]:
        return (
            select(parked.c.seq)
            .where(self._first_in_line(), parked.c.due_at <= now)
            .order_by(parked.c.due_at)
            .limit(limit)
        )

    async def step(self, limit: int = 200) -> int:
        """Try every parked message that is due and first in line for its key; return how many.

        A message another hub process has in hand (PostgreSQL) is not counted: it was not tried here.
        """
        tried, _ = await self._round(limit)
        return tried

    async def _round(self, limit: int) -> tuple[int, int]:
        """One round: (how many due heads were tried here, how many were found due). The envelopes
        it parsed are forgotten when it ends: they may name a youth (`ParkingLot._message`)."""
        try:
            return await self._round_of(limit)
        finally:
            self._messages.clear()

    async def _round_of(self, limit: int) -> tuple[int, int]:
        async with self.store.connect() as conn:
            seqs = list((await conn.execute(self._due_heads(self.clock(), limit))).scalars())
            if not seqs:
                return 0, 0
            rows = (await conn.execute(select(parked).where(parked.c.seq.in_(seqs)))).all()
        await self._prepare(rows)
        if self.store.dialect != "postgresql":
            await self._retry_unlocked(rows)
            return len(rows), len(seqs)
        # every delivery of the round finishes and is recorded before a failure is raised
        claims, batches = Grouped(self.leases.claim_many), Batches(self._record_outcomes)
        not_called: list[Lease] = []
        waves = Waves(len(rows), self._wave)
        try:
            outcomes = await asyncio.gather(
                *(
                    self._retry_leased(row.seq, claims, batches, not_called, waves.of(i))
                    for i, row in enumerate(rows)
                ),
                return_exceptions=True,
            )
        finally:
            try:
                await claims.aclose()  # (a claim cancelled as it ran may have taken its rows: leased)
                await self._give_back(not_called)
            finally:
                await (
                    batches.aclose()
                )  # nothing waits when the round ended; cancelled, what waits stays leased
        for outcome in outcomes:
            if isinstance(outcome, BaseException):
                raise outcome
        return sum(outcome is True for outcome in outcomes), len(seqs)

    async def _prepare(self, rows: Sequence[Any]) -> None:
        """The connector's lookups for the round at once; when they fail, each delivery does its own."""
        if self.delivery.prepare is None:
            return
        messages = []
        for row in rows:
            with contextlib.suppress(ValidationError):  # `_record` dead-letters what cannot be read
                messages.append(self._message(row.value))
        try:
            await self.delivery.prepare(messages)
        except Exception as exc:
            log.warning("preparing a round failed", ladder=self.name, error=safe_error_message(exc))

    async def _give_back(self, leases: list[Lease]) -> None:
        """Rows the stopping hub took in hand and never called, due again at once rather than when
        their leases would have ended (a crash leaves them that long); best effort, briefly."""
        if not leases:
            return
        try:
            await asyncio.wait_for(self.leases.give_back(leases), GIVE_BACK_S)
        except Exception as exc:
            log.warning(
                "messages taken in hand and not called stay so until their leases end",
                ladder=self.name,
                messages=len(leases),
                error=safe_error_message(exc),
            )

    async def _retry_leased(
        self,
        seq: int,
        claims: Grouped[int, tuple[Any, Lease] | None],
        batches: Batches,
        not_called: list[Lease],
        wave: Wave,
    ) -> bool:
        """PostgreSQL: one message taken in hand by a lease (hub/retry/lease.py; with the claims that
        came meanwhile: `claims`), its partner called with no transaction open, its outcome recorded
        (with others that came meanwhile: `batches`);
        the lease is renewed until the record is made, which holds only while it is still this
        process's. False when another process has it in hand, or moved it on."""
        keeper = None
        try:
            # A wave of the round's rows is claimed together, in one statement, before they wait
            # for a slot (claimed slot by slot, a statement took a few rows each time); the next
            # wave once each of this one has its slot. A row that waits for a slot keeps its lease
            # (`keep`), as over its call.
            await wave.turn()
            claimed = await claims.submit(seq)  # the store failing: raised, nothing in hand
            if claimed is None:
                return False
            row, lease = claimed
            keeper = self.leases.keep(lease)
            try:
                await self._slots.acquire()  # the calls at once; their records wait apart, the slot free
            except asyncio.CancelledError:  # the hub stopping: it never went out (`_give_back`)
                not_called.append(lease)
                raise
            wave.started()
            try:
                async with keeper.cut_off():
                    outcome = await self._try(row)
            except TimeoutError:  # nothing recorded: whoever takes it once the lease ends tries again
                self.metrics.delivery_attempts.labels(self.partner, "cut_off").inc()
                log.error(
                    "a delivery was cut off: its lease could not be kept",
                    ladder=self.name,
                    message_id=trace_id(row.message_id),
                )
                return True
            finally:
                self._slots.release()
            # A crash from here until the record commits leaves the lease standing: the message is
            # due again when it ends, and delivered again (at least once; `deliver` is idempotent).
            await batches.record(row, outcome)
            return True
        finally:
            wave.started()  # (or ended: taken by another process, or failed; once only)
            if keeper is not None:
                await keeper.stop()

    async def _retry_unlocked(self, rows: Sequence[Any]) -> None:
        """SQLite: a write transaction locks the whole file, so the calls run outside one, side by
        side; then every outcome is written in one short transaction, not one transaction each."""

        async def attempt(row: Any) -> tuple[Any, Exception | None]:
            async with self._slots:
                return row, await self._try(row)

        tries = [asyncio.ensure_future(attempt(row)) for row in rows]
        try:
            await asyncio.gather(*tries)
        except asyncio.CancelledError:
            # The hub stopping past its grace (a slow partner, a round of 200): the calls that were
            # answered are recorded still, or they would all go out again after the restart; within
            # a grace of its own (another process holding the store's lock would hold the stop).
            answered = [t.result() for t in tries if t.done() and not t.cancelled()]
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._record_outcomes(answered), STOP_GRACE_S)
            raise
        await self._record_outcomes([t.result() for t in tries])

    async def _try(self, row: Any) -> Exception | None:
        """One attempt for a parked row: None when delivered, else the error."""
        try:
            await self._attempt(self._message(row.value), in_place=row.attempt == 0)
        except Exception as exc:
            return exc
        return None

    async def next_due_in(self) -> float | None:
        """Seconds until the earliest parked message is due, or None when nothing is parked."""
        async with self.store.connect() as conn:
            earliest = (
                await conn.execute(select(func.min(parked.c.due_at)).where(self._first_in_line()))
            ).scalar()
        if earliest is None:
            return None
        if earliest.tzinfo is None:  # SQLite hands back naive datetimes
            earliest = earliest.replace(tzinfo=self.clock().tzinfo)
        return max(0.0, float((earliest - self.clock()).total_seconds()))

    async def run(self, idle_s: float = 1.0) -> None:
        """Deliver queued and parked messages as they fall due, until cancelled.

        Cancelled (the hub stopping), the deliveries in hand still finish and have their outcome
        recorded, up to `STOP_GRACE_S`: a message sent but not marked would be sent again.
        """
        failures = 0  # rounds failed in a row
        while True:
            self._wake.clear()  # from here on, a message queued meanwhile cuts the wait short
            try:
                step = asyncio.ensure_future(self._round(200))
                try:
                    tried, due = await asyncio.shield(step)
                except asyncio.CancelledError:
                    with contextlib.suppress(Exception):
                        await asyncio.wait_for(step, STOP_GRACE_S)
                    raise
                failures = 0
                if tried:
                    continue
                # Due, but every one taken by another hub process between the look and the claim:
                # that process delivers them; looking again now would only find them leased.
                wait = idle_s if due else await self.next_due_in()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning(
                    "retry scheduler failed; will retry", ladder=self.name, error=safe_error_message(exc)
                )
                # The whole wait, whatever came meanwhile: a message queued while the round failed
                # must not start the next at once, which would send again a delivery whose outcome
                # could not be recorded (and hammer a store that is failing). Doubled with each
                # round failed in a row (a full disk: every round's calls go out again unrecorded).
                failures += 1
                await asyncio.sleep(min(idle_s * 2 ** min(failures - 1, 10), max(MAX_BACKOFF_S, idle_s)))
                continue
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), min(wait if wait is not None else idle_s, idle_s))

    async def parked_count(self) -> int:
        """How many messages wait in this ladder's parking lot."""
        async with self.store.connect() as conn:
            return int(
                (
                    await conn.execute(
                        select(func.count()).select_from(parked).where(parked.c.ladder == self.name)
                    )
                ).scalar_one()
            )
