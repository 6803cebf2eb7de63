"""The intake scaled out: one `ketenhub run --components intake` process, then several in one group.

python -m bench.scaleout [--n 50000] [--processes 1,2] [--store postgresql|sqlite]

DESIGN.md says a deployment scales out by running more processes of a component: each is a member of
the component's consumer group and takes its share of the partitions (four per topic here). This
measures what that buys on this machine. For each process count, police records are pre-loaded on a
fresh topic, a fresh database is migrated, the processes are started together and the run is timed
until the n-th decision is on the police's decision topic: from the start (process start, group
join, rebalances) and the sustained rate from the first decision to the last. The raw aiokafka relay
runs over the same records in the same run, so each figure has its ratio. The processes' CPU time
(user + system, from /proc) is read just before they are stopped: a rate that does not grow with the
processes while their CPU does shows where the machine's two cores went.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

from bench.data import police_records
from bench.harness import Result, create, load, measure
from bench.harness import run as bench_run
from bench.http import _stop, _wait_ready, start_intake
from bench.run import SECRET, bench_relay, db_url
from hub.embedded import EmbeddedKafka, free_port
from hub.logging import setup_logging
from hub.store import Store
from hub.topics import POLITIE_DECISION, POLITIE_REFERRAL

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def _cpu_seconds(pid: int) -> float:
    """User + system CPU of a running process, from /proc (0 when it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # utime, stime


async def scaled(
    kafka: EmbeddedKafka, values: list[bytes], processes: int, store: str, tmp: Path
) -> tuple[Result, Result, float]:
    """`processes` intake processes in one group over pre-loaded records; the figures and their CPU."""
    url = await db_url(store, tmp / uuid.uuid4().hex[:8])
    migrated = Store(url)
    await migrated.migrate()  # once, before the processes start, so they do not race to migrate
    await migrated.close()
    prefix = f"s{uuid.uuid4().hex[:6]}."
    source, target = prefix + POLITIE_REFERRAL.name, prefix + POLITIE_DECISION.name
    await create(kafka.bootstrap, source, target)
    await load(kafka.bootstrap, source, values)
    env = {
        **os.environ,
        "KETENHUB_KAFKA__BOOTSTRAP_SERVERS": kafka.bootstrap,
        "KETENHUB_KAFKA__TOPIC_PREFIX": prefix,
        "KETENHUB_KAFKA__GROUP_PREFIX": prefix,
        "KETENHUB_KAFKA__SESSION_TIMEOUT_MS": "2000",
        "KETENHUB_KAFKA__HEARTBEAT_INTERVAL_MS": "500",
        "KETENHUB_KAFKA__MAX_BATCH": "1000",
        "KETENHUB_DATABASE__URL": url,
        "KETENHUB_SECRET": SECRET,
        "KETENHUB_LOG_LEVEL": "WARNING",
    }
    procs: list[tuple[subprocess.Popen[bytes], int]] = []

    async def start() -> None:
        for _ in range(processes):
            port = free_port("127.0.0.1")
            procs.append((start_intake(port, tmp, env), port))
        for proc, port in procs:
            await _wait_ready(f"http://127.0.0.1:{port}", proc)

    label = f"{processes} intake process{'es' if processes > 1 else ''} ({store})"
    try:
        total, sustained = await measure(label, kafka.bootstrap, target, len(values), start)
        cpu = sum(_cpu_seconds(proc.pid) for proc, _ in procs)
    finally:
        for proc, _ in procs:
            _stop(proc)
        if url.startswith("postgresql"):
            await _drop(url)
    return total, sustained, cpu


async def _drop(url: str) -> None:
    import asyncpg

    admin = await asyncpg.connect("postgresql://postgres@127.0.0.1:5432/test")
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{url.rsplit("/", 1)[1]}" WITH (FORCE)')
    finally:
        await admin.close()


async def main() -> None:
    """Parse the arguments, run the raw baseline and each process count, print a Markdown table."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=50_000, help="police records per run (default 50,000)")
    p.add_argument(
        "--processes", default="1,2", help="comma-separated process counts, each run in turn (default 1,2)"
    )
    p.add_argument("--store", choices=["postgresql", "sqlite"], default="postgresql", help="the store")
    args = p.parse_args()
    counts = [int(c) for c in args.processes.split(",") if c.strip()]
    if not counts or min(counts) < 1:
        p.error("--processes: give one or more whole numbers of at least 1, e.g. 1,2")
    if args.store == "sqlite" and max(counts) > 1:
        # The SQLite relay knows what it published but not yet marked only in its own process: two
        # processes on one file publish each other's rows again, and the count would include them.
        p.error("--store sqlite runs one process only: SQLite is the single-process store; use postgresql")
    setup_logging("WARNING")
    values = police_records(args.n)
    kafka = EmbeddedKafka()
    kafka.start()
    rows = []
    try:
        with tempfile.TemporaryDirectory() as tmp:
            print(f"raw aiokafka relay over {args.n:,} records ...", flush=True)
            raw, raw_sustained = await bench_relay(kafka, values)
            rate = f"{raw.rate:,.0f}/s (first to last {raw_sustained.rate:,.0f}/s)"
            rows.append(f"| {raw.name} | {raw.records:,} | {rate} | | |")
            for count in counts:
                print(f"{count} intake process(es) on {args.store} ...", flush=True)
                began = time.monotonic()
                total, sustained, cpu = await scaled(kafka, values, count, args.store, Path(tmp))
                rate = f"{total.rate:,.0f}/s (first to last {sustained.rate:,.0f}/s)"
                ratio = f"{total.rate / raw.rate:.2f}x ({sustained.rate / raw_sustained.rate:.2f}x)"
                spent = f"{cpu:.0f} s in {time.monotonic() - began:.0f} s"
                rows.append(f"| {total.name} | {total.records:,} | {rate} | {ratio} | {spent} |")
    finally:
        kafka.stop()
    print("\n| run | records | rate | vs raw relay | the processes' CPU |\n|---|---|---|---|---|")
    print("\n".join(rows))


if __name__ == "__main__":
    bench_run(main())
