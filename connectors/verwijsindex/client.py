"""HTTP client of the Verwijsindex contract; maps every failure to a transient or permanent error.

aiohttp, not httpx: every signal is a call, and httpx cost ten times the CPU per request here
(about 2.5 ms against 0.2 ms with 16 calls side by side; `bench/README.md`), which bounded the
connector's throughput.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from http import HTTPStatus
from types import TracebackType
from typing import Any, TypeVar

import aiohttp
from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails

from connectors.verwijsindex.contract import (
    ANSWER_EXTRA,
    NOT_FOUND,
    TRANSACTION_HEADER,
    Contactpersoon,
    ContactWijziging,
    Fout,
    IntrekkingsReden,
    Match,
    RuweMatchPagina,
    Signaal,
    SignaalRegistratie,
)
from hub.errors import PermanentError, TransientError
from hub.retry.policy import parse_retry_after
from schemas._base import NO_CONTROL, as_code, readable
from schemas.envelope import trace_id

M = TypeVar("M", bound=BaseModel)
# BSN-like numbers never leave in an error message: eight digits or more, also written in groups
# split by single spaces or dots ("999 99 0044", "999.990.044")
_DIGITS = re.compile(r"\d(?:[ .]?\d){7,}")
# Words that join a Dutch surname ("de Vries", "van der Berg", "'t Hart"): ordinary words, no secret
TUSSENVOEGSELS = frozenset(
    {"aan", "bij", "d", "da", "de", "del", "den", "der", "des", "di", "du", "het", "in", "la", "le", "l",
     "onder", "op", "over", "s", "t", "te", "ten", "ter", "tot", "uit", "uijt", "van", "vd", "voor", "von"}
)  # fmt: skip
_NAME_PARTS = re.compile(r"[\s\-'’.,]+")
_MIN_PART = 3  # shorter parts of a name are left: redacting them would cut ordinary words
_MAX_REASON = 300
_MAX_PROBLEMS = 10
_MAX_FIELD = 80


def youth_secrets(
    bsn: str | None, given_names: str, surname: str, prefix: str | None = None
) -> tuple[str, ...]:
    """What a vendor's text must not echo of a youth: the BSN, the names whole, and each meaningful
    part of them (not a tussenvoegsel, at least three letters), so that "Vries, S." loses its "Vries"
    though the surname held is "de Vries"."""
    whole = [n for n in (bsn, given_names, surname, f"{prefix} {surname}" if prefix else None) if n]
    parts = [
        part
        for name in (given_names, surname)
        for part in _NAME_PARTS.split(name)
        if len(part) >= _MIN_PART and part.casefold() not in TUSSENVOEGSELS
    ]
    return (*whole, *given_names.split(), *parts)


def redact(text: str, secrets: Iterable[str] = ()) -> str:
    """Remove BSN-like numbers and the given words (a youth's names) from a message."""
    for secret in sorted({s for s in secrets if s and len(s) > 1}, key=len, reverse=True):
        text = re.sub(re.escape(secret), "[…]", text, flags=re.IGNORECASE)
    return _DIGITS.sub("[…]", text)[:_MAX_REASON]


@dataclass(frozen=True)
class Answer:
    """What the index answered: status, reason phrase, headers and the body, read in full."""

    status_code: int
    reason_phrase: str
    headers: Mapping[str, str]
    content: bytes


@dataclass(frozen=True)
class RefusedMatch:
    """A feed entry that breaks the contract: its place on the page and what failed, never a value.

    `match_id` and `signal_id` are the entry's own ids where they are valid codes, else None.
    """

    position: int
    match_id: str | None
    signal_id: str | None
    problems: tuple[str, ...]

    @classmethod
    def of(cls, position: int, match_id: object, signal_id: object, exc: ValidationError) -> RefusedMatch:
        """The refusal of the entry at `position` for `exc`; the ids as the entry gave them."""
        return cls(position, as_code(match_id), as_code(signal_id), contract_problems(exc))


def contract_problems(exc: ValidationError) -> tuple[str, ...]:
    """What failed validation, as 'field: problem', without the values.

    A field name comes from the partner's input when the field is unknown, so it is made readable,
    stripped of BSN-like numbers and cut short.
    """
    found = []
    for error in exc.errors(include_url=False, include_input=False)[:_MAX_PROBLEMS]:
        where = ".".join(str(part) for part in error["loc"]) or "(body)"
        where = redact(readable(where.encode("utf-8", "replace").decode("utf-8")))[:_MAX_FIELD]
        found.append(f"{where}: {_problem(error)}")
    return tuple(found)


def _problem(error: ErrorDetails) -> str:
    if error["type"] == "string_pattern_mismatch" and error.get("ctx", {}).get("pattern") == NO_CONTROL:
        return "contains a control character (such as NUL)"
    if error["type"] == "string_unicode":
        return "is no valid Unicode text (a lone surrogate)"
    return error["msg"]


def _unreadable(exc: BaseException) -> str:
    """Why an answer could not be read as JSON at all."""
    if isinstance(exc, RecursionError):
        return "JSON nested too deeply"
    if isinstance(exc, json.JSONDecodeError | UnicodeDecodeError):
        return "no JSON"
    return "a number of too many digits"  # json.loads refuses an integer of more than 4,300 digits


def _reason(response: Answer) -> str:
    try:
        body: Any = json.loads(response.content)
    except (ValueError, RecursionError):
        return response.reason_phrase or "no reason given"
    if not isinstance(body, dict):
        return response.reason_phrase
    parts = [str(body.get("detail") or body.get("titel") or response.reason_phrase)]
    for fout in body.get("fouten") or []:
        if isinstance(fout, dict):
            parts.append(f"{fout.get('veld', '?')}: {fout.get('melding', '')}")
    return "; ".join(parts)


def _title(code: int) -> str:
    """A fixed title for `code` (the standard reason phrase), whatever the answer said."""
    try:
        return HTTPStatus(code).phrase
    except ValueError:
        return "error"


class Refused(PermanentError):
    """Another 4xx: the index refused the request as it was (its `status`)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class NotInIndex(PermanentError):
    """404 in the index's own error body: the index holds no signal with that id."""


class IndexConflict(PermanentError):
    """409: the call contradicts what the index holds under that id (a registration with another
    body, a new contact on a signal that is no longer active, a withdrawal with the other reason)."""


class MayHaveBeenDone(TransientError):
    """The call was sent and no answer says whether the index carried it out: it timed out, the
    connection was lost once it was made, or a 500, 502 or 504 came (a gateway's own failure among
    them). Tried again like any passing failure; a registration that ends so may be in the index."""


class AnswerUnreadable(PermanentError):
    """A 2xx whose body breaks the contract: the index did what was asked, and said so unreadably."""


# Answers after which the index may have carried the call out: not 503 (not served), 429 or 408
# (the request not taken), which say it was not.
_MAY_HAVE_BEEN_DONE = frozenset({500, 502, 504})


def _index_says_not_found(response: Answer) -> bool:
    """Whether a 404 is the index's answer about the signal (its `Fout` body), not a proxy's page or
    a wrong base URL's, which say nothing about the signal and must not settle a withdrawal."""
    try:
        fout = Fout.model_validate_json(response.content, extra=ANSWER_EXTRA)
    except ValidationError:
        return False
    return fout.titel == NOT_FOUND


class VerwijsindexClient:
    """One pooled aiohttp session per index; no retries here, the hub's retry ladder wraps it."""

    def __init__(self, base_url: str, *, timeout: float = 5.0, organisatie: str | None = None) -> None:
        self._base = base_url.rstrip("/")
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._organisatie = organisatie
        self._http: aiohttp.ClientSession | None = None  # opened on the first call, in its event loop

    def _session(self) -> aiohttp.ClientSession:
        if self._http is None or self._http.closed:
            self._http = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=20, keepalive_timeout=30),
                timeout=self._timeout,
            )
        return self._http

    async def __aenter__(self) -> VerwijsindexClient:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the pooled connections."""
        if self._http is not None:
            await self._http.close()
            self._http = None

    async def register(self, signal_id: str, body: SignaalRegistratie, transaction_id: str) -> Signaal:
        """PUT the signal; a repeat with the same body is a success too (idempotent)."""
        youth = body.jeugdige
        secrets = youth_secrets(youth.bsn, youth.voornamen, youth.geslachtsnaam, youth.voorvoegsel)
        response = await self._call(
            "PUT", f"/api/v1/signalen/{signal_id}", transaction_id, body=body.model_dump_json().encode(),
            op="register", secrets=secrets,
        )  # fmt: skip
        return self._parse(response, Signaal, "register")

    async def withdraw(
        self, signal_id: str, reason: IntrekkingsReden, transaction_id: str, *, secrets: Iterable[str] = ()
    ) -> Signaal:
        """DELETE the signal with a rule-15 reason (idempotent). `secrets`: what the index's errors
        must not echo (`youth_secrets` of the signal's youth), as for every call about one signal."""
        response = await self._call(
            "DELETE",
            f"/api/v1/signalen/{signal_id}",
            transaction_id,
            params={"reden": reason.value},
            op="withdraw",
            secrets=secrets,
        )
        return self._parse(response, Signaal, "withdraw")

    async def change_contact(
        self, signal_id: str, contact: Contactpersoon, transaction_id: str, *, secrets: Iterable[str] = ()
    ) -> Signaal:
        """PATCH the contact person (idempotent)."""
        body = ContactWijziging(contactpersoon=contact).model_dump_json().encode()
        response = await self._call(
            "PATCH",
            f"/api/v1/signalen/{signal_id}",
            transaction_id,
            body=body,
            op="change_contact",
            secrets=secrets,
        )
        return self._parse(response, Signaal, "change_contact")

    async def get(self, signal_id: str, transaction_id: str, *, secrets: Iterable[str] = ()) -> Signaal:
        """GET one signal's state."""
        response = await self._call(
            "GET", f"/api/v1/signalen/{signal_id}", transaction_id, op="get", secrets=secrets
        )
        return self._parse(response, Signaal, "get")

    async def matches(
        self, cursor: str | None, limit: int, transaction_id: str
    ) -> tuple[list[Match | RefusedMatch], str]:
        """One page of the match feed after `cursor` (None: from the start) and the next cursor.

        An entry that breaks the contract comes back as a RefusedMatch in its place; a page that
        does (its cursor above all) raises PermanentError.
        """
        params: dict[str, str | int] = {"limit": limit}
        if cursor:
            params["vanaf"] = cursor
        if self._organisatie:
            params["organisatie"] = self._organisatie
        # A page is about many youths, none of whom the hub can name here: an error is told by its
        # status alone, never with the index's own text (which may quote any of them).
        response = await self._call(
            "GET", "/api/v1/matches", transaction_id, params=params, op="matches", quote=False
        )
        where = f"verwijsindex matches: HTTP {response.status_code} answer"
        try:
            # The standard library's parser, not pydantic's: that one refuses the whole document for
            # a lone surrogate escape in one entry, which would block the feed on it.
            page = RuweMatchPagina.model_validate(json.loads(response.content), extra=ANSWER_EXTRA)
        except (ValueError, RecursionError) as exc:  # ValidationError is a ValueError too
            found = contract_problems(exc) if isinstance(exc, ValidationError) else (_unreadable(exc),)
            raise PermanentError(f"{where} breaks the contract: {'; '.join(found)}") from None
        return [_match(position, entry) for position, entry in enumerate(page.matches)], page.volgende

    async def ping(self) -> bool:
        """True when the index answers its health check; never raises."""
        try:
            await self._call("GET", "/api/v1/status", f"ping-{uuid.uuid4()}", op="ping")
        except (TransientError, PermanentError):
            return False
        return True

    async def _call(
        self,
        method: str,
        url: str,
        transaction_id: str,
        *,
        op: str,
        secrets: Iterable[str] = (),
        quote: bool = True,
        body: bytes | None = None,
        params: dict[str, str | int] | None = None,
    ) -> Answer:
        headers = {TRANSACTION_HEADER: trace_id(transaction_id)}  # ASCII, as a header must be
        if body is not None:
            headers["Content-Type"] = "application/json"
        where = f"verwijsindex {op}"
        try:
            async with self._session().request(
                method, self._base + url, headers=headers, data=body, params=params, allow_redirects=False
            ) as raw:
                response = Answer(raw.status, raw.reason or "", raw.headers, await raw.read())
        except aiohttp.ConnectionTimeoutError as exc:  # no connection made in time: nothing was sent
            raise TransientError(f"{where}: timed out ({type(exc).__name__})") from exc
        except TimeoutError as exc:
            raise MayHaveBeenDone(f"{where}: timed out ({type(exc).__name__})") from exc
        except aiohttp.ClientConnectorError as exc:  # no connection made: nothing was sent
            raise TransientError(f"{where}: connection failed ({type(exc).__name__})") from exc
        except aiohttp.ClientError as exc:
            raise MayHaveBeenDone(f"{where}: connection failed ({type(exc).__name__})") from exc
        code = response.status_code
        if code < 300:
            return response
        reason = redact(_reason(response), secrets) if quote else _title(code)
        if code == 429 or code == 408 or code >= 500:
            retry_after = parse_retry_after(response.headers.get("retry-after"))
            kind = MayHaveBeenDone if code in _MAY_HAVE_BEEN_DONE else TransientError
            raise kind(f"{where}: HTTP {code}: {reason}", retry_after=retry_after)
        if code == 404 and _index_says_not_found(response):
            raise NotInIndex(f"{where}: HTTP 404: {reason}")
        if code == 409:
            raise IndexConflict(f"{where}: HTTP 409: {reason}")
        raise Refused(code, f"{where}: HTTP {code}: {reason}")

    @staticmethod
    def _parse(response: Answer, model: type[M], op: str) -> M:
        """The answer as `model`; a field the contract does not know is ignored (`ANSWER_EXTRA`)."""
        try:
            return model.model_validate_json(response.content, extra=ANSWER_EXTRA)
        except ValidationError as exc:  # which fields, never their values
            found = "; ".join(contract_problems(exc))
            raise AnswerUnreadable(
                f"verwijsindex {op}: HTTP {response.status_code} answer breaks the contract: {found}"
            ) from None


def _match(position: int, entry: Any) -> Match | RefusedMatch:
    try:
        return Match.model_validate(entry, extra=ANSWER_EXTRA)
    except ValidationError as exc:
        ids = entry if isinstance(entry, dict) else {}
        return RefusedMatch.of(position, ids.get("match_id"), ids.get("signaal_id"), exc)
