"""The directory CSV import on both stores: what a file leaves out is kept, delegates must exist,
and a malformed file or row is refused by name with nothing of it written."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import select

from hub.directory import get_caseworker, list_caseworkers
from hub.directory.importer import ImportFileError, import_csv
from hub.store import Store
from hub.store.tables import audit_log
from schemas.caseworker import Caseworker

pytestmark = pytest.mark.integration

FULL = (
    "Medewerkernummer;Naam;E-mail;Telefoon;Team;Meldingsbevoegd;Vervanger;Actief\n"
    "cw-ilse;Ilse Bakker;ilse@halt.nl;070 123 4567;Den Haag;ja;cw-omar;ja\n"
    "cw-omar;Omar Haddou;omar@halt.nl;;Leiden;nee;;nee\n"  # Omar has left
)
HR = (  # a routine file from HR: the required columns only
    "Medewerkernummer;Naam;E-mail;Team\n"
    "cw-ilse;Ilse Bakker;ilse@halt.nl;Den Haag\n"
    "cw-omar;Omar Haddou;omar@halt.nl;Leiden\n"
)


async def _load(store: Store, text: str | bytes) -> dict[int, dict[str, Any]]:
    data = text.encode() if isinstance(text, str) else text
    return {row["row"]: row for row in (await import_csv(store, data, user="anna")).as_json()["rows"]}


async def _get(store: Store, caseworker_id: str) -> Caseworker:
    async with store.read() as session:
        return await get_caseworker(session, caseworker_id)


async def _ids(store: Store) -> list[str]:
    async with store.read() as session:
        return [cw.caseworker_id for cw in await list_caseworkers(session)]


async def _imported(store: Store) -> list[dict[str, object]]:
    async with store.connect() as conn:
        q = select(audit_log.c.objects).where(audit_log.c.action == "directory.imported")
        return [row.objects for row in (await conn.execute(q)).all()]


async def test_a_file_without_the_optional_columns_changes_nothing_it_does_not_name(store: Store) -> None:
    """A routine HR file with the required columns only reactivated a caseworker who had left, took
    away meldingsbevoegd (rule 13), the delegate (rules 16, 17) and the phone, and said BIJGEWERKT."""
    assert [r["result"] for r in (await _load(store, FULL)).values()] == ["AANGEMAAKT"] * 2
    ilse, omar = await _get(store, "cw-ilse"), await _get(store, "cw-omar")

    again = await _load(store, HR)
    assert [r["result"] for r in again.values()] == ["ONGEWIJZIGD"] * 2
    assert (await _get(store, "cw-ilse"), await _get(store, "cw-omar")) == (ilse, omar)
    assert not omar.active and ilse.meldingsbevoegd and ilse.delegate_id == "cw-omar"
    assert ilse.phone == "070 123 4567"

    # Blank Actief and Meldingsbevoegd cells say nothing either; the HR file's new name is the change.
    blank = FULL.replace(";ja;cw-omar;ja\n", ";;cw-omar;\n").replace(
        "Omar Haddou;omar@halt.nl;;Leiden;nee;;nee", "Omar H. Haddou;omar@halt.nl;;Leiden;;;"
    )
    moved = await _load(store, blank)
    assert moved[2]["result"] == "ONGEWIJZIGD"
    assert moved[3]["result"] == "BIJGEWERKT"
    assert moved[3]["changes"] == [{"field": "Naam", "old": "Omar Haddou", "new": "Omar H. Haddou"}]
    assert not (await _get(store, "cw-omar")).active and (await _get(store, "cw-ilse")).meldingsbevoegd

    # A blank Telefoon or Vervanger cell clears it; Actief=ja, said in so many words, reactivates.
    said = (
        "Medewerkernummer;Naam;E-mail;Telefoon;Team;Vervanger;Actief\n"
        "cw-ilse;Ilse Bakker;ilse@halt.nl;;Den Haag;;\n"
        "cw-omar;Omar H. Haddou;omar@halt.nl;;Gouda;;ja\n"
    )
    cleared = await _load(store, said)
    assert [r["result"] for r in cleared.values()] == ["BIJGEWERKT"] * 2
    assert cleared[2]["changes"] == [
        {"field": "Telefoon", "old": "070 123 4567", "new": None},
        {"field": "Vervanger", "old": "cw-omar", "new": None},
    ]
    assert cleared[3]["changes"] == [
        {"field": "Team", "old": "Leiden", "new": "Gouda"},
        {"field": "Actief", "old": "nee", "new": "ja"},
    ]
    ilse = await _get(store, "cw-ilse")
    assert (ilse.phone, ilse.delegate_id, ilse.meldingsbevoegd) == (None, None, True)
    assert (await _get(store, "cw-omar")).active
    fields = [o.get("fields") for o in await _imported(store)]  # rule 18: the audit says what changed
    assert ["Telefoon", "Vervanger"] in fields and ["Team", "Actief"] in fields

    # A new caseworker gets the defaults for what the file leaves out.
    new = await _load(store, "Medewerkernummer;Naam;E-mail;Team\ncw-anna;Anna de Wit;anna@halt.nl;Gouda\n")
    anna = await _get(store, "cw-anna")
    assert new[2]["result"] == "AANGEMAAKT" and new[2]["changes"] == []
    assert (anna.active, anna.meldingsbevoegd, anna.delegate_id, anna.phone) == (True, False, None, None)


async def test_a_delegate_must_be_in_the_directory_or_created_by_the_file(store: Store) -> None:
    """The import took any Vervanger, where the API answers 422 for one not in the directory: mail for
    an absent caseworker went to nobody (rule 16) and borging had nobody to move signals to (rule 17)."""
    await _load(store, "Medewerkernummer;Naam;E-mail;Team\ncw-omar;Omar Haddou;omar@halt.nl;Leiden\n")
    rows = (
        "Medewerkernummer;Naam;E-mail;Team;Vervanger\n"
        "cw-anna;Anna de Wit;anna@halt.nl;Gouda;cw-nobody\n"  # nowhere
        "cw-ilse;Ilse Bakker;ilse@halt.nl;Den Haag;cw-fleur\n"  # a later row of this file
        "cw-fleur;Fleur de Vries;fleur@halt.nl;Leiden;cw-omar\n"  # in the directory
        "cw-jan;Jan Smit;jan@halt.nl;Gouda;cw-bad\n"  # only in a row that fails
        "cw-bad;Bad Row;not-an-address;Gouda;\n"
        "cw-piet;Piet Smit;piet@halt.nl;Gouda;cw-kees\n"  # two new ones standing in for each other
        "cw-kees;Kees Smit;kees@halt.nl;Gouda;cw-piet\n"
        "cw-omar;Omar Haddou;omar@halt.nl;Leiden;cw-jan\n"  # an existing one: nothing of the row is written
    )
    report = await _load(store, rows)
    assert {n: r["result"] for n, r in report.items()} == {
        2: "FOUT", 3: "AANGEMAAKT", 4: "AANGEMAAKT", 5: "FOUT", 6: "FOUT",
        7: "AANGEMAAKT", 8: "AANGEMAAKT", 9: "FOUT",
    }  # fmt: skip
    for n, delegate in ((2, "cw-nobody"), (5, "cw-bad"), (9, "cw-jan")):
        [error] = report[n]["errors"]
        assert error["field"] == "Vervanger" and delegate in error["reason"]
        assert "niet in de medewerkerslijst" in error["reason"]
    assert await _ids(store) == ["cw-fleur", "cw-ilse", "cw-kees", "cw-omar", "cw-piet"]
    assert (await _get(store, "cw-omar")).delegate_id is None
    assert (await _get(store, "cw-ilse")).delegate_id == "cw-fleur"
    assert {o["caseworker_id"] for o in await _imported(store)} == {
        "cw-omar", "cw-ilse", "cw-fleur", "cw-piet", "cw-kees",
    }  # fmt: skip


async def test_a_row_whose_fields_do_not_match_the_header_is_refused_by_count(store: Store) -> None:
    """Extra fields were dropped without a word (a value in the wrong column, the rest loaded); a
    value under a column without a name was lost the same way."""
    rows = (
        "Medewerkernummer;Naam;E-mail;Team;Vervanger;\n"  # a trailing ';', as Excel may write
        "cw-1;Ilse Bakker;ilse@halt.nl;Den Haag;;ja\n"  # a value under the column without a name
        "cw-2;Omar Haddou;omar@halt.nl;Leiden;;;ja\n"  # 7 fields
        "cw-3;Fleur de Vries;fleur@halt.nl;Gouda\n"  # 4 fields: Vervanger left off, not blank
        "cw-4;Anna de Wit;anna@halt.nl;Gouda;;\n"
        "cw-5;Jan Smit;jan@halt.nl;Gouda;\n"  # only the column without a name left off
    )
    report = await _load(store, rows)
    assert [r["result"] for r in report.values()] == ["FOUT", "FOUT", "FOUT", "AANGEMAAKT", "AANGEMAAKT"]
    reasons = {n: r["errors"][0]["reason"] for n, r in report.items() if r["errors"]}
    assert "kolom 6" in reasons[2] and "geen naam" in reasons[2]
    assert reasons[3].startswith("7 velden, maar de kopregel heeft 6 kolommen")
    assert reasons[4].startswith("4 velden, maar de kopregel heeft 6 kolommen")
    assert all(r["errors"][0]["field"] == "(rij)" for r in report.values() if r["errors"])
    assert await _ids(store) == ["cw-4", "cw-5"]  # nothing of a refused row
    assert {o["caseworker_id"] for o in await _imported(store)} == {"cw-4", "cw-5"}


async def test_a_doubled_column_or_excel_unicode_text_is_refused_whole_by_name(store: Store) -> None:
    """A doubled header was taken, the last one winning; Excel's "Unicode text" (UTF-16, tabs) was read
    as Windows-1252 and its header echoed back with a NUL between every letter."""
    doubled = "Medewerkernummer;Naam;E-mail;Team;Team\ncw-1;Ilse Bakker;ilse@halt.nl;Den Haag;Gouda\n"
    with pytest.raises(ImportFileError, match="dubbele kolommen: Team"):
        await _load(store, doubled)
    unicode_text = HR.replace(";", "\t").encode("utf-16")
    with pytest.raises(ImportFileError, match="tabs") as refused:
        await _load(store, unicode_text)
    assert "\x00" not in str(refused.value) and "puntkomma" in str(refused.value)
    assert await _ids(store) == []

    # UTF-16 with its byte order mark and semicolons (Notepad's "Unicode") is read as it is.
    report = await _load(
        store, "Medewerkernummer;Naam;E-mail;Team\ncw-1;Zoë Çelik;zoe@halt.nl;Gouda\n".encode("utf-16")
    )
    assert report[2]["result"] == "AANGEMAAKT" and (await _get(store, "cw-1")).name == "Zoë Çelik"


async def test_a_file_of_mixed_encodings_is_refused_whole_and_a_bad_form_is_said_in_words(
    store: Store,
) -> None:
    """A file part UTF-8, part Windows-1252 was read as Windows-1252 whole, and "Jérôme" stored as
    "JÃ©rôme"; an e-mail address or phone number of the wrong form was answered with pydantic's regex."""
    mixed = "Medewerkernummer;Naam;E-mail;Team\ncw-1;Jérôme;j@halt.nl;Gouda\n".encode()
    mixed = mixed.replace("ô".encode(), "ô".encode("cp1252"))
    with pytest.raises(ImportFileError, match="gemengde tekencodering"):
        await _load(store, mixed)
    assert await _ids(store) == []
    assert (
        await _load(
            store, "Medewerkernummer;Naam;E-mail;Team\ncw-1;Jérôme;j@halt.nl;Gouda\n".encode("cp1252")
        )
    )[2]["result"] == "AANGEMAAKT"
    assert (await _get(store, "cw-1")).name == "Jérôme"

    report = await _load(
        store,
        "Medewerkernummer;Naam;E-mail;Telefoon;Team\ncw-2;Ilse Bakker;geen-adres;abc;Gouda\n",
    )
    assert report[2]["result"] == "FOUT", report
    reasons = {e["field"]: e["reason"] for e in report[2]["errors"]}
    assert reasons == {
        "E-mail": "geen geldig e-mailadres (naam@domein.nl)",
        "Telefoon": "geen geldig telefoonnummer (4-40 tekens: cijfers, spaties, + ( ) -)",
    }
