"""The running hub: broker (embedded or real), store, topics, relay and components, started in order."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Any, TypeVar

from aiokafka.errors import KafkaError
from aiokafka.protocol.metadata import MetadataRequest
from faststream.kafka import KafkaBroker

from hub.clock import Clock, local_day
from hub.config import Settings
from hub.embedded import EmbeddedKafka, exit_said
from hub.errors import ConfigError, DependencyDown
from hub.kafka import client_options, ensure_topics, faststream_security, make_producer
from hub.logging import get_logger
from hub.metrics import Metrics
from hub.spine import Relay, Spine
from hub.spine.dlq import safe_error_message
from hub.store import Store
from hub.topics import VERWIJSINDEX_GROUP, VERWIJSINDEX_SIGNAL, Topic, all_topics, inbox_term, prefixed
from schemas.envelope import utcnow

log = get_logger(__name__)
READY_FOR_S = 1.0  # how long one look at the dependencies answers /readyz
T = TypeVar("T")

# A component registers its handlers on the spine; the app wiring maps names to them.
Registrar = Callable[["Hub"], None]


@dataclass
class Hub:
    """Everything one hub process runs; `start()` and `stop()` are its whole life cycle."""

    settings: Settings
    registrars: dict[str, list[Registrar]] = field(default_factory=dict)
    extra_topics: list[Topic] = field(default_factory=list)
    metrics: Metrics = field(default_factory=Metrics)
    embedded: EmbeddedKafka | None = None
    bootstrap: str = ""
    store: Store | None = None
    broker: KafkaBroker | None = None
    spine: Spine | None = None
    relay: Relay | None = None
    tasks: list[asyncio.Task[Any]] = field(default_factory=list)
    started: bool = False
    components: dict[str, Any] = field(default_factory=dict)
    background: dict[str, Callable[[], Coroutine[Any, Any, None]]] = field(default_factory=dict)
    clock: Clock = utcnow
    _ready_at: tuple[float, dict[str, str]] | None = field(default=None, repr=False)
    _looking: asyncio.Future[dict[str, str]] | None = field(default=None, repr=False)

    def today(self) -> date:
        """Today in the Netherlands by this hub's clock: the day every date rule counts from."""
        return local_day(self.clock())

    def topic(self, name: str) -> str:
        """A topic's full name under this hub's prefix."""
        return self.settings.kafka.topic_prefix + name

    def group(self, component: str) -> str:
        """The consumer group of a component."""
        return self.settings.kafka.group_prefix + component

    @property
    def kafka_options(self) -> dict[str, Any]:
        """aiokafka client options for this hub's broker."""
        return client_options(self.settings.kafka, self.bootstrap)

    async def start(self) -> None:
        """Broker, store and migrations, topics, producer and relay, then the consumers."""
        s = self.settings
        if s.embedded_broker:
            self.embedded = EmbeddedKafka()
            await _to_its_end(asyncio.to_thread(self.embedded.start))
            self.bootstrap = self.embedded.bootstrap
        else:
            self.bootstrap = s.kafka.bootstrap_servers or ""
        self.store = Store(s.database.url, echo=s.database.echo)
        await self.store.migrate()
        topics = prefixed([*all_topics(), *self.extra_topics], s.kafka.topic_prefix)
        await self._on_broker(
            ensure_topics(self.kafka_options, topics, replication_factor=s.kafka.replication_factor),
            "creating the topics",
        )
        producer = make_producer(self.kafka_options)
        inbox_keep = _inbox_keep(s, topics)
        # a registration published and not yet taken in by the Verwijsindex connector, wherever that
        # runs, is on its way: kept in sight for register-again's check (hub.signals.waiting), as long
        # as the topic holds it, and no longer than the inbox tells it was taken in
        retained = timedelta(milliseconds=VERWIJSINDEX_SIGNAL.retention_ms)
        self.relay = Relay(
            self.store,
            producer,
            gather_s=s.kafka.outbox_gather_ms / 1000,
            max_message_bytes=s.kafka.max_message_bytes,
            inbox_keep=inbox_keep,
            watched={s.kafka.topic_prefix + VERWIJSINDEX_SIGNAL.name: self.group(VERWIJSINDEX_GROUP)},
            watched_keep=retained if inbox_keep is None else min(retained, inbox_keep),
        )
        await self._on_broker(producer.start(), "connecting the producer")  # stop() closes it from here
        self.broker = KafkaBroker(
            self.bootstrap,
            client_id=s.kafka.client_id,
            security=faststream_security(s.kafka),
            graceful_timeout=10.0,
            logger=logging.getLogger("faststream"),
            log_level=logging.DEBUG,  # per-batch "Received/Processed" lines are debug detail
        )
        session_ms, heartbeat_ms = _group_timeouts(s)
        self.spine = Spine(
            self.store,
            self.broker,
            self.relay,
            self.metrics,
            secret=_secret_if_set(s),
            session_timeout_ms=session_ms,
            heartbeat_interval_ms=heartbeat_ms,
            max_records=s.kafka.max_batch,
            batch_timeout_ms=s.kafka.poll_wait_ms,
        )
        for name in s.components:
            for registrar in self.registrars.get(name, []):
                registrar(self)
        self.tasks.append(asyncio.create_task(self.relay.run(), name="outbox-relay"))
        await self._on_broker(_start_broker(self.broker), "joining the consumer groups")
        # Components' own loops (retry schedulers, feed pollers), registered by name in `background`.
        self.tasks += [asyncio.create_task(make(), name=name) for name, make in self.background.items()]
        self.started = True
        log.info(
            "hub started", broker=self.bootstrap, database=self.store.describe(), components=s.components
        )

    async def stop(self) -> None:
        """Consumers first (they finish their batch), then the relay, producer, store and broker."""
        self.started = False
        if self.broker is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.broker.stop(), 15)
        relay_task = next((t for t in self.tasks if t.get_name() == "outbox-relay"), None)
        if self.relay is not None and relay_task is not None:
            self.relay.stop()  # let it mark what it published, so nothing goes out twice after a restart
            with contextlib.suppress(BaseException):
                await asyncio.wait_for(asyncio.shield(relay_task), 10)
        for task in self.tasks:
            task.cancel()
        for task in self.tasks:
            with contextlib.suppress(BaseException):
                await task
        self.tasks.clear()
        for component in self.components.values():
            close = getattr(component, "aclose", None)
            if close is not None:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(close(), 5)
        if self.relay is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.relay.producer.stop(), 10)
        if self.store is not None:
            await self.store.close()
        if self.embedded is not None:
            await self.embedded.astop()
        log.info("hub stopped")

    async def _on_broker(self, step: Awaitable[T], what: str) -> T:
        """A start-up step on the brokers, within `_start_limit_s`, and ended at once when the embedded
        broker exits: the clients wait for a broker that is gone for ever (a consumer's group join
        retries without end), and start-up waited with them."""
        limit = _start_limit_s(self.settings)
        work = asyncio.ensure_future(step)
        watch = asyncio.ensure_future(self.embedded.exited() if self.embedded else asyncio.Event().wait())
        try:
            await asyncio.wait([work, watch], timeout=limit, return_when=asyncio.FIRST_COMPLETED)
        finally:
            work.cancel()
            watch.cancel()
            await asyncio.wait([work, watch])  # what a cancelled step opened is known before stop()
        if watch.done() and not watch.cancelled():
            raise DependencyDown(f"the embedded broker stopped during start-up ({exit_said(watch.result())})")
        if work.cancelled():
            raise DependencyDown(
                f"the brokers at {self.bootstrap} did not answer within {limit:g} s while {what}"
            )
        try:
            return work.result()
        except (KafkaError, OSError) as exc:
            said = str(exc) if type(exc).__name__ in str(exc) else f"{type(exc).__name__}: {exc}"
            raise DependencyDown(
                f"the brokers at {self.bootstrap} failed while {what}: {said}"[:300]
            ) from exc

    async def readiness(self) -> dict[str, str]:
        """Each dependency: 'ok' or why not (what went wrong, never a value from it).

        /readyz is open to anyone, and each look asks the store, the broker and the partners (an SMTP
        connection, a call to the Verwijsindex): callers at the same moment share one look, and a
        look stands for `READY_FOR_S`, so that calling /readyz in a loop does not call the partners.
        """
        loop = asyncio.get_running_loop()
        if self._ready_at is not None and loop.time() - self._ready_at[0] < READY_FOR_S:
            return dict(self._ready_at[1])
        if self._looking is None or self._looking.done():
            self._looking = asyncio.ensure_future(self._look())
        checks = await asyncio.shield(self._looking)
        self._ready_at = (loop.time(), checks)
        return dict(checks)

    async def _look(self) -> dict[str, str]:
        """Every check at once, each within its 3 s: one after another, a hung store and a hung
        broker took 6 s, past a probe's timeout (deploy/k8s: 5 s), and the probe said nothing."""
        pings: dict[str, Any] = {
            "store": self.store.ping() if self.store else None,
            "broker": self._ping_broker(),
        }
        for name, check in self.components.items():
            ping = getattr(check, "ping", None)
            if ping is not None:
                pings[name] = ping()
        said = await asyncio.gather(*(_check(ping) for ping in pings.values()))
        checks = dict(zip(pings, said, strict=True))
        for name, value in checks.items():
            self.metrics.ready.labels(name).set(1 if value == "ok" else 0)
        return checks

    async def _ping_broker(self) -> None:
        """A request the broker must answer, on the producer's connection: an open socket alone
        (`client.ready`) said "ok" for the 40 s a hung broker took to time out the relay's publish.
        Metadata of no topic is the broker list only: cheap, and it creates no topic."""
        if self.relay is None:
            raise RuntimeError("not started")
        client = self.relay.producer.client
        node = client.get_random_node()
        if node is None:
            raise ConnectionError("no broker known")
        await client.send(node, MetadataRequest([], allow_auto_topic_creation=False))


def tune_gc_for_serving() -> None:
    """Once a long-running hub process has started: keep what start-up made out of the cyclic
    garbage collector's way and let it run less often.

    The intake makes tens of short-lived objects per record; with the default threshold (700
    allocations) the collector ran many times a batch and, now and then, a full pass took 60 ms
    in the middle of one. Measured on the intake's batch path: 203 -> 167 µs of CPU a record.
    Not for a process that starts many hubs (the tests): frozen objects are never collected.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(100_000, 50, 100)


def _inbox_keep(s: Settings, topics: list[Topic]) -> timedelta | None:
    """How long the inbox remembers a message id; None: for ever."""
    days = s.kafka.inbox_keep_days
    if days is None:
        return inbox_term(topics)
    return timedelta(days=days) if days > 0 else None


def _group_timeouts(s: Settings) -> tuple[int, int]:
    """Session and heartbeat times of the consumer groups.

    A group join waits about half the session timeout on tansu; the embedded broker has one process
    in each group, so unless they are set explicitly it gets short ones and starts in seconds.
    """
    fields = s.kafka.model_fields_set
    if s.embedded_broker and not fields & {"session_timeout_ms", "heartbeat_interval_ms"}:
        return 2_000, 500
    return s.kafka.session_timeout_ms, s.kafka.heartbeat_interval_ms


def _start_limit_s(s: Settings) -> float:
    """How long one start-up step on the brokers may take. A group join waits for the group's other
    members, and for one the hub had before a crash until its session has timed out."""
    return max(60.0, 3 * s.kafka.session_timeout_ms / 1000)


async def _to_its_end(work: Awaitable[T]) -> T:
    """`work` awaited to its end even when cancelled, then the cancellation goes on: a thread cannot be
    stopped halfway, and the broker process it starts must be known to stop() when it is."""
    task = asyncio.ensure_future(work)
    try:
        return await asyncio.shield(task)
    except asyncio.CancelledError:
        with contextlib.suppress(Exception):
            await task
        raise


async def _start_broker(broker: KafkaBroker) -> None:
    """Connect, then start every subscriber at once.

    FastStream starts subscribers one after another and each waits for its group assignment, so
    start-up would grow with every consumer group; joined concurrently it costs one join.
    """
    await broker.connect()
    await asyncio.gather(*(sub.start() for sub in broker.subscribers))
    for pub in broker.publishers:
        await pub.start()
    broker.running = True


async def _check(awaitable: Any) -> str:
    if awaitable is None:
        return "not started"
    try:
        await asyncio.wait_for(awaitable, 3.0)
    except Exception as exc:
        said = safe_error_message(exc)
        return (said if type(exc).__name__ in said else f"{type(exc).__name__}: {said}")[:200]
    return "ok"


def _secret_if_set(settings: Settings) -> str | None:
    """The pseudonymisation secret, or None for a hub without one (its components need none)."""
    try:
        return settings.secret_value()
    except ConfigError:
        return None
