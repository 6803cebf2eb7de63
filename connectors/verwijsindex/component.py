"""The Verwijsindex connector component: signal commands through the retry ladder, matches back.

Registered as REGISTRARS["verwijsindex"]. It consumes `verwijsindex.signal.v1` (RegisterSignal,
WithdrawSignal, ChangeSignalContact; keyed by the youth key) and delivers each command over HTTP
through the shared RetryLadder, which keeps one youth's commands in order. It polls the match feed
into `verwijsindex.match.v1`. With no `verwijsindex.url` configured it runs the simulator in-process.
"""

from __future__ import annotations

import asyncio
from typing import Any

from pydantic import ValidationError

from connectors.verwijsindex.client import VerwijsindexClient
from connectors.verwijsindex.contract import IntrekkingsReden, Organisatie
from connectors.verwijsindex.feed import MatchFeed
from connectors.verwijsindex.mapping import contact_van, registratie_van
from connectors.verwijsindex.sim_server import SimulatorServer
from hub.errors import PermanentError
from hub.retry import Delivery, RetryLadder, RetryPolicy, deliver_through, ladder_on
from hub.runtime import Hub
from hub.signals import commands, delivery
from hub.topics import VERWIJSINDEX_MATCH, VERWIJSINDEX_SIGNAL
from schemas.envelope import Envelope
from schemas.signal import VerwijsindexSignal

NAME = "verwijsindex"


def _parse(model: type[Any], message: Envelope) -> Any:
    try:
        return model.model_validate(message.payload)
    except ValidationError as exc:
        fields = sorted({".".join(str(p) for p in e["loc"]) or "payload" for e in exc.errors()})
        # rule 11: an unknown field (a reason, an offence, a parent) is refused, never sent
        raise PermanentError(
            f"{message.type} refused: fields outside the whitelist or invalid: {', '.join(fields)[:200]}"
        ) from None


class VerwijsindexConnector:
    """Delivers signal commands to the index; shown in /readyz, closed when the hub stops."""

    def __init__(
        self, client: VerwijsindexClient, organisatie: Organisatie, simulator: SimulatorServer | None
    ) -> None:
        self.client, self.organisatie, self.simulator = client, organisatie, simulator
        self.feed: MatchFeed | None = None
        self.ladder: RetryLadder | None = None

    @property
    def url(self) -> str | None:
        """The in-process simulator's URL (embedded default), else None."""
        return self.simulator.url if self.simulator is not None else None

    async def deliver(self, message: Envelope) -> None:
        """One command, one idempotent call; raises TransientError or PermanentError."""
        if message.type == commands.REGISTER:
            signal: VerwijsindexSignal = _parse(VerwijsindexSignal, message)
            assert signal.signal_id is not None
            body = registratie_van(signal, self.organisatie)
            await self.client.register(signal.signal_id, body, message.transaction_id)
        elif message.type == commands.WITHDRAW:
            cmd: commands.WithdrawSignal = _parse(commands.WithdrawSignal, message)
            reden = IntrekkingsReden(cmd.reason.value)
            await self.client.withdraw(cmd.signal_id, reden, message.transaction_id)
        elif message.type == commands.CHANGE_CONTACT:
            change: commands.ChangeSignalContact = _parse(commands.ChangeSignalContact, message)
            await self.client.change_contact(
                change.signal_id, contact_van(change.contact), message.transaction_id
            )
        else:
            raise PermanentError(f"unknown command type on {VERWIJSINDEX_SIGNAL.name}")

    async def ping(self) -> None:
        """Raise when the index does not answer its health check."""
        if not await self.client.ping():
            raise ConnectionError("verwijsindex does not answer")

    async def aclose(self) -> None:
        """Close pooled connections, then the in-process simulator."""
        await self.client.aclose()
        if self.simulator is not None:
            await asyncio.to_thread(self.simulator.stop)


def verwijsindex_component(policy: RetryPolicy | None = None, page_size: int = 100):  # type: ignore[no-untyped-def]
    """A registrar; `policy` overrides the schedule from settings (tests use a fast one)."""

    def register(hub: Hub) -> None:
        assert hub.spine is not None and hub.store is not None and hub.relay is not None
        s = hub.settings.verwijsindex
        simulator = None
        url = s.url
        if url is None:
            simulator = SimulatorServer()
            url = simulator.start()
        client = VerwijsindexClient(url, timeout=s.timeout_s, organisatie=s.organisatie_code)
        connector = VerwijsindexConnector(
            client, Organisatie(code=s.organisatie_code, naam=s.organisatie_naam), simulator
        )
        hub.components[NAME] = connector
        ladder = ladder_on(
            hub,
            VERWIJSINDEX_SIGNAL,
            name=NAME,
            group=NAME,
            partner=NAME,
            delivery=Delivery(
                deliver=connector.deliver,
                on_delivered=delivery.on_delivered,
                on_delivered_many=delivery.on_delivered_many,
                on_parked=delivery.on_parked,
                on_dead=delivery.on_dead,
            ),
            policy=policy or RetryPolicy(schedule_s=s.retry_schedule_s),
        )
        connector.ladder = ladder
        feed = MatchFeed(
            hub.store,
            client,
            topic=hub.topic(VERWIJSINDEX_MATCH.name),
            interval_s=s.poll_interval_s,
            page_size=page_size,
            on_published=hub.relay.wake,
            metrics=hub.metrics,
        )
        connector.feed = feed
        hub.background["verwijsindex-matches"] = feed.run

        deliver_through(
            hub, VERWIJSINDEX_SIGNAL, ladder,
            doc="Deliver a signal command to the Verwijsindex, in order per youth, through the retry ladder.",
        )  # fmt: skip

    return register


register_verwijsindex = verwijsindex_component()


def banner_lines(hub: object) -> list[str]:
    """For `ketenhub run`'s banner: where the Verwijsindex is (the simulator's URL when in-process)."""
    connector = getattr(hub, "components", {}).get(NAME)
    if not isinstance(connector, VerwijsindexConnector):
        return []
    if connector.url is not None:
        return [f"  verwijsindex  {connector.url}/docs (in-process simulator)"]
    return [f"  verwijsindex  {hub.settings.verwijsindex.url}"]  # type: ignore[attr-defined]
