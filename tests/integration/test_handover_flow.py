"""Warm handovers end to end: real broker, both stores, a real signed-webhook receiver over HTTP."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, timedelta, timezone
from typing import Any

import httpx
import pytest
from fastapi import FastAPI, Request, Response
from sqlalchemy import insert, select

from connectors.receivers.webhook import SIGNATURE_HEADER, verify
from connectors.verwijsindex.contract import add_years
from hub.app import REGISTRARS, create_app
from hub.clock import today
from hub.consent.store import get_consent, mark_withdrawn
from hub.directory import upsert_caseworker
from hub.embedded import EmbeddedKafka
from hub.handovers.answers import notify_unanswered, record_answer
from hub.handovers.component import routing_of
from hub.handovers.receivers import ReceiverDelivery, set_receiver_delivery
from hub.handovers.service import (
    RECHECK_FOR,
    Act,
    HandoverProblem,
    apply_withdrawal,
    create_handover,
    get_handover,
    recheck_started,
    route,
    waiting_to_start,
)
from hub.handovers.tables import handovers, receiver_deliveries
from hub.intake.tables import referrals
from hub.ops.dlq import DeadLetters
from hub.partners import PartnerType, add_partner
from hub.retry.tables import parked
from hub.runtime import Hub
from hub.spine.dlq import DLQ_EXC_MESSAGE
from hub.store.tables import audit_log, outbox
from schemas.bsn import is_valid_bsn
from schemas.caseworker import Caseworker
from schemas.envelope import Envelope
from schemas.handover import Handover, HandoverStatus, ReceiverType
from schemas.pseudonym import receiver_ref, youth_key, youth_ref
from tests.conftest import TEST_SECRET, make_settings
from tests.helpers.http import serving
from tests.helpers.kafka import headers_of, produce, read_topic, wait_for

pytestmark = pytest.mark.integration
SECRET = "receiver-webhook-secret-0123456789abcdef"
FHIR = "application/fhir+json"
CW = "cw-1"


def bsns() -> list[str]:
    return [f"{n:09d}" for n in range(100000000, 100002000) if is_valid_bsn(f"{n:09d}")]


def born(years: int) -> date:
    return add_years(today(), -years) - timedelta(days=30)


@dataclass
class Receiver:
    """A receiver's webhook: verifies the HMAC, records every call, can be taken down."""

    down: bool = False
    fail_after_storing: bool = False  # keeps what it got, then answers 500 (as if it crashed)
    calls: list[dict[str, Any]] = field(default_factory=list)
    attempts: list[tuple[str, bytes]] = field(default_factory=list)  # (org, raw body) of every call
    refused: int = 0
    bad_signatures: int = 0
    port: int = 0
    # when set, a call waits until the event is: a test holds a delivery in flight while it acts
    hold: asyncio.Event | None = None

    def app(self) -> FastAPI:
        app = FastAPI()

        @app.post("/hook/{org}")
        async def hook(org: str, request: Request) -> Response:
            body = await request.body()
            self.attempts.append((org, body))
            if self.hold is not None:
                await self.hold.wait()
            if not verify(SECRET, body, request.headers.get(SIGNATURE_HEADER)):
                self.bad_signatures += 1
                return Response(status_code=401)
            if self.down:
                self.refused += 1
                return Response(status_code=503)
            env = Envelope.from_bytes(body)
            self.calls.append(
                {"org": org, "env": env, "transaction": request.headers.get("Fsc-Transaction-Id")}
            )
            return Response(status_code=500 if self.fail_after_storing else 204)

        return app

    def handovers(self) -> list[Envelope]:
        return [c["env"] for c in self.calls if c["env"].type == "Handover"]

    def url(self, org: str) -> str:
        return f"http://127.0.0.1:{self.port}/hook/{org}"


@asynccontextmanager
async def receiver_server() -> AsyncIterator[Receiver]:
    receiver = Receiver()
    async with serving(receiver.app()) as port:
        receiver.port = port
        yield receiver


@dataclass
class World:
    """A started hub with routing, an HTTP client on its app, a webhook receiver, and test data."""

    hub: Hub
    client: httpx.AsyncClient
    receiver: Receiver
    partner_keys: dict[str, str]
    bsn_pool: list[str]

    async def referral(self, age: int, custodians: int = 1) -> tuple[str, str]:
        """Store an accepted referral of a youth of `age`; returns (referral id, youth key)."""
        bsn = self.bsn_pool.pop()
        key = youth_key(TEST_SECRET, bsn)
        rid = str(uuid.uuid4())
        guardians = [{"name": f"Ouder {i}"} for i in range(custodians)]
        body = {
            "referrer": {"type": "POLITIE", "organisation": "Politie Den Haag"},
            "case_reference": f"PV-{rid[:8]}",
            "youth": {
                "bsn": bsn,
                "given_names": "Sam",
                "surname": "Jansen",
                "birth_date": born(age).isoformat(),
                "municipality": "Den Haag",
                "guardians": guardians,
            },
            "track": "HALT_STRAF",
            "offence": {
                "committed_on": (today() - timedelta(days=10)).isoformat(),
                "description": "vernieling bushokje",
            },
        }
        assert self.hub.store is not None
        async with self.hub.store.transaction() as session:
            await session.execute(
                insert(referrals).values(
                    id=rid,
                    referrer_key="test",
                    case_reference=body["case_reference"],
                    partner_id=None,
                    referrer_type="POLITIE",
                    channel="http",
                    youth_key=key,
                    bsn=bsn,
                    track="HALT_STRAF",
                    outcome="ACCEPTED",
                    referral=body,
                    decision={"outcome": "ACCEPTED"},
                    transaction_id=str(uuid.uuid4()),
                    received_at=datetime.now(UTC),
                )
            )
        return rid, key

    async def consent(self, referral_id: str, **changes: Any) -> dict[str, Any]:
        grantors = changes.pop("grantors", [("JEUGDIGE", "Sam")])
        body = {
            "referral_id": referral_id,
            "purpose": "WARME_OVERDRACHT",
            "recipient_organisations": ["jongerenwerk-dh"],
            "data_categories": ["PERSONALIA", "VERWIJZING", "HULPVRAAG"],
            "grantors": [
                {
                    "role": role,
                    "name": name,
                    "permission": "PERMIT",
                    "given_at": datetime.now(UTC).isoformat(),
                    "method": "MONDELING",
                }
                for role, name in grantors
            ],
            "valid_from": (today() - timedelta(days=1)).isoformat(),
            "valid_until": (today() + timedelta(days=365)).isoformat(),
            **changes,
        }
        r = await self.client.post("/api/v1/toestemmingen", json=body, headers={"X-Medewerker": CW})
        assert r.status_code == 201, r.text
        return dict(r.json())

    async def handover(self, referral_id: str, org: str = "jongerenwerk-dh", **changes: Any) -> str:
        body = {
            "referral_id": referral_id,
            "receiver_organisation": org,
            "data_categories": ["PERSONALIA", "VERWIJZING"],
            "summary": "Sam wil graag meedoen aan een sportproject.",
            "joint_meeting": {
                "planned_at": (datetime.now(UTC) + timedelta(days=7)).isoformat(),
                "location": "Buurthuis De Mussen",
            },
            **changes,
        }
        r = await self.client.post("/api/v1/overdrachten", json=body, headers={"X-Medewerker": CW})
        assert r.status_code == 202, r.text
        return str(r.json()["handover_id"])

    async def consent_from(self, referral_id: str, days: int, **changes: Any) -> dict[str, Any]:
        """A consent that starts `days` from today, for 90 days."""
        return await self.consent(
            referral_id,
            valid_from=(today() + timedelta(days=days)).isoformat(),
            valid_until=(today() + timedelta(days=90)).isoformat(),
            **changes,
        )

    async def routed(self, handover_id: str) -> dict[str, Any]:
        """The handover's state once routing judged it (waiting, with its reasons, or sent)."""

        async def judged() -> dict[str, Any] | None:
            state = await self.status(handover_id)
            return state if state["waiting_reasons"] is not None else None

        return dict(await wait_for(judged, timeout_s=15))

    async def updated_at(self, handover_id: str) -> Any:
        """When the handover's row last changed (a judgement the same as before writes nothing)."""
        assert self.hub.store is not None
        async with self.hub.store.connect() as conn:
            query = select(handovers.c.updated_at).where(handovers.c.id == handover_id)
            return (await conn.execute(query)).scalar()

    async def status(self, handover_id: str) -> dict[str, Any]:
        r = await self.client.get(f"/api/v1/overdrachten/{handover_id}", headers={"X-Medewerker": CW})
        assert r.status_code == 200, r.text
        return dict(r.json())

    async def audit(self, action: str) -> list[Any]:
        assert self.hub.store is not None
        async with self.hub.store.connect() as conn:
            return list(await conn.execute(select(audit_log).where(audit_log.c.action == action)))


@asynccontextmanager
async def world(kafka: EmbeddedKafka, db_url: str, unique: str, **handovers: Any) -> AsyncIterator[World]:
    settings = make_settings(
        kafka,
        db_url,
        unique,
        components=["routing"],
        handovers={
            "retry_schedule_s": (0.2, 0.3, 0.4, 0.5, 0.5, 0.5, 0.5, 0.5),
            "allow_plain_http": True,
            "check_interval_s": 0.2,
            "zorgmelding_receivers": ("veilig-thuis-dh",),
            **handovers,
        },
    )
    hub = Hub(settings, registrars=REGISTRARS)
    async with receiver_server() as receiver:
        await hub.start()
        try:
            assert hub.store is not None
            keys = {}
            async with hub.store.transaction() as session:
                await upsert_caseworker(
                    session,
                    Caseworker(caseworker_id=CW, name="Medewerker Een", email="cw1@halt.nl", team="DEN_HAAG"),
                )
                await set_receiver_delivery(
                    session,
                    ReceiverDelivery(
                        "veilig-thuis-dh",
                        ReceiverType.JEUGDHULP,
                        "webhook",
                        receiver.url("veilig-thuis-dh"),
                        SECRET,
                    ),
                )
                for org, rtype in (("jongerenwerk-dh", "jongerenwerk"), ("wijkteam-dh", "wijkteam")):
                    await set_receiver_delivery(
                        session,
                        ReceiverDelivery(
                            org, ReceiverType(rtype.upper()), "webhook", receiver.url(org), SECRET
                        ),
                    )
                    _, keys[org] = await add_partner(session, org, PartnerType(rtype))
                await set_receiver_delivery(
                    session, ReceiverDelivery("jeugdhulp-dh", ReceiverType.JEUGDHULP, "kafka")
                )
                _, keys["jeugdhulp-dh"] = await add_partner(session, "jeugdhulp-dh", PartnerType.JEUGDHULP)
                _, aurah = await add_partner(session, "aurah", PartnerType.ZAAKSYSTEEM)
            app = create_app(settings, hub=hub)
            transport = httpx.ASGITransport(app=app)
            system = {"Authorization": f"Bearer {aurah}"}  # the case system, on the caseworker's behalf
            async with httpx.AsyncClient(
                transport=transport, base_url="http://hub", headers=system
            ) as client:
                yield World(hub, client, receiver, keys, bsns())
        finally:
            await hub.stop()


async def test_no_handover_without_covering_consent_then_once_when_it_arrives(
    kafka: EmbeddedKafka, db_url: str, unique: str
) -> None:
    async with world(kafka, db_url, unique) as w:
        cases: dict[str, tuple[str, str]] = {}
        # Each youth gets a consent that fails to cover the handover in exactly one way.
        for reason, age, changes in [
            ("ANDERE_ONTVANGER", 17, {"recipient_organisations": ["wijkteam-dh"]}),
            ("ANDER_DOEL", 17, {"purpose": "DELEN_NA_MATCH"}),
            ("CATEGORIE_NIET_GEDEKT", 17, {"data_categories": ["PERSONALIA"]}),
            (
                "VERLOPEN",
                17,
                {
                    "valid_from": (today() - timedelta(days=90)).isoformat(),
                    "valid_until": (today() - timedelta(days=1)).isoformat(),
                },
            ),
            ("INGETROKKEN", 17, {}),
            ("ONVOLLEDIG", 13, {}),  # 13: the parents must consent too, and did not
        ]:
            rid, _ = await w.referral(age)
            recorded = await w.consent(rid, **changes)
            if reason == "INGETROKKEN":
                r = await w.client.post(
                    f"/api/v1/toestemmingen/{recorded['consent_id']}/intrekking",
                    json={"reason": "jeugdige wil het niet meer"},
                    headers={"X-Medewerker": CW},
                )
                assert r.status_code == 200 and r.json()["status"] == "INGETROKKEN"
            cases[reason] = (rid, await w.handover(rid))

        async def all_waiting() -> bool:
            return all([(await w.status(h))["waiting_reasons"] for _, h in cases.values()])

        await wait_for(all_waiting)
        for reason, (_, h) in cases.items():
            state = await w.status(h)
            assert state["status"] == "WACHT_OP_TOESTEMMING" and reason in state["waiting_reasons"], (
                reason,
                state,
            )
        mails = await read_topic(kafka.bootstrap, w.hub.topic("notification.mail.v1"), expect=6)
        notices = [Envelope.from_bytes(m.value).payload for m in mails]
        assert sorted(n["template"] for n in notices) == ["handover.waiting"] * 6
        assert all(n["recipient_caseworker_id"] == CW for n in notices)
        assert w.receiver.calls == []

        # Now a covering consent for each: every handover goes out by itself, exactly once.
        for reason, (rid, _) in cases.items():
            grantors = (
                [("JEUGDIGE", "Sam"), ("OUDER_MET_GEZAG", "Ouder 0")] if reason == "ONVOLLEDIG" else None
            )
            await w.consent(rid, **({"grantors": grantors, "custodians": 1} if grantors else {}))
        await wait_for(lambda: len(w.receiver.handovers()) >= 6, timeout_s=30)
        await asyncio.sleep(0.4)
        got = w.receiver.handovers()
        assert sorted(e.payload["handover_id"] for e in got) == sorted(h for _, h in cases.values())
        assert w.receiver.bad_signatures == 0
        for env in got:
            assert set(env.payload["data"]) == {"PERSONALIA", "VERWIJZING"}  # DELICT and GEZIN are not in it
            assert "vernieling" not in json.dumps(env.payload)
        assert all(c["transaction"] for c in w.receiver.calls)

        async def delivered() -> bool:
            return all([(await w.status(h))["delivered_at"] for _, h in cases.values()])

        await wait_for(delivered)
        disclosed = await w.audit("handover.disclosed")
        assert sorted(a.objects["handover_id"] for a in disclosed) == sorted(h for _, h in cases.values())
        for (
            a
        ) in disclosed:  # rule 18: when, what, which youth, who, on whose behalf, which system, which objects
            assert a.at and a.youth_key and a.user == CW and a.on_behalf_of == "Halt Den Haag"
            assert a.system == "ketenhub-receivers" and a.transaction_id
            assert a.objects["receiver"] == "jongerenwerk-dh" and a.objects["consent_id"]


async def test_the_summary_is_the_hulpvraag_and_leaves_only_under_a_consent_covering_it(
    kafka: EmbeddedKafka, db_url: str, unique: str
) -> None:
    """The caseworker's summary travelled in every handover, while the consent was checked only for
    the categories the request listed, and the disclosure's audit never named it (rules 9, 18)."""
    async with world(kafka, db_url, unique) as w:
        rid, _ = await w.referral(17)
        await w.consent(rid, data_categories=["PERSONALIA", "VERWIJZING"])
        hid = await w.handover(rid, summary="Sam wil graag meedoen aan een sportproject.")

        async def waiting() -> bool:
            return bool((await w.status(hid))["waiting_reasons"])

        await wait_for(waiting)
        state = await w.status(hid)
        assert state["status"] == "WACHT_OP_TOESTEMMING"
        assert "CATEGORIE_NIET_GEDEKT" in state["waiting_reasons"]
        assert state["data_categories"] == ["PERSONALIA", "VERWIJZING", "HULPVRAAG"]
        await asyncio.sleep(0.3)
        assert w.receiver.calls == []  # nothing of it left

        await w.consent(rid)  # PERSONALIA, VERWIJZING and HULPVRAAG
        await wait_for(lambda: len(w.receiver.handovers()) >= 1, timeout_s=30)
        [env] = w.receiver.handovers()
        assert env.payload["summary"] == "Sam wil graag meedoen aan een sportproject."
        assert env.payload["data_categories"] == ["HULPVRAAG", "PERSONALIA", "VERWIJZING"]
        [sent] = await w.audit("handover.sent")
        assert sent.objects["categories"] == ["HULPVRAAG", "PERSONALIA", "VERWIJZING"]

        async def disclosed() -> list[Any]:
            return list(await w.audit("handover.disclosed"))

        await wait_for(disclosed)
        [told] = await disclosed()
        assert "HULPVRAAG" in told.objects["categories"]


async def test_a_withdrawal_is_told_to_a_receiver_that_may_have_the_handover_without_a_2xx(
    kafka: EmbeddedKafka, db_url: str, unique: str
) -> None:
    """Rule 10: the receiver stored the handover and then failed (500); the hub never saw a 2xx, so
    the withdrawal notice was skipped, and the receiver kept the data for good."""
    async with world(kafka, db_url, unique) as w:
        rid, _ = await w.referral(17)
        consent = await w.consent(rid)
        w.receiver.fail_after_storing = True
        hid = await w.handover(rid)
        await wait_for(lambda: len(w.receiver.handovers()) >= 1)
        assert (await w.status(hid))["delivered_at"] is None
        r = await w.client.post(
            f"/api/v1/toestemmingen/{consent['consent_id']}/intrekking",
            json={"reason": "jeugdige wil het niet meer"},
            headers={"X-Medewerker": CW},
        )
        assert r.status_code == 200, r.text
        w.receiver.fail_after_storing = False

        def told() -> list[Envelope]:
            return [c["env"] for c in w.receiver.calls if c["env"].type == "HandoverWithdrawn"]

        await wait_for(lambda: len(told()) >= 1, timeout_s=20)
        [notice] = told()
        assert notice.payload["handover_id"] == hid
        assert (await w.status(hid))["status"] == "INGETROKKEN"


async def test_a_caseworker_with_no_part_in_a_youths_case_cannot_read_or_withdraw_it(
    kafka: EmbeddedKafka, db_url: str, unique: str
) -> None:
    """Any caseworker the case system named could list, read and withdraw any youth's consents and
    read its handovers; now the caseworkers who recorded or asked for them, or their delegates."""
    async with world(kafka, db_url, unique) as w:
        assert w.hub.store is not None
        async with w.hub.store.transaction() as session:
            for cw_id in ("cw-other", "cw-stand-in"):
                await upsert_caseworker(
                    session,
                    Caseworker(caseworker_id=cw_id, name=cw_id, email=f"{cw_id}@halt.nl", team="DEN_HAAG"),
                )
            me = Caseworker(
                caseworker_id=CW, name="Medewerker Een", email="cw1@halt.nl", team="DEN_HAAG",
                delegate_id="cw-stand-in",
            )  # fmt: skip
            await upsert_caseworker(session, me)
        rid, key = await w.referral(17)
        consent = await w.consent(rid)
        hid = await w.handover(rid)
        cid = consent["consent_id"]
        calls = (
            ("get", f"/api/v1/toestemmingen?referral_id={rid}", None),
            ("get", f"/api/v1/toestemmingen/{cid}", None),
            ("get", f"/api/v1/overdrachten?referral_id={rid}", None),
            ("get", f"/api/v1/overdrachten/{hid}", None),
            ("post", f"/api/v1/toestemmingen/{cid}/intrekking", {"reason": "niet meer nodig"}),
        )
        for method, url, body in calls:
            r = await w.client.request(method, url, json=body, headers={"X-Medewerker": "cw-other"})
            assert r.status_code == 403, (url, r.status_code, r.text)
        assert (await w.status(hid))["status"] != "INGETROKKEN"
        # each refusal is audited under the youth's key, with who tried and what they named
        refused = [
            (a.action, a.user, a.youth_key, a.objects)
            for action in ("consent.read_refused", "handover.read_refused", "consent.withdraw_refused")
            for a in await w.audit(action)
        ]
        not_on_case = {"reason": "not_on_case"}
        assert sorted(refused, key=repr) == sorted([
            ("consent.read_refused", "cw-other", key, not_on_case | {"referral_id": rid}),
            ("consent.read_refused", "cw-other", key, not_on_case | {"consent_id": cid}),
            ("handover.read_refused", "cw-other", key, not_on_case | {"referral_id": rid}),
            ("handover.read_refused", "cw-other", key, not_on_case | {"handover_id": hid}),
            ("consent.withdraw_refused", "cw-other", key, not_on_case | {"consent_id": cid}),
        ], key=repr)  # fmt: skip
        for method, url, body in calls:  # the delegate stands in: may
            r = await w.client.request(method, url, json=body, headers={"X-Medewerker": "cw-stand-in"})
            assert r.status_code == 200, (url, r.status_code, r.text)
        # a youth nobody works on yet: nothing to keep from anyone
        fresh, _ = await w.referral(16)
        r = await w.client.get(
            f"/api/v1/toestemmingen?referral_id={fresh}", headers={"X-Medewerker": "cw-other"}
        )
        assert r.status_code == 200 and r.json() == []


async def test_recording_a_consent_or_asking_a_handover_does_not_open_another_caseworkers_case(
    kafka: EmbeddedKafka, db_url: str, unique: str
) -> None:
    """Whoever recorded a consent or asked for a handover of a youth works on its case, and neither
    asked whether they did: a caseworker with no part in it recorded a throwaway consent (or asked a
    handover, which went out under the case's consent) and could then read the others' consents and
    withdraw them. Now only who works on the case, or stands in, may; anyone may begin a new case."""
    async with world(kafka, db_url, unique) as w:
        assert w.hub.store is not None
        async with w.hub.store.transaction() as session:
            for cw_id in ("cw-other", "cw-stand-in"):
                await upsert_caseworker(
                    session,
                    Caseworker(caseworker_id=cw_id, name=cw_id, email=f"{cw_id}@halt.nl", team="GOUDA"),
                )
            me = Caseworker(
                caseworker_id=CW, name="Medewerker Een", email="cw1@halt.nl", team="DEN_HAAG",
                delegate_id="cw-stand-in",
            )  # fmt: skip
            await upsert_caseworker(session, me)
        rid, key = await w.referral(17)
        consent = await w.consent(rid)
        cid = consent["consent_id"]
        fhir = await w.client.get(
            f"/api/v1/toestemmingen/{cid}", headers={"X-Medewerker": CW, "Accept": "application/fhir+json"}
        )
        throwaway = {
            "referral_id": rid, "purpose": "DELEN_NA_MATCH", "recipient_organisations": ["wijkteam-dh"],
            "data_categories": ["PERSONALIA"], "valid_from": today().isoformat(),
            "valid_until": (today() + timedelta(days=1)).isoformat(),
            "grantors": [{"role": "JEUGDIGE", "name": "x", "permission": "DENY",
                          "given_at": datetime.now(UTC).isoformat(), "method": "MONDELING"}],
        }  # fmt: skip
        handover = {
            "referral_id": rid,
            "receiver_organisation": "jongerenwerk-dh",
            "data_categories": ["PERSONALIA", "VERWIJZING"],
            "summary": "door een ander gevraagd",
        }
        melding = {
            "referral_id": rid,
            "receiver_organisation": "veilig-thuis-dh",
            "data_categories": ["PERSONALIA"],
            "summary": "Zorgen.",
        }
        asks: tuple[tuple[str, dict[str, Any] | None, bytes | None], ...] = (
            ("/api/v1/toestemmingen", throwaway, None),
            ("/api/v1/toestemmingen", None, fhir.content),  # as FHIR
            ("/api/v1/overdrachten", handover, None),
            ("/api/v1/zorgmeldingen", melding, None),
        )
        for url, body, content in asks:
            fhir_body = {"Content-Type": FHIR} if content else {}
            r = await w.client.post(
                url, json=body, content=content, headers={"X-Medewerker": "cw-other", **fhir_body}
            )
            assert r.status_code == 403, (url, r.status_code, r.text)
            assert r.json()["title"] == "Geen toegang"
        # each 403 says the hub holds a case for this youth: audited under its key, with who tried
        refused = [
            (a.action, a.user, a.youth_key, a.objects)
            for a in await w.audit("consent.refused") + await w.audit("handover.request_refused")
        ]
        not_on_case = {"reason": "not_on_case"}
        expected = [("consent.refused", "cw-other", key, not_on_case)] * 2 + [
            ("handover.request_refused", "cw-other", key, not_on_case | {"referral_id": rid, "purpose": p})
            for p in ("WARME_OVERDRACHT", "ZORGMELDING")
        ]
        assert sorted(refused, key=repr) == sorted(expected, key=repr)
        for method, url, body in (
            ("get", f"/api/v1/toestemmingen?referral_id={rid}", None),
            ("post", f"/api/v1/toestemmingen/{cid}/intrekking", {"reason": "zomaar"}),
        ):
            r = await w.client.request(method, url, json=body, headers={"X-Medewerker": "cw-other"})
            assert r.status_code == 403, (url, r.status_code, r.text)
        mine = await w.client.get(f"/api/v1/toestemmingen?referral_id={rid}", headers={"X-Medewerker": CW})
        assert [c["consent_id"] for c in mine.json()] == [cid] and mine.json()[0]["status"] == "ACTIEF"
        none = await w.client.get(f"/api/v1/overdrachten?referral_id={rid}", headers={"X-Medewerker": CW})
        assert none.json() == [] and w.receiver.calls == []
        # who stands in for the case's caseworker may record and ask
        stand_in = {"X-Medewerker": "cw-stand-in"}
        r = await w.client.post("/api/v1/toestemmingen", json=throwaway, headers=stand_in)
        assert r.status_code == 201, r.text
        r = await w.client.post("/api/v1/overdrachten", json=handover, headers=stand_in)
        assert r.status_code == 202, r.text
        # a youth nobody works on yet: anyone may begin its case
        fresh, _ = await w.referral(16)
        r = await w.client.post(
            "/api/v1/overdrachten",
            json={**handover, "referral_id": fresh},
            headers={"X-Medewerker": "cw-other"},
        )
        assert r.status_code == 202, r.text
        r = await w.client.post(
            "/api/v1/toestemmingen",
            json={**throwaway, "referral_id": fresh},
            headers={"X-Medewerker": "cw-other"},
        )
        assert r.status_code == 201, r.text


async def test_only_a_receiving_organisations_key_answers_a_handover(
    kafka: EmbeddedKafka, db_url: str, unique: str
) -> None:
    """The answer found the handover by the partner's name alone: a police or case-system key named
    like a receiver (the registries are apart) answered that receiver's handovers."""
    async with world(kafka, db_url, unique) as w:
        assert w.hub.store is not None
        async with w.hub.store.transaction() as session:
            _, police_key = await add_partner(session, "veilig-thuis-dh", PartnerType.POLITIE)
        rid, _ = await w.referral(15)
        zorg = {
            "referral_id": rid,
            "receiver_organisation": "veilig-thuis-dh",
            "data_categories": ["PERSONALIA"],
            "summary": "Zorgen over de thuissituatie.",
        }
        made = await w.client.post("/api/v1/zorgmeldingen", json=zorg, headers={"X-Medewerker": CW})
        assert made.status_code == 202, made.text
        hid = made.json()["handover_id"]
        r = await w.client.post(
            f"/api/v1/overdrachten/{hid}/status",
            json={"status": "ONTVANGEN"},
            headers={"Authorization": f"Bearer {police_key}"},
        )
        assert r.status_code == 403, r.text
        assert (await w.status(hid))["status"] != "ONTVANGEN"


async def test_a_caseworkers_acts_are_audited_as_coming_through_the_case_system(
    kafka: EmbeddedKafka, db_url: str, unique: str
) -> None:
    """Rule 18 asks from which system: the caseworker's acts named the hub's API only, never which
    case system (Aurah, the portal) named the caseworker."""
    async with world(kafka, db_url, unique) as w:
        rid, _ = await w.referral(17)
        await w.consent(rid)
        hid = await w.handover(rid)
        await w.status(hid)
        [recorded] = await w.audit("consent.recorded")
        assert recorded.system.endswith(" via aurah") and recorded.user == CW
        reads = await w.audit("handover.read")
        assert reads and all(r.system.endswith(" via aurah") for r in reads)
        await wait_for(lambda: len(w.receiver.handovers()) == 1)

        async def disclosed() -> list[Any]:
            return list(await w.audit("handover.disclosed"))

        [done] = await wait_for(disclosed)
        assert done.system == "ketenhub-receivers"  # a consumer's own act: no case system in it


# A ladder a receiver's outage does not run out while a test acts on a busy machine (the default one
# dead-letters about 4 s after the first call); the calls after recovery wait at most 8 s
PATIENT = (0.2, 0.3, 0.5, 1.0, 2.0, 4.0, 8.0, 8.0)


async def test_receiver_down_then_up_every_handover_once_in_order_per_youth(
    kafka: EmbeddedKafka, db_url: str, unique: str
) -> None:
    async with world(kafka, db_url, unique, retry_schedule_s=PATIENT) as w:
        w.receiver.down = True
        youths = [await w.referral(17) for _ in range(2)]
        for rid, _ in youths:
            await w.consent(rid)
        asked: dict[str, list[str]] = {rid: [] for rid, _ in youths}
        for i in range(3):
            for rid, _ in youths:
                asked[rid].append(await w.handover(rid, summary=f"overdracht nummer {i}"))
        await wait_for(lambda: w.receiver.refused >= 4, timeout_s=20)
        assert w.receiver.handovers() == []
        # the console's connector line (DESIGN: last success, last error) said nothing of webhooks
        down = w.hub.components["receivers"].status()
        assert down["last_success"] is None and "503" in down["last_error"], down
        w.receiver.down = False
        await wait_for(lambda: len(w.receiver.handovers()) >= 6, timeout_s=40)
        await asyncio.sleep(0.4)
        up = w.hub.components["receivers"].status()
        assert up["last_success"] is not None and up["last_success"] > down["last_error_at"], up
        got = [e.payload["handover_id"] for e in w.receiver.handovers()]
        assert sorted(got) == sorted(h for hs in asked.values() for h in hs)  # each once
        for hs in asked.values():
            assert [h for h in got if h in hs] == hs  # in order per youth


async def test_a_type_topic_read_by_two_organisations_gets_no_handover(
    kafka: EmbeddedKafka, db_url: str, unique: str
) -> None:
    """A receiver's topic is its type's: two Kafka receivers of one type (settings made before one
    reader per topic was enforced) would each read the other's handovers. It goes to the DLQ."""
    async with world(kafka, db_url, unique) as w:
        assert w.hub.store is not None
        async with w.hub.store.transaction() as session:  # bypasses set_receiver_delivery's check
            await session.execute(
                insert(receiver_deliveries).values(
                    organisation="jeugdhulp-rijswijk", receiver_type="JEUGDHULP", mode="kafka", active=True
                )
            )
        rid, _ = await w.referral(17)
        await w.consent(rid, recipient_organisations=["jeugdhulp-dh"])
        await w.handover(rid, org="jeugdhulp-dh", data_categories=["PERSONALIA"])
        dead = await read_topic(
            kafka.bootstrap, w.hub.topic("handover.dispatch.dlq.v1"), expect=1, settle_s=0.5
        )
        assert len(dead) == 1
        reason = dict(dead[0].headers)[DLQ_EXC_MESSAGE].decode()
        assert "read by 2 organisations" in reason
        outbound = w.hub.topic("handover.outbound.jeugdhulp.v1")
        assert await read_topic(kafka.bootstrap, outbound, expect=1, timeout_s=1) == []


async def test_kafka_receiver_answers_withdrawal_and_unanswered_notice(
    kafka: EmbeddedKafka, db_url: str, unique: str
) -> None:
    async with world(kafka, db_url, unique, answer_timeout_s=0.5) as w:
        rid, key = await w.referral(17)
        consent = await w.consent(rid, recipient_organisations=["jeugdhulp-dh", "jongerenwerk-dh"])
        to_kafka = await w.handover(rid, org="jeugdhulp-dh", data_categories=["PERSONALIA"])
        to_hook = await w.handover(rid)
        outbound = w.hub.topic("handover.outbound.jeugdhulp.v1")
        records = await read_topic(kafka.bootstrap, outbound, expect=1)
        env = Envelope.from_bytes(records[0].value)
        assert env.payload["handover_id"] == to_kafka and set(env.payload["data"]) == {"PERSONALIA"}
        assert records[0].key.decode() == youth_ref(TEST_SECRET, "jeugdhulp-dh", key)
        await wait_for(lambda: len(w.receiver.handovers()) == 1)

        # The webhook receiver answers over HTTP; another partner cannot answer for it.
        answer = {
            "status": "GEACCEPTEERD",
            "meeting_planned_at": (datetime.now(UTC) + timedelta(days=3)).isoformat(),
        }
        r = await w.client.post(
            f"/api/v1/overdrachten/{to_hook}/status",
            json=answer,
            headers={"Authorization": f"Bearer {w.partner_keys['wijkteam-dh']}"},
        )
        assert r.status_code == 404
        # a meeting at the calendar's ends: stored as it was, PostgreSQL's driver raised "date value
        # out of range" (a 500); a time without an offset is no moment a receiver can plan
        for odd in ("0001-01-01T00:00:00+14:00", "9999-12-31T23:59:59-14:00", "2026-01-01T10:00:00"):
            r = await w.client.post(
                f"/api/v1/overdrachten/{to_hook}/status",
                json=answer | {"meeting_planned_at": odd},
                headers={"Authorization": f"Bearer {w.partner_keys['jongerenwerk-dh']}"},
            )
            assert r.status_code == 400, (odd, r.status_code, r.text)
            assert [p["name"] for p in r.json()["invalidParams"]] == ["meeting_planned_at"], r.text
            meeting = {"planned_at": odd, "location": "Buurthuis De Mussen"}
            request = {
                "referral_id": rid,
                "receiver_organisation": "jongerenwerk-dh",
                "joint_meeting": meeting,
            }
            request |= {"data_categories": ["PERSONALIA"], "summary": "Sportproject."}
            r = await w.client.post("/api/v1/overdrachten", json=request, headers={"X-Medewerker": CW})
            assert r.status_code == 400, (odd, r.status_code, r.text)
            assert [p["name"] for p in r.json()["invalidParams"]] == ["joint_meeting.planned_at"], r.text
        r = await w.client.post(
            f"/api/v1/overdrachten/{to_hook}/status",
            json=answer,
            headers={"Authorization": f"Bearer {w.partner_keys['jongerenwerk-dh']}"},
        )
        assert (
            r.status_code == 200 and r.json()["status"] == "GEACCEPTEERD" and r.json()["meeting_planned_at"]
        )

        # The Kafka receiver never answers: its caseworker is told, once per handover. Wait for its
        # notice (the webhook one may come first), then keep reading a while to catch a second one.
        mail_topic = w.hub.topic("notification.mail.v1")

        async def told() -> int:
            mails = await read_topic(kafka.bootstrap, mail_topic, expect=1)
            payloads = [Envelope.from_bytes(m.value).payload for m in mails]
            return len(mails) if any(to_kafka in m["body_text"] for m in payloads) else 0

        seen = await wait_for(told)
        mails = await read_topic(kafka.bootstrap, mail_topic, expect=seen, settle_s=0.8)
        unanswered = [Envelope.from_bytes(m.value).payload for m in mails]
        assert {m["template"] for m in unanswered} == {"handover.unanswered"}
        assert sum(to_kafka in m["body_text"] for m in unanswered) == 1
        assert len(unanswered) <= 2  # the webhook one too, if its answer came after the deadline

        # Rule 10: withdrawal tells both receivers; a new handover waits.
        r = await w.client.post(
            f"/api/v1/toestemmingen/{consent['consent_id']}/intrekking",
            json={"reason": "ouders trekken in"},
            headers={"X-Medewerker": CW},
        )
        assert r.status_code == 200 and sorted(r.json()["handovers_withdrawn"]) == sorted([to_kafka, to_hook])
        records = await read_topic(kafka.bootstrap, outbound, expect=2)
        assert Envelope.from_bytes(records[-1].value).type == "HandoverWithdrawn"
        await wait_for(lambda: any(c["env"].type == "HandoverWithdrawn" for c in w.receiver.calls))
        assert (await w.status(to_hook))["status"] == "INGETROKKEN"
        later = await w.handover(rid)
        await wait_for(lambda: _waiting(w, later))
        await asyncio.sleep(0.3)
        assert len(w.receiver.handovers()) == 1
        assert len(await w.audit("consent.withdrawn")) == 1

        # the webhook's row is written after its call returned, in a transaction of its own
        async def both_told() -> bool:
            return len(await w.audit("handover.withdrawal_told")) >= 2

        await wait_for(both_told)
        await asyncio.sleep(0.3)
        assert len(await w.audit("handover.withdrawal_told")) == 2  # and each receiver told once


async def test_each_receiver_gets_a_youth_ref_of_its_own_and_never_the_youth_key(
    kafka: EmbeddedKafka, db_url: str, unique: str
) -> None:
    """Every handover and withdrawal notice carried the hub's youth key, in the body and as the Kafka
    record key: the same at every receiver. One whose consent left out PERSONALIA could join what it
    got with what another got beside the BSN. Each receiver now gets a reference of its own: the same
    for the youth at that receiver, another at every other one; the youth key stays in the hub."""
    async with world(kafka, db_url, unique) as w:
        rid, key = await w.referral(17)
        consent = await w.consent(
            rid, recipient_organisations=["jongerenwerk-dh", "wijkteam-dh", "jeugdhulp-dh"]
        )
        first = await w.handover(rid)  # PERSONALIA beside the youth's reference
        second = await w.handover(rid, data_categories=["VERWIJZING"])  # the same receiver again
        only_help = await w.handover(rid, org="wijkteam-dh", data_categories=["HULPVRAAG"])  # no BSN
        to_kafka = await w.handover(rid, org="jeugdhulp-dh", data_categories=["PERSONALIA"])
        await wait_for(lambda: len(w.receiver.handovers()) == 3, timeout_s=30)

        async def on_its_topic() -> bool:  # withdrawn before it left, it would never leave
            return bool((await w.status(to_kafka))["delivered_at"])

        await wait_for(on_its_topic, timeout_s=30)
        r = await w.client.post(
            f"/api/v1/toestemmingen/{consent['consent_id']}/intrekking",
            json={"reason": "jeugdige wil het niet meer"},
            headers={"X-Medewerker": CW},
        )
        assert r.status_code == 200, r.text
        await wait_for(lambda: len(w.receiver.calls) == 6, timeout_s=30)  # and a notice for each
        outbound = w.hub.topic("handover.outbound.jeugdhulp.v1")
        records = await read_topic(kafka.bootstrap, outbound, expect=2, timeout_s=30)
        assert [Envelope.from_bytes(r.value).type for r in records] == ["Handover", "HandoverWithdrawn"]
        assert Envelope.from_bytes(records[0].value).payload["handover_id"] == to_kafka
        got = [(c["org"], c["env"].type, c["env"].payload["handover_id"]) for c in w.receiver.calls]
        webhook = [("jongerenwerk-dh", first), ("jongerenwerk-dh", second), ("wijkteam-dh", only_help)]
        for kind in ("Handover", "HandoverWithdrawn"):
            assert sorted((org, hid) for org, t, hid in got if t == kind) == sorted(webhook)

        # nowhere the youth key: not in a body, not as a record key; nor the referral's or the
        # consent's id, which every receiver of the referral (or under the consent) would share
        sent = [*w.receiver.attempts, *(("jeugdhulp-dh", bytes(rec.value)) for rec in records)]
        for _, body in sent:
            assert key.encode() not in body and b"youth_key" not in body, body
            assert rid.encode() not in body and consent["consent_id"].encode() not in body, body
        assert all(rec.key is not None and key.encode() not in rec.key for rec in records)

        # one reference per receiver and youth: in each handover and notice it got, and as record key
        refs: dict[str, set[str]] = {}
        for org, body in sent:
            refs.setdefault(org, set()).add(Envelope.from_bytes(body).payload["youth_ref"])
        assert {org: len(found) for org, found in refs.items()} == dict.fromkeys(
            ("jongerenwerk-dh", "wijkteam-dh", "jeugdhulp-dh"), 1
        )
        ref = {org: found.pop() for org, found in refs.items()}
        assert len(set(ref.values())) == 3  # another at every receiver
        assert ref == {org: youth_ref(TEST_SECRET, org, key) for org in ref}
        assert {bytes(rec.key).decode() for rec in records} == {ref["jeugdhulp-dh"]}

        # the hub's own records keep the youth key: each disclosure is audited under it
        async def all_told() -> bool:
            return len(await w.audit("handover.withdrawal_told")) == 4

        await wait_for(all_told)
        disclosed = await w.audit("handover.disclosed")
        assert len(disclosed) == 4 and {a.youth_key for a in disclosed} == {key}
        # what went on a receivers' topic names it: who may read that topic later depends on it
        told = await w.audit("handover.withdrawal_told")
        on_topic = sorted(
            (a.action, a.objects.get("topic")) for a in [*disclosed, *told] if a.objects["channel"] == "kafka"
        )
        assert on_topic == [
            ("handover.disclosed", "handover.outbound.jeugdhulp.v1"),
            ("handover.withdrawal_told", "handover.outbound.jeugdhulp.v1"),
        ]
        assert not [
            a for a in [*disclosed, *told] if a.objects["channel"] == "webhook" and "topic" in a.objects
        ]


async def _waiting(w: World, handover_id: str) -> bool:
    return bool((await w.status(handover_id))["waiting_reasons"])


async def _queued(w: World, topic_part: str, *needles: str) -> int:
    """Outbox rows on a topic holding every needle: what the hub sent or will send."""
    assert w.hub.store is not None
    async with w.hub.store.connect() as conn:
        rows = (await conn.execute(select(outbox.c.topic, outbox.c.value))).all()
    return sum(1 for t, v in rows if topic_part in t and all(n.encode() in bytes(v) for n in needles))


async def test_decisions_taken_at_the_same_moment_are_taken_once(
    kafka: EmbeddedKafka, db_url: str, unique: str
) -> None:
    """Each decision read a status, then wrote in another statement: on PostgreSQL two requests at
    once both passed the check. Two consents dispatched a waiting handover twice (a disclosure
    made twice), two refusals mailed the caseworker twice, two withdrawals were both audited."""
    async with world(kafka, db_url, unique) as w:
        rid, _ = await w.referral(17)
        hid = await w.handover(rid)
        await wait_for(lambda: _waiting(w, hid))

        both = await asyncio.gather(w.consent(rid), w.consent(rid))
        assert sorted(len(c["handovers_sent"]) for c in both) == [0, 1]
        assert [a.objects["handover_id"] for a in await w.audit("handover.sent")] == [hid]
        assert await _queued(w, "handover.dispatch", hid) == 1

        receiver = {"Authorization": f"Bearer {w.partner_keys['jongerenwerk-dh']}"}
        refusal = {"status": "GEWEIGERD", "reason": "geen plek"}
        answers = await asyncio.gather(
            *[
                w.client.post(f"/api/v1/overdrachten/{hid}/status", json=refusal, headers=receiver)
                for _ in "ab"
            ]
        )
        # the second finds the handover refused already: the same answer again, taken as it stands
        assert [a.status_code for a in answers] == [200, 200], [a.text for a in answers]
        assert await _queued(w, "notification.mail", "handover.declined", hid) == 1
        assert [a.objects["status"] for a in await w.audit("handover.answered")] == ["GEWEIGERD"]

        consent_id = both[0]["consent_id"]
        withdraw = {"reason": "jeugdige wil het niet meer"}
        withdrawals = await asyncio.gather(
            *[
                w.client.post(
                    f"/api/v1/toestemmingen/{consent_id}/intrekking",
                    json=withdraw,
                    headers={"X-Medewerker": CW},
                )
                for _ in "ab"
            ]
        )
        assert sorted(r.status_code for r in withdrawals) == [200, 409], [r.text for r in withdrawals]
        assert [a.objects["consent_id"] for a in await w.audit("consent.withdrawn")] == [consent_id]


async def _waiting(w: World, handover_id: str) -> bool:
    return bool((await w.status(handover_id))["waiting_reasons"])


async def test_nothing_goes_out_under_a_consent_while_it_is_being_withdrawn(
    kafka: EmbeddedKafka, db_url: str, unique: str
) -> None:
    """Routing read the youth's consents without a lock: on PostgreSQL a handover went out under a
    consent whose withdrawal was being committed at that moment, and the withdrawal, not seeing it
    sent, told no receiver (rule 10). Routing now waits for the withdrawal, which withdraws the
    pending handover."""
    async with world(kafka, db_url, unique) as w:
        assert w.hub.store is not None
        rid, _ = await w.referral(17)
        consent = await w.consent(rid)  # covers a warm handover to jongerenwerk-dh
        r, act = routing_of(w.hub), Act(user=CW, transaction_id=str(uuid.uuid4()))
        handover = Handover(
            referral_id=rid, from_caseworker=CW, receiver_organisation="jongerenwerk-dh",
            receiver_type=ReceiverType.JONGERENWERK, data_categories=["PERSONALIA"], summary="Sportproject.",
        )  # fmt: skip
        async with w.hub.store.transaction() as session:  # stored waiting, not yet routed
            hid = (await create_handover(session, r, handover, act, announce=False)).id

        async def route_it() -> str:
            assert w.hub.store is not None
            async with w.hub.store.transaction() as session:
                return await route(session, r, hid, act)

        async with w.hub.store.transaction() as withdrawing:  # `withdraw_consent`, step by step
            stored = await get_consent(withdrawing, consent["consent_id"], lock=True)
            assert stored is not None
            stored = await mark_withdrawn(withdrawing, stored, by=CW, reason="jeugdige wil niet meer")
            routing = asyncio.create_task(route_it())
            done, _ = await asyncio.wait([routing], timeout=0.3)
            assert not done, f"routing decided ({routing.result()}) while the withdrawal was uncommitted"
            await apply_withdrawal(withdrawing, r, stored, act)
        assert await routing == "INGETROKKEN"  # the withdrawal withdrew the pending handover (rule 10)
        assert (await w.status(hid))["status"] == "INGETROKKEN"
        assert await w.audit("handover.sent") == []


@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)  # SQLite has no row locks
async def test_another_receivers_answer_neither_waits_for_nor_holds_a_handover(
    kafka: EmbeddedKafka, db_url: str, unique: str
) -> None:
    """An answer locked the handover before it checked the receiver: any receiver could hold any
    handover's row lock, and waited behind the rightful receiver's answer before its 404."""
    async with world(kafka, db_url, unique) as w:
        assert w.hub.store is not None
        rid, _ = await w.referral(17)
        r, act = routing_of(w.hub), Act(user=CW, transaction_id=str(uuid.uuid4()))
        handover = Handover(
            referral_id=rid, from_caseworker=CW, receiver_organisation="jongerenwerk-dh",
            receiver_type=ReceiverType.JONGERENWERK, data_categories=["PERSONALIA"], summary="Sportproject.",
        )  # fmt: skip
        async with w.hub.store.transaction() as session:
            hid = (await create_handover(session, r, handover, act, announce=False)).id

        async def answer_as(receiver: str) -> int:
            assert w.hub.store is not None
            try:
                async with w.hub.store.transaction() as session:
                    await record_answer(session, r, hid, receiver, HandoverStatus.ONTVANGEN, act)
            except HandoverProblem as exc:
                return exc.status
            return 200

        async with w.hub.store.transaction() as rightful:  # the receiver's own answer, in progress
            assert await get_handover(rightful, hid, lock=True) is not None
            other = asyncio.create_task(answer_as("zorgaanbieder-x"))
            done, _ = await asyncio.wait([other], timeout=20)  # it would wait for ever
            assert done, "another receiver's answer waited for the rightful receiver's lock"
            assert await other == 404


async def _mails(kafka: EmbeddedKafka, w: World, template: str, handover_id: str) -> list[dict[str, Any]]:
    """The caseworker mails of `template` about one handover published so far."""
    records = await read_topic(kafka.bootstrap, w.hub.topic("notification.mail.v1"), expect=1, timeout_s=10)
    payloads = [Envelope.from_bytes(m.value).payload for m in records]
    return [p for p in payloads if p["template"] == template and handover_id in p["body_text"]]


async def test_a_handover_whose_consent_lapsed_before_delivery_is_not_delivered(
    kafka: EmbeddedKafka, db_url: str, unique: str
) -> None:
    """Rule 9 at the moment a handover leaves: the receiver was down past the consent's last day, and
    the retry ladder delivered it afterwards, under a consent that no longer covered it. It now
    stays with the hub, ends VERLOPEN, is audited, and its caseworker is told."""
    async with world(kafka, db_url, unique) as w:
        w.receiver.down = True
        rid, key = await w.referral(17)
        consent = await w.consent(rid)  # valid for a year from today
        hid = await w.handover(rid)
        await wait_for(lambda: w.receiver.refused >= 1)
        assert (await w.status(hid))["status"] == "VERZONDEN"

        # Past the consent's last day, the receiver still down: an attempt checked before the clock
        # moved may still post (a check and its send are one step; a consent lapsing while a post is on
        # its way lets it go), so the receiver comes back only once the hub decided. Delivered under the
        # lapsed consent, the handover would be posted again and again (and refused), never VERLOPEN.
        w.hub.clock = lambda: datetime.now(UTC) + timedelta(days=400)

        async def decided() -> bool:
            return (await w.status(hid))["status"] != "VERZONDEN"

        await wait_for(decided, timeout_s=30)
        w.receiver.down = False

        async def off_the_ladder() -> bool:  # nothing parked for a later rung: nothing can go out later
            assert w.hub.store is not None
            async with w.hub.store.connect() as conn:
                rows = await conn.execute(select(parked.c.seq).where(parked.c.ladder == "receivers-webhook"))
                return rows.first() is None

        await wait_for(off_the_ladder, timeout_s=30)
        assert w.receiver.handovers() == []
        state = await w.status(hid)
        assert state["status"] == "VERLOPEN" and state["status_reason"] == "TOESTEMMING_VERLOPEN"
        assert state["delivered_at"] is None
        assert await w.audit("handover.disclosed") == []
        (lapsed,) = await w.audit("handover.lapsed")
        assert lapsed.youth_key == key and lapsed.system == "ketenhub-receivers" and lapsed.transaction_id
        assert lapsed.objects["handover_id"] == hid and lapsed.objects["gaps"] == ["VERLOPEN"]
        assert lapsed.objects["consent_id"] == consent["consent_id"]

        async def told() -> list[dict[str, Any]]:
            return await _mails(kafka, w, "handover.lapsed", hid)

        (mail,) = await wait_for(told)
        assert mail["recipient_caseworker_id"] == CW and "VERLOPEN" in mail["body_text"]
        assert "Sam" not in mail["body_text"] and "Jansen" not in mail["body_text"]


async def test_a_replayed_handover_under_a_lapsed_consent_does_not_reach_a_kafka_receiver(
    kafka: EmbeddedKafka, db_url: str, unique: str
) -> None:
    """A dispatch record that comes in after the consent's last day (a replayed dead letter, a
    consumer that lagged) went to the receiver's topic all the same."""
    async with world(kafka, db_url, unique) as w:
        assert w.hub.store is not None
        rid, key = await w.referral(17)
        await w.consent(rid, recipient_organisations=["jeugdhulp-dh"])
        held = w.hub.topic("test.held.v1")  # dispatched, but held back from the receivers
        r = replace(routing_of(w.hub), dispatch_topic=held)
        act = Act(user=CW, transaction_id=str(uuid.uuid4()))
        handover = Handover(
            referral_id=rid, from_caseworker=CW, receiver_organisation="jeugdhulp-dh",
            receiver_type=ReceiverType.JEUGDHULP, data_categories=["PERSONALIA"], summary="Sportproject.",
        )  # fmt: skip
        async with w.hub.store.transaction() as session:
            hid = (await create_handover(session, r, handover, act, announce=False)).id
            assert await route(session, r, hid, act) == "VERZONDEN"
        async with w.hub.store.connect() as conn:
            (row,) = (await conn.execute(select(outbox).where(outbox.c.topic == held))).all()

        w.hub.clock = lambda: datetime.now(UTC) + timedelta(days=400)
        headers = [(k, str(v).encode()) for k, v in row.headers.items()]
        await produce(
            kafka.bootstrap, w.hub.topic("handover.dispatch.v1"), [(key.encode(), bytes(row.value), headers)]
        )

        async def decided() -> bool:
            state = await w.status(hid)
            return bool(state["delivered_at"]) or state["status"] != "VERZONDEN"

        await wait_for(decided)
        outbound = w.hub.topic("handover.outbound.jeugdhulp.v1")
        assert await read_topic(kafka.bootstrap, outbound, expect=1, timeout_s=1) == []
        assert (await w.status(hid))["status"] == "VERLOPEN"
        assert await w.audit("handover.disclosed") == []
        assert [a.objects["handover_id"] for a in await w.audit("handover.lapsed")] == [hid]
        assert await _queued(w, "notification.mail", "handover.lapsed", hid) == 1


async def test_a_late_or_repeated_answer_never_moves_a_handover_back(
    kafka: EmbeddedKafka, db_url: str, unique: str
) -> None:
    """A late ONTVANGEN turned an accepted handover back into a received one: audited again, and
    its caseworker was told it went unanswered. Answers go forward only; a repeat is a no-op."""
    # the answer timeout as set (600 s): the check past it is made below, with a clock moved on; a
    # short one here raced the answers themselves on a busy machine
    async with world(kafka, db_url, unique) as w:
        rid, _ = await w.referral(17)
        await w.consent(rid)
        hid = await w.handover(rid)

        async def sent() -> bool:
            return bool((await w.status(hid))["sent_at"])

        await wait_for(sent)
        # rule 18: the disclosure is the caseworker's who asked for it, not the API's that announced it
        [disclosed] = await w.audit("handover.sent")
        assert disclosed.user == CW
        receiver = {"Authorization": f"Bearer {w.partner_keys['jongerenwerk-dh']}"}

        async def answer(status: str, **extra: Any) -> httpx.Response:
            body = {"status": status, **extra}
            return await w.client.post(f"/api/v1/overdrachten/{hid}/status", json=body, headers=receiver)

        assert (await answer("ONTVANGEN")).json()["status"] == "ONTVANGEN"
        accepted = await answer("GEACCEPTEERD")
        assert accepted.status_code == 200 and accepted.json()["status"] == "GEACCEPTEERD"
        # the receiver's own references, as in the handover it got, not the hub's ids
        seen = accepted.json()
        assert "referral_id" not in seen and "consent_id" not in seen, seen
        assert seen["referral_ref"] == receiver_ref(TEST_SECRET, "jongerenwerk-dh", "referral", rid)
        for repeat in ("ONTVANGEN", "GEACCEPTEERD", "ONTVANGEN"):  # late, repeated: as it stands
            r = await answer(repeat)
            assert r.status_code == 200, r.text
            assert r.json()["status"] == "GEACCEPTEERD"
            assert r.json()["answered_at"] == accepted.json()["answered_at"]
        refused = await answer("GEWEIGERD", reason="geen plek")  # another final answer: refused
        assert refused.status_code == 409 and "GEACCEPTEERD" in refused.text
        assert [a.objects["status"] for a in await w.audit("handover.answered")] == [
            "ONTVANGEN",
            "GEACCEPTEERD",
        ]

        # a meeting planned after the acceptance is kept, once; in Dutch winter time, as a receiver
        # would send it (SQLite dropped the offset: the meeting moved an hour, and each repeat of the
        # answer was taken for a new meeting)
        planned = (datetime.now(UTC) + timedelta(days=3)).replace(microsecond=0)
        meeting = planned.astimezone(timezone(timedelta(hours=1))).isoformat()
        for _ in "ab":
            r = await answer("GEACCEPTEERD", meeting_planned_at=meeting)
            assert r.status_code == 200 and r.json()["meeting_planned_at"], r.text
            assert datetime.fromisoformat(r.json()["meeting_planned_at"]) == planned, r.text
        shown = await w.status(hid)
        assert datetime.fromisoformat(shown["meeting_planned_at"]) == planned
        moments = [shown[k] for k in ("created_at", "sent_at", "delivered_at", "answered_at") if shown[k]]
        assert len(moments) >= 3  # delivered_at once the delivery is recorded
        assert all(datetime.fromisoformat(m).utcoffset() == timedelta(0) for m in moments), shown
        assert len(await w.audit("handover.meeting_planned")) == 1
        assert len(await w.audit("handover.answered")) == 2

        # past the answer timeout: routing's check finds the handover answered in time
        w.hub.clock = lambda: datetime.now(UTC) + timedelta(seconds=10)
        assert w.hub.store is not None
        async with w.hub.store.transaction() as session:
            told = await notify_unanswered(
                session, routing_of(w.hub), timedelta(seconds=2), Act("test", str(uuid.uuid4()))
            )
        assert told == 0
        assert await _queued(w, "notification.mail", "handover.unanswered", hid) == 0
        assert (await w.status(hid))["status"] == "GEACCEPTEERD"


async def test_kafka_answers_go_forward_only_and_a_repeat_is_no_dead_letter(
    kafka: EmbeddedKafka, db_url: str, unique: str
) -> None:
    """The Kafka answer path shares the HTTP one: a late or repeated answer is taken as it stands (no
    dead letter, no second audit entry); a conflicting one is a dead letter that says why."""
    async with world(kafka, db_url, unique) as w:
        rid, key = await w.referral(17)
        await w.consent(rid, recipient_organisations=["jeugdhulp-dh"])
        hid = await w.handover(rid, org="jeugdhulp-dh", data_categories=["PERSONALIA"])

        async def delivered() -> bool:
            return bool((await w.status(hid))["delivered_at"])

        await wait_for(delivered)
        answers = [
            Envelope.new(
                "HandoverAnswer",
                {
                    "handover_id": hid,
                    "status": status,
                    **({"reason": "geen plek"} if status == "GEWEIGERD" else {}),
                },
                transaction_id=str(uuid.uuid4()),
                source="jeugdhulp-dh",
            )
            for status in ("GEACCEPTEERD", "ONTVANGEN", "GEACCEPTEERD", "GEWEIGERD")
        ]
        ref = youth_ref(TEST_SECRET, "jeugdhulp-dh", key)  # a receiver keys its answers by its own ref
        await produce(
            kafka.bootstrap,
            w.hub.topic("handover.answers.jeugdhulp.v1"),
            [
                (ref.encode(), a.to_bytes(), [(k, v.encode()) for k, v in a.header_map().items()])
                for a in answers
            ],
        )
        dlq = w.hub.topic("handover.answers.jeugdhulp.dlq.v1")
        dead = await read_topic(kafka.bootstrap, dlq, expect=1, settle_s=1.0)
        assert [headers_of(d)["message-id"] for d in dead] == [answers[-1].message_id]
        assert "GEACCEPTEERD" in headers_of(dead[0])[DLQ_EXC_MESSAGE]
        assert (await w.status(hid))["status"] == "GEACCEPTEERD"
        assert [a.objects["status"] for a in await w.audit("handover.answered")] == ["GEACCEPTEERD"]

        # an operator reads and discards the letter: audited under the youth, not under the receiver's
        # ref, which has a youth key's shape (the subject-access export finds entries by youth key)
        assert w.hub.store is not None
        letters = DeadLetters(w.hub.store, w.hub.kafka_options, [dlq], secret=TEST_SECRET)
        letter = await letters.get(f"{dlq}:{dead[0].partition}:{dead[0].offset}")
        assert letter is not None and letter.key == ref
        await letters.record_view(letter, "olaf", unmasked=False)
        assert await letters.discard(letter, "olaf", "a receiver's mistake, answered again")
        done = [*await w.audit("dlq.viewed"), *await w.audit("dlq.discarded")]
        assert [a.youth_key for a in done] == [key, key]


async def test_reading_handovers_is_audited(kafka: EmbeddedKafka, db_url: str, unique: str) -> None:
    # Rule 18: a handover's status shows where a youth was referred (addiction care, say): a read.
    async with world(kafka, db_url, unique) as w:
        rid, key = await w.referral(17)
        hid = await w.handover(rid)
        assert (await w.status(hid))["handover_id"] == hid
        listed = await w.client.get(f"/api/v1/overdrachten?referral_id={rid}", headers={"X-Medewerker": CW})
        assert [h["handover_id"] for h in listed.json()] == [hid]
        reads = await w.audit("handover.read")
        assert len(reads) == 2 and all(a.youth_key == key and a.user == CW for a in reads)
        assert sorted(json.dumps(a.objects, sort_keys=True) for a in reads) == sorted(
            [
                json.dumps({"handover_id": hid, "referral_id": rid}, sort_keys=True),
                json.dumps({"handover_ids": [hid], "referral_id": rid}, sort_keys=True),
            ]
        )
        none = await w.client.get("/api/v1/overdrachten?referral_id=nope", headers={"X-Medewerker": CW})
        assert none.json() == [] and len(await w.audit("handover.read")) == 2  # nothing shown, nothing read


async def test_a_handover_waiting_for_its_consent_to_start_goes_out_on_that_day(
    kafka: EmbeddedKafka, db_url: str, unique: str
) -> None:
    # Only recording a consent routed waiting handovers again: one waiting because its consent starts
    # tomorrow waited for ever.
    async with world(kafka, db_url, unique) as w:
        rid, _ = await w.referral(17)
        await w.consent_from(rid, 1)
        hid = await w.handover(rid)
        waiting = await w.routed(hid)
        assert waiting["status"] == "WACHT_OP_TOESTEMMING"
        assert waiting["waiting_reasons"] == ["NOG_NIET_GELDIG"]
        assert w.hub.store is not None

        before = await w.updated_at(hid)
        for _ in "ab":
            async with w.hub.store.transaction() as session:  # routing's periodic check: not its day yet
                act = Act("test", str(uuid.uuid4()))
                assert await recheck_started(session, routing_of(w.hub), act) == []
        assert (await w.status(hid))["status"] == "WACHT_OP_TOESTEMMING"
        assert not w.receiver.calls
        # judged the same again: nothing written (the retention purge counts an idle case by it)
        assert await w.updated_at(hid) == before

        w.hub.clock = lambda: datetime.now(UTC) + timedelta(days=1)  # the consent's first day

        async def sent() -> bool:
            return (await w.status(hid))["status"] != "WACHT_OP_TOESTEMMING"

        await wait_for(sent, timeout_s=15)
        assert (await w.status(hid))["status"] in ("VERZONDEN", "ONTVANGEN")
        await wait_for(lambda: any(c["org"] == "jongerenwerk-dh" for c in w.receiver.calls), timeout_s=15)
        # rule 18: sent by the routing check on its day, the disclosure is still its caseworker's, on
        # Halt's behalf (it was "routing", on nobody's)
        [sent_entry] = await w.audit("handover.sent")
        assert (sent_entry.user, sent_entry.on_behalf_of) == (CW, "Halt Den Haag")
        assert sent_entry.objects["sent_by"] == "routing"


async def test_a_handover_waiting_for_an_incomplete_consent_goes_out_once_a_later_referral_completes_it(
    kafka: EmbeddedKafka, db_url: str, unique: str
) -> None:
    # Rule 8: the police listed three legal representatives (custody assumed), so two parents'
    # permits were not enough. A later referral naming the two who hold custody completes the consent;
    # only recording a consent routed waiting handovers again, so this one waited for ever.
    three = [("JEUGDIGE", "Sam"), ("OUDER_MET_GEZAG", "Ouder 0"), ("OUDER_MET_GEZAG", "Ouder 1")]
    async with world(kafka, db_url, unique) as w:
        rid, key = await w.referral(14, custodians=3)
        consent = await w.consent(rid, grantors=three, custodians=2)
        assert consent["complete"] is False
        hid = await w.handover(rid)
        waiting = await w.routed(hid)
        assert (waiting["status"], waiting["waiting_reasons"]) == ("WACHT_OP_TOESTEMMING", ["ONVOLLEDIG"])
        assert w.hub.store is not None

        async def later_referral(suffix: str, custodians: int) -> None:
            """The youth's referral again, later, naming `custodians` people (custody assumed)."""
            assert w.hub.store is not None
            async with w.hub.store.transaction() as session:
                row = (await session.execute(select(referrals).where(referrals.c.id == rid))).one()
                body = json.loads(json.dumps(row.referral))
                body["case_reference"] += suffix
                body["youth"]["guardians"] = [{"name": f"Ouder {i}"} for i in range(custodians)]
                values = {**row._mapping, "id": str(uuid.uuid4()), "case_reference": body["case_reference"]}
                await session.execute(
                    insert(referrals).values({**values, "referral": body, "received_at": datetime.now(UTC)})
                )

        # A later referral that settles nothing (three again): looked at, judged the same, nothing
        # written and nothing sent.
        before = await w.updated_at(hid)
        await later_referral("-2", 3)
        for _ in "ab":
            async with w.hub.store.transaction() as session:  # routing's periodic check, as it runs
                act = Act("test", str(uuid.uuid4()))
                assert await recheck_started(session, routing_of(w.hub), act) == []
        assert key in await waiting_youths(w)  # it was looked at
        # judged the same, nothing written: looked at each round, but only for a while after the
        # referral (each look is a write transaction), not for ever
        assert key not in await waiting_youths(w, now=datetime.now(UTC) + RECHECK_FOR + timedelta(minutes=1))
        assert (await w.status(hid))["status"] == "WACHT_OP_TOESTEMMING"
        assert await w.updated_at(hid) == before and not w.receiver.calls

        await later_referral("-3", 2)  # the two who hold custody, both of whom permitted

        async def sent() -> bool:
            return (await w.status(hid))["status"] != "WACHT_OP_TOESTEMMING"

        await wait_for(sent, timeout_s=15)
        await wait_for(lambda: any(c["org"] == "jongerenwerk-dh" for c in w.receiver.calls), timeout_s=15)
        [sent_entry] = await w.audit("handover.sent")
        assert (sent_entry.user, sent_entry.objects["sent_by"]) == (CW, "routing")


async def waiting_youths(w: World, now: datetime | None = None) -> list[str]:
    """The youths routing's periodic check looks at again (at `now`)."""
    assert w.hub.store is not None
    async with w.hub.store.read() as session:
        return await waiting_to_start(session, now)


async def test_withdrawing_one_consent_keeps_a_handover_waiting_for_another(
    kafka: EmbeddedKafka, db_url: str, unique: str
) -> None:
    """Rule 10: the youth consented to a handover to jongerenwerk of their personalia alone, and
    then, from next week, of the referral too; the handover shares both, so it waited. Withdrawing
    the first withdrew the handover as well, though the consent it waited for still stood; the
    caseworker had to ask for it again."""
    async with world(kafka, db_url, unique) as w:
        rid, _ = await w.referral(17)
        narrow = await w.consent(rid, data_categories=["PERSONALIA"])
        await w.consent_from(rid, 7)
        hid = await w.handover(rid)
        assert (await w.routed(hid))["status"] == "WACHT_OP_TOESTEMMING"
        r = await w.client.post(
            f"/api/v1/toestemmingen/{narrow['consent_id']}/intrekking",
            json={"reason": "alleen de nieuwe geldt"},
            headers={"X-Medewerker": CW},
        )
        assert r.status_code == 200 and r.json()["handovers_withdrawn"] == [], r.text
        assert r.json()["handovers_kept"] == [hid]
        assert (await w.status(hid))["status"] == "WACHT_OP_TOESTEMMING"
        [entry] = await w.audit("consent.withdrawn")
        assert entry.objects["handovers_withdrawn"] == [] and entry.objects["handovers_kept"] == [hid]
        assert await w.audit("handover.withdrawn") == []

        w.hub.clock = lambda: datetime.now(UTC) + timedelta(days=7)  # the second consent's first day

        async def sent() -> bool:
            return (await w.status(hid))["status"] != "WACHT_OP_TOESTEMMING"

        await wait_for(sent, timeout_s=15)
        assert (await w.status(hid))["status"] in ("VERZONDEN", "ONTVANGEN")
        await wait_for(lambda: any(c["org"] == "jongerenwerk-dh" for c in w.receiver.calls), timeout_s=15)


async def test_withdrawing_the_consent_a_handover_waits_for_withdraws_it_though_a_narrower_one_stands(
    kafka: EmbeddedKafka, db_url: str, unique: str
) -> None:
    """Rule 10: the consent of the referral too, from next week, is withdrawn; the one left covers
    the personalia alone, which will never cover the handover (consents are recorded anew, not
    changed). The handover was kept waiting for it, for ever, and sent when the next consent was
    recorded, though the youth had withdrawn the one it waited for."""
    async with world(kafka, db_url, unique) as w:
        rid, _ = await w.referral(17)
        await w.consent(rid, data_categories=["PERSONALIA"])
        broad = await w.consent_from(rid, 7)
        hid = await w.handover(rid)
        assert (await w.routed(hid))["status"] == "WACHT_OP_TOESTEMMING"
        r = await w.client.post(
            f"/api/v1/toestemmingen/{broad['consent_id']}/intrekking",
            json={"reason": "toch niet"},
            headers={"X-Medewerker": CW},
        )
        assert r.status_code == 200 and r.json()["handovers_withdrawn"] == [hid], r.text
        assert r.json()["handovers_kept"] == []
        assert (await w.status(hid))["status"] == "INGETROKKEN"
        [entry] = await w.audit("consent.withdrawn")
        assert entry.objects["handovers_kept"] == []


async def test_a_handover_whose_consent_ended_on_its_way_goes_under_the_renewal(
    kafka: EmbeddedKafka, db_url: str, unique: str
) -> None:
    """Rule 9: the receiver was down past the consent's last day, and the renewal, recorded, started
    the next day. The retry found the first consent ended and the handover ended VERLOPEN: its
    caseworker was asked for a new consent and a new handover, though the renewal covered it."""
    async with world(kafka, db_url, unique, retry_schedule_s=PATIENT) as w:
        rid, _ = await w.referral(17)
        first = await w.consent(rid, valid_until=today().isoformat())
        w.receiver.down = True
        hid = await w.handover(rid)
        await wait_for(lambda: w.receiver.refused >= 1)
        renewal = await w.consent(
            rid,
            valid_from=(today() + timedelta(days=1)).isoformat(),
            valid_until=(today() + timedelta(days=90)).isoformat(),
        )
        assert renewal["handovers_sent"] == []  # on its way under the first: passed by
        w.hub.clock = lambda: datetime.now(UTC) + timedelta(days=1)  # the renewal's first day
        w.receiver.down = False

        await wait_for(lambda: len(w.receiver.handovers()) >= 1, timeout_s=30)
        [got] = w.receiver.handovers()
        assert got.payload["handover_id"] == hid
        state = await w.status(hid)
        assert state["status"] in ("VERZONDEN", "ONTVANGEN") and state["consent_id"] == renewal["consent_id"]
        (again,) = await w.audit("handover.waiting_again")
        assert again.objects["consent_id"] == first["consent_id"] and again.objects["gaps"] == ["VERLOPEN"]
        assert await w.audit("handover.lapsed") == []
        sent = [a.objects["consent_id"] for a in await w.audit("handover.sent")]
        assert sent == [first["consent_id"], renewal["consent_id"]]


async def test_a_handover_asked_again_with_its_idempotency_key_is_made_once(
    kafka: EmbeddedKafka, db_url: str, unique: str
) -> None:
    """A retried POST with the same Idempotency-Key answers with the first handover: the receiver is
    not handed the youth twice. Another request under that key is refused."""
    async with world(kafka, db_url, unique) as w:
        rid, _ = await w.referral(17)
        body = {
            "referral_id": rid,
            "receiver_organisation": "jongerenwerk-dh",
            "data_categories": ["PERSONALIA", "VERWIJZING"],
            "summary": "Sam wil graag meedoen aan een sportproject.",
        }
        headers = {"X-Medewerker": CW, "Idempotency-Key": str(uuid.uuid4())}
        first = await w.client.post("/api/v1/overdrachten", json=body, headers=headers)
        again = await w.client.post("/api/v1/overdrachten", json=body, headers=headers)
        assert (first.status_code, again.status_code) == (202, 202), again.text
        assert again.json()["handover_id"] == first.json()["handover_id"]
        assert again.headers["Idempotent-Replayed"] == "true"
        other = await w.client.post(
            "/api/v1/overdrachten", json=body | {"receiver_organisation": "wijkteam-dh"}, headers=headers
        )
        assert other.status_code == 422, other.text
        # the zorgmelding endpoint is another endpoint: the same key there is a request of its own
        zorg = body | {"receiver_organisation": "veilig-thuis-dh", "legal_basis": "meldcode stap 5"}
        made = await w.client.post("/api/v1/zorgmeldingen", json=zorg, headers=headers)
        repeat = await w.client.post("/api/v1/zorgmeldingen", json=zorg, headers=headers)
        assert (made.status_code, repeat.status_code) == (202, 202), repeat.text
        assert repeat.json()["handover_id"] == made.json()["handover_id"] != first.json()["handover_id"]
        listed = await w.client.get(f"/api/v1/overdrachten?referral_id={rid}", headers={"X-Medewerker": CW})
        assert sorted(h["handover_id"] for h in listed.json()) == sorted(
            [first.json()["handover_id"], made.json()["handover_id"]]
        )
        # both replays were reads of the handover, audited as such (rule 18)
        reads = [a.objects.get("handover_id") for a in await w.audit("handover.read")]
        assert reads.count(first.json()["handover_id"]) == 1 and reads.count(made.json()["handover_id"]) == 1


async def test_a_withdrawal_is_told_to_a_receiver_that_may_have_a_handover_that_lapsed(
    kafka: EmbeddedKafka, db_url: str, unique: str
) -> None:
    """Rule 10. The receiver stored the handover and answered 500; before the retry the consent's last
    day passed, and the handover ended VERLOPEN. The withdrawal that followed told only receivers of
    handovers whose status said they were sent: the receiver holding the data never heard."""
    async with world(kafka, db_url, unique, retry_schedule_s=(0.5,) * 8) as w:
        rid, _ = await w.referral(17)
        consent = await w.consent(rid, valid_until=today().isoformat())
        w.receiver.fail_after_storing = True
        hid = await w.handover(rid)
        await wait_for(lambda: len(w.receiver.handovers()) >= 1)
        w.hub.clock = lambda: datetime.now(UTC) + timedelta(days=2)  # past the consent's last day

        async def lapsed() -> dict[str, Any] | None:
            state = await w.status(hid)
            return state if state["status"] == "VERLOPEN" else None

        state = await wait_for(lapsed, timeout_s=30)
        assert state["status_reason"] == "TOESTEMMING_VERLOPEN" and state["delivered_at"] is None
        (entry,) = await w.audit("handover.lapsed")
        assert entry.objects["attempted"] is True and entry.objects["consent_id"] == consent["consent_id"]

        async def mailed() -> list[dict[str, Any]]:
            return await _mails(kafka, w, "handover.lapsed", hid)

        (mail,) = await wait_for(mailed)  # not "not delivered": the receiver may have it
        assert "kan haar wel al hebben" in mail["body_text"]
        w.receiver.fail_after_storing = False
        r = await w.client.post(
            f"/api/v1/toestemmingen/{consent['consent_id']}/intrekking",
            json={"reason": "jeugdige wil het niet meer"},
            headers={"X-Medewerker": CW},
        )
        assert r.status_code == 200 and r.json()["handovers_withdrawn"] == [hid], r.text

        def told() -> list[Envelope]:
            return [c["env"] for c in w.receiver.calls if c["env"].type == "HandoverWithdrawn"]

        await wait_for(lambda: len(told()) >= 1, timeout_s=20)
        [notice] = told()
        assert notice.payload["handover_id"] == hid
        assert (await w.status(hid))["status"] == "INGETROKKEN"
