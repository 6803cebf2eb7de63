"""Matches from the Verwijsindex feed: stored once by match id, published with the cursor in one go."""

from __future__ import annotations

from datetime import date

from sqlalchemy import insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from hub.audit import AuditEntry, write_audit
from hub.clock import today
from hub.notify.service import record_problem
from hub.notify.tables import mail_problems
from hub.signals.tables import feed_cursor, matches, signals
from hub.spine.outbox import add_to_outbox
from schemas._base import Code, is_token
from schemas.envelope import Envelope, utcnow
from schemas.match import Match
from schemas.signal import SignalStatus

MATCH_TYPE = "Match"
FEED = "verwijsindex-matches"
FEED_INDEX = "verwijsindex-matches.index"  # which index handed out the cursor (connectors.verwijsindex.feed)
SYSTEM = "verwijsindex-connector"
REFUSED_MATCH = "match_overgeslagen"  # the kind of problem an administrator sees


class MatchMessage(Match):
    """Payload of `verwijsindex.match.v1` (type "Match"): the canonical Match plus its owner.

    `caseworker_id` is the signal's contact person when the match arrived; the notifier decides who
    actually reads the mail (delegate on absence, rule 16). Keyed by the youth key.
    """

    caseworker_id: Code


async def read_cursor(session: AsyncSession | AsyncConnection, feed: str = FEED) -> str | None:
    """The stored feed position, or None to start at the beginning."""
    row = (await session.execute(select(feed_cursor.c.cursor).where(feed_cursor.c.feed == feed))).first()
    return row.cursor if row else None


async def write_cursor(session: AsyncSession, cursor: str, feed: str = FEED) -> None:
    """Store the feed position, as the index handed it out, in the caller's transaction.

    A position that cannot be stored would roll back its page, and so every poll after it.
    """
    if not is_token(cursor):
        raise ValueError("a feed cursor is 1-200 characters of text, no NUL or other control character")
    now = utcnow()
    done = await session.execute(
        update(feed_cursor).where(feed_cursor.c.feed == feed).values(cursor=cursor, updated_at=now)
    )
    if done.rowcount == 0:  # type: ignore[attr-defined]
        await session.execute(insert(feed_cursor).values(feed=feed, cursor=cursor, updated_at=now))


def ended_status(status: str, end_date: date, day: date) -> str | None:
    """The status of a signal no longer active on `day`, or None while it is: past its end date it is
    VERLOPEN, though nothing marks that in the hub (the index does)."""
    if status != SignalStatus.ACTIEF.value:
        return status
    return SignalStatus.VERLOPEN.value if end_date < day else None


def match_ignored(signal_id: str, match_id: str, youth_key: str | None, status: str, user: str) -> AuditEntry:
    """The audit entry of a match nobody is told about: its signal is over (rule 18: the index told
    us something about one of our youths)."""
    return AuditEntry(
        action="verwijsindex.match_ignored",
        user=user,
        youth_key=youth_key,
        objects={
            "signal_id": signal_id,
            "match_id": match_id,
            "reason": "signal_not_active",
            "signal_status": status,
        },
    )


async def record_match(
    session: AsyncSession, topic: str, match: Match, transaction_id: str, *, day: date | None = None
) -> bool:
    """Store a match and queue its message; False when it was seen before or is not on our signal.

    A match on a signal the hub no longer holds active (withdrawn, ended, or past its end date on
    `day`, default today) is not passed on: the index made it before it heard of the end. It is
    audited as ignored (rule 18: the index told us something about one of our youths) and not
    stored, so nobody is mailed about a signal that is over.
    """
    seen = (
        await session.execute(select(matches.c.match_id).where(matches.c.match_id == match.match_id))
    ).first()
    if seen is not None:
        return False
    owner = (
        await session.execute(
            select(signals.c.youth_key, signals.c.caseworker_id, signals.c.status, signals.c.end_date).where(
                signals.c.signal_id == match.signal_id
            )
        )
    ).first()
    if owner is None:  # a signal we do not hold (e.g. purged): nothing to tell anyone
        return False
    ended = ended_status(owner.status, owner.end_date, day or today())
    if ended is not None:
        entry = match_ignored(match.signal_id, match.match_id, owner.youth_key, ended, SYSTEM)
        await write_audit(session, entry, transaction_id=transaction_id, system=SYSTEM)
        return False
    await session.execute(
        insert(matches).values(
            match_id=match.match_id,
            signal_id=match.signal_id,
            type=match.type.value,
            counterparts=[c.model_dump(mode="json") for c in match.counterparts],
            received_at=utcnow(),
        )
    )
    payload = MatchMessage(**match.model_dump(), caseworker_id=owner.caseworker_id)
    message = Envelope.new(
        type_=MATCH_TYPE,
        transaction_id=transaction_id,
        correlation_id=match.signal_id,
        source="verwijsindex",
        payload=payload.model_dump(mode="json"),
    )
    await add_to_outbox(session, topic, message, key=owner.youth_key)
    entry = AuditEntry(
        action="verwijsindex.match_received",
        user=SYSTEM,
        youth_key=owner.youth_key,
        objects={"signal_id": match.signal_id, "match_id": match.match_id, "type": match.type.value},
    )
    await write_audit(session, entry, transaction_id=transaction_id, system=SYSTEM)
    return True


async def record_refused_match(
    session: AsyncSession, *, match_id: str | None, signal_id: str | None, reason: str, transaction_id: str
) -> None:
    """A feed entry that could not be read: a problem for an administrator (with its signal's
    caseworker if ours), once per match id, and an audit entry on the youth's key (rule 18: the
    index told us something about one of our youths, and it was not passed on).

    `match_id` and `signal_id` must be valid codes (or None); `reason` must not carry a value.
    The hub never resolves it (it cannot see the index mend its feed): an administrator does, once
    they reported it. Read again (a page asked for again), it is not recorded again, resolved or not:
    it is the same entry, not news.
    """
    if match_id is not None:
        known = select(mail_problems.c.id).where(
            mail_problems.c.kind == REFUSED_MATCH, mail_problems.c.reference == match_id
        )
        if (await session.execute(known.limit(1))).first() is not None:
            return  # the index sent it again (a page asked for again): told once is enough
    ours = None
    if signal_id is not None:
        ours = (
            await session.execute(
                select(signals.c.caseworker_id, signals.c.youth_key).where(signals.c.signal_id == signal_id)
            )
        ).first()
    await record_problem(
        session,
        kind=REFUSED_MATCH,
        caseworker_id=ours.caseworker_id if ours else None,
        reference=match_id,
        reason=reason,
        transaction_id=transaction_id,
    )
    entry = AuditEntry(
        action="verwijsindex.match_refused",
        user=SYSTEM,
        youth_key=ours.youth_key if ours else None,
        objects={"match_id": match_id, "signal_id": signal_id if ours else None},
    )
    await write_audit(session, entry, transaction_id=transaction_id, system=SYSTEM)
