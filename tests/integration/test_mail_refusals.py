"""Review findings on SMTP refusals and cut-short sends, against a real SMTP server (aiosmtpd).

1. A refused login or sender is the hub's own SMTP settings, not the mail's address: the mails wait
   on the retry ladder (none dead-lettered, no "correct the address" problem) and the error names the
   settings to check; they go out once the settings are right. A refused message is not the address.
2. A send cancelled in the middle of the exchange (after DATA) leaves no connection in the pool that
   is out of step with its server: the next mail goes out on a fresh one.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
import structlog
from sqlalchemy import func, select

from connectors.mail import MailSink
from connectors.mail.component import mail_component
from connectors.mail.message import OutgoingMail
from connectors.mail.problems import CONTENT, problem_kind
from connectors.mail.refusals import ContentRefused, OutcomeUnknown
from connectors.mail.smtp import SettingsRefused, SmtpMailer
from hub.config import SmtpSettings
from hub.embedded import EmbeddedKafka
from hub.notify.component import register_notify
from hub.notify.tables import mail_problems
from hub.retry.tables import parked
from hub.runtime import Hub
from hub.topics import NOTIFICATION_MAIL
from tests.conftest import make_settings
from tests.helpers.kafka import read_all, wait_for
from tests.integration.test_mail_delivery import (
    ILSE,
    OMAR,
    PATIENT,
    _parked_at_least,
    add_caseworkers,
    queue_notices,
)

pytestmark = pytest.mark.integration
SENDER = "ketenhub@halt.nl"


# -- 1. the hub's own settings refused: the mails wait ---------------------------------------------------


async def _tried_again_or_given_up(hub: Hub) -> bool:
    """The mail was tried again on the ladder's schedule (a second parked attempt), or a problem was
    recorded for it (dead-lettered)."""
    assert hub.store is not None
    async with hub.store.connect() as conn:
        retried = select(func.count()).where(parked.c.ladder == "mail", parked.c.attempt >= 2)
        problems = select(func.count()).select_from(mail_problems)
        return bool((await conn.execute(retried)).scalar_one() or (await conn.execute(problems)).scalar_one())


@pytest.mark.parametrize("refused", ["login", "sender"])
async def test_a_refused_login_or_sender_keeps_the_mails_waiting_and_names_the_setting(
    kafka: EmbeddedKafka, db_url: str, unique: str, refused: str
) -> None:
    sink = MailSink()
    smtp: dict[str, Any] = {"host": "127.0.0.1", "port": 0, "timeout_s": 10, "sender": SENDER}
    if refused == "login":  # the hub's password is not the server's
        sink.password = "juist-wachtwoord-7"
        smtp |= {"username": "ketenhub", "password": "oud-wachtwoord-3"}
        setting = "KETENHUB_SMTP__PASSWORD"
    else:  # the server does not take mail from the hub's sender address
        sink.refuse_from[SENDER] = f"550 5.7.1 <{SENDER}>: sender not allowed for ilse@halt.nl"
        setting = "KETENHUB_SMTP__SENDER"
    smtp["port"] = await sink.start()
    values = make_settings(kafka, db_url, unique, components=["mail"], smtp=smtp)
    hub = Hub(values, registrars={"mail": [mail_component(PATIENT), register_notify]})
    await hub.start()
    try:
        await add_caseworkers(hub, ILSE, OMAR)
        with structlog.testing.capture_logs() as logs:
            [waiting] = await queue_notices(hub, 1)
            await wait_for(lambda: _tried_again_or_given_up(hub), timeout_s=30)

        assert hub.store is not None
        async with hub.store.connect() as conn:
            problems = [(p.kind, p.reason) for p in (await conn.execute(select(mail_problems))).all()]
            rows = (await conn.execute(select(parked).where(parked.c.ladder == "mail"))).all()
        assert problems == []  # no "correct the caseworker's address", nothing dead-lettered
        assert await read_all(kafka.bootstrap, hub.topic(NOTIFICATION_MAIL.dlq)) == []
        [row] = rows
        assert row.attempt >= 2  # waiting on the ladder, tried again on its schedule
        for said in (row.last_error, hub.components["mail"].status()["last_error"]):
            assert "refused the hub's own settings" in said and setting in said
            assert "ilse@halt.nl" not in said and "Ilse" not in said
        refusals = [e for e in logs if "SMTP settings" in e["event"]]
        assert len(refusals) == 1  # logged once while it lasts, not once per attempt
        assert setting in refusals[0]["error"] and "ilse@halt.nl" not in str(refusals[0])
        assert not sink.memory

        # the settings are put right (here: on the server's side); the waiting mail goes out
        sink.password = smtp.get("password")
        sink.refuse_from.clear()
        await wait_for(lambda: len(sink.memory) == 1, timeout_s=30)
        assert sink.memory[0].message_id == f"<{waiting}.ketenhub@halt.nl>"
        await wait_for(lambda: _parked_at_least(hub.components["mail"].ladder, 0, exactly=True))
        async with hub.store.connect() as conn:
            assert (await conn.execute(select(mail_problems))).all() == []
    finally:
        await hub.stop()
        await sink.stop()


def _mail(to: str = "ilse@halt.nl", n: int = 1) -> OutgoingMail:
    data = (
        f"From: {SENDER}\r\nTo: {to}\r\nSubject: Overdracht {n}\r\n"
        f"Message-ID: <m{n}.ketenhub@halt.nl>\r\n\r\n"
        "Overdracht wacht.\r\n"
    ).encode()
    return OutgoingMail(sender=SENDER, recipients=[to], data=data, message_id=f"<m{n}.ketenhub@halt.nl>")


async def test_a_refused_message_is_not_the_address_and_the_connection_stays() -> None:
    sink = MailSink()
    sink.refuse_data = "554 5.6.0 message refused: content policy (for ilse@halt.nl)"
    port = await sink.start()
    mailer = SmtpMailer(SmtpSettings(host="127.0.0.1", port=port, timeout_s=10, connections=1))
    try:
        with pytest.raises(ContentRefused) as refused:
            await mailer.send(_mail())
        assert problem_kind(refused.value) == CONTENT  # not mail_niet_bezorgd: the address is fine
        assert "554" in str(refused.value) and "ilse@halt.nl" not in str(refused.value)
        sink.refuse_data = None
        await mailer.send(_mail(n=2))
        assert [m.message_id for m in sink.memory] == ["<m2.ketenhub@halt.nl>"]
        assert mailer.connections == 1  # the refusal was reset (RSET), the connection kept
    finally:
        await mailer.aclose()
        await sink.stop()


async def test_the_readiness_check_names_the_refused_setting() -> None:
    """/readyz said "SMTPAuthenticationError: (535, ...)"; it says what to check."""
    sink = MailSink()
    sink.password = "right"
    port = await sink.start()
    settings = SmtpSettings(host="127.0.0.1", port=port, timeout_s=10, username="hub", password="wrong")
    mailer = SmtpMailer(settings)
    try:
        with pytest.raises(SettingsRefused, match="KETENHUB_SMTP__PASSWORD"):
            await mailer.ping()
        sink.password = "wrong"
        await mailer.ping()  # accepted now
    finally:
        await mailer.aclose()
        await sink.stop()


# -- 2. a send cut short: its connection is not used again ----------------------------------------------


class StallingSink(MailSink):
    """An SMTP server that, while `stall` is set, takes a message and waits before answering."""

    def __init__(self) -> None:
        super().__init__()
        self.stall = True
        self.arrived = asyncio.Event()
        self.answer = asyncio.Event()

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        if self.stall:
            self.arrived.set()
            await asyncio.wait_for(self.answer.wait(), 10)
        return await super().handle_DATA(server, session, envelope)


async def test_a_send_cancelled_after_data_drops_its_connection() -> None:
    sink = StallingSink()
    port = await sink.start()
    mailer = SmtpMailer(SmtpSettings(host="127.0.0.1", port=port, timeout_s=10, connections=1))
    try:
        sending = asyncio.create_task(mailer.send(_mail(n=1)))
        await asyncio.wait_for(sink.arrived.wait(), 10)  # the message is written; no answer yet
        sending.cancel()  # the hub stopping, or the delivery's lease cut off
        with pytest.raises(asyncio.CancelledError):
            await sending
        [session] = list(sink._sessions)
        # the hub closed that connection: the server sees it go (aiosmtpd forgets its transport)
        await wait_for(lambda: session.transport is None, timeout_s=5)

        sink.stall = False
        sink.answer.set()  # a late "250" now would have nobody to be taken by
        await asyncio.wait_for(mailer.send(_mail(n=2)), 10)
        assert mailer.connections == 2  # the next mail on a fresh connection
        assert [m.message_id for m in sink.memory] == ["<m2.ketenhub@halt.nl>"]
        assert mailer.sent == 1
    finally:
        await mailer.aclose()
        await sink.stop()


async def test_a_relay_that_scans_a_message_before_it_answers_is_waited_for() -> None:
    """The answer to the message itself had the commands' short timeout (10 s): a relay that scanned
    the mail for longer, and then accepted it, made it an unknown outcome, dead-lettered, and a replay
    sent it twice. That answer now has `answer_timeout_s` (RFC 5321 gives the server 10 minutes)."""
    from tests.integration.test_mail_findings import SlowSink

    sink = SlowSink()
    sink.delay_s = 3.0
    port = await sink.start()
    # the commands' timeout well above what a busy machine's loop can stall for, well below the scan
    quick = {"host": "127.0.0.1", "port": port, "timeout_s": 1.0, "connections": 1}
    patient = SmtpMailer(SmtpSettings(**quick, answer_timeout_s=10))
    hasty = SmtpMailer(SmtpSettings(**quick, answer_timeout_s=1.0))
    try:
        await patient.send(_mail(n=1))  # the commands answer at once; the scan takes 3 s
        assert [m.message_id for m in sink.memory] == ["<m1.ketenhub@halt.nl>"]
        with pytest.raises(OutcomeUnknown, match="answer_timeout_s"):
            await hasty.send(_mail(n=2))
        assert SmtpSettings().answer_timeout_s == 600
    finally:
        await sink.stop()
