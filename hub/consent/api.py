"""Caseworker endpoints for consent: record (JSON or FHIR), list per youth, read, withdraw."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, Response
from fastapi.responses import JSONResponse
from pydantic import ValidationError
from sqlalchemy import select

from hub.api.docs import inline_schema
from hub.api.idempotency import IdempotencyKey, claim_of, create_once, replay_earlier
from hub.api.limits import media_type_of, read_body, require_media_type
from hub.api.problems import HubStarting, InvalidParam, Problem
from hub.audit import AuditEntry, write_audit
from hub.clock import local_day
from hub.consent.bodies import ConsentIn, ConsentOut, Withdrawal, effective_status
from hub.consent.caseworker import (
    CurrentCaseworker,
    NotOnCase,
    may_see_case,
    refusals_audited,
    require_case,
)
from hub.consent.custody import LATEST_FIRST, named_for
from hub.consent.fhir import CUSTODIANS_PATH, FHIR_JSON, FhirConsentError, to_fhir
from hub.consent.fhir_read import from_fhir, youth_key_of
from hub.consent.rules import Named, completeness
from hub.consent.service import (
    AlreadyWithdrawn,
    ConsentNotFound,
    SameAsActive,
    TooFewCustodians,
    record_consent,
    withdraw_consent,
)
from hub.consent.store import StoredConsent, consents_of, get_consent
from hub.handovers.component import routing_of
from hub.handovers.service import Act, load_referral
from hub.intake.tables import referrals
from hub.runtime import Hub
from hub.store.locks import lock_youths
from schemas._base import as_code
from schemas.caseworker import Caseworker
from schemas.consent import (
    MAX_CUSTODIANS,
    Consent,
    ConsentYouth,
)
from schemas.problems import controls_refused
from schemas.pseudonym import youth_key as make_key

router = APIRouter(prefix="/api/v1/toestemmingen", tags=["toestemmingen"])
SYSTEM = "ketenhub-api"


def _hub(request: Request) -> Hub:
    hub: Hub = request.app.state.hub
    if hub.store is None or hub.relay is None:
        raise HubStarting()
    return hub


async def _youth(
    session: Any, referral_id: str | None, key: str | None
) -> tuple[ConsentYouth, str, str | None]:
    """The youth (BSN, birth date), key and referral id, from a stored referral."""
    query = select(referrals.c.id).order_by(*LATEST_FIRST)
    query = (
        query.where(referrals.c.id == referral_id)
        if referral_id
        else query.where(referrals.c.youth_key == key)
    )
    found_id = (await session.execute(query.limit(1))).scalar()
    found = await load_referral(session, found_id) if found_id else None
    if found is None:
        raise Problem(
            404, "Jeugdige niet gevonden", "Geen verwijzing bij deze verwijzing-id of jeugdsleutel."
        )
    ref, ykey = found
    # the youth's case lock, then the referral again: a retention purge of the case either finds
    # this consent when it commits, or has committed and the referral is gone (hub.store.locks)
    if await lock_youths(session, [ykey]) and await load_referral(session, found_id) is None:
        raise Problem(404, "Jeugdige niet gevonden", "De verwijzing is zojuist verwijderd (bewaartermijn).")
    return ConsentYouth(bsn=ref.youth.bsn, birth_date=ref.youth.birth_date), ykey, found_id


CLOCK_SKEW = timedelta(minutes=5)  # a grantor's device may run a little ahead of the hub


def _check_answer_times(consent: Consent, now: datetime, field: str) -> None:
    """Rule 8 counts the youth's age on the day the last grantor answered: an answer dated in the
    future would make the youth older than they are (and a parent's permit seem unneeded), one
    before the youth was born is a typing error."""
    params = []
    for i, grantor in enumerate(consent.grantors):
        if grantor.given_at > now + CLOCK_SKEW:
            params.append(InvalidParam(name=field.format(i), reason="ligt in de toekomst"))
        elif local_day(grantor.given_at) > local_day(now):
            # Within the allowance, but on tomorrow's date: the day of consent, and with it the
            # youth's age (rule 8), would be a day ahead near a birthday.
            params.append(
                InvalidParam(name=field.format(i), reason="ligt op een dag na vandaag (Nederlandse tijd)")
            )
        elif local_day(grantor.given_at) < consent.youth.birth_date:
            params.append(
                InvalidParam(name=field.format(i), reason="ligt voor de geboortedatum van de jeugdige")
            )
    if params:
        raise Problem(
            422, "Toestemming ongeldig", "Een antwoord is gedateerd waar het niet kan.", params=params
        )


def _too_few(exc: TooFewCustodians, field: str) -> Problem:
    """422 for a number of custodians below what is known; only counts, no name, no BSN."""
    known = (
        f"de verwijzing van de jeugdige noemt er {exc.shown}"
        if exc.named >= exc.shown
        else f"de toestemming bevat antwoorden van {exc.shown} verschillende gezaghebbers"
    )
    if exc.shown > MAX_CUSTODIANS:  # more than can hold custody: a role given wrongly, not a number
        return Problem(
            422,
            "Te veel gezaghebbers",
            f"De toestemming bevat antwoorden van {exc.shown} verschillende gezaghebbers, terwijl het "
            f"gezag bij hoogstens {MAX_CUSTODIANS} mensen berust: controleer de rol van ieder die "
            "antwoordde (OUDER_MET_GEZAG, VOOGD of een andere) en leg de toestemming opnieuw vast.",
            params=[
                InvalidParam(
                    name="grantors" if field == "custodians" else "verification",  # JSON or FHIR
                    reason=f"{exc.shown} verschillende gezaghebbers",
                    allowed=f"hoogstens {MAX_CUSTODIANS}",
                )
            ],
        )
    return Problem(
        422,
        "Aantal gezaghebbers te laag",
        f"Opgegeven zijn {exc.stated} gezaghebber(s), maar {known}. Regel 8 vraagt de toestemming "
        "van iedere gezaghebber: stel vast hoeveel mensen het gezag over de jeugdige hebben en geef "
        f"dat aantal op in {field}.",
        params=[
            InvalidParam(
                name=field,
                reason=f"lager dan de {exc.shown} gezaghebbers die al bekend zijn",
                allowed=f"een geheel getal van {exc.shown} tot en met {MAX_CUSTODIANS}",
            )
        ],
    )


def _invalid(exc: ValidationError) -> Problem:
    params = [
        InvalidParam(
            name=".".join(str(p) for p in e["loc"]) or "(body)",
            reason=controls[0] if (controls := controls_refused(e)) is not None else e["msg"],
        )
        for e in exc.errors()
    ]
    return Problem(400, "Ongeldige toestemming", "Zie invalidParams.", params=params)


@router.post(
    "",
    status_code=201,
    response_model=ConsentOut,
    openapi_extra={
        "requestBody": {
            "required": True,
            "description": "De toestemming als JSON, of als FHIR R4 Consent (application/fhir+json) met de "
            "jeugdsleutel als patient.identifier.",
            "content": {
                "application/json": {"schema": inline_schema(ConsentIn)},
                FHIR_JSON: {"schema": {"type": "object", "description": "FHIR R4 Consent"}},
            },
        }
    },
)
async def record(
    request: Request,
    response: Response,
    caseworker: CurrentCaseworker,
    idempotency_key: IdempotencyKey = None,
) -> ConsentOut:
    """Record a consent (application/json, or a FHIR R4 Consent as application/fhir+json).

    Sent again with the same `Idempotency-Key`, it answers with the consent the first one made (as
    a read of it: `handovers_sent` is empty). Without a key, a consent the youth already has in
    force, the same in substance (`hub.consent.store.substance`), is refused (409, naming it;
    audited as `consent.refused`, reason `already_active`): a twin would outlive a withdrawal of
    the first (rule 10)."""
    hub = _hub(request)
    require_media_type(request, "application/json", FHIR_JSON)
    raw = await read_body(request, hub.settings.http.max_body_bytes)
    secret = hub.settings.secret_value()
    assert hub.store is not None and hub.relay is not None
    act = Act(user=caseworker.caseworker_id, transaction_id=request.state.transaction_id)
    fhir = media_type_of(request) == FHIR_JSON
    body: ConsentIn | None = None
    resource: Any = None
    if fhir:
        resource = _fhir_json(raw)
        asked = FHIR_JSON.encode() + b"\n" + _canonical_json(resource)
    else:
        try:
            body = ConsentIn.model_validate_json(raw)
        except ValidationError as exc:
            raise _invalid(exc) from None
        if not (body.referral_id or body.youth_key):
            raise Problem(400, "Ongeldige toestemming", "Geef referral_id of youth_key.")
        asked = b"application/json\n" + body.model_dump_json().encode()
    claim = claim_of(
        idempotency_key, user=act.user, endpoint=f"POST {router.prefix}", request=asked,
        secret=secret, at=hub.clock(),
    )  # fmt: skip

    async def replay(session: Any, consent_id: str) -> ConsentOut:
        return await _audited_read(hub, session, act, caseworker, consent_id)

    if (earlier := await replay_earlier(hub.store, claim, response, replay)) is not None:
        return earlier

    async def create(session: Any) -> tuple[str, ConsentOut]:
        if body is None:
            consent, referral_id = await _from_fhir_body(session, resource, caseworker, secret)
            key = make_key(secret, consent.youth.bsn)
        else:
            youth, key, referral_id = await _youth(session, body.referral_id, body.youth_key)
            await _may_record(session, key, caseworker)
            try:
                consent = Consent(
                    youth=youth,
                    recorded_by=caseworker.caseworker_id,
                    **body.model_dump(exclude={"referral_id", "youth_key"}),
                )
            except ValidationError as exc:
                raise _invalid(exc) from None
        _check_answer_times(
            consent, hub.clock(), "verification.{}.verificationDate" if fhir else "grantors.{}.given_at"
        )
        try:
            done = await record_consent(
                session, routing_of(hub), consent, act, youth_key=key, referral_id=referral_id
            )
        except TooFewCustodians as exc:
            raise _too_few(exc, CUSTODIANS_PATH if fhir else "custodians") from None
        except SameAsActive as exc:
            raise _Twin(key, exc.consent_id) from None
        out = ConsentOut.of(done.stored, done.named, local_day(hub.clock()), handovers_sent=done.sent)
        return done.stored.consent_id, out

    try:
        async with _refusal_audited(hub, act):
            made = await create_once(hub.store, claim, response, create, replay)
    except _Twin as twin:
        # On PostgreSQL a request beside this one with the same key may have made it, committed while
        # this one waited for the youth's lock: that is this request's answer, not a refusal.
        if (earlier := await replay_earlier(hub.store, claim, response, replay)) is not None:
            return earlier
        raise await _refuse_twin(hub, act, twin) from None
    hub.relay.wake()
    return made


class _Twin(Exception):
    """The youth has an ACTIEF consent that is the one asked for in substance."""

    def __init__(self, youth_key: str, consent_id: str) -> None:
        super().__init__(consent_id)
        self.youth_key, self.consent_id = youth_key, consent_id


async def _refuse_twin(hub: Any, act: Act, twin: _Twin) -> Problem:
    """409 naming the consent in force (its id only); audited as `consent.refused` under the youth's
    key, in a transaction of its own (the request's was rolled back), as a refused second signal is:
    the caller learns which consent the youth has (rule 18)."""
    async with hub.store.transaction() as session:
        entry = AuditEntry(
            action="consent.refused",
            user=act.user,
            youth_key=twin.youth_key,
            objects={"consent_id": twin.consent_id, "reason": ALREADY_ACTIVE},
        )
        await write_audit(session, entry, transaction_id=act.transaction_id, system=SYSTEM)
    return Problem(
        409,
        "Toestemming bestaat al",
        f"Deze toestemming is al vastgelegd en is van kracht: {twin.consent_id}. Een tweede, gelijke "
        "toestemming wordt niet vastgelegd: een intrekking van de eerste zou haar missen. Gebruik "
        "deze id; om de toestemming te vernieuwen trekt u haar eerst in.",
    )


ALREADY_ACTIVE = "already_active"  # the audited reason of a refused twin


async def _audited_read(
    hub: Any, session: Any, act: Act, caseworker: Caseworker, consent_id: str
) -> ConsentOut:
    """One consent as `GET /{consent_id}` answers it in JSON (see `_audited_stored`)."""
    stored, named = await _audited_stored(session, act, caseworker, consent_id)
    return ConsentOut.of(stored, named, local_day(hub.clock()))


async def _audited_stored(
    session: Any, act: Act, caseworker: Caseworker, consent_id: str
) -> tuple[StoredConsent, Named]:
    """One consent and what the youth's referrals name (rule 8), the read audited (rule 18); 404
    when it is gone, 403 (`NotOnCase`) when the caseworker may not see it."""
    stored = await get_consent(session, consent_id)
    if stored is None:
        raise Problem(404, "Toestemming niet gevonden")
    if not await may_see_case(session, stored.youth_key, caseworker):
        raise NotOnCase(stored.youth_key)
    await _audit_read(session, act, stored.youth_key, {"consent_id": consent_id})
    return stored, await named_for(session, stored.youth_key)


def _fhir_json(raw: bytes) -> Any:
    """The FHIR body as JSON; 400 when it is not."""
    try:
        return json.loads(raw)
    except (ValueError, RecursionError):  # not JSON, an integer Python will not read, too deep
        raise Problem(400, "Ongeldige FHIR Consent", "De body is geen JSON.") from None


def _canonical_json(value: Any) -> bytes:
    """`value` as JSON with its keys sorted and no spaces: the same resource sent again with its
    members in another order, or laid out otherwise, is the same request (`Idempotency-Key`)."""
    try:
        return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
    except (ValueError, RecursionError):  # too deep to write: the request's own bytes will not do
        raise Problem(400, "Ongeldige FHIR Consent", "De body is te diep genest.") from None


class _KnownYouthRefused(Problem):
    """A FHIR consent for a youth the hub knows, refused because its BSN or birth date differs.

    The answer (400, not 404) tells the caller the hub knows this BSN, so the refusal is audited
    under the youth's key, as a disclosure is: a privacy officer sees who tried it."""

    def __init__(self, youth_key: str, fields: list[str], params: list[InvalidParam]) -> None:
        super().__init__(400, "Ongeldige FHIR Consent", "Zie invalidParams.", params=params)
        self.youth_key, self.fields = youth_key, fields


@asynccontextmanager
async def _refusal_audited(hub: Any, act: Act) -> AsyncIterator[None]:
    """Audit, as `consent.refused` under the youth's key, a _KnownYouthRefused and a 403 for a youth
    whose case is others' (`NotOnCase`), each in a transaction of its own (the request's is rolled
    back): both tell the caller the hub knows the youth (a FHIR body names it by BSN)."""
    try:
        async with refusals_audited(
            hub.store, action="consent.refused", user=act.user, transaction_id=act.transaction_id,
            system=SYSTEM,
        ):  # fmt: skip
            yield
    except _KnownYouthRefused as refused:
        async with hub.store.transaction() as session:
            await write_audit(
                session,
                AuditEntry(
                    action="consent.refused",
                    user=act.user,
                    youth_key=refused.youth_key,
                    objects={"differs": refused.fields},
                ),
                transaction_id=act.transaction_id,
                system=SYSTEM,
            )
        raise


def _read_refused(hub: Any, act: Act, action: str, **objects: Any) -> Any:
    """A 403 to a read or withdrawal of another's case (`NotOnCase`) audited as `action` under the
    youth's key, with who tried and what they named (ids: no free text), in a transaction of its own
    (the request's is rolled back): a privacy officer sees who looked where they may not."""
    return refusals_audited(
        hub.store, action=action, user=act.user, transaction_id=act.transaction_id, system=SYSTEM, **objects
    )


async def _may_record(session: Any, youth_key: str, caseworker: Caseworker) -> None:
    """403 (`NotOnCase`, audited) unless the caseworker works on the youth's case (or nobody does
    yet): recording a consent makes its recorder one who works on the case (`may_see_case`), and so
    would open the case's consents and handovers to anyone who recorded one, and let them withdraw
    the others'. The caller holds the youth's case lock (`_youth`)."""
    await require_case(session, youth_key, caseworker)


async def _from_fhir_body(
    session: Any, resource: Any, caseworker: Caseworker, secret: str
) -> tuple[Consent, str | None]:
    """The consent in a FHIR body, for a youth the hub knows from a referral.

    The youth's BSN and birth date are the referral's, as for a JSON body. The resource's own
    birth date decides nothing: rule 8 counts whose permits are needed by the youth's age, and an
    edited `birthDate` would make a 14-year-old's consent complete without a parent's permit.
    A resource whose BSN or birth date disagrees with the referral's is refused, not corrected.
    """
    known: dict[str, str] = {}  # youth key -> BSN

    async def lookup(key: str) -> None:
        if as_code(key) is None or not key.isprintable():  # no youth key: from_fhir refuses the patient
            return
        try:
            youth, _, _ = await _youth(session, None, key)
        except Problem:
            return
        known[key] = youth.bsn

    key = youth_key_of(resource)
    if key:
        await lookup(key)
    try:
        consent = from_fhir(resource, resolve_bsn=known.get)
    except FhirConsentError as exc:
        params = [
            InvalidParam(name=p.split(":")[0], reason=p.partition(":")[2].strip() or "ongeldig")
            for p in exc.problems
        ]
        raise Problem(400, "Ongeldige FHIR Consent", "Zie invalidParams.", params=params) from None
    ykey = key if key in known else make_key(secret, consent.youth.bsn)
    youth, _, referral_id = await _youth(session, None, ykey)  # 404 for a youth unknown here
    await _may_record(session, ykey, caseworker)
    wrong = []
    if consent.youth.bsn != youth.bsn:
        wrong.append(
            InvalidParam(name="patient", reason="de BSN hoort niet bij de jeugdige van de jeugdsleutel")
        )
    if consent.youth.birth_date != youth.birth_date:
        wrong.append(
            InvalidParam(
                name="contained.Patient.birthDate", reason="wijkt af van de geboortedatum in de verwijzing"
            )
        )
    if wrong:
        raise _KnownYouthRefused(ykey, [p.name for p in wrong], wrong)
    consent = consent.model_copy(
        update={"recorded_by": caseworker.caseworker_id, "consent_id": None, "youth": youth}
    )
    return consent, referral_id


async def _audit_read(session: Any, act: Act, youth_key: str, objects: dict[str, Any]) -> None:
    await write_audit(
        session,
        AuditEntry(
            action="consent.read",
            user=act.user,
            youth_key=youth_key,
            on_behalf_of=act.on_behalf_of,
            objects=objects,
        ),
        transaction_id=act.transaction_id,
        system=SYSTEM,
    )


@router.get("", response_model=list[ConsentOut])
async def list_consents(
    request: Request,
    caseworker: CurrentCaseworker,
    referral_id: Annotated[str | None, Query(max_length=100)] = None,
    youth_key: Annotated[str | None, Query(max_length=64)] = None,
) -> list[ConsentOut]:
    """A youth's consents, by referral id or pseudonymous youth key (never a BSN)."""
    hub = _hub(request)
    if not (referral_id or youth_key):
        raise Problem(400, "Welke jeugdige?", "Geef referral_id of youth_key.")
    assert hub.store is not None
    act = Act(user=caseworker.caseworker_id, transaction_id=request.state.transaction_id)
    asked = {"referral_id": referral_id} if referral_id else {}
    async with (
        _read_refused(hub, act, "consent.read_refused", **asked),
        hub.store.transaction() as session,
    ):
        _, key, _ = await _youth(session, referral_id, youth_key)
        if not await may_see_case(session, key, caseworker):
            raise NotOnCase(key)
        stored = await consents_of(session, key)
        await _audit_read(session, act, key, {"consent_ids": [s.consent_id for s in stored]})
        named = await named_for(session, key)
    today = local_day(hub.clock())
    return [ConsentOut.of(s, named, today) for s in stored]


@router.get("/{consent_id}", response_model=ConsentOut, responses={200: {"content": {FHIR_JSON: {}}}})
async def read(request: Request, consent_id: str, caseworker: CurrentCaseworker) -> Any:
    """One consent; with `Accept: application/fhir+json` as a FHIR R4 Consent (youth by key, no BSN)."""
    hub = _hub(request)
    assert hub.store is not None
    act = Act(user=caseworker.caseworker_id, transaction_id=request.state.transaction_id)
    async with (
        _read_refused(hub, act, "consent.read_refused", consent_id=consent_id),
        hub.store.transaction() as session,
    ):
        stored, named = await _audited_stored(session, act, caseworker, consent_id)
    if FHIR_JSON in request.headers.get("accept", ""):
        now = stored.consent.model_copy(
            update={"status": effective_status(stored.consent, local_day(hub.clock()))}
        )
        check = completeness(stored.consent, named=named)
        return JSONResponse(to_fhir(now, youth_key=stored.youth_key, check=check), media_type=FHIR_JSON)
    return ConsentOut.of(stored, named, local_day(hub.clock()))


@router.post("/{consent_id}/intrekking", response_model=ConsentOut)
async def withdraw(
    request: Request, response: Response, consent_id: str, body: Withdrawal, caseworker: CurrentCaseworker
) -> ConsentOut:
    """Rule 10: withdraw; pending handovers are withdrawn and receivers that got data are told."""
    hub = _hub(request)
    assert hub.store is not None and hub.relay is not None
    act = Act(user=caseworker.caseworker_id, transaction_id=request.state.transaction_id)
    try:
        async with (
            _read_refused(hub, act, "consent.withdraw_refused", consent_id=consent_id),
            hub.store.transaction() as session,
        ):
            found = await get_consent(session, consent_id)
            if found is not None and not await may_see_case(session, found.youth_key, caseworker):
                raise NotOnCase(found.youth_key)
            stored, withdrawn, kept = await withdraw_consent(
                session, routing_of(hub), consent_id, body.reason, act
            )
            named = await named_for(session, stored.youth_key)
    except ConsentNotFound:
        raise Problem(404, "Toestemming niet gevonden") from None
    except AlreadyWithdrawn:
        raise Problem(
            409,
            "Toestemming is niet meer actief",
            "Een ingetrokken of verlopen toestemming kan niet opnieuw worden ingetrokken.",
        ) from None
    hub.relay.wake()
    return ConsentOut.of(
        stored, named, local_day(hub.clock()), handovers_withdrawn=withdrawn, handovers_kept=kept
    )
