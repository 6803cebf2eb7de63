"""Putting a retry ladder on a topic: the one way every outbound connector does it."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from aiokafka import ConsumerRecord

from hub.retry.delivery import Delivery
from hub.retry.ladder import RetryLadder
from hub.retry.policy import RetryPolicy
from hub.spine import Tx
from hub.spine.consumer import Item
from hub.spine.dlq import key_without_bsn, original_key
from hub.topics import RETRY_LADDERS, Topic
from schemas.envelope import Envelope

if TYPE_CHECKING:
    from hub.runtime import Hub


def ladder_on(
    hub: Hub,
    topic: Topic,
    *,
    name: str,
    group: str,
    partner: str,
    delivery: Delivery,
    policy: RetryPolicy | None,
) -> RetryLadder:
    """A ladder for `topic` (its retry and DLQ topics beside it), its scheduler run by the hub.

    `group` is the consumer group that takes `topic`'s records in (`deliver_through` subscribes it);
    the ladder's dead letters name it, so a replay lets that group process the message id again.
    """
    assert hub.store is not None
    if RETRY_LADDERS.get(name) is not topic:
        raise ValueError(f"retry ladder {name!r} is not in hub.topics.RETRY_LADDERS for {topic.name}")
    ladder = RetryLadder(
        hub.store,
        hub.metrics,
        name=name,
        topic=hub.topic(topic.name),
        retry_topic=hub.topic(topic.retry),
        dlq_topic=hub.topic(topic.dlq),
        partner=partner,
        delivery=delivery,
        policy=policy,
        group=hub.group(group),
        secret=hub.spine.secret if hub.spine is not None else None,
    )
    hub.background[f"{name}-retry"] = ladder.run
    return ladder


def deliver_through(hub: Hub, topic: Topic, ladder: RetryLadder, *, doc: str) -> None:
    """Consume `topic` and hand every message to the ladder, in order per record key (the youth)."""
    assert hub.spine is not None

    def key_of(record: ConsumerRecord[Any, Any], message: Envelope) -> str:
        # what the message waits under, and its retry announcements' key: the hub's own keys are youth
        # keys; a sender's key with a BSN in it goes as its pseudonym (a BSN's is the youth's key)
        key, _ = key_without_bsn(original_key(record), ladder.secret)
        return key if key is not None else message.message_id

    async def deliver(tx: Tx, message: Envelope) -> None:
        await ladder.handle(tx, message, key=key_of(tx.record, message))

    async def deliver_many(tx: Tx, items: list[Item[Envelope]]) -> None:
        await ladder.handle_many(tx, [(i.value, key_of(i.record, i.value), i.record) for i in items])

    deliver.__doc__ = doc
    hub.spine.subscribe(
        hub.topic(topic.name), group=ladder.group, dlq=hub.topic(topic.dlq), batch=deliver_many
    )(deliver)
