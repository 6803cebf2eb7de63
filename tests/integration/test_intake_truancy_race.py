"""Rule 5 when two first truancy referrals for one youth are taken in at the same moment."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import text

from hub.intake.config import load_intake_rules
from hub.intake.service import IntakeService, Origin
from hub.spine.consumer import transient
from hub.store import Store, store_failed
from hub.store.locks import lock_key
from schemas.referral import Referral
from tests.helpers.kafka import wait_for
from tests.helpers.pg import WAITING_FOR_ADVISORY

pytestmark = pytest.mark.integration
BSN, OTHER_BSN = "111222333", "123456782"


def truancy(case_reference: str, bsn: str = BSN) -> Referral:
    return Referral.model_validate(
        {
            "referrer": {"type": "LEERPLICHT", "organisation": "Leerplicht Den Haag"},
            "case_reference": case_reference,
            "youth": {
                "bsn": bsn, "given_names": "Sem", "surname": "Berg", "birth_date": "2011-09-05",
                "municipality": "Den Haag",
            },
            "track": "HALT_SCHOOLVERZUIM",
            "truancy": {
                "period_start": "2025-01-06", "period_end": "2025-02-14", "hours": 16, "times_late": 0,
            },
            "youth_agreed": True,
        }
    )  # fmt: skip


def origin(referrer: str) -> Origin:
    return Origin(referrer_key=referrer, channel="http", transaction_id="tx", system="test", user="test")


@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)
async def test_of_two_first_truancy_referrals_at_once_the_second_needs_the_ovj(store: Store) -> None:
    """Two leerplicht partners refer the same youth at the same moment. Each transaction used to count
    no earlier truancy referral and accept its own: two "first" referrals, where rule 5 wants the
    second refused without the OvJ's approval."""
    service = IntakeService(secret="s" * 32, rules=load_intake_rules(), decided_topic="decided")
    async with store.transaction() as first:
        one = await service.take_in(first, truancy("LP-A-1"), origin("partner:leerplicht-a"))

        async def other() -> bool:
            async with store.transaction() as second:
                two = await service.take_in(second, truancy("LP-B-1"), origin("partner:leerplicht-b"))
            return two.decision.accepted

        racing = asyncio.create_task(other())

        async def waiting_or_done() -> bool:  # the second waits for the first's youth, or got through
            if racing.done():
                return True
            async with store.connect() as conn:
                waits = await conn.execute(WAITING_FOR_ADVISORY)
                return bool(waits.scalar_one())

        await wait_for(waiting_or_done, timeout_s=20)
    assert one.decision.accepted
    assert await racing is False  # counted the first one: SCHOOLVERZUIM_HERHAALD


@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)
async def test_a_deadlock_between_two_intakes_is_one_to_try_again(store: Store) -> None:
    """A Kafka poll takes its youths' locks record by record; a CSV upload takes them sorted. When
    they cross, PostgreSQL ends one transaction: that one is to be tried again (503 for HTTP, the
    batch again for Kafka), not a 500 nor a dead letter."""
    service = IntakeService(secret="s" * 32, rules=load_intake_rules(), decided_topic="decided")
    # in the order the case locks are taken (by the youths' buckets); in two buckets, not one
    low, high = sorted((BSN, OTHER_BSN), key=lambda bsn: lock_key(service.youth_key(bsn)))
    assert lock_key(service.youth_key(low)) != lock_key(service.youth_key(high))
    failures: list[BaseException] = []

    async def kafka_poll() -> None:
        async with store.transaction() as session:
            await service.take_in(session, truancy("K-1", high), origin("kafka:leerplicht"))  # holds high
            csv_waiting.set()
            await csv_blocked.wait()
            await service.take_in(session, truancy("K-2", low), origin("kafka:leerplicht"))  # wants low

    async def csv_upload() -> None:
        await csv_waiting.wait()
        async with store.transaction() as session:  # low, then high: waits for the poll
            batch = [truancy("C-1", low), truancy("C-2", high)]
            await service.take_in_many(session, batch, origin("partner:leerplicht-a"))

    async def blocked() -> bool:
        async with store.connect() as conn:
            return bool((await conn.execute(WAITING_FOR_ADVISORY)).scalar_one())

    csv_waiting, csv_blocked = asyncio.Event(), asyncio.Event()
    tasks = [asyncio.create_task(kafka_poll()), asyncio.create_task(csv_upload())]
    await wait_for(blocked, timeout_s=20)
    csv_blocked.set()
    for outcome in await asyncio.gather(*tasks, return_exceptions=True):
        if isinstance(outcome, BaseException):
            failures.append(outcome)
    assert len(failures) == 1, failures  # PostgreSQL broke the deadlock by ending one of them
    assert store_failed(failures[0]) and transient(failures[0]), repr(failures[0])


@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)
async def test_a_broken_deadlock_answers_503_and_another_database_error_500(store: Store) -> None:
    """The API's answer to PostgreSQL's own errors, raised by a real server: a deadlock it broke is
    worth trying again (503, Retry-After); a statement that can never succeed is the hub's fault."""
    import httpx
    from fastapi import FastAPI

    from hub.api.problems import install_problem_handlers

    app = FastAPI()
    install_problem_handlers(app)

    @app.get("/deadlock")
    async def deadlock() -> None:
        async with store.transaction() as session:
            await session.execute(text("DO $$ BEGIN RAISE EXCEPTION USING ERRCODE = '40P01'; END $$"))

    @app.get("/broken")
    async def broken() -> None:
        async with store.transaction() as session:
            await session.execute(text("DO $$ BEGIN RAISE EXCEPTION USING ERRCODE = '22012'; END $$"))

    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://hub") as client:
        again = await client.get("/deadlock")
        assert again.status_code == 503 and again.headers["Retry-After"], again.text
        assert (await client.get("/broken")).status_code == 500
