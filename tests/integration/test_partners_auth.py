"""API keys on the partner endpoints: 401 without or with a wrong key, 403 on another's endpoint."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from hub.embedded import EmbeddedKafka
from hub.partners import PartnerType, add_partner, rotate_key
from hub.partners.keys import hash_key, key_id_of
from hub.partners.tables import partners
from tests.conftest import make_settings
from tests.integration.test_intake_http import DATA, Api, intake_api, politie_variant

pytestmark = pytest.mark.integration


@pytest.fixture
async def api(kafka: EmbeddedKafka, db_url: str, unique: str) -> AsyncIterator[Api]:
    async with intake_api(make_settings(kafka, db_url, unique)) as running:
        yield running


async def _post(api: Api, headers: dict[str, str], variant: int = 1) -> int:
    response = await api.client.post(
        "/api/v1/politie/verwijzingen",
        content=politie_variant(variant),
        headers={"Content-Type": "application/json", **headers},
    )
    if response.status_code == 401:
        assert response.headers["WWW-Authenticate"].startswith("Bearer")
        assert response.headers["content-type"] == "application/problem+json"
    return response.status_code


async def test_no_key_or_a_wrong_key_is_401(api: Api) -> None:
    key = api.keys["politie"]
    assert await _post(api, {}) == 401
    assert await _post(api, {"Authorization": f"Basic {key}"}) == 401
    assert await _post(api, {"Authorization": "Bearer nonsense"}) == 401
    assert await _post(api, {"Authorization": f"Bearer {key[:-2]}xx"}) == 401
    assert await _post(api, {"Authorization": "Bearer"}) == 401
    assert await _post(api, {"Authorization": "Bearer    "}) == 401
    assert await _post(api, {"Authorization": key}) == 401  # no scheme
    assert await api.count() == 0
    assert await _post(api, api.auth("politie")) == 201


async def test_the_scheme_is_read_as_rfc_7235_says(api: Api) -> None:
    # The scheme is case-insensitive, and spaces around the key are no part of it.
    key = api.keys["politie"]
    assert await _post(api, {"Authorization": f"bearer {key}"}) == 201
    assert await _post(api, {"Authorization": f"BEARER  {key} "}, variant=2) == 201


async def test_every_partner_endpoint_documents_the_bearer_scheme(api: Api) -> None:
    spec = (await api.client.get("/openapi.json")).json()
    assert spec["components"]["securitySchemes"]["HTTPBearer"]["scheme"] == "bearer"
    for path in (
        "/api/v1/politie/verwijzingen",
        "/api/v1/boa/verwijzingen",
        "/api/v1/preventief/verwijzingen",
        "/api/v1/leerplicht/verwijzingen",
    ):
        assert spec["paths"][path]["post"]["security"] == [{"HTTPBearer": []}], path
    assert spec["paths"]["/api/v1/verwijzingen/{referral_id}"]["get"]["security"] == [{"HTTPBearer": []}]


async def test_a_rotated_key_stops_working_at_once(api: Api) -> None:
    assert api.hub.store is not None
    async with api.hub.store.transaction() as session:
        _, new = await rotate_key(session, "politie-test")
    assert await _post(api, api.auth("politie")) == 401
    assert await _post(api, {"Authorization": f"Bearer {new}"}) == 201


async def test_a_key_in_use_stops_working_within_the_key_cache_time(
    kafka: EmbeddedKafka, db_url: str, unique: str
) -> None:
    # A key that just authenticated is trusted for http.key_cache_s without a lookup; rotated (or
    # revoked) in between, it works at most that long, then never again.
    settings = make_settings(kafka, db_url, unique, http={"key_cache_s": 0.5})
    async with intake_api(settings) as api:
        assert await _post(api, api.auth("politie")) == 201
        assert api.hub.store is not None
        async with api.hub.store.transaction() as session:
            _, new = await rotate_key(session, "politie-test")
        loop = asyncio.get_running_loop()
        rotated = loop.time()
        while True:
            # The cache is checked when a request comes in, so measure from when it was sent: a slow
            # response to a request the cache could still accept is not the key outliving the cache.
            sent = loop.time()
            if await _post(api, api.auth("politie")) == 401:
                break
            assert sent - rotated < 0.5 + 2.0, "old key outlived the cache"
            await asyncio.sleep(0.05)
        assert await _post(api, api.auth("politie")) == 401  # and stays refused
        assert await _post(api, {"Authorization": f"Bearer {new}"}) == 200  # the first decision again


async def test_a_partner_uses_only_its_own_endpoint(api: Api) -> None:
    assert await _post(api, api.auth("boa")) == 403
    assert await _post(api, api.auth("leerplicht")) == 403
    wijkteam_sample = (DATA / "preventief" / "valid_wijkteam.json").read_bytes()
    for kind, status in (("wijkteam", 201), ("preventief", 201), ("politie", 403)):  # rule 7: per referrer
        response = await api.client.post(
            "/api/v1/preventief/verwijzingen",
            content=wijkteam_sample,
            headers={"Content-Type": "application/json", **api.auth(kind)},
        )
        assert response.status_code == status, (kind, response.text)


async def test_only_a_hash_of_the_key_is_stored(api: Api) -> None:
    assert api.hub.store is not None
    async with api.hub.store.transaction() as session:
        _, key = await add_partner(session, "jongerenwerk-west", PartnerType.JONGERENWERK)
    async with api.hub.store.connect() as conn:
        rows = (await conn.execute(partners.select())).all()
    dump = repr(rows)
    secret = key.split("_", 2)[2]  # kh_<key id>_<secret>; the secret itself may hold "_"
    assert len(secret) == 43 and key not in dump and secret not in dump
    key_id = key_id_of(key)
    assert key_id is not None and hash_key(key_id, key) in dump


def test_an_endpoint_for_no_partner_type_is_a_mistake_at_start_up() -> None:
    from hub.partners import partner_of_type

    with pytest.raises(ValueError, match="at least one partner type"):
        partner_of_type()
