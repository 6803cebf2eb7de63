"""Bulk load of the directory from a semicolon CSV with Dutch headers; a report per row.

Each row is its own transaction: one bad row never blocks the rest, and a row is loaded whole or
not at all. A file that cannot be read as such a CSV is refused whole with ImportFileError, before any
row is loaded; a row whose shape is wrong is that row's error (reading the file, and what it refuses:
`hub.directory.importer_csv`). A row the database refuses is that row's error; a store that fails
stops the import there (ImportStopped).

A new caseworker takes the defaults for what the file leaves out (no phone, not meldingsbevoegd, no
delegate, active). A caseworker already in the directory keeps every field whose column the file
lacks, and keeps Actief and Meldingsbevoegd when their cell is blank: only `ja`/`nee` changes them, so
a routine file never reactivates one who left nor takes away the right to signal (rule 13). A blank
Telefoon or Vervanger cell clears the phone or the delegate. Absences are only ever added. A delegate
must be in the directory or be a caseworker a faultless row of the same file creates (also a later
row), as the API demands. A BIJGEWERKT row lists each field it changed, with the old and new value.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any

from pydantic import ValidationError
from sqlalchemy import select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncSession

from hub.audit import AuditEntry, write_audit
from hub.directory.ids import id_problem
from hub.directory.importer_csv import ImportFileError, Row, read_rows
from hub.directory.mailbox import email_problem
from hub.directory.service import create_caseworker, lock_caseworker, replace_caseworker
from hub.directory.tables import caseworkers
from hub.errors import connect_failed
from hub.signals.rules import phone_problem
from hub.store import Store, store_failed
from schemas.caseworker import Absence, Caseworker, Team
from schemas.problems import controls_refused

TEAMS = {"den haag": Team.DEN_HAAG, "den_haag": Team.DEN_HAAG, "leiden": Team.LEIDEN, "gouda": Team.GOUDA}
TEAM_NAMES = {Team.DEN_HAAG: "Den Haag", Team.LEIDEN: "Leiden", Team.GOUDA: "Gouda"}
ID_COLUMNS = ("Medewerkernummer", "Vervanger")  # checked before the store sees them
REFUSED = "de database weigerde deze rij"
FIELDS = {
    "caseworker_id": "Medewerkernummer", "name": "Naam", "email": "E-mail", "phone": "Telefoon",
    "team": "Team", "delegate_id": "Vervanger", "start": "Afwezig vanaf", "end": "Afwezig tot en met",
}  # fmt: skip
# What a value that does not fit its field's form should be, for an administrator (not the pattern)
PATTERN_REASONS = {
    "email": "geen geldig e-mailadres (naam@domein.nl)",
    "phone": "geen geldig telefoonnummer (4-40 tekens: cijfers, spaties, + ( ) -)",
}
NEW: dict[str, Any] = {"phone": None, "meldingsbevoegd": False, "delegate_id": None, "active": True}
SHOWN = ("name", "email", "phone", "team", "meldingsbevoegd", "delegate_id", "active")  # in a report
SHOWN_AS = FIELDS | {"meldingsbevoegd": "Meldingsbevoegd", "active": "Actief"}

# What the API and the CLI import from here; ImportFileError is raised while reading the file
__all__ = ["ImportFileError", "ImportReport", "ImportStopped", "RowResult", "import_csv"]


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
    changes: list[dict[str, str | None]] = field(default_factory=list)  # BIJGEWERKT: field, old, new

    def as_json(self) -> dict[str, Any]:
        """For the API and the CLI."""
        return {
            "row": self.row,
            "caseworkerId": self.caseworker_id,
            "result": self.result,
            "errors": self.errors,
            "changes": self.changes,
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


def _absences(row: dict[str, str], existing: Caseworker | None) -> list[Absence]:
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
    return absences


def to_caseworker(row: dict[str, str], existing: Caseworker | None) -> Caseworker:
    """One row as a Caseworker, merged with what the directory holds: a column the file lacks keeps
    the stored value (a new caseworker: the default), and so does a blank Actief or Meldingsbevoegd;
    a blank Telefoon or Vervanger clears it; absences are added."""
    team = TEAMS.get(row.get("Team", "").lower())
    if team is None:
        raise ValueError("Team: Den Haag, Leiden of Gouda verwacht")
    kept = {k: getattr(existing, k) for k in NEW} if existing else NEW
    cw = Caseworker(
        caseworker_id=row["Medewerkernummer"],
        name=row["Naam"],
        email=row["E-mail"],
        phone=(row["Telefoon"] or None) if "Telefoon" in row else kept["phone"],
        team=team,
        meldingsbevoegd=_yes(row.get("Meldingsbevoegd", ""), "Meldingsbevoegd", kept["meldingsbevoegd"]),
        delegate_id=(row["Vervanger"] or None) if "Vervanger" in row else kept["delegate_id"],
        active=_yes(row.get("Actief", ""), "Actief", kept["active"]),
        absences=_absences(row, existing),
    )
    # One who may signal is a signal's contact (rule 13, borging): the Verwijsindex must take the phone.
    problem = phone_problem(cw.phone) if cw.meldingsbevoegd else None
    if problem is not None:
        raise ValueError(f"Telefoon: {problem}")
    # Every mail for the caseworker goes there: the hub must be able to send to it.
    if (problem := email_problem(cw.email)) is not None:
        raise ValueError(f"E-mail: {problem}")
    return cw


def _shown(value: object) -> str | None:
    if isinstance(value, bool):
        return "ja" if value else "nee"
    if isinstance(value, Team):
        return TEAM_NAMES[value]
    return None if value is None else str(value)


def changes(old: Caseworker, new: Caseworker) -> list[dict[str, str | None]]:
    """What a row changed, column by column, with the old and the new value (None: empty)."""
    out = [
        {"field": SHOWN_AS[name], "old": _shown(getattr(old, name)), "new": _shown(getattr(new, name))}
        for name in SHOWN
        if getattr(old, name) != getattr(new, name)
    ]
    added = [a for a in new.absences if a not in old.absences]
    return out + [
        {"field": "Afwezig", "old": None, "new": f"{a.start:%d-%m-%Y} t/m {a.end:%d-%m-%Y}"} for a in added
    ]


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
            controls = controls_refused(e)
            reason = controls[0] if controls is not None else str(e["msg"])
            if controls is None and e["type"] == "string_pattern_mismatch":  # not pydantic's regex
                reason = PATTERN_REASONS.get(name, "heeft niet de juiste vorm")
            out.append({"field": FIELDS.get(name, name), "reason": reason.removeprefix("Value error, ")})
        return out
    column, _, reason = str(exc).partition(": ")
    return [{"field": column, "reason": reason}] if reason else [{"field": "(rij)", "reason": str(exc)}]


async def _stored(session: AsyncSession, caseworker_id: str | None = None) -> set[str]:
    """The ids the directory holds (a few hundred people): all, or `caseworker_id` if it is there."""
    q = select(caseworkers.c.caseworker_id)
    if caseworker_id is not None:
        q = q.where(caseworkers.c.caseworker_id == caseworker_id)
    return set((await session.execute(q)).scalars())


def _created_by(rows: list[Row], stored: set[str]) -> set[str]:
    """The caseworkers the file can create: those with a faultless row whose delegate is in the
    directory (`stored`) or is created by the file too. Shrinks to a fixed point, so a pair standing
    in for each other, both new, is kept."""
    delegates: dict[str, list[str | None]] = {}
    for row in rows:
        if row.problem is None and not _id_errors(row.cells):
            try:
                cw = to_caseworker(row.cells, None)
            except (ValueError, KeyError):
                continue
            delegates.setdefault(cw.caseworker_id, []).append(cw.delegate_id)
    ids = set(delegates)
    while True:
        kept = {i for i in ids if any(d is None or d in stored or d in ids for d in delegates[i])}
        if kept == ids:
            return ids
        ids = kept


async def _check_delegate(session: AsyncSession, row: dict[str, str], in_file: set[str]) -> None:
    """ValueError when the row names a delegate that is neither in the directory nor created by the
    file; a delegate the row does not name (no Vervanger column) is the stored one, not checked."""
    delegate = row.get("Vervanger")
    if delegate and delegate not in in_file and not await _stored(session, delegate):
        raise ValueError(
            f"Vervanger: {delegate} staat niet in de medewerkerslijst en wordt ook niet aangemaakt door"
            " een foutloze rij van dit bestand"
        )


async def _load_row(
    session: AsyncSession, row: dict[str, str], cw_id: str, in_file: set[str]
) -> tuple[Caseworker, str, list[dict[str, str | None]]]:
    """Merge the row with the stored caseworker under its lock and write it; return how it went:
    AANGEMAAKT, BIJGEWERKT (with what changed), or ONGEWIJZIGD when the row changes nothing
    (nothing written)."""
    existing = await lock_caseworker(session, cw_id)
    cw = to_caseworker(row, existing)
    await _check_delegate(session, row, in_file)
    if existing is None:
        if await create_caseworker(session, cw):
            return cw, "AANGEMAAKT", []
        # Another import or PUT created them after our read (PostgreSQL waited for it): merge with theirs.
        existing = await lock_caseworker(session, cw_id)
        assert existing is not None  # caseworkers are never deleted
        cw = to_caseworker(row, existing)
    if cw == existing:
        return cw, "ONGEWIJZIGD", []
    await replace_caseworker(session, cw)
    return cw, "BIJGEWERKT", changes(existing, cw)


async def import_csv(
    store: Store,
    data: bytes,
    *,
    user: str,
    transaction_id: str | None = None,
    on_row: Callable[[RowResult, int], None] | None = None,
) -> ImportReport:
    """Load every row in its own transaction; return the per-row report.

    ImportFileError before anything is loaded when the file is not our CSV; ImportStopped when the
    store fails (`store_failed`): the rows before are loaded, the rest not. `on_row` is told each
    row's result, with the number of rows, once it is loaded (or refused); what it raises stops the
    import there, that row loaded and the rest not.
    """
    rows = read_rows(data)
    try:
        async with store.read() as session:
            in_file = _created_by(rows, await _stored(session))
    except OSError as exc:
        if connect_failed(exc):  # the store not reached
            raise ImportStopped(2) from exc
        raise
    except SQLAlchemyError as exc:
        if store_failed(exc):
            raise ImportStopped(2) from exc
        raise
    results = []
    for row in rows:
        results.append(await _import_row(store, row, in_file, user, transaction_id))
        if on_row is not None:
            on_row(results[-1], len(rows))
    return ImportReport(results)


async def _import_row(
    store: Store, row: Row, in_file: set[str], user: str, transaction_id: str | None
) -> RowResult:
    number, cells = row.number, row.cells
    cw_id = cells.get("Medewerkernummer") or None
    if id_errors := _id_errors(cells):
        bad_id = any(e["field"] == "Medewerkernummer" for e in id_errors)
        return RowResult(number, None if bad_id else cw_id, "FOUT", id_errors)
    if row.problem is not None:
        return RowResult(number, cw_id, "FOUT", [{"field": "(rij)", "reason": row.problem}])
    try:
        async with store.transaction() as session:
            cw, result, changed = await _load_row(session, cells, cw_id or "", in_file)
            if result != "ONGEWIJZIGD":  # an import run again (after a 503) audits only what it changes
                objects: dict[str, Any] = {"caseworker_id": cw.caseworker_id, "row": number}
                if changed:
                    objects["fields"] = [c["field"] for c in changed]
                entry = AuditEntry(action="directory.imported", user=user, objects=objects)
                await write_audit(session, entry, transaction_id=transaction_id, system=SYSTEM)
        return RowResult(number, cw.caseworker_id, result, changes=changed)
    except (ValueError, KeyError) as exc:  # ValidationError is a ValueError
        return RowResult(number, cw_id, "FOUT", _errors(exc))
    except OSError as exc:
        # the store not reached (a connect refused, timed out, a name not resolved): the rows before
        # are loaded, and the answer must say so, not that nothing was kept
        if connect_failed(exc):
            raise ImportStopped(number) from exc
        raise
    except SQLAlchemyError as exc:
        if store_failed(exc):
            raise ImportStopped(number) from exc
        # The database refused this row's values: its message may quote them, so it is not passed on.
        return RowResult(number, cw_id, "FOUT", [{"field": "(rij)", "reason": REFUSED}])
