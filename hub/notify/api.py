"""`GET /api/v1/mails`: what the embedded SMTP sink received, so a person trying the hub sees the mails.

A mail's content (its text, or the raw message) carries caseworkers' and counterparts' contact
details: every answer that shows it is audited (rule 18), naming the operator and the mails. The
list of mails (when, to whom, subject), which the dashboard reads at every refresh, is not.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Request

from connectors.mail.sink import SinkMail, stored_mail, stored_mails, text_of
from hub.api.problems import Problem
from hub.audit import AuditEntry, write_audit
from hub.ops.auth import Operator, requires
from hub.runtime import Hub

router = APIRouter(prefix="/api/v1/mails", tags=["mails"])
Viewer = Annotated[Operator, requires("viewer")]
SYSTEM = "ketenhub-ops"
_AUDITED_IDS = 100  # mail ids named in one audit entry; the count names them all


def _sink_hub(request: Request) -> Hub:
    """The hub, when it keeps the mails: only with the embedded default (no KETENHUB_SMTP__HOST)."""
    hub: Hub = request.app.state.hub
    if hub.settings.smtp.host is not None:
        raise Problem(
            404, "No mail sink", "Mail goes to the configured SMTP server; the hub keeps no copies."
        )
    assert hub.store is not None
    return hub


async def _audit_read(hub: Hub, request: Request, op: Operator, mails: list[SinkMail], *, raw: bool) -> None:
    """Rule 18: an operator read these mails' content. No youth key: match mails carry nothing about
    the youth (rule 16); the Message-ID names the notification, whose `mail.sent` entry has it."""
    assert hub.store is not None
    entry = AuditEntry(
        action="mail.sink_read",
        user=op.username,
        objects={
            "mails": len(mails),
            "mail_ids": [m.id for m in mails[:_AUDITED_IDS]],
            "message_ids": [m.message_id for m in mails[:_AUDITED_IDS]],
            "raw": raw,
        },
    )
    async with hub.store.transaction() as session:
        tx = getattr(request.state, "transaction_id", None)
        await write_audit(session, entry, transaction_id=tx, system=SYSTEM)


@router.get("", summary="Mails the embedded SMTP sink received, newest first")
async def list_mails(
    request: Request, op: Viewer, limit: Annotated[int, Query(ge=1, le=500)] = 50, raw: bool = False
) -> dict[str, Any]:
    """Only with the embedded default (no KETENHUB_SMTP__HOST): a real server keeps its own mail.
    With `raw`, each raw message too (audited)."""
    hub = _sink_hub(request)
    assert hub.store is not None
    mails = await stored_mails(hub.store, limit)
    if raw and mails:
        await _audit_read(hub, request, op, mails, raw=True)
    return {"mails": [m.as_json(with_raw=raw) for m in mails]}


@router.get("/{mail_id}", summary="One mail the embedded SMTP sink received, its text (audited)")
async def read_mail(
    request: Request,
    op: Viewer,
    mail_id: Annotated[int, Path(ge=1, le=2**63 - 1)],
    raw: bool = False,
) -> dict[str, Any]:
    """The mail's plain text as a caseworker reads it, however old; with `raw`, the raw message too."""
    hub = _sink_hub(request)
    assert hub.store is not None
    mail = await stored_mail(hub.store, mail_id)
    if mail is None:
        raise Problem(404, "Not found", "No mail with this id in the sink.")
    await _audit_read(hub, request, op, [mail], raw=raw)
    return {**mail.as_json(with_raw=raw), "text": text_of(mail.raw)}
