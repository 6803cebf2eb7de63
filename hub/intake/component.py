"""The intake component on the spine: police records and canonical referrals from Kafka."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from aiokafka import ConsumerRecord

from connectors import politie
from hub.audit import AuditEntry
from hub.clock import local_day
from hub.errors import PermanentError
from hub.intake import reject_unparseable
from hub.intake.batcher import IntakeBatcher
from hub.intake.config import load_intake_rules
from hub.intake.partner_fields import partner_field
from hub.intake.service import POLITIE_REFERRER, IntakeResult, IntakeService, Origin
from hub.intake.sources import DEFAULT_SOURCE, KafkaSources, UnnamedConnector
from hub.logging import redact_text
from hub.runtime import Hub
from hub.spine import Tx
from hub.spine.consumer import DeadLetter, Item
from hub.spine.outbox import add_many_to_outbox
from hub.topics import POLITIE_DECISION, POLITIE_REFERRAL, REFERRAL_DECIDED, REFERRAL_RECEIVED
from schemas.envelope import Envelope
from schemas.problems import PartnerFormatError
from schemas.referral import Decision, DecisionReason, Referral

# A partner's clock may run a little ahead of the hub's: near midnight its "today" is the hub's
# tomorrow. A date is refused as still to come (DATUM_IN_TOEKOMST) only past this margin, since a
# refusal stands for the case reference for good (rule 7).
CLOCK_SKEW = timedelta(minutes=15)
POLITIE_DECISION_TYPE = "PolitieBesluit"
BATCHER = "intake-batcher"


def batcher_of(hub: Hub) -> IntakeBatcher:
    """The hub's group-commit batcher for HTTP intake, made once and closed with the hub."""
    batcher = hub.components.get(BATCHER)
    if not isinstance(batcher, IntakeBatcher):
        assert hub.store is not None
        batcher = IntakeBatcher(hub.store, service_of(hub))
        hub.components[BATCHER] = batcher
    return batcher


def service_of(hub: Hub) -> IntakeService:
    """The hub's intake service, made once (rules and secret are read on first use, not at import)."""
    service = hub.components.get("intake")
    if not isinstance(service, IntakeService):
        service = IntakeService(
            secret=hub.settings.secret_value(),
            rules=load_intake_rules(),
            decided_topic=hub.topic(REFERRAL_DECIDED.name),
            today=lambda: local_day(hub.clock() + CLOCK_SKEW),
        )
        hub.components["intake"] = service
    return service


def sources_of(hub: Hub) -> KafkaSources:
    """The hub's cache of claimed connector sources (rule 7), read again every http.key_cache_s."""
    sources = hub.components.get("intake-sources")
    if not isinstance(sources, KafkaSources):
        sources = KafkaSources(hub.settings.http.key_cache_s)
        hub.components["intake-sources"] = sources
    return sources


def raw_value(record: ConsumerRecord[Any, Any]) -> bytes:
    """Police records are the partner's own JSON, not our envelope: hand the bytes to the parser."""
    return bytes(record.value or b"")


def politie_besluit(
    decision: Decision, *, referral_id: str | None, duplicate: bool, transaction_id: str
) -> Envelope:
    """The answer on partner.politie.decision.v1, in the police's own (Dutch) terms."""
    return Envelope.new(
        type_=POLITIE_DECISION_TYPE,
        transaction_id=transaction_id,
        correlation_id=referral_id or decision.case_reference,
        source="ketenhub-intake",
        payload={
            "procesVerbaalNummer": decision.case_reference,
            "verwijzingId": referral_id,
            "besluit": "GEACCEPTEERD" if decision.accepted else "AFGEWEZEN",
            "herhaling": duplicate,
            "redenen": [
                {"code": r.code, "toelichting": redact_text(r.message), "veld": _veld(r)}
                for r in decision.reasons
            ],
            "haltCategorie": decision.reason_category.value if decision.reason_category else None,
            "regelsVersie": decision.rules_version,
        },
    )


def _veld(reason: DecisionReason) -> str | None:
    """The field a reason names, in the police's terms: a rule names the canonical field, which
    becomes theirs; an unreadable record's reason names the field as they sent it already (an unknown
    field they called "confessed" stays that, and is not their "bekennend"); a field they have no
    equivalent of keeps its canonical name. BSN-like text in it is redacted, as in an HTTP answer
    (a BSN sent as a key)."""
    field = partner_field(reason, politie.REFERRER_TYPE) or reason.field
    return None if field is None else redact_text(field)


def register_intake(hub: Hub) -> None:
    """Subscribe intake to the police topic and to canonical referrals."""
    assert hub.spine is not None
    service = service_of(hub)
    sources = sources_of(hub)
    group = hub.group("intake")
    politie_out = hub.topic(POLITIE_DECISION.name)

    async def take_in_politie_batch(tx: Tx, items: list[Item[bytes]]) -> None:
        """A batch of police records in one go; any unreadable one sends the batch record by record."""
        parsed = [politie.parse(item.value) for item in items]
        origin = await politie_origin(tx, items[0].transaction_id)
        tx_ids = [item.transaction_id for item in items]
        results = await service.take_in_many(tx.session, parsed, origin, transaction_ids=tx_ids)
        await add_many_to_outbox(
            tx.session,
            [(politie_out, _besluit(r, t), r.youth_key) for r, t in zip(results, tx_ids, strict=True)],
        )

    async def politie_origin(tx: Tx, transaction_id: str) -> Origin:
        """The police's topic as rule 7's referrer: the police, whose referrals through a connector
        from before a police partner claimed it are theirs too (hub.intake.sources)."""
        aka = await sources.police_keys(tx.session)
        return Origin(
            POLITIE_REFERRER, "kafka", transaction_id, tx.system, user="politie (kafka)", also_known_as=aka
        )

    @hub.spine.subscribe(
        hub.topic(POLITIE_REFERRAL.name),
        group=group,
        dlq=hub.topic(POLITIE_REFERRAL.dlq),
        decode=raw_value,
        title="intake:politie",
        batch=take_in_politie_batch,
    )
    async def take_in_politie(tx: Tx, raw: bytes) -> None:
        """Police referrals (their JSON format): decided, stored, answered on partner.politie.decision.v1."""
        origin = await politie_origin(tx, tx.transaction_id)
        try:
            referral = politie.parse(raw)
        except PartnerFormatError as exc:
            reference = politie.case_reference_of(raw)
            first = await service.first_answer(tx.session, origin.keys, reference) if reference else None
            bsn = politie.bsn_of(raw)
            own = service.youth_key(bsn) if bsn else None
            if first is not None and own is not None and own != first.youth_key:
                first = None  # another youth's record under that PV number: no repeat (rule 7), refused
            key = own or (first.youth_key if first else None)
            raise _unparseable(exc, reference, politie_out, tx.transaction_id, first, key) from None
        result = await service.take_in(tx.session, referral, origin)
        await tx.emit(politie_out, _besluit(result, tx.transaction_id), key=result.youth_key)

    @hub.spine.subscribe(
        hub.topic(REFERRAL_RECEIVED.name),
        group=group,
        dlq=hub.topic(REFERRAL_RECEIVED.dlq),
        title="intake:referrals",
    )
    async def take_in_canonical(tx: Tx, message: Envelope) -> None:
        """Canonical referrals from Kafka connectors: decided, stored, answered on referral.decided.v1.

        The envelope's source names the connector, and the referrer for rule 7: the partner that
        claimed it (the police for a police partner's), else the connector itself. A record
        without a source of its own (the hub's default) is dead-lettered, as is a payload that is no
        Referral, and one whose referrer is not its claimed source's partner's kind
        (hub.intake.sources)."""
        if message.source == DEFAULT_SOURCE:  # said first: it is the connector's to fix first
            raise UnnamedConnector()
        referral = Referral.model_validate(message.payload)
        before_birth(referral)
        origin = await sources.origin(
            tx.session,
            message.source,
            transaction_id=tx.transaction_id,
            system=tx.system,
            referrer=referral.referrer.type,
        )
        await service.take_in(tx.session, referral, origin)


class BeforeBirth(PermanentError):
    """A canonical referral whose offence, or truancy, began before the youth was born: one of the two
    dates is mistyped. Every partner format refuses it; stored as a refusal (a negative age), it
    would take its case reference for good (rule 7), and the corrected referral would be answered
    with that refusal as a repeat."""

    def __init__(self, field: str) -> None:
        super().__init__(
            f"{field} lies before youth.birth_date: one of the two dates is wrong. Correct it and send"
            " the referral again under the same case_reference; nothing of this one was stored."
        )


def before_birth(referral: Referral) -> None:
    """Refuse a referral whose offence or truancy began before the youth's birth date (`BeforeBirth`).

    Not a check of the canonical `Referral` itself: stored referrals are read back through it, and
    one stored before this check would no longer load."""
    born = referral.youth.birth_date
    if referral.offence is not None and referral.offence.committed_on < born:
        raise BeforeBirth("offence.committed_on")
    if referral.truancy is not None and referral.truancy.period_start < born:
        raise BeforeBirth("truancy.period_start")


def _besluit(result: IntakeResult, transaction_id: str) -> Envelope:
    return politie_besluit(
        result.decision,
        referral_id=result.referral_id,
        duplicate=result.duplicate,
        transaction_id=transaction_id,
    )


def _unparseable(
    exc: PartnerFormatError,
    reference: str | None,
    topic: str,
    transaction_id: str,
    first: IntakeResult | None,
    key: str | None,
) -> DeadLetter:
    """Dead-letter the record; when its case reference is readable, the police still get an answer.

    Rule 7: when that reference was taken in before, the answer is its first outcome, as for any
    repeat; a refusal of the unreadable resend would contradict what the hub holds. The answer is
    keyed by the youth key (the first referral's, or the record's own BSN when it can be read), so it
    keeps its place among the youth's other decisions; without a readable BSN it goes without a key.
    """
    if reference is None:
        return DeadLetter(exc)
    if first is not None:
        answer = _besluit(first, transaction_id)
    else:
        decision = reject_unparseable(exc.problems, reference)
        answer = politie_besluit(decision, referral_id=None, duplicate=False, transaction_id=transaction_id)
    audit = AuditEntry(
        action="referral.unparseable",
        user="politie (kafka)",
        youth_key=key,
        objects={
            "case_reference": reference,
            "fields": [p.field_masked or p.field for p in exc.problems][:20],  # a key may be a name
            "answered": "first outcome" if first else "refused",
        },
    )
    return DeadLetter(exc, replies=[(topic, answer, key)], audit=[audit])
