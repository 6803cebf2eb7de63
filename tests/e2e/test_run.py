"""`ketenhub run` as a user starts it: ready, serving, and gone cleanly with its broker."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from hub.embedded import free_port

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
        out, err = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err[-2000:]
    assert f"http://127.0.0.1:{port}/readyz" in out
    assert "sqlite+aiosqlite:///./ketenhub.db" in out
    assert (tmp_path / "ketenhub.db").exists()
    assert not any(_alive(b) for b in brokers), "embedded broker left running"


def test_killed_hub_takes_its_broker_along(tmp_path: Path) -> None:
    port = free_port()
    proc = _start(tmp_path, port)
    try:
        _wait_ready(port, proc)
        brokers = _children(proc.pid)
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
