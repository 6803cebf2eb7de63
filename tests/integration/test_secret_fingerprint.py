"""The store keeps the fingerprint of the secret the hub first started with; another secret is refused."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import select

from hub.secret_fingerprint import WrongSecret, check_secret, fingerprint
from hub.store import Store
from hub.store.tables import secret_fingerprint

pytestmark = pytest.mark.integration
HUBS, OTHER = "the-hub-s-secret-" + "a" * 32, "another-secret-" + "b" * 32


async def _rows(store: Store) -> list[str]:
    async with store.read() as session:
        return list((await session.execute(select(secret_fingerprint.c.fingerprint))).scalars())


async def test_the_first_start_records_it_and_another_secret_is_refused(store: Store) -> None:
    assert await check_secret(store, OTHER, source="KETENHUB_SECRET") is False  # a command records nothing
    assert await _rows(store) == []
    assert await check_secret(store, HUBS, source="KETENHUB_SECRET", record=True) is False
    assert await _rows(store) == [fingerprint(HUBS)] and HUBS not in fingerprint(HUBS)
    assert await check_secret(store, HUBS, source="KETENHUB_SECRET") is True
    assert await check_secret(store, HUBS, source="KETENHUB_SECRET", record=True) is True
    with pytest.raises(WrongSecret) as err:
        await check_secret(store, OTHER, source="KETENHUB_SECRET", record=True)
    said = str(err.value)
    assert said.startswith(
        f"KETENHUB_SECRET: not the secret the hub first started with on {store.describe()}"
    )
    assert OTHER not in said and HUBS not in said and "\n" not in said
    assert await _rows(store) == [fingerprint(HUBS)]  # kept as it was


async def test_hub_processes_starting_at_once_record_one_and_refuse_another(db_url: str) -> None:
    stores = [Store(db_url) for _ in range(4)]
    try:
        await stores[0].migrate()
        outcomes = await asyncio.gather(
            *(check_secret(s, HUBS, source="KETENHUB_SECRET", record=True) for s in stores[:3]),
            return_exceptions=True,
        )
        assert not any(isinstance(o, BaseException) for o in outcomes), outcomes
        assert await _rows(stores[0]) == [fingerprint(HUBS)]
        with pytest.raises(WrongSecret):
            await check_secret(stores[3], OTHER, source="KETENHUB_SECRET", record=True)
    finally:
        for s in stores:
            await s.close()
