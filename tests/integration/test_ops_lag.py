"""Lag from what the broker holds: produce N, commit M, and the probe, /metrics and the health API agree."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.structs import OffsetAndMetadata
from prometheus_client.parser import text_string_to_metric_families

from hub.app import create_app
from hub.config import Settings
from hub.embedded import EmbeddedKafka
from hub.ops import console
from hub.ops.auth import add_operator
from hub.ops.lag import LagProbe
from hub.runtime import Hub, Registrar
from hub.spine import Tx
from hub.topics import Topic
from schemas.envelope import Envelope
from tests.conftest import create_pg_database, drop_pg_database, make_settings, require_pg
from tests.helpers.kafka import wait_for
from tests.helpers.proxy import CuttableProxy

pytestmark = pytest.mark.integration

IN = Topic("ops.in.v1", partitions=3)
OUT = Topic("ops.out.v1")
OPS_TOPICS = [IN, OUT, Topic(IN.dlq)]
PASSWORD = "correct horse battery"


class Cure:
    """The poison check of the test component, switchable: a fixed cause lets a replay succeed."""

    def __init__(self) -> None:
        self.fixed = False


def poisonable_echo(cure: Cure) -> Registrar:
    """Echo `ops.in.v1` to `ops.out.v1`; a payload with "poison": true fails until the cause is fixed."""

    def register(hub: Hub) -> None:
        assert hub.spine is not None

        @hub.spine.subscribe(hub.topic(IN.name), group=hub.group("echo"), dlq=hub.topic(IN.dlq))
        async def echo(tx: Tx, message: Envelope) -> None:
            """Echo test messages."""
            if message.payload.get("poison") and not cure.fixed:
                raise ValueError("poison payload")
            await tx.emit(hub.topic(OUT.name), message.reply("Echoed", message.payload), key="k")

    return register


@asynccontextmanager
async def ops_hub(settings: Settings, *registrars: Registrar) -> AsyncIterator[tuple[Hub, httpx.AsyncClient]]:
    """A started hub with the operator console, and an HTTP client on its app (an operator is logged in)."""
    hub = Hub(
        settings.model_copy(update={"components": ["intake"]}),
        registrars={"intake": [console.register, *registrars]},
        extra_topics=OPS_TOPICS,
    )
    await hub.start()
    app = create_app(hub.settings, hub=hub)
    try:
        assert hub.store is not None
        await add_operator(hub.store, "olga", PASSWORD, "operator")
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://hub") as client:
            r = await client.post("/ops/login", json={"username": "olga", "password": PASSWORD})
            assert r.status_code == 200, r.text
            yield hub, client
    finally:
        await hub.stop()


async def _fill(bootstrap: str, topic: str, counts: dict[int, int], *, age_s: float = 0) -> None:
    """Send counts[p] records to partition p, in batches (tansu's end_offsets() miscounts those)."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5)
    await producer.start()
    stamp = int((time.time() - age_s) * 1000)
    try:
        futures = [
            await producer.send(
                topic, Envelope(type="T", payload={"n": i}).to_bytes(), partition=p, timestamp_ms=stamp
            )
            for p, n in counts.items()
            for i in range(n)
        ]
        for f in futures:
            await f
    finally:
        await producer.stop()


async def _commit(bootstrap: str, group: str, offsets: dict[TopicPartition, int]) -> None:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False)
    await consumer.start()
    try:
        consumer.assign(list(offsets))
        await consumer.commit({tp: OffsetAndMetadata(o, "") for tp, o in offsets.items()})
    finally:
        with contextlib.suppress(Exception):
            import asyncio

            await asyncio.wait_for(consumer.stop(), 5)


async def test_probe_reports_produced_minus_committed_per_partition(
    kafka: EmbeddedKafka, unique: str
) -> None:
    topic, group = f"lag.{unique}", f"g-{unique}"
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka.bootstrap)
    await admin.start()
    await admin.create_topics([NewTopic(topic, 3, 1)])
    await admin.close()
    await _fill(kafka.bootstrap, topic, {0: 40, 1: 7, 2: 0}, age_s=60)
    await _commit(kafka.bootstrap, group, {TopicPartition(topic, 0): 15, TopicPartition(topic, 1): 7})
    # One measurement, client start included: the hub's 5 s limit suits a scrape, not a loaded machine.
    probe = LagProbe({"bootstrap_servers": kafka.bootstrap}, timeout_s=30)
    try:
        sample = await probe.measure([topic], {group: [topic]})
    finally:
        await probe.close()
    lags = {p.partition: p.lag for p in sample.lags}
    assert lags == {0: 25, 1: 0, 2: 0}
    assert sample.group_lag(group) == 25
    assert {p: o.end for (_, p), o in sample.offsets.items()} == {0: 40, 1: 7, 2: 0}
    age = next(p.lag_seconds for p in sample.lags if p.partition == 0)
    assert 55 < age < 120  # the oldest unprocessed record was stamped a minute ago
    assert all(p.lag_seconds == 0 for p in sample.lags if p.partition != 0)


def _metrics(text: str) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    out: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out.setdefault(s.name, {})[tuple(sorted(s.labels.items()))] = s.value
    return out


def _lag(m: dict[str, dict[tuple[tuple[str, str], ...], float]], group: str, topic: str) -> dict[str, float]:
    return {
        dict(k)["partition"]: v
        for k, v in m.get("kafka_consumergroup_lag", {}).items()
        if dict(k)["consumergroup"] == group and dict(k)["topic"] == topic
    }


async def test_metrics_and_health_show_the_known_lag(kafka: EmbeddedKafka, db_url: str, unique: str) -> None:
    settings = make_settings(kafka, db_url, unique)
    async with ops_hub(settings) as (hub, client):
        topic, group = hub.topic(IN.name), hub.group("echo")
        await _fill(kafka.bootstrap, topic, {0: 12, 1: 5, 2: 3}, age_s=30)
        await _commit(kafka.bootstrap, group, {TopicPartition(topic, 0): 2, TopicPartition(topic, 1): 5})
        m: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}

        async def scraped() -> bool:
            # A scrape within health.CACHE_S of the background sample reuses it: on a loaded machine
            # that sample may predate the fill above, so scrape until one follows it.
            nonlocal m
            r = await client.get("/metrics")  # without the lag while the probe runs out of time
            assert r.status_code == 200, r.text
            m = _metrics(r.text)
            return _lag(m, group, topic) == {"0": 10, "1": 0, "2": 3}

        await wait_for(scraped, timeout_s=30)
        current = {
            dict(k)["partition"]: v
            for k, v in m["kafka_topic_partition_current_offset"].items()
            if dict(k)["topic"] == topic
        }
        assert current == {"0": 12, "1": 5, "2": 3}
        seconds = {
            dict(k)["partition"]: v
            for k, v in m["kafka_consumergroup_lag_seconds"].items()
            if dict(k)["consumergroup"] == group
        }
        assert seconds["0"] >= 25 and seconds["1"] == 0
        assert m["ketenhub_dlq_messages"][(("topic", hub.topic(IN.dlq)),)] == 0
        health: dict[str, Any] = await wait_for(lambda: health_of(client), timeout_s=30)
        mine = next(g for g in health["groups"] if g["group"] == group)
        assert mine["lag"] == 13 and mine["verdict"] in {"OK", "STALL", "STOP", "WARN"}
        # nothing deleted unread: the figure is there, and 0 (tansu deletes no records)
        assert [t["expired_unread"] for t in mine["topics"]] == [0]
        expired = {
            dict(k)["partition"]: v
            for k, v in m["ketenhub_consumergroup_expired_unread"].items()
            if dict(k)["consumergroup"] == group
        }
        assert expired == {"0": 0, "1": 0, "2": 0}


async def health_of(client: httpx.AsyncClient) -> dict[str, Any] | None:
    """The health API's picture; None while it answers 503 (the hub's lag probe timed out under load)."""
    r = await client.get("/ops/api/health")
    if r.status_code == 503:
        return None
    assert r.status_code == 200, r.text
    health: dict[str, Any] = r.json()
    return health


@contextlib.contextmanager
def refusing_address() -> Iterator[str]:
    """host:port of a socket that is bound and not listening: a connection there is refused, and no
    other test can take the port meanwhile."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield f"127.0.0.1:{sock.getsockname()[1]}"


@contextlib.asynccontextmanager
async def silent_address() -> AsyncIterator[str]:
    """host:port of a listener that takes connections and never answers: a broker that hangs."""
    held: list[asyncio.StreamWriter] = []

    async def hold(_reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)

    server = await asyncio.start_server(hold, "127.0.0.1", 0)
    try:
        yield f"127.0.0.1:{server.sockets[0].getsockname()[1]}"
    finally:
        for writer in held:
            writer.close()
        server.close()


async def test_metrics_say_which_dependency_is_ready_without_readyz_being_called(
    kafka: EmbeddedKafka, db_url: str, unique: str
) -> None:
    """ketenhub_ready was set only by /readyz: in compose nothing calls it (the health check asks
    /healthz), so the alert on it and the dashboard's panel had no series to read."""
    settings = make_settings(kafka, db_url, unique)
    async with ops_hub(settings) as (_, client):

        async def ready_series() -> dict[tuple[tuple[str, str], ...], float] | None:
            m = _metrics((await client.get("/metrics")).text)
            ready = m.get("ketenhub_ready", {})
            return ready if ready and all(v == 1.0 for v in ready.values()) else None

        ready = await wait_for(ready_series, timeout_s=30)  # a busy machine's first look may time out
        assert {dict(k)["dependency"] for k in ready} >= {"store", "broker"}


async def test_metrics_answer_without_the_lag_while_the_brokers_do_not(
    kafka: EmbeddedKafka, db_url: str, unique: str
) -> None:
    """A lag probe without an answer made the whole scrape fail: a 500 when the brokers refused, a
    503 after 5 s when they were slow, and over 40 s when they took the connection and never
    answered (the group listing was outside the probe's time limit). Prometheus counted the hub as
    down and lost its own figures for the scrape, while it was the brokers that could not be asked."""
    settings = make_settings(kafka, db_url, unique)
    async with ops_hub(settings) as (hub, client):
        ops = console.console_of(hub)
        ops.monitor.cache_s = 0  # every scrape asks the brokers
        ops.probe.timeout_s = 1.0

        async def ready() -> bool:  # sets the hub's own ketenhub_ready gauges; a busy machine's look
            return (await client.get("/readyz")).status_code == 200  # may time out once

        await wait_for(ready, timeout_s=30)

        async def point_probe_at(bootstrap: str) -> None:
            async with ops.probe._lock:  # not in the middle of the background sampler's measurement
                await ops.probe.close()
                ops.probe.options["bootstrap_servers"] = bootstrap

        with refusing_address() as refused:
            async with silent_address() as silent:
                for address in (refused, silent):
                    await point_probe_at(address)
                    # The probe has 1 s: 15 s is a margin for a loaded machine, far under the 40 s of
                    # a request to a silent broker.
                    r = await asyncio.wait_for(client.get("/metrics"), 15)
                    assert r.status_code == 200, r.text
                    m = _metrics(r.text)
                    assert m["ketenhub_lag_probe_up"] == {(): 0.0}
                    assert not {"kafka_consumergroup_lag", "kafka_topic_partition_current_offset"} & m.keys()
                    assert "ketenhub_dlq_messages" not in m  # left out, not shown stale
                    assert m["ketenhub_outbox_waiting"] == {(): 0.0}  # from the store, which answers
                    assert m["ketenhub_ready"][(("dependency", "broker"),)] == 1.0  # the hub's own registry
                    health = await asyncio.wait_for(client.get("/ops/api/health"), 15)  # needs the lag
                    assert health.status_code == 503 and "Retry-After" in health.headers

        await point_probe_at(kafka.bootstrap)  # the brokers answer again
        ops.probe.timeout_s = 30.0  # a loaded machine's first measurement with fresh clients

        async def measured() -> dict[str, dict[tuple[tuple[str, str], ...], float]] | None:
            m = _metrics((await client.get("/metrics")).text)
            return m if m["ketenhub_lag_probe_up"] == {(): 1.0} else None

        m = await wait_for(measured, timeout_s=60)
        assert hub.topic(IN.name) in {dict(k)["topic"] for k in m["kafka_topic_partition_current_offset"]}


async def test_metrics_answer_while_the_store_does_not(kafka: EmbeddedKafka, unique: str) -> None:
    """With PostgreSQL unreachable the whole scrape failed (503): Prometheus read the hub as down
    (KetenhubDown), lost the lag the brokers could still give, and never got
    ketenhub_ready{dependency="store"} 0, so the alert on the store could not fire."""
    await require_pg()
    name = f"kh_{unique}"
    url = await create_pg_database(name)
    host, port = url.rsplit("@", 1)[1].split("/", 1)[0].rsplit(":", 1)
    proxy = CuttableProxy(int(port))
    await proxy.start()
    try:
        settings = make_settings(kafka, url.replace(f"@{host}:{port}/", f"@127.0.0.1:{proxy.port}/"), unique)
        async with ops_hub(settings) as (hub, client):
            console.console_of(hub).monitor.cache_s = 0  # every scrape reads the store again

            async def store_ready() -> bool:
                m = _metrics((await client.get("/metrics")).text)
                return m.get("ketenhub_ready", {}).get((("dependency", "store"),)) == 1.0

            await wait_for(store_ready, timeout_s=30)
            await proxy.cut()

            async def says_store_down() -> dict[str, Any] | None:
                r = await asyncio.wait_for(client.get("/metrics"), 30)
                assert r.status_code == 200, r.text  # never the scrape as a whole
                m = _metrics(r.text)
                return m if m.get("ketenhub_ready", {}).get((("dependency", "store"),)) == 0.0 else None

            m = await wait_for(says_store_down, timeout_s=30)
            assert m["ketenhub_ready"][(("dependency", "broker"),)] == 1.0
            assert m["ketenhub_lag_probe_up"] == {(): 0.0}
            assert "ketenhub_outbox_waiting" not in m  # from the store: left out, not shown stale
            await proxy.start()  # back: the figures come back by themselves
            await wait_for(store_ready, timeout_s=60)
    finally:
        await proxy.cut()
        await drop_pg_database(name)
