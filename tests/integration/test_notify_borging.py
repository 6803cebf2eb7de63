"""Borging (rule 17) with the Verwijsindex simulator over real HTTP and a real SMTP server."""

from __future__ import annotations

import asyncio
import contextlib
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import func, select, text

from connectors.verwijsindex.component import verwijsindex_component
from connectors.verwijsindex.sim_server import SimulatorServer
from hub.clock import today
from hub.embedded import EmbeddedKafka
from hub.notify.borging import NO_DELEGATE, check_borging
from hub.notify.tables import mail_problems
from hub.retry import RetryPolicy
from hub.runtime import Hub
from hub.signals.tables import signals
from hub.store import Store
from hub.store.tables import audit_log, outbox
from schemas.caseworker import Absence
from tests.helpers.kafka import wait_for
from tests.integration.test_mail_delivery import (
    FAST,
    ILSE,
    OMAR,
    _problem,
    add_caseworkers,
    bodies,
    parse,
    smtp_sink,
)
from tests.integration.test_notify_match import signal_with_match, youth

pytestmark = pytest.mark.integration
VI_FAST = RetryPolicy(in_place_attempts=2, in_place_wait_s=0.01, schedule_s=(0.3,) * 5, jitter=0.0)


async def _audited(hub: Hub, action: str) -> list[Any]:
    assert hub.store is not None
    async with hub.store.connect() as conn:
        return list(await conn.execute(select(audit_log).where(audit_log.c.action == action)))


async def _contacts(hub: Hub) -> dict[str, str]:
    assert hub.store is not None
    async with hub.store.connect() as conn:
        rows = (
            await conn.execute(select(signals.c.signal_id, signals.c.caseworker_id, signals.c.delivery_state))
        ).all()
    return {r.signal_id: f"{r.caseworker_id}:{r.delivery_state}" for r in rows}


async def test_long_absence_moves_signals_to_the_delegate_and_the_index_shows_the_new_contact(
    kafka: EmbeddedKafka, db_url: str, unique: str
) -> None:
    from connectors.mail.component import mail_component
    from hub.notify.component import register_notify
    from tests.conftest import make_settings

    away = ILSE.model_copy(
        update={"absences": [Absence(start=today() - timedelta(days=20), end=today() + timedelta(days=10))]}
    )
    lone = OMAR.model_copy(update={"caseworker_id": "cw-lone", "email": "lone@halt.nl", "active": False})
    with SimulatorServer() as simulator:
        async with smtp_sink() as sink:
            settings = make_settings(
                kafka, db_url, unique, components=["mail", "verwijsindex"],
                smtp={"host": "127.0.0.1", "port": sink.port, "timeout_s": 10},
                verwijsindex={"url": simulator.url, "timeout_s": 5, "poll_interval_s": 0.2},
                notify={"borging_after_days": 14, "borging_interval_s": 3600},
            )  # fmt: skip
            registrars = {
                "mail": [mail_component(FAST), register_notify],
                "verwijsindex": [verwijsindex_component(VI_FAST)],
            }
            hub = Hub(settings, registrars=registrars)  # type: ignore[arg-type]
            await hub.start()
            try:
                # Ilse goes away only once her signals are in the index: the hub's own borging round
                # at start must find nothing to move, so the round below is the one that moves them.
                await add_caseworkers(hub, ILSE, OMAR, lone)
                first, match_id = await signal_with_match(hub, "cw-ilse", youth(423_456_700))
                second, _ = await signal_with_match(hub, "cw-ilse", youth(523_456_700))
                stranded, _ = await signal_with_match(hub, "cw-lone", youth(623_456_700))

                async def registered() -> bool:
                    return all(v.endswith(":delivered") for v in (await _contacts(hub)).values())

                await wait_for(registered)
                assert simulator.state.get(first).contactpersoon.naam != "Omar Haddou"
                await add_caseworkers(hub, away)

                # two rounds at once (every hub process runs one): the signals move once
                rounds = await asyncio.gather(check_borging(hub), check_borging(hub))
                moved = [r for results in rounds for r in results if r.signal_ids]
                assert len(moved) == 1, [(r.caseworker_id, r.signal_ids) for rs in rounds for r in rs]
                assert [a.objects["signal_id"] for a in await _audited(hub, "signal.contact_changed")] in (
                    [first, second],
                    [second, first],
                )
                assert len(await _audited(hub, "borging.moved")) == 1
                results = {r.caseworker_id: r for r in rounds[0] + rounds[1] if r.signal_ids or r.problem}
                assert sorted(results["cw-ilse"].signal_ids) == sorted([first, second])
                assert results["cw-ilse"].delegate_id == "cw-omar"
                assert results["cw-lone"].problem and not results["cw-lone"].signal_ids

                def index_shows_omar() -> bool:
                    return all(
                        simulator.state.get(s).contactpersoon.naam == "Omar Haddou" for s in (first, second)
                    )

                await wait_for(index_shows_omar)
                assert simulator.state.get(first).contactpersoon.email == "omar@halt.nl"
                assert (await _contacts(hub))[stranded].startswith("cw-lone:")

                def summary() -> list[str]:
                    return [m.raw for m in sink.memory if "Borging" in (m.subject or "")]

                await wait_for(summary)
                [raw] = summary()
                text, html = bodies(parse(raw))
                assert first in text and second in text and match_id in text and first in html
                assert "Ilse Bakker" in text
                assert await _problem(hub, NO_DELEGATE, None)  # cw-lone left without a delegate: shown

                assert hub.store is not None
                async with hub.store.connect() as conn:
                    moved = (
                        await conn.execute(select(audit_log).where(audit_log.c.action == "borging.moved"))
                    ).all()
                    changed = (
                        await conn.execute(
                            select(audit_log).where(audit_log.c.action == "signal.contact_changed")
                        )
                    ).all()
                assert len(moved) == 1 and len(changed) == 2

                again = await check_borging(hub)  # the daily check is idempotent
                assert all(not r.signal_ids for r in again)
                async with hub.store.connect() as conn:
                    queued = (
                        await conn.execute(
                            select(audit_log).where(audit_log.c.action == "mail.borging.queued")
                        )
                    ).all()
                assert len(queued) == 1
            finally:
                await hub.stop()


async def test_a_signal_past_its_end_date_stays_and_the_live_ones_still_move(
    kafka: EmbeddedKafka, db_url: str, unique: str
) -> None:
    # Nothing marks an ended signal VERLOPEN: borging used to pick it up as ACTIEF, its move was refused
    # (SignalNotActive), and that error rolled back and ended every caseworker's borging, each day.
    from sqlalchemy import update

    from tests.integration.test_mail_delivery import start_mail_hub

    away = ILSE.model_copy(
        update={"absences": [Absence(start=today() - timedelta(days=20), end=today() + timedelta(days=10))]}
    )
    async with smtp_sink() as sink:
        hub = await start_mail_hub(
            kafka, db_url, unique, sink, notify={"borging_after_days": 14, "borging_interval_s": 3600}
        )
        try:
            await add_caseworkers(hub, ILSE, OMAR)
            ended, _ = await signal_with_match(hub, "cw-ilse", youth(723_456_700))
            live, _ = await signal_with_match(hub, "cw-ilse", youth(823_456_700))
            assert hub.store is not None
            async with hub.store.transaction() as session:
                await session.execute(
                    update(signals)
                    .where(signals.c.signal_id == ended)
                    .values(end_date=today() - timedelta(days=35))
                )
            await add_caseworkers(hub, away)

            results = {r.caseworker_id: r for r in await check_borging(hub)}
            assert results["cw-ilse"].signal_ids == [live], results
            assert results["cw-ilse"].problem is None
            contacts = await _contacts(hub)
            assert contacts[live].startswith("cw-omar:") and contacts[ended].startswith("cw-ilse:")
        finally:
            await hub.stop()


async def test_one_caseworkers_failed_borging_is_shown_and_the_others_go_on(
    kafka: EmbeddedKafka, db_url: str, unique: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import hub.notify.borging as borging
    from hub.notify.borging import FAILED
    from tests.integration.test_mail_delivery import start_mail_hub

    away = ILSE.model_copy(
        update={"absences": [Absence(start=today() - timedelta(days=20), end=today() + timedelta(days=10))]}
    )
    lone = OMAR.model_copy(update={"caseworker_id": "cw-lone", "email": "lone@halt.nl", "active": False})
    real_borg = borging.borg

    async def borg(session: Any, hub: Any, caseworker_id: str, **kwargs: Any) -> Any:
        if caseworker_id == "cw-ilse":
            raise RuntimeError("the store went away")
        return await real_borg(session, hub, caseworker_id, **kwargs)

    async with smtp_sink() as sink:
        hub = await start_mail_hub(
            kafka, db_url, unique, sink, notify={"borging_after_days": 14, "borging_interval_s": 3600}
        )
        try:
            await add_caseworkers(hub, ILSE, OMAR, lone)
            await signal_with_match(hub, "cw-ilse", youth(923_456_700))
            await signal_with_match(hub, "cw-lone", youth(133_456_700))
            await add_caseworkers(hub, away)
            monkeypatch.setattr(borging, "borg", borg)

            results = {r.caseworker_id: r for r in await check_borging(hub)}
            assert results["cw-ilse"].problem and "RuntimeError" in results["cw-ilse"].problem
            assert results["cw-lone"].problem and "vervanger" not in results["cw-ilse"].problem
            assert await _problem(hub, FAILED, None)
            assert await _problem(hub, NO_DELEGATE, None)  # cw-lone's round ran after cw-ilse's failed
        finally:
            await hub.stop()


async def test_borging_that_would_come_back_to_the_caseworker_is_no_delegate(
    kafka: EmbeddedKafka, db_url: str, unique: str
) -> None:
    # Ilse is present with delegate Omar; Omar left (or is away long enough for borging to be due
    # for him too) with delegate Ilse. Following the delegates leads back to Ilse: a "move" to
    # herself audited, sent to the Verwijsindex and mailed is wrong.
    from tests.integration.test_directory_api import BASE, directory_app

    away = OMAR.model_copy(
        update={
            "delegate_id": "cw-ilse",
            "absences": [Absence(start=today() - timedelta(days=20), end=today() + timedelta(days=10))],
        }
    )
    async with directory_app(kafka, db_url, unique) as (hub, admin, _viewer):
        await add_caseworkers(hub, ILSE, away)
        signal_id, _ = await signal_with_match(hub, "cw-ilse", youth(143_456_700))
        assert hub.store is not None
        async with hub.store.connect() as conn:
            before = (await conn.execute(select(signals).where(signals.c.signal_id == signal_id))).one()

        r = await admin.post(f"{BASE}/cw-ilse/borging")
        assert r.status_code == 409, r.text  # the answer borging gives when there is no delegate
        assert r.json()["title"] == "No delegate"

        async with hub.store.connect() as conn:
            after = (await conn.execute(select(signals).where(signals.c.signal_id == signal_id))).one()
        assert after.caseworker_id == "cw-ilse" and after.contact == before.contact
        assert after.delivery_message_id == before.delivery_message_id  # nothing queued for the index
        assert not await _audited(hub, "borging.moved")
        assert not await _audited(hub, "signal.contact_changed")
        assert not await _audited(hub, "mail.borging.queued")
        assert await _problem(hub, NO_DELEGATE, None)  # shown to an administrator, as without a delegate


async def test_signals_move_to_the_delegate_away_for_a_day_and_past_one_borging_is_due_for(
    kafka: EmbeddedKafka, db_url: str, unique: str
) -> None:
    """Rule 17: the signals move to the delegate. They went to whoever read the mail that day: with
    Omar away for a day, Ilse's signals went to Fleur, his delegate, whom Ilse never named, and
    stayed there when Omar came back. Omar away a day still takes them (his mail goes to Fleur
    meanwhile); only past a delegate away long enough for borging to be due do they go further."""
    from tests.integration.test_directory_api import directory_app

    def away(cw: Any, days: int, **update: Any) -> Any:
        absence = Absence(start=today() - timedelta(days=days), end=today() + timedelta(days=1))
        return cw.model_copy(update={"absences": [absence], **update})

    fleur = OMAR.model_copy(
        update={"caseworker_id": "cw-fleur", "name": "Fleur Dekker", "email": "fleur@halt.nl"}
    )
    sara = ILSE.model_copy(update={"caseworker_id": "cw-sara", "name": "Sara Smit", "email": "sara@halt.nl"})
    async with directory_app(kafka, db_url, unique) as (hub, _admin, _viewer):
        await add_caseworkers(hub, ILSE, OMAR, fleur, sara)
        ilses, _ = await signal_with_match(hub, "cw-ilse", youth(153_456_700))
        saras, _ = await signal_with_match(hub, "cw-sara", youth(163_456_700))
        await add_caseworkers(hub, away(ILSE, 20), away(OMAR, 1, delegate_id="cw-fleur"))
        done = {r.caseworker_id: r for r in await check_borging(hub)}
        assert (done["cw-ilse"].delegate_id, done["cw-ilse"].signal_ids) == ("cw-omar", [ilses])
        assert "cw-omar" not in done  # away a day: not due for him
        assert (await _contacts(hub))[ilses].startswith("cw-omar:")

        # Omar away long now too: his signals (Ilse's among them) go to his delegate, and Sara's,
        # away as long, to Fleur past him
        await add_caseworkers(hub, away(OMAR, 20, delegate_id="cw-fleur"), away(sara, 20))
        done = {r.caseworker_id: r for r in await check_borging(hub)}
        assert (done["cw-omar"].delegate_id, done["cw-omar"].signal_ids) == ("cw-fleur", [ilses])
        assert (done["cw-sara"].delegate_id, done["cw-sara"].signal_ids) == ("cw-fleur", [saras])
        contacts = await _contacts(hub)
        assert contacts[ilses].startswith("cw-fleur:") and contacts[saras].startswith("cw-fleur:")


async def test_a_delegate_who_may_not_signal_takes_nothing_over_and_the_move_is_shown_as_no_delegate(
    kafka: EmbeddedKafka, db_url: str, unique: str
) -> None:
    # Rule 13: only a meldingsbevoegd caseworker is a signal's contact person. Borging handed Ilse's
    # signals to her delegate whatever they were; the index then named someone who may not signal.
    # Now the signals stay with Ilse and an administrator is told, as when there is no delegate; a
    # delegate whose phone number the index cannot take is no delegate either.
    from tests.integration.test_mail_delivery import start_mail_hub

    away = ILSE.model_copy(
        update={"absences": [Absence(start=today() - timedelta(days=20), end=today() + timedelta(days=10))]}
    )
    unfit = {
        "meldingsbevoegd": OMAR.model_copy(update={"meldingsbevoegd": False}),
        "telefoonnummer": OMAR.model_copy(update={"phone": "4567"}),  # one the index cannot take
    }
    async with smtp_sink() as sink:
        hub = await start_mail_hub(
            kafka, db_url, unique, sink, notify={"borging_after_days": 14, "borging_interval_s": 3600}
        )
        try:
            await add_caseworkers(hub, ILSE, OMAR)
            signal_id, _ = await signal_with_match(hub, "cw-ilse", youth(153_456_700))
            assert hub.store is not None
            async with hub.store.connect() as conn:
                before = (await conn.execute(select(signals).where(signals.c.signal_id == signal_id))).one()
            for why_not, delegate in unfit.items():
                await add_caseworkers(hub, away, delegate)
                results = {r.caseworker_id: r for r in await check_borging(hub)}
                assert results["cw-ilse"].problem and not results["cw-ilse"].signal_ids, why_not
                assert results["cw-ilse"].delegate_id is None
                async with hub.store.connect() as conn:
                    after = (
                        await conn.execute(select(signals).where(signals.c.signal_id == signal_id))
                    ).one()
                assert after.caseworker_id == "cw-ilse" and after.contact == before.contact, why_not
                assert after.delivery_message_id == before.delivery_message_id  # nothing for the index
                assert not await _audited(hub, "borging.moved")
                assert not await _audited(hub, "signal.contact_changed")
                assert not await _audited(hub, "mail.borging.queued")
                # shown as one problem, with why the delegate cannot take them over now
                async with hub.store.connect() as conn:
                    shown = (
                        await conn.execute(select(mail_problems).where(mail_problems.c.kind == NO_DELEGATE))
                    ).all()
                assert len(shown) == 1 and shown[0].caseworker_id == "cw-ilse", why_not
                assert why_not in shown[0].reason

            await add_caseworkers(hub, OMAR)  # once the delegate may take them over, they move
            results = {r.caseworker_id: r for r in await check_borging(hub)}
            assert (
                results["cw-ilse"].signal_ids == [signal_id] and results["cw-ilse"].delegate_id == "cw-omar"
            )
        finally:
            await hub.stop()


async def test_two_processes_finding_one_problem_at_once_keep_one_row(store: Store) -> None:
    # The second waits for the first's commit, then finds its row (PostgreSQL: the problem's advisory
    # lock; a row not yet committed is not seen, and nothing else held them apart when no signal was
    # locked, as for a failed borging). SQLite: write transactions run one at a time.
    from hub.notify.borging import FAILED
    from hub.notify.service import record_problem_once

    first_wrote = asyncio.Event()

    async def find(n: int) -> None:
        if n == 2:
            await first_wrote.wait()
        async with store.transaction() as session:
            await record_problem_once(
                session, kind=FAILED, caseworker_id="cw-ilse", reference=None,
                reason=f"borging mislukt ({n})", transaction_id=None,
            )  # fmt: skip
            if n == 1:
                first_wrote.set()
                await _until_another_waits_for_a_lock(store)  # the second process finds it meanwhile

    await asyncio.gather(find(1), find(2))
    async with store.connect() as conn:
        rows = (await conn.execute(select(mail_problems))).all()
    assert [(r.kind, r.caseworker_id, r.reason) for r in rows] == [(FAILED, "cw-ilse", "borging mislukt (2)")]


async def _until_another_waits_for_a_lock(store: Store) -> None:
    """PostgreSQL: until a session waits for a lock (the second process, on the problem's advisory
    lock), or five seconds (the code took none: then it wrote its row meanwhile, and the test says
    so). SQLite: the second waits for the store's one writer; a few turns of the loop let it."""
    if store.dialect != "postgresql":
        for _ in range(10):
            await asyncio.sleep(0)
        return

    async def waiting() -> bool:
        async with store.connect() as conn:
            q = text(
                "SELECT count(*) FROM pg_stat_activity"
                " WHERE wait_event_type = 'Lock' AND datname = current_database()"
            )
            return bool((await conn.execute(q)).scalar_one())

    with contextlib.suppress(AssertionError):
        await wait_for(waiting, timeout_s=5)


async def _no_delegate_rows(hub: Hub, caseworker_id: str) -> list[Any]:
    assert hub.store is not None
    async with hub.store.connect() as conn:
        query = select(mail_problems).where(
            mail_problems.c.kind == NO_DELEGATE, mail_problems.c.caseworker_id == caseworker_id
        )
        return list((await conn.execute(query)).all())


async def test_a_borging_without_delegate_is_one_problem_however_many_rounds_and_processes_find_it(
    kafka: EmbeddedKafka, db_url: str, unique: str
) -> None:
    # A departed caseworker with one signal and no delegate: every round (one a day, one at each start,
    # in every hub process) added an identical row, pushing other problems off the 200 listed.
    from hub.notify.service import list_problems, record_problem
    from tests.integration.test_mail_delivery import start_mail_hub

    lone = OMAR.model_copy(update={"caseworker_id": "cw-lone", "email": "lone@halt.nl"})
    async with smtp_sink() as sink:
        hub = await start_mail_hub(
            kafka, db_url, unique, sink, notify={"borging_after_days": 14, "borging_interval_s": 3600}
        )
        try:
            await add_caseworkers(hub, lone)
            await signal_with_match(hub, "cw-lone", youth(163_456_700))
            await wait_for(lambda: len(sink.memory) == 1)  # the match mail reached them
            await add_caseworkers(hub, lone.model_copy(update={"active": False}))  # gone, no delegate
            for _ in range(5):
                results = {r.caseworker_id: r for r in await check_borging(hub)}
                assert results["cw-lone"].problem and not results["cw-lone"].signal_ids
            [first] = await _no_delegate_rows(hub, "cw-lone")
            assert hub.store is not None
            async with hub.store.transaction() as session:  # another problem, found after it
                await record_problem(
                    session, kind="mail_niet_bezorgd", caseworker_id="cw-ilse", reference="n-1",
                    reason="mail niet bezorgd: SMTP 550: mailbox unavailable", transaction_id=None,
                )  # fmt: skip
            await asyncio.gather(check_borging(hub), check_borging(hub))  # two hub processes at once
            [again] = await _no_delegate_rows(hub, "cw-lone")
            assert again.id == first.id and again.at > first.at  # the same problem, found again since
            assert again.reason == first.reason and "1 actieve signalen" in again.reason
            async with hub.store.read() as session:
                listed = await list_problems(session)
            # listed once, and first: found again after the other one
            assert [p["kind"] for p in listed] == [NO_DELEGATE, "mail_niet_bezorgd"], listed
        finally:
            await hub.stop()


async def test_the_borging_mail_to_a_delegate_away_without_a_delegate_waits_for_them_and_reaches_them(
    kafka: EmbeddedKafka, db_url: str, unique: str
) -> None:
    """Omar, away for three days without a delegate of his own, takes Ilse's signals over (rule 17).
    The mail telling him so was not queued: a problem only an administrator could close, and the next
    round finds nothing to move, so nothing ever sent it. Now it is queued all the same, dead-lettered
    while nobody reads his mail, and his dead letter, replayed once he is back, reaches him."""
    from connectors.mail.problems import SENT
    from hub.notify.service import NO_RECIPIENT
    from hub.topics import NOTIFICATION_MAIL
    from schemas.envelope import Envelope
    from tests.helpers.kafka import read_topic
    from tests.integration.test_mail_delivery import start_mail_hub
    from tests.integration.test_mail_findings import replay_dead_letter

    ilse_away = ILSE.model_copy(
        update={"absences": [Absence(start=today() - timedelta(days=20), end=today() + timedelta(days=30))]}
    )
    omar_away = OMAR.model_copy(
        update={"absences": [Absence(start=today(), end=today() + timedelta(days=2))]}
    )
    async with smtp_sink() as sink:
        hub = await start_mail_hub(
            kafka, db_url, unique, sink, notify={"borging_after_days": 14, "borging_interval_s": 3600}
        )
        try:
            assert hub.store is not None
            await add_caseworkers(hub, ILSE, OMAR)
            signal_id, match_id = await signal_with_match(hub, "cw-ilse", youth(153_456_700))
            await wait_for(lambda: len(sink.memory) == 1)  # the match mail, to Ilse
            await add_caseworkers(hub, ilse_away, omar_away)

            [done] = [r for r in await check_borging(hub) if r.caseworker_id == "cw-ilse"]
            assert (done.delegate_id, done.signal_ids) == ("cw-omar", [signal_id])
            dead = await read_topic(kafka.bootstrap, hub.topic(NOTIFICATION_MAIL.dlq), expect=1, timeout_s=30)
            assert len(dead) == 1, "the borging mail was not queued, so it never reached the DLQ"
            payload = Envelope.from_bytes(dead[0].value).payload
            assert (payload["template"], payload["for_caseworker_id"]) == ("borging", "cw-omar")
            assert signal_id in payload["body_text"] and match_id in payload["body_text"]

            async def problems() -> list[Any]:
                async with hub.store.connect() as conn:  # type: ignore[union-attr]
                    return list((await conn.execute(select(mail_problems))).all())

            # one problem, of the mail itself (by its notification id, as the replay resolves it)
            shown = await wait_for(problems)
            assert [(p.kind, p.caseworker_id, p.reference) for p in shown] == [
                (NO_RECIPIENT, "cw-omar", payload["notification_id"])
            ]

            await add_caseworkers(hub, OMAR)  # back
            again = [r for r in await check_borging(hub) if r.caseworker_id == "cw-ilse"]
            assert all(not r.signal_ids for r in again)  # nothing left to move: the dead letter is the mail
            await replay_dead_letter(kafka, hub, dead[0])

            def summary() -> list[Any]:
                return [m for m in sink.memory if "Borging" in (m.subject or "")]

            [mail] = await wait_for(summary, timeout_s=30)
            assert mail.rcpt_to == ["omar@halt.nl"]
            text, _html = bodies(parse(mail.raw))
            assert signal_id in text and "Ilse Bakker" in text

            async def resolved() -> list[Any]:
                return [p for p in await problems() if p.resolved_at is not None]

            [closed] = await wait_for(resolved)
            assert (closed.reference, closed.resolved_how, closed.resolution) == (
                payload["notification_id"],
                "hub",
                SENT,
            )
        finally:
            await hub.stop()


async def _signals_with_matches(hub: Hub, owner: str, count: int, matches_each: int) -> list[str]:
    """`count` active signals of `owner`, each with `matches_each` matches, as the feed records them
    (nobody mailed about those matches here); their ids, in the order they were stored."""
    import uuid

    from sqlalchemy import insert

    from hub.signals import store_signal
    from hub.signals.tables import matches
    from schemas.caseworker import ContactDetails
    from schemas.envelope import utcnow
    from schemas.pseudonym import youth_key
    from schemas.signal import VerwijsindexSignal
    from tests.conftest import TEST_SECRET
    from tests.integration.test_notify_match import KEES

    assert hub.store is not None
    contact = ContactDetails(name="Ilse Bakker", organisation="Halt Den Haag", email="ilse@halt.nl")
    ids = []
    async with hub.store.transaction() as session:
        for i in range(count):
            young, signal_id = youth(100_000_000 + i * 1000), str(uuid.uuid4())
            signal = VerwijsindexSignal(
                signal_id=signal_id, youth=young, organisation="Halt Den Haag", caseworker=contact,
                caseworker_id=owner, created=today(), end_date=today() + timedelta(days=365),
                youth_informed_at=today(), parent_letter_sent_at=today(),
            )  # fmt: skip
            await store_signal(
                session, hub, signal, youth_key=youth_key(TEST_SECRET, young.bsn), user=owner,
                transaction_id=str(uuid.uuid4()),
            )  # fmt: skip
            ids.append(signal_id)
        rows = [
            {"match_id": f"m-{uuid.uuid4()}", "signal_id": signal_id, "type": "CLIENTMATCH",
             "counterparts": [KEES.model_dump(mode="json")], "received_at": utcnow()}
            for signal_id in ids
            for _ in range(matches_each)
        ]  # fmt: skip
        await session.execute(insert(matches), rows)
    return ids


async def test_the_borging_of_a_thousand_signals_moves_them_all_and_mails_the_first_hundred(
    kafka: EmbeddedKafka, db_url: str, unique: str
) -> None:
    """The borging mail listed every signal and match: past some 340 signals with two matches each it
    outgrew what a mail may hold, the borging rolled back, and every round failed the same way, the
    signals staying with a caseworker who had left. Now it names the first hundred of each, with the
    counts, and where the rest are seen; the audit entry still names them all."""
    from tests.integration.test_mail_delivery import start_mail_hub

    gone = ILSE.model_copy(update={"active": False})
    async with smtp_sink() as sink:
        hub = await start_mail_hub(
            kafka, db_url, unique, sink, notify={"borging_after_days": 14, "borging_interval_s": 3600}
        )
        try:
            await add_caseworkers(hub, ILSE, OMAR)
            moving = await _signals_with_matches(hub, "cw-ilse", 1000, 2)
            await add_caseworkers(hub, gone)

            [done] = [r for r in await check_borging(hub) if r.caseworker_id == "cw-ilse"]
            assert done.problem is None, done.problem
            assert (done.delegate_id, len(done.signal_ids), len(done.match_ids)) == ("cw-omar", 1000, 2000)
            owners = {v.split(":")[0] for v in (await _contacts(hub)).values()}
            assert owners == {"cw-omar"}
            [moved] = await _audited(hub, "borging.moved")
            assert len(moved.objects["signal_ids"]) == 1000 and len(moved.objects["match_ids"]) == 2000

            def summary() -> list[Any]:
                return [m for m in sink.memory if "Borging" in (m.subject or "")]

            [mail] = await wait_for(summary, timeout_s=30)
            assert mail.rcpt_to == ["omar@halt.nl"] and "1000" in mail.subject
            text, html = bodies(parse(mail.raw))
            assert len(text) < 25_000 and len(html) < 50_000
            assert "Overgenomen: 1000 signalen, 2000 open matches:" in text
            assert "- en nog 900 signalen" in text and "- en nog 1900 open matches" in text
            assert "overzicht van signalen in Aurah" in text and "overzicht van signalen in Aurah" in html
            assert {s for s in moving if s in text} == set(done.signal_ids[:100])
            assert sum(m in text for m in done.match_ids) == 100
            assert "Vermeulen" not in text and "Noah" not in text  # the youths' names stay out

            async def mails_queued() -> int:
                assert hub.store is not None
                async with hub.store.connect() as conn:
                    query = (
                        select(func.count())
                        .select_from(outbox)
                        .where(outbox.c.topic.like("%notification.mail%"))
                    )
                    return int((await conn.execute(query)).scalar_one())

            queued = await mails_queued()
            again = await check_borging(hub)  # nothing left to move, and no second mail queued
            assert all(not r.signal_ids and not r.problem for r in again)
            assert await mails_queued() == queued and len(summary()) == 1
        finally:
            await hub.stop()
