"""Chaos 4 and 5: poison records on every consumed topic, and the broker or the store unreachable.

4. About one poison record per thousand on every topic the hub consumes (checked against the topics
   the running hub subscribes), among runs of good records: each poison record is dead-lettered once,
   with headers that point back at it and name the group that read it; every good record is processed
   (counted per topic by what it caused); every group's lag is back to zero.
5. The broker cut off behind a proxy while a partner posts referrals over HTTP: the store is up, so
   each is answered 201 (held in the outbox), none refused, and published once when the broker is
   back; /readyz says what is down; the consumers recover by themselves. Zorgmeldingen posted by the
   case system meanwhile (the endpoint that answers 202 Accepted) are each answered 202, held in the
   outbox, or 503 with Retry-After, holding nothing; every one answered 202 is announced on
   handover.requested once when the broker is back, none lost. And the store (PostgreSQL) cut off
   behind a proxy while the police post referrals over HTTP, the broker up, end to end: the cut lands
   among posts in flight, first losing the answer to a COMMIT PostgreSQL kept; each post is answered
   201 only when its referral is in the store, else 503 with Retry-After (saying it may be kept where
   the COMMIT's answer got lost), never another 5xx nor a hang; /readyz names the store as down, and
   is ready again by itself once it is back; the partner sends what got 503 again, and every referral
   is in the store once, with the id its 201 (or the re-send's 200) named, its decision published
   once: nothing acknowledged lost.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select
from sqlalchemy.engine import make_url

from bench.data import bsn, police_records
from connectors import politie
from connectors.verwijsindex.sim_server import SimulatorServer
from hub.directory import upsert_caseworker
from hub.embedded import EmbeddedKafka
from hub.handovers.receivers import ReceiverDelivery, set_receiver_delivery
from hub.handovers.service import ZORGMELDING, Act, Routing, create_handover
from hub.handovers.tables import handovers
from hub.intake import load_intake_rules
from hub.intake.service import POLITIE_REFERRER, IntakeService, Origin
from hub.intake.tables import referrals
from hub.notify.tables import mail_sent
from hub.ops.lag import BrokersUnavailable, LagProbe
from hub.partners import PartnerType, add_partner
from hub.signals.commands import register_command
from hub.signals.matches import MatchMessage
from hub.spine.dlq import (
    DLQ_ATTEMPTS,
    DLQ_EXC_CLASS,
    DLQ_EXC_MESSAGE,
    DLQ_FIRST_FAILURE,
    DLQ_GROUP,
    DLQ_HEADERS,
    DLQ_LAST_FAILURE,
    DLQ_OFFSET,
    DLQ_PARTITION,
    DLQ_TOPIC,
)
from hub.store import Store
from hub.store.tables import audit_log, outbox
from hub.topics import (
    CONSUMED,
    HANDOVER_DISPATCH,
    HANDOVER_RECEIVERS,
    HANDOVER_REQUESTED,
    HANDOVER_STATUS,
    NOTIFICATION_MAIL,
    POLITIE_DECISION,
    POLITIE_REFERRAL,
    REFERRAL_DECIDED,
    REFERRAL_RECEIVED,
    VERWIJSINDEX_MATCH,
    VERWIJSINDEX_SIGNAL,
    Topic,
    handover_answers,
    handover_outbound,
)
from schemas.caseworker import ContactDetails
from schemas.consent import DataCategory
from schemas.envelope import H_CORRELATION_ID, H_MESSAGE_ID, H_TRANSACTION_ID, Envelope, utcnow
from schemas.handover import Handover, HandoverStatus, ReceiverType
from schemas.match import MatchType
from schemas.pseudonym import youth_key
from tests.chaos.test_kill_and_restart import (
    LONG,
    SIGNAL_PATH,
    Traffic,
    create_topics,
    hub_env,
    signal_of,
)
from tests.conftest import TEST_SECRET
from tests.helpers.kafka import headers_of, produce, read_all, read_topic, wait_for
from tests.helpers.poison import Record, consumed_by, produce_located
from tests.helpers.procs import HubProcess
from tests.helpers.proxy import CuttableProxy
from tests.helpers.signals import hold_signals
from tests.integration.test_mail_delivery import ILSE, OMAR

pytestmark = [pytest.mark.chaos, pytest.mark.timeout(600)]

PER_TOPIC = 5000 if LONG else 1000  # good records on each consumed topic
POISON_EACH = PER_TOPIC // 1000  # about one poison record per thousand
RECEIVER = "jeugdhulp-dh"  # a handover receiver that reads its own Kafka topic
ANSWERS = handover_answers("jeugdhulp")  # where RECEIVER answers
RECEIVER_ANSWERS = tuple(handover_answers(r) for r in HANDOVER_RECEIVERS)
CONNECTOR = "boa-kafka-connector"  # a connector publishing canonical referrals
VEILIG_THUIS = "veilig-thuis-chaos"  # the one organisation taking zorgmeldingen (rule 21)
ZORGMELDINGEN = 6  # posted while the broker is cut
# Every topic the hub consumes and the component (consumer group) that reads it; the test checks
# this against what the running hub subscribed, so a new subscription without poison fails here.
CONSUMERS = {
    POLITIE_REFERRAL: "intake",
    REFERRAL_RECEIVED: "intake",
    HANDOVER_REQUESTED: "routing",
    HANDOVER_STATUS: "routing-answers",
    **dict.fromkeys(RECEIVER_ANSWERS, "routing-answers"),
    HANDOVER_DISPATCH: "receivers",
    VERWIJSINDEX_SIGNAL: "verwijsindex",
    VERWIJSINDEX_MATCH: "notify",
    NOTIFICATION_MAIL: "mail",
}


@pytest.fixture
def simulator() -> Iterator[SimulatorServer]:
    with SimulatorServer() as running:
        yield running


@dataclass
class Poison:
    """One poison record, the exception its dead letter must name, and where it landed."""

    record: Record
    error: str
    partition: int = -1
    offset: int = -1

    def header(self, name: str) -> str | None:
        return next((bytes(v).decode() for k, v in self.record[2] if k == name), None)


def as_record(message: Envelope, key: str | None) -> Record:
    return (key.encode() if key is not None else None, message.to_bytes(), message.headers())


PARTNER_HEADER = "x-partner-trace"  # a sender's own header, which its dead letter must keep


def poison_for(topic: Topic, i: int) -> Poison:
    """A record the consumer of `topic` must refuse for good (no retry), each its own way, with a
    header of the sender's own."""
    poison = _poison(topic, i)
    key, value, headers = poison.record
    poison.record = (key, value, [*headers, (PARTNER_HEADER, f"trace-{topic.name}-{i}".encode())])
    return poison


def _poison(topic: Topic, i: int) -> Poison:
    tag = f"poison-{i}-{uuid.uuid4().hex[:8]}"
    if topic == POLITIE_REFERRAL:  # not JSON at all; the police's transaction id, no message id
        return Poison(
            (None, b"\x00" + tag.encode(), [(H_TRANSACTION_ID, f"tx-{tag}".encode())]), "PartnerFormatError"
        )
    if topic == REFERRAL_RECEIVED:  # an envelope whose payload is no referral
        bad = Envelope(type="Referral", source=CONNECTOR, payload={"case_reference": tag})
        return Poison(as_record(bad, tag), "ValidationError")
    if topic == HANDOVER_REQUESTED:  # a handover the hub does not know, and not a whole one either
        bad = Envelope(type="HandoverRequested", source="zaaksysteem", payload={"handover_id": tag})
        return Poison(as_record(bad, tag), "ValidationError")
    if topic == HANDOVER_STATUS or topic in RECEIVER_ANSWERS:  # an answer to a handover nobody got
        bad = Envelope(
            type="HandoverAnswer", source=RECEIVER, payload={"handover_id": tag, "status": "ONTVANGEN"}
        )
        return Poison(as_record(bad, tag), "PermanentError")
    if topic == HANDOVER_DISPATCH:  # not an envelope; a message id, no transaction id
        return Poison((tag.encode(), b"{" + tag.encode(), [(H_MESSAGE_ID, tag.encode())]), "ValidationError")
    if topic == VERWIJSINDEX_SIGNAL:  # a reason outside the whitelist (rule 11): refused, not retried
        signal = signal_of(bsn(900_000 + i))
        command = register_command(signal, str(uuid.uuid4()))
        payload = json.loads(command.to_bytes())
        payload["payload"]["reason"] = "DIEFSTAL"
        key = youth_key(TEST_SECRET, signal.youth.bsn).encode()
        return Poison((key, json.dumps(payload).encode(), command.headers()), "PermanentError")
    if topic == VERWIJSINDEX_MATCH:  # a match on a signal of a caseworker the directory does not know
        bad = match_message(i, caseworker_id=f"cw-{tag}", signal_id=f"s-{tag}")
        return Poison(as_record(bad, tag), "NoReachableRecipient")
    if topic == NOTIFICATION_MAIL:  # a mail without recipient, subject or text
        bad = Envelope(type="MailNotification", source="ketenhub-notify", payload={"notification_id": tag})
        return Poison(as_record(bad, tag), "PermanentError")
    raise AssertionError(f"no poison for {topic.name}: add one")


def match_message(i: int, caseworker_id: str = ILSE.caseworker_id, signal_id: str | None = None) -> Envelope:
    """A match from the Verwijsindex feed, as the connector publishes it."""
    match = MatchMessage(
        match_id=f"m-{i}-{uuid.uuid4().hex[:8]}",
        signal_id=signal_id or f"s-{i}",
        type=MatchType.CLIENTMATCH,
        counterparts=[
            ContactDetails(name="Jan de Vries", organisation="Wijkteam Centrum", email="jan@wijkteam.nl")
        ],
        caseworker_id=caseworker_id,
    )
    return Envelope(
        type="Match",
        source="verwijsindex",
        correlation_id=match.signal_id,
        payload=match.model_dump(mode="json"),
    )


async def hold_signals_of(db_url: str, matches: list[Envelope]) -> None:
    """The signals `matches` are on, of the caseworker each names, as the hub holds them: the feed
    passes on only matches on the hub's signals, and the notifier mails the signal's contact (a match
    on a signal the hub no longer holds is over: purged, and told to nobody)."""
    await hold_signals(
        db_url,
        [
            signal_of(bsn(3_000_000 + n)).model_copy(
                update={"signal_id": m.payload["signal_id"], "caseworker_id": m.payload["caseworker_id"]}
            )
            for n, m in enumerate(matches)
        ],
    )


async def prepare(store: Store, prefix: str, n: int) -> dict[str, str]:
    """Caseworkers, a Kafka receiver, and `n` stored zorgmeldingen (rule 21: no consent needed) waiting
    for routing; handover id -> youth key."""
    intake = IntakeService(
        secret=TEST_SECRET, rules=load_intake_rules(), decided_topic=prefix + REFERRAL_DECIDED.name
    )
    routing = Routing(
        requested_topic=prefix + HANDOVER_REQUESTED.name,
        dispatch_topic=prefix + HANDOVER_DISPATCH.name,
        mail_topic=prefix + NOTIFICATION_MAIL.name,
    )
    act = Act(user=ILSE.caseworker_id, transaction_id=str(uuid.uuid4()))
    origin = Origin("test:handovers", "kafka", act.transaction_id, "test", user="test")
    out: dict[str, str] = {}
    async with store.transaction() as session:
        for cw in (OMAR, ILSE):
            await upsert_caseworker(session, cw)
        await set_receiver_delivery(session, ReceiverDelivery(RECEIVER, ReceiverType.JEUGDHULP, "kafka"))
        stored = await intake.take_in_many(
            session, [politie.parse(r) for r in police_records(n, seed=13)], origin
        )
        for result in stored:
            handover = Handover(
                referral_id=result.referral_id,
                from_caseworker=ILSE.caseworker_id,
                receiver_organisation=RECEIVER,
                receiver_type=ReceiverType.JEUGDHULP,
                data_categories=[DataCategory.PERSONALIA],
                summary="Zorgmelding na een verwijzing.",
            )
            row = await create_handover(
                session, routing, handover, act, purpose=ZORGMELDING, legal_basis="meldcode", announce=False
            )
            out[row.id] = row.youth_key
    assert len(out) == n
    return out


@dataclass
class Stream:
    """The good records of one topic (empty where the hub itself makes them) and its poison."""

    topic: Topic
    good: list[Record]
    poison: list[Poison]


async def count(store: Store, query: Any) -> int:
    async with store.connect() as conn:
        return int((await conn.execute(query)).scalar_one())


def check_dead_letter(
    record: Any, poison: Poison, topic: str, group: str, since: datetime, until: datetime
) -> None:
    """One dead letter: its headers point at the poison record, name the group, and say what failed."""
    headers = headers_of(record)
    assert set(DLQ_HEADERS) <= set(headers)
    assert (headers[DLQ_TOPIC], headers[DLQ_PARTITION], headers[DLQ_OFFSET]) == (
        topic, str(poison.partition), str(poison.offset)
    )  # fmt: skip
    if record.value != poison.record[1]:  # the retry ladder parks the decoded envelope: the same message
        assert Envelope.from_bytes(record.value) == Envelope.from_bytes(poison.record[1])
    assert record.key == poison.record[0]
    assert headers[DLQ_GROUP] == group
    assert headers[DLQ_ATTEMPTS] == "1"  # a permanent error: dead-lettered at the first attempt
    assert headers[DLQ_EXC_CLASS].rsplit(".", 1)[-1] == poison.error, headers[DLQ_EXC_CLASS]
    assert headers[DLQ_EXC_MESSAGE].strip()
    first = datetime.fromisoformat(headers[DLQ_FIRST_FAILURE])
    last = datetime.fromisoformat(headers[DLQ_LAST_FAILURE])
    assert first.tzinfo is not None and since <= first <= last <= until
    # Rule 19: the sender's transaction id; without one, the message id (or, lacking that, the position).
    expected_tx = (
        poison.header(H_TRANSACTION_ID)
        or poison.header(H_MESSAGE_ID)
        or f"{topic}:{poison.partition}:{poison.offset}"
    )
    assert headers.get(H_TRANSACTION_ID) == expected_tx
    # every header the record came with, the sender's own included, as it came
    came = {name: bytes(value).decode() for name, value in poison.record[2]}
    assert {name: headers.get(name) for name in came} == came


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
@pytest.mark.timeout(1000)  # its own deadlines add up to 950 s (two waits of 300 s for the records)
async def test_one_poison_record_per_thousand_is_dead_lettered_and_the_rest_flows(
    kafka: EmbeddedKafka, db_url: str, unique: str, tmp_path: Path, simulator: SimulatorServer
) -> None:
    prefix, groups = f"t{unique}.", {t: f"g{unique}-{c}" for t, c in CONSUMERS.items()}
    assert set(CONSUMERS) == set(CONSUMED)  # hub/topics.py gives each consumed topic its DLQ
    await create_topics(kafka, prefix)
    store = Store(db_url)
    await store.migrate()
    handover_keys = await prepare(store, prefix, PER_TOPIC)
    police = police_records(PER_TOPIC, seed=11)
    cases = [politie.parse(r) for r in police_records(PER_TOPIC, seed=12)]
    traffic = Traffic(kafka, prefix, referrals_n=0, youths_n=PER_TOPIC // 2)
    await traffic.hold(db_url)
    matches = [match_message(i) for i in range(PER_TOPIC)]
    streams: dict[Topic, list[Record]] = {
        POLITIE_REFERRAL: [(None, v, []) for v in police],
        REFERRAL_RECEIVED: [
            as_record(
                Envelope(
                    type="Referral",
                    source=CONNECTOR,
                    correlation_id=c.case_reference,
                    payload=c.model_dump(mode="json"),
                ),
                youth_key(TEST_SECRET, c.youth.bsn),
            )
            for c in cases
        ],
        HANDOVER_REQUESTED: [
            as_record(
                Envelope(
                    type="HandoverRequested",
                    source="ketenhub-api",
                    correlation_id=h,
                    payload={"handover_id": h, "purpose": ZORGMELDING},
                ),
                key,
            )
            for h, key in handover_keys.items()
        ],
        HANDOVER_STATUS: [],  # the retired shared topic: only its poison
        **{t: [] for t in RECEIVER_ANSWERS if t != ANSWERS},  # types without a Kafka receiver: poison only
        ANSWERS: [  # sent once routing dispatched the handovers, as the receiver answers them
            as_record(
                Envelope(
                    type="HandoverAnswer",
                    source=RECEIVER,
                    correlation_id=h,
                    payload={"handover_id": h, "status": HandoverStatus.ONTVANGEN.value},
                ),
                key,
            )
            for h, key in handover_keys.items()
        ],
        HANDOVER_DISPATCH: [],  # routing dispatches each requested handover here
        VERWIJSINDEX_SIGNAL: [rec for s in traffic.signals for rec in traffic._signal_records(s)],
        VERWIJSINDEX_MATCH: [as_record(m, str(m.payload["signal_id"])) for m in matches],
        NOTIFICATION_MAIL: [],  # the notifier mails each match here
    }
    assert set(streams) == set(CONSUMERS)
    poison = {t: [poison_for(t, i) for i in range(POISON_EACH)] for t in CONSUMERS}
    poisoned_matches = [Envelope.from_bytes(p.record[1]) for p in poison[VERWIJSINDEX_MATCH]]
    await hold_signals_of(db_url, [*matches, *poisoned_matches])

    components = "intake,routing,verwijsindex,mail"
    hub = HubProcess(tmp_path, hub_env(kafka.bootstrap, db_url, unique, simulator.url), components)
    await hub.start()
    probe = LagProbe({"bootstrap_servers": kafka.bootstrap}, timeout_s=30)  # the hub's 5 s is for a scrape
    try:

        async def subscriptions() -> dict[str, set[str]] | None:
            try:
                return await consumed_by(hub.url)
            except httpx.HTTPStatusError as e:  # a 503 while the hub's own lag probe times out under load
                if e.response.status_code != 503:
                    raise
                return None

        # What the running hub consumes, and with which group: exactly the topics poisoned here.
        subscribed = await wait_for(subscriptions, timeout_s=60)
        assert subscribed == {prefix + t.name: {g} for t, g in groups.items()}

        async def send(topic: Topic, records: list[Record]) -> None:
            await produce(kafka.bootstrap, prefix + topic.name, records)

        async def send_poison(topic: Topic) -> None:
            landed = await produce_located(
                kafka.bootstrap, prefix + topic.name, [p.record for p in poison[topic]]
            )
            for p, (partition, offset) in zip(poison[topic], landed, strict=True):
                p.partition, p.offset = partition, offset

        since = utcnow() - timedelta(seconds=1)
        first = [t for t in streams if t != ANSWERS]
        for topic in first:  # on each topic a run of good records, the poison, then the rest
            await send(topic, streams[topic][: len(streams[topic]) // 2])
        for topic in first:  # (dispatch and mail: between what the hub itself publishes there)
            await send_poison(topic)
        for topic in first:
            await send(topic, streams[topic][len(streams[topic]) // 2 :])

        async def count(query: Any) -> int:
            async with store.connect() as conn:
                return int((await conn.execute(query)).scalar_one())

        def rows(table: Any, *where: Any) -> Any:
            return select(func.count()).select_from(table).where(*where)

        ids = list(handover_keys)
        waiting = rows(handovers, handovers.c.status == HandoverStatus.WACHT_OP_TOESTEMMING.value)
        answers = dict(zip(ids, streams[ANSWERS], strict=True))
        answered: list[str] = []

        async def answer_what_was_sent() -> bool:
            """The receiver answers each handover once it got out; the poison after the first half."""
            async with store.connect() as conn:
                out = (
                    await conn.execute(select(handovers.c.id).where(handovers.c.sent_at.is_not(None)))
                ).scalars()
                new = [h for h in out if h not in set(answered)]
            if new:
                await send(ANSWERS, [answers[h] for h in new])
            halfway = len(answered) < len(ids) // 2 <= len(answered) + len(new)
            answered.extend(new)
            if halfway:
                await send_poison(ANSWERS)
            return len(answered) == len(ids)

        await wait_for(answer_what_was_sent, timeout_s=300, interval_s=0.5)  # 8 x 1000 records on SQLite

        async def outstanding() -> dict[str, int]:
            """Per topic, how many good records have not had their effect yet."""
            done = {
                POLITIE_REFERRAL: await count(rows(referrals, referrals.c.referrer_key == POLITIE_REFERRER)),
                REFERRAL_RECEIVED: await count(
                    rows(referrals, referrals.c.referrer_key == f"kafka:{CONNECTOR}")
                ),
                HANDOVER_REQUESTED: len(ids) - await count(waiting),
                HANDOVER_DISPATCH: await count(rows(handovers, handovers.c.delivered_at.is_not(None))),
                ANSWERS: await count(rows(handovers, handovers.c.status == HandoverStatus.ONTVANGEN.value)),
                VERWIJSINDEX_SIGNAL: 2 * len(_withdrawn(simulator, traffic)),
                VERWIJSINDEX_MATCH: await count(
                    rows(audit_log, audit_log.c.action == "verwijsindex.match_disclosed")
                ),
                NOTIFICATION_MAIL: await count(rows(mail_sent)),
            }
            return {t.name: PER_TOPIC - n for t, n in done.items() if n != PER_TOPIC}

        try:
            await wait_for(lambda: _empty(outstanding()), timeout_s=300, interval_s=0.5)
        except AssertionError:
            raise AssertionError(f"good records without effect, per topic: {await outstanding()}") from None
        until = utcnow() + timedelta(seconds=1)

        # Every poison record once in its topic's DLQ, pointing back at it; no good record there.
        dead = await asyncio.gather(
            *(
                read_topic(kafka.bootstrap, prefix + t.dlq, expect=len(poison[t]), settle_s=1.0)
                for t in CONSUMERS
            )
        )
        for topic, letters in zip(CONSUMERS, dead, strict=True):
            sent = {(p.partition, p.offset): p for p in poison[topic]}
            positions = Counter((headers_of(r)[DLQ_PARTITION], headers_of(r)[DLQ_OFFSET]) for r in letters)
            assert positions == Counter({(str(p), str(o)): 1 for p, o in sent}), topic.dlq
            for letter in letters:
                h = headers_of(letter)
                p = sent[(int(h[DLQ_PARTITION]), int(h[DLQ_OFFSET]))]
                check_dead_letter(letter, p, prefix + topic.name, groups[topic], since, until)

        # The rest processed, each once: counted per topic by what it caused.
        decisions = await read_all(kafka.bootstrap, prefix + POLITIE_DECISION.name)
        decided = Counter(Envelope.from_bytes(r.value).payload["procesVerbaalNummer"] for r in decisions)
        assert decided == Counter(json.loads(v)["procesVerbaalNummer"] for v in police)
        async with store.connect() as conn:
            refs = (
                (
                    await conn.execute(
                        select(referrals.c.case_reference).where(
                            referrals.c.referrer_key == f"kafka:{CONNECTOR}"
                        )
                    )
                )
                .scalars()
                .all()
            )
            states = dict((await conn.execute(select(handovers.c.id, handovers.c.status))).all())
            disclosed = (
                (
                    await conn.execute(
                        select(audit_log.c.objects).where(
                            audit_log.c.action == "verwijsindex.match_disclosed"
                        )
                    )
                )
                .scalars()
                .all()
            )
            mailed = (await conn.execute(select(mail_sent.c.notification_id))).scalars().all()
        assert Counter(refs) == Counter(c.case_reference for c in cases)
        assert states == dict.fromkeys(ids, HandoverStatus.ONTVANGEN.value)  # requested, dispatched, answered
        handed = await read_all(kafka.bootstrap, prefix + handover_outbound("jeugdhulp").name)
        delivered = Counter(Envelope.from_bytes(r.value).payload["handover_id"] for r in handed)
        assert delivered == Counter(ids)  # the receiver got each handover once
        assert Counter(o["match_id"] for o in disclosed) == Counter(m.payload["match_id"] for m in matches)
        poisoned = {(p.partition, p.offset) for p in poison[NOTIFICATION_MAIL]}
        mails = [
            r
            for r in await read_all(kafka.bootstrap, prefix + NOTIFICATION_MAIL.name)
            if (r.partition, r.offset) not in poisoned
        ]
        notified = Counter(Envelope.from_bytes(r.value).payload["notification_id"] for r in mails)
        assert notified == Counter(mailed) and len(mailed) == PER_TOPIC  # one mail per match, each sent
        calls = simulator.state.faults.calls
        for signal in traffic.signals:
            mine = [c for c in calls if c.path == SIGNAL_PATH + str(signal.signal_id)]
            assert [c.method for c in mine if c.status in (200, 201)] == ["PUT", "DELETE"]
        assert not [c for c in calls if c.status is not None and c.status >= 400]  # the poison never left

        # Lag back to zero for every group on every topic it consumes.
        consumed = {g: [prefix + t.name for t in CONSUMERS if groups[t] == g] for g in set(groups.values())}
        topics = [prefix + t.name for t in CONSUMERS]

        async def lag_is_zero() -> bool:
            try:
                sample = await probe.measure(topics, consumed)
            except BrokersUnavailable:  # the broker slow to answer on a loaded machine: measure again
                return False
            lags = [p for p in sample.lags if p.topic in topics]
            return len({(p.topic, p.partition) for p in lags}) == 4 * len(topics) and all(
                p.lag == 0 for p in lags
            )

        await wait_for(lag_is_zero, timeout_s=90, interval_s=0.5)
    except AssertionError:
        print(hub.log_tail())
        raise
    finally:
        await probe.close()
        await hub.stop()
        await store.close()


async def _empty(missing: Any) -> bool:
    return not await missing


async def published_once(store: Store, bootstrap: str, topic: str, *, within_s: float) -> dict[str, Envelope]:
    """Once the outbox has sent every row (within `within_s`), the messages on `topic` by message id: a
    publish whose acknowledgement or marking as sent was lost in a cut is sent again, with the same
    message id, and counts once."""

    async def drained() -> bool:
        async with store.connect() as conn:
            return not (await conn.execute(select(outbox.c.id).where(outbox.c.sent_at.is_(None)))).first()

    await wait_for(drained, timeout_s=within_s)
    return {
        e.message_id: e for e in map(Envelope.from_bytes, (r.value for r in await read_all(bootstrap, topic)))
    }


def _withdrawn(simulator: SimulatorServer, traffic: Traffic) -> set[str]:
    ok = {c.path for c in simulator.state.faults.calls if c.method == "DELETE" and c.status == 200}
    return {str(s.signal_id) for s in traffic.signals if SIGNAL_PATH + str(s.signal_id) in ok}


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
async def test_broker_unreachable_http_referrals_are_held_and_published_when_it_is_back(
    db_url: str, unique: str, tmp_path: Path, simulator: SimulatorServer
) -> None:
    proxy = CuttableProxy(target_port=0)
    broker = EmbeddedKafka(advertised_port=proxy.port)
    broker.start()
    proxy.target_port = broker.port
    await proxy.start()
    prefix = f"t{unique}."
    store = Store(db_url)
    await store.migrate()
    async with store.transaction() as session:
        _, key = await add_partner(session, "politie-chaos", PartnerType.POLITIE)
        # the case system, on whose key a caseworker asks for a zorgmelding, and where it goes
        _, system_key = await add_partner(session, "aurah-chaos", PartnerType.ZAAKSYSTEEM)
        await upsert_caseworker(session, ILSE)
        await set_receiver_delivery(session, ReceiverDelivery(VEILIG_THUIS, ReceiverType.JEUGDHULP, "kafka"))
    env = hub_env(f"127.0.0.1:{proxy.port}", db_url, unique, simulator.url)
    env["KETENHUB_HANDOVERS__ZORGMELDING_RECEIVERS"] = json.dumps([VEILIG_THUIS])
    hub = HubProcess(tmp_path, env, "intake")
    accepted: list[str] = []
    reported: list[str] = []  # the zorgmeldingen answered 202: handover ids
    try:
        await hub.start()
        records = police_records(60, seed=21)
        auth = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
        # a busy machine's commit may take seconds while the broker is cut: a timeout is no answer
        async with httpx.AsyncClient(base_url=hub.url, timeout=30, headers=auth) as client:

            async def post(batch: list[bytes]) -> list[str]:
                """Each answered 201, taken in: the store is up throughout, so the hub holds them all."""
                taken = []
                for body in batch:
                    answer = await client.post("/api/v1/politie/verwijzingen", content=body)
                    assert answer.status_code == 201, answer.text
                    taken.append(answer.json()["referralId"])
                accepted.extend(taken)
                return taken

            await post(records[:20])
            await proxy.cut()  # the broker is unreachable from here on

            async def broker_down() -> dict[str, str] | None:
                answer = await client.get("/readyz")
                checks = answer.json()["checks"]
                return checks if answer.status_code == 503 and checks["broker"] != "ok" else None

            async def only_broker_down() -> bool:
                # Each check has 3 s: on a loaded machine the store's can run out once, so ask again.
                checks = await broker_down()
                return checks is not None and checks["store"] == "ok"

            await wait_for(broker_down, timeout_s=30)
            await wait_for(only_broker_down, timeout_s=30)  # /readyz names what is down, and only that
            during_cut = await post(records[20:40])
            assert len(during_cut) == 20

            # The case system asks for zorgmeldingen on referrals the hub holds: each answered 202,
            # held, or 503 with Retry-After, held nowhere (the sender sends it again later).
            system = {"Authorization": f"Bearer {system_key}", "X-Medewerker": ILSE.caseworker_id}
            for referral_id in during_cut[:ZORGMELDINGEN]:
                melding = {
                    "referral_id": referral_id,
                    "receiver_organisation": VEILIG_THUIS,
                    "data_categories": ["PERSONALIA"],
                    "summary": "Zorgen over de thuissituatie.",
                }
                answer = await client.post("/api/v1/zorgmeldingen", json=melding, headers=system)
                assert answer.status_code in (202, 503), answer.text
                if answer.status_code == 503:
                    assert answer.headers.get("Retry-After"), answer.headers
                    continue
                assert answer.json()["referral_id"] == referral_id
                reported.append(answer.json()["handover_id"])
            assert reported, "the store is up: the hub holds at least some zorgmeldingen"
            assert len(set(reported)) == len(reported)  # each its own handover

            async with store.connect() as conn:  # acknowledged, in the store, waiting for the broker

                async def unsent(topic: str) -> Counter[str | None]:
                    """The unsent rows for `topic`, by the correlation id their messages carry."""
                    unsent_rows = (outbox.c.sent_at.is_(None), outbox.c.topic == topic)
                    query = select(outbox.c.headers).where(*unsent_rows)
                    return Counter(h.get(H_CORRELATION_ID) for h in (await conn.execute(query)).scalars())

                waiting = await unsent(prefix + REFERRAL_DECIDED.name)
                requested = await unsent(prefix + HANDOVER_REQUESTED.name)
                stored = dict(
                    (
                        await conn.execute(
                            select(handovers.c.id, handovers.c.youth_key).where(
                                handovers.c.purpose == ZORGMELDING
                            )
                        )
                    ).all()
                )
            assert all(waiting[r] == 1 for r in during_cut), waiting  # each its own unsent row
            assert requested == Counter(reported), requested  # each zorgmelding its own unsent row
            assert set(stored) == set(reported)  # a 503 held nothing, a 202 something
            assert (await client.get("/readyz")).status_code == 503  # still down, still saying so
            await proxy.start()  # back
            await post(records[40:])

            async def ready_again() -> bool:
                return (await client.get("/readyz")).status_code == 200

            await wait_for(ready_again, timeout_s=60)
        assert len(set(accepted)) == len(records)  # every post taken in, each its own referral

        messages = await published_once(store, broker.bootstrap, prefix + REFERRAL_DECIDED.name, within_s=60)
        decided = await read_all(broker.bootstrap, prefix + REFERRAL_DECIDED.name)
        per_referral = Counter(m.correlation_id for m in messages.values())
        assert per_referral == Counter(accepted)  # every acknowledged referral published, one message each
        bsns = {json.loads(r)["verdachte"]["bsn"] for r in records}
        assert {r.key for r in decided} <= {youth_key(TEST_SECRET, b).encode() for b in bsns}

        # Every zorgmelding answered 202 announced for routing, one message each, under its youth's key.
        announced = await read_all(broker.bootstrap, prefix + HANDOVER_REQUESTED.name)
        requests = {Envelope.from_bytes(r.value).message_id: Envelope.from_bytes(r.value) for r in announced}
        assert Counter(m.correlation_id for m in requests.values()) == Counter(reported)
        for m in requests.values():
            assert m.payload == {"handover_id": m.correlation_id, "purpose": ZORGMELDING}
        keys = [(r.key, stored[Envelope.from_bytes(r.value).correlation_id].encode()) for r in announced]
        assert all(k == youth for k, youth in keys), keys  # keyed by youth, as routing reads them

        # The consumers recover by themselves too: police records on Kafka are decided again.
        later = police_records(65, seed=22)[60:]
        await produce(broker.bootstrap, prefix + POLITIE_REFERRAL.name, [(None, v, []) for v in later])
        answers = await read_topic(
            broker.bootstrap, prefix + POLITIE_DECISION.name, expect=len(later), timeout_s=60
        )
        numbers = Counter(Envelope.from_bytes(r.value).payload["procesVerbaalNummer"] for r in answers)
        assert numbers == Counter(json.loads(v)["procesVerbaalNummer"] for v in later)
    except AssertionError:
        print(hub.log_tail())
        raise
    finally:
        await hub.stop()
        await proxy.cut()
        broker.stop()
        await store.close()


POLICE_URL = "/api/v1/politie/verwijzingen"
STORE_CUT_TIMEOUT_S = 30.0  # a sane partner's client: a post unanswered this long hung


@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)
async def test_store_unreachable_http_referrals_are_kept_or_refused_with_503_and_none_acknowledged_is_lost(
    kafka: EmbeddedKafka, db_url: str, unique: str, tmp_path: Path, simulator: SimulatorServer
) -> None:
    prefix = f"t{unique}."
    store = Store(db_url)  # the test's own connection: straight to PostgreSQL, never cut
    await store.migrate()
    async with store.transaction() as session:
        _, key = await add_partner(session, "politie-chaos", PartnerType.POLITIE)
    url = make_url(db_url)
    assert url.port is not None
    proxy = CuttableProxy(target_port=url.port)
    await proxy.start()
    through_proxy = url.set(host="127.0.0.1", port=proxy.port).render_as_string(hide_password=False)
    hub = HubProcess(tmp_path, hub_env(kafka.bootstrap, through_proxy, unique, simulator.url), "intake")
    records = police_records(60, seed=31)
    numbers = [json.loads(r)["procesVerbaalNummer"] for r in records]
    acknowledged: dict[int, str] = {}  # record -> the referral id its 201 (or a re-send's 200) named
    refused: dict[int, dict[str, Any]] = {}  # record -> the problem its 503 said
    try:
        await hub.start()
        auth = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
        async with httpx.AsyncClient(base_url=hub.url, timeout=STORE_CUT_TIMEOUT_S, headers=auth) as client:

            async def post(i: int, allowed: tuple[int, ...]) -> int:
                """Record `i` posted once; its answer one of `allowed`, and noted."""
                try:
                    answer = await client.post(POLICE_URL, content=records[i])
                except httpx.TimeoutException:
                    raise AssertionError(f"record {i}: no answer within {STORE_CUT_TIMEOUT_S} s") from None
                assert answer.status_code in allowed, (i, answer.status_code, answer.text)
                if answer.status_code == 503:  # refused: the partner is told when to send it again
                    assert int(answer.headers["Retry-After"]) > 0, answer.headers
                    assert answer.headers["content-type"] == "application/problem+json"
                    refused[i] = answer.json()
                    return 503
                body = answer.json()
                assert body["caseReference"] == numbers[i]
                assert body["duplicate"] is (answer.status_code == 200)
                acknowledged[i] = body["referralId"]
                return int(answer.status_code)

            for i in range(10):  # the store up: each taken in
                await post(i, (201,))

            # The cut lands while posts are in flight: each answered 201, kept, or 503 with Retry-After.
            # It begins with the worst moment: the connection lost once PostgreSQL kept record 10's
            # transaction, before the hub heard so (its case reference travels in that transaction).
            proxy.lose_commit_answer(after=numbers[10].encode())
            pending = list(range(10, 40))
            answered = asyncio.Event()

            async def poster() -> None:
                while pending:
                    await post(pending.pop(0), (201, 503))
                    if len(acknowledged) + len(refused) >= 25:  # 15 of these answered: cut now
                        answered.set()

            posters = [asyncio.create_task(poster()) for _ in range(4)]
            cue = asyncio.create_task(answered.wait())
            first = asyncio.FIRST_COMPLETED  # the cue, or a poster that failed
            await asyncio.wait([cue, *posters], timeout=STORE_CUT_TIMEOUT_S, return_when=first)
            cue.cancel()
            await proxy.cut()  # PostgreSQL unreachable from here on
            failed = [e for e in await asyncio.gather(*posters, return_exceptions=True) if e is not None]
            if failed:
                raise failed[0]
            assert answered.is_set()  # the cut came while posts were still being sent
            assert proxy.commits_lost == 1
            lost = refused.get(10, {})  # said to be perhaps kept, not that nothing was
            assert lost.get("title") == "Niet zeker of dit is opgeslagen", (lost, acknowledged.get(10))

            async def store_down() -> dict[str, str] | None:
                answer = await client.get("/readyz")
                checks: dict[str, str] = answer.json()["checks"]
                if answer.status_code != 503 or checks["store"] == "ok":
                    return None
                assert int(answer.headers["Retry-After"]) > 0, answer.headers
                return checks

            async def only_store_down() -> bool:
                # Each check has 3 s: on a loaded machine the broker's can run out once, so ask again.
                checks = await store_down()
                return checks is not None and all(v == "ok" for k, v in checks.items() if k != "store")

            await wait_for(store_down, timeout_s=30)
            await wait_for(only_store_down, timeout_s=30)  # /readyz names what is down, and only that
            during = [await post(i, (201, 503)) for i in range(40, 50)]
            assert 503 in during, "the store is unreachable: the hub cannot keep every referral"
            assert await store_down() is not None  # still down, still saying so
            # Looked at past the proxy: what was answered 201 is in the store with the id it was given,
            # and what a 503 said was not kept is not there.
            async with store.connect() as conn:
                held = dict((await conn.execute(select(referrals.c.case_reference, referrals.c.id))).all())
            assert {numbers[i]: held.get(numbers[i]) for i in acknowledged} == {
                numbers[i]: referral_id for i, referral_id in acknowledged.items()
            }
            nothing_kept = [i for i, problem in refused.items() if "niets opgeslagen" in problem["detail"]]
            assert nothing_kept and not [numbers[i] for i in nothing_kept if numbers[i] in held]
            assert hub.proc is not None and hub.proc.poll() is None  # the hub itself stayed up

            await proxy.start()  # back

            async def ready_again() -> bool:
                return (await client.get("/readyz")).status_code == 200

            await wait_for(ready_again, timeout_s=60)  # by itself: no restart
            assert hub.starts == 1 and hub.proc.poll() is None
            # The partner sends what was refused again: kept now, once. A 200 (already received, rule
            # 7) only where the 503 did not say nothing was kept: its COMMIT's answer was what got lost.
            again = {i: await post(i, (200, 201)) for i in sorted(refused)}
            for i, status in again.items():
                if status == 200:
                    assert "niets opgeslagen" not in refused[i].get("detail", ""), (i, refused[i])
            assert again[10] == 200  # kept before the cut: the re-send answered with what it made
            for i in range(50, 60):  # and the store up again: each taken in
                await post(i, (201,))
        assert sorted(acknowledged) == list(range(len(records)))  # each record kept in the end

        async with store.connect() as conn:
            kept = (await conn.execute(select(referrals.c.case_reference, referrals.c.id))).all()
        assert Counter(number for number, _ in kept) == Counter(numbers)  # each once, none lost
        assert dict(kept) == {numbers[i]: referral_id for i, referral_id in acknowledged.items()}

        messages = await published_once(store, kafka.bootstrap, prefix + REFERRAL_DECIDED.name, within_s=30)
        assert Counter(m.correlation_id for m in messages.values()) == Counter(acknowledged.values())
    except AssertionError:
        print(hub.log_tail())
        raise
    finally:
        await hub.stop()
        await proxy.cut()
        await store.close()
