"""Chaos 3: the Verwijsindex, the SMTP server and a handover receiver go down together, and come back.

One hub runs routing, the Verwijsindex connector and the mail connector. While the three partners are
down (the index answers 503, then rate-limits with 429 and Retry-After, the SMTP server greets with
421 and hangs up, the receiver's webhook answers 503), signals, mails and handovers are sent. When
the partners are back, each is delivered exactly once, and every call a partner saw during the outage
is checked against the retry schedule: quick retries in place, then parked attempts after the
schedule's delays (never sooner, and never later than a few seconds beyond them), with Retry-After
honoured.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import httpx
import pytest
from fastapi import FastAPI, Request, Response

from connectors.mail import MailSink
from connectors.mail.component import mail_component
from connectors.receivers.webhook import SIGNATURE_HEADER, verify
from connectors.verwijsindex.component import verwijsindex_component
from connectors.verwijsindex.sim_server import SimulatorServer
from hub.app import REGISTRARS, create_app
from hub.directory import upsert_caseworker
from hub.embedded import EmbeddedKafka
from hub.handovers.receivers import ReceiverDelivery, set_receiver_delivery
from hub.notify.component import register_notify
from hub.partners import PartnerType, add_partner
from hub.retry import RetryPolicy
from hub.runtime import Hub
from hub.signals.commands import register_command
from hub.topics import VERWIJSINDEX_SIGNAL
from schemas.caseworker import Caseworker
from schemas.envelope import Envelope
from schemas.handover import ReceiverType
from schemas.pseudonym import youth_key
from tests.chaos.test_kill_and_restart import SIGNAL_PATH, signal_of
from tests.conftest import TEST_SECRET, make_settings
from tests.helpers.http import serving
from tests.helpers.kafka import produce, wait_for
from tests.integration.test_handover_flow import CW, SECRET, World, bsns
from tests.integration.test_mail_delivery import ILSE, OMAR, add_caseworkers, queue_notices

pytestmark = [pytest.mark.chaos, pytest.mark.timeout(300)]

SCHEDULE = (0.5, 1.0, 1.5, 2.0, 2.0, 2.0, 2.0, 2.0, 2.0, 2.0, 2.0, 2.0)  # ~21 s before a DLQ
VI_POLICY = RetryPolicy(in_place_attempts=2, in_place_wait_s=0.05, schedule_s=SCHEDULE, jitter=0.0)
MAIL_POLICY = RetryPolicy(in_place_attempts=2, in_place_wait_s=0.05, schedule_s=SCHEDULE, jitter=0.0)
# Receivers take their policy from settings: three tries in place (0.1 s, 0.2 s), 10% jitter.
RECEIVER_POLICY = RetryPolicy(schedule_s=SCHEDULE)
RETRY_AFTER_S = 2  # longer than in_place_max_wait_s: a 429 is parked, not retried in place
EARLY_S = 0.05  # clock and rounding slack before a due time
LATE_S = 5.0  # how far past its due time a retry may come on a busy 2-core machine
YOUTHS = 4


@dataclass
class Call:
    """One call a partner saw: when (loop time), and what it answered."""

    at: float
    ok: bool
    retry_after: float | None = None


def check_schedule(calls: list[Call], policy: RetryPolicy, what: str) -> None:
    """The calls for one item follow `policy`: in place first, then the parked schedule, one success.

    Every item in these tests is alone on its key during the outage, so its calls are: up to
    `in_place_attempts` quick ones (the last of which may be cut short by a long Retry-After), then
    one per parked rung, each at least that rung's delay (and any Retry-After) after the one before.
    """
    assert calls, f"{what}: never called"
    assert [c.ok for c in calls].count(True) == 1 and calls[-1].ok, f"{what}: not delivered exactly once"
    rung, in_place = 0, 1
    for before, after in itertools.pairwise(calls):
        gap = after.at - before.at
        quick = (
            in_place < policy.in_place_attempts and (before.retry_after or 0) <= policy.in_place_max_wait_s
        )
        if quick:
            least = policy.in_place_delay(in_place)
            in_place += 1
        else:
            in_place = policy.in_place_attempts  # parked from here on
            least = policy.schedule_s[rung] * (1 - policy.jitter)
            rung += 1
        least = max(least, before.retry_after or 0)
        assert gap >= least - EARLY_S, f"{what}: retried after {gap:.2f}s, sooner than {least:.2f}s"
        assert gap <= least * (1 + 2 * policy.jitter) + LATE_S, f"{what}: retried {gap:.2f}s later"


@dataclass
class Webhook:
    """A receiver's signed webhook that logs every call per handover, and can be taken down."""

    down: bool = True
    port: int = 0
    calls: dict[str, list[Call]] = field(default_factory=lambda: defaultdict(list))
    delivered: list[str] = field(default_factory=list)

    def app(self) -> FastAPI:
        app = FastAPI()

        @app.post("/hook/{org}")
        async def hook(org: str, request: Request) -> Response:
            body = await request.body()
            if not verify(SECRET, body, request.headers.get(SIGNATURE_HEADER)):
                return Response(status_code=401)
            env = Envelope.from_bytes(body)
            handover_id = str(env.payload.get("handover_id"))
            now = asyncio.get_running_loop().time()
            if self.down:
                self.calls[handover_id].append(Call(now, ok=False))
                return Response(status_code=503)
            self.calls[handover_id].append(Call(now, ok=True))
            if env.type == "Handover":
                self.delivered.append(handover_id)
            return Response(status_code=204)

        return app

    def url(self, org: str) -> str:
        return f"http://127.0.0.1:{self.port}/hook/{org}"


@asynccontextmanager
async def webhook_server() -> AsyncIterator[Webhook]:
    hook = Webhook()
    async with serving(hook.app()) as port:
        hook.port = port
        yield hook


class RefusingSmtp:
    """On the SMTP server's port while it is down: greets with 421 and hangs up, logging each connection."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.connections: list[float] = []
        self._server: asyncio.Server | None = None

    async def start(self) -> None:
        async def refuse(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            self.connections.append(asyncio.get_running_loop().time())
            writer.write(b"421 4.3.2 Service not available, closing transmission channel\r\n")
            with contextlib.suppress(Exception):
                await writer.drain()
            writer.close()

        self._server = await asyncio.start_server(refuse, "127.0.0.1", self.port, reuse_address=True)

    async def stop(self) -> None:
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()


@pytest.fixture
def simulator() -> Iterator[SimulatorServer]:
    with SimulatorServer() as running:
        yield running


def signal_calls(simulator: SimulatorServer, loop_offset: float) -> dict[str, list[Call]]:
    """The simulator's PUT calls per signal, on the test's loop clock."""
    out: dict[str, list[Call]] = defaultdict(list)
    for c in list(simulator.state.faults.calls):
        if c.method == "PUT" and c.path.startswith(SIGNAL_PATH):
            retry_after = float(RETRY_AFTER_S) if c.fault == "429" else None
            out[c.path].append(
                Call(
                    c.at.timestamp() - loop_offset,
                    ok=c.status is not None and 200 <= c.status < 300,
                    retry_after=retry_after,
                )
            )
    return out


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
async def test_index_smtp_and_receiver_down_then_back_each_delivered_once_on_schedule(
    kafka: EmbeddedKafka, db_url: str, unique: str, simulator: SimulatorServer
) -> None:
    loop = asyncio.get_running_loop()
    wall_minus_loop = time.time() - loop.time()  # the simulator logs wall-clock times
    admin = httpx.AsyncClient(base_url=simulator.url)
    sink = MailSink()
    smtp_port = await sink.start()
    async with webhook_server() as hook:
        settings = make_settings(
            kafka, db_url, unique,
            components=["routing", "verwijsindex", "mail"],
            handovers={"retry_schedule_s": SCHEDULE, "allow_plain_http": True, "check_interval_s": 0.2},
            verwijsindex={"url": simulator.url, "poll_interval_s": 60},
            smtp={"host": "127.0.0.1", "port": smtp_port, "timeout_s": 2, "sender": "ketenhub@halt.nl"},
        )  # fmt: skip
        hub = Hub(
            settings,
            registrars={
                "routing": REGISTRARS["routing"],
                "verwijsindex": [verwijsindex_component(VI_POLICY)],
                "mail": [mail_component(MAIL_POLICY), register_notify],
            },
        )
        await hub.start()
        refusing = RefusingSmtp(smtp_port)
        try:
            assert hub.store is not None
            async with hub.store.transaction() as session:
                await upsert_caseworker(
                    session,
                    Caseworker(caseworker_id=CW, name="Medewerker Een", email="cw1@halt.nl", team="DEN_HAAG"),
                )
                await set_receiver_delivery(
                    session,
                    ReceiverDelivery(
                        "jongerenwerk-dh",
                        ReceiverType.JONGERENWERK,
                        "webhook",
                        hook.url("jongerenwerk-dh"),
                        SECRET,
                    ),
                )
                await add_partner(session, "jongerenwerk-dh", PartnerType.JONGERENWERK)
                _, case_system = await add_partner(session, "aurah", PartnerType.ZAAKSYSTEEM)
            await add_caseworkers(hub, ILSE, OMAR)

            # All three partners down at once.
            assert (await admin.post("/admin/faults", json={"down": "503"})).status_code == 200
            await sink.stop()
            await refusing.start()

            # Traffic during the outage: one signal per youth, mails for one caseworker, and one
            # handover per youth, so every item is alone on its key while it is retried.
            signals = [signal_of(b) for b in bsns()[-YOUTHS:]]
            await produce(
                kafka.bootstrap,
                hub.topic(VERWIJSINDEX_SIGNAL.name),
                [
                    (youth_key(TEST_SECRET, s.youth.bsn).encode(), cmd.to_bytes(), cmd.headers())
                    for s in signals
                    for cmd in [register_command(s, str(uuid.uuid4()))]
                ],
            )
            notices = await queue_notices(hub, 3)
            app = create_app(settings, hub=hub)
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(
                transport=transport, base_url="http://hub", headers={"Authorization": f"Bearer {case_system}"}
            ) as client:
                world = World(hub, client, None, {}, bsns()[: YOUTHS * 2])  # type: ignore[arg-type]
                handovers = []
                for _ in range(YOUTHS):
                    referral_id, _ = await world.referral(17)
                    await world.consent(referral_id)
                    handovers.append(await world.handover(referral_id))

            paths = [SIGNAL_PATH + str(s.signal_id) for s in signals]

            # The index: 503 until every signal is parked past its second rung, then 429s with
            # Retry-After until each had one, then healthy.
            def index_failures(at_least: int, fault: str) -> bool:
                calls = simulator.state.faults.calls
                per = Counter(c.path for c in calls if c.method == "PUT" and c.fault == fault)
                return all(per[p] >= at_least for p in paths)

            await wait_for(lambda: index_failures(VI_POLICY.in_place_attempts + 2, "down-503"), timeout_s=30)
            limited = {"rate_limit_rate": 1.0, "retry_after": RETRY_AFTER_S}
            assert (await admin.post("/admin/faults", json=limited)).status_code == 200
            await wait_for(lambda: index_failures(1, "429"), timeout_s=30)

            # SMTP: back once the head mail was refused in place and on two parked rungs.
            await wait_for(
                lambda: len(refusing.connections) >= MAIL_POLICY.in_place_attempts + 2, timeout_s=30
            )
            assert (await admin.post("/admin/faults", json={})).status_code == 200  # the index is back
            await refusing.stop()
            await sink.start(smtp_port)

            # The receiver: back once every handover was refused in place and on two rungs.
            await wait_for(
                lambda: all(len(hook.calls[h]) >= RECEIVER_POLICY.in_place_attempts + 2 for h in handovers),
                timeout_s=30,
            )
            hook.down = False

            # Everything delivered, each exactly once.
            async def index_done() -> bool:
                per = signal_calls(simulator, wall_minus_loop)
                return all(any(c.ok for c in per[p]) for p in paths)

            await wait_for(index_done, timeout_s=40)
            await wait_for(lambda: len(sink.memory) >= len(notices), timeout_s=40)
            await wait_for(lambda: set(hook.delivered) >= set(handovers), timeout_s=40)
            for ladder in (c.ladder for c in (hub.components["verwijsindex"], hub.components["mail"])):
                await wait_for(lambda ladder=ladder: _nothing_parked(ladder), timeout_s=20)

            per_signal = signal_calls(simulator, wall_minus_loop)
            assert set(per_signal) == set(paths)
            for path in paths:
                check_schedule(per_signal[path], VI_POLICY, f"signal {path[-8:]}")

            ids = Counter(m.message_id for m in sink.memory)
            assert ids == Counter({f"<{n}.ketenhub@halt.nl>": 1 for n in notices})
            # Only the first mail of the caseworker's queue was tried during the outage; the others
            # waited behind it (order per key). Its connections follow the schedule.
            mail_calls = [Call(t, ok=False) for t in refusing.connections]
            first_sent = min(m.received_at for m in sink.memory).timestamp() - wall_minus_loop
            check_schedule([*mail_calls, Call(first_sent, ok=True)], MAIL_POLICY, "mail")

            assert Counter(hook.delivered) == Counter(dict.fromkeys(handovers, 1))
            for h in handovers:
                check_schedule(hook.calls[h], RECEIVER_POLICY, f"handover {h[:8]}")
        finally:
            await hub.stop()
            await admin.aclose()
            with contextlib.suppress(Exception):
                await sink.stop()


async def _nothing_parked(ladder: object) -> bool:
    return await ladder.parked_count() == 0  # type: ignore[attr-defined, no-any-return]
