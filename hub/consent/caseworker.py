"""Caseworker identity for the caseworker API: the case system's key, and the caseworker it names.

Caseworkers sign in to Halt's case system (Aurah) or the portal in front of the hub, not to the hub.
That system calls the caseworker API with its own partner key (type `zaaksysteem`) and names the
acting caseworker in `X-Medewerker`; the hub accepts only active caseworkers from its directory. A
caseworker id alone opens nothing: without the system's key the answer is 401.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from datetime import date
from typing import TYPE_CHECKING, Annotated, Any

from fastapi import Depends, Header, Request
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from hub.api.problems import HubStarting, Problem
from hub.audit import CALLER, AuditEntry, write_audit
from hub.clock import today
from hub.directory import CaseworkerNotFound, get_caseworker
from hub.directory.service import mail_recipients
from hub.directory.tables import caseworkers
from hub.partners import PartnerType, partner_of_type
from hub.partners.registry import Partner
from schemas.caseworker import Caseworker

if TYPE_CHECKING:
    from hub.store import Store

HEADER = "X-Medewerker"


async def current_caseworker(
    request: Request,
    _system: Annotated[Partner, Depends(partner_of_type(PartnerType.ZAAKSYSTEEM))],
    x_medewerker: Annotated[
        str | None, Header(alias=HEADER, description="id of the acting caseworker")
    ] = None,
) -> Caseworker:
    """The acting caseworker; 401 without the case system's key or an active caseworker's id."""
    hub = request.app.state.hub
    if hub.store is None:
        raise HubStarting()
    if not x_medewerker:
        raise Problem(401, "Niet geauthenticeerd", f"Stuur de medewerker-id mee in de header {HEADER}.")
    try:
        async with hub.store.read() as session:
            cw = await get_caseworker(session, x_medewerker.strip())
    except CaseworkerNotFound:
        cw = None
    if cw is None or not cw.active:
        raise Problem(401, "Niet geauthenticeerd", "Deze medewerker is niet bekend of niet actief.")
    CALLER.set(_system.name)  # this request's audit entries name the case system it came through
    return cw


CurrentCaseworker = Annotated[Caseworker, Depends(current_caseworker)]


async def stands_in_for(
    session: AsyncSession, caseworker: Caseworker, for_ids: Iterable[str], day: date | None = None
) -> bool:
    """Whether `caseworker` stands in for one of `for_ids`: as their delegate, or as whoever reads
    their mail on `day` down a chain of delegates (the delegate away too, their delegate). The hub
    sends such a reader the case's notices and match mails; they must be able to open it."""
    ids = sorted(set(for_ids))
    if not ids:
        return False
    delegates = select(caseworkers.c.caseworker_id).where(
        caseworkers.c.caseworker_id.in_(ids), caseworkers.c.delegate_id == caseworker.caseworker_id
    )
    if (await session.execute(delegates.limit(1))).first() is not None:
        return True
    readers = await mail_recipients(session, ids, day or today())
    return any(
        isinstance(r, Caseworker) and r.caseworker_id == caseworker.caseworker_id for r in readers.values()
    )


async def may_see_case(session: AsyncSession, youth_key: str, caseworker: Caseworker) -> bool:
    """Whether `caseworker` works on this youth's case as the hub knows it: they recorded one of the
    youth's consents, asked for one of its handovers or hold one of its signals, or stand in for
    someone who did (`stands_in_for`); or nobody does yet. Who may open which case is the case
    system's to say; this keeps a caseworker with no part in a youth's case from reading or
    withdrawing what others recorded for it."""
    from hub.consent.tables import consents
    from hub.handovers.tables import handovers
    from hub.signals.tables import signals

    people: set[str] = set()
    for column, key in (
        (consents.c.recorded_by, consents.c.youth_key),
        (handovers.c.from_caseworker, handovers.c.youth_key),
        (signals.c.caseworker_id, signals.c.youth_key),
    ):
        people |= set((await session.execute(select(column).where(key == youth_key).distinct())).scalars())
    if not people or caseworker.caseworker_id in people:
        return True
    return await stands_in_for(session, caseworker, people)


NOT_YOURS = "Geen toegang: u werkt niet aan de zaak van deze jeugdige (en vervangt niemand die dat doet)."


class NotOnCase(Problem):
    """403: the caseworker does not work on the youth's case (`may_see_case`).

    The answer tells its caller that the hub holds a case for the youth, and, for a request that
    names the youth by BSN, that the hub knows that BSN (an unknown one is 404): so the refusal is
    audited under the youth's key (`refusals_audited`), as a disclosure is, and a privacy officer
    sees who tried."""

    def __init__(self, youth_key: str, detail: str = NOT_YOURS) -> None:
        super().__init__(403, "Geen toegang", detail)
        self.youth_key = youth_key


async def require_case(session: AsyncSession, youth_key: str, caseworker: Caseworker) -> None:
    """NotOnCase unless `caseworker` works on the youth's case (or nobody does yet). Take the youth's
    case lock first (hub.store.locks) where what follows makes them one who works on it: else two
    caseworkers' first requests at once both find nobody on the case."""
    if not await may_see_case(session, youth_key, caseworker):
        raise NotOnCase(youth_key)


NOT_ON_CASE = "not_on_case"  # the audited reason of a NotOnCase


@asynccontextmanager
async def refusals_audited(
    store: Store, *, action: str, user: str, transaction_id: str, system: str, **objects: Any
) -> AsyncIterator[None]:
    """Audit a NotOnCase raised inside as `action` under the youth's key, with the reason
    `not_on_case` and `objects` (ids, codes: no free text), in a transaction of its own (the
    request's is rolled back); then let it go on to its caller."""
    try:
        yield
    except NotOnCase as refused:
        entry = AuditEntry(
            action=action,
            user=user,
            youth_key=refused.youth_key,
            objects={"reason": NOT_ON_CASE, **objects},
        )
        async with store.transaction() as session:
            await write_audit(session, entry, transaction_id=transaction_id, system=system)
        raise
