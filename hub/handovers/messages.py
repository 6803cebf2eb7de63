"""The messages routing sends: handovers and withdrawal notices to receivers, notices to caseworkers."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from hub.notify.service import notify_caseworker
from schemas.envelope import Envelope

HANDOVER = "Handover"
HANDOVER_WITHDRAWN = "HandoverWithdrawn"
SOURCE = "ketenhub-routing"


def handover_message(
    row: Any,
    *,
    data: dict[str, Any],
    shared: list[str],
    transaction_id: str,
    caseworker: dict[str, Any] | None,
    with_summary: bool = True,
) -> Envelope:
    """A handover as the receiver gets it: only the covered categories' data, the summary (the
    HULPVRAAG category) when that is covered, the meeting. The youth key is for the hub's dispatch
    (routing, locks, ladder keys): the receiver gets its own `youth_ref` in its place
    (connectors.receivers.outgoing)."""
    return Envelope.new(
        type_=HANDOVER,
        transaction_id=transaction_id,
        correlation_id=row.id,
        source=SOURCE,
        payload={
            "handover_id": row.id,
            "referral_id": row.referral_id,
            "youth_key": row.youth_key,
            "receiver_organisation": row.receiver_organisation,
            "receiver_type": row.receiver_type,
            "purpose": row.purpose,
            "consent_id": row.consent_id,
            "legal_basis": row.legal_basis,
            "from_caseworker": caseworker or {"caseworker_id": row.from_caseworker},
            "data_categories": shared,
            "data": data,
            "summary": row.summary if with_summary else None,
            "joint_meeting": row.joint_meeting,
        },
    )


def withdrawal_notice(row: Any, *, reason: str, at: datetime, transaction_id: str) -> Envelope:
    """Rule 10: tell a receiver that the consent behind a handover it got was withdrawn; it gets the
    `youth_ref` of the handover in place of the youth key, as there."""
    return Envelope.new(
        type_=HANDOVER_WITHDRAWN,
        transaction_id=transaction_id,
        correlation_id=row.id,
        source=SOURCE,
        payload={
            "handover_id": row.id,
            "receiver_organisation": row.receiver_organisation,
            "receiver_type": row.receiver_type,
            "youth_key": row.youth_key,
            "reason": reason,
            "withdrawn_at": at.isoformat(),
            "instruction": "De toestemming is ingetrokken: gebruik de ontvangen gegevens niet verder.",
        },
    )


_SUBJECTS = {
    "handover.waiting": "Overdracht wacht op toestemming",
    "handover.unanswered": "Overdracht niet op tijd beantwoord",
    "handover.declined": "Overdracht geweigerd",
    "handover.lapsed": "Overdracht niet afgeleverd: de toestemming dekt haar niet meer",
    "handover.undelivered": "Overdracht niet afgeleverd: de aflevering bij de ontvanger is mislukt",
    "handover.notice_undelivered": "Intrekking niet afgeleverd: de ontvanger weet nog niet dat de "
    "toestemming is ingetrokken",
}
# Said of a handover sent to its receiver without a 2xx answer (`attempted_at`): it may be there.
MAY_HAVE = "zij is niet bevestigd afgeleverd, maar de ontvanger kan haar wel al hebben"


async def tell_requester(
    session: AsyncSession, mail_topic: str, row: Any, *, template: str, transaction_id: str, detail: str
) -> None:
    """Tell the caseworker who asked for the handover (ids only, never a BSN or a name), through the
    one door for caseworker mail: their delegate reads it while they are away, the mail says for whom;
    when nobody can read it, the mail connector dead-letters it, a problem for administrators, and
    its dead letter is replayed once the directory is fixed."""
    text = (
        f"Overdracht {row.id} (verwijzing {row.referral_id}) naar {row.receiver_organisation}: {detail}\n"
        "Bekijk de overdracht in het overzicht van overdrachten."
    )
    context = {"subject": _SUBJECTS[template], "detail": text, "case_reference": row.referral_id}
    await notify_caseworker(
        session,
        mail_topic,
        row.from_caseworker,
        template,
        context,
        transaction_id,
        key=row.youth_key,
        youth_key=row.youth_key,
        user=SOURCE,
        # a notice exists nowhere else: with nobody to read it now, it is dead-lettered when sent and
        # replayed once the directory is fixed, rather than lost
        queue_unreachable=True,
    )
