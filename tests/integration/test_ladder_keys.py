"""What the retry ladder writes to Kafka holds no youth's BSN or name (privacy): a record on a ladder's
topic keyed by a sender with a BSN in its key is parked, announced and dead-lettered under the key's
pseudonym, as the spine's own dead letters are; a refusal names a sender's unknown field masked. The
real broker, both stores, the Verwijsindex simulator over HTTP."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import httpx
import pytest
from sqlalchemy import func, select

from connectors.verwijsindex.sim_server import SimulatorServer
from hub.embedded import EmbeddedKafka
from hub.retry.tables import parked
from hub.signals import commands
from hub.spine.dlq import DLQ_EXC_MESSAGE, DLQ_HEADERS, KEY_PSEUDONYM
from hub.store import Store
from hub.topics import VERWIJSINDEX_SIGNAL
from schemas.pseudonym import youth_key
from tests.conftest import TEST_SECRET
from tests.helpers.kafka import headers_of, produce, read_topic, wait_for
from tests.integration.test_verwijsindex_connector import (
    SLOW,
    a_signal,
    bsns,
    register,
    set_faults,
    start_hub,
)

pytestmark = pytest.mark.integration


async def _parked(store: Store, count: int) -> bool:
    async with store.connect() as conn:
        return int((await conn.execute(select(func.count()).select_from(parked))).scalar_one()) == count


@pytest.fixture
def simulator() -> Iterator[SimulatorServer]:
    with SimulatorServer() as running:
        yield running


async def test_a_senders_key_with_a_bsn_goes_from_the_ladder_as_its_pseudonym(
    kafka: EmbeddedKafka, db_url: str, unique: str, simulator: SimulatorServer
) -> None:
    """The ladder kept the record's key as it came: a command keyed by a BSN that the connector
    refused went to the DLQ under that BSN, and one waiting for the index was parked, and announced
    on the retry topic, under a key that held it."""
    hub = await start_hub(kafka, db_url, unique, simulator.url, policy=SLOW)
    try:
        assert hub.store is not None
        unknown_bsn, held_bsn = bsns(2, start=612_000_000)
        # a registration of a signal the hub does not hold: refused for good (the DLQ)
        stranger = commands.register_command(a_signal(unknown_bsn), str(uuid.uuid4()))
        await produce(
            kafka.bootstrap,
            hub.topic(VERWIJSINDEX_SIGNAL.name),
            [(unknown_bsn.encode(), stranger.to_bytes(), stranger.headers())],
        )
        [letter] = await read_topic(kafka.bootstrap, hub.topic(VERWIJSINDEX_SIGNAL.dlq), expect=1)
        assert letter.key == youth_key(TEST_SECRET, unknown_bsn).encode()  # the youth's own key
        headers = headers_of(letter)
        assert headers[KEY_PSEUDONYM] == "bsn" and set(headers).issuperset(DLQ_HEADERS)
        assert all(unknown_bsn not in v for v in headers.values())

        # one of a signal the hub holds, sent again by someone under a key with the BSN in it, while
        # the index is down: it waits on the ladder
        async with httpx.AsyncClient(base_url=simulator.url, timeout=5) as admin:
            await set_faults(admin, error_rate=1.0)
            signal = a_signal(held_bsn)
            await register(hub, signal)
            again = commands.register_command(signal, str(uuid.uuid4()))
            sender_key = f"bsn {held_bsn}"
            await produce(
                kafka.bootstrap,
                hub.topic(VERWIJSINDEX_SIGNAL.name),
                [(sender_key.encode(), again.to_bytes(), again.headers())],
            )
            await wait_for(lambda: _parked(hub.store, 2), timeout_s=30)
            async with hub.store.connect() as conn:
                rows = list(
                    await conn.execute(select(parked.c.key, parked.c.record_key, parked.c.record_headers))
                )
            assert len(rows) == 2
            pseudonym = youth_key(TEST_SECRET, sender_key)
            assert {r.key for r in rows} == {youth_key(TEST_SECRET, held_bsn), pseudonym}
            [foreign] = [r for r in rows if r.key == pseudonym]
            assert foreign.record_key == pseudonym and foreign.record_headers[KEY_PSEUDONYM] == "text"
            announced = await read_topic(kafka.bootstrap, hub.topic(VERWIJSINDEX_SIGNAL.retry), expect=2)
            assert all(held_bsn not in bytes(r.key).decode() for r in announced)
            await set_faults(admin)
    finally:
        await hub.stop()


async def test_a_command_refused_for_a_field_outside_the_whitelist_does_not_name_the_field_as_sent(
    kafka: EmbeddedKafka, db_url: str, unique: str, simulator: SimulatorServer
) -> None:
    """Rule 11 refuses a command with a field outside the whitelist, and the refusal names the field.
    It named it as sent: a youth's name and birth date used as a key stood in the dead letter's
    header, which the operator console shows unmasked as the hub's own words."""
    hub = await start_hub(kafka, db_url, unique, simulator.url)
    try:
        sent = commands.register_command(a_signal(bsns(1, start=613_000_000)[0]), str(uuid.uuid4()))
        payload = dict(sent.payload)
        payload["youth"] = {**payload["youth"], "Sanne de Vries 12-03-2011": "zus"}
        bad = sent.model_copy(update={"payload": payload})
        await produce(
            kafka.bootstrap,
            hub.topic(VERWIJSINDEX_SIGNAL.name),
            [(b"k-1", bad.to_bytes(), bad.headers())],
        )
        [letter] = await read_topic(kafka.bootstrap, hub.topic(VERWIJSINDEX_SIGNAL.dlq), expect=1)
        said = headers_of(letter)[DLQ_EXC_MESSAGE]
        assert "fields outside the whitelist" in said and "youth." in said, said
        assert "Sanne" not in said and "2011" not in said, said
    finally:
        await hub.stop()
