"""Borging (rule 17): a long-absent or departed caseworker's active signals move to their delegate.

Per caseworker in one transaction: every active signal gets the delegate as contact (the
Verwijsindex hears of it through the connector: `request_contact_change` queues the command),
the move is audited, and the delegate gets one summary mail (signal and match ids only, the first
of them when there are many). It is queued also when nobody reads the delegate's mail now: the mail
connector dead-letters it, and its dead letter is replayed once they are back. Running it again finds
nothing left to move: the daily check is idempotent. A borging that cannot be done
(no delegate, or it failed) is one open problem per caseworker for an administrator, refreshed each
round it is found again, in every hub process, rather than one more row each time.

The hub resolves those problems itself on what a borging of the caseworker finds, which is what
raised them (the daily round, or an administrator's POST .../borging): the signals moved, or none
are left to move, resolve both kinds; a borging that ran without an error resolves
`borging_mislukt`; a caseworker who is back (in service and not away that day) has both resolved
at the next round. One still away, though not long enough for borging to be due, keeps them: an
administrator's borging (POST .../borging) raises them for such a caseworker without a delegate, and
nobody has taken over yet. A directory change alone resolves nothing: only a borging shows that the
delegate can take the signals over (rule 13: meldingsbevoegd, a phone number the index takes).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import date
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from hub.audit import AuditEntry, write_audit
from hub.directory import CaseworkerNotFound, get_caseworker, list_caseworkers
from hub.errors import PermanentError
from hub.logging import get_logger
from hub.notify.problems import open_problem_caseworkers, record_problem_once, resolve_found
from hub.notify.service import SYSTEM, notify_caseworker
from hub.signals.rules import contact_problem
from hub.signals.service import active_signals_of, request_contact_change
from hub.signals.tables import matches
from schemas.caseworker import Absence, Caseworker
from schemas.envelope import new_id

log = get_logger(__name__)
NO_DELEGATE = "borging_zonder_vervanger"
FAILED = "borging_mislukt"
PROBLEMS = (NO_DELEGATE, FAILED)
_NOT_DUE = "borging niet meer nodig: de medewerker is in dienst en niet (meer) afwezig"


@dataclass
class BorgingResult:
    """What one borging did."""

    caseworker_id: str
    delegate_id: str | None = None
    signal_ids: list[str] = field(default_factory=list)
    match_ids: list[str] = field(default_factory=list)
    problem: str | None = None

    def as_json(self) -> dict[str, Any]:
        """For the API."""
        return {
            "caseworkerId": self.caseworker_id,
            "delegateId": self.delegate_id,
            "signalIds": self.signal_ids,
            "matchIds": self.match_ids,
            "problem": self.problem,
        }


def _merged(absences: Iterable[Absence]) -> list[Absence]:
    """One period per uninterrupted absence: records that overlap or follow on the next day (sick
    leave extended week by week) are joined; both ends stay inclusive."""
    out: list[Absence] = []
    for a in sorted(absences, key=lambda a: (a.start, a.end)):
        if out and (a.start - out[-1].end).days <= 1:
            if a.end > out[-1].end:
                out[-1] = Absence(start=out[-1].start, end=a.end)
        else:
            out.append(a)
    return out


def why(cw: Caseworker, day: date, after_days: int) -> str | None:
    """Why borging is due for `cw` on `day` (Dutch, for the mail), or None when it is not."""
    if not cw.active:
        return "uit dienst is"
    for a in _merged(cw.absences):
        if a.covers(day) and (day - a.start).days + 1 > after_days:
            return f"sinds {a.start.strftime('%d-%m-%Y')} langer dan {after_days} dagen afwezig is"
    return None


async def _successor(session: AsyncSession, cw: Caseworker, day: date, after_days: int) -> Caseworker:
    """Who takes over (rule 17: the delegate): `cw`'s delegate, also one away for a few days (their
    mail goes to their own delegate meanwhile, as every caseworker's does); only past a delegate who
    left, or is away long enough for borging to be due themselves, along the chain to theirs. The
    signals went to whoever read the mail that day: a delegate away for one day handed them on for
    good to someone the caseworker never named. Never `cw` themselves (a chain that leads back to
    them has no delegate; raises PermanentError). They must be able to be a signal's contact person
    (rule 13: meldingsbevoegd; a phone number the index takes); if not, there is no delegate
    either, and the signals stay where they are."""
    seen, current = {cw.caseworker_id}, cw
    while True:
        if current.delegate_id is None:
            raise PermanentError(
                f"caseworker {cw.caseworker_id!r} has no delegate"
                if current is cw
                else f"caseworker {cw.caseworker_id!r} has no reachable delegate: {current.caseworker_id!r},"
                " away or gone, has none"
            )
        if current.delegate_id in seen:  # the delegates lead back round
            raise PermanentError(f"caseworker {cw.caseworker_id!r} has no reachable delegate")
        try:
            successor = await get_caseworker(session, current.delegate_id)
        except CaseworkerNotFound as exc:
            raise PermanentError(
                f"caseworker {cw.caseworker_id!r} has no reachable delegate: {exc}"
            ) from None
        if why(successor, day, after_days) is None:  # in service, and not away for long
            break
        seen.add(successor.caseworker_id)
        current = successor
    if (problem := contact_problem(successor)) is not None:
        raise PermanentError(
            f"delegate {successor.caseworker_id!r} of caseworker {cw.caseworker_id!r} cannot take "
            f"signals over: {problem}"
        )
    return successor


async def borg(
    session: AsyncSession,
    hub: Any,
    caseworker_id: str,
    *,
    reason: str,
    user: str,
    transaction_id: str | None = None,
    day: date | None = None,
) -> BorgingResult:
    """Move `caseworker_id`'s active signals to whoever stands in; in the caller's transaction."""
    day = day or hub.today()
    tx_id = transaction_id or new_id()
    cw = await get_caseworker(session, caseworker_id)
    result = BorgingResult(caseworker_id)
    # two rounds at once: one move; a signal past its end date stays (it cannot be moved)
    moving = await active_signals_of(session, caseworker_id, lock=True, day=day)
    if not moving:
        await _resolve(session, caseworker_id, PROBLEMS, "geen actieve signalen meer om over te dragen")
        return result
    try:
        delegate = await _successor(session, cw, day, hub.settings.notify.borging_after_days)
    except PermanentError as exc:
        result.problem = f"borging niet mogelijk: {exc}"
        await record_problem_once(
            session,
            kind=NO_DELEGATE,
            caseworker_id=caseworker_id,
            reference=None,
            reason=f"{result.problem} ({len(moving)} actieve signalen)",
            transaction_id=tx_id,
        )
        await _resolve(session, caseworker_id, (FAILED,), "de borging liep zonder fout, zonder vervanger")
        return result
    result.delegate_id = delegate.caseworker_id
    for signal in moving:
        assert signal.signal_id is not None
        await request_contact_change(session, hub, signal.signal_id, delegate, tx_id, user=user, day=day)
        result.signal_ids.append(signal.signal_id)
    result.match_ids = await _matches_of(session, result.signal_ids)
    entry = AuditEntry(
        action="borging.moved",
        user=user,
        on_behalf_of=caseworker_id,
        objects={
            "to": delegate.caseworker_id,
            "signal_ids": result.signal_ids,
            "match_ids": result.match_ids,
        },
    )
    await write_audit(session, entry, transaction_id=tx_id, system=SYSTEM)
    await _resolve(session, caseworker_id, PROBLEMS, f"signalen overgedragen aan {delegate.caseworker_id}")
    context = {
        "from_name": cw.name,
        "reason": reason,
        "signal_ids": result.signal_ids,
        "match_ids": result.match_ids,
    }
    # The mail exists nowhere else, and the next round finds nothing left to move: when nobody reads
    # the delegate's mail now (away a few days, without a reachable delegate of their own), it is queued
    # all the same, dead-lettered when sent and replayed once they are back, rather than lost.
    await notify_caseworker(
        session, hub, delegate.caseworker_id, "borging", context, tx_id,
        case_reference=f"borging-{caseworker_id}", user=user, day=day, queue_unreachable=True,
    )  # fmt: skip
    log.info("borging done", caseworker_id=caseworker_id, to=delegate.caseworker_id, signals=len(moving))
    return result


async def _matches_of(session: AsyncSession, signal_ids: list[str]) -> list[str]:
    """The ids of the matches on `signal_ids`, sorted; asked 500 signals at a time, as a caseworker may
    hold more than a statement takes parameters."""
    found: list[str] = []
    for start in range(0, len(signal_ids), 500):
        q = select(matches.c.match_id).where(matches.c.signal_id.in_(signal_ids[start : start + 500]))
        found += (await session.execute(q)).scalars()
    return sorted(found)


async def check_borging(hub: Any, *, day: date | None = None) -> list[BorgingResult]:
    """The daily check: borging for everyone who left or is away longer than the setting allows."""
    day = day or hub.today()
    after = hub.settings.notify.borging_after_days
    async with hub.store.transaction() as session:
        everyone = await list_caseworkers(session)
        due = [(cw.caseworker_id, r) for cw in everyone if (r := why(cw, day, after))]
        # a caseworker back at work (borging not due) has no borging problem either; one away, if not
        # long enough for borging to be due, keeps what an administrator's borging found
        back = {cw.caseworker_id for cw in everyone if cw.active and not cw.is_absent_on(day)}
        for caseworker_id in sorted(await open_problem_caseworkers(session, PROBLEMS) & back):
            await _resolve(session, caseworker_id, PROBLEMS, _NOT_DUE)
    results = []
    for caseworker_id, reason in due:
        try:
            async with hub.store.transaction() as session:  # one caseworker per transaction
                results.append(
                    await borg(session, hub, caseworker_id, reason=reason, user="borging", day=day)
                )
        except Exception as exc:  # one caseworker's failure does not hold up the others' borging
            results.append(await _failed(hub, caseworker_id, exc))
    if any(r.signal_ids for r in results):
        hub.relay.wake()
    return results


async def _resolve(
    session: AsyncSession, caseworker_id: str, kinds: tuple[str, ...], resolution: str
) -> None:
    """The hub resolves `caseworker_id`'s open borging problems of `kinds`: a borging showed them gone."""
    await resolve_found(session, kinds=kinds, caseworker_id=caseworker_id, resolution=resolution, by=SYSTEM)


async def _failed(hub: Any, caseworker_id: str, exc: Exception) -> BorgingResult:
    """Record, for an administrator, a borging that failed and rolled back; it is tried again next round."""
    problem = f"borging mislukt ({type(exc).__name__}); de volgende ronde probeert het opnieuw"
    log.warning(
        "borging failed; the next round tries again", caseworker_id=caseworker_id, error=type(exc).__name__
    )
    async with hub.store.transaction() as session:
        await record_problem_once(
            session,
            kind=FAILED,
            caseworker_id=caseworker_id,
            reference=None,
            reason=problem,
            transaction_id=None,
        )
    return BorgingResult(caseworker_id, problem=problem)


def borging_loop(hub: Any):  # type: ignore[no-untyped-def]
    """A background task for `hub.background`: check at start, then every `borging_interval_s`."""

    async def run() -> None:
        while True:
            try:
                await check_borging(hub)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("borging check failed; will retry next round", error=type(exc).__name__)
            await asyncio.sleep(hub.settings.notify.borging_interval_s)

    return run
