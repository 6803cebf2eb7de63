"""Measuring a Kafka pipeline from outside: pre-load the input topic, start it, count the outputs."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import resource
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic


@dataclass
class Result:
    """What one run measured."""

    name: str
    records: int
    seconds: float
    p50_ms: float | None = None
    p99_ms: float | None = None

    @property
    def rate(self) -> float:
        """Records per second, end to end."""
        return self.records / self.seconds if self.seconds else 0.0


async def create(bootstrap: str, *topics: str, partitions: int = 4) -> None:
    """Create topics up front (tansu auto-creates on metadata requests otherwise)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(t, partitions, 1) for t in topics])
    finally:
        await admin.close()


async def load(bootstrap: str, topic: str, values: list[bytes], *, keys: list[bytes] | None = None) -> None:
    """Produce every value and wait for the acks."""
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap, acks="all", linger_ms=5, max_batch_size=512 * 1024
    )
    await producer.start()
    try:
        futures = [await producer.send(topic, v, key=keys[i] if keys else None) for i, v in enumerate(values)]
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


async def count_until(
    bootstrap: str, topic: str, expect: int, timeout_s: float, started: asyncio.Event | None = None
) -> tuple[float, float, list[float]]:
    """Read `topic` from the start until `expect` records arrived; return when the first and the last
    arrived, and the latencies (ms)."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, fetch_max_wait_ms=20)
    await consumer.start()
    try:
        parts = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or range(4))]
        consumer.assign(parts)
        for tp in parts:
            consumer.seek(tp, 0)
        if started is not None:
            started.set()
        seen, first = 0, 0.0
        latencies: list[float] = []
        values: list[bytes] = []  # looked into only after the timing (`exactly_once`)
        deadline = time.monotonic() + timeout_s
        while seen < expect and time.monotonic() < deadline:
            batch = await consumer.getmany(timeout_ms=200, max_records=10_000)
            now_ms = time.time() * 1000
            for records in batch.values():
                if not seen and records:
                    first = time.monotonic()
                seen += len(records)
                latencies.extend(now_ms - r.timestamp for r in records)
                values.extend(r.value for r in records if r.value is not None)
        last = time.monotonic()
        if seen < expect:
            raise TimeoutError(f"{topic}: only {seen} of {expect} records within {timeout_s}s")
        exactly_once(topic, values, expect)
        return first, last, latencies
    finally:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(consumer.stop(), 5)


def case_reference(value: bytes) -> str:
    """The proces-verbaal number of a police record, or of the hub's decision on it."""
    answer = json.loads(value)
    return str(answer.get("payload", answer)["procesVerbaalNummer"])


def exactly_once(topic: str, values: list[bytes], expect: int) -> None:
    """Each of `expect` referrals once on `topic`: a count of records let a doubled one stand in for
    one that never came, and the rate went up."""
    counted = Counter(case_reference(v) for v in values)
    doubled = sorted(k for k, n in counted.items() if n > 1)
    if doubled or len(counted) != expect:
        raise RuntimeError(
            f"{topic}: {len(counted)} distinct referrals of {expect} expected, "
            f"{len(doubled)} doubled (first: {doubled[:3]})"
        )


async def measure(
    name: str,
    bootstrap: str,
    output: str,
    n: int,
    start: Callable[[], Awaitable[None]],
    timeout_s: float = 600,
) -> tuple[Result, Result]:
    """Start the pipeline over a pre-loaded input and time it until the n-th output record arrives.

    Two figures: from the start (connecting, joining the group, migrating) to the n-th output, and
    the sustained rate from the first output to the last, which start-up does not dilute.
    """
    ready = asyncio.Event()
    counter = asyncio.create_task(count_until(bootstrap, output, n, timeout_s, ready))
    await ready.wait()
    t0 = time.monotonic()
    await start()
    first, last, _ = await counter
    return Result(name, n, last - t0), Result(f"{name}, first to last", n - 1, last - first)


def percentile(values: list[float], p: float) -> float:
    """The p-th percentile (0-100) by nearest rank."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(p / 100 * len(ordered)) - 1))]


def peak_rss_mb() -> float:
    """Peak resident memory of this process since the last `reset_peak_rss` (else since it started),
    in MB: VmHWM on Linux, ru_maxrss elsewhere."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def reset_peak_rss() -> None:
    """Start the peak resident memory anew from what this process holds now (Linux: clear_refs 5), so
    that generating and loading the records, and the runs before, do not count."""
    with contextlib.suppress(OSError):
        Path("/proc/self/clear_refs").write_text("5")


def loop_name() -> str:
    """The event loop the benchmarks run on: uvloop, as `ketenhub run` does (uvicorn picks it when
    installed), unless KETENHUB_BENCH_LOOP=asyncio asks for the standard loop."""
    if os.environ.get("KETENHUB_BENCH_LOOP", "uvloop") == "asyncio":
        return "asyncio"
    try:
        import uvloop  # noqa: F401
    except ImportError:
        return "asyncio"
    return "uvloop"


def run(main: Coroutine[Any, Any, Any]) -> Any:
    """`asyncio.run` on the loop of `loop_name()`; hub and baseline of a run share it."""
    if loop_name() == "uvloop":
        import uvloop

        return uvloop.run(main)
    return asyncio.run(main)
