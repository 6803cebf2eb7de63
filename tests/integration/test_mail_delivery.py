"""The mail connector against a real SMTP server (aiosmtpd): MIME, once per notification, 4xx/5xx."""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from typing import Any

import pytest
from sqlalchemy import func, select

from connectors.mail import MailSink
from connectors.mail.component import mail_component
from hub.directory import upsert_caseworker
from hub.embedded import EmbeddedKafka
from hub.notify.component import register_notify
from hub.notify.service import notify_caseworker
from hub.notify.tables import mail_problems, mail_sent
from hub.retry import RetryPolicy
from hub.retry.tables import parked
from hub.runtime import Hub
from hub.spine.dlq import DLQ_HEADERS
from hub.topics import NOTIFICATION_MAIL
from schemas.caseworker import Caseworker, Team
from schemas.envelope import Envelope
from tests.conftest import make_settings
from tests.helpers.kafka import headers_of, produce, read_topic, wait_for

pytestmark = pytest.mark.integration
FAST = RetryPolicy(in_place_attempts=2, in_place_wait_s=0.01, schedule_s=(0.3,) * 30, jitter=0.0)
# For tests that end an outage or a 4xx only after a few waits: the ladder must outlast those waits on
# a slow machine, and its length is not what they check.
PATIENT = RetryPolicy(in_place_attempts=2, in_place_wait_s=0.01, schedule_s=(0.3,) * 200, jitter=0.0)

ILSE = Caseworker(
    caseworker_id="cw-ilse", name="Ilse Bakker", email="ilse@halt.nl", phone="070 123 4567",
    team=Team.DEN_HAAG, meldingsbevoegd=True, delegate_id="cw-omar",
)  # fmt: skip
OMAR = Caseworker(
    caseworker_id="cw-omar", name="Omar Haddou", email="omar@halt.nl", team=Team.LEIDEN, meldingsbevoegd=True
)


@asynccontextmanager
async def smtp_sink() -> AsyncIterator[MailSink]:
    """A real SMTP server on a free loopback port, keeping mails in memory."""
    sink = MailSink()
    await sink.start()
    try:
        yield sink
    finally:
        await sink.stop()


async def start_mail_hub(
    kafka: EmbeddedKafka,
    db_url: str,
    unique: str,
    sink: MailSink,
    *extra: Any,
    policy: RetryPolicy = FAST,
    **settings: Any,
) -> Hub:
    """A hub running the mail component (connector + notifier) against `sink`, retrying per `policy`."""
    values = make_settings(
        kafka,
        db_url,
        unique,
        components=["mail"],
        smtp={"host": "127.0.0.1", "port": sink.port, "timeout_s": 10, "sender": "ketenhub@halt.nl"},
        **settings,
    )
    hub = Hub(values, registrars={"mail": [mail_component(policy), register_notify, *extra]})
    await hub.start()
    return hub


async def add_caseworkers(hub: Hub, *people: Caseworker) -> None:
    assert hub.store is not None
    async with hub.store.transaction() as session:
        for cw in people:
            await upsert_caseworker(session, cw)


def parse(raw: str) -> EmailMessage:
    """Parse as a mail client would; the result is an EmailMessage (policy.default)."""
    msg = BytesParser(policy=policy.default).parsebytes(raw.encode())
    assert isinstance(msg, EmailMessage)
    return msg


def bodies(msg: EmailMessage) -> tuple[str, str]:
    """The text/plain and text/html parts of a multipart/alternative mail."""
    assert msg.get_content_type() == "multipart/alternative"
    assert not msg.defects
    text = msg.get_body(("plain",))
    html = msg.get_body(("html",))
    assert text is not None and html is not None
    return text.get_content(), html.get_content()


async def queue_notices(hub: Hub, count: int, caseworker: str = "cw-ilse") -> list[str]:
    """Queue `count` generic notices through notify_caseworker; return their notification ids."""
    assert hub.store is not None and hub.relay is not None
    ids = []
    async with hub.store.transaction() as session:
        for n in range(count):
            mail = await notify_caseworker(
                session, hub, caseworker, "notice",
                {"subject": f"Overdracht wacht op toestemming ({n})", "detail": "Toestemming ontbreekt.",
                 "case_reference": f"HO-{n}"},
                str(uuid.uuid4()), case_reference=f"HO-{n}",
            )  # fmt: skip
            assert mail is not None
            ids.append(mail.notification_id)
    hub.relay.wake()
    return ids


async def count_rows(hub: Hub, table: Any) -> int:
    assert hub.store is not None
    async with hub.store.connect() as conn:
        return int((await conn.execute(select(func.count()).select_from(table))).scalar_one())


async def test_smtp_down_then_up_delivers_each_notification_exactly_once(
    kafka: EmbeddedKafka, db_url: str, unique: str
) -> None:
    async with smtp_sink() as sink:
        hub = await start_mail_hub(kafka, db_url, unique, sink, policy=PATIENT)
        try:
            await add_caseworkers(hub, ILSE, OMAR)
            first = await queue_notices(hub, 2)
            await wait_for(lambda: len(sink.memory) == 2)
            assert hub.components["mail"].mailer.connections == 1  # one connection, reused
            await sink.stop()  # SMTP down: the reused connection is dropped, new ones are refused
            later = await queue_notices(hub, 5)
            ladder = hub.components["mail"].ladder
            await wait_for(lambda: _parked_at_least(ladder, 5))
            # Every message is queued on the ladder first: the outage is exercised once one of them
            # was tried, refused and parked for a later attempt.
            await wait_for(lambda: _failed_at_least(hub, 1))
            await sink.start()  # up again, same port
            await wait_for(lambda: len(sink.memory) >= 7, timeout_s=30)
            await wait_for(lambda: _parked_at_least(ladder, 0, exactly=True))

            ids = Counter(m.message_id for m in sink.memory)
            assert len(ids) == 7 and set(ids.values()) == {1}  # each Message-ID once
            for notification_id in first + later:
                assert f"<{notification_id}.ketenhub@halt.nl>" in ids
            assert all(m.rcpt_to == ["ilse@halt.nl"] for m in sink.memory)
            assert await count_rows(hub, mail_sent) == 7

            # A replay of an already-sent notification (e.g. from the DLQ, under a new message id)
            # is recognised by its notification id and not sent again.
            raw = (await read_topic(kafka.bootstrap, hub.topic(NOTIFICATION_MAIL.name), expect=7))[0]
            again = Envelope(
                **(Envelope.from_bytes(raw.value).model_dump() | {"message_id": str(uuid.uuid4())})
            )
            await produce(
                kafka.bootstrap,
                hub.topic(NOTIFICATION_MAIL.name),
                [(raw.key, again.to_bytes(), again.headers())],
            )
            await wait_for(lambda: _consumed(hub, 8))
            await asyncio.sleep(0.3)  # a mail sent again would have arrived by now
            assert len(sink.memory) == 7
        finally:
            await hub.stop()


async def _failed_at_least(hub: Hub, n: int) -> bool:
    """At least `n` mails wait on the ladder after a failed attempt."""
    assert hub.store is not None
    async with hub.store.connect() as conn:
        query = select(func.count()).where(parked.c.ladder == "mail", parked.c.attempt >= 1)
        return int((await conn.execute(query)).scalar_one()) >= n


async def _parked_at_least(ladder: Any, n: int, *, exactly: bool = False) -> bool:
    count = await ladder.parked_count()
    return count == n if exactly else count >= n


async def _consumed(hub: Hub, n: int) -> bool:
    from hub.store.tables import inbox

    assert hub.store is not None
    async with hub.store.connect() as conn:
        q = select(func.count()).select_from(inbox).where(inbox.c.consumer == hub.group("mail"))
        return int((await conn.execute(q)).scalar_one()) >= n


async def test_5xx_goes_to_the_dlq_with_headers_and_4xx_is_retried(
    kafka: EmbeddedKafka, db_url: str, unique: str
) -> None:
    async with smtp_sink() as sink:
        sink.refuse["omar@halt.nl"] = "550 5.1.1 mailbox unavailable"
        sink.refuse["ilse@halt.nl"] = "451 4.3.0 try again later"
        hub = await start_mail_hub(kafka, db_url, unique, sink, policy=PATIENT)
        try:
            await add_caseworkers(hub, ILSE, OMAR)
            [refused] = await queue_notices(hub, 1, caseworker="cw-omar")
            [delayed] = await queue_notices(hub, 1, caseworker="cw-ilse")
            dead = await read_topic(kafka.bootstrap, hub.topic(NOTIFICATION_MAIL.dlq), expect=1)
            assert len(dead) == 1
            headers = headers_of(dead[0])
            assert set(DLQ_HEADERS) <= set(headers)
            assert headers["dlq-exception-class"].endswith("PermanentError")
            assert "550" in headers["dlq-exception-message"]
            assert "omar@halt.nl" not in headers["dlq-exception-message"]
            assert Envelope.from_bytes(dead[0].value).payload["notification_id"] == refused
            await wait_for(lambda: _problem(hub, "mail_niet_bezorgd", refused))

            await wait_for(lambda: _parked_at_least(hub.components["mail"].ladder, 1))
            assert sink.memory == deque_empty()
            del sink.refuse["ilse@halt.nl"]  # the 4xx was temporary
            await wait_for(lambda: len(sink.memory) == 1, timeout_s=15)
            assert sink.memory[0].message_id == f"<{delayed}.ketenhub@halt.nl>"
        finally:
            await hub.stop()


def deque_empty() -> Any:
    from collections import deque

    return deque()


async def _problem(hub: Hub, kind: str, reference: str) -> bool:
    assert hub.store is not None
    async with hub.store.connect() as conn:
        rows = (await conn.execute(select(mail_problems))).all()
    return any(r.kind == kind and r.reference == reference for r in rows)
