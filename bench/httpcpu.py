"""The HTTP intake's CPU a request: `ketenhub run --components intake` warmed up, then loaded.

python -m bench.httpcpu [--n 20000] [--warm 1000] [--connections 32] [--profile FILE]

`bench.run --only http` gives the rate a partner sees from a cold start. For before/after figures of
changes to the HTTP path this one is steadier: the intake process (SQLite, the embedded broker) is
first sent `--warm` requests (its partner's key then sits in the key cache, SQLite's pages in
memory), then `--n` more over `--connections` keep-alive connections, and the process's CPU (user +
system, from /proc) is read around those. It prints the rate, the latency and the hub's CPU time a
request: on two shared cores the rate moves with whatever else runs, the CPU a request much less.
With `--profile FILE`, py-spy (`pip install py-spy`) samples the process's threads over the load and
writes its raw collapsed stacks to FILE.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from bench.data import police_records
from bench.harness import percentile
from bench.harness import run as bench_run
from bench.http import _load, intake_hub
from bench.run import SECRET
from hub.embedded import EmbeddedKafka

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def _cpu_seconds(pid: int, tid: int | None = None) -> float:
    """The process's CPU (user + system), or with `tid` one thread's (the event loop's is `pid`)."""
    stat = Path(f"/proc/{pid}/task/{tid}/stat" if tid is not None else f"/proc/{pid}/stat")
    fields = stat.read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def _py_spy(pid: int, out: str) -> subprocess.Popen[bytes]:
    exe = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    if not Path(exe).exists():
        raise SystemExit("--profile needs py-spy: pip install py-spy")
    # --nonblocking: pausing the process for every sample made it twenty times slower on this machine
    command = [exe, "record", "--format", "raw", "-o", out, "--threads", "--nonblocking", "--rate", "250"]
    command += ["--pid", str(pid)]
    return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


async def measure(n: int, warm: int, connections: int, profile: str | None) -> str:
    """Warm the intake up, load it, and say what a request cost it."""
    kafka = EmbeddedKafka()
    kafka.start()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            async with intake_hub(kafka.bootstrap, tmp, SECRET) as (url, headers, hub):
                if warm:
                    # references of its own: the measured requests' first thousand were repeats of
                    # it (rule 7's cheap answer), and the CPU a request came out low
                    warming = [b.replace(b"PL1500-", b"PL1700-") for b in police_records(warm, seed=9)]
                    await _load(url, warming, headers, concurrency=connections)
                bodies = police_records(n, seed=5)
                spy = _py_spy(hub.pid, profile) if profile else None
                if spy is not None:
                    await asyncio.sleep(1.0)  # py-spy attaches
                before, loop_before = _cpu_seconds(hub.pid), _cpu_seconds(hub.pid, hub.pid)
                seconds, latencies = await _load(url, bodies, headers, concurrency=connections)
                cpu = _cpu_seconds(hub.pid) - before
                loop = _cpu_seconds(hub.pid, hub.pid) - loop_before
                if spy is not None:
                    spy.send_signal(2)  # py-spy writes its file on SIGINT
                    spy.wait(60)
    finally:
        kafka.stop()
    return (
        f"{n:,} requests after {warm:,} to warm up, {connections} connections: {n / seconds:,.0f}/s, "
        f"p50 {percentile(latencies, 50):.1f} ms, p99 {percentile(latencies, 99):.1f} ms; "
        f"the hub's CPU {cpu * 1e6 / n:,.0f} µs a request ({cpu:.1f} s in {seconds:.1f} s): the event "
        f"loop's thread {loop * 1e6 / n:,.0f} µs, the other threads (the database driver's) "
        f"{(cpu - loop) * 1e6 / n:,.0f} µs"
    )


def main() -> None:
    """Parse the arguments and print one line."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=20_000, help="requests measured (default 20000)")
    p.add_argument("--warm", type=int, default=1_000, help="requests sent first, not measured (default 1000)")
    p.add_argument("--connections", type=int, default=32, help="keep-alive connections (default 32)")
    p.add_argument("--profile", metavar="FILE", help="py-spy's raw collapsed stacks of the load, to FILE")
    args = p.parse_args()
    if args.n < 1 or args.warm < 0 or args.connections < 1:
        p.error("--n and --connections must be at least 1, --warm at least 0")

    async def run() -> None:
        print(await measure(args.n, args.warm, args.connections, args.profile))

    bench_run(run())


if __name__ == "__main__":
    main()
