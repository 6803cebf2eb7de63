"""Group commit for HTTP intake, on both stores: shared transactions, a failure alone, a clean stop."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Sequence
from typing import Any

import pytest
from sqlalchemy import func, select
from sqlalchemy.exc import OperationalError
from sqlalchemy.ext.asyncio import AsyncSession

from connectors import politie
from hub.embedded import EmbeddedKafka
from hub.intake.batcher import BatcherClosed, IntakeBatcher
from hub.intake.component import batcher_of
from hub.intake.config import load_intake_rules
from hub.intake.service import IntakeResult, IntakeService, Origin
from hub.intake.tables import referrals
from hub.store import Store, store_failed
from hub.store.tables import audit_log, outbox
from schemas.referral import Referral
from tests.conftest import TEST_SECRET, make_settings
from tests.integration.test_intake_http import intake_api, politie_variant

pytestmark = pytest.mark.integration


def origin(tx: str, referrer: str = "partner:p1") -> Origin:
    return Origin(referrer, "http", tx, "ketenhub-api", user="politie-test", partner_id=referrer[8:])


class FailingFor(IntakeService):
    """The real service, made to fail for batches holding one case reference (a fault of our own)."""

    def __init__(self, poison: str) -> None:
        super().__init__(secret=TEST_SECRET, rules=load_intake_rules(), decided_topic="t.decided")
        self.poison = poison
        self.batch_sizes: list[int] = []

    async def take_in_many(
        self,
        session: AsyncSession,
        items: Sequence[Referral],
        origin: Origin,
        *,
        transaction_ids: Sequence[str] | None = None,
    ) -> list[IntakeResult]:
        self.batch_sizes.append(len(items))
        results = await super().take_in_many(session, items, origin, transaction_ids=transaction_ids)
        if any(r.case_reference == self.poison for r in items):
            raise ValueError("this referral cannot be stored")  # after its rows were written
        return results


async def count(store: Store, table: object, *where: object) -> int:
    async with store.connect() as conn:
        query = select(func.count()).select_from(table).where(*where)  # type: ignore[arg-type]
        return int((await conn.execute(query)).scalar_one())


async def test_concurrent_requests_share_transactions_and_each_gets_its_own_answer(store: Store) -> None:
    service = FailingFor(poison="none")
    batcher = IntakeBatcher(store, service)
    items = [politie.parse(politie_variant(n)) for n in range(60)]
    items.append(politie.parse(politie_variant(7)))  # a repeat of the 8th, in the same burst
    try:
        answers = await asyncio.gather(*(batcher.take_in(r, origin(f"tx-{i}")) for i, r in enumerate(items)))
    finally:
        await batcher.aclose()
    assert batcher.batches < len(items)  # shared: fewer transactions than requests
    assert max(service.batch_sizes) > 1
    assert [a.duplicate for a in answers] == [False] * 60 + [True]
    assert answers[-1].referral_id == answers[7].referral_id  # the repeat gets the first decision
    assert len({a.referral_id for a in answers[:60]}) == 60
    assert await count(store, referrals) == 60
    # Each request kept its own transaction id (rule 19) in the store and the audit log.
    async with store.connect() as conn:
        stored = dict((await conn.execute(select(referrals.c.id, referrals.c.transaction_id))).all())
        audited = {t for (t,) in await conn.execute(select(audit_log.c.transaction_id))}
    assert stored[answers[0].referral_id] == "tx-0" and stored[answers[59].referral_id] == "tx-59"
    assert {f"tx-{i}" for i in range(61)} <= audited


async def test_a_request_that_fails_fails_alone_and_leaves_nothing_behind(store: Store) -> None:
    service = FailingFor(poison=politie.parse(politie_variant(3)).case_reference)
    batcher = IntakeBatcher(store, service)
    items = [politie.parse(politie_variant(n)) for n in range(20)]
    try:
        answers = await asyncio.gather(
            *(batcher.take_in(r, origin(f"tx-{i}")) for i, r in enumerate(items)), return_exceptions=True
        )
    finally:
        await batcher.aclose()
    failed = [i for i, a in enumerate(answers) if isinstance(a, BaseException)]
    assert failed == [3]
    assert isinstance(answers[3], ValueError)
    assert await count(store, referrals) == 19  # the failed one's rows were rolled back
    assert await count(store, referrals, referrals.c.case_reference == items[3].case_reference) == 0
    assert await count(store, outbox) == 19  # one decision announced per stored referral


class StoreDown(IntakeService):
    """The real service over a store that fails (down, or locked past its timeout) for every batch."""

    def __init__(self) -> None:
        super().__init__(secret=TEST_SECRET, rules=load_intake_rules(), decided_topic="t.decided")
        self.tried = 0

    async def take_in_many(self, *args: Any, **kwargs: Any) -> list[IntakeResult]:
        self.tried += 1
        raise OperationalError("INSERT INTO referrals", {}, sqlite3.OperationalError("database is locked"))


async def test_a_store_that_fails_fails_the_batch_at_once_not_each_request_after_another(
    store: Store,
) -> None:
    """Each request taken in alone would fail the same way, each after the same wait (a busy timeout
    of 30 s, a connection timeout of 60 s): the last of 200 was answered after hours, and every new
    request queued behind them, where the partner should get a 503 with Retry-After now."""
    service = StoreDown()
    batcher = IntakeBatcher(store, service)
    items = [politie.parse(politie_variant(n)) for n in range(20)]
    try:
        answers = await asyncio.gather(
            *(batcher.take_in(r, origin(f"tx-{i}")) for i, r in enumerate(items)), return_exceptions=True
        )
    finally:
        await batcher.aclose()
    assert all(isinstance(a, OperationalError) and store_failed(a) for a in answers), answers
    assert service.tried < len(items)  # one try per batch, none request by request (it tried 1 + 20)


async def test_requests_from_different_partners_are_deduplicated_per_partner(store: Store) -> None:
    batcher = IntakeBatcher(store, FailingFor(poison="none"))
    same = politie.parse(politie_variant(1))
    try:
        a, b = await asyncio.gather(
            batcher.take_in(same, origin("tx-a", "partner:p1")),
            batcher.take_in(same, origin("tx-b", "partner:p2")),
        )
    finally:
        await batcher.aclose()
    assert not a.duplicate and not b.duplicate  # rule 7: a repeat is per referrer
    assert a.referral_id != b.referral_id


async def test_a_stopping_hub_takes_in_what_is_queued_and_refuses_the_rest_with_503(
    kafka: EmbeddedKafka, db_url: str, unique: str
) -> None:
    async with intake_api(make_settings(kafka, db_url, unique)) as api:
        batcher = batcher_of(api.hub)
        queued = [
            asyncio.create_task(batcher.take_in(politie.parse(politie_variant(n)), origin("t")))
            for n in range(5)
        ]
        await asyncio.sleep(0)  # queued before the stop begins
        await batcher.aclose()
        assert all(not t.result().duplicate for t in queued)  # nothing queued was dropped
        with pytest.raises(BatcherClosed):
            await batcher.take_in(politie.parse(politie_variant(9)), origin("t"))
        response = await api.client.post(
            "/api/v1/politie/verwijzingen",
            content=politie_variant(10),
            headers={"Content-Type": "application/json", **api.auth("politie")},
        )
        assert response.status_code == 503
        assert response.headers["Retry-After"] == "5"
        assert response.headers["content-type"] == "application/problem+json"
        assert await api.count() == 5


async def test_a_store_that_never_answers_fails_the_batch_after_one_connect_timeout() -> None:
    """A PostgreSQL server that accepts and never answers (hung, behind a frozen proxy): a connect
    timed out after asyncpg's 60 s, a built-in TimeoutError the batcher did not take for the store's
    failure, so it took the batch's requests in one after another, a minute each: the last of 200
    was answered after hours. Each connect now gives up after the store's timeout, and a timeout fails
    the batch at once: a handful of connects, not one a request."""
    accepted: list[asyncio.StreamWriter] = []

    async def never_answer(_reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.append(writer)

    server = await asyncio.start_server(never_answer, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    store = Store(f"postgresql+asyncpg://hub@127.0.0.1:{port}/test", connect_timeout_s=0.5)
    batcher = IntakeBatcher(store, FailingFor(poison="none"))
    items = [politie.parse(politie_variant(n)) for n in range(20)]
    try:
        answers = await asyncio.gather(
            *(batcher.take_in(r, origin(f"tx-{i}")) for i, r in enumerate(items)), return_exceptions=True
        )
    finally:
        await batcher.aclose()
        await store.close()
        server.close()
        for writer in accepted:
            writer.close()
    assert all(isinstance(a, TimeoutError) for a in answers), answers
    assert 1 <= len(accepted) < 5  # one connect a batch (it tried 1 + 20, a minute each)
