"""Serving an ASGI app over real HTTP on a free loopback port, for the duration of a test."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import uvicorn

from tests.helpers.kafka import wait_for


@asynccontextmanager
async def serving(app: Any) -> AsyncIterator[int]:
    """Run `app` on uvicorn in this event loop; yields its port, stops it afterwards."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    server = uvicorn.Server(
        uvicorn.Config(app, port=port, log_level="warning", log_config=None, lifespan="off")
    )
    task = asyncio.create_task(server.serve())
    await wait_for(lambda: server.started)
    try:
        yield port
    finally:
        server.should_exit = True
        with contextlib.suppress(Exception):
            await asyncio.wait_for(task, 5)
