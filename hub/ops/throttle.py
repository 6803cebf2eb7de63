"""Login throttling: failed logins per user name and per client address, and the password checks
under way, counted in this process."""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from fastapi import Request


class LoginThrottle:
    """Failed logins per user name from one client address, and per client address, over the last
    minute, and the password checks under way: a guesser is refused before any password is checked,
    and the checks (about 150 ms of CPU each) cannot pile up. A name is held from the address that
    failed, not from every address: else anyone could keep an operator out by failing five times a
    minute under their name. Kept in this process: each hub process counts its own."""

    def __init__(
        self,
        *,
        per_name: int = 5,
        per_address: int = 20,
        window_s: float = 60.0,
        at_once: int = 4,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.per_name, self.per_address, self.window_s = per_name, per_address, window_s
        self.at_once, self.clock, self.busy = at_once, clock, 0
        self._failed: dict[tuple[str, str], deque[float]] = {}

    def wait_s(self, name: str, address: str) -> int:
        """Whole seconds until this name may try again from this address; 0: now."""
        now = self.clock()
        waits = [
            self._wait(_name_at(name, address), self.per_name, now),
            self._wait(("address", address), self.per_address, now),
        ]
        return max(waits)

    def _wait(self, key: tuple[str, str], limit: int, now: float) -> int:
        times = self._failed.get(key)
        if times is None:
            return 0
        while times and times[0] <= now - self.window_s:
            times.popleft()
        if len(times) < limit:
            return 0
        return max(1, math.ceil(times[-limit] + self.window_s - now))

    @contextmanager
    def attempt(self, name: str, address: str) -> Iterator[Callable[[], None]]:
        """One password check: counted as failed until the callable it yields says it succeeded."""
        now = self.clock()
        if len(self._failed) > 1000:  # names and addresses of the last minute only
            for key in [k for k, t in self._failed.items() if not t or t[-1] <= now - self.window_s]:
                del self._failed[key]
        keys = [_name_at(name, address), ("address", address)]
        for key in keys:
            self._failed.setdefault(key, deque()).append(now)

        def succeeded() -> None:
            self._failed.pop(keys[0], None)  # the name's earlier failures from here are forgiven
            times = self._failed.get(keys[1])
            if times and now in times:
                times.remove(now)

        self.busy += 1
        try:
            yield succeeded
        finally:
            self.busy -= 1


def _name_at(name: str, address: str) -> tuple[str, str]:
    return ("name", f"{name.strip().casefold()[:100]}\n{address}")


def login_throttle(request: Request) -> LoginThrottle:
    """The app's login throttle, made at its first login."""
    throttle = getattr(request.app.state, "login_throttle", None)
    if not isinstance(throttle, LoginThrottle):
        throttle = request.app.state.login_throttle = LoginThrottle()
    return throttle
