"""A faithful simulator of the Verwijsindex Haaglanden: the contract of `contract.py`, with faults."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, Any

import uvicorn
from fastapi import APIRouter, FastAPI, Header, Path, Query, Request, Response, status
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from connectors.verwijsindex.contract import (
    NOT_FOUND,
    TRANSACTION_HEADER,
    ContactWijziging,
    Fout,
    IntrekkingsReden,
    MatchPagina,
    Signaal,
    SignaalRegistratie,
    Status,
    VeldFout,
)
from connectors.verwijsindex.sim_faults import CallLog, FaultMiddleware, Faults, summarise
from connectors.verwijsindex.sim_state import Conflict, NotFound, Rejected, SimulatorState

log = logging.getLogger(__name__)

TransactionId = Annotated[
    str,
    Header(
        alias=TRANSACTION_HEADER,
        min_length=1,
        max_length=100,
        description="FSC transaction id (rule 19); recorded with the call. Required on every call.",
    ),
]
SignaalId = Annotated[
    str,
    Path(alias="signaalId", min_length=1, max_length=100, description="Chosen by the client (a UUID)."),
]

_ERRORS: dict[int | str, dict[str, Any]] = {
    422: {"model": Fout, "description": "Invalid body or a broken rule (whitelist, rule 12)."},
    429: {"model": Fout, "description": "Too many requests; wait `Retry-After` seconds."},
    503: {"model": Fout, "description": "Temporarily unavailable; retry later."},
}
_NOT_FOUND: dict[int | str, dict[str, Any]] = {404: {"model": Fout, "description": "Unknown signaalId."}}
_BAD_CURSOR: dict[int | str, dict[str, Any]] = {
    400: {"model": Fout, "description": "Not a cursor of this index."}
}
_CONFLICT: dict[int | str, dict[str, Any]] = {
    409: {"model": Fout, "description": "Contradicts stored state."}
}

DESCRIPTION = """
Contract between ketenhub (Halt Den Haag) and the **Verwijsindex Haaglanden** (Jeugdwet §7.1).

* Every call carries the header `Fsc-Transaction-Id`; the index records it (rule 19).
* Writes are **idempotent** so that clients may retry safely: the signal id is chosen by the
  client. `PUT` with the same body again answers 200 with the same result; a different body for
  the same id answers 409. `DELETE` and `PATCH` repeated answer 200 with the current state.
* A `DELETE` of an id the index does not hold answers 404 and is remembered: a `PUT` of that id
  afterwards answers 409 and stores nothing. A client that gave up waiting for a registration and
  then withdrew it cannot tell whether the registration is still being carried out; the index
  makes sure it does not become active after the withdrawal.
* A signal holds only the youth's identifiers, the organisation, the contact person, the created
  date and the end date. Any other field is refused with 422.
* End date: after the created date, at most created + 2 years and at most the 23rd birthday.
  A signal is active up to and including its end date, then `VERLOPEN`.
* Matches: signals of two different organisations on one BSN (CLIENTMATCH), or on youths who
  share a parent in the population register (GEZINSMATCH). Each involved signal's organisation
  gets one feed entry per pair, carrying only the other professional's contact details.
* Errors: 4xx other than 408/429 are permanent; 408, 429 (honour `Retry-After`) and 5xx are
  transient. Error bodies never echo submitted values.
"""


def _fout(code: int, titel: str, detail: str, fouten: list[VeldFout] | None = None) -> JSONResponse:
    body = Fout(titel=titel, detail=detail, fouten=fouten or [])
    return JSONResponse(status_code=code, content=body.model_dump(mode="json"))


def _add_error_handlers(app: FastAPI) -> None:
    async def on_validation(_: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestValidationError)
        fouten = [
            VeldFout(veld=".".join(str(p) for p in err.get("loc", ())), melding=str(err.get("msg", "")))
            for err in exc.errors()
        ]
        return _fout(422, "Unprocessable Entity", "the request does not fit the contract", fouten)

    async def on_http(_: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        return _fout(exc.status_code, "Error", str(exc.detail))

    async def on_domain(_: Request, exc: Exception) -> Response:
        code = {Conflict: 409, NotFound: 404, Rejected: 422}[type(exc)]
        titles = {409: "Conflict", 404: NOT_FOUND, 422: "Unprocessable Entity"}
        return _fout(code, titles[code], str(exc))

    app.add_exception_handler(RequestValidationError, on_validation)
    app.add_exception_handler(HTTPException, on_http)
    for kind in (Conflict, NotFound, Rejected):
        app.add_exception_handler(kind, on_domain)


def _api(state: SimulatorState) -> APIRouter:
    api = APIRouter(prefix="/api/v1", tags=["verwijsindex"])

    @api.put(
        "/signalen/{signaalId}",
        response_model=Signaal,
        status_code=status.HTTP_201_CREATED,
        summary="Register a signal (idempotent)",
        description="201 on first registration; 200 with the same result for the same body again; "
        "409 when the id is taken by a different body. Matches are computed at once.",
        responses={200: {"model": Signaal, "description": "Already registered with this body."}}
        | _CONFLICT
        | _ERRORS,
    )
    async def register(
        signaal_id: SignaalId, body: SignaalRegistratie, tx: TransactionId, response: Response
    ) -> Signaal:
        signaal, created = state.register(signaal_id, body)
        if not created:
            response.status_code = status.HTTP_200_OK
        log.debug("signal %s registered=%s tx=%s", signaal_id, created, tx)
        return signaal

    @api.delete(
        "/signalen/{signaalId}",
        response_model=Signaal,
        summary="Withdraw a signal with a reason (idempotent)",
        description="Rule 15: `reden` is ONTERECHT or RISICO_WEG. Repeating it, or withdrawing an "
        "expired signal, answers 200 with the current state; the other reason afterwards is 409.",
        responses=_NOT_FOUND | _CONFLICT | _ERRORS,
    )
    async def withdraw(signaal_id: SignaalId, reden: IntrekkingsReden, tx: TransactionId) -> Signaal:
        signaal = state.withdraw(signaal_id, reden)
        log.debug("signal %s withdrawn (%s) tx=%s", signaal_id, reden.value, tx)
        return signaal

    @api.patch(
        "/signalen/{signaalId}",
        response_model=Signaal,
        summary="Change the contact person (idempotent)",
        description="Used when a caseworker is absent or leaves (borging, rule 17). The same contact "
        "again is 200; a new contact on a signal that is no longer active is 409.",
        responses=_NOT_FOUND | _CONFLICT | _ERRORS,
    )
    async def change_contact(signaal_id: SignaalId, body: ContactWijziging, tx: TransactionId) -> Signaal:
        signaal = state.change_contact(signaal_id, body.contactpersoon)
        log.debug("signal %s contact changed tx=%s", signaal_id, tx)
        return signaal

    @api.get(
        "/signalen/{signaalId}",
        response_model=Signaal,
        summary="Read a signal's state",
        description="The youth's identifiers are not echoed.",
        responses=_NOT_FOUND | _ERRORS,
    )
    async def read(signaal_id: SignaalId, tx: TransactionId) -> Signaal:
        return state.get(signaal_id)

    @api.get(
        "/matches",
        response_model=MatchPagina,
        summary="The match feed",
        description="Matches after cursor `vanaf` (omit it to start at the beginning), oldest first, "
        "and `volgende`: the cursor to pass next time. Cursors are opaque, compare as strings in "
        "feed order and never go back, also across a restart of the index. Store `volgende` only "
        "after the page is processed; each `match_id` is delivered once per cursor position.",
        responses=_BAD_CURSOR | _ERRORS,
    )
    async def matches(
        tx: TransactionId,
        vanaf: Annotated[str | None, Query(max_length=64)] = None,
        limit: Annotated[int, Query(ge=1, le=500)] = 100,
        organisatie: Annotated[str | None, Query(max_length=50, description="Only this code.")] = None,
    ) -> MatchPagina:
        try:
            return state.matches_after(vanaf, limit, organisatie)
        except ValueError as exc:
            raise HTTPException(status.HTTP_400_BAD_REQUEST, str(exc)) from exc

    @api.get("/status", response_model=Status, summary="Health check", responses=_ERRORS)
    async def health(tx: TransactionId) -> Status:
        return Status()

    return api


def _admin(state: SimulatorState) -> APIRouter:
    admin = APIRouter(prefix="/admin", tags=["simulator admin"])

    @admin.get("/faults", response_model=Faults, summary="Current fault injection")
    async def get_faults() -> Faults:
        return state.faults.faults

    @admin.post("/faults", response_model=Faults, summary="Replace fault injection (releases hung calls)")
    async def set_faults(faults: Faults) -> Faults:
        state.faults.set(faults)
        log.info("faults set: %s", faults.model_dump(exclude_defaults=True))
        return faults

    @admin.get("/calls", response_model=CallLog, summary="Calls received under /api/, with transaction ids")
    async def calls() -> CallLog:
        return summarise(state.faults.calls)

    @admin.post("/reset", status_code=204, summary="Forget signals, matches, calls and faults")
    async def reset() -> None:
        state.reset()

    return admin


def create_simulator(
    state: SimulatorState | None = None, *, faults: Faults | None = None, seed: int | None = None
) -> FastAPI:
    """Build the simulator app; `faults` and `seed` apply only when no `state` is given."""
    held = state if state is not None else SimulatorState(faults=faults, seed=seed)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield
        held.faults.release_hangs()

    app = FastAPI(
        title="Verwijsindex Haaglanden (ketenhub contract and simulator)",
        version="1.0.0",
        description=DESCRIPTION,
        lifespan=lifespan,
    )
    app.state.simulator = held
    _add_error_handlers(app)
    app.include_router(_api(held))
    app.include_router(_admin(held))
    app.add_middleware(FaultMiddleware, controller=held.faults)
    return app


def main(port: int, host: str = "127.0.0.1", faults: Faults | None = None) -> None:
    """Serve a simulator with uvicorn until interrupted (`ketenhub simulate verwijsindex`)."""
    app = create_simulator(faults=faults)
    uvicorn.run(app, host=host, port=port, log_level="info", timeout_graceful_shutdown=5)
