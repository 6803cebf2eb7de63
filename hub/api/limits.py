"""Request guards for partner endpoints: media type (415) and body size, counted while reading (413)."""

from __future__ import annotations

from fastapi import Request

from hub.api.problems import InvalidParam, Problem


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


def _too_large(limit: int) -> Problem:
    return Problem(
        413,
        "Bericht te groot",
        f"Een bericht mag hoogstens {limit} bytes zijn; splits een batch in kleinere delen.",
        params=[InvalidParam(name="(bericht)", reason="te groot", allowed=f"maximaal {limit} bytes")],
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
