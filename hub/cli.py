"""The `ketenhub` command line."""

from __future__ import annotations

import asyncio
import errno
import logging
import signal
import socket
import sys
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Annotated, Any

import typer

from hub.cli_errors import Interrupted, SignalStop, database_problem, shown_url
from hub.config import Settings, load_settings
from hub.directory.cli import app as directory_cli
from hub.errors import ConfigError, DependencyDown
from hub.notify.cli import mails as mails_command
from hub.ops import cli as ops_cli
from hub.ops.inzage_cli import inzage as inzage_command
from hub.partners.cli import app as partners_cli
from hub.retention.cli import retention as retention_command

if TYPE_CHECKING:
    from hub.runtime import Hub

BROKER_CHECK_S = 10.0  # `run`'s look at the configured brokers before the hub starts
CHECK_BROKERS = "check KETENHUB_KAFKA__BOOTSTRAP_SERVERS and the brokers"

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
app.add_typer(ops_cli.signals_app, name="signals")
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
        """Shuts down gracefully on SIGINT/SIGTERM and then exits 0 instead of re-raising the signal;
        calls `on_listening` once the hub has started and the socket takes connections."""

        on_listening: Callable[[], None] | None = None

        def handle_exit(self, sig: int, frame: object) -> None:
            super().handle_exit(sig, frame)  # type: ignore[arg-type]
            self._captured_signals.clear()

        async def startup(self, sockets: list[socket.socket] | None = None) -> None:
            await super().startup(sockets=sockets)
            if self.started and not self.should_exit and self.on_listening is not None:
                self.on_listening()

    return QuietExitServer


def _safe_url(url: str) -> str:
    return shown_url(url)


def _banner(settings: Settings, host: str, port: int, broker: str, hub: object = None) -> str:
    from connectors.mail.component import banner_lines as mail_banner
    from connectors.verwijsindex.component import banner_lines as verwijsindex_banner

    base = f"http://{host}:{port}"
    kind = "embedded tansu, memory storage" if settings.embedded_broker else "external"
    return "\n".join(
        [
            "ketenhub is running",
            f"  operators     {base}/ops/ (log in as one `ketenhub operators add` made)",
            f"  API           ready: {base}/readyz   docs: {base}/docs   AsyncAPI: {base}/asyncapi",
            f"  database      {_safe_url(settings.database.url)}",
            f"  broker        {broker} ({kind})",
            f"  components    {', '.join(settings.components)}",
            *verwijsindex_banner(hub),
            *mail_banner(hub),
            "  stop with Ctrl-C",
        ]
    )


def _listen(host: str, port: int) -> socket.socket:
    """The HTTP socket, bound before anything of the hub starts (as uvicorn binds it): a port in use
    stops `run` at once with one line, not after the broker, the store and the consumers started."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            said = f"port {port} in use on {host}: use --port or KETENHUB_HTTP__PORT"
        elif exc.errno == errno.EACCES:
            said = (
                f"not allowed to listen on port {port} (below 1024 takes privileges): use --port or"
                " KETENHUB_HTTP__PORT"
            )
        else:
            why = exc.strerror or type(exc).__name__
            said = f"cannot listen on {host} port {port} ({why}): use --host or KETENHUB_HTTP__HOST"
        typer.echo(f"ketenhub: {said}", err=True)
        raise typer.Exit(1) from None
    return sock


def _prepare_store(settings: Settings, stop: SignalStop) -> None:
    """Before the hub starts: the secret (the embedded default's made the first time), the database
    reachable and migrated, and the secret's fingerprint recorded there or, if another one is, refused."""
    from hub.secret_fingerprint import check_secret
    from hub.store import Store

    try:
        secret = settings.ensure_secret()
    except ConfigError as exc:
        typer.echo(f"ketenhub: configuration error: {exc}", err=True)
        raise typer.Exit(2) from None

    async def go() -> None:
        store = Store(settings.database.url)
        try:
            await store.migrate()
            await check_secret(store, secret, source=settings.secret_source, record=True)
        finally:
            await store.close()

    try:
        stop.run(go())
    except ConfigError as exc:
        typer.echo(f"ketenhub: configuration error: {exc}", err=True)
        raise typer.Exit(2) from None


class _Said(logging.Filter):
    """Keeps the reason of aiokafka's last "Unable connect to ..." and drops the record: said once, in
    the command's own line."""

    last = ""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno >= logging.WARNING:
            args = record.args if isinstance(record.args, tuple) else ()
            self.last = str(args[-1] if args else record.getMessage())[:200]
        return False


def _check_brokers(settings: Settings, stop: SignalStop) -> None:
    """Before the hub starts: the configured brokers answer within BROKER_CHECK_S, else one line and
    exit 1 (the hub's start-up ended in a traceback of a hundred lines). Not the embedded broker: the
    hub starts it."""
    if settings.embedded_broker:
        return
    from aiokafka import AIOKafkaClient
    from aiokafka.errors import KafkaError

    from hub.kafka import client_options

    servers = settings.kafka.bootstrap_servers or ""
    options = client_options(settings.kafka, servers)

    async def go() -> None:
        client = AIOKafkaClient(**options)
        try:
            await asyncio.wait_for(client.bootstrap(), BROKER_CHECK_S)
        finally:
            await client.close()

    said, aiokafka_log = _Said(), logging.getLogger("aiokafka")
    aiokafka_log.addFilter(said)
    try:
        stop.run(go())
    except (KafkaError, OSError, TimeoutError) as exc:
        why = said.last or (
            f"no answer within {BROKER_CHECK_S:g} s" if isinstance(exc, TimeoutError) else str(exc)
        )
        typer.echo(f"ketenhub: brokers unreachable: {servers} ({why}); {CHECK_BROKERS}", err=True)
        raise typer.Exit(1) from None
    finally:
        aiokafka_log.removeFilter(said)


async def _serve(hub: Hub, server: Any, sock: socket.socket, stop: SignalStop) -> None:
    """Start the hub, then serve HTTP until a signal, then stop the hub. A signal during start-up
    cancels it (`stop`); a failure in it stops what had started, and is raised."""
    from hub.runtime import tune_gc_for_serving

    try:
        await hub.start()
    except BaseException:
        await hub.stop()
        raise
    stop.react = _ignore  # uvicorn takes the signals while it serves; after, the hub is stopping
    try:
        tune_gc_for_serving()
        await server.serve(sockets=[sock])
    finally:
        await hub.stop()


def _ignore(_sig: signal.Signals) -> None:
    pass


def _start_and_serve(settings: Settings, sock: socket.socket, stop: SignalStop) -> Any:
    """The hub and its HTTP server in one event loop, until a signal; the server, once it has ended."""
    import uvicorn

    from hub.app import create_app

    try:
        fastapi_app = create_app(settings)
    except ConfigError as exc:
        typer.echo(f"ketenhub: configuration error: {exc}", err=True)
        raise typer.Exit(2) from None
    hub: Hub = fastapi_app.state.hub
    http = settings.http
    server = _server_class()(
        uvicorn.Config(
            fastapi_app,
            host=http.host,
            port=http.port,
            log_config=None,
            access_log=False,
            lifespan="off",  # `_serve` starts and stops the hub: a signal during its start-up is heard
            timeout_graceful_shutdown=10,
        )
    )

    def listening() -> None:  # the banner once the port takes connections, not before
        bound = sock.getsockname()[1]
        typer.echo(_banner(settings, http.host, bound, hub.bootstrap, hub), err=False)
        sys.stdout.flush()

    server.on_listening = listening
    try:
        stop.run(_serve(hub, server, sock, stop), loop_factory=server.config.get_loop_factory())
    except ConfigError as exc:
        typer.echo(f"ketenhub: configuration error: {exc}", err=True)
        raise typer.Exit(2) from None
    except DependencyDown as exc:
        check = "" if settings.embedded_broker else f"; {CHECK_BROKERS}"
        typer.echo(f"ketenhub: {exc}{check}", err=True)
        raise typer.Exit(1) from None
    return server


@app.command()
def run(
    host: Annotated[str | None, typer.Option(help="HTTP address to listen on (KETENHUB_HTTP__HOST)")] = None,
    port: Annotated[
        int | None, typer.Option(min=0, max=65535, help="HTTP port (KETENHUB_HTTP__PORT, default 8000)")
    ] = None,
    components: Annotated[
        str | None,
        typer.Option(help="comma-separated subset of intake,routing,verwijsindex,mail,api (default all)"),
    ] = None,
) -> None:
    """Start the hub. With no configuration: embedded broker, SQLite file, simulators."""
    from hub.logging import setup_logging

    overrides: dict[str, object] = {}
    if components is not None:
        overrides["components"] = [c.strip() for c in components.split(",") if c.strip()]
    settings = _settings(**overrides)
    if not settings.components:  # an empty --components or KETENHUB_COMPONENTS: a hub doing nothing
        typer.echo(
            "ketenhub: configuration error: no component to run (--components or KETENHUB_COMPONENTS "
            "named none); leave it out for all of intake,routing,verwijsindex,mail,api",
            err=True,
        )
        raise typer.Exit(2)
    http = settings.http.model_copy(
        update={k: v for k, v in {"host": host, "port": port}.items() if v is not None}
    )
    settings = settings.model_copy(update={"http": http})
    setup_logging(settings.log_level, json=settings.log_json)
    sock = _listen(http.host, http.port)
    stop = SignalStop()
    try:
        with stop:
            _prepare_store(settings, stop)
            _check_brokers(settings, stop)
            server = _start_and_serve(settings, sock, stop)
    except Interrupted as exc:  # what had started is stopped: a clean stop, as after start-up
        typer.echo(f"ketenhub stopped while starting ({exc.signal.name})")
        return
    finally:
        sock.close()
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
    port: Annotated[int, typer.Option(min=1, max=65535, help="port to listen on")] = 8081,
    host: Annotated[str, typer.Option(help="address to listen on")] = "127.0.0.1",
) -> None:
    """Run the Verwijsindex Haaglanden simulator (its OpenAPI at /docs)."""
    from connectors.verwijsindex.simulator import main as run_simulator

    run_simulator(port=port, host=host)


def _quiet_late_sqlite_thread(args: threading.ExceptHookArgs) -> None:
    """aiosqlite's thread of a connection that failed to open may report to an event loop that is gone
    (the command ended on that failure): a traceback after the one line, about nothing."""
    thread = args.thread.name if args.thread is not None else ""
    if "_connection_worker_thread" in thread and "Event loop is closed" in str(args.exc_value):
        return
    threading.__excepthook__(args)


def main() -> None:
    """Console-script entry point: a database that cannot be reached or opened is one line, exit 1."""
    threading.excepthook = _quiet_late_sqlite_thread
    try:
        app()
    except Exception as exc:
        try:
            url: str | None = load_settings().database.url
        except ConfigError:
            url = None  # the command said why it could not load them, or should have
        if url is None:
            raise
        said = database_problem(exc, url)
        if said is None:
            raise
        typer.echo(f"ketenhub: {said}", err=True)
        sys.exit(1)
