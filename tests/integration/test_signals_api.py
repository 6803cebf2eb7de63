"""The caseworker signal API: rules 11-15 at their boundaries, delivery status, audit, the parent letter."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, date, datetime, timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

from connectors.verwijsindex.contract import Organisatie, add_years
from connectors.verwijsindex.mapping import registratie_van
from hub.app import create_app
from hub.clock import local_day
from hub.directory import upsert_caseworker
from hub.embedded import EmbeddedKafka
from hub.partners import PartnerType, add_partner
from hub.runtime import Hub
from hub.signals.tables import signals
from hub.store.tables import audit_log
from hub.topics import VERWIJSINDEX_SIGNAL
from schemas.bsn import is_valid_bsn
from schemas.caseworker import Absence, Caseworker
from schemas.envelope import Envelope, utcnow
from schemas.pseudonym import youth_key
from schemas.signal import VerwijsindexSignal
from tests.conftest import TEST_SECRET, create_pg_database, drop_pg_database, make_settings, require_pg
from tests.helpers.kafka import read_topic
from tests.helpers.proxy import CuttableProxy

pytestmark = pytest.mark.integration
# The hub's clock stands still at the moment this module was imported: every date below is
# counted from the same day as the hub counts it, also when a run crosses midnight.
NOW = utcnow()
T = local_day(NOW)
BSN = "999990044"
URL = "/api/v1/signalen"
ILSE = {"X-Medewerker": "cw-ilse"}


def cw(
    cid: str, *, bevoegd: bool = True, delegate: str | None = None, phone: str | None = "070 123 4567"
) -> Caseworker:
    return Caseworker(
        caseworker_id=cid, name=f"Medewerker {cid}", email=f"{cid}@halt.nl", phone=phone,
        team="DEN_HAAG", meldingsbevoegd=bevoegd, delegate_id=delegate,
    )  # fmt: skip


def other_bsns(start: int = 200_000_000) -> Iterator[str]:
    """Valid BSNs other than BSN: other youths, for tests that register more than one signal (an
    organisation has one active signal per youth)."""
    n = start
    while True:
        n += 1
        if is_valid_bsn(str(n)) and str(n) != BSN:
            yield str(n)


def body(birth: date, *, bsn: str = BSN, **extra: Any) -> dict[str, Any]:
    youth = {
        "bsn": bsn, "given_names": "Sanne", "surname": "de Vries", "birth_date": birth.isoformat(),
        "gender": "VROUW", "municipality": "Den Haag",
    }  # fmt: skip
    return {
        "youth": youth,
        "youth_informed_at": T.isoformat(),
        "parent_letter_sent_at": T.isoformat(),
    } | extra


@pytest.fixture
async def api(kafka: EmbeddedKafka, db_url: str, unique: str) -> AsyncIterator[tuple[Hub, httpx.AsyncClient]]:
    async with _serving(kafka, db_url, unique) as served:
        yield served


@contextlib.asynccontextmanager
async def _serving(
    kafka: EmbeddedKafka, db_url: str, unique: str
) -> AsyncIterator[tuple[Hub, httpx.AsyncClient]]:
    """A started hub on `db_url` with Ilse, Omar and Nina in its directory, and a client of its API
    calling as the case system."""
    hub = Hub(make_settings(kafka, db_url, unique), registrars={}, clock=lambda: NOW)
    await hub.start()
    try:
        assert hub.store is not None
        async with hub.store.transaction() as session:
            await upsert_caseworker(session, cw("cw-ilse", delegate="cw-omar"))
            await upsert_caseworker(session, cw("cw-omar"))
            await upsert_caseworker(session, cw("cw-nina", bevoegd=False))
            _, aurah = await add_partner(session, "aurah", PartnerType.ZAAKSYSTEEM)
        app = create_app(hub.settings, hub=hub)
        transport = httpx.ASGITransport(app=app)
        system = {"Authorization": f"Bearer {aurah}"}  # the case system calls on the caseworker's behalf
        async with httpx.AsyncClient(transport=transport, base_url="http://hub", headers=system) as client:
            yield hub, client
    finally:
        await hub.stop()


async def test_register_rules_11_to_14_at_their_boundaries(api: tuple[Hub, httpx.AsyncClient]) -> None:
    hub, client = api
    fifteen = add_years(T, -15)
    youths, accepted = other_bsns(), []

    async def post(payload: dict[str, Any], headers: dict[str, str] = ILSE) -> httpx.Response:
        payload["youth"]["bsn"] = next(youths)  # each its own youth: one active signal per youth
        answer = await client.post(URL, json=payload, headers=headers)
        if answer.status_code == 201:
            accepted.append(payload["youth"]["bsn"])
        return answer

    assert (await post(body(fifteen), {})).status_code == 401
    assert (await post(body(fifteen), {"X-Medewerker": "cw-nina"})).status_code == 403  # rule 13
    # rule 11: a field outside the whitelist is refused (400, naming it), its value never echoed
    leaky = body(fifteen)
    leaky["youth"] = leaky["youth"] | {"reason": "DIEFSTAL"}
    for bad in (leaky, body(fifteen, offence="winkeldiefstal"), body(fifteen, screening="hoog")):
        answer = await post(bad)
        assert answer.status_code == 400 and answer.headers["content-type"].startswith(
            "application/problem+json"
        )
        assert "DIEFSTAL" not in answer.text and "winkeldiefstal" not in answer.text
        assert bad["youth"]["bsn"] not in answer.text

    # rule 12: default created + 1 year; created + 2 years is the last allowed day
    ok = await post(body(fifteen))
    assert ok.status_code == 201 and ok.json()["end_date"] == add_years(T, 1).isoformat()
    assert accepted[-1] not in ok.text
    assert (await post(body(fifteen, end_date=add_years(T, 2).isoformat()))).status_code == 201
    too_late = await post(body(fifteen, end_date=(add_years(T, 2) + timedelta(days=1)).isoformat()))
    assert too_late.status_code == 422 and too_late.json()["invalidParams"][0]["name"] == "end_date"
    # ... and at most the 23rd birthday (here 100 days away)
    almost_23 = add_years(T + timedelta(days=100), -23)
    assert (await post(body(almost_23))).json()["end_date"] == (T + timedelta(days=100)).isoformat()
    birthday = (T + timedelta(days=100)).isoformat()
    assert (await post(body(almost_23, end_date=birthday))).status_code == 201
    over = (T + timedelta(days=101)).isoformat()
    assert (await post(body(almost_23, end_date=over))).status_code == 422
    assert (await post(body(add_years(T, -23)))).status_code == 422  # 23 today: too old
    # dates near the calendar's end: working out the default end date raised "year out of range", a 500
    for odd, fields in (
        (body(date(9990, 1, 1)), ["youth.birth_date"]),
        (body(fifteen, created="9999-12-31"), ["created", "youth.birth_date"]),  # and 23 by then
    ):
        refused = await post(odd)
        assert refused.status_code == 422, refused.text
        assert [p["name"] for p in refused.json()["invalidParams"]] == fields

    # rule 14: 12+ must be informed; under 16 the parent letter went out; or a deferral reason
    twelve_today, eleven = add_years(T, -12), add_years(T, -12) + timedelta(days=1)
    sixteen_today, almost_16 = add_years(T, -16), add_years(T, -16) + timedelta(days=1)
    assert (await post(body(twelve_today, youth_informed_at=None))).status_code == 422
    assert (await post(body(eleven, youth_informed_at=None))).status_code == 201
    assert (await post(body(almost_16, parent_letter_sent_at=None))).status_code == 422
    assert (await post(body(sixteen_today, parent_letter_sent_at=None))).status_code == 201
    deferred = body(
        twelve_today, youth_informed_at=None, parent_letter_sent_at=None, deferral_reason="crisis"
    )
    assert (await post(deferred)).status_code == 201
    # by the youth's age today, when it is sent, and on the creation date, whichever asks more: a
    # creation date set back made a 12-year-old 11 (and asked nothing of a 16-year-old then 15)
    a_month_back = (T - timedelta(days=30)).isoformat()
    for backdated, field in (
        (body(twelve_today, youth_informed_at=None, created=a_month_back), "youth_informed_at"),
        (body(sixteen_today, parent_letter_sent_at=None, created=a_month_back), "parent_letter_sent_at"),
    ):
        refused = await post(backdated)
        assert refused.status_code == 422, refused.text
        assert [p["name"] for p in refused.json()["invalidParams"]] == [field], refused.text

    # every accepted signal is one register command on the topic, keyed by the youth key
    records = await read_topic(hub.bootstrap, hub.topic(VERWIJSINDEX_SIGNAL.name), expect=7, settle_s=0.3)
    assert len(records) == 7 == len(accepted)
    assert sorted(r.key for r in records) == sorted(youth_key(TEST_SECRET, b).encode() for b in accepted)
    assert {Envelope.from_bytes(r.value).type for r in records} == {"RegisterSignal"}


async def test_dates_are_counted_in_the_dutch_calendar_day(api: tuple[Hub, httpx.AsyncClient]) -> None:
    hub, client = api
    # 23:30 UTC on 31 December is already 1 January in Den Haag: the signal is created on that day.
    hub.clock = lambda: datetime(2025, 12, 31, 23, 30, tzinfo=UTC)
    informed = {"youth_informed_at": "2026-01-01", "parent_letter_sent_at": "2025-12-31"}
    answer = await client.post(URL, json=body(date(2011, 5, 5), **informed), headers=ILSE)
    assert answer.status_code == 201, answer.text
    assert answer.json()["created"] == "2026-01-01" and answer.json()["end_date"] == "2027-01-01"
    # ... and a day after Den Haag's today is in the future
    early = informed | {"youth_informed_at": "2026-01-02"}
    too_soon = await client.post(URL, json=body(date(2011, 5, 5), **early), headers=ILSE)
    assert too_soon.status_code == 422 and too_soon.json()["invalidParams"][0]["name"] == "youth_informed_at"


async def test_a_municipality_longer_than_the_verwijsindex_takes_is_refused_on_its_field(
    api: tuple[Hub, httpx.AsyncClient],
) -> None:
    """The index and the signals table take a municipality of 100 characters: one of 101-200 was
    answered 500 on PostgreSQL, and on SQLite kept (201) and its registration dead-lettered."""
    hub, client = api
    youths = other_bsns()
    fits, too_long = body(add_years(T, -15), bsn=next(youths)), body(add_years(T, -15), bsn=next(youths))
    fits["youth"]["municipality"] = "Gemeente " + "x" * 91
    too_long["youth"]["municipality"] = "Gemeente " + "y" * 92
    refused = await client.post(URL, json=too_long, headers=ILSE)
    assert refused.status_code == 400, refused.text
    assert [p["name"] for p in refused.json()["invalidParams"]] == ["youth.municipality"]
    assert "y" * 92 not in refused.text and await _signal_count(hub) == 0
    made = await client.post(URL, json=fits, headers=ILSE)
    assert made.status_code == 201, made.text
    assert made.json()["municipality"] == fits["youth"]["municipality"]
    [command] = await read_topic(hub.bootstrap, hub.topic(VERWIJSINDEX_SIGNAL.name), expect=1, settle_s=0.3)
    signal = VerwijsindexSignal.model_validate(Envelope.from_bytes(command.value).payload)
    sent = registratie_van(signal, Organisatie(code="halt-den-haag", naam=signal.organisation))
    assert sent.jeugdige.gemeente == fits["youth"]["municipality"]  # the index takes it


async def test_whoever_reads_the_contacts_mail_down_a_chain_of_delegates_may_open_the_signal(
    api: tuple[Hub, httpx.AsyncClient],
) -> None:
    """Ilse is away, her delegate Omar too, his delegate is Pim: Ilse's match mails go to Pim, who got
    403 opening and withdrawing the signal they named (only the direct delegate was let in)."""
    hub, client = api
    sid = (await client.post(URL, json=body(add_years(T, -15)), headers=ILSE)).json()["signal_id"]
    pim = {"X-Medewerker": "cw-pim"}
    away = [Absence(start=T - timedelta(days=2), end=T + timedelta(days=5))]
    assert hub.store is not None
    async with hub.store.transaction() as session:
        await upsert_caseworker(session, cw("cw-pim"))
    assert (await client.get(f"{URL}/{sid}", headers=pim)).status_code == 403  # no part in it yet
    async with hub.store.transaction() as session:
        await upsert_caseworker(
            session, cw("cw-ilse", delegate="cw-omar").model_copy(update={"absences": away})
        )
        omar = cw("cw-omar", delegate="cw-pim").model_copy(update={"absences": away})
        await upsert_caseworker(session, omar)
    assert (await client.get(f"{URL}/{sid}", headers=pim)).status_code == 200
    assert (await client.get(f"{URL}/{sid}", headers={"X-Medewerker": "cw-nina"})).status_code == 403
    done = await client.post(f"{URL}/{sid}/intrekking", json={"reason": "RISICO_WEG"}, headers=pim)
    assert done.status_code == 200, done.text


async def test_read_withdraw_change_contact_audited(api: tuple[Hub, httpx.AsyncClient]) -> None:
    hub, client = api
    created = (await client.post(URL, json=body(add_years(T, -15)), headers=ILSE)).json()
    sid = created["signal_id"]
    tx = str(uuid.uuid4())
    read = await client.get(f"{URL}/{sid}", headers=ILSE | {"Fsc-Transaction-Id": tx})
    assert read.status_code == 200
    assert read.json()["delivery"] == {
        "state": "queued", "command": "RegisterSignal", "attempt": 0, "next_try_at": None,
        "last_error": None, "delivered_at": None,
    }  # fmt: skip
    assert (await client.get(f"{URL}/{sid}", headers={"X-Medewerker": "cw-nina"})).status_code == 403
    assert (
        await client.get(f"{URL}/{sid}", headers={"X-Medewerker": "cw-omar"})
    ).status_code == 200  # delegate

    # rule 15: a reason, and only one of the two
    assert (await client.post(f"{URL}/{sid}/intrekking", json={}, headers=ILSE)).status_code == 400
    wrong = await client.post(f"{URL}/{sid}/intrekking", json={"reason": "ANDERS"}, headers=ILSE)
    assert wrong.status_code == 400
    moved = await client.patch(f"{URL}/{sid}/contactpersoon", json={"caseworker_id": "cw-omar"}, headers=ILSE)
    assert moved.status_code == 200 and moved.json()["contact"]["name"] == "Medewerker cw-omar"
    done = await client.post(
        f"{URL}/{sid}/intrekking", json={"reason": "ONTERECHT"}, headers={"X-Medewerker": "cw-omar"}
    )
    assert done.status_code == 200 and done.json()["status"] == "INGETROKKEN_ONTERECHT"
    again = await client.post(
        f"{URL}/{sid}/intrekking", json={"reason": "RISICO_WEG"}, headers={"X-Medewerker": "cw-omar"}
    )
    assert again.status_code == 409

    records = await read_topic(hub.bootstrap, hub.topic(VERWIJSINDEX_SIGNAL.name), expect=3)
    types = [Envelope.from_bytes(r.value).type for r in sorted(records, key=lambda r: r.offset)]
    assert types == [
        "RegisterSignal",
        "ChangeSignalContact",
        "WithdrawSignal",
    ]  # one key: one partition, in order
    assert hub.store is not None
    async with hub.store.connect() as conn:
        audit = (await conn.execute(select(audit_log).order_by(audit_log.c.id))).all()
    actions = [a.action for a in audit]
    assert (
        actions.count("signal.read") == 2
        and "signal.contact_changed" in actions
        and "signal.withdrawn" in actions
    )
    assert any(a.action == "signal.read" and a.transaction_id == tx for a in audit)


async def test_a_signal_refused_to_one_who_neither_holds_it_nor_stands_in_is_audited(
    api: tuple[Hub, httpx.AsyncClient],
) -> None:
    """A 403 to reading, withdrawing, re-assigning a signal or reading its matches wrote no audit
    entry: a privacy officer could not see who tried to open a youth's signal. Now each is audited
    under the youth's key, with who tried and which signal; nothing of the request is kept."""
    hub, client = api
    created = (await client.post(URL, json=body(add_years(T, -15)), headers=ILSE)).json()
    sid, nina = created["signal_id"], {"X-Medewerker": "cw-nina"}
    tries = (
        ("get", f"{URL}/{sid}", None),
        ("post", f"{URL}/{sid}/intrekking", {"reason": "ONTERECHT"}),
        ("patch", f"{URL}/{sid}/contactpersoon", {"caseworker_id": "cw-nina"}),
        ("get", f"{URL}/{sid}/matches", None),
        ("get", f"{URL}/{sid}/ouderbrief", None),
    )
    for method, url, sent in tries:
        refused = await client.request(method, url, json=sent, headers=nina)
        assert refused.status_code == 403, (url, refused.text)
        assert refused.json()["detail"] == "Alleen de contactpersoon of diens vervanger ziet dit signaal."
    assert hub.store is not None
    async with hub.store.connect() as conn:
        audit = (await conn.execute(select(audit_log).order_by(audit_log.c.id))).all()
    key = created["youth_key"]
    assert [(a.action, a.user, a.youth_key, a.objects) for a in audit if a.action.endswith("_refused")] == [
        (action, "cw-nina", key, {"reason": "not_on_case", "signal_id": sid})
        for action in (
            "signal.read_refused",
            "signal.withdraw_refused",
            "signal.contact_change_refused",
            "signal.matches_read_refused",
            "signal.parent_letter_refused",
        )
    ]
    still = await client.get(f"{URL}/{sid}", headers=ILSE)
    assert still.json()["status"] == "ACTIEF" and still.json()["contact"]["name"] == "Medewerker cw-ilse"


async def test_parent_letter_html_and_pdf_without_reason(api: tuple[Hub, httpx.AsyncClient]) -> None:
    _, client = api
    sid = (await client.post(URL, json=body(add_years(T, -14)), headers=ILSE)).json()["signal_id"]
    page = await client.get(f"{URL}/{sid}/ouderbrief", headers=ILSE)
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    text = page.text
    assert "Sanne de Vries" in text and "Medewerker cw-ilse" in text and sid in text
    for forbidden in ("DIEFSTAL", "delict", "feit", "reden van", "signaleringsinstrument"):
        assert forbidden.lower() not in text.lower()
    pdf = await client.get(f"{URL}/{sid}/ouderbrief", headers=ILSE | {"Accept": "application/pdf"})
    assert pdf.status_code == 200 and pdf.headers["content-type"] == "application/pdf"
    assert pdf.content.startswith(b"%PDF") and pdf.content.rstrip().endswith(b"%%EOF")
    assert int(pdf.headers["content-length"]) == len(pdf.content)
    assert pdf.headers["content-disposition"] == f'inline; filename="ouderbrief-{sid}.pdf"'


async def test_a_caseworker_id_alone_opens_nothing(api: tuple[Hub, httpx.AsyncClient]) -> None:
    hub, client = api
    assert hub.store is not None
    async with hub.store.transaction() as session:
        _, police = await add_partner(session, "politie-x", PartnerType.POLITIE)
    no_key = await client.get(f"{URL}/unknown", headers={**ILSE, "Authorization": ""})
    assert no_key.status_code == 401 and no_key.headers["content-type"] == "application/problem+json"
    other = await client.get(f"{URL}/unknown", headers={**ILSE, "Authorization": f"Bearer {police}"})
    assert other.status_code == 403  # a partner key of another kind does not speak for caseworkers
    unknown = await client.get(f"{URL}/unknown", headers={"X-Medewerker": "cw-nobody"})
    assert unknown.status_code == 401
    assert (await client.get(f"{URL}/unknown", headers=ILSE)).status_code == 404  # key and caseworker: in


async def test_a_control_character_is_refused_before_it_reaches_the_store(
    api: tuple[Hub, httpx.AsyncClient],
) -> None:
    """PostgreSQL cannot store a NUL (it answered 500); SQLite kept it. Now both refuse it, named."""
    hub, client = api
    for char in ("\x00", "\x1b"):
        sent = body(add_years(T, -15))
        sent["youth"]["surname"] = f"de{char}Vries"
        answer = await client.post(URL, json=sent, headers=ILSE)
        assert answer.status_code == 400, answer.text
        (param,) = answer.json()["invalidParams"]
        assert param["name"] == "youth.surname" and param["reason"] == "bevat een stuurteken (zoals NUL)"
        assert "Vries" not in answer.text
    assert hub.store is not None
    async with hub.store.connect() as conn:
        assert (await conn.execute(select(func.count()).select_from(signals))).scalar_one() == 0
    # an id or a filter with a control character: refused before any lookup, the address not echoed
    for address in (f"{URL}/abc%00def", f"{URL}/abc%1Bdef", f"{URL}/abc?status=%00", f"{URL}/abc?x=a+b%7F"):
        answer = await client.get(address, headers=ILSE)
        assert answer.status_code == 400, (address, answer.text)
        assert answer.headers["content-type"].startswith("application/problem+json")
        assert answer.headers["Fsc-Transaction-Id"]
        assert "abc" not in answer.text and answer.json()["invalidParams"][0]["name"] in ("(pad)", "(query)")
    assert (await client.get(f"{URL}/abc%20def", headers=ILSE)).status_code == 404  # a space is no control


async def test_two_withdrawals_at_the_same_moment_send_one_command(
    api: tuple[Hub, httpx.AsyncClient],
) -> None:
    """Both read the signal active, then wrote: on PostgreSQL each queued a WithdrawSignal for the
    Verwijsindex and was audited. Now the second waits for the first and is told it is too late."""
    hub, client = api
    for round_ in range(3):
        sid = (await client.post(URL, json=body(add_years(T, -15)), headers=ILSE)).json()["signal_id"]
        withdraw = {"reason": "ONTERECHT"}
        both = await asyncio.gather(
            *[client.post(f"{URL}/{sid}/intrekking", json=withdraw, headers=ILSE) for _ in "ab"]
        )
        assert sorted(r.status_code for r in both) == [200, 409], (round_, [r.text for r in both])
        assert hub.store is not None
        async with hub.store.connect() as conn:
            audited = (
                await conn.execute(select(audit_log).where(audit_log.c.action == "signal.withdrawn"))
            ).all()
        assert [a.objects["signal_id"] for a in audited].count(sid) == 1
    commands = await read_topic(hub.bootstrap, hub.topic(VERWIJSINDEX_SIGNAL.name), expect=6, settle_s=0.3)
    assert (
        sorted(Envelope.from_bytes(r.value).type for r in commands)
        == ["RegisterSignal"] * 3 + ["WithdrawSignal"] * 3
    )


async def _signal_count(hub: Hub) -> int:
    assert hub.store is not None
    async with hub.store.connect() as conn:
        return int((await conn.execute(select(func.count()).select_from(signals))).scalar_one())


async def test_a_post_sent_again_with_its_idempotency_key_makes_no_second_signal(
    api: tuple[Hub, httpx.AsyncClient],
) -> None:
    """A client whose POST timed out sends it again: without a key that registers the youth twice
    (two signals in the Verwijsindex, matched against each other); with the key it gets the first."""
    hub, client = api
    key = {"Idempotency-Key": str(uuid.uuid4())}
    sent = body(add_years(T, -15))
    first = await client.post(URL, json=sent, headers=ILSE | key)
    again = await client.post(URL, json=sent, headers=ILSE | key)
    assert (first.status_code, again.status_code) == (201, 201), again.text
    assert again.json() == first.json()
    assert "Idempotent-Replayed" not in first.headers and again.headers["Idempotent-Replayed"] == "true"
    assert await _signal_count(hub) == 1
    assert hub.store is not None
    async with hub.store.connect() as conn:
        reads = (await conn.execute(select(audit_log).where(audit_log.c.action == "signal.read"))).all()
    assert [(r.user, r.objects["signal_id"]) for r in reads] == [("cw-ilse", first.json()["signal_id"])]

    # the same key with another request: refused, nothing made
    other = await client.post(URL, json=sent | {"deferral_reason": "anders"}, headers=ILSE | key)
    assert other.status_code == 422 and "Idempotency-Key" in other.json()["title"]
    # another caseworker's key is their own; a new key is a new request (each on another youth: the
    # same youth again is refused while its first signal is active)
    youths = other_bsns()
    omar_sent, new_sent = body(add_years(T, -15), bsn=next(youths)), body(add_years(T, -15), bsn=next(youths))
    omar = await client.post(URL, json=omar_sent, headers={"X-Medewerker": "cw-omar"} | key)
    new = await client.post(URL, json=new_sent, headers=ILSE | {"Idempotency-Key": str(uuid.uuid4())})
    assert (omar.status_code, new.status_code) == (201, 201)
    assert len({first.json()["signal_id"], omar.json()["signal_id"], new.json()["signal_id"]}) == 3
    commands = await read_topic(hub.bootstrap, hub.topic(VERWIJSINDEX_SIGNAL.name), expect=3, settle_s=0.3)
    assert [Envelope.from_bytes(r.value).type for r in commands] == ["RegisterSignal"] * 3


async def test_a_post_whose_commit_answer_was_lost_says_it_may_be_kept_and_its_resend_makes_none(
    kafka: EmbeddedKafka, unique: str
) -> None:
    """PostgreSQL kept the signal, and the connection broke before the hub heard so. The 503 said
    "nothing was kept": a caseworker believing it sends the request again, and without the key gets
    a second signal. It now says the signal may be kept and to send it again with the same key."""
    await require_pg()
    url = await create_pg_database(f"kh_{unique}")
    host, port = url.rsplit("@", 1)[1].split("/", 1)[0].rsplit(":", 1)
    proxy = CuttableProxy(int(port))
    await proxy.start()
    try:
        proxied = url.replace(f"@{host}:{port}/", f"@127.0.0.1:{proxy.port}/")
        async with _serving(kafka, proxied, unique) as (hub, client):
            key, sent = {"Idempotency-Key": str(uuid.uuid4())}, body(add_years(T, -15))
            proxy.lose_commit_answer(after=b"INSERT INTO idempotency_keys")
            lost = await client.post(URL, json=sent, headers=ILSE | key)
            assert proxy.commits_lost == 1
            assert lost.status_code == 503 and lost.headers["Retry-After"], lost.text
            problem = lost.json()
            assert problem["title"] == "Niet zeker of dit is opgeslagen", problem
            assert "niets opgeslagen" not in problem["detail"] and "Idempotency-Key" in problem["detail"]
            assert await _signal_count(hub) == 1  # it was kept
            again = await client.post(URL, json=sent, headers=ILSE | key)
            assert again.status_code == 201 and again.headers["Idempotent-Replayed"] == "true", again.text
            assert await _signal_count(hub) == 1
    finally:
        await proxy.cut()
        await drop_pg_database(f"kh_{unique}")


async def test_the_same_idempotency_key_at_the_same_moment_makes_one_signal(
    api: tuple[Hub, httpx.AsyncClient],
) -> None:
    """Both requests find no earlier one with the key; on PostgreSQL both make a signal, and the
    second's is rolled back when the first commits its key: it answers with the first one's."""
    hub, client = api
    for bsn in itertools.islice(other_bsns(), 3):
        key = {"Idempotency-Key": str(uuid.uuid4())}
        both = await asyncio.gather(
            *[client.post(URL, json=body(add_years(T, -15), bsn=bsn), headers=ILSE | key) for _ in "ab"]
        )
        assert [r.status_code for r in both] == [201, 201], [r.text for r in both]
        assert both[0].json()["signal_id"] == both[1].json()["signal_id"]
        assert sorted(r.headers.get("Idempotent-Replayed", "") for r in both) == ["", "true"]
    assert await _signal_count(hub) == 3


async def test_an_idempotency_key_is_kept_a_day_and_must_be_printable(
    api: tuple[Hub, httpx.AsyncClient],
) -> None:
    from hub.api.idempotency import idempotency_keys

    hub, client = api
    key = {"Idempotency-Key": "retry-1"}
    first = await client.post(URL, json=body(add_years(T, -15)), headers=ILSE | key)
    assert hub.store is not None
    async with hub.store.transaction() as session:  # a day and a minute later
        await session.execute(
            idempotency_keys.update().values(created_at=NOW - timedelta(hours=24, minutes=1))
        )
    later = await client.post(URL, json=body(add_years(T, -15), bsn=next(other_bsns())), headers=ILSE | key)
    assert later.status_code == 201 and later.json()["signal_id"] != first.json()["signal_id"]
    assert "Idempotent-Replayed" not in later.headers
    async with hub.store.connect() as conn:  # the old key was forgotten, the new one kept
        kept = (await conn.execute(select(idempotency_keys.c.resource_id))).scalars().all()
    assert kept == [later.json()["signal_id"]]
    for bad in ("has space", "x" * 256, ""):
        refused = await client.post(
            URL, json=body(add_years(T, -15)), headers=ILSE | {"Idempotency-Key": bad}
        )
        assert refused.status_code in (400, 422), (bad, refused.text)
        assert any("Idempotency-Key" in str(p) for p in refused.json().get("invalidParams", [])), refused.text
    assert await _signal_count(hub) == 2


async def test_a_retry_is_answered_by_what_its_first_request_made_whatever_changed_since(
    api: tuple[Hub, httpx.AsyncClient],
) -> None:
    """The key is looked up before the request is checked again: a caseworker no longer allowed to
    signal still learns the first request made a signal; once it moved to someone they may not
    follow, the answer names it (409) instead of a 403 that reads as 'nothing was made'."""
    hub, client = api
    key = {"Idempotency-Key": str(uuid.uuid4())}
    sent = body(add_years(T, -15))
    first = await client.post(URL, json=sent, headers=ILSE | key)
    sid = first.json()["signal_id"]
    assert hub.store is not None
    async with hub.store.transaction() as session:  # Ilse may no longer signal
        await upsert_caseworker(session, cw("cw-ilse", bevoegd=False, delegate="cw-omar"))
    again = await client.post(URL, json=sent, headers=ILSE | key)
    assert again.status_code == 201 and again.json()["signal_id"] == sid, again.text
    assert (await client.post(URL, json=sent, headers=ILSE)).status_code == 403  # a new request
    async with hub.store.transaction() as session:  # may signal, and is no one Ilse stands in for
        await upsert_caseworker(session, cw("cw-fleur"))
    moved = await client.patch(
        f"{URL}/{sid}/contactpersoon", json={"caseworker_id": "cw-fleur"}, headers=ILSE
    )
    assert moved.status_code == 200, moved.text
    gone = await client.post(URL, json=sent, headers=ILSE | key)
    assert gone.status_code == 409 and sid in gone.json()["detail"], gone.text
    assert await _signal_count(hub) == 1


async def test_an_end_date_already_past_is_refused_though_the_signal_is_backdated(
    api: tuple[Hub, httpx.AsyncClient],
) -> None:
    """A backdated `created` made an end date that had passed lawful under rule 12: the signal was
    ACTIEF (201), the Verwijsindex refused it for good (dead letter) and it could not be withdrawn
    (409). Now the end date is checked against today too."""
    hub, client = api
    created = T - timedelta(days=400)
    backdated = {"created": created.isoformat(), "youth_informed_at": created.isoformat()}
    for sent in (
        body(add_years(T, -15), **backdated),  # the default end date, created + 1 year: passed
        body(add_years(T, -15), **backdated, end_date=(T - timedelta(days=1)).isoformat()),
    ):
        refused = await client.post(URL, json=sent, headers=ILSE)
        assert refused.status_code == 422, refused.text
        assert [p["name"] for p in refused.json()["invalidParams"]] == ["end_date"]
        assert "verleden" in refused.json()["invalidParams"][0]["reason"] and BSN not in refused.text
    assert await _signal_count(hub) == 0
    # ending today is still running today; a backdated signal with an end date to come is fine
    youths = other_bsns()
    for end in (T, T + timedelta(days=30)):
        sent = body(add_years(T, -15), bsn=next(youths), **backdated)
        made = await client.post(URL, json=sent | {"end_date": end.isoformat()}, headers=ILSE)
        assert made.status_code == 201 and made.json()["status"] == "ACTIEF", made.text


async def test_a_signal_past_its_end_date_reads_as_verlopen(api: tuple[Hub, httpx.AsyncClient]) -> None:
    """Nothing writes VERLOPEN to a signal's row: past its end date it was read back as ACTIEF, and
    the caseworker who then withdrew it got 409 "verlopen". A withdrawn one keeps its own status."""
    hub, client = api
    youths, end = other_bsns(), (T + timedelta(days=1)).isoformat()
    running = await client.post(URL, json=body(add_years(T, -15), end_date=end), headers=ILSE)
    withdrawn = await client.post(
        URL, json=body(add_years(T, -15), bsn=next(youths), end_date=end), headers=ILSE
    )
    assert (running.status_code, withdrawn.status_code) == (201, 201), withdrawn.text
    sid, other = running.json()["signal_id"], withdrawn.json()["signal_id"]
    hub.clock = lambda: NOW + timedelta(days=1)  # its end date: it runs to the end of that day
    on_its_end_date = await client.get(f"{URL}/{sid}", headers=ILSE)
    assert on_its_end_date.json()["status"] == "ACTIEF"
    done = await client.post(f"{URL}/{other}/intrekking", json={"reason": "RISICO_WEG"}, headers=ILSE)
    assert done.status_code == 200 and done.json()["status"] == "BEEINDIGD_RISICO_WEG"

    hub.clock = lambda: NOW + timedelta(days=2)  # the day after its end date
    read = await client.get(f"{URL}/{sid}", headers=ILSE)
    assert read.status_code == 200 and read.json()["status"] == "VERLOPEN"
    assert (await client.get(f"{URL}/{other}", headers=ILSE)).json()["status"] == "BEEINDIGD_RISICO_WEG"
    late = await client.post(f"{URL}/{sid}/intrekking", json={"reason": "RISICO_WEG"}, headers=ILSE)
    assert late.status_code == 409
    assert hub.store is not None
    async with hub.store.connect() as conn:
        stored = (await conn.execute(select(signals.c.status).where(signals.c.signal_id == sid))).scalar()
    assert stored == "ACTIEF"  # the row is left as it was: the status is read from the end date


async def test_a_second_active_signal_on_the_same_youth_is_refused_naming_the_first(
    api: tuple[Hub, httpx.AsyncClient],
) -> None:
    """A POST sent again without an Idempotency-Key registered the youth twice: two ACTIEF signals of
    one organisation, so every match came twice. Now the second is refused (409) naming the first,
    whoever sends it, until the first is no longer active (withdrawn, or past its end date)."""
    hub, client = api
    sent = body(add_years(T, -15))
    first = await client.post(URL, json=sent, headers=ILSE)
    assert first.status_code == 201
    sid = first.json()["signal_id"]
    for who in (ILSE, {"X-Medewerker": "cw-omar"}):
        again = await client.post(URL, json=sent, headers=who)
        assert again.status_code == 409, again.text
        assert sid in again.json()["detail"] and BSN not in again.text and "Sanne" not in again.text
    assert await _signal_count(hub) == 1
    assert hub.store is not None
    async with hub.store.connect() as conn:  # the caseworker learnt the youth has a signal: audited
        refusals = (
            await conn.execute(select(audit_log).where(audit_log.c.action == "signal.register_refused"))
        ).all()
    assert [(r.user, r.youth_key, r.objects["signal_id"]) for r in refusals] == [
        (user, youth_key(TEST_SECRET, BSN), sid) for user in ("cw-ilse", "cw-omar")
    ]
    assert BSN not in str([r.objects for r in refusals])

    # two at once: one is made, the other refused (PostgreSQL: the youth's lock; SQLite: one writer)
    other = body(add_years(T, -15), bsn=next(other_bsns()))
    both = await asyncio.gather(*[client.post(URL, json=other, headers=ILSE) for _ in "ab"])
    assert sorted(r.status_code for r in both) == [201, 409], [r.text for r in both]
    assert await _signal_count(hub) == 2

    # once the first is withdrawn, or past its end date, the youth can be signalled again
    withdrawn = await client.post(f"{URL}/{sid}/intrekking", json={"reason": "RISICO_WEG"}, headers=ILSE)
    assert withdrawn.status_code == 200
    second = await client.post(URL, json=sent, headers=ILSE)
    assert second.status_code == 201, second.text
    async with hub.store.transaction() as session:
        await session.execute(
            signals.update()
            .where(signals.c.signal_id == second.json()["signal_id"])
            .values(end_date=T - timedelta(days=1))
        )
    assert (await client.post(URL, json=sent, headers=ILSE)).status_code == 201
    commands = await read_topic(hub.bootstrap, hub.topic(VERWIJSINDEX_SIGNAL.name), expect=5, settle_s=0.3)
    assert sorted(Envelope.from_bytes(r.value).type for r in commands) == ["RegisterSignal"] * 4 + [
        "WithdrawSignal"
    ]


async def test_only_a_meldingsbevoegd_caseworker_becomes_a_signals_contact(
    api: tuple[Hub, httpx.AsyncClient],
) -> None:
    """Rule 13: PATCH .../contactpersoon made a caseworker who may not signal the contact person, in
    the hub and in the Verwijsindex. Now it is refused and nothing changes or is sent."""
    hub, client = api
    sid = (await client.post(URL, json=body(add_years(T, -15)), headers=ILSE)).json()["signal_id"]
    refused = await client.patch(
        f"{URL}/{sid}/contactpersoon", json={"caseworker_id": "cw-nina"}, headers=ILSE
    )
    assert refused.status_code == 422, refused.text
    assert refused.json()["title"] == "Niet meldingsbevoegd"
    assert refused.json()["invalidParams"] == [{"name": "caseworker_id", "reason": "niet meldingsbevoegd"}]
    shown = await client.get(f"{URL}/{sid}", headers=ILSE)
    assert (
        shown.json()["caseworker_id"] == "cw-ilse" and shown.json()["contact"]["name"] == "Medewerker cw-ilse"
    )
    assert hub.store is not None
    async with hub.store.connect() as conn:
        changed = (
            await conn.execute(select(audit_log).where(audit_log.c.action == "signal.contact_changed"))
        ).all()
    assert changed == []
    commands = await read_topic(hub.bootstrap, hub.topic(VERWIJSINDEX_SIGNAL.name), expect=2, settle_s=0.3)
    assert [Envelope.from_bytes(r.value).type for r in commands] == ["RegisterSignal"]


async def test_a_phone_the_verwijsindex_cannot_take_is_refused_before_anything_is_queued(
    api: tuple[Hub, httpx.AsyncClient],
) -> None:
    """The directory takes 4 to 40 phone characters, the Verwijsindex 6 to 20 digits: a caseworker
    with phone "4567" made every signal and contact change of theirs a dead letter at delivery.
    Now registering such a signal, or handing one to them, is refused at once, naming the phone;
    a number the index takes once tidied up ("+31 (0)6 ...") is accepted."""
    hub, client = api
    assert hub.store is not None
    async with hub.store.transaction() as session:
        await upsert_caseworker(session, cw("cw-kort", phone="4567"))
        await upsert_caseworker(session, cw("cw-lang", phone="+31 (0)6 - 12 34 56 78"))
    refused = await client.post(URL, json=body(add_years(T, -15)), headers={"X-Medewerker": "cw-kort"})
    assert refused.status_code == 422, refused.text
    assert refused.json()["title"] == "Telefoonnummer past niet in de Verwijsindex"
    assert [p["name"] for p in refused.json()["invalidParams"]] == ["caseworker.phone"]
    assert await _signal_count(hub) == 0

    made = await client.post(URL, json=body(add_years(T, -15)), headers={"X-Medewerker": "cw-lang"})
    assert made.status_code == 201, made.text
    sid = made.json()["signal_id"]
    handed = await client.patch(
        f"{URL}/{sid}/contactpersoon", json={"caseworker_id": "cw-kort"}, headers={"X-Medewerker": "cw-lang"}
    )
    assert handed.status_code == 422, handed.text
    assert handed.json()["title"] == "Telefoonnummer past niet in de Verwijsindex"
    (param,) = handed.json()["invalidParams"]
    assert param["name"] == "caseworker_id" and "telefoonnummer" in param["reason"]
    assert (await client.get(f"{URL}/{sid}", headers={"X-Medewerker": "cw-lang"})).json()[
        "caseworker_id"
    ] == "cw-lang"
    commands = await read_topic(hub.bootstrap, hub.topic(VERWIJSINDEX_SIGNAL.name), expect=2, settle_s=0.3)
    assert [Envelope.from_bytes(r.value).type for r in commands] == ["RegisterSignal"]


async def test_registering_a_signal_does_not_open_another_caseworkers_case(
    api: tuple[Hub, httpx.AsyncClient],
) -> None:
    """Whoever holds a youth's signal works on its case, and may read its consents and handovers:
    registering one did not ask whether they did, so anyone meldingsbevoegd could open another's case
    by registering a signal once the case's own had ended. Now only who works on the case, or stands
    in for someone who does, registers the next; anyone may begin a new case."""
    hub, client = api
    assert hub.store is not None
    async with hub.store.transaction() as session:
        await upsert_caseworker(session, cw("cw-piet"))
    first = await client.post(URL, json=body(add_years(T, -15)), headers=ILSE)
    assert first.status_code == 201, first.text
    sid = first.json()["signal_id"]
    ended = await client.post(f"{URL}/{sid}/intrekking", json={"reason": "RISICO_WEG"}, headers=ILSE)
    assert ended.status_code == 200, ended.text
    refused = await client.post(URL, json=body(add_years(T, -15)), headers={"X-Medewerker": "cw-piet"})
    assert refused.status_code == 403, refused.text
    assert refused.json()["title"] == "Geen toegang"
    async with hub.store.read() as session:
        held = (await session.execute(select(signals.c.caseworker_id))).scalars().all()
    assert held == ["cw-ilse"]  # nothing of Piet's stored
    # Ilse's delegate stands in for her: the case's next signal is theirs to register
    again = await client.post(URL, json=body(add_years(T, -15)), headers={"X-Medewerker": "cw-omar"})
    assert again.status_code == 201, again.text
    # and a youth nobody works on is anyone's to begin
    other = await client.post(
        URL, json=body(add_years(T, -15), bsn=next(other_bsns())), headers={"X-Medewerker": "cw-piet"}
    )
    assert other.status_code == 201, other.text


async def test_one_with_no_part_in_a_case_learns_nothing_of_its_signal_and_is_audited(
    api: tuple[Hub, httpx.AsyncClient],
) -> None:
    """A caseworker with no part in a youth's case who registered a signal on it was answered 409
    naming the case's active signal: that the youth is in the Verwijsindex, and its holder's signal
    id. The case is asked first now: 403, whatever signals the youth has. A 403 still says the hub
    holds a case for this BSN (one it does not know is anyone's to begin), so it is audited under the
    youth's key, as the 409 is: a privacy officer sees who tried."""
    hub, client = api
    assert hub.store is not None
    async with hub.store.transaction() as session:
        await upsert_caseworker(session, cw("cw-piet"))
    piet = {"X-Medewerker": "cw-piet"}
    first = await client.post(URL, json=body(add_years(T, -15)), headers=ILSE)
    assert first.status_code == 201, first.text
    sid = first.json()["signal_id"]
    while_active = await client.post(URL, json=body(add_years(T, -15)), headers=piet)
    assert while_active.status_code == 403, while_active.text
    assert while_active.json()["title"] == "Geen toegang"
    assert sid not in while_active.text and BSN not in while_active.text
    ended = await client.post(f"{URL}/{sid}/intrekking", json={"reason": "RISICO_WEG"}, headers=ILSE)
    assert ended.status_code == 200, ended.text
    after = await client.post(URL, json=body(add_years(T, -15)), headers=piet)
    assert after.status_code == 403, after.text
    assert await _signal_count(hub) == 1
    # a youth nobody works on: Piet's to begin, nothing refused
    other = await client.post(URL, json=body(add_years(T, -15), bsn=next(other_bsns())), headers=piet)
    assert other.status_code == 201, other.text
    async with hub.store.connect() as conn:
        refusals = (
            await conn.execute(select(audit_log).where(audit_log.c.action == "signal.register_refused"))
        ).all()
    assert [(r.user, r.youth_key, r.objects) for r in refusals] == [
        ("cw-piet", youth_key(TEST_SECRET, BSN), {"reason": "not_on_case"})
    ] * 2
