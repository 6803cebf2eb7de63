"""Review findings on the mail connector, against the real broker, store and an aiosmtpd server.

1. A dead-lettered mail is the problem that says what to do: an SMTP outage past the retry ladder is
   not "the server refused the address", and nobody to read it at sending is "no reachable recipient".
2. The connector's last error keeps its time, so the console tells an old outage from a current one.
3. Rule 19: the mail carries its transaction id, the one `mail.sent` records, and no personal data.
"""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import select

from connectors.mail.message import NOTIFICATION_HEADER, TRANSACTION_HEADER
from hub.clock import today
from hub.directory import upsert_caseworker
from hub.embedded import EmbeddedKafka
from hub.errors import TransientError
from hub.notify.service import NO_RECIPIENT, notify_caseworker
from hub.notify.tables import mail_problems
from hub.retry import RetryPolicy
from hub.runtime import Hub
from hub.store import Store
from hub.topics import NOTIFICATION_MAIL
from schemas.caseworker import Absence
from schemas.envelope import Envelope, utcnow
from schemas.notification import MailNotification
from tests.helpers.kafka import headers_of, read_topic, wait_for
from tests.integration.test_mail_delivery import (
    ILSE,
    OMAR,
    PATIENT,
    _failed_at_least,
    add_caseworkers,
    parse,
    queue_notices,
    smtp_sink,
    start_mail_hub,
)
from tests.integration.test_mail_findings import (
    _envelope,
    audit_rows,
    connector_on_a_sink,
    replay_dead_letter,
)

pytestmark = pytest.mark.integration
OUTAGE = "mail_niet_verstuurd_storing"
# Two quick attempts and two rungs: an outage longer than that dead-letters the mail.
SHORT = RetryPolicy(in_place_attempts=2, in_place_wait_s=0.01, schedule_s=(0.2, 0.2), jitter=0.0)
AWAY = [Absence(start=today() - timedelta(days=2), end=today() + timedelta(days=5))]


async def problems(hub: Hub) -> list[Any]:
    assert hub.store is not None
    return await _problems(hub.store)


async def test_an_smtp_outage_past_the_ladder_is_an_outage_and_the_last_error_keeps_its_time(
    kafka: EmbeddedKafka, db_url: str, unique: str
) -> None:
    # Seen: SMTP down longer than the ladder became ('mail_niet_bezorgd', 'mail niet bezorgd: SMTP
    # server unreachable (SMTPConnectError)'), and the console told the operator to correct the address.
    async with smtp_sink() as sink:
        hub = await start_mail_hub(kafka, db_url, unique, sink, policy=SHORT)
        try:
            await add_caseworkers(hub, ILSE, OMAR)
            mail = hub.components["mail"]
            await sink.stop()  # SMTP down, longer than the ladder lasts
            [lost] = await queue_notices(hub, 1)
            dead = await read_topic(kafka.bootstrap, hub.topic(NOTIFICATION_MAIL.dlq), expect=1, timeout_s=30)
            assert Envelope.from_bytes(dead[0].value).payload["notification_id"] == lost
            assert "unreachable" in headers_of(dead[0])["dlq-exception-message"]

            async def recorded() -> list[Any]:
                return [p for p in await problems(hub) if p.reference == lost]

            [problem] = await wait_for(recorded)
            assert problem.kind == OUTAGE and problem.caseworker_id == "cw-ilse"
            assert "SMTP server unreachable" in problem.reason and "niet bezorgd" not in problem.reason

            down = mail.status()
            assert "SMTP server unreachable" in down["last_error"] and down["last_success"] is None
            failed_at = datetime.fromisoformat(down["last_error_at"])
            assert failed_at.utcoffset() == timedelta(0)  # aware, UTC

            await sink.start()  # back; the operator replays the dead letter, as the console says
            await replay_dead_letter(kafka, hub, dead[0])
            await wait_for(lambda: len(sink.memory) == 1, timeout_s=30)
            assert sink.memory[0].message_id == f"<{lost}.ketenhub@halt.nl>"
            await wait_for(lambda: mail.last_success is not None)
            up = mail.status()
            # the outage's error stays, with its time, older than the success after it
            assert up["last_error"] == down["last_error"] and up["last_error_at"] == down["last_error_at"]
            assert datetime.fromisoformat(up["last_success"]) > failed_at
            assert [p.kind for p in await problems(hub)] == [OUTAGE]
        finally:
            await hub.stop()


async def test_the_connectors_last_error_has_its_time_and_stays_after_a_success(store: Store) -> None:
    # The console showed an outage's error after SMTP came back and mails went out, with no time.
    async with store.transaction() as s:
        await upsert_caseworker(s, ILSE)
    notices = [
        _envelope(
            MailNotification(
                recipient_caseworker_id="cw-ilse", for_caseworker_id="cw-ilse", template="notice",
                subject="Overdracht", body_text="Beste collega,\n\nOverdracht wacht.\n", case_reference=ref,
            ).model_dump(mode="json")
        )
        for ref in ("HO-1", "HO-2")
    ]  # fmt: skip
    async with connector_on_a_sink(store) as (connector, sink):
        assert connector.status()["last_error_at"] is None
        await sink.stop()
        before = utcnow()
        with pytest.raises(TransientError):
            await connector.deliver(notices[0])
        down = connector.status()
        assert "SMTP server unreachable" in down["last_error"]
        failed_at = datetime.fromisoformat(down["last_error_at"])
        assert failed_at.utcoffset() == timedelta(0) and before <= failed_at <= utcnow()
        async with store.transaction() as s:  # past the ladder's last rung: what it is, for the console
            await connector.on_dead(s, notices[0], down["last_error"])
        assert [(p.kind, p.reference) for p in await _problems(store)] == [
            (OUTAGE, notices[0].payload["notification_id"])
        ]

        await sink.start(sink.port)
        await connector.deliver(notices[1])
        up = connector.status()
        assert (up["last_error"], up["last_error_at"]) == (down["last_error"], down["last_error_at"])
        assert datetime.fromisoformat(up["last_success"]) > failed_at


async def _problems(store: Store) -> list[Any]:
    async with store.connect() as conn:
        return list((await conn.execute(select(mail_problems).order_by(mail_problems.c.id))).all())


async def test_nobody_to_read_the_mail_when_it_is_sent_is_no_reachable_recipient(
    kafka: EmbeddedKafka, db_url: str, unique: str
) -> None:
    async with smtp_sink() as sink:
        hub = await start_mail_hub(kafka, db_url, unique, sink, policy=PATIENT)
        try:
            await add_caseworkers(hub, ILSE, OMAR)
            await sink.stop()  # the mail waits on the ladder
            [waiting] = await queue_notices(hub, 1)
            await wait_for(lambda: _failed_at_least(hub, 1))
            # meanwhile Ilse went away, and Omar, her delegate, too, without a delegate of his own
            await add_caseworkers(
                hub, ILSE.model_copy(update={"absences": AWAY}), OMAR.model_copy(update={"absences": AWAY})
            )

            async def recorded() -> list[Any]:
                return [p for p in await problems(hub) if p.reference == waiting]

            [problem] = await wait_for(recorded, timeout_s=30)
            assert (problem.kind, problem.caseworker_id) == (NO_RECIPIENT, "cw-ilse")
            assert problem.reason == (
                "geen mail verstuurd (notice): caseworker 'cw-ilse' is away and has no reachable delegate"
            )
            dead = await read_topic(kafka.bootstrap, hub.topic(NOTIFICATION_MAIL.dlq), expect=1)
            assert headers_of(dead[0])["dlq-exception-class"].endswith("NoReachableRecipient")
            assert Envelope.from_bytes(dead[0].value).payload["notification_id"] == waiting
            assert not sink.memory
        finally:
            await hub.stop()


async def test_the_mail_carries_its_transaction_id_and_no_personal_data_in_it(
    kafka: EmbeddedKafka, db_url: str, unique: str
) -> None:
    # Rule 19: every message carries a transaction id the audit log records; the SMTP message had none.
    hub_made = str(uuid.uuid4())
    partner_made = "zaak-123456782-Jan.de.Vries"  # a partner's free-form id: a BSN and a name in it
    async with smtp_sink() as sink:
        hub = await start_mail_hub(kafka, db_url, unique, sink)
        try:
            await add_caseworkers(hub, ILSE, OMAR)
            assert hub.store is not None and hub.relay is not None
            sent: dict[str, str] = {}
            for n, transaction_id in enumerate((hub_made, partner_made)):
                async with hub.store.transaction() as session:
                    mail = await notify_caseworker(
                        session, hub, "cw-ilse", "notice",
                        {"subject": "Overdracht wacht", "detail": "Toestemming ontbreekt.",
                         "case_reference": f"HO-{n}"},
                        transaction_id,
                    )  # fmt: skip
                assert mail is not None
                sent[mail.notification_id] = transaction_id
            hub.relay.wake()
            await wait_for(lambda: len(sink.memory) == 2, timeout_s=30)

            rows = await wait_for(lambda: _two(audit_rows(hub, "mail.sent")))
            audited = {row.objects["notification_id"]: row.transaction_id for row in rows}
            assert audited == sent  # what mail.sent records
            # and the id the mail carries instead of a partner's text, so the mail is found by it
            in_mail = {
                row.objects["notification_id"]: row.objects.get("transaction_id_in_mail") for row in rows
            }
            carried = {}
            for received in sink.memory:
                msg = parse(received.raw)
                carried[msg[NOTIFICATION_HEADER]] = msg[TRANSACTION_HEADER]
                for name in (NOTIFICATION_HEADER, TRANSACTION_HEADER):
                    uuid.UUID(msg[name])  # ids only: no name, no address, no number of a youth
            by_id = {transaction_id: notification_id for notification_id, transaction_id in sent.items()}
            assert carried[by_id[hub_made]] == hub_made  # the audit log's transaction id, as it is
            # the partner's text is not passed on; the UUID the hub derives from it is, always the same
            derived = carried[by_id[partner_made]]
            assert derived == str(uuid.uuid5(uuid.NAMESPACE_URL, f"ketenhub:transaction:{partner_made}"))
            assert in_mail == {by_id[partner_made]: derived, by_id[hub_made]: None}
            assert all("123456782" not in m.raw and "Vries" not in m.raw for m in sink.memory)
        finally:
            await hub.stop()


async def _two(rows: Any) -> list[Any]:
    found = await rows
    return found if len(found) == 2 else []
