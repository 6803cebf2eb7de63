"""The Verwijsindex connector on the real broker, both stores and the simulator over real HTTP."""

from __future__ import annotations

import itertools
import logging
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import date, timedelta
from typing import Any

import httpx
import pytest
import structlog
from fastapi import FastAPI
from fastapi.responses import JSONResponse
from sqlalchemy import insert, select

from connectors.verwijsindex.component import verwijsindex_component
from connectors.verwijsindex.contract import SignaalStatus, add_years
from connectors.verwijsindex.sim_server import SimulatorServer
from hub.clock import today
from hub.directory import create_caseworker
from hub.embedded import EmbeddedKafka
from hub.ops.dlq import DeadLetters, ReplayJob
from hub.retry import RetryPolicy
from hub.retry.tables import parked
from hub.runtime import Hub
from hub.signals import NotInformed, register_again, request_contact_change, request_withdrawal, store_signal
from hub.signals.commands import register_command
from hub.signals.service import new_signal_row
from hub.signals.tables import signals
from hub.signals.waiting import waits_of
from hub.spine.dlq import DLQ_HEADERS
from hub.store.tables import audit_log
from hub.topics import VERWIJSINDEX_SIGNAL
from schemas.bsn import is_valid_bsn
from schemas.caseworker import Caseworker, ContactDetails, Team
from schemas.envelope import Envelope
from schemas.pseudonym import youth_key
from schemas.signal import SignalYouth, VerwijsindexSignal, WithdrawalReason
from tests.conftest import TEST_SECRET, make_settings
from tests.helpers.http import serving
from tests.helpers.kafka import headers_of, produce, read_all, read_topic, wait_for

pytestmark = pytest.mark.integration
# In place: 2 quick calls; then parked attempts 0.6 s apart; the 5th failure goes to the DLQ.
FAST = RetryPolicy(in_place_attempts=2, in_place_wait_s=0.01, schedule_s=(0.6,) * 5, jitter=0.0)
# For the outage test: each parked rung leaves the test seconds, not a fraction of one, to change the
# simulator's faults before the next attempt, however loaded the machine.
SLOW = RetryPolicy(in_place_attempts=2, in_place_wait_s=0.01, schedule_s=(3.0,) * 5, jitter=0.0)
SIGNAL = "/api/v1/signalen/"
ILSE = Caseworker(  # a_signal's contact, as the directory holds her
    caseworker_id="cw-ilse",
    name="Ilse Bakker",
    email="ilse@halt.nl",
    team=Team.DEN_HAAG,
    meldingsbevoegd=True,
)
STAND_IN = Caseworker(
    caseworker_id="cw-noor",
    name="Noor Visser",
    email="noor@halt.nl",
    team=Team.DEN_HAAG,
    meldingsbevoegd=True,
)


def bsns(count: int, start: int = 100_000_000) -> list[str]:
    """`count` valid (elfproef) BSNs."""
    out, n = [], start
    while len(out) < count:
        n += 1
        if is_valid_bsn(str(n)):
            out.append(str(n))
    return out


def a_signal(bsn: str, signal_id: str | None = None) -> VerwijsindexSignal:
    return VerwijsindexSignal(
        signal_id=signal_id or str(uuid.uuid4()),
        youth=SignalYouth(
            bsn=bsn,
            given_names="Sam",
            surname="Jansen",
            birth_date=date(2010, 5, 1),
            gender="MAN",
            municipality="Den Haag",
        ),
        organisation="Halt Den Haag",
        caseworker=ContactDetails(name="Ilse Bakker", organisation="Halt Den Haag", email="ilse@halt.nl"),
        caseworker_id="cw-ilse",
        created=today(),
        end_date=today() + timedelta(days=365),
        youth_informed_at=today(),
        parent_letter_sent_at=today(),
    )


@pytest.fixture
def simulator() -> Iterator[SimulatorServer]:
    with SimulatorServer() as running:
        yield running


@pytest.fixture
async def admin(simulator: SimulatorServer) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=simulator.url, timeout=5) as client:
        yield client


async def start_hub(
    kafka: EmbeddedKafka,
    db_url: str,
    unique: str,
    url: str,
    *,
    page_size: int = 100,
    poll_s: float = 0.1,
    timeout_s: float = 5.0,
    policy: RetryPolicy = FAST,
) -> Hub:
    # A short client timeout turns a slow success on a loaded machine into a retry of a call that
    # was already done: only the test of hanging calls shortens it.
    settings = make_settings(
        kafka,
        db_url,
        unique,
        components=["verwijsindex"],
        verwijsindex={"url": url, "timeout_s": timeout_s, "poll_interval_s": poll_s},
    )
    hub = Hub(settings, registrars={"verwijsindex": [verwijsindex_component(policy, page_size=page_size)]})
    await hub.start()
    return hub


async def register(hub: Hub, *batch: VerwijsindexSignal) -> None:
    """Store signals as the API would and queue their commands, all in one transaction (so they
    reach the connector together)."""
    assert hub.store is not None and hub.relay is not None
    async with hub.store.transaction() as session:
        for signal in batch:
            key = youth_key(TEST_SECRET, signal.youth.bsn)
            await store_signal(
                session, hub, signal, youth_key=key, user="cw-ilse", transaction_id=str(uuid.uuid4())
            )
    hub.relay.wake()


async def withdraw(hub: Hub, *batch: VerwijsindexSignal) -> None:
    """Withdraw stored signals as the API would (rule 15), in one transaction."""
    assert hub.store is not None and hub.relay is not None
    async with hub.store.transaction() as session:
        for signal in batch:
            assert signal.signal_id
            await request_withdrawal(
                session, hub, signal.signal_id, WithdrawalReason.RISICO_WEG, user="cw-ilse",
                transaction_id=str(uuid.uuid4()),
            )  # fmt: skip
    hub.relay.wake()


async def audited(hub: Hub, signal: VerwijsindexSignal) -> list[str]:
    """The Verwijsindex audit actions written for `signal`, oldest first."""
    assert hub.store is not None
    async with hub.store.connect() as conn:
        found = await conn.execute(
            select(audit_log.c.action, audit_log.c.objects)
            .where(audit_log.c.action.like("verwijsindex.%"))
            .order_by(audit_log.c.id)
        )
        return [row.action for row in found if (row.objects or {}).get("signal_id") == signal.signal_id]


async def calls(admin: httpx.AsyncClient) -> list[dict[str, Any]]:
    return list((await admin.get("/admin/calls")).json()["calls"])


async def rows(hub: Hub) -> dict[str, Any]:
    assert hub.store is not None
    async with hub.store.connect() as conn:
        return {r.signal_id: r for r in (await conn.execute(select(signals))).all()}


async def set_faults(admin: httpx.AsyncClient, **faults: Any) -> None:
    assert (await admin.post("/admin/faults", json=faults)).status_code == 200


async def test_outage_then_healthy_registers_each_once_in_order_on_schedule(
    kafka: EmbeddedKafka, db_url: str, unique: str, simulator: SimulatorServer, admin: httpx.AsyncClient
) -> None:
    await set_faults(admin, error_rate=1.0)  # 503 on every call
    # The match feed polls once at start, then not during this test: every call below is a signal's.
    hub = await start_hub(kafka, db_url, unique, simulator.url, poll_s=60, timeout_s=2.0, policy=SLOW)
    try:
        batch = [a_signal(b) for b in bsns(4)]
        await register(hub, *batch)  # due together on every rung of the ladder
        ids = {s.signal_id for s in batch}
        await wait_for(lambda: _all_at(hub, 1, of=4))
        shown = next(iter((await rows(hub)).values()))
        assert shown.next_try_at is not None and "503" in shown.last_error
        # the console's connector line said nothing of the commands' calls, only of the feed's
        down = hub.components["verwijsindex"].status()
        assert down["last_success"] is None and "503" in down["last_error"], down
        assert not down["last_error"].startswith("match feed"), down  # the last failed call: a PUT
        # borging moves each signal meanwhile: the change waits behind its registration, rung by rung
        assert hub.store is not None and hub.relay is not None
        async with hub.store.transaction() as session:
            for signal in batch:
                assert signal.signal_id
                await request_contact_change(session, hub, signal.signal_id, STAND_IN, str(uuid.uuid4()))
        hub.relay.wake()
        await set_faults(
            admin, rate_limit_rate=1.0, retry_after=5
        )  # 429 with Retry-After: 5, past the 3 s rung
        await wait_for(lambda: _all_at(hub, 2, of=4))
        # Exactly one hanging PUT per signal (beyond the 2 s client timeout), then healthy by itself:
        # on SQLite the four attempts run one after another, so healing by hand would race the first
        # signal's next attempt.
        await set_faults(admin, hang_rate=1.0, hang_seconds=4, remaining=len(batch), methods=["PUT"])
        await wait_for(lambda: _all_delivered(hub), timeout_s=60)

        log = await calls(admin)
        for signal_id in ids:
            mine = [c for c in log if c["path"] == SIGNAL + signal_id]
            puts = [c for c in mine if c["method"] == "PUT"]
            # the ladder's schedule: 2 in place (503), parked 1 (429), parked 2 (hang), parked 3 (ok)
            assert [c["fault"] for c in puts] == ["503", "503", "429", "hang", None]
            assert sum(c["status"] == 201 for c in puts) == 1  # registered exactly once
            gaps = [_seconds(a, b) for a, b in itertools.pairwise(puts)]
            assert gaps[1] >= 2.95 and gaps[2] >= 4.95 and gaps[3] >= 2.95  # the rungs; Retry-After
            patches = [c for c in mine if c["method"] == "PATCH"]
            assert [(c["status"], c["fault"]) for c in patches] == [(200, None)]
            assert mine == [*puts, *patches]  # the change only after its registration got through
            moved = simulator.state.get(signal_id)
            assert moved.status is SignaalStatus.ACTIEF and moved.contactpersoon.naam == STAND_IN.name
        assert all(c["transaction_id"] for c in log)
        assert await hub.components["verwijsindex"].ladder.parked_count() == 0
        up = hub.components["verwijsindex"].status()
        assert up["last_success"] is not None and up["last_success"] > up["last_error_at"], up
        assert await read_all(kafka.bootstrap, hub.topic(VERWIJSINDEX_SIGNAL.dlq)) == []
    finally:
        await hub.stop()


def _seconds(a: dict[str, Any], b: dict[str, Any]) -> float:
    from datetime import datetime

    return (datetime.fromisoformat(b["at"]) - datetime.fromisoformat(a["at"])).total_seconds()


async def _all_at(hub: Hub, attempt: int, *, of: int) -> bool:
    """All `of` signals parked, at `attempt` or later."""
    got = await rows(hub)
    return len(got) == of and all(
        r.attempt >= attempt and r.delivery_state == "retrying" for r in got.values()
    )


async def _all_delivered(hub: Hub) -> bool:
    got = await rows(hub)
    return bool(got) and all(r.delivery_state == "delivered" for r in got.values())


async def test_poison_command_goes_to_dlq_and_others_are_not_delayed(
    kafka: EmbeddedKafka, db_url: str, unique: str, simulator: SimulatorServer, admin: httpx.AsyncClient
) -> None:
    hub = await start_hub(kafka, db_url, unique, simulator.url)
    try:
        poison_bsn, *others = bsns(4, start=200_000_000)
        bad = register_command(a_signal(poison_bsn), str(uuid.uuid4()))
        payload = dict(bad.payload, reason="DIEFSTAL")  # rule 11: a reason never goes to the index
        poison = Envelope(**(bad.model_dump() | {"payload": payload}))
        poison_key = youth_key(TEST_SECRET, poison_bsn).encode()
        await produce(
            kafka.bootstrap,
            hub.topic(VERWIJSINDEX_SIGNAL.name),
            [(poison_key, poison.to_bytes(), poison.headers())],
        )
        batch = [a_signal(b) for b in others]
        for s in batch:
            await register(hub, s)
        await wait_for(lambda: _all_delivered(hub), timeout_s=30)

        dead = await read_topic(kafka.bootstrap, hub.topic(VERWIJSINDEX_SIGNAL.dlq), expect=1)
        assert len(dead) == 1
        headers = headers_of(dead[0])
        assert set(DLQ_HEADERS) <= set(headers)
        assert headers["dlq-exception-class"].endswith("PermanentError")
        assert headers["dlq-attempts"] == "1"
        assert (
            "reason" in headers["dlq-exception-message"]
            and "DIEFSTAL" not in headers["dlq-exception-message"]
        )
        assert headers["transaction-id"] == poison.transaction_id
        assert dead[0].key == poison_key
        log = await calls(admin)
        assert not [c for c in log if c["path"] == SIGNAL + str(poison.correlation_id)]  # never sent
        assert all(sum(c["path"] == SIGNAL + s.signal_id for c in log) == 1 for s in batch)
    finally:
        await hub.stop()


async def test_a_command_naming_no_usable_signal_is_dead_lettered_without_a_hitch(
    kafka: EmbeddedKafka, db_url: str, unique: str, simulator: SimulatorServer, admin: httpx.AsyncClient
) -> None:
    """A command whose signal id is no id (an object; a NUL, which PostgreSQL cannot store) fails
    validation; its dead-lettering must not trip over that id while marking the signal."""
    hub = await start_hub(kafka, db_url, unique, simulator.url)
    try:
        poison_bsns, others = bsns(2, start=300_000_000), bsns(2, start=310_000_000)
        poisons = []
        for bsn, bad_id in zip(poison_bsns, [{"id": "x"}, "sig\x00nal"], strict=True):
            good = register_command(a_signal(bsn), str(uuid.uuid4()))
            payload = dict(good.payload, signal_id=bad_id)
            poisons.append(Envelope(**(good.model_dump() | {"payload": payload, "correlation_id": None})))
        await produce(
            kafka.bootstrap,
            hub.topic(VERWIJSINDEX_SIGNAL.name),
            [
                (youth_key(TEST_SECRET, b).encode(), p.to_bytes(), p.headers())
                for b, p in zip(poison_bsns, poisons, strict=True)
            ],
        )
        batch = [a_signal(b) for b in others]
        for s in batch:
            await register(hub, s)
        dead = await read_topic(kafka.bootstrap, hub.topic(VERWIJSINDEX_SIGNAL.dlq), expect=2, timeout_s=30)
        assert sorted(headers_of(r)["message-id"] for r in dead) == sorted(p.message_id for p in poisons)
        assert all(headers_of(r)["dlq-exception-class"].endswith("PermanentError") for r in dead)
        await wait_for(lambda: _all_delivered(hub), timeout_s=30)
        ladder = hub.components["verwijsindex"].ladder
        assert ladder is not None and await ladder.parked_count() == 0
        failed = hub.metrics.registry.get_sample_value(
            "ketenhub_delivery_hook_failures_total", {"ladder": ladder.name, "hook": "on_dead"}
        )
        assert failed == 0  # the hook saw no signal to mark, rather than failing on one
    finally:
        await hub.stop()


async def test_a_registration_of_a_signal_the_hub_does_not_hold_is_not_sent(
    kafka: EmbeddedKafka, db_url: str, unique: str, simulator: SimulatorServer, admin: httpx.AsyncClient
) -> None:
    """A signal registered through the API is stored before its command is queued. A command for one
    the hub does not hold (its term ended and it was purged, then its dead letter was replayed; or it
    was written to the topic past the API's rules 13 and 14) put the youth in the index."""
    hub = await start_hub(kafka, db_url, unique, simulator.url)
    try:
        [bsn] = bsns(1, start=320_000_000)
        command = register_command(a_signal(bsn), str(uuid.uuid4()))
        key = youth_key(TEST_SECRET, bsn).encode()
        await produce(
            kafka.bootstrap,
            hub.topic(VERWIJSINDEX_SIGNAL.name),
            [(key, command.to_bytes(), command.headers())],
        )
        [dead] = await read_topic(kafka.bootstrap, hub.topic(VERWIJSINDEX_SIGNAL.dlq), expect=1, timeout_s=30)
        assert "holds no signal" in headers_of(dead)["dlq-exception-message"]
        assert [c for c in await calls(admin) if c["path"].startswith(SIGNAL)] == []  # nothing sent
    finally:
        await hub.stop()


async def other_organisation_signals(admin: httpx.AsyncClient, signals_: list[VerwijsindexSignal]) -> None:
    """A youth-care professional registers the same youths: a client match for each of ours."""
    for s in signals_:
        body = {
            "jeugdige": {
                "bsn": s.youth.bsn, "voornamen": "Sam", "geslachtsnaam": "Jansen",
                "geboortedatum": "2010-05-01", "geslacht": "MAN", "gemeente": "Den Haag",
            },
            "organisatie": {"code": "jeugdhulp-haaglanden", "naam": "Jeugdhulp Haaglanden"},
            "contactpersoon": {"naam": "Kees de Wit", "email": "kees@jeugdhulp.nl"},
            "aangemaakt": today().isoformat(),
            "einddatum": (today() + timedelta(days=200)).isoformat(),
        }  # fmt: skip
        answer = await admin.put(
            SIGNAL + str(uuid.uuid4()), json=body, headers={"Fsc-Transaction-Id": str(uuid.uuid4())}
        )
        assert answer.status_code == 201


async def test_matches_arrive_once_also_across_a_restart(
    kafka: EmbeddedKafka, db_url: str, unique: str, simulator: SimulatorServer, admin: httpx.AsyncClient
) -> None:
    from hub.signals.matches import MatchMessage
    from hub.topics import VERWIJSINDEX_MATCH

    ours = [a_signal(b) for b in bsns(5, start=300_000_000)]
    hub = await start_hub(kafka, db_url, unique, simulator.url, page_size=1)
    topic = hub.topic(VERWIJSINDEX_MATCH.name)
    try:
        for s in ours:
            await register(hub, s)
        await wait_for(lambda: _all_delivered(hub))
        await set_faults(admin, latency_ms=200)  # a slow feed, so the stop below lands mid-page
        await other_organisation_signals(admin, ours[:3])
        await read_topic(kafka.bootstrap, topic, expect=1)  # the feed is under way...
    finally:
        await hub.stop()  # ...and the connector stops mid-feed
    await other_organisation_signals(admin, ours[3:])
    await set_faults(admin)
    hub = await start_hub(kafka, db_url, unique, simulator.url, page_size=1)
    try:
        records = await read_topic(kafka.bootstrap, topic, expect=5, settle_s=1.0)
    finally:
        await hub.stop()
    messages = [Envelope.from_bytes(r.value) for r in records]
    assert len(messages) == 5  # one per match, none twice
    by_signal = {m.payload["signal_id"]: (m, r) for m, r in zip(messages, records, strict=True)}
    assert set(by_signal) == {s.signal_id for s in ours}
    for s in ours:
        message, record = by_signal[s.signal_id]
        match = MatchMessage.model_validate(message.payload)
        assert message.type == "Match" and match.type.value == "CLIENTMATCH"
        assert match.caseworker_id == "cw-ilse"
        assert [c.name for c in match.counterparts] == ["Kees de Wit"]
        assert record.key == youth_key(TEST_SECRET, s.youth.bsn).encode()
        assert headers_of(record)["transaction-id"] == message.transaction_id
        assert s.youth.bsn not in record.value.decode() and "Jansen" not in record.value.decode()


async def test_a_dead_lettered_command_replayed_is_delivered_once(
    kafka: EmbeddedKafka, db_url: str, unique: str, simulator: SimulatorServer, admin: httpx.AsyncClient
) -> None:
    await set_faults(admin, error_rate=1.0)  # 503 on every call, past the ladder's last rung
    hub = await start_hub(kafka, db_url, unique, simulator.url, poll_s=60)
    try:
        assert hub.store is not None and hub.relay is not None
        signal = a_signal(bsns(1, start=300_000_000)[0])
        await register(hub, signal)
        dlq_topic = hub.topic(VERWIJSINDEX_SIGNAL.dlq)
        dead = await read_topic(kafka.bootstrap, dlq_topic, expect=1, timeout_s=30)
        assert len(dead) == 1
        # the group that took the command in, whose inbox holds its message id
        assert headers_of(dead[0])["dlq-consumer-group"] == hub.group("verwijsindex")
        assert (await rows(hub))[signal.signal_id].delivery_state == "dead_lettered"

        await set_faults(admin, error_rate=0.0)  # the index is back
        letters = DeadLetters(hub.store, hub.kafka_options, [dlq_topic], wake=hub.relay.wake)
        found = await letters.find()
        assert [d.id for d in found] == [f"{dlq_topic}:{dead[0].partition}:{dead[0].offset}"]
        job = await letters.start_replay(found, "olaf")
        await wait_for(lambda: _is_done(job), timeout_s=30)
        assert (job.done, job.skipped, job.failed) == (1, 0, 0)
        await wait_for(lambda: _all_delivered(hub), timeout_s=20)

        puts = [c for c in await calls(admin) if c["path"] == SIGNAL + signal.signal_id]
        assert [c["status"] for c in puts][-1] == 201
        assert sum(c["status"] == 201 for c in puts) == 1  # registered once, by the replay
        assert simulator.state.get(signal.signal_id) is not None
        assert len(await read_all(kafka.bootstrap, dlq_topic)) == 1  # not again
    finally:
        await hub.stop()


async def _is_done(job: ReplayJob) -> bool:
    return job.state == "done"


async def test_a_registration_still_retrying_when_its_signal_is_withdrawn_is_withheld(
    kafka: EmbeddedKafka, db_url: str, unique: str, simulator: SimulatorServer, admin: httpx.AsyncClient
) -> None:
    """The hub withdrew the signal while its registration waited for the index: the registration is
    not sent on its next rung, so the index never holds (nor matches on) a signal the hub withdrew;
    the withdrawal behind it finds nothing to withdraw, and that is done, not a dead letter."""
    await set_faults(admin, error_rate=1.0)  # 503 on every call
    hub = await start_hub(kafka, db_url, unique, simulator.url, poll_s=60, policy=SLOW)
    try:
        kept, dropped = (a_signal(b) for b in bsns(2, start=400_000_000))
        await register(hub, kept, dropped)
        await wait_for(lambda: _all_at(hub, 1, of=2))  # both parked after their first rung
        await withdraw(hub, dropped)
        await set_faults(admin, error_rate=0.0)
        await wait_for(lambda: _all_delivered(hub), timeout_s=30)

        log = await calls(admin)
        sent = [(c["method"], c["status"]) for c in log if c["path"] == SIGNAL + dropped.signal_id]
        assert sent == [("PUT", 503), ("PUT", 503), ("GET", 404), ("DELETE", 404)]  # withheld once asked
        assert dropped.signal_id not in simulator.state.signals
        assert simulator.state.get(kept.signal_id).status is SignaalStatus.ACTIEF
        assert await audited(hub, dropped) == [
            "verwijsindex.RegisterSignal.withheld",
            "verwijsindex.WithdrawSignal.not_in_index",
        ]
        assert await audited(hub, kept) == ["verwijsindex.RegisterSignal"]
        assert await read_all(kafka.bootstrap, hub.topic(VERWIJSINDEX_SIGNAL.dlq)) == []
    finally:
        await hub.stop()


async def test_a_registration_the_index_finishes_after_its_withdrawal_does_not_become_active(
    kafka: EmbeddedKafka, db_url: str, unique: str, simulator: SimulatorServer, admin: httpx.AsyncClient
) -> None:
    """The hub gave up waiting for a slow registration (its timeout) while the index was still
    carrying it out; the caseworker withdrew the signal; the hub asked, the index did not hold it yet,
    so the registration was withheld and the withdrawal found nothing. Then the index finished the
    registration: an active signal, with the youth's BSN and name, that the hub had withdrawn. The
    contract has the index remember a withdrawal of an id it does not hold, and refuse it after."""
    # a timeout a busy machine's GET and DELETE keep well within (at 1 s they were retried at times)
    hub = await start_hub(kafka, db_url, unique, simulator.url, poll_s=60, timeout_s=2.0, policy=SLOW)
    try:
        # both calls in place are received, then carried out 14 s later, long after the hub gave up
        # (twice its timeout and the 3 s rung: the withdrawal is asked at about 7 s)
        await set_faults(admin, hang_rate=1.0, hang_seconds=14, remaining=2, methods=["PUT"])
        [signal] = (a_signal(b) for b in bsns(1, start=410_000_000))
        await register(hub, signal)
        await wait_for(lambda: _all_at(hub, 1, of=1), timeout_s=30)  # parked: the index still busy
        await withdraw(hub, signal)
        await wait_for(lambda: _all_delivered(hub), timeout_s=30)

        def finished() -> Any:
            async def check() -> bool:
                puts = [c for c in await calls(admin) if c["method"] == "PUT"]
                return len(puts) == 2 and all(c["status"] is not None for c in puts)

            return check()

        await wait_for(finished, timeout_s=30)
        log = [
            (c["method"], c["status"]) for c in await calls(admin) if c["path"] == SIGNAL + signal.signal_id
        ]
        assert sorted(log) == [("DELETE", 404), ("GET", 404), ("PUT", 409), ("PUT", 409)], log
        assert signal.signal_id not in simulator.state.signals
        assert await audited(hub, signal) == [
            "verwijsindex.RegisterSignal.withheld",
            "verwijsindex.WithdrawSignal.not_in_index",
        ]
    finally:
        await hub.stop()


async def test_a_dead_lettered_registration_replayed_after_its_withdrawal_stays_out_of_the_index(
    kafka: EmbeddedKafka, db_url: str, unique: str, simulator: SimulatorServer, admin: httpx.AsyncClient
) -> None:
    """Per-youth order holds while a command is parked, not once it is a dead letter: the withdrawal
    goes first. The registration replayed afterwards must not leave an active signal in the index
    that the hub calls withdrawn."""
    await set_faults(admin, error_rate=1.0)  # 503 on every call, past the ladder's last rung
    hub = await start_hub(kafka, db_url, unique, simulator.url, poll_s=60)
    try:
        assert hub.store is not None and hub.relay is not None
        signal = a_signal(bsns(1, start=500_000_000)[0])
        await register(hub, signal)
        dlq_topic = hub.topic(VERWIJSINDEX_SIGNAL.dlq)
        assert len(await read_topic(kafka.bootstrap, dlq_topic, expect=1, timeout_s=30)) == 1
        await set_faults(admin, error_rate=0.0)  # the index is back
        await withdraw(hub, signal)
        await wait_for(lambda: _all_delivered(hub), timeout_s=20)
        assert await audited(hub, signal) == ["verwijsindex.WithdrawSignal.not_in_index"]

        letters = DeadLetters(hub.store, hub.kafka_options, [dlq_topic], wake=hub.relay.wake)
        job = await letters.start_replay(await letters.find(), "olaf")
        await wait_for(lambda: _is_done(job), timeout_s=30)
        assert (job.done, job.skipped, job.failed) == (1, 0, 0)

        async def replayed() -> bool:
            return len(await audited(hub, signal)) == 2

        await wait_for(replayed, timeout_s=20)
        assert await audited(hub, signal) == [
            "verwijsindex.WithdrawSignal.not_in_index",
            "verwijsindex.RegisterSignal.withheld",
        ]
        assert signal.signal_id not in simulator.state.signals
        log = await calls(admin)
        assert not [c for c in log if c["path"] == SIGNAL + signal.signal_id and c["status"] < 300]
        # the signal shows its latest command's state: the withdrawal, delivered
        assert (await rows(hub))[signal.signal_id].delivery_state == "delivered"
        assert len(await read_all(kafka.bootstrap, dlq_topic)) == 1  # the registration, once
    finally:
        await hub.stop()


async def test_a_registration_the_index_took_and_the_withdrawal_ended_is_not_sent_again_on_replay(
    kafka: EmbeddedKafka, db_url: str, unique: str, simulator: SimulatorServer, admin: httpx.AsyncClient
) -> None:
    """Every answer to the registration was lost: the index took it, the hub dead-lettered it. Its
    contact changed, then the signal was withdrawn, both delivered. Replayed, the registration was
    sent again, with the contact now: the index, holding the first body, refused it (409), and the
    letter came back, for ever. The index holds it ended: it was delivered at the first attempt."""
    await set_faults(admin, lost_answer_rate=1.0, methods=["PUT"])  # taken, every answer cut off
    hub = await start_hub(kafka, db_url, unique, simulator.url, poll_s=60)
    try:
        assert hub.store is not None and hub.relay is not None
        signal = a_signal(bsns(1, start=520_000_000)[0])
        assert signal.signal_id
        await register(hub, signal)
        dlq_topic = hub.topic(VERWIJSINDEX_SIGNAL.dlq)
        assert len(await read_topic(kafka.bootstrap, dlq_topic, expect=1, timeout_s=30)) == 1
        await set_faults(admin, lost_answer_rate=0.0)
        async with hub.store.transaction() as session:
            await request_contact_change(session, hub, signal.signal_id, STAND_IN, str(uuid.uuid4()))
        hub.relay.wake()
        await wait_for(lambda: _all_delivered(hub), timeout_s=20)
        await withdraw(hub, signal)
        await wait_for(lambda: _all_delivered(hub), timeout_s=20)
        assert simulator.state.get(signal.signal_id).status is SignaalStatus.BEEINDIGD_RISICO_WEG
        before = len(await calls(admin))

        letters = DeadLetters(hub.store, hub.kafka_options, [dlq_topic], wake=hub.relay.wake)
        job = await letters.start_replay(await letters.find(), "olaf")
        await wait_for(lambda: _is_done(job), timeout_s=30)
        assert (job.done, job.skipped, job.failed) == (1, 0, 0)

        async def replayed() -> bool:
            return len(await audited(hub, signal)) == 4

        await wait_for(replayed, timeout_s=20)
        after = [(c["method"], c["status"]) for c in (await calls(admin))[before:]]
        assert after == [("GET", 200)], after  # asked, not sent again
        assert await audited(hub, signal) == [
            "verwijsindex.RegisterSignal.possibly_sent",  # dead-lettered with no answer (rule 18)
            "verwijsindex.ChangeSignalContact",
            "verwijsindex.WithdrawSignal",
            "verwijsindex.RegisterSignal",
        ]
        async with hub.store.connect() as conn:
            objects = (
                await conn.execute(
                    select(audit_log.c.objects).where(audit_log.c.action == "verwijsindex.RegisterSignal")
                )
            ).scalar_one()
        # the disclosure that first attempt was, with the contact the index held: the stand-in's now
        assert objects["registered_at_earlier_attempt"] is True
        assert objects["index_contact_caseworker_id"] == STAND_IN.caseworker_id
        assert "caseworker_id" not in objects  # this attempt sent no contact
        assert simulator.state.get(signal.signal_id).status is SignaalStatus.BEEINDIGD_RISICO_WEG
        assert len(await read_all(kafka.bootstrap, dlq_topic)) == 1  # not dead-lettered again
    finally:
        await hub.stop()


async def test_a_contact_change_waiting_when_its_signal_is_withdrawn_is_withheld(
    kafka: EmbeddedKafka, db_url: str, unique: str, simulator: SimulatorServer, admin: httpx.AsyncClient
) -> None:
    """Borging moved a registered signal to another caseworker while the index was down; then the
    signal was withdrawn. The index is not given a new contact for a signal that is ending."""
    hub = await start_hub(kafka, db_url, unique, simulator.url, poll_s=60, policy=SLOW)
    try:
        assert hub.store is not None and hub.relay is not None
        signal = a_signal(bsns(1, start=600_000_000)[0])
        assert signal.signal_id
        await register(hub, signal)
        await wait_for(lambda: _all_delivered(hub), timeout_s=20)
        await set_faults(admin, error_rate=1.0)  # 503 on every call
        async with hub.store.transaction() as session:
            await request_contact_change(session, hub, signal.signal_id, STAND_IN, str(uuid.uuid4()))
        hub.relay.wake()
        await wait_for(lambda: _all_at(hub, 1, of=1))  # the change, parked after its first rung
        await withdraw(hub, signal)
        await set_faults(admin, error_rate=0.0)
        await wait_for(lambda: _all_delivered(hub), timeout_s=30)

        log = await calls(admin)
        sent = [(c["method"], c["status"]) for c in log if c["path"] == SIGNAL + signal.signal_id]
        assert sent == [("PUT", 201), ("PATCH", 503), ("PATCH", 503), ("DELETE", 200)]
        ended = simulator.state.get(signal.signal_id)
        assert (
            ended.status is SignaalStatus.BEEINDIGD_RISICO_WEG and ended.contactpersoon.naam == "Ilse Bakker"
        )
        assert await audited(hub, signal) == [
            "verwijsindex.RegisterSignal",
            "verwijsindex.ChangeSignalContact.withheld",
            "verwijsindex.WithdrawSignal",
        ]
    finally:
        await hub.stop()


async def test_a_registration_whose_answer_was_lost_is_audited_as_disclosed_though_then_withdrawn(
    kafka: EmbeddedKafka, db_url: str, unique: str, simulator: SimulatorServer, admin: httpx.AsyncClient
) -> None:
    """The index took the registration but its answer was cut off; the caseworker then withdrew the
    signal. The next attempt must not call it withheld: the index has it (it asks), so it was a
    disclosure, audited as one (rule 18), which the withdrawal behind it then ends. Nor is it sent
    again: the youth's data went to the index once already, for a signal that is over."""
    await set_faults(admin, lost_answer_rate=1.0, remaining=2, methods=["PUT"])  # both calls in place
    hub = await start_hub(kafka, db_url, unique, simulator.url, poll_s=60, policy=SLOW)
    try:
        signal = a_signal(bsns(1, start=700_000_000)[0])
        assert signal.signal_id
        await register(hub, signal)
        await wait_for(lambda: _all_at(hub, 1, of=1))  # parked after its first rung
        await withdraw(hub, signal)
        await wait_for(lambda: _all_delivered(hub), timeout_s=30)

        log = await calls(admin)
        sent = [(c["method"], c["fault"], c["status"]) for c in log if c["path"] == SIGNAL + signal.signal_id]
        assert sent == [
            ("PUT", "lost", 201),
            ("PUT", "lost", 200),
            ("GET", None, 200),  # is it there? it is: delivered at the first attempt
            ("DELETE", None, 200),
        ]
        assert simulator.state.get(signal.signal_id).status is SignaalStatus.BEEINDIGD_RISICO_WEG
        assert await audited(hub, signal) == ["verwijsindex.RegisterSignal", "verwijsindex.WithdrawSignal"]
        assert hub.store is not None
        async with hub.store.connect() as conn:
            objects = (
                await conn.execute(
                    select(audit_log.c.objects).where(audit_log.c.action == "verwijsindex.RegisterSignal")
                )
            ).scalar_one()
        assert objects["registered_at_earlier_attempt"] is True
        assert objects["index_contact_caseworker_id"] == signal.caseworker_id
    finally:
        await hub.stop()


async def test_a_registration_sent_again_and_then_withdrawn_is_no_second_disclosure(
    kafka: EmbeddedKafka, db_url: str, unique: str, simulator: SimulatorServer, admin: httpx.AsyncClient
) -> None:
    """Registered and audited; an operator registered it again while the index was down; the signal
    was withdrawn. The second registration, when its rung came, found the index holding the first
    one's copy and was audited as a disclosure at an earlier attempt, though it never got there."""
    hub = await start_hub(kafka, db_url, unique, simulator.url, poll_s=60, policy=SLOW)
    try:
        assert hub.store is not None and hub.relay is not None
        signal = a_signal(bsns(1, start=540_000_000)[0])
        assert signal.signal_id
        await register(hub, signal)
        await wait_for(lambda: _all_delivered(hub), timeout_s=20)
        async with hub.store.transaction() as session:
            await create_caseworker(session, ILSE)
        await set_faults(admin, error_rate=1.0)  # 503 on every call
        waits = waits_of(hub.store, hub.settings.kafka, hub.kafka_options)
        await register_again(
            hub.store, hub, signal.signal_id, user="olga", transaction_id=str(uuid.uuid4()), waits=waits
        )
        hub.relay.wake()
        await wait_for(lambda: _all_at(hub, 1, of=1))  # parked after its first rung
        await withdraw(hub, signal)
        await set_faults(admin, error_rate=0.0)
        await wait_for(lambda: _all_delivered(hub), timeout_s=30)

        path = SIGNAL + signal.signal_id
        sent = [(c["method"], c["status"]) for c in await calls(admin) if c["path"] == path]
        assert sent == [("PUT", 201), ("PUT", 503), ("PUT", 503), ("GET", 200), ("DELETE", 200)]
        assert await audited(hub, signal) == [
            "verwijsindex.RegisterSignal",
            "verwijsindex.RegisterSignal.withheld",  # it sent nothing: no second disclosure
            "verwijsindex.WithdrawSignal",
        ]
    finally:
        await hub.stop()


async def test_a_registration_of_a_signal_past_its_end_date_is_withheld(
    kafka: EmbeddedKafka, db_url: str, unique: str, simulator: SimulatorServer, admin: httpx.AsyncClient
) -> None:
    """A registration that waited (the ladder, a dead letter replayed days later) past its signal's end
    date: the index holds no such signal. Sent, it carried the youth's data to an index that refuses
    a signal that has ended (422), and the letter came back for ever. Nothing is sent."""
    hub = await start_hub(kafka, db_url, unique, simulator.url, poll_s=60)
    try:
        signal = a_signal(bsns(1, start=530_000_000)[0])
        ended = signal.model_copy(
            update={"created": today() - timedelta(days=60), "end_date": today() - timedelta(days=1)}
        )
        await register(hub, ended)

        async def settled() -> bool:
            return (await rows(hub))[signal.signal_id].delivery_state == "withheld"

        await wait_for(settled, timeout_s=20)
        path = SIGNAL + signal.signal_id
        sent = [(c["method"], c["status"]) for c in await calls(admin) if c["path"] == path]
        assert sent == [("GET", 404)]
        assert await audited(hub, signal) == ["verwijsindex.RegisterSignal.withheld"]
        assert signal.signal_id not in simulator.state.signals
        row = (await rows(hub))[signal.signal_id]
        assert (row.delivered_at, row.last_error) == (None, None)  # nothing went, nothing to send
    finally:
        await hub.stop()


def uninformed_at_12(signal: VerwijsindexSignal, twelfth: date) -> VerwijsindexSignal:
    """`signal` made ten days ago for a youth of 11 then, who turned 12 on `twelfth`: the parents'
    letter sent, the youth not informed (enough at 11, rule 14)."""
    made = today() - timedelta(days=10)
    return signal.model_copy(
        update={
            "youth": signal.youth.model_copy(update={"birth_date": add_years(twelfth, -12)}),
            "created": made,
            "youth_informed_at": None,
            "parent_letter_sent_at": made,
        }
    )


async def test_a_registration_sent_after_the_youth_turned_12_uninformed_is_not_sent(
    kafka: EmbeddedKafka, db_url: str, unique: str, simulator: SimulatorServer, admin: httpx.AsyncClient
) -> None:
    """Rule 14 was judged when the signal was made: at 11 the parents' letter was enough. A
    registration sent later (after a wait on the ladder, a dead letter replayed, registered again)
    went out for a youth who had turned 12 since and was never informed. It is not sent: a dead
    letter naming rule 14 and the field, and register-again refused the same way."""
    hub = await start_hub(kafka, db_url, unique, simulator.url)
    try:
        signal = uninformed_at_12(a_signal(bsns(1, start=540_000_000)[0]), today() - timedelta(days=1))
        await register(hub, signal)
        [dead] = await read_topic(kafka.bootstrap, hub.topic(VERWIJSINDEX_SIGNAL.dlq), expect=1, timeout_s=30)
        why = headers_of(dead)["dlq-exception-message"]
        assert "rule 14" in why and "youth_informed_at" in why and signal.youth.bsn not in why, why
        # looked up first (an earlier attempt may have got through), nothing sent
        sent = [(c["method"], c["status"]) for c in await calls(admin) if c["path"].startswith(SIGNAL)]
        assert sent == [("GET", 404)]
        assert signal.signal_id not in simulator.state.signals
        assert hub.store is not None
        with pytest.raises(NotInformed, match="rule 14.*youth_informed_at"):
            await register_again(
                hub.store, hub, signal.signal_id, user="olga", transaction_id="t-1",
                waits=lambda *_: _nothing_waits(), day=today(),
            )  # fmt: skip
    finally:
        await hub.stop()


async def _nothing_waits() -> bool:
    return False


async def test_a_registration_unanswered_before_the_12th_birthday_and_refused_after_is_no_disclosure(
    kafka: EmbeddedKafka, db_url: str, unique: str, simulator: SimulatorServer, admin: httpx.AsyncClient
) -> None:
    """Attempts the day before the 12th birthday got no answer (the connection closed before the
    index carried them out); the retry, after the birthday, may not send it (rule 14), and the index
    says it holds none. Dead-lettered, it was audited as "possibly registered" all the same: a
    disclosure the audit log claimed that the index itself denied."""
    from connectors.verwijsindex.component import VerwijsindexConnector

    hub = await start_hub(kafka, db_url, unique, simulator.url, policy=SLOW)
    try:
        signal = uninformed_at_12(a_signal(bsns(1, start=560_000_000)[0]), today())
        connector = hub.components["verwijsindex"]
        assert isinstance(connector, VerwijsindexConnector)
        connector.today = lambda: today() - timedelta(days=1)  # the youth is 11 at the first attempts
        # both in-place attempts close the connection before the index carries them out
        await set_faults(admin, down="close", methods=["PUT"], remaining=2)
        await register(hub, signal)
        path = SIGNAL + signal.signal_id

        async def both_tried() -> bool:
            return [c["method"] for c in await calls(admin) if c["path"] == path] == ["PUT", "PUT"]

        await wait_for(both_tried, timeout_s=20)
        connector.today = today  # the parked attempt comes seconds later (SLOW), after the birthday
        [dead] = await read_topic(kafka.bootstrap, hub.topic(VERWIJSINDEX_SIGNAL.dlq), expect=1, timeout_s=30)
        assert "rule 14" in headers_of(dead)["dlq-exception-message"]
        assert [c["method"] for c in await calls(admin) if c["path"] == path] == ["PUT", "PUT", "GET"]
        assert signal.signal_id not in simulator.state.signals
        assert await audited(hub, signal) == []  # nothing went: no disclosure, not even a possible one
    finally:
        await hub.stop()


async def test_a_registration_the_index_took_before_the_youth_turned_12_is_recorded_not_dead_lettered(
    kafka: EmbeddedKafka, db_url: str, unique: str, simulator: SimulatorServer, admin: httpx.AsyncClient
) -> None:
    """An attempt the day before the 12th birthday got through and its answer was lost; the retry,
    after the birthday, may not send it (rule 14). The index holds it all the same: a disclosure
    made, and recorded as one, not a dead letter saying nothing was sent."""
    from connectors.verwijsindex.component import VerwijsindexConnector
    from connectors.verwijsindex.mapping import registratie_van

    hub = await start_hub(kafka, db_url, unique, simulator.url)
    try:
        signal = uninformed_at_12(a_signal(bsns(1, start=550_000_000)[0]), today())
        connector = hub.components["verwijsindex"]
        assert isinstance(connector, VerwijsindexConnector)
        taken = registratie_van(signal, connector.organisatie).model_dump(mode="json", by_alias=True)
        put = await admin.put(
            SIGNAL + str(signal.signal_id), json=taken, headers={"Fsc-Transaction-Id": str(uuid.uuid4())}
        )
        assert put.status_code == 201, put.text
        await register(hub, signal)

        async def settled() -> bool:
            return (await rows(hub))[signal.signal_id].delivery_state == "delivered"

        await wait_for(settled, timeout_s=20)
        assert await audited(hub, signal) == ["verwijsindex.RegisterSignal"]  # the disclosure it was
        sent = [
            (c["method"], c["status"]) for c in await calls(admin) if c["path"] == SIGNAL + signal.signal_id
        ]
        assert sent == [("PUT", 201), ("GET", 200)]  # the earlier attempt's, and the look: no second PUT
        dead = await read_all(kafka.bootstrap, hub.topic(VERWIJSINDEX_SIGNAL.dlq))
        assert dead == []
    finally:
        await hub.stop()


async def test_a_phone_number_the_hub_took_reaches_the_index_in_the_contracts_form(
    kafka: EmbeddedKafka, db_url: str, unique: str, simulator: SimulatorServer
) -> None:
    """The hub takes a caseworker's phone as "+31 (0)6 - 12 34 56 78" (4 to 40 characters); the index
    takes 6 to 20 digits after an optional '+'. The registration and the contact change were dead
    letters (a ValidationError at delivery), replayed to the same end. Now the number goes tidied up."""
    hub = await start_hub(kafka, db_url, unique, simulator.url, poll_s=60)
    try:
        assert hub.store is not None and hub.relay is not None
        signal = a_signal(bsns(1, start=800_000_000)[0])
        assert signal.signal_id
        signal = signal.model_copy(
            update={"caseworker": signal.caseworker.model_copy(update={"phone": "+31 (0)6 - 12 34 56 78"})}
        )
        await register(hub, signal)
        await wait_for(lambda: _all_delivered(hub), timeout_s=20)
        assert simulator.state.get(signal.signal_id).contactpersoon.telefoon == "+31612345678"

        stand_in = STAND_IN.model_copy(update={"phone": "0031-70-1234567+"})
        async with hub.store.transaction() as session:
            await request_contact_change(session, hub, signal.signal_id, stand_in, str(uuid.uuid4()))
        hub.relay.wake()
        await wait_for(lambda: _all_delivered(hub), timeout_s=20)
        shown = simulator.state.get(signal.signal_id).contactpersoon
        assert (shown.naam, shown.telefoon) == ("Noor Visser", "0031701234567")
        assert await audited(hub, signal) == [
            "verwijsindex.RegisterSignal",
            "verwijsindex.ChangeSignalContact",
        ]
        assert not await read_all(kafka.bootstrap, hub.topic(VERWIJSINDEX_SIGNAL.dlq))
    finally:
        await hub.stop()


def an_index_quoting_the_youth(spaced_bsn: str) -> tuple[FastAPI, dict[str, bool]]:
    """An index that answers a withdrawal 503 (then, once `state["conflict"]`, 409) and every match
    poll 500, each time quoting the youth by name and BSN (the BSN written in groups)."""
    app, state = FastAPI(), {"conflict": False}
    quoted = f"Vries, Sanne de ({spaced_bsn})"

    @app.get("/api/v1/status")
    async def up() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/api/v1/matches")
    async def feed() -> JSONResponse:
        return JSONResponse(
            {"titel": "Fout", "detail": f"matches van {quoted} niet leesbaar"}, status_code=500
        )

    @app.delete("/api/v1/signalen/{signal_id}")
    async def withdraw(signal_id: str) -> JSONResponse:
        if state["conflict"]:
            detail = f"signaal {signal_id} van {quoted} is ingetrokken met een andere reden"
            return JSONResponse({"titel": "Conflict", "detail": detail, "fouten": []}, status_code=409)
        detail = f"intrekking van {quoted} tijdelijk niet mogelijk"
        return JSONResponse({"titel": "Storing", "detail": detail, "fouten": []}, status_code=503)

    return app, state


async def test_an_index_quoting_the_youth_in_a_withdrawals_errors_is_kept_out_of_every_trace(
    kafka: EmbeddedKafka, db_url: str, unique: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Only a registration kept the youth's names out of the index's errors: a withdrawal's 503 or 409
    quoting the youth reached the signal's last error, the parked row, the console, the dead letter's
    header and the log; a failed match poll quoted whatever the index said, on the console and in the
    log. And a BSN written in groups passed every redaction."""
    [bsn] = bsns(1, start=700_000_000)
    spaced = f"{bsn[:3]} {bsn[3:5]} {bsn[5:]}"
    young = a_signal(bsn).youth.model_copy(update={"given_names": "Sanne", "surname": "de Vries"})
    signal = a_signal(bsn).model_copy(update={"youth": young})
    assert signal.signal_id
    index, state = an_index_quoting_the_youth(spaced)
    patient = RetryPolicy(in_place_attempts=2, in_place_wait_s=0.01, schedule_s=(1.0,) * 5, jitter=0.0)
    caplog.set_level(logging.INFO)

    def leaks(text: str) -> list[str]:
        return [q for q in ("Vries", "Sanne", bsn, spaced, bsn[5:]) if q in text]

    with structlog.testing.capture_logs() as logged:
        async with serving(index) as port:
            hub = await start_hub(
                kafka, db_url, unique, f"http://127.0.0.1:{port}", poll_s=0.2, policy=patient
            )
            try:
                assert hub.store is not None
                async with hub.store.transaction() as session:  # registered and delivered earlier
                    row = new_signal_row(signal, youth_key(TEST_SECRET, bsn)) | {
                        "delivery_state": "delivered"
                    }
                    await session.execute(insert(signals).values(**row))
                await withdraw(hub, signal)
                await wait_for(lambda: _all_at(hub, 1, of=1), timeout_s=30)  # parked after the 503s
                connector = hub.components["verwijsindex"]
                async with hub.store.connect() as conn:
                    [waiting] = (await conn.execute(select(parked.c.last_error))).all()
                parked_error, retrying = waiting.last_error, (await rows(hub))[signal.signal_id].last_error
                assert "HTTP 503" in parked_error and "HTTP 503" in retrying
                await wait_for(lambda: connector.feed is not None and connector.feed.last_error, timeout_s=30)
                shown = str(connector.status()) + str(connector.feed.last_error)

                state["conflict"] = True
                [dead] = await read_topic(
                    kafka.bootstrap, hub.topic(VERWIJSINDEX_SIGNAL.dlq), expect=1, timeout_s=30
                )
                header = headers_of(dead)["dlq-exception-message"]
                assert "HTTP 409" in header and "andere reden" in header, header
                dead_error = (await rows(hub))[signal.signal_id].last_error
                assert "HTTP 409" in dead_error
                shown += str(connector.status())
            finally:
                await hub.stop()
    assert "HTTP 500" in shown
    for where, text in {
        "parked row": parked_error,
        "signal while retrying": retrying,
        "signal once dead": dead_error,
        "dead letter": header,
        "console": shown,
        "structlog": repr(logged),
        "logging": caplog.text,
    }.items():
        assert leaks(text) == [], (where, text)
