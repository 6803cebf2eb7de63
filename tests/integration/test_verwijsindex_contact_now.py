"""A signal command that waited tells the Verwijsindex the signal's contact as the hub holds it when it
goes, not the one it was queued with (rules 13, 17): the real broker, both stores, the simulator over
real HTTP."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from connectors.verwijsindex.contract import SignaalStatus
from connectors.verwijsindex.sim_server import SimulatorServer
from hub.embedded import EmbeddedKafka
from hub.ops.dlq import DeadLetters
from hub.runtime import Hub
from hub.signals import request_contact_change
from hub.store.tables import audit_log
from hub.topics import VERWIJSINDEX_SIGNAL
from schemas.caseworker import Caseworker, Team
from schemas.signal import VerwijsindexSignal
from tests.helpers.kafka import read_all, read_topic, wait_for
from tests.integration.test_verwijsindex_connector import (
    SIGNAL,
    SLOW,
    STAND_IN,
    _all_at,
    _all_delivered,
    _is_done,
    a_signal,
    audited,
    bsns,
    calls,
    other_organisation_signals,
    register,
    rows,
    set_faults,
    start_hub,
)

pytestmark = pytest.mark.integration
PIET = Caseworker(
    caseworker_id="cw-piet",
    name="Piet de Boer",
    email="piet@halt.nl",
    team=Team.DEN_HAAG,
    meldingsbevoegd=True,
)
OTHER_ORGANISATION = "jeugdhulp-haaglanden"  # other_organisation_signals' organisation


@pytest.fixture
def simulator() -> Iterator[SimulatorServer]:
    with SimulatorServer() as running:
        yield running


@pytest.fixture
async def admin(simulator: SimulatorServer) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=simulator.url, timeout=5) as client:
        yield client


async def move(hub: Hub, signal: VerwijsindexSignal, to: Caseworker) -> None:
    """Make `to` the signal's contact, as borging or the signals API does (rule 17)."""
    assert hub.store is not None and hub.relay is not None and signal.signal_id
    async with hub.store.transaction() as session:
        await request_contact_change(session, hub, signal.signal_id, to, str(uuid.uuid4()))
    hub.relay.wake()


async def audit_of(hub: Hub, signal: VerwijsindexSignal, action: str) -> list[dict[str, Any]]:
    """The objects of the signal's audit entries with `action`, oldest first."""
    assert hub.store is not None
    async with hub.store.connect() as conn:
        found = await conn.execute(
            select(audit_log.c.objects).where(audit_log.c.action == action).order_by(audit_log.c.id)
        )
        return [row.objects for row in found if (row.objects or {}).get("signal_id") == signal.signal_id]


async def replay_all(hub: Hub) -> None:
    """An operator replays every dead letter of the signal topic."""
    assert hub.store is not None and hub.relay is not None
    letters = DeadLetters(
        hub.store, hub.kafka_options, [hub.topic(VERWIJSINDEX_SIGNAL.dlq)], wake=hub.relay.wake
    )
    job = letters.start_replay(await letters.find(), "olaf")
    await wait_for(lambda: _is_done(job), timeout_s=30)
    assert (job.done, job.skipped, job.failed) == (1, 0, 0)


def audited_as(hub: Hub, signal: VerwijsindexSignal, *actions: str) -> Any:
    async def check() -> bool:
        return await audited(hub, signal) == list(actions)

    return check


async def test_a_dead_lettered_registration_replayed_after_a_move_names_the_contact_now(
    kafka: EmbeddedKafka, db_url: str, unique: str, simulator: SimulatorServer, admin: httpx.AsyncClient
) -> None:
    """The index was down past the ladder's last rung: the registration is a dead letter. Borging
    moved the signal to Noor meanwhile; the change finds no signal in the index, and is moot rather
    than a second dead letter (replayed before the registration, it would fail again). The operator
    replays the registration: the index is told Noor, not Ilse, who left; a counterpart's match names
    Noor; the audit says whose contact went, and with whose it was queued."""
    await set_faults(admin, error_rate=1.0)  # 503 on every call
    hub = await start_hub(kafka, db_url, unique, simulator.url, poll_s=60)
    try:
        signal = a_signal(bsns(1, start=900_000_000)[0])
        assert signal.signal_id
        await register(hub, signal)
        dlq = hub.topic(VERWIJSINDEX_SIGNAL.dlq)
        assert len(await read_topic(kafka.bootstrap, dlq, expect=1, timeout_s=30)) == 1
        await set_faults(admin)  # the index is back
        await move(hub, signal, STAND_IN)
        await wait_for(audited_as(hub, signal, "verwijsindex.ChangeSignalContact.not_in_index"), timeout_s=20)
        assert len(await read_all(kafka.bootstrap, dlq)) == 1  # only the registration is a dead letter
        shown = (await rows(hub))[signal.signal_id]  # not "delivered": the index does not hold it
        assert (shown.delivery_state, shown.delivery_command) == ("dead_lettered", "RegisterSignal")
        assert "holds no such signal" in shown.last_error and "replay" in shown.last_error
        assert signal.signal_id not in simulator.state.signals

        await replay_all(hub)
        await wait_for(lambda: _all_delivered(hub), timeout_s=20)
        held = simulator.state.signals[signal.signal_id]
        assert held.registratie.contactpersoon.naam == "Noor Visser"  # never Ilse
        assert held.signaal.contactpersoon.naam == "Noor Visser"
        [sent] = await audit_of(hub, signal, "verwijsindex.RegisterSignal")
        assert (sent["caseworker_id"], sent["queued_caseworker_id"]) == ("cw-noor", "cw-ilse")
        [moot] = await audit_of(hub, signal, "verwijsindex.ChangeSignalContact.not_in_index")
        assert "caseworker_id" not in moot  # nothing went
        log = [
            (c["method"], c["status"]) for c in await calls(admin) if c["path"] == SIGNAL + signal.signal_id
        ]
        assert log[-2:] == [("PATCH", 404), ("PUT", 201)]

        await other_organisation_signals(admin, [signal])  # a youth-care professional signals the youth
        [theirs] = [m for _, m in simulator.state.feed if m.organisatie_code == OTHER_ORGANISATION]
        assert theirs.tegenpartij.contactpersoon.naam == "Noor Visser"  # whom they will call
        assert len(await read_all(kafka.bootstrap, dlq)) == 1  # nothing dead-lettered again
    finally:
        await hub.stop()


async def test_a_registration_that_waited_on_the_ladder_goes_with_the_contact_now(
    kafka: EmbeddedKafka, db_url: str, unique: str, simulator: SimulatorServer, admin: httpx.AsyncClient
) -> None:
    """The signal moved to Noor while its registration was parked: the registration names Noor (the
    change behind it then changes nothing). Before, the index held Ilse until the change went, and a
    match in between named her."""
    await set_faults(admin, error_rate=1.0)  # 503 on every call
    hub = await start_hub(kafka, db_url, unique, simulator.url, poll_s=60, policy=SLOW)
    try:
        signal = a_signal(bsns(1, start=910_000_000)[0])
        assert signal.signal_id
        await register(hub, signal)
        await wait_for(lambda: _all_at(hub, 1, of=1))  # parked after its first rung
        await move(hub, signal, STAND_IN)
        await set_faults(admin)
        await wait_for(lambda: _all_delivered(hub), timeout_s=30)

        held = simulator.state.signals[signal.signal_id]
        assert held.registratie.contactpersoon.naam == "Noor Visser"
        assert held.signaal.contactpersoon.naam == "Noor Visser"
        log = [
            (c["method"], c["status"]) for c in await calls(admin) if c["path"] == SIGNAL + signal.signal_id
        ]
        assert log[-2:] == [("PUT", 201), ("PATCH", 200)]
        assert await audited(hub, signal) == [
            "verwijsindex.RegisterSignal",
            "verwijsindex.ChangeSignalContact",
        ]
        [sent] = await audit_of(hub, signal, "verwijsindex.RegisterSignal")
        assert (sent["caseworker_id"], sent["queued_caseworker_id"]) == ("cw-noor", "cw-ilse")
        [changed] = await audit_of(hub, signal, "verwijsindex.ChangeSignalContact")
        assert changed["caseworker_id"] == "cw-noor" and "queued_caseworker_id" not in changed
        assert await read_all(kafka.bootstrap, hub.topic(VERWIJSINDEX_SIGNAL.dlq)) == []
    finally:
        await hub.stop()


async def test_an_older_contact_change_replayed_after_a_newer_one_does_not_bring_its_contact_back(
    kafka: EmbeddedKafka, db_url: str, unique: str, simulator: SimulatorServer, admin: httpx.AsyncClient
) -> None:
    """A change to Noor became a dead letter while the index was down; then the signal moved on to
    Piet, and that change went. Replaying the older letter must not make Noor the contact again."""
    hub = await start_hub(kafka, db_url, unique, simulator.url, poll_s=60)
    try:
        signal = a_signal(bsns(1, start=920_000_000)[0])
        assert signal.signal_id
        await register(hub, signal)
        await wait_for(lambda: _all_delivered(hub), timeout_s=20)
        await set_faults(admin, error_rate=1.0)
        await move(hub, signal, STAND_IN)
        dlq = hub.topic(VERWIJSINDEX_SIGNAL.dlq)
        assert len(await read_topic(kafka.bootstrap, dlq, expect=1, timeout_s=30)) == 1
        await set_faults(admin)
        await move(hub, signal, PIET)
        await wait_for(lambda: _all_delivered(hub), timeout_s=20)
        assert simulator.state.get(signal.signal_id).contactpersoon.naam == "Piet de Boer"

        await replay_all(hub)
        changes = ("verwijsindex.ChangeSignalContact",) * 2
        await wait_for(audited_as(hub, signal, "verwijsindex.RegisterSignal", *changes), timeout_s=20)
        now = simulator.state.get(signal.signal_id)
        assert now.status is SignaalStatus.ACTIEF and now.contactpersoon.naam == "Piet de Boer"
        first, replayed = await audit_of(hub, signal, "verwijsindex.ChangeSignalContact")
        assert first["caseworker_id"] == "cw-piet" and "queued_caseworker_id" not in first
        assert (replayed["caseworker_id"], replayed["queued_caseworker_id"]) == ("cw-piet", "cw-noor")
        assert (await rows(hub))[signal.signal_id].delivery_state == "delivered"
        assert len(await read_all(kafka.bootstrap, dlq)) == 1  # not again
    finally:
        await hub.stop()


async def test_a_registration_the_index_took_before_a_move_gets_the_contact_now_as_a_change(
    kafka: EmbeddedKafka, db_url: str, unique: str, simulator: SimulatorServer, admin: httpx.AsyncClient
) -> None:
    """The index took the registration (with Ilse) but its answers were cut off; then the signal moved
    to Noor. The index takes a registration once: naming Noor, the next attempt conflicts with what
    it holds. The hub reads the signal there, finds its own registration, and gives the index Noor as
    a change; no dead letter, and the registration is audited as the disclosure it was."""
    await set_faults(admin, lost_answer_rate=1.0, remaining=2, methods=["PUT"])  # both calls in place
    hub = await start_hub(kafka, db_url, unique, simulator.url, poll_s=60, policy=SLOW)
    try:
        signal = a_signal(bsns(1, start=930_000_000)[0])
        assert signal.signal_id
        await register(hub, signal)
        await wait_for(lambda: _all_at(hub, 1, of=1))  # parked after its first rung
        await move(hub, signal, STAND_IN)
        await wait_for(lambda: _all_delivered(hub), timeout_s=30)

        log = await calls(admin)
        sent = [(c["method"], c["fault"], c["status"]) for c in log if c["path"] == SIGNAL + signal.signal_id]
        assert sent == [
            ("PUT", "lost", 201),
            ("PUT", "lost", 200),
            ("PUT", None, 409),  # Noor, where the index holds Ilse
            ("GET", None, 200),  # is it ours?
            ("PATCH", None, 200),  # Noor, as the registration
            ("PATCH", None, 200),  # the change behind it: Noor again
        ]
        assert simulator.state.get(signal.signal_id).contactpersoon.naam == "Noor Visser"
        assert await audited(hub, signal) == [
            "verwijsindex.RegisterSignal",
            "verwijsindex.ChangeSignalContact",
        ]
        [registered] = await audit_of(hub, signal, "verwijsindex.RegisterSignal")
        assert registered["caseworker_id"] == "cw-noor"
        assert await read_all(kafka.bootstrap, hub.topic(VERWIJSINDEX_SIGNAL.dlq)) == []
    finally:
        await hub.stop()
