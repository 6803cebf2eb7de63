"""Processes that die by SIGKILL at a chosen moment, for the crash tests. Run as a module."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from typing import Any

from hub.audit import AuditEntry
from hub.spine import add_to_outbox
from hub.store import Store
from schemas.envelope import Envelope


def _die(*_: Any, **__: Any) -> None:
    os.kill(os.getpid(), signal.SIGKILL)


async def commit_then_die(db_url: str, topic: str, message_json: str) -> None:
    """Commit a state change with its outbox message, then die before any relay publishes it."""
    store = Store(db_url)
    await store.migrate()
    message = Envelope.model_validate_json(message_json)
    async with store.transaction() as session:
        await session.execute(__import__("sqlalchemy").text("SELECT 1"))
        from hub.audit import write_audit

        await write_audit(
            session,
            AuditEntry(action="test.effect", user="crash", objects={"n": 1}),
            transaction_id=message.transaction_id,
            system="crash",
        )
        await add_to_outbox(session, topic, message, key="youth-a")
    _die()


async def consume_then_die(settings_json: str) -> None:
    """Run the echo component; die at the offset commit, after the effects were committed."""
    import faststream.kafka.message as fk

    from hub.config import Settings
    from tests.helpers.hubs import echo_component, running_hub

    fk.KafkaAckableMessage.ack = _die  # type: ignore[method-assign,assignment]
    settings = Settings.model_validate_json(settings_json)
    async with running_hub(settings, echo_component):
        await asyncio.Event().wait()  # until the first offset commit kills the process


if __name__ == "__main__":
    mode, *args = sys.argv[1:]
    asyncio.run({"commit-then-die": commit_then_die, "consume-then-die": consume_then_die}[mode](*args))
