"""Handovers whose delivery failed for good (a dead letter): marked, audited, their caseworker told once;
and withdrawal notices that failed so: audited, the caseworker told once that the receiver does not
know yet."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from hub.audit import AuditEntry, write_audit
from hub.handovers import messages
from hub.handovers.messages import HANDOVER, HANDOVER_WITHDRAWN
from hub.handovers.service import Routing, get_handover
from hub.handovers.tables import handovers
from hub.store.tables import audit_log
from schemas._base import as_code
from schemas.envelope import Envelope, utcnow
from schemas.handover import HandoverStatus

SYSTEM = "ketenhub-receivers"
# The status reason of a handover whose delivery was given up (it lies in the dead letters): sent,
# never delivered, not tried again until an operator replays it. No "not answered" notice follows.
UNDELIVERED = "AFLEVERING_MISLUKT"

FAILED = "handover.delivery_failed"  # the audit action of a dead-lettered handover or notice
_NOTICE_NOW = (
    " ketenhub probeert het niet meer vanzelf; een beheerder stuurt het bericht opnieuw zodra het "
    "probleem bij de ontvanger is verholpen. Laat de ontvanger intussen zelf weten dat de toestemming "
    "is ingetrokken en dat zij de gegevens niet verder mag gebruiken."
)
_WHAT_NOW = (
    " ketenhub probeert het niet meer vanzelf. Een beheerder ziet haar bij de niet-afgeleverde berichten "
    "en stuurt haar opnieuw zodra het probleem bij de ontvanger is verholpen; u hoeft haar niet "
    "opnieuw aan te vragen. Kan dat niet wachten, neem dan zelf contact op met de ontvanger."
)


async def record_failed(session: AsyncSession, r: Routing, message: Envelope, error: str) -> None:
    """Delivery gave up (dead letter): keep it visible on the handover and in the audit log, in the
    caller's transaction (the one that writes the dead letter).

    A handover that never reached its receiver (still VERZONDEN, never delivered) is marked
    `UNDELIVERED`, and its caseworker is told so once, with what happens now: routing's check does
    not tell them later that the receiver did not answer. A replayed letter that fails again is
    audited again, not told again; one delivered after all clears the mark (`record_delivered`). A
    handover its receiver has or answered is not marked: a repeat of it failed, not the handover.

    A withdrawal notice that failed leaves its handover's status and reason as they are (withdrawn:
    "delivery failed" there read as if the handover had not gone out): its caseworker is told once
    that the receiver does not know yet and may still use the data (rule 10), and to tell it
    meanwhile. A message that names no handover (it failed validation) has nothing to mark; its dead
    letter stands."""
    handover_id = as_code(message.payload.get("handover_id"))
    row = await get_handover(session, handover_id, lock=True) if handover_id is not None else None
    if row is None:
        return
    undelivered = (
        message.type == HANDOVER and row.status == HandoverStatus.VERZONDEN.value and row.delivered_at is None
    )
    notice = message.type == HANDOVER_WITHDRAWN
    if notice:
        tell = not await _notice_told(session, row)
    else:
        tell = undelivered and row.status_reason != UNDELIVERED
    if undelivered:
        await session.execute(
            update(handovers)
            .where(handovers.c.id == row.id)
            .values(status_reason=UNDELIVERED, updated_at=utcnow())
        )
    entry = AuditEntry(
        action=FAILED,
        user=SYSTEM,
        youth_key=row.youth_key,
        objects={
            "handover_id": row.id,
            "receiver": row.receiver_organisation,
            "type": message.type,
            "error": error,
            "caseworker_told": tell,
        },
    )
    await write_audit(session, entry, transaction_id=message.transaction_id, system=SYSTEM)
    if tell and notice:
        await messages.tell_requester(
            session,
            r.mail_topic,
            row,
            template="handover.notice_undelivered",
            transaction_id=message.transaction_id,
            detail="de ontvanger weet nog niet dat de toestemming is ingetrokken: het bericht daarover is"
            " niet afgeleverd." + _NOTICE_NOW,
        )
    elif tell:
        await _tell(session, r, row, message)


async def _notice_told(session: AsyncSession, row: Any) -> bool:
    """Whether the caseworker was told already that the handover's withdrawal notice failed."""
    found = await session.execute(
        select(audit_log.c.objects).where(
            audit_log.c.youth_key == row.youth_key, audit_log.c.action == FAILED
        )
    )
    return any(
        (o := entry.objects or {}).get("handover_id") == row.id
        and o.get("type") == HANDOVER_WITHDRAWN
        and o.get("caseworker_told")
        for entry in found
    )


async def _tell(session: AsyncSession, r: Routing, row: Any, message: Envelope) -> None:
    """The caseworker's notice: ids only (`tell_requester`), never the error, which is the
    receiver's and the operators' business and may quote what the receiver said."""
    if row.attempted_at is not None:  # POSTed without a 2xx: the receiver may have read it
        detail = messages.MAY_HAVE + "; de aflevering is als mislukt opgegeven."
    else:
        detail = "zij is niet afgeleverd, want de aflevering bij de ontvanger is mislukt."
    await messages.tell_requester(
        session,
        r.mail_topic,
        row,
        template="handover.undelivered",
        transaction_id=message.transaction_id,
        detail=detail + _WHAT_NOW,
    )


def delivered_after_all(row: Any) -> dict[str, Any]:
    """What a delivery changes besides its stamp on a handover marked `UNDELIVERED` (a replayed dead
    letter): the mark goes, and the time it was sent becomes now, so that the receiver has the answer
    time it never had before routing's check says it did not answer."""
    if row.status != HandoverStatus.VERZONDEN.value or row.status_reason != UNDELIVERED:
        return {}
    return {"status_reason": None, "sent_at": utcnow()}
