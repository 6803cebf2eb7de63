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
    Actief, Afwezig vanaf, Afwezig tot en met.
    """
    from hub.directory.importer import ImportFileError, ImportStopped, import_csv

    store = _store()

    async def go() -> dict[str, object]:
        try:
            await store.migrate()
            return (await import_csv(store, file.read_bytes(), user="cli")).as_json()
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
            errors = "; ".join(f"{e['field']}: {e['reason']}" for e in row["errors"])
            typer.echo(
                f"rij {row['row']:>4}  {row['result']:<11}  {row['caseworkerId'] or '-':<20}  {errors}"
            )
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
