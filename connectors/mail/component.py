"""The mail component: MailNotifications on `notification.mail.v1` out over SMTP, once each.

Once per notification: the id of every mail the SMTP server accepted is stored in `mail_sent` in
the same transaction as the consumer's inbox entry (or the retry ladder's un-parking), and checked
before sending, so redeliveries, restarts and DLQ replays never send it again. The one window left
is a crash after the server said "250" and before that commit: the mail is then sent a second time,
with the same Message-ID (derived from the notification id), which mail systems use to drop the
repeat. It cannot be closed from our side: SMTP has no idempotency key.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from datetime import date, datetime
from typing import Any

from pydantic import ValidationError
from sqlalchemy import insert, select
from sqlalchemy.ext.asyncio import AsyncSession

from connectors.mail.message import build_message, message_id_for
from connectors.mail.sink import MailSink
from connectors.mail.smtp import SmtpMailer
from hub.audit import AuditEntry, audit_row, write_audit, write_audits
from hub.clock import today
from hub.config import SmtpSettings
from hub.directory import mail_recipient, mail_recipients
from hub.errors import PermanentError
from hub.logging import get_logger
from hub.notify.service import record_problem
from hub.notify.tables import mail_sent
from hub.retry import Delivery, RetryLadder, RetryPolicy, deliver_through, ladder_on
from hub.runtime import Hub
from hub.store import Store
from hub.topics import NOTIFICATION_MAIL
from schemas._base import as_code
from schemas.caseworker import Caseworker
from schemas.envelope import Envelope, utcnow
from schemas.notification import MailNotification

log = get_logger(__name__)
_NOT_LOOKED_UP: Any = object()
_SENT_TO_MAX = 10_000  # sends waiting for their record, at most
NAME = "mail"
SYSTEM = "mail-connector"


def _notification(message: Envelope) -> MailNotification:
    try:
        return MailNotification.model_validate(message.payload)
    except ValidationError as exc:
        raise PermanentError(f"not a MailNotification: {exc.error_count()} error(s)") from None


class MailConnector:
    """Sends notifications (hub.components["mail"]): ping for /readyz, status for the console."""

    def __init__(
        self,
        store: Store,
        settings: SmtpSettings,
        mailer: SmtpMailer,
        sink: MailSink | None = None,
        *,
        today: Callable[[], date] = today,
    ) -> None:
        self.store, self.settings, self.mailer, self.sink = store, settings, mailer, sink
        self.today = today  # the day whose absences decide who reads a caseworker's mail (the hub's)
        self.ladder: RetryLadder | None = None
        self.last_success: datetime | None = None
        self.last_error: str | None = None
        self._ready: dict[str, Caseworker | None] = {}  # notification id -> reader, None when sent
        # notification id -> who it was sent to, for the audit entry written once the send is recorded
        self._sent_to: dict[str, str] = {}

    async def prepare(self, messages: Sequence[Envelope]) -> None:
        """For a round of sends: which were sent already, and who reads each caseworker's mail today,
        in a few statements instead of a few per mail."""
        mails = []
        for message in messages:
            with contextlib.suppress(PermanentError):  # deliver dead-letters it, with the reason
                mails.append(_notification(message))
        self._ready.clear()
        if not mails:
            return
        async with self.store.read() as session:
            ids = [mail.notification_id for mail in mails]
            q = select(mail_sent.c.notification_id).where(mail_sent.c.notification_id.in_(ids))
            sent = set((await session.execute(q)).scalars())
            readers = await mail_recipients(
                session, {mail.recipient_caseworker_id for mail in mails}, self.today()
            )
        for mail in mails:
            reader = readers[mail.recipient_caseworker_id]
            if mail.notification_id in sent:
                self._ready[mail.notification_id] = None
            elif isinstance(reader, Caseworker):  # an error is found again, and raised, by deliver
                self._ready[mail.notification_id] = reader

    async def deliver(self, message: Envelope) -> None:
        """Send one notification to whoever reads the caseworker's mail today (rule 16)."""
        mail = _notification(message)
        # what `prepare` found for this round, used once: a retry in place looks again
        ready = self._ready.pop(mail.notification_id, _NOT_LOOKED_UP)
        if ready is _NOT_LOOKED_UP:
            async with self.store.read() as session:  # the consumer's transaction holds the write lock
                sent = await _was_sent(session, mail.notification_id)
                recipient = (
                    None
                    if sent
                    else await mail_recipient(session, mail.recipient_caseworker_id, self.today())
                )
        else:
            recipient = ready
        if recipient is None:
            log.info("mail already sent; not sending again", notification_id=mail.notification_id)
            return
        msg = build_message(
            mail, to_addr=recipient.email, to_name=recipient.name, sender=self.settings.sender, now=utcnow()
        )
        await self.mailer.send(msg)
        self.last_success = utcnow()
        if len(self._sent_to) >= _SENT_TO_MAX:  # entries whose recording failed: their mail goes again
            self._sent_to.clear()
        self._sent_to[mail.notification_id] = recipient.caseworker_id

    def _audit_objects(self, mail: MailNotification) -> dict[str, Any]:
        """What the mail.sent entry says: the mail, and who it reached (rule 18). The mail is addressed
        to a caseworker; who reads their mail is decided when it is sent (a delegate while they are
        away), which may be days after it was queued."""
        objects: dict[str, Any] = {
            "notification_id": mail.notification_id,
            "template": mail.template,
            "case_reference": mail.case_reference,
        }
        if (reader := self._sent_to.pop(mail.notification_id, None)) is not None:
            objects["sent_to"] = reader
        return objects

    async def on_delivered(self, session: AsyncSession, message: Envelope) -> None:
        """Remember the notification as sent, in the consumer's (or un-parking's) transaction."""
        mail = _notification(message)
        if await _was_sent(session, mail.notification_id):
            return
        await session.execute(
            insert(mail_sent).values(
                notification_id=mail.notification_id,
                message_id=message_id_for(mail.notification_id, self.settings.sender),
                recipient_caseworker_id=mail.recipient_caseworker_id,
                sent_at=utcnow(),
            )
        )
        entry = AuditEntry(
            action="mail.sent",
            user=SYSTEM,
            on_behalf_of=mail.recipient_caseworker_id,
            objects=self._audit_objects(mail),
        )
        await write_audit(session, entry, transaction_id=message.transaction_id, system=SYSTEM)

    async def on_delivered_many(self, session: AsyncSession, messages: Sequence[Envelope]) -> None:
        """`on_delivered` for a round of sends: one lookup and two inserts."""
        mails = [(message, _notification(message)) for message in messages]
        ids = [mail.notification_id for _, mail in mails]
        q = select(mail_sent.c.notification_id).where(mail_sent.c.notification_id.in_(ids))
        known = set((await session.execute(q)).scalars())
        now, sent, audit = utcnow(), [], []
        for message, mail in mails:
            if mail.notification_id in known:
                continue
            known.add(mail.notification_id)
            sent.append(
                {
                    "notification_id": mail.notification_id,
                    "message_id": message_id_for(mail.notification_id, self.settings.sender),
                    "recipient_caseworker_id": mail.recipient_caseworker_id,
                    "sent_at": now,
                }
            )
            objects = self._audit_objects(mail)
            audit.append(
                audit_row(
                    "mail.sent",
                    SYSTEM,
                    at=now,
                    system=SYSTEM,
                    transaction_id=message.transaction_id,
                    on_behalf_of=mail.recipient_caseworker_id,
                    objects=objects,
                )
            )
        if sent:
            await session.execute(insert(mail_sent), sent)
            await write_audits(session, audit)  # rule 18, as write_audit does one by one

    async def on_parked(self, session: AsyncSession, message: Envelope, *args: Any) -> None:
        """Keep the last error for the console."""
        self.last_error = args[-1] if args else None

    async def on_dead(self, session: AsyncSession, message: Envelope, error: str) -> None:
        """A mail that will not go out is a problem an administrator sees."""
        self.last_error = error
        payload = message.payload  # it may have failed validation: only what could be a Code is used
        await record_problem(
            session,
            kind="mail_niet_bezorgd",
            caseworker_id=as_code(payload.get("recipient_caseworker_id")),
            reference=as_code(payload.get("notification_id")) or message.message_id,
            reason=f"mail niet bezorgd: {error}",
            transaction_id=message.transaction_id,
        )

    async def ping(self) -> None:
        """The SMTP server answers (readiness)."""
        await self.mailer.ping()

    def status(self) -> dict[str, Any]:
        """Last success, last error, where mail goes (console)."""
        where = f"embedded sink 127.0.0.1:{self.sink.port}" if self.sink else f"{self.settings.host}"
        return {
            "target": where,
            "sent": self.mailer.sent,
            "lastSuccess": self.last_success.isoformat() if self.last_success else None,
            "lastError": self.last_error,
        }

    async def aclose(self) -> None:
        """Close the SMTP connection (the sink stops with its background task)."""
        await self.mailer.aclose()


async def _was_sent(session: AsyncSession, notification_id: str) -> bool:
    q = select(mail_sent.c.notification_id).where(mail_sent.c.notification_id == notification_id)
    return (await session.execute(q)).first() is not None


def mail_component(policy: RetryPolicy | None = None):  # type: ignore[no-untyped-def]
    """A registrar; `policy` overrides the schedule from settings (`smtp.retry_schedule_s`)."""

    def register(hub: Hub) -> None:
        assert hub.spine is not None and hub.store is not None
        smtp = hub.settings.smtp
        sink = None
        if smtp.host is None:  # the embedded default: a local SMTP sink the hub really talks SMTP to
            sink = MailSink(hub.store, keep=hub.settings.notify.sink_keep)
            hub.background["mail-sink"] = sink.run
        mailer = SmtpMailer(smtp, sink.endpoint if sink else None)
        connector = MailConnector(hub.store, smtp, mailer, sink, today=hub.today)
        hub.components[NAME] = connector
        ladder = ladder_on(
            hub,
            NOTIFICATION_MAIL,
            name=NAME,
            group=NAME,
            partner="smtp",
            delivery=Delivery(
                deliver=connector.deliver,
                on_delivered=connector.on_delivered,
                on_delivered_many=connector.on_delivered_many,
                prepare=connector.prepare,
                on_parked=connector.on_parked,
                on_dead=connector.on_dead,
            ),
            policy=policy or RetryPolicy(schedule_s=smtp.retry_schedule_s),
        )
        connector.ladder = ladder
        deliver_through(
            hub,
            NOTIFICATION_MAIL,
            ladder,
            doc="Send a caseworker's mail over SMTP through the retry ladder, once per notification.",
        )

    return register


register_mail = mail_component()


def banner_lines(hub: object) -> list[str]:
    """For `ketenhub run`'s banner: where mail goes, and how to see the embedded sink's mails."""
    connector = getattr(hub, "components", {}).get(NAME)
    if not isinstance(connector, MailConnector):
        return []
    if connector.sink is not None:
        return ["  mail          embedded SMTP sink (loopback): see `ketenhub mails` or GET /api/v1/mails"]
    return [
        f"  mail          SMTP {connector.settings.host}:{connector.settings.port} ({connector.settings.tls})"
    ]
