"""Problems an administrator must act on (`mail_problems`): recorded, found again, resolved, listed.

A problem is open until it is resolved, and a resolved one stays, with when, by whom, how and why:
- by the hub (`resolve_found`), where it sees the cause go. Each place that records a kind says which
  signal it trusts: the mail of that notification was sent after all (connectors.mail.component), the
  notice was queued after all (hub.notify.service, hub.notify.component), the borging ran or is no
  longer due (hub.notify.borging). A refused match (`match_overgeslagen`) has no such signal: the hub
  cannot see the Verwijsindex mend its feed.
- by an administrator (`resolve_problem`), with a short reason, audited.

A problem found again once it was resolved opens again as a new row (`record_problem_once`), so the
earlier resolution stays readable rather than being overwritten.
"""

from __future__ import annotations

import zlib
from collections.abc import Collection
from typing import Any, Literal

from sqlalchemy import ColumnElement, delete, insert, select, text, update
from sqlalchemy.ext.asyncio import AsyncSession

from hub.audit import AuditEntry, write_audit
from hub.clock import aware
from hub.notify.tables import mail_problems
from schemas.envelope import utcnow

# PostgreSQL advisory lock space (the first of two int4 keys) of one problem's row: two hub processes
# finding the same problem at once keep one open row of it (`record_problem_once`).
PROBLEM_LOCK = 7_306_002
ProblemStatus = Literal["open", "resolved", "all"]
BY_HUB, BY_OPERATOR = "hub", "operator"  # how a problem was resolved
REASON_MAX = 1000
_REFERENCES_PER_STATEMENT = 500


class ProblemNotFound(LookupError):
    """No problem has that id."""


class ProblemAlreadyResolved(Exception):
    """The problem was resolved before; `problem` is it, as listed, with who resolved it and when."""

    def __init__(self, problem: dict[str, Any]) -> None:
        super().__init__(f"problem {problem['id']} was resolved already")
        self.problem = problem


async def record_problem(
    session: AsyncSession,
    *,
    kind: str,
    caseworker_id: str | None,
    reference: str | None,
    reason: str,
    transaction_id: str | None,
) -> int:
    """Something an administrator must act on (GET /api/v1/medewerkers/problemen), open; its id."""
    done: Any = await session.execute(
        insert(mail_problems).values(
            at=utcnow(),
            kind=kind,
            caseworker_id=caseworker_id,
            reference=reference,
            reason=reason[:REASON_MAX],
            transaction_id=transaction_id,
        )
    )
    return int(done.inserted_primary_key[0])


def _same(column: ColumnElement[Any], value: str | None) -> ColumnElement[bool]:
    return column.is_(None) if value is None else column == value


def _lock_key(kind: str, caseworker_id: str | None, reference: str | None) -> int:
    """An int4 for the advisory lock of one problem; two problems sharing one only wait for each other."""
    key = zlib.crc32("\x00".join((kind, caseworker_id or "", reference or "")).encode())
    return key - 2**32 if key >= 2**31 else key


async def record_problem_once(
    session: AsyncSession,
    *,
    kind: str,
    caseworker_id: str | None,
    reference: str | None,
    reason: str,
    transaction_id: str | None,
) -> None:
    """`record_problem` for a problem found again round after round while it lasts (a borging without
    a delegate): one open row per kind, caseworker and reference, whose time, reason and transaction id
    are those of the last time it was found. Other open rows of it (`record_problem` adds one each
    time) go. Found again after it was resolved, it opens again as a new row; the resolved one stays.

    On PostgreSQL an advisory lock on the problem keeps two hub processes that find it at once from
    both adding it; SQLite's write transactions run one at a time.
    """
    if session.get_bind().dialect.name == "postgresql":
        await session.execute(
            text("SELECT pg_advisory_xact_lock(CAST(:space AS integer), CAST(:key AS integer))"),
            {"space": PROBLEM_LOCK, "key": _lock_key(kind, caseworker_id, reference)},
        )
    same = (
        mail_problems.c.kind == kind,
        _same(mail_problems.c.caseworker_id, caseworker_id),
        _same(mail_problems.c.reference, reference),
        mail_problems.c.resolved_at.is_(None),
    )
    newest = select(mail_problems.c.id).where(*same).order_by(mail_problems.c.id.desc()).limit(1)
    found = (await session.execute(newest)).scalar()
    refreshed = 0
    if found is not None:
        # if open still: an administrator who resolved it meanwhile (they take no advisory lock) wins,
        # and it opens again below, as a problem found after it was resolved
        done: Any = await session.execute(
            update(mail_problems)
            .where(mail_problems.c.id == found, mail_problems.c.resolved_at.is_(None))
            .values(at=utcnow(), reason=reason[:REASON_MAX], transaction_id=transaction_id)
        )
        refreshed = int(done.rowcount)
    if not refreshed:
        found = await record_problem(
            session,
            kind=kind,
            caseworker_id=caseworker_id,
            reference=reference,
            reason=reason,
            transaction_id=transaction_id,
        )
    await session.execute(delete(mail_problems).where(*same, mail_problems.c.id != found))


async def resolve_found(
    session: AsyncSession,
    *,
    kinds: Collection[str],
    resolution: str,
    by: str,
    caseworker_id: str | None = None,
    references: Collection[str] | None = None,
    transaction_id: str | None = None,
    except_id: int | None = None,
) -> int:
    """The hub saw the cause of these open problems go: resolve them as `by` (the part of the hub that
    saw it) with `resolution` (Dutch, no personal data), in the caller's transaction. Open problems of
    `kinds`, narrowed by each filter given (None: any); how many it resolved."""
    where: list[ColumnElement[bool]] = [
        mail_problems.c.resolved_at.is_(None),
        mail_problems.c.kind.in_(sorted(kinds)),
    ]
    if caseworker_id is not None:
        where.append(mail_problems.c.caseworker_id == caseworker_id)
    if transaction_id is not None:
        where.append(mail_problems.c.transaction_id == transaction_id)
    if except_id is not None:
        where.append(mail_problems.c.id != except_id)
    values = _by_hub(resolution, by)
    if references is None:
        done: Any = await session.execute(update(mail_problems).where(*where).values(values))
        return int(done.rowcount)
    refs, resolved = sorted(set(references)), 0
    for start in range(0, len(refs), _REFERENCES_PER_STATEMENT):
        chunk = refs[start : start + _REFERENCES_PER_STATEMENT]
        done = await session.execute(
            update(mail_problems).where(*where, mail_problems.c.reference.in_(chunk)).values(values)
        )
        resolved += int(done.rowcount)
    return resolved


async def resolve_oldest(
    session: AsyncSession,
    *,
    kind: str,
    reference: str,
    transaction_id: str,
    reason_prefix: str,
    resolution: str,
    by: str,
) -> int:
    """`resolve_found` for one of open problems that cannot be told apart (of one kind, reference and
    transaction, with reasons that begin alike), where the hub saw the cause of one of them go: the
    oldest is resolved. How many it resolved (0 or 1)."""
    oldest = (
        select(mail_problems.c.id)
        .where(
            mail_problems.c.resolved_at.is_(None),
            mail_problems.c.kind == kind,
            mail_problems.c.reference == reference,
            mail_problems.c.transaction_id == transaction_id,
            mail_problems.c.reason.startswith(reason_prefix, autoescape=True),
        )
        .order_by(mail_problems.c.id)
        .limit(1)
    )
    found = (await session.execute(oldest)).scalar()
    if found is None:
        return 0
    done: Any = await session.execute(
        update(mail_problems)
        .where(mail_problems.c.id == found, mail_problems.c.resolved_at.is_(None))
        .values(_by_hub(resolution, by))
    )
    return int(done.rowcount)


def _by_hub(resolution: str, by: str) -> dict[str, Any]:
    """The values of a problem the hub resolves."""
    return {
        "resolved_at": utcnow(),
        "resolved_by": by[:100],
        "resolved_how": BY_HUB,
        "resolution": resolution[:REASON_MAX],
    }


async def open_problem_caseworkers(session: AsyncSession, kinds: Collection[str]) -> set[str]:
    """The caseworkers with an open problem of one of `kinds`."""
    q = select(mail_problems.c.caseworker_id).where(
        mail_problems.c.resolved_at.is_(None),
        mail_problems.c.kind.in_(sorted(kinds)),
        mail_problems.c.caseworker_id.is_not(None),
    )
    return set((await session.execute(q.distinct())).scalars())


async def resolve_problem(
    session: AsyncSession,
    problem_id: int,
    *,
    user: str,
    reason: str,
    transaction_id: str | None,
    system: str,
) -> dict[str, Any]:
    """An administrator marks an open problem resolved, with a reason; audited. The problem as listed.

    ProblemNotFound when there is none with that id, ProblemAlreadyResolved when it was resolved
    before (by the hub or another administrator: their resolution stands). The reason stays on the
    problem's row; the audit log, kept for years and never blanked, gets its length only, as for a
    discarded dead letter: a name typed into it would stay there.
    """
    done: Any = await session.execute(
        update(mail_problems)
        .where(mail_problems.c.id == problem_id, mail_problems.c.resolved_at.is_(None))
        .values(
            resolved_at=utcnow(),
            resolved_by=user[:100],
            resolved_how=BY_OPERATOR,
            resolution=reason[:REASON_MAX],
        )
    )
    row = (await session.execute(select(mail_problems).where(mail_problems.c.id == problem_id))).first()
    if row is None:
        raise ProblemNotFound(problem_id)
    problem = problem_json(row)
    if done.rowcount != 1:
        raise ProblemAlreadyResolved(problem)
    entry = AuditEntry(
        action="problem.resolved",
        user=user,
        on_behalf_of=row.caseworker_id,
        objects={
            "problem_id": row.id,
            "kind": row.kind,
            "caseworker_id": row.caseworker_id,
            "reference": row.reference,
            "reason_length": len(reason),
        },
    )
    await write_audit(session, entry, transaction_id=transaction_id, system=system)
    return problem


def problem_json(row: Any) -> dict[str, Any]:
    """A problem as the API and the console show it."""
    return {
        "id": row.id,
        "at": aware(row.at).isoformat(),
        "kind": row.kind,
        "caseworkerId": row.caseworker_id,
        "reference": row.reference,
        "reason": row.reason,
        "transactionId": row.transaction_id,
        "status": "open" if row.resolved_at is None else "resolved",
        "resolvedAt": aware(row.resolved_at).isoformat() if row.resolved_at is not None else None,
        "resolvedBy": row.resolved_by,
        "resolvedHow": row.resolved_how,
        "resolution": row.resolution,
    }


async def list_problems(
    session: AsyncSession, status: ProblemStatus = "open", limit: int = 200
) -> list[dict[str, Any]]:
    """Problems, open ones by default (`status`: open, resolved or all), the most recently found first
    (a problem found again moves up)."""
    q = select(mail_problems)
    if status == "open":
        q = q.where(mail_problems.c.resolved_at.is_(None))
    elif status == "resolved":
        q = q.where(mail_problems.c.resolved_at.is_not(None))
    newest = (mail_problems.c.at.desc(), mail_problems.c.id.desc())
    rows = (await session.execute(q.order_by(*newest).limit(limit))).all()
    return [problem_json(r) for r in rows]
