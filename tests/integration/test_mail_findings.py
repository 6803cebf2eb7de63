"""Review findings on the mail path, against the real broker, store and an aiosmtpd server.

1. Who reads a caseworker's mail is decided when it is sent, not when it was queued (rules 16, 17).
2. A mail the server may have accepted (no answer after the message went out) is not sent again.
3. Validated phone numbers and numeric ids do not trip the BSN check of a match mail (rule 16).
4. `mail.sent`, the disclosure, names the youth; the match's queue-time entry claims no disclosure.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import select

from connectors.mail import MailSink
from connectors.mail.component import UNKNOWN_PROBLEM, MailConnector, mail_component
from connectors.mail.smtp import SmtpMailer
from hub.clock import today
from hub.config import SmtpSettings
from hub.directory import upsert_caseworker
from hub.embedded import EmbeddedKafka
from hub.notify.component import register_notify
from hub.notify.service import notify_caseworker
from hub.notify.tables import mail_sent
from hub.retry import RetryPolicy
from hub.runtime import Hub
from hub.store import Store
from hub.store.tables import audit_log
from hub.topics import NOTIFICATION_MAIL
from schemas.caseworker import Absence, Caseworker, Team
from schemas.envelope import Envelope, new_id, utcnow
from schemas.notification import MailNotification
from schemas.pseudonym import youth_key
from tests.conftest import TEST_SECRET, make_settings
from tests.helpers.kafka import headers_of, produce, read_topic, wait_for
from tests.integration.test_mail_delivery import (
    ILSE,
    OMAR,
    PATIENT,
    _failed_at_least,
    _problem,
    add_caseworkers,
    bodies,
    count_rows,
    parse,
    smtp_sink,
    start_mail_hub,
)
from tests.integration.test_notify_match import KEES, signal_with_match, youth

pytestmark = pytest.mark.integration
FLEUR = Caseworker(
    caseworker_id="cw-fleur",
    name="Fleur Jansen",
    email="fleur@halt.nl",
    team=Team.GOUDA,
    meldingsbevoegd=True,
)
AWAY = [Absence(start=today() - timedelta(days=2), end=today() + timedelta(days=5))]


async def audit_rows(hub: Hub, action: str) -> list[Any]:
    assert hub.store is not None
    async with hub.store.connect() as conn:
        return list((await conn.execute(select(audit_log).where(audit_log.c.action == action))).all())


async def replay_dead_letter(kafka: EmbeddedKafka, hub: Hub, record: Any) -> None:
    """What an operator's replay does: the dead record back on its topic (here under a new message id,
    which the inbox has not seen)."""
    again = Envelope(**(Envelope.from_bytes(record.value).model_dump() | {"message_id": str(uuid.uuid4())}))
    topic = hub.topic(NOTIFICATION_MAIL.name)
    await produce(kafka.bootstrap, topic, [(record.key, again.to_bytes(), again.headers())])


# -- 1. the reader is decided when the mail is sent ----------------------------------------------------


@pytest.mark.parametrize("change", ["new-delegate", "back", "dlq-replay"])
async def test_a_waiting_mail_goes_to_whoever_stands_in_when_it_is_sent(
    kafka: EmbeddedKafka, db_url: str, unique: str, change: str
) -> None:
    away = ILSE.model_copy(update={"absences": AWAY})  # Ilse is away; Omar stands in
    async with smtp_sink() as sink:
        hub = await start_mail_hub(kafka, db_url, unique, sink, policy=PATIENT)
        try:
            await add_caseworkers(hub, away, OMAR, FLEUR)
            await sink.stop()  # SMTP down: the mail waits on the ladder
            signal_id, _ = await signal_with_match(hub, "cw-ilse", youth(423_456_700))
            await wait_for(lambda: _failed_at_least(hub, 1))
            if change == "new-delegate":  # an administrator makes Fleur Ilse's delegate
                await add_caseworkers(hub, away.model_copy(update={"delegate_id": "cw-fleur"}))
                expected, behalf = "fleur@halt.nl", True
            elif change == "back":  # Ilse is back
                await add_caseworkers(hub, ILSE)
                expected, behalf = "ilse@halt.nl", False
            else:  # Omar goes away too, without a delegate: nobody can read it, so it is dead-lettered
                await add_caseworkers(hub, OMAR.model_copy(update={"absences": AWAY}))
                dead = await read_topic(kafka.bootstrap, hub.topic(NOTIFICATION_MAIL.dlq), expect=1)
                assert (
                    len(dead) == 1 and "no reachable delegate" in headers_of(dead[0])["dlq-exception-message"]
                )
                # the administrator fixes the directory, the operator replays the dead letter
                await add_caseworkers(hub, away.model_copy(update={"delegate_id": "cw-fleur"}))
                await replay_dead_letter(kafka, hub, dead[0])
                expected, behalf = "fleur@halt.nl", True
            await sink.start()
            await wait_for(lambda: len(sink.memory) >= 1, timeout_s=30)
            await asyncio.sleep(0.3)
            assert [m.rcpt_to for m in sink.memory] == [[expected]]
            text, html = bodies(parse(sink.memory[0].raw))
            assert signal_id in text and "Omar" not in text
            for body in (text, html):
                assert ("als vervanger van Ilse Bakker" in body) is behalf
                assert body.count("vervanger") == int(behalf)
            [sent] = await wait_for(lambda: audit_rows(hub, "mail.sent"))
            assert sent.on_behalf_of == "cw-ilse"
            assert sent.objects["sent_to"] == "cw-" + expected.split("@")[0]
        finally:
            await hub.stop()


def _cw(cid: str, *, delegate: str | None = None, away: bool = False) -> Caseworker:
    return Caseworker(
        caseworker_id=cid, name=f"Medewerker {cid}", email=f"{cid}@halt.nl", team=Team.DEN_HAAG,
        meldingsbevoegd=True, delegate_id=delegate, absences=AWAY if away else [],
    )  # fmt: skip


def _envelope(payload: dict[str, Any]) -> Envelope:
    return Envelope.new("MailNotification", payload, source="test", transaction_id=new_id())


@pytest.mark.parametrize("prepared", [True, False], ids=["prepared", "one-by-one"])
async def test_a_message_queued_before_the_change_is_sent_as_before(store: Store, prepared: bool) -> None:
    async with store.transaction() as s:
        for cw in (_cw("away", delegate="stand-in", away=True), _cw("stand-in")):
            await upsert_caseworker(s, cw)
    old_body = (
        "Beste collega,\n\nU ontvangt dit bericht als vervanger van Medewerker away, die afwezig is.\n"
        "Overdracht wacht.\n"
    )
    # as queued by the hub before MailNotification named the caseworker a mail is for
    old = _envelope(
        {"notification_id": new_id(), "recipient_caseworker_id": "stand-in", "template": "notice",
         "subject": "Overdracht wacht", "body_text": old_body, "body_html": None, "case_reference": "HO-1"}
    )  # fmt: skip
    mail = MailNotification(
        recipient_caseworker_id="stand-in", for_caseworker_id="away", template="notice",
        subject="Overdracht wacht", body_text="Beste collega,\n\nOverdracht wacht.\n", case_reference="HO-2",
    )  # fmt: skip
    new = _envelope(mail.model_dump(mode="json"))
    async with connector_on_a_sink(store) as (connector, sink):
        if prepared:
            await connector.prepare([old, new])
        await connector.deliver(old)
        await connector.deliver(new)
        assert [m.rcpt_to for m in sink.memory] == [["stand-in@halt.nl"]] * 2
        texts = [bodies_of_plain(m.raw) for m in sink.memory]
        assert texts[0] == old_body  # as rendered when it was queued, the line once
        assert texts[1] == (
            "Beste collega,\n\nU ontvangt dit bericht als vervanger van Medewerker away, die afwezig is.\n"
            "Overdracht wacht.\n"
        )


@asynccontextmanager
async def connector_on_a_sink(store: Store) -> AsyncIterator[tuple[MailConnector, MailSink]]:
    """The mail connector sending to a real SMTP sink of its own."""
    sink = MailSink()
    await sink.start()
    settings = SmtpSettings(host="127.0.0.1", port=sink.port, timeout_s=10)
    connector = MailConnector(store, settings, SmtpMailer(settings))
    try:
        yield connector, sink
    finally:
        await connector.aclose()
        await sink.stop()


def bodies_of_plain(raw: str) -> str:
    msg = parse(raw)
    part = msg.get_body(("plain",))
    assert part is not None
    return str(part.get_content()).replace("\r\n", "\n")


# -- 2. no answer after the message went out: not sent again --------------------------------------------


class SlowSink(MailSink):
    """An SMTP server that keeps a mail and then takes `delay_s` to say so."""

    delay_s = 0.0

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        reply = await super().handle_DATA(server, session, envelope)
        await asyncio.sleep(self.delay_s)
        return reply


async def test_no_answer_after_the_message_was_sent_dead_letters_it_once(
    kafka: EmbeddedKafka, db_url: str, unique: str
) -> None:
    # 3 quick attempts and 2 rungs: each one sent the mail again (the reviewer saw 3 copies accepted)
    ladder = RetryPolicy(in_place_attempts=3, in_place_wait_s=0.01, schedule_s=(0.3, 0.3), jitter=0.0)
    sink = SlowSink()
    sink.delay_s = 3.0  # the answer to the message; the commands' timeout above a busy loop's stall
    await sink.start()
    values = make_settings(
        kafka, db_url, unique, components=["mail"],
        smtp={
            "host": "127.0.0.1", "port": sink.port, "timeout_s": 1.0, "answer_timeout_s": 1.0,
            "sender": "ketenhub@halt.nl",
        },
    )  # fmt: skip
    hub = Hub(values, registrars={"mail": [mail_component(ladder), register_notify]})
    await hub.start()
    try:
        await add_caseworkers(hub, ILSE, OMAR)
        assert hub.store is not None and hub.relay is not None
        key = youth_key(TEST_SECRET, "111222333")
        async with hub.store.transaction() as session:
            mail = await notify_caseworker(
                session, hub, "cw-ilse", "notice",
                {"subject": "Overdracht wacht", "detail": "Toestemming ontbreekt.", "case_reference": "HO-9"},
                new_id(), key=key, youth_key=key,
            )  # fmt: skip
        assert mail is not None
        hub.relay.wake()
        dead = await read_topic(kafka.bootstrap, hub.topic(NOTIFICATION_MAIL.dlq), expect=1, timeout_s=30)
        assert len(dead) == 1
        headers = headers_of(dead[0])
        assert headers["dlq-exception-class"].endswith("OutcomeUnknown")
        said = headers["dlq-exception-message"]
        assert "did not answer after the message was sent" in said and "may have been delivered" in said
        assert "ilse@halt.nl" not in said and "Toestemming" not in said
        # The sink keeps each copy as it arrives, before its slow answer: every copy sent before the
        # connector gave up is here by the time the letter is dead, and a dead letter is not retried.
        assert len(sink.memory) == 1  # the server got it once
        assert await count_rows(hub, mail_sent) == 0  # not recorded as sent: a replay sends it
        await wait_for(lambda: _problem(hub, UNKNOWN_PROBLEM, mail.notification_id))
        # it may have reached its reader: audited as a possible disclosure, in the youth's trail (rule 18)
        [maybe] = await audit_rows(hub, "mail.possibly_sent")
        assert (maybe.youth_key, maybe.on_behalf_of) == (key, "cw-ilse")
        assert (
            maybe.objects["sent_to"] == "cw-ilse" and maybe.objects["notification_id"] == mail.notification_id
        )
        assert maybe.transaction_id == Envelope.from_bytes(dead[0].value).transaction_id

        sink.delay_s = 0.0  # the operator checked, and replays it
        await replay_dead_letter(kafka, hub, dead[0])
        await wait_for(lambda: len(sink.memory) == 2)
        await wait_for(lambda: count_rows(hub, mail_sent))
        assert [m.message_id for m in sink.memory] == [f"<{mail.notification_id}.ketenhub@halt.nl>"] * 2
    finally:
        await hub.stop()
        await sink.stop()


async def test_a_mail_whose_record_was_not_committed_is_recorded_not_sent_again(store: Store) -> None:
    async with store.transaction() as s:
        await upsert_caseworker(s, _cw("here"))
    mail = MailNotification(
        recipient_caseworker_id="here", for_caseworker_id="here", template="notice", subject="Overdracht",
        body_text="Beste collega,\n\nOverdracht wacht.\n", case_reference="HO-1",
    )  # fmt: skip
    message = _envelope(mail.model_dump(mode="json"))
    async with connector_on_a_sink(store) as (connector, sink):
        await connector.deliver(message)  # the server says 250 ...
        # ... and the transaction that records it fails: the ladder tries the message again later
        await connector.prepare([message])
        await connector.deliver(message)
        await connector.deliver(message)  # and without the round's lookups
        assert len(sink.memory) == 1
        async with store.transaction() as s:
            await connector.on_delivered(s, message)
        [row] = await _rows(store, "mail.sent")
        assert row.objects["sent_to"] == "here"


async def _rows(store: Store, action: str) -> list[Any]:
    async with store.connect() as conn:
        return list((await conn.execute(select(audit_log).where(audit_log.c.action == action))).all())


# -- 3. phone numbers and ids in a match mail -----------------------------------------------------------


async def test_a_match_mail_with_a_phone_and_an_id_that_pass_the_elfproef_is_sent(
    kafka: EmbeddedKafka, db_url: str, unique: str
) -> None:
    phone, match_id = "+31 (0)612345683", "123456782"  # nine digits each that pass the elfproef
    kees = KEES.model_copy(update={"phone": phone})
    async with smtp_sink() as sink:
        hub = await start_mail_hub(kafka, db_url, unique, sink)
        try:
            await add_caseworkers(hub, ILSE, OMAR)
            await signal_with_match(hub, "cw-ilse", youth(523_456_700), match_id=match_id, counterpart=kees)
            await wait_for(lambda: len(sink.memory) == 1)
            text, html = bodies(parse(sink.memory[0].raw))
            assert phone in text and match_id in text and phone in html
        finally:
            await hub.stop()


async def test_the_bsn_check_still_refuses_a_bsn_in_a_match_mails_free_text(store: Store) -> None:
    from pydantic import ValidationError

    async with store.transaction() as s:
        await upsert_caseworker(s, _cw("here"))
    bsn = "111222333"
    context = {
        "match_type": "CLIENTMATCH", "match_id": "123456782", "case_reference": "sig-1",
        "counterparts": [{"name": f"Kees {bsn}", "organisation": "Jeugdhulp", "phone": "+31 (0)612345683"}],
    }  # fmt: skip
    async with store.transaction() as s:
        with pytest.raises(ValidationError, match="looks like a BSN"):
            await notify_caseworker(s, "t.notification.mail.v1", "here", "match", context, new_id())
        notice = {"subject": "Overdracht", "detail": f"Jongere {bsn} wacht.", "case_reference": "123456782"}
        with pytest.raises(ValidationError, match="looks like a BSN"):
            await notify_caseworker(s, "t.notification.mail.v1", "here", "notice", notice, new_id())


async def test_an_id_or_phone_holding_the_youths_own_bsn_is_not_exempt(store: Store) -> None:
    """The exemption trusted what the Verwijsindex sent: a match id equal to the youth's BSN went into
    the mail as a validated id (rule 16)."""
    from datetime import date

    from pydantic import ValidationError
    from sqlalchemy import insert

    from hub.signals.tables import signals

    bsn, key = "111222333", youth_key(TEST_SECRET, "111222333")
    async with store.transaction() as s:
        await upsert_caseworker(s, _cw("here"))
        await s.execute(
            insert(signals).values(
                signal_id="sig-1", youth_key=key, bsn=bsn, given_names="Sam", surname="Jansen",
                birth_date=date(2010, 1, 1), gender="M", municipality="Den Haag", organisation="Halt",
                caseworker_id="here", contact={}, created=date(2025, 1, 1), end_date=date(2026, 1, 1),
                status="ACTIEF", delivery_state="delivered", attempt=0, updated_at=utcnow(),
            )
        )  # fmt: skip
    context = {
        "match_type": "CLIENTMATCH", "match_id": bsn, "case_reference": "sig-1",
        "counterparts": [{"name": "Kees", "organisation": "Jeugdhulp", "phone": f"+31 (0){bsn}"}],
    }  # fmt: skip
    async with store.transaction() as s:
        with pytest.raises(ValidationError, match="looks like a BSN"):
            await notify_caseworker(
                s, "t.notification.mail.v1", "here", "match", context, new_id(), youth_key=key
            )
    other = {**context, "match_id": "123456782"}  # another number passing the elfproef: an id
    other["counterparts"] = [{"name": "Kees", "organisation": "Jeugdhulp", "phone": "+31 (0)612345683"}]
    async with store.transaction() as s:
        mail = await notify_caseworker(
            s, "t.notification.mail.v1", "here", "match", other, new_id(), youth_key=key
        )
    assert mail is not None and "123456782" in mail.body_text


# -- 4. the disclosure's audit entry names the youth -------------------------------------------------------


async def test_mail_sent_names_the_youth_and_the_queue_time_entry_claims_no_disclosure(
    kafka: EmbeddedKafka, db_url: str, unique: str
) -> None:
    young = youth(623_456_700)
    async with smtp_sink() as sink:
        hub = await start_mail_hub(kafka, db_url, unique, sink)
        try:
            await add_caseworkers(hub, ILSE, OMAR)
            _, match_id = await signal_with_match(hub, "cw-ilse", young)
            await wait_for(lambda: len(sink.memory) == 1)
            [sent] = await wait_for(lambda: audit_rows(hub, "mail.sent"))
            assert sent.youth_key == youth_key(TEST_SECRET, young.bsn)
            assert sent.objects["sent_to"] == "cw-ilse" and sent.on_behalf_of == "cw-ilse"
            [queued] = await audit_rows(hub, "verwijsindex.match_disclosed")
            assert queued.objects["match_id"] == match_id and queued.objects["mail"] == "queued"
            assert "disclosed" not in queued.objects
            assert queued.objects["notification_id"] == sent.objects["notification_id"]
        finally:
            await hub.stop()
