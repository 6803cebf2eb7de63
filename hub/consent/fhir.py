"""The canonical Consent as an HL7 FHIR R4 Consent resource (application/fhir+json): the way out
and what both ways share (reading one is `hub.consent.fhir_read`).

What travels: the youth as a contained Patient identified by the pseudonymous youth key, with the
birth date (rule 8 needs it); the BSN only when the exchange asks for it. Each grantor is a
contained RelatedPerson (ONESELF for the youth) named in `performer`, and their answer, when and
how, is a `verification` entry. Receivers, purpose, period and categories are the provision.
The number of custodians the caseworker stated (rule 8) is an extension of the Consent; so, on
the way out only, is the hub's rule 8 verdict: complete or not, and what is missing or refused.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from hub.consent.rules import Completeness, explain
from hub.errors import PermanentError
from schemas.consent import (
    Consent,
    ConsentStatus,
    GrantorRole,
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
CS_ACTION = "http://terminology.hl7.org/CodeSystem/consentaction"
DISCLOSE = "disclose"  # the action a handover is
_V3_OF = {GrantorRole.JEUGDIGE: "ONESELF", GrantorRole.OUDER_MET_GEZAG: "PRN", GrantorRole.VOOGD: "GUARD"}


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


FHIR_OFFSET_MAX = timedelta(hours=14)  # FHIR's dateTime takes offsets from -14:00 to +14:00


def fhir_moment(moment: datetime) -> str:
    """A moment as FHIR's dateTime: with the offset it was given in, or in UTC when that offset is
    past what FHIR takes (an answer time is accepted with any offset; +14:30 made the export invalid
    FHIR, which the hub then refused to read back)."""
    offset = moment.utcoffset()
    if offset is not None and abs(offset) > FHIR_OFFSET_MAX:
        moment = moment.astimezone(UTC)
    return moment.isoformat()


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
                "verificationDate": fhir_moment(g.given_at),
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
        "dateTime": fhir_moment(max(g.given_at for g in consent.grantors)),
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
            "action": [{"coding": [_coding(CS_ACTION, DISCLOSE)]}],
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
