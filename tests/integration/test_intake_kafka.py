"""Intake on the real broker: police records and canonical referrals in, decisions and dead letters out."""

from __future__ import annotations

import json

import pytest

from connectors import preventief
from hub.embedded import EmbeddedKafka
from hub.spine.dlq import DLQ_EXC_CLASS, DLQ_EXC_MESSAGE, DLQ_HEADERS, KEY_PSEUDONYM
from hub.store.tables import audit_log
from schemas.envelope import Envelope, trace_id
from schemas.pseudonym import youth_key as pseudonym
from tests.conftest import TEST_SECRET, make_settings
from tests.helpers.kafka import headers_of, produce, read_topic, wait_for
from tests.integration.test_intake_http import DATA, intake_api, politie_variant

pytestmark = pytest.mark.integration


async def test_police_records_are_decided_answered_and_dead_lettered(
    kafka: EmbeddedKafka, db_url: str, unique: str
) -> None:
    async with intake_api(make_settings(kafka, db_url, unique), kafka_intake=True) as api:
        topic = api.hub.topic("partner.politie.referral.v1")
        broken_with_reference = json.dumps(
            {"procesVerbaalNummer": "PL1500-2025031201-99", "verdachte": "?"}
        ).encode()
        broken_resend = json.dumps(json.loads(politie_variant(1)) | {"pleegdatum": "gisteren"}).encode()
        broken_new = json.dumps(
            json.loads(politie_variant(1))
            | {"procesVerbaalNummer": "PL1500-2025031201-98", "pleegdatum": "?"}
        ).encode()
        other = json.loads(politie_variant(1)) | {"pleegdatum": "?"}
        other["verdachte"] = other["verdachte"] | {"bsn": "111222333"}
        broken_other = json.dumps(other).encode()
        await produce(
            kafka.bootstrap,
            topic,
            [
                (b"pv", politie_variant(1), [("transaction-id", b"tx-police-1")]),
                (b"pv", broken_with_reference, [("transaction-id", b"tx-broken")]),
                (b"pv", b"{not json at all", []),
                (b"pv", politie_variant(1, bekennend=False), []),  # a repeat of the first PV number
                (b"pv", politie_variant(2, bekennend=False), []),
                (b"pv", broken_resend, []),  # the accepted PV number again, unreadable
                (b"pv", broken_new, []),  # a new PV number, unreadable but for its BSN
                (b"pv", broken_other, []),  # the accepted PV number, unreadable, another youth's BSN
            ],
        )
        answers = await read_topic(kafka.bootstrap, api.hub.topic("partner.politie.decision.v1"), expect=7)
        by_pv: dict[str, list[tuple[bytes | None, Envelope]]] = {}
        for record in answers:
            env = Envelope.from_bytes(record.value)
            by_pv.setdefault(env.payload["procesVerbaalNummer"], []).append((record.key, env))
        # the answers on the first youth's key in the order given; another youth's on its own key
        mine = [
            (k, e)
            for k, e in by_pv["PL1500-2025031201-1"]
            if k != pseudonym(TEST_SECRET, "111222333").encode()
        ]
        (key, first), (_, repeat), (resend_key, resend) = mine
        [(other_key, refused)] = [(k, e) for k, e in by_pv["PL1500-2025031201-1"] if (k, e) not in mine]
        assert first.payload["besluit"] == "GEACCEPTEERD" and first.transaction_id == "tx-police-1"
        assert repeat.payload["herhaling"] is True
        assert repeat.payload["verwijzingId"] == first.payload["verwijzingId"]
        # rule 7: an unreadable resend is answered with the first outcome, on the youth's partition;
        # a refusal contradicted the acceptance the hub holds, and could arrive after a later answer
        assert (resend.payload["besluit"], resend.payload["herhaling"]) == ("GEACCEPTEERD", True)
        assert resend.payload["verwijzingId"] == first.payload["verwijzingId"] and resend_key == key
        # another youth's record under that PV number is no repeat: refused, on its own youth's key,
        # never answered with the first youth's referral
        assert (refused.payload["besluit"], refused.payload["herhaling"]) == ("AFGEWEZEN", False)
        assert refused.payload["verwijzingId"] is None
        assert other_key == pseudonym(TEST_SECRET, "111222333").encode() != key
        refused_2 = by_pv["PL1500-2025031201-2"][0][1].payload
        assert refused_2["besluit"] == "AFGEWEZEN"
        # the reason names the police's own field, not the hub's canonical "confessed"
        assert [(r["code"], r["veld"]) for r in refused_2["redenen"]] == [("NIET_BEKEND", "bekennend")]
        _, error = by_pv["PL1500-2025031201-99"][0]
        assert error.payload["besluit"] == "AFGEWEZEN" and error.transaction_id == "tx-broken"
        assert {r["code"] for r in error.payload["redenen"]} == {"FORMAT_ONGELDIG"}
        [(new_key, new)] = by_pv["PL1500-2025031201-98"]
        assert new.payload["besluit"] == "AFGEWEZEN" and new_key == key  # the same youth's BSN

        dead = await read_topic(kafka.bootstrap, api.hub.topic("partner.politie.referral.dlq.v1"), expect=5)
        assert len(dead) == 5
        for record in dead:
            headers = headers_of(record)
            assert set(DLQ_HEADERS) <= set(headers)
            assert headers[DLQ_EXC_CLASS].endswith("PartnerFormatError")
        assert {r.value for r in dead} == {
            broken_with_reference,
            b"{not json at all",
            broken_resend,
            broken_new,
            broken_other,
        }

        decided = await read_topic(
            kafka.bootstrap, api.hub.topic("referral.decided.v1"), expect=2, settle_s=0.3
        )
        assert len(decided) == 2  # two referrals decided; a repeat is not a new decision
        assert all(len(r.key) == 64 for r in decided)  # keyed by the youth key
        assert await api.count() == 2
        assert await api.count(audit_log, action="referral.unparseable") == 4


async def test_a_dead_letter_of_a_record_keyed_by_a_bsn_goes_under_its_pseudonym(
    kafka: EmbeddedKafka, db_url: str, unique: str
) -> None:
    """The hub's Kafka keys hold no BSN. A partner that keys its records by the BSN (or by text
    with one in it) had that key copied onto the DLQ, and onto a replayed copy: now the youth key of
    a key that is a BSN (the letter found and audited by its youth), a pseudonym of any other key
    with BSN-shaped text in it; a key without such text is kept as the sender sent it."""
    async with intake_api(make_settings(kafka, db_url, unique), kafka_intake=True) as api:
        unreadable = [b"{not json %d" % n for n in range(3)]
        keys = [b"111222333", b"bsn-111222333", b"pv-2025-a"]
        topic = api.hub.topic("partner.politie.referral.v1")
        await produce(kafka.bootstrap, topic, [(k, v, []) for k, v in zip(keys, unreadable, strict=True)])
        dead = await read_topic(kafka.bootstrap, api.hub.topic("partner.politie.referral.dlq.v1"), expect=3)
        by_value = {r.value: r.key for r in dead}
        assert by_value == {
            unreadable[0]: pseudonym(TEST_SECRET, "111222333").encode(),
            unreadable[1]: pseudonym(TEST_SECRET, "bsn-111222333").encode(),
            unreadable[2]: b"pv-2025-a",
        }
        # marked, so that only the key that was a BSN stands for a youth (when no BSN is in the letter)
        marks = {r.value: headers_of(r).get(KEY_PSEUDONYM) for r in dead}
        assert marks == {unreadable[0]: "bsn", unreadable[1]: "text", unreadable[2]: None}


async def test_canonical_referrals_from_kafka_connectors_are_decided(
    kafka: EmbeddedKafka, db_url: str, unique: str
) -> None:
    referral = preventief.parse((DATA / "preventief" / "valid_wijkteam.json").read_bytes())
    message = Envelope(type="Referral", source="wijkteam-connector", payload=referral.model_dump(mode="json"))
    repeat = Envelope(type="Referral", source="wijkteam-connector", payload=message.payload)
    async with intake_api(make_settings(kafka, db_url, unique), kafka_intake=True) as api:
        await produce(
            kafka.bootstrap,
            api.hub.topic("referral.received.v1"),
            [(b"wt", m.to_bytes(), m.headers()) for m in (message, repeat)],
        )
        decided = await read_topic(kafka.bootstrap, api.hub.topic("referral.decided.v1"), expect=2)
        payloads = [Envelope.from_bytes(r.value).payload for r in decided]
        assert [p["duplicate"] for p in payloads] == [False, True]
        assert payloads[0]["referral_id"] == payloads[1]["referral_id"]
        assert Envelope.from_bytes(decided[0].value).transaction_id == message.transaction_id
        await wait_for(lambda: api.count(audit_log, action="referral.decided"))
        assert await api.count() == 1


async def test_records_with_unusable_id_headers_are_dead_lettered_and_the_rest_decided(
    kafka: EmbeddedKafka, db_url: str, unique: str
) -> None:
    # Dedup (message-id) and rule 19 (transaction-id) stand on these headers: one that is there but
    # unusable is the sender's mistake, named in the dead letter; a 300-character id must not reach
    # a 200-character column on PostgreSQL and stop the consumer.
    bad = [
        [("message-id", b"m" * 300)],
        [("transaction-id", b"t" * 500)],
        [("transaction-id", b"tx\nforged-line")],
        [("message-id", b"")],
        [("message-id", b"ab\x00c")],  # PostgreSQL refuses a NUL in text: not in any column
    ]
    async with intake_api(make_settings(kafka, db_url, unique), kafka_intake=True) as api:
        records = [(b"pv", politie_variant(10 + i), headers) for i, headers in enumerate(bad)]
        records[-1] = (b"pv\x00" + b"k" * 300, *records[-1][1:])  # and a key no column can hold
        records.append((b"pv", politie_variant(20), [("transaction-id", b"tx-good")]))
        # a name as transaction id: kept in the audit log for years, and (not ASCII) no HTTP header
        # carries it on; the referral is decided under a UUID made from it
        named = "zaak J. de Vries ü"
        records.append((b"pv", politie_variant(21), [("transaction-id", named.encode())]))
        await produce(kafka.bootstrap, api.hub.topic("partner.politie.referral.v1"), records)

        dead = await read_topic(
            kafka.bootstrap, api.hub.topic("partner.politie.referral.dlq.v1"), expect=len(bad)
        )
        assert sorted(r.value for r in dead) == sorted(politie_variant(10 + i) for i in range(len(bad)))
        for record in dead:
            headers = headers_of(record)
            assert headers[DLQ_EXC_CLASS].endswith("BadHeader")
            assert "printable characters" in headers[DLQ_EXC_MESSAGE]
        answers = await read_topic(
            kafka.bootstrap, api.hub.topic("partner.politie.decision.v1"), expect=2, settle_s=0.3
        )
        assert sorted(Envelope.from_bytes(r.value).transaction_id for r in answers) == sorted(
            ["tx-good", trace_id(named)]
        )
        assert trace_id(named) != named and "Vries" not in trace_id(named)
        assert await api.count() == 2


async def test_the_police_is_one_referrer_on_its_topic_and_over_http(
    kafka: EmbeddedKafka, db_url: str, unique: str
) -> None:
    """Rule 7: a proces-verbaal sent on the police topic, then again over HTTP (a resend through the
    other channel during an outage), is one referral: the second is answered with the first, and the
    police can read it over HTTP. Both ways round."""
    async with intake_api(make_settings(kafka, db_url, unique), kafka_intake=True) as api:
        topic = api.hub.topic("partner.politie.referral.v1")
        await produce(kafka.bootstrap, topic, [(b"pv", politie_variant(51), [])])
        [decided] = await read_topic(kafka.bootstrap, api.hub.topic("partner.politie.decision.v1"), expect=1)
        first = Envelope.from_bytes(decided.value).payload
        again = await api.post("politie", politie_variant(51))
        assert again.status_code == 200 and again.json()["duplicate"] is True, again.text
        assert again.json()["referralId"] == first["verwijzingId"]
        read = await api.client.get(again.headers["Location"], headers=api.auth("politie"))
        assert read.status_code == 200, read.text
        assert (await api.client.get(again.headers["Location"], headers=api.auth("boa"))).status_code == 404

        over_http = await api.post("politie", politie_variant(52))
        assert over_http.status_code == 201, over_http.text
        await produce(kafka.bootstrap, topic, [(b"pv", politie_variant(52), [])])
        answers = await read_topic(kafka.bootstrap, api.hub.topic("partner.politie.decision.v1"), expect=2)
        repeat = Envelope.from_bytes(answers[-1].value).payload
        assert repeat["herhaling"] is True and repeat["verwijzingId"] == over_http.json()["referralId"]
        assert await api.count() == 2
