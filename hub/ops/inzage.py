"""Rule 20: a subject-access export, everything the hub holds and disclosed about one BSN.

The hub keys a youth's data by the youth key (an HMAC of the BSN), so the export gathers every row
under that key: referrals (with their decisions), consents, handovers, signals and their matches,
what waits in the outbox and the retry ladder, and the audit log, which holds every disclosure, read
and change (rule 18).

A message as its sender wrote it (an outbox row, pending or parked; a dead letter, read from the
broker) is the youth's when it is keyed by the youth key, names the youth key as a value, or names
the youth's BSN as a partner does (the youth's own block, 8 digits or 9, a string or a number, a CSV
column), or else is keyed by the BSN. Never for a run of the BSN's digits elsewhere: that may be
another youth's parent's phone number. A message naming more than one person (every value under a
BSN field outside a parent's, guardian's or contact person's block, in arrays too, valid or not; in a
CSV every row's BSN cell) is a batch, whatever its key: handed over to none of them whole, and counted
under `incomplete` in the export of a youth it names. One naming no BSN, or another's, may be the
youth's and cannot be told when it holds what the export knows the youth by: the youth key, the BSN
written out (123 456 789 or 1234.56.789, with a space, dot or dash), the id of one of the youth's
referrals, consents, handovers or signals (`ID_MIN` characters or more, as a word), or, naming no
BSN, a run of the BSN's digits. It is left out, and counted under `incomplete`. A parked row an
operator released or discarded is emptied, and keeps who did it and why: it is in the export when the
audit entry of that action is the youth's.

Mail is found through the ids the youth's rows and audit entries name: the signals, the matches, the
notifications queued or sent about the youth (`mail.*.queued`, `mail.sent`) and a notice's case
reference. `mail_sent` holds whose mailbox each such mail reached; `mail_sink` (the embedded SMTP sink
only) the mail as it went, with the counterparts' contacts and the case reference, never a BSN or a
name; `mail_problems` what went wrong with it. Left out: a borging mail, which lists the signals and
matches of every youth its caseworker had (other youths' data, and audited under no youth; while it
is in the outbox, it names the youth's signals and is counted under `incomplete`), and a problem with
a mail whose notification could not be read (it names no id of a youth).

What could not be read, or told, is listed under `incomplete`, never left out silently. The export is
itself a disclosure: audited under the youth key, with the number of items per part and never the BSN.
"""

from __future__ import annotations

import base64
import json
import re
from collections import Counter
from collections.abc import Collection, Iterable, Mapping
from datetime import date, datetime
from decimal import Decimal
from enum import Enum
from typing import Annotated, Any

from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import Table, and_, func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from hub.api.problems import InvalidParam, Problem
from hub.audit import AuditEntry, write_audit
from hub.clock import aware
from hub.consent.tables import consents
from hub.handovers.tables import handovers
from hub.intake.tables import referrals
from hub.notify.tables import mail_problems, mail_sent, mail_sink
from hub.ops.auth import Operator, requires
from hub.ops.console import console_of
from hub.ops.dlq import DeadLetters, legacy_applies
from hub.ops.dlq_records import Filter, bsn_in_key_or_payload, bsn_values, parse_id, read_at
from hub.ops.lag import BrokersUnavailable
from hub.ops.tables import dlq_actions
from hub.retry.tables import parked
from hub.signals.tables import matches, signals
from hub.store import Store
from hub.store.tables import audit_log, outbox, outbox_parked
from schemas.bsn import is_valid_bsn, normalise_bsn
from schemas.envelope import utcnow
from schemas.pseudonym import youth_key

SYSTEM = "ketenhub-ops"
ACTION = "subject_access.exported"
PAYLOADS_AT_ONCE = 500  # dead letters read with their payloads per round


class InvalidBsn(ValueError):
    """The BSN is not 9 digits (or 8) passing the elfproef (rule 1)."""


def _plain(value: Any) -> Any:
    """A stored value as JSON: times and dates as ISO 8601, bytes as the JSON or text they hold."""
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, bytes | memoryview):
        raw = bytes(value)
        try:
            return json.loads(raw)
        except (ValueError, RecursionError):
            pass
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            return {"base64": base64.b64encode(raw).decode("ascii")}
    return value


def _rows(rows: Iterable[Any], leave_out: Iterable[str] = ()) -> list[dict[str, Any]]:
    skip = set(leave_out)
    return [{k: _plain(v) for k, v in row._mapping.items() if k not in skip} for row in rows]


async def _all(session: AsyncSession, table: Table, *where: Any, order: Any) -> list[Any]:
    return list(await session.execute(select(table).where(*where).order_by(order)))


def _keyed(column: Any, bsn: str, key: str) -> Any:
    """A Kafka or ladder key of this youth: the youth key, `<organisation>:<youth key>` (a receiver's
    ladder), or the BSN (a sender's own key)."""
    return or_(column == key, column.endswith(f":{key}"), column == bsn)


def _holds(session: AsyncSession, column: Any, needle: bytes) -> Any:
    """`column` (bytes) holds `needle`. On SQLite a BLOB never matches LIKE (which `contains` compiles
    to): there it is `instr`, which compares bytes; PostgreSQL's LIKE takes bytea."""
    if session.get_bind().dialect.name == "sqlite":
        return func.instr(column, needle) > 0
    return column.contains(needle)


def _digits(bsn: str) -> str:
    """The BSN's digits as every form of it holds them: 8 where a number lost its leading 0."""
    return bsn[1:] if bsn.startswith("0") else bsn


def _standing_alone(bsn: str) -> re.Pattern[bytes]:
    """The BSN's digits standing alone, in 9 digits or (a number) 8: not within a longer number."""
    lead = rb"0?" if bsn.startswith("0") else rb""
    return re.compile(rb"(?<![0-9])" + lead + _digits(bsn).encode() + rb"(?![0-9])")


class Unsure(Enum):
    """Why a message may be the youth's and cannot be told: it is not in the export, and counted."""

    BATCH = "a batch naming the youth among other people"
    TRACE = (
        "naming no BSN or another's, yet holding the BSN's digits (also written with spaces, dots or"
        " dashes), the youth key or the id of one of the youth's referrals, consents, handovers or signals"
    )


Whose = bool | Unsure

# How people write a BSN out: 123 456 789, 1234.56.789 (as the sofinummer was), with a space, dot or dash
_GROUPINGS = ((3, 3, 3), (4, 2, 3))
_SEPARATORS = " .-"
ID_MIN = 8  # the youth's ids shorter than this are not looked for: as a word they turn up anywhere


def _written_out(bsn: str) -> list[bytes]:
    """The BSN as people write it out, its digits in groups."""
    forms = []
    for grouping in _GROUPINGS:
        ends = [sum(grouping[: n + 1]) for n in range(len(grouping))]
        groups = [bsn[end - size : end] for size, end in zip(grouping, ends, strict=True)]
        forms += [sep.join(groups).encode() for sep in _SEPARATORS]
    return forms


def _looked_for(ids: Collection[str]) -> list[bytes]:
    """The youth's ids that are looked for in messages."""
    return sorted({i.encode() for i in ids if len(i) >= ID_MIN})


def _traces(bsn: str, ids: Collection[str]) -> re.Pattern[bytes]:
    """The BSN written out or one of the youth's ids (`ids`), standing alone: the BSN not within a
    longer run of digits (in groups or not), an id not within a longer word."""
    written = b"|".join(re.escape(form) for form in _written_out(bsn))
    pattern = rb"(?<![0-9])(?<![0-9][ .\-])(?:" + written + rb")(?![ .\-]?[0-9])"
    if own := _looked_for(ids):
        words = b"|".join(re.escape(i) for i in own)
        pattern += rb"|(?<![A-Za-z0-9_\-])(?:" + words + rb")(?![A-Za-z0-9_\-])"
    return re.compile(pattern)


def _whose(
    row_key: str | None, value: bytes, *, bsn: str, key: str, traces: re.Pattern[bytes] | None = None
) -> Whose:
    """True when a message (its key and payload as its sender wrote them) is the youth's, False when
    it is not, `Unsure` when it may be and cannot be told: a batch naming the youth among others, or
    one naming no BSN or another's that holds the youth key or `traces` (`_traces`: the BSN written
    out, the youth's ids), or naming no BSN holds the BSN's digits."""
    traces = traces or _traces(bsn, ())

    def traced() -> bool:
        return key.encode() in value or traces.search(value) is not None

    # a batch of several people (a police system's JSON array, a leerplicht CSV; each value under a
    # BSN field, valid or not): not the youth's alone, and not to be handed over whole, whatever its key
    if len(named := bsn_values(value)) > 1:
        if bsn in named:
            return Unsure.BATCH
        return Unsure.TRACE if traced() else False
    if row_key == key or (row_key or "").endswith(f":{key}") or _names_key(value, key):
        return True
    # the youth's own block, 8 digits or 9, a string or a number, a CSV column; else a BSN as key. One
    # naming another youth's is not the youth's for a run of the BSN's digits (a parent's phone)
    found = bsn_in_key_or_payload(row_key, value)
    if found == bsn:
        return True
    if traced() or (found is None and _standing_alone(bsn).search(value)):
        return Unsure.TRACE
    return False


def _unsure(part: str, unsure: Counter[Unsure]) -> str:
    """The line under `incomplete` for messages that may be the youth's and cannot be told: the part,
    how many and why, never a BSN."""
    why = "; ".join(f"{unsure[reason]} {reason.value}" for reason in Unsure if unsure[reason])
    return (
        f"{part}: {unsure.total()} message(s) may be the youth's and cannot be told ({why}); they are"
        " not in the export"
    )


async def _messages(
    session: AsyncSession,
    table: Table,
    *,
    bsn: str,
    key: str,
    incomplete: list[str],
    own: Collection[str] = (),
    ids: Collection[int] = (),
) -> list[Any]:
    """The rows of the outbox (or of its parked rows) that are the youth's, and those with `ids`;
    `own` are the youth's ids (referrals, consents, handovers, signals), looked for as `_whose` says."""
    c = table.c
    keys = sorted({key, bsn, _digits(bsn)})
    needles = [key.encode(), _digits(bsn).encode(), *_written_out(bsn), *_looked_for(own)]
    near = or_(  # what may be the youth's, looked at one by one
        c.key.in_(keys),
        c.key.endswith(f":{key}"),
        *(_holds(session, c.value, needle) for needle in needles),
        c.id.in_(sorted(ids)),
    )
    traces = _traces(bsn, own)
    mine, unsure = [], Counter[Unsure]()
    for row in await _all(session, table, near, order=c.id):
        whose = True if row.id in ids else _whose(row.key, bytes(row.value), bsn=bsn, key=key, traces=traces)
        if whose is True:
            mine.append(row)
        elif isinstance(whose, Unsure):
            unsure[whose] += 1
    if unsure:
        incomplete.append(_unsure(table.name, unsure))
    return mine


def _strings(value: Any) -> set[str]:
    return {v for v in (value if isinstance(value, list) else [value]) if isinstance(v, str) and v}


def _named(audit: Iterable[Any]) -> dict[str, set[str]]:
    """The ids the youth's audit entries name, by kind: signals, matches, notifications, and the case
    reference of a mail (a match mail's signal, a notice's referral)."""
    named: dict[str, set[str]] = {"signal": set(), "match": set(), "notification": set(), "case": set()}
    for row in audit:
        objects = row.objects if isinstance(row.objects, dict) else {}
        for field, kind in (
            ("signal_id", "signal"),
            ("signal_ids", "signal"),
            ("match_id", "match"),
            ("match_ids", "match"),
            ("notification_id", "notification"),
        ):
            named[kind] |= _strings(objects.get(field))
        if row.action.startswith("mail."):
            named["case"] |= _strings(objects.get("case_reference"))
    return named


def _parked_ids(audit: Iterable[Any]) -> set[int]:
    """The parked outbox rows an operator released or discarded under the youth key: emptied then,
    they keep who did it and why."""
    return {
        row.objects["parked_id"]
        for row in audit
        if row.action in ("outbox.released", "outbox.discarded")
        and isinstance(row.objects, dict)
        and isinstance(row.objects.get("parked_id"), int)
    }


# connectors.mail.message.message_id_for: the Message-ID of a notification's mail
_MAIL_MESSAGE_ID = re.compile(r"<(.+)\.ketenhub@[^>]*>")


async def _sink_mails(session: AsyncSession, notification_ids: set[str]) -> list[Any]:
    """The embedded sink's copies of the mails of `notification_ids`, by their Message-ID."""
    if not notification_ids:
        return []
    ids = [
        row.id
        for row in await session.execute(select(mail_sink.c.id, mail_sink.c.message_id))
        if (found := _MAIL_MESSAGE_ID.fullmatch(row.message_id or "")) and found[1] in notification_ids
    ]
    return await _all(session, mail_sink, mail_sink.c.id.in_(ids), order=mail_sink.c.id) if ids else []


async def held_in_store(
    session: AsyncSession,
    *,
    bsn: str,
    key: str,
    incomplete: list[str] | None = None,
    own_ids: set[str] | None = None,
) -> dict[str, list[dict[str, Any]]]:
    """Every row of the store about the youth with `key` (whose BSN is `bsn`); messages that may be
    the youth's but cannot be told are counted in `incomplete`. The ids of the youth's referrals,
    consents, handovers and signals, which a message may name the youth by, are added to `own_ids`."""
    gaps = [] if incomplete is None else incomplete
    audit = await _all(session, audit_log, audit_log.c.youth_key == key, order=audit_log.c.id)
    named = _named(audit)
    found_referrals = await _all(
        session, referrals, referrals.c.youth_key == key, order=referrals.c.received_at
    )
    found_consents = await _all(session, consents, consents.c.youth_key == key, order=consents.c.recorded_at)
    found_handovers = await _all(
        session, handovers, handovers.c.youth_key == key, order=handovers.c.created_at
    )
    found_signals = await _all(session, signals, signals.c.youth_key == key, order=signals.c.signal_id)
    signal_ids = {s.signal_id for s in found_signals} | named["signal"]
    found_matches = await _all(
        session, matches, matches.c.signal_id.in_(sorted(signal_ids)), order=matches.c.received_at
    )
    # a problem's reference is a signal, match or notification id, or a notice's case reference
    references = signal_ids | {m.match_id for m in found_matches} | named["match"]
    references |= named["notification"] | named["case"]
    in_ladder = or_(_keyed(parked.c.key, bsn, key), parked.c.record_key.in_([key, bsn]))
    own = {r.id for r in found_referrals} | {c.id for c in found_consents} | {h.id for h in found_handovers}
    own |= {x.referral_id for x in (*found_consents, *found_handovers) if x.referral_id} | signal_ids
    if own_ids is not None:
        own_ids |= own
    return {
        "referrals": _rows(found_referrals, leave_out=("youth_key",)),
        "consents": _rows(found_consents, leave_out=("youth_key",)),
        "handovers": _rows(found_handovers, leave_out=("youth_key",)),
        "signals": _rows(found_signals, leave_out=("youth_key",)),
        "matches": _rows(found_matches),
        "mail_sent": _rows(
            await _all(
                session,
                mail_sent,
                mail_sent.c.notification_id.in_(sorted(named["notification"])),
                order=mail_sent.c.sent_at,
            )
        ),
        "mail_sink": _rows(await _sink_mails(session, named["notification"])),
        "mail_problems": _rows(
            await _all(
                session,
                mail_problems,
                mail_problems.c.reference.in_(sorted(references)),
                order=mail_problems.c.id,
            )
        ),
        "outbox": _rows(await _messages(session, outbox, bsn=bsn, key=key, incomplete=gaps, own=own)),
        "outbox_parked": _rows(
            await _messages(
                session, outbox_parked, bsn=bsn, key=key, incomplete=gaps, own=own, ids=_parked_ids(audit)
            )
        ),
        "retries": _rows(await _all(session, parked, in_ladder, order=parked.c.seq)),
        "audit": _rows(audit, leave_out=("youth_key",)),
    }


async def dead_letters_about(
    dead_letters: DeadLetters,
    *,
    bsn: str,
    key: str,
    incomplete: list[str] | None = None,
    own_ids: Collection[str] = (),
) -> list[dict[str, Any]]:
    """The dead letters that are the youth's (`_whose`), with their payloads as held; those that may
    be and cannot be told (naming one of `own_ids`, the youth's ids, among others) are counted in
    `incomplete`. BrokersUnavailable when the broker cannot be read."""
    letters = await dead_letters.find(Filter(status=None))  # every letter, whatever was done with it
    out, found, unsure, traces = [], {}, Counter[Unsure](), _traces(bsn, own_ids)
    for start in range(0, len(letters), PAYLOADS_AT_ONCE):
        chunk = letters[start : start + PAYLOADS_AT_ONCE]
        statuses = {d.position: d.status for d in chunk}
        for d in await read_at(dead_letters.options, [d.position for d in chunk]):
            whose = _whose(d.key, d.value, bsn=bsn, key=key, traces=traces)
            if isinstance(whose, Unsure):
                unsure[whose] += 1
            if whose is True:
                found[d.id] = d
                out.append(
                    {
                        "id": d.id,
                        "status": statuses.get(d.position, "open"),
                        "failed_at": d.failed_at.isoformat(),
                        "key": d.key,
                        "headers": d.headers,
                        "payload": _plain(d.value),
                    }
                )
    by_id: dict[str, Any] = {}  # what operators did with them, and why
    if out:
        c = dlq_actions.c
        positions = [parse_id(letter["id"]) for letter in out]
        query = select(dlq_actions).where(
            or_(*(and_(c.dlq_topic == t, c.partition == p, c.offset == o) for t, p, o in positions))
        )
        async with dead_letters.store.connect() as conn:
            for row in await conn.execute(query):
                # the action of this letter, not of an earlier one at its position (0020)
                d = found[f"{row.dlq_topic}:{row.partition}:{row.offset}"]
                if row.letter_at == d.timestamp_ms or (
                    row.letter_at is None and legacy_applies(aware(row.at), d)
                ):
                    by_id[d.id] = row
    for letter in out:
        if (a := by_id.get(letter["id"])) is not None:
            letter["action"] = {"action": a.action, "by": a.operator, "at": _plain(a.at), "reason": a.reason}
    if unsure and incomplete is not None:
        incomplete.append(_unsure("dead_letters", unsure))
    return out


def _names_key(payload: bytes, key: str) -> bool:
    """True when the hub's own message names the youth key as a value (`"youth_key": "<key>"`)."""
    return f'"{key}"'.encode() in payload


def youth_of(bsn: str, secret: str) -> tuple[str, str]:
    """The normalised BSN and its youth key; InvalidBsn when it is none (rule 1)."""
    if not is_valid_bsn(bsn):
        raise InvalidBsn("a BSN is 9 digits (8 are padded with a 0) and passes the elfproef")
    normal = normalise_bsn(bsn)
    return normal, youth_key(secret, normal)


async def export(
    store: Store,
    *,
    bsn: str,
    secret: str,
    by: str,
    dead_letters: DeadLetters | None,
    transaction_id: str | None = None,
) -> dict[str, Any]:
    """Everything the hub holds and disclosed about `bsn`, audited as read by `by` (rule 20)."""
    normal, key = youth_of(bsn, secret)
    incomplete: list[str] = []
    own_ids: set[str] = set()
    async with store.read() as session:
        held: dict[str, Any] = await held_in_store(
            session, bsn=normal, key=key, incomplete=incomplete, own_ids=own_ids
        )
    if dead_letters is None:
        incomplete.append("dead_letters: no broker to read them from")
        held["dead_letters"] = []
    else:
        try:
            held["dead_letters"] = await dead_letters_about(
                dead_letters, bsn=normal, key=key, incomplete=incomplete, own_ids=own_ids
            )
        except BrokersUnavailable as exc:
            incomplete.append(f"dead_letters: {exc}")
            held["dead_letters"] = []
    counts = {part: len(items) for part, items in held.items()}
    async with store.transaction() as session:
        await write_audit(
            session,
            AuditEntry(
                action=ACTION,
                user=by,
                youth_key=key,
                objects={"counts": counts, "complete": not incomplete},
            ),
            transaction_id=transaction_id,
            system=SYSTEM,
        )
    return {
        "bsn": normal,
        "youth_key": key,
        "made_at": utcnow().isoformat(),
        "made_by": by,
        "incomplete": incomplete,
        "counts": counts,
        **held,
    }


router = APIRouter(prefix="/ops/api", tags=["operators"])
PrivacyOfficer = Annotated[Operator, requires("privacy_officer")]


class InzageRequest(BaseModel):
    """Whose data: the BSN travels in the body, never in a URL (which ends up in access logs)."""

    model_config = ConfigDict(extra="forbid")
    bsn: str = Field(min_length=8, max_length=9, pattern=r"^[0-9]{8,9}$")


@router.post("/inzage", summary="Subject-access export: everything held and disclosed about one BSN")
async def subject_access(
    request: Request,
    body: InzageRequest,
    op: PrivacyOfficer,
) -> dict[str, Any]:
    """Rule 20, for a privacy officer; audited under the youth key (never the BSN). Dead letters come
    from the broker: when it cannot be read the export says so under `incomplete`."""
    hub = request.app.state.hub
    try:
        return await export(
            hub.store,
            bsn=body.bsn,
            secret=hub.settings.secret_value(),
            by=op.username,
            dead_letters=console_of(hub).dead_letters,
            transaction_id=getattr(request.state, "transaction_id", None),
        )
    except InvalidBsn as exc:
        raise Problem(
            422, "Geen geldig BSN", "Zie invalidParams.", params=[InvalidParam(name="bsn", reason=str(exc))]
        ) from None


def counts_line(counts: Mapping[str, int]) -> str:
    """`referrals 2, consents 1, ...` for a command's summary."""
    return ", ".join(f"{part} {n}" for part, n in counts.items())
