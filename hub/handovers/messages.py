"""The messages routing sends: handovers and withdrawal notices to receivers, notices to caseworkers."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from schemas.envelope import Envelope
from schemas.notification import MailNotification

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
    HULPVRAAG category) when that is covered, the meeting."""
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
    """Rule 10: tell a receiver that the consent behind a handover it got was withdrawn."""
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


def caseworker_notice(row: Any, *, template: str, transaction_id: str, detail: str) -> Envelope:
    """A MailNotification for the requesting caseworker; ids only, never a BSN or a name."""
    subjects = {
        "handover.waiting": "Overdracht wacht op toestemming",
        "handover.unanswered": "Overdracht niet op tijd beantwoord",
        "handover.declined": "Overdracht geweigerd",
        "handover.lapsed": "Overdracht niet afgeleverd: de toestemming dekt haar niet meer",
    }
    body = (
        f"Overdracht {row.id} (verwijzing {row.referral_id}) naar {row.receiver_organisation}: {detail}\n"
        "Bekijk de overdracht in het overzicht van overdrachten."
    )
    mail = MailNotification(
        recipient_caseworker_id=row.from_caseworker,
        template=template,
        subject=subjects[template],
        body_text=body,
        case_reference=row.referral_id,
    )
    return Envelope.new(
        type_="MailNotification",
        transaction_id=transaction_id,
        correlation_id=row.referral_id,
        source=SOURCE,
        payload=mail.model_dump(mode="json"),
    )
