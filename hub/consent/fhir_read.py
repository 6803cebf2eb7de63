"""A FHIR R4 Consent read into the canonical Consent: validated against the definition, then taken
only where it maps without permitting more than was given (rule 9); every problem names its path,
never a value. The way out, and the names both ways share, are `hub.consent.fhir`.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import date, datetime, time, timedelta
from enum import StrEnum
from typing import Any, TypeVar

from pydantic import TypeAdapter, ValidationError

from hub.clock import LOCAL, today
from hub.consent.fhir import (
    CS_ACTION,
    CS_CATEGORY,
    CS_PURPOSE,
    CS_ROLE,
    CUSTODIANS_PATH,
    DISCLOSE,
    EXT_ANSWER,
    EXT_CUSTODIANS,
    EXT_METHOD,
    EXT_RECORDED_BY,
    EXT_STATUS,
    NS_BSN,
    NS_YOUTH_KEY,
    FhirConsentError,
)
from schemas.consent import (
    MAX_CUSTODIANS,
    Consent,
    ConsentMethod,
    ConsentPurpose,
    ConsentStatus,
    ConsentYouth,
    DataCategory,
    GivenAt,
    Grantor,
    GrantorRole,
    Permission,
)

_GIVEN_AT: TypeAdapter[datetime] = TypeAdapter(GivenAt)


def validate_fhir(resource: dict[str, Any]) -> None:
    """Check a resource against the FHIR R4(B) Consent definition; FhirConsentError names the paths."""
    from fhir.resources.R4B.consent import Consent as FhirConsent  # heavy: imported on use

    if not isinstance(resource, dict):
        raise FhirConsentError(["(resource): must be a JSON object, a FHIR Consent"])
    if resource.get("resourceType") != "Consent":
        raise FhirConsentError(["resourceType: must be Consent"])
    try:
        FhirConsent.model_validate(resource)
    except ValidationError as exc:
        problems = dict.fromkeys(_validation_problem(e) for e in exc.errors())  # in order, once each
        raise FhirConsentError(list(problems)[:20]) from None
    except (KeyError, TypeError):  # the library's own, for a contained resource of no type it knows
        raise FhirConsentError(
            ["contained: each resource must be a Patient or a RelatedPerson, by its resourceType"]
        ) from None


def _validation_problem(error: Any) -> str:
    """One validation error as `path: type`. The name of an element the definition does not know
    is the caller's own text (it can be a name or a BSN): its parent is named instead."""
    loc = [str(p) for p in error["loc"]]
    if error["type"] == "extra_forbidden" and loc:
        parent = ".".join(loc[:-1]) or "(resource)"
        return f"{parent}: bevat een element dat niet in de FHIR R4 Consent-definitie staat; verwijder het"
    return f"{'.'.join(loc) or '(resource)'}: {error['type']}"


def _ext(element: dict[str, Any], url: str) -> Any:
    for ext in element.get("extension", []):
        if ext.get("url") == url:
            return next((v for k, v in ext.items() if k.startswith("value")), None)
    return None


def _code(codings: list[dict[str, Any]], system: str) -> str | None:
    return next((c.get("code") for c in codings if c.get("system") == system), None)


def youth_key_of(resource: object) -> str | None:
    """The youth key in `patient.identifier.value`, read before validation: of any other shape,
    None (validation then says what is wrong)."""
    patient = resource.get("patient") if isinstance(resource, dict) else None
    identifier = patient.get("identifier") if isinstance(patient, dict) else None
    key = identifier.get("value") if isinstance(identifier, dict) else None
    return key if isinstance(key, str) else None


def _given_at(verification: dict[str, Any], i: int) -> datetime:
    """A grantor's answer time, held to what `GivenAt` allows: an offset, within its bounds."""
    try:
        return _GIVEN_AT.validate_python(verification.get("verificationDate"))
    except ValidationError as exc:
        raise FhirConsentError([f"verification.{i}.verificationDate: {exc.errors()[0]['msg']}"]) from None


def from_fhir(resource: dict[str, Any], *, resolve_bsn: Callable[[str], str | None]) -> Consent:
    """Import a FHIR Consent; the BSN comes from the resource or, by youth key, from `resolve_bsn`."""
    validate_fhir(resource)
    try:
        return _from_fhir(resource, resolve_bsn)
    except FhirConsentError:
        raise
    except (
        KeyError,
        IndexError,
        ValueError,
        TypeError,
        AttributeError,
        StopIteration,
        OverflowError,
        ValidationError,
    ) as exc:
        # Only the kind of error: its text can hold the caller's own (a reference, a code, a key).
        raise FhirConsentError(
            [f"(resource): past niet op een toestemming van de hub ({type(exc).__name__})"]
        ) from None


IRCP = "IRCP"  # v3 ParticipationType: information recipient
# Elements of a provision that permit less than its class, actor, purpose and period read: the
# canonical Consent cannot hold them, and read without them it would permit more (rule 9).
_NARROWING = {
    "securityLabel": "data with certain security labels only",
    "code": "data of certain codes only",
    "data": "certain resources only",
    "dataPeriod": "data of a certain period only",
}


def _check_provision(prov: dict[str, Any]) -> None:
    """Only a plain permit maps onto the canonical Consent: a deny, an exception nested in it, an
    actor in another role than recipient, actions without disclosure, or a permit narrowed by
    security label, code, resource or data period would be read as a permit of more than was given
    (rule 9)."""
    problems = []
    if prov.get("type", "permit") != "permit":
        problems.append(
            "provision.type: must be permit (the hub stores what was permitted; a refusal is a "
            "grantor's DENY in verification)"
        )
    if prov.get("provision"):
        problems.append(
            "provision.provision: exceptions inside a consent are not supported; send one consent "
            "per purpose, receivers and categories permitted"
        )
    for i, actor in enumerate(prov.get("actor", [])):
        codes = [c.get("code") for c in actor.get("role", {}).get("coding", [])]
        if IRCP not in codes:
            problems.append(f"provision.actor.{i}.role: must be IRCP (a receiving organisation)")
    actions = prov.get("action")
    if actions is not None and not any(
        c.get("system") == CS_ACTION and c.get("code") == DISCLOSE
        for a in actions
        for c in a.get("coding", [])
    ):
        problems.append(
            f"provision.action: does not permit {DISCLOSE} ({CS_ACTION}); the hub hands data over to"
            " receivers, which the consent must permit: add it, or leave action out"
        )
    for element, what in _NARROWING.items():
        if prov.get(element):
            problems.append(
                f"provision.{element}: a permit of {what} is not supported: the hub would hand over every"
                " category in provision.class (rule 9); state the permit by actor, purpose, class and"
                " period alone"
            )
    if problems:
        raise FhirConsentError(problems)


def _custodians(res: dict[str, Any]) -> int | None:
    """The number of custodians stated, from its extension (None without one)."""
    values = [
        v
        for ext in res.get("extension", [])
        if ext.get("url") == EXT_CUSTODIANS
        for k, v in ext.items()
        if k.startswith("value")
    ]
    if not values:
        return None
    value = values[0] if len(values) == 1 else None  # two numbers: which one holds?
    if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= MAX_CUSTODIANS:
        raise FhirConsentError(
            [
                f"{CUSTODIANS_PATH}: one extension {EXT_CUSTODIANS} with valuePositiveInt, "
                f"the number of custodians, 1-{MAX_CUSTODIANS}"
            ]
        )
    return value


STATUS_PATH = "extension.consent-status"  # how problems name the hub's status extension
_E = TypeVar("_E", bound=StrEnum)


def _refused(path: str, reason: str) -> FhirConsentError:
    """A problem with one place in the resource: its path and what to do, never the value sent."""
    return FhirConsentError([f"{path}: {reason}"])


def _enum(kind: type[_E], value: object, path: str) -> _E:
    """A code of the hub's; refused naming `path` (never the value sent) otherwise."""
    if isinstance(value, str) and value in {m.value for m in kind}:
        return kind(value)
    allowed = ", ".join(m.value for m in kind)
    raise _refused(path, f"onbekende of ontbrekende code; toegestaan: {allowed}")


# A FHIR date or dateTime: a year, year-month, date, or date and time; the offset is checked apart.
_FHIR_DATE_TIME = re.compile(
    r"(?P<date>\d{4}(?:-\d{2}(?:-\d{2})?)?)"
    r"(?:T(?P<time>\d{2}:\d{2}:\d{2}(?:\.\d{1,9})?)(?P<zone>Z|[+-]\d{2}:\d{2})?)?"
)
_END_OF_DAY = time(23, 59, 59)


def _period_day(period: dict[str, Any], bound: str) -> date:
    """A bound of `provision.period` as a Dutch calendar day (rule 9 counts days in the Netherlands).

    A date (what `to_fhir` writes) is that Dutch day: `start` the first, `end` the last day covered.
    A date and time with its offset is an instant; only Dutch days the period covers whole count:
    a `start` counts from its own day when it is local midnight, else from the next day; an `end`
    counts to its own day when it is 23:59:59 local time or later, else to the day before (an end at
    local midnight, `...T00:00:00+02:00` in summer, ends the day before). The hub cannot hold part of
    a day, and rather lets a handover wait a day than go out when the consent does not cover it.
    A year or month alone, a time without offset, or no bound at all is refused: the hub records
    from and to which day a consent holds (open periods are not kept)."""
    path = f"provision.period.{bound}"
    text = period.get(bound)
    if text is None:
        which = "eerste" if bound == "start" else "laatste"
        raise _refused(path, f"ontbreekt; geef de {which} dag waarop de toestemming geldt (JJJJ-MM-DD)")
    found = _FHIR_DATE_TIME.fullmatch(text) if isinstance(text, str) else None
    if found is None or len(found["date"]) < len("2025-01-01"):
        raise _refused(
            path,
            "geef een volledige datum (JJJJ-MM-DD) of een datum en tijd met tijdzone; een jaar of een "
            "maand alleen zegt niet op welke dag de toestemming begint of eindigt",
        )
    try:
        if found["time"] is None:
            return date.fromisoformat(found["date"])
        if found["zone"] is None:
            raise _refused(
                path,
                "een tijd zonder tijdzone is geen tijdstip; geef de tijdzone (bijvoorbeeld +02:00) "
                "of alleen de datum",
            )
        local = datetime.fromisoformat(text).astimezone(LOCAL)
        if bound == "start":
            return local.date() if local.time() == time(0) else local.date() + timedelta(days=1)
        return local.date() if local.time() >= _END_OF_DAY else local.date() - timedelta(days=1)
    except (ValueError, OverflowError):  # 30 February, a leap second, off the calendar
        raise _refused(path, "geen bestaande datum of tijd") from None


def _status(res: dict[str, Any], until: date) -> ConsentStatus:
    """The consent's status. FHIR `status` is the resource's own verdict: only "active" makes a
    consent ACTIEF (rule 9 lets handovers go under it). The hub's status extension says which of
    its statuses an inactive one has; one that contradicts `status` is refused, not believed."""
    active = res.get("status") == "active"
    stated = _ext(res, EXT_STATUS)
    said = _enum(ConsentStatus, stated, STATUS_PATH) if stated is not None else None
    if said is ConsentStatus.ACTIEF and not active:
        raise _refused(
            STATUS_PATH,
            "zegt ACTIEF, maar status zegt dat de toestemming niet van kracht is; alleen status active "
            "maakt een toestemming ACTIEF. Zet de extensie gelijk aan status, of laat haar weg",
        )
    if said is not None and said is not ConsentStatus.ACTIEF and active:
        raise _refused(
            STATUS_PATH,
            f"zegt {said.value}, maar status is active; zet status op inactive, of laat de extensie weg",
        )
    if active:
        return ConsentStatus.ACTIEF
    return said or (ConsentStatus.VERLOPEN if until < today() else ConsentStatus.INGETROKKEN)


# Where a field of the canonical consent comes from in the resource, to name it in a problem.
_PATH_OF = {
    "consent_id": "id",
    "youth": "contained.Patient",
    "purpose": "provision.purpose",
    "recipient_organisations": "provision.actor",
    "data_categories": "provision.class",
    "grantors": "verification",
    "recorded_by": "extension.recorded-by",
    "valid_from": "provision.period.start",
    "valid_until": "provision.period.end",
    "status": "status",
    "custodians": CUSTODIANS_PATH,
}


def _named(exc: ValidationError, path_of: dict[str, str], prefix: str = "") -> FhirConsentError:
    """A canonical model's validation errors, each named by its place in the resource."""
    problems = []
    for e in exc.errors():
        loc = [str(p) for p in e["loc"]]
        head = path_of.get(loc[0], loc[0]) if loc else "(resource)"
        problems.append(f"{'.'.join([p for p in (prefix, head) if p] + loc[1:])}: {e['msg']}")
    return FhirConsentError(problems)


def _grantor(v: dict[str, Any], i: int, contained: dict[str, Any]) -> Grantor:
    """The answer in `verification[i]`, by the contained RelatedPerson it is verified with."""
    where = f"verification.{i}"
    ref = (v.get("verifiedWith") or {}).get("reference")
    person = contained.get(ref.lstrip("#")) if isinstance(ref, str) else None
    if person is None:  # the reference is the caller's text (a name, a BSN): named by path only
        raise _refused(
            f"{where}.verifiedWith",
            "verwijzing niet in contained; verwijs met #id naar de RelatedPerson die antwoordde",
        )
    names = person.get("name") or [{}]
    if not isinstance(names[0], dict) or not names[0].get("text"):
        raise FhirConsentError([f"{where}: its RelatedPerson needs name[0].text (rule 8)"])
    codings = [c for rel in person.get("relationship", []) for c in rel.get("coding", [])]
    permission = _enum(
        Permission,
        _ext(v, EXT_ANSWER) or ("PERMIT" if v.get("verified") else "DENY"),
        f"{where}.extension.grantor-answer",
    )
    if permission is Permission.PERMIT and v.get("verified") is not True:
        # FHIR's own element says the answer was not verified with this person: no permit to count
        raise _refused(
            f"{where}.verified",
            "een toestemming telt alleen als die bij deze persoon is nagegaan (verified: true)",
        )
    try:
        return Grantor(
            role=_enum(GrantorRole, _code(codings, CS_ROLE), f"{where}.verifiedWith.relationship"),
            name=names[0]["text"],
            permission=permission,
            given_at=_given_at(v, i),
            method=_enum(
                ConsentMethod,
                _ext(v, EXT_METHOD) or ConsentMethod.SCHRIFTELIJK,
                f"{where}.extension.consent-method",
            ),
        )
    except ValidationError as exc:
        raise _named(exc, {"name": "verifiedWith.name", "given_at": "verificationDate"}, where) from None


def _recipient(actor: dict[str, Any], i: int) -> str:
    reference = actor.get("reference") or {}
    organisation = (reference.get("identifier") or {}).get("value") or reference.get("display")
    if not organisation:
        raise _refused(f"provision.actor.{i}.reference", "noem de ontvangende organisatie (identifier.value)")
    return str(organisation)


def _from_fhir(res: dict[str, Any], resolve_bsn: Callable[[str], str | None]) -> Consent:
    contained = {
        c["id"]: c for c in res.get("contained", []) if isinstance(c, dict) and isinstance(c.get("id"), str)
    }
    patient_ref = (res.get("patient") or {}).get("reference") or ""
    patient = contained.get(patient_ref.lstrip("#"), {})
    ids = {i.get("system"): i.get("value") for i in patient.get("identifier", [])}
    key = youth_key_of(res) or ids.get(NS_YOUTH_KEY)
    bsn = ids.get(NS_BSN) or (resolve_bsn(key) if key else None)
    if bsn is None:
        raise FhirConsentError(["patient: youth unknown to the hub (no BSN and no known youth key)"])
    if "birthDate" not in patient:
        raise FhirConsentError(["contained.Patient.birthDate: required (rule 8)"])
    try:
        birth_date = date.fromisoformat(patient["birthDate"])
    except (TypeError, ValueError):
        raise _refused(
            "contained.Patient.birthDate",
            "geef de volledige geboortedatum (JJJJ-MM-DD); regel 8 telt de leeftijd op de dag van "
            "toestemming",
        ) from None
    grantors = [_grantor(v, i, contained) for i, v in enumerate(res.get("verification", []))]
    prov = res.get("provision") or {}
    _check_provision(prov)
    period = prov.get("period")
    if not isinstance(period, dict):
        raise _refused("provision.period", "ontbreekt; geef start en end (de eerste en de laatste dag)")
    valid_from, valid_until = _period_day(period, "start"), _period_day(period, "end")
    if valid_until < valid_from:
        raise _refused(
            "provision.period",
            "dekt geen hele dag (Nederlandse tijd), of end ligt voor start; geef de eerste en de laatste "
            "dag waarop de toestemming geldt",
        )
    recorded_by = _ext(res, EXT_RECORDED_BY)
    try:
        return Consent(
            consent_id=res.get("id"),
            youth=ConsentYouth(bsn=bsn, birth_date=birth_date),
            purpose=_enum(ConsentPurpose, _code(prov.get("purpose", []), CS_PURPOSE), "provision.purpose"),
            recipient_organisations=[_recipient(a, i) for i, a in enumerate(prov.get("actor", []))],
            data_categories=[
                _enum(DataCategory, c.get("code"), f"provision.class.{j}")
                for j, c in enumerate(prov.get("class", []))
                if c.get("system") == CS_CATEGORY
            ],
            grantors=grantors,
            recorded_by=(recorded_by.get("value") if isinstance(recorded_by, dict) else None) or "onbekend",
            valid_from=valid_from,
            valid_until=valid_until,
            status=_status(res, valid_until),
            custodians=_custodians(res),
        )
    except ValidationError as exc:
        raise _named(exc, _PATH_OF) from None
