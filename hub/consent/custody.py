"""The custodians a youth's referrals name, and whom they show without custody: the one input rule 8
takes from the store.

Every judgement of a consent (recording, reading, listing, withdrawing, FHIR, routing a handover
and the check when it leaves) reads it here, so they all judge a consent alike.
"""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from hub.consent.rules import Named, named_by
from hub.intake.tables import referrals
from schemas.referral import Referral

# The youth's latest referral first; the id breaks a tie, so every path picks the same one.
LATEST_FIRST = (referrals.c.received_at.desc(), referrals.c.id.desc())


async def named_for(session: AsyncSession, youth_key: str) -> Named:
    """What the youth's referrals name together (0: none, or no referral): as many custodians as
    the one naming most, or as they show with custody together if more, a lower bound of the number
    rule 8 counts (not the latest referral's alone: a BOA or leerplicht referral names one parent at
    most, and would lower what an earlier police referral showed), and who holds custody and who not
    by the latest referral naming them. See `hub.consent.rules.named_by`."""
    rows = await session.execute(
        select(referrals.c.referral).where(referrals.c.youth_key == youth_key).order_by(*LATEST_FIRST)
    )
    return named_by(Referral.model_validate(r.referral) for r in rows)
