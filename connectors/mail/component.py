"""The mail component: MailNotifications on `notification.mail.v1` out over SMTP, once each.

Who gets a mail is decided when it is sent, not when it was queued (rules 16, 17): whoever reads the
mail of the caseworker it is for on the hub's day (themselves, or their delegate then), and a
delegate's mail says for whom they read it. A mail that waited (an SMTP outage, the DLQ) follows the
directory as it is when it goes out: a replay after the directory was fixed reaches the right person.
A message queued before MailNotification named the caseworker it is for goes, as before, to whoever
reads `recipient_caseworker_id`'s mail, with its text as rendered then.

Once per notification: the id of every mail the SMTP server accepted is stored in `mail_sent` (a
match mail's also on its match: when, and whose mail it was) in the same transaction as the
ladder's un-parking, and checked before sending, so redeliveries, restarts and DLQ replays do not
send it again. Where a mail can still go twice:
- The process dies after the server said "250" and before that commit: it is sent again after the
  restart, with the same Message-ID (derived from the notification id), which mail systems use to
  drop the repeat. SMTP has no idempotency key; this window cannot be closed from our side.
- The commit fails after a "250" (the store is down, or the record cannot be written): the ladder
  puts the message off (as long as its next rung would wait, without using it). This process
  remembers the notifications it sent (the last `_SENT_MAX`), and at that next attempt records the
  mail without sending it again. Only when the
  process restarted in between, or forgot it among more sends than that, is it sent again, as above.
- The server did not answer after the message was transmitted (a read timeout, a lost connection):
  it may have been delivered. It is neither retried nor recorded as sent: it goes to the DLQ with
  that reason (`OutcomeUnknown`), and an operator who replays it sends it again.
"""

from __future__ import annotations

import contextlib
import re
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any, TypeVar

from pydantic import ValidationError
from sqlalchemy import bindparam, event, insert, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session

from connectors.mail.message import build_message, header_transaction_id, message_id_for
from connectors.mail.problems import (
    UNKNOWN,
    kind_from_text,
    problem_kind,
    problem_reason,
    resolve_done,
    resolve_replaced,
)
from connectors.mail.sink import MailSink
from connectors.mail.smtp import OutcomeUnknown, SmtpMailer
from hub.audit import audit_row, write_audits
from hub.clock import today
from hub.config import SmtpSettings
from hub.directory import CaseworkerNotFound, get_caseworker, mail_recipient, mail_recipients
from hub.errors import PermanentError
from hub.logging import get_logger
from hub.notify.problems import record_problem
from hub.notify.service import NoReachableRecipient
from hub.notify.tables import mail_sent
from hub.notify.templates import with_behalf
from hub.retry import Delivery, RetryLadder, RetryPolicy, deliver_through, ladder_on
from hub.retry.tables import parked
from hub.runtime import Hub
from hub.signals.matches import ended_status
from hub.signals.tables import matches, signals
from hub.spine.dlq import safe_error_message
from hub.store import Store
from hub.topics import NOTIFICATION_MAIL
from schemas._base import as_code
from schemas.caseworker import Caseworker
from schemas.envelope import Envelope, utcnow
from schemas.notification import MailNotification

log = get_logger(__name__)
_NOT_LOOKED_UP: Any = object()
_SENT_MAX = 10_000  # notifications this process sent, remembered (for their record), at most
_V = TypeVar("_V")
_YOUTH_KEY = re.compile(r"[0-9a-f]{64}")  # schemas.pseudonym.youth_key: a match mail's record key
NAME = "mail"
SYSTEM = "mail-connector"
UNKNOWN_PROBLEM = UNKNOWN


def _notification(message: Envelope) -> MailNotification:
    try:
        return MailNotification.model_validate(message.payload)
    except ValidationError as exc:
        raise PermanentError(f"not a MailNotification: {exc.error_count()} error(s)") from None


def addressee(mail: MailNotification) -> str:
    """The caseworker whose mail this is: the one it is for, or (a message queued before that was
    named) the one it was queued for."""
    return mail.for_caseworker_id or mail.recipient_caseworker_id


def _youth_key(record_key: str | None) -> str | None:
    return record_key if record_key is not None and _YOUTH_KEY.fullmatch(record_key) else None


@dataclass(frozen=True)
class _Plan:
    """Who gets a mail now, for whom they read it (a delegate), and the youth it is about."""

    reader: Caseworker
    absent_name: str | None
    youth_key: str | None


@dataclass(frozen=True)
class _Withheld:
    """A match mail not to be sent: its signal ended while it waited (`status`), of youth `youth_key`;
    or its signal is gone (purged once it ended: `status` None, the youth by the mail's record key)."""

    status: str | None
    youth_key: str | None

    @property
    def reason(self) -> str:
        return "signal_purged" if self.status is None else "signal_not_active"


def _remember(memory: OrderedDict[str, _V], key: str, value: _V) -> None:
    """Keep `value` under `key`, the newest; past `_SENT_MAX` entries the oldest is forgotten."""
    memory[key] = value
    memory.move_to_end(key)
    while len(memory) > _SENT_MAX:
        memory.popitem(last=False)


@dataclass(frozen=True)
class _Sent:
    """A mail the SMTP server accepted from this process: whom it reached, which youth it was about."""

    reader_id: str
    youth_key: str | None
    for_id: str  # whose mail it was when it went (a match mail: the signal's contact then)


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
        # the last failed attempt, kept after later successes, with its time (the console shows both)
        self.last_error: str | None = None
        self.last_error_at: datetime | None = None
        # notification id -> plan; None when it is not to be sent: sent already, or withheld
        self._ready: dict[str, _Plan | None] = {}
        # notification id -> whom it reached: for its audit entry, and so that a mail whose record was
        # not committed is recorded at its next attempt rather than sent again (oldest forgotten first)
        self._sent: OrderedDict[str, _Sent] = OrderedDict()
        # message id -> the problem its last failed attempt makes of it, should the ladder dead-letter
        # it: `on_dead` is told the error's text only, and runs in the process that made the attempt
        self._failures: OrderedDict[str, str] = OrderedDict()
        # message id -> whom a mail sent without an answer may have reached (`OutcomeUnknown`): its
        # dead letter is audited as a possible disclosure, with its reader and youth (rule 18)
        self._unsure: OrderedDict[str, _Sent] = OrderedDict()
        # notification id -> the caseworker a match mail is for now, when its signal's contact changed
        # since it was queued (a borging, a contact change): found by `prepare` or `_plan` (the
        # oldest forgotten first: one prepared that another hub process took is never sent here)
        self._moved: OrderedDict[str, str] = OrderedDict()
        # notification id -> a match mail whose signal ended since it was queued: not sent (a match on
        # a signal that is over is told to nobody), recorded as withheld by `on_delivered`, forgotten
        # once that record is committed (or, prepared and taken by another process, oldest first)
        self._withheld: OrderedDict[str, _Withheld] = OrderedDict()

    @property
    def _ladder_name(self) -> str:
        return self.ladder.name if self.ladder is not None else NAME

    async def _record_keys(self, session: AsyncSession, message_ids: list[str]) -> dict[str, str]:
        """The record keys (a match mail's: the youth key) of these messages, as the ladder holds them."""
        keys: dict[str, str] = {}
        for start in range(0, len(message_ids), 500):
            q = select(parked.c.message_id, parked.c.key).where(
                parked.c.ladder == self._ladder_name,
                parked.c.message_id.in_(message_ids[start : start + 500]),
            )
            keys.update({row.message_id: row.key for row in (await session.execute(q)).all()})
        return keys

    async def _now_for(
        self, session: AsyncSession, pairs: Sequence[tuple[Envelope, MailNotification]]
    ) -> None:
        """Match mails as their signal stands when they are sent, also after a wait (an SMTP outage,
        a dead letter replayed days later): to the signal's contact now (`_moved`), as its former
        contact may no longer open the signal (rules 16, 17); not at all once the signal is over
        (`_withheld`), as the notifier does not mail a match on a signal that is over. A signal the
        hub no longer holds is over too: purged past its term, after it ended (rule 12)."""
        refs = {mail.case_reference for _, mail in pairs if mail.template == "match"}
        if not refs:
            return
        q = select(
            signals.c.signal_id,
            signals.c.caseworker_id,
            signals.c.status,
            signals.c.end_date,
            signals.c.youth_key,
        ).where(signals.c.signal_id.in_(sorted(refs)))
        found = {row.signal_id: row for row in (await session.execute(q)).all()}
        gone = [
            (m, mail) for m, mail in pairs if mail.template == "match" and mail.case_reference not in found
        ]
        # the youth of a mail whose signal is gone: by its record key, as the ladder holds it
        keys = await self._record_keys(session, [message.message_id for message, _ in gone]) if gone else {}
        for message, mail in gone:
            _remember(
                self._withheld,
                mail.notification_id,
                _Withheld(None, _youth_key(keys.get(message.message_id))),
            )
            self._moved.pop(mail.notification_id, None)
        for _, mail in pairs:
            signal = found.get(mail.case_reference) if mail.template == "match" else None
            if signal is None:
                continue
            ended = ended_status(signal.status, signal.end_date, self.today())
            if ended is not None:
                _remember(self._withheld, mail.notification_id, _Withheld(ended, signal.youth_key))
            elif signal.caseworker_id != addressee(mail):
                _remember(self._moved, mail.notification_id, signal.caseworker_id)
            else:  # back with the caseworker it was queued for
                self._moved.pop(mail.notification_id, None)

    def _as_now(self, mail: MailNotification) -> MailNotification:
        """The mail for whom it is now (`_now_for`)."""
        moved = self._moved.get(mail.notification_id)
        return mail.model_copy(update={"for_caseworker_id": moved}) if moved else mail

    async def _absent_names(
        self, session: AsyncSession, mails: Sequence[MailNotification], readers: dict[str, Any]
    ) -> dict[str, str]:
        """The names of the caseworkers a delegate reads for, of mails that name whom they are for."""
        away = {
            mail.for_caseworker_id
            for mail in mails
            if mail.for_caseworker_id is not None
            and isinstance(reader := readers.get(mail.for_caseworker_id), Caseworker)
            and reader.caseworker_id != mail.for_caseworker_id
        }
        return {cid: (await get_caseworker(session, cid)).name for cid in sorted(away)}

    async def prepare(self, messages: Sequence[Envelope]) -> None:
        """For a round of sends: which were sent already, and who reads each caseworker's mail today,
        in a few statements instead of a few per mail."""
        pairs = []
        for message in messages:
            with contextlib.suppress(PermanentError):  # deliver dead-letters it, with the reason
                pairs.append((message, _notification(message)))
        self._ready.clear()
        if not pairs:
            return
        async with self.store.read() as session:
            ids = [mail.notification_id for _, mail in pairs]
            q = select(mail_sent.c.notification_id).where(mail_sent.c.notification_id.in_(ids))
            sent = set((await session.execute(q)).scalars()) | (set(ids) & set(self._sent))
            # as `_plan`: one sent already is not withheld (its record says it went), nor needs a reader
            await self._now_for(session, [(m, mail) for m, mail in pairs if mail.notification_id not in sent])
            for _, mail in pairs:
                if mail.notification_id in sent or mail.notification_id in self._withheld:
                    self._ready[mail.notification_id] = None
            pairs = [(m, self._as_now(mail)) for m, mail in pairs if mail.notification_id not in self._ready]
            mails = [mail for _, mail in pairs]
            readers = await mail_recipients(session, {addressee(mail) for mail in mails}, self.today())
            names = await self._absent_names(session, mails, readers)
            keys = await self._record_keys(session, [message.message_id for message, _ in pairs])
        for message, mail in pairs:
            reader = readers[addressee(mail)]
            if isinstance(reader, Caseworker):  # an error is found again, and raised, by deliver
                absent = names.get(mail.for_caseworker_id) if mail.for_caseworker_id else None
                key = _youth_key(keys.get(message.message_id))
                self._ready[mail.notification_id] = _Plan(reader, absent, key)

    async def _plan(self, message: Envelope, mail: MailNotification) -> _Plan | None:
        """`prepare`'s answer for one mail, looked up now; None when it is not to be sent: sent
        already, or withheld (its signal ended: nobody need read it, `_deliver` records that)."""
        if mail.notification_id in self._sent:  # sent by this process; its record was not committed
            return None
        async with self.store.read() as session:  # the consumer's transaction holds the write lock
            if await _was_sent(session, mail.notification_id):
                return None
            await self._now_for(session, [(message, mail)])
            if mail.notification_id in self._withheld:
                return None
            mail = self._as_now(mail)
            try:
                reader = await mail_recipient(session, addressee(mail), self.today())
            except CaseworkerNotFound:
                raise
            except PermanentError as exc:  # away or gone, and no reachable delegate
                raise NoReachableRecipient(str(exc)) from None
            names = await self._absent_names(session, [mail], {addressee(mail): reader})
            keys = await self._record_keys(session, [message.message_id])
        absent = names.get(mail.for_caseworker_id) if mail.for_caseworker_id else None
        return _Plan(reader, absent, _youth_key(keys.get(message.message_id)))

    async def deliver(self, message: Envelope) -> None:
        """Send one notification to whoever reads the caseworker's mail today (rule 16)."""
        try:
            await self._deliver(message)
        except Exception as exc:
            self._failed(message, exc)
            raise
        self._failures.pop(message.message_id, None)

    def _failed(self, message: Envelope, exc: Exception) -> None:
        """Keep the error for the console, and the problem it makes of the mail for `on_dead`."""
        self.last_error, self.last_error_at = safe_error_message(exc)[:300], utcnow()
        _remember(self._failures, message.message_id, problem_kind(exc))

    async def _deliver(self, message: Envelope) -> None:
        mail = _notification(message)
        # what `prepare` found for this round, used once: a retry in place looks again
        plan = self._ready.pop(mail.notification_id, _NOT_LOOKED_UP)
        if plan is _NOT_LOOKED_UP:
            plan = await self._plan(message, mail)
        if mail.notification_id in self._withheld:  # its signal is over: `on_delivered` records that
            log.info("match mail withheld: its signal ended", notification_id=mail.notification_id)
            return
        mail = self._as_now(mail)
        if plan is None:
            log.info("mail already sent; not sending again", notification_id=mail.notification_id)
            return
        if plan.absent_name is not None:  # worded for the delegate who reads it now
            text, html = with_behalf(mail.template, mail.body_text, mail.body_html, plan.absent_name)
            mail = mail.model_copy(update={"body_text": text, "body_html": html})
        msg = build_message(
            mail,
            to_addr=plan.reader.email,
            to_name=plan.reader.name,
            sender=self.settings.sender,
            now=utcnow(),
            transaction_id=message.transaction_id,  # rule 19
        )
        try:
            await self.mailer.send(msg)
        except OutcomeUnknown:
            reached = _Sent(plan.reader.caseworker_id, plan.youth_key, addressee(mail))
            _remember(self._unsure, message.message_id, reached)
            raise
        self.last_success = utcnow()
        _remember(
            self._sent,
            mail.notification_id,
            _Sent(plan.reader.caseworker_id, plan.youth_key, addressee(mail)),
        )
        self._moved.pop(mail.notification_id, None)

    def _sent_row(
        self, message: Envelope, mail: MailNotification, now: datetime
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        """The mail_sent row and the mail.sent audit entry (rule 18: the disclosure, with its youth)."""
        sent = self._sent.get(mail.notification_id)
        row = {
            "notification_id": mail.notification_id,
            "message_id": message_id_for(mail.notification_id, self.settings.sender),
            "recipient_caseworker_id": sent.reader_id if sent else mail.recipient_caseworker_id,
            "sent_at": now,
        }
        # The mail is addressed to a caseworker; who reads their mail is decided when it is sent (a
        # delegate while they are away), which may be days after it was queued.
        objects: dict[str, Any] = {
            "notification_id": mail.notification_id,
            "template": mail.template,
            "case_reference": mail.case_reference,
        }
        if sent is not None:
            objects["sent_to"] = sent.reader_id
        in_mail = header_transaction_id(message.transaction_id)
        if in_mail != message.transaction_id:  # the mail carries the id derived from it: findable by both
            objects["transaction_id_in_mail"] = in_mail
        entry = audit_row(
            "mail.sent",
            SYSTEM,
            at=now,
            system=SYSTEM,
            transaction_id=message.transaction_id,
            youth_key=sent.youth_key if sent else None,
            on_behalf_of=sent.for_id if sent else addressee(mail),
            objects=objects,
        )
        return row, entry

    async def on_delivered(self, session: AsyncSession, message: Envelope) -> None:
        """Remember the notification as sent, in the ladder's un-parking transaction."""
        await self.on_delivered_many(session, [message])

    async def on_delivered_many(self, session: AsyncSession, messages: Sequence[Envelope]) -> None:
        """`on_delivered` for a round of sends: one lookup and two inserts."""
        mails = [(message, _notification(message)) for message in messages]
        ids = [mail.notification_id for _, mail in mails]
        q = select(mail_sent.c.notification_id).where(mail_sent.c.notification_id.in_(ids))
        known = set((await session.execute(q)).scalars())
        now, sent, audit, told, withheld = utcnow(), [], [], [], []
        for message, mail in mails:
            # kept until committed: a round whose record rolls back is recorded again, one by one
            held = self._withheld.get(mail.notification_id)
            if held is not None:  # not sent: nothing disclosed, and no row that says it was
                audit.append(self._withheld_row(message, mail, held, now))
                withheld.append(mail.notification_id)
                continue
            if mail.notification_id in known:
                continue
            known.add(mail.notification_id)
            row, entry = self._sent_row(message, mail, now)
            sent.append(row)
            audit.append(entry)
            if mail.match_id is not None:
                told.append({"m": mail.match_id, "at": now, "reader": row["recipient_caseworker_id"]})
        if sent:
            await session.execute(insert(mail_sent), sent)
        if told:
            await session.execute(_MATCH_TOLD, told)
        await write_audits(session, audit)  # rule 18
        await resolve_done(session, ids, withheld, by=SYSTEM)  # a replayed dead letter's problem
        self._forget_once_committed(session, withheld)

    def _forget_once_committed(self, session: AsyncSession, withheld: Iterable[str]) -> None:
        """Forget these withheld mails once the transaction that recorded them commits. Not before: the
        ladder records a round again, one by one, in the same transaction when its record of them
        together fails, and each needs to be known as withheld then. A transaction rolled back leaves
        them parked, and their next attempt looks at their signals again (`_now_for`)."""
        done = set(withheld)
        if not done:
            return

        def committed(sync_session: Session) -> None:
            if sync_session.in_nested_transaction():  # a savepoint released: not committed yet
                return
            for notification_id in done:
                self._withheld.pop(notification_id, None)
            done.clear()  # once: a session used again later has nothing more to forget

        event.listen(session.sync_session, "after_commit", committed)

    def _withheld_row(
        self, message: Envelope, mail: MailNotification, held: _Withheld, now: datetime
    ) -> dict[str, Any]:
        """The audit entry of a match mail not sent because its signal ended while it waited (or ended
        and was purged), under the youth it was about, so that it is in the youth's trail."""
        return audit_row(
            "mail.withheld",
            SYSTEM,
            at=now,
            system=SYSTEM,
            transaction_id=message.transaction_id,
            youth_key=held.youth_key,
            on_behalf_of=addressee(mail),
            objects={
                "notification_id": mail.notification_id,
                "template": mail.template,
                "case_reference": mail.case_reference,
                "reason": held.reason,
                "signal_status": held.status,
            },
        )

    async def on_dead(self, session: AsyncSession, message: Envelope, error: str) -> None:
        """A mail that will not go out, or may have, is a problem an administrator sees, of the kind
        that says what to do before its dead letter is replayed (connectors.mail.problems)."""
        # the attempt that dead-lettered it was made by this process, just before; the text decides
        # only for one forgotten among more failures than `_SENT_MAX`
        kind = self._failures.pop(message.message_id, None) or kind_from_text(error)
        payload = message.payload  # it may have failed validation: only what could be a Code is used
        self._moved.pop(str(payload.get("notification_id")), None)
        reference = as_code(payload.get("notification_id")) or message.message_id
        problem_id = await record_problem(
            session,
            kind=kind,
            # whose directory entry decides who reads it: fix it, then replay the dead letter
            caseworker_id=as_code(payload.get("for_caseworker_id"))
            or as_code(payload.get("recipient_caseworker_id")),
            reference=reference,
            reason=problem_reason(kind, error, as_code(payload.get("template"))),
            transaction_id=message.transaction_id,
        )
        await resolve_replaced(session, reference, problem_id, by=SYSTEM)
        unsure = self._unsure.get(message.message_id)  # kept: a failed transaction runs this again
        if kind == UNKNOWN:
            await write_audits(session, [await self._possibly_sent_row(session, message, unsure, kind)])

    async def _possibly_sent_row(
        self, session: AsyncSession, message: Envelope, unsure: _Sent | None, kind: str
    ) -> dict[str, Any]:
        """The audit entry of a mail sent without an answer (rule 18): it may have reached its reader,
        with what it says of the youth, so it is in the youth's trail as a possible disclosure. Who it
        may have reached is known to the process that sent it; another (a restart between) names
        whose mail it was, and finds the youth by the record's key."""
        payload = message.payload
        youth: str | None
        whose: str | None
        if unsure is not None:
            youth, whose = unsure.youth_key, unsure.for_id
        else:
            keys = await self._record_keys(session, [message.message_id])
            youth = _youth_key(keys.get(message.message_id))
            whose = as_code(payload.get("for_caseworker_id")) or as_code(
                payload.get("recipient_caseworker_id")
            )
        objects: dict[str, Any] = {
            "notification_id": as_code(payload.get("notification_id")) or message.message_id,
            "template": as_code(payload.get("template")),
            "case_reference": as_code(payload.get("case_reference")),
            "outcome": kind,
        }
        if unsure is not None:
            objects["sent_to"] = unsure.reader_id
        return audit_row(
            "mail.possibly_sent",
            SYSTEM,
            at=utcnow(),
            system=SYSTEM,
            transaction_id=message.transaction_id,
            youth_key=youth,
            on_behalf_of=whose,
            objects=objects,
        )

    async def ping(self) -> None:
        """The SMTP server answers (readiness)."""
        await self.mailer.ping()

    def status(self) -> dict[str, Any]:
        """Last success, last error, where mail goes: the console's shape (GET /ops/api/connectors)."""
        where = f"embedded sink 127.0.0.1:{self.sink.port}" if self.sink else f"{self.settings.host}"
        return {
            "target": where,
            "sent": self.mailer.sent,
            "last_success": self.last_success.isoformat() if self.last_success else None,
            "last_error": self.last_error,
            "last_error_at": self.last_error_at.isoformat() if self.last_error_at else None,
        }

    async def aclose(self) -> None:
        """Close the SMTP connection (the sink stops with its background task)."""
        await self.mailer.aclose()


async def _was_sent(session: AsyncSession, notification_id: str) -> bool:
    q = select(mail_sent.c.notification_id).where(mail_sent.c.notification_id == notification_id)
    return (await session.execute(q)).first() is not None


# A match's mail was accepted: the match records when, and whose mail it was (the first time only).
_MATCH_TOLD = (
    update(matches)
    .where(matches.c.match_id == bindparam("m"), matches.c.notified_at.is_(None))
    .values(notified_at=bindparam("at"), notified_caseworker_id=bindparam("reader"))
)


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
