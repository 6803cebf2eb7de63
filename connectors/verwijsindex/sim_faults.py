"""Fault injection and the call log of the Verwijsindex simulator, as a pure ASGI middleware."""

from __future__ import annotations

import asyncio
import json
import random
import re
from datetime import UTC, datetime
from email.utils import format_datetime
from enum import StrEnum
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from connectors.verwijsindex.contract import TRANSACTION_HEADER

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, MutableMapping

    Scope = MutableMapping[str, Any]
    Message = MutableMapping[str, Any]
    Receive = Callable[[], Awaitable[Message]]
    Send = Callable[[Message], Awaitable[None]]
    ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

API_PREFIX = "/api/"
_TEMPLATES = [(re.compile(r"/api/v1/signalen/[^/]+"), "/api/v1/signalen/{signaalId}")]


class DownMode(StrEnum):
    """How a fully-down index answers: 503 on everything, or closing the connection mid-response."""

    HTTP_503 = "503"
    CLOSE = "close"


class Faults(BaseModel):
    """What goes wrong on calls under /api/; the admin endpoints are never affected."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    error_rate: float = Field(default=0.0, ge=0, le=1, description="Share of calls answered 503.")
    rate_limit_rate: float = Field(default=0.0, ge=0, le=1, description="Share of calls answered 429.")
    retry_after: int = Field(default=1, ge=0, le=3600, description="Retry-After (seconds) sent with 429.")
    retry_after_format: Literal["seconds", "http-date"] = "seconds"
    latency_ms: int = Field(default=0, ge=0, le=60_000, description="Added to every call.")
    hang_rate: float = Field(default=0.0, ge=0, le=1, description="Share of calls that hang, then run.")
    lost_answer_rate: float = Field(
        default=0.0,
        ge=0,
        le=1,
        description="Share of calls carried out whose answer is cut off (the connection closes).",
    )
    hang_seconds: float = Field(default=30.0, ge=0, le=3600, description="How long a hanging call sleeps.")
    down: DownMode | None = Field(
        default=None, description="Down (for `methods`, if given); overrides the rates."
    )
    remaining: int | None = Field(
        default=None, ge=1, description="Apply these faults to this many more calls, then heal."
    )
    methods: frozenset[Literal["GET", "PUT", "PATCH", "DELETE"]] | None = Field(
        default=None,
        min_length=1,
        description="Only calls with these methods are affected (and counted against `remaining`); "
        "all methods when absent.",
    )

    def applies_to(self, method: str) -> bool:
        """Whether these faults touch a call with `method`."""
        return self.methods is None or method in self.methods


class CallRecord(BaseModel):
    """One call the simulator received: what, when, under which transaction id, and its fate."""

    model_config = ConfigDict(extra="forbid")

    method: str
    path: str
    route: str
    at: datetime
    transaction_id: str | None
    fault: str | None = None
    status: int | None = None


class CallLog(BaseModel):
    """The calls so far, counted per 'METHOD route' and per 'METHOD path', and listed in order."""

    model_config = ConfigDict(extra="forbid")

    total: int
    per_route: dict[str, int]
    per_path: dict[str, int]
    calls: list[CallRecord]


def summarise(calls: list[CallRecord]) -> CallLog:
    """Count the calls for `GET /admin/calls`."""
    per_route: dict[str, int] = {}
    per_path: dict[str, int] = {}
    for call in calls:
        per_route[f"{call.method} {call.route}"] = per_route.get(f"{call.method} {call.route}", 0) + 1
        per_path[f"{call.method} {call.path}"] = per_path.get(f"{call.method} {call.path}", 0) + 1
    return CallLog(total=len(calls), per_route=per_route, per_path=per_path, calls=list(calls))


def draw_fault(faults: Faults, rng: random.Random) -> str | None:
    """Decide the fault for one call: 'down-503', 'down-close', 'hang', 'lost', '429', '503' or None."""
    if faults.down is not None:
        return f"down-{faults.down.value}"
    for name, rate in (
        ("hang", faults.hang_rate),
        ("lost", faults.lost_answer_rate),
        ("429", faults.rate_limit_rate),
        ("503", faults.error_rate),
    ):
        if rate > 0 and rng.random() < rate:
            return name
    return None


class FaultController:
    """Holds the current faults, draws them per call, releases hanging calls, and logs calls."""

    def __init__(self, faults: Faults | None = None, seed: int | None = None) -> None:
        self.faults = faults or Faults()
        self.calls: list[CallRecord] = []
        self._rng = random.Random(seed)
        self._release: asyncio.Event | None = None
        self._hanging: asyncio.Event | None = None

    def set(self, faults: Faults) -> None:
        """Replace the faults; calls hanging under the old ones are let go."""
        self.faults = faults
        self.release_hangs()

    def reset(self) -> None:
        """Healthy again, with an empty call log."""
        self.set(Faults())
        self.calls.clear()

    def release_hangs(self) -> None:
        """Wake every hanging call now (call from the simulator's event loop)."""
        if self._release is not None:
            self._release.set()
            self._release = None

    def next_fault(self, method: str) -> str | None:
        """Draw the fault for one call and count it against `remaining`."""
        faults = self.faults
        if not faults.applies_to(method):
            return None
        fault = draw_fault(faults, self._rng)
        if faults.remaining is not None:
            left = faults.remaining - 1
            self.faults = faults.model_copy(update={"remaining": left}) if left else Faults()
        return fault

    def hanging(self) -> asyncio.Event:
        """Set once a call hangs (for tests in the simulator's event loop)."""
        if self._hanging is None:
            self._hanging = asyncio.Event()
        return self._hanging

    async def hang(self, seconds: float) -> None:
        """Sleep `seconds`, or less when the hangs are released."""
        if self._release is None:
            self._release = asyncio.Event()
        self.hanging().set()
        try:
            await asyncio.wait_for(self._release.wait(), timeout=seconds)
        except TimeoutError:
            return


def _route_of(path: str) -> str:
    for pattern, template in _TEMPLATES:
        if pattern.fullmatch(path):
            return template
    return path


def _header(scope: Scope, name: str) -> str | None:
    wanted = name.lower().encode()
    for key, value in scope.get("headers", []):
        if key.lower() == wanted:
            return value.decode("latin-1")  # type: ignore[no-any-return]
    return None


async def _error(send: Send, status: int, detail: str, headers: list[tuple[bytes, bytes]]) -> None:
    titles = {429: "Too Many Requests", 503: "Service Unavailable"}
    body = json.dumps({"titel": titles[status], "detail": detail, "fouten": []}).encode()
    base = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": base + headers})
    await send({"type": "http.response.body", "body": body})


class FaultMiddleware:
    """Logs every /api/ call and injects the controller's faults before the app sees it."""

    def __init__(self, app: ASGIApp, controller: FaultController) -> None:
        self.app = app
        self.controller = controller

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith(API_PREFIX):
            await self.app(scope, receive, send)
            return
        ctl = self.controller
        faults = ctl.faults
        record = CallRecord(
            method=scope["method"],
            path=scope["path"],
            route=_route_of(scope["path"]),
            at=datetime.now(UTC),
            transaction_id=_header(scope, TRANSACTION_HEADER),
        )
        ctl.calls.append(record)
        record.fault = ctl.next_fault(record.method)

        async def recording_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                record.status = message["status"]
            await send(message)

        if record.fault == "down-close":
            # Headers promise a body that never comes: the server closes the connection.
            headers = [(b"content-type", b"application/json"), (b"content-length", b"64")]
            await recording_send({"type": "http.response.start", "status": 200, "headers": headers})
            return
        if record.fault == "lost":
            # Carried out, but the answer is cut off: the caller cannot tell whether it was.
            async def swallow(message: Message) -> None:
                if message["type"] == "http.response.start":
                    record.status = message["status"]

            await self.app(scope, receive, swallow)
            headers = [(b"content-type", b"application/json"), (b"content-length", b"64")]
            await send({"type": "http.response.start", "status": 200, "headers": headers})
            return
        if record.fault in ("down-503", "503"):
            await _error(recording_send, 503, "simulated outage", [])
            return
        if record.fault == "429":
            await _error(
                recording_send, 429, "simulated rate limit", [(b"retry-after", _retry_after(faults))]
            )
            return
        if record.fault == "hang":
            # The request was received whole before the index got slow: carried out after the
            # hang even when the caller has given up waiting (as a server busy with it would).
            receive = await _received(receive)
            await ctl.hang(faults.hang_seconds)
        if faults.latency_ms and faults.applies_to(record.method):
            await asyncio.sleep(faults.latency_ms / 1000)
        await self.app(scope, receive, recording_send)


async def _received(receive: Receive) -> Receive:
    """Read the request's body now; a `receive` that hands it over once, then the caller's own."""
    chunks, more = [], True
    while more:
        message = await receive()
        if message["type"] != "http.request":
            break
        chunks.append(message.get("body", b""))
        more = message.get("more_body", False)
    body, given = b"".join(chunks), False

    async def replay() -> Message:
        nonlocal given
        if not given:
            given = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay


def _retry_after(faults: Faults) -> bytes:
    if faults.retry_after_format == "http-date":
        when = datetime.now(UTC).timestamp() + faults.retry_after
        return format_datetime(datetime.fromtimestamp(when, UTC), usegmt=True).encode()
    return str(faults.retry_after).encode()
