"""HTTP intake and start-up, measured on `ketenhub run` as its own process, beside a bare baseline.

The baseline for HTTP is a minimal FastAPI app on the same uvicorn, answering 201 to the same
bodies without reading them into anything: what the framework and the loopback cost by themselves.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx

from bench.harness import Result, percentile
from hub.embedded import free_port

KETENHUB = str(Path(sys.executable).with_name("ketenhub"))
BARE_APP = """
from fastapi import FastAPI, Request, Response
app = FastAPI()
@app.post("/api/v1/politie/verwijzingen")
async def take(request: Request) -> Response:
    await request.body()
    return Response(b'{"status": "ACCEPTED"}', status_code=201, media_type="application/json")
@app.get("/readyz")
async def ready() -> dict[str, str]:
    return {"status": "ready"}
"""


async def _wait_ready(url: str, proc: subprocess.Popen[bytes], timeout_s: float = 60) -> float:
    t0 = time.perf_counter()
    async with httpx.AsyncClient(timeout=1) as client:
        while time.perf_counter() - t0 < timeout_s:
            if proc.poll() is not None:
                raise RuntimeError(f"process exited with {proc.returncode}")
            with contextlib.suppress(httpx.HTTPError):
                if (await client.get(url + "/readyz")).status_code == 200:
                    return time.perf_counter() - t0
            await asyncio.sleep(0.01)
    raise TimeoutError("not ready")


def start_intake(port: int, cwd: str | Path, env: dict[str, str]) -> subprocess.Popen[bytes]:
    """`ketenhub run --components intake` on `port`, quiet, in a process of its own."""
    return subprocess.Popen(
        [KETENHUB, "run", "--port", str(port), "--components", "intake"],
        cwd=cwd,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def _stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(20)
    except subprocess.TimeoutExpired:
        proc.kill()


async def ready_time(runs: int = 3) -> Result:
    """`ketenhub run` on its embedded default, from exec to /readyz 200; the median of `runs`."""
    times = []
    for _ in range(runs):
        with tempfile.TemporaryDirectory() as tmp:
            port = free_port()
            proc = subprocess.Popen(
                [KETENHUB, "run", "--port", str(port)],
                cwd=tmp,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            try:
                times.append(await _wait_ready(f"http://127.0.0.1:{port}", proc))
            finally:
                _stop(proc)
    times.sort()
    return Result("`ketenhub run` ready (embedded)", runs, times[len(times) // 2])


async def _load(
    url: str, bodies: list[bytes], headers: dict[str, str], *, concurrency: int, rate: float | None = None
) -> tuple[float, list[float]]:
    """POST every body over `concurrency` keep-alive connections; return seconds and latencies (ms).

    A bare HTTP/1.1 client on asyncio streams: the requests are built up front and an answer is read
    by its Content-Length. httpx spent more CPU per request than the server it measured (on two cores
    the load generator and the server share the machine), so it capped every figure, the baseline's too.
    """
    host, port = url.removeprefix("http://").split(":")
    head = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    latencies: list[float] = []
    queue: asyncio.Queue[tuple[int, bytes]] = asyncio.Queue()
    for i, body in enumerate(bodies):
        request = (
            f"POST /api/v1/politie/verwijzingen HTTP/1.1\r\nHost: {host}\r\n{head}"
            f"Content-Length: {len(body)}\r\n\r\n"
        ).encode() + body
        queue.put_nowait((i, request))
    t0 = time.perf_counter()

    async def worker() -> None:
        reader, writer = await asyncio.open_connection(host, int(port))
        try:
            while not queue.empty():
                i, request = queue.get_nowait()
                started = time.perf_counter()
                if rate is not None:
                    # timed from when it was due: a request held up behind a slow answer on its
                    # connection waits as a partner's would (else a stall's queue went uncounted)
                    started = t0 + i / rate
                    delay = started - time.perf_counter()
                    if delay > 0:
                        await asyncio.sleep(delay)
                writer.write(request)
                status_line = await reader.readline()
                length = 0
                while (line := await reader.readline()) not in (b"\r\n", b""):
                    name, _, value = line.partition(b":")
                    if name.strip().lower() == b"content-length":
                        length = int(value)
                answer = await reader.readexactly(length)
                latencies.append((time.perf_counter() - started) * 1000)
                status = int(status_line.split()[1])
                if status not in (200, 201):
                    raise RuntimeError(f"HTTP {status}: {answer[:200]!r}")
        finally:
            writer.close()

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return time.perf_counter() - t0, latencies


@contextlib.asynccontextmanager
async def intake_hub(
    bootstrap: str, tmp: str | Path, secret: str
) -> AsyncIterator[tuple[str, dict[str, str], subprocess.Popen[bytes]]]:
    """`ketenhub run --components intake` on a fresh SQLite database in `tmp`, with a police partner:
    its URL, the partner's request headers and the process, ready; stopped on the way out."""
    from hub.partners import PartnerType, add_partner
    from hub.store import Store

    db = f"sqlite+aiosqlite:///{Path(tmp) / 'hub.db'}"
    store = Store(db)
    await store.migrate()
    async with store.transaction() as session:
        _, key = await add_partner(session, "politie-bench", PartnerType.POLITIE)
    await store.close()
    port = free_port()
    env = {
        **os.environ,
        "KETENHUB_KAFKA__BOOTSTRAP_SERVERS": bootstrap,
        "KETENHUB_DATABASE__URL": db,
        "KETENHUB_SECRET": secret,
        "KETENHUB_LOG_LEVEL": "WARNING",
        "KETENHUB_KAFKA__TOPIC_PREFIX": f"h{port}.",
        "KETENHUB_KAFKA__GROUP_PREFIX": f"h{port}-",
    }
    hub = start_intake(port, tmp, env)
    try:
        url = f"http://127.0.0.1:{port}"
        await _wait_ready(url, hub)
        yield url, {"Content-Type": "application/json", "Authorization": f"Bearer {key}"}, hub
    finally:
        _stop(hub)


async def _timed(
    name: str, url: str, bodies: list[bytes], headers: dict[str, str], *, rate: int | None = None
) -> Result:
    """`bodies` posted over 32 keep-alive connections, as fast as they go or at `rate`/s offered."""
    seconds, lat = await _load(url, bodies, headers, concurrency=32, rate=rate)
    return Result(name, len(bodies), seconds, p50_ms=percentile(lat, 50), p99_ms=percentile(lat, 99))


async def http_intake(bootstrap: str, bodies: list[bytes], rate: int) -> list[Result]:
    """The bare baseline and the hub: throughput with keep-alive, then latency at `rate`/s offered."""
    out: list[Result] = []
    with tempfile.TemporaryDirectory() as tmp:
        bare_port = free_port()
        (Path(tmp) / "bare.py").write_text(BARE_APP)
        bare = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "uvicorn",
                "bare:app",
                "--port",
                str(bare_port),
                "--log-level",
                "warning",
                "--no-access-log",
            ],
            cwd=tmp,
        )
        try:
            url = f"http://127.0.0.1:{bare_port}"
            await _wait_ready(url, bare)
            plain = {"Content-Type": "application/json"}
            out.append(await _timed("bare FastAPI on uvicorn (baseline)", url, bodies, plain))
            name = f"bare FastAPI at {rate}/s offered (baseline)"
            out.append(await _timed(name, url, bodies[: rate * 10], plain, rate=rate))
        finally:
            _stop(bare)

        async with intake_hub(bootstrap, tmp, "bench-secret-" + "y" * 40) as (url, headers, _):
            out.append(await _timed("hub HTTP intake, keep-alive, 32 connections", url, bodies, headers))
            offered = [b.replace(b"PL1500-", b"PL1600-") for b in bodies[: rate * 10]]
            out.append(await _timed(f"hub HTTP intake at {rate}/s offered", url, offered, headers, rate=rate))
    return out
