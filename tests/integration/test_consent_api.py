"""The caseworker consent API over HTTP: FHIR in and out, listing by referral or key, zorgmelding."""

from __future__ import annotations

import asyncio
import json
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from fhir.resources.R4B.consent import Consent as FhirConsent
from sqlalchemy import select, update

from hub.clock import LOCAL, today
from hub.consent.fhir import EXT_COMPLETENESS, EXT_CUSTODIANS, EXT_STATUS, FHIR_JSON, NS_BSN
from hub.consent.tables import consents
from hub.directory import upsert_caseworker
from hub.embedded import EmbeddedKafka
from schemas.caseworker import Caseworker
from schemas.pseudonym import receiver_ref
from tests.conftest import TEST_SECRET
from tests.helpers.kafka import wait_for
from tests.integration.test_handover_flow import CW, PATIENT, _queued, world

pytestmark = pytest.mark.integration


async def test_fhir_out_and_in_listing_and_zorgmelding(
    kafka: EmbeddedKafka, db_url: str, unique: str
) -> None:
    async with world(kafka, db_url, unique) as w:
        rid, key = await w.referral(14, custodians=1)
        recorded = await w.consent(
            rid, grantors=[("JEUGDIGE", "Sam"), ("OUDER_MET_GEZAG", "Ouder 0")], custodians=1
        )
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

        fhir_in = {"X-Medewerker": CW, "Content-Type": "application/fhir+json"}
        back = await w.client.post("/api/v1/toestemmingen", content=r.content, headers=fhir_in)
        # the same consent again, while it is in force: refused, naming it (a twin would outlive its
        # withdrawal); once it is withdrawn, the export goes back in as a consent of its own
        assert back.status_code == 409 and recorded["consent_id"] in back.json()["detail"], back.text
        withdrawn = await w.client.post(
            f"/api/v1/toestemmingen/{recorded['consent_id']}/intrekking",
            json={"reason": "opnieuw vastgelegd"},
            headers={"X-Medewerker": CW},
        )
        assert withdrawn.status_code == 200, withdrawn.text
        back = await w.client.post("/api/v1/toestemmingen", content=r.content, headers=fhir_in)
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
            "custodians",
            "complete",
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


async def test_a_fhir_consent_naming_another_caseworkers_youth_by_bsn_is_refused_and_audited(
    kafka: EmbeddedKafka, db_url: str, unique: str
) -> None:
    """A FHIR consent names its youth by BSN: the hub answered 404 for a BSN it knows no referral of
    and 403 for one whose case is another caseworker's, so anyone the case system named could ask
    whether the hub knows a BSN. The 403 wrote no audit entry, though the 400 saying as much does
    (`consent.refused`): now it is audited under the youth's key too, and a privacy officer sees who
    tried. An unknown BSN names no youth: nothing to audit it under."""
    async with world(kafka, db_url, unique) as w:
        async with w.hub.store.transaction() as session:  # type: ignore[union-attr]
            await upsert_caseworker(
                session, Caseworker(caseworker_id="cw-2", name="Twee", email="cw2@halt.nl", team="DEN_HAAG")
            )
        rid, key = await w.referral(17)
        recorded = await w.consent(rid)
        bsn = await _bsn_of(w, rid)
        exported = await w.client.get(
            f"/api/v1/toestemmingen/{recorded['consent_id']}",
            headers={"X-Medewerker": CW, "Accept": FHIR_JSON},
        )
        resource = exported.json()
        resource.pop("id", None)

        def naming(named: str) -> dict[str, Any]:  # the youth by BSN alone, no youth key
            probe = json.loads(json.dumps(resource))
            probe["patient"]["identifier"]["value"] = "onbekend"
            [patient] = [c for c in probe["contained"] if c["resourceType"] == "Patient"]
            patient["identifier"] = [{"system": NS_BSN, "value": named}]
            return probe

        cw2 = {"X-Medewerker": "cw-2", "Content-Type": FHIR_JSON}
        known = await w.client.post("/api/v1/toestemmingen", json=naming(bsn), headers=cw2)
        assert known.status_code == 403, known.text
        assert bsn not in known.text
        unknown = await w.client.post("/api/v1/toestemmingen", json=naming(w.bsn_pool.pop()), headers=cw2)
        assert unknown.status_code == 404, unknown.text
        [refused] = await w.audit("consent.refused")
        assert (refused.user, refused.youth_key, refused.objects) == ("cw-2", key, {"reason": "not_on_case"})
        mine = await w.client.get(f"/api/v1/toestemmingen?referral_id={rid}", headers={"X-Medewerker": CW})
        assert [c["consent_id"] for c in mine.json()] == [recorded["consent_id"]]  # nothing of cw-2's kept


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
        "valid_from": (today() - timedelta(days=1)).isoformat(),
        "valid_until": (today() + timedelta(days=365)).isoformat(),
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
        recorded = await w.consent(
            rid, grantors=[("JEUGDIGE", "Sam"), ("OUDER_MET_GEZAG", "Ouder 0")], custodians=1
        )
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
        only_youth = await w.consent(rid, grantors=[("JEUGDIGE", "Sam")], custodians=1)
        assert not only_youth["complete"] and only_youth["missing"] == ["OUDER_MET_GEZAG"]
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

        # the export itself goes back in, as incomplete as it was, once the consent it came from is
        # withdrawn: while that one is in force, it is refused as its twin
        fhir_in = {"X-Medewerker": CW, "Content-Type": FHIR_JSON}
        twin = await w.client.post("/api/v1/toestemmingen", content=exported.content, headers=fhir_in)
        assert twin.status_code == 409 and only_youth["consent_id"] in twin.json()["detail"], twin.text
        withdrawn = await w.client.post(
            f"/api/v1/toestemmingen/{only_youth['consent_id']}/intrekking",
            json={"reason": "opnieuw vastgelegd"},
            headers={"X-Medewerker": CW},
        )
        assert withdrawn.status_code == 200, withdrawn.text
        again = await w.client.post("/api/v1/toestemmingen", content=exported.content, headers=fhir_in)
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
        recorded = await w.consent(
            rid, grantors=[("JEUGDIGE", "Sam"), ("OUDER_MET_GEZAG", "Ouder 0")], custodians=2
        )
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


# Rule 8, "one missing permit means no consent": the caseworker states how many hold custody; a
# referral names them only as far as its referrer knows (BOA and leerplicht: one parent at most).
TWO_PARENTS = [("JEUGDIGE", "Sam"), ("OUDER_MET_GEZAG", "Ouder 0"), ("OUDER_MET_GEZAG", "Ouder 1")]
ONE_PARENT = TWO_PARENTS[:2]
NAMES = ("Sam", "Jansen", "Ouder 0", "Ouder 1")


async def _referral_again(w, referral_id: str, custodians: int) -> str:  # type: ignore[no-untyped-def]
    """A later referral of the same youth, naming `custodians` guardians with custody."""
    from sqlalchemy import insert

    from hub.intake.tables import referrals

    assert w.hub.store is not None
    async with w.hub.store.transaction() as session:
        row = (await session.execute(select(referrals).where(referrals.c.id == referral_id))).one()
        values = dict(row._mapping)
        body = json.loads(json.dumps(values["referral"]))
        body["case_reference"] += "-2"
        body["youth"]["guardians"] = [{"name": f"Ouder {i}"} for i in range(custodians)]
        values.update(
            id=str(uuid.uuid4()),
            case_reference=body["case_reference"],
            referral=body,
            received_at=datetime.now(UTC) + timedelta(seconds=1),
        )
        await session.execute(insert(referrals).values(**values))
    return str(values["id"])


async def _views(w, consent_id: str, key: str) -> list[dict[str, Any]]:  # type: ignore[no-untyped-def]
    """The consent as read alone and as listed."""
    cw = {"X-Medewerker": CW}
    one = await w.client.get(f"/api/v1/toestemmingen/{consent_id}", headers=cw)
    listed = await w.client.get(f"/api/v1/toestemmingen?youth_key={key}", headers=cw)
    assert one.status_code == 200 and listed.status_code == 200, (one.text, listed.text)
    [same] = [c for c in listed.json() if c["consent_id"] == consent_id]
    return [one.json(), same]


async def _fhir_verdict(w, consent_id: str) -> dict[str, list[Any]]:  # type: ignore[no-untyped-def]
    """Rule 8's verdict in the consent read as FHIR: sub-extension url -> values."""
    r = await w.client.get(
        f"/api/v1/toestemmingen/{consent_id}", headers={"X-Medewerker": CW, "Accept": FHIR_JSON}
    )
    assert r.status_code == 200, r.text
    FhirConsent.model_validate(r.json())
    [verdict] = [e for e in r.json()["extension"] if e["url"] == EXT_COMPLETENESS]
    found: dict[str, list[Any]] = {}
    for part in verdict["extension"]:
        found.setdefault(part["url"], []).append(next(v for k, v in part.items() if k.startswith("value")))
    return found


async def test_two_custodians_stated_and_one_permit_is_no_consent_and_no_handover_goes(
    kafka: EmbeddedKafka, db_url: str, unique: str
) -> None:
    """The referral named one parent (as a BOA or leerplicht referral does at most), two held
    custody: one parent's permit made the consent complete and the handover went."""
    async with world(kafka, db_url, unique) as w:
        rid, key = await w.referral(14, custodians=1)
        one = await w.consent(rid, grantors=ONE_PARENT, custodians=2)
        assert (one["complete"], one["missing"], one["custodians"], one["custodians_needed"]) == (
            False,
            ["OUDER_MET_GEZAG"],
            2,
            2,
        )
        reason = one["incomplete_reason"]
        assert "Van de 2 gezaghebbers (zoals opgegeven) ontbreekt de toestemming van 1" in reason
        for view in await _views(w, one["consent_id"], key):
            assert (view["complete"], view["missing"], view["custodians"]) == (False, ["OUDER_MET_GEZAG"], 2)
        verdict = await _fhir_verdict(w, one["consent_id"])
        assert verdict["complete"] == [False] and verdict["missing"] == ["OUDER_MET_GEZAG"]
        assert verdict["custodiansNeeded"] == [2]

        hid = await w.handover(rid)

        async def waiting() -> dict[str, Any] | None:
            state = await w.status(hid)
            return state if state["waiting_reasons"] else None

        state = await wait_for(waiting)
        assert state["status"] == "WACHT_OP_TOESTEMMING" and state["waiting_reasons"] == ["ONVOLLEDIG"]
        assert w.receiver.calls == []

        # both parents permit: now it is complete, and the waiting handover goes out
        both = await w.consent(rid, grantors=TWO_PARENTS, custodians=2)
        assert both["complete"] and both["missing"] == [] and both["incomplete_reason"] is None
        assert both["handovers_sent"] == [hid]
        await wait_for(lambda: len(w.receiver.handovers()) == 1)


async def test_one_custodian_stated_and_permitting_is_consent(
    kafka: EmbeddedKafka, db_url: str, unique: str
) -> None:
    async with world(kafka, db_url, unique) as w:
        rid, _ = await w.referral(11, custodians=1)
        recorded = await w.consent(rid, grantors=[("OUDER_MET_GEZAG", "Ouder 0")], custodians=1)
        assert (recorded["complete"], recorded["custodians"], recorded["custodians_needed"]) == (True, 1, 1)
        hid = await w.handover(rid)
        await wait_for(lambda: len(w.receiver.handovers()) == 1)
        assert (await w.status(hid))["status"] in {"VERZONDEN", "ONTVANGEN"}


async def test_a_number_of_custodians_below_what_is_known_is_refused_with_422(
    kafka: EmbeddedKafka, db_url: str, unique: str
) -> None:
    async with world(kafka, db_url, unique) as w:
        rid, _ = await w.referral(14, custodians=2)
        bsn = await _bsn_of(w, rid)
        body = _json_consent(rid, datetime.now(UTC).isoformat(), datetime.now(UTC).isoformat())
        answer = await w.client.post(
            "/api/v1/toestemmingen", json={**body, "custodians": 1}, headers={"X-Medewerker": CW}
        )
        assert answer.status_code == 422, answer.text
        assert answer.headers["content-type"] == "application/problem+json"
        problem = answer.json()
        assert problem["title"] == "Aantal gezaghebbers te laag"
        assert "verwijzing" in problem["detail"] and "geef dat aantal op in custodians" in problem["detail"]
        [param] = problem["invalidParams"]
        assert (
            param["name"] == "custodians"
            and "2" in param["reason"]
            and param["allowed"].startswith("een geheel getal van 2")
        )
        assert bsn not in answer.text and not any(name in answer.text for name in NAMES)

        # a later referral naming fewer (a BOA or leerplicht one names one parent at most) does not
        # lower what an earlier one showed: still two at least
        await _referral_again(w, rid, 1)
        again = await w.client.post(
            "/api/v1/toestemmingen", json={**body, "custodians": 1}, headers={"X-Medewerker": CW}
        )
        assert again.status_code == 422, again.text

        # the consent itself records three custodians answering: more than can hold custody, so
        # a role is wrong, whatever the number (which cannot be 3)
        rid13, _ = await w.referral(13, custodians=0)
        three = {
            **_json_consent(rid13, *[datetime.now(UTC).isoformat()] * 4),
            "custodians": 2,
        }
        answer = await w.client.post("/api/v1/toestemmingen", json=three, headers={"X-Medewerker": CW})
        assert answer.status_code == 422, answer.text
        assert answer.json()["title"] == "Te veel gezaghebbers"
        assert "3 verschillende gezaghebbers" in answer.json()["detail"]
        assert [p["name"] for p in answer.json()["invalidParams"]] == ["grantors"]
        # at 16 and over the youth alone decides: a number stated below the referral's decides nothing
        rid17, _ = await w.referral(17, custodians=2)
        alone = {**_json_consent(rid17, datetime.now(UTC).isoformat()), "custodians": 1}
        answer = await w.client.post("/api/v1/toestemmingen", json=alone, headers={"X-Medewerker": CW})
        assert answer.status_code == 201 and answer.json()["complete"], answer.text

        # the same through FHIR: the number is an extension, and the problem names it
        ok = await w.consent(rid, grantors=TWO_PARENTS, custodians=2)
        assert ok["complete"]
        r = await w.client.get(
            f"/api/v1/toestemmingen/{ok['consent_id']}", headers={"X-Medewerker": CW, "Accept": FHIR_JSON}
        )
        resource = r.json()
        [stated] = [e for e in resource["extension"] if e["url"] == EXT_CUSTODIANS]
        assert stated["valuePositiveInt"] == 2
        stated["valuePositiveInt"] = 1
        answer = await w.client.post(
            "/api/v1/toestemmingen",
            content=json.dumps(resource).encode(),
            headers={"X-Medewerker": CW, "Content-Type": FHIR_JSON},
        )
        assert answer.status_code == 422, answer.text
        assert [p["name"] for p in answer.json()["invalidParams"]] == ["extension.custodian-count"]
        assert bsn not in answer.text and not any(name in answer.text for name in NAMES)

        # a number that is no number of people is refused by the schema
        for wrong in (0, 11, "2", True):
            answer = await w.client.post(
                "/api/v1/toestemmingen", json={**body, "custodians": wrong}, headers={"X-Medewerker": CW}
            )
            assert answer.status_code == 400, (wrong, answer.text)
            assert [p["name"] for p in answer.json()["invalidParams"]] == ["custodians"]
        assert len(await w.audit("consent.recorded")) == 2  # the 17-year-old's and the right one


async def test_no_number_under_16_is_incomplete_and_every_view_says_why(
    kafka: EmbeddedKafka, db_url: str, unique: str
) -> None:
    """A consent stored before the number was asked for, or recorded without it: one parent's permit
    stood for every custodian's. Now it is not complete, it lets no handover go, and each view
    says that the number must be stated."""
    async with world(kafka, db_url, unique) as w:
        rid, key = await w.referral(13, custodians=1)
        recorded = await w.consent(rid, grantors=ONE_PARENT)
        assert (recorded["complete"], recorded["missing"], recorded["custodians"]) == (
            False,
            ["AANTAL_GEZAGHEBBERS"],
            None,
        )
        # as an earlier release stored it: without the field at all
        assert w.hub.store is not None
        async with w.hub.store.transaction() as session:
            stored = (
                await session.execute(
                    select(consents.c.consent).where(consents.c.id == recorded["consent_id"])
                )
            ).scalar_one()
            del stored["custodians"]
            await session.execute(
                update(consents).where(consents.c.id == recorded["consent_id"]).values(consent=stored)
            )
        for view in await _views(w, recorded["consent_id"], key):
            assert (view["complete"], view["missing"], view["custodians_needed"]) == (
                False,
                ["AANTAL_GEZAGHEBBERS"],
                None,
            )
            assert "aantal gezaghebbers is niet opgegeven" in view["incomplete_reason"]
        verdict = await _fhir_verdict(w, recorded["consent_id"])
        assert verdict["complete"] == [False] and verdict["missing"] == ["AANTAL_GEZAGHEBBERS"]
        assert "aantal gezaghebbers is niet opgegeven" in verdict["reason"][0]

        hid = await w.handover(rid)

        async def waiting() -> dict[str, Any] | None:
            state = await w.status(hid)
            return state if state["waiting_reasons"] else None

        assert (await wait_for(waiting))["waiting_reasons"] == ["ONVOLLEDIG"]
        assert w.receiver.calls == []

        withdrawn = await w.client.post(
            f"/api/v1/toestemmingen/{recorded['consent_id']}/intrekking",
            json={"reason": "opnieuw vastleggen met het aantal gezaghebbers"},
            headers={"X-Medewerker": CW},
        )
        assert withdrawn.status_code == 200, withdrawn.text
        assert withdrawn.json()["missing"] == ["AANTAL_GEZAGHEBBERS"]
        reason = withdrawn.json()["incomplete_reason"]
        assert "aantal gezaghebbers is niet opgegeven" in reason
        assert not any(name in reason for name in NAMES)

        # at 16 the youth decides alone: no number is asked for
        rid16, _ = await w.referral(16, custodians=2)
        alone = await w.consent(rid16)
        assert (alone["complete"], alone["missing"], alone["incomplete_reason"]) == (True, [], None)


async def test_a_later_referral_naming_more_custodians_counts_in_every_view_and_at_delivery(
    kafka: EmbeddedKafka, db_url: str, unique: str
) -> None:
    """Every judgement of a consent takes the custodians the youth's referrals name: the check when
    a handover leaves judged without them, and let go what routing would not. A handover stopped
    there only for that waits again, and goes once the consent is recorded whole."""
    async with world(kafka, db_url, unique, retry_schedule_s=PATIENT) as w:
        w.receiver.down = True
        rid, key = await w.referral(14, custodians=1)
        consent = await w.consent(rid, grantors=ONE_PARENT, custodians=1)
        assert consent["complete"]
        hid = await w.handover(rid)
        await wait_for(lambda: w.receiver.refused >= 1)
        assert (await w.status(hid))["status"] == "VERZONDEN"

        await _referral_again(w, rid, custodians=2)  # the police name a second parent with custody
        for view in await _views(w, consent["consent_id"], key):
            assert (view["complete"], view["missing"], view["custodians"], view["custodians_needed"]) == (
                False,
                ["OUDER_MET_GEZAG"],
                1,
                2,
            )
            assert "de verwijzing noemt er 2" in view["incomplete_reason"]
        assert (await _fhir_verdict(w, consent["consent_id"]))["custodiansNeeded"] == [2]
        w.receiver.down = False

        async def decided() -> dict[str, Any] | None:
            state = await w.status(hid)
            return state if w.receiver.handovers() or state["status"] != "VERZONDEN" else None

        # it did not leave, and it waits again rather than ending: the consent can be made whole
        state = await wait_for(decided, timeout_s=30)
        assert w.receiver.handovers() == []
        assert (state["status"], state["waiting_reasons"]) == ("WACHT_OP_TOESTEMMING", ["ONVOLLEDIG"])
        assert state["delivered_at"] is None and state["consent_id"] is None
        (again,) = await w.audit("handover.waiting_again")
        assert again.objects["gaps"] == ["ONVOLLEDIG"] and await w.audit("handover.lapsed") == []
        assert await _queued(w, "notification.mail", "handover.waiting", hid) == 1

        # a new handover under it waits for the second parent's permit too
        second = await w.handover(rid)

        async def waiting() -> dict[str, Any] | None:
            state = await w.status(second)
            return state if state["waiting_reasons"] else None

        assert (await wait_for(waiting))["waiting_reasons"] == ["ONVOLLEDIG"]

        # the consent recorded again, whole: both go, once each
        await w.consent(rid, grantors=TWO_PARENTS, custodians=2)
        await wait_for(lambda: len(w.receiver.handovers()) >= 2, timeout_s=30)
        got = [e.payload["handover_id"] for e in w.receiver.handovers()]
        assert sorted(got) == sorted([hid, second])


async def test_a_handover_back_to_waiting_goes_at_once_under_a_whole_consent_recorded_meanwhile(
    kafka: EmbeddedKafka, db_url: str, unique: str
) -> None:
    """A handover on its way (its receiver down) under a consent that a later referral made
    incomplete; the caseworker at once recorded the consent whole, whose check passed the handover
    by (it was sent). The retry found the first consent incomplete and put the handover back to
    waiting, and nothing routed it again: it waited for good, and its caseworker was asked to record
    the consent they had just recorded."""
    async with world(kafka, db_url, unique, webhook_timeout_s=60) as w:
        # its first call held in flight while the test acts: a retry between the two writes would
        # see the first consent incomplete before the whole one is recorded, another story
        w.receiver.down, w.receiver.hold = True, asyncio.Event()
        rid, _ = await w.referral(14, custodians=1)
        first = await w.consent(rid, grantors=ONE_PARENT, custodians=1)
        hid = await w.handover(rid)
        await wait_for(lambda: len(w.receiver.attempts) >= 1)
        await _referral_again(w, rid, custodians=2)
        whole = await w.consent(rid, grantors=TWO_PARENTS, custodians=2)
        assert whole["complete"] and whole["handovers_sent"] == []  # on its way: passed by
        w.receiver.hold.set()
        await wait_for(lambda: w.receiver.refused >= 1)
        w.receiver.down = False

        await wait_for(lambda: len(w.receiver.handovers()) >= 1, timeout_s=30)
        [got] = w.receiver.handovers()
        # the consent as the receiver knows it: its own reference of the consent's id
        assert got.payload["handover_id"] == hid
        ours = receiver_ref(TEST_SECRET, "jongerenwerk-dh", "consent", whole["consent_id"])
        assert got.payload["consent_ref"] == ours
        state = await w.status(hid)
        assert state["status"] in ("VERZONDEN", "ONTVANGEN") and state["consent_id"] == whole["consent_id"]
        (again,) = await w.audit("handover.waiting_again")
        assert again.objects["consent_id"] == first["consent_id"] and again.objects["gaps"] == ["ONVOLLEDIG"]
        sent = [a.objects["consent_id"] for a in await w.audit("handover.sent")]
        assert sent == [first["consent_id"], whole["consent_id"]]
        # it went: nobody is asked to record a consent that is there
        assert await _queued(w, "notification.mail", "handover.waiting", hid) == 0


async def test_a_receiver_that_may_have_a_handover_back_to_waiting_is_told_of_the_withdrawal(
    kafka: EmbeddedKafka, db_url: str, unique: str
) -> None:
    """Rule 10. The receiver stored the handover and answered 500, so it may have it; before the
    retry a later referral made the consent incomplete, and the handover went back to waiting under
    no consent. Withdrawing the consent then withdrew it as a waiting one, judged by its status: the
    receiver, which holds the youth's data, was never told."""
    async with world(kafka, db_url, unique, retry_schedule_s=(0.5,) * 8) as w:
        rid, _ = await w.referral(14, custodians=1)
        consent = await w.consent(rid, grantors=ONE_PARENT, custodians=1)
        w.receiver.fail_after_storing = True
        hid = await w.handover(rid)
        await wait_for(lambda: len(w.receiver.handovers()) >= 1)
        await _referral_again(w, rid, custodians=2)

        async def waiting_again() -> dict[str, Any] | None:
            state = await w.status(hid)
            return state if state["status"] == "WACHT_OP_TOESTEMMING" else None

        state = await wait_for(waiting_again, timeout_s=30)
        assert state["consent_id"] is None and state["delivered_at"] is None
        (again,) = await w.audit("handover.waiting_again")
        assert again.objects["attempted"] is True
        w.receiver.fail_after_storing = False
        r = await w.client.post(
            f"/api/v1/toestemmingen/{consent['consent_id']}/intrekking",
            json={"reason": "ingetrokken"},
            headers={"X-Medewerker": CW},
        )
        assert r.status_code == 200 and r.json()["handovers_withdrawn"] == [hid], r.text
        (withdrawn,) = await w.audit("handover.withdrawn")
        assert withdrawn.objects["receiver_told"] is True

        def told() -> list[Any]:
            return [c["env"] for c in w.receiver.calls if c["env"].type == "HandoverWithdrawn"]

        await wait_for(lambda: len(told()) >= 1, timeout_s=20)
        [notice] = told()
        assert notice.payload["handover_id"] == hid
        assert (await w.status(hid))["status"] == "INGETROKKEN"
        # under a transaction id of its own, which the audit entry names: under the withdrawal's,
        # two receivers of the youth could join their handovers on it
        assert notice.transaction_id != r.headers["Fsc-Transaction-Id"] == withdrawn.transaction_id
        assert withdrawn.objects["notice_transaction_id"] == notice.transaction_id


async def test_a_fhir_consent_not_in_force_is_never_recorded_actief(
    kafka: EmbeddedKafka, db_url: str, unique: str
) -> None:
    """The hub's status extension overrode FHIR `status`: an export edited to say "rejected" (or a
    draft) but still carrying the extension ACTIEF was stored ACTIEF, and a handover went under it."""
    async with world(kafka, db_url, unique) as w:
        rid, _ = await w.referral(17)
        first = await w.consent(rid)
        r = await w.client.get(
            f"/api/v1/toestemmingen/{first['consent_id']}", headers={"X-Medewerker": CW, "Accept": FHIR_JSON}
        )
        resource = r.json()
        r = await w.client.post(
            f"/api/v1/toestemmingen/{first['consent_id']}/intrekking",
            json={"reason": "weg"},
            headers={"X-Medewerker": CW},
        )
        assert r.status_code == 200
        fhir = {"X-Medewerker": CW, "Content-Type": FHIR_JSON}
        for status in ("rejected", "draft", "proposed", "entered-in-error", "inactive"):
            resource["status"] = status
            answer = await w.client.post("/api/v1/toestemmingen", json=resource, headers=fhir)
            _refused(answer, "Ongeldige FHIR Consent", "extension.consent-status", "status active")
        resource["status"] = "rejected"
        resource["extension"] = [e for e in resource["extension"] if e["url"] != EXT_STATUS]
        answer = await w.client.post("/api/v1/toestemmingen", json=resource, headers=fhir)
        assert answer.status_code == 201 and answer.json()["status"] != "ACTIEF", answer.text

        hid = await w.handover(rid)

        async def judged() -> dict[str, Any] | None:
            state = await w.status(hid)
            return state if state["waiting_reasons"] else None

        state = await wait_for(judged)
        assert state["status"] == "WACHT_OP_TOESTEMMING" and state["consent_id"] is None
        assert w.receiver.handovers() == []


async def _consent_ids(w, youth_key: str) -> list[str]:  # type: ignore[no-untyped-def]
    async with w.hub.store.connect() as conn:
        query = (
            select(consents.c.id).where(consents.c.youth_key == youth_key).order_by(consents.c.recorded_at)
        )
        return list((await conn.execute(query)).scalars())


async def test_a_consent_posted_again_with_its_idempotency_key_is_recorded_once(
    kafka: EmbeddedKafka, db_url: str, unique: str
) -> None:
    """The case system's POST timed out after the commit; its retry made a second consent, one the
    case system never learnt of, and a withdrawal of the one it knew left the other in force. With
    the same Idempotency-Key the retry gets the first (as JSON and as FHIR); another request under
    that key is refused."""
    async with world(kafka, db_url, unique) as w:
        rid, key = await w.referral(17)
        sent = _json_consent(rid, datetime.now(UTC).isoformat())
        headers = {"X-Medewerker": CW, "Idempotency-Key": str(uuid.uuid4())}
        first = await w.client.post("/api/v1/toestemmingen", json=sent, headers=headers)
        again = await w.client.post("/api/v1/toestemmingen", json=sent, headers=headers)
        assert (first.status_code, again.status_code) == (201, 201), again.text
        cid = first.json()["consent_id"]
        assert again.json()["consent_id"] == cid and again.json()["status"] == "ACTIEF"
        assert "Idempotent-Replayed" not in first.headers and again.headers["Idempotent-Replayed"] == "true"
        assert await _consent_ids(w, key) == [cid]
        # the replay is a read of the consent, audited as one (rule 18)
        assert [a.objects for a in await w.audit("consent.read")] == [{"consent_id": cid}]

        # another request under the key: refused, nothing recorded
        other = sent | {"recipient_organisations": ["wijkteam-dh"]}
        refused = await w.client.post("/api/v1/toestemmingen", json=other, headers=headers)
        assert refused.status_code == 422 and "Idempotency-Key" in refused.json()["title"], refused.text
        assert await _consent_ids(w, key) == [cid]

        # as FHIR: the export of a withdrawn consent, recorded anew with a key, sent twice (the second
        # time with its members in another order: the same resource)
        exported = await w.client.get(
            f"/api/v1/toestemmingen/{cid}", headers={"X-Medewerker": CW, "Accept": FHIR_JSON}
        )
        withdrawn = await w.client.post(
            f"/api/v1/toestemmingen/{cid}/intrekking",
            json={"reason": "vernieuwd"},
            headers={"X-Medewerker": CW},
        )
        assert withdrawn.status_code == 200, withdrawn.text
        fhir_in = {"X-Medewerker": CW, "Content-Type": FHIR_JSON, "Idempotency-Key": str(uuid.uuid4())}
        made = await w.client.post("/api/v1/toestemmingen", content=exported.content, headers=fhir_in)
        resource = exported.json()
        reordered = json.dumps(dict(reversed(list(resource.items()))), indent=2).encode()
        repeat = await w.client.post("/api/v1/toestemmingen", content=reordered, headers=fhir_in)
        assert (made.status_code, repeat.status_code) == (201, 201), repeat.text
        assert repeat.json()["consent_id"] == made.json()["consent_id"] != cid
        assert repeat.headers["Idempotent-Replayed"] == "true"
        assert await _consent_ids(w, key) == [cid, made.json()["consent_id"]]
        # the same key with the consent as JSON is another request
        same_key = {"X-Medewerker": CW, "Idempotency-Key": fhir_in["Idempotency-Key"]}
        as_json = await w.client.post("/api/v1/toestemmingen", json=sent, headers=same_key)
        assert as_json.status_code == 422, as_json.text
        assert await _consent_ids(w, key) == [cid, made.json()["consent_id"]]


async def test_a_twin_of_a_consent_in_force_is_refused_so_its_withdrawal_stops_the_handover(
    kafka: EmbeddedKafka, db_url: str, unique: str
) -> None:
    """Without a key the retry stored a twin: the case system withdrew the consent it knew, the twin
    stayed ACTIEF with the same receivers and purpose, and the next handover went out under it (rule
    10). Now a consent the youth has in force, the same in substance, is refused (409) naming the
    first; once that is withdrawn nothing covers the handover, which waits. A renewal after the
    withdrawal, and a consent for another receiver, are consents of their own."""
    async with world(kafka, db_url, unique) as w:
        rid, key = await w.referral(17)
        bsn = await _bsn_of(w, rid)
        sent = _json_consent(rid, datetime.now(UTC).isoformat())
        sent["data_categories"] = ["PERSONALIA", "VERWIJZING", "HULPVRAAG"]
        first = await w.client.post("/api/v1/toestemmingen", json=sent, headers={"X-Medewerker": CW})
        assert first.status_code == 201, first.text
        cid = first.json()["consent_id"]

        # the same again, also with its lists in another order, or by another key
        shuffled = sent | {
            "data_categories": list(reversed(sent["data_categories"])),
            "grantors": [g | {"method": "SCHRIFTELIJK"} for g in sent["grantors"]],  # how: no substance
        }
        for body, headers in (
            (sent, {}),
            (shuffled, {}),
            (sent, {"Idempotency-Key": str(uuid.uuid4())}),
        ):
            twin = await w.client.post(
                "/api/v1/toestemmingen", json=body, headers={"X-Medewerker": CW, **headers}
            )
            assert twin.status_code == 409, twin.text
            assert twin.headers["content-type"] == "application/problem+json"
            assert cid in twin.json()["detail"] and bsn not in twin.text and "JEUGDIGE 0" not in twin.text
        assert await _consent_ids(w, key) == [cid]
        refusals = await w.audit("consent.refused")
        assert [(a.user, a.youth_key, a.objects) for a in refusals] == [
            (CW, key, {"consent_id": cid, "reason": "already_active"})
        ] * 3

        # the case system withdraws the one consent it knows: nothing covers the handover now
        withdrawn = await w.client.post(
            f"/api/v1/toestemmingen/{cid}/intrekking",
            json={"reason": "ingetrokken"},
            headers={"X-Medewerker": CW},
        )
        assert withdrawn.status_code == 200, withdrawn.text
        hid = await w.handover(rid)
        assert (await w.status(hid))["status"] == "WACHT_OP_TOESTEMMING"
        assert w.receiver.handovers() == []

        # a renewal after the withdrawal is a consent of its own, and lets the handover go
        renewed = await w.client.post("/api/v1/toestemmingen", json=sent, headers={"X-Medewerker": CW})
        assert renewed.status_code == 201, renewed.text
        assert renewed.json()["consent_id"] != cid and renewed.json()["handovers_sent"] == [hid]
        # so is one for another receiver, or for a longer period
        for changes in (
            {"recipient_organisations": ["wijkteam-dh"]},
            {"valid_until": (today() + timedelta(days=400)).isoformat()},
        ):
            other = await w.client.post(
                "/api/v1/toestemmingen", json=sent | changes, headers={"X-Medewerker": CW}
            )
            assert other.status_code == 201, other.text
        assert len(await _consent_ids(w, key)) == 4
