"""SQLite statements in one trip each to the driver's thread.

aiosqlite runs each SQLite connection in a thread of its own; every call on it is a trip there and
back (a queue, a wake-up of the event loop, the interpreter lock changing hands twice). SQLAlchemy's
adapter makes four trips for a query (open a cursor, execute, fetch the rows, close) and three for a
write, and one more for the pool's rollback of a connection it gets back, also when no transaction
is open. On the HTTP intake, whose group commits hold some sixteen referrals each, those trips were
about a seventh of what a referral cost the event loop (a group commit of sixteen: 6.5 ms of its
CPU with them, 4.6 ms without).

`OneTripAiosqlite` stands in for SQLAlchemy's aiosqlite module (`create_async_engine(...,
module=...)`): a statement is opened, executed, its rows fetched and its cursor closed in one trip,
and the rollback of a connection outside a transaction (a no-op in SQLite) makes none. What
SQLAlchemy sees is what it saw: the same description, row count, last row id, rows and errors.

It uses two of aiosqlite's own names (`Connection._execute`, `Connection._conn`) and two of
SQLAlchemy's adapter (`_make_new_cursor`, `_aenter_cursor`); `one_trip_module()` gives None, and the
engine SQLAlchemy's own adapter, when a release no longer has them.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from typing import Any

import aiosqlite
from sqlalchemy.dialects.sqlite import aiosqlite as sa_aiosqlite

_Outcome = tuple[Any, int, int | None, list[Any]]


def _run(conn: sqlite3.Connection, sql: str, parameters: Any, many: bool) -> _Outcome:
    """In the connection's thread: the whole statement, as SQLAlchemy's adapter does it in four trips."""
    cursor = conn.cursor()
    try:
        if many:
            cursor.executemany(sql, parameters)
        elif parameters is None:
            cursor.execute(sql)
        else:
            cursor.execute(sql, parameters)
        # the rows first: the driver counts a RETURNING statement's rows once they were all fetched
        rows = cursor.fetchall() if cursor.description else []
        return cursor.description, cursor.rowcount, cursor.lastrowid, rows
    finally:
        cursor.close()


class _Statement:
    """What SQLAlchemy's adapter reads of an aiosqlite cursor, filled in by one trip."""

    __slots__ = ("_connection", "_rows", "arraysize", "description", "lastrowid", "rowcount")

    def __init__(self, connection: aiosqlite.Connection) -> None:
        self._connection = connection
        self.description: Any = None
        self.rowcount, self.lastrowid, self.arraysize = -1, None, 1
        self._rows: list[Any] = []

    async def _trip(self, sql: str, parameters: Any, many: bool) -> None:
        connection = self._connection
        outcome = await connection._execute(_run, connection._conn, sql, parameters, many)  # type: ignore[no-untyped-call]
        self.description, self.rowcount, self.lastrowid, self._rows = outcome

    async def execute(self, sql: str, parameters: Any = None) -> None:
        await self._trip(sql, parameters, False)

    async def executemany(self, sql: str, parameters: Sequence[Any]) -> None:
        await self._trip(sql, parameters, True)

    async def fetchall(self) -> list[Any]:
        rows, self._rows = self._rows, []
        return rows

    def close(self) -> None:
        self._rows = []


class _OneTripCursor(sa_aiosqlite.AsyncAdapt_aiosqlite_cursor):
    __slots__ = ()
    _awaitable_cursor_close = False  # closing is done in the statement's own trip

    def _make_new_cursor(self, connection: Any) -> Any:
        return _Statement(connection)

    def _aenter_cursor(self, cursor: Any) -> Any:
        return cursor


class _OneTripConnection(sa_aiosqlite.AsyncAdapt_aiosqlite_connection):
    __slots__ = ()
    _cursor_cls = _OneTripCursor

    def rollback(self) -> None:
        # The pool rolls back every connection it gets back. Outside a transaction SQLite's rollback
        # does nothing (the driver checks first), so the trip is left out. Nothing else is queued on
        # the connection here: the pool has it, and every earlier call was awaited.
        connection = self._connection._connection
        if connection is not None and not connection.in_transaction:
            return
        super().rollback()


class OneTripAiosqlite(sa_aiosqlite.AsyncAdapt_aiosqlite_dbapi):
    """SQLAlchemy's aiosqlite module with one trip to the driver's thread a statement."""

    def connect(self, *arg: Any, **kw: Any) -> _OneTripConnection:
        adapted = super().connect(*arg, **kw)
        return _OneTripConnection(self, adapted._connection)


def one_trip_module() -> OneTripAiosqlite | None:
    """The module for `create_async_engine(module=...)`, or None when the installed SQLAlchemy or
    aiosqlite no longer has what it builds on."""
    cursor = sa_aiosqlite.AsyncAdapt_aiosqlite_cursor
    needs = (
        hasattr(cursor, "_make_new_cursor")
        and hasattr(cursor, "_aenter_cursor")
        and hasattr(cursor, "_awaitable_cursor_close")
        and hasattr(aiosqlite.Connection, "_execute")
        and hasattr(aiosqlite.Connection, "_conn")
    )
    return OneTripAiosqlite(aiosqlite, sqlite3) if needs else None
