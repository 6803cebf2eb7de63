"""The receivers' delivery settings: each organisation gets its handovers by Kafka topic or webhook."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from sqlalchemy import insert, select, text, update
from sqlalchemy.ext.asyncio import AsyncSession

from hub.audit import AuditEntry, write_audit
from hub.handovers.tables import receiver_deliveries
from hub.handovers.topic_others import TopicHoldsOthers, others_on_topic
from hub.partners.registry import SYSTEM
from hub.urls import origin
from schemas.handover import ReceiverType

LOOPBACK = {"127.0.0.1", "localhost", "::1"}
SETTINGS_LOCK = 7_301_003  # PostgreSQL advisory lock id: one change of delivery settings at a time


@dataclass(frozen=True)
class ReceiverDelivery:
    """How one receiving organisation gets handovers."""

    organisation: str
    receiver_type: ReceiverType
    mode: str  # "kafka" or "webhook"
    url: str | None = None
    secret: str | None = None
    active: bool = True

    @property
    def topic_name(self) -> str:
        """The receiver's own topic (unprefixed): handover.outbound.<receiver type>.v1."""
        return f"handover.outbound.{self.receiver_type.value.lower()}.v1"


def check_webhook_url(url: str, *, allow_plain_http: bool) -> None:
    """HTTPS only; plain http only to loopback and only when allowed (tests, demo)."""
    parts = urlsplit(url)
    if parts.scheme == "https" and parts.hostname:
        return
    if parts.scheme == "http" and allow_plain_http and parts.hostname in LOOPBACK:
        return
    raise ValueError(
        "webhook URL must be https:// (http:// only to loopback,"
        " with KETENHUB_HANDOVERS__ALLOW_PLAIN_HTTP=true)"
    )


class TopicTaken(ValueError):
    """Another organisation of the same type already reads that type's topic."""


async def kafka_readers(session: AsyncSession, receiver_type: ReceiverType) -> list[str]:
    """The active organisations that read `receiver_type`'s topic."""
    t = receiver_deliveries
    query = (
        select(t.c.organisation)
        .where(t.c.receiver_type == receiver_type.value, t.c.mode == "kafka", t.c.active.is_(True))
        .order_by(t.c.organisation)
    )
    return list((await session.execute(query)).scalars())


async def set_receiver_delivery(
    session: AsyncSession, delivery: ReceiverDelivery, *, topic_emptied: bool = False, user: str = "cli"
) -> None:
    """Create or replace an organisation's delivery settings.

    One organisation per type reads a type's topic: Kafka grants reading per topic, not per
    message, so a second would read the first's handovers (rule 9). TopicTaken says who has it.

    Nor may one take a topic that still holds another organisation's handovers, from before that
    one was moved to a webhook: it gets the type's principal, and reads from the topic's start.
    TopicHoldsOthers says whose and until when; `topic_emptied` is the operator's word that the
    topic was deleted and made again (or that the records are gone), and skips that check. An
    organisation that reads the topic already changes nothing by taking it again.

    Audited (`receiver.delivery_set`, by `user`): where an organisation's handovers go from now on,
    and whose records the operator said were gone when the hub's record said otherwise."""
    if delivery.mode not in ("kafka", "webhook"):
        raise ValueError("mode must be kafka or webhook")
    if delivery.mode == "webhook" and not (delivery.url and delivery.secret and len(delivery.secret) >= 32):
        raise ValueError("a webhook needs a URL and a secret of at least 32 characters")
    if session.get_bind().dialect.name == "postgresql":
        # Two changes at once would each find the topic free and both take it; SQLite's one writer
        # already puts them one after the other.
        await session.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": SETTINGS_LOCK})
    overridden: list[str] = []  # whose records the operator said are gone from the topic
    if delivery.mode == "kafka" and delivery.active:
        readers = await kafka_readers(session, delivery.receiver_type)
        others = [o for o in readers if o != delivery.organisation]
        if others:
            raise TopicTaken(
                f"{delivery.topic_name} is already read by {others[0]!r}, and a second reader would read "
                f"its handovers; give {delivery.organisation!r} a webhook (--webhook URL)"
            )
        if delivery.organisation not in readers:
            held = await others_on_topic(session, delivery)
            if held and not topic_emptied:
                raise TopicHoldsOthers(delivery, held)
            overridden = sorted(held)
    values = {
        "receiver_type": delivery.receiver_type.value,
        "mode": delivery.mode,
        "url": delivery.url,
        "secret": delivery.secret,
        "active": delivery.active,
    }
    table = receiver_deliveries
    exists = (
        await session.execute(
            select(table.c.organisation).where(table.c.organisation == delivery.organisation)
        )
    ).first()
    if exists:
        await session.execute(
            update(table).where(table.c.organisation == delivery.organisation).values(**values)
        )
    else:
        await session.execute(insert(table).values(organisation=delivery.organisation, **values))
    # A webhook by its scheme and host: a token in its path or query would stay in the audit log
    where = delivery.topic_name if delivery.mode == "kafka" else origin(delivery.url or "")
    objects: dict[str, Any] = {"organisation": delivery.organisation, "type": delivery.receiver_type.value}
    objects |= {"mode": delivery.mode, "to": where, "active": delivery.active}
    if overridden:  # the hub's record said the topic may still hold theirs
        objects["topic_emptied_for"] = overridden
    entry = AuditEntry(action="receiver.delivery_set", user=user, objects=objects)
    await write_audit(session, entry, transaction_id=None, system=SYSTEM)


async def receiver_delivery(session: AsyncSession, organisation: str) -> ReceiverDelivery | None:
    """An organisation's delivery settings, or None when it has none (or is inactive)."""
    row = (
        await session.execute(
            select(receiver_deliveries).where(receiver_deliveries.c.organisation == organisation)
        )
    ).first()
    if row is None or not row.active:
        return None
    return ReceiverDelivery(
        row.organisation, ReceiverType(row.receiver_type), row.mode, row.url, row.secret, True
    )
