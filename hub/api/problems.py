"""RFC 9457 problem details (application/problem+json), in the style of the NL API Design Rules."""

from __future__ import annotations

import json
import socket
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import exc as sa_exc
from starlette.exceptions import HTTPException as StarletteHTTPException

from hub.errors import DependencyDown, connect_failed
from hub.intake.batcher import BatcherClosed
from hub.logging import get_logger, redact_text
from hub.store import commit_unknown, store_failed
from schemas.problems import FieldProblem, PartnerFormatError, controls_refused

PROBLEM_JSON = "application/problem+json"
log = get_logger(__name__)
# A connection lost, the hub stopping: 503; and the store unreachable or locked past its timeout
# (`store_failed`, below: not a statement's own mistake, which SQLite reports as an OperationalError).
UNAVAILABLE: tuple[type[Exception], ...] = (
    ConnectionError,  # refused, reset, lost
    TimeoutError,
    socket.gaierror,  # the store's name did not resolve: DNS down for a moment
    sa_exc.TimeoutError,  # no free connection in the store's pool in time: not a DBAPIError
    BatcherClosed,
)


RETRY_AFTER_S = 5
# The store lost its connection while it kept the request (`hub.store.commit_unknown`): kept or not,
# the same request sent again is answered with what the first one made, never made twice.
COMMIT_UNKNOWN_DETAIL = (
    "De verbinding met de opslag viel weg terwijl dit werd vastgelegd; het kan zijn opgeslagen. "
    "Stuur hetzelfde verzoek na Retry-After opnieuw, met dezelfde Idempotency-Key als u die meestuurde "
    "(een verwijzing: met hetzelfde zaaknummer): dan krijgt u wat het eerste verzoek maakte en wordt "
    "niets dubbel gemaakt. Zonder Idempotency-Key kan een signaal, overdracht of toestemming dubbel "
    "ontstaan: kijk dan eerst of het er al is."
)


class InvalidParam(BaseModel):
    """One field that was wrong: where, what was wrong, what is allowed."""

    model_config = ConfigDict(populate_by_name=True)

    name: str
    reason: str
    allowed: str | None = None
    partner_field: str | None = Field(
        default=None,
        alias="partnerField",
        description="when `name` is the hub's canonical field (a referral's `case_reference` in a 409), "
        "the same field in the partner's own format, as its format errors name it (`procesVerbaalNummer`, "
        "`bonnummer`, `aanmeldnummer`); absent where `name` is the partner's own field already",
    )


class ProblemBody(BaseModel):
    """The body of every error answer."""

    type: str = "about:blank"
    title: str
    status: int
    detail: str | None = None
    instance: str | None = None
    invalid_params: list[InvalidParam] = Field(default_factory=list, alias="invalidParams")


class Problem(Exception):
    """Raise to answer with a problem+json body."""

    def __init__(
        self,
        status: int,
        title: str,
        detail: str | None = None,
        *,
        params: list[InvalidParam] | None = None,
        headers: dict[str, str] | None = None,
        type_: str = "about:blank",
    ) -> None:
        super().__init__(title)
        self.status, self.title, self.detail = status, title, detail
        self.params, self.headers, self.type = params or [], headers or {}, type_


class HubStarting(Problem):
    """503 while the hub has not started (no store or broker yet): the sender tries again shortly."""

    def __init__(self) -> None:
        super().__init__(
            503,
            "De hub start nog",
            "Probeer het over enkele seconden opnieuw.",
            headers={"Retry-After": str(RETRY_AFTER_S)},
        )


def problem_response(
    status: int,
    title: str,
    detail: str | None = None,
    *,
    params: list[InvalidParam] | None = None,
    instance: str | None = None,
    headers: dict[str, str] | None = None,
    type_: str = "about:blank",
) -> JSONResponse:
    """A problem+json response; texts pass the BSN redactor, so no value can leak back.

    Every 503 says when to try again (Retry-After): a partner's client must not guess, nor give up.
    """
    if status == 503 and not any(k.lower() == "retry-after" for k in headers or {}):
        headers = {**(headers or {}), "Retry-After": str(RETRY_AFTER_S)}
    body: dict[str, Any] = {"type": type_, "title": title, "status": status}
    if detail:
        body["detail"] = redact_text(detail)
    if instance:
        body["instance"] = instance
    if params:
        body["invalidParams"] = [
            {k: redact_text(v) for k, v in p.model_dump(exclude_none=True, by_alias=True).items()}
            for p in params
        ]
    return JSONResponse(body, status_code=status, media_type=PROBLEM_JSON, headers=headers)


def params_from_problems(problems: list[FieldProblem]) -> list[InvalidParam]:
    """Partner-format problems as invalidParams."""
    return [InvalidParam(name=p.field, reason=p.problem, allowed=p.allowed) for p in problems]


def _loc(loc: tuple[Any, ...]) -> str:
    parts = [str(p) for p in loc if p not in ("body", "query", "path", "header")]
    return ".".join(parts) or "(body)"


def install_problem_handlers(app: FastAPI) -> None:
    """Every error the API answers is problem+json; never a stack trace, never an input value."""

    @app.exception_handler(Problem)
    async def _problem(request: Request, exc: Problem) -> JSONResponse:
        return problem_response(
            exc.status,
            exc.title,
            exc.detail,
            params=exc.params,
            instance=request.url.path,
            headers=exc.headers,
            type_=exc.type,
        )

    @app.exception_handler(PartnerFormatError)
    async def _partner_format(request: Request, exc: PartnerFormatError) -> JSONResponse:
        return problem_response(
            400,
            "Het bericht voldoet niet aan het formaat van de partner",
            "Zie invalidParams: welk veld, wat er mis is en wat is toegestaan.",
            params=params_from_problems(exc.problems),
            instance=request.url.path,
        )

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        params = [
            InvalidParam(name=_loc(tuple(e.get("loc", ()))), reason=controls[0], allowed=controls[1])
            if (controls := controls_refused(e)) is not None
            else InvalidParam(name=_loc(tuple(e.get("loc", ()))), reason=str(e.get("msg", "ongeldig")))
            for e in exc.errors()
        ]
        return problem_response(
            400,
            "Ongeldige aanvraag",
            "Een of meer velden zijn ongeldig.",
            params=params,
            instance=request.url.path,
        )

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        detail = exc.detail if isinstance(exc.detail, str) else None
        return problem_response(
            exc.status_code,
            detail or "Fout",
            None,
            instance=request.url.path,
            headers=dict(exc.headers or {}),
        )

    async def _unavailable(request: Request, exc: Exception) -> JSONResponse:
        # The store (or a dependency) is unreachable: nothing was kept, so the sender must try again.
        if commit_unknown(exc):  # ... unless the answer to its COMMIT was what got lost
            log.warning("store commit outcome unknown", path=request.url.path, error_class=type(exc).__name__)
            return problem_response(
                503,
                "Niet zeker of dit is opgeslagen",
                COMMIT_UNKNOWN_DETAIL,
                instance=request.url.path,
                headers={"Retry-After": str(RETRY_AFTER_S)},
            )
        log.warning("dependency unavailable", path=request.url.path, error_class=type(exc).__name__)
        # what is down, when the hub said so itself (the brokers for the console's reads); else the
        # sender's assurance that nothing was kept
        said = f"{exc}. " if isinstance(exc, DependencyDown) else "Er is niets opgeslagen. "
        return problem_response(
            503,
            "De hub kan dit nu niet verwerken",
            said + "Probeer het over enkele seconden opnieuw.",
            instance=request.url.path,
            headers={"Retry-After": str(RETRY_AFTER_S)},
        )

    for unavailable in UNAVAILABLE:
        app.add_exception_handler(unavailable, _unavailable)

    @app.exception_handler(sa_exc.DBAPIError)
    async def _database(request: Request, exc: Exception) -> JSONResponse:
        # Another database error: the store breaking a deadlock (PostgreSQL) is worth trying again
        # like an outage, nothing having been kept; any other is the hub's own fault.
        if store_failed(exc):
            return await _unavailable(request, exc)
        return await _unexpected(request, exc)

    @app.exception_handler(OSError)
    async def _os_error(request: Request, exc: Exception) -> JSONResponse:
        if connect_failed(exc):
            return await _unavailable(request, exc)
        raise exc  # the hub's own fault: the 500 below, and the server logs its traceback

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.error("unhandled error", path=request.url.path, error_class=type(exc).__name__)
        return problem_response(
            500,
            "Interne fout",
            "Er ging iets mis in de hub; probeer het later opnieuw.",
            instance=request.url.path,
        )


# Problem answers every API operation may give besides its own. FastAPI's default 422 (its
# validation error body) is replaced: malformed input is answered with 400 by the handler above,
# and 422 is a problem+json too, for a request that is well-formed but breaks a rule.
_COMMON = {
    "400": "Ongeldige aanvraag (zie invalidParams)",
    "401": "Niet geauthenticeerd",
    "403": "Niet toegestaan voor deze rol of partner",
    "404": "Niet gevonden",
    "409": "Conflict met de huidige toestand",
    "413": "Bericht te groot",
    "415": "Verkeerd Content-Type",
    "422": "Goed gevormd, maar in strijd met een regel",
    "503": "De hub start nog of een afhankelijkheid is niet bereikbaar",
}
# A partner's writes and reads are limited (hub.api.limits.PartnerRate): every operation that takes a
# partner key (this security scheme: hub.partners.auth.PartnerKey) may answer 429 with Retry-After.
PARTNER_SCHEME = "HTTPBearer"
TOO_MANY_REQUESTS = (
    "Te veel verzoeken van deze partner; er is niets opgeslagen, probeer het na Retry-After opnieuw"
)
TOO_MANY_READS = (
    "Te veel leesverzoeken van deze partner; er is niets gelezen, probeer het na Retry-After opnieuw"
)
_TOO_MANY = dict.fromkeys(("post", "put", "patch", "delete"), TOO_MANY_REQUESTS) | dict.fromkeys(
    ("get", "head"), TOO_MANY_READS
)
RETRY_AFTER_HEADER = {
    "Retry-After": {
        "description": "Hele seconden tot het verzoek opnieuw kan",
        "required": True,
        "schema": {"type": "integer", "minimum": 1},
    }
}


def document_problems(app: FastAPI) -> None:
    """Make the OpenAPI document say what the API really answers: problem+json on every error."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        schema = build()
        schemas = schema.setdefault("components", {}).setdefault("schemas", {})
        schemas.setdefault(
            "ProblemBody", ProblemBody.model_json_schema(ref_template="#/components/schemas/{model}")
        )
        for name, sub in (
            ProblemBody.model_json_schema(ref_template="#/components/schemas/{model}")
            .get("$defs", {})
            .items()
        ):
            schemas.setdefault(name, sub)
        schemas["ProblemBody"].pop("$defs", None)
        ref = {PROBLEM_JSON: {"schema": {"$ref": "#/components/schemas/ProblemBody"}}}
        for path, operations in schema.get("paths", {}).items():
            if not path.startswith(("/api/", "/ops/")):
                continue
            for method, operation in operations.items():
                responses = operation.setdefault("responses", {})
                if "HTTPValidationError" in json.dumps(responses.get("422", {})):
                    del responses["422"]
                for code, text in _COMMON.items():
                    responses.setdefault(code, {"description": text, "content": ref})
                if method in _TOO_MANY and {PARTNER_SCHEME: []} in operation.get("security", []):
                    too_many = {"description": _TOO_MANY[method], "content": ref}
                    responses.setdefault("429", too_many | {"headers": RETRY_AFTER_HEADER})
        text = json.dumps(schema)
        for unused in ("HTTPValidationError", "ValidationError"):
            if f"#/components/schemas/{unused}" not in text.replace(f'"{unused}":', ""):
                schemas.pop(unused, None)
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]
