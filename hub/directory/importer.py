"""Bulk load of the directory from a semicolon CSV with Dutch headers; a report per row.

Each row is its own transaction: one bad row never blocks the rest, and a row is loaded whole or
not at all. A file that cannot be read as such a CSV (an encoding other than UTF-8 or Windows-1252,
wrong delimiter, unknown or missing headers, a line the csv module refuses) is refused whole with
ImportFileError, before any row is loaded. A row the database refuses is that row's error; a store
that fails stops the import there (ImportStopped).
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any

from pydantic import ValidationError
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncSession

from hub.audit import AuditEntry, write_audit
from hub.directory.ids import id_problem
from hub.directory.service import create_caseworker, lock_caseworker, replace_caseworker
from hub.signals.rules import phone_problem
from hub.store import Store, store_failed
from schemas._base import NO_CONTROL_PROBLEM
from schemas.caseworker import Absence, Caseworker, Team
from schemas.problems import controls_refused

REQUIRED = ("Medewerkernummer", "Naam", "E-mail", "Team")
OPTIONAL = ("Telefoon", "Meldingsbevoegd", "Vervanger", "Actief", "Afwezig vanaf", "Afwezig tot en met")
TEAMS = {"den haag": Team.DEN_HAAG, "den_haag": Team.DEN_HAAG, "leiden": Team.LEIDEN, "gouda": Team.GOUDA}
ID_COLUMNS = ("Medewerkernummer", "Vervanger")  # checked before the store sees them
REFUSED = "de database weigerde deze rij"
FIELDS = {
    "caseworker_id": "Medewerkernummer", "name": "Naam", "email": "E-mail", "phone": "Telefoon",
    "team": "Team", "delegate_id": "Vervanger", "start": "Afwezig vanaf", "end": "Afwezig tot en met",
}  # fmt: skip


class ImportFileError(ValueError):
    """The file as a whole cannot be imported; names what is wrong."""


class ImportStopped(Exception):
    """The store failed at a row: the rows before it are loaded, it and the rest are not."""

    def __init__(self, row: int) -> None:
        super().__init__(
            f"de database was niet bereikbaar bij rij {row}; de rijen daarvoor zijn geladen, deze en"
            " de volgende niet. Importeer het bestand later opnieuw: geladen rijen blijven gelijk."
        )
        self.row = row


SYSTEM = "ketenhub.directory"
RESULTS = ("AANGEMAAKT", "BIJGEWERKT", "ONGEWIJZIGD", "FOUT")


@dataclass
class RowResult:
    """The outcome of one data row (row numbers count the header as row 1)."""

    row: int
    caseworker_id: str | None
    result: str  # AANGEMAAKT | BIJGEWERKT | ONGEWIJZIGD | FOUT
    errors: list[dict[str, str]] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        """For the API and the CLI."""
        return {
            "row": self.row,
            "caseworkerId": self.caseworker_id,
            "result": self.result,
            "errors": self.errors,
        }


@dataclass
class ImportReport:
    """Counts and the per-row results."""

    rows: list[RowResult]

    def as_json(self) -> dict[str, Any]:
        """For the API and the CLI."""
        count = {k: sum(r.result == k for r in self.rows) for k in RESULTS}
        return {
            "total": len(self.rows),
            **{k.lower(): v for k, v in count.items()},
            "rows": [r.as_json() for r in self.rows],
        }


def _text(data: bytes) -> str:
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        pass
    try:
        return data.decode("cp1252")
    except UnicodeDecodeError:  # 0x81, 0x8d, 0x8f, 0x90, 0x9d mean nothing in Windows-1252
        raise ImportFileError("onbekende tekencodering (verwacht UTF-8 of Windows-1252)") from None


def _unreadable(reader: csv.DictReader[str], exc: csv.Error) -> ImportFileError:
    # The csv module's message names the problem, never the field's text.
    if "field larger than field limit" in str(exc):
        problem = f"een veld is langer dan {csv.field_size_limit()} tekens"
    else:
        problem = "geen geldige CSV (bijvoorbeeld een losse regelterugloop buiten aanhalingstekens)"
    # DictReader.line_num is only set after a row it returned; the inner reader counts the failing line.
    return ImportFileError(f"regel {reader.reader.line_num}: {problem}")


def read_rows(data: bytes) -> list[dict[str, str]]:
    """The data rows as dicts by header; ImportFileError for a file that is not our CSV."""
    text = _text(data)
    reader = csv.DictReader(io.StringIO(text), delimiter=";")
    try:
        headers = [h.strip() for h in reader.fieldnames or []]
    except csv.Error as exc:
        raise _unreadable(reader, exc) from None
    if len(headers) <= 1:
        raise ImportFileError("geen puntkomma-gescheiden bestand (verwacht ';' tussen de kolommen)")
    unknown = [h for h in headers if h not in REQUIRED + OPTIONAL]
    missing = [h for h in REQUIRED if h not in headers]
    if unknown or missing:
        parts = ([f"onbekende kolommen: {', '.join(unknown)}"] if unknown else []) + (
            [f"ontbrekende kolommen: {', '.join(missing)}"] if missing else []
        )
        raise ImportFileError("; ".join(parts) + f" (toegestaan: {', '.join(REQUIRED + OPTIONAL)})")
    reader.fieldnames = headers
    try:
        return [{k: (v or "").strip() for k, v in row.items() if k is not None} for row in reader]
    except csv.Error as exc:
        raise _unreadable(reader, exc) from None


def _yes(value: str, column: str, default: bool) -> bool:
    if not value:
        return default
    if value.lower() in ("ja", "j", "true", "1"):
        return True
    if value.lower() in ("nee", "n", "false", "0"):
        return False
    raise ValueError(f"{column}: 'ja' of 'nee' verwacht")


def _day(value: str, column: str) -> date:
    for fmt in ("%d-%m-%Y", "%Y-%m-%d"):
        try:
            return datetime.strptime(value, fmt).date()
        except ValueError:
            continue
    raise ValueError(f"{column}: datum als dd-mm-jjjj verwacht")


def to_caseworker(row: dict[str, str], existing: Caseworker | None) -> Caseworker:
    """One row as a Caseworker, merged with what the directory holds (absences are added)."""
    team = TEAMS.get(row.get("Team", "").lower())
    if team is None:
        raise ValueError("Team: Den Haag, Leiden of Gouda verwacht")
    absences = list(existing.absences) if existing else []
    start, end = row.get("Afwezig vanaf", ""), row.get("Afwezig tot en met", "")
    if start or end:
        if not (start and end):
            raise ValueError("Afwezig vanaf / Afwezig tot en met: beide invullen")
        first, last = _day(start, "Afwezig vanaf"), _day(end, "Afwezig tot en met")
        if last < first:
            raise ValueError("Afwezig tot en met: ligt voor Afwezig vanaf")
        new = Absence(start=first, end=last)
        if new not in absences:
            absences.append(new)
    cw = Caseworker(
        caseworker_id=row["Medewerkernummer"],
        name=row["Naam"],
        email=row["E-mail"],
        phone=row.get("Telefoon") or None,
        team=team,
        meldingsbevoegd=_yes(row.get("Meldingsbevoegd", ""), "Meldingsbevoegd", False),
        delegate_id=row.get("Vervanger") or None,
        active=_yes(row.get("Actief", ""), "Actief", True),
        absences=absences,
    )
    # One who may signal is a signal's contact (rule 13, borging): the Verwijsindex must take the phone.
    problem = phone_problem(cw.phone) if cw.meldingsbevoegd else None
    if problem is not None:
        raise ValueError(f"Telefoon: {problem}")
    return cw


def _id_errors(row: dict[str, str]) -> list[dict[str, str]]:
    """The id columns that cannot be stored (too long, a control character): refused before the
    store, which would otherwise fail the row's statement (PostgreSQL) or take a NUL in a lookup."""
    problems = ((column, id_problem(row[column])) for column in ID_COLUMNS if row.get(column))
    return [{"field": column, "reason": reason} for column, reason in problems if reason]


def _errors(exc: Exception) -> list[dict[str, str]]:
    if isinstance(exc, ValidationError):
        out = []
        for e in exc.errors():
            name = str(e["loc"][0]) if e["loc"] else "(rij)"
            reason = NO_CONTROL_PROBLEM if controls_refused(e) else str(e["msg"])
            out.append({"field": FIELDS.get(name, name), "reason": reason.removeprefix("Value error, ")})
        return out
    column, _, reason = str(exc).partition(": ")
    return [{"field": column, "reason": reason}] if reason else [{"field": "(rij)", "reason": str(exc)}]


async def _load_row(session: AsyncSession, row: dict[str, str], cw_id: str) -> tuple[Caseworker, str]:
    """Merge the row with the stored caseworker under its lock and write it; return how it went:
    AANGEMAAKT, BIJGEWERKT, or ONGEWIJZIGD when the row changes nothing (nothing written)."""
    existing = await lock_caseworker(session, cw_id)
    cw = to_caseworker(row, existing)
    if existing is None:
        if await create_caseworker(session, cw):
            return cw, "AANGEMAAKT"
        # Another import or PUT created them after our read (PostgreSQL waited for it): merge with theirs.
        existing = await lock_caseworker(session, cw_id)
        cw = to_caseworker(row, existing)
    if cw == existing:
        return cw, "ONGEWIJZIGD"
    await replace_caseworker(session, cw)
    return cw, "BIJGEWERKT"


async def import_csv(
    store: Store, data: bytes, *, user: str, transaction_id: str | None = None
) -> ImportReport:
    """Load every row in its own transaction; return the per-row report.

    ImportStopped when the store fails (`store_failed`): the rows before are loaded, the rest not.
    """
    results = []
    for number, row in enumerate(read_rows(data), start=2):
        cw_id = row.get("Medewerkernummer") or None
        if id_errors := _id_errors(row):
            bad_id = any(e["field"] == "Medewerkernummer" for e in id_errors)
            results.append(RowResult(number, None if bad_id else cw_id, "FOUT", id_errors))
            continue
        try:
            async with store.transaction() as session:
                cw, result = await _load_row(session, row, cw_id or "")
                if result != "ONGEWIJZIGD":  # an import run again (after a 503) audits only what it changes
                    entry = AuditEntry(
                        action="directory.imported",
                        user=user,
                        objects={"caseworker_id": cw.caseworker_id, "row": number},
                    )
                    await write_audit(session, entry, transaction_id=transaction_id, system=SYSTEM)
            results.append(RowResult(number, cw.caseworker_id, result))
        except (ValueError, KeyError) as exc:  # ValidationError is a ValueError
            results.append(RowResult(number, cw_id, "FOUT", _errors(exc)))
        except SQLAlchemyError as exc:
            if store_failed(exc):
                raise ImportStopped(number) from exc
            # The database refused this row's values: its message may quote them, so it is not passed on.
            results.append(RowResult(number, cw_id, "FOUT", [{"field": "(rij)", "reason": REFUSED}]))
    return ImportReport(results)
