"""Run the Verwijsindex simulator over real HTTP in a background thread (tests, embedded default)."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
from types import TracebackType

import uvicorn

from connectors.verwijsindex.sim_state import SimulatorState
from connectors.verwijsindex.simulator import create_simulator


class _Server(uvicorn.Server):
    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        self.ready = threading.Event()
        self.loop: asyncio.AbstractEventLoop | None = None

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        self.loop = asyncio.get_running_loop()
        try:
            await super().startup(sockets)
        finally:
            self.ready.set()


class SimulatorServer:
    """A simulator served by uvicorn on `host` (a free port unless given); use as a context manager."""

    def __init__(
        self,
        state: SimulatorState | None = None,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        startup_timeout: float = 10.0,
    ) -> None:
        self.state = state if state is not None else SimulatorState()
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        # Accepted connections inherit it: without it every answer waited ~40 ms for a delayed ACK
        # (Nagle), because asyncio sets TCP_NODELAY only on sockets it knows to be TCP.
        self._sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._sock.bind((host, port))
        self.host, self.port = self._sock.getsockname()[:2]
        # log_config None: uvicorn's own logging set-up would give its loggers a handler of their own,
        # and the hub's lines (it runs in the hub's process) would pass by its redacting handler
        config = uvicorn.Config(
            create_simulator(self.state),
            log_level="warning",
            log_config=None,
            lifespan="on",
            timeout_graceful_shutdown=2,
        )
        self._server = _Server(config)
        self._thread = threading.Thread(target=self._run, name="verwijsindex-simulator", daemon=True)
        self._startup_timeout = startup_timeout

    @property
    def url(self) -> str:
        """Base URL of the running simulator."""
        return f"http://{self.host}:{self.port}"

    def _run(self) -> None:
        self._server.run(sockets=[self._sock])

    def start(self) -> str:
        """Start serving and wait until the server accepts connections; returns the base URL."""
        self._thread.start()
        if not self._server.ready.wait(self._startup_timeout) or not self._server.started:
            raise RuntimeError("verwijsindex simulator did not start")
        return self.url

    def stop(self) -> None:
        """Release hanging calls, shut down, and wait for the thread."""
        loop = self._server.loop
        if loop is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):  # the loop may close between check and call
                loop.call_soon_threadsafe(self.state.faults.release_hangs)
        self._server.should_exit = True
        self._thread.join(timeout=10)
        self._sock.close()

    def __enter__(self) -> SimulatorServer:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
