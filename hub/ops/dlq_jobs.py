"""Replay jobs in the store: every API replica and the CLI read a job's progress, and one replay of
many dead letters runs at a time in the hub, whichever process started it.

A job's row is written when it starts: refused (`ReplayBusy`, naming the job running) while another
job of more than one letter runs, which a partial unique index holds on PostgreSQL and SQLite alike.
Its counts are written in the transaction of each batch, so they are what was committed; its end
when it ends. A process can die with its job running: a running job without progress for
`STALE_AFTER` is marked abandoned (by the next start, or when it is read), and should its process
come back, it stops at its next write (`JobAbandoned`) rather than replay beside the job that took
its place. A job waiting out the rate limit longer than `HEARTBEAT_S` says it is alive in between.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import delete, insert, select, update
from sqlalchemy import exc as sa_exc
from sqlalchemy.ext.asyncio import AsyncSession

from hub.clock import aware
from hub.ops.dlq_records import Filter
from hub.ops.masking import BETWEEN_DIGITS
from hub.ops.tables import dlq_replay_jobs
from hub.store import Store
from schemas.bsn import contains_bsn

RUNNING, DONE, FAILED, ABANDONED = "running", "done", "failed", "abandoned"
STALE_AFTER = timedelta(minutes=5)  # a running job without progress this long lost its process
STOP_GRACE_S = 10.0  # a job asked to stop in a store transaction is cancelled after this long
HEARTBEAT_S = 60.0  # a job waiting longer than this between batches says it is alive meanwhile
KEEP_FINISHED = timedelta(days=30)  # finished jobs stay this long to be read
EVERY_OPEN = "every open dead letter"
STOPPED = (
    "abandoned: the process running it stopped; the letters it had not replayed are still open:"
    " replay them again"
)
_NOT_KEPT = "(not kept)"
_LONG_NUMBER = re.compile(r"[0-9]{8,}")
_jobs = dlq_replay_jobs.c


@dataclass
class ReplayJob:
    """A replay job: as its own process runs it (with its task), or as the store holds it."""

    id: str
    total: int
    operator: str
    filter: str = ""
    done: int = 0
    skipped: int = 0
    failed: int = 0
    state: str = RUNNING
    error: str | None = None
    started_at: datetime | None = None
    progress_at: datetime | None = None
    finished_at: datetime | None = None
    task: asyncio.Task[None] | None = field(default=None, repr=False)
    stopping: bool = field(default=False, repr=False)  # asked to stop: its task stops at its next batch
    storing: bool = field(default=False, repr=False)  # in a store transaction: see stop()
    store_entries: int = field(default=0, repr=False)  # transactions entered: which one a stop waits for

    def stop(self) -> None:
        """Stop the job (its process stops, or Ctrl-C): its task is cancelled, and should the
        cancellation be swallowed on its way (asyncio.wait_for on Python 3.11 does when the call it
        waits for ends as the cancel comes), the job still stops before its next batch.

        In a store transaction it is not cancelled: a cancellation in the middle of a statement left
        the pool a connection it could not reset, and SQLAlchemy logged that over the command's own
        words. The job rolls its batch back at its next letter instead, and is cancelled only should
        that same transaction still be open after `STOP_GRACE_S` (a store that hangs): not the
        writing of the job's end that follows the rollback."""
        self.stopping = True
        if self.task is None or self.task.done():
            return
        if self.storing:
            self.task.get_loop().call_later(STOP_GRACE_S, self._cancel_if_storing, self.store_entries)
        else:
            self.task.cancel()

    def _cancel_if_storing(self, entry: int) -> None:
        if self.task is not None and not self.task.done() and self.storing and self.store_entries == entry:
            self.task.cancel()

    @contextlib.contextmanager
    def in_store(self) -> Iterator[None]:
        """The job's task in a store transaction: a stop waits for the job to roll it back."""
        self.storing = True
        self.store_entries += 1
        try:
            yield
        finally:
            self.storing = False

    @property
    def handled(self) -> int:
        """Letters done, skipped or failed."""
        return self.done + self.skipped + self.failed

    def progress(self) -> dict[str, Any]:
        """What the dashboard and the CLI show."""
        out: dict[str, Any] = {
            k: getattr(self, k)
            for k in ("id", "total", "done", "skipped", "failed", "state", "error", "operator", "filter")
        }
        for k in ("started_at", "progress_at", "finished_at"):
            moment = getattr(self, k)
            out[k] = moment.isoformat() if moment is not None else None
        return out


class ReplayBusy(RuntimeError):
    """A replay of many letters is running already, in this process or another."""

    def __init__(self, job: ReplayJob) -> None:
        started = f" at {job.started_at:%Y-%m-%d %H:%M:%S} UTC" if job.started_at else ""
        super().__init__(
            f"replay job {job.id} ({job.filter}), started by {job.operator}{started}, is still running:"
            f" {job.handled} of {job.total} handled"
        )
        self.job = job


class JobAbandoned(Exception):
    """This job's row was marked abandoned (it made no progress for `STALE_AFTER`): it stops."""


def _kept(text: str) -> str:
    """Free text typed into a filter, as a job's row keeps it: not when it may name a person (a run of
    eight or more digits, also in groups: a BSN, a phone number). Topic and class names hold none."""
    if contains_bsn(text) or _LONG_NUMBER.search(BETWEEN_DIGITS.sub("", text)) or not text.isprintable():
        return _NOT_KEPT
    return text[:200]


def describe(flt: Filter) -> str:
    """What a job replays, kept on its row and shown with it: the filter's fields; of a key only that
    one was given (it is personal data, a BSN even); text that may name a person left out (rule 18)."""
    parts = [f"{name}={_kept(v)}" for name in ("topic", "error_class") if (v := getattr(flt, name))]
    parts += [f"{name}={v.isoformat()}" for name in ("since", "until") if (v := getattr(flt, name))]
    if flt.key is not None:
        parts.append(f"key={_NOT_KEPT}")
    return ("open dead letters with " + ", ".join(parts) if parts else EVERY_OPEN)[:500]


def _job_of(row: Any) -> ReplayJob:
    return ReplayJob(
        id=row.id,
        total=row.total,
        operator=row.operator,
        filter=row.filter,
        done=row.done,
        skipped=row.skipped,
        failed=row.failed,
        state=row.state,
        error=row.error,
        started_at=aware(row.started_at),
        progress_at=aware(row.progress_at),
        finished_at=aware(row.finished_at) if row.finished_at is not None else None,
    )


def abandoned_why(stale_after: timedelta) -> str:
    """Why a job was marked abandoned, as its row says."""
    minutes = stale_after.total_seconds() / 60
    return (
        f"abandoned: no progress for {minutes:g} minutes (the process running it stopped); the letters"
        " it had not replayed are still open: replay them again"
    )


async def _abandon_stale(session: AsyncSession, now: datetime, stale_after: timedelta) -> None:
    """Mark running jobs without progress for `stale_after` abandoned. On PostgreSQL a job writing its
    progress holds its row: this waits for it, and then finds it fresh."""
    await session.execute(
        update(dlq_replay_jobs)
        .where(_jobs.state == RUNNING, _jobs.progress_at < now - stale_after)
        .values(state=ABANDONED, finished_at=now, error=abandoned_why(stale_after))
    )


async def _running_bulk(session: AsyncSession) -> ReplayJob | None:
    row = (
        await session.execute(select(dlq_replay_jobs).where(_jobs.state == RUNNING, _jobs.total > 1).limit(1))
    ).first()
    return _job_of(row) if row is not None else None


async def claim(store: Store, job: ReplayJob, now: datetime, stale_after: timedelta = STALE_AFTER) -> None:
    """Write `job`'s row, running; `ReplayBusy` when it has more than one letter and such a job runs.

    Two claims at once on PostgreSQL: the second insert waits on the unique index for the first and
    fails once it committed; the job found running then is the one named."""
    for attempt in range(3):
        try:
            async with store.transaction() as session:
                await _abandon_stale(session, now, stale_after)
                await session.execute(delete(dlq_replay_jobs).where(_jobs.finished_at < now - KEEP_FINISHED))
                running = await _running_bulk(session) if job.total > 1 else None
                if running is None:
                    await session.execute(
                        insert(dlq_replay_jobs).values(
                            id=job.id,
                            operator=job.operator,
                            filter=job.filter,
                            total=job.total,
                            done=0,
                            skipped=0,
                            failed=0,
                            state=RUNNING,
                            started_at=now,
                            progress_at=now,
                        )
                    )
        except sa_exc.IntegrityError:  # another claim won the race
            async with store.read() as session:
                running = await _running_bulk(session)
            if running is None and attempt < 2:  # it ended meanwhile: try again
                continue
            if running is None:
                raise
        if running is not None:
            raise ReplayBusy(running)
        job.state, job.started_at, job.progress_at = RUNNING, now, now
        return


async def record_progress(
    session: AsyncSession, job: ReplayJob, now: datetime, *, done: int = 0, skipped: int = 0, failed: int = 0
) -> None:
    """Add a batch's counts to the job's row, in the batch's transaction; `JobAbandoned` (roll the
    batch back) when the row is no longer running."""
    result = await session.execute(
        update(dlq_replay_jobs)
        .where(_jobs.id == job.id, _jobs.state == RUNNING)
        .values(
            done=_jobs.done + done,
            skipped=_jobs.skipped + skipped,
            failed=_jobs.failed + failed,
            progress_at=now,
        )
    )
    if result.rowcount != 1:  # type: ignore[attr-defined]
        raise JobAbandoned(job.id)


async def touch(store: Store, job: ReplayJob, now: datetime) -> None:
    """Say the job is alive while it waits; `JobAbandoned` when it was marked abandoned."""
    async with store.transaction() as session:
        await record_progress(session, job, now)


async def finish(store: Store, job: ReplayJob, now: datetime, state: str, error: str | None = None) -> bool:
    """Write the job's end; False when it was no longer running (marked abandoned)."""
    async with store.transaction() as session:
        result = await session.execute(
            update(dlq_replay_jobs)
            .where(_jobs.id == job.id, _jobs.state == RUNNING)
            .values(state=state, error=error, finished_at=now)
        )
    return bool(result.rowcount == 1)  # type: ignore[attr-defined]


async def read(
    store: Store, job_id: str, now: datetime, stale_after: timedelta = STALE_AFTER
) -> ReplayJob | None:
    """The job as the store holds it; a running one without progress for `stale_after` is marked
    abandoned first, and says so."""
    query = select(dlq_replay_jobs).where(_jobs.id == job_id[:40])
    async with store.read() as session:
        row = (await session.execute(query)).first()
    if row is None:
        return None
    job = _job_of(row)
    if job.state == RUNNING and job.progress_at is not None and job.progress_at < now - stale_after:
        async with store.transaction() as session:
            await _abandon_stale(session, now, stale_after)
            row = (await session.execute(query)).first()
        job = _job_of(row)
    return job
