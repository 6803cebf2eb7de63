"""The outbox relay alone: rows already committed to the outbox, published to Kafka with acks=all.

python -m bench.relay [--n 50000] [--store sqlite|postgresql] [--rounds 2]

What a busy hub's relay does after its consumers and HTTP requests committed: `--n` outbox rows
(intake answers, about 600 bytes, on two topics of four partitions, keyed by youth key, 5,000
youths) published by `hub.spine.Relay` in its batches of 500 (read, publish, mark sent). Beside it,
in the same run and on the same broker, the raw baseline: a plain aiokafka producer sending the
same values and keys message by message with `send` and waiting for the acks, as the relay did
before it built record batches itself. Prints each one's rate and the process's CPU time a message
(the broker runs in a process of its own), alternating the two `--rounds` times.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import os
import tempfile
import time
from pathlib import Path

from aiokafka import AIOKafkaProducer

from bench.harness import create
from bench.harness import run as bench_run
from bench.run import db_url
from hub.embedded import EmbeddedKafka
from hub.kafka import KeyPartitioner, make_producer
from hub.logging import setup_logging
from hub.runtime import tune_gc_for_serving
from hub.spine.outbox import Relay, add_many_to_outbox
from hub.store import Store
from schemas.envelope import Envelope, new_id

YOUTHS = 5_000


def messages(n: int, tag: str) -> list[tuple[str, Envelope, str]]:
    """`n` (topic, envelope, youth key): half decisions, half the police's answers."""
    out = []
    for i in range(n):
        key = hashlib.sha256(f"youth-{i % YOUTHS}".encode()).hexdigest()
        topic = f"{tag}.decided" if i % 2 else f"{tag}.answer"
        payload = {"referral_id": f"r-{i}", "youth_key": key, "decision": {"outcome": "ACCEPTED"}}
        payload["reasons"] = [{"code": "OK", "toelichting": "x" * 300}]
        out.append(
            (
                topic,
                Envelope.new(type_="Bench", transaction_id=new_id(), source="bench", payload=payload),
                key,
            )
        )
    return out


async def hub_relay(kafka: EmbeddedKafka, store: Store, n: int, tag: str) -> tuple[float, float]:
    """Publish `n` committed outbox rows with the hub's relay; (seconds, CPU seconds)."""
    rows = messages(n, tag)
    await create(kafka.bootstrap, f"{tag}.decided", f"{tag}.answer")
    async with store.transaction() as session:
        for start in range(0, n, 1000):
            await add_many_to_outbox(session, rows[start : start + 1000])
    producer = make_producer({"bootstrap_servers": kafka.bootstrap})
    await producer.start()
    try:
        relay = Relay(store, producer)
        wall, cpu = time.perf_counter(), time.process_time()
        while await relay.publish_once():
            pass
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        assert relay.published == n, (relay.published, n)
    finally:
        await producer.stop()
    return wall, cpu


async def raw_send(kafka: EmbeddedKafka, n: int, tag: str) -> tuple[float, float]:
    """The same messages with `producer.send`, one by one, 500 at a time; (seconds, CPU seconds)."""
    rows = [
        (t, e.to_bytes(), k.encode(), [(h, v.encode()) for h, v in e.header_map().items()])
        for t, e, k in messages(n, tag)
    ]
    await create(kafka.bootstrap, f"{tag}.decided", f"{tag}.answer")
    producer = AIOKafkaProducer(
        bootstrap_servers=kafka.bootstrap,
        acks="all",
        linger_ms=2,
        max_batch_size=256 * 1024,
        partitioner=KeyPartitioner(),
    )
    await producer.start()
    try:
        wall, cpu = time.perf_counter(), time.process_time()
        for start in range(0, n, 500):
            futures = [
                await producer.send(topic, value, key=key, headers=headers)
                for topic, value, key, headers in rows[start : start + 500]
            ]
            await asyncio.gather(*futures)
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    finally:
        await producer.stop()
    return wall, cpu


async def run(n: int, store_kind: str, rounds: int) -> None:
    """Alternate the raw baseline and the hub's relay `rounds` times; print both."""
    kafka = EmbeddedKafka()
    kafka.start()
    print(f"{os.cpu_count()} cores; broker: embedded tansu; store: {store_kind}; n={n:,}")
    try:
        with tempfile.TemporaryDirectory() as tmp:
            for r in range(rounds):
                raw_wall, raw_cpu = await raw_send(kafka, n, f"raw{r}")
                store = Store(await db_url(store_kind, Path(tmp) / f"r{r}"))
                await store.migrate()
                try:
                    hub_wall, hub_cpu = await hub_relay(kafka, store, n, f"hub{r}")
                finally:
                    await store.close()
                raw = f"raw send {n / raw_wall:,.0f}/s, {raw_cpu / n * 1e6:.1f} µs CPU a message"
                hub = f"hub relay {n / hub_wall:,.0f}/s, {hub_cpu / n * 1e6:.1f} µs CPU a message"
                print(f"round {r + 1}: {raw}; {hub} ({raw_wall / hub_wall:.2f}x the raw rate)")
    finally:
        kafka.stop()


def main() -> None:
    """Parse the options and run."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=50_000, help="outbox rows (default 50000)")
    p.add_argument("--store", choices=["sqlite", "postgresql"], default="sqlite")
    p.add_argument("--rounds", type=int, default=2, help="alternations of baseline and relay (default 2)")
    args = p.parse_args()
    setup_logging("WARNING")
    tune_gc_for_serving()
    bench_run(run(args.n, args.store, args.rounds))


if __name__ == "__main__":
    main()
