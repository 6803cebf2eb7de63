"""`ketenhub partners add|rotate-key|disable|enable|set-kafka-source|list|delivery`, on the configured
database."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Annotated, TypeVar

import typer
from sqlalchemy.ext.asyncio import AsyncSession

from hub.config import Settings, load_settings
from hub.errors import ConfigError
from hub.partners.keys import PartnerType
from hub.partners.registry import (
    Partner,
    PartnerExists,
    UnknownPartner,
    add_partner,
    list_partners,
    rotate_key,
    set_active,
)
from schemas.handover import ReceiverType

if TYPE_CHECKING:
    from hub.intake.claims import SourceSet

T = TypeVar("T")
app = typer.Typer(help="Register partners and manage their API keys.", no_args_is_help=True)


def _user() -> str:
    """Who acts, for the audit log: "cli:" and the operating-system user, as the ops commands say."""
    from hub.ops.cli import USER

    return USER


def _settings() -> Settings:
    try:
        return load_settings()
    except ConfigError as exc:
        typer.echo(f"ketenhub: configuration error: {exc}", err=True)
        raise typer.Exit(2) from None


def _in_store(work: Callable[[AsyncSession], Awaitable[T]]) -> T:
    from hub.store import Store

    settings = _settings()

    async def go() -> T:
        store = Store(settings.database.url)
        try:
            await store.migrate()
            async with store.transaction() as session:
                return await work(session)
        finally:
            await store.close()

    from hub.intake.claims import SourceRefused

    try:
        return asyncio.run(go())
    except (PartnerExists, UnknownPartner, SourceRefused) as exc:
        typer.echo(f"ketenhub: {exc}", err=True)
        raise typer.Exit(1) from None


_KAFKA_SOURCE_HELP = (
    "the envelope source of the Kafka connector that publishes this partner's referrals on"
    " referral.received.v1; rule 7 then takes them as this partner's (one referral whether sent over"
    " HTTP or through the connector). One partner per source"
)


@app.command("add")
def add(
    name: Annotated[str, typer.Option(help="unique partner name, e.g. politie-den-haag")],
    type_: Annotated[PartnerType, typer.Option("--type", help="kind of partner", case_sensitive=False)],
    kafka_source: Annotated[str | None, typer.Option(help=_KAFKA_SOURCE_HELP)] = None,
) -> None:
    """Register a partner and print its API key once (only a hash is stored)."""
    from hub.intake.claims import set_kafka_source

    name = name.strip()
    if not name or len(name) > 100 or not name.isprintable():
        typer.echo("ketenhub: --name must be 1 to 100 printable characters (no tab or line break)", err=True)
        raise typer.Exit(2)

    async def register(session: AsyncSession) -> tuple[Partner, str, SourceSet | None]:
        partner, key = await add_partner(session, name, type_, user=_user())
        claimed = (
            await set_kafka_source(session, name, kafka_source, user=_user())
            if kafka_source is not None
            else None
        )
        return partner, key, claimed

    partner, key, claimed = _in_store(register)
    typer.echo(f"partner {partner.name} ({partner.type.value}) registered")
    if claimed is not None:
        _say_claimed(claimed)
    typer.echo("API key (shown once; the hub keeps only a hash):")
    typer.echo(key)


@app.command("rotate-key")
def rotate(name: Annotated[str, typer.Argument(help="the partner's name")]) -> None:
    """Give a partner a new API key and print it once; the old key stops working within 5 s."""
    partner, key = _in_store(lambda s: rotate_key(s, name.strip(), user=_user()))
    typer.echo(
        f"partner {partner.name}: new API key (shown once; the old key stops working within"
        " KETENHUB_HTTP__KEY_CACHE_S, 5 s by default):"
    )
    typer.echo(key)


@app.command("disable")
def disable(name: Annotated[str, typer.Argument(help="the partner's name")]) -> None:
    """Revoke a partner: its API key stops working within 5 s (KETENHUB_HTTP__KEY_CACHE_S); audited."""
    partner = _in_store(lambda s: set_active(s, name.strip(), False, user=_user()))
    typer.echo(f"partner {partner.name} disabled: its key is refused (401) within KETENHUB_HTTP__KEY_CACHE_S")


@app.command("enable")
def enable(name: Annotated[str, typer.Argument(help="the partner's name")]) -> None:
    """Let a disabled partner in again with the key it had (rotate it if it may have leaked); audited."""
    partner = _in_store(lambda s: set_active(s, name.strip(), True, user=_user()))
    typer.echo(f"partner {partner.name} enabled")


@app.command("set-kafka-source")
def set_source(
    name: Annotated[str, typer.Argument(help="the partner's name")],
    source: Annotated[
        str | None,
        typer.Argument(help=_KAFKA_SOURCE_HELP + "; leave out with --none", show_default=False),
    ] = None,
    none: Annotated[
        bool,
        typer.Option(
            "--none",
            help="release the partner's source (refused once a referral came in through it: its"
            " repeats would be new referrals)",
        ),
    ] = False,
) -> None:
    """Say which Kafka connector speaks for a partner (rule 7); audited, in effect within 5 s."""
    from hub.intake.claims import set_kafka_source

    if (source is None) == (not none):
        typer.echo("ketenhub: give exactly one of SOURCE or --none", err=True)
        raise typer.Exit(2)
    done = _in_store(lambda s: set_kafka_source(s, name.strip(), source, user=_user()))
    if done.partner.kafka_source is None:
        was = f" (was {done.previous})" if done.previous else ""
        typer.echo(f"partner {done.partner.name} speaks for no Kafka connector{was}")
        return
    _say_claimed(done)


def _say_claimed(done: SourceSet) -> None:
    partner = done.partner
    typer.echo(
        f"partner {partner.name} speaks for Kafka source {partner.kafka_source!r}: its referrals on"
        " referral.received.v1 are this partner's (rule 7), within KETENHUB_HTTP__KEY_CACHE_S (5 s by"
        " default) in a running hub"
    )
    if done.earlier:
        typer.echo(
            f"{done.earlier} referral(s) it sent before count as this partner's too: repeats of them are"
            " answered with them, over HTTP and on Kafka, and the partner reads them over HTTP"
        )
    if done.twice:
        typer.echo(
            f"{done.twice} of them the partner had sent over HTTP as well, and were stored twice before"
            " this claim: a repeat is answered with the copy received first"
        )


@app.command("list")
def list_() -> None:
    """Registered partners: name, type, key id, created, rotated, Kafka source, active."""
    rows = _in_store(list_partners)
    header = ("NAME", "TYPE", "KEY ID", "CREATED", "ROTATED", "KAFKA SOURCE", "ACTIVE")
    table = [header] + [
        (
            p.name,
            p.type.value,
            p.key_id,
            p.created_at.strftime("%Y-%m-%d %H:%M"),
            p.rotated_at.strftime("%Y-%m-%d %H:%M") if p.rotated_at else "-",
            p.kafka_source or "-",
            "yes" if p.active else "no",
        )
        for p in rows
    ]
    widths = [max(len(r[i]) for r in table) for i in range(len(header))]
    for r in table:
        typer.echo("  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)).rstrip())
    if not rows:
        typer.echo("(no partners yet: ketenhub partners add --name NAME --type TYPE)")


@app.command("delivery")
def delivery(
    organisation: Annotated[str, typer.Argument(help="the receiving organisation, as handovers name it")],
    type_: Annotated[ReceiverType, typer.Option("--type", help="kind of receiver", case_sensitive=False)],
    webhook: Annotated[str | None, typer.Option(help="HTTPS URL the hub POSTs signed handovers to")] = None,
    kafka: Annotated[
        bool,
        typer.Option(
            "--kafka",
            help="deliver on handover.outbound.<type>.v1 (one per type); it answers on"
            " handover.answers.<type>.v1",
        ),
    ] = False,
    topic_emptied: Annotated[
        bool,
        typer.Option(
            "--topic-emptied",
            help="with --kafka: the type's topic was deleted and made again, or its records kept for"
            " another organisation are past retention (refused without it while they may be there)",
        ),
    ] = False,
) -> None:
    """Say how a receiver gets its handovers: a signed webhook (its secret printed once) or its topic."""
    import secrets

    from hub.handovers.receivers import ReceiverDelivery, TopicTaken, check_webhook_url, set_receiver_delivery
    from hub.handovers.topic_others import TopicHoldsOthers
    from hub.topics import handover_answers

    organisation = organisation.strip()
    if not organisation or len(organisation) > 100 or not organisation.isprintable():
        # a blank name (an unset "$ORG") took the type's topic, and no command gives it back
        said = "ORGANISATION must be 1 to 100 printable characters, as handovers name it"
        typer.echo(f"ketenhub: {said}", err=True)
        raise typer.Exit(2)
    if (webhook is None) == (not kafka):
        typer.echo("ketenhub: give exactly one of --webhook URL or --kafka", err=True)
        raise typer.Exit(2)
    if topic_emptied and not kafka:
        typer.echo("ketenhub: --topic-emptied goes with --kafka", err=True)
        raise typer.Exit(2)
    secret = secrets.token_urlsafe(32) if webhook else None
    if webhook:
        try:
            check_webhook_url(webhook, allow_plain_http=_settings().handovers.allow_plain_http)
        except ValueError as exc:
            typer.echo(f"ketenhub: --webhook: {exc}", err=True)
            raise typer.Exit(2) from None
    chosen = ReceiverDelivery(organisation, type_, "webhook" if webhook else "kafka", webhook, secret)
    try:
        _in_store(lambda s: set_receiver_delivery(s, chosen, topic_emptied=topic_emptied, user=_user()))
    except TopicTaken as exc:
        typer.echo(f"ketenhub: --kafka: {exc}", err=True)
        raise typer.Exit(1) from None
    except TopicHoldsOthers as exc:
        # The handovers of youths this organisation has no consent for (rule 9), readable with the
        # principal it is given; the settings stay as they were.
        typer.echo(f"ketenhub: --kafka: {exc.message('--topic-emptied')}", err=True)
        raise typer.Exit(1) from None
    if webhook:
        typer.echo(f"{chosen.organisation}: handovers go to {webhook}, signed with X-Ketenhub-Signature")
        typer.echo("webhook secret (shown once; verify sha256=HMAC(secret, body) with it):")
        typer.echo(secret)
    else:
        answers = handover_answers(type_.value.lower()).name
        typer.echo(f"{chosen.organisation}: handovers go to topic {chosen.topic_name}")
        typer.echo(
            f"it answers them on {answers} (as receiver-{type_.value.lower()}, the one principal that may"
            " write it; deploy/README.md, 'Handover receivers on Kafka')"
        )
