"""The partners' JSON referral endpoints, served without FastAPI's request machinery.

`POST /api/v1/{politie,boa,preventief}/verwijzingen` is the hub's busiest path. Through FastAPI a
request there passes Starlette's exception middleware, the router, FastAPI's request handler and its
dependency solving before the endpoint runs; together about a tenth of the event loop's busy time
on the HTTP intake (`python -m bench.httpcpu --profile`). This middleware, innermost of the hub's
own, answers exactly those requests itself with the same parts the routes use: the partner's key
(`PartnerKey`, 401/403/429), `_take_in_json` (415, 413, 400, 409, 503, the answer), and the app's
own exception handlers for what they raise. Everything else, a `HEAD`, a path with a trailing slash
or under a root path, goes on to FastAPI, whose routes still document these endpoints
(`/openapi.json`) and answer them there as well.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from fastapi import FastAPI, Request, Response
from starlette.types import ASGIApp, Receive, Scope, Send

from hub.partners import Partner
from hub.partners.auth import PartnerKey

Handler = Callable[[Request, Partner], Awaitable[Response]]


@dataclass(frozen=True)
class Lane:
    """One endpoint: the partner types its key must be of, and what answers it."""

    key: PartnerKey
    handle: Handler


class PartnerLaneMiddleware:
    """Answers `POST` to the paths of `lanes` itself; every other request goes on to `app`."""

    def __init__(self, app: ASGIApp, fastapi: FastAPI, lanes: dict[str, Lane]) -> None:
        self.app, self.fastapi, self.lanes = app, fastapi, lanes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        lane = None
        if scope["type"] == "http" and scope["method"] == "POST" and not scope.get("root_path"):
            lane = self.lanes.get(scope["path"])
        if lane is None:
            await self.app(scope, receive, send)
            return
        request = Request(scope, receive, send)
        try:
            partner = await lane.key(request)
            response = await lane.handle(request, partner)
        except Exception as exc:
            handler = self._handler_of(exc)
            if handler is None:  # the app's 500 (Starlette's ServerErrorMiddleware, outermost)
                raise
            response = await handler(request, exc)
        await response(scope, receive, send)

    def _handler_of(self, exc: Exception) -> Callable[[Request, Exception], Awaitable[Response]] | None:
        """The app's handler for `exc`, as Starlette's exception middleware finds it (by the class's
        MRO); none for the catch-all `Exception`, which is the outermost middleware's."""
        handlers = self.fastapi.exception_handlers
        for cls in type(exc).__mro__:
            if cls is Exception:
                return None
            if cls in handlers:
                return handlers[cls]  # type: ignore[return-value]
        return None
