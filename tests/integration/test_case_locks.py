"""A youth's case lock (hub.store.locks) on PostgreSQL: how many locks a big batch holds, who waits
for whom (a first request on a youth, two withdrawals), and in which order (Kafka batches)."""

from __future__ import annotations

import asyncio
import hashlib
import uuid
from datetime import UTC, date, datetime, timedelta
from functools import partial
from typing import Any

import pytest
from aiokafka import ConsumerRecord
from sqlalchemy import insert, select, text, update

import connectors.receivers.component as receivers_component
import hub.consent.service as consent_service
import hub.handovers.component as routing_component
from hub.clock import today
from hub.consent.service import withdraw_consent
from hub.consent.store import insert_consent
from hub.consent.tables import consents
from hub.directory import upsert_caseworker
from hub.embedded import EmbeddedKafka
from hub.handovers.component import routing_of
from hub.handovers.service import Act, Routing, create_handover, recheck_started
from hub.handovers.tables import handovers
from hub.intake.tables import referrals
from hub.signals.tables import signals
from hub.store import Store
from hub.store.locks import BUCKETS, lock_key, lock_youths, try_lock_youths
from hub.store.tables import outbox
from hub.topics import HANDOVER_DISPATCH, HANDOVER_REQUESTED
from schemas.caseworker import Caseworker
from schemas.consent import Consent, DataCategory
from schemas.envelope import Envelope
from schemas.handover import Handover, ReceiverType
from tests.helpers.kafka import wait_for
from tests.helpers.pg import WAITING_FOR_ADVISORY, WAITING_FOR_ANY_LOCK
from tests.integration.test_consent_api import ONE_PARENT, _referral_again
from tests.integration.test_handover_flow import CW, World, world

pytestmark = pytest.mark.integration
_HELD = text("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND pid = pg_backend_pid()")


def keys(n: int, salt: str = "") -> list[str]:
    """`n` youth keys as the hub makes them: 64 hex digits."""
    return [hashlib.sha256(f"{salt}{i}".encode()).hexdigest() for i in range(n)]


@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)
async def test_a_batch_of_thousands_of_youths_holds_at_most_a_bucket_each(store: Store) -> None:
    """A leerplicht upload of ten thousand truancy rows took a lock a youth: PostgreSQL's shared lock
    table (a few thousand entries) ran out, and the upload, with every other session on the server,
    got "out of shared memory". Two thousand youths show the count without running it out."""
    many = keys(2_000)
    async with store.transaction() as session:
        assert await lock_youths(session, many)
        held = (await session.execute(_HELD)).scalar_one()
    assert 0 < held <= BUCKETS


@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)
async def test_a_youth_whose_bucket_another_holds_is_left_by_the_purge_and_the_rest_taken(
    store: Store,
) -> None:
    """The purge takes the locks it can get: the youths of a bucket another transaction holds are left
    for its next run, every other youth is its."""
    busy, *others = keys(50, salt="p")
    other = Store(store.url)
    try:
        async with other.transaction() as writing:
            await lock_youths(writing, [busy])
            async with store.transaction() as purging:
                got = await try_lock_youths(purging, [busy, *others])
        assert busy not in got
        same_bucket = {k for k in others if lock_key(k) == lock_key(busy)}
        assert got == set(others) - same_bucket
    finally:
        await other.close()


# -- who waits for a youth's case lock, and in which order -------------------------------------------


async def _waiting_or_done(store: Any, task: asyncio.Task[Any], query: Any = WAITING_FOR_ADVISORY) -> bool:
    """Whether `task` is done, or a transaction of the test's database waits for a lock (`query`)."""
    if task.done():
        return True
    async with store.connect() as conn:
        return bool((await conn.execute(query)).scalar_one())


@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)
@pytest.mark.parametrize("url", ["overdrachten", "zorgmeldingen", "toestemmingen", "signalen"])
async def test_anothers_first_request_on_a_youth_being_committed_is_waited_for_then_refused(
    kafka: EmbeddedKafka, db_url: str, unique: str, url: str
) -> None:
    """Asking for a handover checked whether the caseworker works on the youth's case before it took
    the youth's case lock, and registering a signal never took it: while caseworker A's first request
    on a youth was being committed, B's handover request found nobody on the case, waited for A's
    lock and was stored, and B's signal did not even wait; either way B had opened A's case. All of
    them check under the case lock now, as recording a consent did: B waits for A, then gets 403."""
    async with world(kafka, db_url, unique) as w:
        assert w.hub.store is not None
        async with w.hub.store.transaction() as session:
            b = Caseworker(
                caseworker_id="cw-b", name="Bee", email="b@halt.nl", team="DEN_HAAG",
                meldingsbevoegd=True, phone="070 123 4567",
            )  # fmt: skip
            await upsert_caseworker(session, b)
        rid, key = await w.referral(17)
        body = await _bs_request(w, url, rid)
        async with w.hub.store.transaction() as a_tx:  # A's first request on the youth, uncommitted
            await create_handover(a_tx, routing_of(w.hub), _asked(rid), Act(CW, str(uuid.uuid4())))
            answer = asyncio.create_task(
                w.client.post(f"/api/v1/{url}", json=body, headers={"X-Medewerker": "cw-b"})
            )
            await wait_for(partial(_waiting_or_done, w.hub.store, answer))
        got = await answer  # A committed; B goes on
        assert got.status_code == 403, got.text
        async with w.hub.store.connect() as conn:
            asked = (await conn.execute(select(handovers.c.youth_key, handovers.c.from_caseworker))).all()
            held = (await conn.execute(select(signals.c.signal_id))).all()
            recorded = (await conn.execute(select(consents.c.recorded_by))).scalars().all()
        assert asked == [(key, CW)] and held == [] and recorded == []


def _asked(referral_id: str) -> Handover:
    return Handover(
        referral_id=referral_id, from_caseworker=CW, receiver_organisation="jongerenwerk-dh",
        receiver_type=ReceiverType.JONGERENWERK, data_categories=[DataCategory.PERSONALIA], summary="a",
    )  # fmt: skip


async def _bs_request(w: World, url: str, referral_id: str) -> dict[str, Any]:
    """B's first request on the youth of `referral_id`, to /api/v1/`url`."""
    if url == "signalen":
        assert w.hub.store is not None
        async with w.hub.store.connect() as conn:
            row = (
                await conn.execute(select(referrals.c.referral).where(referrals.c.id == referral_id))
            ).one()
        youth = row.referral["youth"]
        return {
            "youth": {k: youth[k] for k in ("bsn", "given_names", "surname", "birth_date", "municipality")}
            | {"gender": "MAN"},
            "youth_informed_at": today().isoformat(),
            "parent_letter_sent_at": today().isoformat(),
        }
    if url == "toestemmingen":
        return {
            "referral_id": referral_id, "purpose": "WARME_OVERDRACHT", "data_categories": ["PERSONALIA"],
            "recipient_organisations": ["jongerenwerk-dh"], "valid_from": today().isoformat(),
            "valid_until": (today() + timedelta(days=365)).isoformat(),
            "grantors": [{"role": "JEUGDIGE", "name": "Sam", "permission": "PERMIT",
                          "given_at": datetime.now(UTC).isoformat(), "method": "MONDELING"}],
        }  # fmt: skip
    receiver = "veilig-thuis-dh" if url == "zorgmeldingen" else "jongerenwerk-dh"
    return {
        "referral_id": referral_id, "receiver_organisation": receiver, "data_categories": ["PERSONALIA"],
        "summary": "b",
    }  # fmt: skip


@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)
async def test_two_withdrawals_at_once_tell_a_receiver_once(
    kafka: EmbeddedKafka, db_url: str, unique: str
) -> None:
    """Rule 10. A handover back to waiting, whose receiver may have it (stored, answered 500), named by
    two of the youth's consents: withdrawn at the same moment, each withdrawal read the youth's
    handovers before the other wrote (it locked only its own consent), each withdrew the handover
    and each told its receiver. A withdrawal takes the youth's case lock first now: the second waits,
    then finds the handover withdrawn already."""
    async with world(kafka, db_url, unique, retry_schedule_s=(0.5,) * 8) as w:
        assert w.hub.store is not None
        rid, _ = await w.referral(14, custodians=1)
        first = await w.consent(rid, grantors=ONE_PARENT, custodians=1)
        w.receiver.fail_after_storing = True
        hid = await w.handover(rid)
        await wait_for(lambda: len(w.receiver.handovers()) >= 1)
        await _referral_again(w, rid, custodians=2)

        async def waiting_again() -> bool:
            return (await w.status(hid))["status"] == "WACHT_OP_TOESTEMMING"

        await wait_for(waiting_again, timeout_s=30)
        second = await w.consent(rid, grantors=ONE_PARENT, custodians=2)  # names the receiver too
        assert not second["complete"]
        w.receiver.fail_after_storing = False
        r, withdrawn = routing_of(w.hub), []
        async with w.hub.store.transaction() as s1:
            act = Act(CW, str(uuid.uuid4()))
            withdrawn.append((await withdraw_consent(s1, r, first["consent_id"], "weg", act))[1])

            async def the_other() -> list[str]:
                async with w.hub.store.transaction() as s2:  # type: ignore[union-attr]
                    act = Act(CW, str(uuid.uuid4()))
                    return (await withdraw_consent(s2, r, second["consent_id"], "weg", act))[1]

            other = asyncio.create_task(the_other())
            await wait_for(partial(_waiting_or_done, w.hub.store, other, WAITING_FOR_ANY_LOCK))
        withdrawn.append(await other)
        assert withdrawn == [[hid], []]
        async with w.hub.store.connect() as conn:
            queued = [Envelope.from_bytes(v) for v in (await conn.execute(select(outbox.c.value))).scalars()]
        notices = [e for e in queued if e.type == "HandoverWithdrawn" and e.payload["handover_id"] == hid]
        assert len(notices) == 1
        assert [a.objects["handover_id"] for a in await w.audit("handover.withdrawn")] == [hid]


@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)
async def test_a_withdrawal_and_routings_periodic_check_on_one_youth_take_turns(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A withdrawal takes the youth's case lock, then the consent's row. Routing's periodic check of
    handovers whose consent has started took the youth's consents (shared) and handovers, and only
    then the case lock (in `route`): the opposite order, and PostgreSQL would end one of them. It
    takes the case locks of all the youths it checks first now."""
    key = keys(1, salt="w")[0]
    rid, hid = await _waiting_handover(store, key, reasons=["NOG_NIET_GELDIG"])
    async with store.transaction() as session:
        consent = Consent(
            youth={"bsn": "111222333", "birth_date": "2008-01-10"}, purpose="WARME_OVERDRACHT",
            recipient_organisations=["jongerenwerk-dh"], data_categories=["PERSONALIA"], recorded_by=CW,
            valid_from=today() + timedelta(days=1), valid_until=today() + timedelta(days=30),
            grantors=[{"role": "JEUGDIGE", "name": "Sam", "permission": "PERMIT",
                       "given_at": datetime.now(UTC), "method": "MONDELING"}],
        )  # fmt: skip
        stored = await insert_consent(session, consent, youth_key=key, referral_id=rid, transaction_id="t")
    real, locked, go_on = consent_service.get_consent, asyncio.Event(), asyncio.Event()

    async def pausing(session: Any, consent_id: str, *, lock: bool = False) -> Any:
        if lock and not locked.is_set():  # the withdrawal holds the case lock: pause before the row
            locked.set()
            await go_on.wait()
        return await real(session, consent_id, lock=lock)

    monkeypatch.setattr(consent_service, "get_consent", pausing)
    r = Routing(requested_topic="req", dispatch_topic="disp", mail_topic="mail")
    other = Store(store.url)

    async def withdrawal() -> list[str]:
        async with store.transaction() as s:
            return (await withdraw_consent(s, r, stored.consent_id, "weg", Act(CW, str(uuid.uuid4()))))[1]

    async def periodic_check() -> list[str]:
        async with other.transaction() as s:
            return await recheck_started(s, r, Act("routing", str(uuid.uuid4())), youth_keys=[key])

    try:
        withdrawing = asyncio.create_task(withdrawal())
        await asyncio.wait_for(locked.wait(), 20)
        checking = asyncio.create_task(periodic_check())
        await wait_for(partial(_waiting_or_done, other, checking))  # for the withdrawal's case lock
        go_on.set()
        outcomes = await asyncio.wait_for(asyncio.gather(withdrawing, checking, return_exceptions=True), 30)
    finally:
        go_on.set()
        await other.close()
    assert list(outcomes) == [[hid], []], outcomes


async def _waiting_handover(store: Store, key: str, *, reasons: list[str] | None = None) -> tuple[str, str]:
    """A referral of the youth `key` and a handover of it waiting for a consent: (referral, handover)."""
    rid, hid, now = str(uuid.uuid4()), str(uuid.uuid4()), datetime.now(UTC)
    body = {
        "referrer": {"type": "POLITIE", "organisation": "Politie Den Haag"},
        "case_reference": f"PV-{rid[:8]}",
        "youth": {"bsn": "111222333", "given_names": "Sam", "surname": "Jansen", "birth_date": "2008-01-10",
                  "municipality": "Den Haag", "guardians": []},
        "track": "HALT_STRAF",
        "offence": {"committed_on": (today() - timedelta(days=10)).isoformat(), "description": "vernieling"},
    }  # fmt: skip
    async with store.transaction() as session:
        await session.execute(
            insert(referrals).values(
                id=rid, referrer_key="test", case_reference=body["case_reference"], referrer_type="POLITIE",
                channel="http", youth_key=key, bsn="111222333", track="HALT_STRAF", outcome="ACCEPTED",
                referral=body, decision={"outcome": "ACCEPTED"}, transaction_id="t", received_at=now,
            )
        )  # fmt: skip
        await session.execute(
            insert(handovers).values(
                id=hid, referral_id=rid, youth_key=key, from_caseworker=CW,
                receiver_organisation="jongerenwerk-dh", receiver_type="JONGERENWERK",
                purpose="WARME_OVERDRACHT", data_categories=["PERSONALIA"], summary="Sport.",
                status="WACHT_OP_TOESTEMMING", waiting_reasons=reasons, created_at=now, updated_at=now,
                transaction_id="t",
            )
        )  # fmt: skip
    return rid, hid


def _crossed_keys() -> tuple[str, str, str, str]:
    """Youth keys a, b, c, d: a and d in one lock bucket, b and c in another."""
    by_bucket: dict[int, list[str]] = {}
    for key in keys(10_000, salt="x"):
        by_bucket.setdefault(lock_key(key), []).append(key)
        full = [v for v in by_bucket.values() if len(v) >= 2]
        if len(full) >= 2:
            (a, d), (b, c) = full[0][:2], full[1][:2]
            return a, b, c, d
    raise AssertionError("no two shared buckets among 10,000 keys")


def _record(topic: str, partition: int, offset: int, key: str, message: Envelope) -> ConsumerRecord[Any, Any]:
    value = message.to_bytes()
    return ConsumerRecord(
        topic=topic, partition=partition, offset=offset, timestamp=0, timestamp_type=0, key=key.encode(),
        value=value, checksum=None, serialized_key_size=len(key), serialized_value_size=len(value),
        headers=tuple(message.headers()),
    )  # fmt: skip


async def _crossed_batches(
    w: World, topic: str, messages: dict[str, Envelope], first_handled: asyncio.Event, go_on: asyncio.Event
) -> None:
    """Two batches of `topic` on two partitions, as two consumers of the group take them, each in one
    transaction: youths a, b on one, c, d on the other (a, d and b, c share lock buckets). The first
    pauses once it has handled a (`first_handled`) until the second waits for a case lock."""
    assert w.hub.spine is not None
    [sub] = [s for s in w.hub.spine.subscriptions if s.topic == topic]
    batches = [
        [_record(topic, p, i, key, messages[key]) for i, key in enumerate(youths)]
        for p, youths in enumerate((("a", "b"), ("c", "d")))
    ]

    async def nothing() -> None:
        """Offsets are not the point here."""

    async def process(records: list[ConsumerRecord[Any, Any]]) -> None:
        assert w.hub.spine is not None
        await w.hub.spine.process(sub, records, ack=nothing, nack=nothing)

    try:
        first = asyncio.create_task(process(batches[0]))
        await asyncio.wait_for(first_handled.wait(), 20)
        second = asyncio.create_task(process(batches[1]))
        await wait_for(partial(_waiting_or_done, w.hub.store, second))  # for a case lock of the first's
        go_on.set()
        await asyncio.wait_for(asyncio.gather(first, second), 30)
    finally:
        go_on.set()
    retried = w.hub.metrics.registry.get_sample_value(
        "ketenhub_messages_total", {"topic": topic, "outcome": "retried"}
    )
    assert not retried, f"{retried} records of a batch rolled back and retried (a deadlock)"


@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)
async def test_two_receivers_batches_with_crossed_youths_take_turns_not_deadlock(
    kafka: EmbeddedKafka, db_url: str, unique: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The receivers' Kafka batch is one transaction, and each record took its youth's case lock
    (`hold_for_delivery`) in record order: two batches on two partitions whose youths share lock
    buckets the other way round deadlocked (PostgreSQL ended one; the spine rolled the batch back and
    read it again). A batch takes all of its youths' locks at once, in ascending order, now."""
    async with world(kafka, db_url, unique, check_interval_s=3600) as w:
        assert w.hub.store is not None
        youths = dict(zip("abcd", _crossed_keys(), strict=True))
        messages = {}
        for name, key in youths.items():  # zorgmeldingen to a Kafka receiver: they go without consent
            _, hid = await _waiting_handover(w.hub.store, key)
            async with w.hub.store.transaction() as session:
                await session.execute(
                    update(handovers)
                    .where(handovers.c.id == hid)
                    .values(status="VERZONDEN", purpose="ZORGMELDING", receiver_organisation="jeugdhulp-dh",
                            receiver_type="JEUGDHULP", legal_basis="meldcode")
                )  # fmt: skip
            payload = {"handover_id": hid, "receiver_organisation": "jeugdhulp-dh", "youth_key": key}
            messages[name] = Envelope.new("Handover", payload, transaction_id=str(uuid.uuid4()), source="t")
        real, first_handled, go_on = receivers_component.delivery_verdict, asyncio.Event(), asyncio.Event()

        async def pausing(session: Any, message: Envelope, *, day: date) -> Any:
            verdict = await real(session, message, day=day)
            if message.message_id == messages["a"].message_id and not first_handled.is_set():
                first_handled.set()
                await go_on.wait()
            return verdict

        monkeypatch.setattr(receivers_component, "delivery_verdict", pausing)
        await _crossed_batches(w, w.hub.topic(HANDOVER_DISPATCH.name), messages, first_handled, go_on)
        disclosed = [a.objects["handover_id"] for a in await w.audit("handover.disclosed")]
        assert sorted(disclosed) == sorted(m.payload["handover_id"] for m in messages.values())


@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)
async def test_two_routing_batches_with_crossed_youths_take_turns_not_deadlock(
    kafka: EmbeddedKafka, db_url: str, unique: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Routing's Kafka batch is one transaction too, and `route` took each record's case lock in
    record order: the same deadlock as the receivers' between two batches with crossed youths."""
    async with world(kafka, db_url, unique, check_interval_s=3600) as w:
        assert w.hub.store is not None
        youths = dict(zip("abcd", _crossed_keys(), strict=True))
        messages = {}
        for name, key in youths.items():  # asked over the API: announced, not routed yet
            _, hid = await _waiting_handover(w.hub.store, key)
            payload = {"handover_id": hid, "purpose": "WARME_OVERDRACHT"}
            messages[name] = Envelope.new(
                "HandoverRequested", payload, transaction_id=str(uuid.uuid4()), source="ketenhub-api"
            )
        real, first_handled, go_on = routing_component.route, asyncio.Event(), asyncio.Event()

        async def pausing(session: Any, r: Routing, handover_id: str, act: Act) -> str:
            decided = await real(session, r, handover_id, act)
            if handover_id == messages["a"].payload["handover_id"] and not first_handled.is_set():
                first_handled.set()
                await go_on.wait()
            return decided

        monkeypatch.setattr(routing_component, "route", pausing)
        await _crossed_batches(w, w.hub.topic(HANDOVER_REQUESTED.name), messages, first_handled, go_on)
        judged = [a.objects["handover_id"] for a in await w.audit("handover.waiting")]
        assert sorted(judged) == sorted(m.payload["handover_id"] for m in messages.values())
