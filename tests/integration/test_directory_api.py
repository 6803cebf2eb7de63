"""The directory API for administrators: roles, create/update, absences, delegate, problems, CSV import."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta

import httpx
import pytest
from sqlalchemy import select

from hub.app import create_app
from hub.clock import today
from hub.embedded import EmbeddedKafka
from hub.ops.auth import add_operator
from hub.runtime import Hub
from hub.store.tables import audit_log
from tests.conftest import make_settings

pytestmark = pytest.mark.integration
PASSWORD = "a-long-enough-password"
BASE = "/api/v1/medewerkers"
TODAY = today()  # the Dutch calendar day, as the hub counts it


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
            "start": (TODAY - timedelta(days=1)).isoformat(),
            "end": (TODAY + timedelta(days=3)).isoformat(),
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
