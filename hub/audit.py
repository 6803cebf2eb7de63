"""The audit log (rule 18): one append-only entry per disclosure, read and change of personal data."""

from __future__ import annotations

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


async def write_audit(
    session: AsyncSession, entry: AuditEntry, *, transaction_id: str | None, system: str
) -> None:
    """Append an entry in the caller's transaction, so it exists exactly when the act does."""
    await session.execute(
        insert(audit_log).values(
            at=utcnow(),
            action=entry.action,
            youth_key=entry.youth_key,
            user=entry.user,
            on_behalf_of=entry.on_behalf_of,
            system=system,
            objects=entry.objects,
            transaction_id=transaction_id,
            legal_basis=entry.legal_basis,
        )
    )
