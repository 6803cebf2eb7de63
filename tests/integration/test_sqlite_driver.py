"""SQLite statements in one trip each to the driver's thread (hub.store.sqlite_driver): what SQLAlchemy
gets back is what its own aiosqlite adapter gives, in fewer trips."""

from __future__ import annotations

import sqlite3
from collections import Counter
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiosqlite
import pytest
from sqlalchemy import exc as sa_exc
from sqlalchemy import text
from sqlalchemy.connectors.asyncio import AsyncAdapt_dbapi_cursor
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from hub.store import Store
from hub.store.db import make_engine
from hub.store.sqlite_driver import OneTripAiosqlite, one_trip_module

pytestmark = pytest.mark.integration


@pytest.fixture
def trips(monkeypatch: pytest.MonkeyPatch) -> Counter[str]:
    """Trips to a connection's thread, by what ran there."""
    counted: Counter[str] = Counter()
    real = aiosqlite.Connection._execute

    async def counting(self: aiosqlite.Connection, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        counted[getattr(fn, "__name__", "?")] += 1
        return await real(self, fn, *args, **kwargs)

    monkeypatch.setattr(aiosqlite.Connection, "_execute", counting)
    return counted


def _stock(url: str) -> AsyncEngine:
    """SQLAlchemy's own aiosqlite adapter, with the hub's SQLite set-up (the same events)."""
    ours = make_engine(url)
    assert isinstance(ours.dialect.dbapi, OneTripAiosqlite)
    stock = create_async_engine(url, hide_parameters=True)
    assert not isinstance(stock.dialect.dbapi, OneTripAiosqlite)
    return stock


@pytest.fixture
async def engines(tmp_path: Path) -> AsyncIterator[dict[str, AsyncEngine]]:
    made = {
        "one trip": make_engine(f"sqlite+aiosqlite:///{tmp_path / 'ours.db'}"),
        "stock": _stock(f"sqlite+aiosqlite:///{tmp_path / 'stock.db'}"),
    }
    yield made
    for engine in made.values():
        await engine.dispose()


async def _session_of_statements(engine: AsyncEngine) -> list[Any]:
    """A run of statements of every kind; what SQLAlchemy handed back for each."""
    seen: list[Any] = []
    async with engine.begin() as conn:
        await conn.execute(text("CREATE TABLE t (id INTEGER PRIMARY KEY, name TEXT UNIQUE, n INT)"))
        one = await conn.execute(text("INSERT INTO t (name, n) VALUES ('a', 1)"))
        seen.append(("insert", one.rowcount, one.lastrowid))
        many = await conn.execute(
            text("INSERT INTO t (name, n) VALUES (:name, :n)"), [{"name": f"m{i}", "n": i} for i in range(5)]
        )
        seen.append(("executemany", many.rowcount))
        returned = await conn.execute(text("INSERT INTO t (name, n) VALUES ('r', 9) RETURNING id, name"))
        seen.append(("returning", [tuple(r) for r in returned]))
        changed = await conn.execute(text("UPDATE t SET n = n + 10 WHERE n < 3"))
        seen.append(("update", changed.rowcount))
        # the driver counts a RETURNING statement's rows once they were fetched
        returning = await conn.execute(text("UPDATE t SET n = n + 1 WHERE n >= 10 RETURNING id"))
        seen.append(("update returning", returning.rowcount, sorted(r[0] for r in returning)))
        gone = await conn.execute(text("DELETE FROM t WHERE name = 'r' RETURNING name"))
        seen.append(("delete returning", gone.rowcount, gone.all()))
        await conn.execute(text("INSERT INTO t (name, n) VALUES ('r', 9)"))
        rows = await conn.execute(text("SELECT id, name, n FROM t ORDER BY id"))
        seen.append(("keys", list(rows.keys())))
        seen.append(("rows", [tuple(r) for r in rows]))
        nothing = await conn.execute(text("SELECT id FROM t WHERE n > 1000"))
        seen.append(("no rows", nothing.fetchall(), list(nothing.keys())))
        first = await conn.execute(text("SELECT name FROM t ORDER BY id"))
        seen.append(("first", first.first()))
        streamed = await conn.stream(text("SELECT name FROM t ORDER BY id"))  # the driver's own cursor
        seen.append(("streamed", [r[0] async for r in streamed]))
    for bad in ("INSERT INTO t (name, n) VALUES ('a', 2)", "SELEC nonsense", "SELECT * FROM missing"):
        try:
            async with engine.begin() as conn:
                await conn.execute(text(bad))
        except sa_exc.DBAPIError as error:
            seen.append(("refused", type(error).__name__, type(error.orig).__name__, str(error.orig)))
    async with engine.connect() as conn:  # nothing of the refused statements was kept
        seen.append(("count", (await conn.execute(text("SELECT count(*) FROM t"))).scalar_one()))
    return seen


async def test_sqlalchemy_gets_what_its_own_adapter_gives(engines: dict[str, AsyncEngine]) -> None:
    ours, stock = [await _session_of_statements(engines[name]) for name in ("one trip", "stock")]
    assert ours == stock
    assert ("executemany", 5) in ours and ("update", 4) in ours and ("count", 7) in ours
    assert ("update returning", 4, [1, 2, 3, 4]) in ours and ("delete returning", 1, [("r",)]) in ours
    assert ("refused", "IntegrityError", "IntegrityError", "UNIQUE constraint failed: t.name") in ours


async def test_a_statement_is_one_trip_and_a_clean_return_to_the_pool_none(
    tmp_path: Path, trips: Counter[str]
) -> None:
    engine = make_engine(f"sqlite+aiosqlite:///{tmp_path / 'h.db'}")
    try:
        async with engine.begin() as conn:
            await conn.execute(text("CREATE TABLE t (id INTEGER PRIMARY KEY, n INT)"))
        trips.clear()
        async with engine.connect():  # no transaction began: the pool's rollback makes no trip
            pass
        assert trips == Counter()
        async with engine.begin() as conn:
            await conn.execute(text("INSERT INTO t (n) VALUES (1)"))
            await conn.execute(text("INSERT INTO t (n) VALUES (:n)"), [{"n": 2}, {"n": 3}])
            assert (await conn.execute(text("SELECT count(*) FROM t"))).scalar_one() == 3
        # BEGIN (the hub's own event), the three statements, COMMIT: a trip each
        assert trips == Counter({"_run": 4, "commit": 1}), trips
    finally:
        await engine.dispose()


async def test_a_connection_given_back_inside_a_transaction_is_rolled_back(tmp_path: Path) -> None:
    store = Store(f"sqlite+aiosqlite:///{tmp_path / 'h.db'}")
    try:
        async with store.transaction() as session:
            await session.execute(text("CREATE TABLE t (n INT)"))
        with pytest.raises(RuntimeError, match="mid-way"):
            async with store.transaction() as session:
                await session.execute(text("INSERT INTO t VALUES (1)"))
                raise RuntimeError("mid-way")
        async with store.engine.connect() as conn:
            raw = await conn.get_raw_connection()
            await conn.execute(text("INSERT INTO t VALUES (2)"))  # the hub's BEGIN: a transaction is open
            assert raw.driver_connection is not None and raw.driver_connection.in_transaction
        # given back without a commit: the pool's rollback went to the thread and undid the insert
        async with store.read() as session:
            assert (await session.execute(text("SELECT count(*) FROM t"))).scalar_one() == 0
    finally:
        await store.close()


def test_without_what_it_builds_on_the_engine_keeps_sqlalchemys_adapter(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    assert isinstance(one_trip_module(), OneTripAiosqlite)
    monkeypatch.delattr(AsyncAdapt_dbapi_cursor, "_make_new_cursor")  # a release without it
    assert one_trip_module() is None
    engine = make_engine(f"sqlite+aiosqlite:///{tmp_path / 'h.db'}")
    assert not isinstance(engine.dialect.dbapi, OneTripAiosqlite)
    assert isinstance(engine.dialect.dbapi.sqlite, type(sqlite3))
