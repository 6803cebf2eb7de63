"""Reading the directory's CSV file: its encoding, the semicolon header and each row's shape.

A file that cannot be read as such a CSV (an encoding other than UTF-8, Windows-1252 or UTF-16 with
its byte order mark, wrong delimiter, unknown, missing or doubled headers, a line the csv module
refuses) is refused whole with ImportFileError. A row with more or fewer fields than the header, or a
value under a column without a name, is read with its problem: that row's error, nothing of it loaded.
"""

from __future__ import annotations

import codecs
import csv
import io
from dataclasses import dataclass

from schemas._base import UTF8_SEQUENCE, readable

REQUIRED = ("Medewerkernummer", "Naam", "E-mail", "Team")
OPTIONAL = ("Telefoon", "Meldingsbevoegd", "Vervanger", "Actief", "Afwezig vanaf", "Afwezig tot en met")


class ImportFileError(ValueError):
    """The file as a whole cannot be imported; names what is wrong."""


@dataclass(frozen=True)
class Row:
    """One data row: its cells by header (columns the file has; blank cells ""), and what is wrong
    with its shape, if anything (then nothing of it is loaded)."""

    number: int  # the header is row 1
    cells: dict[str, str]
    problem: str | None = None


def _text(data: bytes) -> str:
    if data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):  # Excel's "Unicode" files
        try:
            return data.decode("utf-16")
        except UnicodeDecodeError:
            raise ImportFileError("ongeldige UTF-16 (het bestand begint met een UTF-16-kenmerk)") from None
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        pass
    if UTF8_SEQUENCE.search(data):  # some of it UTF-8: read as Windows-1252, its names would be garbled
        raise ImportFileError(
            "gemengde tekencodering: deels UTF-8, deels iets anders (verwacht UTF-8 of Windows-1252)"
        )
    try:
        return data.decode("cp1252")
    except UnicodeDecodeError:  # 0x81, 0x8d, 0x8f, 0x90, 0x9d mean nothing in Windows-1252
        raise ImportFileError("onbekende tekencodering (verwacht UTF-8 of Windows-1252)") from None


def _unreadable(line: int, exc: csv.Error) -> ImportFileError:
    # The csv module's message names the problem, never the field's text.
    if "field larger than field limit" in str(exc):
        problem = f"een veld is langer dan {csv.field_size_limit()} tekens"
    else:
        problem = "geen geldige CSV (bijvoorbeeld een losse regelterugloop buiten aanhalingstekens)"
    return ImportFileError(f"regel {line}: {problem}")


def _check_headers(headers: list[str]) -> None:
    """ImportFileError unless the header names known columns, each once, the required ones all."""
    if len(headers) <= 1:
        if headers and "\x00" in headers[0]:
            hint = " (NUL-tekens: UTF-16 zonder kenmerk? Sla op als CSV UTF-8)"
        elif headers and "\t" in headers[0]:
            hint = " (dit bestand gebruikt tabs, zoals Excels 'Unicode-tekst': sla op als CSV)"
        else:
            hint = ""
        raise ImportFileError(f"geen puntkomma-gescheiden bestand (verwacht ';' tussen de kolommen){hint}")
    named = [h for h in headers if h]  # a column without a name is ignored while it stays empty
    unknown = [h for h in named if h not in REQUIRED + OPTIONAL]
    missing = [h for h in REQUIRED if h not in named]
    doubled = [h for h in dict.fromkeys(named) if named.count(h) > 1 and h not in unknown]
    if unknown or missing or doubled:
        shown = [readable(h if len(h) <= 40 else h[:40] + "…") for h in unknown]
        parts = (
            ([f"onbekende kolommen: {', '.join(shown)}"] if unknown else [])
            + ([f"ontbrekende kolommen: {', '.join(missing)}"] if missing else [])
            + ([f"dubbele kolommen: {', '.join(doubled)}"] if doubled else [])
        )
        raise ImportFileError(
            "; ".join(parts) + f" (toegestaan, elk één keer: {', '.join(REQUIRED + OPTIONAL)})"
        )


def _row(number: int, headers: list[str], fields: list[str]) -> Row:
    cells = {h: (fields[i] if i < len(fields) else "").strip() for i, h in enumerate(headers) if h}
    lacking = any(headers[len(fields) :])  # trailing columns without a name may be left off
    unnamed = [i + 1 for i, h in enumerate(headers[: len(fields)]) if not h and fields[i].strip()]
    if len(fields) > len(headers):
        problem = (
            f"{len(fields)} velden, maar de kopregel heeft {len(headers)} kolommen"
            " (een ';' in een waarde hoort tussen aanhalingstekens)"
        )
    elif lacking:
        problem = f"{len(fields)} velden, maar de kopregel heeft {len(headers)} kolommen"
    elif unnamed:
        problem = f"een waarde in kolom {unnamed[0]}, die in de kopregel geen naam heeft"
    else:
        return Row(number, cells)
    return Row(number, cells, f"{problem}; niets van deze rij is geladen")


def read_rows(data: bytes) -> list[Row]:
    """The data rows; ImportFileError for a file that is not our CSV."""
    lines = csv.reader(io.StringIO(_text(data)), delimiter=";")
    try:
        headers = [h.strip() for h in next(lines, [])]
        _check_headers(headers)
        rows: list[Row] = []
        for fields in lines:
            if fields:  # an empty line is no row
                rows.append(_row(len(rows) + 2, headers, fields))
    except csv.Error as exc:
        raise _unreadable(lines.line_num, exc) from None
    return rows
