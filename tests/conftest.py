"""Shared fixtures: a session-wide tansu broker, stores on SQLite and PostgreSQL, unique names per test."""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import uuid
import warnings
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

from hub.config import Settings
from hub.embedded import EmbeddedKafka
from hub.store import Store

PG_ADMIN_DSN = os.environ.get("KETENHUB_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")
TEST_SECRET = "test-secret-that-is-long-enough-for-the-hub-0123456789"

# Property tests check properties, not speed: on a shared two-core machine an example past
# Hypothesis's 200 ms deadline, or slow data generation, is the machine's doing (speed is measured
# in bench/). Tests still choose their own number of examples.
settings.register_profile(
    "ketenhub", deadline=None, suppress_health_check=[HealthCheck.too_slow], print_blob=True
)
settings.load_profile("ketenhub")


@pytest.fixture(scope="session")
def kafka() -> Iterator[EmbeddedKafka]:
    """One tansu broker for the whole run (it starts in milliseconds; topics are unique per test)."""
    broker = EmbeddedKafka()
    broker.start()
    yield broker
    broker.stop()


def _topics(bootstrap: str, delete: set[str] | None = None) -> set[str]:
    """The broker's topics; with `delete`, those deleted first. In a thread of its own, with its own
    event loop: a test's loop may be running, or closed."""
    from aiokafka.admin import AIOKafkaAdminClient

    async def go() -> set[str]:
        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
        await admin.start()
        try:
            if delete:
                await admin.delete_topics(sorted(delete))
            return set(await admin.list_topics())
        finally:
            await admin.close()

    thread = concurrent.futures.ThreadPoolExecutor(1)
    try:
        return thread.submit(asyncio.run, go()).result(timeout=60)
    finally:
        thread.shutdown(wait=False)  # a wedged broker does not hold the test past the timeout


@pytest.fixture(autouse=True)
def _topics_deleted(request: pytest.FixtureRequest) -> Iterator[None]:
    """A test's topics are deleted after it. A worker's tests share one broker, every hub start makes
    some 25 topics, and each metadata answer lists every topic: with thousands left, a client's start
    took a second of CPU decoding them (8,000 topics: 1.1 s; none: 2 ms), and the suite slowed as it
    went, most of a worker's time in aiokafka's metadata decoding."""
    if "kafka" not in request.fixturenames:
        yield
        return
    kafka: EmbeddedKafka = request.getfixturevalue("kafka")
    before = _topics(kafka.bootstrap)
    yield
    try:
        made = _topics(kafka.bootstrap) - before
        if made:
            _topics(kafka.bootstrap, delete=made)
    except Exception as exc:  # tidying up, not the test: it is said, and the topics stay
        warnings.warn(f"the test's topics were not deleted: {exc!r}", stacklevel=1)


@pytest.fixture
def unique() -> str:
    """A short unique token for topic prefixes, groups and database names."""
    return uuid.uuid4().hex[:10]


async def _pg_available() -> str | None:
    try:
        import asyncpg

        # Generous: on CI a slow connect would fail the test; a server that is not there refuses at once.
        conn = await asyncio.wait_for(asyncpg.connect(PG_ADMIN_DSN), 15)
        await conn.close()
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}"
    return None


async def require_pg() -> None:
    """Skip (visibly) when PostgreSQL is not reachable; on CI it must be, so fail there."""
    problem = await _pg_available()
    if problem:
        if os.environ.get("CI"):
            pytest.fail(f"PostgreSQL must be reachable on CI ({PG_ADMIN_DSN}): {problem}")
        pytest.skip(f"PostgreSQL not reachable at {PG_ADMIN_DSN}: {problem}")


@pytest.fixture(params=["sqlite", "postgresql"])
async def db_url(request: pytest.FixtureRequest, tmp_path: Path, unique: str) -> AsyncIterator[str]:
    """A fresh database per test, on SQLite and on PostgreSQL (skipped, visibly, only when none runs)."""
    if request.param == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path / 'hub.db'}"
        return
    await require_pg()
    name = f"kh_{unique}"
    yield await create_pg_database(name)
    await drop_pg_database(name)


async def create_pg_database(name: str) -> str:
    """Create an empty PostgreSQL database; its asyncpg URL for the hub."""
    import asyncpg

    admin = await asyncpg.connect(PG_ADMIN_DSN)
    await admin.execute(f'CREATE DATABASE "{name}"')
    await admin.close()
    base = PG_ADMIN_DSN.rsplit("/", 1)[0].replace("postgresql://", "postgresql+asyncpg://")
    return f"{base}/{name}"


async def drop_pg_database(name: str) -> None:
    """Drop a database made by create_pg_database, whoever is still connected to it."""
    import asyncpg

    admin = await asyncpg.connect(PG_ADMIN_DSN)
    await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    await admin.close()


@pytest.fixture
async def store(db_url: str) -> AsyncIterator[Store]:
    """A migrated store."""
    s = Store(db_url)
    await s.migrate()
    yield s
    await s.close()


def make_settings(kafka: EmbeddedKafka, db_url: str, unique: str, **extra: object) -> Settings:
    """Settings for a hub on the shared test broker, with its own topics, groups and database."""
    values: dict[str, object] = {
        "kafka": {
            "bootstrap_servers": kafka.bootstrap,
            "topic_prefix": f"t{unique}.",
            "group_prefix": f"g{unique}-",
            "session_timeout_ms": 2000,
            "heartbeat_interval_ms": 500,
        },
        "database": {"url": db_url},
        "secret": TEST_SECRET,
        "components": [],
    }
    values.update(extra)
    return Settings(**values)  # type: ignore[arg-type]
