"""Replay jobs live in the store: every API replica (and the CLI) reads a job, one replay of many dead
letters runs at a time per hub whichever process started it, and a job whose process stopped does not
block the next one for ever."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import datetime, timedelta
from typing import Any, TypeVar

import pytest
from sqlalchemy import func, insert, select

from hub.ops import dlq_jobs
from hub.ops.dlq import DeadLetters
from hub.ops.dlq_jobs import EVERY_OPEN, KEEP_FINISHED, STOPPED, ReplayBusy, ReplayJob, describe
from hub.ops.dlq_records import DeadLetter, Filter
from hub.ops.tables import dlq_actions, dlq_replay_jobs
from hub.spine.dlq import DLQ_TOPIC
from hub.store import Store
from hub.store.tables import outbox
from schemas.envelope import utcnow
from tests.helpers.kafka import wait_for

pytestmark = pytest.mark.integration
DLQ = "t.in.dlq.v1"
NO_BROKERS = {"bootstrap_servers": "127.0.0.1:9"}  # the letters below carry their payloads


def letters(first: int, n: int) -> list[DeadLetter]:
    """Dead letters of `t.in.v1`, payloads read already (a replay queues them, no broker asked)."""
    return [
        DeadLetter(DLQ, 0, o, 1_700_000_000_000 + o, None, {DLQ_TOPIC: "t.in.v1"}, payload=b'{"n": 1}')
        for o in range(first, first + n)
    ]


# a letter per 100 s: each batch is ahead of its pace however slow the machine, so it meets the gate (at a
# letter a second, a batch that took a second on a busy machine skipped it, and the job ended unseen)
GATED_RATE = 0.01


class Gate:
    """The rate limit's wait, held until opened: the job stays running while a test looks at it."""

    def __init__(self) -> None:
        self.waiting, self.opened = asyncio.Event(), asyncio.Event()

    async def sleep(self, _seconds: float) -> None:
        self.waiting.set()
        await self.opened.wait()


@asynccontextmanager
async def replica(url: str, **options: Any) -> AsyncIterator[DeadLetters]:
    """The dead letters of one process of the hub: its own store connections, on the common database.
    Held by a gate, it waits, and its job runs, until opened."""
    store = Store(url)
    rate = GATED_RATE if "sleep" in options else 10_000.0
    dead_letters = DeadLetters(store, NO_BROKERS, [DLQ], rate_per_s=rate, **options)
    try:
        yield dead_letters
    finally:
        for job in list(dead_letters.running.values()):
            assert job.task is not None
            job.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await job.task
        await store.close()


def later(minutes: float) -> Callable[[], datetime]:
    """A clock `minutes` ahead: how another process sees a job once that long has passed."""
    return lambda: utcnow() + timedelta(minutes=minutes)


async def test_another_process_reads_the_job_and_its_bulk_replay_waits_for_it(
    store: Store, db_url: str
) -> None:
    """A job lived in the process that started it: the other replica answered 404 to half of the
    dashboard's polls, and took a second "replay all" while the first ran."""
    gate = Gate()
    async with replica(db_url, sleep=gate.sleep) as a, replica(db_url) as b:
        job = await a.start_replay(letters(0, 3), "olaf", what=EVERY_OPEN)
        await wait_for(gate.waiting.is_set)  # its one batch committed; it waits out the rate limit
        seen = await b.job(job.id)
        assert seen is not None
        assert (seen.state, seen.done, seen.total, seen.operator, seen.filter) == (
            "running", 3, 3, "olaf", EVERY_OPEN,
        )  # fmt: skip
        with pytest.raises(ReplayBusy) as busy:
            await b.start_replay(letters(10, 2), "piet")
        assert busy.value.job.id == job.id
        assert f"replay job {job.id} ({EVERY_OPEN}), started by olaf at " in str(busy.value)
        assert str(busy.value).endswith("is still running: 3 of 3 handled")
        one = await b.start_replay(letters(20, 1), "piet")  # a single letter goes beside it
        assert one.task is not None
        await one.task
        assert (one.state, one.done) == ("done", 1)
        gate.opened.set()
        assert job.task is not None
        await job.task
        done = await b.job(job.id)
        assert done is not None and done.state == "done" and done.finished_at is not None
        after = await b.start_replay(letters(10, 2), "piet")  # the first ended: the next may go
        assert after.task is not None
        await after.task
        assert (after.state, after.done) == ("done", 2)
        assert await b.job("no-such-job") is None


async def test_of_two_bulk_replays_started_at_once_on_two_processes_one_runs(
    store: Store, db_url: str
) -> None:
    gates = Gate(), Gate()
    async with replica(db_url, sleep=gates[0].sleep) as a, replica(db_url, sleep=gates[1].sleep) as b:
        started = await asyncio.gather(
            a.start_replay(letters(0, 3), "olaf"),
            b.start_replay(letters(10, 3), "piet"),
            return_exceptions=True,
        )
        jobs = [s for s in started if isinstance(s, ReplayJob)]
        refused = [s for s in started if isinstance(s, ReplayBusy)]
        assert len(jobs) == 1 and len(refused) == 1, started
        assert refused[0].job.id == jobs[0].id
        for gate in gates:
            gate.opened.set()
        assert jobs[0].task is not None
        await jobs[0].task
        assert jobs[0].state == "done"


async def test_a_job_without_progress_for_five_minutes_is_abandoned_and_its_process_stops(
    store: Store, db_url: str
) -> None:
    """A replica killed mid-job left it running in the store: without this, no bulk replay again."""
    gate = Gate()
    async with (
        replica(db_url, sleep=gate.sleep) as a,
        replica(db_url, clock=later(4)) as soon,
        replica(db_url, clock=later(6)) as b,
    ):
        job = await a.start_replay(letters(0, 3), "olaf", batch=1)
        await wait_for(gate.waiting.is_set)  # one letter replayed; then no sign of life
        with pytest.raises(ReplayBusy):  # four minutes on: still its
            await soon.start_replay(letters(10, 2), "piet")
        seen = await b.job(job.id)  # six minutes on: abandoned, and the job says why
        assert seen is not None and seen.state == "abandoned" and seen.done == 1
        assert seen.error is not None and seen.error.startswith("abandoned: no progress for 5 minutes")
        taken = await b.start_replay(letters(10, 2), "piet")
        assert taken.task is not None
        await taken.task
        assert taken.state == "done"
        gate.opened.set()  # the first process comes back: it stops rather than replay beside another
        assert job.task is not None
        await job.task
        assert job.state == "abandoned"
        assert job.error is not None and job.error.startswith("abandoned: no progress")
        async with store.connect() as conn:
            replayed = select(func.count()).select_from(dlq_actions).where(dlq_actions.c.job_id == job.id)
            assert (await conn.execute(replayed)).scalar_one() == 1  # its next batch was rolled back
        left = await b.start_replay(letters(1, 2), "piet")  # the letters it left are still open
        assert left.task is not None
        await left.task
        assert (left.state, left.done, left.skipped) == ("done", 2, 0)


async def test_a_job_whose_process_stops_says_so_at_once(store: Store, db_url: str) -> None:
    gate = Gate()
    async with replica(db_url, sleep=gate.sleep) as a, replica(db_url) as b:
        job = await a.start_replay(letters(0, 3), "olaf")
        await wait_for(gate.waiting.is_set)
        assert job.task is not None
        job.task.cancel()  # the replica is stopped (a rolling update)
        with contextlib.suppress(asyncio.CancelledError):
            await job.task
        seen = await b.job(job.id)
        assert seen is not None and (seen.state, seen.error) == ("abandoned", STOPPED)
        after = await b.start_replay(letters(10, 2), "piet")
        assert after.task is not None
        await after.task
        assert after.state == "done"


class Swallowing(Gate):
    """The rate limit's wait, which swallows the cancellation that comes as it ends, as
    asyncio.wait_for does on Python 3.11: the job's task goes on as if never cancelled."""

    async def sleep(self, _seconds: float) -> None:
        self.waiting.set()
        with contextlib.suppress(asyncio.CancelledError):
            await self.opened.wait()


async def test_a_job_asked_to_stop_stops_though_its_cancellation_was_swallowed(
    store: Store, db_url: str
) -> None:
    """A SIGTERM to `dlq replay` once ended the command with exit 0, the job done: the task's
    cancellation was lost on its way, and the job replayed the rest."""
    gate = Swallowing()
    async with replica(db_url, sleep=gate.sleep) as a:
        job = await a.start_replay(letters(0, 3), "olaf", batch=1)
        await wait_for(gate.waiting.is_set)
        assert job.task is not None
        job.stop()
        gate.opened.set()  # the waits after it pass at once
        with contextlib.suppress(asyncio.CancelledError):
            await job.task
        assert (job.state, job.error, job.done) == ("abandoned", STOPPED, 1)
        seen = await a.job(job.id)
        assert seen is not None and (seen.state, seen.done) == ("abandoned", 1)


class ArmedStore:
    """The hub's store, whose next transaction, once armed, misbehaves as a subclass says."""

    def __init__(self, store: Store) -> None:
        self._store, self.armed = store, False

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)

    def let_go(self) -> None:
        """Whatever it holds back is let go (the test ends)."""


W = TypeVar("W", bound=ArmedStore)


@asynccontextmanager
async def job_on(db_url: str, wrap: Callable[[Store], W]) -> AsyncIterator[tuple[W, DeadLetters, ReplayJob]]:
    """A replay of three letters in one batch, on the store wrapped, armed before its first step."""
    hub_store = Store(db_url)
    wrapped = wrap(hub_store)
    dead_letters = DeadLetters(wrapped, NO_BROKERS, [DLQ], rate_per_s=10_000.0)  # type: ignore[arg-type]
    try:
        job = await dead_letters.start_replay(letters(0, 3), "olaf", batch=3)
        wrapped.armed = True  # before the job's task takes its first step
        yield wrapped, dead_letters, job
    finally:
        wrapped.let_go()
        await hub_store.close()


class CancelledAsItCommits(ArmedStore):
    """The hub's store, whose next transaction is cancelled as its commit ends (Ctrl-C at that
    moment): the commit stands, the code that asked for it sees only the cancellation."""

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[Any]:
        async with self._store.transaction() as session:
            yield session
        if self.armed:
            self.armed = False
            raise asyncio.CancelledError


async def test_a_job_stopped_as_its_batch_committed_counts_the_batch(store: Store, db_url: str) -> None:
    """A SIGTERM that came as a batch committed: the batch was replayed and counted in the store,
    the job in memory had not counted it, and `dlq replay` said "queued 50 of 1500" where 100 were."""
    async with job_on(db_url, CancelledAsItCommits) as (_cancelling, dead_letters, job):
        assert job.task is not None
        with contextlib.suppress(asyncio.CancelledError):
            await job.task
        assert (job.state, job.error, job.done) == ("abandoned", STOPPED, 3)
        seen = await dead_letters.job(job.id)
        assert seen is not None and seen.done == 3


class HeldInTransaction(ArmedStore):
    """The hub's store, whose next transaction is held open (a slow statement) until released; it
    notes whether the job's task was cancelled in it."""

    def __init__(self, store: Store) -> None:
        super().__init__(store)
        self.inside, self.release = asyncio.Event(), asyncio.Event()
        self.cancelled_inside = False

    def let_go(self) -> None:
        self.release.set()

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[Any]:
        async with self._store.transaction() as session:
            if self.armed:
                self.armed = False
                self.inside.set()
                try:
                    await self.release.wait()
                except asyncio.CancelledError:
                    self.cancelled_inside = True
                    raise
            yield session


async def test_a_job_stopped_in_its_transaction_is_not_cancelled_there_and_rolls_back(
    store: Store, db_url: str
) -> None:
    """Ctrl-C during `dlq replay` cancelled the job in the middle of a statement: SQLAlchemy's pool
    could not reset the connection and printed its traceback over the command's own words."""
    async with job_on(db_url, HeldInTransaction) as (held, dead_letters, job):
        await wait_for(held.inside.is_set)
        job.stop()
        await asyncio.sleep(0.2)
        assert not held.cancelled_inside
        held.release.set()
        assert job.task is not None
        with contextlib.suppress(asyncio.CancelledError):
            await job.task
        assert not held.cancelled_inside
        assert (job.state, job.error, job.done) == ("abandoned", STOPPED, 0)  # the batch rolled back
        seen = await dead_letters.job(job.id)
        assert seen is not None and (seen.state, seen.done) == ("abandoned", 0)
        async with store.connect() as conn:
            assert await conn.scalar(select(func.count()).select_from(dlq_actions)) == 0


async def test_a_job_stopped_in_a_transaction_that_hangs_is_cancelled_after_a_grace(
    store: Store, db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(dlq_jobs, "STOP_GRACE_S", 0.3)
    async with job_on(db_url, HeldInTransaction) as (held, _dead_letters, job):
        await wait_for(held.inside.is_set)
        job.stop()
        assert job.task is not None
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait_for(job.task, 10)
        assert held.cancelled_inside and not held.release.is_set()
        assert (job.state, job.error) == ("abandoned", STOPPED)


async def test_a_job_stopped_after_a_letter_of_its_batch_rolls_the_whole_batch_back(
    store: Store, db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Stopped with one letter of three replayed in the batch's transaction: none of it stays."""
    jobs: list[ReplayJob] = []
    replay_one = DeadLetters._replay_one

    async def then_stop(self: DeadLetters, *args: Any) -> bool:
        queued = await replay_one(self, *args)
        jobs[0].stop()  # Ctrl-C, with the first letter replayed and the batch's transaction open
        return queued

    monkeypatch.setattr(DeadLetters, "_replay_one", then_stop)
    async with job_on(db_url, ArmedStore) as (_store, dead_letters, job):
        jobs.append(job)
        assert job.task is not None
        with contextlib.suppress(asyncio.CancelledError):
            await job.task
        assert (job.state, job.error, job.done) == ("abandoned", STOPPED, 0)
        seen = await dead_letters.job(job.id)
        assert seen is not None and (seen.state, seen.done) == ("abandoned", 0)
    async with store.connect() as conn:
        assert await conn.scalar(select(func.count()).select_from(dlq_actions)) == 0
        assert await conn.scalar(select(func.count()).select_from(outbox)) == 0


class SlowEnd(HeldInTransaction):
    """Held as `HeldInTransaction`; the transaction after it (the job writing its end) lasts until
    the stop's grace has run out (`grace_over`), as on a slow store."""

    def __init__(self, store: Store) -> None:
        super().__init__(store)
        self.slow, self.cancelled_later = False, False
        self.ending, self.grace_over = asyncio.Event(), asyncio.Event()

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[Any]:
        slow = self.slow
        self.slow = self.armed  # the one after the held one is slow
        async with super().transaction() as session:
            if slow:
                self.ending.set()
                try:
                    await self.grace_over.wait()  # the test's own wait_for bounds it
                except asyncio.CancelledError:
                    self.cancelled_later = True
                    raise
            yield session


async def test_the_grace_after_a_stop_does_not_cut_off_the_writing_of_the_jobs_end(
    store: Store, db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The grace's cancel came while the job, its batch rolled back, wrote its end on a slow store:
    the end was never written (the job showed running until stale)."""
    monkeypatch.setattr(dlq_jobs, "STOP_GRACE_S", 0.3)
    slows: list[SlowEnd] = []
    grace_ends = ReplayJob._cancel_if_storing

    def grace_ran_out(self: ReplayJob, entry: int) -> None:
        if not slows[0].ending.is_set():  # a loaded machine: the grace runs out once the end is begun
            asyncio.get_running_loop().call_later(0.01, grace_ran_out, self, entry)
            return
        grace_ends(self, entry)
        slows[0].grace_over.set()

    monkeypatch.setattr(ReplayJob, "_cancel_if_storing", grace_ran_out)
    async with job_on(db_url, SlowEnd) as (slow, dead_letters, job):
        slows.append(slow)
        await wait_for(slow.inside.is_set)
        job.stop()
        slow.release.set()  # the batch rolls back at once; its end lasts until the grace is over
        assert job.task is not None
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait_for(job.task, 10)
        assert slow.grace_over.is_set()  # the end was being written when the grace ran out
        assert not slow.cancelled_inside and not slow.cancelled_later
        seen = await dead_letters.job(job.id)
        assert seen is not None and (seen.state, seen.error) == ("abandoned", STOPPED)


async def test_finished_jobs_are_kept_their_term_and_then_forgotten(store: Store, db_url: str) -> None:
    now = utcnow()
    old = {"operator": "olaf", "filter": EVERY_OPEN, "total": 2, "done": 2, "skipped": 0, "failed": 0}
    async with store.transaction() as session:
        for job_id, age in (("old", KEEP_FINISHED + timedelta(hours=1)), ("recent", KEEP_FINISHED / 2)):
            at = now - age
            await session.execute(
                insert(dlq_replay_jobs).values(
                    id=job_id, state="done", started_at=at, progress_at=at, finished_at=at, **old
                )
            )
    async with replica(db_url) as a:
        job = await a.start_replay(letters(0, 1), "piet")
        assert job.task is not None
        await job.task
        assert await a.job("old") is None
        recent = await a.job("recent")
        assert recent is not None and recent.state == "done"


def test_a_job_keeps_what_it_replays_without_a_key_or_a_bsn() -> None:
    assert describe(Filter()) == EVERY_OPEN
    summary = describe(Filter(topic="t.in.v1", error_class="252-760-189", key="111222333"))
    assert summary == "open dead letters with topic=t.in.v1, error_class=(not kept), key=(not kept)"
    assert (
        describe(Filter(error_class="Permanent 0612345678"))
        == "open dead letters with error_class=(not kept)"
    )
