"""The retry ladder on PostgreSQL holds no transaction over a partner's call: a message is in one hub
process's hands by a lease (hub/retry/lease.py). A backlog in hand leaves the connection pool to the
rest of the hub; a crash between a call and its record delivers the message again once the lease
ends; a lease renewed keeps other processes off a long call; and no two processes call the partner
for one message at once, nor out of order for a key."""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections import defaultdict
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import pytest
from aiokafka import ConsumerRecord
from sqlalchemy import event, func, insert, select, text, update
from sqlalchemy.ext.asyncio import AsyncSession, create_async_engine

from hub.errors import TransientError
from hub.metrics import Metrics
from hub.retry import Delivery, RetryLadder, RetryPolicy
from hub.retry.tables import parked
from hub.store import Store
from hub.store.tables import outbox
from schemas.envelope import Envelope, utcnow
from tests.helpers.kafka import wait_for

pytestmark = pytest.mark.integration
PG = pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)
POLICY = RetryPolicy(in_place_attempts=1, schedule_s=(0.1, 0.2, 0.3), jitter=0.0)
LEASE_S = 30.0


class Clock:
    """The hub processes' clock, which a test moves on (a lease ending) without waiting for it."""

    def __init__(self) -> None:
        self.ahead = timedelta()

    def __call__(self) -> datetime:
        return utcnow() + self.ahead

    def advance(self, seconds: float) -> None:
        self.ahead += timedelta(seconds=seconds)


@dataclass
class Partner:
    """A partner whose calls for the messages named in `held` wait until `release` is set."""

    held: set[str] = field(default_factory=set)
    release: asyncio.Event = field(default_factory=asyncio.Event)
    calls: list[str] = field(default_factory=list)
    in_hand: set[str] = field(default_factory=set)
    cut: list[str] = field(default_factory=list)  # calls cancelled while they waited
    recorded: list[str] = field(default_factory=list)  # on_delivered, in the transaction that records

    async def deliver(self, message: Envelope) -> None:
        name = str(message.payload["name"])
        self.calls.append(name)
        if name not in self.held:
            return
        self.in_hand.add(name)
        try:
            await self.release.wait()
        except asyncio.CancelledError:
            self.cut.append(name)
            raise
        finally:
            self.in_hand.discard(name)

    async def on_delivered(self, session: AsyncSession, message: Envelope) -> None:
        self.recorded.append(str(message.payload["name"]))

    def delivery(self) -> Delivery:
        return Delivery(deliver=self.deliver, on_delivered=self.on_delivered)


def _ladder(
    store: Store, delivery: Delivery, clock: Callable[[], datetime] = utcnow, **kw: Any
) -> RetryLadder:
    name = kw.pop("name", "t")
    return RetryLadder(
        store, Metrics(), name=name, topic=f"{name}.v1", retry_topic=f"{name}.retry.v1",
        dlq_topic=f"{name}.dlq.v1", partner="p", delivery=delivery, policy=POLICY, clock=clock, **kw,
    )  # fmt: skip


async def _queue(ladder: RetryLadder, names: list[str], key: str | None = None) -> None:
    """Queue messages as the consumer does, due now; each its own key unless `key` is given."""
    rows = []
    for i, name in enumerate(names):
        message = Envelope(type="Cmd", payload={"name": name})
        value = message.to_bytes()
        k = key or name
        record: ConsumerRecord[Any, Any] = ConsumerRecord(
            ladder.topic, 0, i, 0, 0, k.encode(), value, None, len(k), len(value), []
        )
        rows.append(ladder._row(message, k, record, due_at=ladder.clock()))
    async with ladder.store.transaction() as session:
        await session.execute(insert(parked), rows)


async def _row(store: Store) -> Any:
    async with store.connect() as conn:
        return (await conn.execute(select(parked))).one()


class Frozen:
    """A hub process's store whose transactions wait until `thaw` is set: the process stalls (or is
    about to be killed) right after its partner's call, before the outcome is recorded."""

    def __init__(self, store: Store) -> None:
        self._store = store
        self.waiting, self.thaw = asyncio.Event(), asyncio.Event()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)

    @contextlib.asynccontextmanager
    async def transaction(self) -> AsyncIterator[AsyncSession]:
        self.waiting.set()
        await self.thaw.wait()
        async with self._store.transaction() as session:
            yield session


@contextlib.asynccontextmanager
async def _stores(db_url: str, n: int) -> AsyncIterator[list[Store]]:
    """`n` hub processes' stores (a connection pool each) on one database."""
    stores = [Store(db_url) for _ in range(n)]
    await stores[0].migrate()
    try:
        yield stores
    finally:
        for store in stores:
            await store.close()


@PG
async def test_a_backlog_in_hand_leaves_the_pool_to_the_rest_of_the_hub(
    db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """After an outage two ladders' backlogs fall due at once, more deliveries than the pool has
    connections, and their partners are slow. Each connector looks something up in the store on its
    way (as mail and the Verwijsindex do). While every call is in hand, another transaction of the
    hub (a consumer's, the relay's, HTTP intake's) still gets a connection; and no message climbs a
    rung for want of one."""
    pool = {"pool_size": 3, "max_overflow": 0, "pool_timeout": 5}  # far fewer than the calls in hand

    def small_pool(url: Any, **kw: Any) -> Any:
        return create_async_engine(url, **(kw | pool))

    monkeypatch.setattr("hub.store.db.create_async_engine", small_pool)
    store = Store(db_url)
    await store.migrate()
    partner, per_ladder = Partner(), 8
    everyone = asyncio.Event()

    async def deliver(message: Envelope) -> None:
        async with store.read() as session:  # the connector's own lookup (mail's reader, a signal)
            await session.execute(select(func.count()).select_from(parked))
        if len(partner.in_hand) + 1 == 2 * per_ladder:
            everyone.set()
        await partner.deliver(message)

    ladders = [_ladder(store, Delivery(deliver=deliver), name=name) for name in ("mail", "vi")]
    steps: list[asyncio.Task[int]] = []
    try:
        for ladder in ladders:
            names = [f"{ladder.name}-{i}" for i in range(per_ladder)]
            partner.held |= set(names)
            await _queue(ladder, names)
        steps = [asyncio.create_task(ladder.step()) for ladder in ladders]
        all_in_hand: asyncio.Task[Any] = asyncio.create_task(everyone.wait())
        done, _ = await asyncio.wait({all_in_hand, *steps}, timeout=120, return_when=asyncio.FIRST_COMPLETED)
        assert all_in_hand in done, f"{len(partner.in_hand)} of {2 * per_ladder} calls in hand; {done}"

        async def another_transaction() -> None:
            async with store.transaction() as session:
                await session.execute(text("SELECT 1"))

        other: asyncio.Task[Any] = asyncio.create_task(another_transaction())
        done, _ = await asyncio.wait({other, *steps}, timeout=60, return_when=asyncio.FIRST_COMPLETED)
        assert other in done and other.exception() is None, other.exception() if other.done() else None
        assert len(partner.in_hand) == 2 * per_ladder  # every call still in hand meanwhile

        partner.release.set()
        assert await asyncio.gather(*steps) == [per_ladder, per_ladder]
        assert sorted(partner.calls) == sorted(partner.held)  # each called once: no rung, no repeat
        async with store.connect() as conn:
            assert (await conn.execute(select(func.count()).select_from(parked))).scalar() == 0
            assert (await conn.execute(select(outbox.c.topic))).all() == []  # nothing parked, no DLQ
    finally:
        partner.release.set()
        for step in steps:
            step.cancel()
        await asyncio.gather(*steps, return_exceptions=True)
        await store.close()


@PG
async def test_a_crash_between_the_call_and_its_record_delivers_the_message_again(db_url: str) -> None:
    """A hub process is killed after the partner took the message and before its outcome was
    committed. Its lease stands: no other process takes the message before the lease ends, and once
    it has, one does, and records it (delivered at least once; `deliver` is idempotent)."""
    clock, partner = Clock(), Partner()
    async with _stores(db_url, 2) as (killed_store, other_store):
        killed = _ladder(killed_store, partner.delivery(), clock)
        other = _ladder(other_store, partner.delivery(), clock)
        await _queue(killed, ["m1"])
        frozen = Frozen(killed_store)
        killed.store = frozen  # type: ignore[assignment]
        step = asyncio.create_task(killed.step())
        await asyncio.wait_for(frozen.waiting.wait(), 20)  # called; its record not yet begun
        assert partner.calls == ["m1"]
        step.cancel()  # the process dies here
        with contextlib.suppress(asyncio.CancelledError):
            await step
        await killed_store.close()

        assert (await _row(other_store)).lease is not None
        assert await other.step() == 0  # in the killed process's hands until its lease ends
        clock.advance(LEASE_S)
        assert await other.step() == 1
        assert partner.calls == ["m1", "m1"] and partner.recorded == ["m1"]
        assert await other.parked_count() == 0


@PG
async def test_a_record_made_after_its_lease_ended_changes_nothing(db_url: str) -> None:
    """A process stalls between its call and the record for longer than its lease: another process
    takes the message. When the first one's record comes, it finds the lease no longer its own and
    leaves the message to the other, which records it once."""
    clock, partner = Clock(), Partner()
    async with _stores(db_url, 2) as (stalled_store, other_store):
        stalled = _ladder(stalled_store, partner.delivery(), clock)
        other = _ladder(other_store, partner.delivery(), clock)
        await _queue(stalled, ["m1"])
        frozen = Frozen(stalled_store)
        stalled.store = frozen  # type: ignore[assignment]
        late = asyncio.create_task(stalled.step())
        await asyncio.wait_for(frozen.waiting.wait(), 20)

        clock.advance(LEASE_S)
        partner.held.add("m1")  # the other process's call is in hand while the stalled one records
        taken = asyncio.create_task(other.step())
        await wait_for(lambda: "m1" in partner.in_hand, timeout_s=20)
        frozen.thaw.set()
        assert await asyncio.wait_for(late, 20) == 1
        assert partner.recorded == []  # the stalled record kept nothing
        row = await _row(other_store)
        assert row.lease is not None and (row.attempt, row.last_error) == (0, None)

        partner.release.set()
        assert await asyncio.wait_for(taken, 20) == 1
        assert partner.calls == ["m1", "m1"] and partner.recorded == ["m1"]
        assert await other.parked_count() == 0


@PG
async def test_a_lease_renewed_while_the_call_runs_keeps_other_processes_off(db_url: str) -> None:
    """A call may take longer than a lease: renewed meanwhile, the lease keeps the message in the
    caller's hands past the end it had when taken."""
    clock, partner = Clock(), Partner(held={"m1"})
    async with _stores(db_url, 2) as (calling_store, other_store):
        calling = _ladder(calling_store, partner.delivery(), clock)
        calling.leases.renew_s = 0.05  # in real seconds; the lease is LEASE_S by the clock
        other = _ladder(other_store, partner.delivery(), clock)
        await _queue(calling, ["m1"])
        in_hand = asyncio.create_task(calling.step())
        await wait_for(lambda: "m1" in partner.in_hand, timeout_s=20)
        taken_until = (await _row(other_store)).due_at

        clock.advance(LEASE_S * 2 / 3)

        async def renewed() -> bool:  # since the clock moved on: until then plus a whole lease
            return bool((await _row(other_store)).due_at >= taken_until + timedelta(seconds=LEASE_S * 2 / 3))

        await wait_for(renewed, timeout_s=20)
        clock.advance(LEASE_S * 2 / 3)  # past the end the lease had when taken
        assert await other.step() == 0
        assert partner.calls == ["m1"]

        partner.release.set()
        assert await asyncio.wait_for(in_hand, 20) == 1
        assert partner.calls == ["m1"] and partner.recorded == ["m1"]
        assert await calling.parked_count() == 0


@PG
async def test_a_call_whose_lease_was_taken_is_cut_off_and_records_nothing(db_url: str) -> None:
    """When the caller finds at a renewal that its lease is another's (it stalled past its end, or its
    clock lags), it stops its call at once and records nothing: the other process has the message."""
    partner = Partner(held={"m1"})
    async with _stores(db_url, 1) as (store,):
        calling = _ladder(store, partner.delivery())
        calling.leases.renew_s = 0.05
        await _queue(calling, ["m1"])
        in_hand = asyncio.create_task(calling.step())
        await wait_for(lambda: "m1" in partner.in_hand, timeout_s=20)
        async with store.transaction() as session:  # as another process does once a lease has ended
            await session.execute(update(parked).values(lease="another-process"))
        assert await asyncio.wait_for(in_hand, 20) == 1
        assert partner.cut == ["m1"] and partner.recorded == []
        row = await _row(store)
        assert (row.lease, row.attempt, row.last_error) == ("another-process", 0, None)


@PG
async def test_two_processes_deliver_each_message_once_one_at_a_time_in_order_per_key(db_url: str) -> None:
    """Two processes' ladders run side by side over one parking lot, with failures parking some
    messages: no message is called by both at once, each is delivered once, and per key in order."""
    keys, per_key = 12, 4
    failing = {f"k{k}-0": 2 for k in range(0, keys, 3)} | {f"k{k}-2": 1 for k in range(1, keys, 4)}
    in_hand: set[str] = set()
    overlaps: list[str] = []
    delivered: dict[str, list[str]] = defaultdict(list)
    by_process: dict[int, int] = defaultdict(int)
    rng = random.Random(7)

    def deliver_for(process: int) -> Callable[[Envelope], Any]:
        async def deliver(message: Envelope) -> None:
            name = str(message.payload["name"])
            if name in in_hand:
                overlaps.append(name)
            in_hand.add(name)
            try:
                await asyncio.sleep(rng.uniform(0, 0.02))
                if failing.get(name, 0) > 0:
                    failing[name] -= 1
                    raise TransientError("503")
                delivered[name.split("-")[0]].append(name)
                by_process[process] += 1
            finally:
                in_hand.discard(name)

        return deliver

    async with _stores(db_url, 2) as stores:
        ladders = [
            _ladder(store, Delivery(deliver=deliver_for(i)), concurrency=2) for i, store in enumerate(stores)
        ]
        for k in range(keys):
            await _queue(ladders[0], [f"k{k}-{i}" for i in range(per_key)], key=f"k{k}")
        runs = [asyncio.create_task(ladder.run(idle_s=0.05)) for ladder in ladders]
        try:

            async def all_delivered() -> bool:
                return sum(map(len, delivered.values())) == keys * per_key and not await any_parked()

            async def any_parked() -> bool:
                return await ladders[0].parked_count() > 0

            await wait_for(all_delivered, timeout_s=60)
        finally:
            for run in runs:
                run.cancel()
            await asyncio.gather(*runs, return_exceptions=True)
    assert overlaps == []
    assert dict(delivered) == {f"k{k}": [f"k{k}-{i}" for i in range(per_key)] for k in range(keys)}
    assert by_process[0] > 0 and by_process[1] > 0  # both took part


@PG
async def test_outcomes_recorded_together_keep_only_those_whose_lease_is_still_their_own(db_url: str) -> None:
    """Deliveries that ended together are recorded in one transaction; one whose lease another
    process took meanwhile is left to that process, and the others are still recorded."""
    partner = Partner()
    together: list[list[str]] = []

    async def on_delivered_many(session: AsyncSession, messages: list[Envelope]) -> None:
        together.append(sorted(str(m.payload["name"]) for m in messages))

    delivery = Delivery(deliver=partner.deliver, on_delivered=partner.on_delivered)
    delivery.on_delivered_many = on_delivered_many
    async with _stores(db_url, 1) as (store,):
        ladder = _ladder(store, delivery)
        await _queue(ladder, ["m1", "m2", "m3"])
        claimed = [await ladder.leases.claim(seq) for seq in (1, 2, 3)]
        rows = [found[0] for found in claimed if found is not None]
        async with store.transaction() as session:  # m2's lease ended, and another process took it
            await session.execute(update(parked).where(parked.c.seq == 2).values(lease="another-process"))
        await ladder._record_outcomes([(row, None) for row in rows])
        assert together == [] and sorted(partner.recorded) == ["m1", "m3"]  # one by one, m2 left alone
        assert (await _row(store)).lease == "another-process"

        await _queue(ladder, ["m4", "m5"])
        claimed = [await ladder.leases.claim(seq) for seq in (4, 5)]
        await ladder._record_outcomes([(found[0], None) for found in claimed if found is not None])
        assert together == [["m4", "m5"]]  # all as taken: together, in a few statements
        assert await ladder.parked_count() == 1


@PG
async def test_a_call_whose_lease_cannot_be_renewed_is_cut_off_before_the_lease_ends(db_url: str) -> None:
    """The store failing at every renewal: the call must stop `renew_s` before its lease ends, or
    another process takes the message once the lease ended and calls the partner beside it. The
    cut-off was given as a delay of the event loop's absolute time, so it came days later."""
    partner = Partner(held={"m1"})
    async with _stores(db_url, 1) as (store,):
        calling = _ladder(store, partner.delivery(), lease_s=0.6)
        calling.leases.renew_s = 0.2

        async def failing(_lease: Any) -> bool:
            raise OSError("the store does not answer")

        calling.leases._renew = failing  # type: ignore[method-assign]
        await _queue(calling, ["m1"])
        started = asyncio.get_running_loop().time()
        assert await asyncio.wait_for(calling.step(), 10) == 1
        assert asyncio.get_running_loop().time() - started < 5  # cut off at 0.4 s, not left running
        assert partner.cut == ["m1"] and partner.recorded == []
        row = await _row(store)
        assert row.lease is not None and row.attempt == 0  # due again when the lease ends
        assert (
            calling.metrics.registry.get_sample_value(
                "ketenhub_delivery_attempts_total", {"partner": "p", "result": "cut_off"}
            )
            == 1.0
        )


@PG
async def test_a_lease_is_kept_while_its_outcome_waits_to_be_recorded(db_url: str) -> None:
    """The lease was renewed over the call only: an outcome waiting behind a slow record (another
    delivery's, or a pool wait) let it end, and another process delivered the message again."""
    calls: list[tuple[str, str]] = []
    clock, recording, finish = Clock(), asyncio.Event(), asyncio.Event()

    def delivery(process: str) -> Delivery:
        async def deliver(message: Envelope) -> None:
            calls.append((process, str(message.payload["name"])))
            if message.payload["name"] == "m2":
                await recording.wait()  # its outcome comes while m1's record is being written

        async def on_delivered(session: AsyncSession, message: Envelope) -> None:
            if process == "A" and message.payload["name"] == "m1":
                recording.set()
                await finish.wait()  # a slow record: past the end of the lease m2 was taken with

        return Delivery(deliver=deliver, on_delivered=on_delivered)

    async with _stores(db_url, 2) as (a_store, b_store):
        a = _ladder(a_store, delivery("A"), clock, lease_s=1.0)
        a.leases.renew_s = 0.05  # in real seconds; the lease is 1 s by the clock
        b = _ladder(b_store, delivery("B"), clock, lease_s=1.0)
        await _queue(a, ["m1", "m2"])
        in_hand = asyncio.create_task(a.step())
        await wait_for(recording.is_set, timeout_s=20)
        clock.advance(2.0)  # past the end of both leases as they were taken

        async def renewed() -> bool:  # m2's outcome waits behind m1's record; its lease is kept
            async with b_store.connect() as conn:
                due = (await conn.execute(select(parked.c.due_at).where(parked.c.key == "m2"))).scalar_one()
            return bool(due > clock())

        await wait_for(renewed, timeout_s=20)
        assert await b.step() == 0  # both still in A's hands (m1 under its record's row lock)
        finish.set()
        assert await asyncio.wait_for(in_hand, 20) == 2
        assert sorted(calls) == [("A", "m1"), ("A", "m2")] and await a.parked_count() == 0


@PG
async def test_the_claims_that_come_together_take_their_messages_in_one_statement(db_url: str) -> None:
    """A claim a message, a pooled connection and a statement each, cost the Verwijsindex connector
    more than its call (bench/README): the claims that come while one is under way go in one
    statement; a row another process holds, or not yet due, is left out of it as it was of a claim
    of its own. A round claims a wave of its rows at once (64 with 16 slots: all 40 here), not slot
    by slot (16 and 16 and 8 statements' worth cost the connector a third of its CPU a command):
    those waiting for a slot are in hand."""
    partner = Partner(held={f"m{n}" for n in range(40)})
    async with _stores(db_url, 1) as (store,):
        claims = _statements(store, _is_claim)
        ladder = _ladder(store, partner.delivery(), concurrency=16)
        await _queue(ladder, [f"m{n}" for n in range(40)])
        assert [found is not None for found in await ladder.leases.claim_many([3, 3 + 40, 5])] == [
            True, False, True  # (no such row: left out)
        ]  # fmt: skip
        again, four = await ladder.leases.claim_many([3, 4])  # 3 in hand already (its lease is due later)
        assert again is None and four is not None and four[1].seq == 4
        assert await ladder.leases.claim_many([4]) == [None]
        claims.clear()
        async with store.transaction() as session:  # their leases end: due again, as another's would
            await session.execute(update(parked).values(due_at=ladder.clock(), lease=None))

        step = asyncio.create_task(ladder.step())
        await wait_for(lambda: _holding(partner, 16))  # the round's first slots
        assert len(claims) == 1
        async with store.connect() as conn:  # the 24 waiting for a slot are in hand as well
            leased = select(func.count()).select_from(parked).where(parked.c.lease.is_not(None))
            assert await conn.scalar(leased) == 40
        partner.release.set()
        assert await step == 40
    assert sorted(partner.recorded) == sorted(f"m{n}" for n in range(40))  # each once
    assert len(claims) == 1, len(claims)  # the wave in one statement


@PG
async def test_a_stopping_hub_lets_go_of_the_messages_it_took_in_hand_and_never_called(db_url: str) -> None:
    """A round takes a wave of its messages in hand before they wait for a slot; stopped, those never
    called are due again at once, not 30 s later when their leases end. Those called keep theirs:
    the partner may have them."""
    partner = Partner(held={f"m{n}" for n in range(6)})
    async with _stores(db_url, 1) as (store,):
        ladder = _ladder(store, partner.delivery(), concurrency=2)
        await _queue(ladder, [f"m{n}" for n in range(6)])
        step = asyncio.create_task(ladder.step())
        await wait_for(lambda: _holding(partner, 2))
        step.cancel()  # the hub stopping past its grace
        with contextlib.suppress(asyncio.CancelledError):
            await step
        assert sorted(partner.cut) == sorted(partner.calls) and len(partner.calls) == 2
        async with store.connect() as conn:
            rows = (await conn.execute(select(parked))).all()
        by_name = {Envelope.from_bytes(r.value).payload["name"]: r for r in rows}
        called = set(partner.calls)
        assert all(by_name[n].lease is not None for n in called)
        assert all(by_name[n].lease is None and by_name[n].due_at <= utcnow() for n in set(by_name) - called)
        other = _ladder(store, Partner().delivery())  # another process, or this one restarted: at once
        assert await other.step() == 4


@PG
async def test_a_round_takes_its_messages_in_hand_wave_by_wave(db_url: str) -> None:
    """Two calls at once: a wave of eight messages in one statement, the next when each of the
    eight has its slot. Not the whole round at once: another process takes its share of what is
    due, and a killed process holds back no more than a wave and its calls."""
    partner = Partner(held={f"m{n}" for n in range(20)})
    async with _stores(db_url, 1) as (store,):
        claims = _statements(store, _is_claim)
        ladder = _ladder(store, partner.delivery(), concurrency=2)
        await _queue(ladder, [f"m{n}" for n in range(20)])
        step = asyncio.create_task(ladder.step())
        await wait_for(lambda: _holding(partner, 2))
        async with store.connect() as conn:
            leased = select(func.count()).select_from(parked).where(parked.c.lease.is_not(None))
            assert await conn.scalar(leased) == 8 and len(claims) == 1
        partner.release.set()
        assert await step == 20
    assert sorted(partner.recorded) == sorted(f"m{n}" for n in range(20))
    assert len(claims) == 3  # 8, 8 and 4


@PG
async def test_leases_renewed_together_are_renewed_in_one_statement(db_url: str) -> None:
    """A wave's keepers start together and wake together: one renewal a lease, each its own pooled
    connection, came in bursts of a wave's size. Those that come together go in one statement; a
    lease no longer holding its row is not renewed, and says so; one whose row is locked (its outcome
    being recorded) holds back none of the others, and is not renewed this time."""
    async with _stores(db_url, 1) as (store,):
        ladder = _ladder(store, Partner().delivery())
        await _queue(ladder, [f"m{n}" for n in range(6)])
        async with store.connect() as conn:
            seqs = list((await conn.execute(select(parked.c.seq).order_by(parked.c.seq))).scalars())
        taken = await ladder.leases.claim_many(seqs)
        leases = [t[1] for t in taken if t is not None]
        assert len(leases) == 6
        async with store.transaction() as session:  # one taken by another process meanwhile
            await session.execute(update(parked).where(parked.c.seq == seqs[0]).values(lease="another"))
        renewals = _statements(store, _is_renewal)
        before = [lease.until for lease in leases]
        async with store.transaction() as recording:  # the last one's outcome being recorded
            await recording.execute(select(parked.c.seq).where(parked.c.seq == seqs[5]).with_for_update())
            renewed = await asyncio.wait_for(
                asyncio.gather(*(ladder.leases._renew(lease) for lease in leases)), 10
            )
        assert renewed == [False, True, True, True, True, None] and len(renewals) == 1
        assert [a.until > b for a, b in zip(leases, before, strict=True)] == [False, *[True] * 4, False]


def _statements(store: Store, which: Callable[[str], bool]) -> list[str]:
    """The statements `which` picks, as the store sends them from now on."""
    seen: list[str] = []

    def note(_c: Any, _cur: Any, statement: str, *_: Any) -> None:
        if which(statement):
            seen.append(statement)

    event.listen(store.engine.sync_engine, "before_cursor_execute", note)
    return seen


def _is_renewal(statement: str) -> bool:
    return statement.startswith("UPDATE retry_parked SET due_at") and not _is_claim(statement)


def _is_claim(statement: str) -> bool:
    """A claim skips locked rows and sets the lease's token (`Leases.claim_many`); a renewal skips
    them too, but pushes `due_at` on only; a record locks, and sets what it sets."""
    skips = statement.startswith("UPDATE retry_parked SET due_at") and "SKIP LOCKED" in statement
    return skips and "lease=" in statement.split(" WHERE ")[0]


async def _holding(partner: Partner, n: int) -> bool:
    return len(partner.in_hand) >= n


@PG
async def test_giving_back_a_lease_leaves_a_row_taken_again_under_another(db_url: str) -> None:
    """A row whose lease ran out while it waited for a slot can be taken again, by the same process,
    under a later wave's lease. Giving back the first wave's leases lets go of the rows each lease
    still holds, not of a row another of the given-back leases holds now (that one may be in a call)."""
    clock = Clock()
    async with _stores(db_url, 1) as (store,):
        ladder = _ladder(store, Partner().delivery(), clock)
        await _queue(ladder, ["m1", "m2"])
        async with store.connect() as conn:
            seqs = dict((await conn.execute(select(parked.c.key, parked.c.seq))).all())
        first, second = seqs["m1"], seqs["m2"]  # each message is keyed by its name
        taken = await ladder.leases.claim(first)
        assert taken is not None
        _, old = taken
        clock.advance(LEASE_S + 1)  # the first wave's lease ran out: m1 is due again
        again = await ladder.leases.claim_many([first, second])
        assert all(t is not None for t in again)
        (_, m1_now), (_, m2_now) = (t for t in again if t is not None)
        assert m1_now.token == m2_now.token != old.token

        await ladder.leases.give_back([old, m2_now])  # m1 under its old lease, m2 under the new one

        async with store.connect() as conn:
            rows = {r.seq: r for r in (await conn.execute(select(parked))).all()}
        assert rows[first].lease == m1_now.token  # still in hand by the lease it has now
        assert rows[second].lease is None and rows[second].due_at <= clock()
