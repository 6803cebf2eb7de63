"""`/api/v1/medewerkers`: the caseworker directory for administrators (operator login, hub/ops/auth).

Reading needs the role viewer; changing, importing, borging and resolving a problem need the role
operator. Every change is audited with the operator's name.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from pydantic import Field, ValidationError
from sqlalchemy.ext.asyncio import AsyncSession

from hub.api.limits import read_body
from hub.api.problems import InvalidParam, Problem
from hub.audit import AuditEntry, write_audit
from hub.directory.ids import CaseworkerId
from hub.directory.importer import ImportFileError, ImportStopped, import_csv
from hub.directory.mailbox import ALLOWED, email_problem
from hub.directory.service import (
    CaseworkerNotFound,
    get_caseworker,
    list_caseworkers,
    lock_caseworker,
    replace_caseworker,
    upsert_caseworker,
)
from hub.errors import PermanentError
from hub.notify.borging import borg, why
from hub.notify.problem_models import ProblemOut, ProblemsOut, ResolveIn
from hub.notify.problems import (
    ProblemAlreadyResolved,
    ProblemNotFound,
    ProblemStatus,
    list_problems,
    resolve_problem,
)
from hub.ops.auth import Operator, requires
from hub.runtime import Hub
from hub.signals.rules import phone_problem
from schemas._base import CanonicalModel, Email, Name, Phone
from schemas.caseworker import Absence, Caseworker, Team

router = APIRouter(prefix="/api/v1/medewerkers", tags=["medewerkers"])
Viewer = Annotated[Operator, requires("viewer")]
Admin = Annotated[Operator, requires("operator")]
SYSTEM = "ketenhub.directory"


class CaseworkerIn(CanonicalModel):
    """A caseworker as an administrator enters them (the id is in the path)."""

    name: Name
    email: Email
    phone: Phone | None = None
    team: Team
    meldingsbevoegd: bool = False
    absences: list[Absence] = Field(default_factory=list)
    delegate_id: CaseworkerId | None = None
    active: bool = True


class DelegateIn(CanonicalModel):
    """Who stands in; null removes the delegate."""

    delegate_id: CaseworkerId | None


def _own_delegate() -> Problem:
    return Problem(
        422, "Invalid delegate", "A caseworker cannot be their own delegate.",
        params=[InvalidParam(name="delegate_id", reason="same as the caseworker")],
    )  # fmt: skip


def _hub(request: Request) -> Hub:
    hub: Hub = request.app.state.hub
    assert hub.store is not None
    return hub


def _tx(request: Request) -> str | None:
    return getattr(request.state, "transaction_id", None)


async def _check_delegate(session: AsyncSession, cw: Caseworker) -> None:
    if cw.delegate_id is None:
        return
    try:
        await get_caseworker(session, cw.delegate_id)
    except CaseworkerNotFound:
        raise Problem(
            422, "Unknown delegate", "The delegate is not in the directory.",
            params=[InvalidParam(name="delegate_id", reason="unknown caseworker")],
        ) from None  # fmt: skip


def _check_phone(cw: Caseworker) -> None:
    """A caseworker who may signal becomes a signal's contact (rule 13, borging): their phone must
    fit the Verwijsindex, or every signal naming them is refused later, far from this mistake."""
    problem = phone_problem(cw.phone) if cw.meldingsbevoegd else None
    if problem is not None:
        raise Problem(
            422, "Phone unfit for the Verwijsindex",
            "This caseworker may signal, so the Verwijsindex gets their phone number as a signal's "
            "contact; it cannot take this one. Enter it with 6 to 20 digits (a leading + allowed).",
            params=[InvalidParam(name="phone", reason=problem)],
        )  # fmt: skip


def _check_email(cw: Caseworker) -> None:
    """Every mail for the caseworker goes to this address (and theirs, for whom they stand in): the
    hub must be able to send to it, or each would be dead-lettered later, far from this mistake."""
    problem = email_problem(cw.email)
    if problem is not None:
        raise Problem(
            422, "E-mail address the hub cannot send to",
            "The hub cannot send mail to this address (it sends without SMTPUTF8), so every mail for this "
            "caseworker would be dead-lettered; the reason says why. Enter the address as the mail "
            "system knows it, without a letter with an accent or diaeresis before the @.",
            params=[InvalidParam(name="email", reason=problem, allowed=ALLOWED)],
        )  # fmt: skip


async def _audit(request: Request, session: AsyncSession, op: Operator, cw: Caseworker, action: str) -> None:
    entry = AuditEntry(action=action, user=op.username, objects={"caseworker_id": cw.caseworker_id})
    await write_audit(session, entry, transaction_id=_tx(request), system=SYSTEM)


async def _edit(
    request: Request,
    op: Operator,
    caseworker_id: str,
    action: str,
    edit: Callable[[Caseworker], Caseworker | None],
) -> Caseworker:
    """Read, `edit` and write one caseworker in one transaction with their row locked, so requests at
    once each build on the one before; `edit` returns None for no change (nothing written or audited).
    The answer is the caseworker as this request left them."""
    hub = _hub(request)
    assert hub.store is not None
    async with hub.store.transaction() as session:
        current = await lock_caseworker(session, caseworker_id)
        if current is None:
            raise Problem(404, "Not found", "No caseworker with this id.")
        changed = edit(current)
        if changed is None:
            return current
        await _check_delegate(session, changed)
        await replace_caseworker(session, changed)
        await _audit(request, session, op, changed, action)
    return changed


async def _get(request: Request, caseworker_id: str) -> Caseworker:
    hub = _hub(request)
    assert hub.store is not None
    async with hub.store.transaction() as session:
        try:
            return await get_caseworker(session, caseworker_id)
        except CaseworkerNotFound:
            raise Problem(404, "Not found", "No caseworker with this id.") from None


@router.get("", summary="Every caseworker, with absences and delegate")
async def list_all(request: Request, op: Viewer) -> list[Caseworker]:
    hub = _hub(request)
    assert hub.store is not None
    async with hub.store.transaction() as session:
        return await list_caseworkers(session)


@router.get(
    "/problemen",
    summary=(
        "What an administrator must fix: mails nobody could read or that did not go out, matches the"
        " Verwijsindex sent that broke its contract, borging without delegate"
    ),
    response_model=ProblemsOut,
)
async def problems(
    request: Request,
    op: Viewer,
    status: Annotated[
        ProblemStatus,
        Query(description="open (the default): still to act on; resolved: resolved ones; all: both"),
    ] = "open",
    limit: Annotated[int, Query(ge=1, le=1000, description="recorded problems, at most")] = 200,
) -> dict[str, Any]:
    """Recorded problems, the most recently found first, and who is away today without a reachable
    delegate (found now). A problem is open until it is resolved: by the hub when it sees its cause
    go (a mail sent after all, a borging done or no longer due), or by an administrator
    (POST .../problemen/{id}/oplossing). Each resolved one says when, by whom, how and why."""
    from hub.directory.service import mail_recipient

    hub = _hub(request)
    assert hub.store is not None
    today = hub.today()
    async with hub.store.transaction() as session:
        recorded = await list_problems(session, status, limit)
        unreachable = []
        for cw in await list_caseworkers(session):
            if cw.active and not cw.is_absent_on(today):
                continue
            try:
                await mail_recipient(session, cw.caseworker_id, today)
            except PermanentError:
                unreachable.append({"caseworkerId": cw.caseworker_id, "name": cw.name, "active": cw.active})
    return {"unreachableNow": unreachable, "recorded": recorded}


@router.post(
    "/problemen/{problem_id}/oplossing",
    summary="Mark a problem resolved, with what was done about it (audited)",
    response_model=ProblemOut,
)
async def resolve(
    request: Request,
    op: Admin,
    problem_id: Annotated[int, Path(ge=1, le=2**63 - 1)],
    body: ResolveIn,
) -> dict[str, Any]:
    """The problem, resolved by this operator with their reason; audited (`problem.resolved`, with the
    reason's length: the reason itself stays on the problem). 404 for an unknown id; 409 when it was
    resolved already, by the hub or another operator, whose resolution stands. Found again later, a
    borging problem opens again."""
    hub = _hub(request)
    assert hub.store is not None
    try:
        async with hub.store.transaction() as session:
            return await resolve_problem(
                session, problem_id, user=op.username, reason=body.reason,
                transaction_id=_tx(request), system=SYSTEM,
            )  # fmt: skip
    except ProblemNotFound:
        raise Problem(404, "Not found", "No problem with this id.") from None
    except ProblemAlreadyResolved as exc:
        done = exc.problem
        raise Problem(
            409, "Already resolved",
            f"This problem was resolved already ({done['resolvedHow']}: {done['resolvedBy']}, "
            f"{done['resolvedAt']}); its resolution stands.",
        ) from None  # fmt: skip


@router.post(
    "/import",
    summary="Load a semicolon CSV (Dutch headers); a report per row",
    openapi_extra={
        "requestBody": {
            "required": True,
            "description": "Puntkomma-gescheiden, met de kolommen Medewerkernummer;Naam;E-mail;Team en "
            "naar keuze Telefoon, Meldingsbevoegd, Vervanger, Actief, Afwezig vanaf, Afwezig tot en met.",
            "content": {"text/csv": {"schema": {"type": "string"}}},
        }
    },
)
async def import_file(request: Request, op: Admin) -> dict[str, Any]:
    hub = _hub(request)
    assert hub.store is not None
    data = await read_body(request, hub.settings.http.max_body_bytes)
    try:
        report = await import_csv(hub.store, data, user=op.username, transaction_id=_tx(request))
    except ImportFileError as exc:
        raise Problem(400, "Unreadable CSV", str(exc)) from None
    except ImportStopped as exc:
        raise Problem(503, "Import gestopt", str(exc)) from None
    return report.as_json()


@router.get("/{caseworker_id}", summary="One caseworker")
async def read(request: Request, op: Viewer, caseworker_id: CaseworkerId) -> Caseworker:
    return await _get(request, caseworker_id)


@router.put(
    "/{caseworker_id}",
    summary="Create or replace a caseworker",
    responses={201: {"description": "Created", "model": Caseworker}},
)
async def put(
    request: Request, op: Admin, caseworker_id: CaseworkerId, body: CaseworkerIn, response: Response
) -> Caseworker:
    if body.delegate_id == caseworker_id:
        raise _own_delegate()
    try:
        cw = Caseworker(caseworker_id=caseworker_id, **body.model_dump())
    except ValidationError as exc:  # path and body are checked already; answered like them if not
        raise RequestValidationError(exc.errors(include_input=False)) from None
    hub = _hub(request)
    assert hub.store is not None
    _check_phone(cw)
    _check_email(cw)
    async with hub.store.transaction() as session:
        await _check_delegate(session, cw)
        created = await upsert_caseworker(session, cw)  # one statement decides: 201 for one request only
        await _audit(request, session, op, cw, "directory.caseworker_saved")
    response.status_code = 201 if created else 200
    return cw


@router.post("/{caseworker_id}/afwezigheden", status_code=201, summary="Add an absence")
async def add_absence(request: Request, op: Admin, caseworker_id: CaseworkerId, body: Absence) -> Caseworker:
    def add(cw: Caseworker) -> Caseworker | None:
        return None if body in cw.absences else cw.model_copy(update={"absences": [*cw.absences, body]})

    return await _edit(request, op, caseworker_id, "directory.absence_added", add)


@router.delete("/{caseworker_id}/afwezigheden", summary="Remove every absence (the caseworker is back)")
async def clear_absences(request: Request, op: Admin, caseworker_id: CaseworkerId) -> Caseworker:
    def clear(cw: Caseworker) -> Caseworker:
        return cw.model_copy(update={"absences": []})

    return await _edit(request, op, caseworker_id, "directory.absences_cleared", clear)


@router.put("/{caseworker_id}/vervanger", summary="Set or remove the delegate")
async def set_delegate(
    request: Request, op: Admin, caseworker_id: CaseworkerId, body: DelegateIn
) -> Caseworker:
    def delegate(cw: Caseworker) -> Caseworker:
        if body.delegate_id == caseworker_id:
            raise _own_delegate()
        return cw.model_copy(update={"delegate_id": body.delegate_id})

    return await _edit(request, op, caseworker_id, "directory.delegate_set", delegate)


@router.post(
    "/{caseworker_id}/borging", summary="Move the caseworker's active signals to the delegate (rule 17)"
)
async def run_borging(request: Request, op: Admin, caseworker_id: CaseworkerId) -> dict[str, Any]:
    hub = _hub(request)
    assert hub.store is not None and hub.relay is not None
    cw = await _get(request, caseworker_id)
    reason = why(cw, hub.today(), hub.settings.notify.borging_after_days) or "niet beschikbaar is"
    async with hub.store.transaction() as session:
        result = await borg(
            session, hub, caseworker_id, reason=reason, user=op.username, transaction_id=_tx(request)
        )
    hub.relay.wake()
    if result.problem:
        raise Problem(409, "No delegate", "Nobody can take over: set a reachable delegate first.")
    return result.as_json()
