"""PostgreSQL: the outcomes of a round's deliveries recorded as they come, in as few transactions.

Each delivery ends on its own time, and its outcome should be recorded at once: a transaction per
delivery would cost more than the lease that took it in hand. So the first outcome to come is
recorded at once, and those that come while a transaction records are recorded together in the next.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

Outcome = tuple[Any, Exception | None]  # (the parked row as taken, None when delivered or the error)


class Batches:
    """One round's recorder: `record` returns once the outcome is written (or raises what writing it
    raised); `write` takes every outcome waiting, in one transaction. Closed (`aclose`), it writes
    nothing more: what waits is cancelled, and stays in its lease's hands."""

    def __init__(self, write: Callable[[Sequence[Outcome]], Awaitable[None]]) -> None:
        self._write = write
        self._waiting: list[tuple[Outcome, asyncio.Future[None]]] = []
        self._writer: asyncio.Task[None] | None = None
        self._closed = False

    async def record(self, row: Any, outcome: Exception | None) -> None:
        """Record one outcome, with whatever others wait beside it."""
        if self._closed:
            raise RuntimeError("the round's recorder is closed")
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiting.append(((row, outcome), done))
        if self._writer is None:
            self._writer = asyncio.create_task(self._drain())
        await done

    async def _drain(self) -> None:
        try:
            while self._waiting:
                batch, self._waiting = self._waiting, []
                outcomes = [outcome for outcome, done in batch if not done.done()]  # not its cancelled
                try:
                    if outcomes:
                        await self._write(outcomes)
                except Exception as exc:
                    for _, done in batch:
                        if not done.done():
                            done.set_exception(exc)
                except BaseException:  # its cancellation: nobody is left waiting
                    for _, done in batch:
                        done.cancel()
                    raise
                else:
                    for _, done in batch:
                        if not done.done():
                            done.set_result(None)
        finally:
            self._writer = None
            self._cancel_waiting()  # came after a cancellation: not written

    def _cancel_waiting(self) -> None:
        waiting, self._waiting = self._waiting, []
        for _, done in waiting:
            done.cancel()

    async def aclose(self) -> None:
        """The round ended, or was cancelled (the hub stopping): a write under way is cancelled and
        waited for (its transaction rolled back before the store closes); what is not written stays
        in its lease's hands, and is due again when the lease ends."""
        self._closed = True
        if self._writer is not None:
            writer = self._writer
            writer.cancel()
            await asyncio.wait({writer})
        self._cancel_waiting()  # a writer cancelled before it began left them
