"""What stopped a command, in one line: a database it could not reach or open, or a signal; never a
traceback.

A command that met a database that was down, missing, or a SQLite file that could not be opened
ended in a traceback of hundreds of lines. `database_problem` tells such a failure from any other
and says it with the database's URL, its password hidden; the message of the database itself is
passed on only where it can hold no value of a row. `SignalStop` runs a command's coroutine so that
Ctrl-C or SIGTERM cancels it and what it opened is closed.
"""

from __future__ import annotations

import asyncio
import signal
import socket
import sqlite3
import ssl
import threading
from collections.abc import Callable, Coroutine, Iterator
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import make_url

from hub.urls import shown_database_url

_DATABASE_CODE = ("/asyncpg/", "/sqlalchemy/", "/aiosqlite/", "/alembic/")
SIGNALS = (signal.SIGINT, signal.SIGTERM)
T = TypeVar("T")


class Interrupted(Exception):
    """SIGINT or SIGTERM stopped a command: its coroutine was cancelled, what it opened closed."""

    def __init__(self, sig: signal.Signals) -> None:
        super().__init__(sig.name)
        self.signal = sig


class SignalStop:
    """SIGINT and SIGTERM while it is entered: the first cancels the coroutine `run` runs, whose
    `finally` blocks close what it opened (a store, the brokers' clients), and `run` raises
    `Interrupted`; later ones are ignored. With `react` set, a signal calls it in the event loop
    instead.

    Ctrl-C raised KeyboardInterrupt wherever the command was, a task's or a database connection's
    traceback now and then, and SIGTERM ended it on the spot, nothing closed.
    """

    def __init__(self) -> None:
        self.by: signal.Signals | None = None
        self.react: Callable[[signal.Signals], None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task[Any] | None = None
        self._before: dict[signal.Signals, Any] = {}

    def __enter__(self) -> SignalStop:
        if threading.current_thread() is not threading.main_thread():
            return self  # only the main thread hears signals (a command run from a test's thread)
        # A signal the command was started to ignore (a background job's SIGINT) stays ignored.
        ignored = {sig for sig in SIGNALS if signal.getsignal(sig) == signal.SIG_IGN}
        self._before = {sig: signal.signal(sig, self._on_signal) for sig in SIGNALS if sig not in ignored}
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        for sig, handler in self._before.items():
            signal.signal(sig, handler)

    def run(
        self,
        main: Coroutine[Any, Any, T],
        loop_factory: Callable[[], asyncio.AbstractEventLoop] | None = None,
    ) -> T:
        """`main` in an event loop of its own (`asyncio.run`); Interrupted when a signal cancelled it,
        or came before it started."""

        async def go() -> T:
            self._loop, self._task = asyncio.get_running_loop(), asyncio.current_task()
            if self.by is not None:
                main.close()
                raise asyncio.CancelledError
            return await main

        try:
            with asyncio.Runner(loop_factory=loop_factory) as runner:
                return runner.run(go())
        except asyncio.CancelledError:
            if self.by is None:
                raise
            raise Interrupted(self.by) from None
        finally:
            self._loop = self._task = None

    def _on_signal(self, signum: int, _frame: object) -> None:
        sig, loop = signal.Signals(signum), self._loop
        if loop is not None and loop.is_closed():
            loop = None
        if self.react is not None and loop is not None:
            loop.call_soon_threadsafe(self.react, sig)
        elif self.by is None:
            self.by = sig
            if loop is not None and self._task is not None:
                loop.call_soon_threadsafe(self._task.cancel)


def shown_url(url: str) -> str:
    """The URL with its password hidden (also one in its query)."""
    try:
        return shown_database_url(url)
    except ValueError:
        return "KETENHUB_DATABASE__URL"


def _chain(exc: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    todo: list[BaseException | None] = [exc]
    while todo:
        e = todo.pop()
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        yield e
        todo += [e.__cause__, e.__context__, getattr(e, "orig", None)]


def _through_database_code(exc: BaseException) -> bool:
    """Raised in a database driver, SQLAlchemy or Alembic: an OSError there is the database's."""
    tb = exc.__traceback__
    while tb is not None:
        if any(part in tb.tb_frame.f_code.co_filename for part in _DATABASE_CODE):
            return True
        tb = tb.tb_next
    return False


def _first_line(exc: BaseException) -> str:
    return (str(exc).splitlines() or [""])[0][:200] or type(exc).__name__


def _sqlite_file(url: str) -> str:
    """Why a SQLite file cannot be opened, when it is its directory."""
    try:
        name = make_url(url).database
    except ValueError:
        return ""
    if not name or name == ":memory:":
        return ""
    folder = Path(name).absolute().parent
    if not folder.is_dir():
        return f" (no directory {folder})"
    return "" if Path(name).exists() else f" (cannot create a file in {folder})"


def database_problem(exc: BaseException, url: str) -> str | None:
    """One line saying the database could not be reached or opened; None for any other failure."""
    shown = shown_url(url)
    chain = list(_chain(exc))
    names = {type(e).__name__ for e in chain}
    if "InvalidCatalogNameError" in names:
        return f"database does not exist: {shown}"
    if names & {"InvalidPasswordError", "InvalidAuthorizationSpecificationError"}:
        return (
            f"database refused the login: {shown} (check the user and password in"
            " KETENHUB_DATABASE__URL, or KETENHUB_DATABASE__PASSWORD_FILE)"
        )
    if names & {"CannotConnectNowError", "TooManyConnectionsError"}:
        return f"database unreachable: {shown} (it takes no connection now)"
    for e in chain:
        if isinstance(e, sqlite3.OperationalError) and "unable to open database file" in str(e):
            return f"cannot open the database file: {shown}{_sqlite_file(url)}"
    from_database = any(isinstance(e, sa_exc.DBAPIError) for e in chain) or _through_database_code(exc)
    if not from_database:
        return None
    for e in chain:
        if isinstance(e, socket.gaierror):
            return f"database unreachable: {shown} (unknown host)"
        if isinstance(e, FileNotFoundError) and "ssl=verify" in url:
            # asyncpg looks for the CA that signed the server's certificate, and found none
            return (
                f"database unreachable: {shown} (no CA file to check the server's certificate with:"
                " set PGSSLROOTCERT to the CA's file, PEM)"
            )
        if isinstance(e, ssl.SSLError):
            return f"database unreachable: {shown} (TLS: {_first_line(e)})"
        if isinstance(e, OSError | TimeoutError):  # the driver's words name the server, no row's value
            return f"database unreachable: {shown} ({e.strerror or _first_line(e)})"
    from hub.store import store_failed

    failed = next((e for e in chain if isinstance(e, sa_exc.DBAPIError) and store_failed(e)), None)
    if failed is not None and failed.orig is not None:  # the store's trouble: no row's value in it
        said = (str(failed.orig).splitlines() or [type(failed.orig).__name__])[0][:200]
        return f"database error: {shown}: {said}"
    return None
