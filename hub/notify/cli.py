"""`ketenhub mails`: the mails the embedded SMTP sink received (read from the configured database)."""

from __future__ import annotations

import asyncio
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from typing import Annotated

import typer

from hub.config import load_settings
from hub.errors import ConfigError


def _text_of(raw: str) -> str:
    msg = BytesParser(policy=policy.default).parsebytes(raw.encode())
    body = msg.get_body(("plain",)) if isinstance(msg, EmailMessage) else None
    return body.get_content() if body is not None else raw


def mails(
    limit: Annotated[int, typer.Option(help="how many, newest first")] = 20,
    show: Annotated[int | None, typer.Option(help="print this mail's text in full")] = None,
) -> None:
    """Show the mails the embedded SMTP sink received (what a caseworker would get)."""
    from connectors.mail.sink import stored_mails
    from hub.store import Store

    try:
        settings = load_settings()
    except ConfigError as exc:
        typer.echo(f"ketenhub: configuration error: {exc}", err=True)
        raise typer.Exit(2) from None
    if settings.smtp.host is not None:
        typer.echo("ketenhub: mail goes to the configured SMTP server; the hub keeps no copies", err=True)
        raise typer.Exit(1)

    async def go() -> list[object]:
        store = Store(settings.database.url)
        try:
            await store.migrate()
            return list(await stored_mails(store, 500 if show else limit))
        finally:
            await store.close()

    found = asyncio.run(go())
    if show is not None:
        mail = next((m for m in found if getattr(m, "id", None) == show), None)
        if mail is None:
            typer.echo(f"ketenhub: no mail {show}", err=True)
            raise typer.Exit(1)
        typer.echo(f"Aan:       {', '.join(mail.rcpt_to)}\nOnderwerp: {mail.subject}\n")  # type: ignore[attr-defined]
        typer.echo(_text_of(mail.raw))  # type: ignore[attr-defined]
        return
    if not found:
        typer.echo("no mails yet")
    for m in found:
        typer.echo(f"{m.id:>5}  {m.received_at:%Y-%m-%d %H:%M:%S}  {','.join(m.rcpt_to):<30}  {m.subject}")  # type: ignore[attr-defined]
