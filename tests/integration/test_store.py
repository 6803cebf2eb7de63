"""The store on SQLite and PostgreSQL: migrations, transactions, the append-only audit log."""

from __future__ import annotations

import pytest
from sqlalchemy import delete, func, select, update
from sqlalchemy.exc import DBAPIError

from hub.audit import AuditEntry, write_audit
from hub.store import Store
from hub.store.tables import audit_log, inbox, outbox

pytestmark = pytest.mark.integration


async def test_migrations_create_the_spine_and_are_idempotent(store: Store) -> None:
    await store.migrate()  # a second run changes nothing and does not fail
    async with store.connect() as conn:
        for table in (inbox, outbox, audit_log):
            assert (await conn.execute(select(func.count()).select_from(table))).scalar_one() == 0


async def test_a_failed_transaction_leaves_nothing(store: Store) -> None:
    with pytest.raises(RuntimeError):
        async with store.transaction() as session:
            await write_audit(session, AuditEntry(action="x", user="u"), transaction_id="t", system="test")
            raise RuntimeError("boom")
    async with store.connect() as conn:
        assert (await conn.execute(select(func.count()).select_from(audit_log))).scalar_one() == 0


async def test_audit_log_is_append_only(store: Store) -> None:
    async with store.transaction() as session:
        await write_audit(
            session,
            AuditEntry(action="referral.read", user="op", youth_key="k" * 64, objects={"referral": "r1"}),
            transaction_id="tx-1",
            system="test",
        )
    for statement in (update(audit_log).values(user="someone else"), delete(audit_log)):
        with pytest.raises(DBAPIError, match="append-only"):
            async with store.transaction() as session:
                await session.execute(statement)
    async with store.connect() as conn:
        row = (await conn.execute(select(audit_log))).one()
    assert (row.user, row.transaction_id, row.objects) == ("op", "tx-1", {"referral": "r1"})
