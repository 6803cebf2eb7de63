"""Group commit for HTTP intake: concurrent requests share one write transaction.

Every HTTP referral used to take the store's write lock for a transaction of its own, so requests
queued on the lock one by one (SQLite has a single writer; on PostgreSQL each request paid its own
round trips and commit). The batcher takes whatever requests are waiting when the writer is free
and decides, stores, audits and announces them with `IntakeService.take_in_many` in one
transaction. An idle hub answers a lone request at once: nothing waits for a batch to fill.

A request gets its answer only after the transaction that holds it committed. When a batch fails,
its requests are taken in again one by one, each in its own transaction, so one bad request
fails alone, with its own error.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field, replace

from hub.intake.service import IntakeResult, IntakeService, Origin
from hub.logging import get_logger
from hub.store import Store, store_failed
from schemas.referral import Referral

log = get_logger(__name__)


class BatcherClosed(RuntimeError):
    """The hub is stopping: the request was not taken in (nothing of it was stored)."""


@dataclass
class _Request:
    referral: Referral
    origin: Origin
    answer: asyncio.Future[IntakeResult] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )


class IntakeBatcher:
    """Queues referrals from concurrent requests and takes them in together, `max_batch` at most."""

    def __init__(self, store: Store, service: IntakeService, *, max_batch: int = 200) -> None:
        self.store, self.service, self.max_batch = store, service, max_batch
        self._queue: asyncio.Queue[_Request | None] = asyncio.Queue()
        self._worker: asyncio.Task[None] | None = None
        self._closed = False
        self.batches = 0  # transactions committed, for tests and metrics

    async def take_in(self, referral: Referral, origin: Origin) -> IntakeResult:
        """Decide and store `referral`; returns once its transaction committed."""
        if self._closed:
            raise BatcherClosed("the hub is stopping; send the referral again shortly")
        if self._worker is None or self._worker.done():
            self._worker = asyncio.create_task(self._run(), name="intake-batcher")
        request = _Request(referral, origin)
        self._queue.put_nowait(request)
        # A client that goes away does not cancel the work: the referral is still taken in, and a
        # repeat of it is answered with the first decision (rule 7).
        return await asyncio.shield(request.answer)

    async def _run(self) -> None:
        batch: list[_Request] = []
        try:
            while (first := await self._queue.get()) is not None:
                batch = [first]
                while len(batch) < self.max_batch and not self._queue.empty():
                    nxt = self._queue.get_nowait()
                    if nxt is None:  # closing: this batch is the last
                        self._queue.put_nowait(None)
                        break
                    batch.append(nxt)
                await self._take_in(batch)
                batch = []
        finally:  # cancelled mid-batch: its transaction rolled back, so its requests fail, not hang
            for request in batch:
                _fail(request, BatcherClosed("the hub stopped before the referral was stored"))

    async def _take_in(self, batch: list[_Request]) -> None:
        try:
            results = await self._in_one_transaction(batch)
        except Exception as exc:
            # The store failing (down, locked past its timeout, a connection refused or timed out:
            # the batch's work is the store's and the rules', so an OSError is the store's) fails each
            # alone the same way, each after the same wait: the requests are answered now (503,
            # Retry-After), not one by one.
            if len(batch) == 1 or store_failed(exc) or isinstance(exc, OSError | TimeoutError):
                for request in batch:
                    _fail(request, exc)
                return
            log.warning("intake batch failed; taking its requests in one by one", size=len(batch))
            for request in batch:
                try:
                    [result] = await self._in_one_transaction([request])
                except Exception as one:
                    _fail(request, one)
                else:
                    _answer(request, result)
            return
        for request, result in zip(batch, results, strict=True):
            _answer(request, result)

    async def _in_one_transaction(self, batch: list[_Request]) -> list[IntakeResult]:
        """Group by referrer (the duplicate check is per referrer, rule 7) in one transaction."""
        groups: dict[Origin, list[int]] = {}
        for i, request in enumerate(batch):
            groups.setdefault(replace(request.origin, transaction_id=""), []).append(i)
        results: list[IntakeResult | None] = [None] * len(batch)
        async with self.store.transaction() as session:
            for origin, indexes in groups.items():
                answers = await self.service.take_in_many(
                    session,
                    [batch[i].referral for i in indexes],
                    origin,
                    transaction_ids=[batch[i].origin.transaction_id for i in indexes],
                )
                for i, answer in zip(indexes, answers, strict=True):
                    results[i] = answer
        self.batches += 1
        return [r for r in results if r is not None]

    async def aclose(self, timeout_s: float = 10.0) -> None:
        """Refuse new requests and take in those already queued; past `timeout_s`, fail the rest."""
        self._closed = True
        if self._worker is not None and not self._worker.done():
            self._queue.put_nowait(None)
            try:
                await asyncio.wait_for(asyncio.shield(self._worker), timeout_s)
            except (TimeoutError, Exception):
                self._worker.cancel()
                with contextlib.suppress(BaseException):
                    await self._worker
        while not self._queue.empty():
            request = self._queue.get_nowait()
            if request is not None:
                _fail(request, BatcherClosed("the hub stopped before taking the referral in"))


def _loop() -> asyncio.AbstractEventLoop:
    return asyncio.get_running_loop()


def _answer(request: _Request, result: IntakeResult) -> None:
    if not request.answer.done():
        request.answer.set_result(result)


def _fail(request: _Request, exc: BaseException) -> None:
    if not request.answer.done():
        request.answer.set_exception(exc)
