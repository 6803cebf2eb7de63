"""Whose handovers a receivers' topic may still hold: an organisation given a type's topic gets the
type's one principal and reads from the topic's start, so it may not take a topic that still holds
the handovers or withdrawal notices the hub put there for another (rule 9)."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from hub.clock import aware
from hub.handovers.tables import handovers, receiver_deliveries
from hub.store.tables import audit_log, outbox, outbox_parked
from hub.topics import handover_outbound
from schemas.envelope import utcnow
from schemas.handover import ReceiverType

if TYPE_CHECKING:
    from hub.handovers.receivers import ReceiverDelivery

# What the hub audits when a handover, or its withdrawal notice, went to a receiver
# (hub.handovers.delivery_state.record_delivered); `channel` "kafka" is a record on its type's topic.
ON_TOPIC_ACTIONS = ("handover.disclosed", "handover.withdrawal_told")
# A record past its retention goes at the broker's next check (log.retention.check.interval.ms, 5
# minutes by default), not at once; the margin covers that.
DELETION_MARGIN = timedelta(hours=1)
RELEASED = "outbox.released"  # an operator released a parked outbox row (hub.ops.parked)
QUEUED_SLACK = timedelta(hours=1)  # how much before its outbox row, in one transaction, an audit entry is


class TopicHoldsOthers(ValueError):
    """The type's topic may still hold handovers or withdrawal notices the hub put there for other
    organisations: whoever reads it next, with the type's one principal, would read them too."""

    def __init__(self, delivery: ReceiverDelivery, others: dict[str, datetime]) -> None:
        self.topic = delivery.topic_name
        self.principal = f"receiver-{delivery.receiver_type.value.lower()}"
        self.organisation = delivery.organisation
        self.kept = {o: last + topic_keeps(delivery.receiver_type) for o, last in others.items()}
        self.until = max(self.kept.values())
        super().__init__(self.message("topic_emptied"))

    def message(self, override: str) -> str:
        """Whose records may be on which topic until when, and the way out, naming the caller's
        `override` (a CLI flag, an API field). Organisations and times only: nothing of a youth."""
        kept = sorted(self.kept.items(), key=lambda item: item[1])
        held = ", ".join(f"{o!r} (until {_moment(until)})" for o, until in kept)
        return (
            f"{self.topic} may still hold handovers or withdrawal notices the hub put there for {held},"
            f" and {self.organisation!r} would read them as {self.principal}. Rotate {self.principal}'s"
            " password, so that whoever had it reads no more (deploy/README.md, 'Handover receivers on"
            f" Kafka'); then wait until {_moment(self.until)}, or delete and recreate the topic, and set"
            f" this again with {override}"
        )


def _moment(at: datetime) -> str:
    """To the minute, rounded up: at the moment said, the check lets the move through."""
    up = aware(at) + timedelta(seconds=59, microseconds=999_999)
    return f"{up:%Y-%m-%d %H:%M} UTC"


def topic_keeps(receiver_type: ReceiverType) -> timedelta:
    """How long after the hub put a record on the type's topic it may still be there: the topic's
    retention (hub.topics), and the broker's delay in deleting it (`DELETION_MARGIN`). While nobody
    reads the topic over Kafka the hub puts nothing on it, so no later record keeps its log segment."""
    return (
        timedelta(milliseconds=handover_outbound(receiver_type.value.lower()).retention_ms) + DELETION_MARGIN
    )


async def others_on_topic(
    session: AsyncSession, delivery: ReceiverDelivery, *, now: datetime | None = None
) -> dict[str, datetime]:
    """The organisations other than `delivery`'s whose handovers or withdrawal notices the hub may
    have on `delivery`'s topic still, each with the time its last one went there.

    The audit log says what went out on Kafka, to whom and on which topic (`ON_TOPIC_ACTIONS`,
    channel "kafka", `topic`). An entry written before entries named their topic is matched by the
    handover's type, and so its topic, and by the organisation's setting now (the topic is the one of
    the setting when it went: either may have changed since, so both count). A record
    the outbox still holds went on the topic when it was sent, and one still waiting (or parked)
    goes later: it counts as going now, however long ago it was queued."""
    now = now or utcnow()
    queued = await _in_outbox(session, delivery.topic_name)
    released = await _released(session, delivery.topic_name, now - topic_keeps(delivery.receiver_type))
    since: datetime | None = now - topic_keeps(delivery.receiver_type)
    if queued:  # its audit entry was written in the transaction that queued it
        since = min(
            now - topic_keeps(delivery.receiver_type), *(c - QUEUED_SLACK for c, _ in queued.values())
        )
    if released:  # queued who knows how long before: every entry is looked at
        since = None
    query = select(audit_log.c.at, audit_log.c.objects).where(audit_log.c.action.in_(ON_TOPIC_ACTIONS))
    found = await session.execute(query if since is None else query.where(audit_log.c.at >= since))
    sent = [
        (aware(r.at), o)
        for r in found
        if (o := r.objects or {}).get("channel") == "kafka"
        and isinstance(o.get("receiver"), str)
        and o["receiver"] != delivery.organisation
    ]
    if not sent:
        return {}
    by_id = select(handovers.c.id, handovers.c.receiver_type).where(
        handovers.c.id.in_({str(o.get("handover_id")) for _, o in sent})
    )
    type_of = {r.id: r.receiver_type for r in await session.execute(by_id)}
    t = receiver_deliveries
    by_name = select(t.c.organisation, t.c.receiver_type).where(
        t.c.organisation.in_({o["receiver"] for _, o in sent})
    )
    setting_of = {r.organisation: r.receiver_type for r in await session.execute(by_name)}
    ours, keeps = delivery.receiver_type.value, topic_keeps(delivery.receiver_type)
    last: dict[str, datetime] = {}
    for at, o in sent:
        if "topic" in o:
            if o["topic"] != delivery.topic_name:
                continue
        elif ours not in (type_of.get(str(o.get("handover_id"))), setting_of.get(o["receiver"])):
            continue
        went = max(at, released.get(o.get("message_id"), at))  # a parked one went once released
        if (message_id := o.get("message_id")) in queued:
            sent_at = queued[message_id][1]
            went = now if sent_at is None else max(at, sent_at)
        if went + keeps > now:
            last[o["receiver"]] = max(went, last.get(o["receiver"], went))
    return last


async def _released(session: AsyncSession, topic_name: str, since: datetime) -> dict[Any, datetime]:
    """Messages of the topic released from the parked outbox since `since`, by message id: each went
    on the topic after its release, however long before it was queued (hub.ops.parked)."""
    query = select(audit_log.c.at, audit_log.c.objects).where(
        audit_log.c.action == RELEASED, audit_log.c.at >= since
    )
    return {
        o.get("message_id"): aware(r.at)
        for r in await session.execute(query)
        if str((o := r.objects or {}).get("topic", "")).endswith(topic_name)
    }


async def _in_outbox(session: AsyncSession, topic_name: str) -> dict[str, tuple[datetime, datetime | None]]:
    """The topic's records the outbox still holds, by message id: when each was queued, and sent
    (None while it waits, or is parked). The outbox keeps sent rows an hour (hub.spine.outbox)."""
    on_topic = f"%{topic_name}"  # the name under the deployment's topic prefix
    o, p = outbox, outbox_parked
    held = select(o.c.message_id, o.c.created_at, o.c.sent_at).where(
        o.c.topic.like(on_topic), o.c.message_id.is_not(None)
    )
    found = {
        r.message_id: (aware(r.created_at), aware(r.sent_at) if r.sent_at else None)
        for r in await session.execute(held)
    }
    parked = select(p.c.message_id, p.c.created_at).where(
        p.c.topic.like(on_topic), p.c.resolved.is_(None), p.c.message_id.is_not(None)
    )
    found.update({r.message_id: (aware(r.created_at), None) for r in await session.execute(parked)})
    return found
