"""Request guards: media type (415) and body size (413), for every request before any handler reads."""

from __future__ import annotations

from fastapi import Request
from fastapi.responses import JSONResponse
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from hub.api.problems import InvalidParam, Problem, problem_response

TOO_LARGE = "Bericht te groot"


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


class LimitBodyMiddleware:
    """Refuses (413) a body over `limit`: at once when Content-Length says so, else once it passes.

    FastAPI reads a pydantic body, and the login its JSON, before authentication runs: without
    this an anonymous sender decides how much memory a request takes.
    """

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app, self.limit = app, limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = Headers(scope=scope).get("content-length", "").strip()
        if declared.isdigit() and int(declared) > self.limit:
            await too_large_response(self.limit, scope["path"])(scope, receive, send)
            return
        read, exceeded, started = 0, False, False

        async def receive_limited() -> Message:
            nonlocal read, exceeded
            if exceeded:  # asked again (a disconnect listener): the request is over for the app
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                read += len(message.get("body", b""))
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
            await too_large_response(self.limit, scope["path"])(scope, receive, send)
