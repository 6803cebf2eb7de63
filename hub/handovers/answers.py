"""Receivers' answers to handovers, and notices to caseworkers about handovers left unanswered."""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from hub.audit import AuditEntry
from hub.clock import aware
from hub.handovers import messages
from hub.handovers.service import Act, HandoverProblem, Routing, audit_handover, get_handover
from hub.handovers.tables import handovers
from hub.handovers.undelivered import UNDELIVERED
from hub.logging import redact_text
from schemas.envelope import trace_id
from schemas.handover import HandoverStatus

UNANSWERED = (HandoverStatus.VERZONDEN.value, HandoverStatus.ONTVANGEN.value)
ANSWERS = frozenset({HandoverStatus.ONTVANGEN, HandoverStatus.GEACCEPTEERD, HandoverStatus.GEWEIGERD})
FINAL = frozenset({HandoverStatus.GEACCEPTEERD.value, HandoverStatus.GEWEIGERD.value})
# Where each answer may come from: forward only, nothing after a final answer.
FROM = {
    HandoverStatus.ONTVANGEN: frozenset({HandoverStatus.VERZONDEN.value}),
    HandoverStatus.GEACCEPTEERD: frozenset(UNANSWERED),
    HandoverStatus.GEWEIGERD: frozenset(UNANSWERED),
}


async def record_answer(
    session: AsyncSession,
    r: Routing,
    handover_id: str,
    receiver: str,
    status: HandoverStatus,
    act: Act,
    *,
    reason: str | None = None,
    meeting_planned_at: datetime | None = None,
) -> Any:
    """A receiver answers a handover it got; anybody else's handover is 'not found'.

    Answers move a handover forward only: VERZONDEN -> ONTVANGEN -> GEACCEPTEERD or GEWEIGERD. An
    answer the handover is already past (the same answer again, a late ONTVANGEN) changes nothing and
    is no error: a receiver's retry or a redelivered record gets the handover as it stands; only a
    meeting planned since is kept. Another answer after a final one is refused (409).
    """
    # in UTC: SQLite keeps a moment's clock time and drops its offset, so 10:30+01:00 read back 10:30Z
    meeting_planned_at = meeting_planned_at and meeting_planned_at.astimezone(UTC)
    row = await get_handover(session, handover_id, lock=True, receiver=receiver)  # two answers: in turn
    if row is None:
        raise HandoverProblem(404, "deze overdracht is niet bekend bij deze ontvanger")
    if status not in ANSWERS:
        raise HandoverProblem(400, "status moet ONTVANGEN, GEACCEPTEERD of GEWEIGERD zijn")
    if status is HandoverStatus.GEWEIGERD and not reason:
        raise HandoverProblem(400, "een weigering heeft een reden")
    if _already(row, status, reason):
        await _keep_meeting(session, r, act, row, status, meeting_planned_at)
        return await get_handover(session, handover_id)
    if row.status not in FROM[status]:
        raise HandoverProblem(409, f"de overdracht staat op {row.status} en kan niet meer worden beantwoord")
    now = r.clock()
    values: dict[str, Any] = {"status": status.value, "updated_at": now, "answered_at": now}
    if reason is not None:
        values["status_reason"] = reason
    if meeting_planned_at is not None:
        values["meeting_planned_at"] = meeting_planned_at
    await session.execute(update(handovers).where(handovers.c.id == row.id).values(**values))
    await audit_handover(
        session, r, act, "handover.answered", row, status=status.value, meeting=meeting_planned_at is not None
    )
    if status is HandoverStatus.GEWEIGERD:
        await messages.tell_requester(
            session,
            r.mail_topic,
            row,
            template="handover.declined",
            transaction_id=act.transaction_id,
            detail="de ontvanger weigert.",
        )
    return await get_handover(session, handover_id)


def kafka_answer_refusal(
    topic: str, outbound: str, readers: Sequence[str], sender: str, handover_id: str, receiver: str | None
) -> str | None:
    """Why an answer on a receiver type's answers `topic` is not taken, or None when it is.

    Kafka records carry no verified sender; the topic does: only the principal that reads that type's
    `outbound` topic may write `topic` (deploy/ ACLs). So the one organisation that reads `outbound`
    (`kafka_readers`) answers on it, naming itself as the `sender`, and only for handovers sent to it
    (`receiver`, None for a handover the hub does not know: record_answer says so). With no reader,
    or two, nobody's answers can come from it: a receiver with a webhook answers over HTTP."""
    if len(readers) != 1:
        held = "no organisation" if not readers else f"{len(readers)} organisations ({', '.join(readers)})"
        return (
            f"{outbound} is read by {held} over Kafka, so {topic} answers for none; "
            "a receiver with a webhook answers over HTTP"
        )
    organisation = readers[0]
    if sender != organisation:
        # the sender is the producer's free text (a name, say), and this goes into the dead letter
        return (
            f"the answer names {kept_sender(sender)!r} as its sender, but {topic} is written by "
            f"{organisation!r} (the reader of {outbound}) only"
        )
    if receiver is not None and receiver != organisation:
        return (
            f"handover {handover_id} went to {receiver!r}, not to {organisation!r}, which answers on {topic}"
        )
    return None


# An organisation id as the hub registers them ("jongerenwerk-dh"): lowercase, digits and dashes.
_ORGANISATION_ID = re.compile(r"[a-z0-9][a-z0-9-]{0,63}")


def kept_sender(sender: str) -> str:
    """What the audit log keeps, for years, of the sender a refused record named: it is the untrusted
    producer's free text, so only when it looks like an organisation id and holds no BSN-like number;
    else its length."""
    if _ORGANISATION_ID.fullmatch(sender) and redact_text(sender) == sender:
        return sender
    return f"(geen organisatie-id: {len(sender)} tekens, niet bewaard)"


def refused_answer_audit(
    row: Any, *, user: str, topic: str, sender: str, status: str | None
) -> list[AuditEntry]:
    """The audit entry of an answer refused for who sent it (rule 18: someone acted on a youth's
    handover): `user` the writer the topic proves, if any; `sender` the one the record named. No
    entry for an answer to a handover the hub does not know (`row` None): it touched no youth."""
    if row is None:
        return []
    entry = AuditEntry(
        action="handover.answer_refused",
        user=user,
        youth_key=row.youth_key,
        objects={
            "handover_id": row.id,
            "referral_id": row.referral_id,
            "topic": topic,
            "claimed_sender": kept_sender(sender),
            "status": status,
        },
        legal_basis=row.legal_basis,
    )
    return [entry]


def _already(row: Any, status: HandoverStatus, reason: str | None) -> bool:
    """The handover is already where this answer would take it: the same answer again (a refusal
    with the same reason), or ONTVANGEN once it was answered finally."""
    if status is HandoverStatus.ONTVANGEN:
        return bool(row.status in (HandoverStatus.ONTVANGEN.value, *FINAL))
    if status is HandoverStatus.GEWEIGERD:
        return bool(row.status == status.value and row.status_reason == reason)
    return bool(row.status == status.value)


async def _keep_meeting(
    session: AsyncSession, r: Routing, act: Act, row: Any, status: HandoverStatus, meeting: datetime | None
) -> None:
    """The same answer again, with a meeting planned since: the meeting is kept and audited (not
    from a refusal, nor from a late ONTVANGEN: the handover is past it)."""
    if meeting is None or status is HandoverStatus.GEWEIGERD or row.status != status.value:
        return
    if row.meeting_planned_at is not None and aware(row.meeting_planned_at) == meeting:
        return
    await session.execute(
        update(handovers)
        .where(handovers.c.id == row.id)
        .values(meeting_planned_at=meeting, updated_at=r.clock())
    )
    await audit_handover(session, r, act, "handover.meeting_planned", row, status=row.status)


async def notify_unanswered(session: AsyncSession, r: Routing, after: timedelta, act: Act) -> int:
    """Tell caseworkers once about handovers that got no decision within `after` of being sent; not
    about one that never reached its receiver (`UNDELIVERED`), whose caseworker was told that instead.

    Each notice carries its handover's own transaction id, the request's (rule 19), not `act`'s:
    one check tells about the handovers of many requests. Routing replicas check at the same
    moments: each takes the rows it tells about (PostgreSQL; SQLite has one writer), skipping
    those another replica holds, which it tells about and marks."""
    rows = (
        await session.execute(
            select(handovers)
            .where(handovers.c.status.in_(UNANSWERED))
            .where(handovers.c.sent_at < r.clock() - after)
            .where(handovers.c.overdue_notified_at.is_(None))
            # not one whose delivery was given up: its caseworker was told that (hub.handovers.undelivered)
            .where(
                or_(
                    handovers.c.status != HandoverStatus.VERZONDEN.value,
                    handovers.c.status_reason.is_(None),
                    handovers.c.status_reason != UNDELIVERED,
                )
            )
            .limit(200)
            .with_for_update(skip_locked=True)
        )
    ).all()
    for row in rows:
        await messages.tell_requester(
            session,
            r.mail_topic,
            row,
            template="handover.unanswered",
            transaction_id=trace_id(row.transaction_id) if row.transaction_id else act.transaction_id,
            detail="de ontvanger heeft niet op tijd geantwoord.",
        )
        await session.execute(
            update(handovers).where(handovers.c.id == row.id).values(overdue_notified_at=r.clock())
        )
    return len(rows)
