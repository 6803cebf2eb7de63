"""`ketenhub inzage`: the subject-access export (rule 20) from the command line, audited."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from hub.config import Settings
from hub.ops.inzage import InvalidBsn, counts_line, export
from hub.store import Store


def _read_bsn() -> str:
    """From standard input (a pipe or a file), else asked for without echo: a BSN on the command
    line would stay in the shell's history and show in the process list."""
    if sys.stdin.isatty():
        return str(typer.prompt("BSN", hide_input=True)).strip()
    return sys.stdin.readline().strip()


def _write(doc: dict[str, Any], out: Path | None) -> None:
    text = json.dumps(doc, ensure_ascii=False, indent=2)
    if out is None:
        typer.echo(text)
        return
    # created for the owner alone, written whole or not at all
    partial = out.with_name(out.name + ".part")
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text)
    partial.replace(out)


def inzage(
    out: Annotated[
        Path | None,
        typer.Option(help="write the export to this file (readable by you alone) instead of standard output"),
    ] = None,
) -> None:
    """Everything the hub holds and disclosed about one BSN (rule 20), as JSON; audited.

    The BSN is read from standard input (`ketenhub inzage --out export.json < bsn.txt`) or asked
    for. Dead letters are read from the brokers in KETENHUB_KAFKA__BOOTSTRAP_SERVERS; without them
    (the embedded broker lives in the hub) the export says it is incomplete, and the console's
    export (`POST /ops/api/inzage`) has them.
    """
    from hub.ops.cli import USER, _dead_letters, _run

    bsn = _read_bsn()

    async def go(settings: Settings, store: Store) -> dict[str, Any]:
        secret = settings.secret_value()
        if settings.embedded_broker:
            return await export(store, bsn=bsn, secret=secret, by=USER, dead_letters=None)
        async with _dead_letters(settings, store) as dl:
            return await export(store, bsn=bsn, secret=secret, by=USER, dead_letters=dl)

    try:
        doc = _run(go)
    except InvalidBsn as exc:
        typer.echo(f"ketenhub: not a BSN: {exc}", err=True)
        raise typer.Exit(2) from None
    _write(doc, out)
    typer.echo(f"export made ({counts_line(doc['counts'])})", err=True)
    for gap in doc["incomplete"]:
        typer.echo(f"ketenhub: incomplete: {gap}", err=True)
