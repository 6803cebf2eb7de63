"""Problems for administrators are open until resolved: by the hub when it sees the cause go, or by an
administrator with a reason (audited); the list shows open ones by default; found again, one opens
again. Against SQLite and PostgreSQL, the real HTTP app, broker and SMTP server.

Before, a problem stayed listed for ever: a borging that got its delegate, a mail sent after a replay
of its dead letter, a caseworker whose directory entry was fixed.
"""

from __future__ import annotations

import uuid
from datetime import date, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import delete, event, insert, select, update

import connectors.mail.component as mail_component
from connectors.mail.problems import OUTAGE, REFUSED, SENT, WITHHELD, resolve_done
from hub.clock import today
from hub.directory import upsert_caseworker
from hub.embedded import EmbeddedKafka
from hub.errors import PermanentError, TransientError
from hub.notify.borging import FAILED, NO_DELEGATE, check_borging
from hub.notify.problems import (
    ProblemAlreadyResolved,
    list_problems,
    record_problem,
    record_problem_once,
    resolve_problem,
)
from hub.notify.service import NO_RECIPIENT, NoReachableRecipient, notify_caseworker, resolve_unreachable
from hub.notify.tables import mail_problems, mail_sent
from hub.signals import request_withdrawal
from hub.signals.matches import REFUSED_MATCH
from hub.signals.tables import matches, signals
from hub.store import Store
from hub.store.tables import audit_log
from hub.topics import NOTIFICATION_MAIL, VERWIJSINDEX_MATCH
from schemas.caseworker import Absence
from schemas.envelope import Envelope, utcnow
from schemas.notification import MailNotification
from schemas.pseudonym import youth_key
from schemas.signal import SignalStatus, WithdrawalReason
from tests.conftest import TEST_SECRET
from tests.helpers.kafka import produce, read_topic, wait_for
from tests.integration.test_directory_api import BASE, directory_app
from tests.integration.test_mail_delivery import (
    ILSE,
    OMAR,
    add_caseworkers,
    queue_notices,
    smtp_sink,
    start_mail_hub,
)
from tests.integration.test_mail_findings import _envelope, connector_on_a_sink, replay_dead_letter
from tests.integration.test_mail_problems import SHORT
from tests.integration.test_notify_match import signal_with_match, youth

pytestmark = pytest.mark.integration
PROBLEM_JSON = "application/problem+json"
A_BSN = "123456782"  # passes the elfproef
LONE = OMAR.model_copy(update={"caseworker_id": "cw-lone", "name": "Lone Ranger", "email": "lone@halt.nl"})
BACK = "borging niet meer nodig: de medewerker is in dienst en niet (meer) afwezig"
LONG_AWAY = [Absence(start=today() - timedelta(days=20), end=today() + timedelta(days=10))]
TOPIC = "t.notification.mail.v1"
QUEUED = "de melding is alsnog klaargezet om te versturen"
ENDED = "niet meer nodig: het signaal is beëindigd"
PURGED = "niet meer nodig: het signaal is beëindigd en gewist"


async def _listed(store: Store, status: Any = "open") -> list[dict[str, Any]]:
    async with store.read() as session:
        return await list_problems(session, status)


def _ids(problems: list[dict[str, Any]]) -> list[int]:
    return [p["id"] for p in problems]


async def _problem(store: Store, problem_id: int) -> Any:
    async with store.connect() as conn:
        return (await conn.execute(select(mail_problems).where(mail_problems.c.id == problem_id))).one()


# -- an administrator resolves one, over HTTP ------------------------------------------------------


async def test_an_administrator_resolves_a_problem_with_a_reason_and_the_list_shows_open_ones_first(
    kafka: EmbeddedKafka, db_url: str, unique: str
) -> None:
    async with directory_app(kafka, db_url, unique) as (hub, admin, viewer):
        assert hub.store is not None
        async with hub.store.transaction() as s:
            refused = await record_problem(
                s, kind=REFUSED_MATCH, caseworker_id="cw-ilse", reference="m-1",
                reason="match overgeslagen op positie 1: type ontbreekt", transaction_id="tx-1",
            )  # fmt: skip
        async with hub.store.transaction() as s:
            outage = await record_problem(
                s, kind=OUTAGE, caseworker_id="cw-omar", reference="n-1",
                reason="mail niet verstuurd: de storing duurde te lang", transaction_id="tx-2",
            )  # fmt: skip
        listed = (await viewer.get(f"{BASE}/problemen")).json()["recorded"]
        assert _ids(listed) == [outage, refused]  # newest first
        assert all(
            p["status"] == "open" and p["resolvedAt"] is None and p["resolvedHow"] is None for p in listed
        )
        assert _ids((await viewer.get(f"{BASE}/problemen", params={"limit": 1})).json()["recorded"]) == [
            outage
        ]

        reason = {"reason": "gemeld bij de Verwijsindex (melding VI-2025-17)"}
        url = f"{BASE}/problemen/{refused}/oplossing"
        assert (await viewer.post(url, json=reason)).status_code == 403  # a viewer only reads
        unknown = await admin.post(f"{BASE}/problemen/{refused + outage + 1000}/oplossing", json=reason)
        assert unknown.status_code == 404 and unknown.headers["content-type"] == PROBLEM_JSON
        for bad in ({"reason": f"jongere {A_BSN} gemeld"}, {"reason": "ok"}, {}):
            refused_body = await admin.post(url, json=bad)
            assert refused_body.status_code in (400, 422), bad
            assert refused_body.headers["content-type"] == PROBLEM_JSON and A_BSN not in refused_body.text

        before = utcnow()
        done = await admin.post(url, json=reason)
        assert done.status_code == 200, done.text
        body = done.json()
        assert body["id"] == refused and body["status"] == "resolved"
        assert (body["resolvedBy"], body["resolvedHow"], body["resolution"]) == (
            "anna",
            "operator",
            reason["reason"],
        )
        assert before <= datetime.fromisoformat(body["resolvedAt"]) <= utcnow()

        # twice: said so, and the first resolution stands
        again = await admin.post(url, json={"reason": "nog een keer"})
        assert again.status_code == 409 and again.headers["content-type"] == PROBLEM_JSON
        assert "anna" in again.json()["detail"]
        assert (await _problem(hub.store, refused)).resolution == reason["reason"]

        assert _ids((await viewer.get(f"{BASE}/problemen")).json()["recorded"]) == [outage]  # open only
        resolved = (await viewer.get(f"{BASE}/problemen", params={"status": "resolved"})).json()["recorded"]
        assert resolved == [body]
        everything = (await viewer.get(f"{BASE}/problemen", params={"status": "all"})).json()["recorded"]
        assert [(p["id"], p["status"]) for p in everything] == [(outage, "open"), (refused, "resolved")]
        wrong = await viewer.get(f"{BASE}/problemen", params={"status": "dicht"})
        assert wrong.status_code == 400 and wrong.headers["content-type"] == PROBLEM_JSON

        async with hub.store.connect() as conn:
            audited = (
                await conn.execute(select(audit_log).where(audit_log.c.action == "problem.resolved"))
            ).all()
        [entry] = audited  # the refused attempts wrote nothing
        assert entry.user == "anna" and entry.on_behalf_of == "cw-ilse"
        assert entry.objects == {
            "problem_id": refused, "kind": REFUSED_MATCH, "caseworker_id": "cw-ilse", "reference": "m-1",
            "reason_length": len(reason["reason"]),
        }  # fmt: skip
        # the reason stays on the problem; the audit log, kept for years, names it and its length only
        assert "VI-2025-17" not in str(entry.objects)


async def test_a_problem_found_again_after_it_was_resolved_opens_again_and_the_old_one_stays(
    store: Store,
) -> None:
    async def find(n: int) -> None:
        async with store.transaction() as s:
            await record_problem_once(
                s, kind=FAILED, caseworker_id="cw-ilse", reference=None,
                reason=f"borging mislukt ({n})", transaction_id=None,
            )  # fmt: skip

    await find(1)
    [first] = await _listed(store)
    async with store.transaction() as s:
        await resolve_problem(
            s, first["id"], user="anna", reason="log bekeken", transaction_id=None, system="t"
        )
    await find(2)  # found again: open again, as a new problem
    [reopened] = await _listed(store)
    assert reopened["id"] != first["id"] and reopened["reason"] == "borging mislukt (2)"
    [old] = await _listed(store, "resolved")
    assert (old["id"], old["resolution"], old["reason"]) == (
        first["id"],
        "log bekeken",
        "borging mislukt (1)",
    )
    await find(3)  # while open, found again refreshes it: still one open row
    assert [(p["id"], p["reason"]) for p in await _listed(store)] == [(reopened["id"], "borging mislukt (3)")]
    with pytest.raises(ProblemAlreadyResolved):
        async with store.transaction() as s:
            await resolve_problem(
                s, first["id"], user="bob", reason="nogmaals", transaction_id=None, system="t"
            )


# -- borging: resolved by the hub once a borging shows the cause gone -------------------------------


async def test_borging_problems_are_resolved_when_the_signals_move_or_borging_is_no_longer_due(
    kafka: EmbeddedKafka, db_url: str, unique: str
) -> None:
    lotte = LONE.model_copy(
        update={"caseworker_id": "cw-lotte", "email": "lotte@halt.nl", "absences": LONG_AWAY}
    )
    async with directory_app(kafka, db_url, unique) as (hub, admin, viewer):
        assert hub.store is not None
        await add_caseworkers(hub, OMAR, LONE, lotte.model_copy(update={"absences": []}))
        await signal_with_match(hub, "cw-lone", youth(183_456_700))
        await signal_with_match(hub, "cw-lotte", youth(193_456_700))
        # Lone leaves and Lotte is away long, neither with a delegate
        await add_caseworkers(hub, LONE.model_copy(update={"active": False}), lotte)
        await check_borging(hub)

        async def open_borging() -> set[tuple[str, str]]:
            listed = (await viewer.get(f"{BASE}/problemen")).json()["recorded"]
            return {(p["caseworkerId"], p["kind"]) for p in listed}

        assert await open_borging() == {("cw-lone", NO_DELEGATE), ("cw-lotte", NO_DELEGATE)}

        # Lone gets a delegate and an administrator runs the borging: the signals move, solved
        put = await admin.put(f"{BASE}/cw-lone/vervanger", json={"delegate_id": "cw-omar"})
        assert put.status_code == 200, put.text
        assert (await viewer.get(f"{BASE}/problemen")).json()[
            "recorded"
        ]  # a directory change alone: still open
        moved = await admin.post(f"{BASE}/cw-lone/borging")
        assert moved.status_code == 200 and moved.json()["delegateId"] == "cw-omar", moved.text
        assert await open_borging() == {("cw-lotte", NO_DELEGATE)}

        # Lotte is back: the next round finds her borging not due, and solved
        assert (await admin.delete(f"{BASE}/cw-lotte/afwezigheden")).status_code == 200
        await check_borging(hub)
        assert await open_borging() == set()

        resolved = (await viewer.get(f"{BASE}/problemen", params={"status": "resolved"})).json()["recorded"]
        how = {p["caseworkerId"]: (p["resolvedHow"], p["resolvedBy"], p["resolution"]) for p in resolved}
        assert how == {
            "cw-lone": ("hub", "ketenhub.notify", "signalen overgedragen aan cw-omar"),
            "cw-lotte": ("hub", "ketenhub.notify", BACK),
        }  # fmt: skip


async def test_a_borging_problem_resolved_by_hand_opens_again_and_a_failure_goes_after_a_good_round(
    kafka: EmbeddedKafka, db_url: str, unique: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import hub.notify.borging as borging

    async with directory_app(kafka, db_url, unique) as (hub, admin, viewer):
        assert hub.store is not None
        await add_caseworkers(hub, LONE, ILSE, OMAR)
        await signal_with_match(hub, "cw-lone", youth(213_456_700))
        await signal_with_match(hub, "cw-ilse", youth(223_456_700))
        await add_caseworkers(
            hub, LONE.model_copy(update={"active": False}), ILSE.model_copy(update={"absences": LONG_AWAY})
        )
        real_borg = borging.borg

        async def failing(session: Any, hub: Any, caseworker_id: str, **kwargs: Any) -> Any:
            if caseworker_id == "cw-ilse":
                raise RuntimeError("the store went away")
            return await real_borg(session, hub, caseworker_id, **kwargs)

        monkeypatch.setattr(borging, "borg", failing)
        await check_borging(hub)
        listed = (await viewer.get(f"{BASE}/problemen")).json()["recorded"]
        by_kind = {p["kind"]: p for p in listed}
        assert set(by_kind) == {NO_DELEGATE, FAILED}

        # an administrator marks Lone's resolved, though nobody took the signals over
        lone = by_kind[NO_DELEGATE]
        done = await admin.post(
            f"{BASE}/problemen/{lone['id']}/oplossing", json={"reason": "team lead informed"}
        )
        assert done.status_code == 200, done.text
        monkeypatch.setattr(borging, "borg", real_borg)
        await check_borging(hub)  # Lone's borging still cannot be done: open again; Ilse's ran well
        listed = (await viewer.get(f"{BASE}/problemen")).json()["recorded"]
        assert [(p["kind"], p["caseworkerId"]) for p in listed] == [(NO_DELEGATE, "cw-lone")]
        assert listed[0]["id"] != lone["id"] and listed[0]["status"] == "open"
        resolved = (await viewer.get(f"{BASE}/problemen", params={"status": "resolved"})).json()["recorded"]
        assert {(p["id"], p["resolvedHow"], p["resolution"]) for p in resolved} == {
            (lone["id"], "operator", "team lead informed"),
            (by_kind[FAILED]["id"], "hub", "signalen overgedragen aan cw-omar"),
        }


async def test_a_borging_problem_of_a_caseworker_still_away_stays_open_until_they_are_back(
    kafka: EmbeddedKafka, db_url: str, unique: str
) -> None:
    """An administrator's borging for a caseworker away without a delegate, not yet long enough for the
    daily round, raised a problem; that round resolved it as not needed ("niet (meer) lang afwezig")
    while they were still away and nobody could take their signals over."""
    short = [Absence(start=today() - timedelta(days=2), end=today() + timedelta(days=3))]
    lotte = LONE.model_copy(update={"caseworker_id": "cw-lotte", "email": "lotte@halt.nl", "absences": short})
    async with directory_app(kafka, db_url, unique) as (hub, admin, _):
        assert hub.store is not None
        await add_caseworkers(hub, lotte.model_copy(update={"absences": []}))
        await signal_with_match(hub, "cw-lotte", youth(253_456_700))
        await add_caseworkers(hub, lotte)  # away for a few days, no delegate
        refused = await admin.post(f"{BASE}/cw-lotte/borging")
        assert refused.status_code == 409, refused.text
        [problem] = await _listed(hub.store)
        assert (problem["kind"], problem["caseworkerId"]) == (NO_DELEGATE, "cw-lotte")

        assert await check_borging(hub) == []  # not due: away, but not long
        assert _ids(await _listed(hub.store)) == [problem["id"]]  # still away, still nobody: open

        assert (await admin.delete(f"{BASE}/cw-lotte/afwezigheden")).status_code == 200  # back
        await check_borging(hub)
        assert await _listed(hub.store) == []
        [done] = await _listed(hub.store, "resolved")
        assert (done["id"], done["resolvedHow"], done["resolution"]) == (problem["id"], "hub", BACK)


# -- mails: resolved once the mail went after all ----------------------------------------------------


async def test_a_dead_lettered_mail_is_resolved_once_its_replay_is_sent(
    kafka: EmbeddedKafka, db_url: str, unique: str
) -> None:
    async with smtp_sink() as sink:
        hub = await start_mail_hub(kafka, db_url, unique, sink, policy=SHORT)
        try:
            assert hub.store is not None
            await add_caseworkers(hub, ILSE, OMAR)
            await sink.stop()  # SMTP down longer than the ladder lasts
            [lost] = await queue_notices(hub, 1)
            dead = await read_topic(kafka.bootstrap, hub.topic(NOTIFICATION_MAIL.dlq), expect=1, timeout_s=30)
            [problem] = await wait_for(lambda: _listed(hub.store))  # type: ignore[arg-type]
            assert (problem["kind"], problem["reference"]) == (OUTAGE, lost)

            await sink.start()  # back; the operator replays the dead letter, as the console says
            await replay_dead_letter(kafka, hub, dead[0])
            await wait_for(lambda: len(sink.memory) == 1, timeout_s=30)

            async def resolved() -> list[dict[str, Any]]:
                return await _listed(hub.store, "resolved")  # type: ignore[arg-type]

            [done] = await wait_for(resolved)
            assert not await _listed(hub.store)  # no longer listed by default
            assert done["id"] == problem["id"] and done["status"] == "resolved"
            assert (done["resolvedHow"], done["resolvedBy"], done["resolution"]) == (
                "hub",
                "mail-connector",
                SENT,
            )
        finally:
            await hub.stop()


async def test_a_mail_dead_lettered_again_replaces_its_older_problem_and_is_resolved_once_sent(
    store: Store,
) -> None:
    async with store.transaction() as s:
        await upsert_caseworker(s, ILSE)
        other = await record_problem(
            s, kind=REFUSED, caseworker_id="cw-omar", reference="n-other", reason="mail niet bezorgd: 550",
            transaction_id=None,
        )  # fmt: skip
    mail = MailNotification(
        recipient_caseworker_id="cw-ilse", for_caseworker_id="cw-ilse", template="notice",
        subject="Overdracht", body_text="Beste collega,\n\nOverdracht wacht.\n", case_reference="HO-1",
    )  # fmt: skip
    notice = _envelope(mail.model_dump(mode="json"))
    async with connector_on_a_sink(store) as (connector, sink):
        port = sink.port
        await sink.stop()
        with pytest.raises(TransientError) as outage:
            await connector.deliver(notice)
        async with store.transaction() as s:  # past the ladder's last rung
            await connector.on_dead(s, notice, str(outage.value))
        [first] = [p for p in await _listed(store) if p["reference"] == mail.notification_id]
        assert first["kind"] == OUTAGE

        await sink.start(port)
        sink.refuse["ilse@halt.nl"] = "550 5.1.1 mailbox unavailable"  # replayed: refused this time
        with pytest.raises(PermanentError) as refusal:
            await connector.deliver(notice)
        async with store.transaction() as s:
            await connector.on_dead(s, notice, str(refusal.value))
        [second] = [p for p in await _listed(store) if p["reference"] == mail.notification_id]
        assert second["kind"] == REFUSED and second["id"] != first["id"]
        [replaced] = await _listed(store, "resolved")
        assert replaced["id"] == first["id"] and replaced["resolvedHow"] == "hub"
        assert replaced["resolution"].startswith(f"vervangen door probleem {second['id']}")

        del sink.refuse["ilse@halt.nl"]  # the address mended; replayed once more: it goes
        await connector.deliver(notice)
        async with store.transaction() as s:
            await connector.on_delivered(s, notice)
        assert len(sink.memory) == 1
        assert _ids(await _listed(store)) == [other]  # another mail's problem stays open
        done = {p["id"]: p["resolution"] for p in await _listed(store, "resolved")}
        assert done[second["id"]] == SENT


async def test_a_mail_that_need_not_go_any_more_is_resolved_as_such(store: Store) -> None:
    async with store.transaction() as s:
        for ref in ("n-sent", "n-withheld", "n-waiting"):
            await record_problem(
                s, kind=REFUSED, caseworker_id="cw-ilse", reference=ref, reason="x", transaction_id=None
            )
    async with store.transaction() as s:
        await resolve_done(s, ["n-sent", "n-withheld"], {"n-withheld"}, by="mail-connector")
    assert [p["reference"] for p in await _listed(store)] == ["n-waiting"]
    done = {p["reference"]: p["resolution"] for p in await _listed(store, "resolved")}
    assert done == {"n-sent": SENT, "n-withheld": WITHHELD}


async def _a_signal_of(store: Store, caseworker_id: str, signal_id: str = "sig-1") -> str:
    """An active signal whose contact is `caseworker_id`, as the hub holds it; its youth key."""
    key, day = youth_key(TEST_SECRET, A_BSN), today()
    async with store.transaction() as s:
        await s.execute(
            insert(signals).values(
                signal_id=signal_id, youth_key=key, bsn=A_BSN, given_names="Sam", surname="Jansen",
                birth_date=date(2010, 1, 1), gender="MAN", municipality="Den Haag", organisation="Halt",
                caseworker_id=caseworker_id, contact={}, created=day, end_date=day + timedelta(days=365),
                status=SignalStatus.ACTIEF.value, delivery_state="delivered", attempt=0, updated_at=utcnow(),
            )
        )  # fmt: skip
    return key


async def _withdraw(store: Store, signal_id: str = "sig-1") -> None:
    async with store.transaction() as s:
        await s.execute(
            update(signals)
            .where(signals.c.signal_id == signal_id)
            .values(status=SignalStatus.INGETROKKEN_ONTERECHT.value)
        )


def _match_mail(caseworker_id: str, signal_id: str = "sig-1") -> tuple[Envelope, MailNotification]:
    mail = MailNotification(
        recipient_caseworker_id=caseworker_id, for_caseworker_id=caseworker_id, template="match",
        subject="Match", body_text="Beste collega,\n\nEen match.\n", case_reference=signal_id, match_id="m-1",
    )  # fmt: skip
    return _envelope(mail.model_dump(mode="json")), mail


async def _audited(store: Store, action: str) -> list[Any]:
    async with store.connect() as conn:
        return list((await conn.execute(select(audit_log).where(audit_log.c.action == action))).all())


@pytest.mark.parametrize("prepared", [True, False], ids=["prepared", "one-by-one"])
async def test_a_match_mail_whose_signal_ended_is_withheld_though_nobody_reads_its_caseworkers_mail(
    store: Store, prepared: bool
) -> None:
    """Dead-lettered as nobody read its caseworker's mail, then replayed once its signal had ended: the
    connector found it withheld and still looked for somebody to read it, so it was dead-lettered
    again, replay after replay, and its problem never closed."""
    async with store.transaction() as s:
        await upsert_caseworker(s, LONE.model_copy(update={"active": False}))  # gone, no delegate
    key = await _a_signal_of(store, "cw-lone")
    message, mail = _match_mail("cw-lone")
    async with connector_on_a_sink(store) as (connector, sink):
        if prepared:
            await connector.prepare([message])
        with pytest.raises(NoReachableRecipient) as nobody:
            await connector.deliver(message)
        async with store.transaction() as s:  # the ladder dead-letters it
            await connector.on_dead(s, message, str(nobody.value))
        [problem] = await _listed(store)
        assert (problem["kind"], problem["reference"]) == (NO_RECIPIENT, mail.notification_id)

        await _withdraw(store)  # the signal ended; then the operator replays the dead letter
        if prepared:
            await connector.prepare([message])
        await connector.deliver(message)  # withheld: nobody need read it
        async with store.transaction() as s:
            await connector.on_delivered(s, message)
        assert not sink.memory
    assert await _listed(store) == []
    [done] = await _listed(store, "resolved")
    assert (done["id"], done["resolvedHow"], done["resolution"]) == (problem["id"], "hub", WITHHELD)
    [withheld] = await _audited(store, "mail.withheld")
    assert withheld.youth_key == key and withheld.objects["notification_id"] == mail.notification_id
    assert await _audited(store, "mail.sent") == []


async def _purge(store: Store, signal_id: str = "sig-1") -> None:
    """What retention does to a signal past its term (hub.retention.purge): its matches and its row go."""
    async with store.transaction() as s:
        await s.execute(delete(matches).where(matches.c.signal_id == signal_id))
        await s.execute(delete(signals).where(signals.c.signal_id == signal_id))


@pytest.mark.parametrize("prepared", [True, False], ids=["prepared", "one-by-one"])
async def test_a_dead_lettered_match_mail_replayed_after_its_signal_was_purged_is_withheld(
    store: Store, prepared: bool
) -> None:
    """Nobody read the caseworker's mail; the signal ended and retention purged it; the administrator
    fixed the directory and replayed the dead letter, as its problem says. Finding no signal, the
    connector sent the counterpart's contact details after the signal's term (rule 16)."""
    async with store.transaction() as s:
        await upsert_caseworker(s, LONE.model_copy(update={"active": False}))  # gone, no delegate
    await _a_signal_of(store, "cw-lone")
    message, mail = _match_mail("cw-lone")
    async with connector_on_a_sink(store) as (connector, sink):
        if prepared:
            await connector.prepare([message])
        with pytest.raises(NoReachableRecipient) as nobody:
            await connector.deliver(message)
        async with store.transaction() as s:  # the ladder dead-letters it
            await connector.on_dead(s, message, str(nobody.value))
        [problem] = await _listed(store)

        await _purge(store)
        async with store.transaction() as s:
            await upsert_caseworker(s, LONE)  # the directory fixed; then the dead letter replayed
        if prepared:
            await connector.prepare([message])
        await connector.deliver(message)
        async with store.transaction() as s:
            await connector.on_delivered(s, message)
        assert not sink.memory
    assert await _listed(store) == []
    [done] = await _listed(store, "resolved")
    assert (done["id"], done["resolvedHow"], done["resolution"]) == (problem["id"], "hub", WITHHELD)
    [withheld] = await _audited(store, "mail.withheld")
    assert withheld.objects["notification_id"] == mail.notification_id
    assert withheld.objects["reason"] == "signal_purged"
    assert await _audited(store, "mail.sent") == []
    async with store.connect() as conn:
        assert (await conn.execute(select(mail_sent))).all() == []


@pytest.mark.parametrize("prepared", [True, False], ids=["prepared", "one-by-one"])
async def test_a_match_mail_sent_whose_record_failed_is_recorded_as_sent_though_its_signal_ended_since(
    store: Store, prepared: bool
) -> None:
    """Its next attempt records it without sending it again. Prepared, the round's lookup found its
    signal ended first and recorded it as withheld: the disclosure was not audited (rule 18)."""
    async with store.transaction() as s:
        await upsert_caseworker(s, ILSE)
    await _a_signal_of(store, "cw-ilse")
    message, mail = _match_mail("cw-ilse")
    async with connector_on_a_sink(store) as (connector, sink):
        await connector.deliver(message)
        with pytest.raises(RuntimeError):
            async with store.transaction() as s:
                await connector.on_delivered(s, message)
                raise RuntimeError("the commit failed")
        await _withdraw(store)
        if prepared:
            await connector.prepare([message])
        await connector.deliver(message)  # not sent again, nor withheld: it went
        async with store.transaction() as s:
            await connector.on_delivered(s, message)
        assert len(sink.memory) == 1
    [sent] = await _audited(store, "mail.sent")
    assert sent.objects["notification_id"] == mail.notification_id
    assert await _audited(store, "mail.withheld") == []
    async with store.connect() as conn:
        assert [r.notification_id for r in (await conn.execute(select(mail_sent))).all()] == [
            mail.notification_id
        ]


async def test_a_withheld_mail_is_forgotten_once_its_record_is_committed_and_not_before(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The connector kept every match mail it withheld for as long as the process ran. Forgotten too
    early, a round whose record together failed, recorded again one by one in the same transaction,
    would record the mail as sent."""
    async with store.transaction() as s:
        await upsert_caseworker(s, ILSE)
    await _a_signal_of(store, "cw-ilse")
    await _withdraw(store)
    message, mail = _match_mail("cw-ilse")
    async with connector_on_a_sink(store) as (connector, sink):
        await connector.deliver(message)
        with pytest.raises(RuntimeError):
            async with store.transaction() as s:  # the round's record rolled back: it stays parked
                await connector.on_delivered(s, message)
                raise RuntimeError("the commit failed")
        assert mail.notification_id in connector._withheld

        await connector.deliver(message)  # its next attempt
        async with store.transaction() as s:
            with pytest.raises(RuntimeError):
                async with s.begin_nested():  # the ladder records a round together in a savepoint
                    await connector.on_delivered_many(s, [message])
                    raise RuntimeError("another delivery of the round could not be recorded")
            assert mail.notification_id in connector._withheld  # released savepoint or not: not yet
            await connector.on_delivered(s, message)  # then each on its own, in the same transaction
        assert mail.notification_id not in connector._withheld  # committed: forgotten
        assert not sink.memory
        # prepared, and taken by another hub process: never recorded here, the oldest forgotten
        monkeypatch.setattr(mail_component, "_SENT_MAX", 2)
        others = [_match_mail("cw-ilse")[0] for _ in range(3)]
        await connector.prepare(others)
        assert len(connector._withheld) == 2
    assert len(await _audited(store, "mail.withheld")) == 1
    async with store.connect() as conn:
        assert (await conn.execute(select(mail_sent))).all() == []


# -- a notice nobody could read: resolved once queued for somebody after all ----------------------


async def test_a_notice_that_found_nobody_is_resolved_when_the_same_one_is_queued_after_all(
    store: Store,
) -> None:
    async with store.transaction() as s:
        await upsert_caseworker(s, LONE.model_copy(update={"active": False}))  # gone, no delegate
    context = {"subject": "Overdracht wacht", "detail": "Toestemming ontbreekt.", "case_reference": "HO-1"}
    tx, other_tx = str(uuid.uuid4()), str(uuid.uuid4())
    for transaction_id in (tx, other_tx):
        async with store.transaction() as s:
            assert (
                await notify_caseworker(
                    s, "t.notification.mail.v1", "cw-lone", "notice", context, transaction_id
                )
                is None
            )
    assert [(p["kind"], p["transactionId"]) for p in await _listed(store)] == [
        (NO_RECIPIENT, other_tx), (NO_RECIPIENT, tx)
    ]  # fmt: skip
    async with store.transaction() as s:
        await upsert_caseworker(s, LONE)  # the directory fixed
    async with store.transaction() as s:  # the first notice again (a replayed dead letter keeps its id)
        assert (
            await notify_caseworker(s, "t.notification.mail.v1", "cw-lone", "notice", context, tx) is not None
        )
    [still] = await _listed(store)  # the other notice was not queued: its problem stays
    assert still["transactionId"] == other_tx
    [done] = await _listed(store, "resolved")
    assert (done["transactionId"], done["resolvedHow"], done["resolvedBy"]) == (tx, "hub", "ketenhub.notify")
    assert done["resolution"] == QUEUED


def _match(match_id: str, signal_id: str = "sig-1") -> dict[str, Any]:
    """A match notice's context, as the notifier makes it (hub.notify.component.match_context)."""
    return {
        "match_type": "CLIENTMATCH", "match_id": match_id, "case_reference": signal_id,
        "counterparts": [{"name": "Kees", "organisation": "Jeugdhulp", "phone": "06 1234 5678"}],
    }  # fmt: skip


async def test_a_replayed_match_resolves_its_own_problem_not_those_of_other_matches_of_its_page(
    store: Store,
) -> None:
    """The matches of one page of the feed share its transaction id, and those on one signal its id:
    a match's problem was keyed by both, so replaying one match's dead letter resolved the problems of
    the others, whose dead letters still waited."""
    async with store.transaction() as s:
        await upsert_caseworker(s, LONE.model_copy(update={"active": False}))  # gone, no delegate
    tx = str(uuid.uuid4())  # the feed page's
    for match_id in ("m-1", "m-2", "m-3"):
        async with store.transaction() as s:
            assert await notify_caseworker(s, TOPIC, "cw-lone", "match", _match(match_id), tx) is None
    assert sorted(p["reference"] for p in await _listed(store)) == ["m-1", "m-2", "m-3"]
    undeliverable = {r.objects["match_id"] for r in await _audited(store, "mail.undeliverable")}
    assert undeliverable == {"m-1", "m-2", "m-3"}

    async with store.transaction() as s:
        await upsert_caseworker(s, LONE)  # the directory fixed
    async with store.transaction() as s:  # m-1's dead letter replayed: its mail is queued
        assert await notify_caseworker(s, TOPIC, "cw-lone", "match", _match("m-1"), tx) is not None
    async with store.transaction() as s:  # m-2's, its signal ended meanwhile (hub.notify.component)
        assert await resolve_unreachable(s, "sig-1", tx, ENDED, match_id="m-2") == 1
    assert [p["reference"] for p in await _listed(store)] == ["m-3"]  # its dead letter waits: open
    done = {p["reference"]: p["resolution"] for p in await _listed(store, "resolved")}
    assert done == {"m-1": QUEUED, "m-2": ENDED}


async def test_match_problems_recorded_by_their_signal_before_resolve_one_for_each_match_come_again(
    store: Store,
) -> None:
    """Recorded before a match's problem was keyed by its match, they have the signal's id as reference,
    and those of one page's matches on one signal cannot be told apart: each match that comes again
    resolves one (the oldest), so that as many stay open as its matches' dead letters still wait.
    Another page's, and another notice's that shares the reference, are not the match's."""
    async with store.transaction() as s:
        await upsert_caseworker(s, LONE)
    tx, other_tx = str(uuid.uuid4()), str(uuid.uuid4())
    nobody = "caseworker 'cw-lone' is away and has no reachable delegate"
    ids = []
    for transaction_id, template in ((tx, "match"), (tx, "match"), (other_tx, "match"), (tx, "notice")):
        async with store.transaction() as s:
            problem_id = await record_problem(
                s, kind=NO_RECIPIENT, caseworker_id="cw-lone", reference="sig-1",
                reason=f"geen mail verstuurd ({template}): {nobody}", transaction_id=transaction_id,
            )  # fmt: skip
            ids.append(problem_id)
    async with store.transaction() as s:  # one of them replayed: its mail is queued
        assert await notify_caseworker(s, TOPIC, "cw-lone", "match", _match("m-1"), tx) is not None
    assert _ids(await _listed(store, "resolved")) == [ids[0]]
    async with store.transaction() as s:  # the other, its signal ended meanwhile
        assert await resolve_unreachable(s, "sig-1", tx, ENDED, match_id="m-2") == 1
    assert sorted(_ids(await _listed(store))) == ids[2:]
    async with store.transaction() as s:  # a third match of that page: none of its left
        assert await resolve_unreachable(s, "sig-1", tx, ENDED, match_id="m-3") == 0
    assert sorted(_ids(await _listed(store))) == ids[2:]


async def test_a_notice_queued_for_nobody_all_the_same_looks_for_no_problem_to_resolve(
    store: Store,
) -> None:
    """Only a notice that is not queued when nobody reads it has a problem that says so. Every other
    (a handover's notices, queued all the same) looked for one, with an UPDATE each time."""
    async with store.transaction() as s:
        await upsert_caseworker(s, ILSE)
    context = {"subject": "Overdracht wacht", "detail": "Toestemming ontbreekt.", "case_reference": "HO-1"}
    updates: list[str] = []

    def seen(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        if statement.lstrip().upper().startswith("UPDATE MAIL_PROBLEMS"):
            updates.append(statement)

    event.listen(store.engine.sync_engine, "before_cursor_execute", seen)
    try:
        async with store.transaction() as s:
            mail = await notify_caseworker(
                s, TOPIC, "cw-ilse", "notice", context, str(uuid.uuid4()), queue_unreachable=True
            )
        assert mail is not None
        assert updates == []
        async with store.transaction() as s:  # a match notice may have found nobody before: it looks
            assert await notify_caseworker(s, TOPIC, "cw-ilse", "match", _match("m-1"), str(uuid.uuid4()))
        assert updates
    finally:
        event.remove(store.engine.sync_engine, "before_cursor_execute", seen)


async def test_a_replayed_match_resolves_its_problem_when_mailed_or_when_its_signal_ended(
    kafka: EmbeddedKafka, db_url: str, unique: str
) -> None:
    async with smtp_sink() as sink:
        hub = await start_mail_hub(kafka, db_url, unique, sink)
        try:
            assert hub.store is not None
            await add_caseworkers(hub, LONE.model_copy(update={"active": False}))  # gone, no delegate
            _, mailed = await signal_with_match(hub, "cw-lone", youth(233_456_700))
            ended, ended_match = await signal_with_match(hub, "cw-lone", youth(243_456_700))
            dead = await read_topic(
                kafka.bootstrap, hub.topic(VERWIJSINDEX_MATCH.dlq), expect=2, timeout_s=30
            )
            assert len(dead) == 2
            found = await wait_for(lambda: _two(_unreachable(hub.store)))  # type: ignore[arg-type]
            assert {(p["kind"], p["reference"]) for p in found} == {  # each match's own
                (NO_RECIPIENT, mailed),
                (NO_RECIPIENT, ended_match),
            }

            await add_caseworkers(hub, LONE)  # the directory fixed
            async with hub.store.transaction() as s:  # and one signal withdrawn meanwhile
                await request_withdrawal(
                    s,
                    hub,
                    ended,
                    WithdrawalReason.RISICO_WEG,
                    user="cw-lone",
                    transaction_id=str(uuid.uuid4()),
                )
            for record in dead:  # the operator replays both dead letters
                again = Envelope(
                    **(Envelope.from_bytes(record.value).model_dump() | {"message_id": str(uuid.uuid4())})
                )
                await produce(
                    kafka.bootstrap,
                    hub.topic(VERWIJSINDEX_MATCH.name),
                    [(record.key, again.to_bytes(), again.headers())],
                )

            async def resolved() -> dict[str, str]:
                done = await _unreachable(hub.store, "resolved")  # type: ignore[arg-type]
                return {p["reference"]: p["resolution"] for p in done} if len(done) == 2 else {}

            assert await wait_for(resolved, timeout_s=30) == {mailed: QUEUED, ended_match: ENDED}
            assert await _unreachable(hub.store) == []  # type: ignore[arg-type]
            await wait_for(lambda: len(sink.memory) == 1, timeout_s=30)
            assert sink.memory[0].rcpt_to == ["lone@halt.nl"]
        finally:
            await hub.stop()


async def test_a_replayed_match_whose_signal_was_purged_meanwhile_is_not_mailed(
    kafka: EmbeddedKafka, db_url: str, unique: str
) -> None:
    """A match came on the signal's last day; its caseworker was gone without a delegate, so it was
    dead-lettered with a problem; retention purged the signal the next day; the administrator fixed
    the directory and replayed the match, as the problem says. Finding no signal, the notifier mailed
    the match to the caseworker the match named: the counterpart's details after the term (rule 16)."""
    async with smtp_sink() as sink:
        hub = await start_mail_hub(kafka, db_url, unique, sink)
        try:
            assert hub.store is not None
            await add_caseworkers(hub, LONE.model_copy(update={"active": False}))  # gone, no delegate
            young = youth(253_456_700)
            signal_id, match_id = await signal_with_match(hub, "cw-lone", young)
            [dead] = await read_topic(
                kafka.bootstrap, hub.topic(VERWIJSINDEX_MATCH.dlq), expect=1, timeout_s=30
            )
            [problem] = await wait_for(lambda: _unreachable(hub.store))  # type: ignore[arg-type]
            assert problem["reference"] == match_id

            await _purge(hub.store, signal_id)  # the signal's term is over: retention purges it
            await add_caseworkers(hub, LONE)  # the directory fixed; the operator replays the letter
            again = Envelope(
                **(Envelope.from_bytes(dead.value).model_dump() | {"message_id": str(uuid.uuid4())})
            )
            await produce(
                kafka.bootstrap,
                hub.topic(VERWIJSINDEX_MATCH.name),
                [(dead.key, again.to_bytes(), again.headers())],
            )

            [done] = await wait_for(lambda: _unreachable(hub.store, "resolved"), timeout_s=30)  # type: ignore[arg-type]
            assert (done["id"], done["resolvedHow"], done["resolution"]) == (problem["id"], "hub", PURGED)
            [ignored] = await _audited(hub.store, "verwijsindex.match_ignored")
            assert ignored.youth_key == youth_key(TEST_SECRET, young.bsn)
            assert ignored.objects["match_id"] == match_id and ignored.objects["signal_id"] == signal_id
            assert ignored.objects["reason"] == "signal_purged"
            # nothing queued: the notice's queueing and this entry are one transaction with the handling
            assert await _audited(hub.store, "verwijsindex.match_disclosed") == []
            assert not sink.memory
        finally:
            await hub.stop()


async def _unreachable(store: Store, status: Any = "open") -> list[dict[str, Any]]:
    """The problems of notices nobody could read (Lone, gone, has a borging problem too)."""
    return [p for p in await _listed(store, status) if p["kind"] == NO_RECIPIENT]


async def _two(problems: Any) -> list[dict[str, Any]]:
    found = await problems
    return found if len(found) == 2 else []
