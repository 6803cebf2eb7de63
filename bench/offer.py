"""Load generator for the latency run, in a process of its own: it offers police referrals at a fixed
rate and times each one from its send to its decision's arrival.

python -m bench.offer --bootstrap HOST:PORT --source TOPIC --target TOPIC --rate 1000 --seconds 10

Run beside the hub rather than inside it: on one event loop, the generator's sends and the decoding
of every answer would sit in the hub's own queue and be counted as the hub's latency. Prints one JSON
object: records, seconds, and the latencies in ms.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from bench.data import police_records
from bench.harness import run as bench_run


async def offer(bootstrap: str, source: str, target: str, rate: int, seconds: int) -> dict[str, object]:
    """Send rate*seconds records at `rate`/s; wait for every decision; return the figures."""
    n = rate * seconds
    values = police_records(n, seed=99)
    references = [json.loads(v)["procesVerbaalNummer"] for v in values]
    sent: dict[str, float] = {}
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, fetch_max_wait_ms=5)
    await consumer.start()
    tps = [TopicPartition(target, p) for p in sorted(consumer.partitions_for_topic(target) or range(4))]
    consumer.assign(tps)
    for tp in tps:
        consumer.seek(tp, 0)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=0)
    await producer.start()
    got: dict[str, float] = {}  # latency (ms) by reference: a doubled answer must not stand in for one
    doubled: list[str] = []

    async def receive() -> None:
        while len(got) < n:
            batch = await consumer.getmany(timeout_ms=50)
            now = time.perf_counter()
            for records in batch.values():
                for r in records:
                    answer = json.loads(r.value)  # the hub's decision envelope, or the raw relay's copy
                    reference = answer.get("payload", answer)["procesVerbaalNummer"]
                    if reference in got:
                        doubled.append(reference)
                    else:
                        got[reference] = (now - sent[reference]) * 1000

    receiver = asyncio.create_task(receive())
    t0 = time.perf_counter()
    try:
        for i, (value, reference) in enumerate(zip(values, references, strict=True)):
            due = t0 + i / rate
            delay = due - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            # timed from when it was due: a send held up by the ones before it waits as a partner's would
            sent[reference] = due
            await producer.send(source, value)
        await asyncio.wait_for(receiver, 120)
    finally:
        await producer.stop()
        await asyncio.wait_for(consumer.stop(), 5)
    if doubled:
        raise RuntimeError(f"{len(doubled)} referrals answered more than once (first: {doubled[:3]})")
    return {"records": n, "seconds": time.perf_counter() - t0, "latencies_ms": list(got.values())}


def main() -> None:
    """Parse the options, run, print the JSON result."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--bootstrap", required=True, help="the broker, host:port")
    p.add_argument("--source", required=True, help="the police topic the hub reads")
    p.add_argument("--target", required=True, help="the decision topic the hub answers on")
    p.add_argument("--rate", type=int, default=1000, help="referrals offered per second")
    p.add_argument("--seconds", type=int, default=10, help="how long to offer them")
    args = p.parse_args()
    print(json.dumps(bench_run(offer(args.bootstrap, args.source, args.target, args.rate, args.seconds))))


if __name__ == "__main__":
    main()
