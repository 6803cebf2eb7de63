"""Reading and writing consents; callers audit, since they know who acts and why."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, date, datetime

from sqlalchemy import insert, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from hub.consent.tables import consents
from schemas.consent import Consent, ConsentStatus
from schemas.envelope import utcnow


@dataclass(frozen=True)
class StoredConsent:
    """A consent as the hub holds it: the canonical consent plus who recorded and withdrew it."""

    consent: Consent
    youth_key: str
    referral_id: str | None
    recorded_at: datetime
    withdrawn_at: datetime | None
    withdrawn_by: str | None
    withdrawal_reason: str | None

    @property
    def consent_id(self) -> str:
        """The id (always set once stored)."""
        assert self.consent.consent_id is not None
        return self.consent.consent_id


def _stored(row: object) -> StoredConsent:
    m = row._mapping  # type: ignore[attr-defined]
    return StoredConsent(
        consent=Consent.model_validate(m["consent"]),
        youth_key=m["youth_key"],
        referral_id=m["referral_id"],
        recorded_at=m["recorded_at"],
        withdrawn_at=m["withdrawn_at"],
        withdrawn_by=m["withdrawn_by"],
        withdrawal_reason=m["withdrawal_reason"],
    )


async def insert_consent(
    session: AsyncSession,
    consent: Consent,
    *,
    youth_key: str,
    referral_id: str | None,
    transaction_id: str,
) -> StoredConsent:
    """Store a consent under a fresh id (an id given by the caller, e.g. from FHIR, is kept if new)."""
    consent_id = consent.consent_id or str(uuid.uuid4())
    taken = await get_consent(session, consent_id)
    if taken is not None:
        consent_id = str(uuid.uuid4())
    consent = consent.model_copy(update={"consent_id": consent_id})
    now = utcnow()
    await session.execute(
        insert(consents).values(
            id=consent_id,
            youth_key=youth_key,
            referral_id=referral_id,
            purpose=consent.purpose.value,
            status=consent.status.value,
            valid_from=consent.valid_from,
            valid_until=consent.valid_until,
            consent=consent.model_dump(mode="json"),
            recorded_by=consent.recorded_by,
            recorded_at=now,
            transaction_id=transaction_id,
        )
    )
    return StoredConsent(consent, youth_key, referral_id, now, None, None, None)


def substance(consent: Consent) -> tuple[object, ...]:
    """What makes two consents of one youth the same consent: the same purpose, the same receivers
    and data categories (as sets: their order means nothing), the same first and last day, the same
    number of custodians stated, and the same answers (as a set: who by role and name, the name
    without regard to case or runs of whitespace; permit or deny; and the moment, which decides the
    day of consent). Not what leaves a disclosure's verdict as it is: how an answer was
    given or noted (`method`), who recorded it, the referral it was recorded through, a FHIR id.

    Two ACTIEF consents alike in all this cover the very same disclosures, and a withdrawal of the
    one leaves the other covering them (rule 10): a repeat is refused (`active_twin`). A consent that
    differs in any of it is another one: a renewal after a withdrawal or expiry, a longer period,
    another receiver, a custodian's permit added, the number of custodians stated at last."""
    answers = sorted(
        (g.role.value, " ".join(g.name.split()).casefold(), g.permission.value, g.given_at.astimezone(UTC))
        for g in consent.grantors
    )
    return (
        consent.purpose,
        frozenset(consent.recipient_organisations),
        frozenset(consent.data_categories),
        consent.valid_from,
        consent.valid_until,
        consent.custodians,
        tuple(answers),
    )


async def active_twin(
    session: AsyncSession, youth_key: str, consent: Consent, today: date
) -> StoredConsent | None:
    """The youth's consent in force on `today` (the Dutch day: ACTIEF, its last day not past) that is
    `consent` in substance (`substance`), the oldest; None when there is none, or when `consent` is
    itself not in force (a FHIR consent recorded as withdrawn or expired, one whose period is over).
    The caller holds the youth's case lock (`hub.store.locks`): two at once do not both find none."""
    if consent.status is not ConsentStatus.ACTIEF or consent.valid_until < today:
        return None
    query = (
        select(consents)
        .where(
            consents.c.youth_key == youth_key,
            consents.c.status == ConsentStatus.ACTIEF.value,
            consents.c.purpose == consent.purpose.value,
            consents.c.valid_from == consent.valid_from,
            consents.c.valid_until == consent.valid_until,
        )
        .order_by(consents.c.recorded_at)
    )
    wanted = substance(consent)
    for row in await session.execute(query):
        stored = _stored(row)
        if stored.consent.status is ConsentStatus.ACTIEF and substance(stored.consent) == wanted:
            return stored
    return None


async def get_consent(session: AsyncSession, consent_id: str, *, lock: bool = False) -> StoredConsent | None:
    """One consent, or None. With `lock`, the row stays locked until the transaction ends, for a
    decision on its status (see `hub.handovers.service.get_handover`)."""
    query = select(consents).where(consents.c.id == consent_id)
    row = (await session.execute(query.with_for_update() if lock else query)).first()
    return _stored(row) if row is not None else None


async def consents_of(session: AsyncSession, youth_key: str, *, share: bool = False) -> list[StoredConsent]:
    """Every consent of a youth, oldest first.

    With `share`, none of them can be withdrawn until the transaction ends (FOR SHARE on
    PostgreSQL; SQLite's write transactions run one at a time): for a disclosure decided under
    them. A withdrawal under way is waited for, and then read.
    """
    query = select(consents).where(consents.c.youth_key == youth_key).order_by(consents.c.recorded_at)
    rows = await session.execute(query.with_for_update(read=True) if share else query)
    return [_stored(r) for r in rows]


async def mark_withdrawn(
    session: AsyncSession, stored: StoredConsent, *, by: str, reason: str
) -> StoredConsent:
    """Set a consent to INGETROKKEN, keeping who withdrew it, when and why."""
    now = utcnow()
    consent = stored.consent.model_copy(update={"status": ConsentStatus.INGETROKKEN})
    await session.execute(
        update(consents)
        .where(consents.c.id == stored.consent_id)
        .values(
            status=ConsentStatus.INGETROKKEN.value,
            consent=consent.model_dump(mode="json"),
            withdrawn_at=now,
            withdrawn_by=by,
            withdrawal_reason=reason,
        )
    )
    return StoredConsent(consent, stored.youth_key, stored.referral_id, stored.recorded_at, now, by, reason)
