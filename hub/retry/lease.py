"""PostgreSQL: a parked message in one hub process's hands by a lease while its partner is called.

Several hub processes share one parking lot. A process claims a message in a short transaction: under
the row's lock (skipped when another process's claim or record holds it) it writes its lease's token
and pushes `due_at` on to when the lease ends. It calls the partner with no transaction open, and so
no pooled connection held, however long the call and its retries in place take. It records the
outcome in a second short transaction, whose first write holds only while the lease is still its own
(`ParkingLot._record`) and locks the row till it commits. Until the lease ends the row is due for no
other process, and its key's later rows stay behind it (they are not first in line): one process at
a time per message, in order per key, as under the lock that was held over the call before.

From the claim until the outcome is recorded the lease is renewed every `renew_s` (`Keeper`): a
record that waits for the transaction before it (hub/retry/batches.py) or for a pooled connection does
not let the lease end under it. A call whose lease could not be renewed (the store failing) is cut off
`renew_s` before the lease ends, and one whose lease was found taken (this process stalled past its
end, or its clock lags another's) at once; nothing is recorded, and whoever takes the message next
tries it again. So no two processes call the partner for one message at once, as long as their clocks
agree to within `renew_s`.

A crash, or a stop that cannot wait, between the call and the record leaves the lease standing: the
message is due again when it ends, at most `lease_s` later, and is delivered again (at least once, as
`deliver` is idempotent). A record made after its lease ended, and another process took the message,
changes nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select, tuple_, update

from hub.logging import get_logger
from hub.retry.batches import Grouped
from hub.retry.tables import parked
from hub.spine.dlq import safe_error_message
from hub.store import Store

log = get_logger(__name__)
LEASE_S = 30.0  # a process killed mid-call holds its messages this long at most


@dataclass
class Lease:
    """One message (`seq`) in this process's hands, by `token`, until `until`; its call must end by
    `deadline` (the event loop's time)."""

    seq: int
    token: str
    until: datetime
    deadline: float


class Leases:
    """Claiming and keeping the leases of one ladder's deliveries (`ParkingLot._record` checks them)."""

    def __init__(
        self,
        store: Store,
        clock: Callable[[], datetime],
        lease_s: float = LEASE_S,
        renew_s: float | None = None,
    ) -> None:
        self.store, self.clock, self.lease_s = store, clock, lease_s
        self.renew_s = lease_s / 3 if renew_s is None else renew_s
        # A claim and a renewal are one statement each: in a transaction of their own, with no BEGIN
        # and COMMIT sent around them (two round trips fewer for every delivery).
        self._autocommit = store.engine.execution_options(isolation_level="AUTOCOMMIT")
        # A round's keepers start together and wake together: their renewals in one statement.
        self._renewals: Grouped[Lease, bool | None] = Grouped(self._renew_many)

    @property
    def cutoff_s(self) -> float:
        """How long a call may go on after the lease was last taken or renewed: `renew_s` short of its
        end, time for the cancelled call to stop and for clocks a little apart."""
        return self.lease_s - self.renew_s

    async def claim(self, seq: int) -> tuple[Any, Lease] | None:
        """Take the parked row `seq` in hand when it is due and no other process's claim or record
        holds it: the row as it is now, and the lease. None when it is not to be had."""
        return (await self.claim_many([seq]))[0]

    async def claim_many(self, seqs: Sequence[int]) -> list[tuple[Any, Lease] | None]:
        """`claim` for several rows in one statement (a round's claims that came together,
        `Grouped`): for each of `seqs`, in order, its row and lease, or None. They share a token;
        each is kept, checked and recorded apart."""
        started, now = asyncio.get_running_loop().time(), self.clock()
        token, until = uuid.uuid4().hex, now + timedelta(seconds=self.lease_s)
        free = (
            select(parked.c.seq)
            .where(parked.c.seq.in_(seqs), parked.c.due_at <= now)
            .with_for_update(skip_locked=True)
        )
        async with self._autocommit.connect() as conn:
            rows = (
                await conn.execute(
                    update(parked)
                    .where(parked.c.seq.in_(free))
                    .values(due_at=until, lease=token)
                    .returning(*parked.c)
                )
            ).all()
        taken = {row.seq: row for row in rows}
        return [
            (taken[seq], Lease(seq, token, until, started + self.cutoff_s)) if seq in taken else None
            for seq in seqs
        ]

    async def give_back(self, leases: Sequence[Lease]) -> None:
        """Let go of rows taken in hand by `leases` and not called: due now, for whichever process
        looks first. A row no longer in hand by its lease is left alone, also when another of
        `leases` holds it now (taken again after its first lease ran out): each row by its own lease."""
        now = self.clock()
        async with self._autocommit.connect() as conn:
            await conn.execute(
                update(parked)
                .where(
                    tuple_(parked.c.seq, parked.c.lease).in_([(lease.seq, lease.token) for lease in leases])
                )
                .values(due_at=now, lease=None)
            )

    def keep(self, lease: Lease) -> Keeper:
        """Renew `lease` from now until the keeper is stopped: over the partner's call (`cut_off`) and
        over the wait for its outcome's record, which must find the lease still this process's."""
        return Keeper(self, lease)

    async def _renew(self, lease: Lease) -> bool | None:
        """Push `lease`'s end on (True), with the renewals that came beside it in one statement;
        False when the row is no longer in hand by it; None when it is, but locked (its outcome
        being recorded, most likely): not renewed this time, as a renewal that waited would not be."""
        return await self._renewals.submit(lease)

    async def _renew_many(self, leases: Sequence[Lease]) -> list[bool | None]:
        """A row another transaction locks is skipped, not waited for: one record under way would
        hold back the renewal of every lease beside it."""
        until = self.clock() + timedelta(seconds=self.lease_s)
        held = tuple_(parked.c.seq, parked.c.lease).in_([(lease.seq, lease.token) for lease in leases])
        free = select(parked.c.seq).where(held).with_for_update(skip_locked=True)
        async with self._autocommit.connect() as conn:
            found = await conn.execute(
                update(parked)
                .where(parked.c.seq.in_(free), held)
                .values(due_at=until)
                .returning(parked.c.seq, parked.c.lease)
            )
            renewed = {(row.seq, row.lease) for row in found}
            locked: set[tuple[int, str]] = set()
            if len(renewed) < len(leases):  # locked, or no longer held: a read waits for no lock
                still = await conn.execute(select(parked.c.seq, parked.c.lease).where(held))
                locked = {(row.seq, row.lease) for row in still} - renewed
        result: list[bool | None] = []
        for lease in leases:
            pair = (lease.seq, lease.token)
            if pair in renewed:
                lease.until = until
            result.append(True if pair in renewed else None if pair in locked else False)
        return result


class Keeper:
    """A lease renewed every `renew_s` beside the work it covers, until `stop`. The partner's call runs
    in `cut_off`, which ends it when the lease cannot be kept: `renew_s` before the lease's end when
    renewals failed (the store), at once when the lease was found taken."""

    def __init__(self, leases: Leases, lease: Lease) -> None:
        self._leases, self.lease = leases, lease
        self.lost = False  # found taken by another process: nothing of this delivery is recorded
        self._cutoff: asyncio.Timeout | None = None
        # Most calls are answered long before the first renewal: a timer, not a task, until then
        # (a task made and cancelled for each call cost a few percent of a busy ladder's CPU).
        self._task: asyncio.Task[None] | None = None
        self._timer: asyncio.TimerHandle | None = asyncio.get_running_loop().call_later(
            leases.renew_s, self._start
        )

    def _start(self) -> None:
        self._timer = None
        self._task = asyncio.create_task(self._keep())

    @contextlib.asynccontextmanager
    async def cut_off(self) -> AsyncIterator[None]:
        """The body (the partner's call) runs until the lease can no longer be kept: TimeoutError."""
        async with asyncio.timeout_at(self.lease.deadline) as cutoff:  # the event loop's time
            self._cutoff = cutoff
            if self.lost:
                cutoff.reschedule(asyncio.get_running_loop().time())
            try:
                yield
            finally:
                self._cutoff = None

    async def stop(self) -> None:
        """Renew no more (the outcome is recorded, or the delivery given up)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._task is not None:
            self._task.cancel()
            await asyncio.wait({self._task})

    def _reschedule(self, when: float) -> None:
        if self._cutoff is not None and not self._cutoff.expired():
            self._cutoff.reschedule(when)

    async def _keep(self) -> None:
        while True:
            if not await self._renew_once():
                return
            await asyncio.sleep(self._leases.renew_s)

    async def _renew_once(self) -> bool:
        """One renewal, `renew_s` after the last; False once the lease is found taken (renew no more)."""
        leases, lease = self._leases, self.lease
        loop = asyncio.get_running_loop()
        started = loop.time()
        try:
            renewed = await leases._renew(lease)
        except Exception as exc:  # tried again at the next turn; the cut-off stays where it is
            log.warning("renewing a delivery's lease failed", seq=lease.seq, error=safe_error_message(exc))
            return True
        if renewed is None:  # locked: tried again at the next turn; the cut-off stays where it is
            return True
        if not renewed:
            self.lost = True
            if self._cutoff is not None:  # (after the call: its own record, most likely, came first)
                log.error("a delivery's lease was taken while its call ran: it is cut off", seq=lease.seq)
                self._reschedule(loop.time())
            return False
        lease.deadline = started + leases.cutoff_s
        self._reschedule(lease.deadline)
        return True
