"""The retry ladder on the real broker and both stores: order per key, no head-of-line blocking, DLQ."""

from __future__ import annotations

import asyncio
import contextlib
import json
import zlib
from collections import defaultdict
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import event, func, insert, select
from sqlalchemy.exc import OperationalError
from sqlalchemy.ext.asyncio import AsyncSession

from hub.embedded import EmbeddedKafka
from hub.errors import PermanentError, TransientError
from hub.metrics import Metrics
from hub.ops.dlq import REPLAYED_FROM, DeadLetters, ReplayJob
from hub.retry import Delivery, RetryLadder, RetryPolicy
from hub.retry.lease import Leases
from hub.retry.tables import parked
from hub.runtime import Hub
from hub.spine import Tx
from hub.spine.dlq import DLQ_HEADERS
from hub.store import Store
from hub.store.tables import audit_log, outbox
from hub.topics import Topic
from schemas.envelope import Envelope, utcnow
from tests.conftest import make_settings
from tests.helpers.kafka import headers_of, produce, read_topic, wait_for

pytestmark = pytest.mark.integration
CMD = Topic("test.cmd.v1")
FAST = RetryPolicy(in_place_attempts=2, in_place_wait_s=0.01, schedule_s=(0.2, 0.4, 0.6), jitter=0.0)


@dataclass
class FakePartner:
    """An in-memory stand-in for a partner system, failing as scripted per message name."""

    transient_failures: dict[str, int] = field(default_factory=dict)
    permanent: set[str] = field(default_factory=set)
    delivered: list[str] = field(default_factory=list)
    calls: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    called_at: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    retry_after: float | None = None  # sent with every transient failure (a 429's Retry-After)
    slow_s: float = 0.0  # how long each call takes
    calling: asyncio.Event = field(default_factory=asyncio.Event)
    hold: tuple[str, int] | None = None  # (name, call number): that call waits for `release`
    release: asyncio.Event = field(default_factory=asyncio.Event)

    async def deliver(self, message: Envelope) -> None:
        name = str(message.payload["name"])
        self.calls[name] += 1
        self.calling.set()
        if self.hold == (name, self.calls[name]):
            await self.release.wait()
        if self.slow_s:
            await asyncio.sleep(self.slow_s)
        self.called_at[name].append(asyncio.get_running_loop().time())
        if name in self.permanent:
            raise PermanentError("partner refused the message: field not allowed")
        if self.transient_failures.get(name, 0) > 0:
            self.transient_failures[name] -= 1
            raise TransientError("503 from partner", retry_after=self.retry_after)
        self.delivered.append(name)


def ladder_component(  # type: ignore[no-untyped-def]
    partner: FakePartner, holder: dict[str, RetryLadder], delivery: Delivery | None = None
):
    def register(hub: Hub) -> None:
        assert hub.spine is not None and hub.store is not None
        ladder = RetryLadder(
            hub.store,
            hub.metrics,
            name="test",
            topic=hub.topic(CMD.name),
            retry_topic=hub.topic(CMD.retry),
            dlq_topic=hub.topic(CMD.dlq),
            partner="fake",
            delivery=delivery or Delivery(deliver=partner.deliver),
            policy=FAST,
            group=hub.group("ladder"),  # the group below, whose inbox a replayed dead letter clears
        )
        holder["ladder"] = ladder
        hub.background["test-retry"] = ladder.run

        @hub.spine.subscribe(hub.topic(CMD.name), group=hub.group("ladder"), dlq=hub.topic(CMD.dlq))
        async def send(tx: Tx, message: Envelope) -> None:
            await ladder.handle(tx, message, key=str(message.payload["key"]))

    return register


def _cmd(name: str, key: str) -> tuple[bytes, bytes, list[tuple[str, bytes]]]:
    env = Envelope(type="Cmd", payload={"name": name, "key": key})
    return key.encode(), env.to_bytes(), env.headers()


async def _start(
    kafka: EmbeddedKafka, db_url: str, unique: str, partner: FakePartner, delivery: Delivery | None = None
) -> tuple[Hub, RetryLadder]:
    holder: dict[str, RetryLadder] = {}
    settings = make_settings(kafka, db_url, unique).model_copy(update={"components": ["verwijsindex"]})
    hub = Hub(
        settings,
        registrars={"verwijsindex": [ladder_component(partner, holder, delivery)]},
        extra_topics=[CMD, Topic(CMD.retry), Topic(CMD.dlq)],
    )
    await hub.start()
    return hub, holder["ladder"]


async def test_the_parked_count_is_what_waits_in_the_store_not_every_parking_announced(
    kafka: EmbeddedKafka, db_url: str, unique: str
) -> None:
    """No group reads a retry topic (it announces each parking), so its offsets counted every parking
    of the last week: after every message was delivered the dashboard still showed them parked."""
    from hub.ops.health import Monitor
    from hub.ops.lag import LagProbe

    # b fails twice in place and is parked; its first rung's call waits until released
    partner = FakePartner(transient_failures={"b": 2}, hold=("b", 3))
    hub, _ = await _start(kafka, db_url, unique, partner)
    probe = LagProbe(hub.kafka_options, timeout_s=30, describe_groups=False)  # a busy machine
    try:
        await produce(kafka.bootstrap, hub.topic(CMD.name), [_cmd("b", "kb"), _cmd("c", "kb")])
        await wait_for(lambda: partner.calls["b"] == 3, timeout_s=60)
        await read_topic(kafka.bootstrap, hub.topic(CMD.retry), expect=1)  # b's parking, announced
        monitor = Monitor(
            probe,
            hub.store,  # type: ignore[arg-type]
            topics=[hub.topic(CMD.name), hub.topic(CMD.retry), hub.topic(CMD.dlq)],
            groups=lambda: {},
            group_prefix=hub.settings.kafka.group_prefix,
            ladders={"test": CMD},
        )
        health = await monitor.health()
        assert health.retry_parked == {hub.topic(CMD.retry): 2}  # b failed, c waits behind it

        partner.release.set()
        await wait_for(lambda: partner.delivered == ["b", "c"], timeout_s=30)

        async def none_parked() -> bool:  # a new sample once the cache is stale; its outcome recorded
            await asyncio.sleep(monitor.cache_s)
            return (await monitor.health()).retry_parked == {hub.topic(CMD.retry): 0}

        await wait_for(none_parked, timeout_s=30)
    finally:
        await probe.close()
        await hub.stop()


async def test_parked_key_keeps_order_and_other_keys_pass(
    kafka: EmbeddedKafka, db_url: str, unique: str
) -> None:
    # a1 fails 4 times: 2 in place, then parked attempts 1 and 2 fail, attempt 3 succeeds. Its first
    # parked attempt (call 3) is held until a3 is seen waiting, so a3 surely arrives while a1 is parked.
    partner = FakePartner(transient_failures={"a1": 4}, hold=("a1", 3))
    hub, ladder = await _start(kafka, db_url, unique, partner)
    try:
        await produce(
            kafka.bootstrap,
            hub.topic(CMD.name),
            [_cmd("a1", "youth-a"), _cmd("a2", "youth-a"), _cmd("b1", "youth-b")],
        )
        await wait_for(lambda: partner.calls["a1"] >= 2)  # failed in place
        # parked: its announcement is published from the outbox after the park committed
        assert await read_topic(kafka.bootstrap, hub.topic(CMD.retry), expect=1, timeout_s=20)
        await produce(kafka.bootstrap, hub.topic(CMD.name), [_cmd("a3", "youth-a")])
        # a3 announced as waiting behind a1 (attempt 0) before a1's next attempt may go on
        assert len(await read_topic(kafka.bootstrap, hub.topic(CMD.retry), expect=2, timeout_s=30)) == 2
        assert partner.delivered == ["b1"]
        partner.release.set()
        await wait_for(lambda: len(partner.delivered) == 4, timeout_s=30)
        # b1 was not held up by youth a's trouble; a2 and a3 waited behind a1.
        assert partner.delivered == ["b1", "a1", "a2", "a3"]
        assert partner.calls["a2"] == 1 and partner.calls["a3"] == 1 and partner.calls["b1"] == 1
        assert partner.calls["a1"] == 5  # 2 in place, then one call per parked attempt: no tight loop

        async def unparked() -> bool:  # the outcome is recorded just after the partner's answer
            return await ladder.parked_count() == 0

        await wait_for(unparked, timeout_s=20)
        retry = await read_topic(kafka.bootstrap, hub.topic(CMD.retry), expect=4)
        attempts = sorted(int(headers_of(r)["retry-attempt"]) for r in retry)
        # a1 parked at attempts 1..3; a3, sent while a1 was parked, announced as waiting (0). a2 came
        # in a1's batch, before a1 failed: it waited its turn unannounced, like any queued message.
        assert attempts == [0, 1, 2, 3]
    finally:
        await hub.stop()


async def test_a_short_retry_after_is_honoured_by_the_quick_retry_in_place(
    kafka: EmbeddedKafka, db_url: str, unique: str
) -> None:
    # Retry-After 0.6 s is short enough to retry in place (≤ in_place_max_wait_s), but the quick
    # retry must still wait for it, not fire after the policy's 0.01 s.
    partner = FakePartner(transient_failures={"a1": 1}, retry_after=0.6)
    hub, _ = await _start(kafka, db_url, unique, partner)
    try:
        await produce(kafka.bootstrap, hub.topic(CMD.name), [_cmd("a1", "youth-a")])
        await wait_for(lambda: partner.delivered == ["a1"], timeout_s=20)
        first, second = partner.called_at["a1"]
        assert second - first >= 0.6
        assert partner.calls["a1"] == 2  # retried in place, not parked
    finally:
        await hub.stop()


async def test_a_stopping_hub_records_the_delivery_in_hand_so_it_is_not_sent_again(
    kafka: EmbeddedKafka, db_url: str, unique: str
) -> None:
    partner = FakePartner(slow_s=0.8)
    hub, _ = await _start(kafka, db_url, unique, partner)
    try:
        await produce(kafka.bootstrap, hub.topic(CMD.name), [_cmd("a1", "youth-a")])
        await asyncio.wait_for(partner.calling.wait(), 20)
    finally:
        await hub.stop()  # while the call is in hand
    assert partner.delivered == ["a1"]
    hub, ladder = await _start(kafka, db_url, unique, partner)  # restarted: nothing left to send
    try:
        assert await ladder.parked_count() == 0
        await ladder.step()
        assert partner.calls["a1"] == 1
    finally:
        await hub.stop()


async def test_permanent_error_and_exhausted_ladder_go_to_dlq(
    kafka: EmbeddedKafka, db_url: str, unique: str
) -> None:
    partner = FakePartner(transient_failures={"x1": 100}, permanent={"p1"})
    hub, ladder = await _start(kafka, db_url, unique, partner)
    try:
        await produce(
            kafka.bootstrap,
            hub.topic(CMD.name),
            [_cmd("p1", "youth-p"), _cmd("x1", "youth-x"), _cmd("c1", "youth-c")],
        )
        dead = await read_topic(kafka.bootstrap, hub.topic(CMD.dlq), expect=2, timeout_s=30)
        by_name = {Envelope.from_bytes(r.value).payload["name"]: headers_of(r) for r in dead}
        assert set(by_name) == {"p1", "x1"}
        for headers in by_name.values():
            assert set(DLQ_HEADERS) <= set(headers)
        assert by_name["p1"]["dlq-attempts"] == "1"
        assert by_name["p1"]["dlq-exception-class"].endswith("PermanentError")
        assert by_name["x1"]["dlq-attempts"] == "4" and by_name["x1"]["dlq-exception-class"].endswith(
            "TransientError"
        )
        assert by_name["x1"]["dlq-original-topic"] == hub.topic(CMD.name)
        # Both failure times carry their zone (the first comes back from the store: naive on SQLite)
        first = datetime.fromisoformat(by_name["x1"]["dlq-first-failure"])
        last = datetime.fromisoformat(by_name["x1"]["dlq-last-failure"])
        assert first.utcoffset() == last.utcoffset() == timedelta(0) and first < last
        assert partner.calls["p1"] == 1  # permanent: never retried
        assert partner.calls["x1"] == 2 + 3
        assert partner.delivered == ["c1"]
        await wait_for(lambda: _zero(ladder))
    finally:
        await hub.stop()


async def test_a_failing_hook_leaves_the_ladders_record_standing(
    kafka: EmbeddedKafka, db_url: str, unique: str
) -> None:
    """A connector's bookkeeping that fails does not undo what the ladder recorded: a delivered
    message is not sent again, a parked one is retried on schedule, a dead one reaches the DLQ; each
    failure is counted, and a delivery is audited with what the ladder knows of it."""
    partner = FakePartner(transient_failures={"p1": 3}, permanent={"d1"})
    row_id = 2**40 + zlib.crc32(unique.encode())

    async def broken(session: AsyncSession, message: Envelope, *args: object) -> None:
        """Writes, then fails on a statement of its own: none of what it wrote may stay."""
        partial = {"id": row_id, "at": utcnow(), "action": "hook.partial", "user": "t", "system": "t"}
        await session.execute(insert(audit_log).values(**partial, objects={}))
        await session.execute(insert(audit_log).values(**partial, objects={}))  # the same id: refused

    delivery = Delivery(deliver=partner.deliver, on_delivered=broken, on_parked=broken, on_dead=broken)
    hub, ladder = await _start(kafka, db_url, unique, partner, delivery)
    try:
        youth = "b" * 64  # a youth key, here after a receiver's name, as the webhook ladder keys
        sent = [_cmd("ok1", f"jeugdwerk:{youth}"), _cmd("p1", "k2"), _cmd("d1", "k3")]
        await produce(kafka.bootstrap, hub.topic(CMD.name), sent)
        dead = await read_topic(kafka.bootstrap, hub.topic(CMD.dlq), expect=1, timeout_s=30)
        assert [Envelope.from_bytes(r.value).payload["name"] for r in dead] == ["d1"]
        await wait_for(lambda: sorted(partner.delivered) == ["ok1", "p1"], timeout_s=30)
        await wait_for(lambda: _zero(ladder))  # nothing left parked: nothing is sent again
        assert await ladder.step() == 0
        assert dict(partner.calls) == {"ok1": 1, "p1": 2 + 1 + 1, "d1": 1}

        def failures(hook: str) -> float | None:
            labels = {"ladder": "test", "hook": hook}
            return hub.metrics.registry.get_sample_value("ketenhub_delivery_hook_failures_total", labels)

        assert (failures("on_delivered"), failures("on_parked"), failures("on_dead")) == (2, 2, 1)
        assert failures("audit") == 0
        assert hub.store is not None
        async with hub.store.connect() as conn:
            partial = select(func.count()).select_from(audit_log).where(audit_log.c.action == "hook.partial")
            assert (await conn.execute(partial)).scalar() == 0
            audited = (
                await conn.execute(
                    select(audit_log.c.objects, audit_log.c.youth_key).where(
                        audit_log.c.action == "delivery.recorded_without_details"
                    )
                )
            ).all()
            by_id = {row.objects["message_id"]: row.youth_key for row in audited}
        by_name = {
            Envelope.from_bytes(value).payload["name"]: Envelope.from_bytes(value) for _, value, _ in sent
        }
        assert by_id == {by_name["ok1"].message_id: youth, by_name["p1"].message_id: None}
    finally:
        await hub.stop()


async def test_a_delivery_is_not_sent_again_when_even_its_fallback_audit_fails(
    kafka: EmbeddedKafka, db_url: str, unique: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Sending a delivered message again would disclose it again: when neither the hook nor the
    ladder's own audit entry can be written, the delivery still stands, counted and logged."""
    partner = FakePartner()

    async def broken(session: AsyncSession, message: Envelope) -> None:
        raise ValueError("bookkeeping cannot take this message")

    async def refused(*args: object, **kwargs: object) -> None:
        raise ValueError("the audit log refused the entry")

    monkeypatch.setattr("hub.retry.delivery.write_audit", refused)
    hub, ladder = await _start(
        kafka, db_url, unique, partner, Delivery(deliver=partner.deliver, on_delivered=broken)
    )
    try:
        await produce(kafka.bootstrap, hub.topic(CMD.name), [_cmd("a1", "k1"), _cmd("a2", "k2")])
        await wait_for(lambda: sorted(partner.delivered) == ["a1", "a2"], timeout_s=30)
        await wait_for(lambda: _zero(ladder))
        assert await ladder.step() == 0 and dict(partner.calls) == {"a1": 1, "a2": 1}
        labels = {"ladder": "test", "hook": "audit"}
        assert hub.metrics.registry.get_sample_value("ketenhub_delivery_hook_failures_total", labels) == 2
    finally:
        await hub.stop()


@pytest.mark.parametrize("told_fails", [False, True], ids=["told", "telling-fails-too"])
async def test_an_outcome_that_cannot_be_recorded_is_postponed_not_tried_at_once(
    kafka: EmbeddedKafka, db_url: str, unique: str, told_fails: bool
) -> None:
    """When the store fails while a delivery is recorded, and again as the postponement records it
    once more, nothing of it is kept: the message is delivered again (idempotent), but on the
    ladder's schedule, not as fast as the scheduler runs. The connector is told (`on_parked`); that
    failing too, even on the store's error, does not undo the postponement (it did: the message went
    again every round)."""
    partner = FakePartner()
    failures = 4  # two postponements: each the round's record and the postponement's try again

    async def store_trouble(session: AsyncSession, message: Envelope) -> None:
        nonlocal failures
        if failures > 0:
            failures -= 1
            raise OperationalError("UPDATE signals", {}, Exception("server closed the connection"))

    told: list[tuple[int, datetime, str]] = []

    async def on_parked(_s: AsyncSession, _m: Envelope, attempt: int, due: datetime, error: str) -> None:
        told.append((attempt, due, error))  # a connector's status: when it is tried again, and why
        if told_fails:
            raise OperationalError("UPDATE signals", {}, Exception("database is locked"))

    delivery = Delivery(deliver=partner.deliver, on_delivered=store_trouble, on_parked=on_parked)
    hub, ladder = await _start(kafka, db_url, unique, partner, delivery)
    try:
        await produce(kafka.bootstrap, hub.topic(CMD.name), [_cmd("a1", "k1")])
        await wait_for(lambda: failures == 0 and _zero(ladder), timeout_s=30)
        assert partner.calls["a1"] == 3  # the first call, then one per postponement
        first, second, third = partner.called_at["a1"]
        assert second - first >= FAST.schedule_s[0] and third - second >= FAST.schedule_s[1]
        assert [attempt for attempt, _, _ in told] == [0, 0]  # the connector was told each time
        # in words a caseworker's status can show: the hub's trouble, not the partner's
        assert all(
            error.startswith("the hub could not record its outcome: ")
            and "server closed the connection" in error
            for _, _, error in told
        ), told
        labels = {"ladder": "test"}
        assert hub.metrics.registry.get_sample_value("ketenhub_delivery_postponed_total", labels) == 2
    finally:
        await hub.stop()


class FlakyStore:
    """The hub's store, whose next `failures` transactions fail as they commit (a full disk, a lost
    connection): for the ladder's own transactions only, so the consumer's are not touched."""

    def __init__(self, store: Store, failures: int) -> None:
        self._store, self.failures = store, failures

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)

    @contextlib.asynccontextmanager
    async def transaction(self) -> AsyncIterator[AsyncSession]:
        async with self._store.transaction() as session:
            yield session
            if self.failures > 0:  # raised inside: the real transaction rolls back
                self.failures -= 1
                raise OperationalError("COMMIT", {}, Exception("disk I/O error"))


async def test_a_round_forgets_the_envelopes_it_parsed(
    kafka: EmbeddedKafka, db_url: str, unique: str
) -> None:
    """A round parses each row once and keeps the envelope for its call and record; kept past the
    round, a quiet ladder would hold a youth's message in memory until a thousand more came."""
    partner = FakePartner(transient_failures={"a1": 2})  # parsed by the first round, tried again later
    hub, ladder = await _start(kafka, db_url, unique, partner)
    try:
        await produce(kafka.bootstrap, hub.topic(CMD.name), [_cmd("a1", "k1")])
        await wait_for(lambda: partner.calls["a1"] >= 2)  # failed in place, parked
        await wait_for(lambda: not ladder._messages)
        assert await ladder.parked_count() == 1
    finally:
        await hub.stop()


async def test_a_delivery_whose_round_failed_to_commit_is_recorded_by_the_postponement(
    kafka: EmbeddedKafka, db_url: str, unique: str
) -> None:
    """The round's transaction failed as it committed (a lost connection): the postponement's own,
    which the store answers, records the delivery rather than putting it off to be sent again."""
    partner = FakePartner()
    hub, ladder = await _start(kafka, db_url, unique, partner)
    try:
        assert hub.store is not None
        ladder.store = FlakyStore(hub.store, 1)  # type: ignore[assignment]
        await produce(kafka.bootstrap, hub.topic(CMD.name), [_cmd("a1", "k1")])
        await wait_for(lambda: partner.delivered == ["a1"], timeout_s=30)
        await wait_for(lambda: _zero(ladder))
        assert ladder.store.failures == 0  # the round's commit did fail
        assert await ladder.step() == 0 and partner.calls["a1"] == 1
        postponed = hub.metrics.registry.get_sample_value(
            "ketenhub_delivery_postponed_total", {"ladder": "test"}
        )
        assert postponed == 0
    finally:
        await hub.stop()


async def test_a_round_whose_postponement_fails_too_is_not_sent_again_at_once(
    kafka: EmbeddedKafka, db_url: str, unique: str
) -> None:
    """Nothing of the round is kept, nor of its postponement, so its deliveries go out again
    (idempotent), but after the scheduler's backoff (on PostgreSQL: once the message's lease, still
    standing, ended)."""
    partner = FakePartner()
    hub, ladder = await _start(kafka, db_url, unique, partner)
    try:
        assert hub.store is not None
        ladder.store = FlakyStore(hub.store, 2)  # type: ignore[assignment]
        ladder.leases = Leases(hub.store, ladder.clock, lease_s=1.0)  # not the 30 s a killed hub's wait
        await produce(kafka.bootstrap, hub.topic(CMD.name), [_cmd("a1", "k1")])
        await wait_for(lambda: partner.delivered.count("a1") == 2, timeout_s=30)
        await wait_for(lambda: _zero(ladder))
        assert await ladder.step() == 0 and partner.calls["a1"] == 2
        first, second = partner.called_at["a1"]
        assert second - first >= 1.0  # the scheduler's backoff, or the lease's end
        postponed = hub.metrics.registry.get_sample_value(
            "ketenhub_delivery_postponed_total", {"ladder": "test"}
        )
        assert postponed == 0
    finally:
        await hub.stop()


def _as_received(
    name: str, key: str, *, record_key: bytes | None
) -> tuple[bytes | None, bytes, list[tuple[str, bytes]]]:
    """A command as a partner might write it: a valid envelope, but not byte for byte as the hub would
    write it (indented, its fields in another order, +00:00 for Z), and a header of the partner's own."""
    env = Envelope(type="Cmd", payload={"name": name, "key": key})
    fields = json.loads(env.to_bytes())
    fields["occurred_at"] = env.occurred_at.isoformat()
    value = json.dumps(dict(reversed(fields.items())), indent=2).encode()
    assert Envelope.from_bytes(value) == env and value != env.to_bytes()
    return record_key, value, [*env.headers(), ("partner-trace", f"trace-{name}".encode())]


async def test_a_dead_letter_is_the_record_as_received_and_its_replay_too(
    kafka: EmbeddedKafka, db_url: str, unique: str
) -> None:
    # x1 goes to the DLQ past the last rung; p1, a record without a key for the same youth, arrives
    # while x1 is parked, waits behind it and is refused at once.
    partner = FakePartner(transient_failures={"x1": 100}, permanent={"p1"})
    hub, ladder = await _start(kafka, db_url, unique, partner)
    topic, dlq_topic = hub.topic(CMD.name), hub.topic(CMD.dlq)
    try:
        assert hub.store is not None and hub.relay is not None
        x1 = _as_received("x1", "youth-x", record_key=b"youth-x")
        p1 = _as_received("p1", "youth-x", record_key=None)
        await produce(kafka.bootstrap, topic, [x1])
        await read_topic(kafka.bootstrap, hub.topic(CMD.retry), expect=1)  # x1 parked at attempt 1
        await produce(kafka.bootstrap, topic, [p1])
        dead = await read_topic(kafka.bootstrap, dlq_topic, expect=2, timeout_s=30)
        assert partner.calls["p1"] == 1 and partner.calls["x1"] == 2 + 3

        # Byte for byte what came off the topic: value, key, and its headers beside the DLQ's own.
        assert sorted(r.value for r in dead) == sorted([x1[1], p1[1]])
        for record_key, value, headers in (x1, p1):
            (letter,) = [r for r in dead if r.value == value]
            assert letter.key == record_key
            got = headers_of(letter)
            assert set(DLQ_HEADERS) <= set(got)
            assert {k: v for k, v in got.items() if k not in DLQ_HEADERS} == {
                k: v.decode() for k, v in headers
            }

        # Replayed, the original topic gets the received record again, and the partner, now willing,
        # gets each command once more.
        partner.transient_failures.clear()
        partner.permanent.clear()
        letters = DeadLetters(hub.store, hub.kafka_options, [dlq_topic], wake=hub.relay.wake)
        job = await letters.start_replay(await letters.find(), "olaf")
        await wait_for(lambda: _is_done(job), timeout_s=10)
        assert (job.done, job.skipped, job.failed) == (2, 0, 0)
        records = await read_topic(kafka.bootstrap, topic, expect=4)
        replayed = [r for r in records if REPLAYED_FROM in headers_of(r)]
        assert len(replayed) == 2
        for record_key, value, headers in (x1, p1):
            (again,) = [r for r in replayed if r.value == value]
            assert again.key == record_key
            got = {k: v for k, v in headers_of(again).items() if k != REPLAYED_FROM}
            assert got == {k: v.decode() for k, v in headers}
        await wait_for(lambda: sorted(partner.delivered) == ["p1", "x1"], timeout_s=20)
        await wait_for(lambda: _zero(ladder))
    finally:
        await hub.stop()


async def test_a_message_parked_before_the_ladder_kept_its_record_is_dead_lettered_as_parked(
    kafka: EmbeddedKafka, db_url: str, unique: str
) -> None:
    # A row from before migration 0011 (no record columns) still reaches the DLQ: as the message it holds.
    partner = FakePartner(permanent={"old"})
    hub, ladder = await _start(kafka, db_url, unique, partner)
    try:
        assert hub.store is not None
        env = Envelope(type="Cmd", payload={"name": "old", "key": "youth-o"})
        origin = {"original-partition": "2", "original-offset": "41"}
        async with hub.store.transaction() as session:
            await session.execute(
                insert(parked).values(
                    ladder="test",
                    key="youth-o",
                    message_id=env.message_id,
                    value=env.to_bytes(),
                    headers=env.header_map() | origin,
                    attempt=1,
                    due_at=utcnow(),
                )
            )
        ladder.wake()
        (dead,) = await read_topic(kafka.bootstrap, hub.topic(CMD.dlq), expect=1)
        assert (dead.key, dead.value) == (b"youth-o", env.to_bytes())
        headers = headers_of(dead)
        assert {k: headers[k] for k in env.header_map()} == env.header_map()
        assert (headers["dlq-original-partition"], headers["dlq-original-offset"]) == ("2", "41")
    finally:
        await hub.stop()


async def test_a_parked_row_that_no_longer_reads_as_an_envelope_is_dead_lettered(
    kafka: EmbeddedKafka, db_url: str, unique: str
) -> None:
    """Parked under an older, laxer envelope (an id with a line break): it cannot be delivered or
    recorded as it is, so it goes to the DLQ as parked, and the messages behind it go on."""
    partner = FakePartner()
    hub, ladder = await _start(kafka, db_url, unique, partner)
    try:
        assert hub.store is not None
        fields = json.loads(Envelope(type="Cmd", payload={"name": "old", "key": "youth-o"}).to_bytes())
        value = json.dumps(fields | {"message_id": "old\nid"}).encode()
        origin = {"original-partition": "2", "original-offset": "41", "message-id": "old-id"}
        async with hub.store.transaction() as session:
            await session.execute(
                insert(parked).values(
                    ladder="test", key="youth-o", message_id="old-id", value=value, headers=origin,
                    attempt=1, due_at=utcnow(),
                )
            )  # fmt: skip
        await produce(kafka.bootstrap, hub.topic(CMD.name), [_cmd("new", "youth-o")])
        (dead,) = await read_topic(kafka.bootstrap, hub.topic(CMD.dlq), expect=1, timeout_s=30)
        assert (dead.key, dead.value) == (b"youth-o", value)
        assert headers_of(dead)["dlq-exception-class"].endswith("ValidationError")
        await wait_for(lambda: partner.delivered == ["new"], timeout_s=30)  # behind it, in order
        assert "old" not in partner.calls
        await wait_for(lambda: _zero(ladder))
    finally:
        await hub.stop()


async def _is_done(job: ReplayJob) -> bool:
    return job.state == "done"


async def _zero(ladder: RetryLadder) -> bool:
    return await ladder.parked_count() == 0


async def test_parked_messages_survive_a_restart(kafka: EmbeddedKafka, db_url: str, unique: str) -> None:
    partner = FakePartner(transient_failures={"a1": 3})
    hub, ladder = await _start(kafka, db_url, unique, partner)
    await produce(kafka.bootstrap, hub.topic(CMD.name), [_cmd("a1", "youth-a")])
    await wait_for(lambda: _parked(ladder))
    await hub.stop()
    hub, ladder = await _start(kafka, db_url, unique, partner)
    try:
        await wait_for(lambda: partner.delivered == ["a1"], timeout_s=30)
        await asyncio.sleep(0.3)
        assert partner.delivered == ["a1"]
    finally:
        await hub.stop()


async def _parked(ladder: RetryLadder) -> bool:
    return await ladder.parked_count() == 1


async def test_a_rounds_deliveries_are_recorded_together_and_one_by_one_when_that_fails(
    kafka: EmbeddedKafka, db_url: str, unique: str
) -> None:
    partner = FakePartner()
    one_by_one: list[str] = []
    together: list[list[str]] = []

    async def on_delivered(session: object, message: Envelope) -> None:
        one_by_one.append(str(message.payload["name"]))

    async def on_delivered_many(session: object, messages: list[Envelope]) -> None:
        names = sorted(str(m.payload["name"]) for m in messages)
        if "bad" in names:
            raise ValueError("a row the batch hook cannot take")
        together.append(names)

    holder: dict[str, RetryLadder] = {}

    def register(hub: Hub) -> None:  # the scheduler is stepped by hand: one round holds every message
        assert hub.spine is not None and hub.store is not None
        ladder = RetryLadder(
            hub.store, hub.metrics, name="test", topic=hub.topic(CMD.name), retry_topic=hub.topic(CMD.retry),
            dlq_topic=hub.topic(CMD.dlq), partner="fake", policy=FAST,
            delivery=Delivery(
                deliver=partner.deliver, on_delivered=on_delivered, on_delivered_many=on_delivered_many
            ),
        )  # fmt: skip
        holder["ladder"] = ladder

        @hub.spine.subscribe(hub.topic(CMD.name), group=hub.group("ladder"), dlq=hub.topic(CMD.dlq))
        async def send(tx: Tx, message: Envelope) -> None:
            await ladder.handle(tx, message, key=str(message.payload["key"]))

    settings = make_settings(kafka, db_url, unique).model_copy(update={"components": ["verwijsindex"]})
    hub = Hub(settings, registrars={"verwijsindex": [register]}, extra_topics=[CMD, Topic(CMD.retry)])
    await hub.start()
    try:
        ladder, topic = holder["ladder"], hub.topic(CMD.name)
        await produce(kafka.bootstrap, topic, [_cmd(f"a{i}", f"k{i}") for i in range(5)])
        await wait_for(lambda: _count(ladder, 5))
        assert await ladder.step() == 5
        postgresql = hub.store is not None and hub.store.dialect == "postgresql"

        def recorded() -> list[str]:
            return sorted(one_by_one + [name for names in together for name in names])

        if postgresql:  # recorded as they come: those that came while one was recorded, together next
            assert recorded() == ["a0", "a1", "a2", "a3", "a4"]
        else:  # the round's outcomes in one transaction
            assert together == [["a0", "a1", "a2", "a3", "a4"]] and one_by_one == []
        one_by_one.clear()
        together.clear()

        await produce(kafka.bootstrap, topic, [_cmd(n, f"k-{n}") for n in ("b1", "bad", "b2")])
        await wait_for(lambda: _count(ladder, 3))
        assert await ladder.step() == 3
        assert recorded() == ["b1", "b2", "bad"] and "bad" in one_by_one  # its batch rolled back
        if not postgresql:
            assert sorted(one_by_one) == ["b1", "b2", "bad"]  # each recorded alone
        assert await ladder.parked_count() == 0
    finally:
        await hub.stop()


async def _count(ladder: RetryLadder, n: int) -> bool:
    return await ladder.parked_count() == n


async def test_a_message_due_behind_a_parked_one_does_not_keep_the_scheduler_busy(db_url: str) -> None:
    # Its key's first message waits 30 s for its next rung; the one behind it, due now, waits with it.
    store = Store(db_url)
    await store.migrate()
    partner = FakePartner()
    ladder = RetryLadder(
        store, Metrics(), name="test", topic="t", retry_topic="t.retry", dlq_topic="t.dlq", partner="fake",
        delivery=Delivery(deliver=partner.deliver), policy=FAST,
    )  # fmt: skip
    try:
        for name, attempt, due_at in (("a1", 1, utcnow() + timedelta(seconds=30)), ("a2", 0, utcnow())):
            env = Envelope(type="Cmd", payload={"name": name, "key": "youth-a"})
            async with store.transaction() as session:
                await session.execute(
                    insert(parked).values(
                        ladder="test",
                        key="youth-a",
                        message_id=env.message_id,
                        value=env.to_bytes(),
                        headers=env.header_map(),
                        attempt=attempt,
                        due_at=due_at,
                    )
                )
        assert (await ladder.next_due_in() or 0) > 25  # when a1 is due, not a2

        statements, busy = 0, asyncio.Event()

        def count(*_: object) -> None:
            nonlocal statements
            statements += 1
            if statements >= 20:
                busy.set()

        event.listen(store.engine.sync_engine, "before_cursor_execute", count)
        running = asyncio.create_task(ladder.run())
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(busy.wait(), 0.4)
        running.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await running
        assert statements < 20, f"{statements} statements in 0.4 s: the scheduler spins"
        assert partner.calls == {}  # a2 did not overtake a1
    finally:
        await store.close()


async def test_a_round_cut_short_by_a_stop_records_the_calls_already_answered(
    db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A hub stopping waits `STOP_GRACE_S` for the round in hand; when a partner is slower than that,
    the deliveries the round had made are recorded still (on SQLite they were recorded with the
    round's last, and all went out again after the restart)."""
    monkeypatch.setattr("hub.retry.ladder.STOP_GRACE_S", 0.2)
    store = Store(db_url)
    await store.migrate()
    calls: list[str] = []
    third, never = asyncio.Event(), asyncio.Event()

    async def deliver(message: Envelope) -> None:
        calls.append(message.payload["name"])
        if len(calls) == 3:  # a partner that does not answer
            third.set()
            await never.wait()

    ladder = RetryLadder(
        store, Metrics(), name="test", topic="t", retry_topic="t.retry", dlq_topic="t.dlq", partner="fake",
        delivery=Delivery(deliver=deliver), policy=FAST, concurrency=1,
    )  # fmt: skip
    async with store.transaction() as session:
        for n in range(5):
            env = Envelope(type="Cmd", payload={"name": f"m{n}", "key": f"youth-{n}"})
            await session.execute(
                insert(parked).values(
                    ladder="test", key=f"youth-{n}", message_id=env.message_id, value=env.to_bytes(),
                    headers=env.header_map(), attempt=0, due_at=utcnow() - timedelta(seconds=5 - n),
                )
            )  # fmt: skip
    running = asyncio.create_task(ladder.run())
    try:
        await asyncio.wait_for(third.wait(), 10)
        running.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await running
        async with store.connect() as conn:
            left = sorted(
                Envelope.from_bytes(v).payload["name"]
                for v in (await conn.execute(select(parked.c.value))).scalars()
            )
        assert calls[:2] == ["m0", "m1"] and left == ["m2", "m3", "m4"]  # the two answered: recorded
    finally:
        running.cancel()
        await store.close()


async def test_a_message_queued_while_a_round_fails_does_not_cut_the_backoff_short(db_url: str) -> None:
    """The consumer wakes the scheduler as it commits a new message. When that comes while a round
    fails (its outcomes could not be recorded, nor put off), the next round still waits the backoff:
    at once, it would send again the deliveries whose outcome was lost."""
    store = Store(db_url)
    await store.migrate()
    ladder = RetryLadder(
        store, Metrics(), name="test", topic="t", retry_topic="t.retry", dlq_topic="t.dlq", partner="fake",
        delivery=Delivery(deliver=FakePartner().deliver), policy=FAST,
    )  # fmt: skip
    rounds, first = 0, asyncio.Event()

    async def failing_round(limit: int) -> tuple[int, int]:
        nonlocal rounds
        rounds += 1
        first.set()
        ladder.wake()  # a message committed meanwhile
        raise OperationalError("COMMIT", {}, Exception("disk I/O error"))

    ladder._round = failing_round  # type: ignore[method-assign]
    running = asyncio.create_task(ladder.run(idle_s=1.0))
    try:
        await asyncio.wait_for(first.wait(), 10)
        await asyncio.sleep(0.4)
        assert rounds == 1, f"{rounds} rounds in 0.4 s after a failed one: the backoff was cut short"
    finally:
        running.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await running

    # Rounds that fail in a row wait longer each time (0.02, 0.04, 0.08, 0.16 s: five rounds in
    # 0.4 s at most, the sixth at 0.62 s): a store that stays failing (a full disk) would otherwise
    # see the same calls go out, unrecorded, every idle_s (about 20 rounds in 0.4 s).
    rounds, first = 0, asyncio.Event()
    running = asyncio.create_task(ladder.run(idle_s=0.02))
    try:
        await asyncio.wait_for(first.wait(), 10)
        await asyncio.sleep(0.4)
        assert 2 <= rounds <= 5, f"{rounds} rounds in 0.4 s: the backoff does not grow"
    finally:
        running.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await running
        await store.close()


@pytest.mark.parametrize("attempt", [0, FAST.max_parked_attempts], ids=["first-try", "last-rung"])
async def test_the_hubs_own_store_failing_inside_a_delivery_uses_no_rung(
    db_url: str, tmp_path: Any, attempt: int
) -> None:
    """A connector reads the hub's store on its way (a signal's status, a mail's reader). When that
    store does not answer, the message is not at fault: it is tried again later, at the rung it was
    on. At its last rung it is not dead-lettered, nor announced as failed on the retry topic."""
    store = Store(db_url)
    await store.migrate()
    unreachable = Store(f"sqlite+aiosqlite:///{tmp_path}/no-such-dir/hub.db")  # cannot be opened
    calls: list[str] = []
    in_place = FAST.in_place_attempts if attempt == 0 else 1

    async def deliver(message: Envelope) -> None:
        calls.append(message.message_id)
        if len(calls) <= in_place:  # this attempt, its calls in place too, finds the store gone
            async with unreachable.read() as session:
                await session.execute(select(func.count()).select_from(parked))

    parked_hook: list[tuple[int, str]] = []

    async def on_parked(_s: AsyncSession, _m: Envelope, attempt: int, _due: datetime, error: str) -> None:
        parked_hook.append((attempt, error))  # a connector's status: when it is tried again, and why

    metrics = Metrics()
    ladder = RetryLadder(
        store, metrics, name="test", topic="t", retry_topic="t.retry", dlq_topic="t.dlq", partner="fake",
        delivery=Delivery(deliver=deliver, on_parked=on_parked), policy=FAST,
    )  # fmt: skip
    try:
        env = Envelope(type="Cmd", payload={"name": "a1", "key": "youth-a"})
        async with store.transaction() as session:
            await session.execute(
                insert(parked).values(
                    ladder="test", key="youth-a", message_id=env.message_id, value=env.to_bytes(),
                    headers=env.header_map(), attempt=attempt, due_at=utcnow(),
                )
            )  # fmt: skip
        assert await ladder.step() == 1
        async with store.connect() as conn:
            row = (await conn.execute(select(parked))).one()
            announced = (await conn.execute(select(outbox.c.topic))).scalars().all()
        assert "the hub's store failed" in row.last_error, row.last_error
        assert (row.attempt, row.postponed, row.lease) == (attempt, 1, None)
        assert announced == []  # neither parked at a next rung nor dead-lettered
        results = {
            result: metrics.registry.get_sample_value(
                "ketenhub_delivery_attempts_total", {"partner": "fake", "result": result}
            )
            for result in ("store", "transient")
        }
        assert results == {"store": in_place, "transient": None}  # not counted as the partner's
        assert parked_hook == [(attempt, row.last_error)]  # the connector is told it waits, and why

        async def delivered() -> bool:
            await ladder.step()  # put off as long as the next rung would wait: 0.2 s or more
            return await _zero(ladder)

        await wait_for(delivered, timeout_s=10, interval_s=0.1)
        assert calls == [env.message_id] * (in_place + 1)  # then the next try got through
    finally:
        await unreachable.close()
        await store.close()


async def _park_one(store: Store, name: str, attempt: int, due_at: datetime) -> Envelope:
    """One message of key youth-a parked in the `test` ladder at `attempt`, due at `due_at`."""
    env = Envelope(type="Cmd", payload={"name": name, "key": "youth-a"})
    async with store.transaction() as session:
        await session.execute(
            insert(parked).values(
                ladder="test", key="youth-a", message_id=env.message_id, value=env.to_bytes(),
                headers=env.header_map(), attempt=attempt, due_at=due_at,
            )
        )  # fmt: skip
    return env


async def _rounds_until_gone(ladder: RetryLadder, now: list[datetime]) -> list[tuple[int, int] | None]:
    """Step the ladder, the clock an hour on each time (past any wait), until its one row is gone:
    the row's (attempt, postponed) after each round, None once it is gone."""
    rounds: list[tuple[int, int] | None] = []
    while await ladder.parked_count() and len(rounds) < 50:
        assert await ladder.step() == 1
        async with ladder.store.connect() as conn:
            row = (await conn.execute(select(parked))).one_or_none()
        rounds.append(None if row is None else (row.attempt, row.postponed))
        now[0] += timedelta(hours=1)
    return rounds


async def test_a_store_failure_that_keeps_coming_for_one_message_climbs_the_ladder_to_the_dlq(
    db_url: str, tmp_path: Any
) -> None:
    """Put off without a rung for ever, a message whose delivery fails on the hub's store every time
    (a table it needs is gone, a query that can never run) never reached the DLQ, and its key's later
    messages waited behind it for good. After `POSTPONE_AT_MOST` in a row it climbs the ladder as a
    partner's failure does, and is dead-lettered after its last rung."""
    from hub.retry.policy import POSTPONE_AT_MOST

    store = Store(db_url)
    await store.migrate()
    unreachable = Store(f"sqlite+aiosqlite:///{tmp_path}/no-such-dir/hub.db")  # cannot be opened

    async def deliver(message: Envelope) -> None:
        async with unreachable.read() as session:
            await session.execute(select(func.count()).select_from(parked))

    now = [utcnow()]
    metrics = Metrics()
    ladder = RetryLadder(
        store, metrics, name="test", topic="t", retry_topic="t.retry", dlq_topic="t.dlq", partner="fake",
        delivery=Delivery(deliver=deliver), policy=FAST, clock=lambda: now[0],
    )  # fmt: skip
    try:
        await _park_one(store, "stuck", 0, now[0])
        rounds = await _rounds_until_gone(ladder, now)
        put_off = [(0, n) for n in range(1, POSTPONE_AT_MOST + 1)]
        rungs = [(n, POSTPONE_AT_MOST) for n in range(1, FAST.max_parked_attempts + 1)]
        assert rounds == [*put_off, *rungs, None]
        async with store.connect() as conn:
            topics = (await conn.execute(select(outbox.c.topic).order_by(outbox.c.id))).scalars().all()
        assert topics == ["t.retry"] * FAST.max_parked_attempts + ["t.dlq"]
        assert metrics.registry.get_sample_value(
            "ketenhub_delivery_postponed_total", {"ladder": "test"}
        ) == float(POSTPONE_AT_MOST)
    finally:
        await unreachable.close()
        await store.close()


async def test_a_delivery_whose_outcome_can_never_be_recorded_is_dead_lettered_at_its_last_rung(
    db_url: str,
) -> None:
    """A record that fails for one row alone, time after time, put the message off at its last rung
    for ever: sent again every last rung's wait, and never before an operator. After
    `POSTPONE_AT_MOST` postponements in a row there it is dead-lettered."""
    from hub.retry.policy import POSTPONE_AT_MOST

    store = Store(db_url)
    await store.migrate()
    calls: list[str] = []

    async def deliver(message: Envelope) -> None:
        calls.append(message.message_id)

    now = [utcnow()]
    metrics = Metrics()
    ladder = RetryLadder(
        store, metrics, name="test", topic="t", retry_topic="t.retry", dlq_topic="t.dlq", partner="fake",
        delivery=Delivery(deliver=deliver), policy=FAST, clock=lambda: now[0],
    )  # fmt: skip

    async def unrecordable(session: AsyncSession, row: Any, outcome: Exception | None) -> bool:
        raise OperationalError("UPDATE", {}, Exception("value too long for this row"))

    ladder._record = unrecordable  # type: ignore[method-assign]  # this row's record always fails
    try:
        env = await _park_one(store, "unrecordable", FAST.max_parked_attempts, now[0])
        rounds = await _rounds_until_gone(ladder, now)
        last = FAST.max_parked_attempts
        assert rounds == [*((last, n) for n in range(1, POSTPONE_AT_MOST + 1)), None]
        assert calls == [env.message_id] * (POSTPONE_AT_MOST + 1)
        async with store.connect() as conn:
            topics = (await conn.execute(select(outbox.c.topic))).scalars().all()
            [headers] = (await conn.execute(select(outbox.c.headers))).scalars().all()
        assert topics == ["t.dlq"]
        assert "could not be recorded" in json.dumps(headers)
        assert metrics.registry.get_sample_value(
            "ketenhub_delivery_postponed_total", {"ladder": "test"}
        ) == float(POSTPONE_AT_MOST)
    finally:
        await store.close()


async def test_a_put_off_whose_record_fails_to_commit_is_counted_once(db_url: str, tmp_path: Any) -> None:
    """A put-off was counted as it was written, and again by the postponement that followed when its
    transaction failed to commit: `ketenhub_delivery_postponed_total` said two for one."""
    store = Store(db_url)
    await store.migrate()
    unreachable = Store(f"sqlite+aiosqlite:///{tmp_path}/no-such-dir/hub.db")  # cannot be opened

    async def deliver(message: Envelope) -> None:
        async with unreachable.read() as session:
            await session.execute(select(func.count()).select_from(parked))

    metrics = Metrics()
    ladder = RetryLadder(
        FlakyStore(store, 1), metrics, name="test", topic="t", retry_topic="t.retry",  # type: ignore[arg-type]
        dlq_topic="t.dlq", partner="fake", delivery=Delivery(deliver=deliver), policy=FAST,
    )  # fmt: skip
    try:
        await _park_one(store, "once", 1, utcnow())
        assert await ladder.step() == 1
        async with store.connect() as conn:
            row = (await conn.execute(select(parked))).one()
        assert (row.attempt, row.postponed) == (1, 1)  # put off once: by the postponement
        assert (
            metrics.registry.get_sample_value("ketenhub_delivery_postponed_total", {"ladder": "test"}) == 1.0
        )
    finally:
        await unreachable.close()
        await store.close()


async def test_a_signals_command_put_off_after_waiting_says_when_it_is_tried_again(db_url: str) -> None:
    """A signal's withdrawal that waited behind its registration (the signal shown as waiting) and,
    once its turn came, was put off because the hub's store failed on its way, kept showing "waiting
    behind an earlier command" with the old time: the signals' hook kept a retrying signal's details
    for every first attempt, which is meant only for a command that waits behind another. The
    put-off's time and reason are shown; a command parked behind it still leaves them be."""
    from hub.signals import delivery as signal_delivery
    from hub.signals.commands import WITHDRAW, change_contact_command, withdraw_command
    from hub.signals.tables import signals
    from schemas.caseworker import ContactDetails
    from schemas.signal import WithdrawalReason

    store = Store(db_url)
    await store.migrate()
    withdrawal = withdraw_command("s-1", WithdrawalReason.RISICO_WEG, "tx-1")
    shown_then = utcnow() - timedelta(minutes=5)  # when it was last shown as waiting
    async with store.transaction() as session:
        await session.execute(
            insert(signals).values(
                signal_id="s-1", youth_key="a" * 64, bsn="123456782", given_names="Sam", surname="Jansen",
                birth_date=datetime(2010, 1, 1).date(), gender="M", municipality="Den Haag",
                organisation="Halt", caseworker_id="cw-1", contact={}, created=shown_then.date(),
                end_date=shown_then.date(), status="INGETROKKEN", delivery_state="retrying", attempt=0,
                next_try_at=shown_then, last_error=signal_delivery.WAITING, updated_at=shown_then,
                delivery_message_id=withdrawal.message_id, delivery_command=WITHDRAW,
            )
        )  # fmt: skip
        await session.execute(
            insert(parked).values(
                ladder="test", key="a" * 64, message_id=withdrawal.message_id, value=withdrawal.to_bytes(),
                headers=withdrawal.header_map(), attempt=0, due_at=utcnow(),
            )
        )  # fmt: skip

    async def deliver(message: Envelope) -> None:  # the signal's status, read on the way, cannot be
        raise OperationalError("SELECT delivery_state FROM signals", {}, Exception("database is locked"))

    ladder = RetryLadder(
        store, Metrics(), name="test", topic="t", retry_topic="t.retry", dlq_topic="t.dlq", partner="fake",
        delivery=Delivery(deliver=deliver, on_parked=signal_delivery.on_parked), policy=FAST,
    )  # fmt: skip
    try:
        assert await ladder.step() == 1
        async with store.connect() as conn:
            put_off = (await conn.execute(select(parked))).one()
            shown = (await conn.execute(select(signals))).one()
        assert put_off.postponed == 1  # put off, no rung used
        assert (shown.delivery_state, shown.attempt) == ("retrying", 0)
        assert "the hub's store failed" in shown.last_error, shown.last_error
        assert _utc(shown.next_try_at) == _utc(put_off.due_at) > shown_then

        # a later command for the signal, parked behind the put-off one, says nothing of its own
        later = change_contact_command(
            "s-1", "cw-2", ContactDetails(name="Ilse", organisation="Halt"), "tx-2"
        )
        async with store.transaction() as session:
            await signal_delivery.on_parked(session, later, 0, utcnow(), None)
        async with store.connect() as conn:
            still = (await conn.execute(select(signals))).one()
        assert (still.last_error, _utc(still.next_try_at)) == (shown.last_error, _utc(shown.next_try_at))
    finally:
        await store.close()


def _utc(at: datetime) -> datetime:
    """A stored time as UTC (SQLite gives it back without its zone)."""
    return at if at.tzinfo else at.replace(tzinfo=UTC)
