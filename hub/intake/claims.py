"""Claiming a Kafka connector's source for a partner (`ketenhub partners set-kafka-source`), rule 7.

The intake reads claims through `hub.intake.sources.KafkaSources`; why a claim re-keys nothing is said
there. A source is one partner's at most, and a claim stands once a referral came in through it.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass, replace

from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import aliased

from hub.audit import AuditEntry, write_audit
from hub.errors import HubError
from hub.intake.sources import DEFAULT_SOURCE, MAY_CLAIM, kafka_key, partner_key
from hub.intake.tables import referrals
from hub.partners.registry import SYSTEM, Partner, find_partner
from hub.partners.tables import partners

SOURCE_MAX: int = partners.c.kafka_source.type.length  # type: ignore[attr-defined]


class SourceRefused(HubError):
    """A source cannot be claimed or released as asked; the message says why and what to do."""


@dataclass(frozen=True)
class SourceSet:
    """A claim made (or released): the partner as it is now, and what the connector sent before."""

    partner: Partner
    previous: str | None
    earlier: int  # referrals the connector sent before the claim: from now on the partner's
    twice: int  # of those, case references the partner also sent over HTTP: stored twice before


def check_source(source: str) -> str:
    """A source as a claim stores it; SourceRefused for one no envelope carries or the default."""
    source = source.strip()
    if not 0 < len(source) <= SOURCE_MAX or not source.isprintable():
        raise SourceRefused(f"a source is 1 to {SOURCE_MAX} printable characters, as the envelope carries it")
    if source == DEFAULT_SOURCE:
        raise SourceRefused(
            f"{DEFAULT_SOURCE!r} is the envelope's default source, which the intake refuses (a connector"
            " that sends it did not say who it is): give the connector a name of its own"
        )
    return source


async def set_kafka_source(
    session: AsyncSession, name: str, source: str | None, *, user: str = "cli"
) -> SourceSet:
    """Let partner `name` speak for the connector `source` (None: for none); audited.

    Refused for a source another partner claimed, and for a change once a referral came in through
    the partner's source: its repeats would be new referrals again."""
    partner = await find_partner(session, name)
    if source is not None:
        source = check_source(source)
        _may_claim(partner)
    previous = partner.kafka_source
    if source != previous:
        if source is not None:
            await _free(session, source)
        if previous is not None:
            await _unused(session, partner)
        try:
            async with session.begin_nested():
                await session.execute(
                    update(partners).where(partners.c.id == partner.id).values(kafka_source=source)
                )
        except IntegrityError:  # claimed by another partner between the check and this update
            await _free(session, source or "")
            raise SourceRefused(f"source {source!r} was claimed by another partner just now") from None
        await write_audit(
            session,
            AuditEntry(
                action="partner.kafka_source_set",
                user=user,
                objects={"partner": partner.name, "source": source, "previous": previous},
            ),
            transaction_id=None,
            system=SYSTEM,
        )
    claimed = replace(partner, kafka_source=source)
    earlier, twice = await _earlier(session, claimed) if source else (0, 0)
    return SourceSet(claimed, previous, earlier, twice)


def _may_claim(partner: Partner) -> None:
    if partner.type in MAY_CLAIM:
        return
    why = f"only a referring partner ({', '.join(sorted(t.value for t in MAY_CLAIM))}) has referrals"
    raise SourceRefused(f"partner {partner.name!r} is of type {partner.type.value}: {why}")


async def _free(session: AsyncSession, source: str) -> None:
    holder = (
        await session.execute(select(partners.c.name).where(partners.c.kafka_source == source))
    ).scalar_one_or_none()
    if holder is not None:
        raise SourceRefused(
            f"source {source!r} is claimed by partner {holder!r}: one connector speaks for one referrer"
            " (rule 7). If that claim is a mistake, release it first"
            f" (ketenhub partners set-kafka-source {shlex.quote(holder)} --none)"
        )


async def _unused(session: AsyncSession, partner: Partner) -> None:
    """SourceRefused once referrals came in through the partner's claim: under the partner's key on the
    Kafka channel. What the connector sent before the claim keeps the connector's own key, and stays
    the connector's once the claim is released: a claim made for the wrong partner can be undone
    until the connector sent something under it. Counted by the partner's id, not its key: the police's
    key is every police referral's, their own topic's (Kafka too) among them."""
    through = (referrals.c.partner_id == partner.id) & (referrals.c.channel == "kafka")
    count = (await session.execute(select(func.count()).select_from(referrals).where(through))).scalar_one()
    if count:
        raise SourceRefused(
            f"{count} referral(s) came in through source {partner.kafka_source!r} already: releasing or"
            " changing it would make their repeats new referrals (rule 7), so a claim stands once used;"
            " a new connector of this partner sends under the same source"
        )


async def _earlier(session: AsyncSession, partner: Partner) -> tuple[int, int]:
    """Referrals the partner's connector sent before the claim, and how many of them the partner had
    sent over HTTP as well."""
    assert partner.kafka_source is not None
    own = aliased(referrals)
    before = referrals.c.referrer_key == kafka_key(partner.kafka_source)
    also = (
        select(own.c.id)
        .where(own.c.referrer_key == partner_key(partner.id, partner.type))
        .where(own.c.case_reference == referrals.c.case_reference)
        .exists()
    )
    count = select(func.count()).select_from(referrals)
    earlier = (await session.execute(count.where(before))).scalar_one()
    twice = (await session.execute(count.where(before, also))).scalar_one() if earlier else 0
    return int(earlier), int(twice)
