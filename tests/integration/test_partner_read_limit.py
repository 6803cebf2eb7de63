"""A partner reading too fast: most partner reads write an audit entry (rule 18), so reads have a limit
of their own. Past it 429 with an honest Retry-After, nothing read and nothing audited; the partner's
writes, and other partners' reads, go on. The limit's clock is injected: no test waits."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from hub.api.problems import TOO_MANY_READS
from hub.embedded import EmbeddedKafka
from hub.partners import PartnerType
from hub.store.tables import audit_log
from tests.helpers.http import serving
from tests.integration.test_intake_http import politie_variant
from tests.integration.test_partner_write_limit import (
    CASEWORKER,
    World,
    partner_for,
    partner_world,
    refused_as_documented,
    signal_body,
)

pytestmark = pytest.mark.integration
MATCHES = "/api/v1/signalen/{signal_id}/matches"


@pytest.fixture
async def world(kafka: EmbeddedKafka, db_url: str, unique: str) -> AsyncIterator[World]:
    async with partner_world(kafka, db_url, unique) as running:
        yield running


async def test_a_partner_reading_past_its_rate_gets_429_over_http_and_nothing_is_read_or_audited(
    world: World,
) -> None:
    _, clock = world.limit(0.5, 2, "read")  # two reads at once, then one every two seconds
    spec = (await world.client.get("/openapi.json")).json()
    case_system = {**world.auth(PartnerType.ZAAKSYSTEEM), **CASEWORKER}
    police = world.auth(PartnerType.POLITIE)
    async with (
        serving(world.app) as port,
        httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=60) as client,
    ):
        made = await client.post("/api/v1/signalen", json=signal_body("999990044"), headers=case_system)
        assert made.status_code == 201, made.text
        signal_id = made.json()["signal_id"]
        matches = MATCHES.format(signal_id=signal_id)

        async def read() -> httpx.Response:
            return await client.get(matches, headers=case_system)

        before = await world.count(audit_log)
        first, second = await read(), await read()
        assert (first.status_code, second.status_code) == (200, 200), second.text
        assert await world.count(audit_log) == before + 2  # each read of the matches is audited

        refused = await read()
        assert refused.status_code == 429, refused.text
        assert refused.headers["content-type"] == "application/problem+json"
        assert refused.headers["Retry-After"] == "2"  # a token in 1 / 0.5 s
        assert refused.headers["Fsc-Transaction-Id"]
        problem = refused.json()
        assert problem["title"] == "Te veel verzoeken" and problem["status"] == 429
        assert "niets gelezen" in problem["detail"] and "over 2 seconden opnieuw" in problem["detail"]
        assert "0,5 leesverzoeken per seconde" in problem["detail"]
        refused_as_documented(spec, MATCHES, refused, signal_id=signal_id)
        again = await read()  # a refusal takes no token: the partner is told the same
        assert (again.status_code, again.headers["Retry-After"]) == (429, "2")
        other = await client.get(f"/api/v1/signalen/{signal_id}", headers=case_system)
        assert other.status_code == 429  # one bucket for all of the partner's reads
        assert await world.count(audit_log) == before + 2  # the refused reads audited nothing

        # its writes have a bucket of their own; the police reads its referral
        written = await client.post("/api/v1/signalen", json=signal_body("999990056"), headers=case_system)
        assert written.status_code == 201, written.text
        body = {"Content-Type": "application/json", **police}
        referral = await client.post("/api/v1/politie/verwijzingen", content=politie_variant(1), headers=body)
        assert referral.status_code == 201, referral.text
        assert (await client.get(referral.headers["Location"], headers=police)).status_code == 200

        clock.now += 1.9
        assert (await read()).headers["Retry-After"] == "1"  # 0.1 s to go: a whole second
        clock.now += 0.1
        audited = await world.count(audit_log)
        taken = await read()
        assert taken.status_code == 200, taken.text
        assert await world.count(audit_log) == audited + 1


async def test_every_partner_read_is_limited_and_documented_and_writes_are_not_held(world: World) -> None:
    """Every operation of the document that reads with a partner key (a referrer's referral, the
    case system's signals, matches, letters, consents and handovers) answers 429 once its partner's
    read tokens are spent, before it looks at the request, and documents it; writes go on."""
    reads, _ = world.limit(1, 1, "read")
    for partner_id in world.ids.values():
        assert reads.wait_s(partner_id) == 0  # each partner's one read token spent
    spec = (await world.client.get("/openapi.json")).json()
    audited = await world.count(audit_log)
    limited, writes = set(), []
    for path, item in spec["paths"].items():
        for method, operation in item.items():
            if {"HTTPBearer": []} not in operation.get("security", []):
                continue
            if method != "get":
                writes.append((method, path))
                continue
            headers = {**world.auth(partner_for(path)), **CASEWORKER}
            url = path.replace("{", "").replace("}", "")  # a path parameter's name as its value
            answer = await world.client.get(url, headers=headers)
            assert answer.status_code == 429, (path, answer.text)
            assert answer.headers["Retry-After"] == "1"
            assert answer.headers["content-type"] == "application/problem+json"
            assert "niets gelezen" in answer.json()["detail"]
            documented = operation["responses"]["429"]
            assert documented["description"] == TOO_MANY_READS
            assert "application/problem+json" in documented["content"]
            assert documented["headers"]["Retry-After"]["schema"] == {"type": "integer", "minimum": 1}
            limited.add(path)
    assert limited >= {
        "/api/v1/verwijzingen/{referral_id}",
        "/api/v1/signalen/{signal_id}",
        "/api/v1/signalen/{signal_id}/matches",
        "/api/v1/signalen/{signal_id}/ouderbrief",
        "/api/v1/toestemmingen",
        "/api/v1/toestemmingen/{consent_id}",
        "/api/v1/overdrachten",
        "/api/v1/overdrachten/{handover_id}",
    }
    assert await world.count(audit_log) == audited
    assert writes
    for method, path in writes:
        kind = partner_for(path)
        media = "text/csv" if kind is PartnerType.LEERPLICHT else "application/json"
        headers = {"Content-Type": media, **world.auth(kind), **CASEWORKER}
        url = path.replace("{", "").replace("}", "")
        answer = await world.client.request(method, url, content=b"{}", headers=headers)
        assert answer.status_code != 429, (method, path, answer.text)
