"""PostgreSQL: a round's statements gathered as they come, in as few round trips.

Each delivery of a round is taken in hand and ends on its own time; a statement for each would cost
more than the call. So the first request goes at once, and those that come while it is under way go
together in the next (`Grouped`): a round's claims in one statement, the outcomes that ended
together in one transaction (`Batches`); and a round's rows taken in hand wave by wave (`Waves`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Generic, TypeVar

Outcome = tuple[Any, Exception | None]  # (the parked row as taken, None when delivered or the error)
T = TypeVar("T")
R = TypeVar("R")


class Grouped(Generic[T, R]):
    """`submit` returns an item's result once it is written (or raises what writing it raised);
    `write` takes every item waiting, and answers one result for each, in their order. Closed
    (`aclose`), it writes nothing more: what waits is cancelled."""

    def __init__(self, write: Callable[[Sequence[T]], Awaitable[Sequence[R]]]) -> None:
        self._write = write
        self._waiting: list[tuple[T, asyncio.Future[R]]] = []
        self._writer: asyncio.Task[None] | None = None
        self._closed = False

    async def submit(self, item: T) -> R:
        """Write one item, with whatever others wait beside it; its result."""
        if self._closed:
            raise RuntimeError("the round's claims or records are closed")
        done: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        self._waiting.append((item, done))
        if self._writer is None:
            self._writer = asyncio.create_task(self._drain())
        return await done

    async def _drain(self) -> None:
        try:
            while self._waiting:
                batch, self._waiting = self._waiting, []
                batch = [(item, done) for item, done in batch if not done.done()]  # not its cancelled
                try:
                    results = await self._write([item for item, _ in batch]) if batch else []
                    if len(results) != len(batch):  # nobody may be left waiting for a result
                        raise RuntimeError(f"{len(results)} results written for {len(batch)} items")
                except Exception as exc:
                    for _, done in batch:
                        if not done.done():
                            done.set_exception(exc)
                except BaseException:  # its cancellation: nobody is left waiting
                    for _, done in batch:
                        done.cancel()
                    raise
                else:
                    for (_, done), result in zip(batch, results, strict=True):
                        if not done.done():
                            done.set_result(result)
        finally:
            self._writer = None
            self._cancel_waiting()  # came after a cancellation: not written

    def _cancel_waiting(self) -> None:
        waiting, self._waiting = self._waiting, []
        for _, done in waiting:
            done.cancel()

    async def aclose(self) -> None:
        """The round ended, or was cancelled (the hub stopping): a write under way is cancelled and
        waited for (its transaction rolled back before the store closes); what is not written is
        cancelled."""
        self._closed = True
        if self._writer is not None:
            writer = self._writer
            writer.cancel()
            await asyncio.wait({writer})
        self._cancel_waiting()  # a writer cancelled before it began left them


class Batches(Grouped[Outcome, None]):
    """One round's recorder: the outcomes that came together in one transaction. Closed, what is not
    written stays in its lease's hands, and is due again when the lease ends."""

    def __init__(self, write: Callable[[Sequence[Outcome]], Awaitable[None]]) -> None:
        async def written(outcomes: Sequence[Outcome]) -> list[None]:
            await write(outcomes)
            return [None] * len(outcomes)

        super().__init__(written)

    async def record(self, row: Any, outcome: Exception | None) -> None:
        """Record one outcome, with whatever others wait beside it."""
        await self.submit((row, outcome))


class Waves:
    """PostgreSQL: a round's rows taken in hand wave by wave, `size` rows at a time: the first at
    once, the next when every row of the one before has its slot for the call (or has ended). A few
    claim statements a round, not one a slot; and no more in hand, waiting, than a wave and the calls
    under way: other processes take the rest of what is due, and a killed process holds back only
    that much until its leases end."""

    def __init__(self, rows: int, size: int) -> None:
        self.size = max(1, size)
        count = -(-rows // self.size)
        self._gates = [asyncio.Event() for _ in range(count)]
        self._left = [min(self.size, rows - k * self.size) for k in range(count)]
        if self._gates:
            self._gates[0].set()

    def of(self, row: int) -> Wave:
        """The wave of the round's `row`-th row."""
        return Wave(self, row // self.size)

    def _started(self, k: int) -> None:
        self._left[k] -= 1
        if self._left[k] == 0 and k + 1 < len(self._gates):
            self._gates[k + 1].set()


class Wave:
    """One row's place in its round's `Waves`: `turn` waits for its wave, `started` (once) says the
    row has its slot, or has ended."""

    def __init__(self, waves: Waves, k: int) -> None:
        self._waves, self._k, self._started = waves, k, False

    async def turn(self) -> None:
        await self._waves._gates[self._k].wait()

    def started(self) -> None:
        if not self._started:
            self._started = True
            self._waves._started(self._k)
