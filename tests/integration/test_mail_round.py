"""The mail connector's round lookups (`prepare`) against a real store and SMTP server: the same
outcome as a delivery's own lookups, including a delegate, a mail sent before, and an unknown reader."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import insert, select

from connectors.mail import MailSink
from connectors.mail.component import MailConnector
from connectors.mail.smtp import SmtpMailer
from hub.clock import today
from hub.config import SmtpSettings
from hub.directory import CaseworkerNotFound, upsert_caseworker
from hub.notify.tables import mail_sent
from hub.store import Store
from hub.store.tables import audit_log
from schemas.caseworker import Absence, Caseworker, Team
from schemas.envelope import Envelope, new_id, utcnow
from schemas.notification import MailNotification

pytestmark = pytest.mark.integration


def _cw(cid: str, *, delegate: str | None = None, away: bool = False) -> Caseworker:
    day = today()
    return Caseworker(
        caseworker_id=cid, name=f"Medewerker {cid}", email=f"{cid}@halt.nl", team=Team.DEN_HAAG,
        meldingsbevoegd=True, delegate_id=delegate,
        absences=[Absence(start=day - timedelta(days=1), end=day + timedelta(days=1))] if away else [],
    )  # fmt: skip


def _message(caseworker_id: str) -> tuple[Envelope, MailNotification]:
    mail = MailNotification(
        recipient_caseworker_id=caseworker_id, template="notice", subject="Overdracht wacht",
        body_text="Toestemming ontbreekt.", case_reference="HO-1",
    )  # fmt: skip
    return Envelope.new(
        "MailNotification", mail.model_dump(mode="json"), source="test", transaction_id=new_id()
    ), mail


@pytest.mark.parametrize("prepared", [True, False], ids=["prepared", "one-by-one"])
async def test_a_round_goes_to_each_reader_once_with_or_without_prepare(store: Store, prepared: bool) -> None:
    async with store.transaction() as s:
        for cw in (_cw("away", delegate="stand-in", away=True), _cw("stand-in"), _cw("here")):
            await upsert_caseworker(s, cw)
    to_away, _ = _message("away")
    to_here, _ = _message("here")
    done, done_mail = _message("here")
    unknown, _ = _message("ghost")
    async with store.transaction() as s:  # sent in an earlier life of the hub
        await s.execute(
            insert(mail_sent).values(
                notification_id=done_mail.notification_id, message_id="<x@halt.nl>",
                recipient_caseworker_id="here", sent_at=utcnow(),
            )
        )  # fmt: skip
    sink = MailSink()
    await sink.start()
    settings = SmtpSettings(host="127.0.0.1", port=sink.port, timeout_s=10)
    connector = MailConnector(store, settings, SmtpMailer(settings))
    try:
        if prepared:
            await connector.prepare([to_away, to_here, done, unknown])
        for message in (to_away, to_here, done):
            await connector.deliver(message)
        with pytest.raises(CaseworkerNotFound, match="'ghost'"):
            await connector.deliver(unknown)
        got = sorted(address for mail in sink.memory for address in mail.rcpt_to)
        assert got == ["here@halt.nl", "stand-in@halt.nl"]
        assert connector._ready == {}  # each prepared lookup is used once, not for a retry later

        # rule 18: the audit names whom each mail reached, the delegate for the one away
        async with store.transaction() as s:
            if prepared:
                await connector.on_delivered_many(s, [to_away, to_here])
            else:
                await connector.on_delivered(s, to_away)
                await connector.on_delivered(s, to_here)
        async with store.connect() as conn:
            rows = (await conn.execute(select(audit_log).where(audit_log.c.action == "mail.sent"))).all()
        assert sorted((r.on_behalf_of, r.objects["sent_to"]) for r in rows) == [
            ("away", "stand-in"),
            ("here", "here"),
        ]
        # remembered after the record: a mail whose record was not committed is recorded, not sent again
        assert [sent.reader_id for sent in connector._sent.values()] == ["stand-in", "here"]
    finally:
        await connector.aclose()
        await sink.stop()


async def test_whoever_reads_the_mail_is_decided_on_the_hubs_day(store: Store) -> None:
    # The connector counted days on the system clock while the rest of the hub uses its own clock:
    # with a hub clock set ahead (a test, a replay of a day), a delegate's turn came a day late.
    day = today()
    soon_away = _cw("soon", delegate="stand-in").model_copy(
        update={"absences": [Absence(start=day + timedelta(days=1), end=day + timedelta(days=5))]}
    )
    async with store.transaction() as s:
        for cw in (soon_away, _cw("stand-in")):
            await upsert_caseworker(s, cw)
    sink = MailSink()
    await sink.start()
    settings = SmtpSettings(host="127.0.0.1", port=sink.port, timeout_s=10)
    tomorrow = MailConnector(store, settings, SmtpMailer(settings), today=lambda: day + timedelta(days=1))
    now = MailConnector(store, settings, SmtpMailer(settings))
    try:
        first, _ = _message("soon")
        await now.deliver(first)
        second, _ = _message("soon")
        await tomorrow.deliver(second)
        assert [m.rcpt_to for m in sink.memory] == [["soon@halt.nl"], ["stand-in@halt.nl"]]
    finally:
        await tomorrow.aclose()
        await now.aclose()
        await sink.stop()
