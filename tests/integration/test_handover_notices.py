"""Notices about a warm handover to the caseworker who asked for it, through the one door for mail."""

from __future__ import annotations

import uuid
from datetime import timedelta
from types import SimpleNamespace

import pytest
from sqlalchemy import select

from hub.clock import today
from hub.embedded import EmbeddedKafka
from hub.handovers import messages
from hub.store.tables import audit_log, outbox
from hub.topics import NOTIFICATION_MAIL
from schemas.caseworker import Absence
from tests.helpers.kafka import wait_for
from tests.integration.test_mail_delivery import (
    ILSE,
    OMAR,
    _problem,
    add_caseworkers,
    bodies,
    parse,
    smtp_sink,
    start_mail_hub,
)

pytestmark = pytest.mark.integration
AWAY = [Absence(start=today() - timedelta(days=2), end=today() + timedelta(days=5))]


def _handover(caseworker: str) -> SimpleNamespace:
    return SimpleNamespace(
        id=str(uuid.uuid4()),
        referral_id=str(uuid.uuid4()),
        receiver_organisation="verslavingszorg-dh",
        from_caseworker=caseworker,
        youth_key="a" * 64,
    )


async def test_a_handover_notice_reaches_the_delegate_saying_for_whom_and_is_audited(
    kafka: EmbeddedKafka, db_url: str, unique: str
) -> None:
    """Handover notices were queued past notify_caseworker: a delegate got them as plain text without
    the line saying for whom, the queueing was not audited, and with nobody to read them they were
    dead-lettered when sent, as if an address were wrong."""
    async with smtp_sink() as sink:
        hub = await start_mail_hub(kafka, db_url, unique, sink)
        try:
            lone = OMAR.model_copy(
                update={"caseworker_id": "cw-lone", "email": "lone@halt.nl", "absences": AWAY}
            )
            await add_caseworkers(hub, ILSE.model_copy(update={"absences": AWAY}), OMAR, lone)
            row, nobody = _handover("cw-ilse"), _handover("cw-lone")
            assert hub.store is not None and hub.relay is not None
            topic = hub.topic(NOTIFICATION_MAIL.name)
            async with hub.store.transaction() as session:
                for handover in (row, nobody):
                    await messages.tell_requester(
                        session,
                        topic,
                        handover,
                        template="handover.waiting",
                        transaction_id=str(uuid.uuid4()),
                        detail="er is (nog) geen toestemming die haar dekt (ANDERE_ONTVANGER).",
                    )
            hub.relay.wake()
            await wait_for(lambda: len(sink.memory) == 1)
            assert sink.memory[0].rcpt_to == ["omar@halt.nl"]
            text, html = bodies(parse(sink.memory[0].raw))
            for body in (text, html):
                assert "als vervanger van Ilse Bakker" in body and row.id in body
            # nobody reads cw-lone's mail: told as a problem now, nothing queued for them
            assert await _problem(hub, "geen_bereikbare_ontvanger", nobody.referral_id)
            async with hub.store.connect() as conn:
                actions = [a for (a,) in (await conn.execute(select(audit_log.c.action))).all()]
                queued = [bytes(v) for (v,) in (await conn.execute(select(outbox.c.value))).all()]
            assert actions.count("mail.handover.waiting.queued") == 1
            assert actions.count("mail.undeliverable") == 1
            assert not any(nobody.id.encode() in v for v in queued)
        finally:
            await hub.stop()
