"""`ketenhub mails`: the mails the embedded SMTP sink received (read from the configured database)."""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

import typer

from hub.config import load_settings
from hub.errors import ConfigError


def mails(
    limit: Annotated[int, typer.Option(min=1, max=500, help="how many, newest first (1 to 500)")] = 20,
    show: Annotated[
        int | None,
        typer.Option(
            min=1, max=2**63 - 1, help="print the text of the mail with this id in full, however old"
        ),
    ] = None,
) -> None:
    """Show the mails the embedded SMTP sink received (what a caseworker would get); a mail's text
    (`--show`) names caseworkers and counterparts, and reading it is audited."""
    from connectors.mail.sink import stored_mail, stored_mails, text_of
    from hub.audit import AuditEntry, write_audit
    from hub.ops.cli import USER
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
            found = await stored_mail(store, show)  # by id, whatever its age (the sink may keep > 500)
            if found is None:
                return []
            async with store.transaction() as session:  # rule 18, as the console's view of a mail
                entry = AuditEntry(
                    action="mail.sink_read",
                    user=USER,
                    objects={
                        "mails": 1,
                        "mail_ids": [found.id],
                        "message_ids": [found.message_id],
                        "raw": False,
                    },
                )
                await write_audit(session, entry, transaction_id=None, system="ketenhub-cli")
            return [found]
        finally:
            await store.close()

    found = asyncio.run(go())
    if show is not None:
        if not found:
            typer.echo(f"ketenhub: no mail {show}", err=True)
            raise typer.Exit(1)
        [mail] = found
        typer.echo(f"Aan:       {', '.join(mail.rcpt_to)}\nOnderwerp: {mail.subject}\n")
        typer.echo(text_of(mail.raw))
        return
    if not found:
        typer.echo("no mails yet")
    for m in found:
        typer.echo(f"{m.id:>5}  {m.received_at:%Y-%m-%d %H:%M:%S}  {','.join(m.rcpt_to):<30}  {m.subject}")
