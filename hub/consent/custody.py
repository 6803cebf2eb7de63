"""The custodians a youth's referral names: the one input rule 8 takes from the store.

Every judgement of a consent (recording, reading, listing, withdrawing, FHIR, routing a handover
and the check when it leaves) reads it here, so they all judge a consent alike.
"""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from hub.consent.rules import named_custodians
from hub.intake.tables import referrals
from schemas.referral import Referral

# The youth's latest referral first; the id breaks a tie, so every path picks the same one.
LATEST_FIRST = (referrals.c.received_at.desc(), referrals.c.id.desc())


async def named_for(session: AsyncSession, youth_key: str) -> int:
    """How many people the youth's latest referral names as holding custody (0: none, or no
    referral): a lower bound of the number rule 8 counts, see `hub.consent.rules.named_custodians`."""
    row = (
        await session.execute(
            select(referrals.c.referral)
            .where(referrals.c.youth_key == youth_key)
            .order_by(*LATEST_FIRST)
            .limit(1)
        )
    ).first()
    return named_custodians(Referral.model_validate(row.referral)) if row is not None else 0
