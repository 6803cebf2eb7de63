"""`ketenhub medewerkers import|list`: the caseworker directory from the command line."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Annotated

import typer

from hub.config import load_settings
from hub.errors import ConfigError
from hub.store import Store

app = typer.Typer(help="The caseworker directory (Halt-medewerkers).", no_args_is_help=True)


def _store() -> Store:
    try:
        settings = load_settings()
    except ConfigError as exc:
        typer.echo(f"ketenhub: configuration error: {exc}", err=True)
        raise typer.Exit(2) from None
    return Store(settings.database.url)


@app.command("import")
def import_file(
    file: Annotated[Path, typer.Argument(exists=True, dir_okay=False, help="semicolon CSV, Dutch headers")],
    as_json: Annotated[bool, typer.Option("--json", help="print the report as JSON")] = False,
) -> None:
    """Load caseworkers from a semicolon CSV; a report per row (exit 1 when a row failed).

    Columns: Medewerkernummer, Naam, E-mail, Team; optional Telefoon, Meldingsbevoegd, Vervanger,
    Actief, Afwezig vanaf, Afwezig tot en met (each column once; UTF-8, Windows-1252 or UTF-16).

    A new caseworker gets the defaults for what the file leaves out: no phone, not meldingsbevoegd,
    no delegate, active. A caseworker already in the directory keeps each field whose column the
    file lacks, and keeps Actief and Meldingsbevoegd when the cell is blank (only ja/nee changes
    them, so a file never reactivates someone who left unless it says Actief=ja). A blank Telefoon
    or Vervanger cell clears the phone or the delegate. Absences are only added. A Vervanger must be
    in the directory or be created by a faultless row of the same file. A row with more or fewer
    fields than the header is refused. Each row is loaded whole or not at all; a BIJGEWERKT row
    lists every field it changed (old -> new).
    """
    from hub.directory.importer import ImportFileError, ImportStopped, import_csv
    from hub.ops.cli import USER

    store = _store()

    async def go() -> dict[str, object]:
        try:
            await store.migrate()
            return (await import_csv(store, file.read_bytes(), user=USER)).as_json()
        finally:
            await store.close()

    try:
        report = asyncio.run(go())
    except (ImportFileError, ImportStopped) as exc:
        typer.echo(f"ketenhub: {file.name}: {exc}", err=True)
        raise typer.Exit(2) from None
    if as_json:
        typer.echo(json.dumps(report, indent=2, ensure_ascii=False))
    else:
        for row in report["rows"]:  # type: ignore[attr-defined]
            said = [f"{e['field']}: {e['reason']}" for e in row["errors"]] + [
                f"{c['field']}: {c['old'] or '(leeg)'} -> {c['new'] or '(leeg)'}" for c in row["changes"]
            ]
            who = row["caseworkerId"] or "-"
            typer.echo(f"rij {row['row']:>4}  {row['result']:<11}  {who:<20}  {'; '.join(said)}")
        typer.echo(
            f"{report['total']} rijen: {report['aangemaakt']} aangemaakt, "
            f"{report['bijgewerkt']} bijgewerkt, {report['ongewijzigd']} ongewijzigd, {report['fout']} fout"
        )
    if report["fout"]:
        raise typer.Exit(1)


@app.command("list")
def list_all() -> None:
    """Everyone in the directory: id, name, team, delegate, absent today, active."""
    from hub.clock import today as local_today
    from hub.directory import list_caseworkers

    store = _store()

    async def go() -> list[object]:
        try:
            await store.migrate()
            async with store.transaction() as session:
                return list(await list_caseworkers(session))
        finally:
            await store.close()

    today = local_today()
    for cw in asyncio.run(go()):
        absent = "afwezig" if cw.is_absent_on(today) else ""  # type: ignore[attr-defined]
        gone = "" if cw.active else "uit dienst"  # type: ignore[attr-defined]
        typer.echo(
            f"{cw.caseworker_id:<20} {cw.name:<30} {cw.team.value:<9} "  # type: ignore[attr-defined]
            f"vervanger={cw.delegate_id or '-':<15} {absent} {gone}".rstrip()  # type: ignore[attr-defined]
        )
