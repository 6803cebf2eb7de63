"""Rule 5 when two first truancy referrals for one youth are taken in at the same moment."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import text

from hub.intake.config import load_intake_rules
from hub.intake.service import IntakeService, Origin
from hub.store import Store
from schemas.referral import Referral
from tests.helpers.kafka import wait_for

pytestmark = pytest.mark.integration
BSN = "111222333"


def truancy(case_reference: str) -> Referral:
    return Referral.model_validate(
        {
            "referrer": {"type": "LEERPLICHT", "organisation": "Leerplicht Den Haag"},
            "case_reference": case_reference,
            "youth": {
                "bsn": BSN, "given_names": "Sem", "surname": "Berg", "birth_date": "2011-09-05",
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
                waits = await conn.execute(
                    text("SELECT count(*) FROM pg_stat_activity WHERE wait_event = 'advisory'")
                )
                return bool(waits.scalar_one())

        await wait_for(waiting_or_done, timeout_s=20)
    assert one.decision.accepted
    assert await racing is False  # counted the first one: SCHOOLVERZUIM_HERHAALD
