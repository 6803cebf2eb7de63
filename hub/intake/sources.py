"""Rule 7 across channels: whose referrals a Kafka connector publishes, by its envelope source.

A referral's rule 7 key names its referrer: "politie" for the police, `partner:<id>` for another
HTTP partner, `kafka:<source>` for a connector on referral.received.v1. A partner that also sends
through a connector claims the connector's source (`ketenhub partners set-kafka-source`); that
connector's referrals are then stored under the partner's key, so one referral sent both ways is
one referral, answered the second time with its first outcome.

A referral says who its referrer is (`referrer.type`), and a claimed source's must be its partner's
kind (a BOA's connector sends BOA referrals): rule 4 (a BOA refers only its own offences) checks BOA
referrals alone, and a BOA referral typed as the police's would pass it. A police partner may claim a
source too: its connector's referrals are then the police's (one referrer, rule 7, on every channel),
so that one and the same referral on the police's own topic, or over HTTP, are one. A connector nobody
claimed never speaks for the police, whatever its referrals say: they stay under its own key.

A claim re-keys nothing. What the connector sent before it stays under `kafka:<source>`, which
remains one of the partner's keys: both channels look a case reference up under both
(`Origin.also_known_as`), and the partner reads those referrals over HTTP. Moving the rows to the
partner's key instead would hide them from an intake that has not read the claim yet (its cache,
below), which would then store a repeat of one of them a second time. The police are one referrer
whichever of their partners sends: their topic, their HTTP partners and each connector they claimed
look a PV number up under "politie" and under the keys of every connector a police partner claimed
(`police_keys`), and each police partner reads those referrals.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from hub.errors import PermanentError
from hub.intake.service import POLITIE_REFERRER, Origin
from hub.partners.keys import PartnerType
from hub.partners.registry import Partner
from hub.partners.tables import partners
from schemas.envelope import Envelope
from schemas.referral import ReferrerType

if TYPE_CHECKING:
    from hub.store import Store

# The source an envelope carries when its maker did not set one: the hub's own name.
DEFAULT_SOURCE: str = Envelope.model_fields["source"].default
# Partners that refer and may have a connector too; the police's referrals, through a connector
# they claimed, on their own topic (partner.politie.referral.v1) and over HTTP, are one referrer's.
MAY_CLAIM = frozenset(
    {
        PartnerType.POLITIE,
        PartnerType.BOA,
        PartnerType.LEERPLICHT,
        PartnerType.PREVENTIEF,
        PartnerType.WIJKTEAM,
        PartnerType.JONGERENWERK,
    }
)


# The referrer a partner of each kind is: what its referrals say over HTTP (its format's parser).
REFERRER_OF = {
    PartnerType.POLITIE: ReferrerType.POLITIE,
    PartnerType.BOA: ReferrerType.BOA,
    PartnerType.LEERPLICHT: ReferrerType.LEERPLICHT,
    PartnerType.PREVENTIEF: ReferrerType.PREVENTIEF,
    PartnerType.WIJKTEAM: ReferrerType.PREVENTIEF,
    PartnerType.JONGERENWERK: ReferrerType.PREVENTIEF,
}


def kafka_key(source: str) -> str:
    """The rule 7 key of a connector's referrals while no partner claims its source."""
    return f"kafka:{source}"


def partner_key(partner_id: str, type_: PartnerType | str) -> str:
    """The rule 7 key of a partner's referrals, over HTTP and through a source it claimed."""
    return POLITIE_REFERRER if type_ == PartnerType.POLITIE else f"partner:{partner_id}"


def earlier_keys(partner: Partner) -> tuple[str, ...]:
    """The keys a partner's referrals were stored under besides its own: its connector's, from
    before the claim (`Origin.also_known_as`)."""
    return (kafka_key(partner.kafka_source),) if partner.kafka_source else ()


def police_keys(claims: dict[str, Claim]) -> tuple[str, ...]:
    """The keys the police's referrals were stored under besides their own: those of every connector
    a police partner claimed, from before its claim. The police are one referrer on every channel
    (their topic, HTTP, each claimed connector), so each looks a PV number up under all of them."""
    return tuple(
        sorted(kafka_key(s) for s, claim in claims.items() if claim.referrer_key == POLITIE_REFERRER)
    )


class UnnamedConnector(PermanentError):
    """A canonical referral whose envelope does not say which connector sent it."""

    def __init__(self) -> None:
        super().__init__(
            f"envelope source is {DEFAULT_SOURCE!r}, the hub's default: the connector did not say who it"
            " is. Rule 7 tells referrals apart by referrer and case reference, and connectors without"
            " a source of their own would be one referrer: one's new referral answered as a repeat of"
            " another's. Set the envelope's source to the connector's own name (the same on every"
            " message) and send the referral again; nothing of this one was stored."
        )


class NotTheClaimantsReferrer(PermanentError):
    """A referral through a claimed source that names another kind of referrer than its partner."""

    def __init__(self, source: str, claim: Claim, said: ReferrerType) -> None:
        assert claim.referrer_type is not None
        super().__init__(
            f"referrer.type is {said.value}, but source {source!r} is claimed by partner "
            f"{claim.partner_id!r}, whose referrals are {claim.referrer_type.value}: the rules a referral "
            "is decided by depend on its referrer (rule 4 for a BOA's), so one partner's connector may "
            f"not send another's. Set referrer.type to {claim.referrer_type.value}, or send it through "
            "the other referrer's own connector or endpoint; nothing of this one was stored."
        )


@dataclass(frozen=True)
class Claim:
    """The partner that speaks for a connector source, under its rule 7 key, and the referrer its
    referrals name."""

    partner_id: str
    referrer_key: str
    referrer_type: ReferrerType | None  # None: a kind that claims no source (`MAY_CLAIM`) nor is checked


class KafkaSources:
    """Which partner claimed which connector source, read from the partners table at most once every
    `ttl_s` seconds rather than once per record (a poll brings hundreds).

    `ttl_s` is the hub's http.key_cache_s (KETENHUB_HTTP__KEY_CACHE_S, 5 s by default), which is how
    long an HTTP partner's key lookup is trusted too: a source claimed while the hub runs is taken as
    the partner's within that time on both channels. A record in between is stored under the
    connector's own key, which stays one of the partner's: a repeat of it is still found.
    """

    def __init__(self, ttl_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.ttl_s, self.clock = ttl_s, clock
        self._claims: dict[str, Claim] = {}
        self._until = float("-inf")

    async def claims(self, session: AsyncSession | AsyncConnection) -> dict[str, Claim]:
        """Every claimed source, by source; read again once `ttl_s` has passed."""
        if self.clock() >= self._until:
            # A disabled partner's claim holds too: its key is refused, but what its connector sends
            # is still its referrals, and a repeat of them must still be found.
            rows = await session.execute(
                select(partners.c.id, partners.c.type, partners.c.kafka_source).where(
                    partners.c.kafka_source.is_not(None)
                )
            )
            self._claims = {
                r.kafka_source: Claim(r.id, partner_key(r.id, r.type), REFERRER_OF.get(r.type)) for r in rows
            }
            self._until = self.clock() + self.ttl_s
        return self._claims

    async def police_keys(self, session: AsyncSession | AsyncConnection) -> tuple[str, ...]:
        """`police_keys` of the claims as this cache has them."""
        return police_keys(await self.claims(session))

    async def police_keys_in(self, store: Store) -> tuple[str, ...]:
        """`police_keys`, reading the claims from `store` only when the cache's lifetime has passed."""
        if self.clock() < self._until:
            return police_keys(self._claims)
        async with store.connect() as conn:
            return await self.police_keys(conn)

    async def origin(
        self,
        session: AsyncSession,
        source: str,
        *,
        transaction_id: str,
        system: str,
        referrer: ReferrerType | None = None,
    ) -> Origin:
        """Where a canonical referral from the connector `source`, naming `referrer` as its kind of
        referrer, came from, for rule 7.

        UnnamedConnector for the hub's default source, NotTheClaimantsReferrer for a referrer not
        its claimed source's partner's: such records are dead-lettered."""
        if source == DEFAULT_SOURCE:
            raise UnnamedConnector()
        own = kafka_key(source)
        claim = (await self.claims(session)).get(source)
        if claim is None:
            return Origin(own, "kafka", transaction_id, system, user=source, announce_duplicates=True)
        if referrer is not None and claim.referrer_type is not None and referrer is not claim.referrer_type:
            raise NotTheClaimantsReferrer(source, claim, referrer)
        police = claim.referrer_key == POLITIE_REFERRER
        return Origin(
            claim.referrer_key,
            "kafka",
            transaction_id,
            system,
            user=source,
            partner_id=claim.partner_id,
            announce_duplicates=True,
            also_known_as=await self.police_keys(session) if police else (own,),
        )
