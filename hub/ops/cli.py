"""`ketenhub operators`, `ketenhub dlq` and `ketenhub topics`: straight to the database and the broker.

They read the same settings as the hub (KETENHUB_*). The embedded broker lives inside a running hub on a
random port, so `dlq` and `topics` need KETENHUB_KAFKA__BOOTSTRAP_SERVERS (or use the dashboard).
A replay is queued in the outbox; the running hub's relay publishes it.
"""

from __future__ import annotations

import asyncio
import getpass
import signal
import sys
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Annotated, Any, TypeVar

import typer
from pydantic import TypeAdapter, ValidationError
from rich.console import Console as Terminal
from rich.progress import Progress
from rich.table import Table

from hub.cli_errors import Interrupted, SignalStop
from hub.config import Settings, load_settings
from hub.errors import ConfigError, TransientError
from hub.ops.auth import UnknownOperator, add_operator, set_disabled
from hub.ops.console import SAMPLE_INTERVAL_S
from hub.ops.dlq import REASON_MAX, REASON_MIN, DeadLetters, Discarded, Reason
from hub.ops.dlq_jobs import ABANDONED, FAILED, ReplayBusy, ReplayJob, describe
from hub.ops.dlq_records import DeadLetter, Filter
from hub.ops.health import Monitor, is_dlq
from hub.ops.lag import BrokersUnavailable, LagProbe
from hub.ops.masking import is_youth_key, show_headers, show_payload
from hub.ops.parked import NotParked, StillTooLarge, discard, parked_rows, release
from hub.ops.tables import ROLES
from hub.signals import NotInformed, SignalNotActive, SignalNotFound, UnfitContact, register_again
from hub.signals.service import RegistrationOnItsWay, signal_topic
from hub.signals.waiting import waits_of
from hub.spine.outbox import outbox_state
from hub.store import Store
from hub.topics import VERWIJSINDEX_SIGNAL, all_topics, prefixed

operators_app = typer.Typer(help="Operators of the console and their roles.", no_args_is_help=True)
dlq_app = typer.Typer(help="Dead letters: list, show, replay, discard.", no_args_is_help=True)
signals_app = typer.Typer(help="Verwijsindex signals: register one again.", no_args_is_help=True)
outbox_app = typer.Typer(
    help="The outbox: what waits to be published, and rows parked as larger than the brokers take.",
    no_args_is_help=True,
)
T = TypeVar("T")


def _cli_user() -> str:
    """Who acts through the CLI, for the audit log: the operating-system user behind "cli:"."""
    try:
        name = getpass.getuser()
    except (KeyError, OSError):  # no login name and no passwd entry (a container's bare uid)
        return "cli"
    return f"cli:{name}"[:200] if name.isprintable() else "cli"


USER = _cli_user()


def _settings() -> Settings:
    try:
        return load_settings()
    except ConfigError as exc:
        typer.echo(f"ketenhub: configuration error: {exc}", err=True)
        raise typer.Exit(2) from None


def _run(
    fn: Callable[[Settings, Store], Awaitable[T]],
    settings: Settings | None = None,
    stop: SignalStop | None = None,
) -> T:
    """`fn` with the store, migrated, and closed after it; Ctrl-C or SIGTERM stops it: the store is
    closed, one line said, exit 130 or 143 (`stop.react` set: what a signal does instead)."""
    settings = settings or _settings()
    stop = stop or SignalStop()

    async def go() -> T:
        store = Store(settings.database.url)
        try:
            await store.migrate()
            return await fn(settings, store)
        finally:
            await store.close()

    with stop:
        try:
            return stop.run(go())
        except Interrupted as exc:
            typer.echo(f"ketenhub: interrupted ({exc.signal.name})", err=True)
            raise typer.Exit(128 + exc.signal) from None


@operators_app.command("add")
def operators_add(
    username: Annotated[str, typer.Option(help="login name")],
    role: Annotated[str, typer.Option(help=f"one of {', '.join(ROLES)}")],
    password_stdin: Annotated[bool, typer.Option(help="read the password from standard input")] = False,
) -> None:
    """Add an operator, or reset their password and role, which ends their sessions. Audited.

    A disabled operator stays disabled (`ketenhub operators enable`). The password is asked for,
    never an argument.
    """
    if role not in ROLES:
        typer.echo(f"ketenhub: role must be one of {', '.join(ROLES)}", err=True)
        raise typer.Exit(2)
    if password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")  # a file with Windows line endings too
    else:
        password = typer.prompt("Password", hide_input=True, confirmation_prompt=True)
    try:
        disabled = _run(lambda _s, store: add_operator(store, username, password, role, by=USER))
    except ValueError as exc:
        typer.echo(f"ketenhub: {exc}", err=True)
        raise typer.Exit(2) from None
    typer.echo(f"operator {username} ({role}) saved; any session of theirs has ended")
    if disabled:
        typer.echo(
            f"ketenhub: {username} is disabled and cannot log in; `ketenhub operators enable {username}`"
            " lets them in again",
            err=True,
        )


def _set_disabled(username: str, disabled: bool) -> int:
    try:
        return _run(lambda _s, store: set_disabled(store, username, disabled, by=USER))
    except UnknownOperator:
        typer.echo(
            f"ketenhub: no operator is called {username!r}; `ketenhub operators add` creates one", err=True
        )
        raise typer.Exit(1) from None


@operators_app.command("disable")
def operators_disable(
    username: Annotated[str, typer.Argument(help="the operator's login name")],
) -> None:
    """Lock an operator out: their sessions end at once and every login is refused. Audited."""
    ended = _set_disabled(username, True)
    typer.echo(f"operator {username} disabled; {ended} session(s) ended")


@operators_app.command("enable")
def operators_enable(
    username: Annotated[str, typer.Argument(help="the operator's login name")],
) -> None:
    """Let a disabled operator log in again, with the password they had. Audited."""
    _set_disabled(username, False)
    typer.echo(f"operator {username} enabled: they can log in again")


def secret_of(settings: Settings) -> str:
    """The hub's pseudonymisation secret; exit 2 with one line when there is none (no command but
    `ketenhub run` makes one: a new one would key nothing the hub holds)."""
    try:
        return settings.secret_value()
    except ConfigError as exc:
        typer.echo(f"ketenhub: configuration error: {exc}", err=True)
        raise typer.Exit(2) from None


async def checked_secret(settings: Settings, store: Store) -> tuple[str, bool]:
    """The secret, and whether the store held the fingerprint of the hub's to check it against; exit 2
    with one line when it is another secret than the hub's."""
    from hub.secret_fingerprint import check_secret

    secret = secret_of(settings)
    try:
        return secret, await check_secret(store, secret, source=settings.secret_source)
    except ConfigError as exc:
        typer.echo(f"ketenhub: configuration error: {exc}", err=True)
        raise typer.Exit(2) from None


@asynccontextmanager
async def _dead_letters(settings: Settings, store: Store) -> AsyncIterator[DeadLetters]:
    from hub.kafka import client_options

    if settings.embedded_broker:
        typer.echo(
            "ketenhub: set KETENHUB_KAFKA__BOOTSTRAP_SERVERS (the embedded broker lives in the hub)", err=True
        )
        raise typer.Exit(2)
    topics = [t.name for t in prefixed(all_topics(), settings.kafka.topic_prefix) if is_dlq(t.name)]
    options = client_options(settings.kafka, settings.kafka.bootstrap_servers or "")
    secret, _ = await checked_secret(settings, store)
    try:
        yield DeadLetters(store, options, topics, secret=secret)
    except BrokersUnavailable as exc:
        typer.echo(f"ketenhub: {exc}; check KETENHUB_KAFKA__BOOTSTRAP_SERVERS and the brokers", err=True)
        raise typer.Exit(1) from None


async def _letter(dl: DeadLetters, letter_id: str) -> DeadLetter:
    """The dead letter by id; exit 1 when the id is malformed or names none (the id is not echoed)."""
    try:
        d = await dl.get(letter_id)
    except ValueError:
        typer.echo(
            "ketenhub: malformed dead-letter id; ids look like <dlq topic>:<partition>:<offset>", err=True
        )
        raise typer.Exit(1) from None
    if d is None:
        typer.echo("ketenhub: no such dead letter", err=True)
        raise typer.Exit(1)
    return d


@dlq_app.command("list")
def dlq_list(
    topic: Annotated[str | None, typer.Option(help="DLQ or original topic")] = None,
    error_class: Annotated[str | None, typer.Option(help="part of the exception class")] = None,
    key: Annotated[str | None, typer.Option(help="record key: a youth key (64 hex characters)")] = None,
) -> None:
    """Open dead letters, oldest first; a key that is not a youth key is shown masked."""
    if key is not None and not is_youth_key(key):  # searching by a BSN: a privacy officer's dashboard
        typer.echo(
            "ketenhub: --key takes a youth key (64 hex characters); any other key is personal data,"
            " searched for by a privacy officer on the dashboard",
            err=True,
        )
        raise typer.Exit(2)

    async def go(settings: Settings, store: Store) -> list[dict[str, Any]]:
        async with _dead_letters(settings, store) as dl:
            return [d.summary() for d in await dl.find(Filter(topic, error_class, key=key))]

    letters = _run(go)
    table = Table("id", "failed at", "original topic", "error", "key")
    # The id is the handle for show, replay and discard: whole on one line, however narrow the
    # terminal (the line runs on rather than being cut); the other columns fold.
    table.columns[0].no_wrap = True
    table.columns[0].min_width = max((len(d["id"]) for d in letters), default=None)
    for column in table.columns[1:]:
        column.overflow = "fold"
    for d in letters:
        table.add_row(
            d["id"],
            datetime.fromisoformat(d["failed_at"]).isoformat(timespec="seconds"),
            d["original_topic"] or "",
            # the class, as the dashboard; a copy of a letter says so (discarded alone, skipped at replay)
            f"{(d['error_class'] or '').rsplit('.', 1)[-1]}: {d['error']}" + _copy_note(d),
            d["key"] or "",
        )
    Terminal().print(table, crop=False)


def _copy_note(d: dict[str, Any]) -> str:
    return f" (a copy of {d['copy_of']})" if d.get("copy_of") else ""


LETTER_ID = "the dead letter's id, <dlq topic>:<partition>:<offset> (`ketenhub dlq list`)"


@dlq_app.command("show")
def dlq_show(letter_id: Annotated[str, typer.Argument(help=LETTER_ID)]) -> None:
    """One dead letter: its headers and payload, personal data masked (a sender's own headers too)."""

    async def go(settings: Settings, store: Store) -> dict[str, Any]:
        async with _dead_letters(settings, store) as dl:
            d = await _letter(dl, letter_id)
            await dl.mark_copy(d)
            await dl.record_view(d, USER, unmasked=False)  # rule 18, as the console does
            return {
                **d.summary(),
                "headers": show_headers(d.headers, unmasked=False),
                "payload": show_payload(d.value, unmasked=False),
            }

    Terminal().print_json(data=_run(go))


def _check_reason(reason: str) -> None:
    """Exit 2 unless `reason` is a Reason, as the API's DiscardBody wants it."""
    try:
        TypeAdapter(Reason).validate_python(reason)
    except ValidationError:
        typer.echo(
            f"ketenhub: --reason must be {REASON_MIN} to {REASON_MAX} characters, without control characters"
            " and without a BSN",
            err=True,
        )
        raise typer.Exit(2) from None


@dlq_app.command("discard")
def dlq_discard(
    letter_id: Annotated[str, typer.Argument(help=LETTER_ID)],
    reason: Annotated[
        str, typer.Option(help="why it is dropped: kept with the action; the audit log records its length")
    ],
) -> None:
    """Discard one dead letter with a reason (audited, the reason by reference, never its text).

    The first letter of a failed record is its message: discarding it discards its open copies (the
    relay published it twice) with it. A letter `dlq list` names a copy is discarded alone."""
    _check_reason(reason)

    async def go(settings: Settings, store: Store) -> Discarded | None:
        async with _dead_letters(settings, store) as dl:
            return await dl.discard(await _letter(dl, letter_id), USER, reason)

    done = _run(go)
    if done is None:
        typer.echo("ketenhub: dead letter, or a copy of it, already replayed or discarded", err=True)
        raise typer.Exit(1)
    if done.copy_of:
        typer.echo(f"discarded {letter_id}, a copy of {done.copy_of}")
    else:
        typer.echo(f"discarded {letter_id}" + "".join(f"\ndiscarded {c}, a copy of it" for c in done.copies))


def _stop_replay(jobs: list[ReplayJob], sig: signal.Signals, stopped_by: list[signal.Signals]) -> None:
    """SIGINT or SIGTERM during a replay: stop its job, which marks it abandoned and leaves the letters
    it had not replayed open; the batch in hand is rolled back. Before the job has started, it is
    stopped as soon as it has."""
    stopped_by.append(sig)
    for job in jobs:
        job.stop()


@dlq_app.command("replay")
def dlq_replay(
    letter_id: Annotated[
        str | None, typer.Argument(help=f"{LETTER_ID}; omit to use the filters", show_default=False)
    ] = None,
    topic: Annotated[str | None, typer.Option(help="DLQ or original topic")] = None,
    error_class: Annotated[str | None, typer.Option(help="part of the exception class")] = None,
    all_: Annotated[bool, typer.Option("--all", help="every open dead letter")] = False,
) -> None:
    """Replay one dead letter, a filtered set, or all, with a progress bar; exit 1 when any failed.

    Ctrl-C or SIGTERM stops the replay: it says how far it came (exit 130 or 143); the letters not
    replayed stay open, to be replayed again."""
    if letter_id is None and not (topic or error_class or all_):
        typer.echo("ketenhub: give an id, a filter, or --all", err=True)
        raise typer.Exit(2)

    async def go(settings: Settings, store: Store) -> ReplayJob:
        async with _dead_letters(settings, store) as dl:
            what: str | None = None  # one letter: its id
            if letter_id is not None:
                one = await _letter(dl, letter_id)
                if one.status != "open":
                    typer.echo("ketenhub: dead letter already replayed or discarded", err=True)
                    raise typer.Exit(1)
                letters = [one]
            else:
                flt = Filter(topic, error_class)
                letters, what = await dl.find(flt), describe(flt)
            # Before the job starts: it replays from its first moment, and a signal that came between
            # its start and the handlers ended the command as if it had finished (exit 0). From here to
            # the end of the command a signal stops the job (marked abandoned at once), not the command.
            jobs = list[ReplayJob]()
            stop.react = lambda sig: _stop_replay(jobs, sig, stopped_by)
            try:  # one replay of many letters at a time in the hub: the console's or this one
                job = await dl.start_replay(letters, USER, what=what)
            except ReplayBusy as exc:
                then = "when it has ended (the console shows it), replay again"
                typer.echo(f"ketenhub: {exc}; {then}", err=True)
                raise typer.Exit(1) from None
            jobs.append(job)
            if stopped_by:
                job.stop()
            with Progress() as progress:
                bar = progress.add_task("replaying", total=job.total)
                while job.task is not None and not job.task.done():
                    progress.update(bar, completed=job.done + job.skipped + job.failed)
                    await asyncio.sleep(0.1)
                if job.task is not None:
                    await asyncio.gather(job.task, return_exceptions=True)
                progress.update(bar, completed=job.done + job.skipped + job.failed)
            return job

    stopped_by: list[signal.Signals] = []
    stop = SignalStop()
    job = _run(go, stop=stop)
    if job.total == 0:
        typer.echo("no open dead letter matches: nothing to replay")
        return
    skipped = f"; {job.skipped} skipped, already replayed or discarded" if job.skipped else ""
    typer.echo(f"queued {job.done} of {job.total} dead letter(s) for replay{skipped}")
    if stopped_by and job.state == ABANDONED:  # (one that ended as the signal came is not)
        typer.echo(
            f"ketenhub: replay stopped ({stopped_by[0].name}) after {job.handled} of {job.total} dead"
            f" letter(s): {job.done} queued for replay (the running hub publishes them), the other"
            f" {job.total - job.handled} stay open; job {job.id} is marked abandoned. Replay again for the"
            " rest",
            err=True,
        )
        raise typer.Exit(128 + stopped_by[0])
    if job.state in (FAILED, ABANDONED):  # the brokers or the store failed: it stopped, the rest untried
        typer.echo(f"ketenhub: replay stopped: {job.error}", err=True)
        raise typer.Exit(1)
    if job.failed:
        typer.echo(f"ketenhub: {job.failed} dead letter(s) could not be replayed and stay open", err=True)
        raise typer.Exit(1)
    if letter_id is not None and job.skipped:  # resolved by someone else meanwhile: not this replay
        typer.echo("ketenhub: dead letter already replayed or discarded", err=True)
        raise typer.Exit(1)


@outbox_app.command("list")
def outbox_list() -> None:
    """Rows waiting to be published, and every parked row (no key or payload: personal data)."""

    async def go(_settings: Settings, store: Store) -> Any:
        return await outbox_state(store), await parked_rows(store)

    state, rows = _run(go)
    typer.echo(
        f"{state.waiting} row(s) waiting to be published (oldest {state.oldest_seconds:.0f} s),"
        f" {state.parked} parked"
    )
    if rows:
        table = Table("id", "parked at", "topic", "bytes", "message id", "reason")
        for column in table.columns:
            column.overflow = "fold"
        for r in rows:
            at = r.parked_at.isoformat(timespec="seconds")
            table.add_row(str(r.id), at, r.topic, f"{r.size:,}", r.message_id or "", r.reason)
        Terminal().print(table)


ROW_ID = "the parked row's id (`ketenhub outbox list`)"
ROW_ID_MAX = 2**63 - 1  # a row id is a BIGINT (SQLite's and PostgreSQL's); one past it overflowed


@outbox_app.command("release")
def outbox_release(
    row_id: Annotated[int, typer.Argument(help=ROW_ID, min=1, max=ROW_ID_MAX)],
    reason: Annotated[
        str,
        typer.Option(
            help="why it may go now: 3 to 500 characters, kept with the row for its 30 days (the audit"
            " log records its length, not its text)"
        ),
    ],
) -> None:
    """Put a parked row back in the outbox, once the brokers' limit and kafka.max_message_bytes allow it."""
    _check_reason(reason)

    async def go(settings: Settings, store: Store) -> int:
        return await release(store, row_id, USER, reason, max_message_bytes=settings.kafka.max_message_bytes)

    try:
        new_id = _run(go)
    except NotParked:
        typer.echo(f"ketenhub: no parked outbox row {row_id}", err=True)
        raise typer.Exit(1) from None
    except StillTooLarge as exc:
        typer.echo(f"ketenhub: {exc}", err=True)
        raise typer.Exit(1) from None
    typer.echo(f"released {row_id}: queued again as outbox row {new_id}; the running hub publishes it")


@outbox_app.command("discard")
def outbox_discard(
    row_id: Annotated[int, typer.Argument(help=ROW_ID, min=1, max=ROW_ID_MAX)],
    reason: Annotated[
        str,
        typer.Option(
            help="why it is dropped: 3 to 500 characters, kept with the row for its 30 days (the audit"
            " log records its length, not its text)"
        ),
    ],
) -> None:
    """Drop a parked row for good, with a reason (audited)."""
    _check_reason(reason)
    try:
        _run(lambda _s, store: discard(store, row_id, USER, reason))
    except NotParked:
        typer.echo(f"ketenhub: no parked outbox row {row_id}", err=True)
        raise typer.Exit(1) from None
    typer.echo(f"discarded {row_id}")


@signals_app.command("register-again")
def signals_register_again(
    signal_id: Annotated[str, typer.Argument(help="the signal's id (in its dead letter, or its row's)")],
) -> None:
    """Queue an active signal's registration with the Verwijsindex once more (audited).

    For a signal the index holds no more, or whose registration's dead letter was discarded or
    outlived the DLQ's term: a contact change then is a dead letter saying "register it again". The
    registration names the signal's contact as the hub holds it now; the running hub's relay sends
    it. Refused while a registration of it is still on its way (replay that one). Needs
    KETENHUB_KAFKA__BOOTSTRAP_SERVERS, to look among the dead letters.
    """
    from hub.kafka import client_options

    async def go(settings: Settings, store: Store) -> str:
        if settings.embedded_broker:
            typer.echo(
                "ketenhub: set KETENHUB_KAFKA__BOOTSTRAP_SERVERS (the embedded broker lives in the hub)",
                err=True,
            )
            raise typer.Exit(2)
        prefix = settings.kafka.topic_prefix
        waits = waits_of(
            store, settings.kafka, client_options(settings.kafka, settings.kafka.bootstrap_servers or "")
        )
        topic = signal_topic(prefix + VERWIJSINDEX_SIGNAL.name)
        tx = str(uuid.uuid4())
        return await register_again(store, topic, signal_id, user=USER, transaction_id=tx, waits=waits)

    try:
        message_id = _run(go)
    except (SignalNotFound, SignalNotActive, RegistrationOnItsWay, UnfitContact, NotInformed) as exc:
        typer.echo(f"ketenhub: {exc}", err=True)
        raise typer.Exit(1) from None
    except TransientError as exc:
        typer.echo(f"ketenhub: {exc}; check KETENHUB_KAFKA__BOOTSTRAP_SERVERS and the brokers", err=True)
        raise typer.Exit(1) from None
    typer.echo(
        f"queued the registration of {signal_id} again (message {message_id}); the running hub sends it"
    )


def topics(
    interval: Annotated[
        float,
        typer.Option(
            min=0.5,
            max=300,
            help=f"seconds between the two lag samples a verdict compares (console: {SAMPLE_INTERVAL_S:g})",
        ),
    ] = SAMPLE_INTERVAL_S,
) -> None:
    """Health per group and topic: lag in messages and seconds, verdict, DLQ depth.

    A verdict compares two samples of the lag `--interval` seconds apart, as the console's monitor
    does with its own: one sample shows lag, not whether a group moves (STALL, STOP) or falls behind
    (WARN).
    """

    async def go(settings: Settings, store: Store) -> Any:
        from hub.kafka import client_options

        if settings.embedded_broker:
            typer.echo("ketenhub: set KETENHUB_KAFKA__BOOTSTRAP_SERVERS", err=True)
            raise typer.Exit(2)
        probe = LagProbe(client_options(settings.kafka, settings.kafka.bootstrap_servers or ""))
        names = [t.name for t in prefixed(all_topics(), settings.kafka.topic_prefix)]
        monitor = Monitor(
            probe, store, topics=names, groups=dict, group_prefix=settings.kafka.group_prefix, cache_s=0
        )
        try:
            await monitor.sample()
            await asyncio.sleep(interval)
            return await monitor.health()  # with cache_s=0, a second sample
        except BrokersUnavailable as exc:
            typer.echo(f"ketenhub: {exc}; check KETENHUB_KAFKA__BOOTSTRAP_SERVERS and the brokers", err=True)
            raise typer.Exit(1) from None
        finally:
            await probe.close()

    health = _run(go)
    table = Table("group", "topic", "verdict", "lag", "lag (s)", "expired unread")
    for column in table.columns:  # a name cut short names another topic or group, or none
        column.overflow = "fold"
    for g in health.groups:
        for t in g["topics"]:
            figures = (t["lag"], t["lag_seconds"], t["expired_unread"])
            table.add_row(g["group"], t["topic"], g["verdict"], *map(str, figures))
    dlq = Table("DLQ topic", "depth")
    for name, depth in sorted(health.dlq_depth.items()):
        dlq.add_row(name, str(depth))
    typer.echo(f"verdicts over two samples {interval:g} s apart")
    Terminal().print(table, dlq)
