"""Problems for administrators are open until resolved: by the hub when it sees the cause go, or by an
administrator with a reason (audited); the list shows open ones by default; found again, one opens
again. Against SQLite and PostgreSQL, the real HTTP app, broker and SMTP server.

Before, a problem stayed listed for ever: a borging that got its delegate, a mail sent after a replay
of its dead letter, a caseworker whose directory entry was fixed.
"""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import select

from connectors.mail.problems import OUTAGE, REFUSED, SENT, WITHHELD, resolve_done
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
from hub.notify.service import NO_RECIPIENT, notify_caseworker
from hub.notify.tables import mail_problems
from hub.signals import request_withdrawal
from hub.signals.matches import REFUSED_MATCH
from hub.store import Store
from hub.store.tables import audit_log
from hub.topics import NOTIFICATION_MAIL, VERWIJSINDEX_MATCH
from schemas.caseworker import Absence
from schemas.envelope import Envelope, utcnow
from schemas.notification import MailNotification
from schemas.signal import WithdrawalReason
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
from tests.integration.test_notify_match import TODAY, signal_with_match, youth

pytestmark = pytest.mark.integration
PROBLEM_JSON = "application/problem+json"
A_BSN = "123456782"  # passes the elfproef
LONE = OMAR.model_copy(update={"caseworker_id": "cw-lone", "name": "Lone Ranger", "email": "lone@halt.nl"})
BACK = "borging niet meer nodig: de medewerker is in dienst en niet (meer) lang afwezig"
LONG_AWAY = [Absence(start=TODAY - timedelta(days=20), end=TODAY + timedelta(days=10))]


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
    from hub.directory import upsert_caseworker

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


# -- a notice nobody could read: resolved once queued for somebody after all ----------------------


async def test_a_notice_that_found_nobody_is_resolved_when_the_same_one_is_queued_after_all(
    store: Store,
) -> None:
    from hub.directory import upsert_caseworker

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
    assert done["resolution"] == "de melding is alsnog klaargezet om te versturen"


async def test_a_replayed_match_resolves_its_problem_when_mailed_or_when_its_signal_ended(
    kafka: EmbeddedKafka, db_url: str, unique: str
) -> None:
    async with smtp_sink() as sink:
        hub = await start_mail_hub(kafka, db_url, unique, sink)
        try:
            assert hub.store is not None
            await add_caseworkers(hub, LONE.model_copy(update={"active": False}))  # gone, no delegate
            mailed, _ = await signal_with_match(hub, "cw-lone", youth(233_456_700))
            ended, _ = await signal_with_match(hub, "cw-lone", youth(243_456_700))
            dead = await read_topic(
                kafka.bootstrap, hub.topic(VERWIJSINDEX_MATCH.dlq), expect=2, timeout_s=30
            )
            assert len(dead) == 2
            found = await wait_for(lambda: _two(_unreachable(hub.store)))  # type: ignore[arg-type]
            assert {(p["kind"], p["reference"]) for p in found} == {
                (NO_RECIPIENT, mailed),
                (NO_RECIPIENT, ended),
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

            assert await wait_for(resolved, timeout_s=30) == {
                mailed: "de melding is alsnog klaargezet om te versturen",
                ended: "niet meer nodig: het signaal is beëindigd",
            }
            assert await _unreachable(hub.store) == []  # type: ignore[arg-type]
            await wait_for(lambda: len(sink.memory) == 1, timeout_s=30)
            assert sink.memory[0].rcpt_to == ["lone@halt.nl"]
        finally:
            await hub.stop()


async def _unreachable(store: Store, status: Any = "open") -> list[dict[str, Any]]:
    """The problems of notices nobody could read (Lone, gone, has a borging problem too)."""
    return [p for p in await _listed(store, status) if p["kind"] == NO_RECIPIENT]


async def _two(problems: Any) -> list[dict[str, Any]]:
    found = await problems
    return found if len(found) == 2 else []
