"""Partner records with headers the hub cannot read as text, and a record that fails its batch outside
its own handling: on the real broker and both stores, every other record has its effect once and in
order, the bad one is dead-lettered alone, and the group's offsets reach the end of the topic."""

from __future__ import annotations

from collections.abc import Sequence

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from hub.audit import AuditEntry, write_audit
from hub.embedded import EmbeddedKafka
from hub.ops.lag import LagProbe
from hub.runtime import Hub
from hub.spine import Tx
from hub.spine.consumer import DeadLetter
from hub.spine.dlq import DLQ_EXC_CLASS, DLQ_GROUP
from hub.store import Store
from hub.store.tables import audit_log
from schemas.envelope import H_MESSAGE_ID, H_TRANSACTION_ID, Envelope
from tests.conftest import make_settings
from tests.helpers.hubs import IN, OUT, echo_component, running_hub
from tests.helpers.kafka import Latin1Key, headers_of, produce, read_topic, wait_for, write_keys_as_given

pytestmark = pytest.mark.integration

LATIN_1 = "Politie Zoetermeer café".encode("latin-1")  # a partner's system that is not UTF-8
Header = tuple[str, bytes | None]


async def _effects(store: Store) -> list[int]:
    """The `n` of every handled record, in the order the effects were written."""
    async with store.connect() as conn:
        query = select(audit_log.c.objects).where(audit_log.c.action == "test.effect")
        return [o["n"] for o in (await conn.execute(query.order_by(audit_log.c.id))).scalars()]


def _headers(env: Envelope, name: str | None = None, value: bytes | None = None) -> list[Header]:
    """`env`'s headers; with `name`, that one set to `value` (added when it has no such header)."""
    headers: list[Header] = [(k, v) for k, v in env.headers() if k != name]
    return headers if name is None else [*headers, (name, value)]


async def _all_done(bootstrap: str, hub: Hub, sent: int, effects: int, dead: int) -> None:
    """Wait until `effects` records took effect, `dead` were dead-lettered and the echo group's
    offsets are at the end of the topic (`sent` records): nothing left behind, nothing stalled."""
    assert hub.store is not None
    store, topic, group = hub.store, hub.topic(IN.name), hub.group("echo")
    await wait_for(lambda: _counted(store, effects), timeout_s=30)
    await read_topic(bootstrap, hub.topic(IN.dlq), expect=dead)
    probe = LagProbe({"bootstrap_servers": bootstrap}, timeout_s=30, describe_groups=False)  # a busy machine

    async def at_the_end() -> bool:
        sample = await probe.measure([topic], {group: [topic]})
        end = sum(o.end for o in sample.offsets.values())
        return end == sent and sample.group_lag(group) == 0 and bool(sample.lags)

    try:
        await wait_for(at_the_end, timeout_s=30, interval_s=0.5)
    finally:
        await probe.close()


async def _counted(store: Store, n: int) -> bool:
    return len(await _effects(store)) >= n


async def _run(
    kafka: EmbeddedKafka,
    db_url: str,
    unique: str,
    records: Sequence[tuple[Envelope, list[Header]]],
    dead: int,
) -> tuple[list[int], list[dict[str, str]]]:
    """Send `records` (one youth: one partition, an order to keep) to the echo handler; what took
    effect, and the headers of each dead letter."""
    async with running_hub(make_settings(kafka, db_url, unique), echo_component) as hub:
        assert hub.store is not None
        sent = [(b"youth-a", env.to_bytes(), headers) for env, headers in records]
        await produce(kafka.bootstrap, hub.topic(IN.name), sent)  # type: ignore[arg-type]  # null values
        await _all_done(kafka.bootstrap, hub, len(records), len(records) - dead, dead)
        effects = await _effects(hub.store)
        letters = await read_topic(kafka.bootstrap, hub.topic(IN.dlq), expect=dead, settle_s=1.0)
    return effects, [headers_of(r) for r in letters]


async def test_a_header_not_utf8_or_null_costs_no_record_of_its_batch(
    kafka: EmbeddedKafka, db_url: str, unique: str
) -> None:
    """FastStream read every header of a batch as strict UTF-8 before the spine saw the batch: one
    partner record with a Latin-1 or null header failed it, nothing rewound it, and the next batch's
    ack committed past every record fetched with it (other youths' too), with no dead letter. A
    header the hub does not read is no reason to refuse a record: all of them take effect."""
    envs = [Envelope(type="Test", payload={"n": n}) for n in range(7)]
    records = [(e, _headers(e)) for e in envs]
    records[2] = (envs[2], _headers(envs[2], "x-partner-note", LATIN_1))
    records[4] = (envs[4], _headers(envs[4], "x-partner-note", None))

    effects, letters = await _run(kafka, db_url, unique, records, dead=0)

    assert effects == list(range(7))  # each once, in the order sent
    assert letters == []


async def test_a_header_key_not_utf8_stalls_nothing(
    kafka: EmbeddedKafka, db_url: str, unique: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """aiokafka's record reader decoded every header key as strict UTF-8 inside the fetcher: a record
    with a Latin-1 key dropped the records fetched before it and failed every fetch after, so its
    partition stood still with no dead letter. Such a key is a header the hub does not know: its
    record takes effect like the others; dead-lettered for another reason, its letter shows the key
    with U+FFFD, as it shows a value that is not UTF-8."""
    write_keys_as_given(monkeypatch)
    key = Latin1Key("x-partner-notitie-café")
    envs = [Envelope(type="Test", payload={"n": n}) for n in range(7)]
    records = [(e, _headers(e)) for e in envs]
    for n in (2, 5):
        records[n] = (envs[n], [*_headers(envs[n]), (key, b"ok")])
    sent = [(e.to_bytes(), h) for e, h in records]
    sent[4] = (b"not an envelope", [*_headers(envs[4]), (key, b"ok")])

    async with running_hub(make_settings(kafka, db_url, unique), echo_component) as hub:
        assert hub.store is not None
        await produce(kafka.bootstrap, hub.topic(IN.name), [(b"youth-a", v, h) for v, h in sent])
        await _all_done(kafka.bootstrap, hub, len(sent), len(sent) - 1, 1)
        effects = await _effects(hub.store)
        [letter] = await read_topic(kafka.bootstrap, hub.topic(IN.dlq), expect=1, settle_s=1.0)

    assert effects == [0, 1, 2, 3, 5, 6]  # each once, in the order sent
    assert letter.value == b"not an envelope"
    assert headers_of(letter)["x-partner-notitie-caf\ufffd"] == "ok"


async def test_an_id_header_not_utf8_or_null_dead_letters_its_record_alone(
    kafka: EmbeddedKafka, db_url: str, unique: str
) -> None:
    """A null message-id or transaction-id header failed the spine outside a record's own handling
    (`bytes(None)`): its batch was rewound and failed again every second, for ever, with no dead
    letter. Such a header, or one not UTF-8 (read as U+FFFD, two ids would be one), is an unusable id:
    the record is dead-lettered with its headers as text, and the records around it take effect."""
    bad: dict[int, tuple[str, bytes | None]] = {
        1: (H_MESSAGE_ID, None),
        3: (H_TRANSACTION_ID, None),
        5: (H_MESSAGE_ID, LATIN_1),
        7: (H_TRANSACTION_ID, LATIN_1),
    }
    envs = [Envelope(type="Test", payload={"n": n}) for n in range(9)]
    records = [(e, _headers(e, *bad.get(n, (None, None)))) for n, e in enumerate(envs)]

    effects, letters = await _run(kafka, db_url, unique, records, dead=len(bad))

    assert effects == [n for n in range(9) if n not in bad]  # each once, in the order sent
    assert sorted(int(h["dlq-original-offset"]) for h in letters) == sorted(bad)
    for h in letters:
        n = int(h["dlq-original-offset"])  # one partition from offset 0: the offset is n
        name, value = bad[n]
        assert h[DLQ_EXC_CLASS].endswith("BadHeader")
        assert h["message-type"] == envs[n].header_map()["message-type"]  # its own headers, as text
        if name == H_MESSAGE_ID:
            assert h[H_MESSAGE_ID] == ("" if value is None else "Politie Zoetermeer caf\ufffd")
            assert h[H_TRANSACTION_ID] == envs[n].transaction_id
        else:  # unusable: its dead letter carries the one the hub made (rule 19), not the bytes
            assert h[H_MESSAGE_ID] == envs[n].message_id
            assert h[H_TRANSACTION_ID] == envs[n].message_id  # the message id stands in for it
    assert not any("Politie" in v for h in letters for k, v in h.items() if k.startswith("dlq-"))


async def test_a_record_that_fails_its_batch_outside_its_handling_is_dead_lettered_not_stalling(
    kafka: EmbeddedKafka, db_url: str, unique: str
) -> None:
    """A record whose failure escapes its own handling (here its handler's error answer cannot be
    written) failed its whole batch, which was rewound and failed again every second, for ever: its
    partition, every youth on it, stood still. After a few tries (`ISOLATE_AFTER`) it is handled a
    record at a time: the record is dead-lettered alone, the others take effect once and in order."""
    settings = make_settings(kafka, db_url, unique)

    def component(hub: Hub) -> None:
        assert hub.spine is not None

        @hub.spine.subscribe(hub.topic(IN.name), group=hub.group("echo"), dlq=hub.topic(IN.dlq))
        async def handle(tx: Tx, message: Envelope) -> None:
            """Record an effect; refuse the unwritable one with an audit entry that cannot be stored."""
            if message.payload.get("unwritable"):
                unstorable = AuditEntry(action="test.refused", user="test", objects={"n": object()})
                raise DeadLetter(ValueError("refused"), audit=[unstorable])
            await tx.audit(AuditEntry(action="test.effect", user="test", objects={"n": message.payload["n"]}))

    envs = [Envelope(type="Test", payload={"n": n, "unwritable": n == 3}) for n in range(7)]
    async with running_hub(settings, component) as hub:
        assert hub.store is not None
        await produce(
            kafka.bootstrap, hub.topic(IN.name), [(b"youth-a", e.to_bytes(), e.headers()) for e in envs]
        )
        await _all_done(kafka.bootstrap, hub, len(envs), len(envs) - 1, 1)
        effects = await _effects(hub.store)
        [letter] = await read_topic(kafka.bootstrap, hub.topic(IN.dlq), expect=1, settle_s=1.0)
    assert effects == [0, 1, 2, 4, 5, 6]
    assert letter.value == envs[3].to_bytes()
    headers = headers_of(letter)
    assert headers[H_MESSAGE_ID] == envs[3].message_id
    assert headers[DLQ_GROUP] == hub.group("echo")


async def test_what_a_dead_letter_means_is_kept_with_it_and_its_failure_does_not_stall(
    kafka: EmbeddedKafka, db_url: str, unique: str
) -> None:
    """`DeadLetter.then` records what a dead letter means in the handler's own state (a handover
    marked undelivered) in the dead letter's transaction, though the handler's effects roll back;
    when it fails, the dead letter stands without it and the records after it go on."""
    settings = make_settings(kafka, db_url, unique)

    async def meant(session: AsyncSession) -> None:
        entry = AuditEntry(action="test.effect", user="test", objects={"n": 100})
        await write_audit(session, entry, transaction_id="tx-meant", system="test")

    async def fails(session: AsyncSession) -> None:
        raise ValueError("cannot record what it means")

    def component(hub: Hub) -> None:
        assert hub.spine is not None

        @hub.spine.subscribe(hub.topic(IN.name), group=hub.group("echo"), dlq=hub.topic(IN.dlq))
        async def handle(tx: Tx, message: Envelope) -> None:
            n = message.payload["n"]
            await tx.audit(AuditEntry(action="test.effect", user="test", objects={"n": n}))
            if n in (2, 4):  # its effect above rolls back; what the dead letter means is kept, or not
                raise DeadLetter(ValueError("refused"), then=meant if n == 2 else fails)

    envs = [Envelope(type="Test", payload={"n": n}) for n in range(6)]
    async with running_hub(settings, component) as hub:
        assert hub.store is not None
        await produce(
            kafka.bootstrap, hub.topic(IN.name), [(b"youth-a", e.to_bytes(), e.headers()) for e in envs]
        )
        await _all_done(kafka.bootstrap, hub, len(envs), len(envs) - 2 + 1, 2)
        effects = await _effects(hub.store)
        counted = hub.metrics.registry.get_sample_value(
            "ketenhub_messages_total", {"topic": hub.topic(IN.name), "outcome": "dead_lettered"}
        )
    assert effects == [0, 1, 100, 3, 5]
    assert counted == 2


async def test_a_reply_to_header_does_not_make_the_hub_publish_where_it_names(
    kafka: EmbeddedKafka, db_url: str, unique: str
) -> None:
    """FastStream answered a record's `reply_to` header: it published the handler's result (an empty
    record) to the topic the header named, with the hub's rights; a partner chose where."""
    settings = make_settings(kafka, db_url, unique)
    env = Envelope(type="Test", payload={"n": 1})
    async with running_hub(settings, echo_component) as hub:
        assert hub.store is not None
        target = hub.topic(OUT.name)  # the topic the echo handler answers on: its answer comes once
        headers = [*env.headers(), ("reply_to", target.encode())]
        await produce(kafka.bootstrap, hub.topic(IN.name), [(b"youth-a", env.to_bytes(), headers)])
        out = await read_topic(kafka.bootstrap, target, expect=1, settle_s=2.0)
    assert [Envelope.from_bytes(r.value).type for r in out] == ["Echoed"]
