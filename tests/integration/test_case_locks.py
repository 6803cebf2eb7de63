"""A youth's case lock (hub.store.locks) on PostgreSQL: how many locks a big batch holds."""

from __future__ import annotations

import hashlib

import pytest
from sqlalchemy import text

from hub.store import Store
from hub.store.locks import BUCKETS, lock_key, lock_youths, try_lock_youths

pytestmark = pytest.mark.integration
_HELD = text("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND pid = pg_backend_pid()")


def keys(n: int, salt: str = "") -> list[str]:
    """`n` youth keys as the hub makes them: 64 hex digits."""
    return [hashlib.sha256(f"{salt}{i}".encode()).hexdigest() for i in range(n)]


@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)
async def test_a_batch_of_thousands_of_youths_holds_at_most_a_bucket_each(store: Store) -> None:
    """A leerplicht upload of ten thousand truancy rows took a lock a youth: PostgreSQL's shared lock
    table (a few thousand entries) ran out, and the upload, with every other session on the server,
    got "out of shared memory". Two thousand youths show the count without running it out."""
    many = keys(2_000)
    async with store.transaction() as session:
        assert await lock_youths(session, many)
        held = (await session.execute(_HELD)).scalar_one()
    assert 0 < held <= BUCKETS


@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)
async def test_a_youth_whose_bucket_another_holds_is_left_by_the_purge_and_the_rest_taken(
    store: Store,
) -> None:
    """The purge takes the locks it can get: the youths of a bucket another transaction holds are left
    for its next run, every other youth is its."""
    busy, *others = keys(50, salt="p")
    other = Store(store.url)
    try:
        async with other.transaction() as writing:
            await lock_youths(writing, [busy])
            async with store.transaction() as purging:
                got = await try_lock_youths(purging, [busy, *others])
        assert busy not in got
        same_bucket = {k for k in others if lock_key(k) == lock_key(busy)}
        assert got == set(others) - same_bucket
    finally:
        await other.close()
