"""The store on SQLite and PostgreSQL: migrations, transactions, the append-only audit log."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
from sqlalchemy import delete, func, insert, select, text, update
from sqlalchemy.exc import DBAPIError

from hub.audit import AuditEntry, write_audit
from hub.spine.consumer import transient
from hub.store import Store, commit_unknown, store_failed
from hub.store.tables import audit_log, inbox, outbox
from schemas.envelope import utcnow

pytestmark = pytest.mark.integration


async def test_migrations_create_the_spine_and_are_idempotent(store: Store) -> None:
    await store.migrate()  # a second run changes nothing and does not fail
    async with store.connect() as conn:
        for table in (inbox, outbox, audit_log):
            assert (await conn.execute(select(func.count()).select_from(table))).scalar_one() == 0


async def test_the_migrations_make_the_tables_the_code_declares(store: Store) -> None:
    """Every table, column and index the code uses exists as declared once migrated (a column added
    to a table definition without its migration works in nothing but a test's fresh schema)."""
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    import hub.app  # noqa: F401  (every component's tables)
    from hub.store.tables import metadata

    async with store.engine.connect() as conn:
        options = {"compare_type": True, "compare_server_default": True}
        diffs = await conn.run_sync(
            lambda c: compare_metadata(MigrationContext.configure(c, opts=options), metadata)
        )
    assert diffs == []


async def test_a_moment_is_stored_in_utc_and_read_back_with_its_offset(store: Store) -> None:
    """SQLite kept a moment's clock time and dropped its offset: 10:30+01:00 was stored as 10:30, read
    back naive (10:30 UTC to the hub), and compared as 10:30 in a query."""
    winter = timezone(timedelta(hours=1))
    at = datetime(2026, 3, 1, 10, 30, tzinfo=winter)
    async with store.transaction() as session:
        await session.execute(insert(inbox).values(consumer="c", message_id="m", processed_at=at))
    async with store.connect() as conn:
        back = (await conn.execute(select(inbox.c.processed_at))).scalar_one()
        assert back == at and back.utcoffset() == timedelta(0)
        # a bound in another offset is compared as the same instant
        assert (await conn.execute(select(inbox.c.message_id).where(inbox.c.processed_at < at))).all() == []
        later = datetime(2026, 3, 1, 10, 0, tzinfo=UTC)  # 09:30 UTC was stored: 10:00 UTC is after it
        assert (await conn.execute(select(inbox.c.message_id).where(inbox.c.processed_at < later))).all()


async def test_a_commit_is_on_disk_before_it_returns(store: Store) -> None:
    """With synchronous=NORMAL (WAL) a power cut could roll back commits the hub had acknowledged: a
    partner's 201, a Kafka offset committed after the effects."""
    async with store.connect() as conn:
        if store.engine.dialect.name == "postgresql":  # its default, which the hub relies on
            assert (await conn.exec_driver_sql("SHOW synchronous_commit")).scalar() == "on"
            return
        assert (await conn.exec_driver_sql("PRAGMA synchronous")).scalar() == 2  # FULL
        assert (await conn.exec_driver_sql("PRAGMA journal_mode")).scalar() == "wal"


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


async def test_the_police_referrals_stored_before_are_one_referrer_after_migrating(db_url: str) -> None:
    """Revision 0017: the police's referrals from the topic and over HTTP take one key; of a
    proces-verbaal stored over both channels (or by two police partners) the first keeps counting,
    the later copy keeps its old key, and nothing else changes."""
    from sqlalchemy import text

    from hub.store.db import migrate

    store = Store(db_url)
    try:
        await migrate(store.engine, "0002_intake")
        rows = [  # id, referrer key, case reference, referrer type
            ("r1", "kafka:politie", "PV-1", "POLITIE"),
            ("r2", "partner:p1", "PV-1", "POLITIE"),  # PV-1 again over HTTP: a copy
            ("r3", "partner:p1", "PV-2", "POLITIE"),
            ("r4", "partner:p2", "PV-2", "POLITIE"),  # PV-2 by a second police partner: a copy
            ("r5", "partner:b1", "PV-1", "BOA"),  # another referrer's own numbering
        ]
        async with store.engine.begin() as conn:
            for rid, key, ref, kind in rows:
                await conn.execute(
                    text(
                        "INSERT INTO referrals (id, referrer_key, case_reference, partner_id, referrer_type,"
                        " channel, youth_key, bsn, track, outcome, referral, decision, transaction_id,"
                        " received_at) VALUES (:id, :key, :ref, :partner, :kind, 'http', :youth, '111222333',"
                        " 'HALT_STRAF', 'ACCEPTED', '{}', '{}', 'tx', CURRENT_TIMESTAMP)"
                    ),
                    {
                        "id": rid,
                        "key": key,
                        "ref": ref,
                        "kind": kind,
                        "partner": key.removeprefix("partner:") if key.startswith("partner:") else None,
                        "youth": "a" * 64,
                    },
                )
        await store.migrate()
        async with store.connect() as conn:
            keys = dict((await conn.execute(text("SELECT id, referrer_key FROM referrals"))).all())
        assert keys == {
            "r1": "politie", "r2": "partner:p1", "r3": "politie", "r4": "partner:p2", "r5": "partner:b1",
        }  # fmt: skip
    finally:
        await store.close()


async def test_handovers_sent_but_never_confirmed_count_as_tried_after_migrating(db_url: str) -> None:
    """Revision 0018: a handover whose POST failed before the revision may be with its receiver; a
    withdrawal must reach that receiver too, so it counts as tried (`attempted_at = sent_at`)."""
    from datetime import UTC, datetime

    from sqlalchemy import text

    from hub.store.db import migrate

    store = Store(db_url)
    try:
        await migrate(store.engine, "0007_consent")
        async with store.engine.begin() as conn:
            for hid, delivered in (
                ("h-unconfirmed", None),
                ("h-delivered", datetime(2025, 3, 2, tzinfo=UTC)),
            ):
                await conn.execute(
                    text(
                        "INSERT INTO handovers (id, referral_id, youth_key, from_caseworker,"
                        " receiver_organisation, receiver_type, purpose, data_categories, summary, status,"
                        " created_at, updated_at, sent_at, delivered_at, transaction_id) VALUES (:id, 'r1',"
                        " :youth, 'cw-1', 'jongerenwerk-dh', 'JONGERENWERK', 'WARME_OVERDRACHT',"
                        " '[\"PERSONALIA\"]', 'x', 'VERZONDEN', '2025-03-01 10:00:00', '2025-03-01 10:00:00',"
                        " '2025-03-01 10:00:00', :delivered, 'tx')"
                    ),
                    {"id": hid, "youth": "a" * 64, "delivered": delivered},
                )
        await store.migrate()
        async with store.connect() as conn:
            tried = dict((await conn.execute(text("SELECT id, attempted_at FROM handovers"))).all())
        assert tried["h-unconfirmed"] is not None and tried["h-delivered"] is None
    finally:
        await store.close()


async def test_a_statements_own_mistake_is_no_failure_of_the_store(store: Store) -> None:
    """Tried again later, the same statement fails the same way: a message it stopped is not put off
    for ever (SQLite reports a missing table as an OperationalError, as it does a locked database)."""
    with pytest.raises(DBAPIError) as raised:
        async with store.transaction() as session:
            await session.execute(text("SELECT * FROM no_such_table"))
    assert not store_failed(raised.value), repr(raised.value)
    assert not transient(raised.value)  # the consumer dead-letters its record, not retrying it for ever


@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)
@pytest.mark.parametrize(
    "statements",
    [
        # a lock held elsewhere past the role's lock_timeout (55P03)
        ["SET LOCAL lock_timeout = 50", "SELECT pg_advisory_xact_lock(4242)"],
        # a statement_timeout, or an operator cancelling the query (57014)
        ["SET LOCAL statement_timeout = 50", "SELECT pg_sleep(5)"],
        # a write on a server that became a read-only standby (25006)
        [
            "SET TRANSACTION READ ONLY",
            "INSERT INTO inbox (consumer, message_id, processed_at) VALUES ('c', 'm', now())",
        ],
    ],
    ids=["lock-timeout", "statement-timeout", "read-only"],
)
async def test_a_postgresql_server_that_cannot_do_the_work_now_is_the_stores_failure(
    store: Store, statements: list[str]
) -> None:
    """PostgreSQL reports these as a plain DBAPIError: taken as the statement's own mistake, the
    spine dead-lettered a good record and committed its offset (its youth's later records went on
    without it), and the retry ladder dead-lettered a delivery on its first attempt."""
    async with store.connect() as holder:
        await holder.execute(text("SELECT pg_advisory_lock(4242)"))
        try:
            with pytest.raises(DBAPIError) as raised:
                async with store.transaction() as session:
                    for statement in statements:
                        await session.execute(text(statement))
        finally:
            await holder.execute(text("SELECT pg_advisory_unlock(4242)"))
    assert store_failed(raised.value) and transient(raised.value), repr(raised.value)


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
async def test_a_sqlite_database_locked_or_not_to_be_opened_is_the_stores_failure(
    store: Store, db_url: str, tmp_path: Path
) -> None:
    holder = sqlite3.connect(db_url.removeprefix("sqlite+aiosqlite:///"), isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")  # another process writing
    try:
        with pytest.raises(DBAPIError) as locked:
            async with store.connect() as conn:
                await conn.execute(text("PRAGMA busy_timeout=0"))  # not the store's 30 s wait
                await conn.execute(
                    insert(outbox).values(topic="t", value=b"v", headers={}, created_at=utcnow())
                )
        assert store_failed(locked.value) and transient(locked.value), repr(locked.value)
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    unopenable = Store(f"sqlite+aiosqlite:///{tmp_path}/no-such-dir/hub.db")
    try:
        with pytest.raises(DBAPIError) as cannot_open:
            async with unopenable.connect() as conn:
                await conn.execute(text("SELECT 1"))
        assert store_failed(cannot_open.value), repr(cannot_open.value)
    finally:
        await unopenable.close()


@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)
async def test_only_a_commit_that_lost_its_answer_has_an_unknown_outcome(store: Store) -> None:
    """A failure in a transaction's body, or a COMMIT the server refused saying why, was not kept:
    "nothing was kept" is true of them. Only a lost answer to COMMIT is "maybe kept" (the test of
    that, through a proxy that drops it, is in test_signals_api)."""
    async with store.connect() as conn:
        await conn.execute(text("CREATE TABLE once (id int PRIMARY KEY DEFERRABLE INITIALLY DEFERRED)"))
        await conn.commit()
    with pytest.raises(RuntimeError) as in_body:
        async with store.transaction() as session:
            await session.execute(text("INSERT INTO once VALUES (1)"))
            raise RuntimeError("boom")
    with pytest.raises(DBAPIError) as refused:  # the unique check deferred to COMMIT fails there
        async with store.transaction() as session:
            await session.execute(text("INSERT INTO once VALUES (2), (2)"))
    assert "once_pkey" in str(refused.value)
    assert not commit_unknown(in_body.value) and not commit_unknown(refused.value)
    async with store.connect() as conn:
        assert (await conn.execute(text("SELECT count(*) FROM once"))).scalar_one() == 0
