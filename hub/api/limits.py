"""Request guards: media type (415) and body size (413), for every request before any handler reads;
and the partners' write and read rates (429), per partner in this process."""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections.abc import Callable
from typing import Literal

from fastapi import Request
from fastapi.responses import JSONResponse
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from hub.api.problems import InvalidParam, Problem, problem_response
from hub.logging import get_logger

TOO_LARGE = "Bericht te groot"
log = get_logger(__name__)


def media_type_of(request: Request) -> str:
    """The request's media type without parameters, lower case ('' when absent)."""
    return request.headers.get("content-type", "").split(";", 1)[0].strip().lower()


def require_media_type(request: Request, *allowed: str) -> None:
    """415 unless the Content-Type is one of `allowed` (a `+json` suffix counts as JSON)."""
    media = media_type_of(request)
    if media in allowed or ("application/json" in allowed and media.endswith("+json")):
        return
    raise Problem(
        415,
        "Niet-ondersteund mediatype",
        f"Dit endpoint neemt {' of '.join(allowed)} aan.",
        params=[
            InvalidParam(
                name="Content-Type",
                reason="ontbreekt" if not media else "wordt niet ondersteund",
                allowed=", ".join(allowed),
            )
        ],
    )


def _too_large_detail(limit: int) -> tuple[str, list[InvalidParam]]:
    return (
        f"Een bericht mag hoogstens {limit} bytes zijn; splits een batch in kleinere delen.",
        [InvalidParam(name="(bericht)", reason="te groot", allowed=f"maximaal {limit} bytes")],
    )


def _too_large(limit: int) -> Problem:
    detail, params = _too_large_detail(limit)
    return Problem(413, TOO_LARGE, detail, params=params)


def too_large_response(limit: int, path: str) -> JSONResponse:
    """The 413 of `read_body`, for the middleware; the connection closes, its body is left unread."""
    detail, params = _too_large_detail(limit)
    return problem_response(
        413, TOO_LARGE, detail, params=params, instance=path, headers={"Connection": "close"}
    )


async def read_body(request: Request, limit: int) -> bytes:
    """The body, refusing (413) as soon as it exceeds `limit`, whatever Content-Length claims."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise _too_large(limit)
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise _too_large(limit)
        chunks.append(chunk)
    return b"".join(chunks)


class BodyTooLarge(Exception):
    """Raised from `receive` when the body passes the limit: the app stops reading."""


# What is read and dropped of a refused body before the 413 goes, at most: a sender still sending
# when the connection closed got a reset instead of the 413 (its socket had unread data). A body over
# the limit by more than this, or still coming after DRAIN_WITHIN_S, gets its 413 without waiting.
DRAIN_AT_MOST = 1 << 20
DRAIN_WITHIN_S = 5.0


async def _drain(receive: Receive, more: bool, at_most: int = DRAIN_AT_MOST) -> None:
    """Read and drop what is left of a refused body (`more`: some is), up to `at_most` bytes and
    within `DRAIN_WITHIN_S`."""
    dropped = 0
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(DRAIN_WITHIN_S):
            while more and dropped < at_most:
                message = await receive()
                if message["type"] != "http.request":
                    return
                dropped += len(message.get("body", b""))
                more = bool(message.get("more_body", False))


class LimitBodyMiddleware:
    """Refuses (413) a body over `limit`: at once when Content-Length says so, else once it passes.
    Nothing of a refused body is kept; up to `DRAIN_AT_MOST` more of it is read and dropped, so that
    a sender that sends it whole reads the 413 rather than a reset connection.

    FastAPI reads a pydantic body, and the login its JSON, before authentication runs: without
    this an anonymous sender decides how much memory a request takes.
    """

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app, self.limit = app, limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        declared = headers.get("content-length", "").strip()
        if declared.isdigit() and int(declared) > self.limit:
            # a sender that waits to be asked for its body (Expect: 100-continue) sends none: asking
            # for it (the server's first read answers 100 Continue) would only make it send it
            waits = headers.get("expect", "").strip().lower() == "100-continue"
            if int(declared) <= self.limit + DRAIN_AT_MOST and not waits:
                await _drain(receive, more=True, at_most=int(declared))
            await too_large_response(self.limit, scope["path"])(scope, receive, send)
            return
        read, exceeded, started, more = 0, False, False, True

        async def receive_limited() -> Message:
            nonlocal read, exceeded, more
            if exceeded:  # asked again (a disconnect listener): the request is over for the app
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                read += len(message.get("body", b""))
                more = bool(message.get("more_body", False))
                if read > self.limit:
                    exceeded = True
                    raise BodyTooLarge
            return message

        async def send_unless_refused(message: Message) -> None:
            nonlocal started
            if exceeded and not started:  # the app's answer to the failed read (FastAPI: a 400)
                return
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive_limited, send_unless_refused)
        except Exception:
            if not exceeded or started:  # a response under way cannot be replaced: the server cuts it
                raise
        if exceeded and not started:
            await _drain(receive, more)
            await too_large_response(self.limit, scope["path"])(scope, receive, send)


# A token refilled to 1 by float sums (0.1 + 0.9) can fall a hair short: a partner that waited the
# Retry-After it was given must get through.
_ONE = 1.0 - 1e-9
_ENOUGH = 1.0 - 0.5e-9  # what a Retry-After must refill to: past _ONE by more than a clock's rounding
WARN_EVERY_S = 60.0  # a partner in a loop is refused hundreds of times a second: logged once a minute

Noun = Literal["write", "read"]
# What a partner's request counts as: a read (GET, HEAD), a write (any other method), or neither
# (OPTIONS: a CORS preflight, which reaches no endpoint).
_NOUN_OF_METHOD: dict[str, Noun | None] = {"GET": "read", "HEAD": "read", "OPTIONS": None}
# The refusal's detail, in Dutch like every problem: what the partner did, that nothing came of it.
_REFUSED: dict[Noun, str] = {
    "write": "Deze partner stuurt sneller dan de hub aanneemt ({rate} verzoeken per seconde, {burst} achter "
    "elkaar). Er is niets opgeslagen: stuur dit verzoek over {wait} opnieuw (Retry-After) en stuur daarna "
    "niet sneller.",
    "read": "Deze partner leest sneller dan de hub toestaat ({rate} leesverzoeken per seconde, {burst} "
    "achter elkaar). Er is niets gelezen: stuur dit verzoek over {wait} opnieuw (Retry-After) en lees "
    "daarna niet sneller.",
}


def noun_of(method: str) -> Noun | None:
    """Which of a partner's limits a request with this method counts against, if any."""
    return _NOUN_OF_METHOD.get(method, "write")


class _Bucket:
    __slots__ = ("at", "tokens", "warned_at")

    def __init__(self, tokens: float, at: float) -> None:
        self.tokens, self.at, self.warned_at = tokens, at, -math.inf


class PartnerRate:
    """How fast each partner may write, or read (`noun`): a token bucket per partner id, `burst`
    tokens at most, refilled at `rate_per_s`; a request takes one, and without one it is refused
    (429), taking none, before its endpoint stores, publishes, reads or audits anything.

    Counted in this process: each hub process behind a load balancer keeps its own buckets, so n
    processes let a partner go n times as fast. No lock: `take` does not await, so no other request
    runs inside it. Only authenticated partners get a bucket: there are as many as partners.
    """

    def __init__(
        self, rate_per_s: float, burst: int, noun: Noun, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.rate, self.burst, self.noun, self.clock = rate_per_s, float(burst), noun, clock
        self._event = f"partner {noun} rate reached"  # the log line: the partner's id, never a name
        self._buckets: dict[str, _Bucket] = {}

    def wait_s(self, partner_id: str) -> int:
        """Take a token for one request: 0 when there was one; else none is taken, and the answer is
        the whole seconds (at least 1) until there will be one. Always 0 when the rate is 0 (no limit)."""
        if self.rate <= 0:
            return 0
        now = self.clock()
        bucket = self._buckets.get(partner_id)
        if bucket is None:
            bucket = self._buckets[partner_id] = _Bucket(self.burst, now)
        tokens = min(self.burst, bucket.tokens + (now - bucket.at) * self.rate)
        bucket.at = now
        if tokens >= _ONE:
            bucket.tokens = tokens - 1.0
            return 0
        bucket.tokens = tokens
        if now - bucket.warned_at >= WARN_EVERY_S:
            bucket.warned_at = now
            log.warning(self._event, partner_id=partner_id, rate_per_s=self.rate)
        wait = max(1, math.ceil((1.0 - tokens) / self.rate))
        # The division rounds too: 2/3 of a token short at 1/3 a second is 2.0000000000000004
        # seconds, which would tell a partner to wait 3. A second less is given when it is enough
        # by a margin the clock's own rounding cannot take away.
        if wait > 1 and tokens + (wait - 1) * self.rate >= _ENOUGH:
            wait -= 1
        return wait

    def take(self, partner_id: str) -> None:
        """Take a token for one request of the partner, or refuse it: 429 with an honest Retry-After."""
        wait = self.wait_s(partner_id)
        if wait:
            detail = _REFUSED[self.noun].format(
                rate=f"{self.rate:g}".replace(".", ","),
                burst=f"{self.burst:.0f}",
                wait=f"{wait} seconde{'' if wait == 1 else 'n'}",
            )
            raise Problem(429, "Te veel verzoeken", detail, headers={"Retry-After": str(wait)})


def partner_rate(request: Request, noun: Noun) -> PartnerRate:
    """The app's limit on its partners' writes or reads, made from the settings at its first use."""
    name = f"partner_{noun}s"  # app.state.partner_writes, app.state.partner_reads
    limit = getattr(request.app.state, name, None)
    if not isinstance(limit, PartnerRate):
        http = request.app.state.hub.settings.http
        if noun == "write":
            limit = PartnerRate(http.partner_writes_per_s, http.partner_write_burst, noun)
        else:
            limit = PartnerRate(http.partner_reads_per_s, http.partner_read_burst, noun)
        setattr(request.app.state, name, limit)
    return limit
