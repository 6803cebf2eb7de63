"""Outbox rows parked by the relay (larger than the brokers take): listing,
releasing and discarding them. Every release and discard is audited; a release puts the row back at
the end of the outbox as it was, so it goes out once the brokers' limit allows it."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pydantic import TypeAdapter
from sqlalchemy import delete, insert, select

from hub.audit import AuditEntry, write_audit
from hub.clock import aware
from hub.ops.dlq import Reason
from hub.store import Store
from hub.store.tables import outbox, outbox_parked
from schemas.envelope import H_TRANSACTION_ID

SYSTEM = "ketenhub-ops"
# A release or discard needs a reason as a dead letter's discard does: it is all the audit log says why.
REASON = TypeAdapter(Reason)


@dataclass(frozen=True)
class ParkedRow:
    """A parked row as an operator sees it: no key or payload (they hold personal data)."""

    id: int
    topic: str
    message_id: str | None
    size: int
    created_at: datetime
    parked_at: datetime
    reason: str


async def parked_rows(store: Store) -> list[ParkedRow]:
    """Every parked row, oldest first."""
    async with store.connect() as conn:
        rows = (
            await conn.execute(
                select(
                    outbox_parked.c.id,
                    outbox_parked.c.topic,
                    outbox_parked.c.message_id,
                    outbox_parked.c.size,
                    outbox_parked.c.created_at,
                    outbox_parked.c.parked_at,
                    outbox_parked.c.reason,
                ).order_by(outbox_parked.c.id)
            )
        ).all()
    return [
        ParkedRow(r.id, r.topic, r.message_id, r.size, aware(r.created_at), aware(r.parked_at), r.reason)
        for r in rows
    ]


class NotParked(LookupError):
    """No parked row has that id (never parked, or released or discarded already)."""


class StillTooLarge(ValueError):
    """The row is still larger than the brokers' limit the hub is configured with."""


async def release(store: Store, row_id: int, operator: str, reason: str, *, max_message_bytes: int) -> int:
    """Put a parked row back at the end of the outbox; returns its new outbox id. Refused while the
    row is still over `max_message_bytes`: it would only be parked again. A reason that is no Reason
    raises pydantic's ValidationError (a ValueError)."""
    REASON.validate_python(reason)
    async with store.transaction() as session:
        row = await _take(session, row_id)  # two operators at once: the second finds nothing
        if row.size > max_message_bytes:
            raise StillTooLarge(
                f"parked row {row_id} is {row.size:,} bytes, over kafka.max_message_bytes"
                f" ({max_message_bytes:,}): raise the brokers' limit and that setting first, or discard it"
            )  # the transaction rolls back: the row stays parked
        new_id = (
            await session.execute(
                insert(outbox)
                .values(
                    topic=row.topic,
                    key=row.key,
                    value=row.value,
                    headers=row.headers,
                    message_id=row.message_id,
                    created_at=row.created_at,
                )
                .returning(outbox.c.id)
            )
        ).scalar_one()
        await _audit(session, "outbox.released", row, operator, reason, new_outbox_id=new_id)
    return int(new_id)


async def discard(store: Store, row_id: int, operator: str, reason: str) -> None:
    """Drop a parked row for good, with a reason (ValidationError when it is no Reason)."""
    REASON.validate_python(reason)
    async with store.transaction() as session:
        row = await _take(session, row_id)
        await _audit(session, "outbox.discarded", row, operator, reason)


async def _take(session: Any, row_id: int) -> Any:
    """Delete the parked row and return it; NotParked when it is not (or no longer) there."""
    row = (
        await session.execute(
            delete(outbox_parked).where(outbox_parked.c.id == row_id).returning(*outbox_parked.c)
        )
    ).one_or_none()
    if row is None:
        raise NotParked(row_id)
    return row


_YOUTH_KEY = re.compile(r"[0-9a-f]{64}")  # HMAC-SHA256 of a BSN, as the hub keys its own messages


async def _audit(session: Any, action: str, row: Any, operator: str, reason: str, **more: Any) -> None:
    transaction_id = (row.headers or {}).get(H_TRANSACTION_ID)
    if not (isinstance(transaction_id, str) and len(transaction_id) <= 200):
        transaction_id = None
    # A dead letter's key is whatever its sender used (even a BSN); only the hub's own youth keys
    # go into the audit log, which is kept for years.
    own = ".dlq." not in row.topic  # (hub.ops.health.is_dlq)
    youth = row.key if own and row.key and _YOUTH_KEY.fullmatch(row.key) else None
    await write_audit(
        session,
        AuditEntry(
            action=action,
            user=operator,
            youth_key=youth,
            objects={
                "parked_id": row.id,
                "outbox_id": row.outbox_id,
                "topic": row.topic,
                "message_id": row.message_id,
                "size": row.size,
                # The only record of why: the parked row is deleted by a release or discard. An
                # operator's reason names no BSN (`Reason`), and is about the message, not the youth.
                "reason": reason,
                **more,
            },
        ),
        transaction_id=transaction_id,
        system=SYSTEM,
    )
