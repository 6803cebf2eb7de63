"""What a connector gives the retry ladder (`Delivery`), and how the ladder runs its hooks (`Hooks`).

A hook keeps a connector's bookkeeping: a signal's state, a handover's mark, the disclosure's audit
entry. Each runs in a savepoint of its own, so that its failure neither undoes what the ladder
recorded nor keeps the message in the parking lot to be sent again.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from hub.audit import AuditEntry, write_audit
from hub.errors import TransientError
from hub.logging import get_logger
from hub.metrics import Metrics
from hub.spine.dlq import safe_error_message
from hub.store import store_failed
from schemas.envelope import Envelope, trace_id

log = get_logger(__name__)
Hook = Callable[..., Awaitable[None]]
# The connector hooks, and the audit entry the ladder writes itself when on_delivered failed.
HOOKS = ("on_delivered", "on_parked", "on_dead", "audit")
# schemas.pseudonym.youth_key, how the ladders key their messages (alone, or after the receiver's name)
_YOUTH_KEY = re.compile(r"(?:^|:)([0-9a-f]{64})$")


async def _noop(*_: Any, **__: Any) -> None:
    return None


class StoreFailed(TransientError):
    """The hub's own store failed on a delivery's way (a connector's lookup found no connection, or
    lost it): not the partner's failure. The message is tried again later without using a rung, up
    to `POSTPONE_AT_MOST` times in a row; a failure that keeps coming for it then uses rungs."""


@dataclass
class Delivery:
    """What a connector supplies: how to deliver one message, and what to record on each outcome.

    `deliver` raises TransientError (retry) or PermanentError (DLQ); it must be idempotent, since a
    crash after a successful call and before the commit delivers the message again. It runs with no
    transaction of the ladder's open (the hooks run in the one that records its outcome, afterwards):
    what it reads or writes of the store, it does in short transactions of its own.
    """

    deliver: Callable[[Envelope], Awaitable[None]]
    on_delivered: Hook = _noop  # (session, message)
    on_parked: Hook = _noop  # (session, message, attempt, due_at, error)
    on_dead: Hook = _noop  # (session, message, error)
    # (session, messages): on_delivered for a round's deliveries at once, in a few statements. On
    # SQLite a round's outcomes share one transaction; on PostgreSQL the outcomes that came while
    # another transaction recorded share the next, each while the lease that keeps other hub
    # processes off it is still its own.
    on_delivered_many: Hook | None = None
    # (messages): look up at once what a round's deliveries will need (one query where `deliver`
    # would make one per message); `deliver` must still work, by its own lookups, without it.
    prepare: Callable[[Sequence[Envelope]], Awaitable[None]] | None = None

    async def delivered_many(self, session: AsyncSession, messages: Sequence[Envelope]) -> None:
        """Record every delivered message of a round: the batch hook, or the single one for each."""
        if self.on_delivered_many is not None:
            await self.on_delivered_many(session, messages)
            return
        for message in messages:
            await self.on_delivered(session, message)


class Hooks:
    """A ladder's way of running its connector's hooks: in savepoints, failures counted and logged."""

    def __init__(self, delivery: Delivery, metrics: Metrics, *, ladder: str, partner: str) -> None:
        self.delivery, self.metrics, self.ladder, self.partner = delivery, metrics, ladder, partner
        for hook in HOOKS:  # every series from 0, so that the first failure is an increase too
            metrics.hook_failures.labels(ladder, hook)

    async def run(
        self,
        session: AsyncSession,
        name: str,
        message: Envelope,
        *args: Any,
        key: str | None,
        contained: bool = False,
    ) -> None:
        """A connector's hook, in a savepoint of its own: when it fails, what the ladder recorded
        (delivered, parked, dead-lettered) stands, and the failure is logged and counted.

        A hook keeps a connector's bookkeeping (a signal's state, a handover's mark, the disclosure's
        audit entry). Letting its failure undo the ladder's record would keep the message in the
        parking lot, tried again at once, round after round: a delivered message sent again and
        again, a dead one never dead-lettered. A delivery whose hook failed is still audited, with
        what the ladder knows of it (rule 18). The store's own failure (a lost connection) is no
        hook's: it is raised, and nothing of the round is kept. `contained`: not even then (what
        the ladder writes is itself the answer to the store's failure: a postponement); when the
        store is really gone, the transaction's commit fails anyway.
        """
        try:
            async with session.begin_nested():
                await getattr(self.delivery, name)(session, message, *args)
        except Exception as exc:
            if not contained:
                _raise_when_the_store_failed(exc)
            self._failed(name, message, exc)
            if name == "on_delivered":
                await self._audit_delivery(session, message, exc, key=key)

    async def _audit_delivery(
        self, session: AsyncSession, message: Envelope, cause: Exception, *, key: str | None
    ) -> None:
        """The disclosure's audit entry with what the ladder knows, for a delivery whose hook failed.
        When even that fails, the delivery still stands: sending it again would disclose it again."""
        entry = AuditEntry(
            action="delivery.recorded_without_details",
            user=f"ketenhub-{self.ladder}",
            youth_key=found.group(1) if key is not None and (found := _YOUTH_KEY.search(key)) else None,
            objects={
                "partner": self.partner,
                "message_id": message.message_id,
                "type": message.type,
                "error_class": type(cause).__name__,
            },
        )
        try:
            async with session.begin_nested():
                await write_audit(
                    session, entry, transaction_id=message.transaction_id, system=f"ketenhub-{self.ladder}"
                )
        except Exception as exc:
            _raise_when_the_store_failed(exc)
            self._failed("audit", message, exc)

    def _failed(self, name: str, message: Envelope, exc: Exception) -> None:
        self.metrics.hook_failures.labels(self.ladder, name).inc()
        log.error(
            "a delivery hook failed; the ladder's record stands",
            ladder=self.ladder,
            hook=name,
            message_id=trace_id(message.message_id),
            error=safe_error_message(exc),
        )


def _raise_when_the_store_failed(exc: Exception) -> None:
    """A hook's own failure is kept to the hook; the store's failure is not (`store_failed`)."""
    if store_failed(exc):
        raise exc
