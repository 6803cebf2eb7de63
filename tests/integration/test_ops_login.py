"""Operator logins over the API: the password check runs beside the event loop, not on it."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import httpx
import pytest

from hub.embedded import EmbeddedKafka
from hub.ops import auth
from tests.conftest import make_settings
from tests.integration.test_ops_lag import PASSWORD, ops_hub

pytestmark = pytest.mark.integration


class _Recording:
    """The hub's password hasher, noting the thread of every check."""

    def __init__(self, real: Any) -> None:
        self.real, self.threads = real, []

    def hash(self, password: str) -> str:
        return str(self.real.hash(password))

    def verify(self, hashed: str, password: str) -> bool:
        self.threads.append(threading.get_ident())
        return bool(self.real.verify(hashed, password))


async def test_password_checks_leave_the_event_loop_free(
    kafka: EmbeddedKafka, db_url: str, unique: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each check (about 150 ms of CPU) ran on the event loop: ten anonymous logins at once held
    every partner's request and every consumer for over a second."""
    recording = _Recording(auth._hasher)
    monkeypatch.setattr(auth, "_hasher", recording)
    loop_thread = threading.get_ident()
    async with ops_hub(make_settings(kafka, db_url, unique)) as (_, client):
        anon = httpx.AsyncClient(transport=client._transport, base_url="http://hub")
        tries = [{"username": name, "password": "not the password"} for name in ("olga", "nobody", "x")]
        answers = await asyncio.gather(*[anon.post("/ops/login", json=t) for t in tries])
        assert [a.status_code for a in answers] == [401, 401, 401]
        good = await anon.post("/ops/login", json={"username": "olga", "password": PASSWORD})
        assert good.status_code == 200, good.text
        assert (await anon.get("/ops/api/health")).status_code == 200
    # the fixture's own login, the three refused (the unknown user against a dummy hash) and the good one
    assert len(recording.threads) == 5
    assert loop_thread not in recording.threads
