"""Leerplicht CSV batches (semicolon-separated, Dutch headers) translated row by row into Referrals."""

from __future__ import annotations

import codecs
import csv
import re
import unicodedata
from collections.abc import Iterator, Mapping
from typing import Final

from pydantic import ValidationError

from schemas._base import UTF8_SEQUENCE, as_code
from schemas.bsn import is_valid_bsn, normalise_bsn
from schemas.partners._common import full_surname, gender_of, to_canonical, translate
from schemas.partners.leerplicht import (
    HEADERS,
    ORGANISATION_PREFIX,
    REQUIRED_HEADERS,
    LeerplichtRij,
    RowResult,
)
from schemas.problems import MAX_PROBLEMS, FieldProblem, PartnerFormatError, capped, problems_from
from schemas.referral import Guardian, Referral, Referrer, ReferrerType, Track, Truancy, Youth

__all__ = [
    "DECISION_FIELDS",
    "MAX_PROBLEMS_PER_ROW",
    "REFERRER_TYPE",
    "SAMPLE_DIR",
    "RowResult",
    "iter_batch",
    "parse_batch",
    "to_referral",
]

REFERRER_TYPE: Final = ReferrerType.LEERPLICHT
SAMPLE_DIR: Final = "leerplicht"
CASE_REFERENCE_FIELD: Final = "Dossiernummer"
# The row's own column for each canonical field a reason of intake may name (DecisionReason.field,
# hub.intake.rules.ReasonField): the column header `parse_batch` reads it from, as a format error
# names it; the HTTP answers name it beside the canonical field (hub.intake.partner_fields). Without
# one column of their own: "truancy", whose bounds are on two ("Uren verzuim", "Aantal keer te
# laat"); without a leerplicht equivalent: the offence and damage fields, and confessed.
DECISION_FIELDS: Final[Mapping[str, str]] = {
    "case_reference": CASE_REFERENCE_FIELD,
    "youth.birth_date": "Geboortedatum",
    "truancy.period_end": "Verzuim tot en met",
    "youth_agreed": "Jeugdige akkoord",
    "parents_agreed": "Ouders akkoord",
    "ovj_approval": "OvJ-toestemming",
}
DELIMITER: Final = ";"
# A row of nonsense fails on every column; past ten problems a partner learns nothing new from the
# rest, while each one would be held and answered for every such row in the batch.
MAX_PROBLEMS_PER_ROW: Final = 10

_FILE = "(bestand)"
_ROW = "(rij)"
_ENCODINGS = "UTF-8 (met of zonder BOM) of Windows-1252"


def _batch_error(problem: str, allowed: str | None = None, field: str = _FILE) -> PartnerFormatError:
    return PartnerFormatError([FieldProblem(field=field, problem=problem, allowed=allowed)])


def decode(raw: bytes) -> str:
    """Decode an export: UTF-8 with or without BOM, else Windows-1252; mixed encodings are refused."""
    if raw.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        raise _batch_error("UTF-16 wordt niet ondersteund", _ENCODINGS)
    if raw.startswith(codecs.BOM_UTF8):
        try:
            return raw[len(codecs.BOM_UTF8) :].decode("utf-8")
        except UnicodeDecodeError:
            raise _batch_error("gemengde tekencodering: UTF-8-BOM met ongeldige UTF-8", _ENCODINGS) from None
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        pass
    if UTF8_SEQUENCE.search(raw):
        raise _batch_error("gemengde tekencodering: deels UTF-8, deels iets anders", _ENCODINGS)
    try:
        return raw.decode("cp1252")
    except UnicodeDecodeError:
        raise _batch_error("onbekende tekencodering", _ENCODINGS) from None


def _norm(header: str) -> str:
    folded = unicodedata.normalize("NFKD", header).encode("ascii", "ignore").decode()
    return " ".join(folded.lower().replace("_", " ").split())


_KNOWN = {_norm(h): h for h in HEADERS}


def _headers(cells: list[str]) -> list[str]:
    if len(cells) == 1:
        for other in (",", "\t", "|"):
            if other in cells[0]:
                shown = "tab" if other == "\t" else repr(other)
                raise _batch_error(f"scheidingsteken is {shown}", "';' (puntkomma)")
    if not any(_norm(c) in _KNOWN for c in cells):
        raise _batch_error("geen kopregel herkend", ", ".join(HEADERS), field="kopregel")
    width = len(cells)
    while width and not cells[width - 1].strip():
        width -= 1  # empty columns after the last header: ';;;' at the end of an export's lines
    problems, seen, taken, found = [], [], set(), 0
    for position, cell in enumerate(cells[:width], start=1):
        known = _KNOWN.get(_norm(cell))
        if known is None or known in taken:
            found += 1
            if found <= MAX_PROBLEMS:  # the rest are counted, not made (a line of 200,000 cells)
                problems.append(
                    FieldProblem(field=known, problem="kolomkop komt dubbel voor")
                    if known
                    else FieldProblem(
                        field=f"kolom {position}",
                        problem="onbekende kolomkop" if cell.strip() else "lege kolomkop",
                        allowed=", ".join(HEADERS),
                    )
                )
        seen.append(known or "")
        taken.add(known)
    missing = [
        FieldProblem(field=h, problem="verplichte kolom ontbreekt", allowed=h)
        for h in HEADERS
        if h in REQUIRED_HEADERS and h not in taken
    ]
    if problems or missing:
        raise PartnerFormatError([*missing, *capped(problems, found)])
    return seen


def parse_batch(raw: bytes) -> list[RowResult]:
    """Every data row's result; a wrong encoding, delimiter or header raises for the whole batch."""
    return list(iter_batch(raw))


def iter_batch(raw: bytes) -> Iterator[RowResult]:
    """`parse_batch` row by row, so a caller need not hold every result; the batch is checked first."""
    lines = _LINE_BREAK.split(decode(raw))
    start = next((i for i, line in enumerate(lines) if line.strip(" ;\t")), None)
    if start is None:
        raise _batch_error("leeg bestand", "een kopregel en ten minste één rij")
    header = _cells(lines[start])
    if header is None:
        raise _batch_error("kopregel is geen geldige CSV", _QUOTES)
    return _results(lines, start + 1, _headers(header))


# A quoted cell may hold a line break (Excel's Alt+Enter), but read as one CSV stream, one stray '"'
# opening a cell took every line after it into that cell: those rows were neither accepted nor
# refused. A record runs over more lines only when its quotes close within MAX_CELL_LINES lines and
# it then has the header's columns; otherwise its first line is refused on its own, and reading goes
# on with the next line. So too when the lines it takes are rows of their own (`_runs_rows_together`):
# a second stray '"' further down closed the first one's quote, and one record held two youths' rows
# (the second neither accepted nor refused, its BSN and name in a cell of the first).
_BSN = "BSN"
_LINE_BREAK = re.compile(r"\r\n|\r|\n")
MAX_CELL_LINES: Final = 20
_QUOTES = (
    "een cel tussen aanhalingstekens sluit met '\"' (een '\"' in de cel als '\"\"'), op dezelfde regel"
    f" of binnen {MAX_CELL_LINES} regels met evenveel kolommen als de kopregel"
)


def _cells(line: str) -> list[str] | None:
    """A line's cells; None when its quotes do not close."""
    try:
        return next(csv.reader((line,), delimiter=DELIMITER, strict=True), [])
    except csv.Error:
        return None


def _results(lines: list[str], start: int, headers: list[str]) -> Iterator[RowResult]:
    number, i = 0, start
    while i < len(lines):
        number += 1
        cells, i = _record(lines, i, headers)
        if cells is None:
            yield RowResult(
                row=number, problems=[FieldProblem(field=_ROW, problem="ongeldige CSV", allowed=_QUOTES)]
            )
        elif any(c.strip() for c in cells):
            yield _row(number, headers, cells)


def _record(lines: list[str], i: int, headers: list[str]) -> tuple[list[str] | None, int]:
    """The record starting at line `i` and the line after it: one line, or a few whose quoted cell
    closes with the header's columns and that are not rows run together; None (and the next line)
    when neither."""
    cells = _cells(lines[i])
    if cells is not None:
        return cells, i + 1
    width, text = len(headers), lines[i]
    for end in range(i + 1, min(i + MAX_CELL_LINES, len(lines))):
        text += "\n" + lines[end]
        cells = _cells(text)
        if cells is None:
            continue
        fits = len(cells) >= width and not any(c.strip() for c in cells[width:])
        if not fits or _runs_rows_together(lines[i : end + 1], cells, headers):
            return None, i + 1
        return cells, end + 1
    return None, i + 1


def _runs_rows_together(taken: list[str], cells: list[str], headers: list[str]) -> bool:
    """Whether a record over the lines `taken` is rows of their own that a stray quote ran together.

    Over lines, one cell holds the line breaks (the `spanning` one). Its first line holds the cells
    before it and its start: fewer columns than the header unless it is the last column, so read
    without its quotes, a valid row there is a stray '"' in it. What follows a line break is the
    cell's rest and the cells after it: fewer columns than the header, or (the first cell spanning)
    the row's own columns shifted by none, so when another cell spans lines, a valid row there is a
    row a second stray '"' closed the quote in. Valid: the header's columns and a row the format
    takes (a BSN that passes the elfproef, dates, counts), which the rest of a cell is by chance only.
    """
    spanning = next((n for n, cell in enumerate(cells) if "\n" in cell), 0)
    if spanning < len(headers) - 1 and _valid_row(taken[0].replace('"', ""), headers):
        return True
    return spanning > 0 and any(_valid_row(line, headers) for line in taken[1:])


def _valid_row(line: str, headers: list[str]) -> bool:
    """True when `line`, read on its own, is a row of the header's columns that the format takes."""
    cells = _cells(line)
    if cells is None or len(cells) < len(headers) or any(c.strip() for c in cells[len(headers) :]):
        return False
    data = {h: c for h, c in zip(headers, cells, strict=False) if h and c.strip()}
    if not is_valid_bsn(data.get(_BSN, "").strip()):  # the cheap check first
        return False
    try:
        LeerplichtRij.model_validate(data)
    except ValidationError:
        return False
    return True


def _row(number: int, headers: list[str], cells: list[str]) -> RowResult:
    extra = cells[len(headers) :]
    if any(c.strip() for c in extra):
        problem = f"{len(cells)} kolommen, de kopregel heeft er {len(headers)}"
        return RowResult(row=number, problems=[FieldProblem(field=_ROW, problem=problem)])
    data = {h: c for h, c in zip(headers, cells, strict=False) if h and c.strip()}
    reference = as_code(data.get(CASE_REFERENCE_FIELD))  # None when it is no usable reference
    try:
        record = LeerplichtRij.model_validate(data)
    except ValidationError as exc:
        problems = _in_row(problems_from(exc, LeerplichtRij))  # its columns are known names
        return RowResult(row=number, case_reference=reference, problems=problems, bsn=_bsn_in(data))
    try:
        # a value the row lets through but the canonical Referral cannot hold is on "(vertaling)"
        referral = translate(to_referral, record)
    except PartnerFormatError as exc:
        problems = _in_row(exc.problems)
        return RowResult(row=number, case_reference=reference, problems=problems, bsn=_bsn_in(data))
    return RowResult(row=number, case_reference=reference, referral=referral)


def _bsn_in(data: dict[str, str]) -> str | None:
    """An unreadable row's BSN, when its cell holds one (elfproef)."""
    found = data.get(_BSN)
    return normalise_bsn(found) if found is not None and is_valid_bsn(found) else None


def _in_row(problems: list[FieldProblem]) -> list[FieldProblem]:
    """The row's problems with message-level ones on "(rij)", at most MAX_PROBLEMS_PER_ROW and a count."""
    shown = [
        p.model_copy(update={"field": _ROW}) if p.field == "(bericht)" else p
        for p in problems[:MAX_PROBLEMS_PER_ROW]
    ]
    if len(problems) > MAX_PROBLEMS_PER_ROW:
        more = len(problems) - MAX_PROBLEMS_PER_ROW
        shown.append(FieldProblem(field=_ROW, problem=f"en nog {more} problemen in deze rij (niet getoond)"))
    return shown


def to_referral(row: LeerplichtRij) -> Referral:
    """Translate a validated CSV row into the canonical Referral."""
    guardians = []
    if row.naam_ouder:
        guardians.append(Guardian(name=row.naam_ouder, phone=row.telefoon_ouder, email=row.email_ouder))
    return to_canonical(
        Referral,
        referrer=Referrer(
            type=REFERRER_TYPE,
            organisation=f"{ORGANISATION_PREFIX}{row.gemeente}",
            officer_name=row.leerplichtambtenaar,
            email=row.email_lpa,
            phone=row.telefoon_lpa,
        ),
        case_reference=row.dossiernummer,
        youth=Youth(
            bsn=row.bsn,
            given_names=row.voornamen,
            surname=full_surname(row.tussenvoegsel, row.achternaam),
            birth_date=row.geboortedatum,
            gender=gender_of(row.geslacht),
            municipality=row.woonplaats,
            guardians=guardians,
        ),
        track=Track.HALT_SCHOOLVERZUIM,
        truancy=Truancy(
            period_start=row.verzuim_vanaf,
            period_end=row.verzuim_tot_en_met,
            hours=row.uren_verzuim,
            times_late=row.keer_te_laat,
            school_name=row.school,
            school_brin=row.brin,
        ),
        youth_agreed=row.jeugdige_akkoord,
        parents_agreed=row.ouders_akkoord,
        parents_informed_at=row.ouders_geinformeerd_op,
        prior_halt_referrals=row.eerdere_halt,
        ovj_approval=row.ovj_toestemming,
    )
