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
    """How many people the youth's referrals name as holding custody, the most any one of them
    names (0: none, or no referral): a lower bound of the number rule 8 counts, see
    `hub.consent.rules.named_custodians`. Not the latest referral's alone: a BOA or leerplicht
    referral names one parent at most, and would lower what an earlier police referral showed."""
    rows = await session.execute(select(referrals.c.referral).where(referrals.c.youth_key == youth_key))
    return max((named_custodians(Referral.model_validate(r.referral)) for r in rows), default=0)
