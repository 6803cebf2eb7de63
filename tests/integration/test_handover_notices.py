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
from hub.notify.tables import mail_problems
from hub.store.tables import audit_log
from hub.topics import NOTIFICATION_MAIL
from schemas.caseworker import Absence
from schemas.envelope import Envelope
from tests.helpers.kafka import read_topic, wait_for
from tests.integration.test_mail_delivery import (
    ILSE,
    OMAR,
    add_caseworkers,
    bodies,
    parse,
    smtp_sink,
    start_mail_hub,
)
from tests.integration.test_mail_findings import replay_dead_letter

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
    dead-lettered as if an address were wrong. With nobody to read it, it is still queued: it exists
    nowhere else, and its dead letter is what is replayed once the directory is fixed."""
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
            # nobody reads cw-lone's mail: the notice exists nowhere else, so it is queued all the
            # same, dead-lettered when sent (a problem saying so), and replayed once they are back
            dead = await read_topic(kafka.bootstrap, hub.topic(NOTIFICATION_MAIL.dlq), expect=1, timeout_s=30)
            payload = Envelope.from_bytes(dead[0].value).payload
            assert nobody.id in payload["body_text"]
            # a field added since the release before is left out where it is empty: a mail connector
            # of that release, running beside this one during an upgrade, refuses fields it does not know
            assert "match_id" not in payload

            async def told() -> bool:
                async with hub.store.connect() as conn:  # type: ignore[union-attr]
                    rows = (await conn.execute(select(mail_problems))).all()
                return [(r.kind, r.caseworker_id) for r in rows] == [("geen_bereikbare_ontvanger", "cw-lone")]

            await wait_for(told)
            async with hub.store.connect() as conn:
                actions = [a for (a,) in (await conn.execute(select(audit_log.c.action))).all()]
            assert actions.count("mail.handover.waiting.queued") == 2  # both, the second for nobody yet
            await add_caseworkers(hub, lone.model_copy(update={"absences": []}))  # back
            await replay_dead_letter(kafka, hub, dead[0])
            await wait_for(lambda: len(sink.memory) == 2, timeout_s=30)
            assert sink.memory[1].rcpt_to == ["lone@halt.nl"]
        finally:
            await hub.stop()
