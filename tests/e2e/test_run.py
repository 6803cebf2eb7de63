"""`ketenhub run` as a user starts it: ready, serving, and gone cleanly with its broker."""

from __future__ import annotations

import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from hub.embedded import free_port
from hub.secret_fingerprint import fingerprint

pytestmark = pytest.mark.e2e
KETENHUB = str(Path(sys.executable).with_name("ketenhub"))


def _children(pid: int) -> list[int]:
    out = subprocess.run(
        ["ps", "-o", "pid=", "--ppid", str(pid)], capture_output=True, text=True, check=False
    )
    return [int(p) for p in out.stdout.split()]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat")
    return not (stat.exists() and stat.read_text().split()[2] == "Z")


def _wait_ready(port: int, proc: subprocess.Popen[str], timeout_s: float = 60.0) -> httpx.Response:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
        try:
            r = httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=1)
            if r.status_code == 200:
                return r
        except httpx.HTTPError:
            pass
        time.sleep(0.05)
    raise AssertionError("ketenhub run was not ready in time")


def _start(tmp_path: Path, port: int, *extra: str) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KETENHUB_")}
    return subprocess.Popen(
        [KETENHUB, "run", "--port", str(port), *extra],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_run_is_ready_serves_and_stops_cleanly(tmp_path: Path, sig: signal.Signals) -> None:
    port = free_port()
    proc = _start(tmp_path, port)
    try:
        assert proc.stdout is not None
        banner = [proc.stdout.readline()]
        assert banner == ["ketenhub is running\n"]
        socket.create_connection(("127.0.0.1", port), timeout=1).close()  # said once it listens
        while not banner[-1].startswith("  stop with Ctrl-C"):
            banner.append(proc.stdout.readline())
        ready = _wait_ready(port, proc)
        assert ready.json()["checks"] == {"store": "ok", "broker": "ok", "verwijsindex": "ok", "mail": "ok"}
        brokers = _children(proc.pid)
        assert brokers, "the embedded broker runs as a child process"
        spec = httpx.get(f"http://127.0.0.1:{port}/asyncapi.json", timeout=5).json()
        assert spec["asyncapi"].startswith("3.")
        assert (
            httpx.get(f"http://127.0.0.1:{port}/openapi.json", timeout=5).json()["info"]["title"]
            == "ketenhub"
        )
        proc.send_signal(sig)
        rest, err = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err[-2000:]
    out = "".join(banner) + rest
    assert f"http://127.0.0.1:{port}/readyz" in out and rest == "ketenhub stopped\n"
    assert "sqlite+aiosqlite:///./ketenhub.db" in out
    assert (tmp_path / "ketenhub.db").exists()
    assert not any(_alive(b) for b in brokers), "embedded broker left running"
    # the first start recorded the fingerprint of the secret it made, never the secret
    secret = (tmp_path / "ketenhub.secret").read_text().strip()
    with sqlite3.connect(tmp_path / "ketenhub.db") as db:
        assert db.execute("SELECT fingerprint FROM secret_fingerprint").fetchall() == [(fingerprint(secret),)]
        assert not any(secret in line for line in db.iterdump())


def test_killed_hub_takes_its_broker_along(tmp_path: Path) -> None:
    port = free_port()
    proc = _start(tmp_path, port)
    try:
        _wait_ready(port, proc)
        brokers = _children(proc.pid)
        assert brokers, "no embedded broker found among the hub's children"  # else nothing is checked
        proc.kill()
        proc.wait(10)
        deadline = time.monotonic() + 10
        while any(_alive(b) for b in brokers) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not any(_alive(b) for b in brokers), "embedded broker orphaned after SIGKILL"
    finally:
        if proc.poll() is None:
            proc.kill()


def test_bad_setting_stops_start_with_one_line(tmp_path: Path) -> None:
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("KETENHUB_")},
        "KETENHUB_HTTP__PORT": "eighty",
    }
    proc = subprocess.run(
        [KETENHUB, "run"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=30, check=False
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "ketenhub: configuration error: KETENHUB_HTTP__PORT: Input should be a valid integer, "
        "unable to parse string as an integer (got 'eighty')"
    ]


def _run_refused(tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("KETENHUB_")}
    return subprocess.run(
        [KETENHUB, "run", *args],
        cwd=tmp_path,
        env=clean | env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def _last_line(stderr: str) -> str:
    """The one line of `ketenhub:` the command said (a migration's log lines may come before it)."""
    said = [line for line in stderr.splitlines() if line.startswith("ketenhub")]
    assert len(said) == 1 and "Traceback" not in stderr, stderr[-3000:]
    return said[0]


def test_a_busy_port_stops_run_before_anything_of_the_hub_starts(tmp_path: Path) -> None:
    """The banner came first, then uvicorn's bind error and exit 3, with the broker, the store and the
    consumers started meanwhile, and nothing said about --port."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = _run_refused(tmp_path, "--port", str(port))
    assert done.returncode == 1
    assert done.stderr.splitlines() == [
        f"ketenhub: port {port} in use on 127.0.0.1: use --port or KETENHUB_HTTP__PORT"
    ]
    assert done.stdout == ""
    assert list(tmp_path.iterdir()) == []  # no database, no secret: nothing was started


def test_run_refuses_a_secret_other_than_the_one_the_hub_first_started_with(tmp_path: Path) -> None:
    """With another state dir (another ketenhub.secret) the hub started on the same database and filed
    new data under youth keys no one finds again."""
    import asyncio

    from hub.secret_fingerprint import check_secret
    from hub.store import Store

    hub_dir, elsewhere = tmp_path / "hub", tmp_path / "elsewhere"
    hub_dir.mkdir()
    elsewhere.mkdir()
    url = f"sqlite+aiosqlite:///{hub_dir / 'ketenhub.db'}"

    async def first_start() -> None:  # what the hub's first `ketenhub run` records
        store = Store(url)
        try:
            await store.migrate()
            await check_secret(
                store, "the-hub-s-own-secret-" + "h" * 32, source="KETENHUB_SECRET", record=True
            )
        finally:
            await store.close()

    asyncio.run(first_start())
    done = _run_refused(
        tmp_path, "--port", str(free_port()), KETENHUB_DATABASE__URL=url, KETENHUB_STATE_DIR=str(elsewhere)
    )
    assert done.returncode == 2, done.stderr[-2000:]
    said = _last_line(done.stderr)
    assert said.startswith(
        f"ketenhub: configuration error: KETENHUB_STATE_DIR ({elsewhere / 'ketenhub.secret'}): not the secret"
        f" the hub first started with on {url}"
    ), said
    assert "ketenhub is running" not in done.stdout


@pytest.mark.parametrize(
    ("env", "said"),
    [
        (
            {"KETENHUB_DATABASE__URL": "postgresql+asyncpg://hub:s3cr3t-pw@127.0.0.1:1/hub"},
            "ketenhub: database unreachable: postgresql+asyncpg://hub:***@127.0.0.1:1/hub (",
        ),
        (
            {"KETENHUB_STATE_DIR": "/nonexistent/dir"},
            "ketenhub: configuration error: KETENHUB_STATE_DIR: /nonexistent/dir is not a directory",
        ),
        (
            {"KETENHUB_COMPONENTS": "intake,teleport"},
            "ketenhub: configuration error: KETENHUB_COMPONENTS: unknown ['teleport']",
        ),
        (
            {"KETENHUB_VERWIJSINDEX__RETRY_SCHEDULE_S": "1,NaN"},
            "ketenhub: configuration error: KETENHUB_VERWIJSINDEX__RETRY_SCHEDULE_S: each delay must be",
        ),
    ],
)
def test_run_that_cannot_start_says_why_in_one_line(tmp_path: Path, env: dict[str, str], said: str) -> None:
    """An unreachable database, a state dir that is not there, or a list setting written with commas
    ended in tracebacks of 70 to 530 lines."""
    done = _run_refused(tmp_path, "--port", str(free_port()), **env)
    assert done.returncode in (1, 2), done.stderr[-3000:]
    line = _last_line(done.stderr)
    assert line.startswith(said), line
    assert "s3cr3t-pw" not in done.stderr + done.stdout and "ketenhub is running" not in done.stdout
