"""FHIR R4 Consent in and out: validated with fhir.resources, round trip equal, youth by key."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, timedelta, timezone
from typing import Any

import pytest
from fhir.resources.R4B.consent import Consent as FhirConsent

from hub.consent.fhir import EXT_COMPLETENESS, EXT_CUSTODIANS, EXT_STATUS, NS_BSN, FhirConsentError, to_fhir
from hub.consent.fhir_read import from_fhir, validate_fhir, youth_key_of
from hub.consent.rules import Named, completeness
from schemas.consent import DUTCH_TIME, Consent, ConsentStatus, GrantorIn

BSN = "111222333"
KEY = "a" * 64


def sample(**extra: object) -> Consent:
    values: dict[str, object] = {
        "consent_id": "3f1c8f0e-8c2a-4f41-9d7e-0a1b2c3d4e5f",
        "youth": {"bsn": BSN, "birth_date": "2011-04-02"},
        "purpose": "WARME_OVERDRACHT",
        "recipient_organisations": ["jongerenwerk-dh", "wijkteam-dh"],
        "data_categories": ["PERSONALIA", "VERWIJZING", "GEZIN"],
        "grantors": [
            {
                "role": "JEUGDIGE",
                "name": "Sam",
                "permission": "PERMIT",
                "given_at": datetime(2025, 3, 1, 10, 30, tzinfo=UTC),
                "method": "MONDELING",
            },
            {
                "role": "OUDER_MET_GEZAG",
                "name": "Ouder A",
                "permission": "PERMIT",
                "given_at": datetime(2025, 3, 2, 9, 0, tzinfo=UTC),
                "method": "SCHRIFTELIJK",
            },
            {
                "role": "VOOGD",
                "name": "Voogd B",
                "permission": "DENY",
                "given_at": datetime(2025, 3, 2, 9, 5, tzinfo=UTC),
                "method": "DIGITAAL",
            },
        ],
        "recorded_by": "cw-17",
        "valid_from": date(2025, 3, 2),
        "valid_until": date(2026, 3, 2),
    }
    values.update(extra)
    return Consent.model_validate(values)


@pytest.mark.parametrize("status", list(ConsentStatus))
def test_round_trip_export_validate_import_equal(status: ConsentStatus) -> None:
    consent = sample(status=status)
    resource = json.loads(json.dumps(to_fhir(consent, youth_key=KEY)))  # as it travels
    FhirConsent.model_validate(resource)  # valid against the FHIR Consent definition
    assert from_fhir(resource, resolve_bsn={KEY: BSN}.get) == consent


def test_export_carries_the_key_not_the_bsn_unless_asked() -> None:
    resource = to_fhir(sample(), youth_key=KEY)
    assert BSN not in json.dumps(resource)
    assert resource["patient"]["identifier"]["value"] == KEY
    provision = resource["provision"]
    assert {a["reference"]["identifier"]["value"] for a in provision["actor"]} == {
        "jongerenwerk-dh",
        "wijkteam-dh",
    }
    assert [c["code"] for c in provision["purpose"]] == ["WARME_OVERDRACHT"]
    assert provision["period"] == {"start": "2025-03-02", "end": "2026-03-02"}
    with_bsn = to_fhir(sample(), youth_key=KEY, include_bsn=True)
    assert {"system": NS_BSN, "value": BSN} in with_bsn["contained"][0]["identifier"]
    assert from_fhir(with_bsn, resolve_bsn=lambda _: None) == sample()


def test_unknown_youth_and_invalid_resources_are_refused_without_echoing_values() -> None:
    resource = to_fhir(sample(), youth_key=KEY)
    with pytest.raises(FhirConsentError, match="youth unknown"):
        from_fhir(resource, resolve_bsn=lambda _: None)
    broken = {**resource, "status": 42, "provision": {"period": {"start": "not-a-date"}}}
    with pytest.raises(FhirConsentError) as info:
        validate_fhir(broken)
    assert "not-a-date" not in str(info.value) and info.value.problems


@pytest.mark.parametrize("body", ['"Consent"', "[1]", "3", "null", "true", '"\\ud8d8\\udcda"'])
def test_a_body_that_is_no_json_object_is_refused_not_a_crash(body: str) -> None:
    """The mapping called .get on whatever JSON it was given: a string body answered 500."""
    with pytest.raises(FhirConsentError, match="JSON object"):
        from_fhir(json.loads(body), resolve_bsn=lambda _: None)


@pytest.mark.parametrize(
    ("at", "says"),
    [
        ("9999-12-31T23:59:59-14:00", "less than 2100-01-01"),  # the Dutch day of it overflowed
        ("0001-01-01T00:00:00+14:00", "greater than or equal to 2000-01-01"),
        ("2025-03-01", "timezone"),  # a bare date is FHIR, but without an offset
    ],
)
def test_a_verification_date_off_the_calendar_or_without_offset_is_refused_by_path(
    at: str, says: str
) -> None:
    resource = to_fhir(sample(), youth_key=KEY)
    resource["verification"][1]["verificationDate"] = at
    with pytest.raises(FhirConsentError) as info:
        from_fhir(resource, resolve_bsn={KEY: BSN}.get)
    [problem] = info.value.problems
    assert problem.startswith("verification.1.verificationDate: ") and says in problem


def test_grantor_input_needs_an_offset_and_says_so_in_its_schema() -> None:
    answer = {"role": "JEUGDIGE", "name": "Sam", "permission": "PERMIT", "method": "MONDELING"}
    with pytest.raises(ValueError, match="timezone"):
        GrantorIn.model_validate({**answer, "given_at": "2025-03-01T10:30:00"})
    described = GrantorIn.model_json_schema()["properties"]["given_at"]["description"]
    assert "2000-01-01T00:00:00Z" in described and "2100-01-01T00:00:00Z" in described


def test_a_consent_stored_with_a_time_without_offset_reads_as_dutch_time_and_exports() -> None:
    """Earlier releases stored naive times; compared with aware ones the FHIR export crashed."""
    stored = sample().model_dump(mode="json")
    stored["grantors"][0]["given_at"] = "2025-03-01T10:30:00"
    consent = Consent.model_validate(stored)
    assert consent.grantors[0].given_at == datetime(2025, 3, 1, 10, 30, tzinfo=DUTCH_TIME)
    resource = to_fhir(consent, youth_key=KEY)
    FhirConsent.model_validate(resource)
    assert resource["verification"][0]["verificationDate"] == "2025-03-01T10:30:00+01:00"


@pytest.mark.parametrize("patient", ["x", [1], {"identifier": "x"}, {"identifier": {"value": 7}}, None])
def test_a_patient_of_the_wrong_shape_has_no_key_and_is_refused_by_validation(patient: object) -> None:
    resource = {"resourceType": "Consent", "patient": patient}
    assert youth_key_of(resource) is None
    with pytest.raises(FhirConsentError) as info:
        from_fhir(resource, resolve_bsn=lambda _: None)
    assert info.value.problems
    assert youth_key_of(to_fhir(sample(), youth_key=KEY)) == KEY


def _deny(resource: dict) -> None:
    resource["provision"]["type"] = "deny"


def _nested_exception(resource: dict) -> None:
    resource["provision"]["provision"] = [
        {"type": "deny", "class": [{"system": "x", "code": "GEZIN"}]},
    ]


def _actor_as_custodian(resource: dict) -> None:
    role = resource["provision"]["actor"][1]["role"]["coding"][0]
    role["code"] = "CST"


def _access_only(resource: dict) -> None:
    resource["provision"]["action"] = [
        {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/consentaction", "code": "access"}]}
    ]


def _labelled(resource: dict) -> None:
    label = {"system": "http://terminology.hl7.org/CodeSystem/v3-Confidentiality", "code": "N"}
    resource["provision"]["securityLabel"] = [label]


def _coded(resource: dict) -> None:
    resource["provision"]["code"] = [{"coding": [{"system": "http://loinc.org", "code": "11506-3"}]}]


def _some_data(resource: dict) -> None:
    resource["provision"]["data"] = [{"meaning": "instance", "reference": {"reference": "Observation/1"}}]


def _data_period(resource: dict) -> None:
    resource["provision"]["dataPeriod"] = {"start": "2025-01-01", "end": "2025-02-01"}


@pytest.mark.parametrize(
    ("change", "path"),
    [
        (_deny, "provision.type"),
        (_nested_exception, "provision.provision"),
        (_actor_as_custodian, "provision.actor.1.role"),
        (_access_only, "provision.action"),
        (_labelled, "provision.securityLabel"),
        (_coded, "provision.code"),
        (_some_data, "provision.data"),
        (_data_period, "provision.dataPeriod"),
    ],
)
def test_a_consent_that_permits_less_than_its_provision_reads_is_refused_by_path(
    change: object, path: str
) -> None:
    """The mapping read receivers, categories and period and never the provision's type: a FHIR
    "deny" (or a nested exception, or an actor who is not a recipient) was stored as a permit."""
    resource = json.loads(json.dumps(to_fhir(sample(), youth_key=KEY)))
    change(resource)  # type: ignore[operator]
    validate_fhir(resource)  # valid FHIR: refused by the hub, not by the definition
    with pytest.raises(FhirConsentError) as info:
        from_fhir(resource, resolve_bsn={KEY: BSN}.get)
    [problem] = info.value.problems
    assert problem.startswith(path + ": ")


def test_a_consent_without_action_or_with_disclose_among_others_is_read() -> None:
    """Action left out permits every action; one of several being disclose permits the handover."""
    resource = json.loads(json.dumps(to_fhir(sample(), youth_key=KEY)))
    del resource["provision"]["action"]
    assert from_fhir(resource, resolve_bsn={KEY: BSN}.get) == from_fhir(
        to_fhir(sample(), youth_key=KEY), resolve_bsn={KEY: BSN}.get
    )
    _access_only(resource)
    resource["provision"]["action"].append(
        json.loads(json.dumps(to_fhir(sample(), youth_key=KEY)))["provision"]["action"][0]
    )
    validate_fhir(resource)
    assert from_fhir(resource, resolve_bsn={KEY: BSN}.get).purpose == sample().purpose


def test_a_related_person_without_a_name_is_refused_not_a_crash() -> None:
    resource = json.loads(json.dumps(to_fhir(sample(), youth_key=KEY)))
    resource["contained"][1]["name"] = []
    with pytest.raises(FhirConsentError, match=r"verification\.0: its RelatedPerson needs name"):
        from_fhir(resource, resolve_bsn={KEY: BSN}.get)


@pytest.mark.parametrize("custodians", [None, 1, 2])
def test_the_number_of_custodians_travels_as_an_extension_and_back(custodians: int | None) -> None:
    consent = sample(custodians=custodians)
    resource = json.loads(json.dumps(to_fhir(consent, youth_key=KEY)))
    FhirConsent.model_validate(resource)
    stated = [e for e in resource["extension"] if e["url"] == EXT_CUSTODIANS]
    assert stated == ([] if custodians is None else [{"url": EXT_CUSTODIANS, "valuePositiveInt": custodians}])
    assert from_fhir(resource, resolve_bsn={KEY: BSN}.get).custodians == custodians


def test_the_rule_8_verdict_goes_out_as_an_extension_and_is_ignored_coming_back() -> None:
    """A consent read as FHIR said nothing of rule 8: a consent of a 13-year-old without the
    number of custodians read as any other, with no sign that it lets no handover go."""
    consent = sample()  # 13 on the day of consent, no number stated; the VOOGD denied
    check = completeness(consent, named=0)
    resource = json.loads(json.dumps(to_fhir(consent, youth_key=KEY, check=check)))
    FhirConsent.model_validate(resource)
    [verdict] = [e for e in resource["extension"] if e["url"] == EXT_COMPLETENESS]
    parts = [(p["url"], next(v for k, v in p.items() if k.startswith("value"))) for p in verdict["extension"]]
    assert ("complete", False) in parts
    assert ("missing", "AANTAL_GEZAGHEBBERS") in parts and ("denied", "VOOGD") in parts
    [reason] = [v for url, v in parts if url == "reason"]
    assert "aantal gezaghebbers is niet opgegeven" in reason and BSN not in reason and "Sam" not in reason
    assert from_fhir(resource, resolve_bsn={KEY: BSN}.get) == consent  # derived: not read back


def test_the_rule_8_verdict_says_when_the_referral_shows_a_grantor_without_custody() -> None:
    """Judged as the JSON views judge it: the referral shows 'Ouder A', recorded as OUDER_MET_GEZAG,
    without custody; the reason says so by role, naming nobody."""
    consent = sample(custodians=1, grantors=sample().grantors[:2])  # the youth and 'Ouder A'
    named = Named(1, frozenset({"ouder c"}), frozenset({"ouder a"}))
    resource = json.loads(
        json.dumps(to_fhir(consent, youth_key=KEY, check=completeness(consent, named=named)))
    )
    FhirConsent.model_validate(resource)
    [verdict] = [e for e in resource["extension"] if e["url"] == EXT_COMPLETENESS]
    parts = [(p["url"], next(v for k, v in p.items() if k.startswith("value"))) for p in verdict["extension"]]
    assert ("complete", False) in parts and ("missing", "OUDER_MET_GEZAG") in parts
    [reason] = [v for url, v in parts if url == "reason"]
    assert "toont geen gezag" in reason and "OUDER_MET_GEZAG" in reason and "Ouder" not in reason
    assert from_fhir(resource, resolve_bsn={KEY: BSN}.get) == consent


@pytest.mark.parametrize(
    "extensions",
    [
        [{"url": EXT_CUSTODIANS, "valuePositiveInt": 3}],  # custody is held by two at most
        [{"url": EXT_CUSTODIANS, "valueString": "2"}],
        [{"url": EXT_CUSTODIANS, "valueBoolean": True}],
        [{"url": EXT_CUSTODIANS, "valuePositiveInt": 1}, {"url": EXT_CUSTODIANS, "valuePositiveInt": 2}],
    ],
)
def test_a_number_of_custodians_that_does_not_fit_is_refused_by_path(extensions: list[dict]) -> None:
    resource = json.loads(json.dumps(to_fhir(sample(), youth_key=KEY)))
    resource["extension"] += extensions
    with pytest.raises(FhirConsentError) as info:
        from_fhir(resource, resolve_bsn={KEY: BSN}.get)
    [problem] = info.value.problems
    assert problem.startswith("extension.custodian-count: ") and "1-2" in problem


@pytest.mark.parametrize("status", ["rejected", "draft", "proposed", "entered-in-error", "inactive"])
def test_a_resource_not_in_force_is_never_actief_whatever_the_extension_says(status: str) -> None:
    """FHIR `status` is the resource's own verdict; the hub's status extension overrode it, so a
    consent the resource calls rejected (or a draft) was stored ACTIEF and a handover went under it."""
    resource = json.loads(json.dumps(to_fhir(sample(), youth_key=KEY)))  # status active, extension ACTIEF
    resource["status"] = status
    validate_fhir(resource)  # valid FHIR: refused by the hub, for what it says
    with pytest.raises(FhirConsentError) as info:
        from_fhir(resource, resolve_bsn={KEY: BSN}.get)
    [problem] = info.value.problems
    assert problem.startswith("extension.consent-status: zegt ACTIEF") and "status active" in problem
    resource["extension"] = [e for e in resource["extension"] if e["url"] != EXT_STATUS]
    assert from_fhir(resource, resolve_bsn={KEY: BSN}.get).status is not ConsentStatus.ACTIEF


@pytest.mark.parametrize("stated", ["INGETROKKEN", "VERLOPEN", "GELDIG"])
def test_an_active_resource_whose_extension_says_otherwise_is_refused_by_path(stated: object) -> None:
    resource = json.loads(json.dumps(to_fhir(sample(), youth_key=KEY)))
    [ext] = [e for e in resource["extension"] if e["url"] == EXT_STATUS]
    ext["valueCode"] = stated
    with pytest.raises(FhirConsentError) as info:
        from_fhir(resource, resolve_bsn={KEY: BSN}.get)
    [problem] = info.value.problems
    assert problem.startswith("extension.consent-status: ") and "GELDIG" not in problem


@pytest.mark.parametrize(
    ("start", "end", "valid_from", "valid_until"),
    [
        ("2025-06-01", "2025-06-30", date(2025, 6, 1), date(2025, 6, 30)),  # what to_fhir writes
        # an end at Dutch midnight (summer, winter) ends the day before: that day is not covered
        ("2025-06-01", "2025-07-01T00:00:00+02:00", date(2025, 6, 1), date(2025, 6, 30)),
        ("2025-06-01", "2025-12-01T00:00:00+01:00", date(2025, 6, 1), date(2025, 11, 30)),
        ("2025-06-01", "2025-06-30T23:59:59+02:00", date(2025, 6, 1), date(2025, 6, 30)),
        ("2025-06-01", "2025-06-30T21:59:59.5Z", date(2025, 6, 1), date(2025, 6, 30)),
        # 1 July 00:30 at +14:00 is 30 June 12:30 in the Netherlands: 30 June is not covered whole
        ("2025-06-01", "2025-07-01T00:30:00+14:00", date(2025, 6, 1), date(2025, 6, 29)),
        # 23:30 UTC on 30 June is 1 July 01:30 in the Netherlands: 30 June is covered, 1 July not
        ("2025-06-01", "2025-06-30T23:30:00Z", date(2025, 6, 1), date(2025, 6, 30)),
        # 1 July 23:00 at -10:00 is 2 July 11:00 in the Netherlands: the first whole day is 3 July
        ("2025-07-01T23:00:00-10:00", "2025-12-31", date(2025, 7, 3), date(2025, 12, 31)),
        ("2025-07-02T00:00:00+02:00", "2025-12-31", date(2025, 7, 2), date(2025, 12, 31)),
        ("2025-01-01T23:00:00Z", "2025-12-31", date(2025, 1, 2), date(2025, 12, 31)),  # 2 Jan 00:00
    ],
)
def test_a_period_with_times_covers_the_whole_dutch_days_inside_it(
    start: str, end: str, valid_from: date, valid_until: date
) -> None:
    """The period was cut to its first ten characters: a date in the sender's own offset, and an end
    instant read as covering all of its day. A handover then went on a day the consent did not cover."""
    resource = json.loads(json.dumps(to_fhir(sample(), youth_key=KEY)))
    resource["provision"]["period"] = {"start": start, "end": end}
    validate_fhir(resource)
    consent = from_fhir(resource, resolve_bsn={KEY: BSN}.get)
    assert (consent.valid_from, consent.valid_until) == (valid_from, valid_until)


@pytest.mark.parametrize(
    ("period", "path", "says"),
    [
        ({"start": "2025-06-01", "end": "2026"}, "provision.period.end", "volledige datum"),
        ({"start": "2025-06", "end": "2025-12-31"}, "provision.period.start", "volledige datum"),
        ({"start": "2025-06-01"}, "provision.period.end", "ontbreekt"),
        ({"end": "2025-12-31"}, "provision.period.start", "ontbreekt"),
        ({"start": "2025-06-01", "end": "2025-06-30T23:59:60+02:00"}, "provision.period.end", "bestaande"),
        (
            {"start": "2025-06-01T12:00:00+02:00", "end": "2025-06-01T18:00:00+02:00"},
            "provision.period",
            "hele dag",
        ),
        (None, "provision.period", "ontbreekt"),
    ],
)
def test_a_period_the_hub_cannot_hold_is_refused_naming_the_field(
    period: dict[str, str] | None, path: str, says: str
) -> None:
    """A partial date or an open bound was refused as "mapping: ValueError" / "mapping: end"."""
    resource = json.loads(json.dumps(to_fhir(sample(), youth_key=KEY)))
    if period is None:
        del resource["provision"]["period"]
    else:
        resource["provision"]["period"] = period
    validate_fhir(resource)  # all of it is valid FHIR
    with pytest.raises(FhirConsentError) as info:
        from_fhir(resource, resolve_bsn={KEY: BSN}.get)
    [problem] = info.value.problems
    assert problem.startswith(path + ": ") and says in problem


SECRET_TEXT = "Jan de Vries BSN 123456782"


def _unresolvable_reference(resource: dict[str, Any]) -> str:
    resource["verification"][0]["verifiedWith"]["reference"] = f"#{SECRET_TEXT}"
    return "verification.0.verifiedWith"


def _unknown_category(resource: dict[str, Any]) -> str:
    resource["provision"]["class"][1]["code"] = SECRET_TEXT
    return "provision.class.1"


def _unknown_role(resource: dict[str, Any]) -> str:
    resource["contained"][2]["relationship"][0]["coding"][1]["code"] = SECRET_TEXT
    return "verification.1.verifiedWith.relationship"


def _unknown_element(resource: dict[str, Any]) -> str:
    resource["provision"][SECRET_TEXT] = "x"
    return "provision"


def _partial_birth_date(resource: dict[str, Any]) -> str:
    resource["contained"][0]["birthDate"] = "2011"
    return "contained.Patient.birthDate"


@pytest.mark.parametrize(
    "change",
    [_unresolvable_reference, _unknown_category, _unknown_role, _unknown_element, _partial_birth_date],
)
def test_a_resource_the_hub_cannot_map_is_refused_by_path_never_echoing_the_text(change: object) -> None:
    """A reference that resolved to nothing came back as 'mapping: <the reference>': a name and a
    BSN the caller had put there went into the 400 (and so into logs and screens)."""
    resource = json.loads(json.dumps(to_fhir(sample(), youth_key=KEY)))
    path = change(resource)  # type: ignore[operator]
    with pytest.raises(FhirConsentError) as info:
        from_fhir(resource, resolve_bsn={KEY: BSN}.get)
    assert [p.split(":")[0] for p in info.value.problems] == [path], info.value.problems
    assert not any(part in str(info.value.problems) for part in ("Jan", "Vries", "123456782"))


@pytest.mark.parametrize("kind", ["Foo", 7, None, ["Patient"]])
def test_a_contained_resource_of_no_known_type_is_refused_not_a_crash(kind: object) -> None:
    """The FHIR library raises KeyError or TypeError for such a resource, which was answered 500."""
    resource = to_fhir(sample(), youth_key=KEY)
    resource["contained"].append({"resourceType": kind, "id": "x"})
    with pytest.raises(FhirConsentError) as refused:
        validate_fhir(resource)
    assert refused.value.problems == [
        "contained: each resource must be a Patient or a RelatedPerson, by its resourceType"
    ]


def test_an_answer_time_with_an_offset_fhir_does_not_take_is_exported_in_utc_and_reads_back() -> None:
    """A time at +14:30 was accepted and exported as given: invalid FHIR, which the hub then refused
    to read back."""
    far = datetime(2025, 3, 1, 23, 0, tzinfo=timezone(timedelta(hours=14, minutes=30)))
    grantors = [g.model_copy(update={"given_at": far}) for g in sample().grantors]
    consent = sample().model_copy(update={"grantors": grantors})
    resource = to_fhir(consent, youth_key=KEY)
    FhirConsent.model_validate(resource)
    assert resource["verification"][0]["verificationDate"] == "2025-03-01T08:30:00+00:00"
    assert resource["dateTime"] == "2025-03-01T08:30:00+00:00"
    assert from_fhir(resource, resolve_bsn={KEY: BSN}.get) == consent  # the same moments
    # an offset FHIR takes is kept as given
    assert (
        to_fhir(sample(), youth_key=KEY)["verification"][0]["verificationDate"] == "2025-03-01T10:30:00+00:00"
    )


def test_a_permit_fhir_says_was_not_verified_is_refused_by_path() -> None:
    """`verified: false` beside the hub's PERMIT extension counted as a permit (rule 8): a parent's
    answer nobody checked with them let a handover go."""
    resource = to_fhir(sample(), youth_key=KEY)
    resource["verification"][1]["verified"] = False
    with pytest.raises(FhirConsentError) as refused:
        from_fhir(resource, resolve_bsn={KEY: BSN}.get)
    [problem] = refused.value.problems
    assert problem.startswith("verification.1.verified: ")
    # a deny that was not verified is still a deny: it lets nothing go
    resource = to_fhir(sample(), youth_key=KEY)
    resource["verification"][2]["verified"] = False
    assert from_fhir(resource, resolve_bsn={KEY: BSN}.get) == sample()
