"""`ketenhub medewerkers import|list`: the caseworker directory from the command line."""

from __future__ import annotations

import asyncio
import json
import signal
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from hub.config import load_settings
from hub.errors import ConfigError
from hub.store import Store

if TYPE_CHECKING:
    from hub.directory.importer import RowResult

app = typer.Typer(help="The caseworker directory (Halt-medewerkers).", no_args_is_help=True)


def _store() -> Store:
    try:
        settings = load_settings()
    except ConfigError as exc:
        typer.echo(f"ketenhub: configuration error: {exc}", err=True)
        raise typer.Exit(2) from None
    return Store(settings.database.url)


class _Stopped(Exception):
    """SIGINT or SIGTERM asked the import to stop: it stopped after a whole row."""


class _Rows:
    """The rows as they are loaded: the report so far, progress on a terminal (standard error), and a
    stop between two rows on SIGINT or SIGTERM (a second one stops at once, the row in hand rolled
    back)."""

    PROGRESS_EVERY_S = 0.5

    def __init__(self, name: str) -> None:
        self.name = name
        self.results: list[RowResult] = []
        self.signal: signal.Signals | None = None
        self.task: asyncio.Task[Any] | None = None
        self.terminal = sys.stderr.isatty()
        self._shown_at: float | None = None

    def stop(self, sig: signal.Signals) -> None:
        if self.signal is None:
            self.signal = sig
        elif self.task is not None:
            self.task.cancel()

    def __call__(self, result: RowResult, total: int) -> None:
        self.results.append(result)
        now, done = time.monotonic(), len(self.results)
        due = self._shown_at is None or now - self._shown_at >= self.PROGRESS_EVERY_S or done == total
        if self.terminal and due:
            self._shown_at = now
            sys.stderr.write(f"\r{self.name}: {done} van {total} rijen verwerkt")
            sys.stderr.flush()
        if self.signal is not None:
            raise _Stopped

    def end_progress(self) -> None:
        if self._shown_at is not None:
            sys.stderr.write("\n")
            sys.stderr.flush()

    def stopped_line(self) -> str:
        """What was loaded when the import stopped, and what running it again does."""
        assert self.signal is not None
        how = f"gestopt ({self.signal.name})"
        if not self.results:
            return f"{self.name}: {how} voor de eerste rij: niets geladen. Importeer het bestand opnieuw."
        last = self.results[-1].row
        return (
            f"{self.name}: {how} na rij {last}: rij 2 t/m {last} is verwerkt (het verslag hierboven), de"
            " rijen daarna niet. Importeer hetzelfde bestand opnieuw voor de rest: wat al geladen is, komt"
            " terug als ONGEWIJZIGD (en wordt niet opnieuw geschreven of gelogd)."
        )


def _print_report(report: dict[str, Any], as_json: bool) -> None:
    if as_json:
        typer.echo(json.dumps(report, indent=2, ensure_ascii=False))
        return
    for row in report["rows"]:
        said = [f"{e['field']}: {e['reason']}" for e in row["errors"]] + [
            f"{c['field']}: {c['old'] or '(leeg)'} -> {c['new'] or '(leeg)'}" for c in row["changes"]
        ]
        who = row["caseworkerId"] or "-"
        typer.echo(f"rij {row['row']:>4}  {row['result']:<11}  {who:<20}  {'; '.join(said)}")
    typer.echo(
        f"{report['total']} rijen: {report['aangemaakt']} aangemaakt, "
        f"{report['bijgewerkt']} bijgewerkt, {report['ongewijzigd']} ongewijzigd, {report['fout']} fout"
    )


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

    On a terminal it shows its progress. Ctrl-C or SIGTERM stops it after the row in hand (a second
    one at once): it prints the report so far and the row it stopped after, and exits 130 or 143;
    the same file imported again loads the rest (the rows loaded come back ONGEWIJZIGD).
    """
    from hub.directory.importer import ImportFileError, ImportReport, ImportStopped, import_csv
    from hub.ops.cli import USER

    store = _store()
    rows = _Rows(file.name)

    async def go() -> dict[str, Any] | None:
        loop = asyncio.get_running_loop()
        rows.task = asyncio.current_task()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, rows.stop, sig)
        try:
            await store.migrate()
            if rows.signal is not None:
                return None
            return (await import_csv(store, file.read_bytes(), user=USER, on_row=rows)).as_json()
        except _Stopped:
            return None
        except asyncio.CancelledError:
            if rows.signal is None or rows.task is None:
                raise
            rows.task.uncancel()  # stopped by the second signal, the row in hand rolled back
            return None
        finally:
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(sig)
            await store.close()

    try:
        report = asyncio.run(go())
    except (ImportFileError, ImportStopped) as exc:
        rows.end_progress()
        if rows.results:  # the store failed part way: what was loaded before it
            _print_report(ImportReport(rows.results).as_json(), as_json)
        typer.echo(f"ketenhub: {file.name}: {exc}", err=True)
        raise typer.Exit(2) from None
    rows.end_progress()
    if report is None:
        _print_report(ImportReport(rows.results).as_json(), as_json)
        typer.echo(f"ketenhub: {rows.stopped_line()}", err=True)
        raise typer.Exit(128 + (rows.signal or signal.SIGINT))
    _print_report(report, as_json)
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
