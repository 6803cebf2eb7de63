"""Outbox rows parked by the relay (larger than the brokers take): listing,
releasing and discarding them. Every release and discard is audited; a release puts the row back at
the end of the outbox as it was, so it goes out once the brokers' limit allows it."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pydantic import TypeAdapter
from sqlalchemy import insert, select, update

from hub.audit import AuditEntry, write_audit
from hub.clock import aware
from hub.ops.dlq import Reason
from hub.ops.masking import show_headers
from hub.store import Store
from hub.store.tables import outbox, outbox_parked
from schemas.envelope import H_MESSAGE_ID, H_TRANSACTION_ID, is_id, trace_id, utcnow
from schemas.pseudonym import is_youth_key

SYSTEM = "ketenhub-ops"
# A release or discard needs a reason as a dead letter's discard does (the audit log records its length).
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
                )
                .where(outbox_parked.c.resolved.is_(None))
                .order_by(outbox_parked.c.id)
            )
        ).all()
    return [
        ParkedRow(
            r.id, r.topic, audited_message_id(r), r.size, aware(r.created_at), aware(r.parked_at), r.reason
        )
        for r in rows
    ]


def _dead_letter(row: Any) -> bool:
    return ".dlq." in row.topic  # (hub.ops.health.is_dlq)


def audited_message_id(row: Any) -> str | None:
    """A row's message id for an operator and the audit log: a dead letter's is its sender's own
    header (a name, even), masked as the console masks it."""
    message_id: str | None = row.message_id
    if message_id is None or not _dead_letter(row):
        return message_id
    return show_headers({H_MESSAGE_ID: message_id}, unmasked=False)[H_MESSAGE_ID]


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
        row = await _take(session, row_id, "released", operator, reason)  # two at once: one takes it
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
        row = await _take(session, row_id, "discarded", operator, reason)
        await _audit(session, "outbox.discarded", row, operator, reason)


async def _take(session: Any, row_id: int, action: str, operator: str, reason: str) -> Any:
    """Resolve the parked row and return it as it was; NotParked when it is not (or no longer) parked.

    The row stays, emptied of its record, with who resolved it and why (the reason is kept here, not
    in the audit log, which is kept for years), until its term ends (`Relay.purge_sent`)."""
    t = outbox_parked
    row = (await session.execute(select(t).where(t.c.id == row_id, t.c.resolved.is_(None)))).one_or_none()
    if row is None:
        raise NotParked(row_id)
    done = await session.execute(
        update(t)
        .where(t.c.id == row_id, t.c.resolved.is_(None))  # two operators at once: one of them
        .values(
            resolved=action,
            resolved_at=utcnow(),
            resolved_by=operator[:100],
            resolution=reason,
            key=None,
            value=b"",
            headers={},
        )
    )
    if done.rowcount != 1:
        raise NotParked(row_id)
    return row


async def _audit(session: Any, action: str, row: Any, operator: str, reason: str, **more: Any) -> None:
    # A dead letter's ids and key are whatever its sender used (a name, a BSN even); the audit log is
    # kept for years. Its transaction id as the spine takes one in (rule 19: not a name, a UUID made
    # from it), only the hub's own youth keys, and its message id masked when it may be personal.
    found = (row.headers or {}).get(H_TRANSACTION_ID)
    transaction_id = trace_id(found) if isinstance(found, str) and is_id(found) else None
    youth = row.key if not _dead_letter(row) and is_youth_key(row.key) else None
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
                "message_id": audited_message_id(row),
                "size": row.size,
                # An operator's free text, and the audit log is kept for years and never blanked
                # (rule 18): a name typed into it would stay there. As for a dead letter's discard,
                # only its length; `ketenhub outbox release/discard --help` says so.
                "reason_length": len(reason),
                **more,
            },
        ),
        transaction_id=transaction_id,
        system=SYSTEM,
    )
