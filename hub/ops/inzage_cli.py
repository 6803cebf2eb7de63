"""`ketenhub inzage`: the subject-access export (rule 20) from the command line, audited."""

from __future__ import annotations

import contextlib
import errno
import json
import os
import secrets
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


class Output:
    """The file an export goes to, written whole or not at all.

    A temporary file beside it is made before the export is (an export is audited): new (O_EXCL, so
    never a file left behind or put there by someone else), never through a symlink (O_NOFOLLOW),
    and for the owner alone from the start (0600). It is renamed onto the file once written and on
    disk; `close` removes it when that did not happen.
    """

    def __init__(self, path: Path) -> None:
        if path.is_dir():
            raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR))
        self.path, self.placed = path, False
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        while True:
            self.partial = path.with_name(f".{path.name}.{secrets.token_hex(8)}.part")
            try:
                self.fd = os.open(self.partial, flags, 0o600)
                return
            except FileExistsError:  # that name is taken: another
                continue

    def write(self, text: str) -> None:
        """Write `text`, wait until it is on disk, and put the file in place."""
        fd, self.fd = self.fd, -1
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        self.partial.replace(self.path)
        self.placed = True
        with contextlib.suppress(OSError):  # the rename on disk too, where the file system allows it
            directory = os.open(self.path.parent, os.O_RDONLY | os.O_DIRECTORY)
            try:
                os.fsync(directory)
            finally:
                os.close(directory)

    def close(self) -> None:
        """Remove the temporary file, and what was written into it, unless it is in place."""
        if self.fd != -1:
            os.close(self.fd)
            self.fd = -1
        if not self.placed:
            self.partial.unlink(missing_ok=True)


def _output(path: Path | None) -> Output | None:
    """The output made ready before the BSN is asked for; exit 2 when it cannot be written."""
    if path is None:
        return None
    try:
        return Output(path)
    except OSError as exc:
        typer.echo(f"ketenhub: cannot write the export to {path}: {exc.strerror or exc}", err=True)
        raise typer.Exit(2) from None


def inzage(
    out: Annotated[
        Path | None,
        typer.Option(help="write the export to this file (readable by you alone) instead of standard output"),
    ] = None,
) -> None:
    """Everything the hub holds and disclosed about one BSN (rule 20), as JSON; audited.

    The BSN is read from standard input (`ketenhub inzage --out export.json < bsn.txt`) or asked
    for. It takes the hub's secret (KETENHUB_SECRET, or KETENHUB_STATE_DIR where `ketenhub run` keeps
    ketenhub.secret): without one, or with another than the hub started with, it refuses. Dead
    letters are read from the brokers in KETENHUB_KAFKA__BOOTSTRAP_SERVERS; without them (the
    embedded broker lives in the hub) the export says it is incomplete, and the console's export
    (`POST /ops/api/inzage`) has them. A file that cannot be written is refused before
    anything is read or audited; the file is written whole or not at all.
    """
    from hub.ops.cli import USER, _dead_letters, _run, _settings, checked_secret, secret_of

    settings = _settings()
    secret_of(settings)  # none (this is not where the hub keeps it): refused before anything is made
    output = _output(out)
    try:

        async def go(settings: Settings, store: Store) -> dict[str, Any]:
            secret, checked = await checked_secret(settings, store)  # another than the hub's: refused
            if not checked:
                typer.echo(
                    "ketenhub: the database holds no fingerprint of the hub's secret yet (no `ketenhub run`"
                    " on it since they are kept): whether this is the hub's secret could not be checked",
                    err=True,
                )
            bsn = _read_bsn()
            prefix = settings.kafka.topic_prefix
            if settings.embedded_broker:
                return await export(
                    store, bsn=bsn, secret=secret, by=USER, dead_letters=None, topic_prefix=prefix
                )
            async with _dead_letters(settings, store) as dl:
                return await export(
                    store, bsn=bsn, secret=secret, by=USER, dead_letters=dl, topic_prefix=prefix
                )

        try:
            doc = _run(go, settings)
        except InvalidBsn as exc:
            typer.echo(f"ketenhub: not a BSN: {exc}", err=True)
            raise typer.Exit(2) from None
        text = json.dumps(doc, ensure_ascii=False, indent=2)
        if output is None:
            typer.echo(text)
        else:
            try:
                output.write(text)
            except OSError as exc:  # a full disk, say: made and audited, yet not written
                typer.echo(
                    f"ketenhub: the export was made (and audited) but not written to {output.path}:"
                    f" {exc.strerror or exc}; nothing of it is left on disk",
                    err=True,
                )
                raise typer.Exit(1) from None
    finally:
        if output is not None:
            output.close()
    typer.echo(f"export made ({counts_line(doc['counts'])})", err=True)
    for gap in doc["incomplete"]:
        typer.echo(f"ketenhub: incomplete: {gap}", err=True)
