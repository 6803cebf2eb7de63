"""Requests whose path or query holds a control character are refused before any handler runs.

PostgreSQL cannot store a NUL, and no id, filter or name the API takes contains a control
character; a handler would otherwise pass one on to a lookup and answer 500.
"""

from __future__ import annotations

import re
from urllib.parse import unquote_to_bytes

from starlette.types import ASGIApp, Receive, Scope, Send

from hub.api.problems import InvalidParam, problem_response
from schemas._base import NO_CONTROL_ALLOWED, NO_CONTROL_PROBLEM

_CONTROL = re.compile(rb"[\x00-\x1f\x7f]")


def control_in_address(scope: Scope) -> str | None:
    """'(pad)' or '(query)' when that part of the request's address holds a control character."""
    if _CONTROL.search(scope["path"].encode("utf-8", "surrogateescape")):
        return "(pad)"
    query = bytes(scope.get("query_string", b""))
    if _CONTROL.search(unquote_to_bytes(query.replace(b"+", b" "))):
        return "(query)"
    return None


class RefuseControlCharactersMiddleware:
    """A 400 problem for a control character in the path or query of an /api/ or /ops/ request."""

    def __init__(self, app: ASGIApp, prefixes: tuple[str, ...] = ("/api/", "/ops/")) -> None:
        self.app, self.prefixes = app, prefixes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"].startswith(self.prefixes):
            where = control_in_address(scope)
            if where is not None:
                # the address is not echoed: it may hold an id the sender did not mean to show
                response = problem_response(
                    400,
                    "Ongeldig adres",
                    "Het pad of de query bevat een stuurteken; geen id of filter bevat er een.",
                    params=[InvalidParam(name=where, reason=NO_CONTROL_PROBLEM, allowed=NO_CONTROL_ALLOWED)],
                )
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)
