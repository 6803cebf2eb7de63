"""Rule 19 on HTTP: every partner call has an `Fsc-Transaction-Id`, taken from the request or made."""

from __future__ import annotations

import re

import structlog
from starlette.datastructures import Headers, MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from hub.api.problems import InvalidParam, problem_response
from schemas.envelope import new_id

HEADER = "Fsc-Transaction-Id"
# FSC transaction ids are UUIDs; anything else is refused rather than written into the audit log.
_UUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")


def is_transaction_id(value: str) -> bool:
    """True for a well-formed transaction id (a UUID)."""
    return bool(_UUID.match(value))


class TransactionIdMiddleware:
    """Sets `request.state.transaction_id` under `prefix` and echoes it on every response."""

    def __init__(self, app: ASGIApp, prefix: str = "/api/") -> None:
        self.app, self.prefix = app, prefix

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith(self.prefix):
            await self.app(scope, receive, send)
            return
        sent = Headers(scope=scope).get(HEADER)
        transaction_id = new_id()
        if sent is not None and is_transaction_id(sent.strip()):
            transaction_id = sent.strip().lower()
        elif sent is not None:
            response = problem_response(
                400,
                "Ongeldige transactie-id",
                f"De header {HEADER} moet een UUID zijn; laat hem weg om er een te laten maken.",
                params=[InvalidParam(name=HEADER, reason="heeft niet de juiste vorm", allowed="UUID")],
                instance=scope["path"],
                headers={HEADER: transaction_id},
            )
            await response(scope, receive, send)
            return
        scope.setdefault("state", {})["transaction_id"] = transaction_id

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                MutableHeaders(scope=message)[HEADER] = transaction_id
            await send(message)

        with structlog.contextvars.bound_contextvars(transaction_id=transaction_id):
            await self.app(scope, receive, send_with_id)
