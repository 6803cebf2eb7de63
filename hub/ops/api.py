"""The operator API under /ops/api: health, connectors, dead letters and replay jobs, the timeline."""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Request
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, JsonValue
from pydantic_core import PydanticCustomError
from sqlalchemy import String, cast, or_, select

from hub.api.problems import Problem
from hub.audit import audit_row, write_audits
from hub.errors import TransientError
from hub.logging import holds_bsn_in_groups
from hub.ops.auth import Operator, requires
from hub.ops.console import Console, console_of
from hub.ops.dlq import SYSTEM, Reason
from hub.ops.dlq_jobs import KEEP_FINISHED, ReplayBusy, describe
from hub.ops.dlq_records import DeadLetter, Filter
from hub.ops.masking import BETWEEN_DIGITS, is_youth_key, show_headers, show_payload
from hub.signals import NotInformed, SignalNotActive, SignalNotFound, UnfitContact, register_again
from hub.signals.service import RegistrationOnItsWay
from hub.signals.waiting import waits_of
from hub.spine.outbox import outbox_state
from hub.store.tables import audit_log
from schemas._base import Plain, is_number
from schemas.envelope import utcnow

router = APIRouter(prefix="/ops/api", tags=["operators"])
Viewer = Annotated[Operator, requires("viewer")]
Acting = Annotated[Operator, requires("operator")]


def _console(request: Request) -> Console:
    return console_of(request.app.state.hub)


@router.get("/me", summary="Who is logged in")
async def me(op: Viewer) -> dict[str, Any]:
    """Username and role (the dashboard hides what the role may not do)."""
    return {"username": op.username, "role": op.role}


@router.get("/health", summary="Lag, verdicts, rates, DLQ depth and parked retries")
async def health(request: Request, op: Viewer) -> dict[str, Any]:
    """Per group and topic: lag in messages and seconds, in/out rates, verdict; per topic DLQ depth."""
    return (await _console(request).monitor.health()).as_json()


@router.get("/connectors", summary="Connector status: last success, last error, reachable")
async def connectors(request: Request, op: Viewer) -> dict[str, Any]:
    """From each component's `status()` when it has one, else from the readiness check."""
    console = _console(request)
    checks = await console.hub.readiness()
    out: dict[str, Any] = {}
    for name in ("store", "broker"):
        out[name] = {"reachable": checks.get(name) == "ok", "detail": checks.get(name)}
    relay = console.hub.relay
    if relay is not None and console.hub.store is not None:
        state = await outbox_state(console.hub.store)
        problem = relay.last_error or (
            f"{state.parked} row(s) parked as larger than the brokers take: `ketenhub outbox list`"
            if state.parked
            else None
        )
        out["outbox"] = {
            "reachable": relay.last_error is None,
            "last_success": relay.last_published_at.isoformat() if relay.last_published_at else None,
            "last_error": problem,
            "detail": None,
            **state.as_json(),
        }
    for name, component in console.connectors().items():
        status = getattr(component, "status", None)
        info: dict[str, Any] = dict(status()) if callable(status) else {}
        info.setdefault("reachable", checks.get(name, "ok") == "ok")
        info.setdefault("detail", checks.get(name))
        out[name] = info
    return out


def _filter(
    op: Operator,
    topic: str | None,
    error_class: str | None,
    since: datetime | None,
    until: datetime | None,
    key: str | None,
    status: str | None = "open",
) -> Filter:
    raw_key = key is not None and not is_youth_key(key)
    if raw_key and not op.may("privacy_officer"):  # a search by a BSN tells whose letters there are
        raise Problem(
            403,
            "Not allowed",
            "Only a youth key (64 hex characters) can be searched for; any other key is personal data,"
            " and searching by one needs the role privacy_officer.",
        )
    return Filter(
        topic,
        error_class,
        since,
        until,
        key,
        None if status == "all" else status or "open",
        raw_keys=raw_key,
    )


_MOMENT = "ISO 8601 date or date and time; without an offset it is Dutch local time"


def _moment_as_text(value: object) -> object:
    # pydantic reads a number as seconds since 1970: `until=9` listed nothing, and a replay of
    # `{"since": 9}` took every dead letter; the document allows a date and time written out only
    if is_number(value):
        raise PydanticCustomError(
            "datetime_type",
            "an ISO 8601 date or date and time (2026-03-01 or 2026-03-01T10:30:00+01:00), not a number",
        )
    return value


AsText = BeforeValidator(_moment_as_text)


@router.get("/dlq", summary="Dead letters, filtered")
async def list_dead_letters(
    request: Request,
    op: Acting,
    topic: str | None = None,
    error_class: str | None = None,
    since: Annotated[datetime | None, AsText, Query(description=_MOMENT)] = None,
    until: Annotated[datetime | None, AsText, Query(description=_MOMENT)] = None,
    key: Annotated[
        str | None, Query(description="a youth key; any other key: POST /ops/api/dlq/search")
    ] = None,
    status: Annotated[str | None, Query(pattern="^(open|replayed|discarded|all)$")] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 200,
) -> dict[str, Any]:
    """Oldest first; `status` open by default (all, replayed, discarded). Keys other than youth keys
    are personal data: shown masked, and searched for only by a privacy officer (audited), with the
    key in the body of POST /ops/api/dlq/search, never in a URL (proxies and browsers keep URLs)."""
    if key is not None and not is_youth_key(key):
        raise Problem(
            400,
            "Key in the URL",
            "A key other than a youth key (64 hex characters) is personal data, and a URL is kept in"
            " access logs and browser history: search for it with POST /ops/api/dlq/search, the key"
            " in the body.",
        )
    return await _search(request, op, topic, error_class, since, until, key, status, limit)


class SearchBody(BaseModel):
    """Which dead letters to list: a filter, as GET /ops/api/dlq takes it, with the key in the body."""

    model_config = ConfigDict(extra="forbid")

    topic: Plain | None = None
    error_class: Plain | None = None
    since: Annotated[datetime | None, AsText] = Field(default=None, description=_MOMENT)
    until: Annotated[datetime | None, AsText] = Field(default=None, description=_MOMENT)
    # a sender's key as it was sent, control characters and all: a letter under it is found too
    key: str | None = Field(default=None, max_length=1000)
    status: Literal["open", "replayed", "discarded", "all"] | None = None
    limit: int = Field(default=200, ge=1, le=1000)


@router.post("/dlq/search", summary="Dead letters, filtered, the filter in the body")
async def search_dead_letters(request: Request, op: Acting, body: SearchBody) -> dict[str, Any]:
    """As GET /ops/api/dlq; for a key other than a youth key (a sender's own, a BSN even), which is
    searched for only by a privacy officer, audited, and never put in a URL."""
    b = body
    return await _search(request, op, b.topic, b.error_class, b.since, b.until, b.key, b.status, b.limit)


async def _search(
    request: Request,
    op: Operator,
    topic: str | None,
    error_class: str | None,
    since: datetime | None,
    until: datetime | None,
    key: str | None,
    status: str | None,
    limit: int,
) -> dict[str, Any]:
    dead_letters = _console(request).dead_letters
    flt = _filter(op, topic, error_class, since, until, key, status)
    letters = await dead_letters.find(flt)
    if flt.raw_keys:
        await dead_letters.record_key_search(letters[:limit], op.username, key=flt.key)
    return {"total": len(letters), "items": [d.summary() for d in letters[:limit]]}


async def _get(console: Console, letter_id: str) -> DeadLetter:
    try:
        d = await console.dead_letters.get(letter_id)
    except ValueError:
        d = None
    if d is None:
        raise Problem(404, "No such dead letter", "Ids look like <dlq topic>:<partition>:<offset>.")
    return d


@router.get("/dlq/{letter_id}", summary="One dead letter: headers and payload masked unless allowed")
async def show_dead_letter(
    request: Request, op: Acting, letter_id: str, unmask: bool = False
) -> dict[str, Any]:
    """Masked, the payload keeps its field names and structure, and the headers the hub writes their
    values; a sender's own headers are masked too. Unmasking (the payload, the headers, and a key that
    is not a youth key) needs the privacy_officer role and is audited."""
    if unmask and not op.may("privacy_officer"):
        raise Problem(403, "Not allowed", "Unmasking a payload needs the role privacy_officer.")
    console = _console(request)
    d = await _get(console, letter_id)
    await console.dead_letters.mark_copy(d)
    await console.dead_letters.record_view(d, op.username, unmasked=unmask)
    return {
        **d.summary(unmasked=unmask),
        "headers": show_headers(d.headers, unmasked=unmask),
        "payload": show_payload(d.value, unmasked=unmask),
        "masked": not unmask,
    }


class DiscardBody(BaseModel):
    """Why a dead letter is dropped."""

    reason: Reason


@router.post("/dlq/{letter_id}/discard", summary="Discard one dead letter with a reason")
async def discard(request: Request, op: Acting, letter_id: str, body: DiscardBody) -> dict[str, Any]:
    """Recorded in dlq_actions and the audit log; it leaves the DLQ depth. A letter the list names a
    copy (`copy_of`: the relay published one record twice) is discarded alone, and the first stays to
    be replayed; discarding the first drops the message, and its open copies, named in `copies`, are
    discarded with it."""
    console = _console(request)
    d = await _get(console, letter_id)
    done = await console.dead_letters.discard(d, op.username, body.reason)
    if done is None:
        raise Problem(
            409, "Already resolved", "This dead letter, or a copy of it, was already replayed or discarded."
        )
    return {"id": d.id, "status": "discarded", "copy_of": done.copy_of, "copies": done.copies}


@router.post("/dlq/{letter_id}/replay", summary="Replay one dead letter")
async def replay_one(request: Request, op: Acting, letter_id: str) -> dict[str, Any]:
    """Published again to its original topic through the outbox; returns the job. A copy of a letter
    replayed or discarded already is resolved as such, not replayed (counted as skipped)."""
    console = _console(request)
    d = await _get(console, letter_id)
    if d.status != "open":
        raise Problem(409, "Already resolved", "This dead letter was already replayed or discarded.")
    return (await console.dead_letters.start_replay([d], op.username)).progress()


@router.post(
    "/signals/{signal_id}/register-again",
    summary="Queue an active signal's registration with the Verwijsindex once more",
    status_code=202,
)
async def register_signal_again(request: Request, op: Acting, signal_id: str) -> dict[str, Any]:
    """For a signal the index holds no more, or whose registration's dead letter was discarded: a
    contact change then is a dead letter saying "register it again". The registration names the
    signal's contact as the hub holds it now; audited with the operator. Answers the signal's id, the
    command's message id and the transaction id, nothing of the youth."""
    hub = _console(request).hub
    assert hub.store is not None and hub.relay is not None
    transaction_id = str(uuid.uuid4())
    waits = waits_of(hub.store, hub.settings.kafka, hub.kafka_options)
    try:
        message_id = await register_again(
            hub.store,
            hub,
            signal_id,
            user=op.username,
            transaction_id=transaction_id,
            waits=waits,
            day=hub.today(),
        )
    except SignalNotFound:
        raise Problem(404, "Unknown signal", "The hub holds no signal with this id.") from None
    except SignalNotActive:
        raise Problem(
            409, "Signal not active", "This signal was withdrawn, ended or expired: it is not registered."
        ) from None
    except (RegistrationOnItsWay, UnfitContact, NotInformed) as exc:
        raise Problem(409, "Not registered again", str(exc)) from None
    except TransientError as exc:
        raise Problem(503, "Try again later", str(exc), headers={"Retry-After": "30"}) from None
    hub.relay.wake()
    return {"signal_id": signal_id, "message_id": message_id, "transaction_id": transaction_id}


_FILTERS = ("topic", "error_class", "since", "until", "key")
_ONE_FILTER_OR_ALL: list[JsonValue] = [{"required": ["all"], "properties": {"all": {"const": True}}}]
_ONE_FILTER_OR_ALL += [{"required": [f], "properties": {f: {"type": "string"}}} for f in _FILTERS]


class ReplayBody(BaseModel):
    """Which dead letters to replay: a filter, or `all` (needed when no filter is given)."""

    # The document says what the handler demands: at least one filter, or all=true.
    model_config = ConfigDict(json_schema_extra={"anyOf": _ONE_FILTER_OR_ALL})

    topic: Plain | None = None
    error_class: Plain | None = None
    since: Annotated[datetime | None, AsText] = Field(default=None, description=_MOMENT)
    until: Annotated[datetime | None, AsText] = Field(default=None, description=_MOMENT)
    key: Plain | None = None
    all: bool = False


@router.post("/dlq/replay", summary="Replay a filtered set, or all, as a background job", status_code=202)
async def replay_many(request: Request, op: Acting, body: ReplayBody) -> dict[str, Any]:
    """Rate-limited; poll GET /ops/api/jobs/{id} for progress. A key that is not a youth key is a
    filter for a privacy officer only."""
    criteria = (body.topic, body.error_class, body.since, body.until, body.key)
    if not body.all and all(c is None for c in criteria):
        raise Problem(
            400, "Say what to replay", "Give a filter, or all=true to replay every open dead letter."
        )
    dead_letters = _console(request).dead_letters
    flt = _filter(op, *criteria)
    letters = await dead_letters.find(flt)
    try:
        started = await dead_letters.start_replay(letters, op.username, what=describe(flt))
    except ReplayBusy as exc:
        wait = f"wait for it (GET /ops/api/jobs/{exc.job.id}), then replay again"
        minutes = dead_letters.stale_after.total_seconds() / 60
        stale = f"a job without progress for {minutes:g} minutes is marked abandoned"
        raise Problem(409, "A replay is running", f"{exc}; {wait} ({stale}).") from None
    return started.progress()


@router.get("/jobs/{job_id}", summary="Progress of a replay job")
async def job(request: Request, op: Acting, job_id: str) -> dict[str, Any]:
    """total, done, skipped (already resolved), failed, state (running, done, failed, or abandoned:
    its process stopped), who started it and what it replays; from any replica of the hub."""
    found = await _console(request).dead_letters.job(job_id)
    if found is None:
        raise Problem(404, "No such job", f"Finished jobs are kept {KEEP_FINISHED.days} days.")
    return found.progress()


# What the timeline keeps of the operator's search text in its own audit entry, kept for years: an id
# the hub issues (a UUID, a dead-letter id, a row number), not a BSN, a phone number or a name typed
# into the search box.
_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
_LONG_NUMBER = re.compile(r"[0-9]{8,}")
_LETTER_ID = re.compile(r"(.+):([0-9]+):([0-9]+)")
NOT_KEPT = "(search text not kept)"


def _kept_id(text: str, rows: Sequence[Mapping[str, Any]] = ()) -> str:
    """`text` when the search found it as an id, else `NOT_KEPT`: the transaction id of an entry it
    read, or a value among an entry's objects (the hub's ids, never a youth's name or BSN), and then
    only printable, without whitespace or @, with a digit in it and no run of eight or more digits (a
    BSN, a phone number), also not in groups ("252-760-189", "06-1234-5678"); the offset of a
    dead-letter id may be that long. Judged by its shape alone, a name with a year or a postcode with
    a house number was kept for years; a text the search did not find is not kept, whatever it is."""
    if not any(r["transaction_id"] == text or _holds(r["objects"], text) for r in rows):
        return NOT_KEPT
    if _UUID.fullmatch(text):
        return text
    letter = _LETTER_ID.fullmatch(text)
    rest = letter[1] if letter else text
    plain = rest.isprintable() and not any(c.isspace() or c == "@" for c in rest)
    if plain and any(c.isdigit() for c in text) and not _LONG_NUMBER.search(rest) and not _grouped(rest):
        return text
    return NOT_KEPT


def _holds(value: Any, text: str) -> bool:
    """Whether `text` is `value` or one of the values in it (an audit entry's objects)."""
    if isinstance(value, Mapping):
        return any(_holds(v, text) for v in value.values())
    if isinstance(value, list):
        return any(_holds(v, text) for v in value)
    return value is not None and not isinstance(value, bool) and str(value) == text


def _grouped(text: str) -> bool:
    """Whether `text` holds a BSN or a Dutch phone number written in groups: digits joined by
    separators into 8 or 9 ("252-760-189"), 10 from a 0 ("06-1234-5678") or 11 or 13 from the
    country code ("+31 6 1234 5678"), or one in groups after others, as the log redaction finds it
    ("2025-01-01/111-222-333"); an id of the hub's in groups ("PL1500-2026-0001") is longer."""
    if holds_bsn_in_groups(text):
        return True
    for run in re.findall(r"[0-9]+", BETWEEN_DIGITS.sub("", text)):
        if len(run) in (8, 9) or (len(run) == 10 and run[0] == "0"):
            return True
        if (len(run) == 11 and run.startswith("31")) or (len(run) == 13 and run.startswith("0031")):
            return True
    return False


TIMELINE_MAX = 500  # audit entries one timeline shows


@router.get("/timeline", summary="What happened to a referral or signal, by its id or the transaction id")
async def timeline(
    request: Request, op: Acting, id: Annotated[str, Query(min_length=3, max_length=200)]
) -> dict[str, Any]:
    """Audit entries with this transaction id, or naming this id among their objects, oldest first;
    the first `TIMELINE_MAX`, and `truncated` says when there were more. Reading them is itself
    audited (rule 18): they tell who did what with whose case."""
    hub = request.app.state.hub
    # the id as the objects' JSON text holds it, with LIKE's wildcards and escape taken literally
    quoted = json.dumps(id, ensure_ascii=False)
    like = "%" + quoted.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
    async with hub.store.connect() as conn:
        result = await conn.execute(
            select(audit_log)
            .where(
                or_(
                    audit_log.c.transaction_id == id,
                    cast(audit_log.c.objects, String).like(like, escape="\\"),
                )
            )
            .order_by(audit_log.c.at, audit_log.c.id)
            .limit(TIMELINE_MAX + 1)
        )
        rows = result.mappings().all()
    cut = len(rows) > TIMELINE_MAX  # said, never left out silently: the oldest are shown
    rows = rows[:TIMELINE_MAX]
    events = [
        {
            "at": r["at"].isoformat(),
            "action": r["action"],
            "user": r["user"],
            "system": r["system"],
            "transaction_id": r["transaction_id"],
            "objects": r["objects"],
        }
        for r in rows
    ]
    # One entry per youth whose entries were read, every one of them, so a subject-access export
    # (rule 20) finds the read (rule 18); each says how many youths the read showed. Written in one
    # statement: a search by the transaction id of a CSV upload reads hundreds of youths at once.
    youths = list(dict.fromkeys(r["youth_key"] for r in rows if r["youth_key"] is not None))
    objects = {"id": _kept_id(id, rows), "events": len(events), "youths": len(youths)}
    at = utcnow()
    audits = [
        audit_row(
            "audit.timeline_read",
            op.username,
            at=at,
            system=SYSTEM,
            transaction_id=None,
            youth_key=youth,
            objects=objects,
        )
        for youth in youths or [None]
    ]
    async with hub.store.transaction() as session:
        await write_audits(session, audits)
    return {"id": id, "events": events, "truncated": cut}
