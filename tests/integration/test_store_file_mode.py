"""The embedded SQLite database holds BSNs and referrals: only its owner may read it, -wal and -shm too."""

from __future__ import annotations

import os
import sqlite3
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import structlog
from sqlalchemy import text

from hub.store import Store
from hub.store.db import sqlite_file

pytestmark = pytest.mark.integration


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def beside(db: Path) -> list[Path]:
    return [db, db.with_name(db.name + "-wal"), db.with_name(db.name + "-shm")]


@pytest.fixture(autouse=True)
def usual_umask() -> Iterator[None]:
    """The umask most systems give (0022): files others may read unless made otherwise. A stricter one
    in the test run would make these tests pass without the hub doing anything."""
    before = os.umask(0o022)
    yield
    os.umask(before)


async def test_a_new_database_and_its_wal_and_shm_are_owner_only(tmp_path: Path) -> None:
    db = tmp_path / "ketenhub.db"
    store = Store(f"sqlite+aiosqlite:///{db}")
    try:
        await store.migrate()
        async with store.transaction() as session:  # a write, with the connection kept in the pool
            await session.execute(text("CREATE TABLE scratch (x)"))
            await session.execute(text("INSERT INTO scratch VALUES ('a referral')"))
        files = beside(db)
        assert all(f.exists() for f in files), sorted(os.listdir(tmp_path))
        assert {f.name: f"{mode(f):o}" for f in files} == {f.name: "600" for f in files}
    finally:
        await store.close()


async def test_an_existing_readable_database_is_made_owner_only_and_says_so(tmp_path: Path) -> None:
    db = tmp_path / "ketenhub.db"
    earlier = sqlite3.connect(db)  # a database made before this fix, its -wal and -shm still there
    earlier.execute("PRAGMA journal_mode=WAL")
    earlier.execute("CREATE TABLE t (x)")
    earlier.commit()
    try:
        assert {f"{mode(f):o}" for f in beside(db)} == {"644"}
        store = Store(f"sqlite+aiosqlite:///{db}")
        try:
            with structlog.testing.capture_logs() as logs:
                await store.ping()
            assert {f.name: f"{mode(f):o}" for f in beside(db)} == {f.name: "600" for f in beside(db)}
            said = [
                e for e in logs if e["event"] == "database file was readable by others; made it owner-only"
            ]
            assert sorted((e["file"], e["was"]) for e in said) == sorted((str(f), "644") for f in beside(db))
            with structlog.testing.capture_logs() as again:
                await store.migrate()  # opens the file again: nothing more to say
            assert not [e for e in again if "readable by others" in e["event"]]
        finally:
            await store.close()
    finally:
        earlier.close()


def test_only_a_file_database_is_looked_after() -> None:
    assert sqlite_file("sqlite+aiosqlite:///./ketenhub.db") == Path("ketenhub.db")
    assert sqlite_file("sqlite+aiosqlite:////var/lib/ketenhub/ketenhub.db") == Path(
        "/var/lib/ketenhub/ketenhub.db"
    )
    assert sqlite_file("sqlite+aiosqlite://") is None
    assert sqlite_file("sqlite+aiosqlite:///:memory:") is None


def test_a_directory_named_as_the_database_keeps_its_mode(tmp_path: Path) -> None:
    """A URL naming a directory (a mistyped path, `sqlite+aiosqlite:////tmp`) had the directory made
    owner-only, sticky bit gone, before SQLite refused to open it; the command fails, one line, and
    the directory is as it was."""
    folder = tmp_path / "adir"
    folder.mkdir()
    folder.chmod(0o1777)  # as /tmp
    env = {k: v for k, v in os.environ.items() if not k.startswith("KETENHUB_")}
    env |= {"KETENHUB_DATABASE__URL": f"sqlite+aiosqlite:///{folder}", "KETENHUB_SECRET": "s" * 48}
    ketenhub = str(Path(sys.executable).with_name("ketenhub"))
    done = subprocess.run(
        [ketenhub, "migrate"], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 1, done.stderr[-2000:]
    assert "cannot open the database file" in done.stderr and "Traceback" not in done.stderr
    assert "readable by others" not in done.stdout + done.stderr
    assert stat.S_IMODE(folder.stat().st_mode) == 0o1777
