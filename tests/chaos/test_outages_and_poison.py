"""Chaos 4 and 5: poison records on every consumed topic, and the broker unreachable for a while."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select

from bench.data import bsn, police_records
from connectors.verwijsindex.sim_server import SimulatorServer
from hub.embedded import EmbeddedKafka
from hub.ops.lag import LagProbe
from hub.partners import PartnerType, add_partner
from hub.spine.dlq import DLQ_HEADERS
from hub.store import Store
from hub.store.tables import outbox
from hub.topics import (
    POLITIE_DECISION,
    POLITIE_REFERRAL,
    REFERRAL_DECIDED,
    VERWIJSINDEX_SIGNAL,
)
from schemas.envelope import Envelope
from schemas.pseudonym import youth_key
from tests.chaos.test_kill_and_restart import (
    LONG,
    SIGNAL_PATH,
    Traffic,
    create_topics,
    hub_env,
    signal_of,
)
from tests.conftest import TEST_SECRET
from tests.helpers.kafka import headers_of, produce, read_all, read_topic, wait_for
from tests.helpers.procs import HubProcess
from tests.helpers.proxy import CuttableProxy

pytestmark = [pytest.mark.chaos, pytest.mark.timeout(600)]


@pytest.fixture
def simulator() -> Iterator[SimulatorServer]:
    with SimulatorServer() as running:
        yield running


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
async def test_one_poison_record_per_thousand_is_dead_lettered_and_the_rest_flows(
    kafka: EmbeddedKafka, db_url: str, unique: str, tmp_path: Path, simulator: SimulatorServer
) -> None:
    prefix = f"t{unique}."
    await create_topics(kafka, prefix)
    n = 10_000 if LONG else 2_000
    good = police_records(n - n // 1000, seed=11)
    police: list[tuple[bytes | None, bytes, list[tuple[str, bytes]]]] = [(None, v, []) for v in good]
    for i in range(n // 1000):  # not JSON at all: no case reference to answer
        police.insert((i + 1) * 997 % len(police), (None, b"\x00poison " + str(i).encode(), []))
    traffic = Traffic(kafka, prefix, referrals_n=0, youths_n=n // 10)
    signal_records = [rec for s in traffic.signals for rec in traffic._signal_records(s)]
    poison_signals = []
    for i in range(max(1, len(signal_records) // 1000)):  # a reason: refused by the whitelist (rule 11)
        bad = signal_of(bsn(900_000 + i))
        env = traffic._signal_records(bad)[0]
        payload = json.loads(env[1])
        payload["payload"]["reason"] = "DIEFSTAL"
        poison_signals.append((env[0], json.dumps(payload).encode(), env[2]))
    signal_records[len(signal_records) // 2 : len(signal_records) // 2] = poison_signals

    hub = HubProcess(tmp_path, hub_env(kafka.bootstrap, db_url, unique, simulator.url), "intake,verwijsindex")
    await hub.start()
    try:
        await produce(kafka.bootstrap, prefix + POLITIE_REFERRAL.name, police)
        await produce(kafka.bootstrap, prefix + VERWIJSINDEX_SIGNAL.name, signal_records)

        decisions = await read_topic(
            kafka.bootstrap, prefix + POLITIE_DECISION.name, expect=len(good), timeout_s=90
        )
        decided = {Envelope.from_bytes(r.value).payload["procesVerbaalNummer"] for r in decisions}
        assert decided == {json.loads(v)["procesVerbaalNummer"] for v in good}

        for topic, expected in ((POLITIE_REFERRAL, n // 1000), (VERWIJSINDEX_SIGNAL, len(poison_signals))):
            dead = await read_topic(kafka.bootstrap, prefix + topic.dlq, expect=expected, settle_s=1.0)
            assert len(dead) == expected, topic.dlq
            for record in dead:
                headers = headers_of(record)
                assert set(DLQ_HEADERS) <= set(headers)
                assert headers["dlq-original-topic"] == prefix + topic.name

        async def signals_through() -> bool:
            done = {c.path for c in simulator.state.faults.calls if c.method == "DELETE" and c.status == 200}
            return all(SIGNAL_PATH + str(s.signal_id) in done for s in traffic.signals)

        await wait_for(signals_through, timeout_s=60)

        probe = LagProbe({"bootstrap_servers": kafka.bootstrap})
        consumed = {
            f"g{unique}-intake": [prefix + POLITIE_REFERRAL.name],
            f"g{unique}-verwijsindex": [prefix + VERWIJSINDEX_SIGNAL.name],
        }
        topics = [t for ts in consumed.values() for t in ts]

        async def lag_is_zero() -> bool:
            sample = await probe.measure(topics, consumed)
            lags = [p for p in sample.lags if p.topic in topics]
            return len({(p.topic, p.partition) for p in lags}) == 8 and all(p.lag == 0 for p in lags)

        try:
            await wait_for(lag_is_zero, timeout_s=30, interval_s=0.5)
        finally:
            await probe.close()
    except AssertionError:
        print(hub.log_tail())
        raise
    finally:
        await hub.stop()


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
async def test_broker_unreachable_http_referrals_are_held_and_published_when_it_is_back(
    db_url: str, unique: str, tmp_path: Path, simulator: SimulatorServer
) -> None:
    proxy = CuttableProxy(target_port=0)
    broker = EmbeddedKafka(advertised_port=proxy.port)
    broker.start()
    proxy.target_port = broker.port
    await proxy.start()
    prefix = f"t{unique}."
    store = Store(db_url)
    await store.migrate()
    async with store.transaction() as session:
        _, key = await add_partner(session, "politie-chaos", PartnerType.POLITIE)
    hub = HubProcess(tmp_path, hub_env(f"127.0.0.1:{proxy.port}", db_url, unique, simulator.url), "intake")
    accepted: list[str] = []
    try:
        await hub.start()
        records = police_records(60, seed=21)
        auth = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
        async with httpx.AsyncClient(base_url=hub.url, timeout=10, headers=auth) as client:

            async def post(batch: list[bytes]) -> None:
                for body in batch:
                    answer = await client.post("/api/v1/politie/verwijzingen", content=body)
                    assert answer.status_code in (201, 503), answer.text
                    if answer.status_code == 201:
                        accepted.append(answer.json()["referralId"])
                    else:  # refused, never a 2xx that is later lost
                        assert answer.headers.get("Retry-After")

            await post(records[:20])
            await proxy.cut()  # the broker is unreachable from here on

            async def broker_down() -> dict[str, str] | None:
                answer = await client.get("/readyz")
                checks = answer.json()["checks"]
                return checks if answer.status_code == 503 and checks["broker"] != "ok" else None

            checks = await wait_for(broker_down, timeout_s=20)
            assert checks["store"] == "ok"  # /readyz names what is down, and only that
            await post(records[20:40])

            async def held() -> bool:  # acknowledged, in the store, waiting for the broker
                async with store.connect() as conn:
                    rows = await conn.execute(select(outbox.c.id).where(outbox.c.sent_at.is_(None)))
                    return len(rows.all()) >= 20

            assert await held()
            assert (await client.get("/readyz")).status_code == 503  # still down, still saying so
            await proxy.start()  # back
            await post(records[40:])

            async def ready_again() -> bool:
                return (await client.get("/readyz")).status_code == 200

            await wait_for(ready_again, timeout_s=60)
        assert len(accepted) >= 40  # the store held what came in while the broker was away

        async def published() -> bool:
            async with store.connect() as conn:
                return not (await conn.execute(select(outbox.c.id).where(outbox.c.sent_at.is_(None)))).first()

        await wait_for(published, timeout_s=60)
        # A publish whose acknowledgement was lost in the cut is sent again, with the same message id.
        decided = await read_all(broker.bootstrap, prefix + REFERRAL_DECIDED.name)
        messages = {Envelope.from_bytes(r.value).message_id: Envelope.from_bytes(r.value) for r in decided}
        ids = [m.correlation_id for m in messages.values()]
        assert sorted(ids) == sorted(accepted)  # every acknowledged referral published, one message each
        bsns = {json.loads(r)["verdachte"]["bsn"] for r in records}
        assert {r.key for r in decided} <= {youth_key(TEST_SECRET, b).encode() for b in bsns}
    except AssertionError:
        print(hub.log_tail())
        raise
    finally:
        await hub.stop()
        await proxy.cut()
        broker.stop()
        await store.close()
