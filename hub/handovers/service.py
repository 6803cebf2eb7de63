"""Handover flow: request, consent check (rule 9), dispatch, waiting, withdrawal (rule 10), answers."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from hub.audit import AuditEntry, write_audit
from hub.clock import aware, local_day
from hub.consent.custody import named_for
from hub.consent.minimise import minimise
from hub.consent.rules import Disclosure, HandoverView, find_covering, withdrawal_effects
from hub.consent.store import StoredConsent, consents_of
from hub.directory import CaseworkerNotFound, get_caseworker
from hub.handovers import messages
from hub.handovers.tables import handovers
from hub.intake.tables import referrals
from hub.spine.outbox import add_to_outbox
from hub.store.locks import lock_youths
from schemas.consent import ConsentPurpose, DataCategory
from schemas.envelope import Envelope, trace_id, utcnow
from schemas.handover import Handover, HandoverStatus
from schemas.referral import Referral

ZORGMELDING = "ZORGMELDING"


class HandoverProblem(Exception):
    """A request the hub cannot carry out; `status` is the HTTP status it maps to."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class Routing:
    """Where routing writes: the topics (already prefixed) and its system name for the audit log."""

    requested_topic: str
    dispatch_topic: str
    mail_topic: str
    system: str = "ketenhub-routing"
    clock: Callable[[], datetime] = field(default=utcnow)


HALT = "Halt Den Haag"  # on whose behalf a caseworker acts


@dataclass(frozen=True)
class Act:
    """Who acts, under which transaction (rule 19), on whose behalf."""

    user: str
    transaction_id: str
    on_behalf_of: str | None = HALT


def notice_transaction_id(withdrawal_transaction_id: str, handover_id: str) -> str:
    """The transaction id of a withdrawal's notice to one receiver: its own, the same every time it
    is made again for the same withdrawal and handover."""
    return str(
        uuid.uuid5(
            uuid.NAMESPACE_URL, f"ketenhub:withdrawal-notice:{withdrawal_transaction_id}:{handover_id}"
        )
    )


async def audit_handover(
    session: AsyncSession, r: Routing, act: Act, action: str, row: Any, **objects: Any
) -> None:
    entry = AuditEntry(
        action=action,
        user=act.user,
        youth_key=row.youth_key,
        on_behalf_of=act.on_behalf_of,
        objects={"handover_id": row.id, "referral_id": row.referral_id, **objects},
        legal_basis=row.legal_basis,
    )
    await write_audit(session, entry, transaction_id=act.transaction_id, system=r.system)


async def load_referral(session: AsyncSession, referral_id: str) -> tuple[Referral, str] | None:
    """A stored referral and its youth key, or None."""
    row = (
        await session.execute(
            select(referrals.c.referral, referrals.c.youth_key).where(referrals.c.id == referral_id)
        )
    ).first()
    return (Referral.model_validate(row.referral), row.youth_key) if row is not None else None


async def get_handover(
    session: AsyncSession, handover_id: str, *, lock: bool = False, receiver: str | None = None
) -> Any:
    """A handover row, or None. With `lock`, the row stays locked until the transaction ends, for a
    decision on its status: a concurrent transaction deciding the same waits, then reads the status
    this one left (PostgreSQL; SQLite's write transactions run one at a time anyway). With
    `receiver`, only a handover to that organisation is found (and locked): another receiver's
    request cannot hold it."""
    query = select(handovers).where(handovers.c.id == handover_id)
    if receiver is not None:
        query = query.where(handovers.c.receiver_organisation == receiver)
    return (await session.execute(query.with_for_update() if lock else query)).first()


def asked_categories(handover: Handover) -> list[DataCategory]:
    """What a handover shares: the categories asked for and HULPVRAAG, for the caseworker's summary
    travels with it (rule 9: the consent must cover that too)."""
    asked = list(dict.fromkeys(handover.data_categories))
    if handover.summary and DataCategory.HULPVRAAG not in asked:
        asked.append(DataCategory.HULPVRAAG)
    return asked


async def create_handover(
    session: AsyncSession,
    r: Routing,
    handover: Handover,
    act: Act,
    *,
    purpose: str = ConsentPurpose.WARME_OVERDRACHT.value,
    legal_basis: str | None = None,
    announce: bool = True,
) -> Any:
    """Store a requested handover (waiting); announced on handover.requested.v1 for routing."""
    found = await load_referral(session, handover.referral_id)
    # the youth's case lock, then the referral again: a retention purge of the case either finds
    # this handover when it commits, or has committed and the referral is gone (hub.store.locks)
    if found is not None and await lock_youths(session, [found[1]]):
        found = await load_referral(session, handover.referral_id)
    if found is None:
        raise HandoverProblem(404, "de verwijzing is niet bekend")
    _, youth_key = found
    now = r.clock()
    handover_id = handover.handover_id or str(uuid.uuid4())
    await session.execute(
        insert(handovers).values(
            id=handover_id,
            referral_id=handover.referral_id,
            youth_key=youth_key,
            from_caseworker=handover.from_caseworker,
            receiver_organisation=handover.receiver_organisation,
            receiver_type=handover.receiver_type.value,
            purpose=purpose,
            legal_basis=legal_basis,
            data_categories=[c.value for c in asked_categories(handover)],
            summary=handover.summary,
            joint_meeting=handover.joint_meeting.model_dump(mode="json") if handover.joint_meeting else None,
            status=HandoverStatus.WACHT_OP_TOESTEMMING.value,
            created_at=now,
            updated_at=now,
            transaction_id=act.transaction_id,
        )
    )
    row = await get_handover(session, handover_id)
    await audit_handover(session, r, act, "handover.requested", row, receiver=row.receiver_organisation)
    if not announce:
        return row
    requested = Envelope.new(
        type_="HandoverRequested",
        transaction_id=act.transaction_id,
        correlation_id=handover_id,
        source="ketenhub-api",
        payload={"handover_id": handover_id, "purpose": purpose},
    )
    await add_to_outbox(session, r.requested_topic, requested, key=youth_key)
    return row


async def route(session: AsyncSession, r: Routing, handover_id: str, act: Act) -> str:
    """Rule 9: dispatch a waiting handover under a covering consent, or keep it waiting and say why.

    Locks are taken in one order everywhere, the youth's consents (shared) before the handover: a
    withdrawal (consent, then its handovers) under way is waited for, so nothing goes out under a
    consent being withdrawn, and two consents at once dispatch the handover once. The youth's case
    lock (hub.store.locks) comes before both, as in recording a consent: a routing batch may create
    a handover of the same youth after routing one.
    """
    first = await get_handover(session, handover_id)
    if first is None:
        return "ONBEKEND"
    await lock_youths(session, [first.youth_key])  # before its rows: a batch may create a handover next
    stored = await consents_of(session, first.youth_key, share=True)
    row = await get_handover(session, handover_id, lock=True)
    if row is None or row.status != HandoverStatus.WACHT_OP_TOESTEMMING.value:
        return row.status if row is not None else "ONBEKEND"
    found = await load_referral(session, row.referral_id)
    if found is None:
        raise HandoverProblem(404, "de verwijzing van de overdracht is niet bekend")
    referral, _ = found
    categories = [DataCategory(c) for c in row.data_categories]
    if row.purpose == ZORGMELDING:  # rule 21: the one disclosure without consent; basis is audited
        await _dispatch(session, r, row, referral, categories, None, act)
        return HandoverStatus.VERZONDEN.value
    disclosure = Disclosure(
        purpose=ConsentPurpose(row.purpose),
        receiver=row.receiver_organisation,
        categories=frozenset(categories),
        day=local_day(r.clock()),
    )
    named = await named_for(session, row.youth_key)
    covering, verdicts = find_covering((s.consent for s in stored), disclosure, named=named)
    if covering is not None:
        await _dispatch(session, r, row, referral, categories, covering.consent_id, act)
        return HandoverStatus.VERZONDEN.value
    reasons = sorted({g.value for v in verdicts for g in v.gaps}) or ["GEEN_TOESTEMMING"]
    first_time = row.waiting_reasons is None
    if list(row.waiting_reasons or ()) != reasons:
        # judged the same again (the periodic check, every minute, while a consent has not started):
        # no change, so none written; `updated_at` is what the retention purge counts an idle case by
        await session.execute(
            update(handovers)
            .where(handovers.c.id == row.id)
            .values(waiting_reasons=reasons, updated_at=r.clock())
        )
    if first_time:  # told once, by whichever judges it first
        await audit_handover(session, r, act, "handover.waiting", row, reasons=reasons)
        detail = "er is (nog) geen toestemming die haar dekt (" + ", ".join(reasons) + ")."
        await messages.tell_requester(
            session,
            r.mail_topic,
            row,
            template="handover.waiting",
            transaction_id=act.transaction_id,
            detail=detail,
        )
    return HandoverStatus.WACHT_OP_TOESTEMMING.value


async def _caseworker_card(session: AsyncSession, caseworker_id: str) -> dict[str, Any]:
    try:
        cw = await get_caseworker(session, caseworker_id)
    except CaseworkerNotFound:
        return {"caseworker_id": caseworker_id}
    return {"caseworker_id": caseworker_id, "name": cw.name, "email": cw.email, "phone": cw.phone}


async def _dispatch(
    session: AsyncSession,
    r: Routing,
    row: Any,
    referral: Referral,
    categories: list[DataCategory],
    consent_id: str | None,
    act: Act,
) -> None:
    """Send under `consent_id` (None: a zorgmelding): minimise, mark VERZONDEN, queue for delivery."""
    covered = categories
    if consent_id is not None:
        stored = next(s for s in await consents_of(session, row.youth_key) if s.consent_id == consent_id)
        covered = list(stored.consent.data_categories)
    data = minimise(referral, categories, covered)
    # The summary is the HULPVRAAG category: it goes only where that is asked for and covered.
    with_summary = DataCategory.HULPVRAAG in categories and DataCategory.HULPVRAAG in covered
    shared = sorted({*data, *([DataCategory.HULPVRAAG.value] if with_summary else [])})
    now = r.clock()
    await session.execute(
        update(handovers)
        .where(handovers.c.id == row.id)
        .values(
            status=HandoverStatus.VERZONDEN.value,
            consent_id=consent_id,
            sent_at=now,
            updated_at=now,
            waiting_reasons=None,
        )
    )
    row = await get_handover(session, row.id)
    message = messages.handover_message(
        row,
        data=data,
        shared=shared if consent_id else sorted(c.value for c in categories),
        with_summary=with_summary,
        transaction_id=act.transaction_id,
        caseworker=await _caseworker_card(session, row.from_caseworker),
    )
    await add_to_outbox(session, r.dispatch_topic, message, key=row.youth_key)
    # Rule 18: the disclosure is the caseworker's who asked for it, on Halt's behalf, whichever way
    # it went (the request routed, a consent recorded, its first day come, a retry): `sent_by` says
    # what let it go then, under the request's transaction id.
    asked = Act(row.from_caseworker, act.transaction_id, act.on_behalf_of or HALT)
    await audit_handover(
        session,
        r,
        asked,
        "handover.sent",
        row,
        receiver=row.receiver_organisation,
        categories=shared,
        consent_id=consent_id,
        sent_by=act.user,
    )


NOT_YET_VALID = "NOG_NIET_GELDIG"  # a waiting reason (hub.consent.rules.Gap)
INCOMPLETE = "ONVOLLEDIG"  # a waiting reason: the consent lacks a permit the referrals show is needed
# A referral stored up to this long before its youth's waiting handover was last judged may not have
# been seen by that judgement (its transaction still open then, or another process's clock a little
# behind): `waiting_to_start` looks again.
LATE_REFERRAL_S = 300.0
# How long after a youth's latest referral routing's periodic check looks at their incomplete consent's
# waiting handovers again (`waiting_to_start`): each look is a write transaction, every round.
RECHECK_FOR = timedelta(days=1)


async def recheck_waiting(session: AsyncSession, r: Routing, youth_key: str, act: Act) -> list[str]:
    """A consent was recorded (or started): send every waiting handover of this youth it now covers.

    Each goes under its own request's transaction id (rule 19), by `act.user`: what a handover
    discloses stays linked to the request that asked for it, whichever consent or check let it go.
    The youth's case lock comes first (the caller may hold it already), before the consents and
    handovers `route` locks: a withdrawal takes it before the consent's row (hub.store.locks)."""
    await lock_youths(session, [youth_key])
    waiting = (
        await session.execute(
            select(handovers.c.id, handovers.c.transaction_id)
            .where(handovers.c.youth_key == youth_key)
            .where(handovers.c.status == HandoverStatus.WACHT_OP_TOESTEMMING.value)
            .order_by(handovers.c.created_at)
        )
    ).all()
    sent = []
    for handover_id, transaction_id in waiting:
        await consents_of(session, youth_key, share=True)  # the lock order of `route`
        row = await get_handover(session, handover_id, lock=True)
        if row is None or row.status != HandoverStatus.WACHT_OP_TOESTEMMING.value:
            continue  # a concurrent transaction (another consent, the routing consumer) decided it
        its = replace(act, transaction_id=trace_id(transaction_id) if transaction_id else act.transaction_id)
        # A handover judged here for the first time (routing has not taken its request yet) is told
        # about here: routing will find it judged already, and tells only about a first judgement.
        if await route(session, r, handover_id, its) == HandoverStatus.VERZONDEN.value:
            sent.append(handover_id)
    return sent


async def recheck_started(
    session: AsyncSession, r: Routing, act: Act, *, youth_keys: Sequence[str] | None = None
) -> list[str]:
    """Route again the waiting handovers a consent did not cover because it had not started yet
    (NOG_NIET_GELDIG), or was incomplete when a later referral came (`waiting_to_start`). Recording a
    consent routes its youth's waiting handovers at once; the day its validity starts, or a referral
    showing who holds custody, changes nothing by itself, so the routing's periodic check looks (rules 8
    and 9).
    `youth_keys`: those `waiting_to_start` found, read beforehand outside a write transaction."""
    keys = await waiting_to_start(session, r.clock()) if youth_keys is None else youth_keys
    await lock_youths(session, keys)  # all at once, in ascending order, before any row (hub.store.locks)
    sent: list[str] = []
    for key in keys:
        sent += await recheck_waiting(session, r, key, act)
    return sent


async def waiting_to_start(session: AsyncSession, now: datetime | None = None) -> list[str]:
    """The youth keys with a handover waiting for a consent that had not started yet, or for one that
    was incomplete (ONVOLLEDIG) when a referral of the youth came in since it was judged, give or take
    `LATE_REFERRAL_S`: a later referral may show who holds custody, which completes the consent (rule
    8), and only a new judgement sends the handover then. A judgement the same as before writes
    nothing, so such a youth is looked at again each round for `RECHECK_FOR` after its latest
    referral, not longer (a referral that came while routing was stopped longer than that is not
    looked at; recording a consent routes the youth's handovers again); one whose consent has not
    started is looked at until its first day."""
    latest = (
        select(func.max(referrals.c.received_at))
        .where(referrals.c.youth_key == handovers.c.youth_key)
        .scalar_subquery()
    )
    rows = (
        await session.execute(
            select(
                handovers.c.youth_key,
                handovers.c.waiting_reasons,
                handovers.c.updated_at,
                latest.label("latest_referral"),
            ).where(handovers.c.status == HandoverStatus.WACHT_OP_TOESTEMMING.value)
        )
    ).all()
    margin, recent = timedelta(seconds=LATE_REFERRAL_S), (now or utcnow()) - RECHECK_FOR
    return sorted(
        {
            row.youth_key
            for row in rows
            if NOT_YET_VALID in (reasons := row.waiting_reasons or ())
            or (
                INCOMPLETE in reasons
                and row.latest_referral is not None
                and aware(row.latest_referral) > max(aware(row.updated_at) - margin, recent)
            )
        }
    )


async def apply_withdrawal(
    session: AsyncSession, r: Routing, stored: StoredConsent, act: Act
) -> tuple[list[str], list[str]]:
    """Rule 10: withdraw pending handovers, tell receivers that got data or may have it (delivered,
    or POSTed without a 2xx: `attempted_at`), whatever the handover's status became since; returns
    the withdrawn ids, and those of waiting handovers kept for another consent that names them.

    The caller holds the youth's case lock (`withdraw_consent`); the youth's handovers are locked
    too, and each is withdrawn only from the status it was read in: one withdrawn meanwhile (by a
    withdrawal of another of the youth's consents) is neither withdrawn, audited nor told again."""
    others = [s.consent for s in await consents_of(session, stored.youth_key)]
    query = select(handovers).where(handovers.c.youth_key == stored.youth_key).order_by(handovers.c.id)
    rows = {row.id: row for row in await session.execute(query.with_for_update())}
    views = [
        HandoverView(
            h.id,
            h.receiver_organisation,
            ConsentPurpose(h.purpose),
            HandoverStatus(h.status),
            h.consent_id,
            may_have=any(t is not None for t in (h.delivered_at, h.attempted_at, h.answered_at)),
            categories=frozenset(DataCategory(c) for c in h.data_categories),
        )
        for h in rows.values()
        if h.purpose != ZORGMELDING
    ]
    now = r.clock()
    named = await named_for(session, stored.youth_key)
    effects = withdrawal_effects(stored.consent, views, others=others, day=local_day(now), named=named)
    told = {handover_id for handover_id, _ in effects.tell}
    withdrawn = []
    for handover_id in effects.withdraw:
        row = rows[handover_id]
        changed: Any = await session.execute(
            update(handovers)
            .where(handovers.c.id == handover_id, handovers.c.status == row.status)
            .values(
                status=HandoverStatus.INGETROKKEN.value,
                status_reason="TOESTEMMING_INGETROKKEN",
                updated_at=now,
            )
        )
        if changed.rowcount != 1:  # decided otherwise since it was read: not this withdrawal's
            continue
        withdrawn.append(handover_id)
        # Each receiver's notice under a transaction id of its own, named in the audit entry (rule
        # 19): under the withdrawal's one, two receivers of the youth could join what each got on it
        notice_tx = notice_transaction_id(act.transaction_id, handover_id) if handover_id in told else None
        await audit_handover(
            session,
            r,
            act,
            "handover.withdrawn",
            row,
            consent_id=stored.consent_id,
            receiver_told=handover_id in told,
            **({"notice_transaction_id": notice_tx} if notice_tx else {}),
        )
        if notice_tx is not None:
            notice = messages.withdrawal_notice(
                row, reason="TOESTEMMING_INGETROKKEN", at=now, transaction_id=notice_tx
            )
            await add_to_outbox(session, r.dispatch_topic, notice, key=row.youth_key)
    return withdrawn, list(effects.kept)
