"""Reading and writing caseworkers; who receives a caseworker's mail on a given day (rule 16)."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import date

from sqlalchemy import delete, insert, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession

from hub.directory.ids import CASEWORKER_ID_MAX
from hub.directory.tables import absences, caseworkers
from hub.errors import PermanentError
from schemas.caseworker import Absence, Caseworker


class CaseworkerNotFound(PermanentError):
    """No caseworker with this id."""


async def get_caseworker(session: AsyncSession, caseworker_id: str) -> Caseworker:
    """One caseworker with their absences; CaseworkerNotFound when unknown."""
    found = (await _load(session, {caseworker_id}))[caseworker_id]
    if found is None:
        raise _not_found(caseworker_id)
    return found


async def list_caseworkers(session: AsyncSession) -> list[Caseworker]:
    """Everyone in the directory, by id."""
    ids = set((await session.execute(select(caseworkers.c.caseworker_id))).scalars())
    loaded = await _load(session, ids)
    return [person for _, person in sorted(loaded.items()) if person is not None]


async def lock_caseworker(session: AsyncSession, caseworker_id: str) -> Caseworker | None:
    """One caseworker, kept from other writers until the transaction ends; None when unknown.

    PostgreSQL locks the row (FOR UPDATE); a store transaction on SQLite holds the write lock from
    its BEGIN IMMEDIATE. A row that does not exist cannot be locked: `create_caseworker` says
    whether another transaction created it in between.
    """
    if session.get_bind().dialect.name == "postgresql":
        q = select(caseworkers.c.caseworker_id).where(caseworkers.c.caseworker_id == caseworker_id)
        if (await session.execute(q.with_for_update())).first() is None:
            return None
    return (await _load(session, {caseworker_id}))[caseworker_id]


async def create_caseworker(session: AsyncSession, cw: Caseworker) -> bool:
    """Add a caseworker and their absences unless the id is taken; True when this call added them.

    One statement decides (INSERT ... ON CONFLICT DO NOTHING): a concurrent creator is waited for,
    never answered with the primary key's IntegrityError.
    """
    _check_widths(cw)
    values = cw.model_dump(exclude={"absences"}, mode="json")
    make = postgresql.insert if session.get_bind().dialect.name == "postgresql" else sqlite.insert
    added = await session.execute(
        make(caseworkers)
        .values(**values)
        .on_conflict_do_nothing(index_elements=["caseworker_id"])
        .returning(caseworkers.c.caseworker_id)
    )
    if added.first() is None:
        return False
    await _insert_absences(session, cw)
    return True


async def replace_caseworker(session: AsyncSession, cw: Caseworker) -> None:
    """Overwrite a caseworker that exists, with their absences."""
    _check_widths(cw)
    values = cw.model_dump(exclude={"absences", "caseworker_id"}, mode="json")
    await session.execute(
        update(caseworkers).where(caseworkers.c.caseworker_id == cw.caseworker_id).values(**values)
    )
    await session.execute(delete(absences).where(absences.c.caseworker_id == cw.caseworker_id))
    await _insert_absences(session, cw)


async def upsert_caseworker(session: AsyncSession, cw: Caseworker) -> bool:
    """Create or replace a caseworker and their absences; True when this call created them."""
    if await create_caseworker(session, cw):
        return True
    await replace_caseworker(session, cw)
    return False


def _check_widths(cw: Caseworker) -> None:
    """ValueError for an id wider than its column.

    The model takes any `Code` (100 characters): the check here keeps PostgreSQL from refusing the
    statement halfway through a transaction (SQLite stores the longer id without a word).
    """
    for name, value in (("caseworker_id", cw.caseworker_id), ("delegate_id", cw.delegate_id)):
        if value is not None and len(value) > CASEWORKER_ID_MAX:
            raise ValueError(f"{name}: longer than {CASEWORKER_ID_MAX} characters")


async def _insert_absences(session: AsyncSession, cw: Caseworker) -> None:
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
    found = (await mail_recipients(session, [caseworker_id], day))[caseworker_id]
    if isinstance(found, PermanentError):
        raise found
    return found


async def mail_recipients(
    session: AsyncSession, caseworker_ids: Iterable[str], day: date
) -> dict[str, Caseworker | PermanentError]:
    """`mail_recipient` for many caseworkers at once, in two statements per link of the longest
    delegate chain: for each id its reader on `day`, or the PermanentError `mail_recipient` raises."""
    ids = list(dict.fromkeys(caseworker_ids))
    people: dict[str, Caseworker | None] = {}
    found: dict[str, Caseworker | PermanentError] = {}
    pending = set(ids)
    while pending:  # each round loads ids not loaded before (unknown ones as None), so it ends
        people |= await _load(session, pending)
        pending = set()
        for caseworker_id in ids:
            try:
                found[caseworker_id] = _reader(caseworker_id, people, day)
            except _NotLoaded as missing:
                pending.add(missing.caseworker_id)
            except PermanentError as exc:
                found[caseworker_id] = exc
    return found


def _not_found(caseworker_id: str) -> CaseworkerNotFound:
    return CaseworkerNotFound(f"caseworker {caseworker_id!r} is not in the directory")


class _NotLoaded(Exception):
    def __init__(self, caseworker_id: str) -> None:
        self.caseworker_id = caseworker_id


def _reader(caseworker_id: str, people: dict[str, Caseworker | None], day: date) -> Caseworker:
    """Follow the delegates from `caseworker_id` to whoever is active and present on `day`."""

    def get(cid: str) -> Caseworker:
        if cid not in people:
            raise _NotLoaded(cid)
        person = people[cid]
        if person is None:
            raise _not_found(cid)
        return person

    seen: set[str] = set()
    current = get(caseworker_id)
    while not current.active or current.is_absent_on(day):
        seen.add(current.caseworker_id)
        if current.delegate_id is None or current.delegate_id in seen:
            raise PermanentError(f"caseworker {caseworker_id!r} is away and has no reachable delegate")
        current = get(current.delegate_id)
    return current


async def _load(session: AsyncSession, caseworker_ids: set[str]) -> dict[str, Caseworker | None]:
    """These caseworkers with their absences; None for an id not in the directory."""
    loaded: dict[str, Caseworker | None] = dict.fromkeys(caseworker_ids)
    ordered = sorted(caseworker_ids)
    for start in range(0, len(ordered), 500):
        chunk = ordered[start : start + 500]
        spans: dict[str, list[Absence]] = {}
        q = select(absences).where(absences.c.caseworker_id.in_(chunk)).order_by(absences.c.start)
        for span in (await session.execute(q)).all():
            spans.setdefault(span.caseworker_id, []).append(Absence(start=span.start, end=span.end))
        rows = await session.execute(select(caseworkers).where(caseworkers.c.caseworker_id.in_(chunk)))
        for row in rows.all():
            loaded[row.caseworker_id] = Caseworker(
                caseworker_id=row.caseworker_id,
                name=row.name,
                email=row.email,
                phone=row.phone,
                team=row.team,
                meldingsbevoegd=row.meldingsbevoegd,
                delegate_id=row.delegate_id,
                active=row.active,
                absences=spans.get(row.caseworker_id, []),
            )
    return loaded
