"""The routing component: handover requests get their consent check, receivers' answers are kept."""

from __future__ import annotations

import asyncio
import contextlib
from datetime import timedelta

from pydantic import Field, ValidationError

from connectors.receivers.component import register_receivers
from hub.errors import PermanentError
from hub.handovers.answers import (
    kafka_answer_refusal,
    notify_unanswered,
    record_answer,
    refused_answer_audit,
)
from hub.handovers.batches import locked_batch, youths_to_route
from hub.handovers.receivers import kafka_readers
from hub.handovers.routing import routing_of as routing_of  # re-exported: its home before
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
from hub.spine.consumer import DeadLetter
from hub.spine.dlq import safe_error_message
from hub.store import store_failed
from hub.topics import (
    HANDOVER_REQUESTED,
    HANDOVER_STATUS,
    handover_answers,
    handover_outbound,
)
from schemas._base import CanonicalModel, Code, Moment, ShortText
from schemas.envelope import Envelope, new_id
from schemas.handover import Handover, HandoverStatus, ReceiverType

log = get_logger(__name__)


class HandoverAnswer(CanonicalModel):
    """A receiver's answer, on handover.answers.<type>.v1 or POST /api/v1/overdrachten/{id}/status."""

    handover_id: Code | None = None
    status: HandoverStatus
    reason: ShortText | None = None
    meeting_planned_at: Moment | None = Field(default=None, description="the joint meeting, once planned")


def register_routing(hub: Hub) -> None:
    """Consume handover.requested.v1 and each receiver type's handover.answers.<type>.v1 (and refuse
    what arrives on the retired handover.status.v1); watch for unanswered handovers."""
    assert hub.spine is not None
    r = routing_of(hub)
    group = hub.group("routing")

    async def check_and_route(tx: Tx, message: Envelope) -> None:
        """Rule 9: send a requested handover under a covering consent, or let it wait. What it
        discloses is the caseworker's who asked for it (rule 18: the user), whichever system carried
        the request: the API's announcement, or a case system's message."""
        handover_id = message.payload.get("handover_id")
        row = await get_handover(tx.session, str(handover_id)) if handover_id else None
        if row is None:
            # A caseworker system on Kafka sends the whole canonical handover.
            handover = Handover.model_validate(message.payload)
            if handover.handover_id is None:
                handover = handover.model_copy(update={"handover_id": new_id()})
            handover_id = handover.handover_id
            try:
                act = Act(user=message.source, transaction_id=tx.transaction_id)
                row = await create_handover(tx.session, r, handover, act, announce=False)
            except HandoverProblem as exc:
                raise PermanentError(str(exc)) from None
        act = Act(user=row.from_caseworker, transaction_id=tx.transaction_id)
        await route(tx.session, r, str(handover_id), act)

    # a batch takes its youths' case locks at once, in ascending order (hub.handovers.batches)
    hub.spine.subscribe(
        hub.topic(HANDOVER_REQUESTED.name),
        group=group,
        dlq=hub.topic(HANDOVER_REQUESTED.dlq),
        title="routing:requests",
        batch=locked_batch(check_and_route, youths_to_route),
    )(check_and_route)

    answers = hub.group("routing-answers")  # own group: joining it does not rebalance the requests consumer
    for receiver_type in ReceiverType:
        _take_answers(hub, r, receiver_type, answers)

    @hub.spine.subscribe(
        hub.topic(HANDOVER_STATUS.name),
        group=answers,
        dlq=hub.topic(HANDOVER_STATUS.dlq),
        title="routing:answers:shared",
    )
    async def refuse_shared_answer(tx: Tx, message: Envelope) -> None:
        """handover.status.v1 takes no answers: any receiver could write it, naming any sender."""
        try:
            answer: HandoverAnswer | None = HandoverAnswer.model_validate(message.payload)
        except ValidationError:
            answer = None  # refused all the same, for the same reason
        row = None
        if answer is not None and answer.handover_id is not None:
            row = await get_handover(tx.session, answer.handover_id)
        refusal = PermanentError(
            f"{HANDOVER_STATUS.name} takes no answers (its records name their sender only in the envelope, "
            f"which nobody checks): receivers answer on {handover_answers('<type>').name} (the type whose "
            "handover.outbound.<type>.v1 they read) or over HTTP"
        )
        audit = refused_answer_audit(
            row,
            user=f"{HANDOVER_STATUS.name} (kafka)",
            topic=HANDOVER_STATUS.name,
            sender=message.source,
            status=answer.status.value if answer is not None else None,
        )
        raise DeadLetter(refusal, audit=audit)

    hub.background["routing-unanswered"] = lambda: _watch_unanswered(hub, r)
    register_receivers(hub)


def _take_answers(hub: Hub, r: Routing, receiver_type: ReceiverType, group: str) -> None:
    """Consume `receiver_type`'s answers topic: answers of the one organisation reading its outbound topic."""
    assert hub.spine is not None
    name = receiver_type.value.lower()
    topic, outbound = handover_answers(name), handover_outbound(name)

    @hub.spine.subscribe(
        hub.topic(topic.name), group=group, dlq=hub.topic(topic.dlq), title=f"routing:answers:{name}"
    )
    async def keep_answer(tx: Tx, message: Envelope) -> None:
        """A Kafka-speaking receiver's answer; the topic, not the record, says which organisation sent it."""
        answer = HandoverAnswer.model_validate(message.payload)
        if answer.handover_id is None:
            raise PermanentError("answer without handover_id")
        row = await get_handover(tx.session, answer.handover_id)
        readers = await kafka_readers(tx.session, receiver_type)
        receiver = row.receiver_organisation if row is not None else None
        why = kafka_answer_refusal(
            topic.name, outbound.name, readers, message.source, answer.handover_id, receiver
        )
        if why is not None:
            user = readers[0] if len(readers) == 1 else f"{topic.name} (kafka)"
            audit = refused_answer_audit(
                row, user=user, topic=topic.name, sender=message.source, status=answer.status.value
            )
            raise DeadLetter(PermanentError(why), audit=audit)
        organisation = readers[0]
        act = Act(user=organisation, transaction_id=tx.transaction_id, on_behalf_of=organisation)
        try:
            await record_answer(
                tx.session,
                r,
                answer.handover_id,
                organisation,
                answer.status,
                act,
                reason=answer.reason,
                meeting_planned_at=answer.meeting_planned_at,
            )
        except HandoverProblem as exc:
            raise PermanentError(str(exc)) from None


ROUTING = "routing"  # who acts in the periodic check, in the audit log


async def periodic_check(hub: Hub, r: Routing) -> bool:
    """One round of routing's periodic check: tell caseworkers about unanswered handovers, send those
    whose consent has started, or is complete since a later referral. True when something was queued
    for the relay."""
    assert hub.store is not None
    timeout = timedelta(seconds=hub.settings.handovers.answer_timeout_s)
    async with hub.store.transaction() as session:
        # each notice under its own handover's transaction id (hub.handovers.answers)
        told = await notify_unanswered(session, r, timeout, Act(ROUTING, new_id(), None))
    async with hub.store.read() as session:  # a read: the writer is taken only when one waits
        keys = await waiting_to_start(session, r.clock())
    started: list[str] = []
    failed: list[str] = []  # each youth's error, for one log line
    for key in keys:  # consents whose first day has come, or that a later referral may complete
        try:
            # a youth at a time: one whose stored referral or consent cannot be read no longer holds
            # back every other youth's handovers (the round rolled back, every minute)
            async with hub.store.transaction() as session:
                # each under its own request's transaction id (hub.handovers.service.recheck_waiting)
                act = Act(ROUTING, new_id(), None)
                started += await recheck_started(session, r, act, youth_keys=[key])
        except Exception as exc:
            if store_failed(exc):
                raise  # the store's failure, not this youth's: the next round tries them all again
            failed.append(safe_error_message(exc))
    if failed:  # every round (a minute) till the youth's rows are put right; the others went on
        log.error("routing's periodic check could not route youths' waiting handovers", youths=len(failed),
                  error=failed[0])  # fmt: skip
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
