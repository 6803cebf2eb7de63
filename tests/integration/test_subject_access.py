"""Rule 20: a subject-access export of everything the hub holds and disclosed about one BSN."""

from __future__ import annotations

import asyncio
import json
import stat
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any
from unittest.mock import patch

import httpx
import pytest
from sqlalchemy import insert, select
from typer.testing import CliRunner

from hub.embedded import EmbeddedKafka
from hub.handovers.tables import receiver_deliveries
from hub.intake.tables import referrals
from hub.ops.auth import add_operator
from hub.ops.inzage import export
from hub.store.tables import audit_log
from schemas.pseudonym import youth_ref
from tests.helpers.kafka import read_topic, wait_for
from tests.integration.test_handover_flow import World, world

pytestmark = pytest.mark.integration
PASSWORD = "a long enough password"


async def _bsn(w: World, referral_id: str) -> str:
    assert w.hub.store is not None
    async with w.hub.store.connect() as conn:
        return str(
            (await conn.execute(select(referrals.c.bsn).where(referrals.c.id == referral_id))).scalar()
        )


async def _logged_in(w: World, name: str, role: str) -> httpx.AsyncClient:
    assert w.hub.store is not None
    await add_operator(w.hub.store, name, PASSWORD, role)
    client = httpx.AsyncClient(transport=w.client._transport, base_url="http://hub")
    r = await client.post("/ops/login", json={"username": name, "password": PASSWORD})
    assert r.status_code in (200, 303), r.text
    return client


async def test_the_export_holds_what_the_hub_holds_and_disclosed_about_one_bsn_and_is_audited(
    kafka: EmbeddedKafka, db_url: str, unique: str
) -> None:
    async with world(kafka, db_url, unique) as w:
        assert w.hub.store is not None
        rid, key = await w.referral(17)
        other_rid, other_key = await w.referral(15)
        bsn = await _bsn(w, rid)
        consent = await w.consent(rid, recipient_organisations=["jongerenwerk-dh", "jeugdhulp-dh"])
        delivered = await w.handover(rid)
        await wait_for(lambda: len(w.receiver.handovers()) == 1)
        # a second reader of the jeugdhulp topic: the handover to it becomes a dead letter
        async with w.hub.store.transaction() as session:
            await session.execute(
                insert(receiver_deliveries).values(
                    organisation="jeugdhulp-rijswijk", receiver_type="JEUGDHULP", mode="kafka", active=True
                )
            )
        dead = await w.handover(rid, org="jeugdhulp-dh", data_categories=["PERSONALIA"])
        dlq = w.hub.topic("handover.dispatch.dlq.v1")
        assert len(await read_topic(kafka.bootstrap, dlq, expect=1, settle_s=0.5)) == 1

        async def disclosed() -> bool:
            return (await w.status(delivered))["delivered_at"] is not None

        await wait_for(disclosed)

        operator = await _logged_in(w, "otto", "operator")
        officer = await _logged_in(w, "petra", "privacy_officer")
        try:
            refused = await operator.post("/ops/api/inzage", json={"bsn": bsn})
            assert refused.status_code == 403
            for wrong in ("123456789", "12345678X", "1234567890", ""):
                bad = await officer.post("/ops/api/inzage", json={"bsn": wrong})
                assert bad.status_code in (400, 422), (wrong, bad.status_code, bad.text)
                assert wrong not in bad.text or not wrong
            answer = await officer.post("/ops/api/inzage", json={"bsn": bsn})
            assert answer.status_code == 200, answer.text
            doc = answer.json()
        finally:
            await operator.aclose()
            await officer.aclose()

        assert doc["bsn"] == bsn and doc["youth_key"] == key and doc["incomplete"] == []
        # the hub's own topics, whose last days may still hold copies of the youth's messages: named
        transit = {t["topic"]: t["kept_days"] for t in doc["in_transit"]["topics"]}
        assert (
            transit[w.hub.topic("handover.dispatch.v1")] == 7
            and transit[w.hub.topic("referral.received.v1")] == 7
        )
        assert not [t for t in transit if ".dlq." in t]  # those are read, under dead_letters
        assert [r["id"] for r in doc["referrals"]] == [rid]
        assert doc["referrals"][0]["referral"]["youth"]["bsn"] == bsn  # what is held, as held
        assert [c["id"] for c in doc["consents"]] == [consent["consent_id"]]
        assert sorted(h["id"] for h in doc["handovers"]) == sorted([delivered, dead])
        assert [d["id"].rsplit(":", 2)[0] for d in doc["dead_letters"]] == [dlq]
        assert doc["dead_letters"][0]["payload"]["payload"]["handover_id"] == dead
        actions = {a["action"] for a in doc["audit"]}
        assert {"consent.recorded", "handover.sent", "handover.disclosed"} <= actions
        assert doc["counts"]["audit"] == len(doc["audit"]) and doc["counts"]["referrals"] == 1
        text = json.dumps(doc)
        assert other_rid not in text and other_key not in text  # nothing of another youth

        async with w.hub.store.connect() as conn:
            rows = list(
                await conn.execute(
                    select(audit_log.c.user, audit_log.c.youth_key, audit_log.c.objects).where(
                        audit_log.c.action == "subject_access.exported"
                    )
                )
            )
        [(user, youth, objects)] = rows
        assert user == "petra" and youth == key
        assert objects["counts"]["referrals"] == 1 and objects["complete"] is True
        assert bsn not in json.dumps(objects)


async def test_a_handover_a_receiver_got_by_its_own_pseudonym_is_in_the_export(
    kafka: EmbeddedKafka, db_url: str, unique: str
) -> None:
    """A receiver knows the youth by a pseudonym of its own (`youth_ref`): the record on its Kafka
    topic is keyed by it and names no youth key, nor, without PERSONALIA, a BSN. The export passed
    it over as "may be the youth's" under `incomplete`, though the hub made it."""
    async with world(kafka, db_url, unique) as w:
        assert w.hub.store is not None
        rid, key = await w.referral(17)
        bsn = await _bsn(w, rid)
        await w.consent(rid, recipient_organisations=["jeugdhulp-dh"], data_categories=["HULPVRAAG"])
        hid = await w.handover(rid, org="jeugdhulp-dh", data_categories=["HULPVRAAG"])

        async def disclosed() -> bool:
            return (await w.status(hid))["delivered_at"] is not None

        await wait_for(disclosed)
        doc = await export(
            w.hub.store, bsn=bsn, secret=w.hub.settings.secret_value(), by="petra", dead_letters=None
        )
        ref = youth_ref(w.hub.settings.secret_value(), "jeugdhulp-dh", key)
        outbound = [r for r in doc["outbox"] if r["topic"].endswith("handover.outbound.jeugdhulp.v1")]
        assert [r["key"] for r in outbound] == [ref]
        assert not [gap for gap in doc["incomplete"] if gap.startswith("outbox")], doc["incomplete"]

        # the receiver's answer, keyed by that pseudonym and naming the handover, dead-lettered: the
        # export passed it over as "may be the youth's" (it names one of the youth's ids)
        from hub.ops.dlq import DeadLetters

        dlq = f"t{unique}.handover.answers.jeugdhulp.dlq.v1"
        answer = {"type": "HandoverAnswer", "payload": {"handover_id": hid, "status": "ONTVANGEN"}}
        # and a receiver's batch under the youth's key that answers another youth's handover as well:
        # not the youth's alone, and not handed over whole (the other youth's answer with it)
        batch = [answer["payload"], {"handover_id": str(uuid.uuid4()), "status": "GEWEIGERD"}]
        letter, _ = await _letters_with(
            kafka.bootstrap, dlq, [(ref.encode(), answer), (ref.encode(), json.dumps(batch).encode())]
        )
        letters = DeadLetters(w.hub.store, w.hub.kafka_options, [dlq], secret=w.hub.settings.secret_value())
        doc = await export(
            w.hub.store, bsn=bsn, secret=w.hub.settings.secret_value(), by="petra", dead_letters=letters
        )
        assert [d["id"] for d in doc["dead_letters"]] == [letter]
        [gap] = [gap for gap in doc["incomplete"] if gap.startswith("dead_letters")]
        assert gap.startswith("dead_letters: 1 message(s)") and "1 a batch" in gap, gap


async def _letters_with(
    bootstrap: str, topic: str, records: list[tuple[bytes, dict[str, Any] | bytes]]
) -> list[str]:
    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        ids = []
        for key, payload in records:
            value = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
            sent = await producer.send_and_wait(topic, value, key=key)
            ids.append(f"{topic}:{sent.partition}:{sent.offset}")
        return ids
    finally:
        await producer.stop()


def test_the_command_line_export_reads_the_bsn_from_stdin_and_writes_a_private_file(
    kafka: EmbeddedKafka, tmp_path: Path, unique: str
) -> None:
    from hub.audit import AuditEntry, write_audit
    from hub.cli import app
    from hub.store import Store
    from schemas.pseudonym import youth_key as pseudonym
    from tests.conftest import TEST_SECRET
    from tests.integration.test_ops_cli import _a_dlq_topic, _dlq_env, _write_letters

    bsn, other = "111222333", "123456782"
    key = pseudonym(TEST_SECRET, bsn)
    db = tmp_path / "hub.db"

    async def audited_read() -> None:
        store = Store(f"sqlite+aiosqlite:///{db}")
        try:
            await store.migrate()
            async with store.transaction() as session:
                for youth in (key, pseudonym(TEST_SECRET, other)):
                    entry = AuditEntry(action="referral.read", user="cw-1", youth_key=youth)
                    await write_audit(session, entry, transaction_id=None, system="test")
        finally:
            await store.close()

    asyncio.run(audited_read())
    topic = _a_dlq_topic(unique)
    mine, _ = asyncio.run(_write_letters(kafka.bootstrap, topic, [(bsn.encode(), {}), (other.encode(), {})]))
    # a partner's record naming the youth's BSN as a number; another youth's whose parent's phone
    # number holds the BSN's digits
    as_number, not_theirs = asyncio.run(
        _letters_with(
            kafka.bootstrap,
            topic,
            [
                (b"pv-1", {"verdachte": {"bsn": int(bsn)}}),
                (b"pv-2", {"verdachte": {"bsn": other}, "ouder": {"telefoon": f"0{bsn}9"}}),
            ],
        )
    )
    env, runner = _dlq_env(db, kafka.bootstrap, unique), CliRunner()
    out = tmp_path / "inzage.json"
    made = runner.invoke(app, ["inzage", "--out", str(out)], input=f"{bsn}\n", env=env)
    assert made.exit_code == 0, made.output
    assert "export made (referrals 0" in made.output and "incomplete" not in made.output
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    doc = json.loads(out.read_text())
    assert sorted(d["id"] for d in doc["dead_letters"]) == sorted([mine, as_number])
    assert not_theirs not in json.dumps(doc)
    assert [(a["action"], a["user"]) for a in doc["audit"]] == [("referral.read", "cw-1")]

    wrong = runner.invoke(app, ["inzage"], input="123456789\n", env=env)
    assert wrong.exit_code == 2 and "not a BSN" in wrong.output and "123456789" not in wrong.output

    embedded = {k: v for k, v in env.items() if k != "KETENHUB_KAFKA__BOOTSTRAP_SERVERS"}
    partial = runner.invoke(app, ["inzage"], input=f"{bsn}\n", env=embedded)
    assert partial.exit_code == 0 and "incomplete: dead_letters" in partial.output, partial.output

    # a letter that holds the BSN's digits and names no BSN may be the youth's, and cannot be told:
    # not in the export, and the export says it is incomplete
    [unsure] = asyncio.run(_letters_with(kafka.bootstrap, topic, [(b"pv-3", f"over {bsn}, zie PV".encode())]))
    told = runner.invoke(app, ["inzage", "--out", str(out)], input=f"{bsn}\n", env=env)
    assert told.exit_code == 0 and "incomplete: dead_letters: 1 message(s)" in told.output, told.output
    assert bsn not in told.output and unsure not in out.read_text()
    assert sorted(d["id"] for d in json.loads(out.read_text())["dead_letters"]) == sorted([mine, as_number])

    async def exports() -> list[Any]:
        store = Store(f"sqlite+aiosqlite:///{db}")
        try:
            async with store.connect() as conn:
                query = select(audit_log.c.user, audit_log.c.youth_key, audit_log.c.objects).where(
                    audit_log.c.action == "subject_access.exported"
                )
                return list(await conn.execute(query))
        finally:
            await store.close()

    rows = asyncio.run(exports())
    assert [(u.startswith("cli"), y, o["complete"]) for u, y, o in rows] == [
        (True, key, True),
        (True, key, False),
        (True, key, False),
    ]


def _exports_audited(db: Path) -> int:
    from hub.store import Store

    async def count() -> int:
        store = Store(f"sqlite+aiosqlite:///{db}")
        try:
            await store.migrate()
            async with store.connect() as conn:
                query = select(audit_log.c.id).where(audit_log.c.action == "subject_access.exported")
                return len((await conn.execute(query)).all())
        finally:
            await store.close()

    return asyncio.run(count())


def test_an_export_file_that_cannot_be_written_is_refused_before_the_export_and_none_is_left_half(
    tmp_path: Path,
) -> None:
    """`--out` into a missing directory ended in a FileNotFoundError traceback, onto a directory in an
    IsADirectoryError that left `<dir>.part` with the BSN on disk; both after the export was audited.
    A `.part` file there already kept its mode (0644) and a symlink by that name was followed."""
    from hub.cli import app
    from tests.conftest import TEST_SECRET

    bsn, db, runner = "111222333", tmp_path / "hub.db", CliRunner()
    env = {"KETENHUB_DATABASE__URL": f"sqlite+aiosqlite:///{db}", "KETENHUB_SECRET": TEST_SECRET}
    exports = tmp_path / "exports"
    exports.mkdir()
    for out, says in (
        (tmp_path / "missing" / "x.json", "No such file or directory"),
        (exports, "Is a directory"),
    ):
        refused = runner.invoke(app, ["inzage", "--out", str(out)], input=f"{bsn}\n", env=env)
        assert refused.exit_code == 2, refused.output
        assert refused.exception is None or isinstance(refused.exception, SystemExit), refused.exception
        assert refused.output == f"ketenhub: cannot write the export to {out}: {says}\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["exports"]  # no database, no .part
    assert _exports_audited(db) == 0

    # written over a file readable by all: the export is the owner's alone, and nothing else is left
    out, elsewhere = exports / "inzage.json", tmp_path / "elsewhere.json"
    out.write_text("old")
    out.chmod(0o644)
    made = runner.invoke(app, ["inzage", "--out", str(out)], input=f"{bsn}\n", env=env)
    assert made.exit_code == 0, made.output
    assert stat.S_IMODE(out.stat().st_mode) == 0o600 and json.loads(out.read_text())["bsn"] == bsn
    assert [p.name for p in exports.iterdir()] == ["inzage.json"]
    # a symlink where the old code put its partial file, or in the file's place: never written through
    elsewhere.write_text("someone else's")
    (exports / "inzage.json.part").symlink_to(elsewhere)
    assert runner.invoke(app, ["inzage", "--out", str(out)], input=f"{bsn}\n", env=env).exit_code == 0
    (exports / "inzage.json.part").unlink()
    out.unlink()
    out.symlink_to(elsewhere)
    assert runner.invoke(app, ["inzage", "--out", str(out)], input=f"{bsn}\n", env=env).exit_code == 0
    assert not out.is_symlink() and stat.S_IMODE(out.stat().st_mode) == 0o600
    assert elsewhere.read_text() == "someone else's"
    assert _exports_audited(db) == 3

    # the disk full while writing: said so, and no part of the export is left on disk
    def full(_fd: int) -> None:
        raise OSError(28, "No space left on device")

    with patch("os.fsync", full):
        failed = runner.invoke(
            app, ["inzage", "--out", str(exports / "full.json")], input=f"{bsn}\n", env=env
        )
    assert failed.exit_code == 1 and "No space left on device" in failed.output, failed.output
    assert bsn not in failed.output
    assert sorted(p.name for p in exports.iterdir()) == ["inzage.json"]


async def test_outbox_rows_pending_or_parked_are_the_youths_by_what_they_name_not_by_a_run_of_digits(
    store: Any,
) -> None:
    """On SQLite a parked row was never found by its content (a BLOB never matches LIKE), yet the
    export said it was complete; on PostgreSQL a run of the BSN's digits anywhere (another youth's
    parent's phone) took that youth's row in. Pending rows were found by their key alone."""
    from hub.audit import AuditEntry, write_audit
    from hub.ops.inzage import export
    from hub.ops.parked import release
    from hub.store.tables import outbox, outbox_parked
    from schemas.envelope import utcnow
    from schemas.pseudonym import youth_key as pseudonym
    from tests.conftest import TEST_SECRET

    bsn, other = "111222333", "123456782"
    key, other_key = pseudonym(TEST_SECRET, bsn), pseudonym(TEST_SECRET, other)
    messages: list[tuple[str, str, Any]] = [  # (message id, key as its sender wrote it, payload)
        ("mine-1", "PV-2024-1", {"verdachte": {"bsn": bsn, "naam": "Sam Jansen"}}),
        ("mine-2", "hub", {"payload": {"youth_key": key}}),
        ("mine-3", "PV-2024-2", {"verdachte": {"bsn": int(bsn)}}),  # a number, as some partners send it
        ("mine-4", bsn, {}),  # keyed by the BSN, naming none
        ("mine-5", key, {"payload": {}}),
        ("mine-6", f"jongerenwerk-dh:{key}", {}),
        ("theirs-1", "PV-2024-3", {"verdachte": {"bsn": other}, "ouder": {"telefoon": bsn}}),
        ("theirs-2", "PV-2024-4", {"verdachte": {"bsn": other}, "ouder": {"telefoon": f"0{bsn}9"}}),
        ("theirs-3", bsn, {"verdachte": {"bsn": other}}),  # a reference that has the BSN's digits
        ("theirs-4", other_key, {"payload": {"youth_key": other_key}}),
        ("unsure", "melding-5", f"melding over de jongere {bsn}, zie dossier".encode()),
        ("mine-7", "LP-1", f"Dossiernummer;BSN;Achternaam\nLP-1;{bsn};Jansen\n".encode()),  # a batch of one
        # a leerplicht batch naming the youth among others: not handed over whole (it took the first
        # row's BSN as the whole batch's, and missed it when the youth was in a later row)
        (
            "unsure-batch",
            "LP-2",
            f"Dossiernummer;BSN;Achternaam\nLP-2;{other};Visser\nLP-3;{bsn};Jansen\n".encode(),
        ),
    ]
    now = utcnow()
    async with store.transaction() as session:
        for n, (message_id, sender_key, payload) in enumerate(messages, start=1):
            value = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
            row: dict[str, Any] = {"topic": "t.dlq.v1", "key": sender_key, "value": value, "headers": {}}
            row |= {"message_id": message_id, "created_at": now}
            await session.execute(insert(outbox).values(**row))
            await session.execute(
                insert(outbox_parked).values(
                    **row, outbox_id=n, parked_at=now, size=len(value), reason="too big"
                )
            )
        await session.execute(
            insert(outbox_parked).values(
                outbox_id=99, topic="t.handover.v1", key=key, value=b'{"payload": {}}', headers={},
                message_id="released", created_at=now, parked_at=now, size=15, reason="too big",
            )
        )  # fmt: skip
        parked_id = (
            await session.execute(select(outbox_parked.c.id).where(outbox_parked.c.message_id == "released"))
        ).scalar_one()
        await write_audit(
            session,
            AuditEntry(action="referral.read", user="cw-1", youth_key=key),
            transaction_id=None,
            system="t",
        )
    # released by an operator: emptied, it keeps who did it and why; the copy waits in the outbox
    await release(store, parked_id, "otto", "de limiet is verhoogd", max_message_bytes=10_000)

    doc = await export(store, bsn=bsn, secret=TEST_SECRET, by="petra", dead_letters=None)

    mine = ["mine-1", "mine-2", "mine-3", "mine-4", "mine-5", "mine-6", "mine-7", "released"]
    assert sorted(r["message_id"] for r in doc["outbox"]) == mine
    assert sorted(r["message_id"] for r in doc["outbox_parked"]) == mine
    [released] = [r for r in doc["outbox_parked"] if r["message_id"] == "released"]
    assert released["resolved"] == "released" and released["resolved_by"] == "otto"
    assert doc["outbox"][0]["value"] == {"verdachte": {"bsn": bsn, "naam": "Sam Jansen"}}  # as held
    text = json.dumps(doc)
    assert other not in text and other_key not in text and f"0{bsn}9" not in text  # nothing of another youth
    # the row that may be the youth's is neither shown nor passed over: the export says it is incomplete
    gaps = sorted(doc["incomplete"])
    assert [g.split(":", 1)[0] for g in gaps] == ["dead_letters", "outbox", "outbox_parked"], gaps
    assert all("2 message(s)" in g and bsn not in g for g in gaps[1:]), gaps
    assert "melding over" not in text and "Visser" not in text
    async with store.connect() as conn:
        query = select(audit_log.c.objects).where(audit_log.c.action == "subject_access.exported")
        [objects] = (await conn.execute(query)).scalars().all()
    assert objects["complete"] is False and objects["counts"]["outbox_parked"] == len(mine)


async def test_a_parked_row_named_by_an_old_audit_entry_is_the_youths_only_while_it_is_that_row(
    store: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A released or discarded parked row is the youth's by the id its audit entry names (it was
    emptied). The entry is kept for years, the row 30 days; SQLite hands a deleted row's id out again,
    and the youth's export then held another youth's whole message, BSN and all."""
    import hub.spine.outbox as outbox_module
    from hub.ops.inzage import export
    from hub.ops.parked import discard
    from hub.spine.outbox import Relay
    from hub.store.tables import outbox_parked
    from schemas.envelope import utcnow
    from schemas.pseudonym import youth_key as pseudonym
    from tests.conftest import TEST_SECRET

    bsn, other = "111222333", "123456782"

    async def park(youth: str, message_id: str, **given: Any) -> int:
        value = json.dumps({"payload": {"youth": {"bsn": youth}, "summary": "x" * 2000}}).encode()
        row = {"topic": "t.handover.dispatch.v1", "key": pseudonym(TEST_SECRET, youth), "value": value}
        row |= {"headers": {}, "message_id": message_id, "created_at": utcnow(), "parked_at": utcnow()}
        async with store.transaction() as session:
            done = await session.execute(
                insert(outbox_parked)
                .values(**row, **given, outbox_id=7, size=len(value), reason="too big")
                .returning(outbox_parked.c.id)
            )
            return int(done.scalar_one())

    mine = await park(bsn, "mine")
    await discard(store, mine, "otto", "te groot, opnieuw aangevraagd")  # audited under the youth's key
    first = await export(store, bsn=bsn, secret=TEST_SECRET, by="petra", dead_letters=None)
    assert [r["message_id"] for r in first["outbox_parked"]] == ["mine"]
    later = utcnow() + timedelta(days=31)
    monkeypatch.setattr(outbox_module, "utcnow", lambda: later)
    await Relay(store, producer=None).purge_sent()  # past its term: gone
    monkeypatch.undo()
    # Another youth's message parked under the same id (given here; SQLite gives it by itself), from
    # the same outbox id, and discarded too: still not the row the first youth's entry describes.
    theirs = await park(other, "theirs", id=mine)
    await discard(store, theirs, "otto", "ook te groot")

    doc = await export(store, bsn=bsn, secret=TEST_SECRET, by="petra", dead_letters=None)
    assert doc["outbox_parked"] == []
    text = json.dumps(doc)
    assert other not in text and pseudonym(TEST_SECRET, other) not in text
    their_doc = await export(store, bsn=other, secret=TEST_SECRET, by="petra", dead_letters=None)
    assert [r["message_id"] for r in their_doc["outbox_parked"]] == ["theirs"]


async def _rows_of(hub: Any, table: Any) -> list[Any]:
    async with hub.store.connect() as conn:
        return list((await conn.execute(select(table))).all())


async def test_the_export_holds_the_mails_about_the_youth_whom_they_reached_and_their_problems(
    kafka: EmbeddedKafka, db_url: str, unique: str
) -> None:
    """Mails were left out: whose mailbox a mail about the youth reached (`mail_sent`), the mail as it
    went (the embedded sink's `mail_sink`) and what went wrong with one (`mail_problems`)."""
    from connectors.mail.component import mail_component
    from hub.notify.component import register_notify
    from hub.notify.service import NO_RECIPIENT
    from hub.notify.tables import mail_problems, mail_sent, mail_sink
    from hub.ops.inzage import export
    from hub.runtime import Hub
    from hub.signals.matches import REFUSED_MATCH, record_refused_match
    from tests.conftest import TEST_SECRET, make_settings
    from tests.integration.test_mail_delivery import FAST, ILSE, OMAR, add_caseworkers
    from tests.integration.test_notify_match import signal_with_match, youth

    # no SMTP host: the embedded sink, which keeps the mails in the store
    settings = make_settings(kafka, db_url, unique, components=["mail"], smtp={"sender": "ketenhub@halt.nl"})
    hub = Hub(settings, registrars={"mail": [mail_component(FAST), register_notify]})
    await hub.start()
    try:
        assert hub.store is not None
        refusing = OMAR.model_copy(update={"caseworker_id": "cw-nina", "email": "nina@halt.nl"})
        gone = OMAR.model_copy(update={"caseworker_id": "cw-lone", "email": "lone@halt.nl", "active": False})
        await add_caseworkers(hub, ILSE, OMAR, refusing, gone)
        hub.components["mail"].sink.refuse["nina@halt.nl"] = "550 5.1.1 mailbox unavailable"
        ids: dict[str, dict[str, str]] = {}
        for who, young in (("ours", youth(111_222_300)), ("theirs", youth(123_456_700))):
            sent_signal, sent_match = await signal_with_match(hub, "cw-ilse", young)
            _, refused_match = await signal_with_match(hub, "cw-nina", young)  # the SMTP server refuses
            lost_signal, lost_match = await signal_with_match(hub, "cw-lone", young)  # nobody reads the mail
            async with hub.store.transaction() as session:
                await record_refused_match(
                    session, match_id=f"m-onleesbaar-{who}", signal_id=sent_signal,
                    reason="feed entry unreadable", transaction_id=str(uuid.uuid4()),
                )  # fmt: skip
            ids[who] = {"bsn": young.bsn, "sent_signal": sent_signal, "sent_match": sent_match}
            ids[who] |= {"refused_match": refused_match, "lost_signal": lost_signal, "lost_match": lost_match}

        async def settled() -> bool:
            return (
                len(await _rows_of(hub, mail_sink)) == 2
                and len(await _rows_of(hub, mail_sent)) == 2
                and len(await _rows_of(hub, mail_problems)) == 6
            )

        await wait_for(settled, timeout_s=30)
        async with hub.store.connect() as conn:
            queued = select(audit_log.c.objects).where(audit_log.c.action == "mail.match.queued")
            notification = {
                o["match_id"]: o["notification_id"] for o in (await conn.execute(queued)).scalars()
            }

        doc = await export(
            hub.store, bsn=ids["ours"]["bsn"], secret=TEST_SECRET, by="petra", dead_letters=None
        )
    finally:
        await hub.stop()

    ours, theirs = ids["ours"], ids["theirs"]
    sent_id, refused_id = notification[ours["sent_match"]], notification[ours["refused_match"]]
    assert [(r["notification_id"], r["recipient_caseworker_id"]) for r in doc["mail_sent"]] == [
        (sent_id, "cw-ilse")
    ]
    [mail] = doc["mail_sink"]
    assert mail["message_id"] == f"<{sent_id}.ketenhub@halt.nl>" and mail["rcpt_to"] == "ilse@halt.nl"
    assert ours["sent_signal"] in mail["raw"] and "Kees de Wit" in mail["raw"]  # the mail as it went
    assert sorted((p["kind"], p["reference"]) for p in doc["mail_problems"]) == sorted(
        [
            (NO_RECIPIENT, ours["lost_match"]),  # a match's problem is its match's
            (REFUSED_MATCH, "m-onleesbaar-ours"),
            ("mail_niet_bezorgd", refused_id),  # connectors.mail.problems.REFUSED
        ]
    )
    assert {part: doc["counts"][part] for part in ("mail_sent", "mail_sink", "mail_problems")} == {
        "mail_sent": 1,
        "mail_sink": 1,
        "mail_problems": 3,
    }
    text = json.dumps(doc)
    theirs_ids = [*theirs.values(), "m-onleesbaar-theirs", notification[theirs["sent_match"]]]
    theirs_ids.append(notification[theirs["refused_match"]])
    assert not [value for value in theirs_ids if value in text]  # nothing of another youth


A, B = "111222333", "123456782"  # two youths


async def _held_twice(store: Any, messages: list[tuple[str, str, Any]]) -> None:
    """`messages` (message id, key as its sender wrote it, payload) in the outbox and parked."""
    from hub.store.tables import outbox, outbox_parked
    from schemas.envelope import utcnow

    now = utcnow()
    async with store.transaction() as session:
        for n, (message_id, sender_key, payload) in enumerate(messages, start=1):
            value = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
            row: dict[str, Any] = {"topic": "t.dlq.v1", "key": sender_key, "value": value, "headers": {}}
            row |= {"message_id": message_id, "created_at": now}
            await session.execute(insert(outbox).values(**row))
            await session.execute(
                insert(outbox_parked).values(**row, outbox_id=n, parked_at=now, size=len(value), reason="x")
            )


async def _a_referral(store: Any, bsn: str) -> str:
    """A referral of the youth with `bsn`, as intake stores it; its id."""
    from schemas.envelope import utcnow
    from schemas.pseudonym import youth_key as pseudonym
    from tests.conftest import TEST_SECRET

    rid = str(uuid.uuid4())
    async with store.transaction() as session:
        await session.execute(
            insert(referrals).values(
                id=rid, referrer_key="politie", case_reference=f"PV-{rid[:8]}", referrer_type="POLITIE",
                channel="kafka", youth_key=pseudonym(TEST_SECRET, bsn), bsn=bsn, track="HALT_STRAF",
                outcome="ACCEPTED", referral={"youth": {"bsn": bsn, "surname": "Jansen"}}, decision={},
                transaction_id="t", received_at=utcnow(),
            )
        )  # fmt: skip
    return rid


def _gaps(doc: dict[str, Any], part: str) -> list[str]:
    return [g for g in doc["incomplete"] if g.startswith(f"{part}:")]


async def test_a_batch_naming_several_people_is_handed_over_to_none_of_them_and_each_export_says_so(
    store: Any,
) -> None:
    """Only a CSV batch was told (by the BSNs in it that pass the elfproef): a police system's JSON array
    of two youths went whole into the first one's export (the other's BSN and surname with it) and the
    second's left it out while it said it was complete; a CSV batch whose other row has a mistyped BSN
    went whole to the youth, that row with it."""
    from hub.ops.inzage import export
    from tests.conftest import TEST_SECRET

    c = "167868433"  # a third youth
    two = [
        {"procesVerbaalNummer": "PV-1", "verdachte": {"bsn": A, "achternaam": "Jansen"}},
        {"procesVerbaalNummer": "PV-2", "verdachte": {"bsn": B, "achternaam": "Visser"}},
    ]
    header = "Dossiernummer;BSN;Achternaam\n"
    co_suspects = {"verdachte": {"bsn": A}, "medeverdachte": {"bsn": B, "naam": "Visser"}}
    twice = [{"verdachte": {"bsn": A}}, {"verdachte": {"bsn": int(A)}, "ouder": {"bsn": "628194821"}}]
    await _held_twice(
        store,
        [
            ("json-batch", "politie-dh", two),
            ("json-batch-number", "politie-dh", [{"verdachte": {"bsn": int(B)}}, {"verdachte": {"bsn": A}}]),
            ("csv-mistyped", "LP-1", f"{header}LP-1;{A};Jansen\nLP-2;123456789;Visser\n".encode()),
            ("csv-empty", "LP-3", f"{header}LP-3;{A};Jansen\nLP-4;;Visser\n".encode()),
            ("two-in-one", "PV-3", co_suspects),  # a record naming two: not the youth's alone either
            # the same youth twice, a parent's BSN aside: the youth's
            ("mine", "PV-4", twice),
            ("theirs", "politie-dh", [{"verdachte": {"bsn": B}}, {"verdachte": {"bsn": c}}]),
        ],
    )  # fmt: skip
    for_a = await export(store, bsn=A, secret=TEST_SECRET, by="petra", dead_letters=None)
    for_b = await export(store, bsn=B, secret=TEST_SECRET, by="petra", dead_letters=None)

    for part in ("outbox", "outbox_parked"):
        assert [r["message_id"] for r in for_a[part]] == ["mine"]
        assert for_b[part] == []
        [gap] = _gaps(for_a, part)
        assert gap.startswith(f"{part}: 5 message(s)") and "5 a batch naming the youth among" in gap, gap
        [gap] = _gaps(for_b, part)  # B is in the JSON batches (also with C) and the co-suspects' record
        assert gap.startswith(f"{part}: 4 message(s)") and "4 a batch naming the youth among" in gap, gap
        assert A not in gap and B not in gap and "Visser" not in gap
    text = json.dumps(for_a)
    assert "Visser" not in text and "123456789" not in text and c not in text
    assert B not in json.dumps({p: for_a[p] for p in ("outbox", "outbox_parked", "incomplete")})
    async with store.connect() as conn:
        query = select(audit_log.c.objects).where(audit_log.c.action == "subject_access.exported")
        assert [o["complete"] for o in (await conn.execute(query)).scalars()] == [False, False]


async def test_a_message_naming_the_youth_by_an_id_or_a_written_out_bsn_is_counted_not_passed_over(
    store: Any,
) -> None:
    """The export said it was complete while messages named the youth otherwise than by a BSN field or
    the youth key: a dead-lettered handover request naming only the youth's referral (with a summary
    about them), a police record refused for its BSN written as people write it."""
    from hub.ops.inzage import export
    from schemas.pseudonym import youth_key as pseudonym
    from tests.conftest import TEST_SECRET

    rid, theirs = await _a_referral(store, A), await _a_referral(store, B)
    request = {
        "type": "HandoverRequested",
        "payload": {
            "referral_id": rid, "from_caseworker": "cw-1", "receiver_organisation": "jeugdhulp-dh",
            "receiver_type": "JEUGDHULP", "summary": "Sam (15) wil met iemand praten.",
        },
    }  # fmt: skip
    youth = {"voornamen": "Sam", "achternaam": "Jansen"}
    await _held_twice(
        store,
        [
            ("by-referral", "aurah-7", request),
            ("by-referral-text", "aurah-8", f"zie verwijzing {rid}.".encode()),
            ("spaced", "PV-5", {"verdachte": {"bsn": "111 222 333", **youth}}),
            ("dotted", "PV-6", {"verdachte": {"bsn": "1112.22.333", **youth}}),
            ("dashed-other", "PV-7", {"verdachte": {"bsn": B}, "notitie": "ook 111-222-333"}),
            # the hub's own message keyed by the youth key: the youth's, ids or not
            ("mine", pseudonym(TEST_SECRET, A), {"payload": {"referral_id": rid}}),
            # not the youth's: another youth's referral; a phone number holding the digits in groups;
            # the id within a longer one
            ("theirs", "aurah-9", {"payload": {"referral_id": theirs}}),
            ("phone", "PV-8", {"verdachte": {"bsn": B}, "melder": {"telefoon": "06 111 222 333"}}),
            ("longer", "aurah-10", {"payload": {"referral_id": f"{rid}-2", "ref": f"x{rid}"}}),
        ],
    )  # fmt: skip
    doc = await export(store, bsn=A, secret=TEST_SECRET, by="petra", dead_letters=None)

    assert [r["id"] for r in doc["referrals"]] == [rid]
    for part in ("outbox", "outbox_parked"):
        assert [r["message_id"] for r in doc[part]] == ["mine"]
        [gap] = _gaps(doc, part)
        assert gap.startswith(f"{part}: 5 message(s) may be the youth's"), gap
        assert "5 naming no BSN or another's" in gap and A not in gap and rid not in gap, gap
    assert "wil met iemand praten" not in json.dumps(doc)
    # the other youth's export: its referral is named by one message, a batch of nobody else's
    for_b = await export(store, bsn=B, secret=TEST_SECRET, by="petra", dead_letters=None)
    for part in ("outbox", "outbox_parked"):
        assert sorted(r["message_id"] for r in for_b[part]) == ["dashed-other", "phone"]
        [gap] = _gaps(for_b, part)
        assert gap.startswith(f"{part}: 1 message(s)"), gap


async def test_dead_letters_are_told_as_the_outbox_is(kafka: EmbeddedKafka, store: Any, unique: str) -> None:
    """The same rules for what the broker holds: a batch, a letter naming the youth's referral, one
    with the BSN written out; the youth's own letter is in the export."""
    from hub.ops.dlq import DeadLetters
    from hub.ops.inzage import export
    from tests.conftest import TEST_SECRET

    rid = await _a_referral(store, A)
    topic = f"t{unique}.in.dlq.v1"
    batch = [{"verdachte": {"bsn": A}}, {"verdachte": {"bsn": B, "achternaam": "Visser"}}]
    mine, *unsure = await _letters_with(
        kafka.bootstrap,
        topic,
        [
            (b"PV-1", {"verdachte": {"bsn": A}}),
            (b"politie-dh", json.dumps(batch).encode()),
            (b"aurah-7", {"payload": {"referral_id": rid}}),
            (b"PV-2", {"verdachte": {"bsn": "111 222 333"}}),
        ],
    )
    letters = DeadLetters(store, {"bootstrap_servers": kafka.bootstrap}, [topic], secret=TEST_SECRET)
    doc = await export(store, bsn=A, secret=TEST_SECRET, by="petra", dead_letters=letters)
    assert [d["id"] for d in doc["dead_letters"]] == [mine] and len(unsure) == 3
    [gap] = _gaps(doc, "dead_letters")
    assert gap.startswith("dead_letters: 3 message(s)") and "1 a batch" in gap and "2 naming no BSN" in gap
    assert "Visser" not in json.dumps(doc) and A not in gap
    for_b = await export(store, bsn=B, secret=TEST_SECRET, by="petra", dead_letters=letters)
    assert for_b["dead_letters"] == [] and _gaps(for_b, "dead_letters")[0].startswith("dead_letters: 1 ")


def _referral_row(bsn: str, key: str) -> dict[str, Any]:
    """A stored referral row of `bsn`, kept under youth key `key`."""
    from schemas.envelope import utcnow

    return {
        "id": str(uuid.uuid4()),
        "referrer_key": "politie",
        "case_reference": f"PL-{uuid.uuid4().hex[:8]}",
        "partner_id": None,
        "referrer_type": "POLITIE",
        "channel": "http",
        "youth_key": key,
        "bsn": bsn,
        "track": "HALT_STRAF",
        "outcome": "ACCEPTED",
        "referral": {"youth": {"bsn": bsn}},
        "decision": {"outcome": "ACCEPTED"},
        "transaction_id": "tx-1",
        "received_at": utcnow(),
    }


def test_the_command_line_export_refuses_without_the_hubs_secret_or_with_another(tmp_path: Path) -> None:
    """Without KETENHUB_SECRET, away from the hub's state dir, `ketenhub inzage` made a new random
    secret, found nothing under the youth key it gave, exited 0 and audited "we hold nothing" under a
    key nobody looks for. Another state dir's secret did the same."""
    from hub.cli import app
    from hub.config import load_settings
    from hub.secret_fingerprint import check_secret
    from hub.store import Store
    from schemas.pseudonym import youth_key as pseudonym

    bsn, db = "111222333", tmp_path / "hub.db"
    hub_dir, empty, other = tmp_path / "hub", tmp_path / "empty", tmp_path / "other"
    for folder in (hub_dir, empty, other):
        folder.mkdir()
    url = f"sqlite+aiosqlite:///{db}"
    hubs = load_settings(state_dir=hub_dir, database={"url": url}).ensure_secret()  # `ketenhub run`
    load_settings(state_dir=other).ensure_secret()  # another hub's, elsewhere

    async def first_start() -> None:  # the hub's first start records the fingerprint; it holds a referral
        store = Store(url)
        try:
            await store.migrate()
            await check_secret(store, hubs, source="KETENHUB_STATE_DIR", record=True)
            async with store.transaction() as session:
                await session.execute(insert(referrals).values(**_referral_row(bsn, pseudonym(hubs, bsn))))
        finally:
            await store.close()

    asyncio.run(first_start())
    runner, base = CliRunner(), {"KETENHUB_DATABASE__URL": url}
    made = runner.invoke(app, ["inzage"], input=f"{bsn}\n", env=base | {"KETENHUB_STATE_DIR": str(hub_dir)})
    assert made.exit_code == 0, made.output
    assert '"referrals": 1' in made.output and "export made (referrals 1" in made.output

    nothing = runner.invoke(app, ["inzage"], input=f"{bsn}\n", env=base | {"KETENHUB_STATE_DIR": str(empty)})
    assert nothing.exit_code == 2, nothing.output
    assert nothing.output == (
        "ketenhub: configuration error: KETENHUB_SECRET: not set, and there is no"
        f" {empty / 'ketenhub.secret'}: set KETENHUB_SECRET to the hub's secret, or KETENHUB_STATE_DIR"
        " to the directory `ketenhub run` keeps its ketenhub.secret in\n"
    )
    assert list(empty.iterdir()) == []  # no secret made up

    for env, source in (
        ({"KETENHUB_STATE_DIR": str(other)}, f"KETENHUB_STATE_DIR ({other / 'ketenhub.secret'})"),
        ({"KETENHUB_SECRET": "a-secret-that-is-not-the-hubs-" + "x" * 20}, "KETENHUB_SECRET"),
    ):
        wrong = runner.invoke(app, ["inzage"], input=f"{bsn}\n", env=base | env)
        assert wrong.exit_code == 2, wrong.output
        assert wrong.output.startswith(
            f"ketenhub: configuration error: {source}: not the secret the hub first started with on {url}"
        ), wrong.output
        assert wrong.output.count("\n") == 1 and bsn not in wrong.output
    assert _exports_audited(db) == 1  # the refused ones exported and audited nothing


async def test_referrals_and_signals_are_found_by_their_bsn_too_and_another_key_is_told(store: Any) -> None:
    """An export made with another secret than the hub's found none of the youth's referrals (looked
    up by youth key alone) and said nothing was missing."""
    from hub.ops.inzage import export
    from schemas.pseudonym import youth_key as pseudonym
    from tests.conftest import TEST_SECRET

    bsn = "111222333"
    mine, elsewhere = (
        _referral_row(bsn, pseudonym(TEST_SECRET, bsn)),
        _referral_row(bsn, pseudonym("x" * 40, bsn)),
    )
    async with store.transaction() as session:
        await session.execute(insert(referrals).values(**mine))
        await session.execute(insert(referrals).values(**_referral_row("123456782", "someone-else")))
    doc = await export(store, bsn=bsn, secret=TEST_SECRET, by="test", dead_letters=None)
    assert [r["id"] for r in doc["referrals"]] == [mine["id"]]
    assert not any(gap.startswith("youth key") for gap in doc["incomplete"])

    async with store.transaction() as session:
        await session.execute(insert(referrals).values(**elsewhere))
    doc = await export(store, bsn=bsn, secret=TEST_SECRET, by="test", dead_letters=None)
    assert sorted(r["id"] for r in doc["referrals"]) == sorted([mine["id"], elsewhere["id"]])
    assert any(
        gap.startswith("youth key: 1 referral(s) or signal(s) with this BSN are kept under another youth key")
        for gap in doc["incomplete"]
    ), doc["incomplete"]
