"""What receiver delivery asks of the store: may this still go out, and record that it went out."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from hub.audit import AuditEntry, write_audit
from hub.clock import local_day
from hub.consent.custody import named_for
from hub.consent.rules import Disclosure, Gap, coverage, find_covering
from hub.consent.store import consents_of, get_consent
from hub.handovers import messages
from hub.handovers.messages import HANDOVER, HANDOVER_WITHDRAWN
from hub.handovers.service import ZORGMELDING, Act, Routing, get_handover, route
from hub.handovers.tables import handovers
from hub.handovers.undelivered import SYSTEM, delivered_after_all
from hub.store.locks import lock_youths
from schemas._base import as_code
from schemas.consent import ConsentPurpose, DataCategory
from schemas.envelope import Envelope, utcnow
from schemas.handover import HandoverStatus

NO_CONSENT = "GEEN_TOESTEMMING"
# Handovers that ended before they left (consent withdrawn, or lapsed): never delivered.
STOPPED = frozenset({HandoverStatus.INGETROKKEN.value, HandoverStatus.VERLOPEN.value})


@dataclass(frozen=True)
class Verdict:
    """Whether a dispatch message may still leave; `gaps` when it may not because the handover's
    consent stopped covering it after it was dispatched (rule 9)."""

    go: bool
    gaps: tuple[str, ...] = ()

    @property
    def lapsed(self) -> bool:
        """The handover's consent no longer covers it: `record_lapsed` ends it."""
        return bool(self.gaps)


GO, STAY = Verdict(go=True), Verdict(go=False)


async def delivery_verdict(session: AsyncSession, message: Envelope, *, day: date) -> Verdict:
    """Rules 9 and 10 at the last moment, on the hub's `day`: a handover leaves only under a consent
    that still covers it (a receiver down past the consent's last day, a replayed dead letter, a
    lagging consumer); a withdrawn one does not leave; a withdrawal notice goes only to a receiver
    that got the handover or was sent it (`record_attempt`: it may have it without a 2xx)."""
    handover_id = as_code(message.payload.get("handover_id"))
    if handover_id is None:
        return STAY
    row = (
        await session.execute(
            select(
                handovers.c.status,
                handovers.c.delivered_at,
                handovers.c.attempted_at,
                handovers.c.purpose,
                handovers.c.consent_id,
                handovers.c.receiver_organisation,
                handovers.c.data_categories,
                handovers.c.youth_key,
            ).where(handovers.c.id == handover_id)
        )
    ).first()
    if row is None:
        return STAY
    if message.type == HANDOVER_WITHDRAWN:  # to every receiver that got it or may have (a POST
        # that timed out or failed after it was sent): rule 10
        return GO if row.delivered_at is not None or row.attempted_at is not None else STAY
    if message.type != HANDOVER or row.status in STOPPED:
        return STAY
    if row.purpose == ZORGMELDING:  # rule 21: the one disclosure without consent
        return GO
    gaps = await consent_gaps(session, row, day)
    return Verdict(go=False, gaps=gaps) if gaps else GO


async def consent_gaps(session: AsyncSession, row: Any, day: date) -> tuple[str, ...]:
    """Why the handover's own consent does not cover it on `day`; () when it does."""
    stored = await get_consent(session, row.consent_id) if row.consent_id else None
    if stored is None:
        return (NO_CONSENT,)
    disclosure = Disclosure(
        purpose=ConsentPurpose(row.purpose),
        receiver=row.receiver_organisation,
        categories=frozenset(DataCategory(c) for c in row.data_categories),
        day=day,
    )
    # Rule 8 as routing judged it, with the same input: a referral received since may name more
    # custodians than were counted then.
    named = await named_for(session, row.youth_key)
    return tuple(g.value for g in coverage(stored.consent, disclosure, named=named).gaps)


async def record_lapsed(session: AsyncSession, r: Routing, message: Envelope, gaps: tuple[str, ...]) -> bool:
    """Rule 9: a dispatched handover whose consent no longer covers it does not leave. It ends
    VERLOPEN (INGETROKKEN when its consent was withdrawn), audited, and its caseworker is told, in
    the caller's transaction (`hold_for_delivery` took its locks). False when the handover was
    decided otherwise meanwhile.

    A consent that is only no longer complete (rule 8: a custodian named since, or a number of
    custodians a consent recorded before it was asked for lacks) can be made whole: the handover
    waits again (WACHT_OP_TOESTEMMING) rather than ending, and is routed again at once: another
    consent that covers it sends it now, else it goes once a complete consent is recorded, as any
    waiting handover does. A consent past its last day is treated so too when another of the youth's
    consents covers the handover today (a renewal): it goes under that one.

    Either way it keeps `attempted_at`: a receiver that was sent it (a POST without a 2xx) may have
    it, and a withdrawal of the consent tells it so (rule 10), whatever the handover's status."""
    handover_id = as_code(message.payload.get("handover_id"))
    row = await get_handover(session, handover_id, lock=True) if handover_id is not None else None
    if row is None or row.status != HandoverStatus.VERZONDEN.value or row.delivered_at is not None:
        return False
    may_have = row.attempted_at is not None
    withdrawn = Gap.INGETROKKEN.value in gaps
    if set(gaps) == {Gap.ONVOLLEDIG.value} or (not withdrawn and await _another_covers(session, r, row)):
        await _wait_again(session, r, row, message, gaps)
        return True
    status = HandoverStatus.INGETROKKEN if withdrawn else HandoverStatus.VERLOPEN
    reason = "TOESTEMMING_INGETROKKEN" if withdrawn else "TOESTEMMING_VERLOPEN"
    await session.execute(
        update(handovers)
        .where(handovers.c.id == row.id)
        .values(status=status.value, status_reason=reason, updated_at=utcnow())
    )
    await _audit(
        session, "handover.lapsed", SYSTEM, row, message,
        consent_id=row.consent_id, status=status.value, gaps=list(gaps), attempted=may_have,
    )  # fmt: skip
    detail = (messages.MAY_HAVE + "; zij gaat niet opnieuw" if may_have else "zij is niet afgeleverd") + (
        ", want de toestemming dekt haar niet meer ("
        + ", ".join(gaps)
        + "). Vraag zo nodig een nieuwe toestemming en een nieuwe overdracht aan."
    )
    await messages.tell_requester(
        session,
        r.mail_topic,
        row,
        template="handover.lapsed",
        transaction_id=message.transaction_id,
        detail=detail,
    )
    return True


async def _another_covers(session: AsyncSession, r: Routing, row: Any) -> bool:
    """Whether another of the youth's consents covers the handover today (a renewal that started the
    day the first one ended): it goes under that one, not ended for want of a consent it has."""
    disclosure = Disclosure(
        purpose=ConsentPurpose(row.purpose),
        receiver=row.receiver_organisation,
        categories=frozenset(DataCategory(c) for c in row.data_categories),
        day=local_day(r.clock()),
    )
    others = [
        s.consent
        for s in await consents_of(session, row.youth_key, share=True)
        if s.consent_id != row.consent_id
    ]
    covering, _ = find_covering(others, disclosure, named=await named_for(session, row.youth_key))
    return covering is not None


async def _wait_again(
    session: AsyncSession, r: Routing, row: Any, message: Envelope, gaps: tuple[str, ...]
) -> None:
    """Back to waiting for a complete consent, audited, and routed again in this transaction: a
    complete consent recorded while the handover was on its way (whose check passed it by, as it was
    sent) sends it now. Only if none covers it is its caseworker told that it waits."""
    await session.execute(
        update(handovers)
        .where(handovers.c.id == row.id)
        .values(
            status=HandoverStatus.WACHT_OP_TOESTEMMING.value,
            consent_id=None,
            sent_at=None,
            waiting_reasons=list(gaps),
            updated_at=utcnow(),
        )
    )
    may_have = row.attempted_at is not None
    await _audit(
        session, "handover.waiting_again", SYSTEM, row, message,
        consent_id=row.consent_id, gaps=list(gaps), attempted=may_have,
    )  # fmt: skip
    act = Act(user=SYSTEM, transaction_id=message.transaction_id)
    if await route(session, r, row.id, act) == HandoverStatus.VERZONDEN.value:
        return
    detail = (
        (messages.MAY_HAVE + "; zij wacht weer, want" if may_have else "zij is niet afgeleverd, want")
        + " de toestemming is niet volledig (regel 8: de toestemming van iedere gezaghebber, en hun "
        "aantal). Leg de toestemming opnieuw vast met het aantal gezaghebbers en hun toestemming; "
        "dan gaat de overdracht alsnog."
    )
    await messages.tell_requester(
        session,
        r.mail_topic,
        row,
        template="handover.waiting",
        transaction_id=message.transaction_id,
        detail=detail,
    )


async def hold_for_delivery(session: AsyncSession, message: Envelope) -> None:
    """Take the locks `route` and a withdrawal take, in their order (the youth's case lock, the
    youth's consents shared, then the handover's row), so that the last check and what the delivery
    records then are one step (rule 10): a withdrawal under way is waited for and seen, or it waits,
    and then sees that the receiver may have the handover. The case lock comes first because a
    handover that goes back to waiting is routed again in this transaction (`record_lapsed`), as
    `route` takes it (hub.store.locks). A Kafka batch of dispatch messages takes all of its
    handovers' case locks before its first record (hub.handovers.batches): here they are held
    already. SQLite's write transactions run one at a time anyway."""
    handover_id = as_code(message.payload.get("handover_id"))
    if message.type != HANDOVER or handover_id is None:
        return
    row = await get_handover(session, handover_id)
    if row is None:
        return
    await lock_youths(session, [row.youth_key])
    await consents_of(session, row.youth_key, share=True)
    await get_handover(session, handover_id, lock=True)


async def record_attempt(session: AsyncSession, message: Envelope) -> None:
    """A handover is about to be POSTed: from now on its receiver may have it, whatever the answer."""
    handover_id = as_code(message.payload.get("handover_id"))
    if message.type != HANDOVER or handover_id is None:
        return
    await session.execute(
        update(handovers)
        .where(handovers.c.id == handover_id, handovers.c.attempted_at.is_(None))
        .values(attempted_at=utcnow())
    )


async def record_delivered(
    session: AsyncSession, message: Envelope, *, channel: str, topic: str | None = None
) -> None:
    """The receiver has it: stamp the handover and write the disclosure to the audit log (rule 18).
    A handover whose delivery was given up before (a replayed dead letter) loses that mark. A record
    put on a receivers' topic names it (`topic`, without the deployment's prefix): who may take the
    topic later depends on whose records went there (hub.handovers.topic_others)."""
    p: dict[str, Any] = message.payload
    handover_id = as_code(p.get("handover_id"))
    row = None
    if handover_id is not None:
        row = (await session.execute(select(handovers).where(handovers.c.id == handover_id))).first()
    if row is None:  # it went out, so it is audited: the ladder's own entry, when this one cannot be
        raise ValueError("the delivered message names no handover this hub knows")
    if message.type == HANDOVER:
        await session.execute(
            update(handovers)
            .where(handovers.c.id == row.id)
            .values(delivered_at=utcnow(), updated_at=utcnow(), **delivered_after_all(row))
        )
        action = "handover.disclosed"
        objects = {
            "categories": p.get("data_categories", []),
            "consent_id": p.get("consent_id"),
            "purpose": p.get("purpose"),
        }
    else:
        action, objects = "handover.withdrawal_told", {"reason": p.get("reason")}
    if topic is not None:
        objects["topic"] = topic
    await _audit(session, action, row.from_caseworker, row, message, channel=channel, **objects)


async def _audit(
    session: AsyncSession, action: str, user: str, row: Any, message: Envelope, **objects: Any
) -> None:
    """An audit entry of what happened to a handover's message, on behalf of Halt (rule 18)."""
    entry = AuditEntry(
        action=action,
        user=user,
        youth_key=row.youth_key,
        on_behalf_of="Halt Den Haag",
        objects={
            "handover_id": row.id,
            "referral_id": row.referral_id,
            "receiver": row.receiver_organisation,
            "message_id": message.message_id,
            **objects,
        },
        legal_basis=row.legal_basis,
    )
    await write_audit(session, entry, transaction_id=message.transaction_id, system=SYSTEM)
