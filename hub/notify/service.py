"""Telling a caseworker something by mail: resolve who reads it (rule 16), render, queue, audit.

`notify_caseworker` is the one door for every notice of the hub (matches, borging, handovers not
answered or waiting for consent). It writes in the caller's transaction: the MailNotification in
the outbox for `notification.mail.v1`, and an audit entry that it was queued. When nobody can read
the caseworker's mail it queues nothing and records a problem an administrator sees instead. The
mail names the caseworker it is for; who reads it, and the line for a delegate, are decided by the
mail connector when it is sent (the disclosure, audited there as `mail.sent`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from datetime import date
from typing import Any, Protocol, runtime_checkable

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from hub.audit import AuditEntry, write_audit
from hub.clock import today
from hub.directory import mail_recipient
from hub.errors import PermanentError
from hub.intake.tables import referrals
from hub.notify.problems import list_problems as list_problems  # re-exported: once defined here
from hub.notify.problems import record_problem as record_problem
from hub.notify.problems import record_problem_once as record_problem_once
from hub.notify.problems import resolve_found, resolve_oldest
from hub.notify.templates import render
from hub.signals.tables import signals
from hub.spine.outbox import add_to_outbox
from hub.topics import NOTIFICATION_MAIL
from schemas.bsn import contains_bsn
from schemas.envelope import Envelope
from schemas.notification import MailNotification

SYSTEM = "ketenhub.notify"
NO_RECIPIENT = "geen_bereikbare_ontvanger"
_NOT_SENT = "geen mail verstuurd ({template}): "  # a NO_RECIPIENT problem's reason begins so


class NoReachableRecipient(PermanentError):
    """The caseworker is away or gone and no delegate can be reached (rule 16)."""


class _HasTopic(Protocol):
    def topic(self, name: str) -> str: ...


@runtime_checkable
class _HasToday(Protocol):
    def today(self) -> date: ...


def mail_topic(hub_or_topic: _HasTopic | str) -> str:
    """The full name of `notification.mail.v1` under the hub's prefix, or the given name."""
    return hub_or_topic if isinstance(hub_or_topic, str) else hub_or_topic.topic(NOTIFICATION_MAIL.name)


async def _not_bsn(session: AsyncSession, shown: Sequence[str], youth_key: str | None) -> list[str]:
    """Of the values a mail shows that were validated as something else (a phone number, an id),
    those that would pass for a BSN, less any holding the youth's own BSN (as the hub stored it)."""
    suspect = [value for value in dict.fromkeys(shown) if contains_bsn(value)]
    if not suspect or youth_key is None:
        return suspect
    own = set(
        (await session.execute(select(signals.c.bsn).where(signals.c.youth_key == youth_key))).scalars()
    )
    own |= set(
        (await session.execute(select(referrals.c.bsn).where(referrals.c.youth_key == youth_key))).scalars()
    )
    return [value for value in suspect if not any(bsn in re.sub(r"\D", "", value) for bsn in own)]


async def notify_caseworker(
    session: AsyncSession,
    hub: _HasTopic | str,
    caseworker_id: str,
    template: str,
    context: Mapping[str, Any],
    transaction_id: str,
    *,
    case_reference: str | None = None,
    key: str | None = None,
    youth_key: str | None = None,
    day: date | None = None,
    user: str = SYSTEM,
    queue_unreachable: bool = False,
) -> MailNotification | None:
    """Queue a mail for `caseworker_id` (their delegate while they are away); None when nobody can
    read it, in which case a problem is recorded (and audited) and nothing is queued; once queued for
    somebody after all (a replayed match), that problem is resolved (`resolve_unreachable`). A match
    notice's problem is its match's (`context["match_id"]`), any other's its case reference's. With
    `queue_unreachable` it is queued all the same, for a notice that exists nowhere else: the mail
    connector then dead-letters it (problem `geen_bereikbare_ontvanger`), and once the directory is
    fixed its dead letter is replayed.

    `case_reference` defaults to `context["case_reference"]`. `key` is the Kafka key (the youth
    key keeps per-youth order; default the recipient's id). Templates: "match", "borging" and
    "notice" (context keys subject, detail, case_reference) in hub/notify/templates.py.
    """
    case_reference = case_reference or str(context.get("case_reference") or "onbekend")
    # the matches of one signal in one page of the feed share its case reference and the transaction,
    # and each is dead-lettered, and replayed, on its own: a match's problem is keyed by its match
    match_id = str(context["match_id"]) if template == "match" and context.get("match_id") else None
    reader: str | None
    try:
        day = day or (hub.today() if isinstance(hub, _HasToday) else today())
        reader = (await mail_recipient(session, caseworker_id, day)).caseworker_id
    except PermanentError as exc:
        if not queue_unreachable:
            await _unreachable(
                session,
                exc,
                caseworker_id,
                template,
                case_reference,
                match_id,
                transaction_id,
                youth_key,
                user,
            )
            return None
        reader = None  # nobody now: the mail connector looks again when it sends, and dead-letters it
    # Rendered without the line for a delegate: the mail connector decides who reads the mail when it
    # is sent, and words it for a delegate then (rules 16, 17).
    ctx = {k: v for k, v in context.items() if k != "on_behalf_of_name"}
    rendered = render(template, ctx)
    mail = MailNotification(
        recipient_caseworker_id=reader or caseworker_id,
        for_caseworker_id=caseworker_id,
        template=template,
        subject=rendered.subject,
        body_text=rendered.text,
        body_html=rendered.html,
        case_reference=case_reference,
        match_id=match_id,
        # the validated phone numbers and ids shown that would pass for a BSN (rule 16's check), but
        # never one holding the youth's own BSN: a partner's field is no guarantee
        not_bsn=await _not_bsn(session, rendered.not_bsn, youth_key),
    )
    message = Envelope.new(
        type_="MailNotification",
        transaction_id=transaction_id,
        correlation_id=case_reference,
        source=SYSTEM,
        # without match_id unless it is a match mail: a mail connector of the release before it
        # refuses a field it does not know, and runs beside this one while replicas are upgraded
        payload=mail.model_dump(mode="json", exclude={"match_id"} if mail.match_id is None else None),
    )
    await add_to_outbox(session, mail_topic(hub), message, key=key or reader or caseworker_id)
    # Queued, not disclosed: `mail.sent` (the mail connector) records the disclosure, to whoever reads
    # the caseworker's mail when it goes out. This names who would read it now.
    objects: dict[str, Any] = {
        "notification_id": mail.notification_id,
        "template": template,
        "for_caseworker_id": caseworker_id,
        "reader_when_queued": reader,  # None: nobody reads their mail now
        "case_reference": case_reference,
    }
    objects.update({k: ctx[k] for k in ("match_id", "signal_ids") if k in ctx})
    entry = AuditEntry(
        action=f"mail.{template}.queued",
        user=user,
        youth_key=youth_key,
        on_behalf_of=caseworker_id if reader != caseworker_id else None,
        objects=objects,
    )
    await write_audit(session, entry, transaction_id=transaction_id, system=SYSTEM)
    # somebody reads it: the same notice that found nobody before is queued. Only a notice that is not
    # queued for nobody can have found nobody (`_unreachable`): a handover's notice (queued all the
    # same) has no such problem to look for.
    if reader is not None and not queue_unreachable:
        await resolve_unreachable(
            session,
            case_reference,
            transaction_id,
            "de melding is alsnog klaargezet om te versturen",
            match_id=match_id,
        )
    return mail


async def resolve_unreachable(
    session: AsyncSession,
    case_reference: str,
    transaction_id: str,
    resolution: str,
    *,
    match_id: str | None = None,
) -> int:
    """Resolve the problems of a notice that found nobody to read it (`_unreachable`), as a replayed
    dead letter brings it again: a match's by its `match_id`, another notice's by its case reference in
    the same transaction (which a replayed dead letter keeps). Called when that notice was queued
    after all for somebody who reads the caseworker's mail, or is no longer needed (its signal ended);
    the mail's own fate is the mail connector's, with problems of its own. How many it resolved.

    A match's problem recorded before they were keyed by match has its signal's id as reference, as
    have those of the other matches on that signal in that page of the feed, and nothing tells them
    apart: each match that comes again resolves one of them (the oldest), so that as many stay open
    as matches still wait in the dead-letter queue.
    """
    if match_id is None:
        return await resolve_found(
            session,
            kinds=(NO_RECIPIENT,),
            references=(case_reference,),
            transaction_id=transaction_id,
            resolution=resolution,
            by=SYSTEM,
        )
    resolved = await resolve_found(
        session, kinds=(NO_RECIPIENT,), references=(match_id,), resolution=resolution, by=SYSTEM
    )
    return resolved + await resolve_oldest(
        session,
        kind=NO_RECIPIENT,
        reference=case_reference,
        transaction_id=transaction_id,
        reason_prefix=_NOT_SENT.format(template="match"),
        resolution=resolution,
        by=SYSTEM,
    )


async def _unreachable(
    session: AsyncSession,
    exc: PermanentError,
    caseworker_id: str,
    template: str,
    case_reference: str,
    match_id: str | None,
    transaction_id: str,
    youth_key: str | None,
    user: str,
) -> None:
    """Nobody reads `caseworker_id`'s mail: a problem for administrators (a match's by its match id,
    `resolve_unreachable`), audited; nothing queued."""
    await record_problem(
        session,
        kind=NO_RECIPIENT,
        caseworker_id=caseworker_id,
        reference=match_id or case_reference,
        reason=f"{_NOT_SENT.format(template=template)}{exc}",
        transaction_id=transaction_id,
    )
    objects = {"template": template, "case_reference": case_reference, "reason": NO_RECIPIENT}
    if match_id is not None:
        objects["match_id"] = match_id
    entry = AuditEntry(
        action="mail.undeliverable",
        user=user,
        youth_key=youth_key,
        on_behalf_of=caseworker_id,
        objects=objects,
    )
    await write_audit(session, entry, transaction_id=transaction_id, system=SYSTEM)
