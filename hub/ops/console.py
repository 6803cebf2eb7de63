"""The operator console of one hub: its lag monitor and dead-letter service, built from the running hub."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

from hub.api.problems import HubStarting
from hub.ops.dlq import DeadLetters
from hub.ops.health import Monitor, is_dlq
from hub.ops.lag import LagProbe
from hub.runtime import Hub
from hub.topics import all_topics, prefixed

KEY = "ops"
SAMPLE_INTERVAL_S = 5.0


@dataclass
class Console:
    """What the /ops routes and /metrics use."""

    hub: Hub
    probe: LagProbe
    monitor: Monitor
    dead_letters: DeadLetters

    async def aclose(self) -> None:
        """The hub stops: replay jobs of this process end, saying so, while the store is still open."""
        await self.dead_letters.aclose()

    def connectors(self) -> dict[str, Any]:
        """Components that report a status() (last success, last error, reachable)."""
        return {n: c for n, c in self.hub.components.items() if n != KEY}


def _groups(hub: Hub) -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    for sub in hub.spine.subscriptions if hub.spine else []:
        out.setdefault(sub.group, set()).add(sub.topic)
    return out


def console_of(hub: Hub) -> Console:
    """The hub's console, created on first use (the hub must have started its store)."""
    console = hub.components.get(KEY)
    if isinstance(console, Console):
        return console
    if hub.store is None:  # /metrics or the operator API asked before the hub started
        raise HubStarting()
    topics = [t.name for t in prefixed([*all_topics(), *hub.extra_topics], hub.settings.kafka.topic_prefix)]
    probe = LagProbe(hub.kafka_options, describe_groups=not hub.settings.embedded_broker)
    monitor = Monitor(
        probe,
        hub.store,
        topics=topics,
        groups=lambda: _groups(hub),
        group_prefix=hub.settings.kafka.group_prefix,
    )
    dead = DeadLetters(
        hub.store,
        hub.kafka_options,
        [t for t in topics if is_dlq(t)],
        wake=lambda: hub.relay.wake() if hub.relay else None,
        secret=hub.settings.secret_value(),
    )
    console = Console(hub, probe, monitor, dead)
    hub.components[KEY] = console
    return console


def register(hub: Hub) -> None:
    """Registrar: build the console and sample lag in the background while the hub runs."""
    console = console_of(hub)
    hub.tasks.append(asyncio.create_task(console.monitor.run(SAMPLE_INTERVAL_S), name="ops-lag-sampler"))
