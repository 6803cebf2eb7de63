"""The SMTP server of the mail benchmark: the repo's sink (aiosmtpd), counting each Message-ID.

It runs on its own thread and event loop (`SmtpThread`, as briefed), or as its own process
(`SmtpProcess`, `python -m bench.smtp_sink`), where it competes with the hub for neither the GIL
nor the event loop, as a real SMTP server would not. Either way each mail is reported with the time
(CLOCK_MONOTONIC, the same in every process) at which its DATA was accepted.
"""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from aiosmtpd.smtp import SMTP

from connectors.mail.sink import MailSink

Report = Callable[[str | None, float], None]  # (Message-ID, time.monotonic() of its arrival)


class Tally:
    """What arrived in one run; `done` is set in the benchmark's loop once every expected
    Message-ID has arrived."""

    def __init__(self, expected: set[str]) -> None:
        self.expected = expected
        self.counts: Counter[str] = Counter()
        self.loop = asyncio.get_running_loop()
        self.done = asyncio.Event()
        self.first_at: float | None = None
        self.last_at: float | None = None
        self._lock = threading.Lock()
        self._distinct = 0

    def add(self, message_id: str | None, at: float) -> None:
        """One mail received (called on the SMTP server's or the reader's thread)."""
        key = message_id or "<none>"
        with self._lock:
            self.counts[key] += 1
            self.first_at = self.first_at or at
            if key in self.expected and self.counts[key] == 1:
                self._distinct += 1
                if self._distinct == len(self.expected):
                    self.last_at = at
                    self.loop.call_soon_threadsafe(self.done.set)

    def verify(self, label: str) -> str:
        """Raise unless every expected Message-ID arrived exactly once and nothing else did."""
        with self._lock:
            missing = sum(1 for m in self.expected if self.counts[m] == 0)
            doubled = sum(1 for c in self.counts.values() if c > 1)
            strays = sum(1 for m in self.counts if m not in self.expected)
            total = sum(self.counts.values())
        if missing or doubled or strays:
            raise RuntimeError(
                f"{label}: not exactly once: {missing} missing, {doubled} doubled, {strays} unexpected "
                f"Message-IDs; {total} mails for {len(self.expected)} notifications"
            )
        return f"{label}: {total} mails, {len(self.counts)} distinct Message-IDs, each exactly once"


class CountingSink(MailSink):
    """The embedded sink (in memory, the last few mails kept) that reports every mail it accepts."""

    def __init__(self, report: Report) -> None:
        super().__init__(None, keep=10)
        self.report = report

    async def handle_DATA(self, server: SMTP, session: Any, envelope: Any) -> str:
        """Keep the mail as the sink does, then report its Message-ID."""
        reply = await super().handle_DATA(server, session, envelope)
        # The sink appended this mail without awaiting anything, so the newest entry is this one.
        self.report(self.memory[-1].message_id, time.monotonic())
        return reply


class SmtpServer:
    """Routes each received mail to the current run's Tally; mails outside a run are strays."""

    name = "SMTP sink"

    def __init__(self) -> None:
        self.port = 0
        self.tally: Tally | None = None
        self.strays = 0

    def received(self, message_id: str | None, at: float) -> None:
        """Count one mail."""
        tally = self.tally
        if tally is None:
            self.strays += 1
        else:
            tally.add(message_id, at)

    def start(self) -> int:
        """Listen on a free loopback port; return it."""
        raise NotImplementedError

    def stop(self) -> None:
        """Stop listening."""
        raise NotImplementedError


class SmtpThread(SmtpServer):
    """The sink served by its own event loop on its own thread of this process."""

    name = "SMTP sink in a thread"

    def __init__(self) -> None:
        super().__init__()
        self.sink = CountingSink(self.received)
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="smtp-sink", daemon=True)

    def start(self) -> int:
        """Listen on a free loopback port; return it."""
        self.thread.start()
        self.port = asyncio.run_coroutine_threadsafe(self.sink.start(), self.loop).result(10)
        return self.port

    def stop(self) -> None:
        """Stop listening, then the loop and the thread."""
        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(self.sink.stop(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


class SmtpProcess(SmtpServer):
    """The sink as a child process (`python -m bench.smtp_sink`) reporting each mail on a pipe."""

    name = "SMTP sink in a process"

    def __init__(self) -> None:
        super().__init__()
        self.proc: subprocess.Popen[str] | None = None
        self.reader: threading.Thread | None = None

    def start(self) -> int:
        """Spawn the sink, read its port, then read its reports on a thread."""
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "bench.smtp_sink"],
            cwd=Path(__file__).resolve().parent.parent,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdout is not None
        first = self.proc.stdout.readline().split()
        if first[:1] != ["port"]:
            self.stop()
            raise RuntimeError(f"the SMTP sink process did not start (said {first!r})")
        self.port = int(first[1])
        self.reader = threading.Thread(target=self._read, name="smtp-sink-reader", daemon=True)
        self.reader.start()
        return self.port

    def _read(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        for line in self.proc.stdout:
            at, _, message_id = line.rstrip("\n").partition(" ")
            self.received(None if message_id == "-" else message_id, float(at))

    def stop(self) -> None:
        """Close its stdin (it stops listening and exits), wait for it and the reader."""
        if self.proc is None:
            return
        with contextlib.suppress(Exception):
            assert self.proc.stdin is not None
            self.proc.stdin.close()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
        if self.reader is not None:
            self.reader.join(5)


def make_server(where: str) -> SmtpServer:
    """'thread' or 'process'."""
    return SmtpProcess() if where == "process" else SmtpThread()


async def serve() -> None:
    """The child process: print the port, then one line per mail, until stdin closes."""

    def report(message_id: str | None, at: float) -> None:
        sys.stdout.write(f"{at!r} {message_id or '-'}\n")
        sys.stdout.flush()

    sink = CountingSink(report)
    port = await sink.start()
    print(f"port {port}", flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
    await sink.stop()


if __name__ == "__main__":
    asyncio.run(serve())
