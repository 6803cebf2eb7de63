"""What receiver delivery asks of the store: may this still go out, and record that it went out."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from hub.audit import AuditEntry, write_audit
from hub.handovers.messages import HANDOVER, HANDOVER_WITHDRAWN
from hub.handovers.tables import handovers
from schemas._base import as_code
from schemas.envelope import Envelope, utcnow
from schemas.handover import HandoverStatus

SYSTEM = "ketenhub-receivers"


async def still_deliverable(conn: AsyncSession | AsyncConnection, message: Envelope) -> bool:
    """Rule 10 at the last moment: a withdrawn handover does not leave; a withdrawal notice is sent
    only to a receiver that actually got the handover."""
    handover_id = as_code(message.payload.get("handover_id"))
    if handover_id is None:
        return False
    row = (
        await conn.execute(
            select(handovers.c.status, handovers.c.delivered_at).where(handovers.c.id == handover_id)
        )
    ).first()
    if row is None:
        return False
    if message.type == HANDOVER:
        return bool(row.status != HandoverStatus.INGETROKKEN.value)
    if message.type == HANDOVER_WITHDRAWN:
        return row.delivered_at is not None
    return False


async def record_delivered(session: AsyncSession, message: Envelope, *, channel: str) -> None:
    """The receiver has it: stamp the handover and write the disclosure to the audit log (rule 18)."""
    p: dict[str, Any] = message.payload
    handover_id = as_code(p.get("handover_id"))
    row = None
    if handover_id is not None:
        row = (await session.execute(select(handovers).where(handovers.c.id == handover_id))).first()
    if row is None:  # it went out, so it is audited: the ladder's own entry, when this one cannot be
        raise ValueError("the delivered message names no handover this hub knows")
    if message.type == HANDOVER:
        await session.execute(
            update(handovers)
            .where(handovers.c.id == row.id)
            .values(delivered_at=utcnow(), updated_at=utcnow())
        )
        action = "handover.disclosed"
        objects = {
            "categories": p.get("data_categories", []),
            "consent_id": p.get("consent_id"),
            "purpose": p.get("purpose"),
        }
    else:
        action, objects = "handover.withdrawal_told", {"reason": p.get("reason")}
    entry = AuditEntry(
        action=action,
        user=row.from_caseworker,
        youth_key=row.youth_key,
        on_behalf_of="Halt Den Haag",
        objects={
            "handover_id": row.id,
            "referral_id": row.referral_id,
            "receiver": row.receiver_organisation,
            "channel": channel,
            "message_id": message.message_id,
            **objects,
        },
        legal_basis=row.legal_basis,
    )
    await write_audit(session, entry, transaction_id=message.transaction_id, system=SYSTEM)


async def record_failed(session: AsyncSession, message: Envelope, error: str) -> None:
    """Delivery gave up (dead letter): keep it visible on the handover and in the audit log. A
    message that names no handover (it failed validation) has nothing to mark; its dead letter
    stands."""
    handover_id = as_code(message.payload.get("handover_id"))
    if handover_id is None:
        return
    row = (await session.execute(select(handovers).where(handovers.c.id == handover_id))).first()
    if row is None:
        return
    await session.execute(
        update(handovers)
        .where(handovers.c.id == row.id)
        .values(status_reason="AFLEVERING_MISLUKT", updated_at=utcnow())
    )
    entry = AuditEntry(
        action="handover.delivery_failed",
        user=SYSTEM,
        youth_key=row.youth_key,
        objects={
            "handover_id": row.id,
            "receiver": row.receiver_organisation,
            "type": message.type,
            "error": error,
        },
    )
    await write_audit(session, entry, transaction_id=message.transaction_id, system=SYSTEM)
