"""A command whose database cannot be reached or opened says so in one line, its password hidden."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import PG_ADMIN_DSN, require_pg

pytestmark = pytest.mark.e2e
KETENHUB = str(Path(sys.executable).with_name("ketenhub"))
DOWN = "postgresql+asyncpg://hub:s3cr3t-pw@127.0.0.1:1/hub"


def _ketenhub(tmp: Path, url: str, *args: str, home: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KETENHUB_") and k != "PGSSLROOTCERT"}
    env["KETENHUB_DATABASE__URL"] = url
    if home is not None:
        env["HOME"] = str(home)
    return subprocess.run(
        [KETENHUB, *args], cwd=tmp, env=env, capture_output=True, text=True, timeout=60, check=False
    )


def _one_line(done: subprocess.CompletedProcess[str]) -> str:
    """Exit 1 and one line on standard error (a migration's log lines aside), no traceback."""
    said = [line for line in done.stderr.splitlines() if line.startswith("ketenhub")]
    assert done.returncode == 1, done.stderr[-3000:]
    assert len(said) == 1 and "Traceback" not in done.stderr and "╭" not in done.stderr, done.stderr[-3000:]
    assert "s3cr3t-pw" not in done.stderr + done.stdout
    return said[0]


@pytest.mark.parametrize("command", [["migrate"], ["partners", "list"], ["medewerkers", "list"]])
def test_a_database_that_is_down_is_one_line_without_its_password(tmp_path: Path, command: list[str]) -> None:
    """`ketenhub migrate` and `partners list` against a server that was down: 528-715 lines."""
    said = _one_line(_ketenhub(tmp_path, DOWN, *command))
    assert said.startswith(
        "ketenhub: database unreachable: postgresql+asyncpg://hub:***@127.0.0.1:1/hub ("
    ), said


@pytest.mark.parametrize("command", [["migrate"], ["partners", "list"]])
def test_a_sqlite_file_in_a_directory_that_is_not_there_is_one_line(
    tmp_path: Path, command: list[str]
) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'missing' / 'hub.db'}"
    said = _one_line(_ketenhub(tmp_path, url, *command))
    assert said == f"ketenhub: cannot open the database file: {url} (no directory {tmp_path / 'missing'})"


def test_a_database_that_does_not_exist_is_named(tmp_path: Path) -> None:
    asyncio.run(require_pg())
    base = PG_ADMIN_DSN.rsplit("/", 1)[0].replace("postgresql://", "postgresql+asyncpg://")
    url = f"{base}/kh_cli_review_missing"
    said = _one_line(_ketenhub(tmp_path, url, "partners", "list"))
    assert said == f"ketenhub: database does not exist: {url}"


def test_a_database_url_asking_for_a_checked_certificate_says_what_is_missing(tmp_path: Path) -> None:
    """`?ssl=verify-full` (deploy/README.md, PostgreSQL over TLS) with no CA file to check the server
    with said "(No such file or directory)", and with a server that speaks no TLS "(ConnectionError)"."""
    asyncio.run(require_pg())
    url = PG_ADMIN_DSN.replace("postgresql://", "postgresql+asyncpg://") + "?ssl=verify-full"
    said = _one_line(_ketenhub(tmp_path, url, "migrate", home=tmp_path))  # no ~/.postgresql/root.crt
    assert said.endswith(
        "(no CA file to check the server's certificate with: set PGSSLROOTCERT to the CA's file, PEM)"
    )
