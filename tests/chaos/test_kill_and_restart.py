"""Chaos 1 and 2: hub processes killed with SIGKILL while referrals and signals flow.

Counted from outside: what the partners sent, what the store holds, what the broker carries and
what the Verwijsindex simulator was called with. A bounded run is part of `make test`; `make chaos`
(KETENHUB_CHAOS_LONG=1) runs longer with more traffic.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import uuid
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path

import httpx
import pytest
from aiokafka import TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import func, select

from bench.data import police_records
from connectors.verwijsindex.contract import SignaalStatus
from connectors.verwijsindex.sim_server import SimulatorServer
from hub.clock import today
from hub.embedded import EmbeddedKafka
from hub.intake.tables import referrals
from hub.signals.commands import (
    CHANGE_CONTACT,
    REGISTER,
    WITHDRAW,
    change_contact_command,
    register_command,
    withdraw_command,
)
from hub.store import Store
from hub.store.tables import outbox
from hub.topics import POLITIE_DECISION, POLITIE_REFERRAL, VERWIJSINDEX_SIGNAL, all_topics
from schemas.caseworker import ContactDetails
from schemas.envelope import Envelope
from schemas.pseudonym import youth_key
from schemas.signal import SignalYouth, VerwijsindexSignal, WithdrawalReason
from tests.conftest import TEST_SECRET
from tests.helpers.kafka import produce, read_all, wait_for
from tests.helpers.procs import HubProcess
from tests.helpers.signals import hold_signals

# each test's own deadlines (restarts, waits, reads) add up to 620-670 s, so the limit is above them
pytestmark = [pytest.mark.chaos, pytest.mark.timeout(900)]
LONG = os.environ.get("KETENHUB_CHAOS_LONG") == "1"
SIGNAL_PATH = "/api/v1/signalen/"


@pytest.fixture
def simulator() -> Iterator[SimulatorServer]:
    with SimulatorServer() as running:
        yield running


def hub_env(bootstrap: str, db_url: str, unique: str, vi_url: str) -> dict[str, str]:
    """The settings every hub process of one test shares, as the environment it reads."""
    return {
        "KETENHUB_KAFKA__BOOTSTRAP_SERVERS": bootstrap,
        "KETENHUB_KAFKA__TOPIC_PREFIX": f"t{unique}.",
        "KETENHUB_KAFKA__GROUP_PREFIX": f"g{unique}-",
        "KETENHUB_KAFKA__SESSION_TIMEOUT_MS": "2000",
        "KETENHUB_KAFKA__HEARTBEAT_INTERVAL_MS": "500",
        "KETENHUB_DATABASE__URL": db_url,
        "KETENHUB_SECRET": TEST_SECRET,
        "KETENHUB_VERWIJSINDEX__URL": vi_url,
        "KETENHUB_VERWIJSINDEX__POLL_INTERVAL_S": "0.5",
        "KETENHUB_VERWIJSINDEX__RETRY_SCHEDULE_S": "[0.5, 1, 2, 4, 8]",
        "KETENHUB_LOG_LEVEL": "WARNING",
    }


def signal_of(bsn: str) -> VerwijsindexSignal:
    return VerwijsindexSignal(
        signal_id=str(uuid.uuid4()),
        youth=SignalYouth(
            bsn=bsn, given_names="Sam", surname="Jansen", birth_date=date(2010, 5, 1),
            gender="MAN", municipality="Den Haag",
        ),
        organisation="Halt Den Haag",
        caseworker=ContactDetails(name="Ilse Bakker", organisation="Halt Den Haag", email="ilse@halt.nl"),
        caseworker_id="cw-ilse",
        created=today(),
        end_date=today() + timedelta(days=365),
        youth_informed_at=today(),
        parent_letter_sent_at=today(),
    )  # fmt: skip


NEW_CONTACT = ContactDetails(name="Omar El Idrissi", organisation="Halt Den Haag", email="omar@halt.nl")


@dataclass(frozen=True)
class Command:
    """One signal command as the test sent it: the call it must become, under its transaction id."""

    method: str
    transaction_id: str


class Traffic:
    """Police records and signal commands (register, [change contact,] withdraw per youth), in waves.

    With `referrals_per_youth` above 1, consecutive records share a youth (BSN, name, birth and
    offence date) and are keyed by that youth's key, as a partner keys what must stay in order.
    """

    def __init__(
        self,
        kafka: EmbeddedKafka,
        prefix: str,
        referrals_n: int,
        youths_n: int,
        *,
        referrals_per_youth: int = 1,
        contact_changes: bool = False,
    ) -> None:
        self.kafka, self.prefix = kafka, prefix
        self.contact_changes = contact_changes
        records = [json.loads(r) for r in police_records(referrals_n, seed=7)]
        for i, record in enumerate(records):
            first = records[i - i % referrals_per_youth]
            record["verdachte"], record["pleegdatum"] = first["verdachte"], first["pleegdatum"]
        self.records = [json.dumps(r).encode() for r in records]
        self.case_refs = [r["procesVerbaalNummer"] for r in records]
        self.youth_of = {
            r["procesVerbaalNummer"]: youth_key(TEST_SECRET, r["verdachte"]["bsn"]) for r in records
        }
        self.sent: list[str] = []  # case references in the order they were produced
        self.wave_out = asyncio.Event()  # set each time a wave has been produced
        self.done = False  # every wave produced
        bsns = [json.loads(r)["verdachte"]["bsn"] for r in police_records(youths_n, seed=8)]
        self.signals = [signal_of(b) for b in bsns]
        self.commands: dict[str, list[Command]] = {}

    def _signal_records(
        self, signal: VerwijsindexSignal
    ) -> list[tuple[bytes, bytes, list[tuple[str, bytes]]]]:
        key = youth_key(TEST_SECRET, signal.youth.bsn).encode()
        sid = str(signal.signal_id)
        commands = [register_command(signal, str(uuid.uuid4()))]
        if self.contact_changes:
            commands.append(change_contact_command(sid, "cw-omar", NEW_CONTACT, str(uuid.uuid4())))
        commands.append(withdraw_command(sid, WithdrawalReason.RISICO_WEG, str(uuid.uuid4())))
        self.commands[sid] = [Command(_METHODS[c.type], c.transaction_id) for c in commands]
        return [(key, command.to_bytes(), command.headers()) for command in commands]

    async def hold(self, db_url: str) -> None:
        """Store the signals as the caseworker API would: the connector sends only what the hub holds.
        With contact changes, as the hub holds them after the change: a command names the signal's
        contact as the hub holds it when the command goes."""
        held = self.signals
        if self.contact_changes:
            moved = {"caseworker": NEW_CONTACT, "caseworker_id": "cw-omar"}
            held = [s.model_copy(update=moved) for s in held]
        await hold_signals(db_url, held)

    async def send(
        self, waves: int, pause_s: float, *, only: range | None = None, gate: asyncio.Event | None = None
    ) -> None:
        """Everything, spread over `waves` with a pause after each (while the hub is killed).

        `only` sends just those waves (the rest before or after something the test does). With `gate`,
        each wave waits until it is set (the hub is up): a kill aimed at a wave (`kill_loop`) then finds
        a hub taking it in, and the waves last over as many kills as they can hold.
        """
        police = self.prefix + POLITIE_REFERRAL.name
        signal_topic = self.prefix + VERWIJSINDEX_SIGNAL.name
        for w in only if only is not None else range(waves):
            if gate is not None:
                await gate.wait()
            chunk = list(zip(self.records[w::waves], self.case_refs[w::waves], strict=True))
            keyed: list[tuple[bytes | None, bytes, list[tuple[str, bytes]]]] = [
                (self.youth_of[ref].encode(), value, []) for value, ref in chunk
            ]
            await produce(self.kafka.bootstrap, police, keyed)
            self.sent.extend(ref for _, ref in chunk)
            self.wave_out.set()  # the referrals are on the broker
            commands = [rec for s in self.signals[w::waves] for rec in self._signal_records(s)]
            await produce(self.kafka.bootstrap, signal_topic, commands)
            await asyncio.sleep(pause_s)
        self.done = only is None or only.stop >= waves


_METHODS = {REGISTER: "PUT", CHANGE_CONTACT: "PATCH", WITHDRAW: "DELETE"}


async def kill_loop(
    hubs: list[HubProcess],
    until: asyncio.Event,
    rng: random.Random,
    *,
    traffic: Traffic | None = None,
    store: Store | None = None,
) -> list[int]:
    """Kill a random hub every few seconds and start it again, until `until` is set.

    Without traffic flowing, a kill comes 1.5-4 s after the restart before it. With `traffic` and
    `store`, while waves are still being sent, a kill is aimed: 0.3-0.9 s after the restart (less than
    the waves' pause, so that a wave or two comes between kills), it waits for the next wave and comes
    within 10 ms of its records reaching the broker, so that it lands on records sent and not yet
    decided rather than on an idle hub. For each aimed kill the referrals sent before it and not stored
    by it are counted (after it: the killed hub stores nothing more); the counts are returned, one per
    aimed kill.
    """
    outstanding: list[int] = []
    while not until.is_set():
        aimed = False
        if traffic is not None and not traffic.done:
            await asyncio.sleep(rng.uniform(0.3, 0.9))
            traffic.wave_out.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(traffic.wave_out.wait(), timeout=3)
                aimed = True
            await asyncio.sleep(rng.uniform(0.0, 0.01))
        else:
            await asyncio.sleep(rng.uniform(1.5, 4.0))
        victim = rng.choice(hubs)
        sent = len(traffic.sent) if traffic is not None else 0
        victim.kill()
        if aimed and store is not None:  # what it had stored when it died: no more now
            outstanding.append(sent - await stored_referrals(store))
        await asyncio.sleep(rng.uniform(0.0, 0.5))
        await victim.start()
    return outstanding


async def verify(
    kafka: EmbeddedKafka,
    store: Store,
    prefix: str,
    traffic: Traffic,
    simulator: SimulatorServer,
    *,
    kills: int,
) -> None:
    """Nothing lost, nothing doubled, order per youth kept."""
    n = len(traffic.records)
    async with store.connect() as conn:
        stored = (await conn.execute(select(referrals.c.case_reference))).scalars().all()
        assert len(stored) == n and set(stored) == set(traffic.case_refs)  # each referral stored once

    async def published() -> bool:  # the relay has sent everything the store holds
        async with store.connect() as conn:
            return not (await conn.execute(select(outbox.c.id).where(outbox.c.sent_at.is_(None)))).first()

    await wait_for(published, timeout_s=30)
    await verify_decisions(kafka, prefix, traffic)
    verify_index_calls(traffic, simulator, kills=kills)
    for topic in (POLITIE_REFERRAL.dlq, VERWIJSINDEX_SIGNAL.dlq):  # read to the high watermark: none late
        assert await read_all(kafka.bootstrap, prefix + topic) == [], topic


async def verify_decisions(kafka: EmbeddedKafka, prefix: str, traffic: Traffic) -> None:
    """Every referral decided by one decision message, on its youth's key, in the order it was sent.

    A kill between the relay's publish and its marking publishes a batch again with the same message
    ids (at-least-once on the bus, the police de-duplicate by message id): the first copy of each
    message counts, and in that order each youth's decisions follow the order of their referrals.
    """
    decisions = await read_all(kafka.bootstrap, prefix + POLITIE_DECISION.name)
    ids_per_case: dict[str, set[str]] = defaultdict(set)
    order: dict[bytes, list[str]] = defaultdict(list)  # per record key, by offset
    seen: set[str] = set()
    for record in sorted(decisions, key=lambda r: (r.partition, r.offset)):
        message = Envelope.from_bytes(record.value)
        case = message.payload["procesVerbaalNummer"]
        assert message.payload["herhaling"] is False  # a redelivery is never decided as a repeat
        assert message.payload["besluit"] in ("GEACCEPTEERD", "AFGEWEZEN")  # F300 needs the OvJ
        assert record.key == traffic.youth_of[case].encode()  # on the youth's key
        ids_per_case[case].add(message.message_id)
        if message.message_id not in seen:
            seen.add(message.message_id)
            order[record.key].append(case)
    assert set(ids_per_case) == set(traffic.case_refs)  # every referral decided...
    assert all(len(ids) == 1 for ids in ids_per_case.values())  # ...exactly once (one decision message)
    sent: dict[bytes, list[str]] = defaultdict(list)
    for case in traffic.sent:
        sent[traffic.youth_of[case].encode()].append(case)
    assert max(len(cases) for cases in sent.values()) > 1  # several referrals per youth
    assert order == sent  # per youth, decided in the order referred


def verify_index_calls(traffic: Traffic, simulator: SimulatorServer, *, kills: int) -> None:
    """Each signal command had its effect at the index exactly once, in order per youth.

    DESIGN.md (retry ladder) and the ladder's Delivery contract: a connector's call must be
    idempotent, since a crash after the partner answered and before the outcome is committed
    delivers the command again. Towards the Verwijsindex, whose PUT, PATCH and DELETE are
    idempotent by contract, delivery is therefore at-least-once and the effect exactly once. So per
    command (found by its transaction id, rule 19): every call it made succeeded, at least one, and
    a repeat only after a kill (at most one per kill); the registration was created (201) exactly
    once, a repeat of it answered 200; per youth, every call of a command came before any call of
    the next (PUT, then PATCH, then DELETE), and the index ends with the signal withdrawn for
    RISICO_WEG with the new contact. No other call touched the signal.
    """
    calls = list(simulator.state.faults.calls)
    by_tx: dict[str | None, list[int]] = defaultdict(list)
    for i, call in enumerate(calls):
        by_tx[call.transaction_id].append(i)
    for signal in traffic.signals:
        sid = str(signal.signal_id)
        path = SIGNAL_PATH + sid
        commands = traffic.commands[sid]
        mine = [i for i, c in enumerate(calls) if c.path == path]
        assert sorted(mine) == sorted(i for cmd in commands for i in by_tx[cmd.transaction_id])
        previous_last = -1
        for cmd in commands:
            made = [calls[i] for i in by_tx[cmd.transaction_id]]
            assert made, f"{cmd.method} {sid[:8]} never called"
            assert {c.method for c in made} == {cmd.method} and {c.path for c in made} == {path}
            assert all(c.status in (200, 201) for c in made), [c.status for c in made]
            assert len(made) - 1 <= kills, f"{cmd.method} {sid[:8]} called {len(made)} times"
            if cmd.method == "PUT":
                assert [c.status for c in made] == [201] + [200] * (len(made) - 1)  # created once
            first, last = by_tx[cmd.transaction_id][0], by_tx[cmd.transaction_id][-1]
            assert first > previous_last, f"{sid[:8]}: {cmd.method} overtook the command before it"
            previous_last = last
        state = simulator.state.get(sid)
        assert state.status is SignaalStatus.BEEINDIGD_RISICO_WEG
        if traffic.contact_changes:
            assert state.contactpersoon.naam == NEW_CONTACT.name


async def create_topics(kafka: EmbeddedKafka, prefix: str) -> None:
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic

    admin = AIOKafkaAdminClient(bootstrap_servers=kafka.bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(prefix + t.name, t.partitions, 1) for t in all_topics()])
    finally:
        await admin.close()


async def signals_done(simulator: SimulatorServer, traffic: Traffic) -> bool:
    ok = {c.transaction_id for c in simulator.state.faults.calls if c.status in (200, 201)}
    return all(cmd.transaction_id in ok for commands in traffic.commands.values() for cmd in commands)


async def stored_referrals(store: Store) -> int:
    async with store.connect() as conn:
        return int((await conn.execute(select(func.count()).select_from(referrals))).scalar_one())


async def referrals_done(store: Store, n: int) -> bool:
    return await stored_referrals(store) >= n


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
async def test_sigkill_every_few_seconds_loses_and_doubles_nothing(
    kafka: EmbeddedKafka, db_url: str, unique: str, tmp_path: Path, simulator: SimulatorServer
) -> None:
    prefix = f"t{unique}."
    await create_topics(kafka, prefix)
    traffic = Traffic(
        kafka, prefix, referrals_n=6000 if LONG else 1500, youths_n=400 if LONG else 120,
        referrals_per_youth=3, contact_changes=True,
    )  # fmt: skip
    hub = HubProcess(tmp_path, hub_env(kafka.bootstrap, db_url, unique, simulator.url), "intake,verwijsindex")
    store = Store(db_url)
    await hub.start()
    await traffic.hold(db_url)
    stop = asyncio.Event()
    killer = asyncio.create_task(kill_loop([hub], stop, random.Random(unique), traffic=traffic, store=store))
    kills = 12 if LONG else 4
    try:
        await traffic.send(waves=30 if LONG else 10, pause_s=1.0, gate=hub.ready)
        # killed mid-stream, and after it; each restart may take a while on a loaded machine
        await wait_for(lambda: hub.kills >= kills, timeout_s=240)
        stop.set()
        outstanding = await killer
        # Every kill aimed at a wave landed on work in flight: referrals the broker held that were not
        # yet stored (taken and not committed, or not yet taken), which the restarted hub had to pick
        # up; and the waves lasted over several such kills (each takes at most three of them).
        assert len(outstanding) >= 3 and all(n > 0 for n in outstanding), outstanding
        await wait_for(lambda: referrals_done(store, len(traffic.records)), timeout_s=60)
        await wait_for(lambda: signals_done(simulator, traffic), timeout_s=60)
        await verify(kafka, store, prefix, traffic, simulator, kills=hub.kills)
    except AssertionError:
        print(hub.log_tail())
        raise
    finally:
        stop.set()
        killer.cancel()
        await hub.stop()
        await store.close()


async def metrics_of(hub: HubProcess) -> str | None:
    """A process's /metrics; None while it answers 503 (a process still starting)."""
    async with httpx.AsyncClient(timeout=30) as client:
        answer = await client.get(hub.url + "/metrics")
    if answer.status_code == 503:
        return None
    assert answer.status_code == 200, answer.text
    return answer.text


async def handled(hub: HubProcess, topic: str) -> int:
    """How many records of `topic` this process took (processed, duplicate or dead-lettered), from
    its own /metrics: a process only ever sees records of partitions assigned to it. A 503 of
    /metrics is waited out."""
    text: str = await wait_for(lambda: metrics_of(hub), timeout_s=30)
    return int(
        sum(
            sample.value
            for family in text_string_to_metric_families(text)
            for sample in family.samples
            if sample.name == "ketenhub_messages_total"
            and sample.labels.get("topic") == topic
            and sample.labels.get("outcome") in ("processed", "duplicate", "dead_lettered")
        )
    )


async def group_members(bootstrap: str, group: str) -> int:
    """Members of a consumer group as the broker describes it. tansu answers DescribeGroups with the
    members but an empty assignment (member_assignment b''), so who holds which partition cannot be
    read from the broker; the hub's per-process metrics and the committed offsets say it instead."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        (response,) = await admin.describe_consumer_groups([group])
        return sum(len(g[5]) for g in response.groups if g[1] == group)
    finally:
        await admin.close()


async def committed(bootstrap: str, group: str, topic: str, partitions: int) -> dict[int, int]:
    """The group's committed offset per partition (-1: none); tansu needs the partitions named."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        tps = [TopicPartition(topic, p) for p in range(partitions)]
        offsets = await admin.list_consumer_group_offsets(group, partitions=tps)
        return {tp.partition: (meta.offset if meta is not None else -1) for tp, meta in offsets.items()}
    finally:
        await admin.close()


@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)
async def test_two_processes_in_one_group_one_killed_the_other_takes_over(
    kafka: EmbeddedKafka, db_url: str, unique: str, tmp_path: Path, simulator: SimulatorServer
) -> None:
    prefix = f"t{unique}."
    police = prefix + POLITIE_REFERRAL.name
    signal_topic = prefix + VERWIJSINDEX_SIGNAL.name
    await create_topics(kafka, prefix)
    traffic = Traffic(
        kafka, prefix, referrals_n=4000 if LONG else 1000, youths_n=200 if LONG else 60,
        referrals_per_youth=3, contact_changes=True,
    )  # fmt: skip
    env = hub_env(kafka.bootstrap, db_url, unique, simulator.url)
    first = HubProcess(tmp_path, env, "intake,verwijsindex")
    second = HubProcess(tmp_path, env, "intake,verwijsindex")
    store = Store(db_url)
    await asyncio.gather(first.start(), second.start())
    await traffic.hold(db_url)
    waves = 6
    try:
        # Both processes hold partitions of both topics: each group has both processes' consumers
        # as members (intake has one per topic it takes in: police records and canonical referrals),
        # settled before the traffic (a join still in progress could leave the first half of it all
        # to one process); then each process takes records of each topic.
        members = {f"g{unique}-intake": 2 * 2, f"g{unique}-verwijsindex": 2 * 1}
        for group, expected in members.items():  # settled: a join in progress changes the count

            async def joined(group: str = group, expected: int = expected) -> bool:
                return await group_members(kafka.bootstrap, group) == expected

            await wait_for(joined, timeout_s=30)
        await traffic.send(waves, pause_s=0.5, only=range(waves // 2))

        async def both_took(topic: str) -> bool:
            return all([await handled(first, topic) > 0, await handled(second, topic) > 0])

        await wait_for(lambda: both_took(police), timeout_s=30)
        await wait_for(lambda: both_took(signal_topic), timeout_s=30)

        first.kill()  # for good: the second process must take over its partitions
        at_kill = {t: await handled(second, t) for t in (police, signal_topic)}
        before = len(traffic.sent)
        await traffic.send(waves, pause_s=0.5, only=range(waves // 2, waves))
        await wait_for(lambda: referrals_done(store, len(traffic.records)), timeout_s=60)
        await wait_for(lambda: signals_done(simulator, traffic), timeout_s=60)
        await verify(kafka, store, prefix, traffic, simulator, kills=1)

        # The records sent after the kill lie on every partition, the killed process's included,
        # and the survivor took every one of them: the group's offsets are at each partition's end.
        after = set(traffic.sent[before:])
        on = {r.partition for r in await read_all(kafka.bootstrap, police) if _case(r.value) in after}
        assert on == set(range(POLITIE_REFERRAL.partitions))
        # So do the signal commands sent after it (keyed by youth; the youths are fixed by the seed).
        later = {youth_key(TEST_SECRET, s.youth.bsn).encode() for s in _sent_after(traffic, waves)}
        on = {r.partition for r in await read_all(kafka.bootstrap, signal_topic) if r.key in later}
        assert on == set(range(VERWIJSINDEX_SIGNAL.partitions))
        for group, topic in ((f"g{unique}-intake", police), (f"g{unique}-verwijsindex", signal_topic)):
            ends: dict[int, int] = {}
            for r in await read_all(kafka.bootstrap, topic):
                ends[r.partition] = max(ends.get(r.partition, 0), r.offset + 1)

            async def at_end(group: str = group, topic: str = topic, ends: dict[int, int] = ends) -> bool:
                return await committed(kafka.bootstrap, group, topic, len(ends)) == ends

            await wait_for(at_end, timeout_s=20)
        assert await handled(second, police) - at_kill[police] >= len(after)
        signal_records_after = sum(
            len(traffic.commands[str(s.signal_id)]) for s in _sent_after(traffic, waves)
        )
        assert await handled(second, signal_topic) - at_kill[signal_topic] >= signal_records_after
        async with httpx.AsyncClient(timeout=30) as client:  # each check has 3 s, and there are several

            async def ready() -> bool:  # a check may run out of its 3 s on a loaded machine: ask again
                return (await client.get(second.url + "/readyz")).status_code == 200

            await wait_for(ready, timeout_s=30)
    except AssertionError:
        print(first.log_tail(), second.log_tail())
        raise
    finally:
        first.kill()
        await second.stop()
        await store.close()


def _case(value: bytes) -> str:
    return str(json.loads(value)["procesVerbaalNummer"])


def _sent_after(traffic: Traffic, waves: int) -> list[VerwijsindexSignal]:
    return [s for w in range(waves // 2, waves) for s in traffic.signals[w::waves]]
