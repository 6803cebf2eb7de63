"""Match mails end to end: a stored signal, a match from the Verwijsindex side, a mail over real SMTP."""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime, timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from hub.app import create_app
from hub.clock import today
from hub.embedded import EmbeddedKafka
from hub.notify.service import NO_RECIPIENT
from hub.notify.tables import mail_sent
from hub.partners import PartnerType, add_partner
from hub.runtime import Hub
from hub.signals import request_withdrawal, store_signal
from hub.signals.matches import record_match
from hub.signals.service import request_contact_change
from hub.signals.tables import matches
from hub.spine.dlq import DLQ_HEADERS
from hub.store.tables import audit_log
from hub.topics import VERWIJSINDEX_MATCH
from schemas.bsn import is_valid_bsn
from schemas.caseworker import Absence, Caseworker, ContactDetails
from schemas.match import Match, MatchType
from schemas.pseudonym import youth_key
from schemas.signal import SignalYouth, VerwijsindexSignal, WithdrawalReason
from tests.conftest import TEST_SECRET
from tests.helpers.kafka import headers_of, read_topic, wait_for
from tests.integration.test_mail_delivery import (
    ILSE,
    OMAR,
    PATIENT,
    _failed_at_least,
    _problem,
    add_caseworkers,
    bodies,
    parse,
    smtp_sink,
    start_mail_hub,
)

pytestmark = pytest.mark.integration
KEES = ContactDetails(
    name="Kees de Wit", organisation="Jeugdhulp Haaglanden", email="kees@jeugdhulp.nl", phone="06 1234 5678"
)


def a_bsn(seed: int) -> str:
    n = seed
    while not is_valid_bsn(str(n)):
        n += 1
    return str(n)


def youth(seed: int) -> SignalYouth:
    return SignalYouth(
        bsn=a_bsn(seed), given_names="Noah Pieter", surname="Vermeulen-Zwart",
        birth_date=date(2010, 5, 14), gender="MAN", municipality="Den Haag",
    )  # fmt: skip


async def signal_with_match(
    hub: Hub,
    owner: str,
    young: SignalYouth,
    kind: MatchType = MatchType.CLIENTMATCH,
    *,
    match_id: str | None = None,
    counterpart: ContactDetails = KEES,
    withdrawn: bool = False,
    moved_to: Caseworker | None = None,
) -> tuple[str, str]:
    """Store our signal as the signals API does, then record a match as the feed does (and, with
    `withdrawn`, withdraw the signal before the notifier gets the match; with `moved_to`, change its
    contact to them, as a PATCH of the contact or a borging does)."""
    assert hub.store is not None and hub.relay is not None
    signal_id, match_id = str(uuid.uuid4()), match_id or f"m-{uuid.uuid4()}"
    signal = VerwijsindexSignal(
        signal_id=signal_id, youth=young, organisation="Halt Den Haag",
        caseworker=ContactDetails(name="x", organisation="Halt Den Haag", email="x@halt.nl"),
        caseworker_id=owner, created=today(), end_date=today() + timedelta(days=365),
        youth_informed_at=today(), parent_letter_sent_at=today(),
    )  # fmt: skip
    async with hub.store.transaction() as session:
        await store_signal(session, hub, signal, youth_key=youth_key(TEST_SECRET, young.bsn),
                           user=owner, transaction_id=str(uuid.uuid4()))  # fmt: skip
        match = Match(match_id=match_id, signal_id=signal_id, type=kind, counterparts=[counterpart])
        assert await record_match(session, hub.topic(VERWIJSINDEX_MATCH.name), match, str(uuid.uuid4()))
        if withdrawn:
            await request_withdrawal(session, hub, signal_id, WithdrawalReason.ONTERECHT, user=owner,
                                     transaction_id=str(uuid.uuid4()))  # fmt: skip
        if moved_to is not None:
            await request_contact_change(session, hub, signal_id, moved_to, str(uuid.uuid4()), user=owner)
    hub.relay.wake()
    return signal_id, match_id


async def test_match_mail_arrives_as_valid_mime_with_contacts_and_no_youth_data(
    kafka: EmbeddedKafka, db_url: str, unique: str
) -> None:
    async with smtp_sink() as sink:
        hub = await start_mail_hub(kafka, db_url, unique, sink)
        try:
            await add_caseworkers(hub, ILSE, OMAR)
            young = youth(123_456_700)
            signal_id, match_id = await signal_with_match(hub, "cw-ilse", young)
            await wait_for(lambda: len(sink.memory) == 1)
            mail = sink.memory[0]
            assert mail.rcpt_to == ["ilse@halt.nl"]
            msg = parse(mail.raw)
            text, html = bodies(msg)
            assert (
                msg["Message-ID"].endswith("@halt.nl>")
                and msg["Date"]
                and msg["From"].addresses[0].addr_spec == "ketenhub@halt.nl"
            )
            for body in (text, html, str(msg["Subject"])):
                assert young.bsn not in body
                for part in (*young.given_names.split(), young.surname, *young.surname.split("-")):
                    assert part not in body
                assert "Vermeulen" not in mail.raw and young.bsn not in mail.raw  # also not in headers
            for expected in (
                "Kees de Wit",
                "kees@jeugdhulp.nl",
                "06 1234 5678",
                "Jeugdhulp Haaglanden",
                signal_id,
                "cliëntmatch",
            ):
                assert expected in text and expected in html
            await wait_for(lambda: _audited(hub, "verwijsindex.match_disclosed", match_id))
        finally:
            await hub.stop()


async def test_a_match_whose_signal_was_withdrawn_before_its_mail_is_not_mailed(
    kafka: EmbeddedKafka, db_url: str, unique: str
) -> None:
    """The feed passed the match on; the caseworker withdrew the signal before the notifier got it:
    the counterpart's contact details went out about a signal that was over."""
    async with smtp_sink() as sink:
        hub = await start_mail_hub(kafka, db_url, unique, sink)
        try:
            await add_caseworkers(hub, ILSE, OMAR)
            _, match_id = await signal_with_match(hub, "cw-ilse", youth(123_456_900), withdrawn=True)
            await wait_for(lambda: _audited(hub, "verwijsindex.match_ignored", match_id))
            # past its end date by the time the notifier gets the match: over as well, though nothing
            # marks it VERLOPEN in the hub
            hub.clock = lambda: datetime.now(UTC) + timedelta(days=400)
            _, expired = await signal_with_match(hub, "cw-ilse", youth(123_457_900))
            await wait_for(lambda: _audited(hub, "verwijsindex.match_ignored", expired))
            assert list(sink.memory) == []
            for ignored in (match_id, expired):
                assert not await _audited(hub, "verwijsindex.match_disclosed", ignored)
        finally:
            await hub.stop()


async def test_a_match_goes_to_the_signals_contact_of_now_not_of_when_it_was_read(
    kafka: EmbeddedKafka, db_url: str, unique: str
) -> None:
    """The contact changed (by hand or by borging) after the feed read the match, before the notifier
    mailed it: the old contact got the counterpart's details of a signal they may no longer open."""
    async with smtp_sink() as sink:
        hub = await start_mail_hub(kafka, db_url, unique, sink)
        try:
            await add_caseworkers(hub, ILSE, OMAR)
            _, match_id = await signal_with_match(hub, "cw-ilse", youth(123_458_900), moved_to=OMAR)
            await wait_for(lambda: len(sink.memory) == 1)
            assert sink.memory[0].rcpt_to == ["omar@halt.nl"]
            await wait_for(lambda: _audited(hub, "verwijsindex.match_disclosed", match_id))
            assert hub.store is not None
            async with hub.store.connect() as conn:
                query = select(audit_log.c.on_behalf_of).where(
                    audit_log.c.action == "verwijsindex.match_disclosed"
                )
                assert list((await conn.execute(query)).scalars()) == ["cw-omar"]
        finally:
            await hub.stop()


async def test_a_match_mail_waiting_to_be_sent_goes_to_the_contact_of_when_it_is_sent(
    kafka: EmbeddedKafka, db_url: str, unique: str
) -> None:
    """The notifier queued the match mail for Ilse; SMTP was down (or the mail was dead-lettered and
    replayed days later) and the signal moved to Omar meanwhile: the mail still went to Ilse."""
    async with smtp_sink() as sink:
        hub = await start_mail_hub(kafka, db_url, unique, sink, policy=PATIENT)
        try:
            await add_caseworkers(hub, ILSE, OMAR)
            await sink.stop()  # SMTP down: the mail waits on the ladder
            signal_id, _ = await signal_with_match(hub, "cw-ilse", youth(123_459_900))
            await wait_for(lambda: _failed_at_least(hub, 1))
            assert hub.store is not None
            async with hub.store.transaction() as session:  # a borging, or a PATCH of the contact
                await request_contact_change(session, hub, signal_id, OMAR, str(uuid.uuid4()), user="cw-ilse")
            await sink.start()
            await wait_for(lambda: len(sink.memory) == 1, timeout_s=30)
            assert sink.memory[0].rcpt_to == ["omar@halt.nl"]
            text, _ = bodies(parse(sink.memory[0].raw))
            assert signal_id in text and "vervanger" not in text  # his own signal now, not Ilse's

            async def sent_for() -> list[Any]:
                async with hub.store.connect() as conn:  # type: ignore[union-attr]
                    query = select(audit_log.c.on_behalf_of).where(audit_log.c.action == "mail.sent")
                    return list((await conn.execute(query)).scalars())

            assert await wait_for(sent_for) == ["cw-omar"]
        finally:
            await hub.stop()


async def test_a_match_mail_waiting_while_its_signal_is_withdrawn_is_not_sent(
    kafka: EmbeddedKafka, db_url: str, unique: str
) -> None:
    """The notifier does not mail a match on a signal that is over; one queued while the signal was
    active, waiting for SMTP when the caseworker withdrew the signal, still went out."""
    async with smtp_sink() as sink:
        hub = await start_mail_hub(kafka, db_url, unique, sink, policy=PATIENT)
        try:
            await add_caseworkers(hub, ILSE, OMAR)
            await sink.stop()  # SMTP down: the mail waits on the ladder
            young = youth(123_460_900)
            signal_id, _ = await signal_with_match(hub, "cw-ilse", young)
            await wait_for(lambda: _failed_at_least(hub, 1))
            assert hub.store is not None
            async with hub.store.transaction() as session:
                await request_withdrawal(session, hub, signal_id, WithdrawalReason.RISICO_WEG, user="cw-ilse",
                                         transaction_id=str(uuid.uuid4()))  # fmt: skip
            await sink.start()
            await wait_for(lambda: _audited(hub, "mail.withheld", signal_id), timeout_s=30)
            assert list(sink.memory) == []
            async with hub.store.connect() as conn:  # in the youth's trail (an access request finds it)
                query = select(audit_log.c.youth_key).where(audit_log.c.action == "mail.withheld")
                assert list((await conn.execute(query)).scalars()) == [youth_key(TEST_SECRET, young.bsn)]
            assert not await _audited(hub, "mail.sent", signal_id)
            async with hub.store.connect() as conn:
                assert (await conn.execute(select(mail_sent))).all() == []
        finally:
            await hub.stop()


async def purge_signal(hub: Hub, signal_id: str) -> None:
    """What retention does to a signal past its term (hub.retention.purge): its matches and its row go."""
    from sqlalchemy import delete

    from hub.signals.tables import signals

    assert hub.store is not None
    async with hub.store.transaction() as session:
        await session.execute(delete(matches).where(matches.c.signal_id == signal_id))
        await session.execute(delete(signals).where(signals.c.signal_id == signal_id))


async def test_a_match_mail_waiting_while_its_signal_ends_and_is_purged_is_not_sent(
    kafka: EmbeddedKafka, db_url: str, unique: str
) -> None:
    """Queued on the signal's last day, waiting out an SMTP outage while retention purged the signal:
    finding no signal, the connector sent the counterpart's contact details after the term (rule 16)."""
    async with smtp_sink() as sink:
        hub = await start_mail_hub(kafka, db_url, unique, sink, policy=PATIENT)
        try:
            await add_caseworkers(hub, ILSE, OMAR)
            await sink.stop()  # SMTP down: the mail waits on the ladder
            young = youth(123_461_900)
            signal_id, match_id = await signal_with_match(hub, "cw-ilse", young)
            await wait_for(lambda: _failed_at_least(hub, 1))
            await purge_signal(hub, signal_id)
            await sink.start()
            await wait_for(lambda: _audited(hub, "mail.withheld", signal_id), timeout_s=30)
            assert list(sink.memory) == []
            assert hub.store is not None
            async with hub.store.connect() as conn:  # in the youth's trail, saying why
                query = select(audit_log).where(audit_log.c.action == "mail.withheld")
                [withheld] = (await conn.execute(query)).all()
            assert withheld.youth_key == youth_key(TEST_SECRET, young.bsn)
            assert withheld.objects["reason"] == "signal_purged"
            assert withheld.objects["case_reference"] == signal_id
            assert not await _audited(hub, "mail.sent", signal_id)
            async with hub.store.connect() as conn:
                assert (await conn.execute(select(mail_sent))).all() == []
            assert await _audited(hub, "verwijsindex.match_disclosed", match_id)  # queued while it held
        finally:
            await hub.stop()


async def _audited(hub: Hub, action: str, needle: str) -> bool:
    from sqlalchemy import select

    assert hub.store is not None
    async with hub.store.connect() as conn:
        rows = (await conn.execute(select(audit_log).where(audit_log.c.action == action))).all()
    return any(needle in str(r.objects) for r in rows)


async def test_absent_caseworker_mail_reaches_delegate_and_nobody_reachable_is_shown(
    kafka: EmbeddedKafka, db_url: str, unique: str
) -> None:
    absent = ILSE.model_copy(
        update={"absences": [Absence(start=today() - timedelta(days=2), end=today() + timedelta(days=5))]}
    )
    alone = OMAR.model_copy(update={"caseworker_id": "cw-lone", "email": "lone@halt.nl", "active": False})
    async with smtp_sink() as sink:
        hub = await start_mail_hub(kafka, db_url, unique, sink)
        try:
            await add_caseworkers(hub, absent, OMAR, alone)
            signal_id, _ = await signal_with_match(hub, "cw-ilse", youth(223_456_700), MatchType.GEZINSMATCH)
            await wait_for(lambda: len(sink.memory) == 1)
            assert sink.memory[0].rcpt_to == ["omar@halt.nl"]
            text, _ = bodies(parse(sink.memory[0].raw))
            assert "vervanger van Ilse Bakker" in text and "gezinsmatch" in text and signal_id in text

            _, lost_match = await signal_with_match(hub, "cw-lone", youth(323_456_700))
            dead = await read_topic(kafka.bootstrap, hub.topic(VERWIJSINDEX_MATCH.dlq), expect=1)
            assert len(dead) == 1
            headers = headers_of(dead[0])
            assert set(DLQ_HEADERS) <= set(headers)
            assert "no reachable delegate" in headers["dlq-exception-message"]
            assert headers["dlq-exception-class"].endswith("NoReachableRecipient")
            await wait_for(lambda: _problem(hub, NO_RECIPIENT, lost_match))  # the match's problem
            assert len(sink.memory) == 1  # nothing was sent to a caseworker who left
        finally:
            await hub.stop()


async def test_a_match_keeps_whom_its_mail_reached_and_when_and_its_caseworker_can_list_it(
    kafka: EmbeddedKafka, db_url: str, unique: str
) -> None:
    """The canonical Match has "notified caseworker and when"; the hub never wrote either, so neither a
    caseworker nor an administrator could tell from the match whether, and to whom, it was mailed."""
    absent = ILSE.model_copy(
        update={"absences": [Absence(start=today() - timedelta(days=1), end=today() + timedelta(days=3))]}
    )
    alone = OMAR.model_copy(update={"caseworker_id": "cw-lone", "email": "lone@halt.nl", "active": False})
    nina = OMAR.model_copy(update={"caseworker_id": "cw-nina", "email": "nina@halt.nl"})
    async with smtp_sink() as sink:
        hub = await start_mail_hub(kafka, db_url, unique, sink)
        try:
            await add_caseworkers(hub, absent, OMAR, alone, nina)
            assert hub.store is not None
            async with hub.store.transaction() as session:
                _, aurah = await add_partner(session, f"aurah-{unique}", PartnerType.ZAAKSYSTEEM)
            before = datetime.now(UTC)
            signal_id, match_id = await signal_with_match(hub, "cw-ilse", youth(423_456_700))
            await wait_for(lambda: len(sink.memory) == 1)
            _, lost_match = await signal_with_match(hub, "cw-lone", youth(523_456_700))
            await wait_for(lambda: _problem(hub, NO_RECIPIENT, lost_match))

            async def told() -> dict[str, Any]:
                async with hub.store.connect() as conn:  # type: ignore[union-attr]
                    rows = (await conn.execute(select(matches))).all()
                return {r.match_id: (r.notified_caseworker_id, r.notified_at) for r in rows}

            await wait_for(lambda: _told_someone(told, match_id))
            by_match = await told()
            assert by_match[match_id][0] == "cw-omar"  # Ilse is away: her delegate read it
            assert by_match[lost_match] == (None, None)  # nobody could be told

            app = create_app(hub.settings, hub=hub)
            system = {"Authorization": f"Bearer {aurah}"}
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(
                transport=transport, base_url="http://hub", headers=system
            ) as client:
                url = f"/api/v1/signalen/{signal_id}/matches"
                listed = await client.get(url, headers={"X-Medewerker": "cw-omar"})
                assert listed.status_code == 200, listed.text
                [shown] = listed.json()
                assert shown["match_id"] == match_id and shown["type"] == "CLIENTMATCH"
                assert shown["counterparts"][0]["email"] == "kees@jeugdhulp.nl"
                assert shown["notified_caseworker"] == "cw-omar"
                notified_at = datetime.fromisoformat(shown["notified_at"])
                assert before <= notified_at <= datetime.now(UTC)
                assert datetime.fromisoformat(shown["received_at"]) <= notified_at
                assert young_data_absent(listed.text)
                refused = await client.get(url, headers={"X-Medewerker": "cw-nina"})  # no part in it
                assert refused.status_code == 403, refused.text
                missing = await client.get(
                    "/api/v1/signalen/nope/matches", headers={"X-Medewerker": "cw-omar"}
                )
                assert missing.status_code == 404
            assert await _audited(hub, "signal.matches_read", signal_id)
        finally:
            await hub.stop()


def young_data_absent(text: str) -> bool:
    """No BSN of the youths above, nor their names, in `text`."""
    bsns = (youth(423_456_700).bsn, youth(523_456_700).bsn)
    return not any(value in text for value in (*bsns, "Vermeulen", "Noah"))


async def _told_someone(told: Any, match_id: str) -> bool:
    return (await told()).get(match_id, (None, None))[1] is not None


async def test_once_its_signal_is_over_a_match_nobody_was_told_of_is_not_shown_either(
    kafka: EmbeddedKafka, db_url: str, unique: str
) -> None:
    """The notifier tells nobody of a match on a withdrawn signal; the list of the signal's matches
    showed it all the same, the counterpart's contact with it (which professional is involved)."""
    other = ContactDetails(name="Els Bos", organisation="Brijder Verslavingszorg", email="els@brijder.nl")
    async with smtp_sink() as sink:
        hub = await start_mail_hub(kafka, db_url, unique, sink)
        try:
            await add_caseworkers(hub, ILSE, OMAR)
            assert hub.store is not None
            async with hub.store.transaction() as session:
                _, aurah = await add_partner(session, f"aurah-{unique}", PartnerType.ZAAKSYSTEEM)
            signal_id, told = await signal_with_match(hub, "cw-ilse", youth(623_456_900))
            await wait_for(lambda: len(sink.memory) == 1)
            async with hub.store.transaction() as session:  # a match, then the withdrawal before its mail
                untold = f"m-{uuid.uuid4()}"
                kind = MatchType.CLIENTMATCH
                match = Match(match_id=untold, signal_id=signal_id, type=kind, counterparts=[other])
                assert await record_match(
                    session, hub.topic(VERWIJSINDEX_MATCH.name), match, str(uuid.uuid4())
                )
                await request_withdrawal(session, hub, signal_id, WithdrawalReason.ONTERECHT, user="cw-ilse",
                                         transaction_id=str(uuid.uuid4()))  # fmt: skip
            assert hub.relay is not None
            hub.relay.wake()
            await wait_for(lambda: _audited(hub, "verwijsindex.match_ignored", untold))
            assert len(sink.memory) == 1  # the second match was told to nobody

            client = httpx.AsyncClient(
                transport=httpx.ASGITransport(app=create_app(hub.settings, hub=hub)),
                base_url="http://hub",
                headers={"Authorization": f"Bearer {aurah}", "X-Medewerker": "cw-ilse"},
            )
            async with client:
                listed = await client.get(f"/api/v1/signalen/{signal_id}/matches")
            assert listed.status_code == 200, listed.text
            assert [m["match_id"] for m in listed.json()] == [told]  # mailed before the withdrawal
            assert "els@brijder.nl" not in listed.text and "Brijder" not in listed.text
            async with hub.store.connect() as conn:
                query = select(audit_log.c.objects).where(audit_log.c.action == "signal.matches_read")
                assert [o["match_ids"] for o in (await conn.execute(query)).scalars()] == [[told]]
        finally:
            await hub.stop()
