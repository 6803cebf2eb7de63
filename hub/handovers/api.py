"""Handover endpoints: caseworkers request and follow handovers and zorgmeldingen; receivers answer."""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, Response
from pydantic import AfterValidator, Field, StringConstraints
from pydantic_core import PydanticCustomError
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from hub.api.idempotency import IdempotencyKey, claim_of, create_once, replay_earlier
from hub.api.problems import HubStarting, Problem
from hub.audit import AuditEntry, write_audit
from hub.consent.caseworker import (
    CurrentCaseworker,
    NotOnCase,
    may_see_case,
    refusals_audited,
    require_case,
)
from hub.handovers.answers import record_answer
from hub.handovers.component import HandoverAnswer, routing_of
from hub.handovers.receivers import receiver_delivery
from hub.handovers.service import (
    ZORGMELDING,
    Act,
    HandoverProblem,
    create_handover,
    get_handover,
    load_referral,
)
from hub.handovers.tables import handovers
from hub.partners import CurrentPartner
from hub.runtime import Hub
from hub.store.locks import lock_youths
from schemas._base import CanonicalModel, Code, ShortText
from schemas.bsn import is_valid_bsn
from schemas.caseworker import Caseworker
from schemas.consent import ConsentPurpose, DataCategory
from schemas.handover import Handover, JointMeeting, ReceiverType
from schemas.pseudonym import receiver_ref

RECEIVER_TYPES = frozenset(t.value for t in ReceiverType)  # the partner types that receive handovers
SYSTEM = "ketenhub-api"  # reads through the API, as the consent and referral reads
router = APIRouter(prefix="/api/v1", tags=["overdrachten"])
MELDCODE = "Wet verplichte meldcode huiselijk geweld en kindermishandeling; meldrecht art. 5.2.6 Wmo 2015"
LEGAL_BASIS_MAX = 300
# A BSN as people write it: 8 or 9 digits in a row, or 9 in the groups 3-3-3 or 4-2-3 split by one
# space, dot or dash ("123 456 782", "1234.56.782"). Not any digits that add up to 8 or 9: an article
# and a year ("art. 7.1.1.1 2017") are no BSN.
_BSN_WRITTEN = re.compile(
    r"(?<![\d.\-])(\d{8,9}|\d{3}[ .\-]\d{3}[ .\-]\d{3}|\d{4}[ .\-]\d{2}[ .\-]\d{3})(?![\d]|[.\-]\d)"
)


def _names_a_bsn(text: str) -> bool:
    """True when `text` holds a number written as a BSN that passes the elfproef (schemas.bsn): a
    legal basis names a law and an article, never a person."""
    return any(is_valid_bsn(re.sub(r"[ .\-]", "", m.group(1))) for m in _BSN_WRITTEN.finditer(text))


def _check_legal_basis(text: str) -> str:
    # Rule 21 puts the legal basis on every audit entry of the zorgmelding, kept for years, and
    # rule 18 keeps a BSN and free text about a person out of the audit log.
    if any(unicodedata.category(c) in ("Cc", "Cs", "Zl", "Zp") for c in text):  # Cs: no store takes one
        raise PydanticCustomError(
            "legal_basis_control",
            "bevat een stuurteken of regeleinde: de grondslag is één regel tekst "
            "(contains a control character or line break: the legal basis is one line of text)",
        )
    if _names_a_bsn(text):
        raise PydanticCustomError(
            "legal_basis_bsn",
            "bevat een nummer dat een BSN kan zijn (8 of 9 cijfers die de elfproef doorstaan); de "
            "grondslag noemt de wet en het artikel, geen persoon (contains a number that may be a BSN; "
            "the legal basis names the law and article, never a person)",
        )
    return text


# The legal basis of a zorgmelding: one line naming the law and article, audited with it (rule 21).
LegalBasis = Annotated[
    str,
    StringConstraints(strip_whitespace=True, min_length=1, max_length=LEGAL_BASIS_MAX),
    AfterValidator(_check_legal_basis),
]


class HandoverIn(CanonicalModel):
    """A caseworker's request for a warm handover of a referral."""

    referral_id: Code
    receiver_organisation: Code
    purpose: ConsentPurpose = ConsentPurpose.WARME_OVERDRACHT
    data_categories: list[DataCategory] = Field(min_length=1)
    summary: ShortText = Field(description="short and minimised: no more than the receiver needs")
    joint_meeting: JointMeeting | None = None


class ZorgmeldingIn(CanonicalModel):
    """Rule 21: a report to Veilig Thuis under the meldcode, the one disclosure without consent."""

    referral_id: Code
    receiver_organisation: Code
    data_categories: list[DataCategory] = Field(min_length=1)
    summary: ShortText
    legal_basis: LegalBasis = Field(
        default=MELDCODE,
        description=f"the law and article the report rests on: one line, at most {LEGAL_BASIS_MAX} "
        "characters, no BSN (it is written to the audit log)",
    )


class _Handover(CanonicalModel):
    """What a caseworker and the receiver both see of a handover."""

    handover_id: str
    receiver_organisation: str
    receiver_type: str
    purpose: str
    status: str
    status_reason: str | None
    data_categories: list[str]
    joint_meeting: dict[str, Any] | None
    created_at: datetime
    sent_at: datetime | None
    delivered_at: datetime | None
    answered_at: datetime | None
    meeting_planned_at: datetime | None

    @staticmethod
    def seen(row: Any) -> dict[str, Any]:
        """Those fields of a handovers row (its moments in UTC, with the offset: `UtcDateTime`)."""
        return {
            "handover_id": row.id,
            **{name: getattr(row, name) for name in _Handover.model_fields if name != "handover_id"},
        }


class HandoverOut(_Handover):
    """Where a handover stands, as the caseworker follows it."""

    referral_id: str
    waiting_reasons: list[str] | None
    consent_id: str | None

    @classmethod
    def of(cls, row: Any) -> HandoverOut:
        """From a handovers row."""
        return cls(
            **cls.seen(row),
            referral_id=row.referral_id,
            waiting_reasons=row.waiting_reasons,
            consent_id=row.consent_id,
        )


class AnsweredOut(_Handover):
    """A handover as its receiver sees it when it answers: the organisation's own references in
    place of the hub's referral and consent ids, as in the handover it got (two receivers of one
    referral cannot join on them: connectors.receivers.outgoing)."""

    referral_ref: str
    consent_ref: str | None

    @classmethod
    def of(cls, row: Any, secret: str) -> AnsweredOut:
        """From a handovers row, under the hub's secret."""
        org = row.receiver_organisation
        consent = row.consent_id and receiver_ref(secret, org, "consent", row.consent_id)
        referral = receiver_ref(secret, org, "referral", row.referral_id)
        return cls(**cls.seen(row), referral_ref=referral, consent_ref=consent)


def _hub(request: Request) -> Hub:
    hub: Hub = request.app.state.hub
    if hub.store is None or hub.relay is None:
        raise HubStarting()
    return hub


async def _request(
    request: Request,
    response: Response,
    caseworker: Caseworker,
    body: HandoverIn | ZorgmeldingIn,
    purpose: str,
    basis: str | None,
    idempotency_key: str | None,
    check: Callable[[Hub], None] = lambda _: None,
) -> HandoverOut:
    """Ask for a handover; `check` refuses what this endpoint may not ask for, after a retry with
    an `Idempotency-Key` was answered with what its first request made.

    Only a caseworker who works on the youth's case (or anyone, while nobody does yet) may ask:
    asking makes them one who works on it (`may_see_case`), which opens the case's consents and
    handovers, and a handover discloses the youth's data. It is asked under the youth's case lock,
    and a refusal (403) is audited (`handover.request_refused`, reason `not_on_case`)."""
    caseworker_id = caseworker.caseworker_id
    hub = _hub(request)
    assert hub.store is not None and hub.relay is not None
    act = Act(user=caseworker_id, transaction_id=request.state.transaction_id)
    claim = claim_of(
        idempotency_key,
        user=caseworker_id,
        endpoint=f"POST {request.url.path}",
        request=body.model_dump_json().encode(),
        secret=hub.settings.secret_value(),
        at=hub.clock(),
    )

    async def replay(session: AsyncSession, handover_id: str) -> Any:
        return await _audited_read(session, request, handover_id, caseworker_id)

    if (earlier := await replay_earlier(hub.store, claim, response, replay)) is not None:
        return HandoverOut.of(earlier)
    check(hub)

    async def create(session: AsyncSession) -> tuple[str, Any]:
        found = await load_referral(session, body.referral_id)  # unknown: create_handover says 404
        # The youth's case lock before the check, as recording a consent takes it: while another
        # caseworker's first request on the youth commits, this one waits, then finds them on the
        # case. Then the referral again: a purge may have taken it meanwhile (create_handover: 404).
        if found is not None and await lock_youths(session, [found[1]]):
            found = await load_referral(session, body.referral_id)
        if found is not None:
            await require_case(session, found[1], caseworker)
        target = await receiver_delivery(session, body.receiver_organisation)
        if target is None:
            raise Problem(
                400, "Onbekende ontvanger", "Deze organisatie ontvangt geen overdrachten via de hub."
            )
        handover = Handover(
            referral_id=body.referral_id,
            from_caseworker=caseworker_id,
            receiver_organisation=body.receiver_organisation,
            receiver_type=ReceiverType(target.receiver_type),
            data_categories=body.data_categories,
            summary=body.summary,
            joint_meeting=getattr(body, "joint_meeting", None),
        )
        try:
            row = await create_handover(
                session, routing_of(hub), handover, act, purpose=purpose, legal_basis=basis
            )
        except HandoverProblem as exc:
            raise Problem(exc.status, "Overdracht niet mogelijk", str(exc)) from None
        return row.id, row

    # a 403 says the hub holds a case for the youth: audited under its key, as a disclosure is
    async with refusals_audited(
        hub.store, action="handover.request_refused", user=caseworker_id,
        transaction_id=act.transaction_id, system=SYSTEM, referral_id=body.referral_id, purpose=purpose,
    ):  # fmt: skip
        row = await create_once(hub.store, claim, response, create, replay)
    hub.relay.wake()
    return HandoverOut.of(row)


@router.post("/overdrachten", status_code=202, response_model=HandoverOut)
async def request_handover(
    request: Request,
    response: Response,
    body: HandoverIn,
    caseworker: CurrentCaseworker,
    idempotency_key: IdempotencyKey = None,
) -> HandoverOut:
    """Ask for a warm handover; it goes out once a consent covers it (rule 9).

    Sent again with the same `Idempotency-Key`, it answers with the handover the first one made."""
    return await _request(request, response, caseworker, body, body.purpose.value, None, idempotency_key)


@router.post("/zorgmeldingen", status_code=202, response_model=HandoverOut)
async def request_zorgmelding(
    request: Request,
    response: Response,
    body: ZorgmeldingIn,
    caseworker: CurrentCaseworker,
    idempotency_key: IdempotencyKey = None,
) -> HandoverOut:
    """Rule 21: a zorgmelding goes to Veilig Thuis without consent; its legal basis is written to the
    audit log. To any other organisation it is refused (422): that would be a handover without consent."""

    def to_veilig_thuis(hub: Hub) -> None:
        if body.receiver_organisation not in hub.settings.handovers.zorgmelding_receivers:
            raise Problem(
                422,
                "Zorgmelding niet mogelijk",
                "Een zorgmelding gaat alleen naar Veilig Thuis (regel 21); deze organisatie ontvangt er "
                "geen. Vraag voor een andere ontvanger een warme overdracht aan, met toestemming.",
            )

    return await _request(
        request, response, caseworker, body, ZORGMELDING, body.legal_basis, idempotency_key,
        check=to_veilig_thuis,
    )  # fmt: skip


@router.get("/overdrachten", response_model=list[HandoverOut])
async def list_handovers(
    request: Request, caseworker: CurrentCaseworker, referral_id: Annotated[str, Query(max_length=100)]
) -> list[HandoverOut]:
    """The handovers of a referral; the read is audited (rule 18): it shows where a youth was referred."""
    hub = _hub(request)
    assert hub.store is not None
    async with (
        _read_refused(request, caseworker, referral_id=referral_id),
        hub.store.transaction() as session,
    ):
        rows = (
            await session.execute(
                select(handovers)
                .where(handovers.c.referral_id == referral_id)
                .order_by(handovers.c.created_at)
            )
        ).all()
        if rows and not await may_see_case(session, rows[0].youth_key, caseworker):
            raise NotOnCase(rows[0].youth_key)
        if rows:
            entry = AuditEntry(
                action="handover.read",
                user=caseworker.caseworker_id,
                youth_key=rows[0].youth_key,
                objects={"referral_id": referral_id, "handover_ids": [r.id for r in rows]},
            )
            await write_audit(session, entry, transaction_id=request.state.transaction_id, system=SYSTEM)
    return [HandoverOut.of(r) for r in rows]


@router.get("/overdrachten/{handover_id}", response_model=HandoverOut)
async def read_handover(request: Request, handover_id: str, caseworker: CurrentCaseworker) -> HandoverOut:
    """One handover's status; the read is audited (rule 18)."""
    hub = _hub(request)
    assert hub.store is not None
    async with (
        _read_refused(request, caseworker, handover_id=handover_id),
        hub.store.transaction() as session,
    ):
        found = await get_handover(session, handover_id)
        if found is not None and not await may_see_case(session, found.youth_key, caseworker):
            raise NotOnCase(found.youth_key)
        row = await _audited_read(session, request, handover_id, caseworker.caseworker_id)
    return HandoverOut.of(row)


def _read_refused(request: Request, caseworker: Caseworker, **objects: Any) -> Any:
    """A 403 to a read of another's case (`NotOnCase`) audited as `handover.read_refused` under the
    youth's key, with who tried and what they named, in a transaction of its own."""
    hub = _hub(request)
    assert hub.store is not None
    return refusals_audited(
        hub.store, action="handover.read_refused", user=caseworker.caseworker_id,
        transaction_id=request.state.transaction_id, system=SYSTEM, **objects,
    )  # fmt: skip


async def _audited_read(session: AsyncSession, request: Request, handover_id: str, user: str) -> Any:
    """One handover's row; the read audited (rule 18)."""
    row = await get_handover(session, handover_id)
    if row is None:
        raise Problem(404, "Overdracht niet gevonden")
    entry = AuditEntry(
        action="handover.read",
        user=user,
        youth_key=row.youth_key,
        objects={"handover_id": row.id, "referral_id": row.referral_id},
        legal_basis=row.legal_basis,
    )
    await write_audit(session, entry, transaction_id=request.state.transaction_id, system=SYSTEM)
    return row


@router.post("/overdrachten/{handover_id}/status", response_model=AnsweredOut)
async def answer(
    request: Request, handover_id: str, body: HandoverAnswer, partner: CurrentPartner
) -> AnsweredOut:
    """A receiver answers a handover addressed to it: ONTVANGEN, GEACCEPTEERD, GEWEIGERD (reason)."""
    hub = _hub(request)
    assert hub.store is not None
    if partner.type.value.upper() not in RECEIVER_TYPES:  # a police or case-system key named as one
        raise Problem(403, "Geen ontvanger", "Alleen een ontvangende organisatie beantwoordt een overdracht.")
    act = Act(user=partner.name, transaction_id=request.state.transaction_id, on_behalf_of=partner.name)
    try:
        async with hub.store.transaction() as session:
            row = await record_answer(
                session,
                routing_of(hub),
                handover_id,
                partner.name,
                body.status,
                act,
                reason=body.reason,
                meeting_planned_at=body.meeting_planned_at,
            )
    except HandoverProblem as exc:
        raise Problem(exc.status, "Antwoord niet verwerkt", str(exc)) from None
    assert hub.relay is not None
    hub.relay.wake()
    return AnsweredOut.of(row, hub.settings.secret_value())
