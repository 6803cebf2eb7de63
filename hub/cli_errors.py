"""What stopped a command, in one line: a database it could not reach or open, never a traceback.

A command that met a database that was down, missing, or a SQLite file that could not be opened
ended in a traceback of hundreds of lines. `database_problem` tells such a failure from any other
and says it with the database's URL, its password hidden; the message of the database itself is
passed on only where it can hold no value of a row.
"""

from __future__ import annotations

import socket
import sqlite3
import ssl
from collections.abc import Iterator
from pathlib import Path

from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import make_url

from hub.urls import shown_database_url

_DATABASE_CODE = ("/asyncpg/", "/sqlalchemy/", "/aiosqlite/", "/alembic/")


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
