"""The directory API for administrators: roles, create/update, absences, delegate, problems, CSV import."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta

import httpx
import pytest
from sqlalchemy import exc as sa_exc
from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncSession

from hub.app import create_app
from hub.clock import today
from hub.directory import importer
from hub.embedded import EmbeddedKafka
from hub.ops.auth import add_operator
from hub.runtime import Hub
from hub.store.tables import audit_log
from schemas.caseworker import Caseworker
from tests.conftest import make_settings

pytestmark = pytest.mark.integration
PASSWORD = "a-long-enough-password"
BASE = "/api/v1/medewerkers"


@asynccontextmanager
async def directory_app(
    kafka: EmbeddedKafka, db_url: str, unique: str
) -> AsyncIterator[tuple[Hub, httpx.AsyncClient, httpx.AsyncClient]]:
    """A started hub (no consumers), and clients logged in as an operator and as a viewer."""
    settings = make_settings(kafka, db_url, unique)
    hub = Hub(settings, registrars={})
    await hub.start()
    assert hub.store is not None
    await add_operator(hub.store, "anna", PASSWORD, "operator")
    await add_operator(hub.store, "vera", PASSWORD, "viewer")
    transport = httpx.ASGITransport(app=create_app(settings, hub=hub))
    admin = httpx.AsyncClient(transport=transport, base_url="http://hub")
    viewer = httpx.AsyncClient(transport=transport, base_url="http://hub")
    try:
        assert (
            await admin.post("/ops/login", json={"username": "anna", "password": PASSWORD})
        ).status_code < 400
        assert (
            await viewer.post("/ops/login", json={"username": "vera", "password": PASSWORD})
        ).status_code < 400
        yield hub, admin, viewer
    finally:
        await admin.aclose()
        await viewer.aclose()
        await hub.stop()


def person(name: str, team: str = "DEN_HAAG", **extra: object) -> dict[str, object]:
    first = name.split()[0].lower()
    return {"name": name, "email": f"{first}@halt.nl", "team": team, "meldingsbevoegd": True, **extra}


async def test_roles_create_update_absence_delegate_and_problems(
    kafka: EmbeddedKafka, db_url: str, unique: str
) -> None:
    async with directory_app(kafka, db_url, unique) as (hub, admin, viewer):
        anonymous = await httpx.AsyncClient(transport=admin._transport, base_url="http://hub").get(BASE)
        assert (
            anonymous.status_code == 401 and anonymous.headers["content-type"] == "application/problem+json"
        )
        assert (await viewer.put(f"{BASE}/cw-ilse", json=person("Ilse Bakker"))).status_code == 403

        assert (await admin.put(f"{BASE}/cw-ilse", json=person("Ilse Bakker"))).status_code == 201
        assert (await admin.put(f"{BASE}/cw-omar", json=person("Omar Haddou", "LEIDEN"))).status_code == 201
        again = await admin.put(f"{BASE}/cw-ilse", json=person("Ilse Bakker", phone="070 123 4567"))
        assert again.status_code == 200 and again.json()["phone"] == "070 123 4567"

        unknown = await admin.put(f"{BASE}/cw-ilse/vervanger", json={"delegate_id": "cw-nobody"})
        assert unknown.status_code == 422 and unknown.json()["invalidParams"][0]["name"] == "delegate_id"
        own = await admin.put(f"{BASE}/cw-ilse/vervanger", json={"delegate_id": "cw-ilse"})
        assert own.status_code == 422
        assert (await admin.put(f"{BASE}/cw-ilse/vervanger", json={"delegate_id": "cw-omar"})).json()[
            "delegate_id"
        ] == "cw-omar"
        span = {
            "start": (today() - timedelta(days=1)).isoformat(),
            "end": (today() + timedelta(days=3)).isoformat(),
        }
        added = await admin.post(f"{BASE}/cw-ilse/afwezigheden", json=span)
        assert added.status_code == 201 and added.json()["absences"] == [span]
        backwards = await admin.post(
            f"{BASE}/cw-ilse/afwezigheden", json={"start": span["end"], "end": span["start"]}
        )
        assert (
            backwards.status_code in (400, 422)
            and backwards.headers["content-type"] == "application/problem+json"
        )

        listed = (await viewer.get(BASE)).json()
        assert [c["caseworker_id"] for c in listed] == ["cw-ilse", "cw-omar"]
        assert (await viewer.get(f"{BASE}/cw-nobody")).status_code == 404

        problems = (await viewer.get(f"{BASE}/problemen")).json()
        assert problems["unreachableNow"] == []  # Ilse is away, Omar stands in
        assert (
            await admin.put(f"{BASE}/cw-omar", json=person("Omar Haddou", "LEIDEN", active=False))
        ).status_code == 200
        problems = (await viewer.get(f"{BASE}/problemen")).json()
        assert {p["caseworkerId"] for p in problems["unreachableNow"]} == {"cw-ilse", "cw-omar"}

        assert hub.store is not None
        async with hub.store.connect() as conn:
            acts = (
                await conn.execute(
                    select(audit_log.c.action, audit_log.c.user).where(audit_log.c.action.like("directory.%"))
                )
            ).all()
        assert ("directory.delegate_set", "anna") in acts and ("directory.absence_added", "anna") in acts


CSV = (
    "Medewerkernummer;Naam;E-mail;Telefoon;Team;Meldingsbevoegd;Vervanger;Actief;"
    "Afwezig vanaf;Afwezig tot en met\n"
    "cw-ilse;Ilse Bakker;ilse@halt.nl;070 123 4567;Den Haag;ja;cw-omar;ja;;\n"
    "cw-omar;Omar Haddou;omar-at-halt.nl;;Leiden;nee;;ja;;\n"  # bad e-mail
    "cw-fleur;Fleur de Vries;fleur@halt.nl;;Zoetermeer;ja;;;;\n"  # unknown team
    "cw-omar;Omar Haddou;omar@halt.nl;;Leiden;nee;;ja;01-03-2025;14-03-2025\n"
    "cw-ilse;Ilse Bakker;ilse@halt.nl;;Den Haag;ja;cw-omar;ja;10-03-2025;01-03-2025\n"  # absence backwards
)


async def test_csv_import_reports_per_row_and_bad_rows_do_not_block(
    kafka: EmbeddedKafka, db_url: str, unique: str
) -> None:
    async with directory_app(kafka, db_url, unique) as (_hub, admin, viewer):
        r = await admin.post(
            f"{BASE}/import", content=CSV.encode("cp1252"), headers={"Content-Type": "text/csv"}
        )
        assert r.status_code == 200, r.text
        report = r.json()
        assert (report["total"], report["aangemaakt"], report["bijgewerkt"], report["fout"]) == (5, 2, 0, 3)
        rows = {row["row"]: row for row in report["rows"]}
        assert rows[2]["result"] == "AANGEMAAKT" and rows[5]["result"] == "AANGEMAAKT"
        assert rows[3]["result"] == "FOUT" and rows[3]["errors"][0]["field"] == "E-mail"
        assert rows[4]["result"] == "FOUT" and rows[4]["errors"][0]["field"] == "Team"
        assert (
            rows[6]["result"] == "FOUT"
            and "Afwezig" in rows[6]["errors"][0]["field"] + rows[6]["errors"][0]["reason"]
        )
        omar = (await viewer.get(f"{BASE}/cw-omar")).json()
        assert omar["absences"] == [{"start": "2025-03-01", "end": "2025-03-14"}]
        ilse = (await viewer.get(f"{BASE}/cw-ilse")).json()
        assert ilse["absences"] == [] and ilse["phone"] == "070 123 4567"  # the bad row changed nothing

        bad = await admin.post(
            f"{BASE}/import", content=b"a,b,c\n1,2,3\n", headers={"Content-Type": "text/csv"}
        )
        assert bad.status_code == 400 and "puntkomma" in bad.json()["detail"]
        assert (await viewer.post(f"{BASE}/import", content=CSV.encode())).status_code == 403


async def test_a_control_character_in_an_id_is_a_row_error_not_a_500(
    kafka: EmbeddedKafka, db_url: str, unique: str
) -> None:
    """The id is looked up before the row is validated: a NUL in it made PostgreSQL refuse the query."""
    rows = (
        "Medewerkernummer;Naam;E-mail;Team\n"
        "cw-1\x00;A. de Groot;a@halt.nl;Den Haag\n"
        "cw-2\x1b;B. de Groot;b@halt.nl;Den Haag\n"
        "cw-3;C. de Groot;c@halt.nl;Den Haag\n"
    )
    async with directory_app(kafka, db_url, unique) as (_hub, admin, viewer):
        r = await admin.post(f"{BASE}/import", content=rows.encode(), headers={"Content-Type": "text/csv"})
        assert r.status_code == 200, r.text
        report = r.json()
        assert (report["total"], report["aangemaakt"], report["fout"]) == (3, 1, 2)
        for row in report["rows"][:2]:
            assert row["result"] == "FOUT" and row["caseworkerId"] is None
            reason = "bevat een stuurteken (zoals NUL)"
            assert row["errors"] == [{"field": "Medewerkernummer", "reason": reason}]
        assert (await viewer.get(f"{BASE}/cw-3")).status_code == 200


async def test_an_id_longer_than_the_column_is_refused_by_name_not_a_500(
    kafka: EmbeddedKafka, db_url: str, unique: str
) -> None:
    """Ids are stored in 64 characters: a longer one failed on PostgreSQL mid-request or mid-import."""
    long_id, widest = "c" * 80, "w" * 64
    async with directory_app(kafka, db_url, unique) as (_hub, admin, viewer):
        in_path = await admin.put(f"{BASE}/{long_id}", json=person("Ilse Bakker"))
        as_delegate = await admin.put(f"{BASE}/cw-ilse", json=person("Ilse Bakker", delegate_id=long_id))
        assert (await admin.put(f"{BASE}/{widest}", json=person("Wim Wijd"))).status_code == 201
        set_delegate = await admin.put(f"{BASE}/{widest}/vervanger", json={"delegate_id": long_id})
        for answer, name in (
            (in_path, "caseworker_id"),
            (as_delegate, "delegate_id"),
            (set_delegate, "delegate_id"),
        ):
            assert answer.status_code == 400, answer.text
            [param] = answer.json()["invalidParams"]
            assert param["name"] == name and "64" in param["reason"]
            assert long_id not in param["reason"]  # the value is not echoed back

        rows = (
            "Medewerkernummer;Naam;E-mail;Team;Vervanger\n"
            f"{long_id};A. de Groot;a@halt.nl;Den Haag;\n"
            f"cw-b;B. de Groot;b@halt.nl;Den Haag;{long_id}\n"
            f"{widest[:-1]}v;C. de Groot;c@halt.nl;Den Haag;{widest}\n"
        )
        r = await admin.post(f"{BASE}/import", content=rows.encode(), headers={"Content-Type": "text/csv"})
        assert r.status_code == 200, r.text
        report = r.json()
        assert (report["total"], report["aangemaakt"], report["fout"]) == (3, 1, 2)
        too_long = "is te lang (maximaal 64 tekens)"
        assert report["rows"][0]["errors"] == [{"field": "Medewerkernummer", "reason": too_long}]
        assert report["rows"][0]["caseworkerId"] is None
        assert report["rows"][1]["errors"] == [{"field": "Vervanger", "reason": too_long}]
        assert (await viewer.get(f"{BASE}/cw-b")).status_code == 404  # the bad row stored nothing
        assert (await viewer.get(f"{BASE}/{widest[:-1]}v")).json()["delegate_id"] == widest


async def test_a_file_in_an_unknown_encoding_is_refused_whole(
    kafka: EmbeddedKafka, db_url: str, unique: str
) -> None:
    """0x81 is neither UTF-8 nor Windows-1252: the decoder's error was a 500."""
    rows = b"Medewerkernummer;Naam;E-mail;Team\ncw-1;A. de Gr\x81ot;a@halt.nl;Den Haag\n"
    async with directory_app(kafka, db_url, unique) as (_hub, admin, viewer):
        r = await admin.post(f"{BASE}/import", content=rows, headers={"Content-Type": "text/csv"})
        assert r.status_code == 400 and r.json()["title"] == "Unreadable CSV", r.text
        assert "onbekende tekencodering" in r.json()["detail"] and "Windows-1252" in r.json()["detail"]
        assert (await viewer.get(f"{BASE}/cw-1")).status_code == 404


async def test_a_field_the_csv_reader_refuses_is_a_file_error(
    kafka: EmbeddedKafka, db_url: str, unique: str
) -> None:
    """A field over csv's limit (131,072 characters, well within the body limit) or a lone carriage
    return outside quotes made the reader raise mid-file: a 500, with nothing said about where."""
    header = "Medewerkernummer;Naam;E-mail;Team\ncw-1;A. de Groot;a@halt.nl;Den Haag\n"
    huge = header + "cw-2;" + "B" * 131_073 + ";b@halt.nl;Den Haag\n"
    lone_cr = header + "cw-2;B. de\rGroot;b@halt.nl;Den Haag\n"
    async with directory_app(kafka, db_url, unique) as (_hub, admin, viewer):
        for body, reason in ((huge, "langer dan 131072 tekens"), (lone_cr, "geen geldige CSV")):
            r = await admin.post(
                f"{BASE}/import", content=body.encode(), headers={"Content-Type": "text/csv"}
            )
            assert r.status_code == 400 and r.json()["title"] == "Unreadable CSV", r.text[:500]
            assert r.json()["detail"].startswith("regel 3: ") and reason in r.json()["detail"]
            assert "B" * 100 not in r.text and "Groot" not in r.text
        assert (await viewer.get(f"{BASE}/cw-1")).status_code == 404  # refused whole: nothing loaded


async def test_a_blank_id_is_refused_as_a_blank_id_not_as_its_own_delegate(
    kafka: EmbeddedKafka, db_url: str, unique: str
) -> None:
    """`except ValueError` also caught the model's ValidationError and blamed the delegate."""
    async with directory_app(kafka, db_url, unique) as (_hub, admin, _viewer):
        blank = await admin.put(f"{BASE}/%20", json=person("Ilse Bakker"))
        assert blank.status_code == 400, blank.text
        assert [p["name"] for p in blank.json()["invalidParams"]] == ["caseworker_id"]
        assert "delegate" not in blank.text

        own = await admin.put(f"{BASE}/cw-ilse", json=person("Ilse Bakker", delegate_id=" cw-ilse"))
        assert own.status_code == 422, own.text
        assert own.json()["invalidParams"] == [{"name": "delegate_id", "reason": "same as the caseworker"}]


async def _audits(hub: Hub, action: str, caseworker_id: str) -> int:
    """How many audit entries of `action` name this caseworker."""
    assert hub.store is not None
    async with hub.store.connect() as conn:
        rows = (await conn.execute(select(audit_log.c.objects).where(audit_log.c.action == action))).all()
    return sum(row.objects["caseworker_id"] == caseworker_id for row in rows)


ROUNDS = 5  # a race shows in one round of a few; five make it show every run


async def test_two_puts_of_a_new_caseworker_at_once_create_it_once(
    kafka: EmbeddedKafka, db_url: str, unique: str
) -> None:
    """The id was looked up, then inserted: the second insert hit the primary key (a 500 on
    PostgreSQL), and on SQLite both answered 201."""
    async with directory_app(kafka, db_url, unique) as (hub, admin, viewer):
        for i in range(ROUNDS):
            cid = f"cw-race{i}"
            answers = await asyncio.gather(
                *(admin.put(f"{BASE}/{cid}", json=person("Ilse Bakker")) for _ in "ab")
            )
            assert sorted(a.status_code for a in answers) == [200, 201], [a.text for a in answers]
            assert (await viewer.get(f"{BASE}/{cid}")).json()["name"] == "Ilse Bakker"
            assert await _audits(hub, "directory.caseworker_saved", cid) == 2  # each request saved it


async def test_two_imports_of_the_same_new_row_at_once_both_report_and_keep_both_absences(
    kafka: EmbeddedKafka, db_url: str, unique: str
) -> None:
    """The second import's insert hit the primary key: a 500 without a report (PostgreSQL), and
    one file's absence was lost, as the row was read in one step and written whole in another."""
    head = "Medewerkernummer;Naam;E-mail;Team;Afwezig vanaf;Afwezig tot en met\n"
    async with directory_app(kafka, db_url, unique) as (hub, admin, viewer):
        for i in range(ROUNDS):
            cid = f"cw-imp{i}"
            files = [
                f"{head}{cid};Ilse Bakker;ilse@halt.nl;Den Haag;0{d}-01-2030;0{d}-02-2030\n" for d in (1, 2)
            ]
            answers = await asyncio.gather(
                *(
                    admin.post(f"{BASE}/import", content=f.encode(), headers={"Content-Type": "text/csv"})
                    for f in files
                )
            )
            assert [a.status_code for a in answers] == [200, 200], [a.text for a in answers]
            results = sorted(a.json()["rows"][0]["result"] for a in answers)
            assert results == ["AANGEMAAKT", "BIJGEWERKT"]
            assert (await viewer.get(f"{BASE}/{cid}")).json()["absences"] == [
                {"start": "2030-01-01", "end": "2030-02-01"},
                {"start": "2030-01-02", "end": "2030-02-02"},
            ]
            assert await _audits(hub, "directory.imported", cid) == 2


async def test_absences_and_a_delegate_added_at_once_are_all_kept(
    kafka: EmbeddedKafka, db_url: str, unique: str
) -> None:
    """Each request read the caseworker, then wrote them whole in another transaction: of three
    absences added at once one was kept (PostgreSQL) or two (SQLite), and each answered 201."""
    spans = [{"start": f"2030-0{m}-01", "end": f"2030-0{m}-05"} for m in (1, 2, 3)]
    async with directory_app(kafka, db_url, unique) as (hub, admin, viewer):
        assert (await admin.put(f"{BASE}/cw-omar", json=person("Omar Haddou"))).status_code == 201
        for i in range(ROUNDS):
            cid = f"cw-away{i}"
            assert (await admin.put(f"{BASE}/{cid}", json=person("Ilse Bakker"))).status_code == 201
            adds = [admin.post(f"{BASE}/{cid}/afwezigheden", json=span) for span in [*spans, spans[0]]]
            delegate = admin.put(f"{BASE}/{cid}/vervanger", json={"delegate_id": "cw-omar"})
            *added, delegated = await asyncio.gather(*adds, delegate)
            assert [a.status_code for a in added] == [201] * 4 and delegated.status_code == 200
            for span, answer in zip([*spans, spans[0]], added, strict=True):
                assert span in answer.json()["absences"]  # the state after this request's change
            stored = (await viewer.get(f"{BASE}/{cid}")).json()
            assert stored["absences"] == spans and stored["delegate_id"] == "cw-omar"
            assert await _audits(hub, "directory.absence_added", cid) == 3  # the repeat changed nothing
            assert await _audits(hub, "directory.delegate_set", cid) == 1

            cleared, again = await asyncio.gather(
                admin.delete(f"{BASE}/{cid}/afwezigheden"),
                admin.post(f"{BASE}/{cid}/afwezigheden", json=spans[1]),
            )
            assert (cleared.status_code, again.status_code) == (200, 201)
            final = (await viewer.get(f"{BASE}/{cid}")).json()["absences"]
            # Either order is right, but each answer must be what was stored at its moment.
            assert final in ([], [spans[1]]) and cleared.json()["absences"] == []
            assert again.json()["absences"] == (spans if final == [] else [spans[1]])


async def test_a_row_the_database_refuses_is_reported_and_the_rest_load(
    kafka: EmbeddedKafka, db_url: str, unique: str
) -> None:
    """Only ValueError and KeyError were caught per row: any database error ended the request with
    a 500, without a report, the rows before it loaded and the rows after it not."""
    rows = (
        "Medewerkernummer;Naam;E-mail;Team\n"
        "cw-1;A. de Groot;a@halt.nl;Den Haag\n"
        "cw-refused;B. de Groot;b@halt.nl;Den Haag\n"
        "cw-3;C. de Groot;c@halt.nl;Den Haag\n"
    )
    async with directory_app(kafka, db_url, unique) as (hub, admin, viewer):
        assert hub.store is not None
        async with hub.store.transaction() as session:  # a rule of the database the hub does not know
            if hub.store.dialect == "postgresql":
                check = (
                    "ALTER TABLE caseworkers ADD CONSTRAINT not_refused CHECK (caseworker_id <> 'cw-refused')"
                )
            else:
                check = (
                    "CREATE TRIGGER not_refused BEFORE INSERT ON caseworkers"
                    " WHEN NEW.caseworker_id = 'cw-refused' BEGIN SELECT RAISE(ABORT, 'refused'); END"
                )
            await session.execute(text(check))
        r = await admin.post(f"{BASE}/import", content=rows.encode(), headers={"Content-Type": "text/csv"})
        assert r.status_code == 200, r.text
        report = r.json()
        assert (report["total"], report["aangemaakt"], report["fout"]) == (3, 2, 1)
        assert report["rows"][1] == {
            "row": 3,
            "caseworkerId": "cw-refused",
            "result": "FOUT",
            "errors": [{"field": "(rij)", "reason": "de database weigerde deze rij"}],
            "changes": [],
        }
        assert (await viewer.get(f"{BASE}/cw-3")).status_code == 200
        assert (await viewer.get(f"{BASE}/cw-refused")).status_code == 404
        assert await _audits(hub, "directory.imported", "cw-refused") == 0


@pytest.mark.parametrize(
    "failure",
    [
        sa_exc.OperationalError("SELECT", {}, ConnectionResetError("connection lost")),
        # a connect that timed out or found no address comes through the driver unwrapped: it was a
        # 503 saying nothing was kept, though the rows before were
        TimeoutError(),
        socket.gaierror(-3, "Temporary failure in name resolution"),
        OSError("Multiple exceptions: [Errno 111] Connection refused, [Errno 99] Cannot assign address"),
    ],
    ids=["connection-lost", "connect-timed-out", "name-not-resolved", "every-address-refused"],
)
async def test_a_store_outage_stops_the_import_with_a_503_saying_where(
    kafka: EmbeddedKafka, db_url: str, unique: str, monkeypatch: pytest.MonkeyPatch, failure: Exception
) -> None:
    """An unreachable store is not the row's fault: the import stops there and says so."""
    rows = (
        "Medewerkernummer;Naam;E-mail;Team\n"
        "cw-1;A. de Groot;a@halt.nl;Den Haag\n"
        "cw-2;B. de Groot;b@halt.nl;Den Haag\n"
        "cw-3;C. de Groot;c@halt.nl;Den Haag\n"
    )
    real = importer.lock_caseworker

    async def lost_at_cw_2(session: AsyncSession, caseworker_id: str) -> Caseworker | None:
        if caseworker_id == "cw-2":
            raise failure
        return await real(session, caseworker_id)

    monkeypatch.setattr(importer, "lock_caseworker", lost_at_cw_2)
    async with directory_app(kafka, db_url, unique) as (hub, admin, viewer):
        r = await admin.post(f"{BASE}/import", content=rows.encode(), headers={"Content-Type": "text/csv"})
        assert r.status_code == 503 and r.headers["retry-after"], r.text
        assert "rij 3" in r.json()["detail"] and "opnieuw" in r.json()["detail"]
        assert (await viewer.get(f"{BASE}/cw-1")).status_code == 200
        assert (await viewer.get(f"{BASE}/cw-3")).status_code == 404
        assert await _audits(hub, "directory.imported", "cw-1") == 1

        # the store back, the same file again, as the 503 says: the rows already loaded are unchanged,
        # not written or audited a second time; the rest is loaded
        monkeypatch.setattr(importer, "lock_caseworker", real)
        again = await admin.post(
            f"{BASE}/import", content=rows.encode(), headers={"Content-Type": "text/csv"}
        )
        assert again.status_code == 200, again.text
        assert [row["result"] for row in again.json()["rows"]] == ["ONGEWIJZIGD", "AANGEMAAKT", "AANGEMAAKT"]
        assert (again.json()["ongewijzigd"], again.json()["aangemaakt"]) == (1, 2)
        assert [await _audits(hub, "directory.imported", c) for c in ("cw-1", "cw-2", "cw-3")] == [1, 1, 1]


async def test_an_address_the_hub_cannot_send_to_is_refused_naming_the_field(
    kafka: EmbeddedKafka, db_url: str, unique: str
) -> None:
    """zoë.jansen@halt.nl was taken (201), and the mail connector, which sends without SMTPUTF8, then
    dead-lettered every mail for her, also those she read as someone's delegate. A domain outside
    ASCII is sent in its IDNA form: that address is taken as before."""
    async with directory_app(kafka, db_url, unique) as (hub, admin, viewer):
        zoe = {**person("Zoë Jansen"), "email": "zoë.jansen@halt.nl"}
        refused = await admin.put(f"{BASE}/cw-zoe", json=zoe)
        assert refused.status_code == 422, refused.text
        [param] = refused.json()["invalidParams"]
        assert param["name"] == "email" and "ASCII" in param["reason"] and "voor de @" in param["reason"]
        assert "SMTPUTF8" in refused.json()["detail"]
        assert "zoë" not in refused.text  # the address is not echoed
        assert (await viewer.get(f"{BASE}/cw-zoe")).status_code == 404  # nothing stored
        assert not await _audits(hub, "directory.caseworker_saved", "cw-zoe")

        assert (
            await admin.put(f"{BASE}/cw-zoe", json={**zoe, "email": "zoe.jansen@halt.nl"})
        ).status_code == 201
        idna = {**zoe, "email": "zoe.jansen@bücher.nl"}  # the connector converts the domain
        assert (await admin.put(f"{BASE}/cw-zoe", json=idna)).status_code == 200

        rows = (
            "Medewerkernummer;Naam;E-mail;Team\n"
            "cw-zoe;Zoë Jansen;zoë.jansen@halt.nl;Den Haag\n"
            "cw-jose;José Smit;jose@halt.nl;Den Haag\n"
        )
        r = await admin.post(f"{BASE}/import", content=rows.encode(), headers={"Content-Type": "text/csv"})
        assert r.status_code == 200, r.text
        report = {row["row"]: row for row in r.json()["rows"]}
        assert report[2]["result"] == "FOUT" and [e["field"] for e in report[2]["errors"]] == ["E-mail"]
        assert "ASCII" in report[2]["errors"][0]["reason"]
        assert report[3]["result"] == "AANGEMAAKT"
        assert (await viewer.get(f"{BASE}/cw-zoe")).json()["email"] == "zoe.jansen@bücher.nl"  # kept


async def test_a_caseworker_who_may_signal_needs_a_phone_the_verwijsindex_takes(
    kafka: EmbeddedKafka, db_url: str, unique: str
) -> None:
    """Such a caseworker becomes a signal's contact (rule 13, borging); a phone the index cannot take
    was accepted here and every signal naming them was refused later, far from the mistake."""
    async with directory_app(kafka, db_url, unique) as (_hub, admin, viewer):
        short = await admin.put(f"{BASE}/cw-joost", json=person("Joost Smit", phone="12-34"))
        assert short.status_code == 422, short.text
        assert [p["name"] for p in short.json()["invalidParams"]] == ["phone"]
        assert (await viewer.get(f"{BASE}/cw-joost")).status_code == 404  # nothing stored
        # one who may not signal is never a contact: the number is theirs to keep
        plain = person("Joost Smit", phone="12-34", meldingsbevoegd=False)
        assert (await admin.put(f"{BASE}/cw-joost", json=plain)).status_code == 201
        tidy = person("Joost Smit", phone="+31 (0)6 - 12 34 56 78")  # a form the index takes exists
        assert (await admin.put(f"{BASE}/cw-joost", json=tidy)).status_code == 200

        rows = (
            "Medewerkernummer;Naam;E-mail;Telefoon;Team;Meldingsbevoegd\n"
            "cw-ria;Ria Smit;ria@halt.nl;12-34;Den Haag;ja\n"
            "cw-rob;Rob Smit;rob@halt.nl;12-34;Den Haag;nee\n"
        )
        r = await admin.post(f"{BASE}/import", content=rows.encode(), headers={"Content-Type": "text/csv"})
        report = {row["row"]: row for row in r.json()["rows"]}
        assert report[2]["result"] == "FOUT" and report[2]["errors"][0]["field"] == "Telefoon"
        assert report[3]["result"] == "AANGEMAAKT"
        assert (await viewer.get(f"{BASE}/cw-ria")).status_code == 404
