"""Reading and writing caseworkers; who receives a caseworker's mail on a given day (rule 16)."""

from __future__ import annotations

from datetime import date

from sqlalchemy import delete, insert, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from hub.directory.tables import absences, caseworkers
from hub.errors import PermanentError
from schemas.caseworker import Absence, Caseworker


class CaseworkerNotFound(PermanentError):
    """No caseworker with this id."""


async def get_caseworker(session: AsyncSession, caseworker_id: str) -> Caseworker:
    """One caseworker with their absences; CaseworkerNotFound when unknown."""
    row = (
        await session.execute(select(caseworkers).where(caseworkers.c.caseworker_id == caseworker_id))
    ).first()
    if row is None:
        raise CaseworkerNotFound(f"caseworker {caseworker_id!r} is not in the directory")
    spans = (
        await session.execute(
            select(absences.c.start, absences.c.end)
            .where(absences.c.caseworker_id == caseworker_id)
            .order_by(absences.c.start)
        )
    ).all()
    return Caseworker(
        caseworker_id=row.caseworker_id,
        name=row.name,
        email=row.email,
        phone=row.phone,
        team=row.team,
        meldingsbevoegd=row.meldingsbevoegd,
        delegate_id=row.delegate_id,
        active=row.active,
        absences=[Absence(start=s.start, end=s.end) for s in spans],
    )


async def list_caseworkers(session: AsyncSession) -> list[Caseworker]:
    """Everyone in the directory, by id."""
    ids = (
        await session.execute(select(caseworkers.c.caseworker_id).order_by(caseworkers.c.caseworker_id))
    ).scalars()
    return [await get_caseworker(session, i) for i in list(ids)]


async def upsert_caseworker(session: AsyncSession, cw: Caseworker) -> None:
    """Create or replace a caseworker and their absences."""
    values = cw.model_dump(exclude={"absences", "caseworker_id"}, mode="json")
    exists = (
        await session.execute(
            select(caseworkers.c.caseworker_id).where(caseworkers.c.caseworker_id == cw.caseworker_id)
        )
    ).first()
    if exists:
        await session.execute(
            update(caseworkers).where(caseworkers.c.caseworker_id == cw.caseworker_id).values(**values)
        )
    else:
        await session.execute(insert(caseworkers).values(caseworker_id=cw.caseworker_id, **values))
    await session.execute(delete(absences).where(absences.c.caseworker_id == cw.caseworker_id))
    if cw.absences:
        await session.execute(
            insert(absences),
            [{"caseworker_id": cw.caseworker_id, "start": a.start, "end": a.end} for a in cw.absences],
        )


async def mail_recipient(session: AsyncSession, caseworker_id: str, day: date) -> Caseworker:
    """Who reads this caseworker's mail on `day`: themselves, or their delegate while absent or gone.

    Follows a chain of delegates (an absent delegate's own delegate); raises PermanentError when
    nobody reachable is left, so the notice is dead-lettered and shown, never silently dropped.
    """
    seen: set[str] = set()
    current = await get_caseworker(session, caseworker_id)
    while not current.active or current.is_absent_on(day):
        seen.add(current.caseworker_id)
        if current.delegate_id is None or current.delegate_id in seen:
            raise PermanentError(f"caseworker {caseworker_id!r} is away and has no reachable delegate")
        current = await get_caseworker(session, current.delegate_id)
    return current
