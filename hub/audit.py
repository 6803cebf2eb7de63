"""The audit log (rule 18): one append-only entry per disclosure, read and change of personal data."""

from __future__ import annotations

from contextvars import ContextVar
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import insert
from sqlalchemy.ext.asyncio import AsyncSession

from hub.store.tables import audit_log
from schemas.envelope import utcnow


class AuditEntry(BaseModel):
    """When, what action, which youth (pseudonymous key), which user, on whose behalf, which objects."""

    model_config = ConfigDict(extra="forbid")

    action: str = Field(min_length=1, max_length=100)
    user: str = Field(min_length=1, max_length=200)
    youth_key: str | None = None
    on_behalf_of: str | None = None
    objects: dict[str, Any] = Field(default_factory=dict)
    legal_basis: str | None = None


# The outside system through which this request acts (rule 18: "from which system"): the case
# system (Aurah, the portal) that named the caseworker. Set per request; other tasks never see it.
CALLER: ContextVar[str | None] = ContextVar("audit_caller", default=None)


def audit_row(
    action: str,
    user: str,
    *,
    at: datetime,
    system: str,
    transaction_id: str | None,
    youth_key: str | None = None,
    on_behalf_of: str | None = None,
    objects: dict[str, Any] | None = None,
    legal_basis: str | None = None,
) -> dict[str, Any]:
    """One audit_log row, for writing many in one statement (`write_audits`) on a hot path; the
    callers' actions and users are their own constants, so no AuditEntry is validated per row."""
    if (caller := CALLER.get()) is not None:
        system = f"{system} via {caller}"[:200]
    return {
        "at": at,
        "action": action,
        "youth_key": youth_key,
        "user": user,
        "on_behalf_of": on_behalf_of,
        "system": system,
        "objects": objects or {},
        "transaction_id": transaction_id,
        "legal_basis": legal_basis,
    }


# Built once: SQLAlchemy works out a statement's cache key on every new statement object.
_INSERT_AUDIT = insert(audit_log)


async def write_audits(session: AsyncSession, rows: list[dict[str, Any]]) -> None:
    """Append `audit_row`s in the caller's transaction, in one executemany."""
    if rows:
        await session.execute(_INSERT_AUDIT, rows)


async def write_audit(
    session: AsyncSession, entry: AuditEntry, *, transaction_id: str | None, system: str
) -> None:
    """Append an entry in the caller's transaction, so it exists exactly when the act does."""
    row = audit_row(
        entry.action, entry.user, at=utcnow(), system=system, transaction_id=transaction_id,
        youth_key=entry.youth_key, on_behalf_of=entry.on_behalf_of, objects=entry.objects,
        legal_basis=entry.legal_basis,
    )  # fmt: skip
    await session.execute(insert(audit_log).values(**row))
