"""`ketenhub mails`: the mails the embedded SMTP sink received (read from the configured database)."""

from __future__ import annotations

import asyncio
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from typing import Annotated, Any

import typer

from hub.config import load_settings
from hub.errors import ConfigError


def _text_of(raw: str) -> str:
    msg = BytesParser(policy=policy.default).parsebytes(raw.encode())
    body = msg.get_body(("plain",)) if isinstance(msg, EmailMessage) else None
    return body.get_content() if body is not None else raw


def mails(
    limit: Annotated[int, typer.Option(min=1, max=500, help="how many, newest first (1 to 500)")] = 20,
    show: Annotated[
        int | None,
        typer.Option(
            min=1, max=2**63 - 1, help="print the text of the mail with this id in full, however old"
        ),
    ] = None,
) -> None:
    """Show the mails the embedded SMTP sink received (what a caseworker would get)."""
    from sqlalchemy import select

    from connectors.mail.sink import stored_mails
    from hub.notify.tables import mail_sink
    from hub.store import Store

    try:
        settings = load_settings()
    except ConfigError as exc:
        typer.echo(f"ketenhub: configuration error: {exc}", err=True)
        raise typer.Exit(2) from None
    if settings.smtp.host is not None:
        typer.echo("ketenhub: mail goes to the configured SMTP server; the hub keeps no copies", err=True)
        raise typer.Exit(1)

    async def go() -> list[Any]:
        store = Store(settings.database.url)
        try:
            await store.migrate()
            if show is None:
                return list(await stored_mails(store, limit))
            async with store.connect() as conn:  # by id, whatever its age (the sink may keep > 500)
                return list((await conn.execute(select(mail_sink).where(mail_sink.c.id == show))).all())
        finally:
            await store.close()

    found = asyncio.run(go())
    if show is not None:
        if not found:
            typer.echo(f"ketenhub: no mail {show}", err=True)
            raise typer.Exit(1)
        [row] = found
        to = ", ".join(r for r in str(row.rcpt_to).split(",") if r)
        typer.echo(f"Aan:       {to}\nOnderwerp: {row.subject}\n")
        typer.echo(_text_of(row.raw))
        return
    if not found:
        typer.echo("no mails yet")
    for m in found:
        typer.echo(f"{m.id:>5}  {m.received_at:%Y-%m-%d %H:%M:%S}  {','.join(m.rcpt_to):<30}  {m.subject}")
