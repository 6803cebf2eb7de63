"""A signal command that waited tells the Verwijsindex the signal's contact as the hub holds it when it
goes, not the one it was queued with (rules 13, 17); a registration the index took at an earlier
attempt is the hub's whatever contact it holds now, and audited as the disclosure it was (rule 18);
a change the index holds no signal for is moot only while a registration of it is on its way, and
an older command replayed leaves the latest one's state be: the real broker, both stores, the
simulator over real HTTP."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select, update
from typer.testing import CliRunner

from connectors.verwijsindex.client import VerwijsindexClient
from connectors.verwijsindex.component import NAME, VerwijsindexConnector
from connectors.verwijsindex.contract import Organisatie, SignaalStatus
from connectors.verwijsindex.sim_server import SimulatorServer
from hub.app import create_app
from hub.cli import app as cli
from hub.clock import today
from hub.directory import create_caseworker, replace_caseworker
from hub.embedded import EmbeddedKafka
from hub.errors import TransientError
from hub.ops.auth import add_operator
from hub.ops.dlq import DeadLetters
from hub.retry.tables import parked
from hub.runtime import Hub
from hub.signals import commands, register_again, request_contact_change, store_signal
from hub.signals.service import REGISTRATION_PATIENCE, RegistrationOnItsWay
from hub.signals.tables import signals
from hub.signals.waiting import registration_waits, waits_of
from hub.spine import add_to_outbox
from hub.spine.dlq import DLQ_EXC_MESSAGE
from hub.store import Store
from hub.store.tables import audit_log, outbox
from hub.topics import VERWIJSINDEX_SIGNAL
from schemas.caseworker import Caseworker, Team
from schemas.envelope import utcnow
from schemas.pseudonym import youth_key
from schemas.signal import VerwijsindexSignal
from tests.conftest import TEST_SECRET, make_settings
from tests.helpers.kafka import headers_of, read_all, read_topic, wait_for
from tests.integration.test_verwijsindex_connector import (
    ILSE,
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
    withdraw,
)

pytestmark = pytest.mark.integration
PIET = Caseworker(
    caseworker_id="cw-piet",
    name="Piet de Boer",
    email="piet@halt.nl",
    team=Team.DEN_HAAG,
    meldingsbevoegd=True,
)
OPS_PASSWORD = "a long enough password"
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


def dead_letters(hub: Hub) -> DeadLetters:
    """The signal topic's dead letters, as the operator console has them."""
    assert hub.store is not None and hub.relay is not None
    return DeadLetters(
        hub.store, hub.kafka_options, [hub.topic(VERWIJSINDEX_SIGNAL.dlq)], wake=hub.relay.wake
    )


async def replay_all(hub: Hub) -> None:
    """An operator replays every dead letter of the signal topic."""
    letters = dead_letters(hub)
    job = await letters.start_replay(await letters.find(), "olaf")
    await wait_for(lambda: _is_done(job), timeout_s=30)
    assert (job.done, job.skipped, job.failed) == (1, 0, 0)


async def parked_rows(hub: Hub) -> int:
    """How many commands wait on the connector's retry ladder."""
    assert hub.store is not None
    async with hub.store.connect() as conn:
        counted = select(func.count()).select_from(parked).where(parked.c.ladder == NAME)
        return int((await conn.execute(counted)).scalar_one())


async def path_log(admin: httpx.AsyncClient, signal: VerwijsindexSignal) -> list[tuple[str, int]]:
    """The index's calls on the signal, as (method, status), oldest first."""
    assert signal.signal_id
    return [(c["method"], c["status"]) for c in await calls(admin) if c["path"] == SIGNAL + signal.signal_id]


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
        assert "registered_at_earlier_attempt" not in sent  # the index took this very PUT
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
        # both contacts that went: Ilse with the registration the index took, Noor as its change
        assert registered["caseworker_id"] == "cw-noor"
        assert registered["registered_at_earlier_attempt"] is True
        assert registered["index_contact_caseworker_id"] == "cw-ilse"
        assert await read_all(kafka.bootstrap, hub.topic(VERWIJSINDEX_SIGNAL.dlq)) == []
    finally:
        await hub.stop()


async def test_a_registration_replayed_after_its_change_went_is_the_one_the_index_holds(
    kafka: EmbeddedKafka, db_url: str, unique: str, simulator: SimulatorServer, admin: httpx.AsyncClient
) -> None:
    """The index took the registration (with Ilse), but every answer was cut off: a dead letter. The
    index back, borging moved the signal to Noor and that change went. The operator replays the
    registration: it names Noor, and the index, which keeps the body it took (with Ilse), conflicts,
    though it names Noor already. It is the hub's registration: delivered with no further call, not
    dead-lettered again, audited as the disclosure it was; the signal stays delivered."""
    await set_faults(admin, lost_answer_rate=1.0, methods=["PUT"])  # done by the index, answer cut off
    hub = await start_hub(kafka, db_url, unique, simulator.url, poll_s=60)
    try:
        signal = a_signal(bsns(1, start=950_000_000)[0])
        assert signal.signal_id
        await register(hub, signal)
        dlq = hub.topic(VERWIJSINDEX_SIGNAL.dlq)
        assert len(await read_topic(kafka.bootstrap, dlq, expect=1, timeout_s=30)) == 1
        # no answer came: it may be in the index, and is in the youth's trail as such (rule 18)
        maybe = "verwijsindex.RegisterSignal.possibly_sent"
        assert await audited(hub, signal) == [maybe]
        await set_faults(admin)
        await move(hub, signal, STAND_IN)
        await wait_for(audited_as(hub, signal, maybe, "verwijsindex.ChangeSignalContact"), timeout_s=20)
        assert (await rows(hub))[signal.signal_id].delivery_state == "delivered"

        await replay_all(hub)
        changed_then_registered = (maybe, "verwijsindex.ChangeSignalContact", "verwijsindex.RegisterSignal")
        await wait_for(audited_as(hub, signal, *changed_then_registered), timeout_s=20)
        assert (await path_log(admin, signal))[-3:] == [("PATCH", 200), ("PUT", 409), ("GET", 200)]
        assert simulator.state.get(signal.signal_id).contactpersoon.naam == "Noor Visser"
        [registered] = await audit_of(hub, signal, "verwijsindex.RegisterSignal")
        assert (registered["caseworker_id"], registered["queued_caseworker_id"]) == ("cw-noor", "cw-ilse")
        assert registered["registered_at_earlier_attempt"] is True
        assert registered["index_contact_caseworker_id"] == "cw-noor"  # the change had given it Noor
        row = (await rows(hub))[signal.signal_id]
        assert (row.delivery_state, row.delivery_command) == ("delivered", "ChangeSignalContact")
        assert len(await read_all(kafka.bootstrap, dlq)) == 1  # not again
    finally:
        await hub.stop()


async def test_a_registration_whose_turn_around_change_got_through_unanswered_is_not_refused(
    db_url: str, simulator: SimulatorServer, admin: httpx.AsyncClient
) -> None:
    """The connector alone: the index took the registration with Ilse (its answer lost); the signal
    moved to Noor; the next attempt's PUT conflicts and the index is given Noor as a change, whose
    answer is lost too. The attempt after finds the index naming Noor: the registration is done,
    with no call but the PUT and the look, not a conflict for the DLQ."""
    store = Store(db_url)
    await store.migrate()
    client = VerwijsindexClient(simulator.url, timeout=5, organisatie="halt-den-haag")
    connector = VerwijsindexConnector(
        client, Organisatie(code="halt-den-haag", naam="Halt Den Haag"), None, store
    )
    topic = "t.verwijsindex.signal.v1"
    try:
        signal = a_signal(bsns(1, start=940_000_000)[0])
        assert signal.signal_id
        async with store.transaction() as session:
            key = youth_key(TEST_SECRET, signal.youth.bsn)
            await store_signal(
                session, topic, signal, youth_key=key, user="cw-ilse", transaction_id=str(uuid.uuid4())
            )
        registration = commands.register_command(signal, str(uuid.uuid4()))
        await connector.deliver(registration)  # the index takes it with Ilse; say its answer was lost
        async with store.transaction() as session:
            await request_contact_change(session, topic, signal.signal_id, STAND_IN, str(uuid.uuid4()))

        patch = client.change_contact

        async def patch_and_lose_the_answer(*args: Any, **kwargs: Any) -> Any:
            await patch(*args, **kwargs)
            raise TransientError("read timeout (the index did it)")

        client.change_contact = patch_and_lose_the_answer  # type: ignore[method-assign]
        with pytest.raises(TransientError):
            await connector.deliver(registration)
        client.change_contact = patch  # type: ignore[method-assign]
        assert simulator.state.get(signal.signal_id).contactpersoon.naam == "Noor Visser"

        await connector.deliver(registration)  # not IndexConflict: the index holds what the hub wants
        assert (await path_log(admin, signal))[-2:] == [("PUT", 409), ("GET", 200)]  # no PATCH again
        assert connector.contacts.note(registration.message_id) == "cw-noor"
        assert connector.earlier.note(registration.message_id) == "cw-noor"
    finally:
        await client.aclose()
        await store.close()


async def test_an_older_command_replayed_and_failing_again_leaves_the_latest_commands_state(
    kafka: EmbeddedKafka, db_url: str, unique: str, simulator: SimulatorServer, admin: httpx.AsyncClient
) -> None:
    """The registration became a dead letter though the index took it (answers cut off); the change
    to Noor behind it went. Replayed while the index is down, the registration retries and is
    dead-lettered again: the signal, whose latest command was delivered, says delivered throughout."""
    await set_faults(admin, lost_answer_rate=1.0, methods=["PUT"])
    hub = await start_hub(kafka, db_url, unique, simulator.url, poll_s=60)
    try:
        signal = a_signal(bsns(1, start=970_000_000)[0])
        assert signal.signal_id
        await register(hub, signal)
        dlq = hub.topic(VERWIJSINDEX_SIGNAL.dlq)
        assert len(await read_topic(kafka.bootstrap, dlq, expect=1, timeout_s=30)) == 1
        await set_faults(admin)
        await move(hub, signal, STAND_IN)
        maybe = "verwijsindex.RegisterSignal.possibly_sent"  # dead-lettered with no answer (rule 18)
        await wait_for(audited_as(hub, signal, maybe, "verwijsindex.ChangeSignalContact"), timeout_s=20)

        await set_faults(admin, error_rate=1.0)  # down again
        await replay_all(hub)
        shown: set[tuple[str, str | None]] = set()

        async def dead_again() -> bool:
            row = (await rows(hub))[signal.signal_id]
            shown.add((row.delivery_state, row.last_error))
            return len(await read_all(kafka.bootstrap, dlq)) == 2

        await wait_for(dead_again, timeout_s=30)
        assert await parked_rows(hub) == 0
        row = (await rows(hub))[signal.signal_id]
        shown.add((row.delivery_state, row.last_error))
        assert shown == {("delivered", None)}  # never retrying, never dead_lettered
        assert row.delivery_command == "ChangeSignalContact"
    finally:
        await hub.stop()


async def test_a_change_the_index_holds_no_signal_for_and_no_registration_waits_for_is_a_dead_letter(
    kafka: EmbeddedKafka, db_url: str, unique: str, simulator: SimulatorServer
) -> None:
    """The registration went; then the index lost the signal (restored from a backup). A change to
    Noor finds no signal there, and no registration is on its way to put it back: not moot, but a
    dead letter operators see, and the signal says what to do."""
    hub = await start_hub(kafka, db_url, unique, simulator.url, poll_s=60)
    try:
        signal = a_signal(bsns(1, start=960_000_000)[0])
        assert signal.signal_id
        await register(hub, signal)
        await wait_for(lambda: _all_delivered(hub), timeout_s=20)
        simulator.state.signals.clear()
        await move(hub, signal, STAND_IN)

        dlq = hub.topic(VERWIJSINDEX_SIGNAL.dlq)
        [letter] = await read_topic(kafka.bootstrap, dlq, expect=1, timeout_s=30)
        said = headers_of(letter)
        assert said["message-type"].startswith("ChangeSignalContact")
        assert "no registration of it is waiting" in said[DLQ_EXC_MESSAGE]
        assert "register it again" in said[DLQ_EXC_MESSAGE]
        await wait_for(lambda: _state_is(hub, signal, "dead_lettered"), timeout_s=20)
        row = (await rows(hub))[signal.signal_id]
        assert row.delivery_command == "ChangeSignalContact" and "register it again" in row.last_error
        # the letter names the way to do so, with this signal's id
        assert f"ketenhub signals register-again {signal.signal_id}" in said[DLQ_EXC_MESSAGE]
        assert await audited(hub, signal) == ["verwijsindex.RegisterSignal"]  # the change: not moot

        # an operator registers it again over the console's API: the index holds it, with Noor
        app = create_app(hub.settings, hub=hub)
        assert hub.store is not None
        await add_operator(hub.store, "olga", OPS_PASSWORD, "operator")
        await add_operator(hub.store, "vera", OPS_PASSWORD, "viewer")
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://hub") as ops:
            as_viewer = await _ops_login(ops, "vera")
            path = f"/ops/api/signals/{signal.signal_id}/register-again"
            assert (await as_viewer.post(path)).status_code == 403
            as_operator = await _ops_login(ops, "olga")
            unknown = await as_operator.post(f"/ops/api/signals/{uuid.uuid4()}/register-again")
            assert unknown.status_code == 404
            # rule 13: the index is not told of a contact who may no longer signal, nor of one the
            # directory does not know
            absent = await as_operator.post(path)
            assert absent.status_code == 409 and "not in the directory" in absent.json()["detail"]
            async with hub.store.transaction() as session:
                await create_caseworker(session, STAND_IN.model_copy(update={"meldingsbevoegd": False}))
            unfit = await as_operator.post(path)
            assert unfit.status_code == 409 and "niet meldingsbevoegd" in unfit.json()["detail"]
            async with hub.store.transaction() as session:
                await replace_caseworker(session, STAND_IN)
            again = await as_operator.post(path)
            assert again.status_code == 202, again.text
            answer = again.json()
            assert answer["signal_id"] == signal.signal_id and signal.youth.bsn not in again.text
            await wait_for(lambda: _state_is(hub, signal, "delivered"), timeout_s=20)
            assert simulator.state.get(signal.signal_id).contactpersoon.naam == "Noor Visser"
            assert await audited(hub, signal) == ["verwijsindex.RegisterSignal"] * 2
            [asked] = await audit_of(hub, signal, "signal.registered_again")
            assert asked == {
                "signal_id": signal.signal_id,
                "message_id": answer["message_id"],
                "caseworker_id": STAND_IN.caseworker_id,
            }
            async with hub.store.connect() as conn:
                users = await conn.execute(
                    select(audit_log.c.user, audit_log.c.transaction_id).where(
                        audit_log.c.action == "signal.registered_again"
                    )
                )
                assert users.all() == [("olga", answer["transaction_id"])]
            await withdraw(hub, signal)
            ended = await as_operator.post(path)
            assert ended.status_code == 409  # a withdrawn signal is not registered again
    finally:
        await hub.stop()


async def test_a_second_request_to_register_a_signal_again_at_once_is_refused(store: Store) -> None:
    """Two operators (or one double click) asked at once: each found no registration on its way (none
    was queued yet, or the first was published, out of the outbox and not yet taken up, which the
    check cannot see), and both were queued: the index was handed the youth twice. Under the
    signal's lock, the second finds the first's registration its latest command, not yet settled."""
    signal = a_signal(bsns(1, start=970_000_000)[0])
    assert signal.signal_id
    key, topic = youth_key(TEST_SECRET, signal.youth.bsn), "t.verwijsindex.signal.v1"
    async with store.transaction() as session:
        await create_caseworker(session, ILSE)
        await store_signal(session, topic, signal, youth_key=key, user="cw-ilse", transaction_id="t-1")
        # the index took the registration, and later lost the signal: an operator registers it again
        await session.execute(update(signals).values(delivery_state="delivered"))

    async def nothing_waits(_signal_id: str, _youth_key: str) -> bool:
        return False

    asked = [
        register_again(
            store, topic, signal.signal_id, user=who, transaction_id=str(uuid.uuid4()), waits=nothing_waits
        )
        for who in ("olga", "omar")
    ]
    answers = await asyncio.gather(*asked, return_exceptions=True)
    [refused] = [a for a in answers if isinstance(a, BaseException)]
    assert isinstance(refused, RegistrationOnItsWay) and "has not reached it yet" in str(refused)
    assert signal.youth.bsn not in str(refused)
    queued = select(func.count()).select_from(outbox).where(outbox.c.topic == topic)
    again = select(func.count()).select_from(audit_log).where(audit_log.c.action == "signal.registered_again")
    async with store.connect() as conn:
        assert (await conn.execute(queued)).scalar_one() == 2  # the first registration and one again
        assert (await conn.execute(again)).scalar_one() == 1

    # a registration whose fate was never recorded (its letter parked as too large and discarded, a
    # hook that failed) does not hold the signal for good
    long_ago = utcnow() - REGISTRATION_PATIENCE - timedelta(minutes=1)
    async with store.transaction() as session:
        await session.execute(update(signals).values(updated_at=long_ago))
    await register_again(
        store, topic, signal.signal_id, user="olga", transaction_id="t-3", waits=nothing_waits
    )
    async with store.connect() as conn:
        assert (await conn.execute(queued)).scalar_one() == 3


async def _sent(hub: Hub, topic: str, count: int) -> bool:
    assert hub.store is not None
    async with hub.store.connect() as conn:
        found = (
            select(func.count())
            .select_from(outbox)
            .where(outbox.c.topic == topic, outbox.c.sent_at.is_not(None))
        )
        return int((await conn.execute(found)).scalar_one()) == count


async def test_a_registration_on_the_topic_behind_a_contact_change_is_on_its_way(
    kafka: EmbeddedKafka, db_url: str, unique: str, simulator: SimulatorServer, admin: httpx.AsyncClient
) -> None:
    """The relay published the registration and the connector had not taken it in (it lags, or its
    process is down); then the signal's contact moved. The change is now the signal's latest
    command, so neither the row nor the store's queues said a registration was on its way, and an
    operator's register-again handed the index the youth a second time. A sent registration whose
    message id the connector's group has not taken in is on its way; once taken in, it is not."""
    settings = make_settings(kafka, db_url, unique, components=["verwijsindex"])
    bare = Hub(settings, registrars={"verwijsindex": []})  # the connector's process is down
    await bare.start()
    signal = a_signal(bsns(1, start=975_000_000)[0])
    assert signal.signal_id
    topic = bare.topic(VERWIJSINDEX_SIGNAL.name)
    try:
        assert bare.store is not None
        async with bare.store.transaction() as session:
            await create_caseworker(session, ILSE)
            await create_caseworker(session, PIET)
        await register(bare, signal)
        await move(bare, signal, PIET)
        await wait_for(lambda: _sent(bare, topic, 2), timeout_s=20)
        waits = waits_of(bare.store, bare.settings.kafka, bare.kafka_options)
        with pytest.raises(RegistrationOnItsWay, match="still on its way") as refused:
            await register_again(
                bare.store, bare, signal.signal_id, user="olga", transaction_id="t-1", waits=waits
            )
        assert signal.youth.bsn not in str(refused.value)
        assert await _sent(bare, topic, 2)  # nothing more queued
    finally:
        await bare.stop()

    hub = await start_hub(kafka, db_url, unique, simulator.url)
    try:
        assert hub.store is not None
        await wait_for(lambda: _all_delivered(hub), timeout_s=30)
        assert await path_log(admin, signal) == [("PUT", 201), ("PATCH", 200)]
        waits = waits_of(hub.store, hub.settings.kafka, hub.kafka_options)
        await register_again(hub.store, hub, signal.signal_id, user="olga", transaction_id="t-2", waits=waits)
        hub.relay.wake()  # type: ignore[union-attr]
        await wait_for(lambda: _all_delivered(hub), timeout_s=30)
        assert [m for m, _ in await path_log(admin, signal)] == ["PUT", "PATCH", "PUT"]
    finally:
        await hub.stop()


async def test_a_registration_replayed_while_its_dead_letter_is_looked_for_is_on_its_way(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The check looks where a registration is in the order it moves, the DLQ last; a replay moves it
    back to the outbox. Replayed between the outbox's look and the DLQ's, it was in neither: a
    contact change passed for a dead letter, or a register-again for a first registration."""
    signal = a_signal(bsns(1, start=976_000_000)[0])
    assert signal.signal_id
    key, topic = youth_key(TEST_SECRET, signal.youth.bsn), "t.verwijsindex.signal.v1"

    async def replayed_meanwhile(_self: DeadLetters, _filter: Any) -> list[Any]:
        async with store.transaction() as session:  # the letter resolved, its record queued again
            await add_to_outbox(session, topic, commands.register_command(signal, "t-1"), key=key)
        return []  # no open letter any more

    monkeypatch.setattr(DeadLetters, "find", replayed_meanwhile)
    waits = registration_waits(
        store, ladder=NAME, group="g-verwijsindex", topic=topic, dlq_topic=topic + ".dlq", options={}
    )
    assert await waits(signal.signal_id, key)


async def _ops_login(client: httpx.AsyncClient, username: str) -> httpx.AsyncClient:
    """A client of the same app with `username` logged in to the operator console."""
    own = httpx.AsyncClient(transport=client._transport, base_url="http://hub")
    r = await own.post("/ops/login", json={"username": username, "password": OPS_PASSWORD})
    assert r.status_code == 200, r.text
    return own


async def test_a_change_whose_registration_letter_was_discarded_is_a_dead_letter(
    kafka: EmbeddedKafka, db_url: str, unique: str, simulator: SimulatorServer, admin: httpx.AsyncClient
) -> None:
    """The registration became a dead letter, and an operator discarded it. A change then finds no
    signal in the index, and nothing will register it: a dead letter, not moot."""
    await set_faults(admin, error_rate=1.0)
    hub = await start_hub(kafka, db_url, unique, simulator.url, poll_s=60)
    try:
        signal = a_signal(bsns(1, start=980_000_000)[0])
        assert signal.signal_id
        await register(hub, signal)
        dlq = hub.topic(VERWIJSINDEX_SIGNAL.dlq)
        assert len(await read_topic(kafka.bootstrap, dlq, expect=1, timeout_s=30)) == 1
        await set_faults(admin)
        env = {
            "KETENHUB_DATABASE__URL": db_url,
            "KETENHUB_KAFKA__BOOTSTRAP_SERVERS": kafka.bootstrap,
            "KETENHUB_KAFKA__TOPIC_PREFIX": hub.settings.kafka.topic_prefix,
            "KETENHUB_KAFKA__GROUP_PREFIX": hub.settings.kafka.group_prefix,  # the hub's own settings
            "KETENHUB_SECRET": TEST_SECRET,
        }
        args = ["signals", "register-again", signal.signal_id]
        # while its registration is an open dead letter, that one is to be replayed: not a second
        waiting = await asyncio.to_thread(CliRunner().invoke, cli, args, env=env)
        assert waiting.exit_code == 1 and "still on its way" in waiting.output, waiting.output
        assert await audit_of(hub, signal, "signal.registered_again") == []
        letters = dead_letters(hub)
        [registration] = await letters.find()
        assert await letters.discard(registration, "olaf", "registered by hand")
        async with hub.store.transaction() as session:
            await create_caseworker(session, STAND_IN)
        await move(hub, signal, STAND_IN)

        assert len(await read_topic(kafka.bootstrap, dlq, expect=2, timeout_s=30)) == 2
        await wait_for(lambda: _state_is(hub, signal, "dead_lettered"), timeout_s=20)
        row = (await rows(hub))[signal.signal_id]
        assert row.delivery_command == "ChangeSignalContact" and "register it again" in row.last_error
        assert await audited(hub, signal) == []

        # an operator registers it again from the command line; the running hub sends it
        done = await asyncio.to_thread(CliRunner().invoke, cli, args, env=env)
        assert done.exit_code == 0, done.output
        assert f"queued the registration of {signal.signal_id} again" in done.output
        hub.relay.wake()
        await wait_for(lambda: _state_is(hub, signal, "delivered"), timeout_s=20)
        # with the contact now: Noor's, not the one it was first queued with
        assert simulator.state.get(signal.signal_id).contactpersoon.naam == "Noor Visser"
        assert await audited(hub, signal) == ["verwijsindex.RegisterSignal"]
        [asked] = await audit_of(hub, signal, "signal.registered_again")
        assert asked["caseworker_id"] == STAND_IN.caseworker_id
        unknown = await asyncio.to_thread(
            CliRunner().invoke, cli, ["signals", "register-again", "nope"], env=env
        )
        assert unknown.exit_code == 1 and "unknown" in unknown.output
    finally:
        await hub.stop()


async def test_a_change_is_moot_while_its_replayed_registration_is_parked_behind_it(
    kafka: EmbeddedKafka, db_url: str, unique: str, simulator: SimulatorServer, admin: httpx.AsyncClient
) -> None:
    """The registration is a dead letter; the change to Noor waits on the ladder (the index still
    down) when the operator replays the registration, which parks behind it. The index back, the
    change finds no signal: moot, for the registration (its letter resolved, but parked) goes next,
    naming Noor."""
    await set_faults(admin, error_rate=1.0)
    hub = await start_hub(kafka, db_url, unique, simulator.url, poll_s=60, policy=SLOW)
    try:
        signal = a_signal(bsns(1, start=990_000_000)[0])
        assert signal.signal_id
        await register(hub, signal)
        dlq = hub.topic(VERWIJSINDEX_SIGNAL.dlq)
        assert len(await read_topic(kafka.bootstrap, dlq, expect=1, timeout_s=60)) == 1
        await move(hub, signal, STAND_IN)
        await wait_for(lambda: _all_at(hub, 1, of=1), timeout_s=20)  # the change, parked
        await replay_all(hub)
        await wait_for(lambda: _parked_is(hub, 2), timeout_s=20)  # the registration, behind it
        await set_faults(admin)

        await wait_for(lambda: _all_delivered(hub), timeout_s=30)
        assert (await path_log(admin, signal))[-2:] == [("PATCH", 404), ("PUT", 201)]
        assert await audited(hub, signal) == [
            "verwijsindex.ChangeSignalContact.not_in_index",
            "verwijsindex.RegisterSignal",
        ]
        [sent] = await audit_of(hub, signal, "verwijsindex.RegisterSignal")
        assert (sent["caseworker_id"], sent["queued_caseworker_id"]) == ("cw-noor", "cw-ilse")
        assert simulator.state.get(signal.signal_id).contactpersoon.naam == "Noor Visser"
        assert len(await read_all(kafka.bootstrap, dlq)) == 1  # the registration's, replayed
    finally:
        await hub.stop()


async def test_a_registration_replayed_after_its_signal_ended_settles_the_signal_awaiting_it(
    kafka: EmbeddedKafka, db_url: str, unique: str, simulator: SimulatorServer, admin: httpx.AsyncClient
) -> None:
    """The registration is a dead letter; a change to Noor finds no signal in the index (moot: the
    letter is open), and the signal shows its registration awaited. The signal's end date passes,
    then the letter is replayed: withheld (it is over). The signal stayed dead-lettered, telling
    operators to replay a registration whose every replay would be withheld again."""
    await set_faults(admin, error_rate=1.0)
    hub = await start_hub(kafka, db_url, unique, simulator.url, poll_s=60)
    try:
        assert hub.store is not None
        signal = a_signal(bsns(1, start=995_000_000)[0])
        assert signal.signal_id
        await register(hub, signal)
        dlq = hub.topic(VERWIJSINDEX_SIGNAL.dlq)
        assert len(await read_topic(kafka.bootstrap, dlq, expect=1, timeout_s=60)) == 1
        await set_faults(admin)
        await move(hub, signal, STAND_IN)
        await wait_for(audited_as(hub, signal, "verwijsindex.ChangeSignalContact.not_in_index"), timeout_s=20)
        assert (await rows(hub))[signal.signal_id].delivery_state == "dead_lettered"  # awaits it
        async with hub.store.transaction() as session:  # the days go by: its end date passes
            await session.execute(
                update(signals)
                .where(signals.c.signal_id == signal.signal_id)
                .values(created=today() - timedelta(days=400), end_date=today() - timedelta(days=1))
            )
        await replay_all(hub)
        await wait_for(lambda: _state_is(hub, signal, "withheld"), timeout_s=20)
        assert await audited(hub, signal) == [
            "verwijsindex.ChangeSignalContact.not_in_index",
            "verwijsindex.RegisterSignal.withheld",
        ]
        assert (await path_log(admin, signal))[-1] == ("GET", 404)  # asked, nothing sent
        assert signal.signal_id not in simulator.state.signals
    finally:
        await hub.stop()


async def _state_is(hub: Hub, signal: VerwijsindexSignal, state: str) -> bool:
    assert signal.signal_id
    return bool((await rows(hub))[signal.signal_id].delivery_state == state)


async def _parked_is(hub: Hub, n: int) -> bool:
    return await parked_rows(hub) == n
