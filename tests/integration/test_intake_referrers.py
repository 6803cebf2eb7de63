"""Rule 7 across channels: a partner and the Kafka connector whose source it claimed are one referrer;
a connector that does not name itself is refused. On the real broker and both stores."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import DateTime, bindparam, select, text
from sqlalchemy.exc import IntegrityError

from connectors import boa, leerplicht, politie, preventief
from hub.embedded import EmbeddedKafka
from hub.intake import load_intake_rules
from hub.intake.claims import SourceRefused, set_kafka_source
from hub.intake.component import BeforeBirth, before_birth
from hub.intake.service import POLITIE_REFERRER, IntakeService, Origin
from hub.intake.sources import KafkaSources, UnnamedConnector, earlier_keys, partner_key
from hub.intake.tables import referrals
from hub.partners import Partner, PartnerType, add_partner
from hub.partners.tables import partners
from hub.spine.dlq import DLQ_EXC_CLASS, DLQ_EXC_MESSAGE, DLQ_HEADERS, DLQ_TOPIC
from hub.store import Store
from schemas.envelope import Envelope
from schemas.referral import Referral
from tests.conftest import TEST_SECRET, make_settings
from tests.helpers.kafka import headers_of, produce, read_topic
from tests.integration.test_intake_http import (
    DATA,
    Api,
    csv_bytes,
    csv_row,
    intake_api,
    politie_variant,
)

pytestmark = pytest.mark.integration
CONNECTOR = "wijkteam-escamp-connector"


def wijkteam(reference: str | None = None) -> bytes:
    """The wijkteam sample, under another aanmeldnummer when given."""
    data = json.loads((DATA / "preventief" / "valid_wijkteam.json").read_bytes())
    if reference:
        data["aanmeldnummer"] = reference
    return json.dumps(data).encode()


def on_kafka(referral: Referral, source: str | None = CONNECTOR) -> tuple[bytes, bytes, list[Any]]:
    """A canonical referral as a connector publishes it; `source` None leaves the envelope's default."""
    fields: dict[str, Any] = {"source": source} if source is not None else {}
    message = Envelope(type="Referral", payload=referral.model_dump(mode="json"), **fields)
    return (b"k", message.to_bytes(), message.headers())


async def claim(api: Api, name: str, source: str) -> str:
    """Let partner `name` claim `source`; its id."""
    assert api.hub.store is not None
    async with api.hub.store.transaction() as session:
        return (await set_kafka_source(session, name, source)).partner.id


async def stored(api: Api) -> list[Any]:
    assert api.hub.store is not None
    async with api.hub.store.connect() as conn:
        query = select(referrals.c.id, referrals.c.referrer_key, referrals.c.partner_id, referrals.c.outcome)
        return list((await conn.execute(query)).all())


async def decided(api: Api, kafka: EmbeddedKafka, expect: int) -> list[dict[str, Any]]:
    records = await read_topic(kafka.bootstrap, api.hub.topic("referral.decided.v1"), expect=expect)
    return [Envelope.from_bytes(r.value).payload for r in records]


async def test_a_referral_over_http_and_through_the_claimed_connector_is_one_referral(
    kafka: EmbeddedKafka, db_url: str, unique: str
) -> None:
    """The review's repro: a wijkteam sends an aanmelding over HTTP and its connector publishes it
    again. Stored twice before; now the second is a repeat answered with the first outcome. And the
    other way round, where the partner reads over HTTP what its connector sent."""
    async with intake_api(make_settings(kafka, db_url, unique), kafka_intake=True) as api:
        partner_id = await claim(api, "wijkteam-test", CONNECTOR)
        first = await api.post("preventief", wijkteam(), as_="wijkteam")
        assert first.status_code == 201, first.text
        await produce(
            kafka.bootstrap, api.hub.topic("referral.received.v1"), [on_kafka(preventief.parse(wijkteam()))]
        )
        http_first, repeat = await decided(api, kafka, expect=2)
        assert (http_first["duplicate"], repeat["duplicate"]) == (False, True)
        assert repeat["referral_id"] == first.json()["referralId"]
        assert repeat["decision"] == http_first["decision"]  # the first outcome

        await produce(
            kafka.bootstrap,
            api.hub.topic("referral.received.v1"),
            [on_kafka(preventief.parse(wijkteam("WT-2")))],
        )
        through_connector = (await decided(api, kafka, expect=3))[2]
        again = await api.post("preventief", wijkteam("WT-2"), as_="wijkteam")
        assert again.status_code == 200 and again.json()["duplicate"] is True, again.text
        assert again.json()["referralId"] == through_connector["referral_id"]
        read = await api.client.get(again.headers["Location"], headers=api.auth("wijkteam"))
        assert read.status_code == 200 and read.json()["caseReference"] == "WT-2"

        rows = await stored(api)
        assert len(rows) == 2  # two referrals, each stored once
        assert {(r.referrer_key, r.partner_id) for r in rows} == {(f"partner:{partner_id}", partner_id)}


async def test_a_truancy_referral_over_csv_and_through_the_connector_is_decided_once(
    kafka: EmbeddedKafka, db_url: str, unique: str
) -> None:
    """The review's second repro: the connector's copy of a CSV row was refused as the youth's second
    truancy referral (rule 5), beside the acceptance. Now it is a repeat: one decision, ACCEPTED."""
    raw = csv_bytes([csv_row(1, 12)])
    [row] = leerplicht.parse_batch(raw)
    assert row.referral is not None
    async with intake_api(make_settings(kafka, db_url, unique), kafka_intake=True) as api:
        await claim(api, "leerplicht-test", "leerplicht-den-haag")
        report = (await api.post("leerplicht", raw)).json()
        assert report["rows"][0]["result"] == "ACCEPTED"
        await produce(
            kafka.bootstrap,
            api.hub.topic("referral.received.v1"),
            [on_kafka(row.referral, "leerplicht-den-haag")],
        )
        _, repeat = await decided(api, kafka, expect=2)
        assert repeat["duplicate"] is True and repeat["decision"]["outcome"] == "ACCEPTED"
        assert repeat["referral_id"] == report["rows"][0]["referralId"]
        assert [r.outcome for r in await stored(api)] == ["ACCEPTED"]


async def test_what_the_connector_sent_before_the_claim_stays_one_referral(
    kafka: EmbeddedKafka, db_url: str, unique: str
) -> None:
    """A source claimed later: its earlier referral is not re-keyed, yet found as the partner's over
    HTTP (and readable there) and through the connector; a new one is stored under the partner's key.
    (No cache here: `test_a_claim_splits_nothing_while_the_intake_has_not_read_it` covers that.)"""
    settings = make_settings(kafka, db_url, unique, http={"key_cache_s": 0})
    async with intake_api(settings, kafka_intake=True) as api:
        topic = api.hub.topic("referral.received.v1")
        await produce(kafka.bootstrap, topic, [on_kafka(preventief.parse(wijkteam("WT-OLD")))])
        [before] = await decided(api, kafka, expect=1)  # stored as the connector's own
        partner_id = await claim(api, "wijkteam-test", CONNECTOR)

        over_http = await api.post("preventief", wijkteam("WT-OLD"), as_="wijkteam")
        assert over_http.status_code == 200, over_http.text
        assert over_http.json()["referralId"] == before["referral_id"]
        read = await api.client.get(over_http.headers["Location"], headers=api.auth("wijkteam"))
        assert read.status_code == 200  # the partner reads what its connector sent
        other = await api.client.get(over_http.headers["Location"], headers=api.auth("preventief"))
        assert other.status_code == 404  # another partner does not

        await produce(
            kafka.bootstrap,
            topic,
            [on_kafka(preventief.parse(wijkteam(ref))) for ref in ("WT-OLD", "WT-NEW")],
        )
        _, repeat, new = await decided(api, kafka, expect=3)
        assert repeat["duplicate"] is True and repeat["referral_id"] == before["referral_id"]
        assert new["duplicate"] is False
        keys = {r.id: (r.referrer_key, r.partner_id) for r in await stored(api)}
        assert keys == {
            before["referral_id"]: (f"kafka:{CONNECTOR}", None),  # not re-keyed
            new["referral_id"]: (f"partner:{partner_id}", partner_id),
        }


async def test_a_police_connector_speaks_for_the_police_once_they_claim_it_and_no_other_does(
    kafka: EmbeddedKafka, db_url: str, unique: str
) -> None:
    """DESIGN's police connector onto referral.received.v1: its referral was stored under the
    connector's own key, and the same PV number over HTTP (or on the police's topic) stored again. A
    source the police claimed is theirs; one nobody claimed never speaks for them, whatever it says."""
    async with intake_api(make_settings(kafka, db_url, unique), kafka_intake=True) as api:
        await claim(api, "politie-test", "politie-bvh")
        topic = api.hub.topic("referral.received.v1")
        await produce(kafka.bootstrap, topic, [on_kafka(politie.parse(politie_variant(41)), "politie-bvh")])
        [through_connector] = await decided(api, kafka, expect=1)
        over_http = await api.post("politie", politie_variant(41))
        assert over_http.status_code == 200 and over_http.json()["duplicate"] is True, over_http.text
        assert over_http.json()["referralId"] == through_connector["referral_id"]

        # not claimed: the same PV number is this connector's own referral, not the police's
        await produce(kafka.bootstrap, topic, [on_kafka(politie.parse(politie_variant(41)), "elsewhere")])
        _, unclaimed = await decided(api, kafka, expect=2)
        assert (
            unclaimed["duplicate"] is False and unclaimed["referral_id"] != through_connector["referral_id"]
        )
        keys = sorted(r.referrer_key for r in await stored(api))
        assert keys == ["kafka:elsewhere", POLITIE_REFERRER]


async def test_a_claimed_connector_may_not_send_another_kind_of_referrers_referral(
    kafka: EmbeddedKafka, db_url: str, unique: str
) -> None:
    """A BOA's connector sending a theft as the police's: rule 4 (a BOA refers only its own offences)
    checks BOA referrals alone, so it was accepted, under the BOA's key. It is refused, saying why."""
    async with intake_api(make_settings(kafka, db_url, unique), kafka_intake=True) as api:
        await claim(api, "boa-test", "boa-handhaving-connector")
        topic = api.hub.topic("referral.received.v1")
        as_police = politie.parse(politie_variant(42))  # a theft, referrer.type POLITIE
        own = boa.parse((DATA / "boa" / "valid_openbare_dronkenschap.json").read_bytes())
        await produce(
            kafka.bootstrap,
            topic,
            [on_kafka(as_police, "boa-handhaving-connector"), on_kafka(own, "boa-handhaving-connector")],
        )
        [dead] = await read_topic(kafka.bootstrap, api.hub.topic("referral.received.dlq.v1"), expect=1)
        headers = headers_of(dead)
        assert headers[DLQ_EXC_CLASS].endswith("NotTheClaimantsReferrer")
        assert "referrer.type is POLITIE" in headers[DLQ_EXC_MESSAGE]
        assert "Set referrer.type to BOA" in headers[DLQ_EXC_MESSAGE]
        [answer] = await decided(api, kafka, expect=1)  # the BOA's own referral only
        assert answer["decision"]["case_reference"] == own.case_reference
        assert len(await stored(api)) == 1


async def test_a_refusal_through_the_claimed_connector_names_the_partners_own_field_over_http(
    kafka: EmbeddedKafka, db_url: str, unique: str
) -> None:
    """A referral through a partner's connector is in its format as one over HTTP: a read of it, and
    the answer to its repeat over HTTP, name the partner's own field beside the hub's."""
    record = json.loads((DATA / "boa" / "valid_openbare_dronkenschap.json").read_bytes()) | {"bekend": False}
    raw = json.dumps(record).encode()
    async with intake_api(make_settings(kafka, db_url, unique), kafka_intake=True) as api:
        await claim(api, "boa-test", "boa-handhaving-connector")
        topic = api.hub.topic("referral.received.v1")
        await produce(kafka.bootstrap, topic, [on_kafka(boa.parse(raw), "boa-handhaving-connector")])
        [through_connector] = await decided(api, kafka, expect=1)
        assert through_connector["decision"]["reasons"][0]["field"] == "confessed"  # canonical on Kafka
        repeat = await api.post("boa", raw)
        assert repeat.status_code == 200 and repeat.json()["duplicate"] is True, repeat.text
        read = await api.client.get(repeat.headers["Location"], headers=api.auth("boa"))
        for answer in (repeat.json(), read.json()):
            assert [(r["code"], r["field"], r["partnerField"]) for r in answer["decision"]["reasons"]] == [
                ("NIET_BEKEND", "confessed", "bekend")
            ]


async def test_a_referral_whose_envelope_names_no_connector_is_dead_lettered(
    kafka: EmbeddedKafka, db_url: str, unique: str
) -> None:
    """Connectors that leave the envelope's source at the hub's default shared one rule 7 key: one's
    new referral was answered as a repeat of another's, and lost. It is refused, saying what to do."""
    async with intake_api(make_settings(kafka, db_url, unique), kafka_intake=True) as api:
        topic = api.hub.topic("referral.received.v1")
        unnamed = on_kafka(preventief.parse(wijkteam("WT-A")), source=None)
        named = on_kafka(preventief.parse(wijkteam("WT-B")), source="jongerenwerk-connector")
        await produce(kafka.bootstrap, topic, [unnamed, named])
        [dead] = await read_topic(kafka.bootstrap, api.hub.topic("referral.received.dlq.v1"), expect=1)
        headers = headers_of(dead)
        assert set(DLQ_HEADERS) <= set(headers) and headers[DLQ_TOPIC] == topic
        assert headers[DLQ_EXC_CLASS].endswith("UnnamedConnector")
        assert "'ketenhub', the hub's default" in headers[DLQ_EXC_MESSAGE]
        assert "Set the envelope's source to the connector's own name" in headers[DLQ_EXC_MESSAGE]
        assert dead.value == unnamed[1]
        [answer] = await decided(api, kafka, expect=1)  # the named one only
        assert answer["decision"]["case_reference"] == "WT-B"
        assert [r.referrer_key for r in await stored(api)] == ["kafka:jongerenwerk-connector"]


async def test_a_canonical_referral_whose_offence_lies_before_the_birth_date_is_dead_lettered_not_refused(
    kafka: EmbeddedKafka, db_url: str, unique: str
) -> None:
    """Every partner format refuses a birth date after the offence; through a connector it was decided
    as a refusal (the youth "-3 years" old) and stored, which took its case reference for good: the
    corrected referral was answered with that refusal as a repeat. It is dead-lettered, nothing
    stored, and the corrected one is decided afresh."""
    async with intake_api(make_settings(kafka, db_url, unique), kafka_intake=True) as api:
        topic = api.hub.topic("referral.received.v1")
        good = preventief.parse(wijkteam("WT-BORN"))
        born = good.youth.birth_date
        typo = good.model_copy(
            update={"youth": good.youth.model_copy(update={"birth_date": born.replace(year=born.year + 20)})}
        )
        await produce(kafka.bootstrap, topic, [on_kafka(typo)])
        [dead] = await read_topic(kafka.bootstrap, api.hub.topic("referral.received.dlq.v1"), expect=1)
        headers = headers_of(dead)
        assert headers[DLQ_EXC_CLASS].endswith("BeforeBirth")
        assert "offence.committed_on lies before youth.birth_date" in headers[DLQ_EXC_MESSAGE]
        assert "nothing of this one was stored" in headers[DLQ_EXC_MESSAGE]
        assert await stored(api) == []
        await produce(kafka.bootstrap, topic, [on_kafka(good)])  # corrected, same case reference
        [answer] = await decided(api, kafka, expect=1)
        assert answer["decision"]["case_reference"] == "WT-BORN" and answer["duplicate"] is False
        assert [r.outcome for r in await stored(api)] == [answer["decision"]["outcome"]]


def test_a_truancy_that_began_before_the_birth_date_is_refused_too() -> None:
    truancy = leerplicht.parse_batch(csv_bytes([csv_row(1)]))[0].referral
    assert truancy is not None and truancy.truancy is not None
    before_birth(truancy)  # as sent: no refusal
    born = truancy.truancy.period_start + timedelta(days=1)
    typo = truancy.model_copy(update={"youth": truancy.youth.model_copy(update={"birth_date": born})})
    with pytest.raises(BeforeBirth, match=r"^truancy\.period_start lies before youth\.birth_date"):
        before_birth(typo)


async def test_the_intake_reads_the_claims_once_per_lifetime_not_per_record(store: Store) -> None:
    now = [0.0]
    sources = KafkaSources(5.0, clock=lambda: now[0])
    async with store.transaction() as session:
        partner, _ = await add_partner(session, "boa-dh", PartnerType.BOA)
        unclaimed = await sources.origin(session, "boa-connector", transaction_id="t", system="test")
        await set_kafka_source(session, "boa-dh", "boa-connector")
        cached = await sources.origin(session, "boa-connector", transaction_id="t", system="test")
        now[0] = 5.0
        claimed = await sources.origin(session, "boa-connector", transaction_id="t", system="test")
        with pytest.raises(UnnamedConnector):
            await sources.origin(session, "ketenhub", transaction_id="t", system="test")
    assert unclaimed.keys == cached.keys == ("kafka:boa-connector",) and unclaimed.partner_id is None
    assert claimed.keys == (f"partner:{partner.id}", "kafka:boa-connector")
    assert claimed.partner_id == partner.id


async def test_what_a_police_connector_sent_before_the_claim_is_the_polices_on_every_channel(
    kafka: EmbeddedKafka, db_url: str, unique: str
) -> None:
    """A police connector's referral from before a police partner claimed it stays under the
    connector's key. The police are one referrer: the same PV number on their own topic, or over HTTP
    from another police partner, was stored and decided a second time; and that partner, answered
    with it as a repeat, was told 404 when it read it. A claim no referral came through is released,
    whatever came in on the police's own topic."""
    settings = make_settings(kafka, db_url, unique, http={"key_cache_s": 0})
    async with intake_api(settings, kafka_intake=True) as api:
        assert api.hub.store is not None
        async with api.hub.store.transaction() as session:
            await add_partner(session, "politie-noord", PartnerType.POLITIE)
        connector = api.hub.topic("referral.received.v1")
        await produce(kafka.bootstrap, connector, [on_kafka(politie.parse(politie_variant(43)), "bvh-noord")])
        [before] = await decided(api, kafka, expect=1)
        await claim(api, "politie-noord", "bvh-noord")

        police_topic = api.hub.topic("partner.politie.referral.v1")
        await produce(
            kafka.bootstrap, police_topic, [(b"k", politie_variant(43), []), (b"k", politie_variant(44), [])]
        )
        answers = await read_topic(kafka.bootstrap, api.hub.topic("partner.politie.decision.v1"), expect=2)
        by_pv = {a["procesVerbaalNummer"]: a for a in (Envelope.from_bytes(r.value).payload for r in answers)}
        repeat = by_pv["PL1500-2025031201-43"]
        assert repeat["herhaling"] is True and repeat["verwijzingId"] == before["referral_id"]

        over_http = await api.post("politie", politie_variant(43))  # as politie-test, not the claimant
        assert over_http.status_code == 200 and over_http.json()["duplicate"] is True, over_http.text
        assert over_http.json()["referralId"] == before["referral_id"]
        read = await api.client.get(over_http.headers["Location"], headers=api.auth("politie"))
        assert read.status_code == 200, read.text
        assert [r.referrer_key for r in await stored(api)].count("kafka:bvh-noord") == 1
        assert len(await stored(api)) == 2  # PV 43 once, PV 44 from the police's topic

        async with api.hub.store.transaction() as session:
            released = await set_kafka_source(session, "politie-noord", None)
        assert released.previous == "bvh-noord"


def _referral(reference: str) -> Referral:
    return preventief.parse(wijkteam(reference))


def _service() -> IntakeService:
    return IntakeService(secret=TEST_SECRET, rules=load_intake_rules(), decided_topic="decided")


def _over_http(partner: Partner, tx: str = "t") -> Origin:
    """What hub.api.referrals makes of a request of `partner`."""
    return Origin(
        partner_key(partner.id, partner.type),
        "http",
        tx,
        "test",
        user=partner.name,
        partner_id=partner.id,
        also_known_as=earlier_keys(partner),
    )


async def test_a_claim_splits_nothing_while_the_intake_has_not_read_it(store: Store) -> None:
    """In the cache's lifetime after a claim the intake still stores the connector's referrals under
    the connector's key. Nothing is re-keyed, so its repeats are found there, and the partner finds
    them over HTTP; once the cache is read again they go under the partner's key."""
    service, now = _service(), [0.0]
    sources = KafkaSources(5.0, clock=lambda: now[0])
    async with store.transaction() as session:
        await add_partner(session, "wijkteam-dh", PartnerType.WIJKTEAM)
        stale = await sources.origin(session, CONNECTOR, transaction_id="t", system="test")
        first = await service.take_in(session, _referral("WT-1"), stale)
        partner = (await set_kafka_source(session, "wijkteam-dh", CONNECTOR)).partner

        still_stale = await sources.origin(session, CONNECTOR, transaction_id="t", system="test")
        assert still_stale.keys == (f"kafka:{CONNECTOR}",)  # the claim is not read yet
        assert (
            await service.take_in(session, _referral("WT-1"), still_stale)
        ).referral_id == first.referral_id
        in_between = await service.take_in(session, _referral("WT-2"), still_stale)
        for ref, was in (("WT-1", first), ("WT-2", in_between)):
            answer = await service.take_in(session, _referral(ref), _over_http(partner))
            assert answer.duplicate and answer.referral_id == was.referral_id

        now[0] = 5.0
        fresh = await sources.origin(session, CONNECTOR, transaction_id="t", system="test")
        assert fresh.keys == (f"partner:{partner.id}", f"kafka:{CONNECTOR}")
        for ref, was in (("WT-1", first), ("WT-2", in_between)):
            answer = await service.take_in(session, _referral(ref), fresh)
            assert answer.duplicate and answer.referral_id == was.referral_id
        new = await service.take_in(session, _referral("WT-3"), fresh)
        over_http = await service.take_in(session, _referral("WT-3"), _over_http(partner))
        assert over_http.duplicate and over_http.referral_id == new.referral_id
    async with store.connect() as conn:
        keys = dict((await conn.execute(select(referrals.c.case_reference, referrals.c.referrer_key))).all())
    assert keys == {
        "WT-1": f"kafka:{CONNECTOR}",
        "WT-2": f"kafka:{CONNECTOR}",
        "WT-3": f"partner:{partner.id}",
    }


async def test_a_referral_stored_twice_before_the_claim_is_answered_with_the_first_copy(store: Store) -> None:
    """Before this revision a referral sent both ways was stored twice; once the partner claims the
    connector's source, both copies are its, and a repeat is answered with the one received first."""
    service = _service()
    async with store.transaction() as session:
        partner, _ = await add_partner(session, "wijkteam-dh", PartnerType.WIJKTEAM)
        kafka = Origin(f"kafka:{CONNECTOR}", "kafka", "t1", "test", user=CONNECTOR)
        connector_first = await service.take_in(session, _referral("WT-9"), kafka)
        await service.take_in(session, _referral("WT-9"), _over_http(partner))  # stored twice
        done = await set_kafka_source(session, "wijkteam-dh", CONNECTOR)
        assert (done.earlier, done.twice) == (1, 1)  # what the CLI reports
        origin = await KafkaSources(0).origin(session, CONNECTOR, transaction_id="t3", system="test")
        repeat = await service.take_in(session, _referral("WT-9"), origin)
        over_http = await service.take_in(session, _referral("WT-9"), _over_http(done.partner))
    assert repeat.duplicate and repeat.referral_id == connector_first.referral_id
    assert over_http.duplicate and over_http.referral_id == connector_first.referral_id


async def test_a_source_is_one_partners_and_a_used_claim_stands(store: Store) -> None:
    async with store.transaction() as session:
        await add_partner(session, "boa-dh", PartnerType.BOA)
        await add_partner(session, "boa-leiden", PartnerType.BOA)
        await add_partner(session, "aurah", PartnerType.ZAAKSYSTEEM)
        await set_kafka_source(session, "boa-dh", "boa-connector")
        with pytest.raises(SourceRefused, match="claimed by partner 'boa-dh'"):
            await set_kafka_source(session, "boa-leiden", "boa-connector")
        with pytest.raises(SourceRefused, match="only a referring partner"):
            await set_kafka_source(session, "aurah", "aurah-connector")
        changed = await set_kafka_source(session, "boa-dh", "boa-connector-dh")  # unused: a typo mended
        assert changed.previous == "boa-connector" and changed.partner.kafka_source == "boa-connector-dh"
        service = _service()
        origin = await KafkaSources(0).origin(session, "boa-connector-dh", transaction_id="t", system="test")
        await service.take_in(session, _referral("WT-1"), origin)
        with pytest.raises(
            SourceRefused, match="1 referral\\(s\\) came in through source 'boa-connector-dh'"
        ):
            await set_kafka_source(session, "boa-dh", None)
    async with store.connect() as conn:
        claimed = dict((await conn.execute(select(partners.c.name, partners.c.kafka_source))).all())
    assert claimed == {"boa-dh": "boa-connector-dh", "boa-leiden": None, "aurah": None}


async def test_the_migration_to_one_police_referrer_keys_the_copy_received_first(db_url: str) -> None:
    """Revision 0017 gave the key "politie" to each proces-verbaal number's copy with the lowest id:
    ids are random UUIDs, so a copy received a day later (refused, say) could become the first
    answer, and every repeat since was answered with its outcome (rule 7). The copy received first
    takes the key; the later one keeps its own."""
    from hub.store.db import migrate

    store = Store(db_url)
    try:
        await migrate(store.engine, "0002_intake")
        first, later = "f" * 8 + "-ffff-4fff-8fff-" + "f" * 12, "0" * 8 + "-0000-4000-8000-" + "0" * 12
        row = text(
            "INSERT INTO referrals (id, referrer_key, case_reference, referrer_type, channel,"
            " youth_key, bsn, track, outcome, referral, decision, transaction_id, received_at)"
            " VALUES (:id, :key, 'PV-1', 'POLITIE', 'http', :youth, '111222333', 'HALT_STRAF', :outcome,"
            " '{}', '{}', 'tx', :at)"
        ).bindparams(bindparam("at", type_=DateTime(timezone=True)))
        async with store.engine.begin() as conn:
            await conn.execute(
                row,
                {
                    "id": first,
                    "key": "partner:a",
                    "youth": "a" * 64,
                    "outcome": "ACCEPTED",
                    "at": datetime(2025, 3, 1, 9, tzinfo=UTC),
                },
            )
            await conn.execute(
                row,
                {
                    "id": later,
                    "key": "partner:b",
                    "youth": "a" * 64,
                    "outcome": "REJECTED",
                    "at": datetime(2025, 3, 2, 9, tzinfo=UTC),
                },
            )
        await migrate(store.engine, "0017_police_one_referrer")
        async with store.engine.connect() as conn:
            keys = dict((await conn.execute(text("SELECT id, referrer_key FROM referrals"))).all())
        assert keys == {first: "politie", later: "partner:b"}
    finally:
        await store.close()


async def test_the_migration_adds_the_claim_column_one_partner_per_source(db_url: str) -> None:
    """Revision 0026 on a store with partners and referrals: nothing is claimed or re-keyed, and the
    database itself refuses a second partner for a source."""
    from hub.store.db import migrate

    store = Store(db_url)
    try:
        await migrate(store.engine, "0017_police_one_referrer")
        async with store.engine.begin() as conn:
            for pid in ("p1", "p2"):
                await conn.execute(
                    text(
                        "INSERT INTO partners (id, name, type, key_id, key_hash, created_at, active)"
                        " VALUES (:id, :id, 'boa', :id, 'h', CURRENT_TIMESTAMP, true)"
                    ),
                    {"id": pid},
                )
            await conn.execute(
                text(
                    "INSERT INTO referrals (id, referrer_key, case_reference, referrer_type, channel,"
                    " youth_key, bsn, track, outcome, referral, decision, transaction_id, received_at)"
                    " VALUES ('r1', 'kafka:boa-connector', 'B-1', 'BOA', 'kafka', :youth, '111222333',"
                    " 'HALT_STRAF', 'ACCEPTED', '{}', '{}', 'tx', CURRENT_TIMESTAMP)"
                ),
                {"youth": "a" * 64},
            )
        await store.migrate()
        async with store.connect() as conn:
            claims = dict((await conn.execute(select(partners.c.id, partners.c.kafka_source))).all())
            keys = list((await conn.execute(select(referrals.c.referrer_key))).scalars())
        assert claims == {"p1": None, "p2": None} and keys == ["kafka:boa-connector"]
        claim = partners.update().values(kafka_source="boa-connector")
        async with store.engine.begin() as conn:
            await conn.execute(claim.where(partners.c.id == "p1"))
        with pytest.raises(IntegrityError):
            async with store.engine.begin() as conn:
                await conn.execute(claim.where(partners.c.id == "p2"))
    finally:
        await store.close()


async def test_a_claim_made_for_the_wrong_partner_is_undone_while_nothing_came_through_it(
    store: Store,
) -> None:
    """What the connector sent before the claim counted as having come through it: a claim made for
    the wrong partner could be neither released nor moved, and that partner read the connector's
    referrals. Those keep the connector's own key, and stay its own once the claim is released."""
    service = _service()
    async with store.transaction() as session:
        await add_partner(session, "lp-den-haag", PartnerType.LEERPLICHT)
        await add_partner(session, "lp-leiden", PartnerType.LEERPLICHT)
        sources = KafkaSources(0)
        unclaimed = await sources.origin(session, "lp-leiden-connector", transaction_id="t", system="t")
        before = await service.take_in(session, _referral("LP-L-1"), unclaimed)
        await set_kafka_source(session, "lp-den-haag", "lp-leiden-connector")  # the wrong partner
        released = await set_kafka_source(session, "lp-den-haag", None)
        assert released.previous == "lp-leiden-connector"
        moved = await set_kafka_source(session, "lp-leiden", "lp-leiden-connector")
        origin = await KafkaSources(0).origin(session, "lp-leiden-connector", transaction_id="t", system="t")
        repeat = await service.take_in(session, _referral("LP-L-1"), origin)
    assert moved.partner.name == "lp-leiden"
    assert repeat.duplicate and repeat.referral_id == before.referral_id  # still one referral (rule 7)
