"""Rule 20: a subject-access export, everything the hub holds and disclosed about one BSN.

The hub keys a youth's data by the youth key (an HMAC of the BSN), so the export gathers every row
under that key: referrals (with their decisions), consents, handovers, signals and their matches,
what waits in the outbox and the retry ladder, and the audit log, which holds every disclosure, read
and change (rule 18). Dead letters are read from the broker: those keyed by the youth key or the
BSN, or whose payload names either. What could not be read is listed under `incomplete`, never left
out silently. The export is itself a disclosure: audited under the youth key, with the number of
items per part and never the BSN.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterable, Mapping
from datetime import date, datetime
from decimal import Decimal
from typing import Annotated, Any

from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import Table, and_, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from hub.api.problems import InvalidParam, Problem
from hub.audit import AuditEntry, write_audit
from hub.clock import aware
from hub.consent.tables import consents
from hub.handovers.tables import handovers
from hub.intake.tables import referrals
from hub.ops.auth import Operator, requires
from hub.ops.console import console_of
from hub.ops.dlq import DeadLetters, legacy_applies
from hub.ops.dlq_records import Filter, bsn_in_key_or_payload, parse_id, read_at
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


async def held_in_store(session: AsyncSession, *, bsn: str, key: str) -> dict[str, list[dict[str, Any]]]:
    """Every row of the store about the youth with `key` (whose BSN is `bsn`)."""
    found_signals = await _all(session, signals, signals.c.youth_key == key, order=signals.c.signal_id)
    signal_ids = [s.signal_id for s in found_signals]
    in_ladder = or_(_keyed(parked.c.key, bsn, key), parked.c.record_key.in_([key, bsn]))
    return {
        "referrals": _rows(
            await _all(session, referrals, referrals.c.youth_key == key, order=referrals.c.received_at),
            leave_out=("youth_key",),
        ),
        "consents": _rows(
            await _all(session, consents, consents.c.youth_key == key, order=consents.c.recorded_at),
            leave_out=("youth_key",),
        ),
        "handovers": _rows(
            await _all(session, handovers, handovers.c.youth_key == key, order=handovers.c.created_at),
            leave_out=("youth_key",),
        ),
        "signals": _rows(found_signals, leave_out=("youth_key",)),
        "matches": _rows(
            await _all(session, matches, matches.c.signal_id.in_(signal_ids), order=matches.c.received_at)
        )
        if signal_ids
        else [],
        "outbox": _rows(await _all(session, outbox, _keyed(outbox.c.key, bsn, key), order=outbox.c.id)),
        "outbox_parked": _rows(
            await _all(
                session,
                outbox_parked,
                or_(
                    _keyed(outbox_parked.c.key, bsn, key),  # a dead letter parked keeps its sender's key
                    outbox_parked.c.value.contains(key.encode()),
                    outbox_parked.c.value.contains(bsn.encode()),
                ),
                order=outbox_parked.c.id,
            )
        ),
        "retries": _rows(await _all(session, parked, in_ladder, order=parked.c.seq)),
        "audit": _rows(
            await _all(session, audit_log, audit_log.c.youth_key == key, order=audit_log.c.id),
            leave_out=("youth_key",),
        ),
    }


async def dead_letters_about(dead_letters: DeadLetters, *, bsn: str, key: str) -> list[dict[str, Any]]:
    """The dead letters keyed by the youth key or the BSN, or whose payload names either; with their
    payloads, as held. BrokersUnavailable when the broker cannot be read."""
    letters = await dead_letters.find(Filter(status=None))  # every letter, whatever was done with it
    out, found = [], {}
    for start in range(0, len(letters), PAYLOADS_AT_ONCE):
        chunk = letters[start : start + PAYLOADS_AT_ONCE]
        statuses = {d.position: d.status for d in chunk}
        for d in await read_at(dead_letters.options, [d.position for d in chunk]):
            # keyed by the youth, or naming the youth's BSN as a partner does (the youth's own block,
            # 8 digits or 9, a string or a number, a CSV column), or the hub's own message of the youth
            if (
                d.key == key
                or (d.key or "").endswith(f":{key}")
                or bsn_in_key_or_payload(d.key, d.value) == bsn
                or _names_key(d.value, key)
            ):
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
    async with store.read() as session:
        held: dict[str, Any] = await held_in_store(session, bsn=normal, key=key)
    if dead_letters is None:
        incomplete.append("dead_letters: no broker to read them from")
        held["dead_letters"] = []
    else:
        try:
            held["dead_letters"] = await dead_letters_about(dead_letters, bsn=normal, key=key)
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
