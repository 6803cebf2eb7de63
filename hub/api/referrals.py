"""Partner endpoints: referrals in (police, BOA, leerplicht, preventief) and their status out."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request, Response
from pydantic import BaseModel
from sqlalchemy import or_, select

from connectors import boa, leerplicht, politie, preventief
from hub.api.docs import inline_schema
from hub.api.limits import read_body, require_media_type
from hub.api.partner_lane import Lane
from hub.api.problems import HubStarting, InvalidParam, Problem
from hub.api.referral_models import (
    BatchReport,
    DecisionOut,
    ReadBatch,
    ReferralAnswer,
    ReferralStatus,
    RowResult,
    batch_report,
    problems,
    read_batch,
)
from hub.api.uploads import UploadSlots
from hub.audit import AuditEntry, audit_row, write_audit, write_audits
from hub.clock import aware
from hub.intake.component import batcher_of, service_of, sources_of
from hub.intake.partner_fields import partner_field
from hub.intake.service import POLITIE_REFERRER, IntakeResult, IntakeService, Origin
from hub.intake.sources import earlier_keys, partner_key
from hub.intake.tables import referrals
from hub.partners import CurrentPartner, Partner, PartnerType, partner_of_type
from hub.partners.auth import PartnerKey
from hub.runtime import Hub
from schemas.envelope import utcnow
from schemas.partners.boa import BoaVerwijzing
from schemas.partners.politie import PolitieVerwijzing
from schemas.partners.preventief import PreventiefAanmelding
from schemas.referral import Decision, Referral

router = APIRouter(prefix="/api/v1", tags=["verwijzingen"])
SYSTEM = "ketenhub-api"
JSON = "application/json"
CSV = "text/csv"
_JSON_ERRORS = problems(400, 401, 403, 409, 413, 415, 429, 503)  # 429: the partner writes too fast
_CSV_ERRORS = problems(400, 401, 403, 413, 415, 429, 503)
_CSV_ERRORS[429] = _CSV_ERRORS[429] | {
    "description": "Er loopt al een batch van deze partner, of deze partner stuurt te snel; er is niets "
    "opgeslagen, probeer het na Retry-After opnieuw"
}


def _hub(request: Request) -> Hub:
    hub: Hub = request.app.state.hub
    if hub.store is None or hub.relay is None:
        raise HubStarting()
    return hub


async def _earlier_keys(hub: Hub, partner: Partner) -> tuple[str, ...]:
    """The keys the partner's referrals were stored under besides its own (hub.intake.sources): its
    connector's from before its claim; for the police, those of every connector the police claimed."""
    if partner.type is PartnerType.POLITIE:
        assert hub.store is not None
        return await sources_of(hub).police_keys_in(hub.store)
    return earlier_keys(partner)


async def _origin(request: Request, hub: Hub, partner: Partner) -> Origin:
    """The partner as rule 7's referrer; what its connector sent before it claimed the connector's
    source is its too (hub.intake.sources)."""
    return Origin(
        referrer_key=partner_key(partner.id, partner.type),
        channel="http",
        transaction_id=request.state.transaction_id,
        system=SYSTEM,
        user=partner.name,
        partner_id=partner.id,
        also_known_as=await _earlier_keys(hub, partner),
    )


def _answer(result: IntakeResult, referral: Referral) -> ReferralAnswer:
    return ReferralAnswer(
        referral_id=result.referral_id,
        case_reference=referral.case_reference,
        track=referral.track.value,
        status=result.decision.outcome,
        decision=DecisionOut.of(result.decision, result.referrer_type),
        received_at=result.received_at,
        duplicate=result.duplicate,
    )


async def _take_in_json(request: Request, partner: Partner, parse: Callable[[bytes], Referral]) -> Response:
    hub = _hub(request)
    require_media_type(request, JSON)
    raw = await read_body(request, hub.settings.http.max_body_bytes)
    referral = parse(raw)  # PartnerFormatError -> 400 problem+json naming each field
    assert hub.store is not None and hub.relay is not None
    # Concurrent requests share one transaction (group commit); the answer comes once it committed.
    result = await batcher_of(hub).take_in(referral, await _origin(request, hub, partner))
    hub.relay.wake()
    if result.conflict:
        [reason] = result.decision.reasons
        raise Problem(
            409,
            "Kenmerk al in gebruik",
            reason.message,
            params=[
                InvalidParam(
                    name=reason.field or "case_reference",
                    reason="al gebruikt voor een andere jeugdige",
                    partner_field=partner_field(reason, result.referrer_type),
                )
            ],
        )
    # The answer is written once by pydantic: returned as a model, FastAPI would validate it again
    # against the response model, dump it to dicts and then encode those.
    return Response(
        _answer(result, referral).model_dump_json(by_alias=True),
        status_code=200 if result.duplicate else 201,
        headers={"Location": f"/api/v1/verwijzingen/{result.referral_id}"},
        media_type=JSON,
    )


def _json_body(partner_format: str, model: type[BaseModel]) -> dict[str, Any]:
    """The partner format's JSON schema as the documented body. The handler still reads the raw body
    itself, so a body that does not fit gets the hub's own 400 naming each field, not FastAPI's 422."""
    return {
        "requestBody": {
            "required": True,
            "description": f"Eén verwijzing in het {partner_format}-formaat (zie de README, 'Partners').",
            "content": {JSON: {"schema": inline_schema(model)}},
        }
    }


_POLITIE_KEY = partner_of_type(PartnerType.POLITIE)
_BOA_KEY = partner_of_type(PartnerType.BOA)
_PREVENTIEF_KEY = partner_of_type(PartnerType.PREVENTIEF, PartnerType.WIJKTEAM, PartnerType.JONGERENWERK)


def partner_lanes() -> dict[str, Lane]:
    """The JSON endpoints below, for `PartnerLaneMiddleware`: the same key check and handler as
    their routes, without FastAPI's request machinery (hub.api.partner_lane)."""

    def lane(key: PartnerKey, parse: Callable[[bytes], Referral]) -> Lane:
        return Lane(key, lambda request, partner: _take_in_json(request, partner, parse))

    return {
        f"{router.prefix}/politie/verwijzingen": lane(_POLITIE_KEY, politie.parse),
        f"{router.prefix}/boa/verwijzingen": lane(_BOA_KEY, boa.parse),
        f"{router.prefix}/preventief/verwijzingen": lane(_PREVENTIEF_KEY, preventief.parse),
    }


_POST: dict[str, Any] = {
    "response_model": ReferralAnswer,
    "status_code": 201,
    "responses": {200: {"description": "Herhaling: het eerste besluit", "model": ReferralAnswer}}
    | _JSON_ERRORS,
}


@router.post(
    "/politie/verwijzingen",
    summary="Politie: één verwijzing",
    openapi_extra=_json_body("politie", PolitieVerwijzing),
    **_POST,
)
async def post_politie(request: Request, partner: Annotated[Partner, Depends(_POLITIE_KEY)]) -> Response:
    """Decide a police referral; 201 with the decision, 200 with the first decision for a repeat."""
    return await _take_in_json(request, partner, politie.parse)


@router.post(
    "/boa/verwijzingen",
    summary="BOA: één verwijzing",
    openapi_extra=_json_body("BOA", BoaVerwijzing),
    **_POST,
)
async def post_boa(request: Request, partner: Annotated[Partner, Depends(_BOA_KEY)]) -> Response:
    """Decide a BOA referral from the handheld app."""
    return await _take_in_json(request, partner, boa.parse)


@router.post(
    "/preventief/verwijzingen",
    summary="Preventief: één aanmelding",
    openapi_extra=_json_body("preventief", PreventiefAanmelding),
    **_POST,
)
async def post_preventief(
    request: Request, partner: Annotated[Partner, Depends(_PREVENTIEF_KEY)]
) -> Response:
    """Decide a preventive referral from a wijkteam, jongerenwerk, school or wijkagent."""
    return await _take_in_json(request, partner, preventief.parse)


@router.post(
    "/leerplicht/verwijzingen",
    summary="Leerplicht: een CSV-batch",
    response_model=BatchReport,
    responses=_CSV_ERRORS,
    openapi_extra={
        "requestBody": {
            "required": True,
            "description": "Puntkomma-gescheiden export met Nederlandse kolomkoppen (zie de README).",
            "content": {CSV: {"schema": {"type": "string"}}},
        }
    },
)
async def post_leerplicht(
    request: Request, partner: Annotated[Partner, Depends(partner_of_type(PartnerType.LEERPLICHT))]
) -> Response:
    """Every row is reported: accepted (with its referral id), duplicate, or rejected with reasons."""
    hub = _hub(request)
    require_media_type(request, CSV)
    with _uploads(request).one_at_a_time(partner.id):
        return await _take_in_csv(request, hub, partner)


def _uploads(request: Request) -> UploadSlots:
    slots = getattr(request.app.state, "uploads", None)
    if slots is None:
        slots = request.app.state.uploads = UploadSlots()
    return slots


async def _take_in_csv(request: Request, hub: Hub, partner: Partner) -> Response:
    raw = await read_body(request, hub.settings.http.max_body_bytes)
    # Reading a megabyte of rows takes seconds of pure Python: in a thread, other requests go on
    # (the GIL changes hands every few milliseconds). A wrong encoding, delimiter or header: 400.
    read = await asyncio.to_thread(lambda: read_batch(leerplicht.iter_batch(raw)))
    origin = await _origin(request, hub, partner)
    assert hub.store is not None and hub.relay is not None
    async with hub.store.transaction() as session:
        service = service_of(hub)
        results = await service.take_in_many(session, read.referrals, origin)
        repeats = await _unreadable_repeats(session, service, read, origin, partner)
        counts = {k.value.lower(): 0 for k in RowResult}
        counts["rejected"] = read.total - len(results) - len(repeats)
        counts["duplicate"] = len(repeats)
        for result in results:
            kind = RowResult.DUPLICATE if result.duplicate else RowResult(result.decision.outcome.value)
            counts[kind.value.lower()] += 1
        await write_audit(
            session,
            AuditEntry(
                action="referral.batch_received", user=partner.name, objects={"rows": read.total} | counts
            ),
            transaction_id=origin.transaction_id,
            system=SYSTEM,
        )
    hub.relay.wake()
    # Written once by pydantic, in the thread as well (see _take_in_json on returning a model).
    report = await asyncio.to_thread(
        lambda: batch_report(read, results, repeats).model_dump_json(by_alias=True)
    )
    return Response(report, media_type=JSON)


async def _unreadable_repeats(
    session: Any, service: IntakeService, read: ReadBatch, origin: Origin, partner: Partner
) -> dict[int, IntakeResult]:
    """Unreadable rows whose Dossiernummer this partner's referrals took before: their first answer.

    Rule 7: a repeat is answered with the first outcome, also when this copy of the row cannot be
    read; a refusal would contradict what the hub holds (the police's unreadable resends are answered
    so too). A row whose readable BSN names another youth than the first referral is no repeat and
    stays refused. Each such answer is audited under the youth, as a repeat is.
    """
    if not read.unreadable:
        return {}
    first = await service.first_answers(session, origin.keys, {ref for _, ref, _ in read.unreadable})
    repeats: dict[int, IntakeResult] = {}
    for number, reference, bsn in read.unreadable:
        found = first.get(reference)
        if found is not None and (bsn is None or service.youth_key(bsn) == found.youth_key):
            repeats[number] = found
    await write_audits(
        session,
        [
            audit_row(
                "referral.unparseable",
                partner.name,
                at=utcnow(),
                system=SYSTEM,
                transaction_id=origin.transaction_id,
                youth_key=found.youth_key,
                objects={
                    "case_reference": found.decision.case_reference,
                    "referral_id": found.referral_id,
                    "row": number,
                    "answered": "first outcome",
                },
            )
            for number, found in repeats.items()
        ],
    )
    return repeats


def _referred_by(partner: Partner, earlier: tuple[str, ...]) -> Any:
    """The referrals `partner` made: its own, for the police every police referral, and what the
    connectors whose sources it (or, for the police, any police partner) claimed sent before the claim
    (`earlier`, one referrer, rule 7: a repeat over HTTP of a referral first sent on Kafka is answered
    with that referral, which the partner may read)."""
    if partner.type is PartnerType.POLITIE:
        earlier = (POLITIE_REFERRER, *earlier)
    if earlier:
        return or_(referrals.c.partner_id == partner.id, referrals.c.referrer_key.in_(earlier))
    return referrals.c.partner_id == partner.id


@router.get(
    "/verwijzingen/{referral_id}",
    summary="Status en besluit van een eigen verwijzing",
    response_model=ReferralStatus,
    responses=problems(401, 404, 503),
)
async def get_referral(request: Request, referral_id: str, partner: CurrentPartner) -> ReferralStatus:
    """A partner sees only its own referrals; another's id answers 404, as an unknown one does."""
    hub = _hub(request)
    assert hub.store is not None
    mine = _referred_by(partner, await _earlier_keys(hub, partner))
    async with hub.store.transaction() as session:
        row = (await session.execute(select(referrals).where(referrals.c.id == referral_id, mine))).first()
        if row is None:
            raise Problem(404, "Verwijzing niet gevonden", "Geen verwijzing met dit id van deze partner.")
        m = row._mapping
        await write_audit(
            session,
            AuditEntry(
                action="referral.read",
                user=partner.name,
                youth_key=m["youth_key"],
                objects={"referral_id": referral_id},
            ),
            transaction_id=request.state.transaction_id,
            system=SYSTEM,
        )
    decision = Decision.model_validate(m["decision"])
    return ReferralStatus(
        referral_id=m["id"],
        case_reference=m["case_reference"],
        track=m["track"],
        status=decision.outcome,
        decision=DecisionOut.of(decision, m["referrer_type"]),
        received_at=aware(m["received_at"]),
    )
