"""`GET /api/v1/mails`: what the embedded SMTP sink received, so a person trying the hub sees the mails."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request

from connectors.mail.sink import stored_mails
from hub.api.problems import Problem
from hub.ops.auth import Operator, requires

router = APIRouter(prefix="/api/v1/mails", tags=["mails"])
Viewer = Annotated[Operator, requires("viewer")]


@router.get("", summary="Mails the embedded SMTP sink received, newest first")
async def list_mails(
    request: Request, op: Viewer, limit: Annotated[int, Query(ge=1, le=500)] = 50, raw: bool = False
) -> dict[str, Any]:
    """Only with the embedded default (no KETENHUB_SMTP__HOST): a real server keeps its own mail."""
    hub = request.app.state.hub
    if hub.settings.smtp.host is not None:
        raise Problem(
            404, "No mail sink", "Mail goes to the configured SMTP server; the hub keeps no copies."
        )
    mails = await stored_mails(hub.store, limit)
    return {"mails": [m.as_json(with_raw=raw) for m in mails]}
