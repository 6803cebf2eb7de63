"""The receivers' delivery on the spine: handover.dispatch.v1 to each receiver's topic or webhook.

The dispatch message is the hub's own and names the youth key; what leaves for a receiver names its
`youth_ref` instead (`connectors.receivers.outgoing`).
"""

from __future__ import annotations

from functools import cached_property
from typing import Any

import httpx
from sqlalchemy.ext.asyncio import AsyncSession

from connectors.receivers.outgoing import YOUTH_REF, for_receiver
from connectors.receivers.webhook import post_signed
from hub.errors import PermanentError
from hub.handovers.batches import locked_batch, youths_to_deliver
from hub.handovers.delivery_state import (
    delivery_verdict,
    hold_for_delivery,
    record_attempt,
    record_delivered,
    record_lapsed,
)
from hub.handovers.messages import HANDOVER
from hub.handovers.receivers import ReceiverDelivery, check_webhook_url, kafka_readers, receiver_delivery
from hub.handovers.routing import routing_of
from hub.handovers.undelivered import record_failed
from hub.retry import Delivery, RetryPolicy, ladder_on
from hub.retry.ladder import RetryLadder
from hub.retry.recent import RecentIds
from hub.runtime import Hub
from hub.spine import Tx
from hub.spine.consumer import DeadLetter
from hub.spine.dlq import safe_error_message
from hub.topics import HANDOVER_DISPATCH
from schemas.envelope import Envelope

LADDER = "receivers-webhook"


class WebhookDelivery:
    """Delivers one dispatch message by webhook; remembers what it skipped so it is not audited."""

    def __init__(self, hub: Hub) -> None:
        assert hub.store is not None
        self.hub, self.store = hub, hub.store
        self.settings = hub.settings.handovers
        self.routing = routing_of(hub)  # a handover back to waiting is routed again at once
        self.client = httpx.AsyncClient(timeout=self.settings.webhook_timeout_s)
        # Message ids whose handover may no longer go (rules 9, 10): delivered as far as the ladder is
        # concerned, never audited as a disclosure. Kept, not forgotten when read: a round's batch that
        # rolls back is recorded again one by one, and must find them again.
        self.skipped = RecentIds()
        # Message ids this process delivered whose commit may yet fail (a batch retried after a
        # database lock): a retry must not POST them again. After a crash the receiver still
        # de-duplicates by X-Ketenhub-Message-Id (at-least-once across restarts).
        self.delivered = RecentIds()
        self.ladder: RetryLadder | None = None

    @cached_property
    def pseudonym_secret(self) -> str:
        """The secret of the youth key and the receivers' references, read on first use (as intake)."""
        return self.hub.settings.secret_value()

    def status(self) -> dict[str, Any]:
        """For the console (GET /ops/api/connectors): the webhooks' last success and last error."""
        return self.ladder.status() if self.ladder is not None else {}

    async def deliver(self, message: Envelope) -> None:
        """Look up the receiver, check the handover may still go, and POST it signed."""
        if message.message_id in self.delivered:
            return
        outgoing: Envelope | None = None
        # The last check and the record that it may leave in one transaction, under the locks a
        # withdrawal takes: a withdrawal committed after a separate check went unseen, and the
        # handover still left (rule 10). The record is committed before it leaves.
        async with self.store.transaction() as session:
            target = await receiver_delivery(session, str(message.payload["receiver_organisation"]))
            await hold_for_delivery(session, message)
            verdict = await delivery_verdict(session, message, day=self.hub.today())
            if verdict.lapsed:  # ended now: a retry of this message finds it ended
                await record_lapsed(session, self.routing, message, verdict.gaps)
            elif verdict.go:
                if target is None or target.mode != "webhook" or not target.url or not target.secret:
                    raise PermanentError("receiver has no webhook delivery")
                check_webhook_url(target.url, allow_plain_http=self.settings.allow_plain_http)
                # as the receiver gets it, before the mark that it may have left (a message it cannot
                # be made of is a dead letter, never marked as sent); one that does not go needs none
                outgoing = for_receiver(message, self.pseudonym_secret)
                await record_attempt(session, message)
        if verdict.lapsed and self.hub.relay is not None:
            self.hub.relay.wake()
        if not verdict.go:
            self.skipped.add(message.message_id)
            return
        assert target is not None and target.url is not None and target.secret is not None
        assert outgoing is not None
        await post_signed(self.client, target.url, target.secret, outgoing)
        self.delivered.add(message.message_id)
        self.skipped.discard(message.message_id)  # it went out after all: audited as disclosed

    async def on_delivered(self, session: AsyncSession, message: Envelope) -> None:
        """Audit the disclosure, unless the message was skipped."""
        if message.message_id in self.skipped:
            return
        await record_delivered(session, message, channel="webhook")

    async def on_dead(self, session: AsyncSession, message: Envelope, error: str) -> None:
        """Mark the handover's delivery as failed and tell its caseworker (`record_failed`)."""
        await record_failed(session, self.routing, message, error)

    async def aclose(self) -> None:
        """Close the HTTP client."""
        await self.client.aclose()


def register_receivers(hub: Hub) -> None:
    """Consume handover.dispatch.v1; Kafka receivers get their topic, webhook receivers a signed POST."""
    assert hub.spine is not None and hub.store is not None
    webhook = WebhookDelivery(hub)
    hub.components["receivers"] = webhook
    ladder = ladder_on(
        hub,
        HANDOVER_DISPATCH,
        name=LADDER,
        group="receivers",
        partner="receivers",
        delivery=Delivery(
            deliver=webhook.deliver, on_delivered=webhook.on_delivered, on_dead=webhook.on_dead
        ),
        policy=RetryPolicy(schedule_s=tuple(hub.settings.handovers.retry_schedule_s)),
    )
    webhook.ladder = ladder

    async def deliver(tx: Tx, message: Envelope) -> None:
        """Hand a consent-checked handover (or a withdrawal notice) to its receiver."""
        if message.type != HANDOVER:
            await _deliver(tx, message)
            return
        try:
            await _deliver(tx, message)
        except PermanentError as exc:
            # The handover marked undelivered and its caseworker told with the dead letter, in its
            # transaction (the handler's own effects roll back), as the webhook ladder's `on_dead`
            # does. Replayed, the record takes this path again.
            error = safe_error_message(exc)
            raise DeadLetter(
                exc, then=lambda session: record_failed(session, webhook.routing, message, error)
            ) from None

    async def _deliver(tx: Tx, message: Envelope) -> None:
        organisation = str(message.payload["receiver_organisation"])
        youth_key = str(message.payload["youth_key"])
        target = await receiver_delivery(tx.session, organisation)
        if target is None:
            raise PermanentError("receiver has no delivery settings")
        if target.mode == "webhook":
            # Keyed per receiver and youth: one receiver being down holds back only its own messages.
            await ladder.handle(tx, message, key=f"{organisation}:{youth_key}")
            return
        await _to_topic(hub, tx, target, message, webhook.pseudonym_secret)

    # a batch takes its handovers' case locks at once, in ascending order (hub.handovers.batches)
    hub.spine.subscribe(
        hub.topic(HANDOVER_DISPATCH.name),
        group=ladder.group,
        dlq=hub.topic(HANDOVER_DISPATCH.dlq),
        title="receivers:dispatch",
        batch=locked_batch(deliver, youths_to_deliver),
    )(deliver)


async def _to_topic(hub: Hub, tx: Tx, target: ReceiverDelivery, message: Envelope, secret: str) -> None:
    readers = await kafka_readers(tx.session, target.receiver_type)
    # Settings made before one reader per topic was enforced: no handover goes where another
    # organisation reads it. A withdrawal notice does (rule 10): who got the handover must hear.
    if message.type == HANDOVER and readers != [target.organisation]:
        raise PermanentError(
            f"{target.topic_name} is read by {len(readers)} organisations; each would read the "
            "others' handovers: give all but one a webhook, then replay"
        )
    await hold_for_delivery(tx.session, message)  # the check and the send one step (rule 10)
    verdict = await delivery_verdict(tx.session, message, day=hub.today())
    if verdict.lapsed:
        await record_lapsed(tx.session, routing_of(hub), message, verdict.gaps)
    if not verdict.go:
        return
    # keyed by the receiver's reference: per-youth order holds, and the youth key stays in the hub
    outgoing = for_receiver(message, secret)
    await tx.emit(hub.topic(target.topic_name), outgoing, key=str(outgoing.payload[YOUTH_REF]))
    await record_delivered(tx.session, message, channel="kafka", topic=target.topic_name)
