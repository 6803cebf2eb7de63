"""The caseworker consent API over HTTP: FHIR in and out, listing by referral or key, zorgmelding."""

from __future__ import annotations

import pytest
from fhir.resources.R4B.consent import Consent as FhirConsent

from hub.embedded import EmbeddedKafka
from tests.helpers.kafka import wait_for
from tests.integration.test_handover_flow import CW, world

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

        # Rule 21: a zorgmelding needs no consent; its legal basis is in the audit log.
        other, _ = await w.referral(15)
        r = await w.client.post(
            "/api/v1/zorgmeldingen",
            json={
                "referral_id": other,
                "receiver_organisation": "wijkteam-dh",
                "data_categories": ["PERSONALIA"],
                "summary": "Zorgen over de thuissituatie.",
            },
            headers={"X-Medewerker": CW},
        )
        assert r.status_code == 202, r.text
        await wait_for(lambda: any(c["org"] == "wijkteam-dh" for c in w.receiver.calls))
        sent = [a for a in await w.audit("handover.sent") if a.objects["referral_id"] == other]
        assert sent and "meldcode" in (sent[0].legal_basis or "")

        async def disclosed() -> bool:
            return any(a.objects["receiver"] == "wijkteam-dh" for a in await w.audit("handover.disclosed"))

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
