"""The partners' JSON referral endpoints answer through `PartnerLaneMiddleware` exactly as FastAPI's
routes answer them: the same status, headers and problem for every kind of request."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from starlette.responses import PlainTextResponse
from starlette.types import Receive, Scope, Send

from hub.api.partner_lane import PartnerLaneMiddleware
from hub.api.referrals import partner_lanes
from hub.api.transaction import TransactionIdMiddleware
from hub.app import create_app
from hub.embedded import EmbeddedKafka
from tests.conftest import make_settings
from tests.integration.test_intake_http import Api, intake_api, json_variant, politie_variant, sample

pytestmark = pytest.mark.integration
VOLATILE = {"referralId", "receivedAt", "caseReference", "instance"}  # ids, moments, the reference sent
POLITIE = "/api/v1/politie/verwijzingen"


@pytest.fixture
async def api(kafka: EmbeddedKafka, db_url: str, unique: str) -> AsyncIterator[Api]:
    async with intake_api(make_settings(kafka, db_url, unique)) as running:
        yield running


def _masked(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: "…" if k in VOLATILE else _masked(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_masked(v) for v in value]
    return value


def _seen(response: httpx.Response) -> tuple[int, str, set[str], Any]:
    """What a partner sees, without what differs between two requests by nature (ids, lengths)."""
    headers = {k.lower() for k in response.headers} - {"content-length"}
    try:
        body = _masked(response.json())
    except json.JSONDecodeError:
        body = response.text
    return response.status_code, response.headers.get("content-type", ""), headers, body


Sending = Callable[[httpx.AsyncClient, int], Awaitable[httpx.Response]]


def _post(body: Callable[[int], bytes], *, path: str = POLITIE, kind: str = "politie", **headers: str) -> Any:
    def make(api: Api) -> Sending:
        async def send(client: httpx.AsyncClient, n: int) -> httpx.Response:
            sent = {"Content-Type": "application/json", **api.auth(kind), **headers}
            return await client.post(path, content=body(n), headers={k: v for k, v in sent.items() if v})

        return send

    return make


def _repeat(api: Api) -> Sending:
    async def send(client: httpx.AsyncClient, n: int) -> httpx.Response:
        headers = {"Content-Type": "application/json", **api.auth("politie")}
        await client.post(POLITIE, content=politie_variant(n), headers=headers)
        return await client.post(POLITIE, content=politie_variant(n, bekennend=False), headers=headers)

    return send


def _conflict(api: Api) -> Sending:
    async def send(client: httpx.AsyncClient, n: int) -> httpx.Response:
        headers = {"Content-Type": "application/json", **api.auth("politie")}
        await client.post(POLITIE, content=politie_variant(n), headers=headers)
        other = politie_variant(n, **{"verdachte.bsn": "111222333"})
        return await client.post(POLITIE, content=other, headers=headers)

    return send


CASES: dict[str, Callable[[Api], Sending]] = {
    "new police referral": _post(politie_variant),
    "new BOA referral": _post(
        lambda n: json_variant("boa", "valid_openbare_dronkenschap.json", bonnummer=f"BON-L{n}"),
        path="/api/v1/boa/verwijzingen",
        kind="boa",
    ),
    "preventief from a wijkteam": _post(
        lambda n: json_variant("preventief", "valid_wijkteam.json", aanmeldingId=f"WT-L{n}"),
        path="/api/v1/preventief/verwijzingen",
        kind="wijkteam",
    ),
    "repeat": _repeat,
    "reference of another youth": _conflict,
    "broken JSON": _post(lambda n: sample("politie", "invalid_kapotte_json.json")),
    "bad BSN": _post(lambda n: sample("politie", "invalid_bsn_elfproef.json")),
    "unknown field": _post(lambda n: sample("politie", "invalid_onbekend_veld.json")),
    "wrong media type": _post(politie_variant, **{"Content-Type": "text/plain"}),
    "no media type": _post(politie_variant, **{"Content-Type": ""}),
    "no key": _post(politie_variant, Authorization=""),
    "unknown key": _post(politie_variant, Authorization="Bearer kh_unknown.key"),
    "not a bearer key": _post(politie_variant, Authorization="Basic dXNlcjpwdw=="),
    "another partner type's endpoint": _post(politie_variant, kind="boa"),
    "a bad transaction id": _post(politie_variant, **{"Fsc-Transaction-Id": "nope"}),
    "too large": _post(lambda n: b'{"x": "' + b"a" * 2_000_000 + b'"}'),
    "trailing slash": _post(politie_variant, path=POLITIE + "/"),
    "a query string": _post(politie_variant, path=POLITIE + "?x=1"),
}


def _client(app: FastAPI) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://hub", timeout=60)


@pytest.mark.parametrize("case", list(CASES))
async def test_the_lane_answers_as_fastapis_route_does(api: Api, case: str) -> None:
    with_lane = create_app(api.hub.settings, hub=api.hub)
    without = create_app(api.hub.settings, hub=api.hub, partner_lane=False)
    assert any(m.cls is PartnerLaneMiddleware for m in with_lane.user_middleware)
    assert not any(m.cls is PartnerLaneMiddleware for m in without.user_middleware)
    n = uuid.uuid4().int % 10**9
    async with _client(with_lane) as lane_client, _client(without) as route_client:
        send = CASES[case](api)
        by_lane = await send(lane_client, n)
        by_route = await send(route_client, n + 1)
    assert _seen(by_lane) == _seen(by_route), (by_lane.text, by_route.text)


async def test_the_lane_answers_its_posts_itself_and_passes_the_rest_on(api: Api) -> None:
    """The lane in front of an app that only counts what reaches it: a partner's POST to a lane's path
    is answered without reaching it; another method, path or a root path reaches it."""
    app = create_app(api.hub.settings, hub=api.hub)
    reached: list[tuple[str, str]] = []

    async def behind(scope: Scope, receive: Receive, send: Send) -> None:
        reached.append((scope["method"], scope["path"]))
        await PlainTextResponse("behind", status_code=418)(scope, receive, send)

    lane = TransactionIdMiddleware(PartnerLaneMiddleware(behind, fastapi=app, lanes=partner_lanes()))

    async def hub_app(scope: Scope, receive: Receive, send: Send) -> None:
        await lane(scope | {"app": app}, receive, send)  # what Starlette sets for what it serves

    headers = {"Content-Type": "application/json", **api.auth("politie")}
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=hub_app), base_url="http://hub") as client:
        taken = await client.post(POLITIE, content=politie_variant(90), headers=headers)
        refused = await client.post(POLITIE, content=b"{", headers=headers)
        assert reached == []
        assert taken.status_code == 201 and taken.json()["caseReference"] == "PL1500-2025031201-90"
        assert refused.status_code == 400 and refused.headers["content-type"] == "application/problem+json"
        assert (await client.get(POLITIE, headers=headers)).status_code == 418
        assert (await client.post(POLITIE + "/", content=b"{}", headers=headers)).status_code == 418
        assert (await client.post("/api/v1/leerplicht/verwijzingen", headers=headers)).status_code == 418
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=hub_app, root_path="/hub"), base_url="http://hub"
    ) as client:
        assert (await client.post(POLITIE, content=b"{}", headers=headers)).status_code == 418
    assert reached == [
        ("GET", POLITIE),
        ("POST", POLITIE + "/"),
        ("POST", "/api/v1/leerplicht/verwijzingen"),
        ("POST", POLITIE),
    ]
