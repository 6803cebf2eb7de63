"""The intake's batch path alone, without Kafka: parse, decide, store, audit and queue the answers.

python -m bench.batchpath [--n 20000] [--batch 1000] [--store sqlite|postgresql] [--no-gc-tuning]

What the police intake does with one poll's records, in transactions of `--batch` records, as
`hub.intake.component` does it; prints the rate and the CPU time per record, and where the event
loop's thread spent it: parsing (JSON, the police format, the canonical Referral), deciding and
storing (rule checks, rows, audit, the announcement), the police's answer, and the commit. The
SQLite driver works in a thread of its own: its CPU is the difference between the process and the
loop's thread. Then the floor: what the validation steps alone cost a record, without storing
anything. For profiling (`py-spy record -- python -m bench.batchpath`) and for before/after
figures of changes to that path; the pipeline as a whole is measured by `bench.run`.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections import Counter
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
from schemas.partners._common import load_json_object
from schemas.partners.politie import PolitieVerwijzing
from schemas.referral import Referral


async def run(n: int, batch: int, store_kind: str) -> None:
    """Take `n` police records in, `batch` per transaction; print the figures."""
    values = police_records(n)
    with tempfile.TemporaryDirectory() as tmp:
        store = Store(await db_url(store_kind, Path(tmp)))
        await store.migrate()
        service = IntakeService(
            secret="s" * 40, rules=load_intake_rules(), decided_topic="referral.decided.v1"
        )
        spent: Counter[str] = Counter()  # the loop thread's CPU seconds per phase
        wall, cpu, loop_cpu = time.perf_counter(), time.process_time(), time.thread_time()
        for start in range(0, n, batch):
            chunk = values[start : start + batch]
            mark = time.thread_time()
            tx_ids = [new_id() for _ in chunk]
            async with store.transaction() as session:
                parsed = [politie.parse(v) for v in chunk]
                mark = _lap(spent, "parse", mark)
                origin = Origin(POLITIE_REFERRER, "kafka", tx_ids[0], "bench", user="politie (kafka)")
                results = await service.take_in_many(session, parsed, origin, transaction_ids=tx_ids)
                mark = _lap(spent, "decide, store, audit, announce", mark)
                answers = [
                    politie_besluit(
                        r.decision, referral_id=r.referral_id, duplicate=r.duplicate, transaction_id=t
                    )
                    for r, t in zip(results, tx_ids, strict=True)
                ]
                await add_many_to_outbox(
                    session, [("out", a, r.youth_key) for a, r in zip(answers, results, strict=True)]
                )
                mark = _lap(spent, "the police's answer", mark)
            _lap(spent, "commit", mark)
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        loop_cpu = time.thread_time() - loop_cpu
        await store.close()
    rate, per_record = n / wall, cpu / n * 1e6
    print(f"{n:,} records on {store_kind}: {wall:.2f} s, {rate:,.0f}/s; CPU {per_record:.0f} µs a record")
    print(f"  event loop thread: {loop_cpu / n * 1e6:.0f} µs a record")
    for phase, seconds in spent.items():
        print(f"    {phase}: {seconds / n * 1e6:.0f} µs")
    print(f"  database driver thread(s): {(cpu - loop_cpu) / n * 1e6:.0f} µs a record")
    floor(values)


def _lap(spent: Counter[str], phase: str, mark: float) -> float:
    now = time.thread_time()
    spent[phase] += now - mark
    return now


def floor(values: list[bytes]) -> None:
    """What validating a record costs at the least, step by step, with nothing stored."""
    objects = [load_json_object(v) for v in values]
    records = [PolitieVerwijzing.model_validate(o) for o in objects]
    referrals = [politie.to_referral(r) for r in records]
    dumped = [r.model_dump() for r in referrals]
    steps = [
        ("JSON decoding", lambda: [load_json_object(v) for v in values]),
        ("the police format (validated)", lambda: [PolitieVerwijzing.model_validate(o) for o in objects]),
        ("the canonical Referral (built)", lambda: [politie.to_referral(r) for r in records]),
        ("a Referral validated from a dict", lambda: [Referral.model_validate(d) for d in dumped]),
    ]
    print("  floor, CPU a record, nothing stored:")
    for name, step in steps:
        mark = time.thread_time()
        step()
        print(f"    {name}: {(time.thread_time() - mark) / len(values) * 1e6:.0f} µs")


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
