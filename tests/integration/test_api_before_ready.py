"""The HTTP API before its hub has started: every 503 says when to try again (Retry-After)."""

from __future__ import annotations

import re
from pathlib import Path

import httpx
import pytest

from hub.app import create_app
from hub.config import Settings
from tests.conftest import TEST_SECRET
from tests.helpers.http import serving

pytestmark = pytest.mark.integration
REFERRAL_ENDPOINTS = [f"/api/v1/{k}/verwijzingen" for k in ("politie", "boa", "leerplicht", "preventief")]


async def test_every_operation_answers_503_with_retry_after_or_a_plain_refusal_before_the_hub_started(
    tmp_path: Path,
) -> None:
    # The app served over real HTTP without its lifespan: its hub has no store or broker yet, as while
    # it starts. Nothing listens on the broker's address; nothing may need it to answer.
    settings = Settings(
        kafka={"bootstrap_servers": "127.0.0.1:9"},  # type: ignore[arg-type]
        database={"url": f"sqlite+aiosqlite:///{tmp_path / 'hub.db'}"},  # type: ignore[arg-type]
        secret=TEST_SECRET,  # type: ignore[arg-type]
        components=[],
    )
    app = create_app(settings)
    operations = [
        (method.upper(), re.sub(r"\{[^}]+\}", "x", path))
        for path, methods in app.openapi()["paths"].items()
        for method in methods
    ]
    assert len(operations) > 20
    headers = {"Authorization": "Bearer not-yet-checkable", "X-Medewerker": "cw-1"}
    answers: dict[tuple[str, str], httpx.Response] = {}
    async with serving(app) as port, httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
        for method, path in operations:
            media = "text/csv" if path.startswith("/api/v1/leerplicht") else "application/json"
            answers[(method, path)] = await client.request(
                method, path, content=b"{}", headers={**headers, "Content-Type": media}
            )
    for (method, path), answer in answers.items():
        assert answer.status_code < 500 or answer.status_code == 503, (method, path, answer.text)
        if answer.status_code == 503:  # a partner's client waits as told, then sends again
            assert answer.headers.get("Retry-After", "").isdigit(), (method, path, answer.headers)
            assert int(answer.headers["Retry-After"]) >= 1
    for path in REFERRAL_ENDPOINTS:  # what partners send: refused for now, never taken in half
        answer = answers[("POST", path)]
        assert answer.status_code == 503, (path, answer.text)
        assert answer.headers["content-type"].startswith("application/problem+json")
    assert answers[("GET", "/readyz")].status_code == 503
    assert answers[("GET", "/readyz")].json()["checks"] == {"hub": "starting"}
