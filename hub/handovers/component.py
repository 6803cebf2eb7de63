"""The routing component: handover requests get their consent check, receivers' answers are kept."""

from __future__ import annotations

import asyncio
import contextlib
from datetime import timedelta

from pydantic import Field

from connectors.receivers.component import register_receivers
from hub.errors import PermanentError
from hub.handovers.answers import notify_unanswered, record_answer
from hub.handovers.service import (
    Act,
    HandoverProblem,
    Routing,
    create_handover,
    get_handover,
    recheck_started,
    route,
    waiting_to_start,
)
from hub.logging import get_logger
from hub.runtime import Hub
from hub.spine import Tx
from hub.spine.dlq import safe_error_message
from hub.topics import HANDOVER_DISPATCH, HANDOVER_REQUESTED, HANDOVER_STATUS, NOTIFICATION_MAIL
from schemas._base import CanonicalModel, Code, Moment, ShortText
from schemas.envelope import Envelope, new_id
from schemas.handover import Handover, HandoverStatus

log = get_logger(__name__)


class HandoverAnswer(CanonicalModel):
    """A receiver's answer, on handover.status.v1 or POST /api/v1/overdrachten/{id}/status."""

    handover_id: Code | None = None
    status: HandoverStatus
    reason: ShortText | None = None
    meeting_planned_at: Moment | None = Field(default=None, description="the joint meeting, once planned")


def routing_of(hub: Hub) -> Routing:
    """The hub's routing settings (topics under its prefix), made once."""
    r = hub.components.get("routing")
    if not isinstance(r, Routing):
        r = Routing(
            requested_topic=hub.topic(HANDOVER_REQUESTED.name),
            dispatch_topic=hub.topic(HANDOVER_DISPATCH.name),
            mail_topic=hub.topic(NOTIFICATION_MAIL.name),
            clock=lambda: hub.clock(),  # the hub's clock, also when it is set after this is made
        )
        hub.components["routing"] = r
    return r


def register_routing(hub: Hub) -> None:
    """Consume handover.requested.v1 and handover.status.v1; watch for unanswered handovers."""
    assert hub.spine is not None
    r = routing_of(hub)
    group = hub.group("routing")

    @hub.spine.subscribe(
        hub.topic(HANDOVER_REQUESTED.name),
        group=group,
        dlq=hub.topic(HANDOVER_REQUESTED.dlq),
        title="routing:requests",
    )
    async def check_and_route(tx: Tx, message: Envelope) -> None:
        """Rule 9: send a requested handover under a covering consent, or let it wait."""
        act = Act(user=message.source, transaction_id=tx.transaction_id)
        handover_id = message.payload.get("handover_id")
        if not handover_id or await get_handover(tx.session, str(handover_id)) is None:
            # A caseworker system on Kafka sends the whole canonical handover.
            handover = Handover.model_validate(message.payload)
            if handover.handover_id is None:
                handover = handover.model_copy(update={"handover_id": new_id()})
            handover_id = handover.handover_id
            try:
                await create_handover(tx.session, r, handover, act, announce=False)
            except HandoverProblem as exc:
                raise PermanentError(str(exc)) from None
        await route(tx.session, r, str(handover_id), act)

    @hub.spine.subscribe(
        hub.topic(HANDOVER_STATUS.name),
        group=hub.group("routing-answers"),  # own group: joining it does not rebalance the requests consumer
        dlq=hub.topic(HANDOVER_STATUS.dlq),
        title="routing:answers",
    )
    async def keep_answer(tx: Tx, message: Envelope) -> None:
        """A Kafka-speaking receiver's answer (the record's source is the receiver organisation)."""
        answer = HandoverAnswer.model_validate(message.payload)
        if answer.handover_id is None:
            raise PermanentError("answer without handover_id")
        act = Act(user=message.source, transaction_id=tx.transaction_id, on_behalf_of=message.source)
        try:
            await record_answer(
                tx.session,
                r,
                answer.handover_id,
                message.source,
                answer.status,
                act,
                reason=answer.reason,
                meeting_planned_at=answer.meeting_planned_at,
            )
        except HandoverProblem as exc:
            raise PermanentError(str(exc)) from None

    hub.background["routing-unanswered"] = lambda: _watch_unanswered(hub, r)
    register_receivers(hub)


ROUTING = "routing"  # who acts in the periodic check, in the audit log


async def periodic_check(hub: Hub, r: Routing) -> bool:
    """One round of routing's periodic check: tell caseworkers about unanswered handovers, send those
    whose consent has started. True when something was queued for the relay."""
    assert hub.store is not None
    timeout = timedelta(seconds=hub.settings.handovers.answer_timeout_s)
    async with hub.store.transaction() as session:
        # each notice under its own handover's transaction id (hub.handovers.answers)
        told = await notify_unanswered(session, r, timeout, Act(ROUTING, new_id(), None))
    async with hub.store.read() as session:  # a read: the writer is taken only when one waits
        keys = await waiting_to_start(session)
    started = []
    if keys:
        async with hub.store.transaction() as session:  # consents whose first day has come
            # each under its own request's transaction id (hub.handovers.service.recheck_waiting)
            started = await recheck_started(session, r, Act(ROUTING, new_id(), None), youth_keys=keys)
    return bool(told or started)


async def _watch_unanswered(hub: Hub, r: Routing) -> None:
    settings = hub.settings.handovers
    while True:
        try:
            assert hub.relay is not None
            if await periodic_check(hub, r):
                hub.relay.wake()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.warning("routing's periodic check failed", error=safe_error_message(exc))
        with contextlib.suppress(TimeoutError):
            await asyncio.sleep(settings.check_interval_s)
