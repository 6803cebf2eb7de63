"""A TCP proxy on loopback that can be cut and restored: the broker "unreachable" for the chaos tests."""

from __future__ import annotations

import asyncio
import contextlib

from hub.embedded import free_port


class CuttableProxy:
    """Forwards 127.0.0.1:`port` to `target_port`; `cut()` drops every connection and refuses new ones."""

    def __init__(self, target_port: int, port: int | None = None) -> None:
        self.target_port = target_port
        self.port = port or free_port()
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._lose_commit_after: bytes | None = None
        self.commits_lost = 0

    def lose_commit_answer(self, after: bytes) -> None:
        """PostgreSQL through the proxy: on the next connection that sends `after` (a statement's
        text), let its COMMIT through and drop the connection once the server answered it, so the
        server kept the transaction and the client never hears so. Once."""
        self._lose_commit_after = after

    async def start(self) -> None:
        """Listen (again)."""
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)

    async def cut(self) -> None:
        """Stop listening and close every open connection, as a lost network would."""
        if self._server is not None:
            self._server.close()
            for writer in list(self._writers):
                writer.transport.abort()
            await self._server.wait_closed()
            self._server = None
        self._writers.clear()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            writer.transport.abort()
            return
        self._writers |= {writer, up_writer}
        marked, committing = False, False

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter, upstream: bool) -> None:
            nonlocal marked, committing
            with contextlib.suppress(Exception):
                while data := await src.read(65536):
                    if upstream and self._lose_commit_after is not None:
                        marked = marked or self._lose_commit_after in data
                        if marked and b"COMMIT" in data:
                            committing, self._lose_commit_after = True, None
                    elif not upstream and committing:  # the server's answer to the COMMIT: lost
                        self.commits_lost += 1
                        writer.transport.abort()
                        up_writer.transport.abort()
                        return
                    dst.write(data)
                    await dst.drain()
            dst.transport.abort()

        await asyncio.gather(pipe(reader, up_writer, True), pipe(up_reader, writer, False))
        self._writers -= {writer, up_writer}
