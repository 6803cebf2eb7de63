"""A round's recorder (hub/retry/batches.py): outcomes that come while one transaction writes go
together in the next; closed, it leaves nobody waiting and writes nothing more."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import pytest

from hub.retry.batches import Batches, Grouped, Outcome


class Writes:
    """The store's side: each write waits for `go`, so that outcomes pile up behind it."""

    def __init__(self) -> None:
        self.written: list[list[Any]] = []
        self.go = asyncio.Event()
        self.fail: Exception | None = None

    async def __call__(self, outcomes: Sequence[Outcome]) -> None:
        await self.go.wait()
        if self.fail is not None:
            raise self.fail
        self.written.append([row for row, _ in outcomes])


async def test_outcomes_that_come_while_one_is_written_go_together_in_the_next() -> None:
    writes = Writes()
    batches = Batches(writes)
    first = asyncio.create_task(batches.record("a", None))
    await asyncio.sleep(0)
    rest = [asyncio.create_task(batches.record(row, None)) for row in ("b", "c")]
    await asyncio.sleep(0)
    writes.go.set()
    await asyncio.wait_for(asyncio.gather(first, *rest), 5)
    assert writes.written == [["a"], ["b", "c"]]


async def test_a_failed_write_reaches_every_caller_in_it() -> None:
    writes = Writes()
    writes.fail = OSError("the store is gone")
    batches = Batches(writes)
    calls = [asyncio.create_task(batches.record(row, None)) for row in ("a", "b")]
    await asyncio.sleep(0)
    writes.go.set()
    results = await asyncio.wait_for(asyncio.gather(*calls, return_exceptions=True), 5)
    assert [type(r) for r in results] == [OSError, OSError]


async def test_closed_before_its_writer_began_it_leaves_nobody_waiting() -> None:
    """A writer cancelled before it ran never reached its `finally`: its caller waited for ever."""
    writes = Writes()
    batches = Batches(writes)
    waiting = asyncio.create_task(batches.record("a", None))
    await asyncio.sleep(0)  # the caller waits; its writer is made, not yet run
    await batches.aclose()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(waiting, 5)
    assert writes.written == []


async def test_closed_it_takes_no_more_outcomes_and_writes_none_of_the_cancelled() -> None:
    """An outcome that came while it closed started a writer nobody closed, which wrote again the
    outcomes of callers already cancelled."""
    writes = Writes()
    batches = Batches(writes)
    first = asyncio.create_task(batches.record("a", None))
    await asyncio.sleep(0)
    behind = asyncio.create_task(batches.record("b", None))
    await asyncio.sleep(0)
    behind.cancel()  # its round was cancelled while it waited
    await asyncio.sleep(0)
    writes.go.set()
    await asyncio.wait_for(first, 5)
    await batches.aclose()
    with pytest.raises(RuntimeError, match="closed"):
        await batches.record("c", None)
    assert writes.written == [["a"]]


async def test_a_write_that_answers_too_few_results_fails_every_waiter_rather_than_leaving_one() -> None:
    """A write answering fewer results than it was given items left the ones past its end waiting for
    ever (their round, and the ladder's scheduler with it, never ended)."""

    async def short(items: Sequence[int]) -> list[str]:
        return ["taken"] * (len(items) - 1)

    grouped: Grouped[int, str] = Grouped(short)
    asked = [asyncio.create_task(grouped.submit(n)) for n in (1, 2)]
    done, pending = await asyncio.wait(asked, timeout=5)
    assert pending == set()
    for task in done:
        with pytest.raises(RuntimeError, match="1 results written for 2 items"):
            task.result()
