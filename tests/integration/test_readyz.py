"""/readyz, which anyone may call: what it says of a dependency that fails, and how often it asks."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from hub.app import create_app
from hub.embedded import EmbeddedKafka
from hub.runtime import READY_FOR_S, Hub
from tests.conftest import make_settings

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
    kafka: EmbeddedKafka, db_url: str, unique: str
) -> None:
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
            await asyncio.sleep(READY_FOR_S + 0.1)
            await client.get("/readyz")
            assert partner.pings == 2
    finally:
        await hub.stop()
