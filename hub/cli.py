"""The `ketenhub` command line."""

from __future__ import annotations

import asyncio
import sys
from typing import Annotated

import typer

from hub.config import Settings, load_settings
from hub.directory.cli import app as directory_cli
from hub.errors import ConfigError
from hub.notify.cli import mails as mails_command
from hub.ops import cli as ops_cli
from hub.ops.inzage_cli import inzage as inzage_command
from hub.partners.cli import app as partners_cli
from hub.retention.cli import retention as retention_command

app = typer.Typer(
    help="ketenhub: the messaging hub between Halt Den Haag and its chain partners.",
    no_args_is_help=True,
    add_completion=False,
)
simulate = typer.Typer(help="Run partner simulators for demos and tests.", no_args_is_help=True)
app.add_typer(simulate, name="simulate")
app.add_typer(partners_cli, name="partners")
app.add_typer(ops_cli.operators_app, name="operators")
app.add_typer(ops_cli.dlq_app, name="dlq")
app.add_typer(ops_cli.outbox_app, name="outbox")
app.command("topics")(ops_cli.topics)
app.add_typer(directory_cli, name="medewerkers")
app.command("mails")(mails_command)
app.command("inzage")(inzage_command)
app.command("retention")(retention_command)


def _settings(**overrides: object) -> Settings:
    try:
        return load_settings(**overrides)
    except ConfigError as exc:
        typer.echo(f"ketenhub: configuration error: {exc}", err=True)
        raise typer.Exit(2) from None


def _server_class() -> type:
    import uvicorn

    class QuietExitServer(uvicorn.Server):
        """Shuts down gracefully on SIGINT/SIGTERM and then exits 0 instead of re-raising the signal."""

        def handle_exit(self, sig: int, frame: object) -> None:
            super().handle_exit(sig, frame)  # type: ignore[arg-type]
            self._captured_signals.clear()

    return QuietExitServer


def _safe_url(url: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)


def _banner(settings: Settings, host: str, port: int, broker: str, hub: object = None) -> str:
    from connectors.mail.component import banner_lines as mail_banner
    from connectors.verwijsindex.component import banner_lines as verwijsindex_banner

    base = f"http://{host}:{port}"
    kind = "embedded tansu, memory storage" if settings.embedded_broker else "external"
    return "\n".join(
        [
            "ketenhub is running",
            f"  operator API  {base}/   ready: {base}/readyz   docs: {base}/docs   AsyncAPI: {base}/asyncapi",
            f"  database      {_safe_url(settings.database.url)}",
            f"  broker        {broker} ({kind})",
            f"  components    {', '.join(settings.components)}",
            *verwijsindex_banner(hub),
            *mail_banner(hub),
            "  stop with Ctrl-C",
        ]
    )


@app.command()
def run(
    host: Annotated[str | None, typer.Option(help="HTTP address to listen on (KETENHUB_HTTP__HOST)")] = None,
    port: Annotated[int | None, typer.Option(help="HTTP port (KETENHUB_HTTP__PORT, default 8000)")] = None,
    components: Annotated[
        str | None,
        typer.Option(help="comma-separated subset of intake,routing,verwijsindex,mail,api (default all)"),
    ] = None,
) -> None:
    """Start the hub. With no configuration: embedded broker, SQLite file, simulators."""
    import uvicorn

    from hub.app import create_app

    _QuietExitServer = _server_class()
    from hub.logging import setup_logging

    overrides: dict[str, object] = {}
    if components:
        overrides["components"] = [c.strip() for c in components.split(",") if c.strip()]
    settings = _settings(**overrides)
    http = settings.http.model_copy(
        update={k: v for k, v in {"host": host, "port": port}.items() if v is not None}
    )
    settings = settings.model_copy(update={"http": http})
    setup_logging(settings.log_level, json=settings.log_json)

    def ready(hub: object) -> None:
        from hub.runtime import tune_gc_for_serving

        tune_gc_for_serving()
        typer.echo(_banner(settings, http.host, http.port, getattr(hub, "bootstrap", "?"), hub), err=False)
        sys.stdout.flush()

    try:
        fastapi_app = create_app(settings, on_ready=ready)
    except ConfigError as exc:
        typer.echo(f"ketenhub: configuration error: {exc}", err=True)
        raise typer.Exit(2) from None
    server = _QuietExitServer(
        uvicorn.Config(
            fastapi_app,
            host=http.host,
            port=http.port,
            log_config=None,
            access_log=False,
            lifespan="on",
            timeout_graceful_shutdown=10,
        )
    )
    server.run()
    if not server.started:
        raise typer.Exit(1)
    typer.echo("ketenhub stopped")


@app.command()
def migrate() -> None:
    """Apply the database migrations (KETENHUB_DATABASE__URL) and exit."""
    from hub.store import Store

    settings = _settings()

    async def go() -> None:
        store = Store(settings.database.url)
        try:
            await store.migrate()
        finally:
            await store.close()

    asyncio.run(go())
    typer.echo(f"database {_safe_url(settings.database.url)} is up to date")


@simulate.command("verwijsindex")
def simulate_verwijsindex(
    port: Annotated[int, typer.Option(help="port to listen on")] = 8081,
    host: Annotated[str, typer.Option(help="address to listen on")] = "127.0.0.1",
) -> None:
    """Run the Verwijsindex Haaglanden simulator (its OpenAPI at /docs)."""
    from connectors.verwijsindex.simulator import main as run_simulator

    run_simulator(port=port, host=host)


def main() -> None:
    """Console-script entry point."""
    app()
