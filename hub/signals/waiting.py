"""Whether a signal's registration is still on its way to the Verwijsindex: the port the Verwijsindex
connector asks, so that it needs no knowledge of where the hub keeps its commands.

A contact change the index answers "no such signal" for is moot only while a registration of the
signal will still go (it names the contact the hub holds then): queued in the outbox (a dead letter
being replayed, or being written), published and not yet taken in by the connector, parked on the
retry ladder, or an open dead letter an operator can replay. Otherwise the index lost the signal (or
never got it: its letter was discarded or outlived the DLQ topic's term), nothing will register it
again, and the change must not pass for done.

The signal's row cannot tell: it names the latest command only, and queueing the change itself
replaced what it said of the registration. `dlq_actions` records what was done with a letter, never
that one exists or has gone with the topic's term. So this looks where the registration is: the
parking lot and the outbox (the store), the signal topic itself (published by the relay and not yet
taken in by the connector's consumer group: a sent outbox row whose message id is not in that
group's inbox; the relay keeps such rows until the group took them in, the topic's retention at
most), and the DLQ topic as the operator console reads it (open: on the topic, no action taken on
it).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from sqlalchemy import and_, exists, select

from hub.config import KafkaSettings
from hub.errors import TransientError
from hub.ops.dlq import DeadLetters
from hub.ops.dlq_records import Filter
from hub.ops.lag import BrokersUnavailable
from hub.retry.tables import parked
from hub.signals import commands
from hub.store import Store
from hub.store.tables import inbox, outbox
from hub.topics import VERWIJSINDEX_GROUP, VERWIJSINDEX_SIGNAL
from schemas.envelope import H_CORRELATION_ID, H_MESSAGE_TYPE

# (signal id, youth key) -> whether a registration of the signal is on its way
RegistrationWaits = Callable[[str, str], Awaitable[bool]]
LADDER = VERWIJSINDEX_GROUP  # the Verwijsindex connector's retry ladder (and its name, and its group)


def registers(headers: Mapping[str, Any] | None, signal_id: str) -> bool:
    """Whether a record with these headers is a registration of `signal_id` (its type and the
    correlation id every signal command carries: the signal id)."""
    if not headers:
        return False
    kind = str(headers.get(H_MESSAGE_TYPE) or "").rsplit(".v", 1)[0]
    return kind == commands.REGISTER and headers.get(H_CORRELATION_ID) == signal_id


def registration_waits(
    store: Store, *, ladder: str, group: str, topic: str, dlq_topic: str, options: Mapping[str, Any]
) -> RegistrationWaits:
    """The check for one hub: `ladder` the retry ladder's name, `group` the consumer group that takes
    the signal topic in, `topic` and `dlq_topic` the signal topic and its DLQ as named on the
    brokers, `options` how to reach them."""
    letters = DeadLetters(store, options, [dlq_topic])
    taken_in = exists().where(and_(inbox.c.consumer == group, inbox.c.message_id == outbox.c.message_id))

    async def waits(signal_id: str, youth_key: str) -> bool:
        # Looked in the order a registration moves: queued, published, taken in (the inbox entry and
        # the parking in one transaction), dead-lettered (queued for the DLQ topic, then on it). Each
        # look sees what was committed when it runs, so one that moved on between two looks is found
        # by the later one, not missed by both. A replay moves a dead letter back to the start (the
        # letter resolved and the record queued in one transaction), and it may move on from there
        # while the DLQ is read: the store's looks are made again after the DLQ's, in a read of
        # their own.
        on_its_way = (
            select(outbox.c.headers).where(
                outbox.c.sent_at.is_(None), outbox.c.key == youth_key, outbox.c.topic == topic
            ),
            # published, and not yet taken in: a contact change queued since is the signal's latest
            # command, so nothing else says a registration is on the topic (the relay keeps these rows
            # until taken in: `Relay.watched`)
            select(outbox.c.headers).where(
                outbox.c.sent_at.is_not(None),
                outbox.c.message_id.is_not(None),
                outbox.c.key == youth_key,
                outbox.c.topic == topic,
                ~taken_in,
            ),
            select(parked.c.headers).where(parked.c.ladder == ladder, parked.c.key == youth_key),
            select(outbox.c.headers).where(
                outbox.c.sent_at.is_(None), outbox.c.key == youth_key, outbox.c.topic == dlq_topic
            ),
        )

        async def any_of(queries: tuple[Any, ...]) -> bool:
            async with store.read() as session:
                for query in queries:
                    if any(registers(row.headers, signal_id) for row in await session.execute(query)):
                        return True
            return False

        if await any_of(on_its_way):
            return True
        try:
            found = await letters.find(Filter(key=youth_key))  # open ones only
        except BrokersUnavailable as exc:
            raise TransientError(f"whether the signal's registration is a dead letter: {exc}") from None
        return any(registers(d.headers, signal_id) for d in found) or await any_of(on_its_way)

    return waits


def waits_of(store: Store, kafka: KafkaSettings, options: Mapping[str, Any]) -> RegistrationWaits:
    """The check as the Verwijsindex connector of a hub with these broker settings (its topic and
    group prefixes) makes it."""
    return registration_waits(
        store,
        ladder=LADDER,
        group=kafka.group_prefix + LADDER,
        topic=kafka.topic_prefix + VERWIJSINDEX_SIGNAL.name,
        dlq_topic=kafka.topic_prefix + VERWIJSINDEX_SIGNAL.dlq,
        options=options,
    )
