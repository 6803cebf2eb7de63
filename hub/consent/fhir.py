"""The canonical Consent as an HL7 FHIR R4 Consent resource (application/fhir+json), both ways.

What travels: the youth as a contained Patient identified by the pseudonymous youth key, with the
birth date (rule 8 needs it); the BSN only when the exchange asks for it. Each grantor is a
contained RelatedPerson (ONESELF for the youth) named in `performer`, and their answer, when and
how, is a `verification` entry. Receivers, purpose, period and categories are the provision.
The number of custodians the caseworker stated (rule 8) is an extension of the Consent; so, on
the way out only, is the hub's rule 8 verdict: complete or not, and what is missing or refused.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import date, datetime
from typing import Any

from pydantic import TypeAdapter, ValidationError

from hub.clock import today
from hub.consent.rules import Completeness, explain
from hub.errors import PermanentError
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

FHIR_JSON = "application/fhir+json"
BASE = "https://ketenhub.halt.nl/fhir"
EXT_STATUS = f"{BASE}/StructureDefinition/consent-status"
EXT_RECORDED_BY = f"{BASE}/StructureDefinition/recorded-by"
EXT_METHOD = f"{BASE}/StructureDefinition/consent-method"
EXT_ANSWER = f"{BASE}/StructureDefinition/grantor-answer"
EXT_CUSTODIANS = f"{BASE}/StructureDefinition/custodian-count"
EXT_COMPLETENESS = f"{BASE}/StructureDefinition/rule-8-completeness"
CUSTODIANS_PATH = "extension.custodian-count"  # how problems name it
CS_ROLE = f"{BASE}/CodeSystem/grantor-role"
CS_PURPOSE = f"{BASE}/CodeSystem/consent-purpose"
CS_CATEGORY = f"{BASE}/CodeSystem/data-category"
NS_YOUTH_KEY = f"{BASE}/NamingSystem/youth-key"
NS_ORGANISATION = f"{BASE}/NamingSystem/organisation"
NS_CASEWORKER = f"{BASE}/NamingSystem/caseworker"
NS_BSN = "http://fhir.nl/fhir/NamingSystem/bsn"
V3_ROLE = "http://terminology.hl7.org/CodeSystem/v3-RoleCode"
_V3_OF = {GrantorRole.JEUGDIGE: "ONESELF", GrantorRole.OUDER_MET_GEZAG: "PRN", GrantorRole.VOOGD: "GUARD"}
_GIVEN_AT: TypeAdapter[datetime] = TypeAdapter(GivenAt)


class FhirConsentError(PermanentError):
    """A FHIR Consent that is invalid or that the hub cannot map; `problems` name paths, never values."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems)[:500])
        self.problems = problems


def _coding(system: str, code: str) -> dict[str, Any]:
    return {"system": system, "code": code}


def _completeness_extension(check: Completeness) -> dict[str, Any]:
    """Rule 8's verdict as a complex extension: derived by the hub, ignored when read back in."""
    parts: list[dict[str, Any]] = [{"url": "complete", "valueBoolean": check.complete}]
    parts += [{"url": "missing", "valueCode": m} for m in check.missing]
    parts += [{"url": "denied", "valueCode": d.value} for d in check.denied]
    if check.custodians_needed is not None:
        parts.append({"url": "custodiansNeeded", "valuePositiveInt": check.custodians_needed})
    reason = explain(check)
    if reason:
        parts.append({"url": "reason", "valueString": reason})
    return {"url": EXT_COMPLETENESS, "extension": parts}


def to_fhir(
    consent: Consent, *, youth_key: str, include_bsn: bool = False, check: Completeness | None = None
) -> dict[str, Any]:
    """Export a consent as a FHIR R4 Consent resource (a JSON-ready dict); with `check`, rule 8's
    verdict on it goes along as an extension."""
    identifiers = [{"system": NS_YOUTH_KEY, "value": youth_key}]
    if include_bsn:
        identifiers.append({"system": NS_BSN, "value": consent.youth.bsn})
    contained: list[dict[str, Any]] = [
        {
            "resourceType": "Patient",
            "id": "youth",
            "identifier": identifiers,
            "birthDate": consent.youth.birth_date.isoformat(),
        }
    ]
    performers, verification = [], []
    for i, g in enumerate(consent.grantors, start=1):
        ref = {"reference": f"#g{i}"}
        contained.append(
            {
                "resourceType": "RelatedPerson",
                "id": f"g{i}",
                "patient": {"reference": "#youth"},
                "relationship": [
                    {"coding": [_coding(V3_ROLE, _V3_OF[g.role]), _coding(CS_ROLE, g.role.value)]}
                ],
                "name": [{"text": g.name}],
            }
        )
        performers.append(ref)
        verification.append(
            {
                "extension": [
                    {"url": EXT_ANSWER, "valueCode": g.permission.value},
                    {"url": EXT_METHOD, "valueCode": g.method.value},
                ],
                "verified": True,
                "verifiedWith": ref,
                "verificationDate": g.given_at.isoformat(),
            }
        )
    resource: dict[str, Any] = {
        "resourceType": "Consent",
        "extension": [
            {"url": EXT_STATUS, "valueCode": consent.status.value},
            {
                "url": EXT_RECORDED_BY,
                "valueIdentifier": {"system": NS_CASEWORKER, "value": consent.recorded_by},
            },
        ],
        "contained": contained,
        "status": "active" if consent.status is ConsentStatus.ACTIEF else "inactive",
        "scope": {
            "coding": [_coding("http://terminology.hl7.org/CodeSystem/consentscope", "patient-privacy")]
        },
        "category": [{"coding": [_coding("http://loinc.org", "59284-0")]}],
        "patient": {"reference": "#youth", "identifier": {"system": NS_YOUTH_KEY, "value": youth_key}},
        "dateTime": max(g.given_at for g in consent.grantors).isoformat(),
        "performer": performers,
        "policyRule": {"coding": [_coding("http://terminology.hl7.org/CodeSystem/v3-ActCode", "OPTIN")]},
        "verification": verification,
        "provision": {
            "type": "permit",
            "period": {"start": consent.valid_from.isoformat(), "end": consent.valid_until.isoformat()},
            "actor": [
                {
                    "role": {
                        "coding": [
                            _coding("http://terminology.hl7.org/CodeSystem/v3-ParticipationType", "IRCP")
                        ]
                    },
                    "reference": {"identifier": {"system": NS_ORGANISATION, "value": org}, "display": org},
                }
                for org in consent.recipient_organisations
            ],
            "action": [
                {"coding": [_coding("http://terminology.hl7.org/CodeSystem/consentaction", "disclose")]}
            ],
            "purpose": [_coding(CS_PURPOSE, consent.purpose.value)],
            "class": [_coding(CS_CATEGORY, c.value) for c in consent.data_categories],
        },
    }
    if consent.custodians is not None:
        resource["extension"].append({"url": EXT_CUSTODIANS, "valuePositiveInt": consent.custodians})
    if check is not None:
        resource["extension"].append(_completeness_extension(check))
    if consent.consent_id:
        resource["id"] = consent.consent_id
    return resource


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
        raise FhirConsentError(
            [f"{'.'.join(str(p) for p in e['loc']) or '(resource)'}: {e['type']}" for e in exc.errors()][:20]
        ) from None


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
        ValidationError,
    ) as exc:
        where = exc.args[0] if isinstance(exc, KeyError) else type(exc).__name__
        raise FhirConsentError([f"mapping: {where}"]) from None


IRCP = "IRCP"  # v3 ParticipationType: information recipient


def _check_provision(prov: dict[str, Any]) -> None:
    """Only a plain permit maps onto the canonical Consent: a deny, an exception nested in it, or an
    actor in another role than recipient would be read as a permit of more than was given (rule 9)."""
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


def _from_fhir(res: dict[str, Any], resolve_bsn: Callable[[str], str | None]) -> Consent:
    contained = {c["id"]: c for c in res.get("contained", [])}
    patient_ref = res["patient"]
    patient = contained.get(patient_ref.get("reference", "").lstrip("#"), {})
    ids = {i.get("system"): i.get("value") for i in patient.get("identifier", [])}
    key = youth_key_of(res) or ids.get(NS_YOUTH_KEY)
    bsn = ids.get(NS_BSN) or (resolve_bsn(key) if key else None)
    if bsn is None:
        raise FhirConsentError(["patient: youth unknown to the hub (no BSN and no known youth key)"])
    if "birthDate" not in patient:
        raise FhirConsentError(["contained.Patient.birthDate: required (rule 8)"])
    grantors = []
    for i, v in enumerate(res.get("verification", [])):
        person = contained[v["verifiedWith"]["reference"].lstrip("#")]
        if not person.get("name") or not person["name"][0].get("text"):
            raise FhirConsentError([f"verification.{i}: its RelatedPerson needs name[0].text (rule 8)"])
        codings = [c for rel in person.get("relationship", []) for c in rel.get("coding", [])]
        grantors.append(
            Grantor(
                role=GrantorRole(_code(codings, CS_ROLE) or ""),
                name=person["name"][0]["text"],
                permission=Permission(_ext(v, EXT_ANSWER) or ("PERMIT" if v.get("verified") else "DENY")),
                given_at=_given_at(v, i),
                method=ConsentMethod(_ext(v, EXT_METHOD) or ConsentMethod.SCHRIFTELIJK),
            )
        )
    prov = res["provision"]
    _check_provision(prov)
    until = date.fromisoformat(prov["period"]["end"][:10])
    status = _ext(res, EXT_STATUS) or (
        "ACTIEF" if res["status"] == "active" else ("VERLOPEN" if until < today() else "INGETROKKEN")
    )
    recorded_by = _ext(res, EXT_RECORDED_BY)
    return Consent(
        consent_id=res.get("id"),
        youth=ConsentYouth(bsn=bsn, birth_date=date.fromisoformat(patient["birthDate"])),
        purpose=ConsentPurpose(_code(prov.get("purpose", []), CS_PURPOSE) or ""),
        recipient_organisations=[
            a["reference"].get("identifier", {}).get("value") or a["reference"]["display"]
            for a in prov.get("actor", [])
        ],
        data_categories=[
            DataCategory(c["code"]) for c in prov.get("class", []) if c.get("system") == CS_CATEGORY
        ],
        grantors=grantors,
        recorded_by=(recorded_by or {}).get("value") or "onbekend",
        valid_from=date.fromisoformat(prov["period"]["start"][:10]),
        valid_until=until,
        status=ConsentStatus(status),
        custodians=_custodians(res),
    )
