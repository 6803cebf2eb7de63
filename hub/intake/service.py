"""The one intake path for every channel: dedup (rule 7), decide, store, audit, announce."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import date, datetime
from typing import Any, Final

from sqlalchemy import bindparam, func, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession

from hub import clock
from hub.audit import audit_row, write_audits
from hub.clock import aware
from hub.intake.config import IntakeRules
from hub.intake.rules import ReasonField, decide
from hub.intake.tables import referrals
from hub.logging import get_logger
from hub.spine.outbox import add_many_to_outbox
from hub.store import RawJson
from hub.store.locks import lock_youths
from schemas.envelope import Envelope, new_id, utcnow
from schemas.pseudonym import youth_key
from schemas.referral import Decision, DecisionReason, Outcome, Referral, Track

log = get_logger(__name__)
DECIDED_TYPE = "ReferralDecided"
_CHUNK = 200  # rows per statement: well under SQLite's and PostgreSQL's bind-parameter limits


# Rule 7 for the police: one referrer, whether a record comes on its Kafka topic or over HTTP (a
# resend over the other channel during an outage is the same referral); its proces-verbaal numbers
# are unique across the Dutch police. Every other HTTP partner is a referrer of its own, and so is
# every Kafka connector, unless a partner claimed its source (hub.intake.sources).
POLITIE_REFERRER = "politie"


@dataclass(frozen=True)
class Origin:
    """Where a referral came from: who referred (rule 7 key), over what, under which transaction."""

    referrer_key: str
    channel: str
    transaction_id: str
    system: str
    user: str
    partner_id: str | None = None
    # Kafka referrers get their answer as a message, so a repeat is answered on the topic too.
    announce_duplicates: bool = False
    # Other keys the same referrer's referrals were stored under, looked up too (never stored under):
    # a partner's Kafka connector source from before the partner claimed it (hub.intake.sources).
    also_known_as: tuple[str, ...] = ()

    @property
    def keys(self) -> tuple[str, ...]:
        """Every key rule 7 looks a case reference up under: the referrer's, then its earlier ones."""
        return (self.referrer_key, *self.also_known_as)


@dataclass(frozen=True)
class IntakeResult:
    """The answer to a referral: its id, the (first) decision, and whether this was a repeat.

    `conflict`: the case reference was taken before by this referrer for another youth; nothing was
    stored, there is no referral id, and the decision is a refusal saying so."""

    referral_id: str | None
    decision: Decision
    duplicate: bool
    youth_key: str
    received_at: datetime
    track: str
    referrer_type: str
    conflict: bool = False


KENMERK_IN_GEBRUIK = "KENMERK_IN_GEBRUIK"
_CONFLICT_FIELD: Final[ReasonField] = "case_reference"


def conflict_of(referral: Referral, key: str, received_at: datetime) -> IntakeResult:
    """The answer to a referral whose case reference this referrer used before for another youth.

    Rule 7 makes a repeat of (referrer, case reference) the same referral, answered with its first
    outcome; a referral of another youth under it is no repeat but a mistake (a reused or mistyped
    reference, two municipalities' numbers under one key). Answered as a repeat it was lost, and the
    answer named the other youth's referral. It is refused, and nothing of it is stored."""
    decision = Decision(
        outcome=Outcome.REJECTED,
        case_reference=referral.case_reference,
        reasons=[
            DecisionReason(
                code=KENMERK_IN_GEBRUIK,
                message=(
                    "Dit kenmerk is al gebruikt voor een verwijzing van een andere jeugdige. Stuur deze"
                    " verwijzing met een eigen kenmerk; was de eerste verwijzing een vergissing, neem"
                    " dan contact op met Halt."
                ),
                field=_CONFLICT_FIELD,
            )
        ],
    )
    return IntakeResult(
        None, decision, False, key, received_at, referral.track.value, referral.referrer.type.value, True
    )


# The statements of every intake batch, built once: SQLAlchemy works out a cache key per new
# statement object, which on the HTTP intake's small batches cost more than the statement's values.
_EXISTING = select(referrals).where(
    referrals.c.referrer_key == bindparam("referrer_key"),
    referrals.c.case_reference.in_(bindparam("refs", expanding=True)),
)
# A referrer known under more than one key (a partner and the connector source it claimed).
_EXISTING_ANY = select(referrals).where(
    referrals.c.referrer_key.in_(bindparam("keys", expanding=True)),
    referrals.c.case_reference.in_(bindparam("refs", expanding=True)),
)
_PRIOR_TRUANCY = (
    select(referrals.c.youth_key, func.count())
    .where(
        referrals.c.youth_key.in_(bindparam("keys", expanding=True)),
        referrals.c.track == Track.HALT_SCHOOLVERZUIM.value,
        referrals.c.outcome == Outcome.ACCEPTED.value,
    )
    .group_by(referrals.c.youth_key)
)
_INSERT_NEW = {
    name: make(referrals)
    .on_conflict_do_nothing(index_elements=["referrer_key", "case_reference"])
    .returning(referrals.c.case_reference)
    for name, make in (("postgresql", postgresql.insert), ("sqlite", sqlite.insert))
}


async def _lock_youths(session: AsyncSession, youth_keys: set[str]) -> None:
    """Rule 5 counts a youth's earlier truancy referrals. On PostgreSQL two transactions would both
    count none for the same youth (from two leerplicht partners, or a CSV upload beside a Kafka
    record) and both accept a "first" referral: each holds the youth's case lock, and the later one
    counts after the earlier one committed."""
    await lock_youths(session, youth_keys)


class IntakeService:
    """Intake under one rule set and one pseudonymisation secret; shared by Kafka and HTTP."""

    def __init__(
        self, *, secret: str, rules: IntakeRules, decided_topic: str, today: Callable[[], date] = clock.today
    ) -> None:
        self.secret, self.rules, self.decided_topic = secret, rules, decided_topic
        self.today = today  # the hub's day in the Netherlands: every date rule counts from it

    def youth_key(self, bsn: str) -> str:
        """The pseudonymous key of a youth."""
        return youth_key(self.secret, bsn)

    async def take_in(self, session: AsyncSession, referral: Referral, origin: Origin) -> IntakeResult:
        """Decide and store a referral once per (referrer, case reference); a repeat gets the first answer."""
        return (await self.take_in_many(session, [referral], origin))[0]

    async def take_in_many(
        self,
        session: AsyncSession,
        items: Sequence[Referral],
        origin: Origin,
        *,
        transaction_ids: Sequence[str] | None = None,
    ) -> list[IntakeResult]:
        """`take_in` for a batch, in order, with a handful of statements instead of several per row.

        `transaction_ids`, one per item, when the items came in as separate messages (rule 19).
        """
        origins = (
            [replace(origin, transaction_id=t) for t in transaction_ids]
            if transaction_ids is not None
            else [origin] * len(items)
        )
        keys = [self.youth_key(r.youth.bsn) for r in items]
        first = await self._existing(session, origin.keys, {r.case_reference for r in items})
        truancy_keys = {k for k, r in zip(keys, items, strict=True) if r.track is Track.HALT_SCHOOLVERZUIM}
        await _lock_youths(session, truancy_keys)
        prior = await self._prior_truancy(session, truancy_keys)
        rows: dict[str, dict[str, Any]] = {}  # case reference -> the row this batch stores for it
        decisions: dict[str, Decision] = {}
        today = self.today()
        for referral, key, its_origin in zip(items, keys, origins, strict=True):
            if referral.case_reference in first or referral.case_reference in rows:
                continue  # a repeat: answered with the first outcome below
            decision = decide(referral, self.rules, prior_truancy_referrals=prior[key], today=today)
            if decision.accepted and referral.track is Track.HALT_SCHOOLVERZUIM:
                prior[key] += 1  # a later row for the same youth is a second truancy referral
            rows[referral.case_reference] = _row(referral, key, decision, its_origin)
            decisions[referral.case_reference] = decision
        stored = await self._insert(session, list(rows.values()))
        lost = {ref for ref in rows if ref not in stored}  # a concurrent repeat committed first
        if lost:
            first |= await self._existing(session, origin.keys, lost)
        fresh = {
            ref: _result(row, duplicate=False, decision=decisions[ref])
            for ref, row in rows.items()
            if ref in stored
        }
        answers: list[IntakeResult] = []
        now = utcnow()
        for referral, key in zip(items, keys, strict=True):
            ref = referral.case_reference
            if ref in fresh:
                answers.append(fresh.pop(ref))  # the first occurrence; later ones are repeats of it
                first[ref] = _dup(answers[-1])
            elif first[ref].youth_key != key:
                answers.append(conflict_of(referral, key, now))
            else:
                answers.append(first[ref])
        await self._record(session, items, answers, origins)
        return answers

    async def _record(
        self,
        session: AsyncSession,
        items: Sequence[Referral],
        results: list[IntakeResult],
        origins: Sequence[Origin],
    ) -> None:
        """Audit every step (rule 18) and announce decisions (and repeats, for Kafka referrers)."""
        now, rows = utcnow(), []
        for referral, result, origin in zip(items, results, origins, strict=True):
            objects: dict[str, Any] = {
                "referral_id": result.referral_id,
                "case_reference": referral.case_reference,
            }
            who: dict[str, Any] = {
                "at": now,
                "system": origin.system,
                "transaction_id": origin.transaction_id,
                "youth_key": result.youth_key,
                "on_behalf_of": referral.referrer.organisation,
            }
            if result.duplicate:
                rows.append(audit_row("referral.duplicate", origin.user, objects=objects, **who))
                continue
            if result.conflict:  # about this youth; the other youth's referral is not named
                conflict = {"case_reference": referral.case_reference, "via": origin.channel}
                rows.append(audit_row("referral.conflict", origin.user, objects=conflict, **who))
                continue
            reasons = [r.code for r in result.decision.reasons]
            received = objects | {"via": origin.channel}
            decided = objects | {"outcome": result.decision.outcome.value, "reasons": reasons}
            rows.append(audit_row("referral.received", origin.user, objects=received, **who))
            rows.append(audit_row("referral.decided", origin.user, objects=decided, **who))
        await write_audits(session, rows)  # one executemany: what write_audit does, row by row
        await add_many_to_outbox(
            session,
            [
                (self.decided_topic, self._announcement(result, origin), result.youth_key)
                for result, origin in zip(results, origins, strict=True)
                if not (result.duplicate or result.conflict) or origin.announce_duplicates
            ],
        )

    async def first_answer(
        self, session: AsyncSession, keys: Sequence[str], reference: str
    ) -> IntakeResult | None:
        """The answer a repeat of this case reference gets (rule 7), or None when it is new; `keys`:
        the referrer's (`Origin.keys`)."""
        return (await self._existing(session, keys, {reference})).get(reference)

    async def first_answers(
        self, session: AsyncSession, keys: Sequence[str], references: set[str]
    ) -> dict[str, IntakeResult]:
        """`first_answer` for many case references at once: those taken in before, with their answer."""
        return await self._existing(session, keys, references)

    async def _existing(
        self, session: AsyncSession, keys: Sequence[str], refs: set[str]
    ) -> dict[str, IntakeResult]:
        """Referrals already stored for these case references under the referrer's keys, as answers to
        a repeat. Under more than one key a reference may have been stored twice (over HTTP and through
        the connector, before the partner claimed the connector's source): the earlier one answers."""
        if isinstance(keys, str):  # one key given bare would be taken as its characters
            keys = (keys,)
        found: dict[str, IntakeResult] = {}
        for chunk in _chunks(sorted(refs)):
            if len(keys) == 1:
                rows = await session.execute(_EXISTING, {"referrer_key": keys[0], "refs": list(chunk)})
                found |= {r.case_reference: _result(r, duplicate=True) for r in rows}
                continue
            rows = await session.execute(_EXISTING_ANY, {"keys": list(keys), "refs": list(chunk)})
            for r in rows:
                known = found.get(r.case_reference)
                if known is None or aware(r.received_at) < known.received_at:
                    found[r.case_reference] = _result(r, duplicate=True)
        return found

    async def _prior_truancy(self, session: AsyncSession, keys: set[str]) -> Counter[str]:
        counts: Counter[str] = Counter()
        for chunk in _chunks(sorted(keys)):
            rows = await session.execute(_PRIOR_TRUANCY, {"keys": list(chunk)})
            counts.update({k: int(n) for k, n in rows})
        return counts

    async def _insert(self, session: AsyncSession, rows: list[dict[str, Any]]) -> set[str]:
        """Insert, skipping rows whose (referrer, case reference) exists: the UNIQUE constraint decides.

        One executemany: SQLAlchemy compiles the statement once (cached) and sends the rows in
        multi-row batches ("insertmanyvalues"), where a statement built per batch of values was
        compiled anew every time.
        """
        if not rows:
            return set()
        stmt = _INSERT_NEW["postgresql" if session.get_bind().dialect.name == "postgresql" else "sqlite"]
        return set((await session.execute(stmt, rows)).scalars())

    @staticmethod
    def _announcement(result: IntakeResult, origin: Origin) -> Envelope:
        return Envelope.new(
            type_=DECIDED_TYPE,
            transaction_id=origin.transaction_id,
            correlation_id=result.referral_id,
            source="ketenhub-intake",
            payload=decided_payload(result),
        )


def decided_payload(result: IntakeResult) -> dict[str, Any]:
    """The payload of referral.decided.v1: ids, youth key and decision; never a BSN or a name."""
    return {
        "referral_id": result.referral_id,
        "youth_key": result.youth_key,
        "referrer_type": result.referrer_type,
        "track": result.track,
        "duplicate": result.duplicate,
        "decision": result.decision.model_dump(mode="json"),
    }


def _row(referral: Referral, key: str, decision: Decision, origin: Origin) -> dict[str, Any]:
    return {
        "id": new_id(),
        "referrer_key": origin.referrer_key,
        "case_reference": referral.case_reference,
        "partner_id": origin.partner_id,
        "referrer_type": referral.referrer.type.value,
        "channel": origin.channel,
        "youth_key": key,
        "bsn": referral.youth.bsn,
        "track": referral.track.value,
        "outcome": decision.outcome.value,
        "referral": RawJson(referral.model_dump_json()),
        "decision": RawJson(decision.model_dump_json()),
        "transaction_id": origin.transaction_id,
        "received_at": utcnow(),
    }


def _result(row: Any, *, duplicate: bool, decision: Decision | None = None) -> IntakeResult:
    m = row if isinstance(row, dict) else row._mapping
    if decision is None:  # read back from the store
        decision = Decision.model_validate(m["decision"])
    return IntakeResult(
        m["id"], decision, duplicate, m["youth_key"], aware(m["received_at"]), m["track"], m["referrer_type"]
    )


def _dup(result: IntakeResult) -> IntakeResult:
    return IntakeResult(
        result.referral_id,
        result.decision,
        True,
        result.youth_key,
        result.received_at,
        result.track,
        result.referrer_type,
    )


def _chunks(items: Sequence[Any]) -> Iterable[Sequence[Any]]:
    for start in range(0, len(items), _CHUNK):
        yield items[start : start + _CHUNK]
