"""Start a Hub with test handlers on the shared broker."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from hub.audit import AuditEntry
from hub.config import Settings
from hub.runtime import Hub, Registrar
from hub.spine import Tx
from hub.topics import Topic
from schemas.envelope import Envelope

IN = Topic("test.in.v1")
OUT = Topic("test.out.v1")
TEST_TOPICS = [IN, OUT, Topic(IN.dlq)]


def echo_component(hub: Hub) -> None:
    """A handler of a few lines: record an effect (an audit entry) and emit a reply."""
    assert hub.spine is not None

    @hub.spine.subscribe(hub.topic(IN.name), group=hub.group("echo"), dlq=hub.topic(IN.dlq))
    async def echo(tx: Tx, message: Envelope) -> None:
        """Echo test messages."""
        if message.payload.get("poison"):
            raise ValueError("poison payload")
        await tx.audit(AuditEntry(action="test.effect", user="test", objects={"n": message.payload.get("n")}))
        await tx.emit(
            hub.topic(OUT.name), message.reply("Echoed", message.payload), key=message.payload.get("key")
        )


@asynccontextmanager
async def running_hub(settings: Settings, *registrars: Registrar) -> AsyncIterator[Hub]:
    """A started hub with the given components; stopped afterwards."""
    hub = Hub(
        settings.model_copy(update={"components": ["intake"]}),
        registrars={"intake": list(registrars)},
        extra_topics=TEST_TOPICS,
    )
    await hub.start()
    try:
        yield hub
    finally:
        await hub.stop()
