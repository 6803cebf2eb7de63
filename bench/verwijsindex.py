"""The Verwijsindex connector against the simulator, beside a raw aiokafka + aiohttp baseline, in one run.

python -m bench.verwijsindex [--n 5000] [--follow-up 0.3] [--store sqlite|postgresql|both]
                             [--simulator process|thread] [--shipped-state]

N signals are stored as the caseworker API stores them (`store_signal`), and for a share of the
youths a later WithdrawSignal, ChangeSignalContact, or both, is queued for the same youth
(`request_withdrawal`, `request_contact_change`), within the next 20 registrations. The commands
the outbox then holds are pre-loaded on the hub's `verwijsindex.signal.v1` exactly as the relay
publishes them (key: the youth key; value and headers: the envelope) and marked sent, so the
relay does not publish them again; the same records go to a copy topic for the baseline.

Timed from the start (the hub's `start()`, the baseline's consumer start) until the simulator has
answered every command with 2xx; a second row per run times its first call to its last (no
start-up). Afterwards the simulator's call log is checked: each command arrived, under its own
transaction id, and one youth's commands in their order; a call repeating a command is counted,
not hidden (a repeated registration must be answered 200, not 201). A missing, failed or
out-of-order call raises DeliveryError.

The baseline: a plain aiokafka consumer in a group on the copy topic, mapping each record with
plain dicts and calling the same simulator over aiohttp (the connector's client library, keep-alive),
one call after another per youth (the record key), up to 16 youths at once as the hub's retry ladder
(one call after another per partition before 2026-12-07: 4 in flight, which flattered the hub's
ratio), committing offsets after the calls. The
simulator is reset between the runs, so each run registers the same signals afresh.

The simulator is a SimulatorServer (uvicorn, real HTTP) in a process of its own (the default: the
index is another system, and in this process it would share the interpreter lock with the hub it
measures) or in a thread of this process. The simulator's state scans every stored signal on every
call, a cost that is not the index's; it is set aside unless asked for (`--shipped-state`, see
`IndexedState`).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import heapq
import json
import multiprocessing
import os
import platform
import random
import tempfile
import threading
import time
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import date, timedelta
from multiprocessing.connection import Connection
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol

import aiohttp
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord
from sqlalchemy import select, update

from bench.harness import Result, create, peak_rss_mb
from bench.harness import run as bench_run
from bench.run import SECRET, _row, db_url, hub_settings
from connectors.verwijsindex.component import register_verwijsindex
from connectors.verwijsindex.contract import (
    TRANSACTION_HEADER,
    Contactpersoon,
    IntrekkingsReden,
    MatchPagina,
    Signaal,
    SignaalRegistratie,
    SignaalStatus,
)
from connectors.verwijsindex.sim_faults import CallRecord
from connectors.verwijsindex.sim_server import SimulatorServer
from connectors.verwijsindex.sim_state import SimulatorState
from hub.clock import today as dutch_today
from hub.config import Settings
from hub.embedded import EmbeddedKafka
from hub.logging import setup_logging
from hub.runtime import Hub
from hub.signals import commands as cmds
from hub.signals import request_contact_change, request_withdrawal, store_signal
from hub.signals.tables import signals as signal_rows
from hub.store import Store
from hub.store.tables import outbox
from hub.topics import VERWIJSINDEX_SIGNAL
from schemas.bsn import is_valid_bsn
from schemas.caseworker import Caseworker, ContactDetails, Team
from schemas.envelope import utcnow
from schemas.pseudonym import youth_key
from schemas.referral import Gender
from schemas.signal import SignalStatus, SignalYouth, VerwijsindexSignal, WithdrawalReason

if TYPE_CHECKING:
    from multiprocessing.sharedctypes import Synchronized

SIGNAL_PATH = "/api/v1/signalen/"
METHOD = {cmds.REGISTER: "PUT", cmds.WITHDRAW: "DELETE", cmds.CHANGE_CONTACT: "PATCH"}
WRITES = frozenset(METHOD.values())
ORGANISATIE = {"code": "halt-den-haag", "naam": "Halt Den Haag"}  # the settings' defaults
POLL_S = 0.005  # how often the simulator's progress is read while a run is timed
CHUNK = 500  # store calls per transaction while preparing
SLOTS = 16  # calls in flight, each youth's in order: as the hub's retry ladder delivers (hub.retry.ladder)


# -- the workload ------------------------------------------------------------------------------
@dataclass(frozen=True)
class Command:
    """One record of `verwijsindex.signal.v1` as the hub's outbox relay publishes it."""

    key: bytes
    value: bytes
    headers: list[tuple[str, bytes]]
    signal_id: str
    type: str
    transaction_id: str


@dataclass
class Workload:
    """The commands in topic order, and what the simulator should hold after them."""

    signals: int
    commands: list[Command]
    withdrawn: dict[str, SignaalStatus] = field(default_factory=dict)  # signal id -> final status
    changed: dict[str, str] = field(default_factory=dict)  # signal id -> final contact's name

    def expected(self) -> dict[str, list[str]]:
        """Per signal, the transaction ids of its commands in the order they must arrive."""
        out: dict[str, list[str]] = defaultdict(list)
        for c in self.commands:
            out[c.signal_id].append(c.transaction_id)
        return out


def bsns(count: int, start: int = 400_000_000) -> list[str]:
    """`count` distinct valid (elfproef) BSNs from `start` upwards (the tests' helper, elsewhere)."""
    out: list[str] = []
    n = start
    while len(out) < count:
        n += 1
        if is_valid_bsn(str(n)):
            out.append(str(n))
    return out


def plan(n: int, share: float, seed: int = 7) -> list[tuple[str, int]]:
    """The order of the caseworkers' actions: ("register" | "withdraw" | "change", signal index).

    A share of the signals gets a follow-up within the next 20 registrations: a withdrawal, a
    contact change, or a change and then a withdrawal (a change after a withdrawal is refused by
    the index, so that pair shows a swap).
    """
    rng = random.Random(seed)
    steps: list[tuple[float, str, int]] = []
    for i in range(n):
        steps.append((float(i), "register", i))
        if rng.random() >= share:
            continue
        at = i + rng.uniform(0.5, 20)
        kind = rng.choice(["withdraw", "change", "both"])
        if kind == "both":
            steps.append((at, "change", i))
            steps.append((at + rng.uniform(0.1, 10), "withdraw", i))
        else:
            steps.append((at, kind, i))
    steps.sort()
    return [(action, i) for _, action, i in steps]


def _signal(bsn: str, i: int, today: date) -> VerwijsindexSignal:
    return VerwijsindexSignal(
        signal_id=str(uuid.uuid4()),
        youth=SignalYouth(
            bsn=bsn,
            given_names="Test",
            surname="Jongere",
            birth_date=date(2010, 1, 1) + timedelta(days=i % 1500),
            gender=Gender.VROUW if i % 2 else Gender.MAN,
            municipality="Den Haag",
        ),
        organisation="Halt Den Haag",
        caseworker=ContactDetails(name="Ilse Bakker", organisation="Halt Den Haag", email="ilse@halt.nl"),
        caseworker_id="cw-ilse",
        created=today,
        end_date=today + timedelta(days=365),
        youth_informed_at=today,
        parent_letter_sent_at=today,
    )


ENDED = {
    WithdrawalReason.ONTERECHT: SignaalStatus.INGETROKKEN_ONTERECHT,
    WithdrawalReason.RISICO_WEG: SignaalStatus.BEEINDIGD_RISICO_WEG,
}
# A contact change names a caseworker who may signal (rule 13), as the signals API and borging ask.
STAND_IN = Caseworker(
    caseworker_id="cw-noor",
    name="Noor Visser",
    email="noor@halt.nl",
    team=Team.DEN_HAAG,
    meldingsbevoegd=True,
)


async def prepare(db_url: str, topic: str, n: int, share: float) -> Workload:
    """Store the signals and their follow-ups as the service does; take the commands out of the outbox.

    The outbox rows are marked sent: they are pre-loaded on the topic here, not by the hub's relay.
    The signals are left ACTIEF, as they are while their registrations are on their way: a
    withdrawal queued here stands for one asked for after its registration was delivered.
    """
    today = dutch_today()
    signals = [_signal(b, i, today) for i, b in enumerate(bsns(n))]
    ids = [s.signal_id or "" for s in signals]
    workload = Workload(signals=n, commands=[])
    store = Store(db_url)
    try:
        await store.migrate()
        steps = plan(n, share)
        for start in range(0, len(steps), CHUNK):
            async with store.transaction() as session:
                for action, i in steps[start : start + CHUNK]:
                    tx = str(uuid.uuid4())
                    if action == "register":
                        key = youth_key(SECRET, signals[i].youth.bsn)
                        await store_signal(
                            session, topic, signals[i], youth_key=key, user="cw-ilse", transaction_id=tx
                        )
                    elif action == "withdraw":
                        reason = WithdrawalReason.RISICO_WEG if i % 2 else WithdrawalReason.ONTERECHT
                        await request_withdrawal(
                            session, topic, ids[i], reason, user="cw-ilse", transaction_id=tx
                        )
                        workload.withdrawn[ids[i]] = ENDED[reason]
                    else:
                        await request_contact_change(session, topic, ids[i], STAND_IN, tx)
                        workload.changed[ids[i]] = STAND_IN.name
        async with store.transaction() as session:
            rows = (
                await session.execute(select(outbox).where(outbox.c.topic == topic).order_by(outbox.c.id))
            ).all()
            await session.execute(update(outbox).where(outbox.c.topic == topic).values(sent_at=utcnow()))
            # As if every follow-up came after its registration reached the index: the connector
            # withholds a registration (or contact change) of a signal the hub has withdrawn already.
            await session.execute(
                update(signal_rows)
                .where(signal_rows.c.status != SignalStatus.ACTIEF.value)
                .values(status=SignalStatus.ACTIEF.value, withdrawal_reason=None)
            )
    finally:
        await store.close()
    for r in rows:
        headers = dict(r.headers or {})
        workload.commands.append(
            Command(
                key=r.key.encode(),
                value=bytes(r.value),
                headers=[(k, str(v).encode()) for k, v in headers.items()],
                signal_id=headers["correlation-id"],
                type=headers["message-type"].rsplit(".v", 1)[0],
                transaction_id=headers["transaction-id"],
            )
        )
    return workload


async def load(bootstrap: str, topic: str, commands: Sequence[Command]) -> None:
    """Produce the commands in order with their keys and headers, and wait for the acks."""
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap, acks="all", linger_ms=5, max_batch_size=512 * 1024
    )
    await producer.start()
    try:
        futures = [await producer.send(topic, c.value, key=c.key, headers=c.headers) for c in commands]
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


# -- the simulator, in a thread or a process of its own ----------------------------------------
class Call(NamedTuple):
    """One call from the simulator's log (`FaultMiddleware`), in the order the calls arrived."""

    method: str
    path: str
    transaction_id: str | None
    status: int | None
    at: float  # epoch seconds


class Progress:
    """Counts the distinct signal writes the simulator answered with 2xx, reading its log as it grows."""

    def __init__(self, state: SimulatorState) -> None:
        self.state = state
        self.clear()

    def clear(self) -> None:
        """Start counting again (after the simulator's reset)."""
        self._pos = 0
        self._open: list[CallRecord] = []  # signal writes not answered yet when last looked at
        self._done: set[tuple[str, str]] = set()

    def update(self) -> int:
        """Read the calls added since the last update and those still open; the count so far."""
        calls = self.state.faults.calls
        end = len(calls)
        fresh = [c for c in calls[self._pos : end] if c.method in WRITES and c.path.startswith(SIGNAL_PATH)]
        self._pos = end
        still: list[CallRecord] = []
        for c in [*self._open, *fresh]:
            if c.status is None:
                still.append(c)
            elif c.status < 300:
                self._done.add((c.method, c.path))
        self._open = still
        return len(self._done)


class IndexedState(SimulatorState):
    """The simulator's state under the same rules, without its two scans of every stored signal.

    As shipped, every call runs `expire()` over all signals and every registration runs `_match()`
    over all signals: O(n) a call, so the simulator slows as it fills (from ~200 to ~80 calls/s
    by 4,000 signals on this machine) and it, not the client, sets the pace.

    Here the shipped methods run unchanged, under one lock, on a view of `signals` holding only
    the signals they can affect: for `expire()` those whose end date has passed (a heap by end
    date; an end date never changes), for `_match()` those on the same BSN or on a BSN that shares
    a parent in the population register (in registration order, as the full scan meets them).
    """

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self._lock = threading.RLock()
        self._order: dict[str, int] = {}
        self._by_bsn: dict[str, list[str]] = defaultdict(list)
        self._ends: list[tuple[date, int, str]] = []
        parents = {p.bsn: set(p.ouders) for p in self.population.personen}
        self._kin = {
            a: [b for b, theirs in parents.items() if b != a and mine & theirs] for a, mine in parents.items()
        }

    @contextlib.contextmanager
    def _only(self, ids: Sequence[str]) -> Iterator[None]:
        everything = self.signals
        self.signals = {i: everything[i] for i in ids}
        try:
            yield
        finally:
            self.signals = everything

    def expire(self) -> None:
        """The shipped rule 12, over the signals whose end date has passed."""
        today = self.clock().date()
        due: list[str] = []
        while self._ends and self._ends[0][0] < today:
            due.append(heapq.heappop(self._ends)[2])
        if due:
            with self._only(due):
                super().expire()

    def _match(self, new_id: str) -> None:
        bsn = self.signals[new_id].registratie.jeugdige.bsn
        self._order[new_id] = len(self._order)
        self._by_bsn[bsn].append(new_id)
        heapq.heappush(self._ends, (self.signals[new_id].signaal.einddatum, self._order[new_id], new_id))
        ids = [i for b in [bsn, *self._kin.get(bsn, [])] for i in self._by_bsn.get(b, [])]
        with self._only(sorted(ids, key=self._order.__getitem__)):
            super()._match(new_id)

    def get(self, signaal_id: str) -> Signaal:
        """See SimulatorState."""
        with self._lock:
            return super().get(signaal_id)

    def register(self, signaal_id: str, body: SignaalRegistratie) -> tuple[Signaal, bool]:
        """See SimulatorState."""
        with self._lock:
            return super().register(signaal_id, body)

    def withdraw(self, signaal_id: str, reden: IntrekkingsReden) -> Signaal:
        """See SimulatorState."""
        with self._lock:
            return super().withdraw(signaal_id, reden)

    def change_contact(self, signaal_id: str, contact: Contactpersoon) -> Signaal:
        """See SimulatorState."""
        with self._lock:
            return super().change_contact(signaal_id, contact)

    def matches_after(self, vanaf: str | None, limit: int, organisatie: str | None = None) -> MatchPagina:
        """See SimulatorState."""
        with self._lock:
            return super().matches_after(vanaf, limit, organisatie)

    def reset(self) -> None:
        """See SimulatorState."""
        with self._lock:
            super().reset()
            self._order.clear()
            self._by_bsn.clear()
            self._ends.clear()


@dataclass(frozen=True)
class SimOptions:
    """How the simulator is set up: as shipped, or without its scans, which are not the index's cost."""

    indexed: bool = True  # IndexedState instead of SimulatorState


def simulator_server(options: SimOptions) -> SimulatorServer:
    """A SimulatorServer (not started), with the indexed state unless asked for the shipped one."""
    return SimulatorServer(IndexedState() if options.indexed else None)


def _calls_of(state: SimulatorState) -> list[Call]:
    return [Call(c.method, c.path, c.transaction_id, c.status, c.at.timestamp()) for c in state.faults.calls]


def _signals_of(state: SimulatorState) -> dict[str, tuple[str, str]]:
    """Signal id -> (status, contact's name) of everything the simulator holds."""
    return {sid: (s.signaal.status.value, s.signaal.contactpersoon.naam) for sid, s in state.signals.items()}


class Simulator(Protocol):
    """A running simulator, as the runs below use it."""

    url: str

    def progress(self) -> int:
        """Distinct signal writes answered with 2xx since the last reset (cheap: called every 5 ms)."""
        ...

    def calls(self) -> list[Call]:
        """The call log since the last reset."""
        ...

    def signals(self) -> dict[str, tuple[str, str]]:
        """What the simulator holds: signal id -> (status, contact's name)."""
        ...

    def reset(self) -> None:
        """Forget signals and calls."""
        ...

    def cpu_s(self) -> float | None:
        """CPU seconds the simulator used so far, when it can be told apart from this process's."""
        ...

    def stop(self) -> None:
        """Shut it down."""
        ...


class ThreadSimulator:
    """A SimulatorServer in a thread of this process (it shares the interpreter lock with the hub)."""

    def __init__(self, options: SimOptions) -> None:
        self.server = simulator_server(options)
        self.url = self.server.start()
        self._progress = Progress(self.server.state)

    def progress(self) -> int:
        """See Simulator."""
        return self._progress.update()

    def calls(self) -> list[Call]:
        """See Simulator."""
        return _calls_of(self.server.state)

    def signals(self) -> dict[str, tuple[str, str]]:
        """See Simulator."""
        return _signals_of(self.server.state)

    def reset(self) -> None:
        """See Simulator."""
        self.server.state.reset()
        self._progress.clear()

    def cpu_s(self) -> float | None:
        """See Simulator: None, it shares this process."""
        return None

    def stop(self) -> None:
        """See Simulator."""
        self.server.stop()


def _serve(conn: Connection, answered: Synchronized[int], options: SimOptions) -> None:
    """The simulator process: a SimulatorServer; its progress in `answered`, requests over `conn`."""
    server = simulator_server(options)
    conn.send(server.start())
    progress = Progress(server.state)
    try:
        while True:
            if conn.poll(POLL_S):
                request = conn.recv()
                if request == "stop":
                    break
                if request == "reset":
                    server.state.reset()
                    progress.clear()
                    conn.send(None)
                elif request == "calls":
                    conn.send(_calls_of(server.state))
                elif request == "signals":
                    conn.send(_signals_of(server.state))
                elif request == "cpu":
                    conn.send(time.process_time())
            answered.value = progress.update()
    finally:
        server.stop()


class ProcessSimulator:
    """A SimulatorServer in a process of its own; its progress read from shared memory."""

    def __init__(self, options: SimOptions, *, startup_timeout_s: float = 60) -> None:
        ctx = multiprocessing.get_context("spawn")  # no fork of a process with threads and a loop
        self._answered: Synchronized[int] = ctx.Value("q", 0)
        self._conn, child = ctx.Pipe()
        self._proc = ctx.Process(
            target=_serve, args=(child, self._answered, options), name="vi-simulator", daemon=True
        )
        self._proc.start()
        deadline = time.monotonic() + startup_timeout_s
        while not self._conn.poll(0.1):
            if not self._proc.is_alive() or time.monotonic() > deadline:
                self._proc.kill()
                raise RuntimeError(f"the simulator process did not start (exit code {self._proc.exitcode})")
        self.url: str = self._conn.recv()

    def _ask(self, request: str) -> Any:
        self._conn.send(request)
        return self._conn.recv()

    def progress(self) -> int:
        """See Simulator."""
        return int(self._answered.value)

    def calls(self) -> list[Call]:
        """See Simulator."""
        return list(self._ask("calls"))

    def signals(self) -> dict[str, tuple[str, str]]:
        """See Simulator."""
        return dict(self._ask("signals"))

    def reset(self) -> None:
        """See Simulator."""
        self._ask("reset")
        self._answered.value = 0

    def cpu_s(self) -> float | None:
        """See Simulator."""
        return float(self._ask("cpu"))

    def stop(self) -> None:
        """See Simulator."""
        with contextlib.suppress(OSError):
            self._conn.send("stop")
        self._proc.join(15)
        if self._proc.is_alive():
            self._proc.kill()


async def until_answered(
    simulator: Simulator,
    expect: int,
    *,
    stall_s: float = 60,
    check: Callable[[], None] = lambda: None,
) -> float:
    """Read the simulator's progress every 5 ms until `expect` commands are answered; the time then.

    Raises TimeoutError when nothing moves for `stall_s`; `check` may raise to end the wait early.
    """
    last, moved = -1, time.monotonic()
    while True:
        done = simulator.progress()
        now = time.monotonic()
        if done >= expect:
            return now
        if done != last:
            last, moved = done, now
        elif now - moved > stall_s:
            raise TimeoutError(f"the simulator answered {done} of {expect} commands, then nothing")
        check()
        await asyncio.sleep(POLL_S)


# -- the raw baseline --------------------------------------------------------------------------
def raw_request(value: bytes) -> tuple[str, str, dict[str, Any] | None, dict[str, str] | None, str]:
    """The index call for one command with plain dicts: method, path, JSON body, query, transaction id."""
    envelope = json.loads(value)
    payload = envelope["payload"]
    path = SIGNAL_PATH + envelope["correlation_id"]
    tx = envelope["transaction_id"]
    if envelope["type"] == cmds.REGISTER:
        youth, contact = payload["youth"], payload["caseworker"]
        body = {
            "jeugdige": {
                "bsn": youth["bsn"],
                "voornamen": youth["given_names"],
                "geslachtsnaam": youth["surname"],
                "geboortedatum": youth["birth_date"],
                "geslacht": youth["gender"],
                "gemeente": youth["municipality"],
            },
            "organisatie": ORGANISATIE,
            "contactpersoon": {
                "naam": contact["name"],
                "email": contact["email"],
                "telefoon": contact["phone"],
            },
            "aangemaakt": payload["created"],
            "einddatum": payload["end_date"],
        }
        return "PUT", path, body, None, tx
    if envelope["type"] == cmds.WITHDRAW:
        return "DELETE", path, None, {"reden": payload["reason"]}, tx
    contact = payload["contact"]
    body = {
        "contactpersoon": {"naam": contact["name"], "email": contact["email"], "telefoon": contact["phone"]}
    }
    return "PATCH", path, body, None, tx


class RawDelivery:
    """A plain consumer in a group: per partition one call after another, the partitions at once,
    offsets committed after the calls; keep-alive connections as the connector's client has."""

    def __init__(self, bootstrap: str, topic: str, group: str, url: str) -> None:
        self.bootstrap, self.topic, self.group, self.url = bootstrap, topic, group, url
        self.task: asyncio.Task[None] | None = None
        self._stopping = False

    async def start(self) -> None:
        """Begin delivering in the background."""
        self.http = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=20, keepalive_timeout=30),
            timeout=aiohttp.ClientTimeout(total=5.0),
        )
        self.consumer = AIOKafkaConsumer(
            self.topic,
            bootstrap_servers=self.bootstrap,
            group_id=self.group,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            session_timeout_ms=2000,
            heartbeat_interval_ms=500,
            max_poll_records=1000,
        )
        await self.consumer.start()
        self.task = asyncio.create_task(self._run())

    def check(self) -> None:
        """Raise what ended the delivery loop, if it ended."""
        if self.task is not None and self.task.done():
            self.task.result()

    async def _run(self) -> None:
        while not self._stopping:
            batch = await self.consumer.getmany(timeout_ms=100, max_records=1000)
            if batch:
                # In order per youth (the record key), up to as many youths at once as the hub's ladder
                # (16 slots): one call after another per partition held it to 4 calls in flight, a
                # stricter order than the hub keeps, and the hub's ratio to it came out too high.
                by_key: dict[Any, list[ConsumerRecord[Any, Any]]] = {}
                for records in batch.values():
                    for record in records:
                        by_key.setdefault(record.key, []).append(record)
                slots = asyncio.Semaphore(SLOTS)
                await asyncio.gather(*(self._in_a_slot(slots, records) for records in by_key.values()))
                await self.consumer.commit()

    async def _in_a_slot(self, slots: asyncio.Semaphore, records: list[ConsumerRecord[Any, Any]]) -> None:
        async with slots:
            await self._deliver(records)

    async def _deliver(self, records: list[ConsumerRecord[Any, Any]]) -> None:
        for record in records:
            method, path, body, params, tx = raw_request(record.value)
            async with self.http.request(
                method, self.url + path, json=body, params=params, headers={TRANSACTION_HEADER: tx}
            ) as answer:
                await answer.read()
            if answer.status >= 300:
                raise RuntimeError(f"{method} answered HTTP {answer.status}")

    async def stop(self) -> None:
        """Finish the batch in hand (its calls and commit), then stop."""
        self._stopping = True
        if self.task:
            with contextlib.suppress(BaseException):
                await asyncio.wait_for(self.task, 10)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.consumer.stop(), 5)
        await self.http.close()


# -- checking what arrived ---------------------------------------------------------------------
class DeliveryError(Exception):
    """A command did not arrive, failed, arrived twice as a new registration, or out of order."""


@dataclass
class Findings:
    """What the call log showed."""

    commands: int
    calls: int  # signal writes the simulator received
    repeats: dict[str, int]  # method -> calls of a command that had arrived already
    first_at: float
    last_at: float
    cpu_s: float = 0.0  # CPU time of this process while the run was timed (set by the run)
    simulator_cpu_s: float | None = None  # the simulator's, when it runs in a process of its own

    @property
    def spread_s(self) -> float:
        """Seconds from the first signal call to the last."""
        return self.last_at - self.first_at

    def describe(self) -> str:
        """One line, no personal data."""
        repeats = sum(self.repeats.values())
        detail = ", ".join(f"{m} {k}" for m, k in sorted(self.repeats.items())) if repeats else "none"
        return (
            f"{self.commands:,} commands, {self.calls:,} calls: every command arrived and was answered 2xx, "
            f"each youth's in order; calls repeating a command: {detail}; CPU of this process "
            f"{1000 * self.cpu_s / self.commands:.2f} ms a command"
            + (
                f", of the simulator {1000 * self.simulator_cpu_s / self.calls:.2f} ms a call"
                if self.simulator_cpu_s is not None
                else ""
            )
        )


def verify(workload: Workload, calls: Sequence[Call], held: dict[str, tuple[str, str]]) -> Findings:
    """Check the call log and the simulator's final state against the workload; raise DeliveryError."""
    by_tx = {c.transaction_id: c for c in workload.commands}
    arrived: dict[str, list[str]] = defaultdict(list)
    problems: dict[str, int] = defaultdict(int)
    repeats: dict[str, int] = defaultdict(int)
    writes = [c for c in calls if c.method in WRITES and c.path.startswith(SIGNAL_PATH)]
    for call in writes:
        command = by_tx.get(call.transaction_id or "")
        if command is None:
            problems["call under an unknown transaction id"] += 1
            continue
        if call.path != SIGNAL_PATH + command.signal_id or call.method != METHOD[command.type]:
            problems["call that does not fit its command"] += 1
        if call.status is None or call.status >= 300:
            problems[f"{call.method} answered {call.status}"] += 1
        seen = arrived[command.signal_id]
        if seen and seen[-1] == command.transaction_id:
            repeats[call.method] += 1
            if call.status == 201:
                problems["registration created twice"] += 1
        else:
            seen.append(command.transaction_id)
    for signal_id, want in workload.expected().items():
        got = arrived.get(signal_id, [])
        if got == want:
            continue
        if sorted(set(got)) != sorted(want):
            problems["youth with a command missing"] += 1
        else:
            problems["youth whose commands arrived out of order (or one again after a later one)"] += 1
    for signal_id, status in workload.withdrawn.items():
        if held.get(signal_id, ("", ""))[0] != status.value:
            problems["withdrawn signal not ended in the index"] += 1
    for signal_id, name in workload.changed.items():
        if held.get(signal_id, ("", ""))[1] != name:
            problems["changed contact not in the index"] += 1
    if problems:
        raise DeliveryError("; ".join(f"{k}: {v}" for k, v in sorted(problems.items())))
    return Findings(len(workload.commands), len(writes), dict(repeats), writes[0].at, writes[-1].at)


# -- the runs ----------------------------------------------------------------------------------
def _settings(bootstrap: str, db_url: str, prefix: str, url: str) -> Settings:
    return hub_settings(bootstrap, db_url, prefix, ["verwijsindex"], verwijsindex={"url": url})


def _results(name: str, workload: Workload, seconds: float, found: Findings) -> list[Result]:
    total = len(workload.commands)
    return [Result(name, total, seconds), Result(f"{name}, first to last call", total, found.spread_s)]


async def bench_raw(
    kafka: EmbeddedKafka, simulator: Simulator, workload: Workload
) -> tuple[list[Result], Findings]:
    """The baseline over a copy of the hub's records: from the consumer's start to the last answer."""
    tag = uuid.uuid4().hex[:6]
    topic = f"raw{tag}.signal"
    await create(kafka.bootstrap, topic)
    await load(kafka.bootstrap, topic, workload.commands)
    simulator.reset()
    raw = RawDelivery(kafka.bootstrap, topic, f"raw{tag}", simulator.url)
    try:
        s0 = simulator.cpu_s()
        t0, c0 = time.monotonic(), time.process_time()
        await raw.start()
        t1 = await until_answered(simulator, len(workload.commands), check=raw.check)
        c1, s1 = time.process_time(), simulator.cpu_s()
    finally:
        await raw.stop()
    found = verify(workload, simulator.calls(), simulator.signals())
    found.cpu_s = c1 - c0
    found.simulator_cpu_s = s1 - s0 if s0 is not None and s1 is not None else None
    return _results(
        "raw aiokafka + aiohttp, each youth in order, 16 at once", workload, t1 - t0, found
    ), found


async def bench_connector(
    kafka: EmbeddedKafka, simulator: Simulator, db_url: str, label: str, n: int, share: float
) -> tuple[list[Result], Findings, Workload]:
    """The hub's Verwijsindex connector: from `hub.start()` until the simulator answered every command."""
    prefix = f"v{uuid.uuid4().hex[:6]}."
    topic = prefix + VERWIJSINDEX_SIGNAL.name
    workload = await prepare(db_url, topic, n, share)
    await create(kafka.bootstrap, topic)
    await load(kafka.bootstrap, topic, workload.commands)
    simulator.reset()
    hub = Hub(
        _settings(kafka.bootstrap, db_url, prefix, simulator.url),
        registrars={"verwijsindex": [register_verwijsindex]},
    )
    try:
        s0 = simulator.cpu_s()
        t0, c0 = time.monotonic(), time.process_time()
        await hub.start()
        t1 = await until_answered(simulator, len(workload.commands))
        c1, s1 = time.process_time(), simulator.cpu_s()
    finally:
        await hub.stop()
    found = verify(workload, simulator.calls(), simulator.signals())
    found.cpu_s = c1 - c0
    found.simulator_cpu_s = s1 - s0 if s0 is not None and s1 is not None else None
    return _results(f"hub Verwijsindex connector ({label})", workload, t1 - t0, found), found, workload


async def _drop_db(url: str) -> None:
    """Drop a PostgreSQL database `db_url` made (best effort); SQLite files go with the temp dir."""
    if not url.startswith("postgresql"):
        return
    import asyncpg

    with contextlib.suppress(Exception):
        admin = await asyncpg.connect("postgresql://postgres@127.0.0.1:5432/test")
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{url.rsplit("/", 1)[1]}"')
        finally:
            await admin.close()


async def bench_verwijsindex(
    kafka: EmbeddedKafka,
    tmp: Path,
    n: int,
    *,
    stores: Sequence[str] = ("sqlite",),
    share: float = 0.3,
    simulator_mode: str = "process",
    options: SimOptions = SimOptions(),
    report: Callable[[str], None] = print,
) -> list[Result]:
    """Every store's connector run, and the baseline over the first one's commands.

    Returns the baseline's two results (from its start, and from its first call to its last), then
    the same two for the connector on each store; `report` gets one line per run on what arrived.
    `options` may set the simulator up as shipped (SimOptions).
    """
    simulator: Simulator = (
        ProcessSimulator(options) if simulator_mode == "process" else ThreadSimulator(options)
    )
    out: list[Result] = []
    try:
        hub_runs: list[list[Result]] = []
        first: Workload | None = None
        for store in stores:
            url = await db_url(store, tmp / f"vi-{store}")
            try:
                results, found, workload = await bench_connector(kafka, simulator, url, store, n, share)
            finally:
                await _drop_db(url)
            report(f"hub ({store}): {found.describe()}")
            hub_runs.append(results)
            first = first or workload
        assert first is not None
        raw, found = await bench_raw(kafka, simulator, first)
        report(f"baseline: {found.describe()}")
        out += raw
        for results in hub_runs:
            out += results
    finally:
        simulator.stop()
    return out


async def main() -> None:
    """Run the connector and its baseline; print a Markdown table."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=5000, help="signals (RegisterSignal commands); default 5000")
    p.add_argument(
        "--follow-up",
        type=float,
        default=0.3,
        help="share of youths with a later withdrawal, contact change, or both; default 0.3",
    )
    p.add_argument("--store", choices=["sqlite", "postgresql", "both"], default="sqlite")
    p.add_argument(
        "--simulator",
        choices=["process", "thread"],
        default="process",
        help="the simulator in its own process (default) or in a thread of the benchmark's process",
    )
    p.add_argument(
        "--shipped-state",
        action="store_true",
        help="the simulator's SimulatorState as shipped: two scans of every signal per call",
    )
    args = p.parse_args()
    setup_logging("INFO")  # as `ketenhub run` logs
    kafka = EmbeddedKafka()
    kafka.start()
    print(
        f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"Python {platform.python_version()}; broker: embedded tansu; simulator: {args.simulator}; "
        f"n={args.n:,} signals, follow-up share {args.follow_up}"
        + ("; simulator state as shipped" if args.shipped_state else "")
    )
    stores = ["sqlite", "postgresql"] if args.store == "both" else [args.store]
    try:
        with tempfile.TemporaryDirectory() as tmp:
            results = await bench_verwijsindex(
                kafka,
                Path(tmp),
                args.n,
                stores=stores,
                share=args.follow_up,
                simulator_mode=args.simulator,
                options=SimOptions(indexed=not args.shipped_state),
            )
    finally:
        kafka.stop()
    raw, raw_spread = results[0], results[1]
    rows = [_row(raw), _row(raw_spread)]
    for i in range(2, len(results), 2):
        rows += [_row(results[i], raw), _row(results[i + 1], raw_spread)]
    print("| run | commands | time | rate | vs raw |\n|---|---|---|---|---|")
    print("\n".join(rows))
    print(f"peak RSS of the benchmark process (hub + baseline): {peak_rss_mb():.0f} MB")


if __name__ == "__main__":
    bench_run(main())
