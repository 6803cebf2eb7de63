"""Properties of the leerplicht CSV parser over generated exports (the JSON formats' are beside it).

1. Valid rows, in any column order, header spelling, line ending and encoding the format allows,
   each become a Referral that keeps its facts, under their own row number and case reference.
2. Any one cell made invalid (missing, out of range, oversize, not in its form) gives that row alone
   problems that name that column, and no BSN, name or the invalid value in their text.
3. Any text in any cell is read or refused on that column (or on the row, for an order between two
   columns): never an exception, never a problem on a field the export does not have, and the
   rejection of a refused row can always be made.
"""

from __future__ import annotations

import csv
import io
import re

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from connectors import leerplicht
from hub.intake import reject_unparseable
from schemas.partners.leerplicht import HEADERS, REQUIRED_HEADERS
from schemas.problems import FieldProblem
from schemas.referral import Decision
from tests.helpers.partner_records import Drawn, fact, leerplicht_records

# Every column of the export (README, "Leerplicht") and the kind of value its cells hold.
KINDS: dict[str, str] = {
    "Dossiernummer": "code",
    "BSN": "bsn",
    "Voornamen": "text",
    "Tussenvoegsel": "text",
    "Achternaam": "text",
    "Geboortedatum": "date",
    "Geslacht": "text",
    "Woonplaats": "text",
    "School": "text",
    "BRIN": "brin",
    "Verzuim vanaf": "date",
    "Verzuim tot en met": "date",
    "Uren verzuim": "number",
    "Aantal keer te laat": "number",
    "Naam ouder/verzorger": "text",
    "Telefoon ouder/verzorger": "phone",
    "E-mail ouder/verzorger": "email",
    "Jeugdige akkoord": "janee",
    "Ouders akkoord": "janee",
    "Ouders geinformeerd op": "date",
    "Eerdere Halt-verwijzingen": "count",
    "OvJ-toestemming": "janee",
    "Leerplichtambtenaar": "text",
    "E-mail leerplichtambtenaar": "email",
    "Telefoon leerplichtambtenaar": "phone",
    "Gemeente": "text",
}
REQUIRED = {"Dossiernummer", "BSN", "Voornamen", "Achternaam", "Geboortedatum", "Woonplaats", "Verzuim vanaf",
            "Verzuim tot en met", "Uren verzuim", "Leerplichtambtenaar", "Gemeente"}  # fmt: skip
ROW = "(rij)"

# Invalid cells per kind; distinctive, so an echo of them would be noticed.
_OVERSIZE = {"text": 201, "code": 101}
INVALID: dict[str, list[str]] = {
    "text": ["oversize"],
    "code": ["oversize"],
    "bsn": ["wrong-check-digit", "12345678X", "Zq-geen-bsn", "1234567", "000000000"],
    "date": ["31-02-2025", "12 maart 2025", "2025-13-01", "Zq-gisteren", "20250312"],
    "number": ["-1", "10001", "Zq-veel", "2,5"],  # hours and times late: 0 to 10 000
    "count": ["-1", "101", "Zq-veel", "2,5"],  # earlier Halt referrals: 0 to 100
    "janee": ["Zq-misschien", "2", "0.5"],
    "email": ["Zq-geen-mailadres", "a@b"],
    "phone": ["Zq-bel-mij", "06"],
    "brin": ["Zq-geen-brin", "123ABC", "12A", "AB12"],
}


def test_every_column_has_a_kind_and_the_required_ones_are_the_documented_ones() -> None:
    assert set(KINDS) == set(HEADERS)
    assert set(KINDS.values()) <= set(INVALID)
    assert set(REQUIRED_HEADERS) == REQUIRED


def _spellings(header: str) -> list[str]:
    """How an export may spell a column's header: the matching ignores case, accents and '_'."""
    written = header.replace("geinformeerd", "geïnformeerd")
    return [header, written, written.lower(), written.upper(), written.replace(" ", "_")]


@st.composite
def exports(
    draw: st.DrawFn, rows: list[dict[str, str]], encodings: tuple[str, ...] = ("utf-8", "utf-8-sig", "cp1252")
) -> bytes:
    """`rows` as a school administration might export them: the columns in any order and spelling,
    optional columns no row fills sometimes left out, CRLF or LF, UTF-8 with or without BOM or
    Windows-1252."""
    unused = [h for h in KINDS if not any(h in row for row in rows)]
    left_out = set(draw(st.lists(st.sampled_from(unused), unique=True))) if unused else set()
    columns = draw(st.permutations([h for h in KINDS if h not in left_out]))
    out = io.StringIO()
    writer = csv.writer(out, delimiter=";", lineterminator=draw(st.sampled_from(["\r\n", "\n"])))
    writer.writerow([draw(st.sampled_from(_spellings(h))) for h in columns])
    writer.writerows([row.get(h, "") for h in columns] for row in rows)
    text = out.getvalue()
    encoding = draw(st.sampled_from(encodings))
    try:
        return text.encode(encoding)
    except UnicodeEncodeError:  # a name Windows-1252 cannot write
        return text.encode("utf-8")


def shown(problems: list[FieldProblem]) -> str:
    return " ".join(p.model_dump_json() for p in problems)


# --- 1. valid rows keep their facts ------------------------------------------------------------


@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_valid_rows_become_referrals_that_keep_their_facts(data: st.DataObject) -> None:
    drawn = data.draw(st.lists(st.booleans().flatmap(lambda full: leerplicht_records(full=full)),
                               min_size=1, max_size=3))  # fmt: skip
    results = leerplicht.parse_batch(data.draw(exports([d.record for d in drawn])))
    assert [r.row for r in results] == list(range(1, len(drawn) + 1))
    for result, d in zip(results, drawn, strict=True):
        assert result.referral is not None, result.problems
        for key, expected in d.facts.items():
            assert fact(result.referral, key) == expected, key
        assert result.case_reference == d.facts["case_reference"]


# --- 2. one invalid cell is named, and nothing is echoed ---------------------------------------


def _invalid(kind: str, choice: str, old: str) -> str:
    if choice == "oversize":
        return "Zq" * _OVERSIZE[kind]
    if choice == "wrong-check-digit":
        bsn = old.strip()
        return bsn[:-1] + str((int(bsn[-1]) + 1) % 10)
    if choice == "missing":
        return " "
    return choice


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_one_invalid_cell_is_named_on_its_row_and_its_value_never_echoed(data: st.DataObject) -> None:
    drawn = data.draw(leerplicht_records(full=True))
    others = data.draw(st.lists(leerplicht_records(), max_size=2))
    column = data.draw(st.sampled_from(sorted(KINDS)), label="column")
    kind = KINDS[column]
    choices = INVALID[kind] + (["missing"] if column in REQUIRED else [])
    choice = data.draw(st.sampled_from(choices), label="invalid")
    bad = _invalid(kind, choice, drawn.record[column])
    at = data.draw(st.integers(min_value=0, max_value=len(others)), label="row")
    rows = [o.record for o in others]
    rows.insert(at, drawn.record | {column: bad})
    results = leerplicht.parse_batch(data.draw(exports(rows)))
    assert [r.ok for r in results] == [i != at for i in range(len(rows))]  # that row alone
    result = results[at]
    fields = [p.field for p in result.problems]
    assert fields and set(fields) == {column}, (column, choice, fields)
    if column != "Dossiernummer":
        assert result.case_reference == drawn.facts["case_reference"]
    text = shown(result.problems)
    for secret in drawn.secrets:
        assert secret not in text
    if len(bad.strip()) >= 4:
        assert bad.strip()[:12] not in text


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    drawn=leerplicht_records(full=True),
    cell=st.text(max_size=40).map(lambda t: t.replace('"', "")),
    stray_at=st.sampled_from(sorted(KINDS)),
)
def test_a_stray_quote_spoils_its_own_line_and_every_line_after_it_is_read(
    drawn: Drawn, cell: str, stray_at: str
) -> None:
    # Read as one CSV stream, a cell opened by a stray '"' ran to the end of the file: the rows after
    # it were neither accepted nor refused. Its line is refused on its own; the rest are read.
    good = [
        drawn.record,
        drawn.record | {"Dossiernummer": "LP-NA-1"},
        drawn.record | {"Dossiernummer": "LP-NA-2"},
    ]
    lines = plain_export(good).decode("utf-8").split("\r\n")
    cells = lines[1].split(";")
    at = sorted(KINDS).index(stray_at) if stray_at in KINDS else 0
    cells[list(KINDS).index(stray_at)] = '"' + cell.replace(";", "").replace("\n", " ").replace("\r", " ")
    lines[1] = ";".join(cells)
    results = leerplicht.parse_batch("\r\n".join(lines).encode("utf-8"))
    assert [r.row for r in results] == [1, 2, 3], (at, results)
    assert not results[0].ok
    assert [r.ok for r in results[1:]] == [True, True]


# --- 3. nothing crashes, nothing is reported on a field the export does not have ---------------

OTHER_DIGITS = ("٠١٢٣٤٥٦٧٨٩", "０１２３４５６７８９", "०१२३४५६७८९")  # Arabic-Indic, full-width, Devanagari


def plain_export(rows: list[dict[str, str]]) -> bytes:
    """`rows` under the documented headers, in UTF-8 (the layouts are tried above)."""
    out = io.StringIO()
    writer = csv.writer(out, delimiter=";", lineterminator="\r\n")
    writer.writerow(KINDS)
    writer.writerows([row.get(h, "") for h in KINDS] for row in rows)
    return out.getvalue().encode("utf-8")


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    drawn=leerplicht_records(full=True),
    # around a name's 200; a quoted cell may run over a few lines, not more (the test after this one)
    text=st.one_of(st.text(max_size=30), st.text(min_size=180, max_size=220)).map(
        lambda t: t if len(re.findall(r"\r\n|\r|\n", t)) < leerplicht.MAX_CELL_LINES - 1 else " "
    ),
    digits=st.sampled_from(OTHER_DIGITS),
)
def test_any_text_in_any_cell_is_read_or_refused_on_that_column(drawn: Drawn, text: str, digits: str) -> None:
    # One batch, a row per column and way to spoil it: the text in that cell, or the valid cell with its
    # digits written in another script (which a regular expression's \d may take for digits).
    other = str.maketrans("0123456789", digits)
    spoiled = [(c, text) for c in KINDS] + [(c, drawn.record[c].translate(other)) for c in KINDS]
    results = leerplicht.parse_batch(plain_export([drawn.record | {c: v} for c, v in spoiled]))
    assert [r.row for r in results] == list(range(1, len(spoiled) + 1))
    for result, (column, _) in zip(results, spoiled, strict=True):
        assert result.ok != bool(result.problems)
        # an order between two columns (a period before the birth date) is on the row
        assert all(p.field in (column, ROW) for p in result.problems), (column, result.problems)
        if result.problems:  # the rejection the hub stores and answers with can be made and read back
            decision = reject_unparseable(result.problems, result.case_reference)
            assert Decision.model_validate_json(decision.model_dump_json()) == decision
