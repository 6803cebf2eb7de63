"""The caseworker consent API over HTTP: FHIR in and out, listing by referral or key, zorgmelding."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from fhir.resources.R4B.consent import Consent as FhirConsent
from sqlalchemy import select, update

from hub.clock import LOCAL
from hub.consent.fhir import EXT_STATUS, FHIR_JSON
from hub.consent.tables import consents
from hub.embedded import EmbeddedKafka
from tests.helpers.kafka import wait_for
from tests.integration.test_handover_flow import CW, TODAY, world

pytestmark = pytest.mark.integration


async def test_fhir_out_and_in_listing_and_zorgmelding(
    kafka: EmbeddedKafka, db_url: str, unique: str
) -> None:
    async with world(kafka, db_url, unique) as w:
        rid, key = await w.referral(14, custodians=1)
        recorded = await w.consent(rid, grantors=[("JEUGDIGE", "Sam"), ("OUDER_MET_GEZAG", "Ouder 0")])
        assert recorded["complete"] and recorded["youth_key"] == key
        bsn = await _bsn_of(w, rid)
        assert bsn not in str(recorded)

        r = await w.client.get(
            f"/api/v1/toestemmingen/{recorded['consent_id']}",
            headers={"X-Medewerker": CW, "Accept": "application/fhir+json"},
        )
        assert r.status_code == 200 and r.headers["content-type"].startswith("application/fhir+json")
        FhirConsent.model_validate(r.json())
        assert bsn not in r.text

        back = await w.client.post(
            "/api/v1/toestemmingen",
            content=r.content,
            headers={"X-Medewerker": CW, "Content-Type": "application/fhir+json"},
        )
        assert back.status_code == 201, back.text
        imported = back.json()
        assert imported["consent_id"] != recorded["consent_id"] and imported["referral_id"] == rid
        for field in (
            "purpose",
            "recipient_organisations",
            "data_categories",
            "grantors",
            "valid_from",
            "valid_until",
        ):
            assert imported[field] == recorded[field], field

        by_referral = await w.client.get(
            f"/api/v1/toestemmingen?referral_id={rid}", headers={"X-Medewerker": CW}
        )
        by_key = await w.client.get(f"/api/v1/toestemmingen?youth_key={key}", headers={"X-Medewerker": CW})
        assert len(by_referral.json()) == 2 and by_key.json() == by_referral.json()
        anonymous = await w.client.get(f"/api/v1/toestemmingen?referral_id={rid}")
        assert (
            anonymous.status_code == 401 and anonymous.headers["content-type"] == "application/problem+json"
        )
        assert len(await w.audit("consent.read")) >= 3

        # Rule 21: a zorgmelding needs no consent; its legal basis is in the audit log. It goes to Veilig
        # Thuis only: to another organisation it would be a handover without consent.
        other, _ = await w.referral(15)
        elsewhere = await w.client.post(
            "/api/v1/zorgmeldingen",
            json={
                "referral_id": other,
                "receiver_organisation": "wijkteam-dh",
                "data_categories": ["PERSONALIA"],
                "summary": "Zorgen over de thuissituatie.",
            },
            headers={"X-Medewerker": CW},
        )
        assert elsewhere.status_code == 422, elsewhere.text
        assert elsewhere.json()["title"] == "Zorgmelding niet mogelijk"
        r = await w.client.post(
            "/api/v1/zorgmeldingen",
            json={
                "referral_id": other,
                "receiver_organisation": "veilig-thuis-dh",
                "data_categories": ["PERSONALIA"],
                "summary": "Zorgen over de thuissituatie.",
            },
            headers={"X-Medewerker": CW},
        )
        assert r.status_code == 202, r.text
        await wait_for(lambda: any(c["org"] == "veilig-thuis-dh" for c in w.receiver.calls))
        assert not any(c["org"] == "wijkteam-dh" for c in w.receiver.calls)
        sent = [a for a in await w.audit("handover.sent") if a.objects["referral_id"] == other]
        assert sent and "meldcode" in (sent[0].legal_basis or "")

        async def disclosed() -> bool:
            return any(
                a.objects["receiver"] == "veilig-thuis-dh" for a in await w.audit("handover.disclosed")
            )

        await wait_for(disclosed)


async def _bsn_of(w, referral_id: str) -> str:  # type: ignore[no-untyped-def]
    from sqlalchemy import select

    from hub.intake.tables import referrals

    async with w.hub.store.connect() as conn:
        return str(
            (await conn.execute(select(referrals.c.bsn).where(referrals.c.id == referral_id))).scalar_one()
        )


async def test_a_fhir_patient_key_that_is_no_key_is_refused_not_looked_up(
    kafka: EmbeddedKafka, db_url: str, unique: str
) -> None:
    """The key went to the store unchecked: a NUL in it made PostgreSQL refuse the query (a 500)."""
    async with world(kafka, db_url, unique) as w:
        rid, key = await w.referral(14, custodians=1)
        recorded = await w.consent(rid, grantors=[("JEUGDIGE", "Sam"), ("OUDER_MET_GEZAG", "Ouder 0")])
        r = await w.client.get(
            f"/api/v1/toestemmingen/{recorded['consent_id']}",
            headers={"X-Medewerker": CW, "Accept": "application/fhir+json"},
        )
        for bad in (key[:10] + "\\u0000" + key[10:], "\\ud800" + key, key + "\\u001b"):
            body = r.text.replace(f'"value":"{key}"', f'"value":"{bad}"')
            assert body != r.text
            answer = await w.client.post(
                "/api/v1/toestemmingen",
                content=body.encode(),
                headers={"X-Medewerker": CW, "Content-Type": "application/fhir+json"},
            )
            assert answer.status_code == 400, (bad, answer.status_code, answer.text)
            assert answer.headers["content-type"] == "application/problem+json"
        # JSON Python cannot read: nesting deeper than it recurses (a 500), an integer of 5,000 digits
        for unreadable in (b"[" * 100_000 + b"]" * 100_000, b'{"resourceType": ' + b"7" * 5000 + b"}"):
            answer = await w.client.post(
                "/api/v1/toestemmingen",
                content=unreadable,
                headers={"X-Medewerker": CW, "Content-Type": "application/fhir+json"},
            )
            assert answer.status_code == 400, (answer.status_code, answer.text)
            assert answer.json()["title"] == "Ongeldige FHIR Consent"


def _json_consent(referral_id: str, *given_at: str) -> dict[str, Any]:
    """A consent body whose grantors (the youth, then parents) answered at `given_at`."""
    roles = ["JEUGDIGE"] + ["OUDER_MET_GEZAG"] * (len(given_at) - 1)
    return {
        "referral_id": referral_id,
        "purpose": "WARME_OVERDRACHT",
        "recipient_organisations": ["jongerenwerk-dh"],
        "data_categories": ["PERSONALIA"],
        "grantors": [
            {"role": r, "name": f"{r} {i}", "permission": "PERMIT", "given_at": at, "method": "MONDELING"}
            for i, (r, at) in enumerate(zip(roles, given_at, strict=True))
        ],
        "valid_from": (TODAY - timedelta(days=1)).isoformat(),
        "valid_until": (TODAY + timedelta(days=365)).isoformat(),
    }


async def _fhir_with(w, consent_id: str, *verification_dates: str) -> bytes:  # type: ignore[no-untyped-def]
    """The stored consent as FHIR, its grantors' verificationDates replaced."""
    r = await w.client.get(
        f"/api/v1/toestemmingen/{consent_id}", headers={"X-Medewerker": CW, "Accept": FHIR_JSON}
    )
    assert r.status_code == 200, r.text
    resource = r.json()
    for v, at in zip(resource["verification"], verification_dates, strict=False):
        v["verificationDate"] = at
    return json.dumps(resource).encode()


def _refused(answer: httpx.Response, title: str, field: str, says: str = "") -> None:
    assert answer.status_code == 400, (answer.status_code, answer.text)
    assert answer.headers["content-type"] == "application/problem+json"
    problem = answer.json()
    assert problem["title"] == title
    reasons = {p["name"]: p["reason"] for p in problem["invalidParams"]}
    assert field in reasons and says in reasons[field], problem
    assert "JEUGDIGE 0" not in answer.text and "Sam" not in answer.text  # no names echoed


async def test_a_grantor_time_off_the_calendar_is_refused_naming_the_field(
    kafka: EmbeddedKafka, db_url: str, unique: str
) -> None:
    """Turning such a time into the Dutch day ran off the calendar (OverflowError, a 500)."""
    async with world(kafka, db_url, unique) as w:
        rid, _ = await w.referral(17)
        recorded = await w.consent(rid)
        now = datetime.now(UTC).isoformat()
        for edge, bound in (
            ("9999-12-31T23:59:59-14:00", "less than 2100-01-01T00:00:00Z"),
            ("0001-01-01T00:00:00+14:00", "greater than or equal to 2000-01-01T00:00:00Z"),
            ("2100-01-01T00:00:00+00:00", "less than 2100-01-01T00:00:00Z"),
        ):
            answer = await w.client.post(
                "/api/v1/toestemmingen",
                json=_json_consent(rid, now, edge),
                headers={"X-Medewerker": CW},
            )
            _refused(answer, "Ongeldige toestemming", "grantors.1.given_at", bound)
            answer = await w.client.post(
                "/api/v1/toestemmingen",
                content=await _fhir_with(w, recorded["consent_id"], edge),
                headers={"X-Medewerker": CW, "Content-Type": FHIR_JSON},
            )
            _refused(answer, "Ongeldige FHIR Consent", "verification.0.verificationDate", bound)
        assert len(await w.audit("consent.recorded")) == 1  # nothing of the refused ones was kept


async def test_an_answer_dated_in_the_future_or_before_birth_is_refused(
    kafka: EmbeddedKafka, db_url: str, unique: str
) -> None:
    """Rule 8 counts the age on the day of the last answer: a 15-year-old's own permit dated two
    years ahead made the youth 17, and the consent complete without the custodians' permit."""
    async with world(kafka, db_url, unique) as w:
        rid, _ = await w.referral(15, custodians=1)
        recorded = await w.consent(rid)
        ahead = (datetime.now(UTC) + timedelta(days=730)).isoformat()
        before_birth = "2000-01-02T10:00:00+01:00"
        for at, says in ((ahead, "ligt in de toekomst"), (before_birth, "ligt voor de geboortedatum")):
            answer = await w.client.post(
                "/api/v1/toestemmingen", json=_json_consent(rid, at), headers={"X-Medewerker": CW}
            )
            assert answer.status_code == 422, (at, answer.status_code, answer.text)
            reasons = {p["name"]: p["reason"] for p in answer.json()["invalidParams"]}
            assert says in reasons["grantors.0.given_at"], reasons
            fhir = await w.client.post(
                "/api/v1/toestemmingen",
                content=await _fhir_with(w, recorded["consent_id"], at),
                headers={"X-Medewerker": CW, "Content-Type": FHIR_JSON},
            )
            assert fhir.status_code == 422, (at, fhir.status_code, fhir.text)
            reasons = {p["name"]: p["reason"] for p in fhir.json()["invalidParams"]}
            assert says in reasons["verification.0.verificationDate"], reasons
        # a grantor's clock a minute ahead of the hub's is no future answer (at noon, Dutch time) ...
        noon = datetime.now(LOCAL).replace(hour=12, minute=0, second=0, microsecond=0)
        w.hub.clock = lambda: noon.astimezone(UTC)
        soon = (noon + timedelta(minutes=1)).isoformat()
        ok = await w.client.post(
            "/api/v1/toestemmingen", json=_json_consent(rid, soon, soon), headers={"X-Medewerker": CW}
        )
        assert ok.status_code == 201, ok.text
        assert len(await w.audit("consent.recorded")) == 2
        # ... but at 23:58 a minute or four ahead is tomorrow: the day of consent, and the youth's
        # age on it, would be a day ahead (a 15-year-old turning 16 would need no parent)
        late = noon.replace(hour=23, minute=58)
        w.hub.clock = lambda: late.astimezone(UTC)
        after_midnight = (late + timedelta(minutes=4)).isoformat()
        answer = await w.client.post(
            "/api/v1/toestemmingen",
            json=_json_consent(rid, after_midnight, after_midnight),
            headers={"X-Medewerker": CW},
        )
        assert answer.status_code == 422, answer.text
        reasons = {p["name"]: p["reason"] for p in answer.json()["invalidParams"]}
        assert "dag na vandaag" in reasons["grantors.0.given_at"], reasons
        assert len(await w.audit("consent.recorded")) == 2


async def test_a_grantor_time_without_offset_is_refused_and_one_stored_earlier_still_reads(
    kafka: EmbeddedKafka, db_url: str, unique: str
) -> None:
    """A naive and an aware time were stored side by side; the FHIR export compared them (a 500)."""
    async with world(kafka, db_url, unique) as w:
        rid, _ = await w.referral(14, custodians=1)
        now = datetime.now(UTC)
        naive = now.astimezone(LOCAL).replace(tzinfo=None, microsecond=0)
        answer = await w.client.post(
            "/api/v1/toestemmingen",
            json=_json_consent(rid, naive.isoformat(), now.isoformat()),
            headers={"X-Medewerker": CW},
        )
        _refused(answer, "Ongeldige toestemming", "grantors.0.given_at", "timezone")
        recorded = await w.consent(rid, grantors=[("JEUGDIGE", "Sam"), ("OUDER_MET_GEZAG", "Ouder 0")])
        # FHIR itself refuses a time without offset; a bare date it allows, the hub does not.
        for without_offset, says in ((naive.isoformat(), ""), (naive.date().isoformat(), "timezone")):
            answer = await w.client.post(
                "/api/v1/toestemmingen",
                content=await _fhir_with(w, recorded["consent_id"], without_offset),
                headers={"X-Medewerker": CW, "Content-Type": FHIR_JSON},
            )
            _refused(answer, "Ongeldige FHIR Consent", "verification.0.verificationDate", says)

        # An earlier release stored what it was given: the youth's answer without an offset.
        assert w.hub.store is not None
        async with w.hub.store.transaction() as session:
            stored = (
                await session.execute(
                    select(consents.c.consent).where(consents.c.id == recorded["consent_id"])
                )
            ).scalar_one()
            stored["grantors"][0]["given_at"] = naive.isoformat()
            await session.execute(
                update(consents).where(consents.c.id == recorded["consent_id"]).values(consent=stored)
            )
        url, cw = f"/api/v1/toestemmingen/{recorded['consent_id']}", {"X-Medewerker": CW}
        as_fhir = await w.client.get(url, headers={**cw, "Accept": FHIR_JSON})
        assert as_fhir.status_code == 200, as_fhir.text
        FhirConsent.model_validate(as_fhir.json())
        dates = [datetime.fromisoformat(v["verificationDate"]) for v in as_fhir.json()["verification"]]
        assert dates[0] == naive.replace(tzinfo=LOCAL)  # read as the Dutch time it was entered in
        as_json = await w.client.get(url, headers=cw)
        assert as_json.status_code == 200 and as_json.json()["complete"], as_json.text
        listed = await w.client.get(f"/api/v1/toestemmingen?referral_id={rid}", headers=cw)
        assert listed.status_code == 200 and listed.json()[0]["grantors"] == as_json.json()["grantors"]


@pytest.mark.parametrize("patient", ['"x"', "[1]", '{"identifier": "x"}', '{"identifier": {"value": 7}}'])
async def test_a_fhir_patient_of_the_wrong_shape_is_refused_as_invalid_fhir(
    kafka: EmbeddedKafka, db_url: str, unique: str, patient: str
) -> None:
    """The API dug the youth key out of `patient` before validation: `.get` on a string (a 500)."""
    async with world(kafka, db_url, unique) as w:
        answer = await w.client.post(
            "/api/v1/toestemmingen",
            content=f'{{"resourceType": "Consent", "patient": {patient}}}'.encode(),
            headers={"X-Medewerker": CW, "Content-Type": FHIR_JSON},
        )
        assert answer.status_code == 400, (answer.status_code, answer.text)
        problem = answer.json()
        assert problem["title"] == "Ongeldige FHIR Consent"
        assert any(p["name"].startswith("patient") for p in problem["invalidParams"]), problem


async def test_a_fhir_consent_takes_the_youth_from_the_referral_not_from_the_resource(
    kafka: EmbeddedKafka, db_url: str, unique: str
) -> None:
    # Rule 8 counts the youth's age: a birthDate edited in the resource made a 14-year-old's consent
    # with the youth's permit alone complete, and the handover went without a parent's permit.
    import json

    async with world(kafka, db_url, unique) as w:
        rid, _ = await w.referral(14, custodians=1)
        only_youth = await w.consent(rid, grantors=[("JEUGDIGE", "Sam")])
        assert not only_youth["complete"]
        exported = await w.client.get(
            f"/api/v1/toestemmingen/{only_youth['consent_id']}",
            headers={"X-Medewerker": CW, "Accept": FHIR_JSON},
        )
        resource = exported.json()
        [patient] = [c for c in resource["contained"] if c["resourceType"] == "Patient"]
        patient["birthDate"] = "2008-01-01"
        answer = await w.client.post(
            "/api/v1/toestemmingen",
            content=json.dumps(resource).encode(),
            headers={"X-Medewerker": CW, "Content-Type": FHIR_JSON},
        )
        assert answer.status_code == 400, answer.text
        assert [p["name"] for p in answer.json()["invalidParams"]] == ["contained.Patient.birthDate"]
        # 400, not 404, says the hub knows this youth: the refusal is in the youth's audit trail
        [refused] = await w.audit("consent.refused")
        assert refused.youth_key == only_youth["youth_key"] and refused.user == CW
        assert refused.objects == {"differs": ["contained.Patient.birthDate"]}

        # the export itself goes back in, as incomplete as it was
        again = await w.client.post(
            "/api/v1/toestemmingen",
            content=exported.content,
            headers={"X-Medewerker": CW, "Content-Type": FHIR_JSON},
        )
        assert again.status_code == 201, again.text
        assert not again.json()["complete"] and again.json()["referral_id"] == rid

        # a youth the hub has no referral of, named by BSN in the resource: as for a JSON body, 404
        patient["identifier"] = [{"system": "http://fhir.nl/fhir/NamingSystem/bsn", "value": "111222333"}]
        resource["patient"] = {"reference": resource["patient"].get("reference", "")}
        unknown = await w.client.post(
            "/api/v1/toestemmingen",
            content=json.dumps(resource).encode(),
            headers={"X-Medewerker": CW, "Content-Type": FHIR_JSON},
        )
        assert unknown.status_code == 404, unknown.text


async def test_one_consent_reads_as_the_list_and_the_handover_check_see_it(
    kafka: EmbeddedKafka, db_url: str, unique: str
) -> None:
    """Read alone, a consent was judged without the referral's custodians (one parent's permit made a
    14-year-old's complete where the list, and the handover check, said two were needed), and an
    ACTIEF consent past its last day still read ACTIEF, where the handover check calls it VERLOPEN."""
    from datetime import UTC, datetime, timedelta

    async with world(kafka, db_url, unique) as w:
        rid, key = await w.referral(14, custodians=2)
        recorded = await w.consent(rid, grantors=[("JEUGDIGE", "Sam"), ("OUDER_MET_GEZAG", "Ouder 0")])
        one = (
            await w.client.get(
                f"/api/v1/toestemmingen/{recorded['consent_id']}", headers={"X-Medewerker": CW}
            )
        ).json()
        [listed] = (
            await w.client.get(f"/api/v1/toestemmingen?youth_key={key}", headers={"X-Medewerker": CW})
        ).json()
        assert (
            (one["complete"], one["missing"])
            == (listed["complete"], listed["missing"])
            == (
                False,
                ["OUDER_MET_GEZAG"],
            )
        )

        w.hub.clock = lambda: datetime.now(UTC) + timedelta(days=400)  # past its last day
        later = await w.client.get(
            f"/api/v1/toestemmingen/{recorded['consent_id']}", headers={"X-Medewerker": CW}
        )
        assert later.json()["status"] == "VERLOPEN"
        fhir = await w.client.get(
            f"/api/v1/toestemmingen/{recorded['consent_id']}",
            headers={"X-Medewerker": CW, "Accept": FHIR_JSON},
        )
        assert fhir.json()["status"] == "inactive"  # as FHIR says it: active no longer
        assert {"url": EXT_STATUS, "valueCode": "VERLOPEN"} in fhir.json()["extension"]
        [listed] = (
            await w.client.get(f"/api/v1/toestemmingen?youth_key={key}", headers={"X-Medewerker": CW})
        ).json()
        assert listed["status"] == "VERLOPEN"
