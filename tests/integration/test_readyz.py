"""/readyz, which anyone may call: what it says of a dependency that fails, and how often it asks."""

from __future__ import annotations

import asyncio
import os
import signal

import httpx
import pytest

from hub import runtime as hub_runtime
from hub.app import create_app
from hub.embedded import EmbeddedKafka
from hub.runtime import READY_FOR_S, Hub
from tests.conftest import make_settings
from tests.helpers.kafka import wait_for

pytestmark = pytest.mark.integration


class Partner:
    """A component with a health check, as the SMTP and Verwijsindex connectors have: it counts its
    checks, and fails them with a text that holds a BSN and a password."""

    def __init__(self) -> None:
        self.pings = 0

    async def ping(self) -> None:
        self.pings += 1
        await asyncio.sleep(0.05)
        raise ConnectionError("login as 'hub' with password 'geheim' refused for 123456782")


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
async def test_readyz_names_what_is_down_without_its_values_and_asks_at_most_once_a_second(
    kafka: EmbeddedKafka, db_url: str, unique: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # one look stands for 30 s here, and the test ages it by hand: a busy machine's second between
    # two calls is no new look (it was, and the test found two where it meant one)
    monkeypatch.setattr(hub_runtime, "READY_FOR_S", 30.0)
    partner = Partner()

    def register(hub: Hub) -> None:
        hub.components["partner"] = partner

    settings = make_settings(kafka, db_url, unique, components=["verwijsindex"])
    hub = Hub(settings, registrars={"verwijsindex": [register]})  # in its place, this partner
    await hub.start()
    try:
        transport = httpx.ASGITransport(app=create_app(hub.settings, hub=hub))
        async with httpx.AsyncClient(transport=transport, base_url="http://hub") as client:
            answers = await asyncio.gather(*(client.get("/readyz") for _ in range(20)))
            assert {a.status_code for a in answers} == {503}
            said = answers[0].json()["checks"]
            assert said == {"store": "ok", "broker": "ok", "partner": "ConnectionError"}, said
            # the operators' console (logged in) says why, still without the BSN
            why = (await hub.readiness())["partner"]
            assert why.startswith("ConnectionError: ") and "123456782" not in why, why
            assert partner.pings == 1  # twenty callers at once: one look
            await client.get("/readyz")
            assert partner.pings == 1  # within READY_FOR_S: the same look
            assert hub._ready_at is not None
            at, checks = hub._ready_at
            hub._ready_at = (at - hub_runtime.READY_FOR_S - 0.1, checks)  # the look, older than it stands for
            await client.get("/readyz")
            assert partner.pings == 2
    finally:
        await hub.stop()


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
async def test_readyz_says_the_broker_is_down_when_it_stops_answering_with_its_connections_open(
    db_url: str, unique: str
) -> None:
    """A hung broker (a stopped process, a network that drops packets) keeps its connections open:
    the check asked only whether one was, and /readyz said "ok" for the 40 s until the relay's
    publish timed out, while nothing was published. Now it is "not ready" within the check's time
    limit, and ready again once the broker answers."""
    broker = EmbeddedKafka()  # its own: the test stops it
    broker.start()
    try:
        assert broker.process is not None
        hub = Hub(make_settings(broker, db_url, unique))
        await hub.start()
        try:
            transport = httpx.ASGITransport(app=create_app(hub.settings, hub=hub))
            async with httpx.AsyncClient(transport=transport, base_url="http://hub") as client:

                async def ready() -> bool:
                    return (await client.get("/readyz")).status_code == 200

                await wait_for(ready, timeout_s=30, interval_s=0.5)  # a busy machine's look may time out
                os.kill(broker.process.pid, signal.SIGSTOP)
                try:
                    await asyncio.sleep(READY_FOR_S + 0.1)  # past the look that said ready
                    answer = await client.get("/readyz")
                finally:
                    os.kill(broker.process.pid, signal.SIGCONT)
                assert answer.status_code == 503
                assert answer.json()["checks"]["store"] == "ok"
                assert answer.json()["checks"]["broker"] != "ok"
                await wait_for(ready, timeout_s=30, interval_s=0.5)
        finally:
            await hub.stop()
    finally:
        broker.stop()


class Waiting:
    """A component whose check answers only once another's has begun: checked one after another,
    it ran out its 3 s before the next began, as a hung store did before a hung broker was asked."""

    def __init__(self, begun: asyncio.Event) -> None:
        self.begun = begun

    async def ping(self) -> None:
        await self.begun.wait()


class Beginning:
    def __init__(self, begun: asyncio.Event) -> None:
        self.begun = begun

    async def ping(self) -> None:
        self.begun.set()


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
async def test_readyz_asks_every_dependency_at_once(kafka: EmbeddedKafka, db_url: str, unique: str) -> None:
    begun = asyncio.Event()

    def register(hub: Hub) -> None:
        hub.components["first"] = Waiting(begun)
        hub.components["second"] = Beginning(begun)

    settings = make_settings(kafka, db_url, unique, components=["verwijsindex"])
    hub = Hub(settings, registrars={"verwijsindex": [register]})
    await hub.start()
    try:
        checks = await hub.readiness()
        assert checks == {"store": "ok", "broker": "ok", "first": "ok", "second": "ok"}, checks
    finally:
        await hub.stop()
