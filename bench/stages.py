"""Where a referral's latency goes at a fixed rate: the hub's intake timed stage by stage.

python -m bench.stages [--rate 1000] [--seconds 10]

Offers police referrals at `--rate` from a process of its own (as the latency run of `bench.run`)
to a hub running the intake on SQLite, with timers wrapped around its own steps:

- waiting to be consumed: from a record's broker timestamp to the start of the batch it is in;
- a consumer batch: from its start to its offsets committed (the transaction and the ack);
- waiting for the writer: the time a write transaction waited for SQLite's one writer;
- to the relay: from an outbox row's creation to the start of its publish;
- a publish: from its start to the broker's acks.

Prints the end-to-end latency and, per stage, the median, 90th percentile and count. For finding
what bounds the latency; before/after figures of the whole come from `bench.run --only latency`.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from bench.harness import run as bench_run
from bench.run import _offer, hub_settings, percentile, register_intake
from hub.clock import aware
from hub.embedded import EmbeddedKafka
from hub.runtime import Hub
from hub.spine.consumer import Spine
from hub.spine.outbox import Relay
from hub.store.db import Store
from hub.topics import POLITIE_DECISION, POLITIE_REFERRAL

STAGES = ("waiting to be consumed", "a consumer batch", "waiting for the writer", "to the relay", "a publish")


def _instrument(times: dict[str, list[float]]) -> Callable[[], None]:
    """Wrap the hub's steps with timers; returns the undo."""
    process, send, transaction = Spine.process, Relay._send, Store.transaction

    async def timed_process(self: Spine, sub: Any, records: Sequence[Any], **kw: Any) -> None:
        started = time.time()
        for r in records:
            times["waiting to be consumed"].append(started * 1000 - r.timestamp)
        await process(self, sub, records, **kw)
        times["a consumer batch"].append((time.time() - started) * 1000)

    async def timed_send(self: Relay, records: Sequence[Any]) -> None:
        started = time.time()
        for r in records:
            created = aware(r.row.created_at)
            times["to the relay"].append((started - created.timestamp()) * 1000)
        await send(self, records)
        times["a publish"].append((time.time() - started) * 1000)

    @asynccontextmanager
    async def timed_transaction(self: Store) -> AsyncIterator[Any]:
        asked = time.perf_counter()
        async with transaction(self) as session:
            times["waiting for the writer"].append((time.perf_counter() - asked) * 1000)
            yield session

    Spine.process = timed_process  # type: ignore[method-assign]
    Relay._send = timed_send  # type: ignore[method-assign]
    Store.transaction = timed_transaction  # type: ignore[method-assign]

    def undo() -> None:
        Spine.process, Relay._send, Store.transaction = process, send, transaction  # type: ignore[method-assign]

    return undo


async def measure(rate: int, seconds: int) -> tuple[list[float], dict[str, list[float]]]:
    """Run the hub's intake at `rate` for `seconds`; the end-to-end latencies and each stage's times."""
    times: dict[str, list[float]] = {s: [] for s in STAGES}
    kafka = EmbeddedKafka()
    kafka.start()
    undo = _instrument(times)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            url = f"sqlite+aiosqlite:///{Path(tmp) / 'stages.db'}"
            hub = Hub(
                hub_settings(kafka.bootstrap, url, "s.", ["intake"]), registrars={"intake": [register_intake]}
            )
            await hub.start()
            try:
                for s in STAGES:
                    times[s].clear()  # start-up's own transactions are not the load's
                source, target = "s." + POLITIE_REFERRAL.name, "s." + POLITIE_DECISION.name
                _, _, latencies = await _offer(kafka.bootstrap, source, target, rate, seconds)
            finally:
                await hub.stop()
    finally:
        undo()
        kafka.stop()
    return latencies, times


def main(argv: list[str] | None = None) -> None:
    """Print the stage table."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rate", type=int, default=1000, help="offered referrals/s")
    p.add_argument("--seconds", type=int, default=10, help="length of the run")
    args = p.parse_args(argv)
    latencies, times = bench_run(measure(args.rate, args.seconds))
    print(f"| stage at {args.rate}/s | median ms | p90 ms | count |")
    print("|---|---|---|---|")
    p50, p90 = percentile(latencies, 50), percentile(latencies, 90)
    print(f"| end to end | {p50:.1f} | {p90:.1f} | {len(latencies)} |")
    for stage in STAGES:
        v = sorted(times[stage])
        if v:
            print(f"| {stage} | {statistics.median(v):.1f} | {v[int(len(v) * 0.9)]:.1f} | {len(v)} |")


if __name__ == "__main__":
    main()
