"""The handover consumers' Kafka batches: every youth's case lock first, all at once.

The spine handles a batch in one transaction. Handled record by record, each record took its youth's
case lock in record order (routing in `create_handover` and `route`, the receivers in
`hold_for_delivery`), so two batches on two partitions whose youths share lock buckets the other way
round deadlocked: PostgreSQL ended one, and the spine rolled it back and tried it again.
hub.store.locks asks every holder to take its keys at once, in ascending order: a batch now does,
before its first record; each record then takes its own lock again, held already, without a wait.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import replace

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from hub.handovers.messages import HANDOVER
from hub.handovers.tables import handovers
from hub.intake.tables import referrals
from hub.spine import Tx
from hub.spine.consumer import BatchHandler, Handler, Item
from hub.store.locks import lock_youths
from schemas._base import as_code
from schemas.envelope import Envelope

YouthsOf = Callable[[AsyncSession, Sequence[Envelope]], Awaitable[Iterable[str]]]


def locked_batch(handler: Handler[Envelope], youths: YouthsOf) -> BatchHandler[Envelope]:
    """A batch handler for the spine: the case locks of the batch's youths (`youths`), then `handler`
    for each record in order, under the record's own transaction id (rule 19). When a record fails,
    the spine hands the batch to `handler` record by record (hub.spine.consumer)."""

    async def handle(tx: Tx, items: list[Item[Envelope]]) -> None:
        await lock_youths(tx.session, await youths(tx.session, [item.value for item in items]))
        for item in items:
            await handler(replace(tx, record=item.record, transaction_id=item.transaction_id), item.value)

    return handle


async def _youths_of_handovers(session: AsyncSession, handover_ids: set[str]) -> dict[str, str]:
    """Handover id -> youth key, of the handovers this hub knows among `handover_ids`."""
    if not handover_ids:
        return {}
    query = select(handovers.c.id, handovers.c.youth_key).where(handovers.c.id.in_(sorted(handover_ids)))
    return {row.id: row.youth_key for row in await session.execute(query)}


def _handover_id(message: Envelope) -> str | None:
    return as_code(message.payload.get("handover_id"))


async def youths_to_deliver(session: AsyncSession, messages: Sequence[Envelope]) -> Iterable[str]:
    """The youths whose case locks `hold_for_delivery` takes for these dispatch messages."""
    ids = {i for m in messages if m.type == HANDOVER and (i := _handover_id(m)) is not None}
    return (await _youths_of_handovers(session, ids)).values()


async def youths_to_route(session: AsyncSession, messages: Sequence[Envelope]) -> Iterable[str]:
    """The youths of these handover requests: a known handover's, or, for a caseworker system's whole
    handover the hub does not hold yet, its referral's (`create_handover` locks that youth)."""
    known = await _youths_of_handovers(session, {i for m in messages if (i := _handover_id(m))})
    referral_ids = {
        r
        for m in messages
        if _handover_id(m) not in known and (r := as_code(m.payload.get("referral_id"))) is not None
    }
    youths = set(known.values())
    if referral_ids:
        query = select(referrals.c.youth_key).where(referrals.c.id.in_(sorted(referral_ids)))
        youths |= set((await session.execute(query)).scalars())
    return youths
