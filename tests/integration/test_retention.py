"""Retention: a case, a signal and audit entries past their terms are purged, audited; the rest stays."""

from __future__ import annotations

import asyncio
import json
from datetime import date, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import func, insert, select, update
from typer.testing import CliRunner

import hub.retention.purge as purge_module
from hub.audit import audit_row, write_audits
from hub.consent.tables import consents
from hub.handovers.tables import handovers
from hub.intake.tables import referrals
from hub.notify.tables import mail_problems, mail_sent
from hub.retention.config import RetentionSettings
from hub.retention.purge import commands_kept, purge
from hub.retry.tables import parked
from hub.signals.commands import register_command
from hub.signals.delivery import on_dead
from hub.signals.tables import matches, signals
from hub.store import Store
from hub.store.locks import lock_youths
from hub.store.tables import audit_log, outbox
from hub.topics import VERWIJSINDEX_GROUP
from schemas.caseworker import ContactDetails
from schemas.envelope import utcnow
from schemas.signal import SignalYouth, VerwijsindexSignal

pytestmark = pytest.mark.integration
NOW = utcnow()
YEARS = 365


def ago(days: int) -> datetime:
    return NOW - timedelta(days=days)


async def _case(
    store: Store,
    key: str,
    bsn: str,
    *,
    received: datetime,
    withdrawn: datetime | None = None,
    valid_days: int = 365,
    handover: str = "GEACCEPTEERD",
    referral: bool = True,
) -> None:
    rid = f"r-{key[:8]}"
    async with store.transaction() as session:
        if referral:
            await session.execute(
                insert(referrals).values(
                    id=rid, referrer_key="politie", case_reference=f"PV-{key[:6]}", referrer_type="POLITIE",
                    channel="kafka", youth_key=key, bsn=bsn, track="HALT_STRAF", outcome="ACCEPTED",
                    referral={"youth": {"bsn": bsn, "surname": "Jansen"}}, decision={}, transaction_id="t",
                    received_at=received,
                )
            )  # fmt: skip
        await session.execute(
            insert(consents).values(
                id=f"c-{key[:8]}", youth_key=key, referral_id=rid, purpose="WARME_OVERDRACHT",
                status="INGETROKKEN" if withdrawn else "ACTIEF", valid_from=received.date(),
                valid_until=received.date() + timedelta(days=valid_days), consent={"youth": {"bsn": bsn}},
                recorded_by="cw-1", recorded_at=received, withdrawn_at=withdrawn, transaction_id="t",
            )
        )  # fmt: skip
        await session.execute(
            insert(handovers).values(
                id=f"h-{key[:8]}", referral_id=rid, youth_key=key, from_caseworker="cw-1",
                receiver_organisation="jongerenwerk-dh", receiver_type="JONGERENWERK",
                purpose="WARME_OVERDRACHT", data_categories=["PERSONALIA"], summary="Sportproject.",
                status=handover, created_at=received, updated_at=received, transaction_id="t",
            )
        )  # fmt: skip


async def _signal(store: Store, key: str, bsn: str, *, ended: date, state: str) -> None:
    sid = f"s-{key[:8]}"
    async with store.transaction() as session:
        await session.execute(
            insert(signals).values(
                signal_id=sid, youth_key=key, bsn=bsn, given_names="Sam", surname="Jansen",
                birth_date=date(2010, 1, 1), gender="M", municipality="Den Haag", organisation="Halt",
                caseworker_id="cw-1", contact={}, created=ended - timedelta(days=365), end_date=ended,
                status="ACTIEF", delivery_state=state, attempt=0, updated_at=NOW,
            )
        )  # fmt: skip
        await session.execute(
            insert(matches).values(
                match_id=f"m-{key[:8]}", signal_id=sid, type="MATCH", counterparts=[], received_at=NOW
            )
        )


def _as_signal(key: str, bsn: str) -> VerwijsindexSignal:
    """The signal `_signal` stored, as its register command carries it."""
    return VerwijsindexSignal(
        signal_id=f"s-{key[:8]}",
        youth=SignalYouth(
            bsn=bsn, given_names="Sam", surname="Jansen", birth_date=date(2010, 1, 1), gender="MAN",
            municipality="Den Haag",
        ),
        organisation="Halt",
        caseworker=ContactDetails(name="Ilse", organisation="Halt", email="ilse@halt.nl"),
        caseworker_id="cw-1",
        created=NOW.date() - timedelta(days=400),
        end_date=NOW.date() - timedelta(days=60),
        youth_informed_at=NOW.date() - timedelta(days=400),
        parent_letter_sent_at=NOW.date() - timedelta(days=400),
    )  # fmt: skip


async def _count(store: Store, table: Any, **where: str) -> int:
    async with store.connect() as conn:
        query = select(func.count()).select_from(table)
        for column, value in where.items():
            query = query.where(table.c[column] == value)
        return int((await conn.execute(query)).scalar_one())


async def _audit(store: Store, action: str) -> list[Any]:
    async with store.connect() as conn:
        query = (
            select(audit_log)
            .where(audit_log.c.action == action)
            .order_by(audit_log.c.youth_key, audit_log.c.id)
        )
        return list(await conn.execute(query))


async def test_what_is_past_its_term_is_purged_audited_per_youth_and_the_rest_stays(store: Store) -> None:
    old, done, signalled, waiting, fresh = ("a" * 64, "b" * 64, "c" * 64, "d" * 64, "e" * 64)
    await _case(store, old, "111222333", received=ago(6 * YEARS))
    await _case(store, done, "123456782", received=ago(6 * YEARS), withdrawn=ago(YEARS))  # active lately
    await _case(store, signalled, "628194821", received=ago(6 * YEARS))
    await _signal(store, signalled, "628194821", ended=NOW.date() - timedelta(days=60), state="delivered")
    await _case(store, waiting, "507529170", received=ago(6 * YEARS))
    await _signal(store, waiting, "507529170", ended=NOW.date() - timedelta(days=60), state="retrying")
    await _case(store, fresh, "233454566", received=ago(30))
    # six years idle, but a consent still in force (valid ten years): kept; a handover that has waited
    # for consent as long is not under way but forgotten, and held its case for ever
    await _case(store, "9" * 64, "111222333", received=ago(6 * YEARS), valid_days=10 * YEARS)
    await _case(store, "8" * 64, "111222333", received=ago(6 * YEARS), handover="WACHT_OP_TOESTEMMING")
    async with store.transaction() as session:
        rows = [
            audit_row(
                "referral.read", "cw-1", at=ago(days), system="test", transaction_id=None, youth_key=fresh
            )
            for days in (6 * YEARS, 4 * YEARS)
        ]
        await write_audits(session, rows)
    settings = RetentionSettings()

    dry = await purge(store, settings, now=NOW, dry_run=True)
    counts = {"youths": 3, "referrals": 3, "consents": 3, "handovers": 3, "signals": 1, "matches": 1}
    assert dry.as_json() == {**counts, "audit_entries": 1, "dry_run": True}
    assert await _count(store, referrals) == 7 and await _count(store, signals) == 2
    assert await _audit(store, "retention.purged") == []

    done_now = await purge(store, settings, now=NOW)
    assert done_now.as_json() == {**counts, "audit_entries": 1, "dry_run": False}
    for key in (old, signalled, "8" * 64):
        for table in (referrals, consents, handovers):
            assert await _count(store, table, youth_key=key) == 0
    for key in (done, waiting, fresh, "9" * 64):
        assert await _count(store, referrals, youth_key=key) == 1, key
        assert await _count(store, consents, youth_key=key) == 1, key
    assert await _count(store, signals, youth_key=signalled) == 0
    assert await _count(store, signals, youth_key=waiting) == 1  # its command still waits
    assert await _count(store, matches) == 1
    entries = await _audit(store, "retention.purged")
    assert [(e.youth_key, e.objects) for e in entries] == [
        ("8" * 64, {"referrals": 1, "consents": 1, "handovers": 1}),
        (old, {"referrals": 1, "consents": 1, "handovers": 1}),
        (signalled, {"signals": 1, "matches": 1}),
        (signalled, {"referrals": 1, "consents": 1, "handovers": 1}),
    ]
    text = json.dumps([dict(e._mapping) for e in entries], default=str)
    assert "111222333" not in text and "Jansen" not in text
    [counted] = await _audit(store, "retention.audit_purged")
    assert counted.objects["entries"] == 1
    assert len(await _audit(store, "referral.read")) == 1  # four years old: kept

    again = await purge(store, settings, now=NOW)
    assert again.youths == 0 and again.audit_entries == 0  # nothing left past its term


async def test_a_case_without_a_referral_in_the_hub_is_purged_too(store: Store) -> None:
    """A consent and handover recorded through the caseworker API have no referral here; the case is
    found from them, and a recent referral keeps a case whose consent is old."""
    alone, referred_lately = "a" * 64, "b" * 64
    await _case(store, alone, "111222333", received=ago(6 * YEARS), referral=False)
    await _case(store, referred_lately, "123456782", received=ago(6 * YEARS), referral=False)
    async with store.transaction() as session:
        await session.execute(
            insert(referrals).values(
                id="r-late", referrer_key="politie", case_reference="PV-late", referrer_type="POLITIE",
                channel="kafka", youth_key=referred_lately, bsn="123456782", track="HALT_STRAF",
                outcome="ACCEPTED", referral={}, decision={}, transaction_id="t", received_at=ago(30),
            )
        )  # fmt: skip

    done = await purge(store, RetentionSettings(), now=NOW)

    assert done.as_json() == {
        "youths": 1, "referrals": 0, "consents": 1, "handovers": 1, "signals": 0, "matches": 0,
        "audit_entries": 0, "dry_run": False,
    }  # fmt: skip
    assert await _count(store, consents, youth_key=alone) == 0
    assert await _count(store, handovers, youth_key=alone) == 0
    assert await _count(store, consents, youth_key=referred_lately) == 1
    assert [e.youth_key for e in await _audit(store, "retention.purged")] == [alone]


async def test_a_dead_lettered_signal_goes_once_its_letter_is_gone_and_a_recent_handover_keeps_its_case(
    store: Store,
) -> None:
    """A signal whose command was dead-lettered kept its BSN and name, and its youth's case, for ever;
    once the letter has passed the DLQ topic's term nothing can replay the command."""
    gone, recent, busy = "a" * 64, "b" * 64, "c" * 64
    for key in (gone, recent):
        await _case(store, key, "111222333", received=ago(6 * YEARS))
    await _signal(store, gone, "111222333", ended=NOW.date() - timedelta(days=60), state="dead_lettered")
    await _signal(store, recent, "123456782", ended=NOW.date() - timedelta(days=60), state="dead_lettered")
    async with store.transaction() as session:  # the second's letter is still on its topic
        await session.execute(
            update(signals).where(signals.c.youth_key == recent).values(updated_at=NOW - timedelta(days=3))
        )
        await session.execute(update(signals).where(signals.c.youth_key == gone).values(updated_at=ago(40)))
    # queued 40 days ago, dead-lettered only now (a replay that failed again): its letter is new
    lately, lately_bsn = "d" * 64, "507529170"
    await _case(store, lately, lately_bsn, received=ago(6 * YEARS))
    await _signal(store, lately, lately_bsn, ended=NOW.date() - timedelta(days=60), state="retrying")
    async with store.transaction() as session:
        await session.execute(update(signals).where(signals.c.youth_key == lately).values(updated_at=ago(40)))
        await on_dead(session, register_command(_as_signal(lately, lately_bsn), "tx"), "503")
    await _case(store, busy, "628194821", received=ago(6 * YEARS), handover="VERZONDEN")
    async with store.transaction() as session:  # sent again lately: under way
        await session.execute(
            update(handovers).where(handovers.c.youth_key == busy).values(updated_at=ago(2))
        )

    done = await purge(store, RetentionSettings(), now=NOW)

    assert (done.youths, done.signals, done.referrals) == (1, 1, 1)
    assert (
        await _count(store, signals, youth_key=gone) == 0
        and await _count(store, referrals, youth_key=gone) == 0
    )
    assert await _count(store, signals, youth_key=recent) == 1
    assert await _count(store, signals, youth_key=lately) == 1
    assert await _count(store, handovers, youth_key=busy) == 1


async def test_a_signal_whose_command_was_lost_on_its_way_goes_once_nothing_of_its_youth_can_still_go(
    store: Store,
) -> None:
    """A command published and never taken in before the signal topic's retention ended (the
    connector down that long, a broker that lost what it held) leaves its signal `queued` or
    `retrying`: nothing records its fate. Such a signal kept its BSN and name, and its youth's whole
    case, for ever. It goes once nothing of the youth is queued, published and waiting, or parked."""
    youths = {  # name: (youth key, BSN, delivery state, days since its last change)
        "lost": ("a" * 64, "111222333", "queued", 40),
        "lost_retrying": ("b" * 64, "123456782", "retrying", 40),
        "lately": ("c" * 64, "507529170", "queued", 3),  # within the DLQ topic's term: may still go
        "published": ("d" * 64, "628194821", "queued", 40),
        "parked": ("e" * 64, "732061452", "retrying", 40),
    }
    for key, bsn, state, days in youths.values():
        await _case(store, key, bsn, received=ago(6 * YEARS))
        await _signal(store, key, bsn, ended=NOW.date() - timedelta(days=60), state=state)
        async with store.transaction() as session:
            await session.execute(
                update(signals).where(signals.c.youth_key == key).values(updated_at=ago(days))
            )
    async with store.transaction() as session:
        # published, not yet taken in: the relay keeps the row (the topic's retention at most)
        await session.execute(
            insert(outbox).values(
                topic="verwijsindex.signal.v1", key=youths["published"][0], value=b"{}", headers={},
                message_id="m-1", created_at=ago(40), sent_at=ago(2),
            )
        )  # fmt: skip
        # taken in, waiting on the connector's retry ladder for its next attempt
        await session.execute(
            insert(parked).values(
                ladder=VERWIJSINDEX_GROUP, key=youths["parked"][0], message_id="m-2", value=b"{}",
                headers={}, attempt=3, due_at=NOW + timedelta(hours=1),
            )
        )  # fmt: skip

    done = await purge(store, RetentionSettings(), now=NOW)

    left = {name for name, (key, *_) in youths.items() if await _count(store, signals, youth_key=key)}
    assert left == {"lately", "published", "parked"}
    assert (done.signals, done.youths) == (2, 2)
    for name in ("lost", "lost_retrying"):  # their cases went with them
        assert await _count(store, referrals, youth_key=youths[name][0]) == 0


async def test_a_command_on_a_topic_kept_longer_is_not_taken_for_lost_while_the_topic_may_hold_it(
    store: Store,
) -> None:
    """Brokers that keep the signal topic 60 days (KETENHUB_KAFKA__INBOX_KEEP_DAYS says so) may still
    hand a command no connector took in after 40 days: its signal stays. Kept for ever (0), a command
    is never taken for lost."""
    key, bsn = "a" * 64, "111222333"
    await _case(store, key, bsn, received=ago(6 * YEARS))
    await _signal(store, key, bsn, ended=NOW.date() - timedelta(days=60), state="queued")
    async with store.transaction() as session:
        await session.execute(update(signals).where(signals.c.youth_key == key).values(updated_at=ago(40)))
    assert commands_kept(None) == timedelta(days=30) and commands_kept(0) is None
    for kept in (commands_kept(67), commands_kept(0)):
        done = await purge(store, RetentionSettings(), now=NOW, kept=kept)
        assert done.signals == 0 and await _count(store, signals, youth_key=key) == 1
    done = await purge(store, RetentionSettings(), now=NOW, kept=commands_kept(None))
    assert done.signals == 1


async def test_a_withdrawn_signal_goes_after_the_day_it_was_withdrawn_not_its_end_date(store: Store) -> None:
    """Rule 15: a signal withdrawn as wrongly registered, or because the risk is gone, kept the youth's
    BSN, name and birth date, and its matches' counterparts, until the end date it was registered
    with, up to two years on, though nothing would use it again once its earlier commands' dead
    letters are past the DLQ's term."""
    wrong, risk_gone, lately, waiting, active = "a" * 64, "b" * 64, "c" * 64, "d" * 64, "e" * 64
    later = NOW.date() + timedelta(days=300)
    for key, bsn in ((wrong, "111222333"), (risk_gone, "123456782"), (lately, "507529170")):
        await _signal(store, key, bsn, ended=later, state="delivered")
    await _signal(store, waiting, "628194821", ended=later, state="retrying")  # its withdrawal waits
    await _signal(store, active, "112233444", ended=later, state="delivered")
    async with store.transaction() as session:
        for key, status, at in (
            (wrong, "INGETROKKEN_ONTERECHT", ago(31)),
            (risk_gone, "BEEINDIGD_RISICO_WEG", ago(31)),
            # a dead letter of an earlier command (a contact change) may still be replayed: the
            # signal stays in sight for the DLQ's term, so the replay finds it withdrawn, not gone
            (lately, "INGETROKKEN_ONTERECHT", ago(29)),
            (waiting, "INGETROKKEN_ONTERECHT", ago(31)),
        ):
            await session.execute(
                update(signals).where(signals.c.youth_key == key).values(status=status, updated_at=at)
            )
        # the withdrawal that waits: parked on the connector's retry ladder for its next attempt
        await session.execute(
            insert(parked).values(
                ladder=VERWIJSINDEX_GROUP, key=waiting, message_id="m-w", value=b"{}", headers={},
                attempt=2, due_at=NOW + timedelta(hours=1),
            )
        )  # fmt: skip

    done = await purge(store, RetentionSettings(), now=NOW)

    assert (done.signals, done.matches) == (2, 2)
    assert await _count(store, signals, youth_key=wrong) == 0
    assert await _count(store, signals, youth_key=risk_gone) == 0
    assert await _count(store, matches, signal_id=f"s-{wrong[:8]}") == 0
    for kept in (lately, waiting, active):
        assert await _count(store, signals, youth_key=kept) == 1, kept


async def test_two_purges_at_once_audit_only_what_each_removed(store: Store) -> None:
    """Every api process purges at its start: a second purge counted rows the first was deleting, removed
    nothing, and still audited them as purged."""
    keys = [f"{i:06x}" + "ab" * 29 for i in range(1, 121)]
    for key in keys:
        await _case(store, key, "111222333", received=ago(6 * YEARS))
    other = Store(store.url)
    try:
        first, second = await asyncio.gather(
            purge(store, RetentionSettings(), now=NOW), purge(other, RetentionSettings(), now=NOW)
        )
    finally:
        await other.close()
    assert first.youths + second.youths == len(keys)
    assert len(await _audit(store, "retention.purged")) == len(keys)
    assert await _count(store, referrals) == 0


async def test_a_purge_that_finds_nothing_past_its_term_writes_nothing_but_its_last_tidy_up(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Audit entries past their term were looked for inside a write transaction: the whole log read
    (no index on its moment) while SQLite's only writer's lock was held, and the intake, the
    consumers and the relay waited. Looked for outside it, a purge with nothing to purge writes only
    its last tidy-up (operators' reasons and resolved problems)."""
    await _case(store, "cd" * 32, "111222333", received=ago(30))  # recent: kept, with its audit entries
    writes = 0
    transaction = store.transaction

    def counted() -> Any:
        nonlocal writes
        writes += 1
        return transaction()

    monkeypatch.setattr(store, "transaction", counted)
    result = await purge(store, RetentionSettings(), now=NOW)
    assert (result.youths, result.audit_entries) == (0, 0)
    assert writes == 1


def test_audit_entries_are_kept_at_least_five_years() -> None:
    with pytest.raises(ValueError, match="greater than or equal to 1827"):
        RetentionSettings(audit_days=365)


def test_the_command_says_what_it_would_purge_and_what_it_purged(tmp_path: Any) -> None:
    import asyncio

    from hub.cli import app
    from tests.conftest import TEST_SECRET

    url = f"sqlite+aiosqlite:///{tmp_path / 'hub.db'}"

    async def seed() -> None:
        store = Store(url)
        try:
            await store.migrate()
            await _case(store, "f" * 64, "111222333", received=ago(6 * YEARS))
        finally:
            await store.close()

    asyncio.run(seed())
    env = {"KETENHUB_DATABASE__URL": url, "KETENHUB_SECRET": TEST_SECRET}
    runner = CliRunner()
    dry = runner.invoke(app, ["retention", "--dry-run"], env=env)
    assert dry.exit_code == 0 and "would purge: youths 1, referrals 1" in dry.output, dry.output
    real = runner.invoke(app, ["retention"], env=env)
    assert real.exit_code == 0 and "purged: youths 1, referrals 1" in real.output, real.output
    again = runner.invoke(app, ["retention"], env=env)
    assert "purged: youths 0, referrals 0" in again.output


@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)
async def test_a_row_written_after_the_purge_looked_is_not_purged_with_the_case(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The purge checked under its write that the case was idle, then deleted every row of the youth:
    on PostgreSQL a consent another transaction committed in between (ACTIEF for a year) went too,
    audited as past its term."""
    key, bsn = "a1" * 32, "111222333"
    await _case(store, key, bsn, received=ago(6 * YEARS))
    other, real = Store(store.url), purge_module._old_cases

    async def old_cases(session: Any, cutoff: Any, today: Any, going: Any, *, among: Any = None) -> Any:
        found = await real(session, cutoff, today, going, among=among)
        if among is not None:  # idle, said the check under the write; a consent is recorded now
            async with other.transaction() as s:
                await s.execute(
                    insert(consents).values(
                        id="c-fresh", youth_key=key, referral_id=None, purpose="WARME_OVERDRACHT",
                        status="ACTIEF", valid_from=NOW.date(), valid_until=NOW.date() + timedelta(days=365),
                        consent={"youth": {"bsn": bsn}}, recorded_by="cw-1", recorded_at=NOW,
                        transaction_id="t",
                    )
                )  # fmt: skip
        return found

    monkeypatch.setattr(purge_module, "_old_cases", old_cases)
    try:
        done = await purge(store, RetentionSettings(), now=NOW)
    finally:
        await other.close()
    assert await _count(store, consents, id="c-fresh") == 1
    # the old consent and handover went, as audited; the referral stays while a consent of the youth
    # does (the case is not idle any more: the next run decides)
    assert (done.consents, done.handovers, done.referrals) == (1, 1, 0)
    assert await _count(store, referrals, youth_key=key) == 1
    [entry] = await _audit(store, "retention.purged")
    assert entry.objects["consents"] == 1 and "referrals" not in entry.objects


async def test_a_signal_kept_by_the_look_under_the_write_keeps_its_case(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The purge found a signal past its term, then, looking again under its write, kept it (a
    command was queued for it in between). The case was still judged as though the signal went:
    the youth's referral, consent and handover were purged beside a signal that stays."""
    key, bsn = "b2" * 32, "111222333"
    await _case(store, key, bsn, received=ago(6 * YEARS))
    await _signal(store, key, bsn, ended=NOW.date() - timedelta(days=400), state="delivered")
    real = purge_module._ended_signals

    async def ended_signals(session: Any, before: Any, letters_gone: Any, among: Any = None) -> Any:
        found = await real(session, before, letters_gone, among)
        return [] if among is not None else found  # kept, says the look under the write

    monkeypatch.setattr(purge_module, "_ended_signals", ended_signals)
    done = await purge(store, RetentionSettings(), now=NOW)
    assert done.signals == 0 and await _count(store, signals, youth_key=key) == 1
    assert (done.referrals, done.consents, done.handovers) == (0, 0, 0)
    assert await _count(store, referrals, youth_key=key) == 1


@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)
async def test_a_purge_leaves_a_case_a_consent_is_being_recorded_on_for_its_next_run(store: Store) -> None:
    """A consent (or a handover) refers to the case's referral. Recorded while the purge ran, it
    survived and its referral went: a consent pointing at a purged referral. Recording holds the
    youth's case lock; the purge leaves a youth whose lock it cannot get, and purges it next time."""
    key, bsn = "b2" * 32, "123456782"
    await _case(store, key, bsn, received=ago(6 * YEARS))
    other = Store(store.url)
    try:
        async with other.transaction() as session:  # as recording a consent does, first thing
            assert await lock_youths(session, [key])
            done = await asyncio.wait_for(purge(store, RetentionSettings(), now=NOW), 20)  # not waiting
            await session.execute(
                insert(consents).values(
                    id="c-new", youth_key=key, referral_id=f"r-{key[:8]}", purpose="WARME_OVERDRACHT",
                    status="ACTIEF", valid_from=NOW.date(), valid_until=NOW.date() + timedelta(days=365),
                    consent={"youth": {"bsn": bsn}}, recorded_by="cw-1", recorded_at=NOW, transaction_id="t",
                )
            )  # fmt: skip
    finally:
        await other.close()
    assert done.youths == 0
    assert await _count(store, referrals, youth_key=key) == 1
    assert await _count(store, consents, youth_key=key) == 2


@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)
async def test_a_withdrawal_while_the_case_is_purged_keeps_what_it_stands_on(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A consent whose term ended years ago is stored ACTIEF still, and may be withdrawn; withdrawing
    takes no case lock. Committed between the purge's last look and its deletes, the consent and the
    handover it withdrew were kept (changed just now) and the referral they stand on was deleted."""
    key, bsn = "d4" * 32, "111222333"
    await _case(store, key, bsn, received=ago(6 * YEARS), handover="VERZONDEN", valid_days=365)
    other, real = Store(store.url), purge_module._old_cases

    async def old_cases(session: Any, cutoff: Any, today: Any, going: Any, *, among: Any = None) -> Any:
        found = await real(session, cutoff, today, going, among=among)
        if among is not None:  # idle, said the check under the case lock; a caseworker withdraws now
            async with other.transaction() as s:
                await s.execute(
                    update(consents).where(consents.c.youth_key == key)
                    .values(status="INGETROKKEN", withdrawn_at=NOW)
                )  # fmt: skip
                await s.execute(
                    update(handovers).where(handovers.c.youth_key == key)
                    .values(status="INGETROKKEN", updated_at=NOW)
                )  # fmt: skip
        return found

    monkeypatch.setattr(purge_module, "_old_cases", old_cases)
    try:
        await purge(store, RetentionSettings(), now=NOW)
    finally:
        await other.close()
    left = [await _count(store, table, youth_key=key) for table in (referrals, consents, handovers)]
    assert left == [1, 1, 1]


async def test_a_problem_resolved_a_term_ago_goes_with_the_administrators_reason(store: Store) -> None:
    """An administrator resolves a problem with a reason (free text: "gebeld met de moeder van ...");
    the reason was kept on the problem for ever, where an operator's reason for a dead letter goes
    after a case's term."""
    rows = [  # (reference, found, resolved, how, why)
        ("old", ago(6 * YEARS), ago(6 * YEARS - 1), "operator", "gebeld met de moeder van Sam Jansen"),
        ("recent", ago(6 * YEARS), ago(30), "operator", "delegate gezet"),
        ("open", ago(6 * YEARS), None, None, None),
    ]
    async with store.transaction() as session:
        for reference, found, resolved, how, why in rows:
            await session.execute(
                insert(mail_problems).values(
                    at=found, kind="geen_bereikbare_ontvanger", caseworker_id="cw-1", reference=reference,
                    reason="geen vervanger", transaction_id="t", resolved_at=resolved,
                    resolved_by="otto" if how else None, resolved_how=how, resolution=why,
                )
            )  # fmt: skip
    await purge(store, RetentionSettings(), now=NOW)
    async with store.connect() as conn:
        left = sorted((await conn.execute(select(mail_problems.c.reference))).scalars())
    assert left == ["open", "recent"]  # one still to act on stays, however old


async def test_whose_mailbox_a_mail_reached_goes_a_cases_term_after_it_was_sent(store: Store) -> None:
    """`mail_sent` names the caseworker each mail reached; it was kept for ever. It goes after a case's
    term, and not while the brokers may still hold its notification (its row keeps a redelivery from
    being mailed twice)."""
    sent = {"old": ago(6 * YEARS), "recent": ago(30), "month_ago": ago(60), "quarter_ago": ago(100)}
    async with store.transaction() as session:
        for notification, at in sent.items():
            await session.execute(
                insert(mail_sent).values(
                    notification_id=notification, message_id=f"<{notification}@ketenhub>",
                    recipient_caseworker_id="cw-1", sent_at=at,
                )
            )  # fmt: skip

    async def left() -> list[str]:
        async with store.connect() as conn:
            return sorted((await conn.execute(select(mail_sent.c.notification_id))).scalars())

    await purge(store, RetentionSettings(), now=NOW, kept=None)  # topics kept for ever: nothing goes
    assert await left() == ["month_ago", "old", "quarter_ago", "recent"]
    await purge(store, RetentionSettings(), now=NOW, dry_run=True)
    assert await left() == ["month_ago", "old", "quarter_ago", "recent"]
    await purge(store, RetentionSettings(), now=NOW)
    assert await left() == ["month_ago", "quarter_ago", "recent"]
    # a short case term, topics kept 90 days: a mail's record stays as long as its notification may
    await purge(store, RetentionSettings(case_days=30), now=NOW, kept=timedelta(days=90))
    assert await left() == ["month_ago", "recent"]
