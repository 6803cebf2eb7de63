"""Chaos 1 and 2: hub processes killed with SIGKILL while referrals and signals flow.

Counted from outside: what the partners sent, what the store holds, what the broker carries and
what the Verwijsindex simulator was called with. A bounded run is part of `make test`; `make chaos`
(KETENHUB_CHAOS_LONG=1) runs longer with more traffic.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import uuid
from collections import defaultdict
from collections.abc import Iterator
from datetime import date, timedelta
from pathlib import Path

import httpx
import pytest
from sqlalchemy import func, select

from bench.data import police_records
from connectors.verwijsindex.sim_server import SimulatorServer
from hub.clock import today
from hub.embedded import EmbeddedKafka
from hub.intake.tables import referrals
from hub.signals.commands import register_command, withdraw_command
from hub.store import Store
from hub.store.tables import outbox
from hub.topics import POLITIE_DECISION, POLITIE_REFERRAL, VERWIJSINDEX_SIGNAL, all_topics
from schemas.caseworker import ContactDetails
from schemas.envelope import Envelope
from schemas.pseudonym import youth_key
from schemas.signal import SignalYouth, VerwijsindexSignal, WithdrawalReason
from tests.conftest import TEST_SECRET
from tests.helpers.kafka import produce, read_all, read_topic, wait_for
from tests.helpers.procs import HubProcess

pytestmark = [pytest.mark.chaos, pytest.mark.timeout(600)]
LONG = os.environ.get("KETENHUB_CHAOS_LONG") == "1"
TODAY = today()  # the Dutch calendar day, as the hub counts it
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
        created=TODAY,
        end_date=TODAY + timedelta(days=365),
        youth_informed_at=TODAY,
        parent_letter_sent_at=TODAY,
    )  # fmt: skip


class Traffic:
    """Police records and signal commands (register, then withdraw, per youth), sent in waves."""

    def __init__(self, kafka: EmbeddedKafka, prefix: str, referrals_n: int, youths_n: int) -> None:
        self.kafka, self.prefix = kafka, prefix
        self.records = police_records(referrals_n, seed=7)
        self.case_refs = [json.loads(r)["procesVerbaalNummer"] for r in self.records]
        bsns = [json.loads(r)["verdachte"]["bsn"] for r in police_records(youths_n, seed=8)]
        self.signals = [signal_of(b) for b in bsns]

    def _signal_records(
        self, signal: VerwijsindexSignal
    ) -> list[tuple[bytes, bytes, list[tuple[str, bytes]]]]:
        key = youth_key(TEST_SECRET, signal.youth.bsn).encode()
        out = []
        for command in (
            register_command(signal, str(uuid.uuid4())),
            withdraw_command(str(signal.signal_id), WithdrawalReason.RISICO_WEG, str(uuid.uuid4())),
        ):
            out.append((key, command.to_bytes(), command.headers()))
        return out

    async def send(self, waves: int, pause_s: float) -> None:
        """Everything, spread over `waves` with a pause between them (while the hub is killed)."""
        police = self.prefix + POLITIE_REFERRAL.name
        signal_topic = self.prefix + VERWIJSINDEX_SIGNAL.name
        for w in range(waves):
            chunk = self.records[w::waves]
            await produce(self.kafka.bootstrap, police, [(None, v, []) for v in chunk])
            commands = [rec for s in self.signals[w::waves] for rec in self._signal_records(s)]
            await produce(self.kafka.bootstrap, signal_topic, commands)
            await asyncio.sleep(pause_s)


async def kill_loop(hubs: list[HubProcess], until: asyncio.Event, rng: random.Random) -> None:
    """Kill a random hub every 1.5-4 s and start it again, until `until` is set."""
    while not until.is_set():
        await asyncio.sleep(rng.uniform(1.5, 4.0))
        victim = rng.choice(hubs)
        victim.kill()
        await asyncio.sleep(rng.uniform(0.0, 0.5))
        await victim.start()


async def verify(
    kafka: EmbeddedKafka, store: Store, prefix: str, traffic: Traffic, simulator: SimulatorServer
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
    # A kill between publish and marking sends a batch again (same message ids): read all there is.
    decisions = await read_all(kafka.bootstrap, prefix + POLITIE_DECISION.name)
    ids_per_case: dict[str, set[str]] = defaultdict(set)
    for record in decisions:
        message = Envelope.from_bytes(record.value)
        assert message.payload["herhaling"] is False  # a redelivery is never decided as a repeat
        ids_per_case[message.payload["procesVerbaalNummer"]].add(message.message_id)
    assert set(ids_per_case) == set(traffic.case_refs)  # every referral decided...
    assert all(len(ids) == 1 for ids in ids_per_case.values())  # ...exactly once (one decision message)

    calls = simulator.state.faults.calls
    for signal in traffic.signals:
        mine = [c for c in calls if c.path == SIGNAL_PATH + str(signal.signal_id)]
        created = [i for i, c in enumerate(mine) if c.method == "PUT" and c.status == 201]
        withdrawn = [i for i, c in enumerate(mine) if c.method == "DELETE" and c.status == 200]
        assert len(created) == 1, f"signal registered {len(created)} times"  # exactly once
        assert withdrawn and withdrawn[0] > created[0]  # the withdrawal never overtook its registration
        assert not [c for c in mine if c.status is not None and c.status >= 400]
    for topic in (POLITIE_REFERRAL.dlq, VERWIJSINDEX_SIGNAL.dlq):
        assert await read_topic(kafka.bootstrap, prefix + topic, expect=1, timeout_s=0.5) == []


async def create_topics(kafka: EmbeddedKafka, prefix: str) -> None:
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic

    admin = AIOKafkaAdminClient(bootstrap_servers=kafka.bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(prefix + t.name, t.partitions, 1) for t in all_topics()])
    finally:
        await admin.close()


async def signals_done(simulator: SimulatorServer, traffic: Traffic) -> bool:
    ok = {c.path for c in simulator.state.faults.calls if c.method == "DELETE" and c.status == 200}
    return all(SIGNAL_PATH + str(s.signal_id) in ok for s in traffic.signals)


async def referrals_done(store: Store, n: int) -> bool:
    async with store.connect() as conn:
        return int((await conn.execute(select(func.count()).select_from(referrals))).scalar_one()) >= n


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
async def test_sigkill_every_few_seconds_loses_and_doubles_nothing(
    kafka: EmbeddedKafka, db_url: str, unique: str, tmp_path: Path, simulator: SimulatorServer
) -> None:
    prefix = f"t{unique}."
    await create_topics(kafka, prefix)
    traffic = Traffic(kafka, prefix, referrals_n=6000 if LONG else 1500, youths_n=400 if LONG else 120)
    hub = HubProcess(tmp_path, hub_env(kafka.bootstrap, db_url, unique, simulator.url), "intake,verwijsindex")
    store = Store(db_url)
    await hub.start()
    stop = asyncio.Event()
    killer = asyncio.create_task(kill_loop([hub], stop, random.Random(unique)))
    kills = 12 if LONG else 4
    try:
        await traffic.send(waves=30 if LONG else 10, pause_s=1.0)
        await wait_for(lambda: hub.kills >= kills, timeout_s=120)  # killed mid-stream, and after it
        stop.set()
        await killer
        await wait_for(lambda: referrals_done(store, len(traffic.records)), timeout_s=60)
        await wait_for(lambda: signals_done(simulator, traffic), timeout_s=60)
        await verify(kafka, store, prefix, traffic, simulator)
    except AssertionError:
        print(hub.log_tail())
        raise
    finally:
        stop.set()
        killer.cancel()
        await hub.stop()
        await store.close()


@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)
async def test_two_processes_in_one_group_one_killed_the_other_takes_over(
    kafka: EmbeddedKafka, db_url: str, unique: str, tmp_path: Path, simulator: SimulatorServer
) -> None:
    prefix = f"t{unique}."
    await create_topics(kafka, prefix)
    traffic = Traffic(kafka, prefix, referrals_n=4000 if LONG else 1000, youths_n=200 if LONG else 60)
    env = hub_env(kafka.bootstrap, db_url, unique, simulator.url)
    first = HubProcess(tmp_path, env, "intake,verwijsindex")
    second = HubProcess(tmp_path, env, "intake,verwijsindex")
    store = Store(db_url)
    await asyncio.gather(first.start(), second.start())
    try:
        sending = asyncio.create_task(traffic.send(waves=6, pause_s=0.5))
        await wait_for(lambda: referrals_done(store, 50), timeout_s=30)  # mid-stream
        first.kill()  # for good: the second process must take over its partitions
        await sending
        await wait_for(lambda: referrals_done(store, len(traffic.records)), timeout_s=60)
        await wait_for(lambda: signals_done(simulator, traffic), timeout_s=60)
        await verify(kafka, store, prefix, traffic, simulator)
        async with httpx.AsyncClient() as client:
            assert (await client.get(second.url + "/readyz")).status_code == 200
    except AssertionError:
        print(first.log_tail(), second.log_tail())
        raise
    finally:
        first.kill()
        await second.stop()
        await store.close()
