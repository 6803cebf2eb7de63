"""Engine, sessions and migrations; one code path for SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import os
import stat
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pydantic_core
from alembic import command
from alembic.config import Config
from sqlalchemy import event, text
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import (
    AsyncConnection,
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)

from hub.logging import get_logger
from hub.store.sqlite_driver import one_trip_module
from hub.urls import shown_database_url

log = get_logger(__name__)
MIGRATIONS = Path(__file__).resolve().parent.parent / "migrations"


WRITE = "ketenhub_write"  # execution option: this connection's transaction will write


def _sqlite_pragmas(dbapi_conn: Any, _: Any) -> None:
    # The driver's own transaction handling is switched off: it would start transactions late and
    # break SAVEPOINTs; `_sqlite_begin` starts them instead.
    dbapi_conn.isolation_level = None
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    # FULL: a commit is on disk before it returns. The hub acknowledges what it committed (a 201 to a
    # partner, the offset to Kafka); with NORMAL a power cut or an OS crash may roll back the last
    # commits in WAL mode, after the broker was told they were done.
    cur.execute("PRAGMA synchronous=FULL")
    cur.execute("PRAGMA busy_timeout=30000")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.close()


def sqlite_file(url: str) -> Path | None:
    """The database file of a SQLite URL; None for an in-memory database (or a `file:` URI)."""
    parsed = make_url(url)
    database = parsed.database
    if not database or database == ":memory:" or database.startswith("file:") or parsed.query.get("uri"):
        return None
    return Path(database)


def keep_private(path: Path) -> None:
    """Only the owner may read the SQLite database (0600, as ketenhub.secret beside it): it holds BSNs
    and referrals. A new file is made so before SQLite opens it, and SQLite gives its -wal and -shm
    files the database file's mode. An existing file that others may read, and its -wal, -shm or
    -journal left beside it, is made owner-only, saying so."""
    try:
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        return
    except FileExistsError:
        pass
    except FileNotFoundError:  # no such directory: SQLite says so when it opens the file
        return
    for file in [path, *(path.with_name(path.name + end) for end in ("-wal", "-shm", "-journal"))]:
        try:
            found = file.stat()
            mode = stat.S_IMODE(found.st_mode)
            # A directory named as the database: SQLite refuses it, and its mode is not the hub's to
            # change (a mistyped /tmp would lose its sticky bit and its other users).
            if not stat.S_ISREG(found.st_mode):
                continue
            if mode & 0o077:
                file.chmod(mode & 0o700)
                log.warning(
                    "database file was readable by others; made it owner-only",
                    file=str(file),
                    was=f"{mode:o}",
                )
        except FileNotFoundError:
            continue
        except OSError as exc:  # not its owner: the owner must do it
            log.error(
                "database file is readable by others and its mode cannot be changed",
                file=str(file),
                error=f"{type(exc).__name__}: {exc.strerror or exc}",
            )


def _sqlite_begin(conn: Any) -> None:
    # A writing transaction takes the write lock at its start (BEGIN IMMEDIATE) and so waits its turn
    # under the busy timeout. A deferred one that reads first and writes later fails at once with
    # "database is locked" when another connection committed in between (its snapshot is stale).
    write = conn.get_execution_options().get(WRITE, False)
    conn.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")


class RawJson(str):
    """JSON text made already (`model.model_dump_json()`), stored as it is in a JSON column: a model
    dumped to a dict first and encoded after took several times as long."""

    __slots__ = ()


def _to_json(value: Any) -> str:
    """JSON columns are written by pydantic's Rust encoder: several times faster than json.dumps."""
    if isinstance(value, RawJson):
        return value
    return pydantic_core.to_json(value).decode()


# How long opening a PostgreSQL connection may take (asyncpg waits 60 s): a server that accepts and
# never answers (hung, or behind a frozen proxy) fails a request in seconds, answered with a 503,
# instead of holding it, and every request behind it, for a minute a try.
CONNECT_TIMEOUT_S = 10.0


def make_engine(url: str, *, echo: bool = False, connect_timeout_s: float = CONNECT_TIMEOUT_S) -> AsyncEngine:
    """An async engine; SQLite gets WAL and a busy timeout so concurrent components wait, not fail.

    Statement parameters are never put into error messages or logs: they hold BSNs and names.
    """
    if url.startswith("sqlite"):
        one_trip = one_trip_module()  # a statement in one trip to the driver's thread, not four
        engine = create_async_engine(
            url,
            echo=echo,
            hide_parameters=True,
            json_serializer=_to_json,
            json_deserializer=pydantic_core.from_json,
            connect_args={"timeout": 30},
            # Every aiosqlite connection is a thread. With the default pool of 5, a burst of
            # concurrent HTTP requests (each reads its partner's key) opened and closed overflow
            # connections, and their threads, by the hundred a second.
            pool_size=20,
            max_overflow=20,
            **({"module": one_trip} if one_trip is not None else {}),
        )
        path = sqlite_file(url)
        if path is not None:  # before each connection opens the file (cheap: a failed create, stats)
            event.listen(engine.sync_engine, "do_connect", lambda *_: keep_private(path))
        event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
        event.listen(engine.sync_engine, "begin", _sqlite_begin)
        return engine
    return create_async_engine(
        url,
        echo=echo,
        hide_parameters=True,
        json_serializer=_to_json,
        json_deserializer=pydantic_core.from_json,
        pool_size=10,
        max_overflow=10,
        pool_pre_ping=True,
        # asyncpg prepares every statement; after five runs PostgreSQL may switch a prepared
        # statement to a generic plan, made on the statistics of the moment. Made on a young,
        # near-empty table, that plan scans the table (the duplicate lookup took 60 ms a batch of
        # 200 at 20,000 rows): plan every execution for its own parameters instead.
        # synchronous_commit on: a commit is durable before the hub acknowledges it (a server
        # configured otherwise would lose acknowledged commits in a crash)
        connect_args={
            "server_settings": {"plan_cache_mode": "force_custom_plan", "synchronous_commit": "on"},
            "timeout": connect_timeout_s,
        },
    )


def _upgrade(connection: Any, revision: str) -> None:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.attributes["connection"] = connection
    command.upgrade(cfg, revision)


async def migrate(engine: AsyncEngine, revision: str = "heads") -> None:
    """Apply the Alembic migrations up to `revision`."""
    async with engine.begin() as conn:
        if engine.dialect.name == "postgresql":
            # Many replicas start at once: one migrates, the others wait and find nothing to do.
            await conn.execute(text("SELECT pg_advisory_xact_lock(7301002)"))
        await conn.run_sync(_upgrade, revision)


class Store:
    """The hub's database: an engine and a session factory."""

    def __init__(self, url: str, *, echo: bool = False, connect_timeout_s: float = CONNECT_TIMEOUT_S) -> None:
        self.url = url
        self.engine = make_engine(url, echo=echo, connect_timeout_s=connect_timeout_s)
        self.sessions = async_sessionmaker(self.engine, expire_on_commit=False)
        # SQLite has one writer. Writers of this process queue here, in order, instead of polling
        # SQLite's lock: its busy handler sleeps up to 100 ms a try, which caps throughput far below
        # what one writer can do. Other processes (the CLI) still wait under the busy timeout.
        self._writer = asyncio.Lock()
        self._writing: asyncio.Task[Any] | None = None

    @property
    def dialect(self) -> str:
        """'sqlite' or 'postgresql'."""
        return self.engine.dialect.name

    def describe(self) -> str:
        """Where the data lives, without a password (also one in the URL's query)."""
        return shown_database_url(self.engine.url.render_as_string(hide_password=False))

    async def migrate(self) -> None:
        """Bring the schema up to date."""
        await migrate(self.engine)

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[AsyncSession]:
        """A session in one transaction: committed on success, rolled back on any error."""
        if self.dialect != "sqlite":
            committing = False
            try:
                async with self.sessions() as session, session.begin():
                    yield session
                    committing = True  # the body is done: what fails from here fails in COMMIT
            except Exception as exc:
                if committing and _outcome_unknown(exc):
                    setattr(exc, _COMMIT_UNKNOWN, True)
                raise
            return
        task = asyncio.current_task()
        if task is not None and self._writing is task:
            raise RuntimeError("a write transaction inside another one would wait for itself; use read()")
        async with self._writer:
            self._writing = task
            try:
                async with self.sessions() as session, session.begin():
                    await session.connection(execution_options={WRITE: True})  # BEGIN IMMEDIATE
                    yield session
            finally:
                self._writing = None

    @asynccontextmanager
    async def read(self) -> AsyncIterator[AsyncSession]:
        """A session for reading only: on SQLite it takes no write lock, so it runs beside a writer
        (also one that holds the lock while it waits for this read, as a consumer's transaction may)."""
        async with self.sessions() as session:
            yield session

    @asynccontextmanager
    async def connect(self) -> AsyncIterator[AsyncConnection]:
        """A raw connection (health checks, bulk work)."""
        async with self.engine.connect() as conn:
            yield conn

    async def ping(self) -> None:
        """Raise when the database cannot be reached."""
        async with self.engine.connect() as conn:
            await conn.execute(text("SELECT 1"))

    async def close(self) -> None:
        """Dispose of the pool."""
        await self.engine.dispose()


# PostgreSQL's SQLSTATEs (https://www.postgresql.org/docs/current/errcodes-appendix.html) that say
# the server cannot do the work now, not that the statement is wrong: the same transaction later
# succeeds. By class: connection (08), authorization (28: a password changed under the hub),
# insufficient resources (53: disk full, out of memory, too many connections), operator intervention
# (57: a statement timeout or a cancelled query, the server shutting down), system errors (58: I/O).
_TRY_AGAIN_CLASSES = frozenset({"08", "28", "53", "57", "58"})
# And single codes: a deadlock broken, a serialization conflict, a commit whose outcome is unknown
# (40P01, 40001, 40003), a lock not had within lock_timeout or in use (55P03, 55006), a write on a
# server that became a read-only standby, a transaction ended for idling (25006, 25P03).
_TRY_AGAIN = frozenset({"40P01", "40001", "40003", "55P03", "55006", "25006", "25P03"})


def _postgresql_try_again(sqlstate: object) -> bool:
    return isinstance(sqlstate, str) and (sqlstate in _TRY_AGAIN or sqlstate[:2] in _TRY_AGAIN_CLASSES)


# SQLite's primary result codes that say the database failed, not the statement
# (https://sqlite.org/rescode.html): busy, locked, out of memory, read-only, interrupted, I/O error,
# corrupt, full, cannot open, lock protocol, not a database. SQLite reports a statement's own mistake
# (no such table or column, a syntax error) as an OperationalError too, with SQLITE_ERROR (1).
_SQLITE_FAILED = frozenset({5, 6, 7, 8, 9, 10, 11, 13, 14, 15, 26})


_COMMIT_UNKNOWN = "ketenhub_commit_outcome_unknown"


def _outcome_unknown(exc: BaseException) -> bool:
    # The server said why it refused the COMMIT (a serialization failure, a deferred constraint):
    # it rolled back. Only a connection lost while COMMIT was on its way leaves the outcome open,
    # or the server saying so itself (40003, statement completion unknown).
    sqlstate = getattr(getattr(exc, "orig", None), "sqlstate", None)
    if isinstance(sqlstate, str) and sqlstate:
        return sqlstate == "40003" or sqlstate.startswith("08")
    return store_failed(exc) or isinstance(exc, ConnectionError | TimeoutError)


def commit_unknown(exc: BaseException) -> bool:
    """True when `exc` came from a PostgreSQL COMMIT whose answer was lost: the transaction may have
    been kept or not. A sender told "nothing was kept" would make it again; they must be told to
    send the same request again, so that what makes it once (an `Idempotency-Key`, a referral's
    case reference, rule 7) answers with what the first one made. On SQLite a failed COMMIT was not
    kept: it is on local disk, all or nothing."""
    return getattr(exc, _COMMIT_UNKNOWN, False) is True


def store_failed(exc: BaseException) -> bool:
    """True when `exc` says the store itself failed (connection lost, locked, timed out, no free
    connection in the pool, out of resources, a deadlock broken), not that one statement could not
    take its values (data, integrity, programming errors). The first is worth trying again later;
    the second fails the same way every time."""
    code = getattr(getattr(exc, "orig", None), "sqlite_errorcode", None)
    if isinstance(exc, sa_exc.DBAPIError) and isinstance(code, int):  # the driver says which
        return exc.connection_invalidated or code & 0xFF in _SQLITE_FAILED
    failed = sa_exc.OperationalError | sa_exc.InterfaceError | sa_exc.InternalError | sa_exc.TimeoutError
    return isinstance(exc, failed) or (
        isinstance(exc, sa_exc.DBAPIError)
        and (exc.connection_invalidated or _postgresql_try_again(getattr(exc.orig, "sqlstate", None)))
    )
