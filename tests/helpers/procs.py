"""`ketenhub run` as a real process for the chaos tests: started, made ready, killed with SIGKILL."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

from hub.embedded import free_port

KETENHUB = str(Path(sys.executable).with_name("ketenhub"))


class HubProcess:
    """One hub process with fixed settings; `start()` may be called again after `kill()`."""

    def __init__(self, workdir: Path, env: dict[str, str], components: str) -> None:
        self.workdir, self.components = workdir, components
        self.env = {**os.environ, **env}
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0
        self.kills = 0
        self.ready = asyncio.Event()  # set from `/readyz` answering 200 until it is killed or stopped
        self._log = (workdir / f"hub-{self.port}.log").open("ab")

    @property
    def url(self) -> str:
        """The process's HTTP address."""
        return f"http://127.0.0.1:{self.port}"

    async def start(self, ready_within_s: float = 60.0) -> None:
        """Start the process and wait until `/readyz` answers 200."""
        self.proc = subprocess.Popen(
            [KETENHUB, "run", "--port", str(self.port), "--components", self.components],
            cwd=self.workdir,
            env=self.env,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=self._log,
        )
        self.starts += 1
        deadline = time.monotonic() + ready_within_s
        async with httpx.AsyncClient(timeout=1.0) as client:
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    raise AssertionError(f"hub exited with {self.proc.returncode}: see {self._log.name}")
                with contextlib.suppress(httpx.HTTPError):
                    if (await client.get(self.url + "/readyz")).status_code == 200:
                        self.ready.set()
                        return
                await asyncio.sleep(0.05)
        raise AssertionError(f"hub not ready within {ready_within_s}s: see {self._log.name}")

    def kill(self) -> None:
        """SIGKILL, no clean-up of any kind."""
        self.ready.clear()
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)
            self.kills += 1

    async def stop(self) -> None:
        """SIGTERM and wait (the clean way), SIGKILL if it hangs."""
        self.ready.clear()
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.to_thread(self.proc.wait, 20)
            except subprocess.TimeoutExpired:
                self.kill()
        self._log.flush()

    def log_tail(self, chars: int = 3000) -> str:
        """The end of this process's output, for a failing assertion."""
        self._log.flush()
        return Path(self._log.name).read_text(errors="replace")[-chars:]


def from_a_shell(args: list[str], env: dict[str, str], **popen: Any) -> subprocess.Popen[str]:
    """A command started as a shell starts one: SIGINT heard (a background job of the test runner
    would inherit it ignored), its output read as text from pipes unless `popen` says otherwise."""
    options: dict[str, Any] = {"stdout": subprocess.PIPE, "stderr": subprocess.PIPE, "text": True} | popen
    return subprocess.Popen(
        args, env=env, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL), **options
    )
