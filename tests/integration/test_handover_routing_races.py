"""Routing beside another writer: a second replica (PostgreSQL), a consent recorded before routing."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import insert, select, update

import connectors.receivers.component as receivers_component
import hub.retention.purge as purge_module
from hub.clock import aware, today
from hub.consent.api import _youth as consent_youth
from hub.consent.service import record_consent
from hub.consent.tables import consents
from hub.embedded import EmbeddedKafka
from hub.handovers.answers import notify_unanswered
from hub.handovers.component import routing_of
from hub.handovers.service import Act, HandoverProblem, Routing, create_handover, route
from hub.handovers.tables import handovers
from hub.intake.tables import referrals
from hub.retention.config import RetentionSettings
from hub.retention.purge import purge
from hub.store import Store
from schemas.consent import Consent, DataCategory
from schemas.envelope import Envelope
from schemas.handover import Handover, ReceiverType
from schemas.pseudonym import youth_key
from tests.conftest import TEST_SECRET
from tests.helpers.kafka import wait_for
from tests.helpers.pg import WAITING_FOR_ADVISORY, WAITING_FOR_ANY_LOCK
from tests.integration.test_handover_flow import CW, _queued, world

pytestmark = pytest.mark.integration


async def test_two_replicas_checking_at_once_tell_of_an_unanswered_handover_once(
    kafka: EmbeddedKafka, db_url: str, unique: str
) -> None:
    """Each replica read the unanswered handovers without a lock and marked them afterwards: two
    replicas checking at the same moment (as replicas of one rollout do) each queued the notice."""
    if not db_url.startswith("postgresql"):
        pytest.skip("SQLite has one writer: a second replica's check waits for the first to commit")
    async with world(kafka, db_url, unique, check_interval_s=3600) as w:
        rid, _ = await w.referral(17)
        await w.consent(rid)
        hid = await w.handover(rid)

        async def delivered() -> bool:
            return bool((await w.status(hid))["delivered_at"])

        await wait_for(delivered)
        assert w.hub.store is not None
        async with w.hub.store.transaction() as s:
            week_ago = datetime.now(UTC) - timedelta(days=7)
            await s.execute(update(handovers).where(handovers.c.id == hid).values(sent_at=week_ago))
        r, other = routing_of(w.hub), Store(db_url)  # the second replica's own connections
        try:
            async with w.hub.store.transaction() as first:
                act = Act("routing", str(uuid.uuid4()), None)
                assert await notify_unanswered(first, r, timedelta(days=5), act) == 1
                # the second replica checks while the first has not committed yet
                async with other.transaction() as second:
                    act = Act("routing", str(uuid.uuid4()), None)
                    told = await asyncio.wait_for(notify_unanswered(second, r, timedelta(days=5), act), 10)
                assert told == 0
        finally:
            await other.close()
        assert await _queued(w, "notification.mail", "handover.unanswered", hid) == 1


async def test_a_handover_a_consent_finds_waiting_before_routing_does_is_told_about_once(
    kafka: EmbeddedKafka, db_url: str, unique: str
) -> None:
    """Recording a consent routes the youth's waiting handovers at once, without a notice. When the
    consent came before routing had taken the request (restarts, load), routing then found the
    handover judged already and the caseworker was never told it waits (rule 9)."""
    async with world(kafka, db_url, unique) as w:
        rid, _ = await w.referral(17)
        r = routing_of(w.hub)
        asked = Handover(
            referral_id=rid,
            from_caseworker=CW,
            receiver_organisation="jongerenwerk-dh",
            receiver_type=ReceiverType.JONGERENWERK,
            data_categories=[DataCategory.PERSONALIA],
            summary="Sam wil graag meedoen aan een sportproject.",
        )
        assert w.hub.store is not None
        async with w.hub.store.transaction() as session:  # stored; routing has not taken it yet
            row = await create_handover(session, r, asked, Act(CW, str(uuid.uuid4())), announce=False)
        hid = row.id
        await w.consent(rid, recipient_organisations=["wijkteam-dh"])  # covers another receiver
        async with w.hub.store.transaction() as session:  # routing takes the request now
            assert await route(session, r, hid, Act("routing", str(uuid.uuid4()))) == "WACHT_OP_TOESTEMMING"
        assert (await w.status(hid))["waiting_reasons"] == ["ANDERE_ONTVANGER"]
        assert await _queued(w, "notification.mail", "handover.waiting", hid) == 1
        told = [a for a in await w.audit("handover.waiting") if a.objects.get("handover_id") == hid]
        assert len(told) == 1


async def test_a_withdrawal_made_while_a_webhook_handover_is_checked_is_waited_for_or_seen(
    kafka: EmbeddedKafka, db_url: str, unique: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The webhook delivery checked the consent, then recorded the attempt in a later transaction and
    POSTed: a withdrawal committed in between was not seen, and the handover left after it (rule 10:
    a withdrawal blocks new disclosures at once). Now the withdrawal waits for the check's step, and
    then knows the receiver may have the handover."""
    async with world(kafka, db_url, unique) as w:
        rid, _ = await w.referral(17)
        consent = await w.consent(rid)
        real, withdrawal = receivers_component.delivery_verdict, None

        async def withdrawn_right_after_the_check(session: Any, message: Envelope, *, day: date) -> Any:
            nonlocal withdrawal
            verdict = await real(session, message, day=day)
            if message.type == "Handover" and withdrawal is None:
                withdrawal = asyncio.create_task(
                    w.client.post(
                        f"/api/v1/toestemmingen/{consent['consent_id']}/intrekking",
                        json={"reason": "wil niet meer"},
                        headers={"X-Medewerker": CW},
                    )
                )
                # time for the withdrawal to commit, unless it must wait for this step
                await asyncio.wait({withdrawal}, timeout=1.0)
            return verdict

        monkeypatch.setattr(receivers_component, "delivery_verdict", withdrawn_right_after_the_check)
        hid = await w.handover(rid)
        await wait_for(lambda: withdrawal is not None and withdrawal.done(), timeout_s=30)
        assert withdrawal is not None and withdrawal.result().status_code == 200
        [withdrawn] = await w.audit("consent.withdrawn")
        async with w.hub.store.connect() as conn:  # type: ignore[union-attr]
            row = (await conn.execute(select(handovers.c.attempted_at).where(handovers.c.id == hid))).one()
        if row.attempted_at is not None:  # it left: decided before the withdrawal, which then saw it
            assert aware(row.attempted_at) < aware(withdrawn.at), (row.attempted_at, withdrawn.at)
            await wait_for(lambda: [c["env"].type for c in w.receiver.calls][-1:] == ["HandoverWithdrawn"])
        else:  # it did not leave
            assert w.receiver.handovers() == []


async def test_a_handover_asked_while_its_case_is_purged_waits_and_then_finds_no_referral(
    kafka: EmbeddedKafka, db_url: str, unique: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The retention purge deleted an idle case's referral while a caseworker asked a handover on it,
    or recorded a consent: either was stored, pointing at a referral that no longer existed. Both hold
    the youth's case lock, as the purge does: they wait for the purge, then are told it is unknown."""
    if not db_url.startswith("postgresql"):
        pytest.skip("SQLite has one writer: the purge and the request take turns anyway")
    async with world(kafka, db_url, unique) as w:
        rid, _ = await w.referral(17)
        assert w.hub.store is not None
        async with w.hub.store.transaction() as session:  # the case has been idle for six years
            long_ago = datetime.now(UTC) - timedelta(days=6 * 365)
            await session.execute(update(referrals).where(referrals.c.id == rid).values(received_at=long_ago))
        real, held, release = purge_module._old_cases, asyncio.Event(), asyncio.Event()

        async def old_cases(session: Any, cutoff: Any, today: Any, going: Any, *, among: Any = None) -> Any:
            found = await real(session, cutoff, today, going, among=among)
            if among is not None:  # checked under the write, the case locks held: pause here
                held.set()
                await release.wait()
            return found

        monkeypatch.setattr(purge_module, "_old_cases", old_cases)
        purging = asyncio.create_task(purge(w.hub.store, RetentionSettings(), now=datetime.now(UTC)))
        await asyncio.wait_for(held.wait(), 20)
        asked = Handover(
            referral_id=rid,
            from_caseworker=CW,
            receiver_organisation="jongerenwerk-dh",
            receiver_type=ReceiverType.JONGERENWERK,
            data_categories=[DataCategory.PERSONALIA],
            summary="Sam wil graag meedoen aan een sportproject.",
        )
        other = Store(db_url)  # the caseworker's request, on the api's own connections

        async def ask() -> Any:
            async with other.transaction() as session:
                return await create_handover(session, routing_of(w.hub), asked, Act(CW, str(uuid.uuid4())))

        async def record() -> Any:
            body = {
                "referral_id": rid, "purpose": "WARME_OVERDRACHT", "data_categories": ["PERSONALIA"],
                "recipient_organisations": ["jongerenwerk-dh"], "valid_from": today().isoformat(),
                "valid_until": (today() + timedelta(days=365)).isoformat(),
                "grantors": [{"role": "JEUGDIGE", "name": "Sam", "permission": "PERMIT",
                              "given_at": datetime.now(UTC).isoformat(), "method": "MONDELING"}],
            }  # fmt: skip
            return await w.client.post("/api/v1/toestemmingen", json=body, headers={"X-Medewerker": CW})

        try:
            asking, recording = asyncio.create_task(ask()), asyncio.create_task(record())

            async def both_waiting_or_done() -> bool:
                if asking.done() or recording.done():
                    return True
                async with other.connect() as conn:
                    return (await conn.execute(WAITING_FOR_ADVISORY)).scalar_one() >= 2

            await wait_for(both_waiting_or_done, timeout_s=20)
            release.set()
            assert (await purging).referrals == 1
            with pytest.raises(HandoverProblem) as refused:
                await asking
            assert refused.value.status == 404
            recorded = await recording
            assert recorded.status_code == 404, recorded.text
        finally:
            release.set()
            await other.close()
        async with w.hub.store.connect() as conn:
            assert (await conn.execute(select(handovers.c.id))).all() == []
            assert (await conn.execute(select(consents.c.id))).all() == []


@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)
async def test_a_routing_batch_and_a_consent_on_the_same_youth_take_turns_not_deadlock(store: Store) -> None:
    """A routing poll is one transaction: it routed one record's handover (the youth's consent and
    handover rows locked), then created another record's handover (the youth's case lock). Recording a
    consent takes the case lock, then those rows: the opposite order, and PostgreSQL ended one of them
    (the consent's request answered 503). Routing takes the case lock first now, as recording does."""
    bsn = "111222333"
    key = youth_key(TEST_SECRET, bsn)
    rid, hid, now = str(uuid.uuid4()), str(uuid.uuid4()), datetime.now(UTC)
    body = {
        "referrer": {"type": "POLITIE", "organisation": "Politie Den Haag"},
        "case_reference": f"PV-{rid[:8]}",
        "youth": {"bsn": bsn, "given_names": "Sam", "surname": "Jansen", "birth_date": "2008-01-10",
                  "municipality": "Den Haag", "guardians": []},
        "track": "HALT_STRAF",
        "offence": {"committed_on": (today() - timedelta(days=10)).isoformat(), "description": "vernieling"},
    }  # fmt: skip
    async with store.transaction() as session:
        await session.execute(
            insert(referrals).values(
                id=rid, referrer_key="test", case_reference=body["case_reference"], referrer_type="POLITIE",
                channel="http", youth_key=key, bsn=bsn, track="HALT_STRAF", outcome="ACCEPTED",
                referral=body, decision={"outcome": "ACCEPTED"}, transaction_id="t", received_at=now,
            )
        )  # fmt: skip
        await session.execute(  # a handover asked over the API: announced, not routed yet
            insert(handovers).values(
                id=hid, referral_id=rid, youth_key=key, from_caseworker=CW,
                receiver_organisation="jongerenwerk-dh", receiver_type="JONGERENWERK",
                purpose="WARME_OVERDRACHT", data_categories=["PERSONALIA"], summary="Sport.",
                status="WACHT_OP_TOESTEMMING", created_at=now, updated_at=now, transaction_id="t",
            )
        )  # fmt: skip
    r = Routing(requested_topic="req", dispatch_topic="disp", mail_topic="mail")
    other, routed = Store(store.url), asyncio.Event()
    go_on = asyncio.Event()

    async def routing_batch() -> None:  # two records of one poll, in one transaction
        async with store.transaction() as s:
            await route(s, r, hid, Act("ketenhub-api", str(uuid.uuid4())))  # the API's announcement
            routed.set()
            await go_on.wait()
            asked = Handover(  # a caseworker system's whole handover, for the same youth
                referral_id=rid, from_caseworker=CW, receiver_organisation="wijkteam-dh",
                receiver_type=ReceiverType.WIJKTEAM, data_categories=[DataCategory.PERSONALIA],
                summary="Wijkteam.",
            )  # fmt: skip
            await create_handover(s, r, asked, Act("aurah", str(uuid.uuid4())), announce=False)

    async def consent_recording() -> None:  # POST /api/v1/toestemmingen, as its handler does
        async with other.transaction() as s:
            young, ykey, referral_id = await consent_youth(s, rid, None)
            consent = Consent(
                youth=young, purpose="WARME_OVERDRACHT", recipient_organisations=["jongerenwerk-dh"],
                data_categories=["PERSONALIA"], recorded_by=CW, valid_from=today(),
                valid_until=today() + timedelta(days=30),
                grantors=[{"role": "JEUGDIGE", "name": "Sam", "permission": "PERMIT",
                           "given_at": datetime.now(UTC), "method": "MONDELING"}],
            )  # fmt: skip
            await record_consent(
                s, r, consent, Act(CW, str(uuid.uuid4())), youth_key=ykey, referral_id=referral_id
            )

    try:
        first = asyncio.create_task(routing_batch())
        await asyncio.wait_for(routed.wait(), 20)
        second = asyncio.create_task(consent_recording())

        async def waiting() -> bool:  # the consent waits for the routing batch, for a lock of either kind
            async with store.connect() as conn:
                return bool((await conn.execute(WAITING_FOR_ANY_LOCK)).scalar_one())

        await wait_for(waiting, timeout_s=20)
        go_on.set()
        outcomes = await asyncio.wait_for(asyncio.gather(first, second, return_exceptions=True), 30)
    finally:
        go_on.set()
        await other.close()
    assert [o for o in outcomes if isinstance(o, BaseException)] == []
