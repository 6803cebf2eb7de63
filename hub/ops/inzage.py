"""Rule 20: a subject-access export, everything the hub holds and disclosed about one BSN.

The hub keys a youth's data by the youth key (an HMAC of the BSN), so the export gathers every row
under that key (referrals and signals also by the BSN they keep; one under another key says the
secret is not the hub's, under `incomplete`): referrals (with their decisions), consents, handovers,
signals and their matches, what waits in the outbox and the retry ladder, and the audit log, which
holds every disclosure, read and change (rule 18).

Which messages are the youth's (an outbox row, pending or parked; a dead letter, read from the
broker), by their key and what they name, is told in `hub.ops.inzage_search`: one that may be the
youth's and cannot be told is left out, and counted under `incomplete`. A parked row an operator
released or discarded is emptied, and keeps who did it and why: it is in the export when the audit
entry of that action is the youth's.

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

import re
from collections.abc import Iterable, Mapping
from typing import Annotated, Any

from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from hub.api.problems import InvalidParam, Problem
from hub.audit import AuditEntry, write_audit
from hub.consent.tables import consents
from hub.handovers.tables import handovers
from hub.intake.tables import referrals
from hub.notify.tables import mail_problems, mail_sent, mail_sink
from hub.ops.auth import Operator, requires
from hub.ops.console import console_of
from hub.ops.dlq import DeadLetters
from hub.ops.inzage_search import Audited, dead_letters_about, fetch_all, messages_about, plain
from hub.ops.lag import BrokersUnavailable
from hub.retry.tables import parked
from hub.signals.tables import matches, signals
from hub.store import Store
from hub.store.tables import audit_log, outbox, outbox_parked
from hub.topics import DAY_MS, all_topics
from schemas.bsn import is_valid_bsn, normalise_bsn
from schemas.envelope import utcnow
from schemas.pseudonym import youth_key, youth_ref

SYSTEM = "ketenhub-ops"
ACTION = "subject_access.exported"


class InvalidBsn(ValueError):
    """The BSN is not 9 digits (or 8) passing the elfproef (rule 1)."""


def _rows(rows: Iterable[Any], leave_out: Iterable[str] = ()) -> list[dict[str, Any]]:
    skip = set(leave_out)
    return [{k: plain(v) for k, v in row._mapping.items() if k not in skip} for row in rows]


def _keyed(column: Any, bsn: str, key: str) -> Any:
    """A Kafka or ladder key of this youth: the youth key, `<organisation>:<youth key>` (a receiver's
    ladder), or the BSN (a sender's own key)."""
    return or_(column == key, column.endswith(f":{key}"), column == bsn)


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


def _parked_ids(audit: Iterable[Any]) -> dict[int, Audited]:
    """The parked outbox rows an operator released or discarded under the youth key, by id, as the
    audit entry describes them: emptied then, they keep who did it and why."""
    return {
        row.objects["parked_id"]: Audited(
            row.objects.get("outbox_id"), row.objects.get("topic"), row.objects.get("message_id")
        )
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
    return await fetch_all(session, mail_sink, mail_sink.c.id.in_(ids), order=mail_sink.c.id) if ids else []


async def held_in_store(
    session: AsyncSession,
    *,
    bsn: str,
    key: str,
    incomplete: list[str] | None = None,
    own_ids: set[str] | None = None,
    secret: str | None = None,
) -> dict[str, list[dict[str, Any]]]:
    """Every row of the store about the youth with `key` (whose BSN is `bsn`); messages that may be
    the youth's but cannot be told are counted in `incomplete`. The ids of the youth's referrals,
    consents, handovers and signals, which a message may name the youth by, are added to `own_ids`.
    With the hub's `secret`, a message to a receiver is known by the youth's pseudonym for that
    receiver (`youth_ref`) as well."""
    gaps = [] if incomplete is None else incomplete
    audit = await fetch_all(session, audit_log, audit_log.c.youth_key == key, order=audit_log.c.id)
    named = _named(audit)
    # referrals and signals keep the BSN too: found by it as well, also when their key is another
    found_referrals = await fetch_all(
        session,
        referrals,
        or_(referrals.c.youth_key == key, referrals.c.bsn == bsn),
        order=referrals.c.received_at,
    )
    found_consents = await fetch_all(
        session, consents, consents.c.youth_key == key, order=consents.c.recorded_at
    )
    found_handovers = await fetch_all(
        session, handovers, handovers.c.youth_key == key, order=handovers.c.created_at
    )
    found_signals = await fetch_all(
        session, signals, or_(signals.c.youth_key == key, signals.c.bsn == bsn), order=signals.c.signal_id
    )
    elsewhere = sum(row.youth_key != key for row in (*found_referrals, *found_signals))
    if elsewhere:  # the hub keyed the youth by another secret: what it keeps under that key is missed
        gaps.append(
            f"youth key: {elsewhere} referral(s) or signal(s) with this BSN are kept under another youth"
            " key than this secret gives, and what the hub keeps under that key is not in this export:"
            " make it with the hub's secret"
        )
    signal_ids = {s.signal_id for s in found_signals} | named["signal"]
    found_matches = await fetch_all(
        session, matches, matches.c.signal_id.in_(sorted(signal_ids)), order=matches.c.received_at
    )
    # a problem's reference is a signal, match or notification id, or a notice's case reference
    references = signal_ids | {m.match_id for m in found_matches} | named["match"]
    references |= named["notification"] | named["case"]
    own = {r.id for r in found_referrals} | {c.id for c in found_consents} | {h.id for h in found_handovers}
    own |= {x.referral_id for x in (*found_consents, *found_handovers) if x.referral_id} | signal_ids
    if own_ids is not None:
        own_ids |= own
    refs = receiver_refs(found_handovers, key, secret)
    # a receiver's answer, keyed by its own pseudonym of the youth, waits on the ladder under it too
    in_ladder = or_(
        _keyed(parked.c.key, bsn, key), parked.c.record_key.in_([key, bsn]), parked.c.key.in_(sorted(refs))
    )
    return {
        "referrals": _rows(found_referrals, leave_out=("youth_key",)),
        "consents": _rows(found_consents, leave_out=("youth_key",)),
        "handovers": _rows(found_handovers, leave_out=("youth_key",)),
        "signals": _rows(found_signals, leave_out=("youth_key",)),
        "matches": _rows(found_matches),
        "mail_sent": _rows(
            await fetch_all(
                session,
                mail_sent,
                mail_sent.c.notification_id.in_(sorted(named["notification"])),
                order=mail_sent.c.sent_at,
            )
        ),
        "mail_sink": _rows(await _sink_mails(session, named["notification"])),
        "mail_problems": _rows(
            await fetch_all(
                session,
                mail_problems,
                mail_problems.c.reference.in_(sorted(references)),
                order=mail_problems.c.id,
            )
        ),
        "outbox": _rows(
            await messages_about(session, outbox, bsn=bsn, key=key, incomplete=gaps, own=own, refs=refs)
        ),
        "outbox_parked": _rows(
            await messages_about(
                session,
                outbox_parked,
                bsn=bsn,
                key=key,
                incomplete=gaps,
                own=own,
                ids=_parked_ids(audit),
                refs=refs,
            )
        ),
        "retries": _rows(await fetch_all(session, parked, in_ladder, order=parked.c.seq)),
        "audit": _rows(audit, leave_out=("youth_key",)),
    }


def receiver_refs(found_handovers: Iterable[Any], key: str, secret: str | None) -> set[str]:
    """The youth's pseudonyms at the receivers it was handed over to (`youth_ref`): what a message to
    or from one of them is keyed by; none without the hub's secret."""
    receivers = {h.receiver_organisation for h in found_handovers}
    return {youth_ref(secret, org, key) for org in receivers} if secret is not None else set()


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
    topic_prefix: str = "",
) -> dict[str, Any]:
    """Everything the hub holds and disclosed about `bsn`, audited as read by `by` (rule 20); and
    the hub's topics where copies of the youth's messages may still be (`in_transit`)."""
    normal, key = youth_of(bsn, secret)
    incomplete: list[str] = []
    own_ids: set[str] = set()
    async with store.read() as session:
        held: dict[str, Any] = await held_in_store(
            session, bsn=normal, key=key, incomplete=incomplete, own_ids=own_ids, secret=secret
        )
    if dead_letters is None:
        incomplete.append("dead_letters: no broker to read them from")
        held["dead_letters"] = []
    else:
        try:
            # a receiver's answer that failed is keyed by its pseudonym of the youth, and names the
            # handover: the youth's, not a letter that "may be" it
            async with store.read() as session:
                receivers = select(handovers.c.receiver_organisation).where(handovers.c.youth_key == key)
                refs = receiver_refs((await session.execute(receivers)).all(), key, secret)
            held["dead_letters"] = await dead_letters_about(
                dead_letters, bsn=normal, key=key, incomplete=incomplete, own_ids=own_ids, refs=refs
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
        "in_transit": in_transit(topic_prefix),
    }


IN_TRANSIT_NOTE = (
    "Each message about the youth passed through the hub's own topics on its way: the broker keeps a"
    " copy there for the days given, then drops it. These copies are the messages whose effects the"
    " parts above show (a referral, a decision, a handover as delivered to its receiver, a signal"
    " command, a mail); they are not read one by one. The dead-letter topics are read (dead_letters)."
)


def in_transit(prefix: str) -> dict[str, Any]:
    """Which of the hub's topics (under `prefix`) may still hold a copy of a message about the youth,
    and for how many days the broker keeps one: said, not left out silently. The export reads the
    store and the dead letters, not every topic's last week."""
    topics = [t for t in all_topics() if ".dlq." not in t.name]
    return {
        "note": IN_TRANSIT_NOTE,
        "topics": [{"topic": prefix + t.name, "kept_days": t.retention_ms // DAY_MS} for t in topics],
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
            topic_prefix=hub.settings.kafka.topic_prefix,
        )
    except InvalidBsn as exc:
        raise Problem(
            422, "Geen geldig BSN", "Zie invalidParams.", params=[InvalidParam(name="bsn", reason=str(exc))]
        ) from None


def counts_line(counts: Mapping[str, int]) -> str:
    """`referrals 2, consents 1, ...` for a command's summary."""
    return ", ".join(f"{part} {n}" for part, n in counts.items())
