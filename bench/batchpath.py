"""The intake's batch path alone, without Kafka: parse, decide, store, audit and queue the answers.

python -m bench.batchpath [--n 20000] [--batch 1000] [--store sqlite|postgresql] [--no-gc-tuning]

What the police intake does with one poll's records, in transactions of `--batch` records, as
`hub.intake.component` does it; prints the rate and the CPU time per record. For profiling
(`py-spy record -- python -m bench.batchpath`) and for before/after figures of changes to that
path; the pipeline as a whole is measured by `bench.run`.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from bench.data import police_records
from bench.harness import run as bench_run
from bench.run import db_url
from connectors import politie
from hub.intake.component import POLITIE_REFERRER, politie_besluit
from hub.intake.config import load_intake_rules
from hub.intake.service import IntakeService, Origin
from hub.logging import setup_logging
from hub.runtime import tune_gc_for_serving
from hub.spine.outbox import add_many_to_outbox
from hub.store import Store
from schemas.envelope import new_id


async def run(n: int, batch: int, store_kind: str) -> None:
    """Take `n` police records in, `batch` per transaction; print the figures."""
    values = police_records(n)
    with tempfile.TemporaryDirectory() as tmp:
        store = Store(await db_url(store_kind, Path(tmp)))
        await store.migrate()
        service = IntakeService(
            secret="s" * 40, rules=load_intake_rules(), decided_topic="referral.decided.v1"
        )
        wall, cpu = time.perf_counter(), time.process_time()
        for start in range(0, n, batch):
            chunk = values[start : start + batch]
            tx_ids = [new_id() for _ in chunk]
            async with store.transaction() as session:
                parsed = [politie.parse(v) for v in chunk]
                origin = Origin(POLITIE_REFERRER, "kafka", tx_ids[0], "bench", user="politie (kafka)")
                results = await service.take_in_many(session, parsed, origin, transaction_ids=tx_ids)
                answers = [
                    politie_besluit(
                        r.decision, referral_id=r.referral_id, duplicate=r.duplicate, transaction_id=t
                    )
                    for r, t in zip(results, tx_ids, strict=True)
                ]
                await add_many_to_outbox(
                    session, [("out", a, r.youth_key) for a, r in zip(answers, results, strict=True)]
                )
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        await store.close()
    rate, per_record = n / wall, cpu / n * 1e6
    print(f"{n:,} records on {store_kind}: {wall:.2f} s, {rate:,.0f}/s; CPU {per_record:.0f} µs a record")


def main() -> None:
    """Parse the options and run."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=20_000, help="police records (default 20000)")
    p.add_argument("--batch", type=int, default=1000, help="records per transaction (default 1000)")
    p.add_argument("--store", choices=["sqlite", "postgresql"], default="sqlite")
    p.add_argument(
        "--no-gc-tuning", action="store_true", help="leave the garbage collector as Python sets it"
    )
    args = p.parse_args()
    setup_logging("WARNING")
    if not args.no_gc_tuning:
        tune_gc_for_serving()
    bench_run(run(args.n, args.batch, args.store))


if __name__ == "__main__":
    main()
