"""A partner writing too fast: 429 with an honest Retry-After on every partner write, nothing kept of
the refused request, other partners and reads (a limit of their own: test_partner_read_limit.py)
untouched. The limit's clock is injected: no test waits."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import date
from typing import Any

import httpx
import pytest
import schemathesis
from fastapi import FastAPI
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from sqlalchemy import func, select

from connectors.verwijsindex.contract import add_years
from hub.api.idempotency import idempotency_keys
from hub.api.limits import Noun, PartnerRate
from hub.app import create_app
from hub.clock import local_day
from hub.directory import upsert_caseworker
from hub.embedded import EmbeddedKafka
from hub.intake.component import register_intake
from hub.intake.tables import referrals
from hub.partners import PartnerType, add_partner
from hub.runtime import Hub
from hub.signals.tables import signals
from hub.store.tables import audit_log, outbox
from schemas.caseworker import Caseworker
from schemas.envelope import utcnow
from tests.conftest import make_settings
from tests.helpers.http import serving
from tests.integration.test_intake_http import politie_variant, sample

pytestmark = pytest.mark.integration
NOW = utcnow()  # the hub's clock stands still: the signal's dates are counted from the day it counts
CASEWORKER = {"X-Medewerker": "cw-ilse"}
RECEIVER = PartnerType.JEUGDHULP
BOA_SAMPLE = sample("boa", "valid_openbare_dronkenschap.json")


class Clock:
    """The limit's monotonic clock, moved by the test."""

    def __init__(self) -> None:
        self.now = 5000.0

    def __call__(self) -> float:
        return self.now


@dataclass
class World:
    """A started hub, its app, an ASGI client on it, and a partner of every type (key and id)."""

    hub: Hub
    app: FastAPI
    client: httpx.AsyncClient
    keys: dict[PartnerType, str]
    ids: dict[PartnerType, str]

    def auth(self, kind: PartnerType) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.keys[kind]}"}

    def limit(self, rate_per_s: float, burst: int, noun: Noun = "write") -> tuple[PartnerRate, Clock]:
        """The app's write (or read) limit replaced by one on a clock the test moves."""
        clock = Clock()
        limit = PartnerRate(rate_per_s, burst, noun, clock=clock)
        setattr(self.app.state, f"partner_{noun}s", limit)
        return limit, clock

    async def count(self, table: Any) -> int:
        assert self.hub.store is not None
        async with self.hub.store.connect() as conn:
            return int((await conn.execute(select(func.count()).select_from(table))).scalar_one())


@asynccontextmanager
async def partner_world(kafka: EmbeddedKafka, db_url: str, unique: str) -> AsyncIterator[World]:
    """A started hub with intake, a partner of every type and a caseworker; stopped afterwards."""
    hub = Hub(
        make_settings(kafka, db_url, unique), registrars={"intake": [register_intake]}, clock=lambda: NOW
    )
    await hub.start()
    try:
        assert hub.store is not None
        keys, ids = {}, {}
        async with hub.store.transaction() as session:
            for kind in PartnerType:
                partner, keys[kind] = await add_partner(session, f"{kind.value}-limit", kind)
                ids[kind] = partner.id
            await upsert_caseworker(
                session,
                Caseworker(
                    caseworker_id="cw-ilse", name="Ilse", email="ilse@halt.nl", phone="070 123 4567",
                    team="DEN_HAAG", meldingsbevoegd=True,
                ),
            )  # fmt: skip
        app = create_app(hub.settings, hub=hub)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://hub", timeout=60) as client:
            yield World(hub, app, client, keys, ids)
    finally:
        await hub.stop()


@pytest.fixture
async def world(kafka: EmbeddedKafka, db_url: str, unique: str) -> AsyncIterator[World]:
    async with partner_world(kafka, db_url, unique) as running:
        yield running


def refused_as_documented(
    spec: dict[str, Any], path: str, answer: httpx.Response, body: bytes | None = None, **params: str
) -> None:
    """The answer as the OpenAPI document says it (status, content type, Retry-After, body), checked
    the way the fuzzer (tests/fuzz) checks every answer: a POST of `body`, or a GET without one, to
    `path` with its path parameters `params`."""
    operation = schemathesis.openapi.from_dict(spec)[path]["POST" if body is not None else "GET"]
    if body is not None:
        case = operation.Case(body=body, media_type="application/json", path_parameters=params)
    else:
        case = operation.Case(path_parameters=params)
    checks = [status_code_conformance, content_type_conformance, response_headers_conformance]
    case.validate_response(answer, checks=[*checks, response_schema_conformance])


async def test_a_partner_past_its_rate_gets_429_over_http_with_an_honest_retry_after_and_nothing_kept(
    world: World,
) -> None:
    _, clock = world.limit(0.5, 2)  # two at once, then one every two seconds
    spec = (await world.client.get("/openapi.json")).json()
    police = {"Content-Type": "application/json", **world.auth(PartnerType.POLITIE)}
    async with (
        serving(world.app) as port,
        httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=60) as client,
    ):

        async def post(body: bytes, headers: dict[str, str] = police) -> httpx.Response:
            return await client.post("/api/v1/politie/verwijzingen", content=body, headers=headers)

        first, second = await post(politie_variant(1)), await post(politie_variant(2))
        assert (first.status_code, second.status_code) == (201, 201), second.text
        kept = [await world.count(t) for t in (referrals, outbox, audit_log)]

        third = politie_variant(3)
        refused = await post(third)
        assert refused.status_code == 429, refused.text
        assert refused.headers["content-type"] == "application/problem+json"
        assert refused.headers["Retry-After"] == "2"  # a token in 1 / 0.5 s
        assert refused.headers["Fsc-Transaction-Id"]
        problem = refused.json()
        assert problem["title"] == "Te veel verzoeken" and problem["status"] == 429
        assert "niets opgeslagen" in problem["detail"] and "over 2 seconden opnieuw" in problem["detail"]
        refused_as_documented(spec, "/api/v1/politie/verwijzingen", refused, third)
        again = await post(third)  # a refusal takes no token: the partner is told the same
        assert (again.status_code, again.headers["Retry-After"]) == (429, "2")
        assert [await world.count(t) for t in (referrals, outbox, audit_log)] == kept  # nothing stored

        # other partners write on; the police still reads its referrals
        boa = {"Content-Type": "application/json", **world.auth(PartnerType.BOA)}
        boa_answer = await client.post("/api/v1/boa/verwijzingen", content=BOA_SAMPLE, headers=boa)
        assert boa_answer.status_code == 201, boa_answer.text
        read = await client.get(first.headers["Location"], headers=world.auth(PartnerType.POLITIE))
        assert read.status_code == 200

        clock.now += 1.9
        assert (await post(third)).headers["Retry-After"] == "1"  # 0.1 s to go: a whole second
        clock.now += 0.1
        taken = await post(third)
        # 201, not 200: the refused request left nothing that would make this a repeat
        assert taken.status_code == 201, taken.text
        assert taken.json()["duplicate"] is False


async def test_every_partner_write_is_limited_and_no_read_by_the_write_limit(world: World) -> None:
    """Every operation of the document that writes with a partner key (the referrals, the case
    system's caseworker API, a receiver's answer) answers 429 once its partner's tokens are spent,
    before it looks at the request, and documents it; reads, which have tokens of their own, go on."""
    writes, _ = world.limit(1, 1)
    for partner_id in world.ids.values():
        assert writes.wait_s(partner_id) == 0  # each partner's one token spent
    spec = (await world.client.get("/openapi.json")).json()
    kept = [await world.count(t) for t in (referrals, signals, outbox, audit_log)]
    limited, read = set(), set()
    for path, item in spec["paths"].items():
        for method, operation in item.items():
            if {"HTTPBearer": []} not in operation.get("security", []):
                continue
            kind = partner_for(path)
            media = "text/csv" if kind is PartnerType.LEERPLICHT else "application/json"
            headers = {"Content-Type": media, **world.auth(kind), **CASEWORKER}
            url = path.replace("{", "").replace("}", "")  # a path parameter's name as its value
            answer = await world.client.request(method, url, content=b"{}", headers=headers)
            if method == "get":
                assert answer.status_code != 429, (path, answer.text)
                read.add(path)
                continue
            assert answer.status_code == 429, (method, path, answer.text)
            assert answer.headers["Retry-After"] == "1"
            assert answer.headers["content-type"] == "application/problem+json"
            documented = operation["responses"]["429"]
            assert "application/problem+json" in documented["content"]
            assert documented["headers"]["Retry-After"]["schema"] == {"type": "integer", "minimum": 1}
            limited.add((method.upper(), path))
    assert limited >= {
        ("POST", "/api/v1/politie/verwijzingen"),
        ("POST", "/api/v1/boa/verwijzingen"),
        ("POST", "/api/v1/preventief/verwijzingen"),
        ("POST", "/api/v1/leerplicht/verwijzingen"),
        ("POST", "/api/v1/signalen"),
        ("PATCH", "/api/v1/signalen/{signal_id}/contactpersoon"),
        ("POST", "/api/v1/toestemmingen"),
        ("POST", "/api/v1/overdrachten"),
        ("POST", "/api/v1/zorgmeldingen"),
        ("POST", "/api/v1/overdrachten/{handover_id}/status"),
    }
    assert "/api/v1/verwijzingen/{referral_id}" in read
    assert [await world.count(t) for t in (referrals, signals, outbox, audit_log)] == kept


def partner_for(path: str) -> PartnerType:
    """The partner whose key may use the path (as tests/fuzz chooses it)."""
    kind = path.split("/")[3]
    if path.endswith("/status"):
        return RECEIVER
    if kind in ("signalen", "toestemmingen", "overdrachten", "zorgmeldingen"):
        return PartnerType.ZAAKSYSTEEM
    return PartnerType(kind) if kind in set(PartnerType) else PartnerType.POLITIE


def signal_body(bsn: str) -> dict[str, Any]:
    day = local_day(NOW)
    fifteen: date = add_years(day, -15)
    youth = {
        "bsn": bsn, "given_names": "Sanne", "surname": "de Vries", "birth_date": fifteen.isoformat(),
        "gender": "VROUW", "municipality": "Den Haag",
    }  # fmt: skip
    return {"youth": youth, "youth_informed_at": day.isoformat(), "parent_letter_sent_at": day.isoformat()}


async def test_a_refused_post_leaves_its_idempotency_key_unused(world: World) -> None:
    """The case system's retry of a POST refused with 429, sent with the same Idempotency-Key once
    Retry-After has passed, makes the signal: the key was not remembered with the refusal."""
    _, clock = world.limit(1, 1)
    headers = {**world.auth(PartnerType.ZAAKSYSTEEM), **CASEWORKER}
    first = await world.client.post("/api/v1/signalen", json=signal_body("999990044"), headers=headers)
    assert first.status_code == 201, first.text
    outbox_rows = await world.count(outbox)

    key = {"Idempotency-Key": str(uuid.uuid4())}
    second = signal_body("999990056")
    refused = await world.client.post("/api/v1/signalen", json=second, headers=headers | key)
    assert (refused.status_code, refused.headers["Retry-After"]) == (429, "1"), refused.text
    assert await world.count(idempotency_keys) == 0
    assert (await world.count(signals), await world.count(outbox)) == (1, outbox_rows)

    clock.now += float(refused.headers["Retry-After"])
    made = await world.client.post("/api/v1/signalen", json=second, headers=headers | key)
    assert made.status_code == 201, made.text
    assert "Idempotent-Replayed" not in made.headers  # made now, not the answer to the refused one
    assert await world.count(signals) == 2 and await world.count(idempotency_keys) == 1
    clock.now += 1
    replayed = await world.client.post("/api/v1/signalen", json=second, headers=headers | key)
    assert replayed.headers["Idempotent-Replayed"] == "true"
    assert replayed.json()["signal_id"] == made.json()["signal_id"]
