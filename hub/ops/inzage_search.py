"""Which of the messages the hub holds are a youth's, found by key and content, for the
subject-access export (`hub.ops.inzage`): the outbox, its parked rows and the dead letters.

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
BSN, a run of the BSN's digits. It is left out, and counted under `incomplete`.

Also here, as the export uses them too: `fetch_all`, a table's rows, and `plain`, a stored value as
JSON.
"""

from __future__ import annotations

import base64
import json
import re
from collections import Counter
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from enum import Enum
from typing import Any

from sqlalchemy import Table, and_, func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from hub.clock import aware
from hub.ops.dlq import DeadLetters, legacy_applies
from hub.ops.dlq_records import DeadLetter, Filter, bsn_in_key_or_payload, bsn_values, parse_id, read_at
from hub.ops.parked import audited_message_id
from hub.ops.tables import dlq_actions
from hub.spine.dlq import KEY_PSEUDONYM

PAYLOADS_AT_ONCE = 500  # dead letters read with their payloads per round


@dataclass(frozen=True)
class Audited:
    """A parked outbox row as the audit entry of its release or discard describes it."""

    outbox_id: Any
    topic: Any
    message_id: Any

    def describes(self, row: Any) -> bool:
        """Whether `row` is still the row this entry was written for: released or discarded, from the
        same outbox row, topic and message. The entry is kept for years and the row a month; SQLite
        hands the id of a deleted row out again, to another youth's message even."""
        return row.resolved is not None and (row.outbox_id, row.topic, audited_message_id(row)) == (
            self.outbox_id,
            self.topic,
            self.message_id,
        )


def plain(value: Any) -> Any:
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


async def fetch_all(session: AsyncSession, table: Table, *where: Any, order: Any) -> list[Any]:
    return list(await session.execute(select(table).where(*where).order_by(order)))


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
    row_key: str | None,
    value: bytes,
    *,
    bsn: str,
    key: str,
    traces: re.Pattern[bytes] | None = None,
    refs: Collection[str] = (),
    own: Collection[str] = (),
) -> Whose:
    """True when a message (its key and payload as its sender wrote them) is the youth's, False when
    it is not, `Unsure` when it may be and cannot be told: a batch naming the youth among others, or
    one naming no BSN or another's that holds the youth key or `traces` (`_traces`: the BSN written
    out, the youth's ids), or naming no BSN holds the BSN's digits. `refs` are the youth's pseudonyms
    at the receivers it was handed over to (`youth_ref`): a message keyed by or naming one is its,
    unless it names a handover that is none of `own` (the youth's ids): a receiver's batch of answers
    about several youths under one youth's key."""
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
    if row_key in refs or any(_names_key(value, ref) for ref in refs):
        return Unsure.BATCH if set(_ids_named(value)) - set(own) else True
    # the youth's own block, 8 digits or 9, a string or a number, a CSV column; else a BSN as key. One
    # naming another youth's is not the youth's for a run of the BSN's digits (a parent's phone)
    found = bsn_in_key_or_payload(row_key, value)
    if found == bsn:
        return True
    if traced() or (found is None and _standing_alone(bsn).search(value)):
        return Unsure.TRACE
    return False


_HANDOVER_ID = re.compile(rb'"handover_id"\s*:\s*"([^"\\]{1,100})"')


def _ids_named(payload: bytes) -> list[str]:
    """The handover ids a message names (`"handover_id": "<id>"`)."""
    return [found.decode("utf-8", "replace") for found in _HANDOVER_ID.findall(payload)]


def _names_key(payload: bytes, key: str) -> bool:
    """True when the hub's own message names the youth key as a value (`"youth_key": "<key>"`)."""
    return f'"{key}"'.encode() in payload


def _unsure(part: str, unsure: Counter[Unsure]) -> str:
    """The line under `incomplete` for messages that may be the youth's and cannot be told: the part,
    how many and why, never a BSN."""
    why = "; ".join(f"{unsure[reason]} {reason.value}" for reason in Unsure if unsure[reason])
    return (
        f"{part}: {unsure.total()} message(s) may be the youth's and cannot be told ({why}); they are"
        " not in the export"
    )


async def messages_about(
    session: AsyncSession,
    table: Table,
    *,
    bsn: str,
    key: str,
    incomplete: list[str],
    own: Collection[str] = (),
    ids: Mapping[int, Audited] | None = None,
    refs: Collection[str] = (),
) -> list[Any]:
    """The rows of the outbox (or of its parked rows) that are the youth's, and those with `ids` that
    are still the rows the audit describes (`Audited.describes`); `own` are the youth's ids
    (referrals, consents, handovers, signals), looked for as `_whose` says."""
    ids = ids or {}
    c = table.c
    keys = sorted({key, bsn, _digits(bsn), *refs})
    needles = [key.encode(), _digits(bsn).encode(), *_written_out(bsn), *_looked_for(own)]
    near = or_(  # what may be the youth's, looked at one by one
        c.key.in_(keys),
        c.key.endswith(f":{key}"),
        *(_holds(session, c.value, needle) for needle in needles),
        c.id.in_(sorted(ids)),
    )
    traces = _traces(bsn, own)
    mine, unsure = [], Counter[Unsure]()
    for row in await fetch_all(session, table, near, order=c.id):
        value = bytes(row.value)
        whose = (
            True
            if row.id in ids and ids[row.id].describes(row)
            else _whose(row.key, value, bsn=bsn, key=key, traces=traces, refs=refs, own=own)
        )
        if whose is True:
            mine.append(row)
        elif isinstance(whose, Unsure):
            unsure[whose] += 1
    if unsure:
        incomplete.append(_unsure(table.name, unsure))
    return mine


def _sender_key(d: DeadLetter) -> str | None:
    """A letter's key as `_whose` weighs it. The pseudonym of a sender's key that held a BSN
    (`KEY_PSEUDONYM`) counts as the key did before it was replaced: one that was a BSN names the
    youth only when the payload names no BSN (a record keyed by a parent's BSN, about the youth, is
    the youth's), one that only held a BSN names no youth."""
    mark = d.headers.get(KEY_PSEUDONYM)
    if mark is None or (mark == "bsn" and bsn_in_key_or_payload(None, d.value) is None):
        return d.key
    return None


async def dead_letters_about(
    dead_letters: DeadLetters,
    *,
    bsn: str,
    key: str,
    incomplete: list[str] | None = None,
    own_ids: Collection[str] = (),
    refs: Collection[str] = (),
) -> list[dict[str, Any]]:
    """The dead letters that are the youth's (`_whose`; `refs` its pseudonyms at its receivers), with
    their payloads as held; those that may be and cannot be told (naming one of `own_ids`, the youth's
    ids, among others) are counted in `incomplete`. BrokersUnavailable when the broker cannot be read."""
    letters = await dead_letters.find(Filter(status=None))  # every letter, whatever was done with it
    out, found, unsure, traces = [], {}, Counter[Unsure](), _traces(bsn, own_ids)
    for start in range(0, len(letters), PAYLOADS_AT_ONCE):
        chunk = letters[start : start + PAYLOADS_AT_ONCE]
        statuses = {d.position: d.status for d in chunk}
        for d in await read_at(dead_letters.options, [d.position for d in chunk]):
            whose = _whose(_sender_key(d), d.value, bsn=bsn, key=key, traces=traces, refs=refs, own=own_ids)
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
                        "payload": plain(d.value),
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
            letter["action"] = {"action": a.action, "by": a.operator, "at": plain(a.at), "reason": a.reason}
    if unsure and incomplete is not None:
        incomplete.append(_unsure("dead_letters", unsure))
    return out
