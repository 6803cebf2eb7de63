"""Benchmarks: the hub beside a raw baseline of the same work on the same broker, in one run.

python -m bench.run [--n 100000] [--store sqlite|postgresql|both] [--rate 1000 --seconds 10]
                    [--http-n 20000 --http-rate 500] [--vi-n 5000] [--mail-n 2000]
                    [--only intake,latency,http,ready,verwijsindex,mail]

Each part alone: `python -m bench.verwijsindex --help`, `python -m bench.mail --help`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import sys
import tempfile
import uuid
from pathlib import Path

from bench.baseline import BATCH, RawRelay
from bench.data import police_records
from bench.harness import Result, create, load, loop_name, measure, peak_rss_mb, percentile, reset_peak_rss
from bench.harness import run as bench_run
from bench.http import http_intake, ready_time
from hub.config import Settings
from hub.embedded import EmbeddedKafka
from hub.intake.component import register_intake
from hub.logging import setup_logging
from hub.runtime import Hub, tune_gc_for_serving
from hub.topics import POLITIE_DECISION, POLITIE_REFERRAL

SECRET = "bench-secret-" + "x" * 40
PARTS = ("intake", "latency", "http", "ready", "verwijsindex", "mail")


def hub_settings(
    bootstrap: str, db_url: str, prefix: str, components: list[str], **sections: object
) -> Settings:
    """Settings of a benchmarked hub: its own topics and groups, short group timeouts, big batches."""
    kafka = {
        "bootstrap_servers": bootstrap,
        "topic_prefix": prefix,
        "group_prefix": prefix,
        "session_timeout_ms": 2000,
        "heartbeat_interval_ms": 500,
        "max_batch": BATCH,  # as the raw relay polls; the shipped default is 500
    }
    values: dict[str, object] = {
        "kafka": kafka,
        "database": {"url": db_url},
        "secret": SECRET,
        "components": components,
        **sections,
    }
    return Settings(**values)  # type: ignore[arg-type]


async def db_url(store: str, tmp: Path) -> str:
    """A fresh database for a benchmarked hub: a SQLite file in `tmp`, or a new PostgreSQL database."""
    if store == "sqlite":
        tmp.mkdir(parents=True, exist_ok=True)
        return f"sqlite+aiosqlite:///{tmp / 'bench.db'}"
    import asyncpg

    name = f"bench_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect("postgresql://postgres@127.0.0.1:5432/test")
    await admin.execute(f'CREATE DATABASE "{name}"')
    await admin.close()
    return f"postgresql+asyncpg://postgres@127.0.0.1:5432/{name}"


async def bench_relay(kafka: EmbeddedKafka, values: list[bytes]) -> tuple[Result, Result]:
    """The raw baseline over the same records."""
    tag = uuid.uuid4().hex[:6]
    source, target = f"raw{tag}.in", f"raw{tag}.out"
    await create(kafka.bootstrap, source, target)
    await load(kafka.bootstrap, source, values)
    relay = RawRelay(kafka.bootstrap, source, target, f"raw{tag}")
    try:
        return await measure("raw aiokafka relay", kafka.bootstrap, target, len(values), relay.start)
    finally:
        await relay.stop()


async def bench_intake(
    kafka: EmbeddedKafka, values: list[bytes], db_url: str, label: str
) -> tuple[Result, Result]:
    """Partner topic -> parsed, validated, deduplicated, stored -> decision published."""
    prefix = f"b{uuid.uuid4().hex[:6]}."
    hub = Hub(
        hub_settings(kafka.bootstrap, db_url, prefix, ["intake"]), registrars={"intake": [register_intake]}
    )
    source, target = prefix + POLITIE_REFERRAL.name, prefix + POLITIE_DECISION.name
    await create(kafka.bootstrap, source, target)
    await load(kafka.bootstrap, source, values)
    try:
        return await measure(f"hub intake ({label})", kafka.bootstrap, target, len(values), hub.start)
    finally:
        await hub.stop()


async def _offer(
    bootstrap: str, source: str, target: str, rate: int, seconds: int
) -> tuple[int, float, list[float]]:
    """Run bench/offer.py in a process of its own against `source` -> `target`."""
    generator = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bench.offer",
        *("--bootstrap", bootstrap, "--rate", str(rate), "--seconds", str(seconds)),
        *("--source", source, "--target", target),
        stdout=asyncio.subprocess.PIPE,
    )
    out, _ = await asyncio.wait_for(generator.communicate(), seconds + 180)
    if generator.returncode != 0:
        raise RuntimeError(f"bench.offer exited with {generator.returncode}")
    figures = json.loads(out)
    return figures["records"], figures["seconds"], figures["latencies_ms"]


async def bench_latency(kafka: EmbeddedKafka, db_url: str, rate: int, seconds: int) -> list[Result]:
    """Offer `rate` referrals/s for `seconds` from a process of its own (bench/offer.py); latency from
    each send to its answer's arrival: through the raw relay first, then through the hub."""
    results = []
    tag = uuid.uuid4().hex[:6]
    source, target = f"rawl{tag}.in", f"rawl{tag}.out"
    await create(kafka.bootstrap, source, target)
    relay = RawRelay(kafka.bootstrap, source, target, f"rawl{tag}")
    await relay.start()
    try:
        n, secs, lat = await _offer(kafka.bootstrap, source, target, rate, seconds)
    finally:
        await relay.stop()
    results.append(Result(f"raw relay at {rate}/s", n, secs, percentile(lat, 50), percentile(lat, 99)))

    prefix = f"l{tag}."
    hub = Hub(
        hub_settings(kafka.bootstrap, db_url, prefix, ["intake"]), registrars={"intake": [register_intake]}
    )
    await hub.start()
    try:
        source, target = prefix + POLITIE_REFERRAL.name, prefix + POLITIE_DECISION.name
        n, secs, lat = await _offer(kafka.bootstrap, source, target, rate, seconds)
    finally:
        await hub.stop()
    results.append(Result(f"hub latency at {rate}/s", n, secs, percentile(lat, 50), percentile(lat, 99)))
    return results


def _row(r: Result, base: Result | None = None) -> str:
    ratio = f"{r.rate / base.rate:.2f}x of baseline" if base else ""
    lat = f"p50 {r.p50_ms:.1f} ms, p99 {r.p99_ms:.1f} ms" if r.p50_ms is not None else ""
    rate = f"{r.rate:,.0f}/s" if r.records > 10 else "-"
    return f"| {r.name} | {r.records:,} | {r.seconds:.2f} s | {rate} | {ratio} {lat} |"


async def main() -> None:
    """Run the selected benchmarks and print a Markdown table."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=100_000, help="records for the throughput runs")
    p.add_argument("--store", choices=["sqlite", "postgresql", "both"], default="both")
    p.add_argument("--rate", type=int, default=1000, help="offered referrals/s for the latency run")
    p.add_argument("--seconds", type=int, default=10, help="length of the latency run")
    p.add_argument("--http-n", type=int, default=20_000, help="requests for the HTTP throughput run")
    p.add_argument("--http-rate", type=int, default=500, help="offered requests/s for the HTTP latency run")
    p.add_argument("--vi-n", type=int, default=5000, help="signals for the Verwijsindex connector run")
    p.add_argument("--mail-n", type=int, default=2000, help="mails for the mail connector run")
    p.add_argument(
        "--only",
        type=lambda v: set(v.split(",")),
        default=set(PARTS),
        help=f"comma-separated parts to run (default all: {','.join(PARTS)})",
    )
    args = p.parse_args()
    if unknown := args.only - set(PARTS):
        p.error(f"--only: unknown part(s) {', '.join(sorted(unknown))}; known: {', '.join(PARTS)}")
    setup_logging("INFO")  # as `ketenhub run` logs
    tune_gc_for_serving()  # as `ketenhub run` does once it is ready
    kafka = EmbeddedKafka()
    kafka.start()
    print(
        f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"Python {platform.python_version()}, {loop_name()} event loop; broker: embedded tansu; n={args.n:,}"
    )
    rows = []
    intake_rss: float | None = None
    try:
        with tempfile.TemporaryDirectory() as tmp:
            if "intake" in args.only:
                values = police_records(args.n)
                raw, raw_sustained = await bench_relay(kafka, values)
                rows += [_row(raw), _row(raw_sustained)]
                stores = ["sqlite", "postgresql"] if args.store == "both" else [args.store]
                for store in stores:
                    db = await db_url(store, Path(tmp) / store)
                    reset_peak_rss()  # from here: the hub's run (the records list and the broker aside)
                    total, sustained = await bench_intake(kafka, values, db, store)
                    rows += [_row(total, raw), _row(sustained, raw_sustained)]
                    intake_rss = max(intake_rss or 0.0, peak_rss_mb())
                del values
            if "latency" in args.only:
                lat_db = await db_url("sqlite", Path(tmp) / "lat")
                rows += [_row(r) for r in await bench_latency(kafka, lat_db, args.rate, args.seconds)]
            if "http" in args.only:
                http = await http_intake(kafka.bootstrap, police_records(args.http_n, seed=5), args.http_rate)
                bare, bare_at_rate, hub_http, hub_at_rate = http
                # at a fixed offered rate the rates match by construction: the latencies compare
                rows += [_row(bare), _row(bare_at_rate), _row(hub_http, bare), _row(hub_at_rate)]
            if "ready" in args.only:
                rows.append(_row(await ready_time()))
            if "verwijsindex" in args.only:
                from bench.verwijsindex import bench_verwijsindex  # it imports from this module

                vi = await bench_verwijsindex(kafka, Path(tmp), args.vi_n)
                rows += [_row(vi[0]), _row(vi[1])] + [_row(r, vi[i % 2]) for i, r in enumerate(vi[2:])]
            if "mail" in args.only:
                from bench.mail import bench_mail  # it imports from this module

                base, hub = await bench_mail(kafka, args.mail_n)
                rows += [_row(base), _row(hub, base)]
    finally:
        kafka.stop()
    print("| run | records | time | rate | vs raw / latency |\n|---|---|---|---|---|")
    print("\n".join(rows))
    if intake_rss is not None:
        print(
            f"peak RSS of the benchmark process during a hub intake run: {intake_rss:.0f} MB (the hub,"
            " its counting consumer and the input records' list, which the process held before)"
        )
    everything = peak_rss_mb()
    since = "the last intake run began" if intake_rss is not None else "it started"
    print(f"peak RSS of the benchmark process since {since}: {everything:.0f} MB")


if __name__ == "__main__":
    bench_run(main())
